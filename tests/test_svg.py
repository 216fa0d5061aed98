"""The SVG emitter: goldens, determinism, and the safety and size rules of the output.

`NCD_ACCEPT_GOLDENS=1 pytest tests/test_svg.py` rewrites the goldens in `tests/golden/svg`
(refused when `CI=true`); on a mismatch the actual SVG is written beside the golden as
`NAME.actual.svg`, to open and compare.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
from defusedxml.ElementTree import fromstring
from ncd.renderers import RenderOptions, diagram, render_svg, svg
from ncd.renderers.geometry import Circle, Stroke, Text
from ncd.renderers.geometry import Path as PathItem
from ncd.renderers.text import xml_clean

from ncd import ir

sys.path.insert(0, str(Path(__file__).parent))
import ir_samples
from goldens import compare_golden

GOLDEN = Path(__file__).parent / "golden" / "svg"
SVG = "{http://www.w3.org/2000/svg}"

GOLDEN_CASES = {
    "linear": ("linear", RenderOptions()),
    "reindexings": ("reindexings", RenderOptions()),
    "layer_collapsed": ("layer", RenderOptions(collapse_depth=1)),
    "mask_sizes": ("mask_by_array", RenderOptions(wire_labels="sizes", theme="print")),
}


@pytest.fixture(scope="module")
def samples() -> ir.Program:
    return ir_samples.program()


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden(samples: ir.Program, case: str) -> None:
    name, options = GOLDEN_CASES[case]
    compare_golden(GOLDEN / f"{case}.svg", render_svg(samples, name, options))


def test_golden_accept_is_refused_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCD_ACCEPT_GOLDENS", "1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="refused"):
        compare_golden(GOLDEN / "linear.svg", "<svg/>")


@pytest.mark.parametrize("name", ir_samples.SAMPLES)
def test_same_bytes_twice(samples: ir.Program, name: str) -> None:
    options = RenderOptions(expand_calls=True, show_params=True)
    assert render_svg(samples, name, options) == render_svg(samples, name, options)


@pytest.mark.parametrize("text", ["paths", "text"])
@pytest.mark.parametrize("name", ["attention", "layer", "embedding", "scan"])
def test_document_is_safe_and_sized(samples: ir.Program, name: str, text: str) -> None:
    svg = render_svg(samples, name, RenderOptions(text=text))
    root = fromstring(svg)
    assert root.tag == f"{SVG}svg"
    width, height = root.get("width"), root.get("height")
    assert width.endswith("px") and height.endswith("px")
    assert root.get("viewBox") == f"0 0 {width[:-2]} {height[:-2]}"
    for element in root.iter():
        assert element.tag not in (f"{SVG}foreignObject", f"{SVG}script", f"{SVG}image",
                                   f"{SVG}use")
        for key, value in element.attrib.items():
            assert "href" not in key and not key.startswith("on")
            assert "url(" not in value and "javascript:" not in value
    # Coordinates are rounded: no number with more than two decimals.
    assert not re.search(r"\d\.\d{3}", svg)


def test_paths_mode_draws_outlines_and_text_mode_real_text(samples: ir.Program) -> None:
    paths = fromstring(render_svg(samples, "linear"))
    assert not list(paths.iter(f"{SVG}text"))
    assert "m" in {e.get("aria-label") for e in paths.iter(f"{SVG}path")}
    text = fromstring(render_svg(samples, "linear", RenderOptions(text="text")))
    spans = "".join("".join(t.itertext()) for t in text.iter(f"{SVG}text"))
    assert "m" in spans and "L" in spans


def _hostile_program() -> ir.Program:
    xm = ir_samples.XM
    title = '<script>alert("x")</script> & \u00ab'
    block = ir.Block(dom=(xm,), cod=(xm,), title=title, color='red"/><script>',
                     body=ir_samples.norm())
    return ir.Program(source="<hostile>", axes=ir_samples.AXES,
                      definitions=(ir_samples.definition("hostile", block),))


@pytest.mark.parametrize("text", ["paths", "text"])
def test_source_strings_are_escaped(text: str) -> None:
    svg = render_svg(_hostile_program(), "hostile", RenderOptions(text=text))
    root = fromstring(svg)  # parses: nothing broke out of its attribute or element
    assert not list(root.iter(f"{SVG}script"))
    assert "<script>" not in svg
    shown = {e.get("aria-label") for e in root.iter()} | {
        "".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert any(s and "<script>" in s for s in shown)  # the title, as text
    # An unusable block colour falls back to the palette instead of reaching the output.
    assert 'red"' not in svg


def test_every_string_reads_back_as_written(samples: ir.Program) -> None:
    """The emitter writes the document as text: markup characters, quotes, line breaks and
    tabs in an attribute or in the title come back from an XML parser unchanged, and a
    character XML forbids comes back as U+FFFD."""
    odd = 'a & b < c > d " e \' f\tg\nh\ri \ud800 \x01'
    base = diagram(samples, "linear")
    wire = PathItem(start=(0.0, 0.0), segments=((1.0, 1.0),),
                    stroke=Stroke(color=odd, width=1.0, dash=(2.0, 1.0)), fill=odd)
    label = next(item for item in base.items if isinstance(item, Text))
    coloured = [dataclasses.replace(label, color=odd),
                Circle(1.0, 1.0, 1.0, odd, Stroke(color=odd, width=0.5))]
    drawn = dataclasses.replace(base, title=odd, background=odd,
                                items=(*base.items, wire, *coloured))
    for text in ("paths", "text"):
        root = fromstring(svg.render(drawn, text=text))
        clean = xml_clean(odd)
        title = root.find(f"{SVG}title")
        assert title is not None
        assert title.text == clean.replace("\r", "\n")  # a parser reads a CR in text as LF
        assert next(root.iter(f"{SVG}rect")).get("fill") == clean
        (added,) = (e for e in root.iter(f"{SVG}path") if e.get("stroke-dasharray") == "2 1")
        assert (added.get("fill"), added.get("stroke")) == (clean, clean)
        (circle,) = (e for e in root.iter(f"{SVG}circle") if e.get("stroke-width") == "0.5")
        assert (circle.get("fill"), circle.get("stroke")) == (clean, clean)
        if text == "paths":  # a label's colour (`<text>` mode draws in the reader's colours)
            assert clean in {e.get("fill") for e in root.iter(f"{SVG}path") if e.get("aria-label")}


def test_themes(samples: ir.Program) -> None:
    dark = fromstring(render_svg(samples, "attention", RenderOptions(theme="dark")))
    background = next(e for e in dark.iter(f"{SVG}rect"))
    assert background.get("fill") == "#1c1e22"
    printed = render_svg(samples, "layer", RenderOptions(theme="print"))
    colours = set(re.findall(r'(?:fill|stroke)="(#[0-9a-f]{6})"', printed))
    assert colours and all(c[1:3] == c[3:5] == c[5:7] for c in colours)  # greys only
    light = render_svg(samples, "layer")
    assert any(c[1:3] != c[3:5] for c in re.findall(r'fill="(#[0-9a-f]{6})"', light))


def test_every_label_is_drawn(samples: ir.Program) -> None:
    d = diagram(samples, "attention")
    labels = sum(1 for item in d.items if isinstance(item, Text))
    root = fromstring(render_svg(samples, "attention"))
    assert labels == sum(1 for e in root.iter(f"{SVG}path") if e.get("aria-label"))


def test_png_conversion_works(samples: ir.Program) -> None:
    resvg_py = pytest.importorskip("resvg_py")
    png = bytes(resvg_py.svg_to_bytes(svg_string=render_svg(samples, "attention")))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
