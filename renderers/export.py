"""PNG and PDF of an SVG document, with pip-installable libraries only.

The diagrams themselves do not pass through here as SVG: `renderers.pdf` draws a diagram's
geometry as a PDF directly. This module converts SVG that ncd does not draw itself (the
graphviz overview) and rasterises ncd's own SVG:

- PNG: `resvg` (the `resvg-py` wheel), with system fonts switched off and the bundled STIX
  Two Math supplied for every font family, so the pixels do not depend on the machine.
- PDF: fpdf2's SVG reader, with every font family set in the same STIX Two Math, embedded
  (so its text stays text), and no resources loaded from files or the network. The bytes
  depend only on the input: there are no dates, no random document ids.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

import resvg_py
from fpdf.enums import ResourceAccessPolicy
from fpdf.svg import SVGObject

from .pdf import FONT, document_bytes, font_file, new_document

# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------

_UNITS = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54,
          "in": 96.0, "q": 96 / 101.6}
"""CSS px per unit (96 px to the inch)."""

_ROOT_TAG = re.compile(r"<svg\b[^>]*>")
_SIZE_ATTRIBUTE = re.compile(r"""(\s(width|height)\s*=\s*)(["'])\s*([^"']*?)\s*\3""")
_LENGTH = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(px|pt|pc|mm|cm|in|q)?",
                     re.IGNORECASE)
_VIEWBOX = re.compile(r"""\sviewBox\s*=\s*(["'])([^"']*)\1""")


def _px(value: str) -> float | None:
    """An absolute CSS length in px; None for anything else (`50%`, `2em`, garbage)."""
    match = _LENGTH.fullmatch(value)
    if match is None:
        return None
    px = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    return px if math.isfinite(px) else None


def _absolute_size(svg: str, unit: str = "") -> tuple[str, float | None, float | None]:
    """The document with its root's size explicit: width and height in `unit` (resvg-py
    refuses any but px, written without one; fpdf2 reads a number without a unit as pt), and
    a viewBox (user units are px where the root has none). Also that size in px: the root's
    width and height, else its viewBox's (None, and the document unchanged, where neither
    gives one). Graphviz writes `pt`, papers like `mm`."""
    root = _ROOT_TAG.search(svg)
    if root is None:
        return svg, None, None
    tag = root.group(0)
    viewbox = _VIEWBOX.search(tag)
    box = [_px(v) for v in re.split(r"[\s,]+", viewbox.group(2).strip())] if viewbox else []
    lengths = {m.group(2): _px(m.group(4)) for m in _SIZE_ATTRIBUTE.finditer(tag)}
    width = lengths.get("width") or (box[2] if len(box) == 4 else None)
    height = lengths.get("height") or (box[3] if len(box) == 4 else None)
    if not (width and height and width > 0 and height > 0):
        return svg, None, None
    size = f' width="{width / _UNITS[unit]:.10g}{unit}" height="{height / _UNITS[unit]:.10g}{unit}"'
    if viewbox is None:
        size += f' viewBox="0 0 {width:.10g} {height:.10g}"'
    tag = "<svg" + size + _SIZE_ATTRIBUTE.sub("", tag)[len("<svg"):]
    return svg[:root.start()] + tag + svg[root.end():], width, height


# --------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------


def svg_to_png(svg: str, scale: float = 2.0, *, background: str | None = None) -> bytes:
    """Rasterise an SVG document: `scale` device pixels per SVG px, transparent unless a
    `background` colour is given. Deterministic: system fonts are not consulted; `<text>` is
    set in the bundled STIX Two Math."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    font = font_file()
    data = resvg_py.svg_to_bytes(
        svg_string=_absolute_size(svg)[0],
        zoom=scale,
        background=background,
        skip_system_fonts=True,
        font_files=[font],
        font_family="STIX Two Math",
        serif_family="STIX Two Math",
        sans_serif_family="STIX Two Math",
        monospace_family="STIX Two Math",
    )
    return bytes(data)


# --------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------

_FONT_FAMILY = re.compile(
    r"""(font-family\s*=\s*)(?:"[^"]*"|'[^']*')|(font-family\s*:\s*)(?:[^;"'}]|'[^']*')*""")


def _one_font(svg: str) -> str:
    """Every `font-family` (attribute or style property) set to the embedded font, which the
    root also names for text that names none: as for PNG, the bundled STIX Two Math stands
    for every family."""
    svg = _FONT_FAMILY.sub(
        lambda m: f'{m.group(1)}"{FONT}"' if m.group(1) else f"{m.group(2)}{FONT}", svg)
    root = _ROOT_TAG.search(svg)
    if root is None or re.search(r"\sfont-family\s*=", root.group(0)):
        return svg
    return f'{svg[:root.start()]}<svg font-family="{FONT}"{svg[root.start() + 4:]}'


@contextmanager
def _quiet_fpdf() -> Iterator[None]:
    """fpdf2 logs a warning for each element it does not draw (`<title>`, which graphviz
    writes for every node); an export is not the place to report them."""
    logger = logging.getLogger("fpdf.svg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_NOT_FINITE = re.compile(rb"(?<![\w.])-?(?:inf|nan)(?![\w.])")


def svg_to_pdf(svg: str) -> bytes:
    """A one-page vector PDF of an SVG document such as graphviz writes, the page the SVG's
    size (1 px = 0.75 pt), its text real text in the embedded STIX Two Math. fpdf2 draws the
    SVG: what it does not know (markers, `display`, CSS rules) it leaves out. A document it
    cannot read or draw (not SVG, no size, a cycle of `<use>`, numbers out of range) is a
    ValueError; nothing is loaded from files or the network."""
    sized, width, height = _absolute_size(_one_font(svg), "pt")
    try:
        with _quiet_fpdf():
            drawing = SVGObject(sized, resource_access_policy=ResourceAccessPolicy.NONE)
    except Exception as error:  # fpdf2 reports malformed input with many exception types
        raise ValueError(f"not an SVG document that can be drawn: {error}") from error
    if not (width and height and width > 0 and height > 0):
        raise ValueError("the SVG has no size: give it width and height or a viewBox")
    document = new_document(width, height)
    document.resource_access_policy = ResourceAccessPolicy.NONE
    for style in ("B", "I", "BI"):  # one face stands for all: STIX Two Math has no others
        document.add_font(FONT, style, font_file())
    try:
        with _quiet_fpdf():
            drawing.draw_to_page(document, 0, 0)
    except Exception as error:
        raise ValueError(f"the SVG cannot be drawn: {error}") from error
    contents = document.pages[document.page].contents  # the page's operators, not yet packed
    if isinstance(contents, bytearray) and _NOT_FINITE.search(contents):
        raise ValueError("the SVG has numbers out of range")
    return document_bytes(document)
