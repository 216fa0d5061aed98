"""The PDF emitter: the same geometry as the SVG, its labels real text in an embedded font.

Text is read back with pypdf; where poppler's `pdftotext` and `pdffonts` are installed they
read the same files (and the test says it was skipped, never that it passed, without them).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any, Literal

import pypdf
import pytest
from gallery_cases import gallery_definitions, gallery_diagram
from ncd.renderers import RenderOptions, diagram, render_pdf
from ncd.renderers.geometry import Diagram, Rect, Text
from ncd.renderers.pdf import PT_PER_PX, render
from ncd.renderers.svg import render as svg_render
from ncd.renderers.text import Label

import ncd
from ncd import ir

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
PDFTOTEXT = shutil.which("pdftotext")
PDFFONTS = shutil.which("pdffonts")


GALLERY_DEFINITIONS = gallery_definitions()
IDS = [f"{path.stem}.{name}" for path, name in GALLERY_DEFINITIONS]


def read(data: bytes) -> pypdf.PdfReader:
    return pypdf.PdfReader(io.BytesIO(data), strict=True)


def squeezed(text: str) -> str:
    """Text as compared: compatibility-normalised (math italic `𝑥` is `x`), no whitespace."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def label_texts(d: Diagram) -> list[str]:
    """What each label of the diagram shows, as characters."""
    return [squeezed("".join(run.text for run in item.label.runs))
            for item in d.items if isinstance(item, Text)]


def fonts(reader: pypdf.PdfReader) -> list[Any]:
    """The page's fonts, each with its descendant (a composite font) where it has one."""
    found = []
    resources: Any = reader.pages[0]["/Resources"]
    for font in resources["/Font"].values():
        font = font.get_object()
        found.append(font)
        found.extend(d.get_object() for d in font.get("/DescendantFonts", []))
    return found


@pytest.fixture(scope="module")
def gallery_pdfs() -> dict[str, tuple[Diagram, str, bytes]]:
    rendered = {}
    for (path, name), key in zip(GALLERY_DEFINITIONS, IDS, strict=True):
        # One layout serves both emitters, as `render_svg` and `render_pdf` lay it out alike;
        # the test of bytes across processes below holds `render_pdf` itself to these bytes.
        drawn = gallery_diagram(path, name)
        rendered[key] = (drawn, svg_render(drawn), render(drawn))
    return rendered


# ----------------------------------------------------------------------------- gallery


@pytest.mark.parametrize("key", IDS)
def test_gallery_pdf_has_its_labels_as_text(gallery_pdfs: dict[str, Any], key: str) -> None:
    d, _, data = gallery_pdfs[key]
    reader = read(data)
    assert len(reader.pages) == 1
    text = squeezed(reader.pages[0].extract_text())
    labels = label_texts(d)
    assert labels
    for label in labels:
        assert label in text, f"{label!r} is not in the PDF's text"
        text = text.replace(label, "", 1)
    assert text == ""  # nothing but the labels


@pytest.mark.parametrize("key", IDS)
def test_gallery_pdf_embeds_its_font(gallery_pdfs: dict[str, Any], key: str) -> None:
    reader = read(gallery_pdfs[key][2])
    descriptors = [f["/FontDescriptor"].get_object() for f in fonts(reader)
                   if "/FontDescriptor" in f]
    assert descriptors
    assert all("/FontFile2" in d or "/FontFile3" in d for d in descriptors)
    assert all("STIXTwoMath" in str(d["/FontName"]) for d in descriptors)


@pytest.mark.parametrize("key", IDS)
def test_gallery_pdf_page_is_the_svg_size(gallery_pdfs: dict[str, Any], key: str) -> None:
    _, svg, data = gallery_pdfs[key]
    width, height = (float(v) for v in re.search(  # type: ignore[union-attr]
        r'height="([\d.]+)px".*?width="([\d.]+)px"', svg).groups()[::-1])
    box = read(data).pages[0].mediabox
    assert (float(box.left), float(box.bottom)) == (0, 0)
    assert float(box.width) == pytest.approx(width * PT_PER_PX, abs=0.006)
    assert float(box.height) == pytest.approx(height * PT_PER_PX, abs=0.006)


def test_labels_stand_where_the_svg_draws_them(gallery_pdfs: dict[str, Any]) -> None:
    d, _, data = gallery_pdfs["attention.attention"]
    page = read(data).pages[0]
    shown: list[tuple[str, float, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: Any) -> None:
        if text.strip():
            shown.append((text, tm[4], tm[5]))

    page.extract_text(visitor_text=visit)
    expected = [(piece.text, piece.x * PT_PER_PX, float(page.mediabox.height) - piece.y * PT_PER_PX)
                for item in d.items if isinstance(item, Text)
                for piece in item.label.pieces(item.x, item.y, item.size) if piece.text]
    assert len(shown) == len(expected)
    for (text, x, y), (want, wx, wy) in zip(shown, expected, strict=True):
        assert squeezed(text) == squeezed(want)
        assert (x, y) == pytest.approx((wx, wy), abs=0.01)


@pytest.mark.skipif(PDFTOTEXT is None, reason="pdftotext (poppler-utils) not installed")
@pytest.mark.parametrize("key", ["attention.attention", "transformer.feedforward"])
def test_pdftotext_prints_the_labels_as_written(gallery_pdfs: dict[str, Any], key: str,
                                                tmp_path: Path) -> None:
    d, _, data = gallery_pdfs[key]
    (tmp_path / "figure.pdf").write_bytes(data)
    assert PDFTOTEXT is not None
    text = subprocess.run([PDFTOTEXT, "figure.pdf", "-"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout
    words = text.split()
    for item in d.items:
        if isinstance(item, Text) and item.role == "axis":  # names as the source writes them
            assert item.label.plain_text() in words


@pytest.mark.skipif(PDFFONTS is None, reason="pdffonts (poppler-utils) not installed")
def test_pdffonts_lists_the_embedded_font(gallery_pdfs: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "figure.pdf").write_bytes(gallery_pdfs["attention.attention"][2])
    assert PDFFONTS is not None
    table = subprocess.run([PDFFONTS, "figure.pdf"], cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout.splitlines()[2:]
    assert table
    for row in table:
        name, *_, embedded, subset, unicode, _, _ = row.split()
        assert "STIXTwoMath" in name and (embedded, subset, unicode) == ("yes", "yes", "yes")


# ----------------------------------------------------------------------------- the document


def test_pdf_is_byte_deterministic_across_processes(gallery_pdfs: dict[str, Any]) -> None:
    """A fresh process, with another hash seed, writes the bytes this one wrote (every
    gallery file, two more processes: tests/test_determinism.py)."""
    code = ("import sys, ncd; from ncd.renderers import render_pdf; "
            "sys.stdout.buffer.write(render_pdf(ncd.load(sys.argv[1]).ir, 'attention'))")
    fresh = subprocess.run([sys.executable, "-c", code, str(GALLERY / "attention.ncd")],
                           capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "271828"}).stdout
    assert fresh == gallery_pdfs["attention.attention"][2]


def test_pdf_has_a_title_and_no_date(gallery_pdfs: dict[str, Any]) -> None:
    data = gallery_pdfs["attention.attention"][2]
    metadata = read(data).metadata
    assert metadata is not None
    assert metadata.title == "attention"
    assert "/CreationDate" not in metadata and "/ModDate" not in metadata
    assert b"/ID" not in data


def test_text_mode_makes_the_same_pdf(gallery_pdfs: dict[str, Any]) -> None:
    """Labels are text in a PDF whichever `text` option: the font is embedded either way."""
    program = ncd.load(GALLERY / "attention.ncd").ir
    as_text = render_pdf(program, "attention", RenderOptions(text="text"))
    assert as_text == gallery_pdfs["attention.attention"][2]


def fills(data: bytes) -> list[tuple[float, ...]]:
    """The fill colours the page sets, in order, as red, green and blue (a grey as `g`)."""
    content = read(data).pages[0].get_contents()
    assert content is not None
    found = re.finditer(rb"(?<![\d.])([\d.]+) (?:([\d.]+) ([\d.]+) rg|g)\b", content.get_data())
    return [tuple(float(v) for v in m.groups()) if m.group(2) else (float(m.group(1)),) * 3
            for m in found]


@pytest.mark.parametrize("theme", ["light", "dark", "print"])
def test_themes_paint_the_background_first(theme: Literal["light", "dark", "print"]) -> None:
    program = ncd.load(GALLERY / "mlp.ncd").ir
    d = diagram(program, "mlp", RenderOptions(theme=theme))
    assert d.background is not None
    colour = tuple(int(d.background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    assert fills(render(d))[0] == pytest.approx(colour, abs=1e-3)


def test_a_character_the_font_lacks_is_drawn_as_a_box_and_the_rest_is_text() -> None:
    label = Label.plain("a\u4e2db")
    box = label.measure(12)
    d = Diagram(100, 40, None, (Text(label, 10, 20, 12, "#000000", box.width, box.ascent,
                                     box.descent),), (), ())
    page = read(render(d)).pages[0]
    assert squeezed(page.extract_text()) == "ab"
    content = page.get_contents()
    assert content is not None
    assert content.get_data().count(b" c") + content.get_data().count(b" l") > 4  # the box


def test_hostile_titles_and_labels_make_a_valid_pdf() -> None:
    hostile = "a\ud800b\ufffe) /Evil (x\\"
    label = Label.plain(hostile)
    box = label.measure(12)
    d = Diagram(200, 40, "#ffffff",
                (Rect(1, 1, 5, 5, "not a colour", None),
                 Text(label, 10, 20, 12, "#000000", box.width, box.ascent, box.descent)),
                (), (), title=hostile)
    reader = read(render(d))
    assert reader.metadata is not None and reader.metadata.title == "a\ufffdb\ufffd) /Evil (x\\"


def test_every_gallery_option_set_renders(gallery_pdfs: dict[str, Any]) -> None:
    program = ncd.load(GALLERY / "transformer.ncd").ir
    for options in (RenderOptions(expand_calls=True), RenderOptions(collapse_depth=0),
                    RenderOptions(wire_labels="both", show_params=True)):
        reader = read(render_pdf(program, "transformer", options))
        text = squeezed(reader.pages[0].extract_text())
        for label in label_texts(diagram(program, "transformer", options)):
            assert label in text


def test_the_emitter_draws_every_item_kind() -> None:
    """Every sample term of the hand-built IR (every operator kind) becomes a PDF."""
    sys.path.insert(0, str(Path(__file__).parent))
    import ir_samples

    samples: ir.Program = ir_samples.program()
    for name in ir_samples.SAMPLES:
        reader = read(render_pdf(samples, name, RenderOptions(show_params=True)))
        assert len(reader.pages) == 1
