"""The command line's inputs: `-` (standard input) for every command that reads a file, several
files and folders (one folder of outputs), choosing a definition (`DEF`, `--def`), arguments
after options, and the progress bar over many inputs."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from ncd.cli import expand_inputs, main

GOOD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"
TWO = GOOD + "def g(X: R[m]) -> R[m] {\n    return tanh(X)\n}\n"
BAD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(Y)\n}\n"
LIBRARY = "axis n = 2\ndef lib(X: R[n]) -> R[n] {\n    return relu(X)\n}\n"
USES_LIBRARY = 'import "sub/lib.ncd"\ndef top(X: R[n]) -> R[n] {\n    return lib(X)\n}\n'


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a library that standard input may import."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "lib.ncd").write_text(LIBRARY)
    return tmp_path


# ---- 1. standard input ---------------------------------------------------------------------


def test_check_reads_standard_input_and_its_imports_resolve_in_the_working_folder(
        project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, USES_LIBRARY)
    code, out, err = run(["check", "-"], capsys)
    assert (code, err) == (0, "")
    assert out.endswith("<stdin>: ok (2 definitions)\n") and "top(X: R[n]) -> R[n]" in out


def test_diagnostics_of_standard_input_name_it(project: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, BAD)
    code, out, err = run(["check", "-"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("<stdin>:3:17: error[E200]: unknown variable `Y`")
    assert err.endswith("<stdin>: 1 error\n")


def test_ir_reads_standard_input(project: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, TWO)
    code, out, _ = run(["ir", "-", "g"], capsys)
    assert code == 0 and json.loads(out)["name"] == "g"


def test_render_reads_standard_input(project: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, USES_LIBRARY)
    code, _, err = run(["render", "-", "-o", "x.svg"], capsys)
    assert (code, err) == (0, "")
    assert (project / "x.svg").read_text().startswith("<svg")


def test_compile_reads_standard_input(project: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, GOOD)
    code, out, _ = run(["compile", "-"], capsys)
    assert code == 0 and "nn.Module" in out and "def forward" in out
    compile(out, "<generated>", "exec")  # Python source


def test_one_line_of_standard_input_ending_in_ncd_is_text_not_a_file_name(
        project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, "# see sub/lib.ncd")
    code, out, _ = run(["check", "-"], capsys)
    assert code == 0 and out == "<stdin>: ok (0 definitions)\n"


def test_standard_input_is_read_once(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "-", "-"], capsys)
    assert code == 2 and "only once" in err


# ---- 2. several files and folders ----------------------------------------------------------


def make_tree(root: Path) -> None:
    (root / "models" / "deep").mkdir(parents=True)
    (root / "models" / ".hidden").mkdir()
    (root / "models" / "b.ncd").write_text(GOOD)
    (root / "models" / "a.ncd").write_text(TWO)
    (root / "models" / "deep" / "c.ncd").write_text(GOOD)
    (root / "models" / ".hidden" / "h.ncd").write_text(BAD)
    (root / "models" / ".dot.ncd").write_text(BAD)
    (root / "models" / "notes.txt").write_text("not a model")


def test_a_folder_stands_for_its_ncd_files_sorted_recursively_hidden_ones_skipped(
        project: Path) -> None:
    make_tree(project)
    inputs = expand_inputs(["models", "models/b.ncd"])
    assert inputs.files == ["models/a.ncd", "models/b.ncd", "models/deep/c.ncd"]
    assert inputs.several and inputs.problems == []
    assert not expand_inputs(["models/a.ncd"]).several
    assert expand_inputs(["models/deep"]).several  # a folder: outputs go into a folder


def test_check_several_files_and_a_folder_reports_each(project: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(project)
    (project / "bad.ncd").write_text(BAD)
    code, out, err = run(["check", "-q", "bad.ncd", "models", "missing.ncd"], capsys)
    assert code == 2  # the worst: a missing file is a usage error; the others were checked
    assert "bad.ncd:3:17: error[E200]" in err and "bad.ncd: 1 error" in err
    assert "missing.ncd: no such file" in err and out == ""
    code, out, _ = run(["check", "models"], capsys)
    assert code == 0
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [
        "models/a.ncd: ok (2 definitions)", "models/b.ncd: ok (1 definition)",
        "models/deep/c.ncd: ok (1 definition)"]


@pytest.mark.parametrize(("command", "suffix", "magic"), [
    (["render"], "svg", "<svg"), (["render", "-f", "dot"], "dot", "digraph"),
    (["compile"], "py", "import torch"), (["ir"], "json", "{"),
])
def test_several_inputs_write_one_output_each_into_a_folder(
        command: list[str], suffix: str, magic: str, project: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(project)
    (project / "bad.ncd").write_text(BAD)
    code, _, err = run([*command, "models", "bad.ncd", "-o", "out/new"], capsys)
    assert code == 1, err  # bad.ncd has an error; the others are written all the same
    assert "bad.ncd: 1 error" in err
    written = sorted(p.name for p in (project / "out" / "new").iterdir())
    assert written == [f"{stem}.{suffix}" for stem in ("a", "b", "c")]
    for name in written:
        assert magic in (project / "out" / "new" / name).read_text()[:300]


def test_several_inputs_with_standard_input(project: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.ncd").write_text(GOOD)
    stdin(monkeypatch, TWO)
    assert run(["ir", "a.ncd", "-", "-o", "out"], capsys)[0] == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["a.json", "stdin.json"]
    assert [d["name"] for d in json.loads((project / "out" / "stdin.json").read_text())[
        "definitions"]] == ["f", "g"]


@pytest.mark.parametrize(("argv", "message"), [
    (["render", "a.ncd", "b.ncd"], "several inputs need -o DIR"),
    (["render", "a.ncd", "b.ncd", "-o", "-"], "several inputs need -o DIR"),
    (["compile", "a.ncd", "b.ncd", "-o", "file.txt"], "not a folder"),
    (["ir", "a.ncd", "other/a.ncd", "-o", "out"], "would both be written to out/a.json"),
    (["render", "a.ncd", "b.ncd", "f", "-o", "out"], "can be chosen for one input file only"),
    (["render", "a.ncd", "b.ncd", "--def", "f", "-o", "out"], "for one input file only"),
    (["render", "a.ncd", "g", "--def", "f"], "the definition is given twice"),
    (["check", "empty"], "empty: no .ncd files in this folder"),
])
def test_several_inputs_usage_errors(argv: list[str], message: str, project: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (project / "other").mkdir()
    (project / "empty").mkdir()
    for name in ("a.ncd", "b.ncd", "other/a.ncd"):
        (project / name).write_text(TWO)
    (project / "file.txt").write_text("")
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and message in err, err
    assert not (project / "out").exists()


def test_choosing_a_definition(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.ncd").write_text(TWO)
    for argv in (["ir", "a.ncd", "f"], ["ir", "a.ncd", "--def", "f"], ["ir", "--def", "f", "a.ncd"],
                 ["ir", "a.ncd", "-D", "m=4", "f"]):  # DEF after an option
        code, out, err = run(argv, capsys)
        assert code == 0 and json.loads(out)["name"] == "f", (argv, err)
    code, _, err = run(["ir", "a.ncd", "h"], capsys)
    assert code == 2 and "no definition named 'h'" in err


def test_files_may_follow_options(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.ncd").write_text(GOOD)
    (project / "b.ncd").write_text(TWO)
    assert run(["render", "a.ncd", "-o", "out", "b.ncd"], capsys)[0] == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["a.svg", "b.svg"]
    code, _, err = run(["check", "a.ncd", "--frobnicate"], capsys)
    assert code == 2 and "unrecognized arguments: --frobnicate" in err


def test_an_internal_error_in_one_input_does_not_stop_the_others(
        project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import ncd.renderers

    real = ncd.renderers.render_svg

    def fragile(program: object, name: str, options: object) -> str:
        if name == "g":
            raise RuntimeError("a bug")
        return real(program, name, options)  # type: ignore[arg-type]

    monkeypatch.setattr(ncd.renderers, "render_svg", fragile)
    (project / "a.ncd").write_text(TWO)  # its main definition is g
    (project / "b.ncd").write_text(GOOD)
    code, _, err = run(["render", "a.ncd", "b.ncd", "-o", "out"], capsys)
    assert code == 3 and "internal error (RuntimeError)" in err and "Traceback" not in err
    assert [p.name for p in (project / "out").iterdir()] == ["b.svg"]


# ---- the progress bar ----------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("count", [5, 6])
def test_a_progress_bar_shows_on_a_terminal_for_more_than_5_inputs(
        count: int, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "many").mkdir()
    for index in range(count):
        (project / "many" / f"m{index}.ncd").write_text(GOOD)
    (project / "many" / "m0.ncd").write_text(BAD)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["check", "-q", "--no-color", "many"]) == 1
    shown = terminal.getvalue()
    assert "many/m0.ncd:3:17: error[E200]" in shown
    if count == 5:
        assert "\r" not in shown
    else:
        assert "\r[" in shown and f"{count - 1}/{count} many/m{count - 1}.ncd" in shown
        assert shown.endswith("\r")  # cleared at the end
        # Cleared before the diagnostic, which starts a line of its own.
        assert "\rmany/m0.ncd:3:17" in shown.replace(" ", "")
    # Not a terminal: no bar.
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    main(["check", "-q", "many"])
    assert "\r" not in plain.getvalue()
