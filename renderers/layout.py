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
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal, assert_never

from ncd import ir
from ncd.diagnostics import Diagnostic, NcdError

from .geometry import (
    EPS,
    LAYER_FRAME,
    LAYER_MARK,
    LAYER_SEPARATOR,
    LAYER_WIRE,
    Anchor,
    Box,
    Circle,
    Diagram,
    Item,
    Path,
    Polygon,
    PortPoint,
    Rect,
    Stroke,
    Text,
)
from .glyphs import (
    THEMES,
    BoxGlyph,
    CupsGlyph,
    JunctionGlyph,
    Theme,
    block_fill,
    card,
    glyph_of,
    hexagon,
    pentagon,
)
from .text import MAX_TITLE_CHARS, Label, Run, elide

# --------------------------------------------------------------------------------------
# Options and constants
# --------------------------------------------------------------------------------------


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
    - `show_params`: draw learned parameters as wires entering their boxes from below.
    - `standalone`: TikZ as a complete LaTeX document (`\\documentclass{standalone}`)
      rather than a `tikzpicture` to paste into one.
    """

    wire_labels: Literal["names", "sizes", "both"] = "names"
    collapse_depth: int | None = None
    expand_calls: bool = False
    theme: Literal["light", "dark", "print"] = "light"
    text: Literal["paths", "text"] = "paths"
    show_params: bool = False
    standalone: bool = False

    def __post_init__(self) -> None:
        if self.wire_labels not in ("names", "sizes", "both"):
            raise ValueError(f"wire_labels must be names, sizes or both, not {self.wire_labels!r}")
        if self.theme not in THEMES:
            raise ValueError(f"theme must be one of {sorted(THEMES)}, not {self.theme!r}")
        if self.text not in ("paths", "text"):
            raise ValueError(f"text must be paths or text, not {self.text!r}")
        if self.collapse_depth is not None and self.collapse_depth < 0:
            raise ValueError("collapse_depth must be None or at least 0")


PITCH = 22.0
"""Vertical distance between neighbouring wires: a label fits between them."""
LABEL_SIZE = 11.0
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


def route_width(dy: float) -> float:
    """Width of a routing column: gentle slopes for long moves, never a kink for short ones."""
    return max(26.0, min(130.0, 18.0 + 0.45 * dy))


# --------------------------------------------------------------------------------------
# Panels
# --------------------------------------------------------------------------------------

Kind = Literal["axis", "dtype", "sep"]


@dataclass(frozen=True)
class Spec:
    """What a wire at a panel edge is: an axis (by name) of array `array`, that array's
    datatype, or the separator before array `array`."""

    kind: Kind
    array: int
    name: str
    label: Label | None


@dataclass(frozen=True)
class End:
    """A wire leaving a panel edge: its height, id and what it carries. `joint`: several
    wires may end here without a dot (a `+`, a box edge)."""

    y: float
    wire: int
    spec: Spec
    joint: bool = False

    def moved(self, dy: float) -> End:
        return End(self.y + dy, self.wire, self.spec, self.joint)


@dataclass(frozen=True)
class Source:
    """Wires that start inside a panel's left zone, on the right edge of a card (a learned
    operand of a contraction), rather than at the panel edge: `count` wires from `first`."""

    label: Label
    first: int
    count: int


@dataclass
class Panel:
    width: float
    left: list[End]
    right: list[End]
    items: list[Item] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    top: float = 0.0
    bottom: float = 0.0
    left_labels: list[Text] = field(default_factory=list)
    """Wire labels in the label zone at the left edge (also in `items`), so that a neighbour
    that already shows the same name right there can drop its copy."""
    right_labels: list[Text] = field(default_factory=list)

    def moved(self, dx: float, dy: float) -> Panel:
        if abs(dx) < 1e-9 and abs(dy) < 1e-9:
            return self
        return Panel(
            self.width,
            [e.moved(dy) for e in self.left],
            [e.moved(dy) for e in self.right],
            [item.moved(dx, dy) for item in self.items],
            [box.moved(dx, dy) for box in self.boxes],
            [anchor.moved(dx, dy) for anchor in self.anchors],
            self.top + dy,
            self.bottom + dy,
            [t.moved(dx, dy) for t in self.left_labels],
            [t.moved(dx, dy) for t in self.right_labels],
        )

    def fit(self) -> Panel:
        """Recompute the vertical extent from everything drawn and every wire end."""
        ys = [e.y for e in self.left] + [e.y for e in self.right]
        top = min(ys, default=0.0)
        bottom = max(ys, default=0.0)
        for item in self.items:
            _, y0, _, y1 = item.bbox()
            top = min(top, y0)
            bottom = max(bottom, y1)
        for box in self.boxes:
            top = min(top, box.y)
            bottom = max(bottom, box.y + box.height)
        self.top, self.bottom = top, bottom
        return self


@dataclass
class Context:
    program: ir.Program
    options: RenderOptions
    theme: Theme
    env: dict[str, int]
    counter: itertools.count
    depth: int = 0
    calls: tuple[str, ...] = ()

    def fresh(self) -> int:
        return next(self.counter)

    def deeper(self, call: str | None = None) -> Context:
        return Context(self.program, self.options, self.theme, self.env, self.counter,
                       self.depth + 1, (*self.calls, call) if call else self.calls)

    def with_depth(self, depth: int) -> Context:
        return Context(self.program, self.options, self.theme, self.env, self.counter, depth,
                       self.calls)

    # -- labels ------------------------------------------------------------------------

    def axis_label(self, axis: ir.Axis) -> Label:
        mode = self.options.wire_labels
        if mode == "names":
            return Label.axis(axis.name)
        value = ir.size_value(axis.size, self.env)
        size = str(value) if value is not None else ir.size_text(axis.size)
        if mode == "sizes":
            return Label.axis(size)
        if size == axis.name:
            return Label.axis(axis.name)
        return Label((*Label.axis(axis.name).runs, Run(" = ", "roman"),
                      *Label.axis(size).runs))

    def dtype_label(self, dtype: ir.Datatype) -> Label:
        if dtype.kind == "N":
            bound = ""
            if dtype.bound is not None:
                value = ir.size_value(dtype.bound, self.env)
                if self.options.wire_labels == "names" or value is None:
                    bound = ir.size_text(dtype.bound)
                else:
                    bound = str(value)
            return Label((Run("\u2115", "roman"),) + (Label.axis(bound).runs if bound else ()))
        return Label.plain({"R": "\u211d", "B": "\U0001d539"}[dtype.kind])


def dtype_shown(array: ir.ArrayType) -> bool:
    """Naturals and booleans always show their datatype wire; reals only when the array has
    no axes (a scalar would otherwise have no wire at all)."""
    return array.dtype.kind != "R" or not array.shape.axes


def array_specs(arrays: Sequence[ir.ArrayType], ctx: Context) -> list[Spec]:
    specs: list[Spec] = []
    for index, array in enumerate(arrays):
        if index:
            specs.append(Spec("sep", index, "", None))
        for axis in array.shape.axes:
            specs.append(Spec("axis", index, axis.name, ctx.axis_label(axis)))
        if dtype_shown(array):
            specs.append(Spec("dtype", index, "", ctx.dtype_label(array.dtype)))
    return specs


def _stroke_for(ctx: Context, kind: Kind | Literal["param"]) -> Stroke:
    theme = ctx.theme
    if kind == "sep":
        return Stroke(theme.separator, 1.1, (4.0, 3.0))
    if kind == "dtype":
        return Stroke(theme.ink, THIN)
    if kind == "param":
        return Stroke(theme.ink, THIN, (2.0, 2.0))
    return Stroke(theme.ink, WIRE)


def wire_path(ctx: Context, spec: Spec, wire: int, start: tuple[float, float],
              segments: Sequence[tuple[float, ...]], free: bool = False) -> Path:
    layer = LAYER_SEPARATOR if spec.kind == "sep" else LAYER_WIRE
    return Path(start, tuple(segments), _stroke_for(ctx, spec.kind), wire=wire, role=spec.kind,
                free_ends=free or spec.kind == "sep", layer=layer)


def curve(x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    """A cubic S-curve from (x0, y0) to (x1, y1), horizontal at both ends."""
    if abs(y1 - y0) < EPS:
        return (x1, y1)
    mid = (x1 - x0) / 2
    return (x0 + mid, y0, x1 - mid, y1, x1, y1)


def text_item(label: Label, x: float, baseline: float, size: float, color: str,
              owner: int | None = None, role: str = "axis") -> Text:
    box = label.measure(size)
    return Text(label, x, baseline, size, color, box.width, box.ascent, box.descent, owner, role)


def arrowhead(ctx: Context, x_tip: float, y: float) -> Polygon:
    return Polygon(((x_tip, y), (x_tip - 5.5, y - 2.6), (x_tip - 5.5, y + 2.6)), ctx.theme.ink,
                   None, layer=LAYER_MARK)


def dot(ctx: Context, x: float, y: float) -> Circle:
    return Circle(x, y, DOT, ctx.theme.ink, None)


def bar(ctx: Context, x: float, y: float) -> Path:
    """The short bar a deleted wire ends in."""
    return Path((x, y - 4.5), ((x, y + 4.5),), Stroke(ctx.theme.ink, 1.6), layer=LAYER_MARK)


def _best_offset(differences: Sequence[float], weights: Sequence[float] | None = None,
                 cost: Callable[[float], float] | None = None) -> float:
    """The vertical shift that makes the most wires straight (`weights`: 1 for a wire that
    counts, 0 for a separator, which only breaks ties). Ties go to the cheapest shift by
    `cost` (a join: the one that keeps the picture lowest), then to the one that keeps the
    topmost wire straight, so that a stack which loses wires closes up towards its top and a
    chain of such steps stays level instead of drifting."""
    if not differences:
        return 0.0
    count: dict[float, int] = {}
    minor: dict[float, int] = {}
    first: dict[float, int] = {}
    for index, d in enumerate(differences):
        key = round(d, 2)
        if weights is None or weights[index] > 0:
            count[key] = count.get(key, 0) + 1
            first.setdefault(key, index)
        else:
            minor[key] = minor.get(key, 0) + 1
    if not count:  # only separators: the most of them straight
        return max(minor.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    best = max(count.items(),
               key=lambda kv: (kv[1], -round(cost(kv[0]), 1) if cost else 0.0,
                               -first[kv[0]], minor.get(kv[0], 0), -kv[0]))
    return best[0]


def _weight(spec: Spec) -> float:
    return 0.0 if spec.kind == "sep" else 1.0


def label_zone_width(specs: Sequence[Spec]) -> float:
    widths = [s.label.measure(LABEL_SIZE).width for s in specs if s.label is not None]
    if not widths:
        return 0.0
    return max(widths) + 2 * ZONE_PAD


# --------------------------------------------------------------------------------------
# Assembling a panel: label zones, routing columns, a core
# --------------------------------------------------------------------------------------


def assemble(ctx: Context, left: Sequence[Spec], in_ids: Sequence[int],
             in_map: Sequence[int | None], core: Panel, out_map: Sequence[int | None],
             right: Sequence[Spec], labels: bool = True, labels_right: bool | None = None,
             align_left: Sequence[int] | None = None, align_right: Sequence[int] | None = None,
             sources: Sequence[Source] = (), skip_left: AbstractSet[float] = frozenset(),
             skip_right: AbstractSet[float] = frozenset(), balance_left: bool = False,
             balance_right: bool = False) -> Panel:
    """Wrap `core` with routing and label zones.

    Left wire k (at the panel's left edge, stacked at the wire pitch) runs to the core's left
    row `in_map[k]` (None: it ends, in a bar for a deleted wire); several wires into one row
    meet at a dot, and a row nobody feeds starts at a dot. Right wire k leaves core row
    `out_map[k]`; a row used twice forks at a dot, a row nobody uses ends in a bar.
    """
    items: list[Item] = []
    anchors: list[Anchor] = []

    # Stack each side at the pitch, shifted so that as many wires as possible run straight.
    chosen_left = [k for k, r in enumerate(in_map)
                   if r is not None and (align_left is None or k in align_left)]
    chosen_right = [k for k, r in enumerate(out_map)
                    if r is not None and (align_right is None or k in align_right)]
    gap = [0.0] * len(left)  # a card's wires keep a wire's gap from the data above them
    for source in sources:
        for k in range(source.first, source.first + source.count):
            gap[k] = PITCH
    base_left = _best_offset([core.left[in_map[k] or 0].y - k * PITCH - gap[k]
                              for k in chosen_left], [_weight(left[k]) for k in chosen_left])
    base_right = _best_offset([core.right[out_map[k] or 0].y - k * PITCH for k in chosen_right],
                              [_weight(right[k]) for k in chosen_right])
    # Balanced: the stack is centred on its rows (a fan-out or a merge, symmetric).
    if balance_left and in_map:
        shifts = [core.left[r].y - k * PITCH for k, r in enumerate(in_map) if r is not None]
        base_left = round(sum(shifts) / len(shifts), 2) if shifts else base_left
    if balance_right and out_map:
        shifts = [core.right[r].y - k * PITCH for k, r in enumerate(out_map) if r is not None]
        base_right = round(sum(shifts) / len(shifts), 2) if shifts else base_right
    y_left = [base_left + k * PITCH for k in range(len(left))]
    y_right = [base_right + k * PITCH for k in range(len(right))]
    sourced: dict[int, float] = {}  # left wire -> x where it leaves its card
    cards: list[tuple[Source, float, float]] = []  # source, card width, card top
    for k in range(len(left)):
        y_left[k] += gap[k]
    for source in sources:
        lb = source.label.measure(TITLE_SIZE)
        cards.append((source, max(26.0, lb.width + 14.0), 0.0))

    labels_left = labels
    labels_right = labels if labels_right is None else labels_right
    zone_left = label_zone_width(left) if labels_left else 0.0
    zone_left = max([zone_left] + [w + 8.0 for _, w, _ in cards])
    for source, card_w, _ in cards:
        for k in range(source.first, source.first + source.count):
            sourced[k] = 4.0 + card_w
    zone_right = label_zone_width(right) if labels_right else 0.0

    # Left routing column.
    feeds: Counter[int] = Counter(r for r in in_map if r is not None)
    moves = [abs(core.left[r].y - y_left[k]) for k, r in enumerate(in_map) if r is not None]
    merging = any(n > 1 and not core.left[r].joint for r, n in feeds.items())
    deleting = any(r is None and s.kind != "sep" for r, s in zip(in_map, left, strict=True))
    starting = any(feeds[r] == 0 and row.spec.kind != "sep" and not row.joint
                   for r, row in enumerate(core.left))
    max_move = max(moves, default=0.0)
    if max_move > EPS or merging:
        width_left = route_width(max_move)
    elif deleting or starting:
        width_left = 12.0
    else:
        width_left = 0.0
    core_x = zone_left + width_left

    for k, (spec, wire, row_index) in enumerate(zip(left, in_ids, in_map, strict=True)):
        y = y_left[k]
        if row_index is None:
            if spec.kind == "sep":
                items.append(wire_path(ctx, spec, wire, (0.0, y), [(zone_left + 6.0, y)]))
            else:
                end = zone_left + 8.0
                items.append(wire_path(ctx, spec, wire, (0.0, y), [(end, y)]))
                items.append(bar(ctx, end, y))
                anchors.append(Anchor(end, y))
            continue
        target = core.left[row_index].y
        segments: list[tuple[float, ...]] = []
        x_start = sourced.get(k, 0.0)
        if zone_left > x_start:
            segments.append((zone_left, y))
        if width_left > 0:
            segments.append(curve(zone_left, y, core_x, target))
        if segments:  # else the core's row starts right at the panel edge
            items.append(wire_path(ctx, spec, wire, (x_start, y), segments))
        if spec.kind == "dtype" and zone_left > 12:
            items.append(arrowhead(ctx, zone_left - 2.0, y))
    for r, row in enumerate(core.left):
        if row.spec.kind == "sep" or row.joint:
            continue
        if feeds[r] > 1 or feeds[r] == 0:
            items.append(dot(ctx, core_x, row.y))
            anchors.append(Anchor(core_x, row.y))

    moved = core.moved(core_x, 0.0)
    items.extend(moved.items)
    anchors.extend(moved.anchors)
    boxes = list(moved.boxes)
    core_end = core_x + core.width

    # Right routing column.
    users: Counter[int] = Counter(r for r in out_map if r is not None)
    moves = [abs(core.right[r].y - y_right[k]) for k, r in enumerate(out_map) if r is not None]
    forking = any(n > 1 for n in users.values())
    discarding = any(users[r] == 0 and row.spec.kind != "sep" for r, row in
                     enumerate(core.right))
    fresh_separators = any(r is None for r in out_map)
    max_move = max(moves, default=0.0)
    if max_move > EPS or forking:
        width_right = route_width(max_move)
    elif discarding or fresh_separators:
        width_right = 12.0
    else:
        width_right = 0.0
    end_x = core_end + width_right
    total = end_x + zone_right

    right_ends: list[End] = []
    for r, row in enumerate(core.right):
        if row.spec.kind == "sep":
            continue
        if users[r] == 0:
            stop = core_end + 8.0
            items.append(wire_path(ctx, row.spec, row.wire, (core_end, row.y), [(stop, row.y)]))
            items.append(bar(ctx, stop, row.y))
            anchors.append(Anchor(stop, row.y))
        elif users[r] > 1:
            items.append(dot(ctx, core_end, row.y))
            anchors.append(Anchor(core_end, row.y))
    for k, (spec, row_index) in enumerate(zip(right, out_map, strict=True)):
        y = y_right[k]
        if row_index is None:
            wire = ctx.fresh()
            start = max(core_end, end_x - 12.0)
            items.append(wire_path(ctx, spec, wire, (start, y), [(total, y)]))
            right_ends.append(End(y, wire, spec))
            continue
        row = core.right[row_index]
        wire = row.wire if users[row_index] == 1 else ctx.fresh()
        segments = []
        if width_right > 0:
            segments.append(curve(core_end, row.y, end_x, y))
        if zone_right > 0:
            segments.append((total, y))
        if segments:
            items.append(wire_path(ctx, spec, wire, (core_end, row.y), segments))
        if spec.kind == "dtype" and zone_right > 12:
            items.append(arrowhead(ctx, total - 3.0, y))
        right_ends.append(End(y, wire, spec))

    for source, card_w, _ in cards:
        ys = y_left[source.first:source.first + source.count]
        height = max(28.0, ys[-1] - ys[0] + 2 * ROW_PAD)
        top = (ys[0] + ys[-1]) / 2 - height / 2
        box_id = ctx.fresh()
        items.extend(card(4.0, top, card_w, height, ctx.theme))
        lb = source.label.measure(TITLE_SIZE)
        items.append(text_item(source.label, 4.0 + (card_w - lb.width) / 2 + 2.0,
                               top + height / 2 + (lb.ascent - lb.descent) / 2, TITLE_SIZE,
                               ctx.theme.text, owner=box_id, role="glyph"))
        ports = tuple(PortPoint(4.0 + card_w, y, in_ids[k], "right")
                      for k, y in zip(range(source.first, source.first + source.count), ys,
                                      strict=True))
        boxes.append(Box(box_id, 4.0, top, card_w, height, "parameter", ports, source.count))

    left_labels: list[Text] = []
    right_labels: list[Text] = []
    if labels_left:
        for k, (spec, y) in enumerate(zip(left, y_left, strict=True)):
            if k in sourced or round(y, 1) in skip_left:
                continue
            if spec.label is not None:
                width = spec.label.measure(LABEL_SIZE).width
                left_labels.append(text_item(spec.label, zone_left - ZONE_PAD - width,
                                             y - LABEL_RAISE, LABEL_SIZE, ctx.theme.text))
    if labels_right:
        for spec, y in zip(right, y_right, strict=True):
            if spec.label is not None and round(y, 1) not in skip_right:
                right_labels.append(text_item(spec.label, end_x + ZONE_PAD, y - LABEL_RAISE,
                                              LABEL_SIZE, ctx.theme.text))
    items.extend(left_labels)
    items.extend(right_labels)
    if core_x < EPS:  # the core's own edge labels are this panel's edge labels
        left_labels.extend(moved.left_labels)
    if zone_right + width_right < EPS:
        right_labels.extend(moved.right_labels)

    left_ends = [End(y, wire, spec) for k, (y, wire, spec)
                 in enumerate(zip(y_left, in_ids, left, strict=True)) if k not in sourced]
    return Panel(total, left_ends, right_ends, items, boxes, anchors,
                 left_labels=left_labels, right_labels=right_labels).fit()


# --------------------------------------------------------------------------------------
# The functor: one function per term kind
# --------------------------------------------------------------------------------------


def layout(term: ir.Term, ctx: Context, in_ids: Sequence[int]) -> Panel:
    match term:
        case ir.Identity():
            return layout_identity(term, ctx, in_ids)
        case ir.Composed():
            return layout_composed(term, ctx, in_ids)
        case ir.Product():
            return layout_product(term, ctx, in_ids)
        case ir.Rearrangement():
            return layout_rearrangement(term, ctx, in_ids)
        case ir.Reindexing():
            return layout_reindexing(term, ctx, in_ids)
        case ir.Broadcasted():
            return layout_broadcasted(term, ctx, in_ids)
        case ir.Block():
            return layout_block(term, ctx, in_ids)
        case ir.Scan():
            return layout_scan(term, ctx, in_ids)
    assert_never(term)


def layout_identity(term: ir.Identity, ctx: Context, in_ids: Sequence[int]) -> Panel:
    specs = array_specs(term.dom, ctx)
    ends = [End(k * PITCH, wire, spec) for k, (wire, spec) in enumerate(zip(in_ids, specs,
                                                                          strict=True))]
    return Panel(0.0, ends, list(ends)).fit()


def join(ctx: Context, first: Panel, second: Panel) -> Panel:
    """`first ; second`: side by side, with a routing column where the wires disagree."""
    differences = [a.y - b.y for a, b in zip(first.right, second.left, strict=True)]
    if differences:
        # Among equally good shifts: first the one that keeps straight the wires passing
        # through `second` unchanged (the main line beside a branch), then the lowest picture.
        passing = {e.wire for e in second.right} & {e.wire for e in second.left}
        through = [d for d, b in zip(differences, second.left, strict=True)
                   if b.wire in passing and b.spec.kind != "sep"]

        def cost(shift: float) -> float:
            straight = sum(1 for d in through if abs(d - shift) < 0.01)
            return -1000.0 * straight + (max(first.bottom, second.bottom + shift)
                                         - min(first.top, second.top + shift))

        dy = _best_offset(differences, [_weight(a.spec) for a in first.right], cost)
    else:
        dy = (first.top + first.bottom) / 2 - (second.top + second.bottom) / 2
    moves = [abs(d - dy) for d in differences]
    width = route_width(max(moves)) if moves and max(moves) > EPS else 0.0
    items = list(first.items)
    placed = second.moved(first.width + width, dy)
    second_items = placed.items
    if width == 0 and first.right_labels and placed.left_labels:
        # Straight through: the name just written on the left need not be written again.
        shown = {(round(t.y, 1), t.label) for t in first.right_labels}
        drop = {t for t in placed.left_labels if (round(t.y, 1), t.label) in shown}
        if drop:
            second_items = [it for it in placed.items if not (isinstance(it, Text)
                                                              and it in drop)]
    for a, b in zip(first.right, second.left, strict=True):
        if width > 0:
            items.append(wire_path(ctx, a.spec, a.wire, (first.width, a.y),
                                   [curve(first.width, a.y, first.width + width, b.y + dy)]))
    items.extend(second_items)
    return Panel(
        first.width + width + second.width, first.left, placed.right, items,
        first.boxes + placed.boxes, first.anchors + placed.anchors,
        min(first.top, placed.top), max(first.bottom, placed.bottom),
        first.left_labels, placed.right_labels if second.width > 0 else first.right_labels,
    )


def layout_composed(term: ir.Composed, ctx: Context, in_ids: Sequence[int]) -> Panel:
    panel: Panel | None = None
    ids = list(in_ids)
    for sub in term.terms:
        next_panel = layout(sub, ctx, ids)
        panel = next_panel if panel is None else join(ctx, panel, next_panel)
        ids = [e.wire for e in panel.right]
    if panel is None:
        return layout_identity(ir.Identity(dom=term.dom, cod=term.cod), ctx, in_ids)
    return panel


def _port_count(arrays: Sequence[ir.ArrayType]) -> int:
    """Wires of a tuple of arrays, separators included."""
    return sum(len(a.shape.axes) + dtype_shown(a) for a in arrays) + max(0, len(arrays) - 1)


def layout_product(term: ir.Product, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """Stack the factors top to bottom; a dashed separator runs between neighbours."""
    panels: list[Panel] = []
    separator_ids: list[int] = []
    position = 0
    for index, sub in enumerate(term.terms):
        if index and sub.dom and any(t.dom for t in term.terms[:index]):
            separator_ids.append(in_ids[position])
            position += 1
        else:
            separator_ids.append(-1)
        count = _port_count(sub.dom)
        panels.append(layout(sub, ctx, in_ids[position:position + count]))
        position += count
    width = max((p.width for p in panels), default=0.0)

    items: list[Item] = []
    boxes: list[Box] = []
    anchors: list[Anchor] = []
    left: list[End] = []
    right: list[End] = []
    left_labels: list[Text] = []
    right_labels: list[Text] = []
    bottom: float | None = None
    for index, panel in enumerate(panels):
        if bottom is not None:
            # Room for the separator between the factors, and the wires on the pitch grid:
            # the first wire of a factor two pitches (or a whole number of pitches) below the
            # last wire above, so that stacks in a chain line up and wires run straight.
            dy = bottom + SEPARATOR_ROOM - panel.top
            if left and panel.left:
                dy = max(dy, left[-1].y + 2 * PITCH - panel.left[0].y)
            if right and panel.right:
                dy = max(dy, right[-1].y + 2 * PITCH - panel.right[0].y)
            grid = left if left and panel.left else right if right and panel.right else None
            if grid is not None:
                ref = panel.left[0].y if grid is left else panel.right[0].y
                steps = math.ceil((ref + dy - grid[-1].y) / PITCH - 1e-6)
                dy = grid[-1].y + steps * PITCH - ref
            panel = panel.moved(0.0, dy)
            has_left = bool(left) and bool(panel.left)
            has_right = bool(right) and bool(panel.right)
            # Midway between the last wire above and the first below (the middle of the
            # pitch grid), kept clear of everything drawn in either factor.
            if grid is not None:
                lower_wire = grid[-1].y
                upper_wire = panel.left[0].y if grid is left else panel.right[0].y
                y_sep = (lower_wire + upper_wire) / 2
            else:
                y_sep = (bottom + panel.top) / 2
            y_sep = min(max(y_sep, bottom + 2.5), panel.top - 2.5)
            if has_left or has_right:
                sep_spec = Spec("sep", index, "", None)
                wire = separator_ids[index] if has_left and separator_ids[index] >= 0 \
                    else ctx.fresh()
                start = 0.0 if has_left else width - 14.0
                stop = width if has_right else 14.0
                items.append(wire_path(ctx, sep_spec, wire, (start, y_sep), [(stop, y_sep)]))
                if has_left:
                    left.append(End(y_sep, wire, sep_spec))
                if has_right:
                    right.append(End(y_sep, wire, sep_spec))
        items.extend(panel.items)
        boxes.extend(panel.boxes)
        anchors.extend(panel.anchors)
        left.extend(panel.left)
        # A narrower factor continues its wires straight to the common right edge.
        for end in panel.right:
            if panel.width < width - EPS:
                items.append(wire_path(ctx, end.spec, end.wire, (panel.width, end.y),
                                       [(width, end.y)]))
            right.append(end)
        bottom = panel.bottom if bottom is None else max(bottom, panel.bottom)
        left_labels.extend(panel.left_labels)
        if panel.width >= width - EPS:
            right_labels.extend(panel.right_labels)
    return Panel(width, left, right, items, boxes, anchors, left_labels=left_labels,
                 right_labels=right_labels).fit()


def layout_rearrangement(term: ir.Rearrangement, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """Copy (a fork at a dot), delete (a bar), permute (crossing curves) whole arrays."""
    left = array_specs(term.dom, ctx)
    right = array_specs(term.cod, ctx)
    rows: list[End] = []
    row_of: dict[tuple[int, Kind, str], int] = {}
    in_map: list[int | None] = []
    # The rows keep the input's stacking (a separator's slot stays empty), so the inputs
    # run straight in and only the outputs move.
    for k, (spec, wire) in enumerate(zip(left, in_ids, strict=True)):
        if spec.kind == "sep":
            in_map.append(None)
            continue
        row_of[(spec.array, spec.kind, spec.name)] = len(rows)
        in_map.append(len(rows))
        rows.append(End(k * PITCH, wire, spec))
    out_map: list[int | None] = []
    for spec in right:
        if spec.kind == "sep":
            out_map.append(None)
        else:
            out_map.append(row_of[(term.mapping[spec.array], spec.kind, spec.name)])
    core = _straight_core(ctx, rows, 8.0 if rows else 0.0)
    # Which wires run straight: a copied array runs into its last copy (in a residual the
    # elaborator puts the carried-along copy last), a permutation keeps its first output
    # level; so the main line of a residual stays level and the branch rises above it.
    uses = Counter(term.mapping)
    if sorted(term.mapping) == list(range(len(term.dom))):
        align = [k for k, spec in enumerate(right) if spec.array == 0]
    elif uses and max(uses.values()) >= 3:  # a fan-out: the input in the middle of its copies
        return assemble(ctx, left, in_ids, in_map, core, out_map, right, labels=False,
                        balance_right=True)
    else:
        align = sorted({r: k for k, r in enumerate(out_map) if r is not None}.values())
    return assemble(ctx, left, in_ids, in_map, core, out_map, right, labels=False,
                    align_right=align)


def _straight_core(ctx: Context, rows: Sequence[End], width: float,
                   right_rows: Sequence[End] | None = None) -> Panel:
    """Rows that run straight across a core (their ids kept)."""
    items: list[Item] = []
    if width > 0:
        for row in rows:
            items.append(wire_path(ctx, row.spec, row.wire, (0.0, row.y), [(width, row.y)]))
    return Panel(width, list(rows), list(rows if right_rows is None else right_rows),
                 items).fit()


# --------------------------------------------------------------------------------------
# Reindexing
# --------------------------------------------------------------------------------------


def _row_kind(eta: ir.StrideMorphism, row: int) -> tuple[str, int | None]:
    """`simple` (reads one output axis), `constant` (a fixed index) or `complex`."""
    coefficients = eta.matrix[row]
    nonzero = [i for i, c in enumerate(coefficients) if c]
    if not nonzero:
        return "constant", None
    if len(nonzero) == 1 and coefficients[nonzero[0]] == 1 and eta.offset[row] == 0:
        return "simple", nonzero[0]
    return "complex", None


def layout_reindexing(term: ir.Reindexing, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """`Y[p] = X[eta(p)]`. Rows of eta that read one output axis are wires (crossing for a
    transpose, meeting at a dot for a diagonal); rows with arithmetic enter a hexagon that
    carries the map (`2p + w`); a fixed index ends its wire in a pentagon."""
    eta = term.eta
    left = array_specs(term.dom, ctx)
    right = array_specs(term.cod, ctx)
    domain = eta.domain.names
    codomain = eta.codomain.names
    kinds = [_row_kind(eta, j) for j in range(len(codomain))]
    hex_rows = [j for j, (kind, _) in enumerate(kinds) if kind == "complex"]
    hex_outputs = sorted({i for j in hex_rows for i, c in enumerate(eta.matrix[j]) if c})
    # A simple row reading an axis the hexagon produces also goes through the hexagon.
    for j, (kind, source) in enumerate(kinds):
        if kind == "simple" and source in hex_outputs and hex_rows:
            hex_rows.append(j)
    hex_rows.sort()

    out_names = [s.name for s in right if s.kind == "axis"]
    # Core rows: the output axes in output order, with the hexagon's outputs kept together
    # so that no other wire runs through the hexagon.
    order: list[str] = []
    for name in out_names:
        index = domain.index(name)
        if index in hex_outputs:
            if not any(domain[i] in order for i in hex_outputs):
                order.extend(domain[i] for i in hex_outputs)
        else:
            order.append(name)

    items: list[Item] = []
    boxes: list[Box] = []
    theme = ctx.theme
    hex_label: Label | None = None
    hex_w = 0.0
    if hex_rows:
        texts = [eta.row_text(j) for j in hex_rows if kinds[j][0] == "complex"]
        hex_label = Label.math(", ".join(texts))
        hex_w = hex_label.measure(LABEL_SIZE).width + 22.0
    constant_rows = [j for j, (kind, _) in enumerate(kinds) if kind == "constant"]
    pent_labels = {j: Label.math(str(eta.offset[j])) for j in constant_rows}
    pent_w = max((lab.measure(LABEL_SIZE).width + 16.0 for lab in pent_labels.values()),
                 default=0.0)
    glyph_w = max(hex_w, pent_w)
    core_w = glyph_w + 2 * CORE_PAD if glyph_w else 10.0
    gx = CORE_PAD

    spec_of = {s.name: s for s in right if s.kind == "axis"}
    dtype_right = [s for s in right if s.kind == "dtype"]
    dtype_left = [s for s in left if s.kind == "dtype"]
    # Codomain row j of eta is the input's axis j (by position: names may repeat, as in the
    # input of a diagonal).
    left_of = [(k, s) for k, s in enumerate(left) if s.kind == "axis"]

    core_left: list[End] = []
    core_right: list[End] = []
    in_map: list[int | None] = [None] * len(left)
    y = 0.0
    hex_inputs = list(hex_rows)
    # The rows top to bottom: output axes in output order, and each fixed index (a pentagon)
    # where its input axis lies, so that the input's wires need not cross to reach them.
    entries: list[tuple[str, str | int]] = []
    for name in order:
        index = domain.index(name)
        if index in hex_outputs:
            if ("hex", "") not in entries:
                entries.append(("hex", ""))
        else:
            entries.append(("plain", name))

    def first_source(entry: tuple[str, str | int]) -> int | None:
        if entry[0] == "hex":
            return min(hex_inputs, default=None)
        index = domain.index(str(entry[1]))
        reads = [j for j, (kind, source) in enumerate(kinds)
                 if kind == "simple" and source == index]
        return min(reads, default=None)

    for j in constant_rows:
        at = next((i for i, e in enumerate(entries) if e[0] != "const"
                   and (first := first_source(e)) is not None and first > j), len(entries))
        entries.insert(at, ("const", j))
    for entry_kind, entry in entries:
        if entry_kind == "const":
            j = int(entry)
            k, spec = left_of[j]
            box_id = ctx.fresh()
            in_map[k] = len(core_left)
            wire = in_ids[k]
            core_left.append(End(y, wire, spec))
            items.append(wire_path(ctx, spec, wire, (0.0, y), [(gx, y)]))
            height = 20.0
            items.extend(pentagon(gx, y - height / 2, pent_w, height, theme))
            lab = pent_labels[j]
            lw = lab.measure(LABEL_SIZE)
            items.append(text_item(lab, gx + 4.0, y + (lw.ascent - lw.descent) / 2, LABEL_SIZE,
                                   theme.text, owner=box_id, role="glyph"))
            boxes.append(Box(box_id, gx, y - height / 2, pent_w, height, "element",
                             (PortPoint(gx, y, wire, "left"),), 1))
            y += PITCH
            continue
        if entry_kind == "hex":
            count = max(len(hex_inputs), len(hex_outputs))
            box_id = ctx.fresh()
            ports: list[PortPoint] = []
            for i, row_index in enumerate(hex_inputs):
                k, spec = left_of[row_index]
                row_y = y + i * PITCH
                in_map[k] = len(core_left)
                wire = in_ids[k]
                core_left.append(End(row_y, wire, spec))
                items.append(wire_path(ctx, spec, wire, (0.0, row_y), [(gx, row_y)]))
                ports.append(PortPoint(gx, row_y, wire, "left"))
            for i, out_index in enumerate(hex_outputs):
                out_name = domain[out_index]
                row_y = y + i * PITCH
                wire = ctx.fresh()
                spec = spec_of[out_name]
                core_right.append(End(row_y, wire, spec))
                items.append(wire_path(ctx, spec, wire, (gx + glyph_w, row_y), [(core_w, row_y)]))
                ports.append(PortPoint(gx + glyph_w, row_y, wire, "right"))
            height = max(24.0, (count - 1) * PITCH + 2 * ROW_PAD)
            top = y + (count - 1) * PITCH / 2 - height / 2
            items.extend(hexagon(gx, top, glyph_w, height, theme))
            assert hex_label is not None
            lw = hex_label.measure(LABEL_SIZE)
            items.append(text_item(hex_label, gx + (glyph_w - lw.width) / 2,
                                   top + height / 2 + (lw.ascent - lw.descent) / 2, LABEL_SIZE,
                                   theme.text, owner=box_id, role="glyph"))
            boxes.append(Box(box_id, gx, top, glyph_w, height, "reindexing", tuple(ports),
                             len(hex_inputs) + len(hex_outputs)))
            y += count * PITCH
            continue
        name = str(entry)
        index = domain.index(name)
        # A plain output axis: fed by every simple row that reads it (a dot if several,
        # a starting dot if none: the output is broadcast along it).
        wire_sources = [j for j, (kind, source) in enumerate(kinds)
                        if kind == "simple" and source == index and j not in hex_rows]
        row_id = in_ids[left_of[wire_sources[0]][0]] if len(wire_sources) == 1 \
            else ctx.fresh()
        spec = spec_of[name]
        row = End(y, row_id, spec)
        for j in wire_sources:
            k, _ = left_of[j]
            in_map[k] = len(core_left)
        core_left.append(row)
        core_right.append(row)
        items.append(wire_path(ctx, spec, row_id, (0.0, y), [(core_w, y)]))
        y += PITCH
    out_map: list[int | None] = []
    by_name = {row.spec.name: r for r, row in enumerate(core_right)}
    for spec in right:
        out_map.append(by_name.get(spec.name) if spec.kind == "axis" else None)
    if dtype_left and dtype_right:
        k = next(k for k, s in enumerate(left) if s.kind == "dtype")
        row = End(y, in_ids[k], dtype_right[0])
        in_map[k] = len(core_left)
        core_left.append(row)
        out_map[next(k for k, s in enumerate(right) if s.kind == "dtype")] = len(core_right)
        core_right.append(row)
        items.append(wire_path(ctx, row.spec, row.wire, (0.0, y), [(core_w, y)]))
    core = Panel(core_w, core_left, core_right, items, boxes).fit()
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)


# --------------------------------------------------------------------------------------
# Broadcasted operations
# --------------------------------------------------------------------------------------


def _degree_of(port: ir.Port, name: str, degree: Sequence[str]) -> str:
    """The degree axis that tiling axis `name` of `port` is read at."""
    codomain = port.reindexing.codomain.names
    if name in codomain:
        row = port.reindexing.matrix[codomain.index(name)]
        nonzero = [i for i, c in enumerate(row) if c]
        if len(nonzero) == 1:
            return port.reindexing.domain.names[nonzero[0]]
        if nonzero:
            # A non-rearranging read (not produced by elaboration): drawn on the band of the
            # first axis it involves.
            return port.reindexing.domain.names[nonzero[0]]
    return name if name in degree else degree[0]


def band_order(term: ir.Broadcasted) -> list[str]:
    """Degree axes top to bottom: as the first output lays them out (its memory order), so
    the output side needs no crossing."""
    degree = list(term.degree.names)
    order: list[str] = []
    for output in term.outputs:
        for name in output.array.names:
            if name in degree and name not in order:
                order.append(name)
    order.extend(n for n in degree if n not in order)
    if isinstance(term.op, ir.EinsumOp) and term.params:
        # A learned operand's card sits under the inputs: the axes only it brings (`o` of
        # `W[o, c, w]`) go last, next to the card, so its wires need not cross the inputs'.
        read = {name for port in term.inputs for name in port.tiling}
        order = [n for n in order if n in read] + [n for n in order if n not in read]
    return order


def expected_ports(term: ir.Broadcasted, options: RenderOptions) -> int:
    """The ports a broadcast's box needs, from the IR alone: each target axis of each input
    and output, each datatype wire the operation consumes or makes, each parameter drawn."""
    def side(ports: Sequence[ir.Port]) -> int:
        count = sum(len(p.targets) + dtype_shown(p.array) for p in ports)
        return count if count else 1  # a scalar operation: the datatype stub
    total = side(term.inputs) + side(term.outputs)
    if options.show_params:
        total += len(term.params)
    return total


def layout_broadcasted(term: ir.Broadcasted, ctx: Context, in_ids: Sequence[int]) -> Panel:
    glyph = glyph_of(term.op)
    left = array_specs(term.dom, ctx)
    right = array_specs(term.cod, ctx)
    band = band_order(term)
    band_index = {name: i for i, name in enumerate(band)}
    degree = list(term.degree.names)

    # Where each left wire goes: a band row (tiling), the operation (target), or nowhere.
    in_band: dict[int, int] = {}
    body_left: list[int] = []  # left wire indices that enter the operation
    for k, spec in enumerate(left):
        if spec.kind == "axis":
            port = term.inputs[spec.array]
            if spec.name in port.targets:
                body_left.append(k)
            else:
                in_band[k] = band_index[_degree_of(port, spec.name, degree)]
        elif spec.kind == "dtype":
            body_left.append(k)
    out_band: dict[int, int] = {}
    body_right: list[int] = []
    for k, spec in enumerate(right):
        if spec.kind == "axis":
            port = term.outputs[spec.array]
            if spec.name in port.targets:
                body_right.append(k)
            else:
                out_band[k] = band_index.get(spec.name, 0)
        elif spec.kind == "dtype":
            body_right.append(k)

    # Band rows: fed by the tiling wires of every input that has the axis.
    feeders: dict[int, list[int]] = {i: [] for i in range(len(band))}
    for k, i in in_band.items():
        feeders[i].append(k)
    band_rows = []
    for i, name in enumerate(band):
        wire = in_ids[feeders[i][0]] if len(feeders[i]) == 1 else ctx.fresh()
        axis = next((a for a in term.degree.axes if a.name == name), None)
        label = ctx.axis_label(axis) if axis is not None else Label.axis(name)
        band_rows.append(End(i * PITCH, wire, Spec("axis", 0, name, label)))

    match glyph:
        case CupsGlyph():
            return _einsum(term, ctx, in_ids, left, right, band_rows, in_band, out_band,
                           body_left)
        case JunctionGlyph():
            return _junction(term, glyph, ctx, in_ids, left, right, band_rows, in_band,
                             out_band)
        case BoxGlyph():
            if (isinstance(term.op, ir.CallOp) and ctx.options.expand_calls
                    and term.op.definition not in ctx.calls):
                try:
                    definition = ctx.program.definition(term.op.definition)
                except KeyError:
                    definition = None
                if definition is not None:
                    return _expanded_call(term, definition, ctx, in_ids, left, right,
                                          band_rows, in_band, out_band, body_left, body_right)
            return _boxed(term, glyph, ctx, in_ids, left, right, band_rows, in_band, out_band,
                          body_left, body_right)
    assert_never(glyph)


def _band_core_items(ctx: Context, band_rows: Sequence[End], width: float) -> list[Item]:
    return [wire_path(ctx, row.spec, row.wire, (0.0, row.y), [(width, row.y)])
            for row in band_rows]


def _maps(left: Sequence[Spec], right: Sequence[Spec], in_band: dict[int, int],
          out_band: dict[int, int], body_in: dict[int, int], body_out: dict[int, int],
          band_count: int) -> tuple[list[int | None], list[int | None]]:
    """Core row indices: band rows first, then the operation's rows."""
    in_map: list[int | None] = []
    for k in range(len(left)):
        if k in in_band:
            in_map.append(in_band[k])
        elif k in body_in:
            in_map.append(band_count + body_in[k])
        else:
            in_map.append(None)
    out_map: list[int | None] = []
    for k in range(len(right)):
        if k in out_band:
            out_map.append(out_band[k])
        elif k in body_out:
            out_map.append(band_count + body_out[k])
        else:
            out_map.append(None)
    return in_map, out_map


def _boxed(term: ir.Broadcasted, glyph: BoxGlyph, ctx: Context, in_ids: Sequence[int],
           left: list[Spec], right: list[Spec], band_rows: list[End], in_band: dict[int, int],
           out_band: dict[int, int], body_left: list[int], body_right: list[int]) -> Panel:
    """A glyph box on the target wires, the tiling band passing above it."""
    theme = ctx.theme
    caption = glyph.caption(term.op, term)
    cap_box = caption.measure(glyph.caption_size) if caption is not None else None
    n_rows = max(len(body_left), len(body_right), 1)
    height = max(glyph.min_height, (n_rows - 1) * PITCH + 2 * ROW_PAD)
    width = glyph.min_width
    if glyph.square:
        width = max(width, height * 0.9 if glyph.shape is not None else height)
    if cap_box is not None:
        width = max(width, cap_box.width + 16.0)
    params = term.params if ctx.options.show_params else ()
    param_labels = [Label.axis(p.name or "W") for p in params]
    param_slot = max((lab.measure(LABEL_SIZE).width + 8.0 for lab in param_labels),
                     default=0.0)
    width = max(width, param_slot * len(params))

    nb = len(band_rows)
    stub_in = not body_left
    stub_out = not body_right
    inline = stub_in and stub_out and nb > 0 and not params
    if inline:
        # A function of the datatype alone (elementwise, scale, dropout on an array with
        # axes): a small box on a short arrowed datatype wire tucked just under the array's
        # bundle, which passes by above, so that it visibly acts on that array.
        height = INLINE_HEIGHT
    y0 = nb * PITCH if nb else 0.0
    box_top = y0 + (n_rows - 1) * PITCH / 2 - height / 2
    if inline:
        box_top = band_rows[-1].y + INLINE_GAP
    elif nb and box_top < band_rows[-1].y + CLEARANCE:
        y0 += band_rows[-1].y + CLEARANCE - box_top
        box_top = y0 + (n_rows - 1) * PITCH / 2 - height / 2

    pad_left = CORE_PAD + (10.0 if stub_in else 0.0)
    pad_right = CORE_PAD + (10.0 if stub_out else 0.0)
    bx = pad_left
    core_w = bx + width + pad_right
    box_id = ctx.fresh()
    items: list[Item] = _band_core_items(ctx, band_rows, core_w)
    ports: list[PortPoint] = []
    anchors: list[Anchor] = []
    core_left = list(band_rows)
    core_right = list(band_rows)
    body_in: dict[int, int] = {}
    body_out: dict[int, int] = {}
    # The operation's input rows, top aligned; a separator between two inputs ends on the box.
    row_y = y0
    for k in body_left:
        spec = left[k]
        wire = in_ids[k]
        body_in[k] = len(core_left) - nb
        core_left.append(End(row_y, wire, spec))
        items.append(wire_path(ctx, spec, wire, (0.0, row_y), [(bx, row_y)]))
        if spec.kind == "dtype":
            items.append(arrowhead(ctx, bx - 1.0, row_y))
        ports.append(PortPoint(bx, row_y, wire, "left"))
        row_y += PITCH
    row_y = y0
    for k in body_right:
        spec = right[k]
        wire = ctx.fresh()
        body_out[k] = len(core_right) - nb
        core_right.append(End(row_y, wire, spec))
        items.append(wire_path(ctx, spec, wire, (bx + width, row_y), [(core_w, row_y)]))
        if spec.kind == "dtype":
            items.append(arrowhead(ctx, core_w - 2.0, row_y))
        ports.append(PortPoint(bx + width, row_y, wire, "right"))
        row_y += PITCH
    centre = box_top + height / 2
    dtype_spec = Spec("dtype", 0, "", None)
    if stub_in:  # a scalar operation: the datatype wire enters it
        wire = ctx.fresh()
        items.append(wire_path(ctx, dtype_spec, wire, (2.0, centre), [(bx, centre)], free=True))
        items.append(arrowhead(ctx, bx - 1.0, centre))
        ports.append(PortPoint(bx, centre, wire, "left"))
    if stub_out:
        wire = ctx.fresh()
        items.append(wire_path(ctx, dtype_spec, wire, (bx + width, centre), [(core_w - 2.0,
                                                                             centre)],
                               free=True))
        items.append(arrowhead(ctx, core_w - 3.0, centre))
        ports.append(PortPoint(bx + width, centre, wire, "right"))
    if glyph.shape is not None:
        items.extend(glyph.shape(bx, box_top, width, height, theme))
    if caption is not None and cap_box is not None:
        cx = bx + width / 2 + glyph.caption_dx * width - cap_box.width / 2
        baseline = centre + (cap_box.ascent - cap_box.descent) / 2
        items.append(text_item(caption, cx, baseline, glyph.caption_size, theme.text,
                               owner=box_id, role="glyph"))
    # Parameters enter from below, each from a small open circle under its name.
    for i, label in enumerate(param_labels):
        px = bx + (i + 0.5) * width / len(params)
        bottom = box_top + height
        wire = ctx.fresh()
        items.append(Path((px, bottom + 14.0), ((px, bottom),), _stroke_for(ctx, "param"),
                          wire=wire, role="param", layer=LAYER_WIRE))
        items.append(Circle(px, bottom + 16.0, 2.2, theme.box_fill, Stroke(theme.ink, 0.9)))
        anchors.append(Anchor(px, bottom + 14.0))
        ports.append(PortPoint(px, bottom, wire, "bottom"))
        lab = label.measure(LABEL_SIZE)
        items.append(text_item(label, px - lab.width / 2, bottom + 20.0 + lab.ascent,
                               LABEL_SIZE, theme.text, role="param"))
    box = Box(box_id, bx, box_top, width, height, term.op.kind, tuple(ports),
              expected_ports(term, ctx.options))
    core = Panel(core_w, core_left, core_right, items, [box], anchors).fit()
    in_map, out_map = _maps(left, right, in_band, out_band, body_in, body_out, nb)
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)


def _junction(term: ir.Broadcasted, glyph: JunctionGlyph, ctx: Context, in_ids: Sequence[int],
              left: list[Spec], right: list[Spec], band_rows: list[End],
              in_band: dict[int, int], out_band: dict[int, int]) -> Panel:
    """Addition and multiplication: the inputs' wires meet at dots on the band, and the
    separators between the inputs run into a `+` (or a dot in a circle) just below."""
    # The main line of a residual (`X = X + f(X)`: the input bound to the result's name) runs
    # on through the junction as the same wire, so a chain keeps it straight.
    main = next((index for index, port in enumerate(term.inputs)
                 if port.name is not None and port.name == term.outputs[0].name), None)
    if main is not None:
        carried = {row: in_ids[k] for k, row in in_band.items() if left[k].array == main}
        band_rows = [End(row.y, carried.get(i, row.wire), row.spec)
                     for i, row in enumerate(band_rows)]
    nb = len(band_rows)
    y_j = nb * PITCH - PITCH * 0.35 if nb else 0.0
    width = 24.0
    cx = 14.0
    items = _band_core_items(ctx, band_rows, width)
    items.extend(glyph.mark(cx, y_j, ctx.theme))
    joint_spec = Spec("sep", 0, "", None)
    joint = End(y_j, ctx.fresh(), joint_spec, joint=True)
    items.append(wire_path(ctx, joint_spec, joint.wire, (0.0, y_j), [(cx - 7.0, y_j)]))
    core_left = [*band_rows, joint]
    body_in = {k: 0 for k, spec in enumerate(left) if spec.kind in ("sep", "dtype")}
    core_right = list(band_rows)
    body_out: dict[int, int] = {}
    for k, spec in enumerate(right):
        if spec.kind == "dtype":  # a scalar sum: its datatype wire leaves the junction
            wire = ctx.fresh()
            body_out[k] = len(core_right) - nb
            core_right.append(End(y_j, wire, spec))
            items.append(wire_path(ctx, spec, wire, (cx + 6.0, y_j), [(width, y_j)], free=True))
    core = Panel(width, core_left, core_right, items, [], [Anchor(cx, y_j)]).fit()
    in_map, out_map = _maps(left, right, in_band, out_band, body_in, body_out, nb)
    # The sum continues its main line straight: the input that is the variable the result
    # is bound to (`X = X + f(X)`).
    if main is not None:
        return assemble(ctx, left, in_ids, in_map, core, out_map, right,
                        align_left=[k for k, s in enumerate(left) if s.array == main])
    # Otherwise the result takes the height of the first input (its wires run straight and
    # the others join it), so a chain of merges stays level instead of drifting.
    return assemble(ctx, left, in_ids, in_map, core, out_map, right,
                    align_left=[k for k, s in enumerate(left) if s.array == 0])


def _einsum(term: ir.Broadcasted, ctx: Context, in_ids: Sequence[int], left: list[Spec],
            right: list[Spec], band_rows: list[End], in_band: dict[int, int],
            out_band: dict[int, int], body_left: list[int]) -> Panel:
    """A contraction: no box. The contracted axes of two operands are joined by a cup, an axis
    summed out of one operand alone ends in a dot. Learned operands are cards at the left
    edge whose wires run like the inputs' (to the band or into a cup)."""
    assert isinstance(term.op, ir.EinsumOp)
    theme = ctx.theme
    nb = len(band_rows)
    y0 = nb * PITCH if nb else 0.0
    degree = list(term.degree.names)
    band_index = {row.spec.name: i for i, row in enumerate(band_rows)}

    # The operands' wires as one list: the inputs (panel edge), then each parameter's (card).
    specs = list(left)
    ids = list(in_ids)
    in_band = dict(in_band)
    contracted_rows = [k for k in body_left if left[k].kind == "axis"]
    sources: list[Source] = []
    first_contracted = [left[k].name for k in contracted_rows]
    for number, param in enumerate(term.params):
        first = len(specs)
        # The card's wires in the order that needs no crossing: its contracted wires first,
        # mirroring the input's so that the cups nest, then its tiling wires by band row.
        def card_order(name: str, param: ir.Port = param) -> tuple[int, int]:
            if name in param.targets:
                at = first_contracted.index(name) if name in first_contracted else -1
                return (0, -at)
            return (1, band_index.get(_degree_of(param, name, degree), 0))

        for name in sorted(param.array.names, key=card_order):
            k = len(specs)
            specs.append(Spec("axis", -1 - number, name, None))
            ids.append(ctx.fresh())
            if name in param.targets:
                contracted_rows.append(k)
            else:
                in_band[k] = band_index.get(_degree_of(param, name, degree), 0)
        sources.append(Source(Label.axis(param.name or "W"), first, len(specs) - first))
    # With the parameters' wires added, a band row may have a different set of feeders.
    feeders: dict[int, list[int]] = {}
    for k, index in in_band.items():
        feeders.setdefault(index, []).append(k)
    band_rows = [End(row.y, ids[feeders[i][0]] if len(feeders.get(i, ())) == 1
                     else (row.wire if len(feeders.get(i, ())) != 1 and row.wire not in in_ids
                           else ctx.fresh()), row.spec)
                 for i, row in enumerate(band_rows)]

    # Rows of contracted axes; later operands list their axes in reverse so cups nest.
    operands: dict[int, list[int]] = {}
    for k in contracted_rows:
        operands.setdefault(specs[k].array, []).append(k)
    order: list[int] = []
    first_names: list[str] = []
    for position, (_, ks) in enumerate(sorted(operands.items(),
                                              key=lambda kv: (kv[0] < 0, abs(kv[0])))):
        if position == 0:
            first_names = [specs[k].name for k in ks]
        else:
            ks = sorted(ks, key=lambda k: -first_names.index(specs[k].name)
                        if specs[k].name in first_names else 0)
        order.extend(ks)
    # A band row only a learned operand feeds (the last ones, see `band_order`) runs under
    # the cups, straight on from the card, and joins the others on the output side.
    # The other band rows stay at the height of the input wires that feed them where the
    # order allows, so those run straight; the cups come after them.
    if term.params and order:
        lowered: list[int] = []
        y_prev = -PITCH
        for i, row in enumerate(band_rows):
            inputs = [k for k in feeders.get(i, ()) if k < len(left)]
            if feeders.get(i) and not inputs:
                lowered.append(i)
                continue
            y_prev = max(min(inputs) * PITCH if inputs else y_prev, y_prev + PITCH)
            band_rows[i] = End(y_prev, row.wire, row.spec)
        y0 = y_prev + PITCH
        for n, i in enumerate(lowered):
            band_rows[i] = End(y0 + (len(order) + n) * PITCH, band_rows[i].wire,
                               band_rows[i].spec)
    core_left = list(band_rows)
    body_in: dict[int, int] = {}
    rows: list[tuple[str, float, int]] = []
    for i, k in enumerate(order):
        y = y0 + i * PITCH
        body_in[k] = len(core_left) - nb
        core_left.append(End(y, ids[k], specs[k]))
        rows.append((specs[k].name, y, ids[k]))

    items: list[Item] = []
    anchors: list[Anchor] = []
    x_cup = 10.0
    max_bulge = 0.0
    for axis in term.op.contracted:
        members = sorted((r for r in rows if r[0] == axis), key=lambda r: r[1])
        if not members:
            continue
        spec = Spec("axis", 0, axis, None)
        if len(members) == 1:
            _, y, wire = members[0]
            items.append(wire_path(ctx, spec, wire, (0.0, y), [(x_cup, y)]))
            items.append(dot(ctx, x_cup, y))
            anchors.append(Anchor(x_cup, y))
            continue
        top, bottom = members[0], members[-1]
        bulge = (bottom[1] - top[1]) * 0.62 + 4.0
        max_bulge = max(max_bulge, bulge)
        if len(members) == 2:
            items.append(wire_path(ctx, spec, top[2], (0.0, top[1]), [
                (x_cup, top[1]),
                (x_cup + bulge, top[1], x_cup + bulge, bottom[1], x_cup, bottom[1]),
                (0.0, bottom[1]),
            ]))
            anchors.append(Anchor(0.0, bottom[1]))
            continue
        # Three or more operands share the axis: all meet at one dot.
        meet = (x_cup + bulge * 0.75, (top[1] + bottom[1]) / 2)
        for _, y, wire in members:
            items.append(wire_path(ctx, spec, wire, (0.0, y),
                                   [(x_cup, y), curve(x_cup, y, meet[0], meet[1])]))
        items.append(dot(ctx, *meet))
        anchors.append(Anchor(*meet))
    core_w = max(x_cup + max_bulge + 12.0, 24.0)

    scale_text = term.op.scale_text or (f"{term.op.scale:g}" if term.op.scale != 1 else None)
    if scale_text:
        label = Label.math(scale_text)
        lb = label.measure(LABEL_SIZE)
        last = rows[-1][1] if rows else (band_rows[-1].y if band_rows else 0.0)
        items.append(text_item(label, 6.0, last + PITCH * 0.45 + lb.ascent, LABEL_SIZE,
                               theme.text, role="caption"))
        core_w = max(core_w, lb.width + 12.0)
    items[:0] = _band_core_items(ctx, band_rows, core_w)
    core = Panel(core_w, core_left, list(band_rows), items, [], anchors).fit()
    in_map, out_map = _maps(specs, right, in_band, out_band, body_in, {}, nb)
    return assemble(ctx, specs, ids, in_map, core, out_map, right, sources=sources)


def _expanded_call(term: ir.Broadcasted, definition: ir.Definition, ctx: Context,
                   in_ids: Sequence[int], left: list[Spec], right: list[Spec],
                   band_rows: list[End], in_band: dict[int, int], out_band: dict[int, int],
                   body_left: list[int], body_right: list[int]) -> Panel:
    """A call drawn as the callee's own diagram, framed and titled with its name; the call's
    batch axes (its tiling axes) run in the band above the frame."""
    assert isinstance(term.op, ir.CallOp)
    inner = ctx.deeper(call=definition.name)
    specs_in = array_specs(definition.domain, inner)
    specs_out = array_specs(definition.codomain, inner)
    index_in = {(s.array, s.kind, s.name): i for i, s in enumerate(specs_in)}
    index_out = {(s.array, s.kind, s.name): i for i, s in enumerate(specs_out)}
    ids = [ctx.fresh() for _ in specs_in]
    body_in: dict[int, int] = {}
    for k in body_left:
        key = (left[k].array, left[k].kind, left[k].name)
        if key in index_in:
            body_in[k] = index_in[key]
            ids[index_in[key]] = in_ids[k]
    for k, spec in enumerate(left):  # separators between inputs continue into the frame
        if spec.kind == "sep" and (spec.array, "sep", "") in index_in:
            body_in[k] = index_in[(spec.array, "sep", "")]
            ids[body_in[k]] = in_ids[k]
    body_out: dict[int, int] = {}
    for k in body_right + [k for k, s in enumerate(right) if s.kind == "sep"]:
        key = (right[k].array, right[k].kind, right[k].name)
        if key in index_out:
            body_out[k] = index_out[key]
    block = ir.Block(dom=definition.domain, cod=definition.codomain,
                     title=elide(definition.name), body=definition.body)
    framed = layout_block(block, inner.with_depth(ctx.depth), ids, collapsible=False)
    nb = len(band_rows)
    if nb:
        framed = framed.moved(0.0, band_rows[-1].y + CLEARANCE + 4.0 - framed.top)
    width = framed.width + 2 * CORE_PAD
    framed = framed.moved(CORE_PAD, 0.0)
    items = _band_core_items(ctx, band_rows, width)
    for end in framed.left:
        items.append(wire_path(ctx, end.spec, end.wire, (0.0, end.y), [(CORE_PAD, end.y)]))
    for end in framed.right:
        items.append(wire_path(ctx, end.spec, end.wire, (width - CORE_PAD, end.y),
                               [(width, end.y)]))
    items.extend(framed.items)
    core = Panel(width, [*band_rows, *framed.left], [*band_rows, *framed.right], items,
                 framed.boxes, framed.anchors).fit()
    in_map, out_map = _maps(left, right, in_band, out_band, body_in, body_out, nb)
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)


# --------------------------------------------------------------------------------------
# Blocks and scans
# --------------------------------------------------------------------------------------


def _collapsed(term: ir.Block | ir.Scan, title: Label, ctx: Context, in_ids: Sequence[int],
               kind: str) -> Panel:
    """A block drawn as one titled box spanning all its wires."""
    theme = ctx.theme
    left = array_specs(term.dom, ctx)
    right = array_specs(term.cod, ctx)
    n = max(len(left), len(right), 1)
    tb = title.measure(TITLE_SIZE)
    height = max(28.0, (n - 1) * PITCH + 2 * ROW_PAD)
    width = max(40.0, tb.width + 18.0)
    box_id = ctx.fresh()
    bx = CORE_PAD
    core_w = width + 2 * CORE_PAD
    items: list[Item] = []
    ports: list[PortPoint] = []
    core_left: list[End] = []
    core_right: list[End] = []
    offset_left = (n - len(left)) * PITCH / 2
    offset_right = (n - len(right)) * PITCH / 2
    for k, spec in enumerate(left):
        y = offset_left + k * PITCH
        wire = in_ids[k]
        core_left.append(End(y, wire, spec, joint=spec.kind == "sep"))
        if spec.kind != "sep":
            items.append(wire_path(ctx, spec, wire, (0.0, y), [(bx, y)]))
            ports.append(PortPoint(bx, y, wire, "left"))
    for k, spec in enumerate(right):
        y = offset_right + k * PITCH
        wire = ctx.fresh()
        core_right.append(End(y, wire, spec))
        if spec.kind != "sep":
            items.append(wire_path(ctx, spec, wire, (bx + width, y), [(core_w, y)]))
            ports.append(PortPoint(bx + width, y, wire, "right"))
    top = (n - 1) * PITCH / 2 - height / 2
    fill = block_fill(theme, ctx.depth, term.color if isinstance(term, ir.Block) else None)
    items.append(Rect(bx, top, width, height, fill, Stroke(theme.ink, 1.2), radius=5.0))
    items.append(text_item(title, bx + (width - tb.width) / 2,
                           top + height / 2 + (tb.ascent - tb.descent) / 2, TITLE_SIZE,
                           theme.text, owner=box_id, role="title"))
    expected = sum(1 for s in left if s.kind != "sep") + sum(1 for s in right if s.kind != "sep")
    box = Box(box_id, bx, top, width, height, kind, tuple(ports), expected)
    core = Panel(core_w, core_left, core_right, items, [box]).fit()
    in_map: list[int | None] = list(range(len(left)))
    out_map: list[int | None] = list(range(len(right)))
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)


def layout_block(term: ir.Block, ctx: Context, in_ids: Sequence[int],
                 collapsible: bool = True) -> Panel:
    depth = ctx.depth + 1
    limit = ctx.options.collapse_depth
    title = Label.plain(term.title)
    if collapsible and limit is not None and depth > limit:
        if term.repeat > 1:
            count = f" \u00d7{term.repeat}"  # the count stays visible after a long title
            title = Label.plain(elide(term.title, MAX_TITLE_CHARS - len(count), "end") + count)
        return _collapsed(term, title, ctx, in_ids, "block")
    inner = ctx.with_depth(depth)
    body = layout(term.body, inner, in_ids)
    return frame(ctx, body, title, term.repeat, block_fill(ctx.theme, depth - 1, term.color),
                 dashed=False)


def frame(ctx: Context, body: Panel, title: Label, repeat: int, fill: str,
          dashed: bool, mark: Label | None = None) -> Panel:
    """A rounded frame round `body` with a title band; thick brackets and `xN` for repeats."""
    theme = ctx.theme
    tb = title.measure(TITLE_SIZE)
    repeat_label = Label.plain(f"\u00d7{repeat}") if repeat > 1 else mark
    rb = repeat_label.measure(TITLE_SIZE) if repeat_label is not None else None
    title_band = tb.ascent + tb.descent + 8.0
    bracket = BRACKET if repeat > 1 else 0.0
    needed = tb.width + 2 * BLOCK_PAD + (rb.width + BLOCK_PAD if rb is not None else 0.0)
    frame_w = max(body.width + 2 * BLOCK_PAD, needed)
    outer = 5.0  # wire visible between the panel edge and the frame
    frame_x = outer + bracket
    body_x = frame_x + (frame_w - body.width) / 2
    width = frame_x * 2 + frame_w
    placed = body.moved(body_x, 0.0)
    frame_top = placed.top - title_band - 2.0
    frame_bottom = placed.bottom + BLOCK_PAD * 0.7
    items: list[Item] = [Rect(frame_x, frame_top, frame_w, frame_bottom - frame_top, fill,
                              Stroke(theme.block_stroke, 0.9, (4.0, 2.5) if dashed else ()),
                              radius=6.0, layer=LAYER_FRAME)]
    for end in placed.left:
        items.append(wire_path(ctx, end.spec, end.wire, (0.0, end.y), [(body_x, end.y)]))
    for end in placed.right:
        items.append(wire_path(ctx, end.spec, end.wire, (body_x + body.width, end.y),
                               [(width, end.y)]))
    items.extend(placed.items)
    title_space = frame_w - (rb.width + BLOCK_PAD if rb is not None else 0.0)
    baseline = frame_top + 4.0 + tb.ascent
    items.append(text_item(title, frame_x + (title_space - tb.width) / 2, baseline, TITLE_SIZE,
                           theme.text, role="title"))
    if rb is not None and repeat_label is not None:
        items.append(text_item(repeat_label, frame_x + frame_w - BLOCK_PAD * 0.6 - rb.width,
                               baseline, TITLE_SIZE, theme.text, role="title"))
    if bracket:
        thick = Stroke(theme.ink, 2.6)
        y0, y1 = frame_top - 3.0, frame_bottom + 3.0
        x0 = outer + 1.0
        x1 = width - outer - 1.0
        items.append(Path((x0 + 6.0, y0), ((x0, y0), (x0, y1), (x0 + 6.0, y1)), thick,
                          layer=LAYER_MARK))
        items.append(Path((x1 - 6.0, y0), ((x1, y0), (x1, y1), (x1 - 6.0, y1)), thick,
                          layer=LAYER_MARK))
    return Panel(width, placed.left, [End(e.y, e.wire, e.spec) for e in placed.right],
                 items, placed.boxes, placed.anchors).fit()


def layout_scan(term: ir.Scan, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """The step inside a dashed frame titled `scan over l`. The carried states feed back:
    each runs from the step's output over the top of the frame, an arrow pointing back, into
    the step's input. The scanned axis of the sequences runs in a band under the frame,
    straight from the inputs to the stacked outputs (a tiling wire: the step never sees it)."""
    depth = ctx.depth + 1
    axis = term.axis.name
    title = Label((Run("scan over ", "roman"), *Label.axis(axis).runs))
    limit = ctx.options.collapse_depth
    if limit is not None and depth > limit:
        return _collapsed(term, title, ctx, in_ids, "scan")
    left = array_specs(term.dom, ctx)
    right = array_specs(term.cod, ctx)
    step_left = array_specs(term.step.dom, ctx)
    step_right = array_specs(term.step.cod, ctx)
    index_in = {(s.array, s.kind, s.name): i for i, s in enumerate(step_left)}
    index_out = {(s.array, s.kind, s.name): i for i, s in enumerate(step_right)}
    band_spec = Spec("axis", 0, axis, ctx.axis_label(term.axis))
    feeders = [k for k, s in enumerate(left)
               if s.kind == "axis" and s.name == axis and s.array >= term.carries]
    band_wire = in_ids[feeders[0]] if len(feeders) == 1 else ctx.fresh()
    band = End(0.0, band_wire, band_spec)
    ids = [ctx.fresh() for _ in step_left]
    body_in: dict[int, int] = {}
    for k, spec in enumerate(left):
        if k in feeders:
            continue
        key = (spec.array, spec.kind, spec.name)
        if key in index_in:
            body_in[k] = index_in[key]
            ids[body_in[k]] = in_ids[k]
    step = layout(term.step, ctx.with_depth(depth), ids)
    mark = Label.plain("\u21bb")
    framed = frame(ctx, step, title, 1, ctx.theme.blocks[depth % len(ctx.theme.blocks)],
                   dashed=True, mark=mark)
    # The recurrence: each carried state leaves the step on the right, forks at a dot and
    # runs back over the top of the frame (an arrow pointing back) into the step's state
    # input on the left; loops nest, the first carry innermost.
    carried = [a for a in range(term.carries)
               if any(e.spec.array == a and e.spec.kind != "sep" for e in framed.left)
               and any(e.spec.array == a and e.spec.kind != "sep" for e in framed.right)]
    pad = CORE_PAD + LOOP_STEP * len(carried) + (4.0 if carried else 0.0)
    framed = framed.moved(pad, LOOP_STEP * len(carried) + 2.0 - framed.top)
    width = framed.width + 2 * pad
    # The sequences come after the carries, so the scanned axis runs under the frame.
    band = End(framed.bottom + CLEARANCE + PITCH * 0.5, band.wire, band.spec)
    items = _band_core_items(ctx, [band], width)
    for end in framed.left:
        items.append(wire_path(ctx, end.spec, end.wire, (0.0, end.y), [(pad, end.y)]))
    for end in framed.right:
        items.append(wire_path(ctx, end.spec, end.wire, (width - pad, end.y),
                               [(width, end.y)]))
    items.extend(framed.items)
    anchors = list(framed.anchors)
    frame_top = framed.top
    for level, array in enumerate(carried):
        y_in = next(e.y for e in framed.left if e.spec.array == array and e.spec.kind != "sep")
        y_out = next(e.y for e in framed.right
                     if e.spec.array == array and e.spec.kind != "sep")
        inset = pad - 4.0 - LOOP_STEP * level
        x_in, x_out = inset, width - inset
        y_top = frame_top - LOOP_STEP * (level + 1) + 1.0
        r = min(4.0, (y_in - y_top) / 2, (y_out - y_top) / 2)
        loop = Path((x_out, y_out), (
            (x_out, y_top + r), (x_out, y_top + r * 0.45, x_out - r * 0.45, y_top, x_out - r,
                                 y_top),
            (x_in + r, y_top), (x_in + r * 0.45, y_top, x_in, y_top + r * 0.45, x_in,
                                y_top + r),
            (x_in, y_in)), Stroke(ctx.theme.ink, THIN), wire=ctx.fresh(), role="dtype",
            layer=LAYER_WIRE)
        items.append(loop)
        mid = (x_in + x_out) / 2
        items.append(Polygon(((mid - 3.0, y_top), (mid + 2.5, y_top - 2.4),
                              (mid + 2.5, y_top + 2.4)), ctx.theme.ink, None, layer=LAYER_MARK))
        for x, y in ((x_in, y_in), (x_out, y_out)):
            items.append(dot(ctx, x, y))
            anchors.append(Anchor(x, y))
    core = Panel(width, [band, *framed.left], [band, *framed.right], items, framed.boxes,
                 anchors).fit()
    in_map: list[int | None] = []
    for k in range(len(left)):
        if k in feeders:
            in_map.append(0)
        else:
            in_map.append(1 + body_in[k] if k in body_in else None)
    out_map: list[int | None] = []
    for spec in right:
        if spec.kind == "axis" and spec.name == axis and spec.array >= term.carries:
            out_map.append(0)
            continue
        key = (spec.array, spec.kind, spec.name)
        out_map.append(1 + index_out[key] if key in index_out else None)
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)


# --------------------------------------------------------------------------------------
# A whole definition
# --------------------------------------------------------------------------------------


def size_environment(program: ir.Program) -> dict[str, int]:
    env: dict[str, int] = {}
    for axis in program.axes:  # in declaration order: later sizes may use earlier ones
        value = ir.size_value(axis.size, env)
        if value is not None:
            env[axis.name] = value
    return env


def expansion_extent(program: ir.Program, name: str,
                     collapse_depth: int | None = None) -> tuple[int, int]:
    """What drawing definition `name` with its calls expanded would draw, computed from the
    call tree without drawing: the number of expanded calls (at most `MAX_EXPANDED_CALLS + 1`:
    the count stops there) and the deepest nesting of frames (blocks, scans, expanded calls).

    It follows the layout's rules: a call is expanded unless its definition is unknown or is
    already being expanded around it, and blocks and scans beyond `collapse_depth` are boxes
    whose contents are not drawn. Each (definition, nesting) is looked at once, without
    recursion, so a long chain of calls or a call tree of exponential size costs time linear
    in the program."""
    definitions = {d.name: d for d in program.definitions}
    cap = MAX_EXPANDED_CALLS + 1

    def key(definition: str, level: int) -> tuple[str, int]:
        # Beyond the collapse depth every block is a box: deeper levels all draw alike.
        return definition, (0 if collapse_depth is None else min(level, collapse_depth + 1))

    def sites(definition: str, level: int) -> tuple[list[tuple[str, int]], int]:
        """The calls in a definition's body (callee, level of its frame) and the deepest
        frame of its own blocks and scans; the body lies at nesting `level`."""
        found: list[tuple[str, int]] = []
        deepest = level
        stack: list[tuple[ir.Term, int]] = [(definitions[definition].body, level)]
        while stack:
            term, at = stack.pop()
            match term:
                case ir.Broadcasted():
                    if isinstance(term.op, ir.CallOp) and term.op.definition in definitions:
                        found.append((term.op.definition, at + 1))
                case ir.Block() | ir.Scan():
                    deeper = at + 1
                    deepest = max(deepest, deeper)
                    if collapse_depth is None or deeper <= collapse_depth:
                        stack.append((term.body if isinstance(term, ir.Block) else term.step,
                                      deeper))
                case ir.Composed() | ir.Product():
                    stack.extend((child, at) for child in reversed(term.terms))
                case ir.Identity() | ir.Rearrangement() | ir.Reindexing():
                    pass
                case _:
                    assert_never(term)
        return found, deepest

    # Per (definition, nesting): (expanded calls, deepest frame relative to the nesting).
    done: dict[tuple[str, int], tuple[int, int]] = {}
    expanding: set[str] = {name}  # the definitions being expanded around the current one
    root_calls, root_deepest = sites(name, 0)
    # Each entry: a definition, its nesting, its calls and deepest own frame, the next call.
    stack: list[tuple[str, int, list[tuple[str, int]], int, int]] = [
        (name, 0, root_calls, root_deepest, 0)]
    while stack:
        current, level, calls, deepest, index = stack[-1]
        if index < len(calls):
            stack[-1] = (current, level, calls, deepest, index + 1)
            callee, at = calls[index]
            if callee not in expanding and key(callee, at) not in done:
                expanding.add(callee)
                stack.append((callee, at, *sites(callee, at), 0))
            continue
        count = 0
        for callee, at in calls:
            if callee in expanding:
                continue  # drawn as a box: the layout never expands a call inside itself
            inner_count, inner_depth = done[key(callee, at)]
            count = min(cap, count + 1 + inner_count)
            deepest = max(deepest, at + inner_depth)
        done[key(current, level)] = (count, deepest - level)
        stack.pop()
        expanding.discard(current)
    count, depth = done[key(name, 0)]
    return count, depth


def check_expansion(program: ir.Program, name: str, options: RenderOptions) -> None:
    """Refuse (E103 at the definition) to draw `name` with its calls expanded when the
    drawing would hold more than `MAX_EXPANDED_CALLS` expanded calls or nest its frames more
    than `MAX_EXPANDED_DEPTH` deep."""
    count, depth = expansion_extent(program, name, options.collapse_depth)
    if count <= MAX_EXPANDED_CALLS and depth <= MAX_EXPANDED_DEPTH:
        return
    definition = program.definition(name)
    callees = [term.op.definition for term in ir.walk(definition.body)
               if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp)]
    shown = f"`{elide(name)}`"
    if count > MAX_EXPANDED_CALLS:
        message = (f"drawn with its calls expanded, {shown} would draw more than "
                   f"{MAX_EXPANDED_CALLS:,} calls (its calls call others, which call others)")
    else:
        message = (f"drawn with its calls expanded, {shown} would nest {depth} frames of calls "
                   f"and blocks inside one another, more than {MAX_EXPANDED_DEPTH}")
    hint = "draw it without expanding calls (leave out `--expand`)"
    if callees:
        hint += f", or draw a definition it calls, such as `{elide(callees[0])}`, on its own"
    raise NcdError([Diagnostic("E103", message, definition.span, hint=hint)])


def layout_definition(program: ir.Program, name: str,
                      options: RenderOptions | None = None) -> Diagram:
    """The diagram of definition `name`: its body between labelled input and output wires.
    With `expand_calls`, a drawing too large or too deep is refused first (`NcdError`, E103)."""
    options = options or RenderOptions()
    definition = program.definition(name)
    if options.expand_calls:
        check_expansion(program, name, options)
    ctx = Context(program, options, THEMES[options.theme], size_environment(program),
                  itertools.count(1), calls=(definition.name,))
    left = array_specs(definition.domain, ctx)
    right = array_specs(definition.codomain, ctx)
    in_ids = [ctx.fresh() for _ in left]
    body = layout(definition.body, ctx, in_ids)
    # Label the diagram's own inputs and outputs at its edges, unless the body already does.
    panel = assemble(ctx, left, in_ids, list(range(len(left))), body,
                     list(range(len(right))), right,
                     skip_left={round(t.y + LABEL_RAISE, 1) for t in body.left_labels},
                     skip_right={round(t.y + LABEL_RAISE, 1) for t in body.right_labels})
    if not panel.items and not panel.left:
        panel = Panel(40.0, [], [], top=0.0, bottom=20.0)
    dy = MARGIN - panel.top
    placed = panel.moved(0.0, dy)
    height = panel.bottom - panel.top + 2 * MARGIN
    return Diagram(
        width=round(placed.width, 2), height=round(height, 2),
        background=ctx.theme.background, items=tuple(placed.items), boxes=tuple(placed.boxes),
        anchors=tuple(placed.anchors), title=elide(definition.name),
    )
