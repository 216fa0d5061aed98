"""The entry point: a whole definition laid out into a `Diagram`, its body between the
labelled input and output wires, after the expansion limits are checked."""

from __future__ import annotations

import itertools

from ncd import ir

from ..geometry import Diagram
from ..glyphs import THEMES
from ..text import elide
from .context import Context, size_environment
from .extent import check_expansion
from .options import LABEL_RAISE, MARGIN, RenderOptions
from .panels import Panel, array_specs
from .routing import assemble
from .terms import layout


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
