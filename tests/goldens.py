"""Golden files with an accept switch, shared by every golden test.

`NCD_ACCEPT_GOLDENS=1 pytest ...` rewrites the goldens (refused when `CI=true`: goldens are
accepted on purpose, locally, after looking at the change). On a mismatch the actual output
is written beside the golden as `NAME.actual.SUFFIX` (git ignores those).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def compare_golden(golden: Path, actual: str) -> None:
    mismatch = golden.with_name(f"{golden.stem}.actual{golden.suffix}")
    if os.environ.get("NCD_ACCEPT_GOLDENS") == "1":
        if os.environ.get("CI") == "true":
            pytest.fail("NCD_ACCEPT_GOLDENS is refused when CI=true: accept goldens locally")
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
        mismatch.unlink(missing_ok=True)
        return
    if not golden.exists():
        mismatch.parent.mkdir(parents=True, exist_ok=True)
        mismatch.write_text(actual, encoding="utf-8")
        pytest.fail(f"no golden {golden.name}; the output is in {mismatch.name} "
                    "(accept with NCD_ACCEPT_GOLDENS=1)")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        mismatch.write_text(actual, encoding="utf-8")
        shown = f"\n--- expected\n{expected}--- actual\n{actual}" if len(actual) < 4000 else ""
        pytest.fail(f"{golden.name} differs; the output is in {mismatch.name} "
                    f"(accept with NCD_ACCEPT_GOLDENS=1){shown}")
    mismatch.unlink(missing_ok=True)
