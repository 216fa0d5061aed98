"""Nothing from the input reaches generated Python, SVG, TikZ or DOT unvalidated or unescaped.

Names are ASCII identifiers by the grammar (non-ASCII look-alikes are rejected with a located
diagnostic); the compiler maps names that Python or `nn.Module` would misread; strings (block
titles, colours, docstrings, file names) are escaped for each output.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from fuzz_strategies import TRICKY_NAMES, build_modules, check_python, check_svg, exercise
from ncd.renderers import RenderOptions, render_svg, render_tikz
from ncd.renderers.dot import program_to_dot

import ncd
from ncd.cli import main
from ncd.diagnostics import NcdError

HOSTILE = ('<script>alert(1)</script>', '" onload="alert(1)', "' onmouseover='x'",
           "</svg><svg onload=alert(1)>", "<![CDATA[ ]]>", "<!-- -->", "&amp; &lt; & <",
           '<foreignObject><iframe src="http://evil"/></foreignObject>',
           '<a href="javascript:alert(1)">x</a>', '<image href="http://evil/x.png"/>',
           "\\input{/etc/passwd} \\write18{rm -rf /} $\\x$ # % & _ ^ ~ { }",
           "a\\nimport os\\nos.system('x')", "\\\"\\\"\\\" ''' \\\\", "__import__('os')",
           "x" * 3000)


def located_error(src: str, code: str) -> tuple[int, int]:
    with pytest.raises(NcdError) as caught:
        ncd.load(src)
    diagnostics = [d for d in caught.value.diagnostics if d.code == code]
    assert diagnostics, caught.value.render()
    span = diagnostics[0].span
    assert span is not None
    return span.line, span.column


# ---- identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "é",  # Latin small e with acute
    "ха",  # Cyrillic letters that look Latin
    "ｍ",  # fullwidth m (NFKC: m)
    "𝑥",  # mathematical italic x (NFKC: x)
    "ﬁ",  # ligature (NFKC: fi)
    "m\u200b",  # zero-width space after an ASCII name
    "Ⅻ",  # roman numeral (NFKC: XII)
    "µ",  # micro sign (NFKC: Greek mu)
])
def test_non_ascii_identifiers_are_rejected_where_they_stand(name: str) -> None:
    for src, at in [(f"axis {name} = 3\n", (1, 6)),
                    (f"axis m = 3\ndef f({name}: R[m]) -> R[m] {{ return X }}\n", (2, 7)),
                    (f"axis m = 3\ndef f(X: R[m]) -> R[m] {{\n  {name} = relu(X)\n"
                     f"  return X\n}}\n", (3, 3))]:
        line, column = located_error(src, "E100")
        # The diagnostic points at the first character that is not ASCII.
        offset = next(i for i, ch in enumerate(name) if not ch.isascii())
        assert (line, column) == (at[0], at[1] + offset)


def test_identifiers_are_ascii_by_the_grammar() -> None:
    from ncd.parser import grammar_text

    assert re.search(r"^NAME: /\[A-Za-z_\]\[A-Za-z0-9_\]\*/$", grammar_text(), re.M)


def hostile_names_program() -> str:
    names = [n for n in TRICKY_NAMES if n != "_"]
    lines = ["axis m = 3, n = 2", ""]
    for index, name in enumerate(names):
        lines.append(f"def {name}({name}: R[m]) -> R[n] {{")
        lines.append(f"    param {names[(index + 1) % len(names)]}: R[m, n]")
        lines.append(f"    {names[(index + 2) % len(names)]}[n] = sum(m) {name}[m] * "
                     f"{names[(index + 1) % len(names)]}[m, n]")
        lines.append(f"    return {names[(index + 2) % len(names)]}")
        lines.append("}")
    callers = ", ".join(f"{n}(X)" for n in names[:3])
    lines.append(f"def main(X: R[m]) -> (R[n], R[n], R[n]) {{ return {callers} }}")
    return "\n".join(lines) + "\n"


def test_names_that_python_would_misread_compile_to_safe_code() -> None:
    """Keywords, builtins, dunders, `self`, `torch`, `nn.Module` attributes: every one is a
    valid ncd name; the generated code defines the model and nothing else, and runs."""
    program = ncd.load(hostile_names_program())
    source = program.compile()
    check_python(source)
    build_modules(source)
    tree = ast.parse(source)
    assert {type(node).__name__ for node in tree.body} == {"Import", "ImportFrom", "ClassDef"}


def test_parameters_keep_their_names_as_state_dict_keys() -> None:
    """`__import__` and `exec` are names of weights, never of code that runs; a name that
    `nn.Module` itself uses (`eval`) gets a trailing underscore, a dunder name a `p` prefix."""
    module = ncd.load("axis m = 3\ndef f(X: R[m]) -> R[m] {\n"
                      "    Y = layernorm[m](X, __import__, exec)\n"
                      "    return layernorm[m](Y, eval)\n}\n").to_torch()
    assert sorted(module.state_dict()) == ["eval_", "exec", "p__import__"]


# ---- strings into SVG, TikZ, DOT and Python -------------------------------------------------


def titled(title: str, doc: str = "", colour: str = "#336699") -> str:
    title = re.sub(r'(?<!\\)"', '\\\\"', title)  # a quote in an ncd string is escaped
    return (f'"""{doc}"""\naxis m = 3\ndef f(X: R[m]) -> R[m] {{\n    """{doc}"""\n'
            f'    block "{title}" color "{colour}" {{\n        Y = relu(X)\n    }}\n'
            "    return Y\n}\n")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_block_titles_and_docstrings_are_escaped(hostile: str) -> None:
    doc = hostile.replace('"', "'").replace("\\", "/")  # a docstring ends at three quotes
    program = ncd.load(titled(hostile, doc))
    for text in ("paths", "text"):
        svg = render_svg(program.ir, "f", RenderOptions(text=text))
        check_svg(svg)
        assert "<script" not in svg.lower() and "<foreignobject" not in svg.lower()
        assert "javascript:" not in svg or "&lt;a href" in svg
    check_python(program.compile())
    exercise(titled(hostile, doc))


def test_title_survives_as_text() -> None:
    svg = render_svg(ncd.load(titled("<b>&</b>")).ir, "f", RenderOptions(text="text"))
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in svg


@pytest.mark.parametrize("colour", ['red" onload="alert(1)', "url(http://evil/x.svg#a)",
                                    "red;} @import url(http://evil)", "javascript:alert(1)",
                                    "expression(alert(1))", "</style><script>x</script>"])
def test_colours_cannot_inject(colour: str) -> None:
    """A colour is a name of the palette: anything else is refused where it is written (E310),
    so no text of the source reaches the SVG or TikZ as a colour."""
    with pytest.raises(NcdError) as caught:
        ncd.load(titled("t", colour=re.sub(r'(?<!\\)"', '\\\\"', colour)))
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.code == "E310" and diagnostic.message.startswith("unknown colour")
    assert diagnostic.span is not None and diagnostic.span.line == 5


def test_tex_commands_in_titles_are_escaped() -> None:
    tex = render_tikz(ncd.load(titled("\\\\input{/etc/passwd} \\\\write18{rm} $x$ % # _")).ir,
                      "f")
    assert "\\input{" not in tex and "\\write18{" not in tex
    assert not re.search(r"(?<!\\)%", tex.split("\n", 1)[1])  # no comment cuts a line


def test_dot_labels_are_quoted() -> None:
    dot = program_to_dot(ncd.load(titled('a\\" ]; evil [label=\\"x\\nb')).ir, "f")
    for line in dot.splitlines():
        unescaped = re.sub(r"\\.", "", line)
        assert unescaped.count('"') % 2 == 0, line
    assert "evil [" not in re.sub(r'"(?:[^"\\]|\\.)*"', '""', dot)


def test_title_with_newlines_stays_in_comments() -> None:
    source = ncd.load(titled("a\\nimport os\\nos.system('rm')")).compile()
    check_python(source)
    assert not re.search(r"^\s*(import os|os\.system)", source, re.M)


def test_file_name_cannot_inject_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    source = tmp_path / "m\nimport os\nos.system('x')\n.ncd"
    source.write_text(titled("t"))
    output = tmp_path / "out.py"
    assert main(["compile", str(source), "-o", str(output)]) == 0
    check_python(output.read_text())
    assert main(["render", str(source), "-o", str(tmp_path / "out.svg")]) == 0
    check_svg((tmp_path / "out.svg").read_text())


@pytest.mark.parametrize("escape", ["\\x1b[31m", "\\x00", "\\x07", "\\ud800", "\\x7f"])
def test_control_characters_in_strings_are_rejected(escape: str) -> None:
    line, column = located_error(titled(f"bad {escape} title"), "E100")
    assert (line, column) == (5, 16)  # at the escape, not at the string's opening quote


def test_lone_surrogates_in_source_text_are_rejected() -> None:
    line, column = located_error("axis m = 3  # \ud800\n", "E104")
    assert (line, column) == (1, 15)


def test_raw_control_characters_in_docstrings_are_harmless() -> None:
    src = titled("t", doc="bell \x07 escape \x1b[31m delete \x7f rtl \u202e")
    outcome = exercise(src, build=True)
    assert outcome.accepted and "build" in outcome.stages


def test_very_long_names() -> None:
    name, weight = "f" * 10_000, "W" * 10_000
    src = (f"axis m = 3\ndef {name}(X: R[m]) -> R[m] {{\n"
           f"    return layernorm[m](X, {weight})\n}}\n")
    outcome = exercise(src, build=True)
    assert outcome.accepted and "build" in outcome.stages
