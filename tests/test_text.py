"""Labels: parsing names into styled runs, metrics that match the drawn outlines, safety."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys

import defusedxml.ElementTree as SafeET
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ncd.renderers.text import Label, Run, TextBox, svg_text_element

PATH_DATA = re.compile(r"(?:[MLQCZ](?:-?\d+(?:\.\d{1,2})?)?(?: -?\d+(?:\.\d{1,2})?)*)*")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def path_extent(d: str) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of every point in absolute path data."""
    xs: list[float] = []
    ys: list[float] = []
    for segment in re.findall(r"[MLQC][^MLQCZ]*", d):
        values = [float(v) for v in NUMBER.findall(segment)]
        xs.extend(values[0::2])
        ys.extend(values[1::2])
    return min(xs), max(xs), min(ys), max(ys)


# ----------------------------------------------------------------------------- constructors


@pytest.mark.parametrize(
    ("name", "runs"),
    [
        ("x", (Run("x", "italic"),)),
        ("d_ff", (Run("d", "italic"), Run("ff", "italic", "sub"))),
        ("x1", (Run("x", "italic"), Run("1", "roman", "sub"))),
        ("x_1", (Run("x", "italic"), Run("1", "roman", "sub"))),
        ("d_model", (Run("d", "italic"), Run("model", "italic", "sub"))),
        ("seq_len", (Run("seq", "italic"), Run("len", "italic", "sub"))),
        ("512", (Run("512", "roman"),)),
        ("", ()),
    ],
)
def test_axis_labels(name: str, runs: tuple[Run, ...]) -> None:
    assert Label.axis(name).runs == runs


def test_axis_that_is_a_size_expression_is_a_formula() -> None:
    assert Label.axis("m / h") == Label.math("m / h")
    assert Label.axis("m / h").plain_text() == "m/h"


def test_operator_label_is_bold_with_italic_subscript() -> None:
    assert Label.operator("L", "q").runs == (Run("L", "bold"), Run("q", "italic", "sub"))
    assert Label.operator("L", "out").plain_text() == "L_out"
    assert Label.operator("E").runs == (Run("E", "bold"),)


def test_plain_label_is_one_roman_run() -> None:
    assert Label.plain("Transformer layer").runs == (Run("Transformer layer", "roman"),)
    assert Label.plain("").runs == ()


@pytest.mark.parametrize(
    ("formula", "text"),
    [
        ("2*p + w", "2p + w"),
        ("2*p+w", "2p + w"),
        ("p*2", "p\u22c52"),
        ("-x + 1", "\u2212x + 1"),
        ("x - 1", "x \u2212 1"),
        ("2*(p - 1)", "2(p \u2212 1)"),
        ("x >= y", "x \u2265 y"),
        ("x**2", "x^2"),
        ("sqrt(k)", "sqrt(k)"),
        ("b, 2*p + w", "b, 2p + w"),
    ],
)
def test_formula_text(formula: str, text: str) -> None:
    assert Label.math(formula).plain_text() == text


def test_formula_styles_variables_italic_and_numbers_roman() -> None:
    runs = Label.math("2*p + w").runs
    assert runs == (Run("2", "roman"), Run("p", "italic"), Run(" + ", "roman"),
                    Run("w", "italic"))
    assert Label.math("sqrt(k)").runs[0] == Run("sqrt(", "roman")


def test_plain_text_marks_scripts() -> None:
    assert Label.axis("d_ff").plain_text() == "d_ff"
    assert Label((Run("x", "italic"), Run("2", "roman", "sup"))).plain_text() == "x^2"


def test_bad_style_is_rejected() -> None:
    with pytest.raises(ValueError, match="style"):
        Run("x", "oblique")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="script"):
        Run("x", "roman", "over")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- metrics


def test_measure_scales_with_size() -> None:
    label = Label.axis("d_ff")
    small, large = label.measure(10), label.measure(20)
    assert small.width > 0 and small.ascent > 0 and small.descent > 0
    assert large.width == pytest.approx(2 * small.width)
    assert large.ascent == pytest.approx(2 * small.ascent)
    assert large.descent == pytest.approx(2 * small.descent)
    assert large.height == pytest.approx(large.ascent + large.descent)


def test_measure_of_empty_label_is_zero() -> None:
    assert Label.axis("").measure(12) == TextBox(0.0, 0.0, 0.0)
    assert Label.axis("").svg_path(3, 4, 12) == ""


def test_longer_text_is_wider_and_subscripts_are_smaller() -> None:
    assert Label.plain("mm").measure(10).width > Label.plain("m").measure(10).width
    base = Label((Run("ff", "italic"),)).measure(10).width
    sub = Label((Run("ff", "italic", "sub"),)).measure(10).width
    assert sub == pytest.approx(0.7 * base, rel=0.05)
    # an x-height letter has no descender; a subscript hangs below the baseline
    assert Label.axis("x").measure(10).descent < 0.5
    assert Label.axis("x_1").measure(10).descent > 1.0


def test_italic_and_bold_use_different_glyphs() -> None:
    roman = Label((Run("L", "roman"),)).svg_path(0, 0, 10)
    italic = Label((Run("L", "italic"),)).svg_path(0, 0, 10)
    bold = Label((Run("L", "bold"),)).svg_path(0, 0, 10)
    assert len({roman, italic, bold}) == 3


@pytest.mark.parametrize(
    "label",
    [Label.axis("d_ff"), Label.axis("h"), Label.operator("L", "out"), Label.plain("relu"),
     Label.math("2*p + w"), Label.math("x**2"), Label.plain("Transformer layer")],
)
def test_drawn_outline_lies_in_measured_box(label: Label) -> None:
    x, y, size = 100.0, 50.0, 12.0
    box = label.measure(size)
    xmin, xmax, ymin, ymax = path_extent(label.svg_path(x, y, size))
    tolerance = 0.02
    assert xmin >= x - 0.1 * size  # italic letters may overhang a little to the left
    assert xmax <= x + box.width + tolerance
    assert ymin >= y - box.ascent - tolerance
    assert ymax <= y + box.descent + tolerance
    # and the box is tight: the ink reaches its top and bottom
    assert ymin == pytest.approx(y - box.ascent, abs=tolerance)
    assert ymax == pytest.approx(y + box.descent, abs=tolerance)


# ----------------------------------------------------------------------------- path data


def test_path_is_absolute_rounded_and_moves_with_the_origin() -> None:
    label = Label.axis("x")
    d = label.svg_path(10, 20, 10)
    assert PATH_DATA.fullmatch(d)
    assert d.startswith("M")
    assert re.search(r"[a-z]", d) is None  # no relative commands
    x0, _, y0, _ = path_extent(d)
    x1, _, y1, _ = path_extent(label.svg_path(110, 220, 10))
    assert x1 - x0 == pytest.approx(100, abs=0.011)
    assert y1 - y0 == pytest.approx(200, abs=0.011)


def test_path_is_deterministic_across_processes() -> None:
    code = ("from ncd.renderers.text import Label; "
            "print(Label.axis('d_ff').svg_path(1.234, 5.678, 11.5))")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout
        for _ in range(2)
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == Label.axis("d_ff").svg_path(1.234, 5.678, 11.5)


def test_bad_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="font size"):
        Label.axis("x").measure(0)
    with pytest.raises(ValueError, match="font size"):
        Label.axis("x").svg_path(0, 0, float("nan"))
    with pytest.raises(ValueError, match="position"):
        Label.axis("x").svg_path(float("inf"), 0, 10)


HOSTILE = "<script>alert('x')</script>&amp;\"\x00\x07\n\t\ud800\uffff中🙂\u0301"


def test_hostile_text_becomes_glyphs() -> None:
    for label in (Label.plain(HOSTILE), Label.axis(HOSTILE), Label.math(HOSTILE),
                  Label.operator(HOSTILE, HOSTILE)):
        d = label.svg_path(0, 0, 10)
        assert PATH_DATA.fullmatch(d)
        assert label.measure(10).width > 0


def test_missing_glyph_is_drawn_not_skipped() -> None:
    # a character the font lacks is drawn as the notdef box, with a width of its own
    assert Label.plain("中").svg_path(0, 0, 10) != ""
    assert Label.plain("a中").measure(10).width > Label.plain("a").measure(10).width


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_any_text_measures_and_draws(text: str) -> None:
    for label in (Label.plain(text), Label.axis(text), Label.math(text)):
        box = label.measure(9)
        assert box.width >= 0 and box.ascent >= 0 and box.descent >= 0
        assert PATH_DATA.fullmatch(label.svg_path(1.5, 2.5, 9))
        element = SafeET.fromstring(svg_text_element(label, 1.5, 2.5, 9))
        assert element.tag == "text"


# ----------------------------------------------------------------------------- <text> mode


def test_text_element_has_styled_tspans() -> None:
    element = SafeET.fromstring(svg_text_element(Label.axis("d_ff"), 10, 20, 12))
    assert element.get("x") == "10" and element.get("y") == "20"
    spans = list(element)
    assert [s.text for s in spans] == ["d", "ff"]
    assert spans[0].get("font-style") == "italic"
    assert spans[1].get("font-size") == "8.4"
    assert float(spans[1].get("y")) > 20  # subscript below the baseline


def test_text_element_escapes_markup() -> None:
    source = svg_text_element(Label.plain(HOSTILE), 0, 0, 10)
    assert "<script" not in source
    element = SafeET.fromstring(source)
    text = "".join(element.itertext())
    assert "<script>alert('x')</script>&amp;\"" in text
    assert "\x00" not in text


# ----------------------------------------------------------------------------- speed


def test_thousand_labels_read_each_glyph_once() -> None:
    """What keeps many labels fast (timed in no unit test): each glyph's outline is read
    from the font once, however many labels use it; drawing the labels again reads none."""
    from ncd.renderers import text as text_module

    names = ["x", "m", "h", "k", "d_ff", "y", "v", "seq_len"]
    labels = [Label.axis(f"{names[i % 8]}{i}") for i in range(1000)]
    read_before = text_module._glyph.cache_info().misses
    for i, label in enumerate(labels):
        label.measure(10)
        label.svg_path(i * 1.5, i * 0.5, 10)
    read = text_module._glyph.cache_info().misses - read_before
    characters = {char for name in names for char in name} | set("0123456789")
    assert read <= 2 * len(characters)  # a name and its subscript may differ in style
    for i, label in enumerate(labels):
        label.svg_path(i * 1.5, i * 0.5, 10)
    assert text_module._glyph.cache_info().misses - read_before == read


def test_hash_is_the_hash_of_the_fields_and_stays_in_its_process() -> None:
    """A label's hash is computed once, and is the one a frozen dataclass gives (the hash of
    its fields' tuple); a pickled label carries its runs alone (a string hashes otherwise in
    another process)."""
    label = Label.axis("d_ff")
    assert hash(label) == hash((label.runs,)) == hash(Label(label.runs))
    assert label == Label(label.runs) and label != Label.axis("d_k")
    restored = pickle.loads(pickle.dumps(label))
    assert restored == label and hash(restored) == hash(label)
    assert pickle.loads(pickle.dumps(label)).__dict__ == {"runs": label.runs}
