"""Shared helpers for the language tests: load source text, expect diagnostics, find IR nodes.

    program = ok(src)                       # loads, or fails the test with the diagnostics
    diagnostic = err(src, "E300", at="3:7")  # the first E300, which must be at line 3, col 7
    op = one(program.definition("f"), "softmax")
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

import ncd
from ncd import ir
from ncd.diagnostics import Diagnostic, NcdError

ROOT = Path(__file__).resolve().parent.parent

# One compute thread per process: the suite runs a worker per core (`make test`: pytest-xdist,
# `-n 2` on two cores), and the processes the tests start run beside them. Each with a pool of
# OpenMP threads of its own, the cores are oversubscribed and the pools' spinning threads burn
# the time the other workers need (about a quarter of the CPU time of the torch-heavy files).
# Set before torch is imported anywhere in the worker; inherited by the processes it starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every property test draws the same examples on every run, whichever worker of a parallel
# run (pytest-xdist) it lands on and whatever ran before it: examples derive from the test
# alone, and no example database is read or written (nothing shared between workers, nothing
# in the working tree). `bench/fuzz.py` is the place for open-ended search.
settings.register_profile("ncd", derandomize=True, database=None)
settings.load_profile("ncd")


# The files that take longest, longest first: `make test` hands whole files to its two workers
# (`--dist loadfile`) in collection order (`--no-loadscope-reorder`), so these start first
# and the short files fill in around them; a long file started last would run on alone.
SLOWEST_FIRST = (
    "test_semantics_fuzz.py", "test_determinism.py", "test_static.py", "test_docs.py",
    "test_compile_gallery.py", "test_derivative.py", "test_pdf.py", "test_fuzz.py",
    "test_packaging.py", "test_hardening_files.py", "test_hardening_limits.py",
    "test_export.py", "test_layout.py", "test_formatter.py", "test_distributed.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [name for name in SLOWEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert not missing, f"tests/conftest.py SLOWEST_FIRST names missing files: {missing}"
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep order


@pytest.fixture(autouse=True, scope="session")
def _private_module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Generated modules are cached in a folder of the test run, not in the user's home
    (session-wide, so that module-scoped fixtures building modules use it too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _no_forced_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees plain output whatever the machine sets (tests of colour set these
    variables themselves)."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


def assert_generated_code_is_clean(folder: Path) -> None:
    """Every Python file in `folder` (generated code) is lint-clean under the rules generated
    code keeps and exactly as `ruff format` lays it out. (E741, a variable named O or I, comes
    from the source's own names: they are kept.)"""
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", "--isolated", "--line-length", "100", "--select",
                            "E,F,W,B,UP", "--ignore", "E741", str(folder)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    formatted = subprocess.run([*ruff, "format", "--isolated", "--line-length", "100",
                                "--check", str(folder)], capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout


def ok(src: str, sizes: Mapping[str, int] | None = None) -> ir.Program:
    """The checked program of `src`; a failure shows every diagnostic."""
    try:
        return ncd.load(src, sizes=sizes).ir
    except NcdError as error:
        pytest.fail(f"expected the source to check, got:\n{error.render()}")


def diagnostics(src: str | Path, sizes: Mapping[str, int] | None = None
                ) -> tuple[Diagnostic, ...]:
    """Every diagnostic of `src`, sorted by location; fails the test if it checks."""
    try:
        ncd.load(src, sizes=sizes)
    except NcdError as error:
        return error.diagnostics
    pytest.fail("expected diagnostics, but the source checked")


def err(src: str, code: str, at: str | None = None,
        sizes: Mapping[str, int] | None = None) -> Diagnostic:
    """The first diagnostic with `code`; `at="line:col"` checks where it points."""
    found = diagnostics(src, sizes)
    matching = [d for d in found if d.code == code]
    shown = "\n".join(f"  {d.code} {d.span}: {d.message}" for d in found)
    assert matching, f"expected {code}, got:\n{shown}"
    diagnostic = matching[0]
    if at is not None:
        assert diagnostic.span is not None, f"{code} has no location"
        assert f"{diagnostic.span.line}:{diagnostic.span.column}" == at, (
            f"{code} at {diagnostic.span.line}:{diagnostic.span.column}, expected {at}:\n{shown}")
    return diagnostic


def broadcasts(definition: ir.Definition, kind: str | None = None) -> list[ir.Broadcasted]:
    """The broadcasted operations of a definition's body (of one op kind), in order."""
    return [t for t in ir.walk(definition.body) if isinstance(t, ir.Broadcasted)
            and (kind is None or t.op.kind == kind)]


def one(definition: ir.Definition, kind: str) -> ir.Broadcasted:
    """The single broadcasted operation of `kind` in the definition."""
    found = broadcasts(definition, kind)
    assert len(found) == 1, f"expected one `{kind}` in {definition.name}, found {len(found)}"
    return found[0]


def nodes(definition: ir.Definition, node: type[ir.TermBase]) -> list[ir.TermBase]:
    return [t for t in ir.walk(definition.body) if isinstance(t, node)]


def sizes(array: ir.ArrayType) -> dict[str, str]:
    """Axis name to the text of its size: `{"x": "x", "m": "512"}`."""
    return {axis.name: ir.size_text(axis.size) for axis in array.shape.axes}


def text(array: ir.ArrayType) -> str:
    """`R[x, m]` with sizes: `R[x:x, m:512]`, to compare arrays compactly."""
    axes = ", ".join(f"{a.name}:{ir.size_text(a.size)}" for a in array.shape.axes)
    return f"{array.dtype.text()}[{axes}]"
