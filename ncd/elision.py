"""How long a name or a title may be in any output, and how a longer one is cut.

Every output that shows text from the source (the diagram's labels, the graphviz overview's
labels) bounds it the same way, so its size does not grow with the length of the names in the
input: a name longer than `MAX_NAME_CHARS` keeps its start and its end around an ellipsis, a
title or formula longer than `MAX_TITLE_CHARS` is cut with one (`elide`). `spaced`, `listed`
and `formula` write the common cases: axis names side by side, axis names in a list, an index
map or a scale factor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

MAX_NAME_CHARS = 40
"""The most characters of a name drawn (axis, variable, parameter and definition names, sizes):
a longer one is drawn as its first and last characters around an ellipsis."""
MAX_TITLE_CHARS = 80
"""The most characters of a title drawn (block titles, formulas such as index maps and scale
factors): a longer title is cut and ends in an ellipsis, a longer formula loses its middle."""
ELLIPSIS = "\u2026"

Elision = Literal["middle", "end"]


def elide(text: str, limit: int = MAX_NAME_CHARS, where: Elision = "middle") -> str:
    """`text` if it has at most `limit` characters, else `limit` characters of it with an
    ellipsis in the middle (`where="middle"`: start and end stay) or at the end."""
    if len(text) <= limit:
        return text
    head, tail = elision_split(limit, where)
    return text[:head] + ELLIPSIS + (text[len(text) - tail:] if tail else "")


def elision_split(limit: int, where: Elision) -> tuple[int, int]:
    """How many characters stay before and after the ellipsis."""
    if limit < 1:
        raise ValueError(f"an elision limit is at least 1, got {limit}")
    keep = limit - 1
    head = keep if where == "end" else (keep + 1) // 2
    return head, keep - head


def spaced(names: Iterable[str]) -> str:
    """Names side by side, each bounded: `h k`."""
    return " ".join(elide(name) for name in names)


def listed(names: Iterable[str]) -> str:
    """Names in a list, each bounded: `x, y`."""
    return ", ".join(elide(name) for name in names)


def formula(text: str) -> str:
    """A formula (an index map, a scale factor) bounded as a title: `(b, p, w) -> (b, 2*p + w)`."""
    return elide(text, MAX_TITLE_CHARS)
