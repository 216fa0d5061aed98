"""SVG emitter: writes a `Diagram`'s primitives as SVG elements, and nothing more.

Absolute width and height with a matching viewBox, coordinates rounded to hundredths (the
same diagram always gives the same bytes), no scripts, no `foreignObject`, no external
references. Labels are glyph outlines (`paths`, independent of the reader's fonts) or real
`<text>` elements (`text`, selectable); either way every string is escaped.

The document is written as text, element by element (a tree of element objects serialised
afterwards cost more than the layout on a large diagram), in the form the XML writers give:
attributes sorted by name, an empty attribute left out, `" />"` closing an empty element, a
`<defs />` after the title.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, assert_never
from xml.etree import ElementTree

from defusedxml.ElementTree import fromstring

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


_ATTRIBUTE_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"),
                      ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;"))
"""What ElementTree escapes in an attribute value, in its order (`&` first)."""


def _escaped(value: str) -> str:
    """An attribute value inside double quotes, as ElementTree writes it to UTF-8 (a lone
    surrogate as a character reference), with every character XML 1.0 forbids then
    replaced by U+FFFD. Each step acts character by character, so a document of values
    written so is what writing it whole and cleaning it afterwards gives."""
    for char, entity in _ATTRIBUTE_ESCAPES:
        if char in value:
            value = value.replace(char, entity)
    return _checked(value)


def _checked(text: str) -> str:
    """`text` as written to UTF-8 (a lone surrogate as a character reference), every
    character XML 1.0 forbids replaced by U+FFFD."""
    if text.isascii():  # the common case: nothing to spell differently, bar control codes
        return xml_clean(text) if not text.isprintable() else text
    return xml_clean(text.encode("utf-8", "xmlcharrefreplace").decode("utf-8"))


def _attributes(pairs: dict[str, str]) -> str:
    """` name="value"` for each attribute, sorted by name, the empty ones left out."""
    return "".join(f' {name}="{_escaped(value)}"' for name, value in sorted(pairs.items())
                   if value)


def _element(tag: str, pairs: dict[str, str]) -> str:
    return f"<{tag}{_attributes(pairs)} />"


def _stroke_attributes(stroke: Stroke | None) -> dict[str, str]:
    if stroke is None:
        return {"stroke": "none"}
    attributes = {"stroke": stroke.color, "stroke-width": num(stroke.width)}
    if stroke.dash:
        attributes["stroke-dasharray"] = " ".join(num(d) for d in stroke.dash)
    return attributes


class _Painted(dict[tuple[str | None, Stroke | None], str]):
    """The fill and stroke attributes of a path (the names after `d` in sorted order), made
    once per pair: a large diagram draws thousands of wires in a few paints."""

    def __missing__(self, key: tuple[str | None, Stroke | None]) -> str:
        fill, stroke = key
        text = _attributes({"fill": fill or "none", **_stroke_attributes(stroke)})
        self[key] = text
        return text


class _Glyphs(dict[tuple[Label, float, str], str]):
    """The start of a label's outline element, up to its translation, made once per label,
    size and colour (attributes after `aria-label`, `d`, `fill` and `stroke`: `transform`)."""

    def __missing__(self, key: tuple[Label, float, str]) -> str:
        label, size, color = key
        d = _glyph_path(label, size)
        text = self[key] = "<path" + _attributes({
            "d": d, "fill": color, "stroke": "none",
            "aria-label": xml_clean(label.plain_text())}) + ' transform="translate(' if d else ""
        return text


def _text_element(item: Text) -> str:
    """A real `<text>` element, parsed safely and written again as the XML writer writes it
    (the check that what `svg_text_element` made is well-formed)."""
    parsed = fromstring(svg_text_element(item.label, item.x, item.y, item.size))
    return _checked(ElementTree.tostring(parsed, encoding="unicode"))


def _items(diagram: Diagram, text: Literal["paths", "text"]) -> list[str]:
    painted = _Painted()
    glyphs = _Glyphs()
    parts: list[str] = []
    for item in diagram.sorted_items():
        if isinstance(item, Path):
            # the path data holds only numbers and commands: nothing to escape
            parts.append(f'<path d="{path_data(item)}"{painted[item.fill, item.stroke]} />')
        elif isinstance(item, Rect):
            extra = {"rx": num(item.radius)} if item.radius else {}
            parts.append(_element("rect", {
                "x": num(item.x), "y": num(item.y), "width": num(item.width),
                "height": num(item.height), "fill": item.fill or "none", **extra,
                **_stroke_attributes(item.stroke)}))
        elif isinstance(item, Polygon):
            # A closed path rather than <polygon>, so the numbers are formatted like the rest.
            d = "M" + "L".join(f"{num(x)} {num(y)}" for x, y in item.points) + "Z"
            parts.append(f'<path d="{d}"{painted[item.fill, item.stroke]} />')
        elif isinstance(item, Circle):
            parts.append(_element("circle", {
                "cx": num(item.cx), "cy": num(item.cy), "r": num(item.r),
                "fill": item.fill or "none", **_stroke_attributes(item.stroke)}))
        elif isinstance(item, Text):
            if text == "text":
                parts.append(_text_element(item))
                continue
            start = glyphs[item.label, item.size, item.color]
            if start:  # an empty label draws nothing
                parts.append(f'{start}{num(item.x)} {num(item.y)})" />')
        else:
            assert_never(item)
    return parts


def render(diagram: Diagram, text: Literal["paths", "text"] = "paths") -> str:
    """The SVG document; well-formed XML whatever the labels hold: a character XML 1.0
    forbids (which the parser refuses in the source, but an IR built in Python may carry)
    becomes U+FFFD where text enters the document, and every value written is checked again
    (`_escaped`, `_checked`), as an XML writer encoding UTF-8 spells it and as cleaning the
    whole document would."""
    width, height = num(diagram.width), num(diagram.height)
    parts = [
        "<svg" + _attributes({
            "baseProfile": "full", "version": "1.1", "height": f"{height}px",
            "width": f"{width}px", "viewBox": f"0 0 {width} {height}",
            "stroke-linecap": "round", "stroke-linejoin": "round",
            "xmlns": "http://www.w3.org/2000/svg",
            "xmlns:xlink": "http://www.w3.org/1999/xlink",
            "xmlns:ev": "http://www.w3.org/2001/xml-events"}) + ">",
    ]
    if diagram.title:
        title = xml_clean(diagram.title)
        escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts.append(f"<title>{_checked(escaped)}</title>")
    parts.append("<defs />")
    if diagram.background:
        parts.append(_element("rect", {"x": "0", "y": "0", "width": width, "height": height,
                                       "fill": diagram.background}))
    parts.extend(_items(diagram, text))
    parts.append("</svg>")
    return "".join(parts)
