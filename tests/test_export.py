"""PNG and PDF of SVG documents (resvg; fpdf2), the style shared by every emitter:
decodable, right size, right geometry, byte-deterministic. The PDF of a diagram itself is
drawn from its geometry (`tests/test_pdf.py`)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

import pypdf
import pytest
from ncd.renderers.export import svg_to_pdf, svg_to_png
from ncd.renderers.style import hex_colour, hundredths, num, parse_colour, rgb
from ncd.renderers.text import Label, svg_text_element

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'


def svg(body: str, width: float = 100, height: float = 80, extra: str = "") -> str:
    return (f'<svg {SVG_NS} width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" {extra}>{body}</svg>')


# ----------------------------------------------------------------------------- a PNG reader


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of an 8-bit RGBA PNG whose chunks and compressed data are whole (the
    checks of `decode_png`, without undoing the filters, which is slow in Python)."""
    width, height, _ = decode_png(data, pixels=False)
    return width, height


def decode_png(data: bytes, pixels: bool = True) -> tuple[int, int,
                                                         list[list[tuple[int, int, int, int]]]]:
    """Width, height and RGBA rows of an 8-bit RGBA PNG (what resvg writes); no rows when
    `pixels` is false."""
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
    assert len(raw) == height * (stride + 1)
    if not pixels:
        return width, height, []
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
    return reader, content.get_data().decode("latin-1")


def test_pdf_is_one_page_of_the_svg_size() -> None:
    reader, _ = read_pdf(svg_to_pdf(svg("", 400, 200)))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (float(box.left), float(box.bottom)) == (0, 0)
    assert (float(box.width), float(box.height)) == (300, 150)  # 0.75 pt per px


@pytest.mark.parametrize("size", ['width="400px" height="200px"', 'width="300pt" height="150pt"',
                                  'viewBox="0 0 400 200"'])
def test_pdf_user_units_are_px_however_the_size_is_given(size: str) -> None:
    document = f'<svg {SVG_NS} {size}><rect x="10" y="20" width="30" height="40" fill="red"/></svg>'
    reader, content = read_pdf(svg_to_pdf(document))
    assert (float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height)) \
        == (300, 150)
    assert "0.75 0 0 -0.75 0 150 cm" in content  # px, y down, onto the page
    assert "10 20 30 40 re" in content and "1 0 0 rg" in content  # drawn 1:1, in red


def test_pdf_size_in_absolute_units() -> None:
    document = (f'<svg {SVG_NS} width="85mm" height="24mm" viewBox="0 0 850 240">'
                '<rect width="850" height="240"/></svg>')
    reader, content = read_pdf(svg_to_pdf(document))
    box = reader.pages[0].mediabox
    assert float(box.width) == pytest.approx(85 / 25.4 * 72, abs=0.006)
    assert float(box.height) == pytest.approx(24 / 25.4 * 72, abs=0.006)
    assert "0.378 0 0 0.378 0 0 cm" in content  # the viewBox onto the page: 0.1 mm per unit


def test_pdf_strokes_dashes_and_opacity() -> None:
    reader, content = read_pdf(svg_to_pdf(svg(
        '<path d="M0 0 L50 0" stroke="black" stroke-dasharray="4 2 1" fill="none"/>'
        '<rect width="5" height="5" fill-opacity="0.25"/>')))
    assert "[4 2 1] 0 d" in content and "0 0 m 50 0 l S" in content
    states = reader.pages[0]["/Resources"]["/ExtGState"]  # type: ignore[index]
    assert any(float(state.get("/ca", 1)) == 0.25 for state in states.values())


def test_pdf_text_is_text_in_the_embedded_font() -> None:
    document = svg(svg_text_element(Label.axis("d_ff"), 10, 40, 14)
                   + '<text x="50" y="70" text-anchor="middle">&lt;script&gt; → ×</text>'
                   + '<text x="5" y="20" font-family="Courier" style="font-family: Arial">'
                     "any family</text>")
    reader, _ = read_pdf(svg_to_pdf(document))
    text = unicodedata.normalize("NFKC", reader.pages[0].extract_text())
    assert "dff" in text.replace(" ", "") and "<script> → ×" in text and "any family" in text
    resources = reader.pages[0]["/Resources"]["/Font"]  # type: ignore[index]
    for font in resources.values():  # one font, embedded: STIX Two Math
        descendant = font.get_object()["/DescendantFonts"][0].get_object()
        assert "STIXTwoMath" in descendant["/BaseFont"]
        assert "/FontFile2" in descendant["/FontDescriptor"].get_object()


def test_pdf_is_byte_deterministic_across_processes() -> None:
    document = svg('<path d="M0 0 Q 20 40 40 0 T 80 0" stroke="black" fill="none"/>'
                   + svg_text_element(Label.operator("L", "q"), 10, 60, 12),
                   extra='><title>Attention (core) \\ é</title')
    code = ("import sys; from ncd.renderers.export import svg_to_pdf; "
            "sys.stdout.buffer.write(svg_to_pdf(sys.stdin.read()))")
    # a fresh process, with another hash seed, writes the bytes this one writes
    data = subprocess.run([sys.executable, "-c", code], input=document.encode(),
                          capture_output=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": "271828"}).stdout
    assert data == svg_to_pdf(document)
    reader, _ = read_pdf(data)
    assert reader.metadata is not None and "/CreationDate" not in reader.metadata


def test_pdf_rejects_what_is_not_svg() -> None:
    with pytest.raises(ValueError, match="SVG"):
        svg_to_pdf("<svg")
    with pytest.raises(ValueError, match="root tag"):
        svg_to_pdf("<html/>")
    with pytest.raises(ValueError, match="size"):
        svg_to_pdf(f"<svg {SVG_NS}/>")


def test_pdf_loads_nothing_from_files() -> None:
    with pytest.raises(ValueError, match="file access is disabled"):
        svg_to_pdf(svg('<image href="/etc/hostname" width="10" height="10"/>'))


def test_png_of_a_document_sized_in_points_and_millimetres() -> None:
    # resvg-py itself refuses units on the root size; graphviz writes pt, papers want mm
    for size, pixels in (('width="72pt" height="36pt"', (96, 48)),
                         ('width="25.4mm" height="12.7mm"', (96, 48))):
        document = f'<svg {SVG_NS} {size} viewBox="0 0 2 1"><rect width="2" height="1"/></svg>'
        width, height, rows = decode_png(svg_to_png(document, scale=1))
        assert (width, height) == pixels
        assert rows[24][48] == (0, 0, 0, 255)


@pytest.mark.parametrize("text", ["paths", "text"])
def test_gallery_diagram_exports(text: str) -> None:
    from ncd.renderers import RenderOptions, render_svg

    import ncd

    program = ncd.load(GALLERY / "attention.ncd").ir
    document = render_svg(program, "attention", RenderOptions(text=text))
    root = ET.fromstring(document)
    width, height = (float(root.get(side, "").removesuffix("px")) for side in ("width", "height"))
    reader, _ = read_pdf(svg_to_pdf(document))  # the SVG itself converts too
    box = reader.pages[0].mediabox
    assert float(box.width) == pytest.approx(0.75 * width, abs=0.006)
    assert float(box.height) == pytest.approx(0.75 * height, abs=0.006)
    assert svg_to_pdf(document) == svg_to_pdf(document)
    png_width, png_height = png_size(svg_to_png(document, scale=1))
    assert (png_width, png_height) == (round(width), round(height))  # resvg rounds


@pytest.mark.parametrize("body", [
    '<path d="M0 0 a1e308 1e308 0 1 1 5 5" stroke="black"/>',
    '<path d="M 1e308 1e308 Q 1e308 -1e308 -1e308 1e308" stroke="black"/>',
    '<path d="M0 0 L10 0 L1e999 5" stroke="black"/>',
    '<text x="1E307">a</text>',
    '<text font-size="1e999">a</text>',
    '<g transform="scale(1e308) scale(1e308)"><rect width="1" height="1"/></g>',
    '<rect width="1e308%" height="3em" stroke-dasharray="1e999" stroke="red"/>',
    '<use href="#u" id="u"/>',
    '<marker id="m"><path d="M0 0L1 1" marker-end="url(#m)" stroke="black"/></marker>'
    '<path d="M0 0L5 5" marker-end="url(#m)" stroke="black"/>',
])
def test_pdf_of_out_of_range_and_cyclic_input_is_valid_or_refused(body: str) -> None:
    try:
        data = svg_to_pdf(svg(body))
    except ValueError:
        return
    reader, content = read_pdf(data)
    assert len(reader.pages) == 1
    assert "inf" not in content and "nan" not in content


# ----------------------------------------------------------------------------- style


def test_one_number_formatter() -> None:
    assert [num(v) for v in (0, -0.001, 1.005, 12.5, -3.14159, 1e20, 2.675)] == [
        "0", "0", "1", "12.5", "-3.14", "100000000000000000000", "2.67"]
    assert [hundredths(v) for v in (1250, -3, 0, 100, -250)] == ["12.5", "-0.03", "0", "1",
                                                                  "-2.5"]


def test_one_colour_table() -> None:
    assert parse_colour("#0F0") == "#00ff00"
    assert parse_colour(" Purple ") == "#984ea3"  # the diagrams' palette, not CSS's #800080
    assert parse_colour("#336699") == "#336699"
    for unreadable in ("none", "transparent", "rgb(1, 2, 3)", "crimson", "#12", "red;x"):
        assert parse_colour(unreadable) is None
    assert rgb("#336699") == (0x33, 0x66, 0x99) and rgb("bogus") is None
    assert hex_colour((255.4, -3, 127.5)) == "#ff0080"


def test_block_colours_agree_in_the_diagram_and_the_overview() -> None:
    from ncd.renderers.dot import _tint
    from ncd.renderers.glyphs import THEMES, block_fill

    for name in ("purple", "#abc", "navy"):
        fill, tint = block_fill(THEMES["light"], 0, name), _tint(name)
        assert fill != THEMES["light"].blocks[0] and tint is not None  # both read it
    assert block_fill(THEMES["light"], 0, "crimson") == THEMES["light"].blocks[0]
    assert _tint("crimson") is None  # neither reads a name outside the table


# ----------------------------------------------------------------------------- the overview


def test_overview_pdf_and_png_are_drawn_from_graphviz_svg() -> None:
    """The graphviz overview as PDF: its text real text in the embedded font (the same STIX
    Two Math its PNG is drawn with), its page graphviz's size."""
    import re

    from ncd.renderers.dot import program_to_dot, render_dot

    import ncd

    source = program_to_dot(ncd.load(GALLERY / "transformer.ncd").ir, "transformer")
    svg_bytes = render_dot(source, "svg")
    width, height = (float(v) for v in re.search(  # type: ignore[union-attr]
        rb'width="([\d.]+)pt" height="([\d.]+)pt"', svg_bytes).groups())
    reader, _ = read_pdf(render_dot(source, "pdf"))
    box = reader.pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((width, height), abs=0.006)
    text = reader.pages[0].extract_text()
    for label in ("transformer(X: R[x, m]) → R[x, m]", "Transformer layer", "×6", "attention",
                  "layernorm[m]", "Feed forward"):
        assert label in text
    fonts = reader.pages[0]["/Resources"]["/Font"]  # type: ignore[index]
    assert fonts and all("/FontFile2" in f.get_object()["/DescendantFonts"][0].get_object()
                         ["/FontDescriptor"].get_object() for f in fonts.values())
    png_width, png_height = png_size(render_dot(source, "png"))
    assert png_width == pytest.approx(width / 0.75 * 2, abs=1)  # 2 pixels per px
    assert png_height == pytest.approx(height / 0.75 * 2, abs=1)
