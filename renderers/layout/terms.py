"""The structure-preserving map from terms to panels: `layout` dispatches on the kind of
term. The kinds that nest other terms are laid out here: composition (left to right, joined
by routing), product (stacked, with dashed separators), block (framed or collapsed), scan
(framed, its carried states looping back over the frame), and a call drawn expanded with
`expand_calls`; the leaves are in `rewiring` and `broadcast`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import assert_never

from ncd import ir

from ..geometry import (
    EPS,
    LAYER_MARK,
    LAYER_WIRE,
    Anchor,
    AnchorEntry,
    BoxEntry,
    Circle,
    Drawn,
    Item,
    Loop,
    Path,
    Polygon,
    Stroke,
    Text,
    path_ends,
)
from ..glyphs import BoxGlyph, block_fill, glyph_of
from ..text import MAX_TITLE_CHARS, Label, Run, elide
from .broadcast import Wiring, broadcast_wiring, core_maps, layout_broadcasted
from .context import Context, TooWide
from .frames import collapsed, frame
from .options import (
    BLOCK_PAD,
    BRACKET,
    BREAK_MARK,
    CLEARANCE,
    CORE_PAD,
    EDGE_ZONE,
    LABEL_RAISE,
    LOOP_STEP,
    MARGIN,
    PITCH,
    ROW_GAP,
    SEPARATOR_ROOM,
    THIN,
    TITLE_SIZE,
)
from .order import drawing_order
from .panels import (
    End,
    Panel,
    Spec,
    array_specs,
    band_core_items,
    dot,
    dtype_shown,
    text_item,
    wire_path,
)
from .replay import REPLAYED
from .rewiring import layout_rearrangement, layout_reindexing
from .routing import assemble, join, join_outline


def layout(term: ir.Term, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """The panel of `term`, whose input wires have ids `in_ids` (replayed where a term of
    the same form was laid out before: `replay`)."""
    if ctx.replays is not None and isinstance(term, REPLAYED):
        return ctx.replays.layout(term, ctx, in_ids, laid_out)
    return laid_out(term, ctx, in_ids)


def laid_out(term: ir.Term, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """The panel of `term`, laid out."""
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
            return layout_call_or_broadcast(term, ctx, in_ids)
        case ir.Block():
            return layout_block(term, ctx, in_ids)
        case ir.Scan():
            return layout_scan(term, ctx, in_ids)
        case ir.Machine():
            return layout_machine(term, ctx, in_ids)
    assert_never(term)


def layout_identity(term: ir.Identity, ctx: Context, in_ids: Sequence[int]) -> Panel:
    specs = array_specs(term.dom, ctx)
    ends = [End(k * PITCH, wire, spec) for k, (wire, spec) in enumerate(zip(in_ids, specs,
                                                                          strict=True))]
    return Panel(0.0, ends, list(ends)).fit()


def layout_composed(term: ir.Composed, ctx: Context, in_ids: Sequence[int]) -> Panel:
    budget = composition_budget(ctx)
    if budget is not None:
        return layout_wrapped(term, ctx, in_ids, budget)
    panel: Panel | None = None
    owned = False
    ids = list(in_ids)
    for sub in _drawing_order(term, ctx):
        next_panel = layout(sub, ctx, ids)
        if panel is None:
            panel = next_panel
        else:  # from the second join on, `panel` is a join's own result: extended in place
            panel = join(ctx, panel, next_panel, reuse_first=owned)
            owned = True
        if ctx.give_up_beyond is not None and panel.width > ctx.give_up_beyond:
            raise TooWide(panel.width)
        ids = [e.wire for e in panel.right]
    if panel is None:
        return layout_identity(ir.Identity(dom=term.dom, cod=term.cod), ctx, in_ids)
    return panel


def _drawing_order(term: ir.Composed, ctx: Context) -> Sequence[ir.Term]:
    """`drawing_order` of the terms, found once per diagram where replays are kept."""
    if ctx.replays is None:
        return drawing_order(term.terms)
    return ctx.replays.drawing_order(term.terms, drawing_order)


SCRAP_SHARE = 0.25
"""A row of a wrapped composition narrower than this share of the budget is scrap: it stays
on the row before (or after) it."""


def composition_budget(ctx: Context) -> float | None:
    """The width a composition may take before it wraps: the diagram's budget less its
    margins and the label zones at its edges, and less the frames round it."""
    if ctx.options.width is None:
        return None
    frames = ctx.depth * 2 * (BLOCK_PAD + BRACKET + 5.0)
    return max(ctx.options.width - 2 * MARGIN - 2 * EDGE_ZONE - frames, 2 * BREAK_MARK)


def layout_wrapped(term: ir.Composed, ctx: Context, in_ids: Sequence[int],
                   budget: float) -> Panel:
    """A composition with a width budget: its terms side by side as long as they fit, then on
    a new row under the first, and so on. At each break the wires end at a numbered mark,
    labelled, and the next row starts from the same mark with the same labels."""
    panels: list[Panel] = []
    ids = list(in_ids)
    for sub in _drawing_order(term, ctx):
        panels.append(layout(sub, ctx, ids))
        ids = [e.wire for e in panels[-1].right]
    if not panels:
        return layout_identity(ir.Identity(dom=term.dom, cod=term.cod), ctx, in_ids)
    outlines: list[Panel] = []  # of the rows: decided on outlines, joined once chosen
    starts: list[int] = []
    row: Panel | None = None
    # A break leaves no scrap: a row is not closed while it is short, nor for a short rest
    # of the composition (one trailing sum on a row of its own reads worse than an overflow).
    scrap = SCRAP_SHARE * budget
    widths = [p.width for p in panels]
    nonnegative = all(w >= 0 for w in widths)
    for index, next_panel in enumerate(panels):
        if row is None:
            row = next_panel
            starts.append(index)
            continue
        joined = join_outline(row, next_panel)
        # A short rest still goes on a row of its own where it would overflow the budget:
        # an overflow shrinks every label of the diagram when it is printed. The width of
        # the rest is summed only where a break is considered (summing it at every term
        # made a long chain quadratic).
        overflow = joined.width > budget + EDGE_ZONE
        if joined.width > budget - 2 * BREAK_MARK and row.width >= scrap \
                and (overflow or _rest_reaches(widths, index, scrap, nonnegative)):
            outlines.append(row)
            row = next_panel
            starts.append(index)
        else:
            row = joined
    assert row is not None
    outlines.append(row)
    if len(outlines) == 1:
        return _joined(ctx, panels)
    rows: list[Panel] | None = None
    # As many rows, as even as they can be: a full row and a short one become two halves.
    balanced = _balanced_starts([p.width for p in panels], len(outlines))
    if balanced is not None and balanced != starts:
        even = [_joined(ctx, panels[a:b]) for a, b in
                zip(balanced, [*balanced[1:], len(panels)], strict=True)]
        if max(r.width for r in even) <= max(r.width for r in outlines) + EPS:
            rows = even
    if rows is None:
        rows = [_joined(ctx, panels[a:b])
                for a, b in zip(starts, [*starts[1:], len(panels)], strict=True)]
    last = len(rows) - 1
    # The wires at each break are named on both sides of it; a separator does not bend into
    # the break (its mark lists the wires): it stops where its arrays leave their row.
    rows = [assemble(ctx, [e.spec for e in r.left], [e.wire for e in r.left],
                     list(range(len(r.left))), r, list(range(len(r.right))),
                     [e.spec for e in r.right], labels=i > 0, labels_right=i < last,
                     skip_left={round(t.y + LABEL_RAISE, 1) for t in r.left_labels},
                     skip_right={round(t.y + LABEL_RAISE, 1) for t in r.right_labels},
                     bend_separators=False)
            for i, r in enumerate(rows)]
    numbers = [ctx.next_break() for _ in range(last)]
    content = max(r.width + (BREAK_MARK if i > 0 else 0.0) for i, r in enumerate(rows))
    width = content + BREAK_MARK
    items: list[Drawn] = []
    boxes: list[BoxEntry] = []
    anchors: list[AnchorEntry] = []
    loops: list[Loop] = []
    placed: list[Panel] = []
    top = rows[0].top
    for i, r in enumerate(rows):
        x0 = BREAK_MARK if i > 0 else 0.0
        moved = r.moved(x0, top - r.top, left_labels=i == 0, right_labels=False)
        top = moved.bottom + ROW_GAP
        placed.append(moved)
        items.extend(moved.items)
        boxes.extend(moved.boxes)
        anchors.extend(moved.anchors)
        loops.extend(moved.loops)
        right_x = x0 + r.width
        stop = content if i < last else width
        if stop > right_x + EPS:  # the row's wires run on to the common right edge
            # (a separator only where it reaches the row's edge: one that stopped before the
            # routing to the break stays stopped)
            reaching = {wire for wire, x in path_ends(moved.items, "sep")
                        if abs(x - right_x) < EPS}
            for end in moved.right:
                if end.spec.kind == "sep" and end.wire not in reaching:
                    continue
                items.append(wire_path(ctx, end.spec, end.wire, (right_x, end.y),
                                       [(stop, end.y)]))
        if i < last:
            items.extend(_break_mark(ctx, content, moved.right, numbers[i], anchors, "right"))
        if i > 0:
            items.extend(_break_mark(ctx, x0, moved.left, numbers[i - 1], anchors, "left"))
    first, final = placed[0], placed[-1]
    right = list(final.right)
    return Panel(width, list(first.left), right, items, boxes, anchors,
                 left_labels=first.left_labels, loops=loops).fit()


def _rest_reaches(widths: Sequence[float], start: int, least: float, nonnegative: bool
                  ) -> bool:
    """Whether `sum(widths[start:]) >= least`, reading only as far as it takes: on a long
    chain a break is considered at nearly every term, and summing the whole rest each time
    made it quadratic. When every width is `nonnegative`, a partial sum clearly past `least`
    (by more than any rounding of it) decides; otherwise the whole rest is summed, as before,
    so that the answer is `sum`'s to the last bit."""
    if nonnegative:
        total = 0.0
        for width in itertools.islice(widths, start, None):
            total += width
            if total > least + 1e-9 * (abs(least) + total):
                return True
    return sum(widths[start:]) >= least


ROUTE_ESTIMATE = 40.0
"""What a routing column between two terms is reckoned to take when rows are balanced."""


def _balanced_starts(widths: Sequence[float], count: int) -> list[int] | None:
    """Where `count` rows start so that the widest is as narrow as it can be (terms of
    `widths` kept in order, a routing column reckoned between neighbours), or None."""
    def split(limit: float) -> list[int]:
        starts = [0]
        width = widths[0]
        for index in range(1, len(widths)):
            if width + ROUTE_ESTIMATE + widths[index] > limit:
                starts.append(index)
                width = widths[index]
            else:
                width += ROUTE_ESTIMATE + widths[index]
        return starts

    low = max(max(widths), (sum(widths) + ROUTE_ESTIMATE * (len(widths) - count)) / count)
    high = sum(widths) + ROUTE_ESTIMATE * len(widths)
    if len(split(high)) > count:
        return None
    for _ in range(24):
        middle = (low + high) / 2
        if len(split(middle)) <= count:
            high = middle
        else:
            low = middle
    found = split(high)
    return found if len(found) == count else None


def _joined(ctx: Context, panels: Sequence[Panel]) -> Panel:
    """Panels side by side (each already laid out with the ids the one before leaves)."""
    row = panels[0]
    for index, panel in enumerate(panels[1:]):
        row = join(ctx, row, panel, reuse_first=index > 0)
    return row


def _break_mark(ctx: Context, x: float, ends: Sequence[End], number: int,
                anchors: list[AnchorEntry], side: str) -> list[Item]:
    """The numbered mark where the wires `ends` leave a row (`side` right) or enter the next
    (`side` left) at `x`: a thin bracket spanning them and the break's number beside it."""
    items: list[Item] = []
    ys = [e.y for e in ends] or [0.0]
    for y in ys:
        anchors.append(Anchor(x, y))
    y0, y1 = min(ys) - 6.0, max(ys) + 6.0
    tick = 4.0 if side == "right" else -4.0
    items.append(Path((x - tick, y0), ((x, y0), (x, y1), (x - tick, y1)),
                      Stroke(ctx.theme.ink, 1.4), layer=LAYER_MARK))
    label = Label.plain(str(number))
    box = label.measure(TITLE_SIZE)
    cx = x + (BREAK_MARK / 2 if side == "right" else -BREAK_MARK / 2)
    cy = (y0 + y1) / 2
    items.append(Circle(cx, cy, 7.5, ctx.theme.box_fill, Stroke(ctx.theme.ink, 1.0)))
    items.append(text_item(label, cx - box.width / 2, cy + (box.ascent - box.descent) / 2,
                           TITLE_SIZE, ctx.theme.text, role="title"))
    return items


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

    items: list[Drawn] = []
    boxes: list[BoxEntry] = []
    anchors: list[AnchorEntry] = []
    left: list[End] = []
    right: list[End] = []
    left_labels: list[Text] = []
    right_labels: list[Text] = []
    loops: list[Loop] = []
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
        loops.extend(panel.loops)
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
                 right_labels=right_labels, loops=loops).fit()


def expanded_definition(term: ir.Broadcasted, ctx: Context) -> ir.Definition | None:
    """The definition a call is drawn as, with `expand_calls`: None for an operation that is
    not a call, a call of an unknown definition, or one already being expanded around it."""
    if not (isinstance(glyph_of(term.op), BoxGlyph) and isinstance(term.op, ir.CallOp)
            and ctx.options.expand_calls and term.op.definition not in ctx.calls):
        return None
    if ctx.nested_calls is not None and len(ctx.calls) > ctx.nested_calls:
        return None  # folded: the drawing is too wide with every call expanded
    try:
        return ctx.program.definition(term.op.definition)
    except KeyError:
        return None


def layout_call_or_broadcast(term: ir.Broadcasted, ctx: Context,
                             in_ids: Sequence[int]) -> Panel:
    """A broadcasted operation, or a call drawn as its definition's diagram."""
    wiring = broadcast_wiring(term, ctx, in_ids)
    definition = expanded_definition(term, ctx)
    if definition is not None:
        return layout_expanded_call(term, definition, ctx, in_ids, wiring)
    return layout_broadcasted(term, ctx, in_ids, wiring)


def layout_expanded_call(term: ir.Broadcasted, definition: ir.Definition, ctx: Context,
                         in_ids: Sequence[int], wiring: Wiring) -> Panel:
    """A call drawn as the callee's own diagram, framed and titled with its name; the call's
    batch axes (its tiling axes) run in the band above the frame."""
    assert isinstance(term.op, ir.CallOp)
    left, right, band_rows = wiring.left, wiring.right, wiring.band_rows
    in_band, out_band = wiring.in_band, wiring.out_band
    body_left, body_right = wiring.body_left, wiring.body_right
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
    # A call with its own parameters per index keeps saying so when drawn expanded.
    title = elide(definition.name) + (f", each {term.op.each}" if term.op.each else "")
    block = ir.Block(dom=definition.domain, cod=definition.codomain, title=title,
                     body=definition.body)
    framed = layout_block(block, inner.with_depth(ctx.depth), ids, collapsible=False)
    nb = len(band_rows)
    if nb:
        framed = framed.moved(0.0, band_rows[-1].y + CLEARANCE + 4.0 - framed.top)
    width = framed.width + 2 * CORE_PAD
    framed = framed.moved(CORE_PAD, 0.0)
    items = band_core_items(ctx, band_rows, width)
    for end in framed.left:
        items.append(wire_path(ctx, end.spec, end.wire, (0.0, end.y), [(CORE_PAD, end.y)]))
    for end in framed.right:
        items.append(wire_path(ctx, end.spec, end.wire, (width - CORE_PAD, end.y),
                               [(width, end.y)]))
    items.extend(framed.items)
    core = Panel(width, [*band_rows, *framed.left], [*band_rows, *framed.right], items,
                 framed.boxes, framed.anchors, loops=framed.loops).fit()
    in_map, out_map = core_maps(left, right, in_band, out_band, body_in, body_out, nb)
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
        return collapsed(term, title, ctx, in_ids, "block")
    inner = ctx.with_depth(depth)
    body = layout(term.body, inner, in_ids)
    return frame(ctx, body, title, term.repeat, block_fill(ctx.theme, depth - 1, term.color),
                 dashed=False)


def layout_machine(term: ir.Machine, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """The body (the call of the machine's definition) inside a dashed frame titled with the
    axis and its blocks in the order they are solved: `machine n: 4|4|8`, or `backward
    machine n: 8|4|4` for the reverse pass. The body reads the machine's inputs as they are;
    its results are the machine's, matched by array and axis name."""
    depth = ctx.depth + 1
    blocks = "|".join(str(n) for n in term.blocks)
    title = Label((Run("backward machine " if term.backward else "machine ", "roman"),
                   *Label.axis(term.axis.name).runs, Run(f": {blocks}", "roman")))
    limit = ctx.options.collapse_depth
    if limit is not None and depth > limit:
        return collapsed(term, title, ctx, in_ids, "machine")
    body = layout(term.body, ctx.with_depth(depth), in_ids)
    framed = frame(ctx, body, title, 1, ctx.theme.blocks[depth % len(ctx.theme.blocks)],
                   dashed=True)
    if tuple(term.body.cod) == term.cod:
        return framed
    left = array_specs(term.dom, ctx)
    right = array_specs(term.cod, ctx)
    index_out = {(s.array, s.kind, s.name): i
                 for i, s in enumerate(array_specs(term.body.cod, ctx))}
    out_map: list[int | None] = [index_out.get((s.array, s.kind, s.name)) for s in right]
    return assemble(ctx, left, in_ids, list(range(len(left))), framed, out_map, right)


def layout_scan(term: ir.Scan, ctx: Context, in_ids: Sequence[int]) -> Panel:
    """The step inside a dashed frame titled `scan over l` (`reverse scan over l` for one run
    from the last index). The carried states feed back: each runs from the step's output over
    the top of the frame, an arrow pointing back, into the step's input. The scanned axis of
    the sequences runs in a band under the frame, straight from the inputs to the stacked
    outputs (a tiling wire: the step never sees it)."""
    depth = ctx.depth + 1
    axis = term.axis.name
    # A reverse scan (the backward pass of one) runs from the last index to the first.
    title = Label((Run("reverse scan over " if term.reverse else "scan over ", "roman"),
                   *Label.axis(axis).runs))
    limit = ctx.options.collapse_depth
    if limit is not None and depth > limit:
        return collapsed(term, title, ctx, in_ids, "scan")
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
    mark = Label.plain("\u21ba" if term.reverse else "\u21bb")
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
    items = band_core_items(ctx, [band], width)
    for end in framed.left:
        items.append(wire_path(ctx, end.spec, end.wire, (0.0, end.y), [(pad, end.y)]))
    for end in framed.right:
        items.append(wire_path(ctx, end.spec, end.wire, (width - pad, end.y),
                               [(width, end.y)]))
    items.extend(framed.items)
    anchors = list(framed.anchors)
    frame_top = framed.top
    loops = list(framed.loops)
    for level, array in enumerate(carried):
        # The loop spans the whole state: its legs run down across every wire of the carried
        # array, tied to each by a dot, so that a state of several axes goes back as a whole.
        ys_in = [e.y for e in framed.left if e.spec.array == array and e.spec.kind != "sep"]
        ys_out = [e.y for e in framed.right if e.spec.array == array and e.spec.kind != "sep"]
        y_in, y_out = max(ys_in), max(ys_out)
        inset = pad - 4.0 - LOOP_STEP * level
        x_in, x_out = inset, width - inset
        y_top = frame_top - LOOP_STEP * (level + 1) + 1.0
        r = min(4.0, (min(ys_in) - y_top) / 2, (min(ys_out) - y_top) / 2)
        wire = ctx.fresh()
        loop = Path((x_out, y_out), (
            (x_out, y_top + r), (x_out, y_top + r * 0.45, x_out - r * 0.45, y_top, x_out - r,
                                 y_top),
            (x_in + r, y_top), (x_in + r * 0.45, y_top, x_in, y_top + r * 0.45, x_in,
                                y_top + r),
            (x_in, y_in)), Stroke(ctx.theme.ink, THIN), wire=wire, role="dtype",
            layer=LAYER_WIRE)
        items.append(loop)
        loops.append(Loop(wire, x_in, x_out, tuple(ys_in), tuple(ys_out)))
        mid = (x_in + x_out) / 2
        items.append(Polygon(((mid - 3.0, y_top), (mid + 2.5, y_top - 2.4),
                              (mid + 2.5, y_top + 2.4)), ctx.theme.ink, None, layer=LAYER_MARK))
        for x, ys in ((x_in, ys_in), (x_out, ys_out)):
            for y in ys:
                items.append(dot(ctx, x, y))
                anchors.append(Anchor(x, y))
    core = Panel(width, [band, *framed.left], [band, *framed.right], items, framed.boxes,
                 anchors, loops=loops).fit()
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
