"""Panels: what every term is laid out into (a width, a vertical extent, the wires that leave
its left and right edges, the items drawn inside), what a wire at an edge carries (`Spec`),
and the primitives drawn in panels: wires, curves, dots, bars, arrowheads, labels."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import copysign
from typing import Literal

from ncd import ir

from ..geometry import (
    EPS,
    LAYER_MARK,
    LAYER_SEPARATOR,
    LAYER_WIRE,
    AnchorEntry,
    BoxEntry,
    Circle,
    Drawn,
    Loop,
    MovedBoxes,
    Path,
    Polygon,
    Stroke,
    Text,
    group,
    moved_anchors,
    moved_boxes,
    quick_init,
)
from ..text import Label
from .context import Context
from .options import DOT, LABEL_SIZE, THIN, WIRE, ZONE_PAD

Kind = Literal["axis", "dtype", "sep"]


@quick_init
@dataclass(frozen=True, slots=True)
class Spec:
    """What a wire at a panel edge is: an axis (by name) of array `array`, that array's
    datatype, or the separator before array `array`."""

    kind: Kind
    array: int
    name: str
    label: Label | None


@quick_init
@dataclass(frozen=True, slots=True)
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


@dataclass(slots=True)
class Panel:
    width: float
    left: list[End]
    right: list[End]
    items: list[Drawn] = field(default_factory=list)
    """What the panel draws; the items of a moved panel in a `Group`."""
    boxes: list[BoxEntry] = field(default_factory=list)
    """The boxes drawn; those of a moved panel in a `MovedBoxes` (anchors alike)."""
    anchors: list[AnchorEntry] = field(default_factory=list)
    top: float = 0.0
    bottom: float = 0.0
    left_labels: list[Text] = field(default_factory=list)
    """Wire labels in the label zone at the left edge (also in `items`), so that a neighbour
    that already shows the same name right there can drop its copy."""
    right_labels: list[Text] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    """The feedback loops of scans drawn in the panel, for validation."""

    def moved(self, dx: float, dy: float, *, left_labels: bool = True,
              right_labels: bool = True) -> Panel:
        """The panel moved by (dx, dy). `left_labels`, `right_labels`: whether the caller
        reads its edge labels (without, the moved panel lists none: moving a label makes a
        new one, and most moves, a long chain's joins among them, drop them)."""
        if abs(dx) < 1e-9 and abs(dy) < 1e-9:
            return self
        return Panel(
            self.width,
            ends_moved(self.left, dy),
            ends_moved(self.right, dy),
            group(self.items, dx, dy),
            moved_boxes(self.boxes, dx, dy),
            moved_anchors(self.anchors, dx, dy),
            self.top + dy,
            self.bottom + dy,
            _texts_moved(self.left_labels, dx, dy) if left_labels else [],
            _texts_moved(self.right_labels, dx, dy) if right_labels else [],
            [loop.moved(dx, dy) for loop in self.loops],
        )

    def fit(self) -> Panel:
        """Recompute the vertical extent from everything drawn and every wire end."""
        ys = [e.y for e in self.left] + [e.y for e in self.right]
        top = min(ys, default=0.0)
        bottom = max(ys, default=0.0)
        for item in self.items:
            if type(item) is Path and len(item.segments) == 1 and len(item.segments[0]) == 2:
                # a straight wire, the most common item: its `y_extent`, without the call
                a, b = item.start[1], item.segments[0][1]
                y0, y1 = (b if b < a else a), (b if b > a else a)
            else:
                y0, y1 = item.y_extent()
            if y0 < top:
                top = y0
            if y1 > bottom:
                bottom = y1
        for box in self.boxes:
            if isinstance(box, MovedBoxes):
                y0, y1 = box.y_extent()
                top, bottom = min(top, y0), max(bottom, y1)
            else:
                top = min(top, box.y)
                bottom = max(bottom, box.y + box.height)
        self.top, self.bottom = top, bottom
        return self


def _texts_moved(texts: list[Text], dx: float, dy: float) -> list[Text]:
    """`texts` moved by (dx, dy), as `Text.moved` moves each (inlined: a call per label)."""
    if not texts:
        return []
    return [Text(t.label, t.x + dx, t.y + dy, t.size, t.color, t.width, t.ascent, t.descent,
                 t.owner, t.role, t.layer, t.wire) for t in texts]


def ends_moved(ends: list[End], dy: float) -> list[End]:
    """`ends` moved down by `dy`. A move across (`dy` zero) keeps each end as it is: adding
    -0.0 changes no height, and adding +0.0 only a negative zero, which is moved as before."""
    if dy == 0.0:
        if copysign(1.0, dy) < 0.0:
            return list(ends)
        return [e if e.y != 0.0 or copysign(1.0, e.y) > 0.0 else e.moved(dy) for e in ends]
    return [End(e.y + dy, e.wire, e.spec, e.joint) for e in ends]  # (`End.moved`, inlined)


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


def stroke_for(ctx: Context, kind: Kind | Literal["param"]) -> Stroke:
    theme = ctx.theme
    if kind == "sep":
        return _stroke(theme.separator, 1.1, (4.0, 3.0))
    if kind == "dtype":
        return _stroke(theme.ink, THIN)
    if kind == "param":
        return _stroke(theme.ink, THIN, (2.0, 2.0))
    return _stroke(theme.ink, WIRE)


@functools.cache
def _stroke(color: str, width: float, dash: tuple[float, ...] = ()) -> Stroke:
    """One stroke of each kind, shared by the wires drawn with it (a stroke is a value)."""
    return Stroke(color, width, dash)


def wire_path(ctx: Context, spec: Spec, wire: int, start: tuple[float, float],
              segments: Sequence[tuple[float, ...]], free: bool = False) -> Path:
    layer = LAYER_SEPARATOR if spec.kind == "sep" else LAYER_WIRE
    return Path(start, tuple(segments), stroke_for(ctx, spec.kind), wire=wire, role=spec.kind,
                free_ends=free or spec.kind == "sep", layer=layer)


def curve(x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    """A cubic S-curve from (x0, y0) to (x1, y1), horizontal at both ends."""
    if abs(y1 - y0) < EPS:
        return (x1, y1)
    mid = (x1 - x0) / 2
    return (x0 + mid, y0, x1 - mid, y1, x1, y1)


def text_item(label: Label, x: float, baseline: float, size: float, color: str,
              owner: int | None = None, role: str = "axis", wire: int | None = None) -> Text:
    box = label.measure(size)
    return Text(label, x, baseline, size, color, box.width, box.ascent, box.descent, owner, role,
                wire=wire)


def arrowhead(ctx: Context, x_tip: float, y: float) -> Polygon:
    return Polygon(((x_tip, y), (x_tip - 5.5, y - 2.6), (x_tip - 5.5, y + 2.6)), ctx.theme.ink,
                   None, layer=LAYER_MARK)


def dot(ctx: Context, x: float, y: float) -> Circle:
    return Circle(x, y, DOT, ctx.theme.ink, None)


def bar(ctx: Context, x: float, y: float) -> Path:
    """The short bar a deleted wire ends in."""
    return Path((x, y - 4.5), ((x, y + 4.5),), Stroke(ctx.theme.ink, 1.6), layer=LAYER_MARK)


def label_zone_width(specs: Sequence[Spec]) -> float:
    widths = [s.label.measure(LABEL_SIZE).width for s in specs if s.label is not None]
    if not widths:
        return 0.0
    return max(widths) + 2 * ZONE_PAD


def straight_core(ctx: Context, rows: Sequence[End], width: float,
                   right_rows: Sequence[End] | None = None) -> Panel:
    """Rows that run straight across a core (their ids kept)."""
    items: list[Drawn] = []
    if width > 0:
        for row in rows:
            items.append(wire_path(ctx, row.spec, row.wire, (0.0, row.y), [(width, row.y)]))
    return Panel(width, list(rows), list(rows if right_rows is None else right_rows),
                 items).fit()


def band_core_items(ctx: Context, band_rows: Sequence[End], width: float) -> list[Drawn]:
    return [wire_path(ctx, row.spec, row.wire, (0.0, row.y), [(width, row.y)])
            for row in band_rows]
