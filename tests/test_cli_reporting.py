"""How the command line reports: diagnostics as JSON (a golden), colour and its precedence
(flag, NO_COLOR, FORCE_COLOR, terminal), conventional exit codes, and the generated reference
`docs/cli.md`, which must match the parser."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from goldens import compare_golden

from ncd.cli import build_parser, color_enabled, main
from ncd.cli_reference import REGENERATE, reference

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"
GOOD = "axis m = 3\n\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"  # formatted
BAD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(Y)\n}\n"
# A hint, a note, a syntax error: one of each shape of diagnostic.
TWICE = ("axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"
         "def f(X: R[m]) -> R[m] {\n    return tanh(X)\n}\n")
SYNTAX = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X\n}\n"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for name, text in (("good.ncd", GOOD), ("bad.ncd", BAD), ("twice.ncd", TWICE),
                       ("syntax.ncd", SYNTAX)):
        (tmp_path / name).write_text(text)
    return tmp_path


# ---- 3. diagnostics as JSON ----------------------------------------------------------------


def test_check_json_golden(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--format", "json", "bad.ncd", "good.ncd", "twice.ncd",
                          "syntax.ncd"], capsys)
    assert code == 1 and err == ""
    compare_golden(GOLDEN / "cli_check.json", out)
    found = json.loads(out)
    assert [d["path"] for d in found] == ["bad.ncd", "twice.ncd", "syntax.ncd"]
    assert all(set(d) == {"path", "range", "code", "severity", "message", "hint", "notes"}
               for d in found)


def test_check_json_of_fine_files_is_an_empty_list(folder: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "--diagnostics", "json", "good.ncd"], capsys) == (0, "[]\n", "")


def test_json_ranges_are_one_based_with_an_exclusive_end(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--format", "json", "bad.ncd"], capsys)
    (diagnostic,) = json.loads(out)
    assert code == 1
    assert diagnostic["range"] == {"start": {"line": 3, "column": 17},
                                   "end": {"line": 3, "column": 18}}
    line = BAD.splitlines()[2]
    assert line[17 - 1:18 - 1] == "Y"  # the text the range covers


def test_a_bad_size_override_in_json_names_the_file_and_no_range(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--format", "json", "-D", "mm=4", "good.ncd"], capsys)
    (diagnostic,) = json.loads(out)
    assert code == 2
    assert (diagnostic["path"], diagnostic["range"], diagnostic["code"]) == ("good.ncd", None,
                                                                             "E314")
    assert diagnostic["hint"] == "did you mean `m`?"


@pytest.mark.parametrize("command", [["render", "-o", "x.svg"], ["compile"], ["ir"], ["fmt"]])
def test_other_commands_write_json_diagnostics_to_standard_error(
        command: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = "syntax.ncd" if command == ["fmt"] else "bad.ncd"
    code, out, err = run([command[0], file, *command[1:], "--diagnostics", "json"], capsys)
    assert code == 1 and out == ""
    (diagnostic,) = json.loads(err)
    assert diagnostic["path"] == file and diagnostic["code"] in ("E200", "E101")
    code, _, err = run([command[0], "good.ncd", *command[1:], "--diagnostics", "json"], capsys)
    assert code == 0 and err == ""  # no diagnostics: nothing


# ---- 6. colour -----------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "no_color", "force_color", "terminal", "expected"), [
    ([], "", "", False, False),
    ([], "", "", True, True),
    ([], "1", "", True, False),  # NO_COLOR over the terminal
    ([], "", "1", False, True),  # FORCE_COLOR over the terminal
    ([], "1", "1", False, False),  # NO_COLOR over FORCE_COLOR
    ([], "", "0", False, True),  # any non-empty value forces
    (["--color", "always"], "1", "", False, True),  # the flag over everything
    (["--color", "never"], "", "1", True, False),
    (["--no-color"], "", "1", True, False),
    (["--color", "auto"], "", "", True, True),
])
def test_colour_precedence(flags: list[str], no_color: str, force_color: str, terminal: bool,
                           expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("FORCE_COLOR", force_color)

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    for argv in ([*flags, "check", "x.ncd"], ["check", *flags, "x.ncd"]):
        args = build_parser().parse_args(argv)
        assert color_enabled(args, Stream()) is expected, argv


@pytest.mark.parametrize("argv", [
    ["--color", "always", "check", "bad.ncd"], ["check", "bad.ncd", "--color", "always"],
    ["check", "--color=always", "bad.ncd"],
])
def test_colour_flags_before_or_after_the_command(argv: list[str], folder: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 1 and "\x1b[31merror[E200]" in err


def test_no_color_after_the_command_wins_over_force_color(
        folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" in run(["check", "bad.ncd"], capsys)[2]
    assert "\x1b[" not in run(["check", "bad.ncd", "--no-color"], capsys)[2]
    assert "\x1b[" not in run(["--no-color", "fmt", "syntax.ncd"], capsys)[2]
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in run(["check", "bad.ncd"], capsys)[2]


# ---- 7. exit codes -------------------------------------------------------------------------


def test_fmt_diff_exits_1_when_a_file_would_change(folder: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "messy.ncd").write_text("axis m=3\n")
    code, out, err = run(["fmt", "--diff", "messy.ncd", "good.ncd"], capsys)
    assert code == 1 and "+axis m = 3" in out and err == "would reformat messy.ncd\n"
    assert (folder / "messy.ncd").read_text() == "axis m=3\n"
    assert run(["fmt", "--diff", "good.ncd"], capsys) == (0, "", "")


@pytest.mark.parametrize("command", [["check"], ["ir"], ["compile"], ["render", "-o", "x.svg"]])
@pytest.mark.parametrize("define", ["m=0", "zz=3", "m=-1", "m=x", f"m={10 ** 100}"])
def test_every_bad_size_override_is_a_usage_error(command: list[str], define: str, folder: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([command[0], "good.ncd", *command[1:], "-D", define], capsys)
    assert code == 2 and out == "", err
    assert "Traceback" not in err and not (folder / "x.svg").exists()


def test_an_unknown_axis_gets_a_did_you_mean(folder: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["--no-color", "check", "good.ncd", "-D", "mm=4"], capsys)
    assert code == 2
    assert err.splitlines() == ["ncd: error[E314]: `-D mm=4` names no declared axis",
                                "  = hint: did you mean `m`?", "good.ncd: 1 error"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["check", "good.ncd"], 0), (["check", "bad.ncd"], 1), (["check", "missing.ncd"], 2),
    (["check"], 2), (["check", "--help"], 0), (["--version"], 0), (["render", "good.ncd",
                                                                      "-o", "x.bmp"], 2),
    (["ir", "--schema", "good.ncd"], 2), (["fmt", "--check", "good.ncd"], 0),
    (["check", "good.ncd", "bad.ncd", "missing.ncd"], 2),
])
def test_exit_codes(argv: list[str], expected: int, folder: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv, capsys)[0] == expected


# ---- 9. the reference ----------------------------------------------------------------------


def test_docs_cli_md_is_the_generated_reference() -> None:
    path = Path(__file__).parent.parent / "docs" / "cli.md"
    assert path.read_text(encoding="utf-8") == reference(), (
        f"docs/cli.md is stale: regenerate it with `{REGENERATE}`")


def test_the_reference_names_every_command_and_option(
        capsys: pytest.CaptureFixture[str]) -> None:
    from ncd import cli_reference

    assert cli_reference.main() == 0
    text = capsys.readouterr().out
    parser = build_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in subparsers[0].choices.items():
        assert f"## `ncd {name}`" in text
        for action in command._actions:
            for option in action.option_strings:
                assert f"`{option}" in text or f", {option}" in text, (name, option)
