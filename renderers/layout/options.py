"""How a definition is drawn (`RenderOptions`) and the measures every part of the layout
shares: the wire pitch, label sizes, paddings, stroke widths, and the limits on expanding
calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ncd import ir

from ..annotate import BoxNote, Legend
from ..glyphs import THEMES

if TYPE_CHECKING:
    from .lens import LensView


@dataclass(frozen=True)
class RenderOptions:
    """How a definition is drawn.

    - `wire_labels`: axis names, their sizes (once fixed), or both.
    - `collapse_depth`: blocks nested deeper than this become one titled box (0: every block
      is a box; None: nothing collapses).
    - `expand_calls`: draw a call of a user definition as that definition's diagram, framed
      and titled with its name, instead of one named box. A drawing that would expand more
      than `MAX_EXPANDED_CALLS` calls, or nest more than `MAX_EXPANDED_DEPTH` frames, is
      refused (`NcdError`, E103 at the definition).
    - `theme`: `light`, `dark`, or `print` (greyscale-safe).
    - `text`: labels as glyph outlines (`paths`, the same everywhere) or real `<text>`.
    - `show_params`: draw learned parameters as wires entering their boxes from below. The
      bias of `linear[..., bias]` is drawn so always, and a parameter added to or multiplied
      with an array always as a card (operands the glyph does not stand for).
    - `standalone`: TikZ as a complete LaTeX document (`\\documentclass{standalone}`)
      rather than a `tikzpicture` to paste into one.
    - `notes`, `legend`: figures drawn on the boxes and under the drawing (`--annotate cost`,
      `renderers.annotate.cost_notes`).
    - `width`: a width budget in px (None: none). A composition wider than it breaks onto
      several rows, one under another; the wires that cross a break end at a numbered mark,
      labelled, and the next row starts from the same mark with the same labels. The
      default, 880 px, prints an 11 px label at 6 pt on a page 170 mm wide. With
      `expand_calls`, a drawing that wrapping cannot bring within the budget has its
      deepest calls folded into their boxes, a level at a time, until it fits.
    - `lens`: draw a derivative's `forward` and `backward` blocks as a lens (`layout/lens.py`:
      the backward block mirrored under the forward one, the saved values marked), from
      what `ncd.derivative` says of it (`LensView.of(backward)`).
    """

    wire_labels: Literal["names", "sizes", "both"] = "names"
    collapse_depth: int | None = None
    expand_calls: bool = False
    theme: Literal["light", "dark", "print"] = "light"
    text: Literal["paths", "text"] = "paths"
    show_params: bool = False
    standalone: bool = False
    notes: tuple[BoxNote, ...] = ()
    legend: Legend | None = None
    width: float | None = 880.0
    lens: LensView | None = None

    def note(self, term: ir.Broadcasted) -> BoxNote | None:
        """The figures to draw on an operation's box, if any."""
        if not self.notes or term.span is None:
            return None
        key = (term.span.line, term.span.column, term.op.kind)
        return next((note for note in self.notes if note.key == key), None)

    def __post_init__(self) -> None:
        if self.wire_labels not in ("names", "sizes", "both"):
            raise ValueError(f"wire_labels must be names, sizes or both, not {self.wire_labels!r}")
        if self.theme not in THEMES:
            raise ValueError(f"theme must be one of {sorted(THEMES)}, not {self.theme!r}")
        if self.text not in ("paths", "text"):
            raise ValueError(f"text must be paths or text, not {self.text!r}")
        if self.collapse_depth is not None and self.collapse_depth < 0:
            raise ValueError("collapse_depth must be None or at least 0")
        if self.width is not None and not self.width >= MIN_WIDTH:
            raise ValueError(f"width must be None or at least {MIN_WIDTH:g} px, not {self.width}")


MIN_WIDTH = 200.0
"""The narrowest width budget (`RenderOptions.width`)."""
BREAK_MARK = 22.0
"""Room for the numbered mark at either end of a row break."""
EDGE_ZONE = 30.0
"""What a budget keeps for the label zone at either edge of a diagram."""
ROW_GAP = 26.0
"""Vertical space between two rows of a wrapped composition."""
PITCH = 22.0
"""Vertical distance between neighbouring wires: a label fits between them."""
LABEL_SIZE = 11.0
NOTE_SIZE = 8.0
"""The figures drawn on a box (`--annotate cost`)."""
NOTE_LINE = 10.0
TITLE_SIZE = 12.0
LABEL_RAISE = 4.5
"""Baseline of a wire label above its wire."""
ZONE_PAD = 4.0
"""Space either side of a wire label in a label zone."""
ROW_PAD = 11.0
"""How far a box reaches above its first wire and below its last."""
CLEARANCE = 5.0
"""Least distance between a box and a wire that passes it by."""
CORE_PAD = 8.0
"""Straight wire between a box and the routing on either side."""
SEPARATOR_ROOM = 8.0
"""Least vertical room between two stacked factors: the dashed separator runs in it."""
LOOP_STEP = 6.0
"""Spacing of the nested loops that feed a scan's carried states back."""
INLINE_HEIGHT = 15.0
"""Height of the box of a function of the datatype alone, drawn under its array's bundle."""
INLINE_GAP = 4.0
"""Gap between the last wire of a bundle and the inline box under it."""
WIRE = 1.3
THIN = 0.9
DOT = 2.7
MARGIN = 10.0
BLOCK_PAD = 10.0
BRACKET = 9.0


MAX_EXPANDED_CALLS = 2_000
"""With `expand_calls`: the most calls one diagram draws expanded, counted over the whole
call tree (a definition that calls another twice, which calls another twice, ... doubles it
at every level)."""
MAX_EXPANDED_DEPTH = 64
"""With `expand_calls`: the most frames (blocks, scans and expanded calls) nested inside
one another, as deep as brackets may nest in a file."""
