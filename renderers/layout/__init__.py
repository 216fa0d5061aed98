"""Layout: a structure-preserving map from IR terms to geometry.

Every term becomes a `Panel`: a width, a vertical extent, the wires that leave its left and
right edges (one per axis, a thin datatype wire where the datatype is shown, a dashed
separator between the arrays of a tuple) and the items drawn inside it. The construction
rules of the term are the construction rules of the picture:

- `composed` places panels left to right, with a routing column of cubic curves wherever the
  wire heights of neighbours disagree;
- `product` stacks panels, with a dashed separator between them;
- `broadcasted` puts the base operation's glyph on its target wires and runs the tiling wires
  straight past it in a band above, meeting at a dot where several inputs share a degree axis;
- `rearrangement` and rearranging `reindexing`s are routing (forks at dots, bars, crossings);
  other reindexings are a hexagon carrying the index map;
- `block` frames its body (title, colour, brackets for xN), or collapses into one box;
- `scan` frames its step, loops its carried states back over the frame, and runs the
  scanned axis of the sequences under it.

Wire ids are threaded through the layout (a panel is laid out knowing the ids of the wires that
enter it), so every drawn piece of a wire carries the id of the wire it belongs to and the
geometry can be validated. Text is measured before it is placed, so boxes grow to fit labels.

The package is split along those seams:

- `options`: `RenderOptions` and the measures every part shares (pitch, sizes, paddings);
- `context`: what a layout knows as it runs (program, options, theme, known sizes, fresh
  wire ids, nesting) and how it labels wires;
- `panels`: the `Panel` every term becomes, what a wire at its edge carries, and the
  primitives drawn in it (wires, dots, bars, arrowheads, labels);
- `routing`: label zones and routing columns round a panel's core (`assemble`), two panels
  side by side (`join`);
- `terms`: the dispatch on the term kind and the kinds that nest terms (composition,
  product, block, scan, a call drawn expanded);
- `order`: the stacking order of a composition's products, chosen to cross fewer wires;
- `rewiring`: rearrangements and reindexings; `broadcast`: broadcasted operations;
- `frames`: block and scan frames, and collapsed boxes;
- `extent`: the size of a drawing with its calls expanded, and its limits;
- `replay`: a term of a form already laid out in the diagram (a long chain's repeated
  statements) given a copy of that panel, its wire ids put right;
- `definition`: the entry point, `layout_definition`.
"""

from __future__ import annotations

from .context import Context, size_environment
from .definition import layout_definition
from .extent import check_expansion, expansion_extent
from .options import (
    BLOCK_PAD,
    BRACKET,
    CLEARANCE,
    CORE_PAD,
    DOT,
    INLINE_GAP,
    INLINE_HEIGHT,
    LABEL_RAISE,
    LABEL_SIZE,
    LOOP_STEP,
    MARGIN,
    MAX_EXPANDED_CALLS,
    MAX_EXPANDED_DEPTH,
    PITCH,
    ROW_PAD,
    SEPARATOR_ROOM,
    THIN,
    TITLE_SIZE,
    WIRE,
    ZONE_PAD,
    RenderOptions,
)
from .panels import End, Panel, Spec
from .terms import layout

__all__ = [
    "BLOCK_PAD",
    "BRACKET",
    "CLEARANCE",
    "CORE_PAD",
    "DOT",
    "INLINE_GAP",
    "INLINE_HEIGHT",
    "LABEL_RAISE",
    "LABEL_SIZE",
    "LOOP_STEP",
    "MARGIN",
    "MAX_EXPANDED_CALLS",
    "MAX_EXPANDED_DEPTH",
    "PITCH",
    "ROW_PAD",
    "SEPARATOR_ROOM",
    "THIN",
    "TITLE_SIZE",
    "WIRE",
    "ZONE_PAD",
    "Context",
    "End",
    "Panel",
    "RenderOptions",
    "Spec",
    "check_expansion",
    "expansion_extent",
    "layout",
    "layout_definition",
    "size_environment",
]
