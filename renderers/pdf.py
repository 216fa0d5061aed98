"""PDF emitter: the same `Diagram` as the SVG, drawn with fpdf2, its labels real text.

The page has the SVG's size (1 px = 0.75 pt). Shapes are PDF paths with the SVG's fills,
strokes, dashes and round caps and joins. Labels are text set in STIX Two Math, the font
whose glyph outlines the SVG draws, embedded as a subset: the PDF looks like the SVG, and its
labels can be selected, searched and extracted (`pdftotext`). Each glyph stands where the
SVG draws it (`Label.pieces`); each label is a marked-content span whose `/ActualText` is
the label as written (`d_ff`), which text extraction that honours it (poppler) reads, while
the glyphs themselves are the font's characters (italic d is U+1D451, so a reader that
ignores the span reads `𝑑𝑓𝑓`). A glyph that no character names (the box drawn for a
character the font lacks) is drawn as its outline, as in the SVG.

Labels are text whatever `RenderOptions.text` says: with the font embedded the PDF looks the
same on every machine, which is what outlines buy in an SVG, and outlines would lose the
text. The bytes depend only on the diagram: no creation date, no random ids.
"""

from __future__ import annotations

from importlib.resources import files
from typing import assert_never

from fpdf import FPDF
from fpdf.drawing import PaintedPath
from fpdf.enums import PathPaintRule, StrokeCapStyle, StrokeJoinStyle
from fpdf.output import OutputProducer, PDFInfo
from fpdf.syntax import PDFObject, PDFString

from .geometry import Circle, Diagram, Item, Path, Polygon, Rect, Stroke, Text
from .style import num, parse_colour
from .text import FONT_FILE, xml_clean

PT_PER_PX = 0.75
"""PDF points per SVG px (72 pt and 96 px to the inch)."""

FONT = "STIXTwoMath"
"""The family name the embedded font is registered under."""


def font_file() -> str:
    """The bundled font the diagrams' labels are set in (ziamath's STIX Two Math)."""
    return str(files("ziamath.fonts") / FONT_FILE)


# --------------------------------------------------------------------------------------
# A document without dates
# --------------------------------------------------------------------------------------


class _Info(PDFInfo):
    """The document information: the title and the producer, and no creation date."""

    def __init__(self, title: str) -> None:
        PDFObject.__init__(self)
        self.title = PDFString(title, encrypt=True) if title else None
        self.producer = PDFString("ncd", encrypt=True)


class _Producer(OutputProducer):
    """fpdf2's writer, with the information dictionary of `_Info` (fpdf2 always dates it)."""

    def _add_info(self) -> PDFInfo:
        info = _Info(getattr(self.fpdf, "title", None) or "")
        self._add_pdf_obj(info)
        return info


class _Document(FPDF):
    """A page of one size, no margins, no page breaks, no file identifier (fpdf2 makes one
    from the date); everything else is fpdf2's."""

    def __init__(self, width: float, height: float) -> None:
        super().__init__(unit=PT_PER_PX, format=(width, height))
        self.set_margin(0)
        self.set_auto_page_break(False)
        self.set_producer("ncd")

    def file_id(self) -> None:
        return None


def new_document(width: float, height: float, title: str = "") -> FPDF:
    """An fpdf2 document of one page `width` x `height` px (user units are px, y down), with
    the labels' font registered as `FONT`; `document_bytes` writes it."""
    document = _Document(width, height)
    if title:
        document.set_title(xml_clean(title))
    document.add_page()
    document.add_font(FONT, "", font_file())
    return document


def document_bytes(document: FPDF) -> bytes:
    """The PDF file of a document from `new_document`."""
    return bytes(document.output(output_producer_class=_Producer))


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


def _painted(item: Path | Rect | Polygon | Circle) -> PaintedPath | None:
    """The item as a path with its paint, or None when it paints nothing."""
    fill = parse_colour(item.fill) if item.fill else None
    stroke = item.stroke if item.stroke and parse_colour(item.stroke.color) else None
    if fill is None and stroke is None:
        return None
    path = PaintedPath()
    match item:
        case Path():
            path.move_to(*item.start)
            for seg in item.segments:
                if len(seg) == 2:
                    path.line_to(seg[0], seg[1])
                else:
                    path.curve_to(*seg)
            if item.closed:
                path.close()
        case Rect():
            path.rectangle(item.x, item.y, item.width, item.height, item.radius, item.radius)
        case Polygon():
            path.move_to(*item.points[0])
            for point in item.points[1:]:
                path.line_to(*point)
            path.close()
        case Circle():
            path.circle(item.cx, item.cy, item.r)
        case _:
            assert_never(item)
    _paint(path, fill, stroke)
    return path


def _paint(path: PaintedPath, fill: str | None, stroke: Stroke | None) -> None:
    style = path.style
    style.auto_close = False  # fpdf2 closes every path unless told; a wire is open
    if fill is not None:
        style.fill_color = fill
    if stroke is not None:
        style.stroke_color = parse_colour(stroke.color)
        style.stroke_width = stroke.width
        style.stroke_cap_style = StrokeCapStyle.ROUND
        style.stroke_join_style = StrokeJoinStyle.ROUND
        style.stroke_dash_pattern = stroke.dash or None
    style.paint_rule = (PathPaintRule.STROKE_FILL_NONZERO if fill and stroke
                        else PathPaintRule.FILL_NONZERO if fill else PathPaintRule.STROKE)


def _actual_text(text: str) -> str:
    """A PDF text string in hexadecimal UTF-16 with its byte order mark."""
    return "<FEFF" + text.encode("utf-16-be", "replace").hex().upper() + ">"


def draw_label(document: FPDF, item: Text) -> None:
    """A label as text in the embedded font: one marked-content span, its glyphs where the
    SVG draws them."""
    pieces = item.label.pieces(item.x, item.y, item.size)
    if not pieces:
        return
    colour = parse_colour(item.color) or "#000000"
    document.set_text_color(colour)
    plain = xml_clean(item.label.plain_text())
    document._out(f"/Span <</ActualText {_actual_text(plain)}>> BDC")
    for piece in pieces:
        if piece.text:
            document.set_font(FONT, size=piece.size * PT_PER_PX)
            document.text(piece.x, piece.y, piece.text)
            continue
        path = PaintedPath()
        for command, coords in piece.outline:
            if command == "M":
                path.move_to(*coords)
            elif command == "L":
                path.line_to(*coords)
            elif command == "Q":
                path.quadratic_curve_to(*coords)
            elif command == "C":
                path.curve_to(*coords)
            else:
                path.close()
        _paint(path, colour, None)
        _draw(document, [path])
    document._out("EMC")


def _draw(document: FPDF, paths: list[PaintedPath]) -> None:
    with document.drawing_context() as context:
        for path in paths:
            context.add_item(path, clone=False)


def render(diagram: Diagram) -> bytes:
    """The diagram as a one-page PDF of the SVG's size: the same numbers (`style.num`), so
    the page is exactly the SVG's width and height."""
    width, height = float(num(diagram.width)), float(num(diagram.height))
    document = new_document(width, height, diagram.title)
    items: list[Item] = list(diagram.sorted_items())
    if diagram.background:
        items.insert(0, Rect(0, 0, width, height, diagram.background, None))
    shapes: list[PaintedPath] = []  # drawn together, up to the next label
    for item in items:
        match item:
            case Text():
                _draw(document, shapes)
                shapes = []
                draw_label(document, item)
            case Path() | Rect() | Polygon() | Circle():
                if (path := _painted(item)) is not None:
                    shapes.append(path)
            case _:
                assert_never(item)
    _draw(document, shapes)
    return document_bytes(document)
