"""PNG and PDF export: decodable, right size, right geometry, byte-deterministic."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

import pypdf
import pytest
from ncd.renderers.export import (
    parse_color,
    parse_length,
    parse_path,
    parse_transform,
    svg_to_pdf,
    svg_to_png,
)
from ncd.renderers.text import Label, svg_text_element

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'


def svg(body: str, width: float = 100, height: float = 80, extra: str = "") -> str:
    return (f'<svg {SVG_NS} width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" {extra}>{body}</svg>')


# ----------------------------------------------------------------------------- a PNG reader


def decode_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int, int]]]]:
    """Width, height and RGBA rows of an 8-bit RGBA PNG (what resvg writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position = 8
    width = height = 0
    idat = b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", body[:10])
            assert (depth, color_type) == (8, 6)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 4
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        filter_type = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - 4] if i >= 4 else 0
            up = previous[i]
            up_left = previous[i - 4] if i >= 4 else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 255
            elif filter_type == 2:
                line[i] = (line[i] + up) & 255
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif filter_type == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 255
        rows.append(line)
        previous = line
    pixels = [[tuple(row[x * 4:x * 4 + 4]) for x in range(width)] for row in rows]
    return width, height, pixels  # type: ignore[return-value]


# ----------------------------------------------------------------------------- PNG


def test_png_has_scaled_size_and_draws_shapes() -> None:
    document = svg('<rect x="10" y="10" width="30" height="20" fill="#ff0000"/>'
                   '<circle cx="70" cy="50" r="10" fill="blue"/>')
    width, height, pixels = decode_png(svg_to_png(document, scale=2.0))
    assert (width, height) == (200, 160)
    assert pixels[40][50] == (255, 0, 0, 255)  # inside the rectangle (25, 20) * 2
    assert pixels[100][140] == (0, 0, 255, 255)  # the circle's centre
    assert pixels[150][10][3] == 0  # transparent background


def test_png_background_and_scale() -> None:
    document = svg("", 10, 10)
    width, height, pixels = decode_png(svg_to_png(document, scale=3, background="white"))
    assert (width, height) == (30, 30)
    assert pixels[0][0] == (255, 255, 255, 255)
    with pytest.raises(ValueError, match="scale"):
        svg_to_png(document, scale=0)


def test_png_draws_glyph_outlines() -> None:
    label = Label.axis("m")
    document = svg(f'<path d="{label.svg_path(10, 50, 40)}" fill="black"/>')
    _, _, pixels = decode_png(svg_to_png(document, scale=1))
    box = label.measure(40)
    inked = [(x, y) for y, row in enumerate(pixels) for x, p in enumerate(row) if p[3] > 128]
    assert inked
    assert min(x for x, _ in inked) >= 9 and max(x for x, _ in inked) <= 10 + box.width + 1
    assert min(y for _, y in inked) >= 50 - box.ascent - 1


def test_png_is_byte_deterministic() -> None:
    document = svg('<path d="M10 10 C 40 0, 60 80, 90 70" stroke="black" fill="none"/>'
                   + svg_text_element(Label.axis("d_ff"), 10, 60, 14))
    assert svg_to_png(document) == svg_to_png(document)


def test_png_rejects_broken_svg() -> None:
    with pytest.raises(ValueError):
        svg_to_png("<svg")


# ----------------------------------------------------------------------------- PDF


def read_pdf(data: bytes) -> tuple[pypdf.PdfReader, str]:
    reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
    content = reader.pages[0].get_contents()
    assert content is not None
    return reader, content.get_data().decode("ascii")


def test_pdf_is_one_page_of_the_svg_size() -> None:
    reader, _ = read_pdf(svg_to_pdf(svg("", 400, 200)))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (float(box.left), float(box.bottom)) == (0, 0)
    assert (float(box.width), float(box.height)) == (300, 150)  # 0.75 pt per px


def test_pdf_size_in_absolute_units() -> None:
    document = (f'<svg {SVG_NS} width="85mm" height="24mm" viewBox="0 0 850 240">'
                '<rect width="850" height="240"/></svg>')
    reader, content = read_pdf(svg_to_pdf(document))
    box = reader.pages[0].mediabox
    assert float(box.width) == pytest.approx(85 / 25.4 * 72, abs=1e-3)
    assert 0.1 / 25.4 * 72 == pytest.approx(0.2835, abs=1e-4)
    assert float(box.height) == pytest.approx(24 / 25.4 * 72, abs=1e-3)
    # the viewBox maps onto the page: 0.1 mm per unit, y flipped
    assert content.startswith("0.2835 0 0 -0.2835 0 68.0315 cm")


def test_pdf_geometry_of_a_rectangle() -> None:
    _, content = read_pdf(svg_to_pdf(svg(
        '<rect x="10" y="20" width="30" height="40" fill="#ff0000" stroke="blue"'
        ' stroke-width="2"/>')))
    lines = content.splitlines()
    assert lines[0] == "0.75 0 0 -0.75 0 60 cm"  # y flipped: SVG y down, PDF y up
    assert "1 0 0 rg" in lines and "0 0 1 RG" in lines and "2 w" in lines
    assert lines[lines.index("10 20 m"):lines.index("10 20 m") + 6] == [
        "10 20 m", "40 20 l", "40 60 l", "10 60 l", "h", "B"]


def test_pdf_strokes_dashes_caps_and_opacity() -> None:
    _, content = read_pdf(svg_to_pdf(svg(
        '<g opacity="0.5"><path d="M0 0 L50 0" stroke="black" stroke-dasharray="4 2 1"'
        ' stroke-linecap="round" fill="none"/></g>')))
    assert "[4 2 1 4 2 1] 0 d" in content  # an odd dash list is repeated, as SVG says
    assert "1 J" in content
    assert "/GS0 gs" in content and content.rstrip().endswith("Q")


def test_pdf_opacity_state_is_in_resources() -> None:
    reader, _ = read_pdf(svg_to_pdf(svg('<rect width="5" height="5" fill-opacity="0.25"/>')))
    states = reader.pages[0]["/Resources"]["/ExtGState"]
    assert float(states["/GS0"]["/ca"]) == 0.25
    assert float(states["/GS0"]["/CA"]) == 1


def test_pdf_transforms_use_and_markers() -> None:
    _, content = read_pdf(svg_to_pdf(svg(
        '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="4"'
        ' markerHeight="4" orient="auto"><path d="M0 0L10 5L0 10z"/></marker>'
        '<circle id="dot" r="2"/></defs>'
        '<g transform="translate(5 6) scale(2)"><use href="#dot" x="1" y="1"/></g>'
        '<line x1="10" y1="70" x2="10" y2="10" stroke="black" marker-end="url(#a)"/>')))
    assert "1 0 0 1 5 6 cm" not in content  # the whole transform list is one matrix
    assert "2 0 0 2 5 6 cm" in content
    assert "1 0 0 1 1 1 cm" in content  # use x, y
    # the marker at (10, 10) pointing up (-90 degrees), scaled by stroke width and viewBox
    s = 0.4
    expected = [0.0, -s, s, 0.0, 10 - 5 * s, 10 + 10 * s]
    marker_cm = [line.removeprefix("q ").split() for line in content.splitlines()
                 if line.endswith(" cm")]
    values = [float(v) for v in marker_cm[-1][:6]]
    assert values == pytest.approx(expected, abs=1e-4)


def test_pdf_draws_text_as_glyph_outlines() -> None:
    document = svg(svg_text_element(Label.axis("d_ff"), 10, 40, 14)
                   + '<text x="50" y="70" text-anchor="middle">&lt;script&gt;</text>')
    _, content = read_pdf(svg_to_pdf(document))
    assert "BT" not in content  # no PDF text objects: no font needed
    assert content.count(" c\n") > 20  # curves of the glyphs
    assert content.count("\nf\n") >= 3


def test_pdf_of_text_matches_the_path_label() -> None:
    label = Label.plain("relu")
    as_text = svg(f'<text x="10" y="40" font-size="14">{label.plain_text()}</text>')
    as_path = svg(f'<path d="{label.svg_path(10, 40, 14)}"/>')
    assert read_pdf(svg_to_pdf(as_text))[1] == read_pdf(svg_to_pdf(as_path))[1]


def test_pdf_is_byte_deterministic_across_processes() -> None:
    document = svg('<path d="M0 0 Q 20 40 40 0 T 80 0" stroke="black" fill="none"/>'
                   + svg_text_element(Label.operator("L", "q"), 10, 60, 12),
                   extra='><title>Attention (core) \\ é</title')
    code = ("import sys; from ncd.renderers.export import svg_to_pdf; "
            "sys.stdout.buffer.write(svg_to_pdf(sys.stdin.read()))")
    runs = {subprocess.run([sys.executable, "-c", code], input=document.encode(),
                           capture_output=True, check=True).stdout for _ in range(2)}
    assert len(runs) == 1
    data = runs.pop()
    assert data == svg_to_pdf(document)
    reader, _ = read_pdf(data)
    assert reader.metadata is not None
    assert reader.metadata.title == "Attention (core) \\ é"


def test_pdf_uncompressed_is_the_same_drawing() -> None:
    document = svg('<circle cx="50" cy="40" r="10"/>')
    compressed = read_pdf(svg_to_pdf(document))[1]
    plain = svg_to_pdf(document, compress=False)
    assert b"/FlateDecode" not in plain
    assert read_pdf(plain)[1] == compressed


def test_pdf_css_rules_and_style_attribute() -> None:
    _, content = read_pdf(svg_to_pdf(svg(
        "<style>.wire { stroke: #00ff00; fill: none } rect { fill: red }"
        " #special { fill: blue }</style>"
        '<path class="wire" d="M0 0 L10 10"/>'
        '<rect width="5" height="5"/>'
        '<rect id="special" width="5" height="5" style="stroke: black"/>')))
    assert "0 1 0 RG" in content
    assert "1 0 0 rg" in content
    assert "0 0 1 rg" in content and "0 0 0 RG" in content


def test_pdf_rejects_what_is_not_svg() -> None:
    with pytest.raises(ValueError, match="well-formed"):
        svg_to_pdf("<svg")
    with pytest.raises(ValueError, match="root element"):
        svg_to_pdf("<html/>")
    with pytest.raises(ValueError, match="size"):
        svg_to_pdf(f"<svg {SVG_NS}/>")


def test_pdf_skips_hidden_and_unsupported_elements() -> None:
    _, content = read_pdf(svg_to_pdf(svg(
        '<rect width="5" height="5" display="none"/>'
        '<g display="none"><rect width="5" height="5"/></g>'
        '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>'
        '<rect width="0" height="5"/>')))
    assert content.strip() == "0.75 0 0 -0.75 0 60 cm"


# ----------------------------------------------------------------------------- parsers


def subpaths(d: str) -> list[tuple[tuple[float, float], list[tuple[float, ...]], bool]]:
    return parse_path(d).subpaths


def test_path_parser_absolute_and_relative() -> None:
    assert subpaths("M1 2 L3 4 H10 V20 Z") == [
        ((1, 2), [(3, 4), (10, 4), (10, 20)], True)]
    assert subpaths("m1 2 l3 4 h10 v20 z m1 1 2 2") == [
        ((1, 2), [(4, 6), (14, 6), (14, 26)], True), ((2, 3), [(4, 5)], False)]
    assert subpaths("M0,0 1-1 .5.5") == [((0, 0), [(1, -1), (0.5, 0.5)], False)]


def test_path_parser_curves() -> None:
    (_, segments, _), = subpaths("M0 0 C1 2 3 4 5 6 S9 10 11 12")
    assert segments == [(1, 2, 3, 4, 5, 6), (7, 8, 9, 10, 11, 12)]
    (_, segments, _), = subpaths("M0 0 Q3 3 6 0")
    assert segments == [pytest.approx((2, 2, 4, 2, 6, 0))]
    (_, segments, _), = subpaths("M0 0 Q3 3 6 0 T12 0")
    assert segments[1] == pytest.approx((8, -2, 10, -2, 12, 0))


def test_path_parser_arcs() -> None:
    (_, segments, _), = subpaths("M0 0 A10 10 0 0 1 20 0")  # a half circle
    assert len(segments) == 2
    assert segments[-1][-2:] == (20, 0)
    assert segments[0][-2:] == pytest.approx((10, -10))  # sweep 1: through the top
    (_, compact, _), = subpaths("M0 0 a10 10 0 0120 0")  # flags without separators
    assert compact == segments
    (_, line, _), = subpaths("M0 0 A0 5 0 0 1 20 0")  # zero radius: a straight line
    assert line == [(0, 0, 20, 0, 20, 0)]


def test_path_parser_stops_at_errors() -> None:
    assert subpaths("M0 0 L10 10 L20 # L30 30") == [((0, 0), [(10, 10)], False)]
    assert subpaths("L10 10") == [((0, 0), [(10, 10)], False)]
    assert subpaths("") == []


def test_transform_parser() -> None:
    assert parse_transform("translate(10, 20) scale(2)") == (2, 0, 0, 2, 10, 20)
    rotated = parse_transform("rotate(90 10 10)")
    assert rotated == pytest.approx((0, 1, -1, 0, 20, 0), abs=1e-12)
    assert parse_transform("matrix(1 2 3 4 5 6)") == (1, 2, 3, 4, 5, 6)
    assert parse_transform("skewX(45)") == pytest.approx((1, 0, 1, 1, 0, 0))
    assert parse_transform("nonsense") == (1, 0, 0, 1, 0, 0)


def test_color_parser() -> None:
    assert parse_color("red").rgb == (1, 0, 0)  # type: ignore[union-attr]
    assert parse_color("#0f0").rgb == (0, 1, 0)  # type: ignore[union-attr]
    assert parse_color("#336699").rgb == pytest.approx((0.2, 0.4, 0.6))  # type: ignore
    paint = parse_color("rgba(255, 0, 0, 0.5)")
    assert paint is not None and paint.rgb == (1, 0, 0) and paint.alpha == 0.5
    assert parse_color("hsl(120, 100%, 50%)").rgb == pytest.approx((0, 1, 0))  # type: ignore
    assert parse_color("none") is None
    assert parse_color("transparent") is None
    assert parse_color("rgb(bogus)") is None


def test_length_parser() -> None:
    assert parse_length("12") == 12
    assert parse_length("72pt") == 96
    assert parse_length("25.4mm") == pytest.approx(96)
    assert parse_length("2em", font_size=10) == 20
    assert parse_length("50%", percent_of=300) == 150
    assert parse_length("wide", 7) == 7
    assert math.isclose(parse_length("1in"), 96)


def test_png_of_a_document_sized_in_points_and_millimetres() -> None:
    # resvg-py itself refuses units on the root size; graphviz writes pt, papers want mm
    for size, pixels in (('width="72pt" height="36pt"', (96, 48)),
                         ('width="25.4mm" height="12.7mm"', (96, 48))):
        document = f'<svg {SVG_NS} {size} viewBox="0 0 2 1"><rect width="2" height="1"/></svg>'
        width, height, rows = decode_png(svg_to_png(document, scale=1))
        assert (width, height) == pixels
        assert rows[24][48] == (0, 0, 0, 255)


def test_path_numbers_out_of_range_end_the_path() -> None:
    assert subpaths("M0 0 L1e999 0 L5 5") == [((0, 0), [], False)]
    _, content = read_pdf(svg_to_pdf(svg('<path d="M0 0 L10 0 L1e999 5" stroke="black"/>')))
    assert "10 0 l" in content and "inf" not in content


@pytest.mark.parametrize("text", ["paths", "text"])
def test_gallery_diagram_exports(text: str) -> None:
    from ncd.renderers import RenderOptions, render_svg

    import ncd

    program = ncd.load(GALLERY / "attention.ncd").ir
    document = render_svg(program, "attention", RenderOptions(text=text))
    root = ET.fromstring(document)
    width, height = parse_length(root.get("width")), parse_length(root.get("height"))
    reader, content = read_pdf(svg_to_pdf(document))
    box = reader.pages[0].mediabox
    assert float(box.width) == pytest.approx(0.75 * width, abs=1e-3)
    assert float(box.height) == pytest.approx(0.75 * height, abs=1e-3)
    assert content.count("\nf\n") > 20  # glyphs and filled glyph boxes
    assert svg_to_pdf(document) == svg_to_pdf(document)
    png_width, png_height, _ = decode_png(svg_to_png(document, scale=1))
    assert (png_width, png_height) == (round(width), round(height))  # resvg rounds


@pytest.mark.parametrize("body", [
    '<path d="M0 0 a1e308 1e308 0 1 1 5 5" stroke="black"/>',
    '<path d="M 1e308 1e308 Q 1e308 -1e308 -1e308 1e308" stroke="black"/>',
    '<text x="1E307">a</text>',
    '<text font-size="1e999">a</text>',
    '<g transform="scale(1e308) scale(1e308)"><rect width="1" height="1"/></g>',
    '<rect width="1e308%" height="3em" stroke-dasharray="1e999" stroke="red"/>',
    '<use href="#u" id="u"/>',
    '<marker id="m"><path d="M0 0L1 1" marker-end="url(#m)" stroke="black"/></marker>'
    '<path d="M0 0L5 5" marker-end="url(#m)" stroke="black"/>',
])
def test_pdf_survives_out_of_range_and_cyclic_input(body: str) -> None:
    reader, content = read_pdf(svg_to_pdf(svg(body)))
    assert len(reader.pages) == 1
    assert "inf" not in content and "nan" not in content
