"""The import search path: beside the importing file first (inside its folder), then each
folder of `-I` / `include=`, then those of `NCD_PATH`, then the standard library shipped
with ncd (`import "std/..."`). A file found nowhere is one error that lists where it looked.
The command line, the API, the site builder and the language server resolve the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ncd
from ncd import cli, lsp_analysis
from ncd.loader import SEARCH_PATH_VARIABLE, STD_ROOT, search_path
from ncd.site import build_site

LAYER = "axis x\naxis m = 8\ndef {name}(X: R[x, m]) -> R[x, m] {{ return {body}(X) }}\n"
USER = 'import "layers.ncd"\ndef model(X: R[x, m]) -> R[x, m] { return mlp(X) }\n'


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A project folder and two library folders, each with its own `layers.ncd`, and no
    `NCD_PATH` from the environment the tests run in."""
    monkeypatch.delenv(SEARCH_PATH_VARIABLE, raising=False)
    made = {}
    for name, body in [("first", "relu"), ("second", "tanh")]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "layers.ncd").write_text(LAYER.format(name="mlp", body=body), encoding="utf-8")
        made[name] = folder
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.ncd").write_text(USER, encoding="utf-8")
    made["project"] = project
    return made


def functions(program: ncd.Program) -> str:
    """Which entrywise function `mlp` applies: which `layers.ncd` was imported."""
    return program["mlp"].ir.body.model_dump_json().split('"function":"')[1].split('"')[0]


def test_a_file_beside_the_importer_wins(folders: dict[str, Path]) -> None:
    (folders["project"] / "layers.ncd").write_text(LAYER.format(name="mlp", body="sigmoid"),
                                                   encoding="utf-8")
    program = ncd.load(folders["project"] / "model.ncd", include=[folders["first"]])
    assert functions(program) == "sigmoid"


def test_the_folders_are_searched_in_order(folders: dict[str, Path]) -> None:
    model = folders["project"] / "model.ncd"
    assert functions(ncd.load(model, include=[folders["first"], folders["second"]])) == "relu"
    assert functions(ncd.load(model, include=[str(folders["second"]),
                                              folders["first"]])) == "tanh"


def test_ncd_path_comes_after_include(folders: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = folders["project"] / "model.ncd"
    monkeypatch.setenv(SEARCH_PATH_VARIABLE,
                       os.pathsep.join(["", str(folders["second"]), str(folders["first"])]))
    assert functions(ncd.load(model)) == "tanh"
    assert functions(ncd.load(model, include=[folders["first"]])) == "relu"
    assert search_path([folders["first"]]) == (folders["first"].resolve(),
                                               folders["second"].resolve(),
                                               folders["first"].resolve())


def test_include_is_a_list_of_folders() -> None:
    with pytest.raises(TypeError, match="include must be a list of folders"):
        ncd.load("axis m = 2\n", include="layers")  # type: ignore[arg-type]


def test_a_missing_import_lists_where_it_looked(folders: dict[str, Path]) -> None:
    (folders["project"] / "model.ncd").write_text(
        'import "blocks.ncd"\naxis m = 8\n', encoding="utf-8")
    with pytest.raises(ncd.NcdError) as failure:
        ncd.load(folders["project"] / "model.ncd", include=[folders["first"]])
    (diagnostic,) = failure.value.diagnostics
    assert diagnostic.code == "E205" and diagnostic.message == "cannot find `blocks.ncd`"
    assert diagnostic.hint is not None
    looked = diagnostic.hint.split("looked for ")[1].split(";")[0].split(", ")
    assert [Path(p).resolve() for p in looked] == [
        (folders["project"] / "blocks.ncd").resolve(), (folders["first"] / "blocks.ncd").resolve()]


def test_a_search_folder_is_not_left_by_dot_dot(folders: dict[str, Path]) -> None:
    """`../x.ncd` leaves every folder it could be looked for in: the project's root, as
    before, is named."""
    (folders["project"] / "model.ncd").write_text('import "../first/layers.ncd"\n',
                                                  encoding="utf-8")
    with pytest.raises(ncd.NcdError) as failure:
        ncd.load(folders["project"] / "model.ncd", include=[folders["second"]])
    (diagnostic,) = failure.value.diagnostics
    assert diagnostic.code == "E205" and "outside the project root" in diagnostic.message
    assert diagnostic.hint is not None and "-I DIR" in diagnostic.hint


def test_the_standard_library_is_found_from_anywhere(tmp_path: Path) -> None:
    model = tmp_path / "model.ncd"
    model.write_text('import "std/norms.ncd"\naxis x\naxis m = 8\n'
                     "def f(X: R[x, m]) -> R[x, m] { return rms_norm(X) }\n", encoding="utf-8")
    program = ncd.load(model)
    assert {"rms_norm", "layer_norm", "f"} <= set(program.names)
    assert any(Path(name).resolve() == STD_ROOT / "norms.ncd" for name in program.sources)


def test_a_local_std_folder_comes_first(tmp_path: Path) -> None:
    """The standard library is searched last: a project's own `std/norms.ncd` is its own."""
    (tmp_path / "std").mkdir()
    (tmp_path / "std" / "norms.ncd").write_text(LAYER.format(name="mine", body="relu"),
                                                encoding="utf-8")
    model = tmp_path / "model.ncd"
    model.write_text('import "std/norms.ncd"\ndef f(X: R[x, m]) -> R[x, m] { return mine(X) }\n',
                     encoding="utf-8")
    assert "layer_norm" not in ncd.load(model).names


def test_an_unknown_std_file_names_the_closest_one() -> None:
    with pytest.raises(ncd.NcdError) as failure:
        ncd.load('import "std/attentions.ncd"\n')
    (diagnostic,) = failure.value.diagnostics
    assert diagnostic.message == "cannot find `std/attentions.ncd`"
    assert diagnostic.hint is not None
    assert "std/attentions.ncd in the standard library" in diagnostic.hint
    assert diagnostic.hint.endswith("did you mean `std/attention.ncd`?")
    with pytest.raises(ncd.NcdError) as failure:
        ncd.load('import "std/resnet.ncd"\n')
    assert (failure.value.diagnostics[0].hint or "").endswith(
        "the standard library holds `std/attention.ncd`, `std/conv.ncd`, "
        "`std/feedforward.ncd`, `std/norms.ncd`")


def test_the_command_line_takes_dash_i(folders: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    model = str(folders["project"] / "model.ncd")
    assert cli.main(["check", model]) == 1
    assert "cannot find `layers.ncd`" in capsys.readouterr().err
    assert cli.main(["check", "-I", str(folders["second"]), model]) == 0
    assert "model(X: R[x, m]) -> R[x, m]" in capsys.readouterr().out
    assert cli.main(["compile", "--include", str(folders["first"]), model]) == 0
    assert "F.relu(X)" in capsys.readouterr().out
    assert cli.main(["check", "-I", str(folders["project"] / "model.ncd"), model]) == 2
    assert "-I" in capsys.readouterr().err


def test_every_command_that_loads_files_takes_dash_i() -> None:
    parser = cli.build_parser()
    commands = next(action for action in parser._actions
                    if action.__class__.__name__ == "_SubParsersAction")
    takes = {name for name, sub in commands.choices.items()  # type: ignore[attr-defined]
             if any("-I" in action.option_strings for action in sub._actions)}
    assert takes == {"check", "ir", "render", "compile", "stats", "watch", "site", "train"}


def test_the_site_resolves_imports_with_include(folders: dict[str, Path],
                                                tmp_path: Path) -> None:
    lines: list[str] = []
    status = build_site([folders["project"]], tmp_path / "site", include=[str(folders["first"])],
                        report=lines.append)
    assert status == 0, lines


def test_the_language_server_resolves_as_check_does(folders: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = folders["project"] / "model.ncd"
    text = model.read_text(encoding="utf-8")
    assert [d.code for d in lsp_analysis.analyse(text, model).diagnostics] == ["E205"]
    assert lsp_analysis.analyse(text, model, include=[folders["first"]]).diagnostics == []
    monkeypatch.setenv(SEARCH_PATH_VARIABLE, str(folders["second"]))
    assert lsp_analysis.analyse(text, model).diagnostics == []
    std = 'import "std/feedforward.ncd"\naxis m = 8, f = 16\n'
    assert lsp_analysis.analyse(std, model).diagnostics == []
