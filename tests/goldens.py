"""Golden files with an accept switch, shared by every golden test.

`NCD_ACCEPT_GOLDENS=1 pytest ...` rewrites the goldens (refused when `CI=true`: goldens are
accepted on purpose, locally, after looking at the change). On a mismatch the actual output
is written beside the golden as `NAME.actual.SUFFIX` (git ignores those).

Each golden belongs to one test, and every file is written whole (a temporary file renamed over
it), so that parallel workers and concurrent runs never read a half-written golden.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def compare_golden(golden: Path, actual: str) -> None:
    mismatch = golden.with_name(f"{golden.stem}.actual{golden.suffix}")
    if os.environ.get("NCD_ACCEPT_GOLDENS") == "1":
        if os.environ.get("CI") == "true":
            pytest.fail("NCD_ACCEPT_GOLDENS is refused when CI=true: accept goldens locally")
        write_whole(golden, actual)
        mismatch.unlink(missing_ok=True)
        return
    if not golden.exists():
        write_whole(mismatch, actual)
        pytest.fail(f"no golden {golden.name}; the output is in {mismatch.name} "
                    "(accept with NCD_ACCEPT_GOLDENS=1)")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        write_whole(mismatch, actual)
        shown = f"\n--- expected\n{expected}--- actual\n{actual}" if len(actual) < 4000 else ""
        pytest.fail(f"{golden.name} differs; the output is in {mismatch.name} "
                    f"(accept with NCD_ACCEPT_GOLDENS=1){shown}")
    mismatch.unlink(missing_ok=True)
