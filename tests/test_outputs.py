"""No lost output: a command that fails leaves an existing output file as it was and no
temporary file behind; a command that succeeds replaces the file whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ncd.cli
from ncd.cli import main

GOOD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"
BAD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(Q)\n}\n"
COMMANDS = [("render", "svg"), ("render", "png"), ("render", "pdf"), ("render", "dot"),
            ("render", "tex"), ("compile", "py"), ("ir", "json")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or
                  p.suffix == ".tmp")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "good.ncd").write_text(GOOD)
    (tmp_path / "bad.ncd").write_text(BAD)
    return tmp_path


@pytest.mark.parametrize(("command", "suffix"), COMMANDS)
def test_bad_input_leaves_the_output_untouched(project: Path, command: str, suffix: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    output = project / f"out.{suffix}"
    output.write_bytes(b"previous contents")
    assert main([command, str(project / "bad.ncd"), "-o", str(output)]) == 1
    assert "error[E200]" in capsys.readouterr().err
    assert output.read_bytes() == b"previous contents"
    assert leftovers(project) == []


@pytest.mark.parametrize(("command", "suffix"), COMMANDS)
def test_success_replaces_the_output_whole(project: Path, command: str, suffix: str) -> None:
    output = project / f"out.{suffix}"
    output.write_bytes(b"previous contents" * 10_000)
    assert main([command, str(project / "good.ncd"), "-o", str(output)]) == 0
    data = output.read_bytes()
    assert b"previous contents" not in data and len(data) > 100
    assert leftovers(project) == []


@pytest.mark.parametrize(("command", "suffix"), [("render", "svg"), ("compile", "py")])
def test_internal_error_leaves_the_output_untouched(project: Path, command: str, suffix: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ncd.compilers.pytorch
    import ncd.renderers

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ncd.renderers, "render_svg", broken)
    monkeypatch.setattr(ncd.compilers.pytorch, "compile_program", broken)
    output = project / f"out.{suffix}"
    output.write_bytes(b"previous contents")
    assert main([command, str(project / "good.ncd"), "-o", str(output)]) == 3
    assert output.read_bytes() == b"previous contents"
    assert leftovers(project) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_leaves_the_output_and_no_temporary_file(
        project: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException,
        capsys: pytest.CaptureFixture[str]) -> None:
    output = project / "out.svg"
    output.write_bytes(b"previous contents")

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        assert Path(source).exists()  # the new contents were complete before the rename
        raise failure

    monkeypatch.setattr(ncd.cli.os, "replace", replace)
    code = main(["render", str(project / "good.ncd"), "-o", str(output)])
    assert code == (2 if isinstance(failure, OSError) else 130)
    assert output.read_bytes() == b"previous contents"
    assert leftovers(project) == []
    if isinstance(failure, OSError):
        assert "No space left on device" in capsys.readouterr().err


def test_output_into_a_missing_folder_is_a_usage_error(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(project / "good.ncd"), "-o",
                 str(project / "missing" / "out.svg")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (project / "missing").exists()


def test_output_over_the_input_is_not_lost_on_error(project: Path) -> None:
    """`-o` naming the (bad) source itself: the source stays as it was."""
    source = project / "bad.ncd"
    assert main(["compile", str(source), "-o", str(source)]) == 1
    assert source.read_text() == BAD
