"""A bug in ncd (simulated by making an internal function raise) exits with code 3 and one
short line asking for a report; the traceback appears only with `--debug`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ncd.compilers.pytorch
import ncd.renderers
import ncd.renderers.dot
import pytest

import ncd.loader
from ncd.cli import main

GOOD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"
ROOT = Path(__file__).resolve().parent.parent

# (module, function, command line after the file is put in): a part of each pipeline.
BREAKABLE = [
    (ncd.loader, "elaborate_definition", ["check"]),
    (ncd.loader, "elaborate_definition", ["ir"]),
    (ncd.renderers, "render_svg", ["render"]),
    (ncd.renderers, "render_tikz", ["render", "-f", "tex"]),
    (ncd.renderers.dot, "program_to_dot", ["render", "-f", "dot"]),
    (ncd.compilers.pytorch, "compile_program", ["compile"]),
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model.ncd"
    path.write_text(GOOD)
    return path


def break_it(monkeypatch: pytest.MonkeyPatch, module: object, function: str,
             error: BaseException) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(module, function, broken)


@pytest.mark.parametrize(("module", "function", "command"), BREAKABLE,
                         ids=[f"{c[0]}-{f}" for _, f, c in BREAKABLE])
@pytest.mark.parametrize("error", [RuntimeError("secret detail"), KeyError("secret detail"),
                                   RecursionError("secret detail"),
                                   AssertionError("secret detail")],
                         ids=lambda e: type(e).__name__)
def test_internal_error_is_exit_3_with_a_short_message(
        source: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        module: object, function: str, command: list[str], error: Exception) -> None:
    break_it(monkeypatch, module, function, error)
    assert main([*command[:1], str(source), *command[1:]]) == 3
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert len(message.splitlines()) == 1 and len(message) < 300
    assert message.startswith(f"ncd: internal error ({type(error).__name__})")
    assert "please report it" in message and "--debug" in message
    assert "Traceback" not in captured.err and "secret detail" not in captured.err


def test_debug_shows_the_traceback(source: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    break_it(monkeypatch, ncd.compilers.pytorch, "compile_program",
             RuntimeError("secret detail"))
    assert main(["--debug", "compile", str(source)]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: secret detail" in err and "compile_program" in err


def test_no_output_on_stdout_after_an_internal_error(
        source: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    break_it(monkeypatch, ncd.renderers, "render_svg", RuntimeError("x"))
    assert main(["render", str(source)]) == 3
    assert capsys.readouterr().out == ""


def test_input_errors_are_not_internal_errors(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ncd"
    bad.write_text("axis m = 3\ndef f(X: R[m]) -> R[m] { return relu(Q) }\n")
    for command in (["check"], ["ir"], ["render"], ["compile"]):
        assert main([*command, str(bad)]) == 1
        err = capsys.readouterr().err
        assert "ncd: internal error" not in err and "bad.ncd:2:38: error[E200]" in err


def test_keyboard_interrupt(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    break_it(monkeypatch, ncd.loader, "elaborate_definition", KeyboardInterrupt())
    assert main(["check", str(source)]) == 130


def test_real_process_exit_code_and_stderr(source: Path) -> None:
    """Through the installed entry point: a bug is exit status 3, a one-line report."""
    code = ("import sys, ncd.renderers\n"
            "def broken(*a, **k): raise ZeroDivisionError('secret detail')\n"
            "ncd.renderers.render_svg = broken\n"
            "from ncd.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", code, "render", str(source)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith("ncd: internal error (ZeroDivisionError)")
    assert "Traceback" not in result.stderr
