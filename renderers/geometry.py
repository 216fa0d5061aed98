"""The geometry of a neural circuit diagram: pure data, and the checks a figure must pass.

The layout (`layout/`) turns an IR term into a `Diagram`; the emitters (`svg.py`,
`tikz.py`) only draw its primitives. Nothing here knows about the IR: a diagram is lines,
cubic paths, rectangles, polygons, circles and labels, with the bookkeeping that lets
`Diagram.validate` check the rules of the visual grammar (no label over a label or a box, no
wire through a box it does not enter, every wire end on a port).

Coordinates are SVG user units (px), x to the right and y down. Every item can be moved
(`moved`), so a panel is laid out in its own frame and translated into place, as a string
diagram library composes pictures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from itertools import pairwise
from math import copysign
from operator import attrgetter
from typing import Any, Literal, TypeVar

from .text import Label

Point = tuple[float, float]
BBox = tuple[float, float, float, float]
"""(x0, y0, x1, y1) with x0 <= x1 and y0 <= y1."""

Segment = tuple[float, ...]
"""A path segment from the current point: `(x, y)` a straight line, or
`(x1, y1, x2, y2, x, y)` a cubic Bezier curve with two control points."""

WireRole = Literal["axis", "dtype", "sep", "param"]
"""What a wire path carries: an axis, a datatype (thin, with arrowheads), the dashed
separator between the arrays of a tuple, or a learned parameter."""

Layer = int
"""Drawing order: lower layers are drawn first (block fills under wires, text on top)."""
LAYER_FRAME, LAYER_SEPARATOR, LAYER_WIRE, LAYER_BOX, LAYER_MARK, LAYER_TEXT = range(6)

EPS = 0.05
"""Tolerance when comparing coordinates (they are rounded to hundredths when emitted)."""

_Frozen = TypeVar("_Frozen")


def quick_init(cls: type[_Frozen]) -> type[_Frozen]:
    """`cls` (a frozen dataclass with slots) with an `__init__` that fills each slot through
    its descriptor. The one `dataclass` writes calls `object.__setattr__` by name for every
    field, and a large diagram makes hundreds of thousands of these values: this one takes
    about half the time. The instances stay frozen (assigning a field still raises)."""
    # The written `__init__` does only what `dataclass` would: no `__post_init__` to call.
    assert not hasattr(cls, "__post_init__"), cls.__name__
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    parameters: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]
        assert f.init and f.default_factory is MISSING, f"{cls.__name__}.{f.name}"
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            parameters.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _set_{name}(self, {name})\n" for name in names) or "    pass\n"
    source = f"def __init__(self, {', '.join(parameters)}):\n{body}"
    exec(compile(source, f"<{cls.__name__}.__init__>", "exec"), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@quick_init
@dataclass(frozen=True, slots=True)
class Stroke:
    color: str
    width: float
    dash: tuple[float, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class Path:
    """A polyline/Bezier path. A wire path has a `wire` id and a `role`; a decoration (the
    fold of a card, a bracket) has `wire=None`. `free_ends` marks wires that may end in the
    open (a separator that stops, a local datatype stub)."""

    start: Point
    segments: tuple[Segment, ...]
    stroke: Stroke | None
    fill: str | None = None
    closed: bool = False
    wire: int | None = None
    role: WireRole | None = None
    free_ends: bool = False
    layer: Layer = LAYER_WIRE

    @property
    def end(self) -> Point:
        last = self.segments[-1] if self.segments else self.start
        return (last[-2], last[-1])

    def moved(self, dx: float, dy: float) -> Path:
        # (one comprehension, no helper call per segment: a wire is moved a few times)
        return Path(
            (self.start[0] + dx, self.start[1] + dy),
            tuple([(s[0] + dx, s[1] + dy) if len(s) == 2 else
                   (s[0] + dx, s[1] + dy, s[2] + dx, s[3] + dy, s[4] + dx, s[5] + dy)
                   for s in self.segments]),
            self.stroke, self.fill, self.closed, self.wire, self.role, self.free_ends,
            self.layer,
        )

    def polyline(self, steps: int = 12) -> list[Point]:
        """The path flattened to points (cubics sampled `steps` times), for hit tests."""
        points = [self.start]
        x0, y0 = self.start
        for seg in self.segments:
            if len(seg) == 2:
                points.append((seg[0], seg[1]))
            else:
                x1, y1, x2, y2, x3, y3 = seg
                for i in range(1, steps + 1):
                    t = i / steps
                    u = 1 - t
                    points.append((
                        u * u * u * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t * t * t * x3,
                        u * u * u * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t * t * t * y3,
                    ))
            x0, y0 = points[-1]
        return points

    def bbox(self) -> BBox:
        xs = [self.start[0]]
        ys = [self.start[1]]
        for seg in self.segments:  # the control polygon contains the curve
            xs.extend(seg[0::2])
            ys.extend(seg[1::2])
        return (min(xs), min(ys), max(xs), max(ys))

    def y_extent(self) -> tuple[float, float]:
        """The top and bottom of `bbox` (what a panel's extent needs), without the xs."""
        segments = self.segments
        if len(segments) == 1 and len(segments[0]) == 2:  # a straight wire, the most common
            a, b = self.start[1], segments[0][1]
            # as min and max choose: the first of equal values
            return (b if b < a else a), (b if b > a else a)
        ys = [self.start[1]]
        for seg in segments:
            ys += seg[1::2]
        return min(ys), max(ys)


@quick_init
@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str | None
    stroke: Stroke | None
    radius: float = 0.0
    layer: Layer = LAYER_BOX

    def moved(self, dx: float, dy: float) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height, self.fill, self.stroke,
                    self.radius, self.layer)

    def bbox(self) -> BBox:
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    def y_extent(self) -> tuple[float, float]:
        return self.y, self.y + self.height


@quick_init
@dataclass(frozen=True, slots=True)
class Polygon:
    points: tuple[Point, ...]
    fill: str | None
    stroke: Stroke | None
    layer: Layer = LAYER_BOX

    def moved(self, dx: float, dy: float) -> Polygon:
        return Polygon(tuple((x + dx, y + dy) for x, y in self.points), self.fill, self.stroke,
                       self.layer)

    def bbox(self) -> BBox:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return (min(xs), min(ys), max(xs), max(ys))

    def y_extent(self) -> tuple[float, float]:
        ys = [p[1] for p in self.points]
        return min(ys), max(ys)


@quick_init
@dataclass(frozen=True, slots=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str | None
    stroke: Stroke | None
    layer: Layer = LAYER_MARK

    def moved(self, dx: float, dy: float) -> Circle:
        return Circle(self.cx + dx, self.cy + dy, self.r, self.fill, self.stroke, self.layer)

    def bbox(self) -> BBox:
        return (self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)

    def y_extent(self) -> tuple[float, float]:
        return self.cy - self.r, self.cy + self.r


@quick_init
@dataclass(frozen=True, slots=True)
class Text:
    """A label: left edge `x`, baseline `y`, font size `size`. `owner` is the id of the box
    the label is drawn inside (a glyph's own text), which it may therefore overlap; `wire` is
    the id of the wire a wire label names."""

    label: Label
    x: float
    y: float
    size: float
    color: str
    width: float
    ascent: float
    descent: float
    owner: int | None = None
    role: str = "axis"
    layer: Layer = LAYER_TEXT
    wire: int | None = None

    def moved(self, dx: float, dy: float) -> Text:
        return Text(self.label, self.x + dx, self.y + dy, self.size, self.color, self.width,
                    self.ascent, self.descent, self.owner, self.role, self.layer, self.wire)

    def bbox(self) -> BBox:
        return (self.x, self.y - self.ascent, self.x + self.width, self.y + self.descent)

    def y_extent(self) -> tuple[float, float]:
        return self.y - self.ascent, self.y + self.descent


Item = Path | Rect | Polygon | Circle | Text


Candidate = tuple[float, float]
"""A height the layout computes as `base + offset` (a rectangle's bottom: its y plus its
height; a label's top: its baseline less its ascent): a group keeps the base and moves it,
and adds the offset last, as moving the item and then measuring it would."""
_NEAR = 1e-6
"""Candidates for an extreme this far from the best are dropped: moving a group shifts them
all alike, and rounding never reorders them by as much."""


@quick_init
@dataclass(frozen=True, slots=True, eq=False)
class Group:
    """Items of a panel moved into place as a whole: shifted by (`dx`, `dy`) only when the
    diagram is finished (`placed_items`), so that a panel nested n deep is not copied n
    times. A diagram holds no groups.

    A group stands for what moving each of its items would give, in the order labels are
    drawn in: its labels after everything else in it. So it keeps them apart: `items` all
    but the labels (groups among them), `texts` the labels and, where theirs come, the
    groups that hold labels; `opened` splits a group into the rest and its labels, moved,
    without going through the rest (a join drops labels that repeat a neighbour's).

    The vertical extent is kept as moving every item would give it, to the last bit: the
    least and greatest coordinate (`low`, `high`) of the paths and polygons in `items`, moved
    as they are, and the heights made of a coordinate and an offset (`tops`, `bottoms` of
    `items`, `text_tops`, `text_bottoms` of the labels; see `Candidate`)."""

    items: tuple[Drawn, ...]
    texts: tuple[Text | Group | Rewired, ...]
    dx: float
    dy: float
    low: float
    high: float
    tops: tuple[Candidate, ...]
    bottoms: tuple[Candidate, ...]
    text_tops: tuple[Candidate, ...]
    text_bottoms: tuple[Candidate, ...]

    def y_extent(self) -> tuple[float, float]:
        # as min and max of all of them choose (the first of equal values), without a list
        top, bottom = self.low, self.high
        for b, o in self.tops:
            if b + o < top:
                top = b + o
        for b, o in self.text_tops:
            if b + o < top:
                top = b + o
        for b, o in self.bottoms:
            if b + o > bottom:
                bottom = b + o
        for b, o in self.text_bottoms:
            if b + o > bottom:
                bottom = b + o
        return top, bottom


@quick_init
@dataclass(frozen=True, slots=True, eq=False)
class Rewired:
    """Items shared with the template of a replayed panel (`layout/replay.py`), standing for
    those items with every wire and box id `i` read as `ids[i]` (and each label `a` drawn as
    `labels.get(a, a)`), spliced in its place: where
    it stands in a panel's items, a group made of them, the diagram's items and the wires'
    ends are what the items themselves, with their ids replaced, would give, in their order.

    In a panel's items it carries what `group` gathers from them (`gathered`) and their
    vertical extent (`top`, `bottom`, as `Panel.fit` finds it), made once per template;
    gathered into a group it becomes two parts, the rest of its items among the group's
    items and its labels among the group's labels (`gathered` None)."""

    items: tuple[Drawn, ...]
    ids: Mapping[int, int]
    labels: Mapping[Label, Label]
    """Labels drawn otherwise: the name of a port the template's operation shows (a bias
    `c2`) as this term's (`c6`), where both measure alike."""
    gathered: Gathered | None
    top: float
    bottom: float

    def y_extent(self) -> tuple[float, float]:
        assert self.gathered is not None, "a part of a group has no extent of its own"
        return self.top, self.bottom


Drawn = Item | Group | Rewired
"""What a panel draws while it is laid out: items, groups of items still to be moved, and
items shared with a replayed panel's template."""


@dataclass(frozen=True, slots=True)
class Gathered:
    """What `group` gathers from items before moving them: all but the labels (`rest`), the
    labels (`texts`), and their vertical extent as `Group` keeps it, unmoved."""

    rest: tuple[Drawn, ...]
    texts: tuple[Text | Group | Rewired, ...]
    tops: tuple[Candidate, ...]
    bottoms: tuple[Candidate, ...]
    text_tops: tuple[Candidate, ...]
    text_bottoms: tuple[Candidate, ...]
    low: float
    high: float


def _pruned(candidates: Sequence[Candidate], dy: float, bound: float, lowest: bool
            ) -> tuple[Candidate, ...]:
    """`candidates` moved by `dy`, less those that cannot be the extreme: farther than
    `_NEAR` from the best of them or beyond `bound` (the moved coordinates' extreme)."""
    if not candidates:
        return ()
    if len(candidates) == 1:
        # the usual case (one dot, one box edge): the test below on one candidate, no lists
        # (`min(h, bound)` is `bound` only where `bound < h`; likewise for `max`)
        b, o = candidates[0]
        b += dy
        h = b + o
        if lowest:
            keep = h <= (bound if bound < h else h) + _NEAR
        else:
            keep = h >= (bound if bound > h else h) - _NEAR
        return ((b, o),) if keep else ()
    moved = [(b + dy, o) for b, o in candidates]
    heights = [b + o for b, o in moved]  # each summed once, for the extreme and the test
    if lowest:
        limit = min(min(heights), bound) + _NEAR
        return tuple([c for c, h in zip(moved, heights, strict=True) if h <= limit])
    limit = max(max(heights), bound) - _NEAR
    return tuple([c for c, h in zip(moved, heights, strict=True) if h >= limit])


_INF = float("inf")


def group(items: Iterable[Drawn], dx: float, dy: float) -> list[Drawn]:
    """`items` moved by (dx, dy): one group (none for no items), its shifts applied in order
    when the diagram is finished, as moving each item at every level would: the same numbers
    come out."""
    found = gathered(items)
    if not found.rest and not found.texts:
        return []
    low, high = found.low + dy, found.high + dy
    return [Group(found.rest, found.texts, dx, dy, low, high,
                  _pruned(found.tops, dy, low, True), _pruned(found.bottoms, dy, high, False),
                  _pruned(found.text_tops, dy, _INF, True),
                  _pruned(found.text_bottoms, dy, -_INF, False))]


def gathered(items: Iterable[Drawn]) -> Gathered:
    """What `group` keeps of `items`, before moving them (see `Gathered`)."""
    rest: list[Drawn] = []
    texts: list[Text | Group | Rewired] = []
    low, high = _INF, -_INF
    tops: list[Candidate] = []
    bottoms: list[Candidate] = []
    text_tops: list[Candidate] = []
    text_bottoms: list[Candidate] = []
    # (`if y < low: low = y` is `low = min(low, y)`, which keeps the first of equal values,
    # without the call; likewise for `high`)
    for item in items:
        if type(item) is Text:
            texts.append(item)
            text_tops.append((item.y, -item.ascent))
            text_bottoms.append((item.y, item.descent))
            continue
        if type(item) is Path and len(item.segments) == 1 and len(item.segments[0]) == 2:
            # a straight wire, the most common item: its `y_extent` in place
            rest.append(item)
            a, b = item.start[1], item.segments[0][1]
            y0, y1 = (b if b < a else a), (b if b > a else a)
        elif isinstance(item, Group | Rewired):
            # a group's extent, gathered when it was made, or a replayed run's, gathered
            # once for its template: merged as going through their items again would merge
            # them (the first of equal values kept)
            inner: Group | Gathered
            if isinstance(item, Group):
                inner = item
                rest.append(item)
                if item.texts:
                    texts.append(item)
            else:
                assert item.gathered is not None, "a part of a group is not gathered again"
                inner = item.gathered
                if inner.rest:
                    rest.append(Rewired(inner.rest, item.ids, item.labels, None, _INF, -_INF))
                if inner.texts:
                    texts.append(Rewired(inner.texts, item.ids, item.labels, None, _INF, -_INF))
            if inner.low < low:
                low = inner.low
            if inner.high > high:
                high = inner.high
            tops.extend(inner.tops)
            bottoms.extend(inner.bottoms)
            text_tops.extend(inner.text_tops)
            text_bottoms.extend(inner.text_bottoms)
            continue
        elif type(item) is Rect:
            rest.append(item)
            if item.y < low:
                low = item.y
            bottoms.append((item.y, item.height))
            continue
        elif type(item) is Circle:
            rest.append(item)
            tops.append((item.cy, -item.r))
            bottoms.append((item.cy, item.r))
            continue
        else:
            rest.append(item)
            y0, y1 = item.y_extent()
        if y0 < low:
            low = y0
        if y1 > high:
            high = y1
    return Gathered(tuple(rest), tuple(texts), tuple(tops), tuple(bottoms), tuple(text_tops),
                    tuple(text_bottoms), low, high)


def opened(items: Iterable[Drawn]) -> list[Drawn]:
    """`items` with each group split into a group of all but its labels and its labels,
    moved, after it: the same drawing, with the labels within reach (a join compares and
    drops them). The groups left hold no labels; replayed items are placed as they stand."""
    out: list[Drawn] = []
    for item in items:
        if isinstance(item, Rewired):
            _place_run(item.items, (item,), out)
            continue
        if not isinstance(item, Group) or not item.texts:
            out.append(item)
            continue
        if item.items:
            out.append(Group(item.items, (), item.dx, item.dy, item.low, item.high, item.tops,
                             item.bottoms, (), ()))
        _place_texts(item.texts, _before(item.dx, ()), _before(item.dy, ()), out, ())
    return out


Runs = tuple[Rewired, ...]
"""The replayed runs round an item, innermost first: its ids and labels are read through
each in turn (see `Rewired`)."""


def _rewired_id(value: int, runs: Runs) -> int:
    for run in runs:
        value = run.ids[value]
    return value


def _relabelled(label: Label, runs: Runs) -> Label:
    for run in runs:
        if run.labels:
            label = run.labels.get(label, label)
    return label


def placed_items(items: Iterable[Drawn]) -> list[Item]:
    """Every item with the shifts of the groups round it applied, innermost first, in the
    order the layout made them, a group's labels after the rest of it (and the ids and
    labels of a replayed run put right)."""
    placed: list[Item] = []
    _place_run(items, (), placed)
    return placed


def _place_run(items: Iterable[Drawn], runs: Runs, out: list[Item] | list[Drawn]) -> None:
    """`items` placed in `out` as `placed_items` places them, read through `runs`."""
    for item in items:
        if isinstance(item, Group):
            xs, ys = _before(item.dx, ()), _before(item.dy, ())
            _place(item.items, xs, ys, out, runs)  # type: ignore[arg-type]
            _place_texts(item.texts, xs, ys, out, runs)
        elif isinstance(item, Rewired):
            _place_run(item.items, (item, *runs), out)
        elif runs:
            out.append(_shifted(item, (), (), runs))
        else:
            out.append(item)


def _place(items: Iterable[Drawn], xs: tuple[float, ...], ys: tuple[float, ...],
           out: list[Item], runs: Runs = ()) -> None:
    """All but the labels of `items`, shifted by the groups round them and by `xs`, `ys`,
    their ids and labels read through `runs`."""
    append = out.append
    for item in items:
        # (by exact type, the most common first: a diagram has a few hundred thousand items)
        if type(item) is Path and len(item.segments) == 1 and len(item.segments[0]) == 2:
            # a straight wire, the most common item, moved as `_shifted` moves it, in place
            (x, y), (x1, y1) = item.start, item.segments[0]
            for dx in xs:
                x, x1 = x + dx, x1 + dx
            for dy in ys:
                y, y1 = y + dy, y1 + dy
            wire = item.wire
            if runs and wire is not None:
                wire = _rewired_id(wire, runs)
            append(Path((x, y), ((x1, y1),), item.stroke, item.fill, item.closed, wire,
                        item.role, item.free_ends, item.layer))
        elif type(item) is Group:
            # innermost shift first: the order a panel nested in others was moved in
            _place(item.items, _before(item.dx, xs), _before(item.dy, ys), out, runs)
        elif type(item) is Rewired:
            _place(item.items, xs, ys, out, (item, *runs))
        else:
            append(_shifted(item, xs, ys, runs))  # type: ignore[arg-type]


def _place_texts(texts: Iterable[Text | Group | Rewired], xs: tuple[float, ...],
                 ys: tuple[float, ...], out: list[Item] | list[Drawn], runs: Runs) -> None:
    """The labels of `texts` (labels, and groups whose labels come there), shifted so."""
    for text in texts:
        if isinstance(text, Group):
            _place_texts(text.texts, _before(text.dx, xs), _before(text.dy, ys), out, runs)
            continue
        if isinstance(text, Rewired):
            _place_texts(text.items, xs, ys, out, (text, *runs))  # type: ignore[arg-type]
            continue
        # moved as `_shifted` moves a label, here without a call per coordinate
        x, y = text.x, text.y
        for dx in xs:
            x += dx
        for dy in ys:
            y += dy
        label, owner, wire = text.label, text.owner, text.wire
        if runs:
            label = _relabelled(label, runs)
            owner = None if owner is None else _rewired_id(owner, runs)
            wire = None if wire is None else _rewired_id(wire, runs)
        out.append(Text(label, x, y, text.size, text.color, text.width, text.ascent,
                        text.descent, owner, text.role, text.layer, wire))


def path_ends(items: Iterable[Drawn], role: WireRole, xs: tuple[float, ...] = (),
              runs: Runs = ()) -> Iterator[tuple[int | None, float]]:
    """The wire id and the x of the end of every path of `role` among `items`, those in
    groups too (shifted as `placed_items` shifts them)."""
    for item in items:
        if isinstance(item, Group):
            yield from path_ends(item.items, role, (item.dx, *xs), runs)
        elif isinstance(item, Rewired):
            yield from path_ends(item.items, role, xs, (item, *runs))
        elif isinstance(item, Path) and item.role == role:
            wire = item.wire
            if runs and wire is not None:
                wire = _rewired_id(wire, runs)
            yield wire, _along(item.end[0], xs)


def _before(shift: float, shifts: tuple[float, ...]) -> tuple[float, ...]:
    """`shifts` (added in order, innermost first) with `shift` added before them, less the
    additions that change no number: adding -0.0 changes none, and adding +0.0 only turns
    -0.0 into +0.0 wherever it comes, so it is added once, last. Most moves are across or
    down only, and this halves the additions of placing a deeply nested item."""
    if shift != 0.0:
        return (shift, *shifts)
    if copysign(1.0, shift) < 0.0 or (shifts and shifts[-1] == 0.0):
        return shifts
    return (*shifts, 0.0)


def _along(value: float, shifts: tuple[float, ...]) -> float:
    for shift in shifts:
        value += shift
    return value


def _shifted(item: Item, xs: tuple[float, ...], ys: tuple[float, ...], runs: Runs = ()
             ) -> Item:
    """`item` moved by each shift of `xs` across and of `ys` down, in order: the numbers
    moving it level by level gives, without the items in between (its ids and labels read
    through `runs`)."""
    if isinstance(item, Path):  # (`_place` moves the straight wires itself, alike)
        x, y = item.start
        wire = item.wire
        if runs and wire is not None:
            wire = _rewired_id(wire, runs)
        return Path((_along(x, xs), _along(y, ys)), tuple([_segment_shifted(s, xs, ys)
                                                           for s in item.segments]),
                    item.stroke, item.fill, item.closed, wire, item.role, item.free_ends,
                    item.layer)
    if isinstance(item, Text):
        label, owner, text_wire = item.label, item.owner, item.wire
        if runs:
            label = _relabelled(label, runs)
            owner = None if owner is None else _rewired_id(owner, runs)
            text_wire = None if text_wire is None else _rewired_id(text_wire, runs)
        return Text(label, _along(item.x, xs), _along(item.y, ys), item.size, item.color,
                    item.width, item.ascent, item.descent, owner, item.role, item.layer,
                    text_wire)
    if isinstance(item, Circle):
        return Circle(_along(item.cx, xs), _along(item.cy, ys), item.r, item.fill, item.stroke,
                      item.layer)
    if isinstance(item, Rect):
        return Rect(_along(item.x, xs), _along(item.y, ys), item.width, item.height, item.fill,
                    item.stroke, item.radius, item.layer)
    return Polygon(tuple([(_along(x, xs), _along(y, ys)) for x, y in item.points]), item.fill,
                   item.stroke, item.layer)


def _segment_shifted(segment: Segment, xs: tuple[float, ...], ys: tuple[float, ...]
                     ) -> Segment:
    """A path segment (x, y, ...) moved as `_shifted` moves a path: each coordinate by each
    shift in order. A line's end and a cubic's three points, the usual segments, without a
    call per coordinate."""
    if len(segment) == 2:
        x, y = segment
        for dx in xs:
            x += dx
        for dy in ys:
            y += dy
        return (x, y)
    if len(segment) == 6:
        x0, y0, x1, y1, x2, y2 = segment
        for dx in xs:
            x0, x1, x2 = x0 + dx, x1 + dx, x2 + dx
        for dy in ys:
            y0, y1, y2 = y0 + dy, y1 + dy, y2 + dy
        return (x0, y0, x1, y1, x2, y2)
    return tuple([_along(v, ys) if k % 2 else _along(v, xs) for k, v in enumerate(segment)])


@quick_init
@dataclass(frozen=True, slots=True)
class PortPoint:
    """Where a wire meets a box."""

    x: float
    y: float
    wire: int
    side: Literal["left", "right", "top", "bottom"]

    def moved(self, dx: float, dy: float) -> PortPoint:
        return PortPoint(self.x + dx, self.y + dy, self.wire, self.side)


@quick_init
@dataclass(frozen=True, slots=True)
class Box:
    """A box of the diagram (a glyph, a collapsed block, a call): the region wires may not
    cross unless they enter it through one of its `ports`. `expected_ports` is what the IR
    node says it needs (its arrays' axes and datatype wires), for validation."""

    id: int
    x: float
    y: float
    width: float
    height: float
    kind: str
    ports: tuple[PortPoint, ...]
    expected_ports: int

    def moved(self, dx: float, dy: float) -> Box:
        return Box(self.id, self.x + dx, self.y + dy, self.width, self.height, self.kind,
                   tuple(p.moved(dx, dy) for p in self.ports), self.expected_ports)

    def bbox(self) -> BBox:
        return (self.x, self.y, self.x + self.width, self.y + self.height)


@quick_init
@dataclass(frozen=True, slots=True)
class Anchor:
    """A point where wires may legitimately end without a box: a copy dot, a merge dot, the
    bar of a deleted wire, the join of a cup, an addition sign."""

    x: float
    y: float

    def moved(self, dx: float, dy: float) -> Anchor:
        return Anchor(self.x + dx, self.y + dy)


@quick_init
@dataclass(frozen=True, slots=True)
class Loop:
    """A feedback loop of a scan: the path(s) with id `wire` carry a state from the step's
    output (at `x_out`) back to its input (at `x_in`). `state_in` and `state_out` are the
    heights of the state's wires there: the loop must span them all."""

    wire: int
    x_in: float
    x_out: float
    state_in: tuple[float, ...]
    state_out: tuple[float, ...]

    def moved(self, dx: float, dy: float) -> Loop:
        return Loop(self.wire, self.x_in + dx, self.x_out + dx,
                    tuple(y + dy for y in self.state_in), tuple(y + dy for y in self.state_out))


@quick_init
@dataclass(frozen=True, slots=True, eq=False)
class MovedBoxes:
    """Boxes of a panel moved into place as a whole (as `Group` moves its items): shifted
    only when the diagram is finished (`placed_boxes`). `top` is the least y of the boxes,
    moved (adding the same shift to each keeps which one is least), `bottoms` the candidates
    for the greatest y plus height (see `Candidate`)."""

    boxes: tuple[Box | MovedBoxes, ...]
    dx: float
    dy: float
    top: float
    bottoms: tuple[Candidate, ...]

    def y_extent(self) -> tuple[float, float]:
        return self.top, max(b + o for b, o in self.bottoms)


@quick_init
@dataclass(frozen=True, slots=True, eq=False)
class MovedAnchors:
    """Anchors of a panel moved into place as a whole, shifted when the diagram is finished
    (`placed_anchors`)."""

    anchors: tuple[Anchor | MovedAnchors, ...]
    dx: float
    dy: float


BoxEntry = Box | MovedBoxes
"""What a panel lists as its boxes: boxes, and boxes of moved panels still to be moved."""
AnchorEntry = Anchor | MovedAnchors


def moved_boxes(boxes: Iterable[BoxEntry], dx: float, dy: float) -> list[BoxEntry]:
    """`boxes` moved by (dx, dy): one `MovedBoxes` (none for no boxes)."""
    kept = tuple(boxes)
    if not kept:
        return []
    top = float("inf")
    bottoms: list[Candidate] = []
    for box in kept:
        if isinstance(box, MovedBoxes):
            top = min(top, box.top)
            bottoms.extend(box.bottoms)
        else:
            top = min(top, box.y)
            bottoms.append((box.y, box.height))
    return [MovedBoxes(kept, dx, dy, top + dy, _pruned(bottoms, dy, float("-inf"), False))]


def moved_anchors(anchors: Iterable[AnchorEntry], dx: float, dy: float
                  ) -> list[AnchorEntry]:
    """`anchors` moved by (dx, dy): one `MovedAnchors` (none for no anchors)."""
    kept = tuple(anchors)
    return [MovedAnchors(kept, dx, dy)] if kept else []


def placed_boxes(boxes: Iterable[BoxEntry], xs: tuple[float, ...] = (),
                 ys: tuple[float, ...] = ()) -> list[Box]:
    """Every box with the shifts round it applied, innermost first, in order."""
    placed: list[Box] = []
    for box in boxes:
        if isinstance(box, MovedBoxes):
            placed.extend(placed_boxes(box.boxes, _before(box.dx, xs), _before(box.dy, ys)))
        elif not xs and not ys:
            placed.append(box)
        else:
            placed.append(Box(box.id, _along(box.x, xs), _along(box.y, ys), box.width,
                              box.height, box.kind,
                              tuple([PortPoint(_along(p.x, xs), _along(p.y, ys), p.wire, p.side)
                                     for p in box.ports]), box.expected_ports))
    return placed


def placed_anchors(anchors: Iterable[AnchorEntry], xs: tuple[float, ...] = (),
                   ys: tuple[float, ...] = ()) -> list[Anchor]:
    """Every anchor with the shifts round it applied, innermost first, in order."""
    placed: list[Anchor] = []
    for anchor in anchors:
        if isinstance(anchor, MovedAnchors):
            placed.extend(placed_anchors(anchor.anchors, _before(anchor.dx, xs),
                                         _before(anchor.dy, ys)))
        elif not xs and not ys:
            placed.append(anchor)
        else:
            placed.append(Anchor(_along(anchor.x, xs), _along(anchor.y, ys)))
    return placed


BOX_GAP = 3.0
"""Least distance between two boxes (their outlines must not touch)."""


_layer = attrgetter("layer")


@dataclass(frozen=True)
class Diagram:
    width: float
    height: float
    background: str | None
    items: tuple[Item, ...]
    boxes: tuple[Box, ...]
    anchors: tuple[Anchor, ...]
    title: str = ""
    loops: tuple[Loop, ...] = ()

    def sorted_items(self) -> list[Item]:
        """Items in drawing order: by layer, then in the order the layout made them."""
        return sorted(self.items, key=_layer)

    def validate(self) -> list[str]:
        """Every broken rule of the visual grammar, as readable messages (empty: all good)."""
        return list(_problems(self))


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

_CELL = 64.0


def _grid(boxes: Iterable[tuple[int, BBox]]) -> dict[tuple[int, int], list[int]]:
    """A uniform grid over bounding boxes, so overlap tests stay near-linear on big diagrams."""
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, (x0, y0, x1, y1) in boxes:
        for cx in range(int(x0 // _CELL), int(x1 // _CELL) + 1):
            for cy in range(int(y0 // _CELL), int(y1 // _CELL) + 1):
                grid[(cx, cy)].append(index)
    return grid


def _overlap(a: BBox, b: BBox, margin: float = 0.0) -> bool:
    return (a[0] < b[2] - margin and b[0] < a[2] - margin
            and a[1] < b[3] - margin and b[1] < a[3] - margin)


def _grown(boxes: Iterable[BBox], by: float) -> Iterator[BBox]:
    return ((x0 - by, y0 - by, x1 + by, y1 + by) for x0, y0, x1, y1 in boxes)


def _shrunk(box: BBox, by: float) -> BBox:
    x0, y0, x1, y1 = box
    return (x0 + by, y0 + by, max(x0 + by, x1 - by), max(y0 + by, y1 - by))


def _gap(a: BBox, b: BBox) -> float:
    """The distance between two boxes along the axis that separates them (negative: they
    overlap)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _pairs(grid: dict[tuple[int, int], list[int]]) -> list[tuple[int, int]]:
    """The pairs of indices that share a cell of `grid`, each once, in order."""
    found: set[tuple[int, int]] = set()
    for cell in grid.values():
        for position, i in enumerate(cell):
            for j in cell[position + 1:]:
                found.add((min(i, j), max(i, j)))
    return sorted(found)


def _segment_hits_box(p: Point, q: Point, box: BBox) -> bool:
    """Whether the segment pq passes through the open interior of `box` (Liang-Barsky)."""
    x0, y0, x1, y1 = box
    dx, dy = q[0] - p[0], q[1] - p[1]
    t0, t1 = 0.0, 1.0
    for edge_p, edge_q in ((-dx, p[0] - x0), (dx, x1 - p[0]), (-dy, p[1] - y0), (dy, y1 - p[1])):
        if abs(edge_p) < 1e-12:
            if edge_q <= 0:
                return False
            continue
        r = edge_q / edge_p
        if edge_p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 >= t1:
            return False
    return t1 - t0 > 1e-9


def _near(a: Point, b: Point, tolerance: float = 0.6) -> bool:
    return abs(a[0] - b[0]) <= tolerance and abs(a[1] - b[1]) <= tolerance


def _crossings(a: list[Point], b: list[Point]) -> Iterator[Point]:
    """Points where polyline `a` properly crosses polyline `b` (touching does not count)."""
    for p, q in pairwise(a):
        for r, s in pairwise(b):
            d1 = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
            d2 = (q[0] - p[0]) * (s[1] - p[1]) - (q[1] - p[1]) * (s[0] - p[0])
            d3 = (s[0] - r[0]) * (p[1] - r[1]) - (s[1] - r[1]) * (p[0] - r[0])
            d4 = (s[0] - r[0]) * (q[1] - r[1]) - (s[1] - r[1]) * (q[0] - r[0])
            # A vertex of `a` exactly on `b` counts on one side, so that a polyline passing
            # through `b` at one of its sample points still crosses it once.
            if d1 * d2 < -1e-6 and (d3 >= 0) != (d4 >= 0):
                t = d3 / (d3 - d4)
                yield (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))


def _problems(diagram: Diagram) -> Iterator[str]:
    texts = [item for item in diagram.items if isinstance(item, Text)]
    wires = [item for item in diagram.items if isinstance(item, Path) and item.wire is not None]
    boxes = list(diagram.boxes)

    if not (diagram.width > 0 and diagram.height > 0):
        yield f"diagram has no area ({diagram.width} x {diagram.height})"

    # Everything lies inside the canvas: size is computed, never clipped.
    for item in diagram.items:
        x0, y0, x1, y1 = item.bbox()
        if x0 < -EPS or y0 < -EPS or x1 > diagram.width + EPS or y1 > diagram.height + EPS:
            yield f"{type(item).__name__} at ({x0:.1f}, {y0:.1f}) lies outside the canvas"
            break

    # No two labels intersect.
    text_boxes = [t.bbox() for t in texts]
    grid = _grid(enumerate(text_boxes))
    reported: set[tuple[int, int]] = set()
    for cell in grid.values():
        for i_pos, i in enumerate(cell):
            for j in cell[i_pos + 1:]:
                pair = (min(i, j), max(i, j))
                if pair in reported:
                    continue
                if _overlap(text_boxes[i], text_boxes[j], margin=0.2):
                    reported.add(pair)
                    yield (f"label {texts[i].label.plain_text()!r} overlaps label "
                           f"{texts[j].label.plain_text()!r} near "
                           f"({texts[i].x:.1f}, {texts[i].y:.1f})")

    # No label intersects a box (other than the box it is drawn in).
    box_boxes = [b.bbox() for b in boxes]
    box_grid = _grid(enumerate(box_boxes))
    for text, tb in zip(texts, text_boxes, strict=True):
        seen: set[int] = set()
        for cx in range(int(tb[0] // _CELL), int(tb[2] // _CELL) + 1):
            for cy in range(int(tb[1] // _CELL), int(tb[3] // _CELL) + 1):
                for b in box_grid.get((cx, cy), ()):
                    if b in seen or boxes[b].id == text.owner:
                        continue
                    seen.add(b)
                    if _overlap(tb, box_boxes[b], margin=0.2):
                        yield (f"label {text.label.plain_text()!r} overlaps the "
                               f"{boxes[b].kind} box near ({text.x:.1f}, {text.y:.1f})")

    # No wire crosses a box it does not enter.
    for wire in wires:
        points = wire.polyline()
        wb = wire.bbox()
        candidates: set[int] = set()
        for cx in range(int(wb[0] // _CELL), int(wb[2] // _CELL) + 1):
            for cy in range(int(wb[1] // _CELL), int(wb[3] // _CELL) + 1):
                candidates.update(box_grid.get((cx, cy), ()))
        for b in sorted(candidates):
            box = boxes[b]
            # The interior, shrunk a little so a wire that ends on the border does not count.
            x0, y0, x1, y1 = box_boxes[b]
            inner = (x0 + 0.5, y0 + 0.5, x1 - 0.5, y1 - 0.5)
            if any(_segment_hits_box(p, q, inner) for p, q in pairwise(points)):
                yield (f"{wire.role} wire {wire.wire} crosses the {box.kind} box at "
                       f"({x0:.1f}, {y0:.1f})")

    # Every wire end lies on a port, an anchor, the diagram edge, or continues another piece
    # of the same wire.
    ends: dict[tuple[int, int], list[tuple[int, Point]]] = defaultdict(list)
    for wire in wires:
        for point in (wire.start, wire.end):
            ends[(round(point[0]), round(point[1]))].append((wire.wire or 0, point))
    legal: dict[tuple[int, int], list[Point]] = defaultdict(list)
    for box in boxes:
        for port in box.ports:
            legal[(round(port.x), round(port.y))].append((port.x, port.y))
    for anchor in diagram.anchors:
        legal[(round(anchor.x), round(anchor.y))].append((anchor.x, anchor.y))

    def _found(table: dict[tuple[int, int], list], point: Point, predicate) -> bool:
        kx, ky = round(point[0]), round(point[1])
        for nx in (kx - 1, kx, kx + 1):
            for ny in (ky - 1, ky, ky + 1):
                if any(predicate(entry) for entry in table.get((nx, ny), ())):
                    return True
        return False

    for wire in wires:
        if wire.free_ends:
            continue
        for point in (wire.start, wire.end):
            if point[0] <= EPS or point[0] >= diagram.width - EPS:
                continue
            if _found(legal, point, lambda p, point=point: _near(p, point)):
                continue
            others = sum(
                1 for nx in (round(point[0]) - 1, round(point[0]), round(point[0]) + 1)
                for ny in (round(point[1]) - 1, round(point[1]), round(point[1]) + 1)
                for w, p in ends.get((nx, ny), ()) if w == wire.wire and _near(p, point)
            )
            if others >= 2:  # itself plus the piece it continues
                continue
            yield (f"{wire.role} wire {wire.wire} ends in the open at "
                   f"({point[0]:.1f}, {point[1]:.1f})")

    # A separator runs between the arrays it separates: it crosses no wire (a separator that
    # does has curled out of the gap between its arrays, round a wire into a mark or a break).
    looping = {loop.wire for loop in diagram.loops}  # a scan's loop spans its state on purpose
    lines = [w for w in wires if w.role != "sep" and w.wire not in looping]
    line_grid = _grid(enumerate(w.bbox() for w in lines))
    for separator in (w for w in wires if w.role == "sep"):
        points = separator.polyline()
        sb = separator.bbox()
        near: set[int] = set()
        for cx in range(int(sb[0] // _CELL), int(sb[2] // _CELL) + 1):
            for cy in range(int(sb[1] // _CELL), int(sb[3] // _CELL) + 1):
                near.update(line_grid.get((cx, cy), ()))
        crossing = next((q for k in sorted(near) for q in _crossings(points,
                                                                      lines[k].polyline())),
                        None)
        if crossing is not None:
            yield (f"separator {separator.wire} crosses a wire at ({crossing[0]:.1f}, "
                   f"{crossing[1]:.1f}): it leaves the gap between its arrays")

    # Boxes keep a gap between them: two outlines that touch read as one.
    for i, j in _pairs(_grid(enumerate(_grown(box_boxes, BOX_GAP / 2)))):
        gap = _gap(box_boxes[i], box_boxes[j])
        if gap < BOX_GAP - EPS:
            one, other = boxes[i], boxes[j]
            yield (f"the {one.kind} box at ({one.x:.1f}, {one.y:.1f}) and the {other.kind} box "
                   f"at ({other.x:.1f}, {other.y:.1f}) are {max(gap, 0.0):.1f} px apart; "
                   f"boxes keep {BOX_GAP:g} px between them")

    # No wire runs through a label (a glyph's own caption is inside its box, drawn over it).
    free_texts = [k for k, t in enumerate(texts) if t.owner is None]
    free_grid = _grid((k, _shrunk(text_boxes[k], 0.5)) for k in free_texts)
    crossed: set[int] = set()
    for wire in wires:
        for p, q in pairwise(wire.polyline()):
            columns = range(int(min(p[0], q[0]) // _CELL), int(max(p[0], q[0]) // _CELL) + 1)
            rows = range(int(min(p[1], q[1]) // _CELL), int(max(p[1], q[1]) // _CELL) + 1)
            for key in [(cx, cy) for cx in columns for cy in rows]:
                for k in free_grid.get(key, ()):
                    if k in crossed:
                        continue
                    if _segment_hits_box(p, q, _shrunk(text_boxes[k], 0.5)):
                        crossed.add(k)
                        yield (f"{wire.role} wire {wire.wire} runs through the label "
                               f"{texts[k].label.plain_text()!r} at ({texts[k].x:.1f}, "
                               f"{texts[k].y:.1f})")

    # A feedback loop spans every wire of the state it carries back, at both ends.
    for loop in diagram.loops:
        points = [point for wire in wires if wire.wire == loop.wire for point in wire.polyline()]
        for x, state, where in ((loop.x_in, loop.state_in, "input"),
                                (loop.x_out, loop.state_out, "output")):
            leg = [y for px, y in points if abs(px - x) <= 0.6]
            reached = [y for y in state if leg and min(leg) - 0.6 <= y <= max(leg) + 0.6]
            if len(reached) < len(state):
                yield (f"the feedback loop at ({x:.1f}, {min(state, default=0.0):.1f}) reaches "
                       f"{len(reached)} of the {len(state)} wires of its state at the step's "
                       f"{where}")

    # Every wire that enters or leaves a box by its side is labelled somewhere along it.
    labelled = {t.wire for t in texts if t.wire is not None}
    roles = {wire.wire: wire.role for wire in wires}
    for box in boxes:
        for port in box.ports:
            if port.side in ("left", "right") and roles.get(port.wire) == "axis" \
                    and port.wire not in labelled:
                yield (f"the axis wire at the {port.side} port of the {box.kind} box at "
                       f"({port.x:.1f}, {port.y:.1f}) has no label")

    # Every box has the ports its IR node needs, and each port touches a wire.
    for box in boxes:
        if len(box.ports) != box.expected_ports:
            yield (f"{box.kind} box at ({box.x:.1f}, {box.y:.1f}) has {len(box.ports)} ports, "
                   f"its node needs {box.expected_ports}")
        for port in box.ports:
            if not _found(ends, (port.x, port.y),
                          lambda entry, port=port: _near(entry[1], (port.x, port.y))):
                yield (f"port of the {box.kind} box at ({port.x:.1f}, {port.y:.1f}) has no wire")


@dataclass
class Bounds:
    """A running bounding box."""

    x0: float = float("inf")
    y0: float = float("inf")
    x1: float = float("-inf")
    y1: float = float("-inf")
    empty: bool = field(default=True)

    def add(self, box: BBox) -> None:
        self.x0 = min(self.x0, box[0])
        self.y0 = min(self.y0, box[1])
        self.x1 = max(self.x1, box[2])
        self.y1 = max(self.y1, box[3])
        self.empty = False
