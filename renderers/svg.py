"""SVG emitter: writes a `Diagram`'s primitives as an SVG document, and nothing more.

Absolute width and height with a matching viewBox, coordinates rounded to hundredths (the
same diagram always gives the same bytes), no scripts, no `foreignObject`, no external
references. Labels are glyph outlines (`paths`, independent of the reader's fonts) or real
`<text>` elements (`text`, selectable); either way every string is escaped where it enters
the document.

The document is written as text by `_Document`, not built as an element tree: a diagram of
a long model has tens of thousands of paths, and building and serialising a tree of them
(svgwrite and ElementTree, as this module once did) took half of the render time. The bytes
are the same as that writer's: attributes sorted by name, empty ones left out, `<x />` for
an element without content, and ElementTree's escaping of attribute values and text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, assert_never
from xml.etree import ElementTree

from defusedxml.ElementTree import fromstring

from .geometry import Circle, Diagram, Path, Polygon, Rect, Stroke, Text
from .style import num
from .text import Label, svg_text_element, xml_clean

_SVG_NAMESPACES = {
    "xmlns": "http://www.w3.org/2000/svg",
    "xmlns:ev": "http://www.w3.org/2001/xml-events",
    "xmlns:xlink": "http://www.w3.org/1999/xlink",
}


def path_data(item: Path) -> str:
    segments = item.segments
    if len(segments) == 1 and len(segments[0]) == 2 and not item.closed:
        # a straight wire, most of a diagram's paths: one string at once
        (x, y), (x1, y1) = item.start, segments[0]
        return f"M{num(x)} {num(y)}L{num(x1)} {num(y1)}"
    parts = [f"M{num(item.start[0])} {num(item.start[1])}"]
    for seg in segments:
        if len(seg) == 2:
            parts.append(f"L{num(seg[0])} {num(seg[1])}")
        else:
            parts.append("C" + " ".join(map(num, seg)))
    if item.closed:
        parts.append("Z")
    return "".join(parts)


@lru_cache(maxsize=16384)
def _glyph_attributes(label: Label, size: float) -> tuple[str, str]:
    """A label's outline at the origin (placed with a translation, so thousands of equal
    labels cost one outline computation each) and its `aria-label` attribute, both written
    as `_attributes` writes them (the attribute left out where the text is empty)."""
    name = xml_clean(label.plain_text())
    return (_escape_attribute(label.svg_path(0.0, 0.0, size)),
            f' aria-label="{_escape_attribute(name)}"' if name else "")


# What ElementTree escapes in an attribute value, in its order: markup characters, and line
# breaks and tabs as character references (so a reader keeps them).
_ATTRIBUTE_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"),
                      ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;"))


def _escape_attribute(value: str) -> str:
    """An attribute value inside double quotes, escaped as ElementTree escapes it."""
    for character, reference in _ATTRIBUTE_ESCAPES:
        if character in value:
            value = value.replace(character, reference)
    return value


def _escape_text(text: str) -> str:
    """Character data, escaped as ElementTree escapes it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@lru_cache(maxsize=1024)
def _clean(value: str) -> str:
    """`xml_clean` of a string that is neither a number nor a label (a colour given in
    Python), memoised: a diagram paints with a few colours."""
    return xml_clean(value)


def _stroke_attributes(stroke: Stroke | None) -> dict[str, str]:
    if stroke is None:
        return {"stroke": "none"}
    attributes = {"stroke": _clean(stroke.color), "stroke-width": num(stroke.width)}
    if stroke.dash:
        attributes["stroke-dasharray"] = " ".join(num(d) for d in stroke.dash)
    return attributes


def _attributes(attributes: dict[str, str]) -> str:
    """Attributes as the element tree writer gave them: sorted by name, empty ones left out."""
    return "".join(f' {key}="{_escape_attribute(value)}"'
                   for key, value in sorted(attributes.items()) if value)


@lru_cache(maxsize=1024)
def _paint(fill: str | None, stroke: Stroke | None) -> str:
    """The fill and stroke attributes of a shape, written."""
    return _attributes({"fill": _clean(fill or "none"), **_stroke_attributes(stroke)})


@lru_cache(maxsize=1024)
def _glyph_paint(color: str) -> str:
    """The fill and stroke attributes of a label's outline, written."""
    return _attributes({"fill": _clean(color), "stroke": "none"})


class _Document:
    """The document's text, element by element."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def element(self, name: str, attributes: dict[str, str], text: str | None = None) -> None:
        written = _attributes(attributes)
        if text:
            self.parts.append(f"<{name}{written}>{_escape_text(text)}</{name}>")
        else:
            self.parts.append(f"<{name}{written} />")

    def parsed(self, xml: str) -> None:
        """An element given as XML text (a `<text>` from `renderers.text`): parsed safely and
        written again, so it is well-formed and escaped like the rest."""
        self.parts.append(xml_clean(ElementTree.tostring(fromstring(xml), encoding="unicode")))


@lru_cache(maxsize=1024)
def _fill_attribute(fill: str | None) -> str:
    """A shape's `fill` attribute, written as `_attributes` writes it."""
    return _attributes({"fill": _clean(fill or "none")})


@lru_cache(maxsize=1024)
def _stroke_written(stroke: Stroke | None) -> str:
    """A shape's stroke attributes, written as `_attributes` writes them."""
    return _attributes(_stroke_attributes(stroke))


def render(diagram: Diagram, text: Literal["paths", "text"] = "paths") -> str:
    """The SVG document; well-formed XML whatever the labels hold: a character XML 1.0
    forbids (which the parser refuses in the source, but an IR built in Python may carry)
    becomes U+FFFD wherever a string that is not a number enters the document (labels,
    the title, colours given in Python), as cleaning the whole document would make it; the
    numbers and the document's own markup need none (cleaning tens of megabytes of them
    took a fifth of the writing).

    Each element is written as `_Document.element` would write it from its attributes
    (sorted by name, empty ones left out), with the parts that do not change from item to
    item (the paint of a wire, a label's outline) written once: a shape's attributes sort
    as its coordinates, its fill and its stroke interleave, and the numbers need no
    escaping. A path's data sorts before every paint attribute, so its paint, written once
    for each fill and stroke (wires share a few strokes, found by identity), follows it as
    it is; a label's outline is a `<path>` with the attributes `aria-label`, `d`, `fill`,
    `stroke` and `transform`, in that order."""
    width, height = num(diagram.width), num(diagram.height)
    document = _Document()
    parts = document.parts
    append = parts.append
    # paint by fill and the identity of the stroke (the diagram holds its strokes)
    painted: dict[tuple[str | None, int], str] = {}
    for item in diagram.sorted_items():
        if type(item) is Path or isinstance(item, Path | Polygon):  # (wires: most items)
            if isinstance(item, Path):
                d = path_data(item)
            else:
                # A closed path rather than <polygon>, so the numbers are formatted like
                # the rest.
                d = "M" + "L".join(f"{num(x)} {num(y)}" for x, y in item.points) + "Z"
            key = (item.fill, id(item.stroke))
            paint = painted.get(key)
            if paint is None:
                paint = painted[key] = _paint(item.fill, item.stroke)
            append(f'<path d="{d}"{paint} />')
        elif isinstance(item, Text):
            if text == "text":
                document.parsed(svg_text_element(item.label, item.x, item.y, item.size))
                continue
            outline, name = _glyph_attributes(item.label, item.size)
            if outline:
                append(f'<path{name} d="{outline}"{_glyph_paint(item.color)} '
                       f'transform="translate({num(item.x)} {num(item.y)})" />')
        elif isinstance(item, Circle):
            append(f'<circle cx="{num(item.cx)}" cy="{num(item.cy)}"'
                   f'{_fill_attribute(item.fill)} r="{num(item.r)}"'
                   f'{_stroke_written(item.stroke)} />')
        elif isinstance(item, Rect):
            corners = f' rx="{num(item.radius)}"' if item.radius else ""
            append(f'<rect{_fill_attribute(item.fill)} height="{num(item.height)}"{corners}'
                   f'{_stroke_written(item.stroke)} width="{num(item.width)}" '
                   f'x="{num(item.x)}" y="{num(item.y)}" />')
        else:
            assert_never(item)
    root = {
        "baseProfile": "full", "version": "1.1", "width": f"{width}px",
        "height": f"{height}px", "viewBox": f"0 0 {width} {height}",
        "stroke-linecap": "round", "stroke-linejoin": "round", **_SVG_NAMESPACES,
    }
    head = _Document()
    if diagram.title:
        head.element("title", {}, xml_clean(diagram.title))
    head.element("defs", {})
    if diagram.background:
        head.element("rect", {"x": "0", "y": "0", "width": width, "height": height,
                              "fill": _clean(diagram.background)})
    return "".join([xml_clean(f"<svg{_attributes(root)}>"), *head.parts, *document.parts,
                    "</svg>"])
