"""Same input, same bytes: every CLI output of every gallery file is identical across runs and
across `PYTHONHASHSEED` values (set and dict orders, object ids and the like never leak)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GALLERY = sorted(p.name for p in (ROOT / "gallery").glob("*.ncd"))
assert GALLERY, "no gallery files: the tests below would compare nothing"

# Input with several errors: the diagnostics come out in the same order every time.
BAD = """axis m = 3, n = 4
def f(X: R[m]) -> R[n] {
    Y = relu(Q)
    Z = softmax[k](X)
    W = X + linear[m -> n](X, P)
    return W
}
def g(X: R[m]) -> R[m] { return undefined(X) }
"""

DRIVER = r"""
import contextlib, io, sys
from pathlib import Path
from ncd.cli import main

out = Path(sys.argv[1])
files = sys.argv[2:]
for file in files:
    stem = Path(file).stem
    def run(name, args):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(args)
        (out / f"{stem}.{name}.stdout").write_text(f"{code}\n{stdout.getvalue()}")
        (out / f"{stem}.{name}.stderr").write_text(stderr.getvalue())
    run("check", ["check", file])
    run("ir", ["ir", file, "-o", str(out / f"{stem}.json")])
    run("compile", ["compile", file, "-o", str(out / f"{stem}.py")])
    for fmt in ("svg", "png", "pdf", "dot", "tex"):
        run(fmt, ["render", file, "-o", str(out / f"{stem}.{fmt}")])
    run("text", ["render", file, "--text", "text", "--labels", "both", "-o",
                 str(out / f"{stem}.text.svg")])
"""


def start(folder: Path, seed: str, files: list[str]) -> subprocess.Popen[bytes]:
    folder.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": seed, "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(folder), *files], cwd=ROOT,
                            env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, bytes]]:
    """Two processes, side by side, with different hash seeds. Outputs that agree across seeds
    also agree across runs with one seed, so a third run would add nothing."""
    bad = tmp_path_factory.mktemp("input") / "bad.ncd"
    bad.write_text(BAD)
    files = [f"gallery/{name}" for name in GALLERY] + [str(bad)]
    base = tmp_path_factory.mktemp("runs")
    folders = [base / f"run-{seed}" for seed in ("0", "12345")]
    processes = [start(folder, folder.name.removeprefix("run-"), files) for folder in folders]
    for process in processes:
        assert process.wait(timeout=600) == 0
    return [{p.name: p.read_bytes() for p in sorted(folder.iterdir())} for folder in folders]


def test_every_output_was_made(runs: list[dict[str, bytes]]) -> None:
    first = runs[0]
    for name in GALLERY:
        stem = Path(name).stem
        for suffix in ("json", "py", "svg", "png", "pdf", "dot", "tex", "text.svg"):
            assert len(first[f"{stem}.{suffix}"]) > 100, (stem, suffix)
        assert first[f"{stem}.check.stdout"].startswith(b"0\n")
    assert first["bad.check.stdout"].startswith(b"1\n")
    assert first["bad.check.stderr"].count(b"error[") >= 3


def test_outputs_are_byte_identical_across_hash_seeds(runs: list[dict[str, bytes]]) -> None:
    assert runs[0].keys() == runs[1].keys()
    different = [name for name in runs[0] if runs[0][name] != runs[1][name]]
    assert not different


def test_in_process_repetition_is_identical() -> None:
    """Caches warmed by a first run (the parser, fonts) change nothing."""
    from ncd.renderers import render_tikz

    import ncd

    first: list[str] = []
    for _ in range(2):
        texts = []
        for name in GALLERY:
            program = ncd.load(ROOT / "gallery" / name)
            texts += [program.to_json(), program.render(), program.compile(),
                      render_tikz(program.ir, program.main.name)]
        if not first:
            first = texts
        else:
            assert texts == first
