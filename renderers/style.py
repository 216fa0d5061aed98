"""How every emitter writes numbers and reads colours: one formatter, one colour table.

The SVG, TikZ and PDF emitters and the graphviz overview all draw from these, so a diagram's
numbers and colours agree whatever the format:

- `num` writes a coordinate with at most two decimals, no trailing zeros and never `-0`, so
  the same diagram always gives the same bytes; `hundredths` is its memoised form for whole
  numbers of hundredths (glyph outlines, thousands of numbers per diagram).
- A colour is `#rgb`, `#rrggbb` or a name of `NAMED_COLOURS` (the diagrams' palette: a
  user's `color "purple"` is this purple in every output). `parse_colour` normalises one to
  `#rrggbb`, or None when it is none of these, so text from the source never reaches an
  output; `rgb` gives its channels and `hex_colour` writes channels back.
"""

from __future__ import annotations

from collections.abc import Callable

from ncd import colours

RGB = tuple[int, int, int]
"""Red, green and blue channels, each 0..255."""

# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def _num(value: float) -> str:
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _Numbers(dict[float, str]):
    """Memoised `_num`: a diagram repeats its coordinates (wires on one pitch grid, boxes of
    one height), so most numbers of a large drawing are written before. Equal keys give equal
    text (`-0.0` and `0.0`, `1` and `1.0` alike)."""

    def __missing__(self, key: float) -> str:
        if len(self) > 1_000_000:
            self.clear()
        text = self[key] = _num(key)
        return text


num: Callable[[float], str] = _Numbers().__getitem__
"""A coordinate with at most two decimals, no trailing zeros, never `-0` (a bound method of
the memo, so that a number written before costs no Python call)."""


class _Hundredths(dict[int, str]):
    """Memoised decimal text of integers in hundredths: 1250 -> `12.5`, -3 -> `-0.03`."""

    def __missing__(self, key: int) -> str:
        if len(self) > 1_000_000:
            self.clear()
        sign = "-" if key < 0 else ""
        whole, fraction = divmod(abs(key), 100)
        if fraction == 0:
            text = f"{sign}{whole}"
        elif fraction % 10 == 0:
            text = f"{sign}{whole}.{fraction // 10}"
        else:
            text = f"{sign}{whole}.{fraction:02d}"
        self[key] = text
        return text


hundredths: Callable[[int], str] = _Hundredths().__getitem__
"""`count` hundredths as `num` writes them: 1250 -> `12.5`, -3 -> `-0.03`, 0 -> `0` (a bound
method of the memo, so that the outline writer pays no extra call per number)."""


# --------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------

# The palette and the reading of a colour live with the checker (`ncd.colours`), which refuses a
# colour it cannot read; every emitter reads colours through these names.
NAMED_COLOURS = colours.NAMED_COLOURS
parse_colour = colours.parse_colour


def rgb(colour: str) -> RGB | None:
    """The channels of a colour `parse_colour` reads; None when it reads none."""
    value = parse_colour(colour)
    if value is None:
        return None
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def hex_colour(channels: tuple[float, float, float]) -> str:
    """`#rrggbb` of channels 0..255, each rounded and clamped."""
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in channels)
