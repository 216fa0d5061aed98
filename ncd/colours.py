"""The colours a `.ncd` file may name (`block "..." color "purple"`), and how one is read.

A colour is `#rgb`, `#rrggbb` or a name of `NAMED_COLOURS`: the diagrams' palette, so a
user's `color "purple"` is this purple in every output. The checker refuses any other text
(E310, with the closest name as a hint), so what reaches a renderer always reads.
"""

from __future__ import annotations

import re

NAMED_COLOURS: dict[str, str] = {
    "red": "#e41a1c", "green": "#4daf4a", "blue": "#377eb8", "yellow": "#ffdd33",
    "orange": "#ff7f00", "purple": "#984ea3", "violet": "#8a5cc7", "pink": "#f781bf",
    "brown": "#a65628", "grey": "#999999", "gray": "#999999", "cyan": "#33bbdd",
    "teal": "#1b9e77", "magenta": "#d63ad6", "lavender": "#b6a6e0", "lime": "#9ad63a",
    "olive": "#9a9a3a", "navy": "#283c8c", "gold": "#e6b422", "black": "#000000",
    "white": "#ffffff",
}
"""The colour names a `.ncd` file may use, and the hue each stands for."""

_HEX = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")


def parse_colour(text: str) -> str | None:
    """`#rrggbb` (lower case) for a `#rgb`, `#rrggbb` or a name of `NAMED_COLOURS` (case and
    surrounding spaces ignored); None for anything else."""
    text = text.strip().lower()
    if text in NAMED_COLOURS:
        return NAMED_COLOURS[text]
    if not _HEX.fullmatch(text):
        return None
    if len(text) == 4:
        return "#" + "".join(c * 2 for c in text[1:])
    return text
