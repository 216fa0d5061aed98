"""The Python API: `ncd.load` of text or a file, sizes, definitions and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import ncd
from ncd import ir
from ncd.diagnostics import NcdError

SRC = """\
\"\"\"Two layers.\"\"\"
axis x
axis m = 8, n = 4
def proj(X: R[x, m]) -> R[x, n] { return linear[m -> n](X, W) }
def both(X: R[x, m]) -> (A: R[x, n], B: R[x, m]) { return proj(X), relu(X) }
"""


def test_load_text() -> None:
    program = ncd.load(SRC)
    assert program.names == ("proj", "both")
    assert "proj" in program and "nothing" not in program
    assert program.main.name == "both"
    assert program.axes["m"].size == ir.SizeConst(value=8)
    assert program.ir.doc == "Two layers."
    assert [d.name for d in program] == ["proj", "both"]
    assert repr(program).startswith("<ncd program <input>: proj, both")


def test_definition_view() -> None:
    both = ncd.load(SRC)["both"]
    assert both.signature == "both(X: R[x, m]) -> (R[x, n], R[x, m])"
    assert both.domain == (both.ir.inputs[0].array,)
    assert [a.text() for a in both.codomain] == ["R[x, n]", "R[x, m]"]
    assert repr(both) == "<ncd definition both(X: R[x, m]) -> (R[x, n], R[x, m])>"
    assert ncd.load(SRC)["proj"].signature == "proj(X: R[x, m]) -> R[x, n]"


def test_unknown_definition_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match="defines proj, both"):
        ncd.load(SRC)["nope"]


def test_sizes_override() -> None:
    program = ncd.load(SRC, sizes={"m": 16, "x": 3})
    x_axis = program["proj"].domain[0].shape
    assert [a.value for a in x_axis.axes] == [3, 16]


def test_load_a_path_and_a_path_string(tmp_path: Path) -> None:
    path = tmp_path / "model.ncd"
    path.write_text(SRC)
    assert ncd.load(path).names == ("proj", "both")
    assert ncd.load(str(path)).names == ("proj", "both")


def test_errors_carry_every_diagnostic_and_sources() -> None:
    with pytest.raises(NcdError) as caught:
        ncd.load("axis m = 4\ndef f(X: R[m]) -> R[m] { return relu(A) }\n"
                 "def g(X: R[m]) -> R[m] { return tanh(B) }\n")
    error = caught.value
    assert [(d.code, d.span.line) for d in error.diagnostics if d.span] == [("E200", 2),
                                                                            ("E200", 3)]
    assert "<input>" in error.sources
    assert str(error) == error.render()
    assert "2 | def f" in str(error)


def test_missing_file_is_an_error_not_text(tmp_path: Path) -> None:
    with pytest.raises(NcdError) as caught:
        ncd.load(tmp_path / "missing.ncd")
    assert [d.code for d in caught.value.diagnostics] == ["E205"]


def test_json_of_the_program() -> None:
    program = ncd.load(SRC)
    assert ir.Program.model_validate_json(program.to_json()) == program.ir
    assert "\n" not in program.to_json(indent=None)


def test_loading_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, ncd\nncd.load('axis m = 2\\ndef f(X: R[m]) -> R[m] { return relu(X) }')"
            "\nassert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_programs_and_definitions_show_themselves_as_svg_in_notebooks() -> None:
    import defusedxml.ElementTree as ElementTree

    program = ncd.load("axis x\naxis m = 4\ndef f(X: R[x, m]) -> R[x, m] { return relu(X) }")
    for shown in (program._repr_svg_(), program["f"]._repr_svg_()):
        root = ElementTree.fromstring(shown)
        assert root.tag.endswith("svg") and root.get("viewBox")


def test_a_missing_file_is_reported_as_missing_not_parsed_as_source() -> None:
    with pytest.raises(ncd.NcdError) as caught:
        ncd.load("models/no-such-model.ncd")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E205" and "cannot find" in diagnostic.message


def test_types_print_as_the_source_writes_them() -> None:
    program = ncd.load(SRC)
    proj = program["proj"]
    assert repr(proj.domain) == "(R[x, m],)"
    assert str(proj.codomain[0]) == "R[x, n]"
    assert repr(proj.domain[0].shape) == "[x, m = 8]"
    assert repr(program.axes["m"]) == "axis m = 8" and repr(program.axes["x"]) == "axis x"
    assert repr(ncd.load("axis v = 5\ndef f(T: N[v][v]) -> N[v][v] { return T }")["f"].domain) \
        == "(N[5][v],)"


@pytest.mark.parametrize(("sizes", "message"), [
    ({"m": "64"}, "sizes['m'] must be a positive int, got '64' (str) (write 64, not '64')"),
    ({"m": True}, "sizes['m'] must be a positive int, got True (bool)"),
    ({"m": 2.0}, "sizes['m'] must be a positive int, got 2.0 (float)"),
    ({3: 4}, "sizes: the keys are axis names (str); got 3 (int)"),
    ([("m", 4)], "sizes must be a mapping of axis names to positive ints"),
])
def test_size_overrides_of_the_wrong_type_are_type_errors(sizes: object, message: str) -> None:
    with pytest.raises(TypeError) as caught:
        ncd.load(SRC, sizes=sizes)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(("sizes", "message", "hint"), [
    ({"mm": 4}, "`-D mm=4` names no declared axis", "did you mean `m`?"),
    ({"zzz": 4}, "`-D zzz=4` names no declared axis", "the declared axes are `m`, `n`, `x`"),
    ({"m": 0}, "`-D m=0`: a size is a positive integer", None),
    ({"m": 10**40}, "`-D m=...`: the size has more than 18 digits", None),
])
def test_size_overrides_the_program_refuses_are_e314(sizes: dict[str, int], message: str,
                                                     hint: str | None) -> None:
    with pytest.raises(NcdError) as caught:
        ncd.load(SRC, sizes=sizes)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.message, diagnostic.hint) == ("E314", message, hint)


def test_a_numpy_like_integer_is_a_size() -> None:
    class Index:
        def __index__(self) -> int:
            return 16

    program = ncd.load(SRC, sizes={"m": Index()})  # type: ignore[dict-item]
    assert program.axes["m"].size == ir.SizeConst(value=16)


def test_render_options_are_documented_and_checked() -> None:
    program = ncd.load(SRC)
    for method in (ncd.Program.render, ncd.Definition.render):
        for option in ("wire_labels", "collapse_depth", "expand_calls", "theme", "text",
                       "show_params", '"dark"', '"print"', '"sizes"'):
            assert option in (method.__doc__ or ""), (method, option)
    with pytest.raises(TypeError, match=r"unknown option `colapse_depth`; did you mean "
                                        r"`collapse_depth`\?"):
        program["proj"].render(colapse_depth=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="the options are wire_labels, collapse_depth"):
        program.render(standalone=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="theme must be one of 'light', 'dark', 'print'; "
                                         "got 'blue'"):
        program.render(theme="blue")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"collapse_depth must be None or an int, got '1'"):
        program.render(collapse_depth="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="collapse_depth must be None or at least 0"):
        program.render(collapse_depth=-1)
    with pytest.raises(TypeError, match="show_params must be True or False, got 1"):
        program.render(show_params=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="width must be None or a number"):
        program.render(width="wide")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 200 px"):
        program.render(width=50)
    assert program.render("proj", width=None) == program.render("proj", width=5000)
    from ncd.renderers import RenderOptions

    from ncd.api import DEFAULT_WIDTH

    assert DEFAULT_WIDTH == RenderOptions().width  # one default, written twice
    dark = program["proj"].render(theme="dark", wire_labels="both", show_params=True)
    assert dark == program.render("proj", theme="dark", wire_labels="both", show_params=True)
    assert dark != program.render("proj")
