"""Terms that move data without computing: a rearrangement (copy: a fork at a dot; delete:
a bar; permute: crossing curves) and a reindexing `Y[p] = X[eta(p)]` (wires for the rows that
read one axis, a hexagon carrying the index map for the others, a pentagon for a fixed
index)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ncd import ir

from ..geometry import BOX_GAP, Box, Drawn, PortPoint
from ..glyphs import hexagon, pentagon, rename_tag
from ..text import Label
from .context import Context
from .options import CORE_PAD, LABEL_SIZE, PITCH, ROW_PAD
from .panels import End, Kind, Panel, Spec, array_specs, straight_core, text_item, wire_path
from .routing import assemble


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
    core = straight_core(ctx, rows, 8.0 if rows else 0.0)
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


RENAME_TAG = 18.0
"""Width and height of the rename tag on a wire whose axis changes its name."""


def left_of_name(left: Sequence[Spec], row: int) -> str:
    """The name of the input's axis `row` (by position among its axis wires)."""
    return [s.name for s in left if s.kind == "axis"][row]


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

    items: list[Drawn] = []
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
    # An output axis read plainly from an input axis of another name (`Y[x, u] = X[x, u]`
    # with `X: R[x, v]`) changes its name on the way: it passes a rename tag, as `rename`
    # draws it, rather than being relabelled silently.
    renamed = {domain[source] for j, (kind, source) in enumerate(kinds)
               if kind == "simple" and source is not None and j not in hex_rows
               and sum(1 for other, s in kinds if other == "simple" and s == source) == 1
               and left_of_name(left, j) != domain[source]}
    tag_w = RENAME_TAG if renamed else 0.0
    glyph_w = max(hex_w, pent_w, tag_w)
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
            # Below a rename tag of this column, the hexagon keeps the boxes' gap.
            top = y + (count - 1) * PITCH / 2 - max(24.0, (count - 1) * PITCH + 2 * ROW_PAD) / 2
            above = max((b.y + b.height for b in boxes
                         if b.x < gx + glyph_w and gx < b.x + b.width), default=None)
            if above is not None and top < above + BOX_GAP:
                y += above + BOX_GAP - top
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
        if name in renamed:
            (j,) = wire_sources
            k, in_spec = left_of[j]
            box_id = ctx.fresh()
            out_id = ctx.fresh()
            core_left.append(End(y, row_id, in_spec))
            core_right.append(End(y, out_id, spec))
            x_tag = gx + (glyph_w - tag_w) / 2
            # Below a glyph of this column (a tall hexagon), the tag keeps the boxes' gap.
            above = max((b.y + b.height for b in boxes
                         if b.x < x_tag + tag_w and x_tag < b.x + b.width), default=None)
            if above is not None and y - tag_w / 2 < above + BOX_GAP:
                y = above + BOX_GAP + tag_w / 2
                row = End(y, row_id, spec)
            items.append(wire_path(ctx, in_spec, row_id, (0.0, y), [(x_tag, y)]))
            items.append(wire_path(ctx, spec, out_id, (x_tag + tag_w, y), [(core_w, y)]))
            items.extend(rename_tag(x_tag, y - tag_w / 2, tag_w, tag_w, theme))
            boxes.append(Box(box_id, x_tag, y - tag_w / 2, tag_w, tag_w, "rename",
                             (PortPoint(x_tag, y, row_id, "left"),
                              PortPoint(x_tag + tag_w, y, out_id, "right")), 2))
            y += PITCH
            continue
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
    core = Panel(core_w, core_left, core_right, items, [*boxes]).fit()
    return assemble(ctx, left, in_ids, in_map, core, out_map, right)
