"""SVG emitter: draws a `Diagram`'s primitives with svgwrite, and nothing more.

Absolute width and height with a matching viewBox, coordinates rounded to hundredths (the
same diagram always gives the same bytes), no scripts, no `foreignObject`, no external
references. Labels are glyph outlines (`paths`, independent of the reader's fonts) or real
`<text>` elements (`text`, selectable); either way every string is escaped by the XML writer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, assert_never
from xml.etree import ElementTree

import svgwrite
from defusedxml.ElementTree import fromstring
from svgwrite.base import BaseElement

from .geometry import Circle, Diagram, Path, Polygon, Rect, Stroke, Text
from .style import num
from .text import Label, svg_text_element, xml_clean


def path_data(item: Path) -> str:
    parts = [f"M{num(item.start[0])} {num(item.start[1])}"]
    for seg in item.segments:
        if len(seg) == 2:
            parts.append(f"L{num(seg[0])} {num(seg[1])}")
        else:
            parts.append("C" + " ".join(num(v) for v in seg))
    if item.closed:
        parts.append("Z")
    return "".join(parts)


@lru_cache(maxsize=16384)
def _glyph_path(label: Label, size: float) -> str:
    """A label's outline at the origin; placed with a translation, so thousands of equal
    labels cost one outline computation each."""
    return label.svg_path(0.0, 0.0, size)


class _Parsed(BaseElement):
    """An element given as XML text (a `<text>` from `renderers.text`), parsed safely."""

    elementname = "text"

    def __init__(self, xml: str) -> None:
        super().__init__(debug=False, profile="full")
        self._xml = xml

    def get_xml(self) -> ElementTree.Element:
        return fromstring(self._xml)


def _stroke_attributes(stroke: Stroke | None) -> dict[str, str]:
    if stroke is None:
        return {"stroke": "none"}
    attributes = {"stroke": stroke.color, "stroke_width": num(stroke.width)}
    if stroke.dash:
        attributes["stroke_dasharray"] = " ".join(num(d) for d in stroke.dash)
    return attributes


def render(diagram: Diagram, text: Literal["paths", "text"] = "paths") -> str:
    """The SVG document; well-formed XML whatever the labels hold: a character XML 1.0
    forbids (which the parser refuses in the source, but an IR built in Python may carry)
    becomes U+FFFD where text enters the document, and the document is checked again as a
    whole, since the XML writer would spell a lone surrogate as a character reference."""
    width, height = num(diagram.width), num(diagram.height)
    drawing = svgwrite.Drawing(
        size=(f"{width}px", f"{height}px"), profile="full", debug=False,
        viewBox=f"0 0 {width} {height}",
    )
    drawing.attribs["stroke-linecap"] = "round"
    drawing.attribs["stroke-linejoin"] = "round"
    if diagram.title:
        drawing.set_desc(title=xml_clean(diagram.title))
    if diagram.background:
        drawing.add(drawing.rect((0, 0), (width, height), fill=diagram.background))
    for item in diagram.sorted_items():
        if isinstance(item, Path):
            drawing.add(drawing.path(d=path_data(item), fill=item.fill or "none",
                                     **_stroke_attributes(item.stroke)))
        elif isinstance(item, Rect):
            extra = {"rx": num(item.radius)} if item.radius else {}
            drawing.add(drawing.rect((num(item.x), num(item.y)),
                                     (num(item.width), num(item.height)),
                                     fill=item.fill or "none", **extra,
                                     **_stroke_attributes(item.stroke)))
        elif isinstance(item, Polygon):
            # A closed path rather than <polygon>, so the numbers are formatted like the rest.
            d = "M" + "L".join(f"{num(x)} {num(y)}" for x, y in item.points) + "Z"
            drawing.add(drawing.path(d=d, fill=item.fill or "none",
                                     **_stroke_attributes(item.stroke)))
        elif isinstance(item, Circle):
            drawing.add(drawing.circle((num(item.cx), num(item.cy)), num(item.r),
                                       fill=item.fill or "none",
                                       **_stroke_attributes(item.stroke)))
        elif isinstance(item, Text):
            if text == "text":
                element = _Parsed(svg_text_element(item.label, item.x, item.y, item.size))
                drawing.add(element)
                continue
            d = _glyph_path(item.label, item.size)
            if not d:
                continue
            drawing.add(drawing.path(
                d=d, fill=item.color, stroke="none",
                transform=f"translate({num(item.x)} {num(item.y)})",
                **{"aria-label": xml_clean(item.label.plain_text())},
            ))
        else:
            assert_never(item)
    return xml_clean(drawing.tostring())
