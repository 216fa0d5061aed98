"""PNG and PDF from the renderer's SVG, with pip-installable dependencies only.

- PNG: `resvg` (through the `resvg-py` wheel), with system fonts switched off and the bundled
  STIX Two Math font supplied, so the pixels do not depend on the machine.
- PDF: a small writer of our own that turns the SVG subset the renderer emits into a one-page
  vector PDF. It needs no system library (cairo is not involved) and its bytes depend only on
  the input: there are no dates, no random document ids.

The PDF writer understands: `svg` (width, height, viewBox), `g`, `a`, `switch`, nested `svg`,
`defs`, `use`, `symbol`, `marker` (marker-start/mid/end, orient auto and
auto-start-reverse), `path` (every command, arcs included), `line`, `rect` (rounded too),
`circle`, `ellipse`, `polyline`, `polygon` and `text`/`tspan` (drawn as glyph outlines of the
bundled font with `renderers.text`); transforms; fill, stroke, widths, dashes, caps, joins,
fill rules, opacities; colours as names, `#rgb`, `#rrggbb`, `rgb()`, `rgba()`, `hsl()`,
`currentColor`; presentation attributes, `style` attributes and simple `<style>` rules
(`tag`, `.class`, `#id`, `tag.class`). Gradients paint with their first stop colour; filters,
masks, clipping and images are not drawn.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from importlib.resources import files

import resvg_py

from .text import Label, Run, Style

# --------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------


def _font_file() -> str:
    return str(files("ziamath.fonts") / "STIXTwoMath-Regular.ttf")


def svg_to_png(svg: str, scale: float = 2.0, *, background: str | None = None) -> bytes:
    """Rasterise an SVG document: `scale` device pixels per SVG px, transparent unless a
    `background` colour is given. Deterministic: system fonts are not consulted; `<text>` is
    set in the bundled STIX Two Math."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    font = _font_file()
    data = resvg_py.svg_to_bytes(
        svg_string=_size_in_px(svg),
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


_ROOT_TAG = re.compile(r"<svg\b[^>]*>")
_SIZE_ATTRIBUTE = re.compile(r"""(\s(?:width|height)\s*=\s*)(["'])([^"']*)\2""")


def _size_in_px(svg: str) -> str:
    """The document with the root's width and height in px: resvg-py refuses other units
    (graphviz writes `pt`, papers like `mm`)."""
    root = _ROOT_TAG.search(svg)
    if root is None:
        return svg

    def to_px(match: re.Match[str]) -> str:
        value = match.group(3).strip()
        if re.fullmatch(rf"{_NUMBER}\s*(px|pt|pc|mm|cm|in|q)", value, re.IGNORECASE):
            value = _pdf_number(parse_length(value))
        return f"{match.group(1)}{match.group(2)}{value}{match.group(2)}"

    tag = _SIZE_ATTRIBUTE.sub(to_px, root.group(0))
    return svg[:root.start()] + tag + svg[root.end():]


# --------------------------------------------------------------------------------------
# Small geometry helpers
# --------------------------------------------------------------------------------------

Matrix = tuple[float, float, float, float, float, float]
"""An affine map `(a, b, c, d, e, f)`: x' = a x + c y + e, y' = b x + d y + f (SVG and PDF)."""

IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _multiply(m: Matrix, n: Matrix) -> Matrix:
    """The composition `m . n`: apply `n` first, then `m` (the order of an SVG transform list,
    left to right, outer to inner)."""
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (a * a2 + c * b2, b * a2 + d * b2, a * c2 + c * d2, b * c2 + d * d2,
            a * e2 + c * f2 + e, b * e2 + d * f2 + f)


def _translate(x: float, y: float) -> Matrix:
    return (1.0, 0.0, 0.0, 1.0, x, y)


def _scale(x: float, y: float) -> Matrix:
    return (x, 0.0, 0.0, y, 0.0, 0.0)


def _rotate(degrees: float) -> Matrix:
    r = math.radians(degrees)
    return (math.cos(r), math.sin(r), -math.sin(r), math.cos(r), 0.0, 0.0)


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_TRANSFORM_RE = re.compile(r"(matrix|translate|scale|rotate|skewX|skewY)\s*\(([^)]*)\)")


def _numbers(text: str | None) -> list[float]:
    """The numbers in an attribute; one out of range makes the list empty (unusable)."""
    values = [float(v) for v in _NUMBER_RE.findall(text or "")]
    return values if all(map(math.isfinite, values)) else []


def parse_transform(text: str | None) -> Matrix:
    """An SVG `transform` attribute as one matrix; anything unreadable is the identity."""
    matrix = IDENTITY
    for name, args in _TRANSFORM_RE.findall(text or ""):
        v = _numbers(args)
        step: Matrix = IDENTITY
        if name == "matrix" and len(v) == 6:
            step = (v[0], v[1], v[2], v[3], v[4], v[5])
        elif name == "translate" and v:
            step = _translate(v[0], v[1] if len(v) > 1 else 0.0)
        elif name == "scale" and v:
            step = _scale(v[0], v[1] if len(v) > 1 else v[0])
        elif name == "rotate" and v:
            step = _rotate(v[0])
            if len(v) == 3:
                step = _multiply(_translate(v[1], v[2]),
                                 _multiply(step, _translate(-v[1], -v[2])))
        elif name == "skewX" and v:
            step = (1.0, 0.0, math.tan(math.radians(v[0])), 1.0, 0.0, 0.0)
        elif name == "skewY" and v:
            step = (1.0, math.tan(math.radians(v[0])), 0.0, 1.0, 0.0, 0.0)
        matrix = _multiply(matrix, step)
    return matrix


_UNITS = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54,
          "in": 96.0, "q": 96 / 101.6}
_LENGTH_RE = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z%]*)\s*")


def parse_length(text: str | None, default: float = 0.0, *, font_size: float = 16.0,
                 percent_of: float | None = None) -> float:
    """A CSS length in px (`12`, `3mm`, `1.5em`, `50%` of `percent_of`)."""
    if text is None:
        return default
    match = _LENGTH_RE.fullmatch(text)
    if not match:
        return default
    value, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        result = default if percent_of is None else value * percent_of / 100
    elif unit in ("em", "rem"):
        result = value * font_size
    elif unit == "ex":
        result = value * font_size / 2
    else:
        result = value * _UNITS[unit] if unit in _UNITS else default
    return result if math.isfinite(result) else default


# --------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------

_NAMED_COLORS = dict(
    item.split(":") for item in (
        "aliceblue:f0f8ff antiquewhite:faebd7 aqua:00ffff aquamarine:7fffd4 azure:f0ffff "
        "beige:f5f5dc bisque:ffe4c4 black:000000 blanchedalmond:ffebcd blue:0000ff "
        "blueviolet:8a2be2 brown:a52a2a burlywood:deb887 cadetblue:5f9ea0 chartreuse:7fff00 "
        "chocolate:d2691e coral:ff7f50 cornflowerblue:6495ed cornsilk:fff8dc crimson:dc143c "
        "cyan:00ffff darkblue:00008b darkcyan:008b8b darkgoldenrod:b8860b darkgray:a9a9a9 "
        "darkgreen:006400 darkgrey:a9a9a9 darkkhaki:bdb76b darkmagenta:8b008b "
        "darkolivegreen:556b2f darkorange:ff8c00 darkorchid:9932cc darkred:8b0000 "
        "darksalmon:e9967a darkseagreen:8fbc8f darkslateblue:483d8b darkslategray:2f4f4f "
        "darkslategrey:2f4f4f darkturquoise:00ced1 darkviolet:9400d3 deeppink:ff1493 "
        "deepskyblue:00bfff dimgray:696969 dimgrey:696969 dodgerblue:1e90ff firebrick:b22222 "
        "floralwhite:fffaf0 forestgreen:228b22 fuchsia:ff00ff gainsboro:dcdcdc "
        "ghostwhite:f8f8ff gold:ffd700 goldenrod:daa520 gray:808080 green:008000 "
        "greenyellow:adff2f grey:808080 honeydew:f0fff0 hotpink:ff69b4 indianred:cd5c5c "
        "indigo:4b0082 ivory:fffff0 khaki:f0e68c lavender:e6e6fa lavenderblush:fff0f5 "
        "lawngreen:7cfc00 lemonchiffon:fffacd lightblue:add8e6 lightcoral:f08080 "
        "lightcyan:e0ffff lightgoldenrodyellow:fafad2 lightgray:d3d3d3 lightgreen:90ee90 "
        "lightgrey:d3d3d3 lightpink:ffb6c1 lightsalmon:ffa07a lightseagreen:20b2aa "
        "lightskyblue:87cefa lightslategray:778899 lightslategrey:778899 "
        "lightsteelblue:b0c4de lightyellow:ffffe0 lime:00ff00 limegreen:32cd32 linen:faf0e6 "
        "magenta:ff00ff maroon:800000 mediumaquamarine:66cdaa mediumblue:0000cd "
        "mediumorchid:ba55d3 mediumpurple:9370db mediumseagreen:3cb371 "
        "mediumslateblue:7b68ee mediumspringgreen:00fa9a mediumturquoise:48d1cc "
        "mediumvioletred:c71585 midnightblue:191970 mintcream:f5fffa mistyrose:ffe4e1 "
        "moccasin:ffe4b5 navajowhite:ffdead navy:000080 oldlace:fdf5e6 olive:808000 "
        "olivedrab:6b8e23 orange:ffa500 orangered:ff4500 orchid:da70d6 palegoldenrod:eee8aa "
        "palegreen:98fb98 paleturquoise:afeeee palevioletred:db7093 papayawhip:ffefd5 "
        "peachpuff:ffdab9 peru:cd853f pink:ffc0cb plum:dda0dd powderblue:b0e0e6 "
        "purple:800080 rebeccapurple:663399 red:ff0000 rosybrown:bc8f8f royalblue:4169e1 "
        "saddlebrown:8b4513 salmon:fa8072 sandybrown:f4a460 seagreen:2e8b57 seashell:fff5ee "
        "sienna:a0522d silver:c0c0c0 skyblue:87ceeb slateblue:6a5acd slategray:708090 "
        "slategrey:708090 snow:fffafa springgreen:00ff7f steelblue:4682b4 tan:d2b48c "
        "teal:008080 thistle:d8bfd8 tomato:ff6347 turquoise:40e0d0 violet:ee82ee "
        "wheat:f5deb3 white:ffffff whitesmoke:f5f5f5 yellow:ffff00 yellowgreen:9acd32"
    ).split()
)

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class _Paint:
    rgb: RGB
    alpha: float = 1.0


def _channel(text: str) -> float:
    text = text.strip()
    if text.endswith("%"):
        return min(max(float(text[:-1]) / 100, 0.0), 1.0)
    return min(max(float(text) / 255, 0.0), 1.0)


def _alpha(text: str) -> float:
    text = text.strip()
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    return min(max(value, 0.0), 1.0)


def parse_color(text: str | None) -> _Paint | None:
    """A CSS colour; None for `none`, `transparent` or anything unreadable."""
    if text is None:
        return None
    value = text.strip().lower()
    if value in _NAMED_COLORS:
        value = "#" + _NAMED_COLORS[value]
    try:
        if re.fullmatch(r"#[0-9a-f]{3,4}", value):
            digits = [int(ch * 2, 16) / 255 for ch in value[1:]]
            return _Paint((digits[0], digits[1], digits[2]), digits[3] if len(digits) == 4 else 1)
        if re.fullmatch(r"#[0-9a-f]{6}([0-9a-f]{2})?", value):
            digits = [int(value[i:i + 2], 16) / 255 for i in range(1, len(value), 2)]
            return _Paint((digits[0], digits[1], digits[2]), digits[3] if len(digits) == 4 else 1)
        match = re.fullmatch(r"rgba?\((.*)\)", value)
        if match:
            parts = re.split(r"\s*[,/]\s*|\s+", match.group(1).strip())
            rgb = (_channel(parts[0]), _channel(parts[1]), _channel(parts[2]))
            return _Paint(rgb, _alpha(parts[3]) if len(parts) > 3 else 1.0)
        match = re.fullmatch(r"hsla?\((.*)\)", value)
        if match:
            parts = re.split(r"\s*[,/]\s*|\s+", match.group(1).strip())
            hue = float(parts[0].removesuffix("deg")) / 360 % 1.0
            saturation, lightness = _alpha(parts[1]), _alpha(parts[2])
            return _Paint(_hsl(hue, saturation, lightness),
                          _alpha(parts[3]) if len(parts) > 3 else 1.0)
    except (ValueError, IndexError):
        return None
    return None


def _hsl(h: float, s: float, lightness: float) -> RGB:
    q = lightness * (1 + s) if lightness < 0.5 else lightness + s - lightness * s
    p = 2 * lightness - q

    def channel(t: float) -> float:
        t %= 1.0
        if t < 1 / 6:
            return p + (q - p) * 6 * t
        if t < 1 / 2:
            return q
        if t < 2 / 3:
            return p + (q - p) * (2 / 3 - t) * 6
        return p

    return (channel(h + 1 / 3), channel(h), channel(h - 1 / 3))


# --------------------------------------------------------------------------------------
# Path data
# --------------------------------------------------------------------------------------

@dataclass
class _Path:
    """Absolute path: a list of subpaths, each a start point and a list of cubic or line
    segments; `closed` per subpath."""

    subpaths: list[tuple[tuple[float, float], list[tuple[float, ...]], bool]] = field(
        default_factory=list
    )

    def move(self, x: float, y: float) -> None:
        self.subpaths.append(((x, y), [], False))

    def _current(self) -> list[tuple[float, ...]]:
        if not self.subpaths:
            self.move(0.0, 0.0)
        return self.subpaths[-1][1]

    def line(self, x: float, y: float) -> None:
        self._current().append((x, y))

    def cubic(self, x1: float, y1: float, x2: float, y2: float, x: float, y: float) -> None:
        self._current().append((x1, y1, x2, y2, x, y))

    def close(self) -> None:
        if self.subpaths:
            start, segments, _ = self.subpaths[-1]
            self.subpaths[-1] = (start, segments, True)

    def is_empty(self) -> bool:
        return not self.subpaths


_PATH_TOKEN = re.compile(rf"([MmLlHhVvCcSsQqTtAaZz])|({_NUMBER})|[\s,]+|(.)")


def _path_tokens(d: str) -> list[str]:
    tokens: list[str] = []
    for command, number, junk in _PATH_TOKEN.findall(d):
        if junk:
            break  # SVG: render up to the first error
        if command or number:
            tokens.append(command or number)
    return tokens


def parse_path(d: str | None) -> _Path:
    """SVG path data as absolute lines and cubics (quadratics and arcs converted)."""
    path = _Path()
    tokens = _path_tokens(d or "")
    i = 0
    command = ""
    x = y = 0.0
    start_x = start_y = 0.0
    last_control: tuple[float, float] | None = None  # for S/s
    last_quad: tuple[float, float] | None = None  # for T/t

    def take(n: int) -> list[float] | None:
        nonlocal i
        chunk = tokens[i:i + n]
        if len(chunk) < n:
            return None
        try:
            values = [float(token) for token in chunk]  # a command letter is not a float
        except ValueError:
            return None
        if not all(map(math.isfinite, values)):
            return None
        i += n
        return values

    def take_flag() -> float | None:
        # arc flags may be written without separators: "a1 1 0 01 1 1"
        nonlocal i
        if i >= len(tokens) or tokens[i].isalpha():
            return None
        token = tokens[i]
        if token[0] in "01" and len(token) > 1:
            tokens[i] = token[1:]
            return float(token[0])
        i += 1
        return float(token)

    while i < len(tokens):
        if tokens[i].isalpha():
            command = tokens[i]
            i += 1
        elif not command:
            break
        relative = command.islower()
        upper = command.upper()
        dx, dy = (x, y) if relative else (0.0, 0.0)
        if upper == "Z":
            path.close()
            x, y = start_x, start_y
            last_control = last_quad = None
            if i < len(tokens) and not tokens[i].isalpha():
                break  # numbers after Z are an error
            continue
        if upper == "M":
            v = take(2)
            if v is None:
                break
            x, y = v[0] + dx, v[1] + dy
            start_x, start_y = x, y
            path.move(x, y)
            command = "l" if relative else "L"  # further pairs are line-tos
            last_control = last_quad = None
            continue
        if upper in ("L", "H", "V"):
            if upper == "L":
                v = take(2)
                if v is None:
                    break
                x, y = v[0] + dx, v[1] + dy
            elif upper == "H":
                v = take(1)
                if v is None:
                    break
                x = v[0] + dx
            else:
                v = take(1)
                if v is None:
                    break
                y = v[0] + dy
            path.line(x, y)
            last_control = last_quad = None
        elif upper in ("C", "S"):
            if upper == "C":
                v = take(6)
                if v is None:
                    break
                x1, y1, x2, y2 = v[0] + dx, v[1] + dy, v[2] + dx, v[3] + dy
                ex, ey = v[4] + dx, v[5] + dy
            else:
                v = take(4)
                if v is None:
                    break
                x1, y1 = (2 * x - last_control[0], 2 * y - last_control[1]) \
                    if last_control else (x, y)
                x2, y2, ex, ey = v[0] + dx, v[1] + dy, v[2] + dx, v[3] + dy
            path.cubic(x1, y1, x2, y2, ex, ey)
            last_control, last_quad = (x2, y2), None
            x, y = ex, ey
        elif upper in ("Q", "T"):
            if upper == "Q":
                v = take(4)
                if v is None:
                    break
                qx, qy, ex, ey = v[0] + dx, v[1] + dy, v[2] + dx, v[3] + dy
            else:
                v = take(2)
                if v is None:
                    break
                qx, qy = (2 * x - last_quad[0], 2 * y - last_quad[1]) if last_quad else (x, y)
                ex, ey = v[0] + dx, v[1] + dy
            path.cubic(x + 2 / 3 * (qx - x), y + 2 / 3 * (qy - y),
                       ex + 2 / 3 * (qx - ex), ey + 2 / 3 * (qy - ey), ex, ey)
            last_quad, last_control = (qx, qy), None
            x, y = ex, ey
        elif upper == "A":
            radii = take(3)
            large = take_flag()
            sweep = take_flag()
            end = take(2)
            if radii is None or large is None or sweep is None or end is None:
                break
            ex, ey = end[0] + dx, end[1] + dy
            for segment in _arc_to_cubics(x, y, radii[0], radii[1], radii[2], bool(large),
                                          bool(sweep), ex, ey):
                path.cubic(*segment)
            x, y = ex, ey
            last_control = last_quad = None
    return path


def _arc_to_cubics(x1: float, y1: float, rx: float, ry: float, phi_degrees: float,
                   large: bool, sweep: bool, x2: float, y2: float
                   ) -> list[tuple[float, float, float, float, float, float]]:
    """An SVG elliptical arc (endpoint form) as cubic Béziers (SVG 1.1, appendix F.6)."""
    if (x1, y1) == (x2, y2):
        return []
    rx, ry = abs(rx), abs(ry)
    if rx == 0 or ry == 0:
        return [(x1, y1, x2, y2, x2, y2)]
    phi = math.radians(phi_degrees % 360)
    cos_phi, sin_phi = math.cos(phi), math.sin(phi)
    hx, hy = (x1 - x2) / 2, (y1 - y2) / 2
    x1p = cos_phi * hx + sin_phi * hy
    y1p = -sin_phi * hx + cos_phi * hy
    scale = (x1p / rx) ** 2 + (y1p / ry) ** 2
    if scale > 1:
        rx, ry = rx * math.sqrt(scale), ry * math.sqrt(scale)
    numerator = rx * rx * ry * ry - rx * rx * y1p * y1p - ry * ry * x1p * x1p
    denominator = rx * rx * y1p * y1p + ry * ry * x1p * x1p
    factor = math.sqrt(max(numerator, 0.0) / denominator) if denominator else 0.0
    if large == sweep:
        factor = -factor
    cxp, cyp = factor * rx * y1p / ry, -factor * ry * x1p / rx
    cx = cos_phi * cxp - sin_phi * cyp + (x1 + x2) / 2
    cy = sin_phi * cxp + cos_phi * cyp + (y1 + y2) / 2

    def angle(ux: float, uy: float, vx: float, vy: float) -> float:
        return math.atan2(ux * vy - uy * vx, ux * vx + uy * vy)

    if not all(map(math.isfinite, (rx, ry, cx, cy, x1p, y1p, cxp, cyp))):
        return [(x1, y1, x2, y2, x2, y2)]  # radii too large to compute with: a line
    theta1 = angle(1, 0, (x1p - cxp) / rx, (y1p - cyp) / ry)
    delta = angle((x1p - cxp) / rx, (y1p - cyp) / ry, (-x1p - cxp) / rx, (-y1p - cyp) / ry)
    if not sweep and delta > 0:
        delta -= 2 * math.pi
    elif sweep and delta < 0:
        delta += 2 * math.pi
    count = max(1, math.ceil(abs(delta) / (math.pi / 2) - 1e-9))
    step = delta / count
    kappa = 4 / 3 * math.tan(step / 4)
    result = []
    theta = theta1
    for _ in range(count):
        cos1, sin1 = math.cos(theta), math.sin(theta)
        cos2, sin2 = math.cos(theta + step), math.sin(theta + step)
        points = [(cos1 - kappa * sin1, sin1 + kappa * cos1),
                  (cos2 + kappa * sin2, sin2 - kappa * cos2), (cos2, sin2)]
        mapped = [(cx + rx * px * cos_phi - ry * py * sin_phi,
                   cy + rx * px * sin_phi + ry * py * cos_phi) for px, py in points]
        result.append((*mapped[0], *mapped[1], *mapped[2]))
        theta += step
    result[-1] = (*result[-1][:4], x2, y2)
    return result


_KAPPA = 4 / 3 * (math.sqrt(2) - 1)


def _ellipse_path(cx: float, cy: float, rx: float, ry: float) -> _Path:
    path = _Path()
    kx, ky = rx * _KAPPA, ry * _KAPPA
    path.move(cx + rx, cy)
    path.cubic(cx + rx, cy + ky, cx + kx, cy + ry, cx, cy + ry)
    path.cubic(cx - kx, cy + ry, cx - rx, cy + ky, cx - rx, cy)
    path.cubic(cx - rx, cy - ky, cx - kx, cy - ry, cx, cy - ry)
    path.cubic(cx + kx, cy - ry, cx + rx, cy - ky, cx + rx, cy)
    path.close()
    return path


def _rect_path(x: float, y: float, w: float, h: float, rx: float, ry: float) -> _Path:
    path = _Path()
    rx, ry = min(rx, w / 2), min(ry, h / 2)
    if rx <= 0 or ry <= 0:
        path.move(x, y)
        path.line(x + w, y)
        path.line(x + w, y + h)
        path.line(x, y + h)
        path.close()
        return path
    kx, ky = rx * _KAPPA, ry * _KAPPA
    path.move(x + rx, y)
    path.line(x + w - rx, y)
    path.cubic(x + w - rx + kx, y, x + w, y + ry - ky, x + w, y + ry)
    path.line(x + w, y + h - ry)
    path.cubic(x + w, y + h - ry + ky, x + w - rx + kx, y + h, x + w - rx, y + h)
    path.line(x + rx, y + h)
    path.cubic(x + rx - kx, y + h, x, y + h - ry + ky, x, y + h - ry)
    path.line(x, y + ry)
    path.cubic(x, y + ry - ky, x + rx - kx, y, x + rx, y)
    path.close()
    return path


def _points_path(points: list[float], closed: bool) -> _Path:
    path = _Path()
    pairs = list(zip(points[0::2], points[1::2], strict=False))
    if not pairs:
        return path
    path.move(*pairs[0])
    for px, py in pairs[1:]:
        path.line(px, py)
    if closed:
        path.close()
    return path


def _vertices(path: _Path) -> list[tuple[float, float, float | None, float | None]]:
    """Each vertex of the path with the direction (radians) of the segment coming in and of
    the segment going out, for markers."""
    result: list[tuple[float, float, float | None, float | None]] = []

    def direction(x0: float, y0: float, points: list[tuple[float, float]]) -> float | None:
        for px, py in points:
            if (px, py) != (x0, y0):
                return math.atan2(py - y0, px - x0)
        return None

    for (sx, sy), segments, closed in path.subpaths:
        x, y = sx, sy
        first_out: float | None = None
        incoming: float | None = None
        start_index = len(result)
        result.append((sx, sy, None, None))
        for segment in segments:
            ex, ey = segment[-2], segment[-1]
            controls = [(segment[i], segment[i + 1]) for i in range(0, len(segment), 2)]
            out = direction(x, y, controls)
            back = direction(ex, ey, list(reversed([(x, y), *controls[:-1]])))
            arrive = None if back is None else back + math.pi
            px, py, pin, _ = result[-1]
            result[-1] = (px, py, pin, out)
            if first_out is None:
                first_out = out
            result.append((ex, ey, arrive, None))
            incoming = arrive
            x, y = ex, ey
        if closed:
            if (x, y) != (sx, sy):
                arrive = math.atan2(sy - y, sx - x)
                px, py, pin, _ = result[-1]
                result[-1] = (px, py, pin, arrive)
                result.append((sx, sy, arrive, first_out))
            else:
                px, py, _, _ = result[-1]
                result[-1] = (px, py, incoming, first_out)
            sx0, sy0, _, sout = result[start_index]
            result[start_index] = (sx0, sy0, result[-1][2], sout)
    return result


# --------------------------------------------------------------------------------------
# Styles: presentation attributes, style attributes and <style> rules
# --------------------------------------------------------------------------------------

_INHERITED = frozenset({
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity",
    "stroke-dasharray", "stroke-dashoffset", "stroke-linecap", "stroke-linejoin",
    "stroke-miterlimit", "font-size", "font-style", "font-weight", "font-family",
    "text-anchor", "color", "visibility", "marker-start", "marker-mid", "marker-end",
    "xml:space",
})
_NOT_INHERITED = frozenset({"opacity", "display"})
_PROPERTIES = _INHERITED | _NOT_INHERITED | {"marker"}

_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _declarations(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.partition(":")
        if sep:
            value = value.replace("!important", "").strip()
            result[name.strip().lower()] = value
    return result


@dataclass(frozen=True)
class _Rule:
    tag: str | None
    classes: tuple[str, ...]
    ident: str | None
    specificity: tuple[int, int, int]
    order: int
    declarations: dict[str, str]


_SIMPLE_SELECTOR = re.compile(r"(\*|[a-zA-Z][\w-]*)?((?:[.#][\w-]+)*)")


def _parse_css(text: str, order_start: int) -> list[_Rule]:
    rules: list[_Rule] = []
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
        declarations = _declarations(body)
        for selector in selectors.split(","):
            selector = selector.strip()
            match = _SIMPLE_SELECTOR.fullmatch(selector)
            if not selector or not match:
                continue  # combinators, pseudo-classes, at-rules: not supported
            tag = match.group(1) if match.group(1) not in (None, "*") else None
            parts = re.findall(r"([.#])([\w-]+)", match.group(2))
            classes = tuple(name for kind, name in parts if kind == ".")
            ids = [name for kind, name in parts if kind == "#"]
            if len(ids) > 1:
                continue
            rules.append(_Rule(tag, classes, ids[0] if ids else None,
                               (len(ids), len(classes), 1 if tag else 0),
                               order_start + len(rules), declarations))
    return rules


def _rule_matches(rule: _Rule, element: ET.Element) -> bool:
    if rule.tag is not None and rule.tag != _local(element.tag):
        return False
    if rule.ident is not None and rule.ident != element.get("id"):
        return False
    classes = set((element.get("class") or "").split())
    return all(name in classes for name in rule.classes)


# --------------------------------------------------------------------------------------
# PDF writing
# --------------------------------------------------------------------------------------


def _pdf_number(value: float) -> str:
    if not math.isfinite(value):
        value = 0.0
    value = max(-1e9, min(1e9, value))
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _pdf_text_string(text: str) -> str:
    return "<FEFF" + text.encode("utf-16-be").hex().upper() + ">"


@dataclass
class _Canvas:
    """A PDF content stream being written, with the opacity states it uses."""

    ops: list[str] = field(default_factory=list)
    alpha_states: dict[tuple[float, float], str] = field(default_factory=dict)

    def emit(self, *parts: str) -> None:
        self.ops.append(" ".join(parts))

    def alpha_state(self, fill: float, stroke: float) -> str:
        key = (round(fill, 4), round(stroke, 4))
        if key not in self.alpha_states:
            self.alpha_states[key] = f"GS{len(self.alpha_states)}"
        return self.alpha_states[key]


class _Thousandths(dict[int, str]):
    """Memoised decimal text of integers in thousandths: 1250 -> `1.25`, -3 -> `-0.003`."""

    def __missing__(self, key: int) -> str:
        if len(self) > 1_000_000:
            self.clear()
        sign = "-" if key < 0 else ""
        whole, fraction = divmod(abs(key), 1000)
        text = f"{sign}{whole}" + (f".{fraction:03d}".rstrip("0") if fraction else "")
        self[key] = text
        return text


_THOUSANDTHS = _Thousandths()


def _coordinate(value: float) -> str:
    """A path coordinate in user space, to a thousandth of a unit (clamped to what a PDF
    reader can hold)."""
    if not math.isfinite(value):
        return "0"
    return _THOUSANDTHS[round(max(-1e9, min(1e9, value)) * 1000)]


def _path_ops(path: _Path) -> list[str]:
    try:
        return _path_ops_fast(path)
    except (OverflowError, ValueError):  # a coordinate that is not finite
        return _path_ops_checked(path)


def _path_ops_fast(path: _Path) -> list[str]:
    text = _THOUSANDTHS.__getitem__
    ops: list[str] = []
    for (sx, sy), segments, closed in path.subpaths:
        ops.append(f"{text(round(sx * 1000))} {text(round(sy * 1000))} m")
        for segment in segments:
            numbers = " ".join([text(round(v * 1000)) for v in segment])
            ops.append(numbers + (" l" if len(segment) == 2 else " c"))
        if closed:
            ops.append("h")
    return ops


def _path_ops_checked(path: _Path) -> list[str]:
    n = _coordinate
    ops: list[str] = []
    for (sx, sy), segments, closed in path.subpaths:
        ops.append(f"{n(sx)} {n(sy)} m")
        for segment in segments:
            ops.append(" ".join(n(v) for v in segment) + (" l" if len(segment) == 2 else " c"))
        if closed:
            ops.append("h")
    return ops


class _Converter:
    """Walks an SVG tree and writes the PDF content stream."""

    def __init__(self, root: ET.Element) -> None:
        self.root = root
        self.canvas = _Canvas()
        self.ids: dict[str, ET.Element] = {}
        self.rules: list[_Rule] = []
        self.parents: dict[ET.Element, ET.Element] = {}
        for element in root.iter():
            for child in element:
                self.parents[child] = element
            identifier = element.get("id")
            if identifier and identifier not in self.ids:
                self.ids[identifier] = element
            if _local(element.tag) == "style" and element.text:
                self.rules.extend(_parse_css(element.text, len(self.rules)))
        self.rules.sort(key=lambda rule: (rule.specificity, rule.order))
        self.use_depth = 0

    # ---------------------------------------------------------------- properties

    def declared(self, element: ET.Element) -> dict[str, str]:
        """The element's own properties: attributes, then matching rules, then `style`."""
        result: dict[str, str] = {}
        for name in _PROPERTIES:
            value = element.get(name)
            if value is not None:
                result[name] = value.strip()
        space = element.get(_XML_SPACE)
        if space is not None:
            result["xml:space"] = space
        for rule in self.rules:
            if _rule_matches(rule, element):
                result.update({k: v for k, v in rule.declarations.items() if k in _PROPERTIES})
        style = element.get("style")
        if style:
            result.update({k: v for k, v in _declarations(style).items() if k in _PROPERTIES})
        marker = result.pop("marker", None)
        if marker is not None:
            for name in ("marker-start", "marker-mid", "marker-end"):
                result.setdefault(name, marker)
        return result

    def computed(self, element: ET.Element, inherited: dict[str, str]) -> dict[str, str]:
        props = {k: v for k, v in inherited.items() if k in _INHERITED}
        for name, value in self.declared(element).items():
            if value == "inherit":
                if name in inherited:
                    props[name] = inherited[name]
            else:
                props[name] = value
        return props

    def document_props(self, element: ET.Element) -> dict[str, str]:
        """Properties of an element where it stands in the document (for markers)."""
        chain = [element]
        while chain[-1] in self.parents:
            chain.append(self.parents[chain[-1]])
        props: dict[str, str] = {}
        for node in reversed(chain):
            props = self.computed(node, props)
        return props

    # ---------------------------------------------------------------- walking

    def draw_children(self, element: ET.Element, props: dict[str, str], alpha: float) -> None:
        for child in element:
            self.draw(child, props, alpha)

    def draw(self, element: ET.Element, inherited: dict[str, str], alpha: float) -> None:
        tag = _local(element.tag)
        if tag in ("defs", "style", "title", "desc", "metadata", "marker", "symbol",
                   "clipPath", "mask", "pattern", "filter", "linearGradient",
                   "radialGradient", "foreignObject", "image", "script", ""):
            return
        props = self.computed(element, inherited)
        if props.get("display") == "none":
            return
        alpha *= _opacity(props.get("opacity"))
        transform = parse_transform(element.get("transform"))
        if tag == "use":
            self.draw_use(element, props, alpha, transform)
            return
        if tag == "svg":
            transform = _multiply(transform, self.viewport(element))
        pushed = transform != IDENTITY
        if pushed:
            self.canvas.emit("q", *(_pdf_number(v) for v in transform), "cm")
        if tag in ("g", "a", "switch", "svg"):
            self.draw_children(element, props, alpha)
        elif tag == "text":
            self.draw_text(element, props, alpha)
        else:
            path = self.shape(tag, element, props)
            if path is not None and not path.is_empty():
                self.paint(path, props, alpha, fill_area=tag != "line")
                if tag in ("path", "line", "polyline", "polygon"):
                    self.draw_markers(path, props, alpha)
        if pushed:
            self.canvas.emit("Q")

    def viewport(self, element: ET.Element) -> Matrix:
        """The map of a nested `svg` element: its position and its viewBox."""
        x = parse_length(element.get("x"))
        y = parse_length(element.get("y"))
        box = _numbers(element.get("viewBox"))
        width = parse_length(element.get("width"), box[2] if len(box) == 4 else 0.0)
        height = parse_length(element.get("height"), box[3] if len(box) == 4 else 0.0)
        matrix = _translate(x, y)
        if len(box) == 4 and box[2] > 0 and box[3] > 0:
            matrix = _multiply(matrix, _viewbox_matrix(box, width, height,
                                                       element.get("preserveAspectRatio")))
        return matrix

    def draw_use(self, element: ET.Element, props: dict[str, str], alpha: float,
                 transform: Matrix) -> None:
        href = element.get("href") or element.get(_XLINK_HREF) or ""
        target = self.ids.get(href[1:]) if href.startswith("#") else None
        if target is None or self.use_depth > 16:
            return
        x = parse_length(element.get("x"))
        y = parse_length(element.get("y"))
        matrix = _multiply(transform, _translate(x, y))
        self.canvas.emit("q", *(_pdf_number(v) for v in matrix), "cm")
        self.use_depth += 1
        if _local(target.tag) == "symbol":
            symbol_props = self.computed(target, props)
            box = _numbers(target.get("viewBox"))
            if len(box) == 4 and box[2] > 0 and box[3] > 0:
                width = parse_length(element.get("width"), box[2])
                height = parse_length(element.get("height"), box[3])
                inner = _viewbox_matrix(box, width, height, target.get("preserveAspectRatio"))
                self.canvas.emit("q", *(_pdf_number(v) for v in inner), "cm")
                self.draw_children(target, symbol_props, alpha)
                self.canvas.emit("Q")
            else:
                self.draw_children(target, symbol_props, alpha)
        else:
            self.draw(target, props, alpha)
        self.use_depth -= 1
        self.canvas.emit("Q")

    # ---------------------------------------------------------------- shapes

    def shape(self, tag: str, element: ET.Element, props: dict[str, str]) -> _Path | None:
        font_size = parse_length(props.get("font-size"), 16.0)

        def length(name: str, default: float = 0.0) -> float:
            return parse_length(element.get(name), default, font_size=font_size)

        if tag == "path":
            return parse_path(element.get("d"))
        if tag == "line":
            path = _Path()
            path.move(length("x1"), length("y1"))
            path.line(length("x2"), length("y2"))
            return path
        if tag == "rect":
            width, height = length("width"), length("height")
            if width <= 0 or height <= 0:
                return None
            rx_text, ry_text = element.get("rx"), element.get("ry")
            rx = length("rx") if rx_text is not None else None
            ry = length("ry") if ry_text is not None else None
            rx = rx if rx is not None else (ry or 0.0)
            ry = ry if ry is not None else rx
            return _rect_path(length("x"), length("y"), width, height, max(rx, 0.0),
                              max(ry, 0.0))
        if tag == "circle":
            r = length("r")
            return _ellipse_path(length("cx"), length("cy"), r, r) if r > 0 else None
        if tag == "ellipse":
            rx, ry = length("rx"), length("ry")
            if rx <= 0 or ry <= 0:
                return None
            return _ellipse_path(length("cx"), length("cy"), rx, ry)
        if tag in ("polyline", "polygon"):
            return _points_path(_numbers(element.get("points")), tag == "polygon")
        return None

    def paint(self, path: _Path, props: dict[str, str], alpha: float, *,
              fill_area: bool = True) -> None:
        if props.get("visibility") in ("hidden", "collapse"):
            return
        fill = self.paint_server(props.get("fill", "black"), props) if fill_area else None
        stroke = self.paint_server(props.get("stroke", "none"), props)
        font_size = parse_length(props.get("font-size"), 16.0)
        stroke_width = parse_length(props.get("stroke-width"), 1.0, font_size=font_size)
        if stroke_width <= 0:
            stroke = None
        if fill is None and stroke is None:
            return
        fill_alpha = alpha * _opacity(props.get("fill-opacity")) * (fill.alpha if fill else 1)
        stroke_alpha = (alpha * _opacity(props.get("stroke-opacity"))
                        * (stroke.alpha if stroke else 1))
        canvas = self.canvas
        canvas.emit("q")
        if fill_alpha < 1 or stroke_alpha < 1:
            canvas.emit(f"/{canvas.alpha_state(fill_alpha, stroke_alpha)}", "gs")
        if fill is not None:
            canvas.emit(*(_pdf_number(v) for v in fill.rgb), "rg")
        if stroke is not None:
            canvas.emit(*(_pdf_number(v) for v in stroke.rgb), "RG")
            canvas.emit(_pdf_number(stroke_width), "w")
            cap = {"butt": 0, "round": 1, "square": 2}.get(props.get("stroke-linecap", ""), 0)
            join = {"miter": 0, "round": 1, "bevel": 2}.get(props.get("stroke-linejoin", ""), 0)
            canvas.emit(str(cap), "J", str(join), "j")
            miter = _numbers(props.get("stroke-miterlimit"))
            canvas.emit(_pdf_number(miter[0] if miter and miter[0] >= 1 else 4.0), "M")
            dashes = _dash_array(props.get("stroke-dasharray"), font_size)
            if dashes:
                offset = parse_length(props.get("stroke-dashoffset"), 0.0, font_size=font_size)
                canvas.emit("[" + " ".join(_pdf_number(v) for v in dashes) + "]",
                            _pdf_number(offset), "d")
        canvas.ops.extend(_path_ops(path))
        even_odd = props.get("fill-rule") == "evenodd"
        if fill is not None and stroke is not None:
            canvas.emit("B*" if even_odd else "B")
        elif fill is not None:
            canvas.emit("f*" if even_odd else "f")
        else:
            canvas.emit("S")
        canvas.emit("Q")

    def paint_server(self, value: str, props: dict[str, str]) -> _Paint | None:
        value = value.strip()
        if value.startswith("url("):
            match = re.match(r"url\(\s*['\"]?#([^)'\"]+)['\"]?\s*\)\s*(.*)", value)
            if not match:
                return None
            target = self.ids.get(match.group(1))
            if target is not None and _local(target.tag) in ("linearGradient", "radialGradient"):
                for stop in target.iter():
                    if _local(stop.tag) == "stop":
                        stop_props = self.declared(stop)
                        color = parse_color(stop_props.get("stop-color")
                                            or stop.get("stop-color") or "black")
                        return color
            return self.paint_server(match.group(2), props) if match.group(2) else None
        if value.lower() == "currentcolor":
            return parse_color(props.get("color", "black"))
        return parse_color(value)

    # ---------------------------------------------------------------- markers

    def draw_markers(self, path: _Path, props: dict[str, str], alpha: float) -> None:
        names = ("marker-start", "marker-mid", "marker-end")
        if not any(props.get(name, "none") != "none" for name in names):
            return
        vertices = _vertices(path)
        if not vertices:
            return
        font_size = parse_length(props.get("font-size"), 16.0)
        stroke_width = parse_length(props.get("stroke-width"), 1.0, font_size=font_size)
        for name in names:
            match = re.match(r"url\(\s*['\"]?#([^)'\"]+)['\"]?\s*\)", props.get(name, "none"))
            marker = self.ids.get(match.group(1)) if match else None
            if marker is None or _local(marker.tag) != "marker":
                continue
            if name == "marker-start":
                chosen = [(vertices[0], "start")]
            elif name == "marker-end":
                chosen = [(vertices[-1], "end")]
            else:
                chosen = [(v, "mid") for v in vertices[1:-1]]
            for vertex, position in chosen:
                self.draw_marker(marker, vertex, position, stroke_width, alpha)

    def draw_marker(self, marker: ET.Element,
                    vertex: tuple[float, float, float | None, float | None], position: str,
                    stroke_width: float, alpha: float) -> None:
        if self.use_depth > 16:
            return
        x, y, incoming, outgoing = vertex
        orient = (marker.get("orient") or "0").strip()
        if orient in ("auto", "auto-start-reverse"):
            if position == "start":
                direction = outgoing if outgoing is not None else incoming
            elif position == "end":
                direction = incoming if incoming is not None else outgoing
            elif incoming is not None and outgoing is not None:
                direction = math.atan2(math.sin(incoming) + math.sin(outgoing),
                                       math.cos(incoming) + math.cos(outgoing))
            else:
                direction = incoming if incoming is not None else outgoing
            degrees = math.degrees(direction or 0.0)
            if orient == "auto-start-reverse" and position == "start":
                degrees += 180
        else:
            values = _numbers(orient)
            degrees = values[0] if values else 0.0
        units_scale = 1.0 if marker.get("markerUnits") == "userSpaceOnUse" else stroke_width
        width = parse_length(marker.get("markerWidth"), 3.0)
        height = parse_length(marker.get("markerHeight"), 3.0)
        box = _numbers(marker.get("viewBox"))
        sx = sy = 1.0
        if len(box) == 4 and box[2] > 0 and box[3] > 0:
            sx, sy = width / box[2], height / box[3]
            if (marker.get("preserveAspectRatio") or "").split()[:1] != ["none"]:
                sx = sy = min(sx, sy)
        ref_x = parse_length(marker.get("refX"))
        ref_y = parse_length(marker.get("refY"))
        matrix = _multiply(_translate(x, y), _rotate(degrees))
        matrix = _multiply(matrix, _scale(units_scale * sx, units_scale * sy))
        matrix = _multiply(matrix, _translate(-ref_x, -ref_y))
        self.canvas.emit("q", *(_pdf_number(v) for v in matrix), "cm")
        self.use_depth += 1
        self.draw_children(marker, self.document_props(marker), alpha)
        self.use_depth -= 1
        self.canvas.emit("Q")

    # ---------------------------------------------------------------- text

    def draw_text(self, element: ET.Element, props: dict[str, str], alpha: float) -> None:
        """Text set as glyph outlines of the bundled font: each tspan is one run."""
        chunks: list[tuple[str, dict[str, str], ET.Element | None]] = []

        def collect(node: ET.Element, node_props: dict[str, str]) -> None:
            if node.text:
                chunks.append((node.text, node_props, node if node is not element else None))
            for child in node:
                if _local(child.tag) in ("tspan", "a"):
                    child_props = self.computed(child, node_props)
                    if child_props.get("display") != "none":
                        collect(child, child_props)
                if child.tail:
                    chunks.append((child.tail, node_props, None))

        collect(element, props)
        x = _first(element.get("x"))
        y = _first(element.get("y"))
        x += _first(element.get("dx"))
        y += _first(element.get("dy"))
        lines: list[list[tuple[Label, float, float, float, dict[str, str]]]] = [[]]
        preserve = props.get("xml:space") == "preserve"
        seen: set[int] = set()
        for index, (raw, chunk_props, owner) in enumerate(chunks):
            if owner is not None and id(owner) not in seen:
                seen.add(id(owner))
                if owner.get("x") is not None:
                    x = _first(owner.get("x"))
                    if lines[-1]:
                        lines.append([])
                if owner.get("y") is not None:
                    y = _first(owner.get("y"))
                x += _first(owner.get("dx"))
                y += _first(owner.get("dy"))
            text = raw.replace("\n", " " if preserve else "").replace("\t", " ")
            if not preserve:
                text = re.sub(" +", " ", text)
                if index == 0:
                    text = text.lstrip(" ")
                if index == len(chunks) - 1:
                    text = text.rstrip(" ")
            if not text:
                continue
            size = parse_length(chunk_props.get("font-size"), 16.0)
            if not (0 < size < 1e6 and math.isfinite(x) and math.isfinite(y)):
                continue
            label = Label((Run(text, _font_style(chunk_props)),))
            lines[-1].append((label, x, y, size, chunk_props))
            x += label.measure(size).width
        for line in lines:
            if not line:
                continue
            anchor = line[0][4].get("text-anchor", "start")
            shift = 0.0
            if anchor in ("middle", "end"):
                first_x = line[0][1]
                last_label, last_x, _, last_size, _ = line[-1]
                width = last_x + last_label.measure(last_size).width - first_x
                shift = -width / 2 if anchor == "middle" else -width
            for label, lx, ly, size, chunk_props in line:
                if not (abs(lx + shift) < 1e9 and abs(ly) < 1e9):
                    continue  # far off any page (or not a number)
                outline = parse_path(label.svg_path(lx + shift, ly, size))
                glyph_props = dict(chunk_props)
                glyph_props["fill-rule"] = "nonzero"
                self.paint(outline, glyph_props, alpha)


def _font_style(props: dict[str, str]) -> Style:
    italic = props.get("font-style", "normal") in ("italic", "oblique")
    weight = props.get("font-weight", "normal")
    bold = weight in ("bold", "bolder") or (weight.isdigit() and int(weight) >= 600)
    if bold and italic:
        return "bold-italic"
    return "bold" if bold else "italic" if italic else "roman"


def _first(text: str | None) -> float:
    values = _numbers(text)
    return values[0] if values else 0.0


def _opacity(text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        return _alpha(text)
    except ValueError:
        return 1.0


def _dash_array(text: str | None, font_size: float) -> list[float]:
    if not text or text.strip() == "none":
        return []
    values = [parse_length(part, -1.0, font_size=font_size)
              for part in re.split(r"[\s,]+", text.strip()) if part]
    if not values or any(v < 0 for v in values) or sum(values) <= 0:
        return []
    return values * 2 if len(values) % 2 else values


def _viewbox_matrix(box: list[float], width: float, height: float,
                    aspect: str | None) -> Matrix:
    sx, sy = width / box[2], height / box[3]
    parts = (aspect or "xMidYMid meet").split()
    align = parts[0] if parts else "xMidYMid"
    if align == "none":
        return _multiply(_scale(sx, sy), _translate(-box[0], -box[1]))
    s = max(sx, sy) if len(parts) > 1 and parts[1] == "slice" else min(sx, sy)
    tx = ty = 0.0
    if "xMid" in align:
        tx = (width - box[2] * s) / 2
    elif "xMax" in align:
        tx = width - box[2] * s
    if "YMid" in align:
        ty = (height - box[3] * s) / 2
    elif "YMax" in align:
        ty = height - box[3] * s
    return _multiply(_translate(tx, ty), _multiply(_scale(s, s), _translate(-box[0], -box[1])))


def _document_size(root: ET.Element) -> tuple[float, float, Matrix]:
    """Page size in px and the map from SVG user space to that page (y down)."""
    box = _numbers(root.get("viewBox"))
    has_box = len(box) == 4 and box[2] > 0 and box[3] > 0
    width = parse_length(root.get("width"), box[2] if has_box else 0.0,
                         percent_of=box[2] if has_box else None)
    height = parse_length(root.get("height"), box[3] if has_box else 0.0,
                          percent_of=box[3] if has_box else None)
    if width <= 0 or height <= 0:
        raise ValueError("the SVG has no size: give it width and height or a viewBox")
    matrix = _viewbox_matrix(box, width, height, root.get("preserveAspectRatio")) \
        if has_box else IDENTITY
    return width, height, matrix


def _title(root: ET.Element) -> str | None:
    for child in root:
        if _local(child.tag) == "title":
            return "".join(child.itertext()).strip() or None
    return None


PX_TO_PT = 0.75
"""CSS px to PDF points (96 px and 72 pt per inch)."""


def svg_to_pdf(svg: str, *, compress: bool = True) -> bytes:
    """A one-page vector PDF of an SVG document, the page the SVG's size (1 px = 0.75 pt).

    Deterministic: no dates or random ids; with `compress`, the content stream is deflated
    (zlib level 6), otherwise written as plain text.
    """
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as error:
        raise ValueError(f"not a well-formed SVG document: {error}") from error
    if _local(root.tag) != "svg":
        raise ValueError(f"not an SVG document: the root element is <{_local(root.tag)}>")
    width, height, viewbox = _document_size(root)
    converter = _Converter(root)
    page = (PX_TO_PT, 0.0, 0.0, -PX_TO_PT, 0.0, height * PX_TO_PT)
    converter.canvas.emit(*(_pdf_number(v) for v in _multiply(page, viewbox)), "cm")
    props = converter.computed(root, {})
    alpha = _opacity(props.get("opacity"))
    if props.get("display") != "none":
        converter.draw_children(root, props, alpha)
    content = ("\n".join(converter.canvas.ops) + "\n").encode("ascii")
    return _pdf_document(content, width * PX_TO_PT, height * PX_TO_PT,
                         converter.canvas.alpha_states, _title(root), compress)


def _pdf_document(content: bytes, width: float, height: float,
                  alpha_states: dict[tuple[float, float], str], title: str | None,
                  compress: bool) -> bytes:
    n = _pdf_number
    states = " ".join(f"/{name} << /Type /ExtGState /ca {n(fill)} /CA {n(stroke)} >>"
                      for (fill, stroke), name in alpha_states.items())
    resources = f"<< /ExtGState << {states} >> >>" if states else "<< >>"
    if compress:
        content = zlib.compress(content, 6)
        stream_dict = f"<< /Length {len(content)} /Filter /FlateDecode >>"
    else:
        stream_dict = f"<< /Length {len(content)} >>"
    info = "<< /Producer (ncd)" + (f" /Title {_pdf_text_string(title)}" if title else "") + " >>"
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {n(width)} {n(height)}] "
         f"/Resources {resources} /Contents 4 0 R >>").encode("ascii"),
        stream_dict.encode("ascii") + b"\nstream\n" + content + b"\nendstream",
        info.encode("ascii"),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode("ascii") + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode("ascii")
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode("ascii")
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 5 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode("ascii")
    return bytes(out)
