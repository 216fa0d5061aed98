"""The command line's outputs: `-o -` (binary included), binary output to a terminal or a
pipe, the format from the suffix (a contradicting `-f` is a usage error), the permissions of
what is written under umask 022, and a reader of standard output that goes away."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncd.cli import main

GOOD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"
MESSY = "axis m=3\ndef f(X: R[m]) -> R[m] {\n  return relu(X)\n}\n"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.ncd"
    path.write_text(GOOD)
    return path


class Terminal(io.TextIOWrapper):
    """A standard output that says it is a terminal, and keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")

    def isatty(self) -> bool:
        return True


# ---- 4. binary output ----------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "magic"), [("png", PNG), ("pdf", b"%PDF-")])
def test_dash_writes_binary_to_standard_output(fmt: str, magic: bytes, source: Path,
                                               capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["render", "m.ncd", "-f", fmt, "-o", "-"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out.startswith(magic) and captured.err == b""
    assert not (source.parent / "-").exists()


def test_binary_to_a_pipe_or_a_file_needs_no_option(
        source: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["render", "m.ncd", "-f", "pdf"]) == 0  # captured: not a terminal
    assert capsysbinary.readouterr().out.startswith(b"%PDF-")


def test_binary_to_a_terminal_is_refused_unless_asked_for(
        source: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["render", "m.ncd", "-f", "pdf"]) == 2
    assert "use -o FILE or -o -" in capsys.readouterr().err
    assert terminal.buffer.getvalue() == b""  # type: ignore[attr-defined]
    assert main(["render", "m.ncd", "-f", "svg"]) == 0  # text is fine on a terminal
    assert main(["render", "m.ncd", "-f", "pdf", "-o", "-"]) == 0  # asked for
    assert b"%PDF-" in terminal.buffer.getvalue()  # type: ignore[attr-defined]


# ---- 5. the format comes from the suffix ---------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["-f", "png", "-o", "x.svg"], ["-o", "x.SVG", "-f", "pdf"], ["-f", "svg", "-o", "x.tex"],
])
def test_a_format_contradicting_the_suffix_is_a_usage_error(
        argv: list[str], source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = main(["render", "m.ncd", *argv]), capsys.readouterr().err
    assert code == 2 and "contradicts the suffix" in err and "drop -f" in err
    assert sorted(p.name for p in source.parent.iterdir()) == ["m.ncd"]


@pytest.mark.parametrize(("argv", "magic"), [
    (["-o", "x.svg"], b"<svg"), (["-f", "svg", "-o", "x.svg"], b"<svg"),
    (["-o", "x.PDF"], b"%PDF-"), (["-f", "dot", "-o", "x"], b"digraph"),
    (["-f", "svg", "-o", "x.figure"], b"<svg"),  # a suffix that is no format: -f says it
])
def test_the_suffix_or_an_agreeing_format(argv: list[str], magic: bytes, source: Path) -> None:
    assert main(["render", "m.ncd", *argv]) == 0
    assert magic in (source.parent / argv[-1]).read_bytes()[:200]


# ---- 8. permissions ------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_outputs_follow_the_umask_and_fmt_keeps_the_mode(source: Path) -> None:
    folder = source.parent
    assert main(["render", "m.ncd", "-o", "r.svg"]) == 0
    assert main(["compile", "m.ncd", "-o", "c.py"]) == 0
    assert main(["ir", "m.ncd", "-o", "i.json"]) == 0
    assert {name: mode(folder / name) for name in ("r.svg", "c.py", "i.json")} == {
        "r.svg": 0o644, "c.py": 0o644, "i.json": 0o644}
    (folder / "n.ncd").write_text(GOOD)
    assert main(["compile", "m.ncd", "n.ncd", "-o", "made/here"]) == 0
    assert mode(folder / "made") == mode(folder / "made" / "here") == 0o755
    assert mode(folder / "made" / "here" / "m.py") == 0o644
    messy = folder / "messy.ncd"
    messy.write_text(MESSY)
    messy.chmod(0o664)
    assert main(["fmt", "messy.ncd"]) == 0
    assert messy.read_text() != MESSY and mode(messy) == 0o664


# ---- a reader of standard output that goes away ---------------------------------------------


def test_a_closed_standard_output_ends_quietly_with_sigpipe_status(source: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # nobody reads: every write fails with EPIPE
    try:
        result = subprocess.run([sys.executable, "-m", "ncd", "ir", str(source)], stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == ""
