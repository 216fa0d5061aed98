"""Broadcasted operations: the base operation's glyph on its target wires (a box, the
junction of a sum or product, the cups of a contraction with its learned operands as cards),
the tiling wires running straight past it in a band above, meeting at a dot where several
inputs share a degree axis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import assert_never

from ncd import ir

from ..annotate import shaded
from ..geometry import (
    LAYER_WIRE,
    Anchor,
    AnchorEntry,
    Box,
    Circle,
    Drawn,
    Path,
    PortPoint,
    Rect,
    Stroke,
)
from ..glyphs import BoxGlyph, CupsGlyph, JunctionGlyph, glyph_of
from ..text import Label
from .context import Context
from .options import (
    CLEARANCE,
    CORE_PAD,
    INLINE_GAP,
    INLINE_HEIGHT,
    LABEL_SIZE,
    NOTE_LINE,
    NOTE_SIZE,
    PITCH,
    ROW_PAD,
    RenderOptions,
)
from .panels import (
    End,
    Panel,
    Source,
    Spec,
    array_specs,
    arrowhead,
    band_core_items,
    curve,
    dot,
    dtype_shown,
    stroke_for,
    text_item,
    wire_path,
)
from .routing import assemble

DECK_STEP = 3.5
"""How far each box of a deck (a call with its own parameters per index) stands behind the
next, up and to the right."""


def _degree_of(port: ir.Port, name: str, degree: Sequence[str]) -> str:
    """The degree axis that tiling axis `name` of `port` is read at."""
    codomain = port.reindexing.codomain.axes
    for index, axis in enumerate(codomain):
        if axis.name != name:
            continue
        row = port.reindexing.matrix[index]
        # The one axis it reads; for a non-rearranging read (not produced by elaboration),
        # the band of the first axis it involves.
        first = next((i for i, c in enumerate(row) if c), None)
        if first is not None:
            return port.reindexing.domain.axes[first].name
        break
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
    lowered: list[str] = []
    if isinstance(term.op, ir.EinsumOp) and term.params:
        # A learned operand's card sits under the inputs: the axes only it brings (`o` of
        # `W[o, c, w]`) go last, next to the card, so its wires need not cross the inputs'.
        read = {name for port in term.inputs for name in port.tiling}
        lowered = [n for n in order if n not in read]
        order = [n for n in order if n in read]
    return fewest_crossings(term, order) + lowered


EXACT_BAND = 6
"""Up to this many band rows every order is tried; beyond, neighbours are swapped while that
removes crossings."""


def _edge_targets(term: ir.Broadcasted, ports: Sequence[ir.Port], inputs: bool,
                  degree: Sequence[str]) -> list[tuple[str | None, int]]:
    """For each wire of one edge, top to bottom: the band row it runs in (a degree axis), or
    None and its place among the wires that enter (or leave) the operation itself."""
    targets: list[tuple[str | None, int]] = []
    body = 0
    for port in ports:
        for name in port.array.names:
            if name in port.targets:
                targets.append((None, body))
                body += 1
            else:
                targets.append((_degree_of(port, name, degree) if inputs else name, 0))
        if dtype_shown(port.array):
            targets.append((None, body))
            body += 1
    return targets


def _inversions(keys: Sequence[int]) -> int:
    """Pairs drawn in the other order than they are stacked: the crossings of a routing
    column whose wires run from their place in `keys`' order to row `keys[i]`. Wires into
    one row meet at a dot and do not cross."""
    return sum(1 for i, a in enumerate(keys) for b in keys[i + 1:] if a > b)


def fewest_crossings(term: ir.Broadcasted, order: list[str]) -> list[str]:
    """The band rows `order` restacked so that the fewest tiling wires cross on their way in
    and out of the band (the source order where nothing is gained)."""
    if len(order) < 2:
        return order
    degree = list(term.degree.names)
    left = _edge_targets(term, term.inputs, True, degree)
    right = _edge_targets(term, term.outputs, False, degree)

    def cost(trial: Sequence[str]) -> int:
        row = {name: i for i, name in enumerate(trial)}
        bottom = len(degree)
        total = 0
        for targets in (left, right):
            keys = [row.get(name, 0) if name is not None else bottom + seq
                    for name, seq in targets]
            total += _inversions(keys)
        return total

    best, best_cost = list(order), cost(order)
    if best_cost == 0:
        return best
    if len(order) <= EXACT_BAND:
        for permuted in permutations(order):
            c = cost(permuted)
            if c < best_cost:
                best, best_cost = list(permuted), c
        return best
    improved = True
    while improved:  # neighbours swapped while that helps: ends, since the cost falls
        improved = False
        for i in range(len(best) - 1):
            swapped = list(best)
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
            c = cost(swapped)
            if c < best_cost:
                best, best_cost, improved = swapped, c, True
    return best


def expected_ports(term: ir.Broadcasted, options: RenderOptions) -> int:
    """The ports a broadcast's box needs, from the IR alone: each target axis of each input
    and output, each datatype wire the operation consumes or makes, each parameter drawn."""
    def side(ports: Sequence[ir.Port]) -> int:
        count = sum(len(p.targets) + dtype_shown(p.array) for p in ports)
        return count if count else 1  # a scalar operation: the datatype stub
    # An operation of parameters alone (a parameter put on a wire) has no datatype stub in.
    total = (side(term.inputs) if term.dom or not term.params else 0) + side(term.outputs)
    return total + len(drawn_params(term, options))


def drawn_params(term: ir.Broadcasted, options: RenderOptions) -> tuple[ir.Port, ...]:
    """The parameters drawn entering a box from below: all of them with `show_params`; else
    only those the glyph does not stand for, the bias of `linear[..., bias]` (its card names
    the weight alone). A parameter put on a wire is its own card: none enters it."""
    if isinstance(term.op, ir.ParameterOp | ir.BufferOp):
        return ()
    if options.show_params:
        return term.params
    if isinstance(term.op, ir.LinearOp) and term.op.bias:
        return term.params[1:]
    return ()


@dataclass(frozen=True)
class Wiring:
    """Where the wires of a broadcasted operation go: its edge wires (`left`, `right`), the
    band rows of its degree axes, which edge wires run in the band (`in_band`, `out_band`:
    wire -> band row) and which enter or leave the operation itself (`body_left`,
    `body_right`)."""

    left: list[Spec]
    right: list[Spec]
    band_rows: list[End]
    in_band: dict[int, int]
    out_band: dict[int, int]
    body_left: list[int]
    body_right: list[int]


def broadcast_wiring(term: ir.Broadcasted, ctx: Context, in_ids: Sequence[int]) -> Wiring:
    """Sort a broadcast's wires into the band (tiling) and the operation (targets)."""
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
    band_rows: list[End] = []
    for i, name in enumerate(band):
        wire = in_ids[feeders[i][0]] if len(feeders[i]) == 1 else ctx.fresh()
        axis = next((a for a in term.degree.axes if a.name == name), None)
        label = ctx.axis_label(axis) if axis is not None else Label.axis(name)
        band_rows.append(End(i * PITCH, wire, Spec("axis", 0, name, label)))
    return Wiring(left, right, band_rows, in_band, out_band, body_left, body_right)


def layout_broadcasted(term: ir.Broadcasted, ctx: Context, in_ids: Sequence[int],
                       wiring: Wiring) -> Panel:
    """The operation's glyph on its target wires: the cups of a contraction, the junction of
    a sum or product, or a box; the tiling wires in the band above it."""
    glyph = glyph_of(term.op)
    left, right, band_rows = wiring.left, wiring.right, wiring.band_rows
    in_band, out_band = wiring.in_band, wiring.out_band
    body_left, body_right = wiring.body_left, wiring.body_right
    match glyph:
        case CupsGlyph():
            return _einsum(term, ctx, in_ids, left, right, band_rows, in_band, out_band,
                           body_left)
        case JunctionGlyph():
            return _junction(term, glyph, ctx, in_ids, left, right, band_rows, in_band,
                             out_band)
        case BoxGlyph():
            return _boxed(term, glyph, ctx, in_ids, left, right, band_rows, in_band, out_band,
                          body_left, body_right)
    assert_never(glyph)


def cups_position(specs: Sequence[Spec], in_band: dict[int, int], contracted: Sequence[int],
                  band: Sequence[int]) -> int | None:
    """Where the block of a contraction's cup rows (`contracted`, spec indices in drawing
    order) goes among the band rows `band` (indices, top to bottom): the band row it goes
    above, or None for under them all (the default, kept on ties). Counted on the left
    routing column: a wire crosses another drawn in the other order."""
    if not contracted or not band:
        return None
    cup_rank = {k: n for n, k in enumerate(contracted)}

    def cost(at: int) -> int:
        rank = {row: n + (len(contracted) if n >= at else 0) for n, row in enumerate(band)}
        keys = [at + cup_rank[k] if k in cup_rank else rank[in_band[k]]
                for k in range(len(specs)) if k in cup_rank or in_band.get(k) in rank]
        return _inversions(keys)

    best, best_cost = len(band), cost(len(band))
    for at in range(len(band) - 1, -1, -1):
        c = cost(at)
        if c < best_cost:
            best, best_cost = at, c
    return band[best] if best < len(band) else None


def band_split(left: Sequence[Spec], right: Sequence[Spec], in_band: dict[int, int],
               out_band: dict[int, int], count: int) -> int:
    """How many of `count` band rows pass above a box (the rest pass under it) so that the
    fewest wires cross on the way in and out: all of them where nothing is gained."""
    def cost(above: int) -> int:
        total = 0
        for specs, band in ((left, in_band), (right, out_band)):
            keys: list[int] = []
            body = 0
            for k, spec in enumerate(specs):
                if k in band:
                    row = band[k]
                    keys.append(row if row < above else 2 * len(specs) + count + row)
                elif spec.kind != "sep":
                    keys.append(count + body)
                    body += 1
            total += _inversions(keys)
        return total

    best, best_cost = count, cost(count)
    for above in range(count - 1, -1, -1):
        c = cost(above)
        if c < best_cost:
            best, best_cost = above, c
    return best


def core_maps(left: Sequence[Spec], right: Sequence[Spec], in_band: dict[int, int],
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
    note = ctx.options.note(term)
    note_labels = [Label.plain(line) for line in note.lines] if note is not None else []
    if note is not None:
        theme = shaded(theme, note.level)
    params = drawn_params(term, ctx.options)
    param_labels = [Label.axis(p.name or "W") for p in params]
    param_slot = max((lab.measure(LABEL_SIZE).width + 8.0 for lab in param_labels),
                     default=0.0)
    width = max(width, param_slot * len(params))

    nb = len(band_rows)
    stub_in = not body_left and (bool(term.dom) or not term.params)
    stub_out = not body_right
    inline = stub_in and stub_out and nb > 0 and not params
    legend = glyph.legend(term.op, term) if not inline else None
    # The band rows after `above` pass under the box instead, and under what hangs from it
    # (its parameters' names, its legend): the tiling wires stacked below the target ones
    # then need not cross them.
    above = nb if inline or glyph.stacked(term.op) \
        else band_split(left, right, in_band, out_band, nb)
    hanging = 0.0
    if params:
        hanging = 20.0 + max(m.ascent + m.descent
                             for m in (label.measure(LABEL_SIZE) for label in param_labels))
    if legend is not None:
        measured = legend.measure(LABEL_SIZE)
        hanging = max(hanging, 3.0 + measured.ascent + measured.descent)
    if inline:
        # A function of the datatype alone (elementwise, scale, dropout on an array with
        # axes): a small box on a short arrowed datatype wire tucked just under the array's
        # bundle, which passes by above, so that it visibly acts on that array. (Too small
        # for figures: only its shade shows them.)
        height = INLINE_HEIGHT
        note_labels = []
    elif note_labels:
        widest = max(label.measure(NOTE_SIZE).width for label in note_labels)
        width = max(width, widest + 10.0)
        height += NOTE_LINE * len(note_labels)
    y0 = above * PITCH if above else 0.0
    deck = 2 * DECK_STEP if glyph.stacked(term.op) else 0.0
    box_top = y0 + (n_rows - 1) * PITCH / 2 - height / 2
    if inline:
        box_top = band_rows[-1].y + INLINE_GAP
    elif above and box_top < band_rows[above - 1].y + CLEARANCE + deck:
        y0 += band_rows[above - 1].y + CLEARANCE + deck - box_top
        box_top = y0 + (n_rows - 1) * PITCH / 2 - height / 2
    if above < nb:  # on the pitch grid of the box's rows, clear of the box
        rows_down = math.ceil((box_top + height + hanging + CLEARANCE - y0) / PITCH - 1e-6)
        band_rows = band_rows[:above] + [
            End(y0 + (rows_down + n) * PITCH, row.wire, row.spec)
            for n, row in enumerate(band_rows[above:])]

    pad_left = CORE_PAD + (10.0 if stub_in else 0.0)
    pad_right = CORE_PAD + (10.0 if stub_out else 0.0) + deck
    # Text under the box (a mask's conditions): the core is wide enough for it.
    legend_box = legend.measure(LABEL_SIZE) if legend is not None else None
    if legend_box is not None:
        overhang = max(0.0, (legend_box.width - width) / 2 - CORE_PAD + 2.0)
        pad_left += overhang
        pad_right += overhang
    bx = pad_left
    core_w = bx + width + pad_right
    box_id = ctx.fresh()
    items: list[Drawn] = band_core_items(ctx, band_rows, core_w)
    ports: list[PortPoint] = []
    anchors: list[AnchorEntry] = []
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
        if glyph.stacked(term.op):
            # A deck: the copies behind, each with its own parameters (`f[each e](X)`).
            for step in (2, 1):
                items.extend(glyph.shape(bx + DECK_STEP * step, box_top - DECK_STEP * step,
                                         width, height, theme))
        items.extend(glyph.shape(bx, box_top, width, height, theme))
    text_centre = centre - NOTE_LINE * len(note_labels) / 2
    if caption is not None and cap_box is not None:
        cx = bx + width / 2 + glyph.caption_dx * width - cap_box.width / 2
        baseline = text_centre + (cap_box.ascent - cap_box.descent) / 2
        items.append(text_item(caption, cx, baseline, glyph.caption_size, theme.text,
                               owner=box_id, role="glyph"))
    note_top = text_centre + (cap_box.height / 2 if cap_box is not None else 0.0) + 2.0
    for number, label in enumerate(note_labels):
        measured = label.measure(NOTE_SIZE)
        items.append(text_item(label, bx + width / 2 - measured.width / 2,
                               note_top + number * NOTE_LINE + measured.ascent, NOTE_SIZE,
                               theme.text, owner=box_id, role="glyph"))
    if legend is not None and legend_box is not None:
        items.append(text_item(legend, bx + width / 2 - legend_box.width / 2,
                               box_top + height + 3.0 + legend_box.ascent, LABEL_SIZE,
                               theme.text, role="caption"))
    # Parameters enter from below, each from a small open circle under its name.
    for i, label in enumerate(param_labels):
        px = bx + (i + 0.5) * width / len(params)
        bottom = box_top + height
        wire = ctx.fresh()
        items.append(Path((px, bottom + 14.0), ((px, bottom),), stroke_for(ctx, "param"),
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
    in_map, out_map = core_maps(left, right, in_band, out_band, body_in, body_out, nb)
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)


def _junction(term: ir.Broadcasted, glyph: JunctionGlyph, ctx: Context, in_ids: Sequence[int],
              left: list[Spec], right: list[Spec], band_rows: list[End],
              in_band: dict[int, int], out_band: dict[int, int]) -> Panel:
    """Addition and multiplication. Arrays with axes: their wires converge and meet at dots
    on the band, and the mark (`+`, or a dot in a circle) sits between each two of them where
    they start to converge, the separator between them running straight into it (the
    published style: the arrays visibly meet at the operation). A parameter operand (`X * g`,
    `Y + bias`) is a card at the left edge under the inputs, drawn with or without
    `show_params` (it is an operand, not a weight the glyph stands for): its wires join the
    band rows of its axes at dots, and a separator from the card's foot runs into the mark
    just below the band, as do the datatype wires of scalar operands. A single card whose
    wires cross fewer of the inputs' from above (`_card_above`) is drawn above them instead,
    the mark between it and them."""
    band_index = {row.spec.name: i for i, row in enumerate(band_rows)}
    degree = list(term.degree.names)
    # A single card whose wires join band rows high in the bundle goes above the inputs, with
    # the mark between it and them, where its wires cross fewer of the inputs' on the way in.
    above = _card_above(term, left, in_band, band_index, degree)
    specs = list(left)
    ids = list(in_ids)
    in_band = dict(in_band)
    if above:
        param = term.params[0]
        axes = {axis.name: axis for axis in param.array.shape.axes}
        names = sorted(param.array.names,
                       key=lambda n: band_index.get(_degree_of(param, n, degree), 0))
        shift = len(names) + 1
        specs = [Spec("axis", -1, n, ctx.axis_label(axes[n])) for n in names] \
            + [Spec("sep", -1, "", None)] + specs
        ids = [ctx.fresh() for _ in range(shift)] + ids
        in_band = {k + shift: row for k, row in in_band.items()}
        in_band.update({k: band_index.get(_degree_of(param, n, degree), 0)
                        for k, n in enumerate(names)})
        band_rows = _merged_band_rows(ctx, band_rows, in_band, ids, in_ids)
        nb = len(band_rows)
        width = 12.0
        core = Panel(width, list(band_rows), list(band_rows),
                     band_core_items(ctx, band_rows, width)).fit()
        in_map, out_map = core_maps(specs, right, in_band, out_band, {}, {}, nb)
        marked = {k for k, spec in enumerate(specs) if spec.kind == "sep"}
        align = [k for k, spec in enumerate(specs) if spec.array == 0]
        return assemble(ctx, specs, ids, in_map, core, out_map, right, align_left=align,
                        sources=[Source(Label.axis(param.name or "W"), 0, shift)],
                        mark=lambda x, y: glyph.mark(x, y, ctx.theme), marked=marked)
    # Between arrays only: a card (and a scalar's datatype wire) has no separator above it
    # to end on a mark in the gap, so there the mark stays on the band.
    between = not term.params and any(spec.kind == "sep" for spec in left) \
        and not any(spec.kind == "dtype" for spec in left)
    body_in = {} if between else \
        {k: 0 for k, spec in enumerate(left) if spec.kind in ("sep", "dtype")}
    marked = {k for k, spec in enumerate(left) if spec.kind == "sep"} if between else set()
    sources: list[Source] = []
    for number, param in enumerate(term.params):
        first = len(specs)
        axes = {axis.name: axis for axis in param.array.shape.axes}

        def row_of(name: str, param: ir.Port = param) -> int:
            return band_index.get(_degree_of(param, name, degree), 0)

        for name in sorted(param.array.names, key=row_of):
            in_band[len(specs)] = row_of(name)
            specs.append(Spec("axis", -1 - number, name, ctx.axis_label(axes[name])))
            ids.append(ctx.fresh())
        if dtype_shown(param.array):  # a scalar parameter: its datatype wire runs into the mark
            body_in[len(specs)] = 0
            specs.append(Spec("dtype", -1 - number, "", ctx.dtype_label(param.array.dtype)))
            ids.append(ctx.fresh())
        elif first:  # under the card's axis wires, so that it rises to the mark crossing none
            body_in[len(specs)] = 0
            specs.append(Spec("sep", -1 - number, "", None))
            ids.append(ctx.fresh())
        sources.append(Source(Label.axis(param.name or "W"), first, len(specs) - first))
    if term.params:  # a band row fed by a card as well as an input merges at a dot
        band_rows = _merged_band_rows(ctx, band_rows, in_band, ids, in_ids)
    # The main line of a residual (`X = X + f(X)`: the input bound to the result's name) runs
    # on through the junction as the same wire, so a chain keeps it straight.
    main = next((index for index, port in enumerate(term.inputs)
                 if port.name is not None and port.name == term.outputs[0].name), None)
    if main is not None:
        carried = {row: in_ids[k] for k, row in in_band.items()
                   if k < len(left) and left[k].array == main}
        band_rows = [End(row.y, carried.get(i, row.wire), row.spec)
                     for i, row in enumerate(band_rows)]
    nb = len(band_rows)
    # The sum continues its main line straight: the input that is the variable the result
    # is bound to (`X = X + f(X)`); otherwise the result takes the height of the first input
    # (its wires run straight and the others join it), so a chain of merges stays level
    # instead of drifting.
    straight = main if main is not None else 0
    align = [k for k, s in enumerate(specs) if s.array == straight]
    if between:
        width = 12.0
        core = Panel(width, list(band_rows), list(band_rows),
                     band_core_items(ctx, band_rows, width)).fit()
        in_map, out_map = core_maps(specs, right, in_band, out_band, {}, {}, nb)
        return assemble(ctx, specs, ids, in_map, core, out_map, right, align_left=align,
                        sources=sources, mark=lambda x, y: glyph.mark(x, y, ctx.theme),
                        marked=marked)
    y_j = nb * PITCH - PITCH * 0.35 if nb else 0.0
    width = 24.0
    cx = 14.0
    items = band_core_items(ctx, band_rows, width)
    items.extend(glyph.mark(cx, y_j, ctx.theme))
    # Scalar operands' datatype wires run on into the mark as a datatype wire; otherwise the
    # separators below the band do, as a separator.
    scalars = any(specs[k].kind == "dtype" for k in body_in)
    joint_spec = Spec("dtype" if scalars else "sep", 0, "", None)
    joint = End(y_j, ctx.fresh(), joint_spec, joint=True)
    # The mark ends the joint; the scalar wires meet where it starts (an anchor, as a dot).
    items.append(wire_path(ctx, joint_spec, joint.wire, (0.0, y_j), [(cx - 7.0, y_j)],
                           free=scalars))
    anchors: list[AnchorEntry] = [Anchor(cx, y_j), *([Anchor(0.0, y_j)] if scalars else [])]
    core_left = [*band_rows, joint]
    core_right = list(band_rows)
    body_out: dict[int, int] = {}
    for k, spec in enumerate(right):
        if spec.kind == "dtype":  # a scalar sum: its datatype wire leaves the junction
            wire = ctx.fresh()
            body_out[k] = len(core_right) - nb
            core_right.append(End(y_j, wire, spec))
            items.append(wire_path(ctx, spec, wire, (cx + 6.0, y_j), [(width, y_j)], free=True))
    core = Panel(width, core_left, core_right, items, [], anchors).fit()
    in_map, out_map = core_maps(specs, right, in_band, out_band, body_in, body_out, nb)
    return assemble(ctx, specs, ids, in_map, core, out_map, right, align_left=align,
                    sources=sources)


def _merged_band_rows(ctx: Context, band_rows: Sequence[End], in_band: dict[int, int],
                      ids: Sequence[int], in_ids: Sequence[int]) -> list[End]:
    """The band rows once a card's wires feed them too: a row fed once carries its feeder's
    wire; a row fed several times (by a card as well as an input) is a new wire from a dot."""
    feeders: dict[int, list[int]] = {}
    for k, index in in_band.items():
        feeders.setdefault(index, []).append(k)
    return [End(row.y, ids[feeders[i][0]] if len(feeders.get(i, ())) == 1
                else (row.wire if row.wire not in in_ids else ctx.fresh()), row.spec)
            for i, row in enumerate(band_rows)]


def _card_above(term: ir.Broadcasted, left: Sequence[Spec], in_band: dict[int, int],
                band_index: dict[str, int], degree: list[str]) -> bool:
    """Whether a sum's or product's one parameter operand (a card with axes and no datatype
    wire) crosses fewer of the inputs' wires drawn above them than under them: its wire into
    band row r crosses each input wire into a row above r from above, under r from below."""
    if len(term.params) != 1 or any(spec.kind == "dtype" for spec in left):
        return False
    param = term.params[0]
    if dtype_shown(param.array) or not param.array.names:
        return False
    rows = [band_index.get(_degree_of(param, name, degree), 0) for name in param.array.names]
    inputs = [row for k, row in in_band.items() if k < len(left)]
    from_above = sum(1 for r in rows for q in inputs if q < r)
    from_below = sum(1 for r in rows for q in inputs if q > r)
    return from_above < from_below


@dataclass
class _Operands:
    """A contraction's operand wires stacked one way: `specs` top to bottom (the inputs', and
    each card's), `order` the cup rows' spec indices top to bottom, `lowered` the band rows
    only a card feeds, `at` the band row the cups go above (None: under all but `lowered`),
    `inputs_from` the index of the inputs' first wire."""

    specs: list[Spec]
    ids: list[int]
    in_band: dict[int, int]
    sources: list[Source]
    order: list[int]
    lowered: list[int]
    at: int | None
    inputs_from: int
    card_above: bool
    band_count: int

    def cost(self, right: Sequence[Spec], out_band: dict[int, int]) -> int:
        """Crossings on the way in (every wire to its row) and out (every band row to its
        output place), each pair of wires drawn in the other order than its rows counted."""
        others = [i for i in range(self.band_count) if i not in self.lowered]
        cups = [("cup", k) for k in self.order]
        placed: list[tuple[str, int]] = []
        for i in others:
            if i == self.at:
                placed.extend(cups)
            placed.append(("band", i))
        if self.at is None:
            placed.extend(cups)
        lowered = [("band", i) for i in self.lowered]
        placed = lowered + placed if self.card_above else placed + lowered
        rank = {row: n for n, row in enumerate(placed)}
        keys = [rank[("cup", k)] if ("cup", k) in rank else rank[("band", self.in_band[k])]
                for k in range(len(self.specs)) if ("cup", k) in rank or k in self.in_band]
        band_rank = {i: rank[("band", i)] for i in range(self.band_count)}
        out_keys = [band_rank[out_band[k]] for k in range(len(right)) if k in out_band]
        return _inversions(keys) + _inversions(out_keys)


def _einsum_operands(term: ir.Broadcasted, ctx: Context, left: Sequence[Spec],
                     in_ids: Sequence[int], in_band: dict[int, int], body_left: Sequence[int],
                     band_index: dict[str, int], degree: list[str],
                     card_above: bool) -> _Operands:
    """The operand wires of a contraction with its cards under the inputs, or (one card)
    above them, and where its cups go."""
    nb = len(band_index)
    contracted_inputs = [k for k in body_left if left[k].kind == "axis"]
    first_contracted = [left[k].name for k in contracted_inputs]
    input_rows = set(in_band.values())
    card_specs: list[Spec] = []
    card_band: dict[int, int] = {}
    card_contracted: list[int] = []
    sources: list[Source] = []
    for number, param in enumerate(term.params):
        first = len(card_specs)
        # The card's wires in the order that needs no crossing: its contracted wires mirroring
        # the input's so that the cups nest; its tiling wires by band row, above them where
        # they join a band row an input feeds (they rise to it without crossing the cups),
        # under them where only the card feeds the row (it runs on under the cups); a card
        # above the inputs the other way round.
        def card_order(name: str, param: ir.Port = param) -> tuple[int, int]:
            if name in param.targets:
                at = first_contracted.index(name) if name in first_contracted else -1
                return (0, -at)
            row = band_index.get(_degree_of(param, name, degree), 0)
            joins = row in input_rows
            return (-1 if joins != card_above else 1, row)

        axes = {axis.name: axis for axis in param.array.shape.axes}
        for name in sorted(param.array.names, key=card_order):
            k = len(card_specs)
            card_specs.append(Spec("axis", -1 - number, name, ctx.axis_label(axes[name])))
            if name in param.targets:
                card_contracted.append(k)
            else:
                card_band[k] = band_index.get(_degree_of(param, name, degree), 0)
        sources.append(Source(Label.axis(param.name or "W"), first, len(card_specs) - first))
    cards = len(card_specs)
    inputs_from = cards if card_above else 0
    cards_from = 0 if card_above else len(left)
    specs = [*card_specs, *left] if card_above else [*left, *card_specs]
    card_ids = [-1] * len(card_specs)  # given fresh ids once a way is chosen
    ids = [*card_ids, *in_ids] if card_above else [*in_ids, *card_ids]
    bands = {k + inputs_from: row for k, row in in_band.items()}
    bands.update({k + cards_from: row for k, row in card_band.items()})
    contracted = [k + inputs_from for k in contracted_inputs] \
        + [k + cards_from for k in card_contracted]
    sources = [Source(src.label, src.first + cards_from, src.count) for src in sources]

    # Rows of contracted axes; later operands list their axes in reverse so cups nest (the
    # card first where it is above the inputs).
    operands: dict[int, list[int]] = {}
    for k in contracted:
        operands.setdefault(specs[k].array, []).append(k)
    order: list[int] = []
    first_names: list[str] = []
    for position, (_, ks) in enumerate(sorted(
            operands.items(), key=lambda kv: ((kv[0] < 0) != card_above, abs(kv[0])))):
        if position == 0:
            first_names = [specs[k].name for k in ks]
        else:
            ks = sorted(ks, key=lambda k: -first_names.index(specs[k].name)
                        if specs[k].name in first_names else 0)
        order.extend(ks)
    fed_by_inputs = {row for k, row in bands.items() if inputs_from <= k < inputs_from + len(left)}
    lowered = [i for i in range(nb) if term.params and i not in fed_by_inputs
               and any(row == i for row in bands.values())]
    at = cups_position(specs, bands, order, [i for i in range(nb) if i not in lowered])
    return _Operands(specs, ids, bands, sources, order, lowered, at, inputs_from, card_above,
                     nb)


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

    # The operands' wires as one list: the inputs (panel edge), then each parameter's (card);
    # a single card goes above the inputs instead where fewer wires cross that way.
    below = _einsum_operands(term, ctx, left, in_ids, in_band, body_left, band_index, degree,
                             card_above=False)
    chosen = below
    if len(term.params) == 1 and below.order:
        above = _einsum_operands(term, ctx, left, in_ids, in_band, body_left, band_index,
                                 degree, card_above=True)
        if above.cost(right, out_band) < below.cost(right, out_band):
            chosen = above
    specs, in_band, sources = chosen.specs, chosen.in_band, chosen.sources
    ids = [ctx.fresh() if wire < 0 else wire for wire in chosen.ids]
    order, lowered, at = chosen.order, chosen.lowered, chosen.at
    card_above = chosen is not below
    inputs_from = chosen.inputs_from
    # With the parameters' wires added, a band row may have a different set of feeders.
    feeders: dict[int, list[int]] = {}
    for k, index in in_band.items():
        feeders.setdefault(index, []).append(k)
    band_rows = [End(row.y, ids[feeders[i][0]] if len(feeders.get(i, ())) == 1
                     else (row.wire if len(feeders.get(i, ())) != 1 and row.wire not in in_ids
                           else ctx.fresh()), row.spec)
                 for i, row in enumerate(band_rows)]
    # A band row only a learned operand feeds runs under the cups (over them, for a card
    # above the inputs), straight on from the card, and joins the others on the output side.
    # The other band rows stay at the height of the input wires that feed them where the
    # order allows, so those run straight; the cups sit among them where fewest wires cross.
    if order and (term.params or at is not None):
        y_prev = -PITCH
        if card_above:
            for i in lowered:
                y_prev += PITCH
                band_rows[i] = End(y_prev, band_rows[i].wire, band_rows[i].spec)
        for i, row in enumerate(band_rows):
            if i in lowered:
                continue
            if i == at:
                y0 = y_prev + PITCH
                y_prev = y0 + (len(order) - 1) * PITCH
            inputs = [k - inputs_from for k in feeders.get(i, ())
                      if inputs_from <= k < inputs_from + len(left)]
            y_prev = max(min(inputs) * PITCH if inputs and term.params else y_prev,
                         y_prev + PITCH)
            band_rows[i] = End(y_prev, row.wire, row.spec)
        if at is None:
            y0 = y_prev + PITCH
        cups_end = y0 + (len(order) - 1) * PITCH
        if not card_above:
            for n, i in enumerate(lowered):
                band_rows[i] = End(max(y_prev, cups_end) + (n + 1) * PITCH, band_rows[i].wire,
                                   band_rows[i].spec)
    core_left = list(band_rows)
    body_in: dict[int, int] = {}
    rows: list[tuple[str, float, int]] = []
    for i, k in enumerate(order):
        y = y0 + i * PITCH
        body_in[k] = len(core_left) - nb
        core_left.append(End(y, ids[k], specs[k]))
        rows.append((specs[k].name, y, ids[k]))

    items: list[Drawn] = []
    anchors: list[AnchorEntry] = []
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
        # Under the lowest wire of the core (a band row only a card feeds runs under the
        # cups), so that no wire runs through it.
        last = max([y for _, y, _ in rows] + [row.y for row in band_rows], default=0.0)
        items.append(text_item(label, 6.0, last + PITCH * 0.45 + lb.ascent, LABEL_SIZE,
                               theme.text, role="caption"))
        core_w = max(core_w, lb.width + 12.0)
    note = ctx.options.note(term)
    if note is not None:
        # No box to shade: a swatch of the shade, and the figures beside it, under the cups.
        lowest = max([y for _, y, _ in rows] + [row.y for row in band_rows], default=0.0)
        note_y = lowest + PITCH * 0.45
        if scale_text:  # under the scale's label
            note_y = max(note_y, lowest + PITCH * 1.2)
        swatch = shaded(theme, note.level).box_fill
        items.append(Rect(6.0, note_y, 8.0, 8.0, swatch, Stroke(theme.ink, 0.6)))
        for number, line in enumerate(note.lines):
            label = Label.plain(line)
            measured = label.measure(NOTE_SIZE)
            items.append(text_item(label, 18.0, note_y + number * NOTE_LINE + measured.ascent,
                                   NOTE_SIZE, theme.text, role="caption"))
            core_w = max(core_w, measured.width + 24.0)
    items[:0] = band_core_items(ctx, band_rows, core_w)
    core = Panel(core_w, core_left, list(band_rows), items, [], anchors).fit()
    in_map, out_map = core_maps(specs, right, in_band, out_band, body_in, {}, nb)
    return assemble(ctx, specs, ids, in_map, core, out_map, right, sources=sources)
