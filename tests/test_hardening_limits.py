"""Hostile inputs that once broke the guarantees of `docs/reliability.md`, each held here:

1. noncharacters (U+FFFE, U+FFFF, U+FDD0.., U+nFFFE/U+nFFFF) in strings and docstrings are
   E100 where written, and no writer emits a character XML 1.0 forbids;
2. every drawn label is bounded in length (a 10,000-character axis name, a 990,000-character
   title), so an output's size does not grow with the length of a name;
3. drawing with calls expanded counts the calls first and refuses a call tree that doubles;
4. a long chain of calls is drawn, checked and compiled, or refused cleanly when expanded;
5. a long point-free chain is read without recursion, and refused where it passes its limit;
6. checking is linear in the number of definitions.
"""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path

import pytest
from defusedxml.ElementTree import fromstring
from ncd.renderers import RenderOptions, render_svg, render_tikz
from ncd.renderers.dot import program_to_dot, render_dot
from ncd.renderers.layout import MAX_EXPANDED_CALLS, MAX_EXPANDED_DEPTH, expansion_extent
from ncd.renderers.text import ELLIPSIS, MAX_NAME_CHARS, MAX_TITLE_CHARS, Label, elide

import ncd
from ncd import ir
from ncd import syntax as s
from ncd.cli import main
from ncd.diagnostics import Diagnostic, NcdError
from ncd.parser import MAX_NESTING, MAX_POINTFREE_TERMS, parse

XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def rejected(src: str, code: str) -> Diagnostic:
    with pytest.raises(NcdError) as caught:
        ncd.load(src)
    found = [d for d in caught.value.diagnostics if d.code == code]
    assert found, caught.value.render()
    assert all(d.span is not None for d in caught.value.diagnostics)
    return found[0]


def position(src: str, index: int) -> tuple[int, int]:
    """Line and column (both from 1) of character `index` of `src`."""
    line = src.count("\n", 0, index) + 1
    return line, index - (src.rfind("\n", 0, index) + 1) + 1


def titled(title: str, doc: str = "", colour: str = "#336699") -> str:
    """A program with one block; `title` is written between the quotes as given."""
    return (f'"""{doc}"""\naxis m = 3\ndef f(X: R[m]) -> R[m] {{\n    block "{title}" '
            f'color "{colour}" {{\n        Y = relu(X)\n    }}\n    return Y\n}}\n')


def escaped(text: str) -> str:
    """`text` spelled with escapes only, as a string literal's contents."""
    return "".join(f"\\U{ord(ch):08x}" for ch in text)


def assert_xml_safe(text: str) -> None:
    found = XML_FORBIDDEN.search(text)
    assert found is None, f"U+{ord(found.group()):04X} at {found.start()}"


# ---- 1. noncharacters ------------------------------------------------------------------------

NONCHARACTERS = ["\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0001ffff",
                 "\U0010fffe", "\U0010ffff"]


@pytest.mark.parametrize("char", NONCHARACTERS)
@pytest.mark.parametrize("spelling", ["escape", "raw"])
def test_noncharacters_in_a_title_are_refused_where_written(char: str, spelling: str) -> None:
    written = escaped(char) if spelling == "escape" else char
    src = titled(f"ok {written} more")
    diagnostic = rejected(src, "E100")
    assert diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == position(src, src.index(written))
    assert diagnostic.span.end_column - diagnostic.span.column == len(written)
    assert f"noncharacter U+{ord(char):04X}" in diagnostic.message


@pytest.mark.parametrize("written", ["\\ufffe", "\\uFFFF", "\\uFDD0"])
def test_noncharacters_in_a_colour_are_refused_where_written(written: str) -> None:
    src = titled("t", colour=f"#{written}")
    diagnostic = rejected(src, "E100")
    assert diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == position(src, src.index(written))


def test_a_control_character_is_refused_at_its_escape() -> None:
    src = titled("a\\tb\\x07c")  # the tab is allowed, the bell is not
    diagnostic = rejected(src, "E100")
    assert diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == position(src, src.index("\\x07"))
    assert "U+0007" in diagnostic.message


@pytest.mark.parametrize("char", ["\ufffe", "\ufdd5", "\U0002ffff"])
def test_noncharacters_in_docstrings_are_refused_where_written(char: str) -> None:
    doc = f"The first line.\n    The second line holds {char} here."
    src = titled("t", doc=doc)
    diagnostic = rejected(src, "E100")
    assert diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == position(src, src.index(char))
    assert diagnostic.span.line == 2
    src = "axis m = 3\ndef f(X: R[m]) -> R[m] { return X }\n" + \
        f'def g = f """point-free {char}"""\n'
    diagnostic = rejected(src, "E100")
    assert diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == position(src, src.index(char))


@pytest.mark.parametrize("char", ["\ufdcf", "\ufdf0", "\ufffd", "\U0001fffd", "\U0010fffd"])
def test_characters_next_to_the_noncharacters_are_text(char: str) -> None:
    program = ncd.load(titled(f"a {escaped(char)} b", doc=f"doc {char}"))
    body = program.ir.definition("f").body
    assert isinstance(body, ir.Block) and body.title == f"a {char} b"


# Every odd character a title may hold: whitespace and line separators, format characters,
# bidirectional controls, private use, specials, astral symbols, tags, markup characters.
ODD = ("\t\n\u00a0\u00ad\u0301\u200b\u200d\u200e\u202e\u2028\u2029\u2066\ufeff\ue000\uf8ff"
       "\ufdcf\ufdf0\ufff9\ufffc\ufffd\U0001d465\U0001f600\U0001fffd\U000e0001\U000f0000"
       "\U0010fffd<>&'\"")


@pytest.mark.parametrize("text", ["paths", "text"])
def test_svg_of_a_title_with_every_allowed_odd_character_is_xml(text: str) -> None:
    program = ncd.load(titled(escaped(ODD)))
    svg = render_svg(program.ir, "f", RenderOptions(text=text))  # type: ignore[arg-type]
    assert_xml_safe(svg)
    root = fromstring(svg)
    if text == "paths":
        labels = [e.get("aria-label") or "" for e in root.iter()]
    else:
        labels = ["".join(e.itertext()) for e in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any("\U0001f600" in label and "<>&" in label for label in labels)
    assert_xml_safe(render_tikz(program.ir, "f"))
    assert_xml_safe(program_to_dot(program.ir, "f"))


def test_writers_never_emit_what_xml_forbids() -> None:
    """An IR built in Python skips the parser: the writers still make well-formed output."""
    program = ncd.load(titled("t")).ir
    definition = program.definition("f")
    assert isinstance(definition.body, ir.Block)
    hostile = "a\ufffeb\uffffc\x01d\x1be\ud800f"
    body = definition.body.model_copy(update={"title": hostile})
    program = program.model_copy(update={
        "definitions": (definition.model_copy(update={"body": body}),)})
    for text in ("paths", "text"):
        svg = render_svg(program, "f", RenderOptions(text=text))  # type: ignore[arg-type]
        assert_xml_safe(svg)
        fromstring(svg.encode("utf-8"))
        assert "\ufffd" in svg
    assert_xml_safe(render_tikz(program, "f"))
    dot = program_to_dot(program, "f")
    assert_xml_safe(dot)
    fromstring(render_dot(dot, "svg"))


# ---- 2. label lengths ------------------------------------------------------------------------


def copies(wires: int, name: str) -> str:
    """`X` with axis `name`, read `wires` times (at most 100 operands per statement)."""
    groups = [min(100, wires - start) for start in range(0, wires, 100)]
    body = "".join(f"    S{i} = " + " + ".join(["X"] * k) + "\n" for i, k in enumerate(groups))
    total = "    return " + " + ".join(f"S{i}" for i in range(len(groups))) + "\n"
    return f"axis {name} = 3\ndef f(X: R[{name}]) -> R[{name}] {{\n{body}{total}}}\n"


def test_elide_keeps_short_text_and_cuts_long_text() -> None:
    assert elide("a" * MAX_NAME_CHARS) == "a" * MAX_NAME_CHARS
    middle = elide("b" + "a" * 100 + "z")
    assert len(middle) == MAX_NAME_CHARS and middle[0] == "b" and middle[-1] == "z"
    assert ELLIPSIS in middle[1:-1]
    end = elide("T" * 200, MAX_TITLE_CHARS, "end")
    assert end == "T" * (MAX_TITLE_CHARS - 1) + ELLIPSIS


def test_labels_are_bounded_and_keep_their_style() -> None:
    def length(label: Label) -> int:
        return sum(len(run.text) for run in label.runs)

    axis = Label.axis("d_" + "f" * 500 + "_end")
    assert length(axis) == MAX_NAME_CHARS
    assert axis.runs[0].text == "d" and axis.runs[0].style == "italic"
    assert axis.runs[-1].script == "sub" and axis.plain_text().endswith("_end")
    assert ELLIPSIS in axis.plain_text()
    assert length(Label.axis("9" * 300)) == MAX_NAME_CHARS
    assert length(Label.plain("T" * 10_000)) == MAX_TITLE_CHARS
    assert length(Label.math(" + ".join(["x"] * 1000))) == MAX_TITLE_CHARS
    assert length(Label.operator("L", "q" * 100)) == 1 + MAX_NAME_CHARS
    assert Label.axis("d_ff") == Label.axis("d_ff")  # short labels are as before
    assert Label.plain("Layer").runs[0].text == "Layer"


def test_a_long_axis_name_on_many_wires_stays_small() -> None:
    long_name = copies(30, "a" * 10_000)
    program = ncd.load(long_name)
    start = time.process_time()
    svg = render_svg(program.ir, "f", RenderOptions(width=None))  # on one row
    assert time.process_time() - start < 20
    assert len(svg.encode("utf-8")) < 4_000_000  # a GB before labels were bounded
    assert ELLIPSIS in svg
    # Wrapped within the default width, each row break names its wires on both sides of
    # it: more labels, each as bounded.
    start = time.process_time()
    wrapped = render_svg(program.ir, "f")
    assert time.process_time() - start < 20
    assert len(wrapped.encode("utf-8")) < 8_000_000
    # Beyond the limit a name's length changes nothing in the drawing.
    assert svg == render_svg(ncd.load(copies(30, "a" * (MAX_NAME_CHARS + 1))).ir, "f",
                             RenderOptions(width=None))
    assert wrapped == render_svg(ncd.load(copies(30, "a" * (MAX_NAME_CHARS + 1))).ir, "f")
    text = render_svg(program.ir, "f", RenderOptions(text="text", wire_labels="both"))
    assert len(text.encode("utf-8")) < 1_000_000 and ELLIPSIS in text
    tikz = render_tikz(program.ir, "f")
    assert len(tikz) < 1_000_000 and r"\ldots" in tikz
    dot = program_to_dot(program.ir, "f")
    assert len(dot) < 100_000 and ELLIPSIS in dot


def test_a_huge_title_stays_small() -> None:
    src = titled("T" * 990_000)
    assert len(src.encode("utf-8")) < 1_000_000
    program = ncd.load(src)
    svg = render_svg(program.ir, "f")
    assert len(svg.encode("utf-8")) < 200_000  # 590 MB before
    assert ELLIPSIS in svg
    assert ("T" * (MAX_TITLE_CHARS - 1) + ELLIPSIS) in svg  # the aria-label of the title
    text = render_svg(program.ir, "f", RenderOptions(text="text"))
    assert len(text) < 50_000 and "T" * MAX_TITLE_CHARS not in text
    tikz = render_tikz(program.ir, "f")
    assert len(tikz) < 200_000 and r"\ldots" in tikz
    dot = program_to_dot(program.ir, "f")
    assert len(dot) < 5_000 and ELLIPSIS in dot


def test_a_collapsed_repeated_block_keeps_its_count_after_a_long_title() -> None:
    src = ('axis m = 3\ndef f(X: R[m]) -> R[m] {\n    block "' + "T" * 500 + '" x3 {\n'
           "        X = relu(X)\n    }\n    return X\n}\n")
    svg = render_svg(ncd.load(src).ir, "f", RenderOptions(collapse_depth=0))
    labels = [e.get("aria-label") or "" for e in fromstring(svg).iter()]
    title = next(label for label in labels if label.startswith("TTT"))
    assert len(title) == MAX_TITLE_CHARS and title.endswith(f"{ELLIPSIS} \u00d73")


def test_long_definition_names_are_bounded_in_every_output(tmp_path: Path) -> None:
    name = "g" * 5_000
    src = (f"axis m = 3\ndef {name}(X: R[m]) -> R[m] {{ return relu(X) }}\n"
           f"def f(X: R[m]) -> R[m] {{ return {name}({name}({name}(X))) }}\n")
    program = ncd.load(src)
    for options in (RenderOptions(), RenderOptions(expand_calls=True)):
        svg = render_svg(program.ir, "f", options)
        assert name[:MAX_NAME_CHARS] not in svg and ELLIPSIS in svg
    assert name[:MAX_NAME_CHARS] not in program_to_dot(program.ir, "f")
    assert name[:MAX_NAME_CHARS] not in render_svg(program.ir, name)


# ---- 3 and 4. expanding calls -------------------------------------------------------------


def doubling(depth: int) -> str:
    """`f_i(X) = f_{i-1}(f_{i-1}(X))`: expanding f_depth draws 2 + 4 + ... + 2^depth calls."""
    lines = ["axis m = 3", "def f0(X: R[m]) -> R[m] { return relu(X) }"]
    lines += [f"def f{i}(X: R[m]) -> R[m] {{ return f{i - 1}(f{i - 1}(X)) }}"
              for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


def chain(length: int) -> str:
    """`f_i(X) = f_{i-1}(X)`: one call per definition."""
    lines = ["axis m = 3", "def f0(X: R[m]) -> R[m] { return relu(X) }"]
    lines += [f"def f{i}(X: R[m]) -> R[m] {{ return f{i - 1}(X) }}"
              for i in range(1, length + 1)]
    return "\n".join(lines) + "\n"


def test_expansion_extent_counts_the_call_tree() -> None:
    assert expansion_extent(ncd.load(doubling(8)).ir, "f8") == (510, 8)
    assert expansion_extent(ncd.load(chain(5)).ir, "f5") == (5, 5)
    # The count stops just past the limit, however large the tree.
    assert expansion_extent(ncd.load(doubling(60)).ir, "f60") == (MAX_EXPANDED_CALLS + 1, 60)
    nested = ("axis m = 3\ndef g(X: R[m]) -> R[m] { block \"in\" { Y = relu(X) } return Y }\n"
              "def f(X: R[m]) -> R[m] { block \"out\" { Y = g(X) } return Y }\n")
    program = ncd.load(nested).ir
    assert expansion_extent(program, "f") == (1, 3)  # out > g > in
    assert expansion_extent(program, "f", collapse_depth=0) == (0, 1)  # `out` is a box


def test_expanding_a_call_tree_that_doubles_is_refused_quickly(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    src = doubling(16)
    program = ncd.load(src)
    start = time.perf_counter()
    for render in (render_svg, render_tikz):
        with pytest.raises(NcdError) as caught:
            render(program.ir, "f16", RenderOptions(expand_calls=True))
        (diagnostic,) = caught.value.diagnostics
        assert diagnostic.code == "E103" and diagnostic.span is not None
        assert (diagnostic.span.line, diagnostic.span.column) == (18, 5)  # `def f16`
        assert f"more than {MAX_EXPANDED_CALLS:,} calls" in diagnostic.message
        assert diagnostic.hint is not None
        assert "--expand" in diagnostic.hint and "`f15`" in diagnostic.hint
    assert time.perf_counter() - start < 5
    assert len(render_svg(program.ir, "f16")) < 20_000  # unexpanded: one box
    source = tmp_path / "double.ncd"
    source.write_text(src)
    output = tmp_path / "out.svg"
    assert main(["render", "--expand", str(source), "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert f"{source}:18:5: error[E103]" in err or "double.ncd:18:5: error[E103]" in err
    assert not output.exists()
    assert main(["render", str(source), "-o", str(output)]) == 0


def test_a_call_tree_within_the_limit_is_expanded() -> None:
    program = ncd.load(doubling(8)).ir
    # No width budget: within one, a drawing too wide has its deepest calls folded.
    svg = render_svg(program, "f8", RenderOptions(expand_calls=True, width=None))
    assert svg.count('aria-label="f0"') == 256  # every leaf call framed with its name


@pytest.mark.parametrize("length", [260, 1000])
def test_a_long_chain_of_calls_never_ends_in_an_internal_error(
        length: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "chain.ncd"
    source.write_text(chain(length))
    out = str(tmp_path / "out")
    assert main(["check", "-q", str(source)]) == 0
    assert main(["render", str(source), "-o", out + ".svg"]) == 0
    assert main(["render", str(source), "-o", out + ".dot"]) == 0
    assert main(["compile", str(source), "-o", out + ".py"]) == 0
    assert main(["ir", str(source), "-o", out + ".json"]) == 0
    capsys.readouterr()
    for suffix in (".svg", ".tex"):
        assert main(["render", "--expand", str(source), "-o", out + "x" + suffix]) == 1
        err = capsys.readouterr().err
        assert f"chain.ncd:{length + 2}:5: error[E103]" in err
        assert f"would nest {length} frames" in err and "internal error" not in err


def test_expansion_nests_frames_up_to_the_depth_limit() -> None:
    program = ncd.load(chain(MAX_EXPANDED_DEPTH + 1)).ir
    svg = render_svg(program, f"f{MAX_EXPANDED_DEPTH}", RenderOptions(expand_calls=True))
    fromstring(svg)
    with pytest.raises(NcdError, match=f"more than {MAX_EXPANDED_DEPTH}"):
        render_svg(program, f"f{MAX_EXPANDED_DEPTH + 1}", RenderOptions(expand_calls=True))
    # (The width budget's wrapping and folding are tried on the chain above; below, every
    # level is laid out once, at the full depth.)
    # The deepest layout per level known: a call beside another step, then a sum.
    lines = ["axis m = 3", "def f0(X: R[m]) -> R[m] { return relu(X) }"]
    lines += [f"def f{i}(X: R[m]) -> R[m] {{ Y = f{i - 1}(X)\n Z = relu(X)\n return Y + Z }}"
              for i in range(1, MAX_EXPANDED_DEPTH + 1)]
    program = ncd.load("\n".join(lines) + "\n").ir
    fromstring(render_svg(program, f"f{MAX_EXPANDED_DEPTH}",
                          RenderOptions(expand_calls=True, width=None)))


# ---- 5. point-free chains --------------------------------------------------------------------

HEAD = "axis m = 3\ndef f(X: R[m]) -> R[m] { return relu(X) }\n"


def name_positions(src: str) -> list[int]:
    line_start = src.index("def g")
    return [line_start + m.start() for m in re.finditer(r"\bf\b", src[line_start:])]


@pytest.mark.parametrize("operator", [" ; ", " (x) "])
def test_a_pointfree_chain_beyond_the_limit_is_refused_where_it_passes_it(
        operator: str) -> None:
    src = HEAD + "def g = " + operator.join(["f"] * (MAX_POINTFREE_TERMS + 500)) + "\n"
    diagnostic = rejected(src, "E103")
    assert diagnostic.span is not None
    expected = position(src, name_positions(src)[MAX_POINTFREE_TERMS])
    assert (diagnostic.span.line, diagnostic.span.column) == expected
    assert f"{MAX_POINTFREE_TERMS:,} terms" in diagnostic.message


def test_parenthesised_pointfree_chains_are_counted_together() -> None:
    inner = " ; ".join(["f"] * 20)
    src = HEAD + "def g = " + "(" * 60 + inner + (") ; " + inner) * 60 + "\n"
    diagnostic = rejected(src, "E103")
    assert diagnostic.span is not None
    expected = position(src, name_positions(src)[MAX_POINTFREE_TERMS])
    assert (diagnostic.span.line, diagnostic.span.column) == expected


def test_a_pointfree_chain_at_the_limit_is_read() -> None:
    program = ncd.load(HEAD + "def g = " + " ; ".join(["f"] * MAX_POINTFREE_TERMS) + "\n")
    body = program.ir.definition("g").body
    assert isinstance(body, ir.Composed) and len(body.terms) == MAX_POINTFREE_TERMS



def shape_of(expr: s.PfExpr) -> str:
    if isinstance(expr, s.PfName):
        return expr.name.name
    joined = ",".join(shape_of(term) for term in expr.terms)
    return f"C({joined})" if isinstance(expr, s.PfCompose) else f"T({joined})"


def test_pointfree_chains_group_as_before() -> None:
    """A chain joins the chain on its left, parenthesised or not; one on its right stays a
    group (as when the chain was read recursively)."""
    module = parse("def g = (f ; f) ; f (x) f ; (f ; f) (x) (f (x) f) ; (f ; f)")
    (item,) = module.items
    assert isinstance(item, s.PointFree)
    assert shape_of(item.expr) == "C(f,f,T(f,f),T(C(f,f),T(f,f)),C(f,f))"
    module = parse("def g = ((f (x) f) (x) f) (x) (f)")
    (item,) = module.items
    assert isinstance(item, s.PointFree)
    assert shape_of(item.expr) == "T(f,f,f,f)"


def test_deeply_nested_pointfree_parentheses_are_refused_at_the_bracket() -> None:
    depth = MAX_NESTING + 1
    src = HEAD + "def g = " + "(" * depth + "f" + ")" * depth + "\n"
    diagnostic = rejected(src, "E103")
    assert diagnostic.span is not None
    opening = src.index("(" * depth) + depth - 1
    assert (diagnostic.span.line, diagnostic.span.column) == position(src, opening)


# ---- 6. many definitions ---------------------------------------------------------------------


def many(count: int) -> str:
    lines = ["axis m = 4", "def f0(X: R[m]) -> R[m] { return relu(X) }"]
    lines += [f"def f{i}(X: R[m]) -> R[m] {{ return f{i - 1}(X) }}" for i in range(1, count)]
    return "\n".join(lines) + "\n"


def checking_time(count: int) -> float:
    src = many(count)
    start = time.process_time()
    program = ncd.load(src)
    elapsed = time.process_time() - start
    assert len(program.names) == count
    return elapsed


def test_checking_time_is_linear_in_the_number_of_definitions() -> None:
    checking_time(200)  # warm up: the grammar, the font, imports
    small = min(checking_time(1000) for _ in range(2))
    large = min(checking_time(4000) for _ in range(2))
    # Linear gives 4; it was 8 to 10 when each definition copied the table of the others.
    assert large / small < 6, f"1,000: {small:.2f} s, 4,000: {large:.2f} s"


def test_the_garbage_collector_is_restored_after_loading() -> None:
    assert gc.isenabled()
    ncd.load(many(10))
    assert gc.isenabled()
    with pytest.raises(NcdError):
        ncd.load(many(10) + "def broken(X: R[m]) -> R[m] { return Q }\n")
    assert gc.isenabled()
    gc.disable()
    try:
        ncd.load(many(10))
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
