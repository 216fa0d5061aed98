"""The entry point: a whole definition laid out into a `Diagram`, its body between the
labelled input and output wires, after the expansion limits are checked."""

from __future__ import annotations

from dataclasses import replace

from ncd import ir

from ..annotate import LEVELS, Legend, shaded
from ..geometry import Diagram, Item, Rect, Stroke, placed_anchors, placed_boxes, placed_items
from ..glyphs import THEMES
from ..text import Label, elide
from .context import Context, TooWide, WireIds, size_environment
from .extent import check_expansion
from .lens import layout_lens
from .options import LABEL_RAISE, MARGIN, MIN_WIDTH, NOTE_LINE, NOTE_SIZE, RenderOptions
from .panels import Panel, array_specs, text_item
from .replay import Replays
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
    if options.lens is not None:
        drawn = layout_lens(program, definition, options, options.lens)
        if drawn is not None:
            return drawn
    # Terms of one form are replayed (`replay`) in every layout made here (they differ in
    # their width budgets, which the terms replayed do not read), but for the notes on
    # boxes, which are found by the term's place in the source.
    replays = None if options.notes else Replays()
    target = options.width
    if target is None:
        return _layout(program, definition, options, replays=replays)
    # A drawing that fits its budget on one row is drawn on one row. Whether it fits is known
    # as soon as a composition in it outgrows the budget (the drawing is at least as wide):
    # the rest of the row is not laid out (on a long chain, most of it).
    try:
        drawn = _layout(program, definition, replace(options, width=None), replays=replays,
                        give_up_beyond=target + 1.0)
        if drawn.width <= target + 0.5:
            return drawn
    except TooWide:
        pass
    best = _fitted(program, definition, options, target, replays=replays)
    if best.width <= target + 0.5 or not options.expand_calls:
        return best
    # Still too wide with every call expanded: the deepest calls are folded into their boxes,
    # as few levels as make the drawing fit (the top-level calls stay expanded). Folding a
    # level more never widens it, so the number of levels kept is found by bisection: a few
    # layouts, however deep the calls nest.
    low, high = 1, _call_levels(program, definition.name) - 1
    fitting: Diagram | None = None
    while low <= high:
        nested = (low + high) // 2
        folded = _fitted(program, definition, options, target, nested, replays=replays)
        if folded.width < best.width:
            best = folded
        if folded.width <= target + 0.5:
            fitting, low = folded, nested + 1
        else:
            high = nested - 1
    return fitting or best


def _fitted(program: ir.Program, definition: ir.Definition, options: RenderOptions,
            target: float, nested_calls: int | None = None, *, replays: Replays | None = None
            ) -> Diagram:
    """The drawing wrapped to the budget `target`, or as near to it as wrapping gets."""
    drawn = _layout(program, definition, options, nested_calls, replays=replays)
    # The budget is for the whole drawing, but compositions are wrapped against an estimate
    # of what surrounds them: while the drawing is still too wide, wrap against less (a few
    # times at most; a term wider than the budget by itself cannot be broken).
    budget = target
    best = drawn
    floor = max(MIN_WIDTH, FLOOR_SHARE * target)
    for _ in range(RETRIES):
        if drawn.width <= target + 0.5 or budget <= floor:
            break
        budget = max(floor, budget - max(40.0, (drawn.width - target) / 2))
        drawn = _layout(program, definition, replace(options, width=budget), nested_calls,
                        replays=replays)
        if drawn.width < best.width:
            best = drawn
    return best


def _call_levels(program: ir.Program, name: str, seen: tuple[str, ...] = ()) -> int:
    """How many calls deep the expanded drawing of `name` nests (a recursive call is not
    expanded again)."""
    deepest = 0
    for term in ir.walk(program.definition(name).body):
        if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp) \
                and term.op.definition not in (*seen, name):
            try:
                program.definition(term.op.definition)
            except KeyError:
                continue
            deepest = max(deepest, 1 + _call_levels(program, term.op.definition,
                                                    (*seen, name)))
    return deepest


def _reorders_freely(term: ir.Term) -> bool:
    """Whether `term` only permutes whole arrays, keeping arrays of one type in their order:
    at the diagram's edge the arrays may then be drawn in its order instead, each still told
    apart by the labels of its wires (and arrays labelled alike still in source order)."""
    if not isinstance(term, ir.Rearrangement) or len(term.dom) != len(term.cod) \
            or sorted(term.mapping) != list(range(len(term.dom))):
        return False
    position = {a: q for q, a in enumerate(term.mapping)}
    return all(position[i] < position[j] for i in range(len(term.dom))
               for j in range(i + 1, len(term.dom)) if term.dom[i] == term.dom[j])


def edges_in_drawing_order(definition: ir.Definition
                           ) -> tuple[tuple[ir.ArrayType, ...], tuple[ir.ArrayType, ...],
                                      ir.Term]:
    """The arrays at the diagram's left and right edges, top to bottom, and the term drawn
    between them. A body that starts by permuting its inputs (`scan(cell, H0, X)` of a
    definition taking `X, H0`) draws its inputs in the permuted order instead, and one that
    ends by permuting its outputs draws them in the order they are made: the wires at the
    edge keep their labels, and no wire crosses just to reach the edge."""
    terms = list(definition.body.terms) if isinstance(definition.body, ir.Composed) \
        else [definition.body]
    domain, codomain = definition.domain, definition.codomain
    if len(terms) > 1 and _reorders_freely(terms[0]):
        domain = terms.pop(0).cod
    if len(terms) > 1 and _reorders_freely(terms[-1]):
        codomain = terms.pop().dom
    if len(terms) == 1:
        return domain, codomain, terms[0]
    if domain == definition.domain and codomain == definition.codomain:
        return domain, codomain, definition.body
    return domain, codomain, ir.Composed(dom=domain, cod=codomain, terms=tuple(terms),
                                         span=definition.body.span)


RETRIES = 10
"""How often a drawing wider than its budget is wrapped again against a smaller one."""
FLOOR_SHARE = 0.5
"""The smallest budget a drawing is wrapped again against, as a share of its own: less
breaks nested compositions into rows of one term each."""


def _layout(program: ir.Program, definition: ir.Definition, options: RenderOptions,
            nested_calls: int | None = None, give_up_beyond: float | None = None, *,
            replays: Replays | None = None) -> Diagram:
    ctx = Context(program, options, THEMES[options.theme], size_environment(program),
                  WireIds(), calls=(definition.name,), nested_calls=nested_calls,
                  give_up_beyond=give_up_beyond, replays=replays)
    domain, codomain, term = edges_in_drawing_order(definition)
    left = array_specs(domain, ctx)
    right = array_specs(codomain, ctx)
    in_ids = [ctx.fresh() for _ in left]
    body = layout(term, ctx, in_ids)
    # Label the diagram's own inputs and outputs at its edges, unless the body already does.
    panel = assemble(ctx, left, in_ids, list(range(len(left))), body,
                     list(range(len(right))), right,
                     skip_left={round(t.y + LABEL_RAISE, 1) for t in body.left_labels},
                     skip_right={round(t.y + LABEL_RAISE, 1) for t in body.right_labels})
    if not panel.items and not panel.left:
        panel = Panel(40.0, [], [], top=0.0, bottom=20.0)
    dy = MARGIN - panel.top
    placed = panel.moved(0.0, dy, left_labels=False, right_labels=False)
    height = panel.bottom - panel.top + 2 * MARGIN
    width = placed.width
    items = placed_items(placed.items)
    if options.legend is not None:
        legend_items, legend_height = _legend(ctx, options.legend, height - MARGIN / 2,
                                              width - 2 * MARGIN)
        items.extend(legend_items)
        height += legend_height
    return Diagram(
        width=round(width, 2), height=round(height, 2),
        background=ctx.theme.background, items=tuple(items),
        boxes=tuple(placed_boxes(placed.boxes)), anchors=tuple(placed_anchors(placed.anchors)),
        title=elide(definition.name),
        loops=tuple(placed.loops),
    )


def _legend(ctx: Context, legend: Legend, top: float, room: float
            ) -> tuple[list[Item], float]:
    """The shades from light to dark, then the legend's lines, under the drawing, each line
    wrapped at spaces to the drawing's width (the diagram's wires end at its edges, so the
    legend does not widen it)."""
    items: list[Item] = []
    swatch = 10.0
    for level in range(LEVELS):
        items.append(Rect(MARGIN + level * (swatch + 2.0), top, swatch, swatch,
                          shaded(ctx.theme, level).box_fill, Stroke(ctx.theme.ink, 0.6)))
    y = top + swatch + 4.0
    size = NOTE_SIZE + 1.0
    for text in legend.lines:
        for line in _wrapped(text, room, size):
            label = Label.plain(line)
            items.append(text_item(label, MARGIN, y + label.measure(size).ascent, size,
                                   ctx.theme.text, role="caption"))
            y += NOTE_LINE + 2.0
    return items, y - top + MARGIN / 2


def _wrapped(text: str, room: float, size: float) -> list[str]:
    lines: list[str] = []
    for word in text.split(" "):
        if lines and Label.plain(f"{lines[-1]} {word}").measure(size).width <= room:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines
