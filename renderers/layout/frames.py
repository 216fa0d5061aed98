"""Frames: the rounded frame round a block's or scan's body (its title band, colour, and the
brackets and `xN` of a repeat, or a scan's mark), and the one titled box that a collapsed
block or scan becomes."""

from __future__ import annotations

from collections.abc import Sequence

from ncd import ir

from ..geometry import LAYER_FRAME, LAYER_MARK, Box, Drawn, Path, PortPoint, Rect, Stroke
from ..glyphs import block_fill
from ..text import Label
from .context import Context
from .options import BLOCK_PAD, BRACKET, CORE_PAD, PITCH, ROW_PAD, TITLE_SIZE
from .panels import End, Panel, array_specs, text_item, wire_path
from .routing import assemble


def collapsed(term: ir.Block | ir.Scan | ir.Machine, title: Label, ctx: Context,
              in_ids: Sequence[int], kind: str) -> Panel:
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
    items: list[Drawn] = []
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
    items: list[Drawn] = [Rect(frame_x, frame_top, frame_w, frame_bottom - frame_top, fill,
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
                 items, placed.boxes, placed.anchors, loops=placed.loops).fit()
