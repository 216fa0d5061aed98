"""Routing: how wires get from one height to another. `assemble` wraps a panel's core with
label zones and routing columns of cubic curves (forks and merges at dots, bars where wires
end, the cards of learned operands); `join` places two panels side by side; `best_offset`
picks the vertical shift that keeps the most wires straight."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

from ..geometry import EPS, Anchor, AnchorEntry, Box, Drawn, Item, PortPoint, Text, opened
from ..glyphs import card
from .context import Context
from .options import LABEL_RAISE, LABEL_SIZE, PITCH, ROW_PAD, TITLE_SIZE, ZONE_PAD
from .panels import (
    End,
    Panel,
    Source,
    Spec,
    arrowhead,
    bar,
    curve,
    dot,
    ends_moved,
    label_zone_width,
    text_item,
    wire_path,
)

CARD_GAP = 6.0
"""Least vertical gap between two cards stacked in one label zone."""
MARK_LEAD = 22.0
"""Straight run before a left routing column where a junction's mark (a `+`) sits between
two converging arrays, clear of the curves that start after it."""

MARK_ARM = 7.0
"""Half the width of a junction's mark (and a little room): where a separator into it ends."""

Mark = Callable[[float, float], list[Item]]
"""Draws a junction's mark centred at (x, y)."""


def card_extent(y_first: float, y_last: float) -> tuple[float, float]:
    """Top and bottom of a card whose wires leave it at heights `y_first` to `y_last`."""
    height = max(28.0, y_last - y_first + 2 * ROW_PAD)
    top = (y_first + y_last) / 2 - height / 2
    return top, top + height


ROUTE_MAX = 60.0
"""The widest routing column: a wire moving far (past a tall block) turns steeply rather than
widening the whole diagram, whose labels shrink with its width when it is printed."""


def route_width(dy: float) -> float:
    """Width of a routing column: gentle slopes for long moves, never a kink for short ones."""
    return max(26.0, min(ROUTE_MAX, 18.0 + 0.45 * dy))


def best_offset(differences: Sequence[float], weights: Sequence[float] | None = None,
                 cost: Callable[[float], float] | None = None) -> float:
    """The vertical shift that makes the most wires straight (`weights`: 1 for a wire that
    counts, 0 for a separator, which only breaks ties). Ties go to the cheapest shift by
    `cost` (a join: the one that keeps the picture lowest), then to the one that keeps the
    topmost wire straight, so that a stack which loses wires closes up towards its top and a
    chain of such steps stays level instead of drifting."""
    if not differences:
        return 0.0
    keys = [round(d, 2) for d in differences]
    if keys.count(keys[0]) == len(keys) and (weights is None or weights[0] > 0):
        # One shift straightens every wire, separators too (the usual case): nothing to
        # weigh. The counting below would return the first key of a wire that counts (of
        # equal keys, a zero's sign is the first's): here the first.
        return keys[0]
    count: dict[float, int] = {}
    minor: dict[float, int] = {}
    first: dict[float, int] = {}
    for index, key in enumerate(keys):
        if weights is None or weights[index] > 0:
            count[key] = count.get(key, 0) + 1
            first.setdefault(key, index)
        else:
            minor[key] = minor.get(key, 0) + 1
    if not count:  # only separators: the most of them straight
        return max(minor.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    if len(count) == 1:  # one shift straightens every wire that counts: nothing to weigh
        return next(iter(count))
    best = max(count.items(),
               key=lambda kv: (kv[1], -round(cost(kv[0]), 1) if cost else 0.0,
                               -first[kv[0]], minor.get(kv[0], 0), -kv[0]))
    return best[0]


def crossed(separator: tuple[float, float], moves: Sequence[tuple[float, float]]) -> bool:
    """Whether a wire moving from one height to another (`moves`) crosses a separator moving
    from `separator[0]` to `separator[1]` in a routing column: the column regroups the arrays,
    so the separator stops at its edges instead of running through wires."""
    y0, y1 = separator
    for a, b in moves:  # (a loop, not `any` of a generator: called for every separator)
        if (a - y0) * (b - y1) < 0 or (abs(a - y0) < EPS) != (abs(b - y1) < EPS):
            return True
    return False


def stops(y0: float, y1: float, moves: Sequence[tuple[float, float]],
          bend_separators: bool) -> bool:
    """Whether a separator from height `y0` to `y1` across a routing column stops at the
    column's edges: where a wire crosses it there, even where it would run straight (a wire
    fanning out of a dot or regrouping arrays passes its height), and, unless separators
    bend, wherever it would have to move."""
    return crossed((y0, y1), moves) or (not bend_separators and abs(y1 - y0) > EPS)


SEPARATOR_CLEARANCE = 3.0
"""How far (down or up, and across) a wire is from where a separator starts beside it."""


def clear_of(y0: float, y1: float, y: float, x0: float, x1: float) -> float:
    """Where a separator at height `y` may start beside a wire's S-curve from (x0, y0) to
    (x1, y1) (`curve`): past where the wire is SEPARATOR_CLEARANCE beyond `y` for good; x0 if
    it never comes within that of `y` on its way."""
    away = (y0 - y) * (y1 - y) > 0 and min(abs(y0 - y), abs(y1 - y)) >= SEPARATOR_CLEARANCE
    if abs(y1 - y0) < EPS or away:
        return x0
    past = y + SEPARATOR_CLEARANCE * (1.0 if y1 > y0 else -1.0)
    share = min(1.0, max(0.0, (past - y0) / (y1 - y0)))
    t = _smoothstep_parameter(share)
    # and as far again to the right: a steep curve is drawn (and checked) as a polyline.
    return min(x1, x0 + (x1 - x0) * (1.5 * t * (1 - t) + t ** 3) + SEPARATOR_CLEARANCE)


@functools.lru_cache(maxsize=4096)  # bounded: a language server runs for hours
def _smoothstep_parameter(share: float) -> float:
    """The parameter t where an S-curve (`curve`) has risen `share` of its height: its
    height runs as smoothstep 3t^2 - 2t^3 of t, bisected for t. Memoised: the wires of a
    long chain meet separators at the same few shares."""
    low, high = 0.0, 1.0
    for _ in range(40):
        t = (low + high) / 2
        low, high = (t, high) if 3 * t * t - 2 * t ** 3 < share else (low, t)
    return high


def wire_weight(spec: Spec) -> float:
    return 0.0 if spec.kind == "sep" else 1.0


def assemble(ctx: Context, left: Sequence[Spec], in_ids: Sequence[int],
             in_map: Sequence[int | None], core: Panel, out_map: Sequence[int | None],
             right: Sequence[Spec], labels: bool = True, labels_right: bool | None = None,
             align_left: Sequence[int] | None = None, align_right: Sequence[int] | None = None,
             sources: Sequence[Source] = (), skip_left: AbstractSet[float] = frozenset(),
             skip_right: AbstractSet[float] = frozenset(), balance_left: bool = False,
             balance_right: bool = False, mark: Mark | None = None,
             marked: AbstractSet[int] = frozenset(), bend_separators: bool = True) -> Panel:
    """Wrap `core` with routing and label zones.

    Left wire k (at the panel's left edge, stacked at the wire pitch) runs to the core's left
    row `in_map[k]` (None: it ends, in a bar for a deleted wire); several wires into one row
    meet at a dot, and a row nobody feeds starts at a dot. Right wire k leaves core row
    `out_map[k]`; a row used twice forks at a dot, a row nobody uses ends in a bar.

    `mark` and `marked` (indices of left separators): a junction whose arrays converge in the
    left routing column draws its mark at each such separator's height, between the arrays,
    just before the curves; the separator runs straight into it.

    A separator follows its arrays through a routing column (straight, or an S-curve between
    them) unless a wire crosses it there (the column regroups the arrays, or fans a wire out
    past it) or it would bend and `bend_separators` is false (the wires at a row break, which
    the break's mark lists): then it stops at the column's edges.
    """
    items: list[Drawn] = []
    anchors: list[AnchorEntry] = []

    # Stack each side at the pitch, shifted so that as many wires as possible run straight.
    chosen_left = [k for k, r in enumerate(in_map)
                   if r is not None and (align_left is None or k in align_left)]
    chosen_right = [k for k, r in enumerate(out_map)
                    if r is not None and (align_right is None or k in align_right)]
    gap = [0.0] * len(left)  # a card's wires keep a wire's gap from the data above them
    for source in sources:
        # A card at the top keeps the gap from the data under it instead.
        shifted = range(source.count, len(left)) if source.first == 0 \
            else range(source.first, source.first + source.count)
        for k in shifted:
            gap[k] = PITCH
    base_left = best_offset([core.left[in_map[k] or 0].y - k * PITCH - gap[k]
                              for k in chosen_left], [wire_weight(left[k]) for k in chosen_left])
    base_right = best_offset([core.right[out_map[k] or 0].y - k * PITCH for k in chosen_right],
                              [wire_weight(right[k]) for k in chosen_right])
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
    # Cards stacked one under another keep a gap between them: a card lower than the one
    # above it moves down, with its wires and every wire under it.
    previous_bottom: float | None = None
    for source in sources:
        first, last = source.first, source.first + source.count - 1
        top, bottom = card_extent(y_left[first], y_left[last])
        if previous_bottom is not None and top < previous_bottom + CARD_GAP:
            shift = previous_bottom + CARD_GAP - top
            for k in range(first, len(left)):
                y_left[k] += shift
            top, bottom = top + shift, bottom + shift
        previous_bottom = bottom
    for source in sources:
        lb = source.label.measure(TITLE_SIZE)
        cards.append((source, max(26.0, lb.width + 14.0), 0.0))

    labels_left = labels
    labels_right = labels if labels_right is None else labels_right
    zone_left = label_zone_width([s for k, s in enumerate(left)
                                  if not any(src.first <= k < src.first + src.count
                                             for src in sources)] if sources else left
                                 ) if labels_left else 0.0
    for source, card_w, _ in cards:
        # Room right of the card for the names of its wires.
        names = label_zone_width(left[source.first:source.first + source.count])
        zone_left = max(zone_left, 4.0 + card_w + max(names, 4.0))
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
    lead = MARK_LEAD if mark is not None and marked else 0.0
    core_x = zone_left + lead + width_left
    left_moves = [(y_left[k], core.left[r].y) for k, r in enumerate(in_map)
                  if r is not None and left[k].kind != "sep"]

    for k, (spec, wire, row_index) in enumerate(zip(left, in_ids, in_map, strict=True)):
        y = y_left[k]
        if row_index is None and mark is not None and k in marked:
            x_mark = zone_left + lead / 2
            items.extend(mark(x_mark, y))
            anchors.append(Anchor(x_mark, y))
            # the separator ends at the mark's left arm
            items.append(wire_path(ctx, spec, wire, (sourced.get(k, 0.0), y),
                                   [(x_mark - MARK_ARM, y)]))
            anchors.append(Anchor(x_mark - MARK_ARM, y))
            continue
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
        if zone_left + lead > x_start:
            segments.append((zone_left + lead, y))
        if spec.kind == "sep" and width_left > 0 \
                and stops(y, target, left_moves, bend_separators):
            if segments and bend_separators:
                items.append(wire_path(ctx, spec, wire, (x_start, y), segments))
            continue
        if width_left > 0:
            segments.append(curve(zone_left + lead, y, core_x, target))
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
    right_moves = [(core.right[r].y, y_right[k]) for k, r in enumerate(out_map)
                   if r is not None and right[k].kind != "sep"]

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
            # It starts late in the column, clear of the wires that pass its height there.
            start = max(core_end, end_x - 12.0,
                        *(clear_of(a, b, y, core_end, end_x) for a, b in right_moves))
            items.append(wire_path(ctx, spec, wire, (start, y), [(total, y)]))
            right_ends.append(End(y, wire, spec))
            continue
        row = core.right[row_index]
        wire = row.wire if users[row_index] == 1 else ctx.fresh()
        segments = []
        if spec.kind == "sep" and width_right > 0 \
                and stops(row.y, y, right_moves, bend_separators):
            wire = ctx.fresh()  # a new piece, after the column that regroups the arrays
            if zone_right > 0 and bend_separators:
                items.append(wire_path(ctx, spec, wire, (end_x, y), [(total, y)]))
            right_ends.append(End(y, wire, spec))
            continue
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
        top, bottom = card_extent(ys[0], ys[-1])
        height = bottom - top
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
    for k, x_card in sorted(sourced.items()):
        # A card's wire is named where it leaves the card, as an input's is at the edge.
        spec = left[k]
        if spec.label is not None:
            left_labels.append(text_item(spec.label, x_card + ZONE_PAD, y_left[k] - LABEL_RAISE,
                                         LABEL_SIZE, ctx.theme.text, wire=in_ids[k]))
    if labels_left:
        for k, (spec, y) in enumerate(zip(left, y_left, strict=True)):
            if k in sourced or round(y, 1) in skip_left:
                continue
            if spec.label is not None:
                width = spec.label.measure(LABEL_SIZE).width
                left_labels.append(text_item(spec.label, zone_left - ZONE_PAD - width,
                                             y - LABEL_RAISE, LABEL_SIZE, ctx.theme.text,
                                             wire=in_ids[k]))
    if labels_right:
        for spec, y, leaving in zip(right, y_right, right_ends, strict=True):
            if spec.label is not None and round(y, 1) not in skip_right:
                right_labels.append(text_item(spec.label, end_x + ZONE_PAD, y - LABEL_RAISE,
                                              LABEL_SIZE, ctx.theme.text, wire=leaving.wire))
    items.extend(left_labels)
    items.extend(right_labels)
    if core_x < EPS:  # the core's own edge labels are this panel's edge labels
        left_labels.extend(moved.left_labels)
    if zone_right + width_right < EPS:
        right_labels.extend(moved.right_labels)

    left_ends = [End(y, wire, spec) for k, (y, wire, spec)
                 in enumerate(zip(y_left, in_ids, left, strict=True)) if k not in sourced]
    return Panel(total, left_ends, right_ends, items, boxes, anchors,
                 left_labels=left_labels, right_labels=right_labels, loops=moved.loops).fit()


def _join_shift(first: Panel, second: Panel) -> tuple[float, float]:
    """How `join` places `second` after `first`: the vertical shift of `second` and the
    width of the routing column between them."""
    differences = [a.y - b.y for a, b in zip(first.right, second.left, strict=True)]
    if differences:
        # Among equally good shifts: first the one that keeps straight the wires passing
        # through `second` unchanged (the main line beside a branch), then the lowest picture.
        # (found when a tie asks for it: most joins have one shift that suits every wire)
        through: list[list[float]] = []

        def cost(shift: float) -> float:
            if not through:
                passing = {e.wire for e in second.right} & {e.wire for e in second.left}
                through.append([d for d, b in zip(differences, second.left, strict=True)
                                if b.wire in passing and b.spec.kind != "sep"])
            straight = sum(1 for d in through[0] if abs(d - shift) < 0.01)
            return -1000.0 * straight + (max(first.bottom, second.bottom + shift)
                                         - min(first.top, second.top + shift))

        dy = best_offset(differences, [wire_weight(a.spec) for a in first.right], cost)
    else:
        dy = (first.top + first.bottom) / 2 - (second.top + second.bottom) / 2
    moves = [abs(d - dy) for d in differences]
    width = route_width(max(moves)) if moves and max(moves) > EPS else 0.0
    return dy, width


def join_outline(first: Panel, second: Panel) -> Panel:
    """The outline of `join(ctx, first, second)`: the same width, edges and vertical extent,
    nothing drawn. Where a wrapped composition breaks is decided on outlines, and only the
    rows it keeps are joined."""
    dy, width = _join_shift(first, second)
    # placed as `join` places `second` (`Panel.moved`), only its right edge and extent
    if abs(first.width + width) < 1e-9 and abs(dy) < 1e-9:
        right, top, bottom = second.right, second.top, second.bottom
    else:
        right, top, bottom = ends_moved(second.right, dy), second.top + dy, second.bottom + dy
    return Panel(first.width + width + second.width, first.left, right,
                 top=min(first.top, top), bottom=max(first.bottom, bottom))


def join(ctx: Context, first: Panel, second: Panel, *, reuse_first: bool = False) -> Panel:
    """`first ; second`: side by side, with a routing column where the wires disagree.

    `reuse_first`: the caller owns `first` and drops it, so its lists of items, boxes and
    anchors are extended in place instead of copied (a chain of n joins then costs O(n), not
    O(n^2))."""
    dy, width = _join_shift(first, second)
    items = first.items if reuse_first else list(first.items)
    # (its labels at the left only to drop those repeated, at the right only to keep them)
    placed = second.moved(first.width + width, dy,
                          left_labels=width == 0 and bool(first.right_labels),
                          right_labels=second.width > 0)
    second_items = placed.items
    if width == 0 and first.right_labels and placed.left_labels:
        # Straight through: the name just written on the left need not be written again.
        shown = {(round(t.y, 1), t.label) for t in first.right_labels}
        drop = {t for t in placed.left_labels if (round(t.y, 1), t.label) in shown}
        if drop:
            second_items = [it for it in opened(placed.items)
                            if not (isinstance(it, Text) and it in drop)]
    if width > 0:  # the routing column between them (none where every wire runs straight)
        heights = [(a.y, b.y + dy) for a, b in zip(first.right, second.left, strict=True)
                   if a.spec.kind != "sep"]
        for a, b in zip(first.right, second.left, strict=True):
            if a.spec.kind == "sep" and crossed((a.y, b.y + dy), heights):
                continue  # the column regroups the arrays: the separator stops at its edges
            items.append(wire_path(ctx, a.spec, a.wire, (first.width, a.y),
                                   [curve(first.width, a.y, first.width + width, b.y + dy)]))
    items.extend(second_items)
    if reuse_first:
        boxes, anchors = first.boxes, first.anchors
        boxes.extend(placed.boxes)
        anchors.extend(placed.anchors)
    else:
        boxes, anchors = first.boxes + placed.boxes, first.anchors + placed.anchors
    return Panel(
        first.width + width + second.width, first.left, placed.right, items, boxes, anchors,
        min(first.top, placed.top), max(first.bottom, placed.bottom),
        first.left_labels, placed.right_labels if second.width > 0 else first.right_labels,
        first.loops + placed.loops,
    )
