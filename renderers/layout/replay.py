"""Replay: a term laid out again where a term of the same form was laid out before in the
same diagram. A long chain repeats a few statements thousands of times (`gelu`, a residual
`X + relu(X)`, a norm), and the panel of a leaf depends on nothing but the term's form (its
operation, arrays and ports, not where it stands in the source), the names of its ports and
the ids of the wires it is given and takes: so the first panel of a form is kept as a
template, and a later term of that form gets a copy of it, its items shared with the
template and read with the wire ids put right (`geometry.Rewired`), the ids it takes taken
from the counter as laying it out would have taken them. The copy is the panel laying out
would make, to the last id and bit.

What the form leaves out is checked rather than assumed. The ids: a template is replayed
only once a second term of its form, laid out, gave exactly the template's copy. The names
of the ports (`W3` of one `linear`, `W7` of the next; the variables an operation reads and
makes), which most glyphs do not draw and some do as labels (the bias `c3` of a `linear`):
a port's name is replayed otherwise only once a term with another name there, laid out,
gave the copy with the name's label drawn as the other name's. A name that is drawn must
measure as the template's does (else what is round it moves): the templates of a form are
kept by the measures of the names they draw (a few: `c1` and `c2` measure alike, `c3` and
`c10` otherwise). A glyph that uses a name in any other way never gives the copy, and the
terms of its form are laid out every time, as before."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from ncd import ir

from ..geometry import (
    Box,
    BoxEntry,
    Drawn,
    Item,
    MovedBoxes,
    Path,
    PortPoint,
    Rewired,
    Text,
    gathered,
    placed_anchors,
    placed_boxes,
    placed_items,
)
from ..text import Label, TextBox
from .context import Context
from .panels import End, Panel

Lay = Callable[[ir.Term, Context, Sequence[int]], Panel]
"""Lays a term out (the dispatch of `terms.layout`, without replaying)."""

REPLAYED: tuple[type[ir.Term], ...] = (ir.Broadcasted, ir.Rearrangement, ir.Reindexing,
                                       ir.Product)
"""The kinds of term that are replayed: the leaves, and products of them (a composition
takes the ids its terms leave, and a block or scan its frame's: laid out each time)."""


@dataclass(slots=True)
class _Template:
    """A panel laid out for a form (its lists copied: no caller holds them), with the ids of
    the wires it was given, the fresh ids it took (`taken` of them from `first`) and the
    names at its ports."""

    panel: Panel
    in_ids: tuple[int, ...]
    first: int
    taken: int
    names: tuple[str | None, ...]
    term: ir.Term
    """The term it was laid out for."""
    checked: bool = False
    """A later term of the form, laid out, gave what replaying this template gives."""
    run: Rewired | None = None
    """The panel's items as one replayed run, with what a group gathers from them and
    their extent (made at the first copy; its ids are the template's own)."""

    def again(self, term: ir.Term, in_ids: Sequence[int], first: int) -> bool:
        """Whether `term` is the template's own term, given the same wires at the same count
        of ids: the diagram laid out again against another width budget, which none of the
        kinds replayed reads (only a composition does); its panel is the template's."""
        return term is self.term and first == self.first and tuple(in_ids) == self.in_ids

    def relabelling(self, names: tuple[str | None, ...], ports: tuple[int, ...]
                    ) -> dict[Label, Label] | None:
        """For a term with port names `names`: the label of each of the template's names at
        `ports` (those drawn) that differs, as the label of the term's name there (None
        where two names' labels coincide: which one a label shows is not known)."""
        labels: dict[Label, Label] = {}
        for port in ports:
            old, new = self.names[port], names[port]
            if old != new and old is not None and new is not None:
                before, after = Label.axis(old), Label.axis(new)
                if labels.setdefault(before, after) != after:
                    return None
        return labels

    def copy(self, in_ids: Sequence[int], first: int, labels: dict[Label, Label]) -> Panel:
        """The panel for wires `in_ids`, its fresh ids taken from `first` on and `labels`
        drawn otherwise: its items shared with the template (`Rewired`), its edges, boxes and
        edge labels rewired."""
        ids = dict(zip(self.in_ids, in_ids, strict=True))
        ids.update(zip(range(self.first, self.first + self.taken),
                       range(first, first + self.taken), strict=True))
        panel = self.panel
        items: list[Drawn] = []
        if panel.items:
            run = self.run
            if run is None:
                run = self.run = _run(tuple(panel.items))
            items.append(Rewired(run.items, ids, labels, run.gathered, run.top, run.bottom))
        return Panel(panel.width, _ends(panel.left, ids), _ends(panel.right, ids), items,
                     [_box(box, ids) for box in panel.boxes], list(panel.anchors),
                     panel.top, panel.bottom,
                     [_text(t, ids, labels) for t in panel.left_labels],
                     [_text(t, ids, labels) for t in panel.right_labels], [])


Measures = tuple[TextBox | None, ...]


@dataclass(slots=True)
class _Form:
    """The templates of one form, by the measures of the names they draw, and what is known
    of its ports' names."""

    shown: tuple[tuple[int, float], ...]
    """The ports whose names the form's first panel draws as labels, each with the size
    they are drawn at."""
    templates: dict[Measures, _Template]
    free: set[int]
    """The ports whose names a laid-out term changed, the copy still right."""
    pinned: tuple[int, ...] = ()
    """The other ports (their names must be the template's for a replay)."""
    ports: tuple[int, ...] = ()
    """The ports of `shown`."""
    refused: bool = False
    """A term of the form, laid out, did not give the copy: every term of it is laid out."""

    def measures(self, names: tuple[str | None, ...]) -> Measures:
        """How the names at `names`' shown ports measure, as they are drawn."""
        measured: list[TextBox | None] = []
        for port, size in self.shown:
            name = names[port]
            measured.append(None if name is None else Label.axis(name).measure(size))
        return tuple(measured)


MAX_OPERATORS = 256
"""The most operators whose operations are kept (a diagram with thousands of distinct ones,
each call of a chain of as many definitions, keeps only the first: its later operators are
laid out without bookkeeping)."""

MAX_TEMPLATES = 32
"""The most templates of one form (its names drawn measuring in that many ways)."""


def _run(items: tuple[Drawn, ...]) -> Rewired:
    """`items` as a run to replay: what `group` gathers from them, and their extent as
    `Panel.fit` finds it (the first of equal values kept)."""
    top, bottom = float("inf"), float("-inf")
    for item in items:
        y0, y1 = item.y_extent()
        if y0 < top:
            top = y0
        if y1 > bottom:
            bottom = y1
    return Rewired(items, {}, {}, gathered(items), top, bottom)


class Unhashable(Exception):
    """A field of a term that cannot be hashed: the term is not replayed."""


class Replays:
    """What the layouts of one diagram keep for the terms they meet again: the templates, by
    form and nesting, and the drawing orders of compositions."""

    def __init__(self) -> None:
        self.operators: dict[Hashable, _Template | None] = {}
        """The first operation met of each operator (by its hash) and nesting (None: its
        form is made)."""
        self.forms: dict[Hashable, _Form | _Template | None] = {}
        """The templates of each form met, by form and nesting: the first panel of a form
        met once, or what is known of a form met again (None: not replayed)."""
        self.numbers: dict[Hashable, int] = {}
        """A number for each IR value met (an operation, a shape, an array type), equal
        values alike: a form is a tuple of small numbers, hashed and compared at once."""
        self.orders: dict[int, tuple[Sequence[ir.Term], tuple[ir.Term, ...]]] = {}
        """The drawing order of each composition's terms (`order.drawing_order`), by the
        identity of its tuple of terms (kept): the layouts of one diagram draw the same
        compositions, against other width budgets."""
        self.seen: dict[int, tuple[object, int]] = {}
        """The number of each IR node met, by identity (the node kept, so that its id is
        not reused): the checker shares the arrays and shapes of a chain's statements, and
        hashing one anew (recursively, through every axis and size) is what it saves."""

    def drawing_order(self, terms: Sequence[ir.Term],
                      order: Callable[[Sequence[ir.Term]], list[ir.Term]]
                      ) -> tuple[ir.Term, ...]:
        """`order(terms)` (`order.drawing_order`), found once per diagram."""
        known = self.orders.get(id(terms))
        if known is None:
            known = self.orders[id(terms)] = (terms, tuple(order(terms)))
        return known[1]

    def number(self, value: Hashable) -> int:
        """The number of an IR value (see `numbers`)."""
        known = self.seen.get(id(value))
        if known is not None:
            return known[1]
        try:
            number = self.numbers.setdefault(value, len(self.numbers))
        except TypeError as error:
            raise Unhashable from error
        self.seen[id(value)] = (value, number)
        return number

    def numbered(self, values: Sequence[Hashable]) -> tuple[int, ...]:
        """The numbers of `values` (see `numbers`), the ones met before read at once."""
        seen = self.seen
        return tuple([known[1] if (known := seen.get(id(value))) is not None
                      else self.number(value) for value in values])

    def form(self, term: ir.Term, expand_calls: bool
             ) -> tuple[Hashable, tuple[str | None, ...]] | None:
        """What the panel of `term` depends on, other than the context and the wire ids:
        every field but the spans, and of the names of its operations' ports (variables,
        parameters) only which are alike (the names are returned apart); None for a term
        that is not replayed."""
        number, numbered = self.number, self.numbered
        if isinstance(term, ir.Broadcasted):
            if expand_calls and isinstance(term.op, ir.CallOp):
                return None  # drawn as the callee's diagram, which depends on the program
            ports = (*term.inputs, *term.params, *term.outputs)
            names = tuple([p.name for p in ports])
            # which ports are named alike (a residual's main line), not the names themselves
            alike = tuple([None if n is None else names.index(n) for n in names])
            return (("broadcasted", number(term.op), number(term.degree), len(term.inputs),
                     len(term.params), alike, numbered([p.array for p in ports]),
                     tuple([p.targets for p in ports]),
                     numbered([p.reindexing for p in ports]), numbered(term.dom),
                     numbered(term.cod)), names)
        if isinstance(term, ir.Rearrangement):
            return ("rearrangement", term.mapping, numbered(term.dom), numbered(term.cod)), ()
        if isinstance(term, ir.Reindexing):
            return ("reindexing", number(term.eta), term.name, term.source, numbered(term.dom),
                    numbered(term.cod)), ()
        if isinstance(term, ir.Identity):
            return ("identity", term.names, numbered(term.dom)), ()
        if isinstance(term, ir.Product):
            factors: list[Hashable] = []
            factor_names: list[str | None] = []
            for factor in term.terms:
                form = self.form(factor, expand_calls)
                if form is None:
                    return None
                factors.append(form[0])
                factor_names.extend(form[1])
            return ("product", tuple(factors)), tuple(factor_names)
        return None

    def layout(self, term: ir.Term, ctx: Context, in_ids: Sequence[int], lay: Lay) -> Panel:
        """The panel of `term`: replayed where a template of its form may be, else laid out
        (and kept as a template, or compared with one)."""
        if len(set(in_ids)) != len(in_ids):
            return lay(term, ctx, in_ids)  # (ids given twice: their equality may matter)
        expand_calls = ctx.options.expand_calls
        nesting = (ctx.depth, ctx.calls, ctx.nested_calls)
        ids = ctx.counter
        first = ids.upcoming
        try:
            if isinstance(term, ir.Broadcasted) \
                    and not (expand_calls and isinstance(term.op, ir.CallOp)):
                try:  # (equal operators hash alike: an equal one is met again, or one alike)
                    operator = (type(term.op), hash(term.op), *nesting)
                except TypeError as error:
                    raise Unhashable from error
                if operator not in self.operators:
                    # An operation met first is kept by its operator, without its form:
                    # most operators of a small diagram are met once (each call of a
                    # chain of definitions), and the form is made when one is met again.
                    if len(self.operators) >= MAX_OPERATORS:
                        return lay(term, ctx, in_ids)
                    panel = lay(term, ctx, in_ids)
                    self.operators[operator] = _Template(
                        _copied(panel), tuple(in_ids), first, ids.upcoming - first, (), term)
                    return panel
                pending = self.operators[operator]
                if pending is not None and pending.again(term, in_ids, first):
                    ids.upcoming = first + pending.taken
                    return pending.copy(in_ids, first, {})
                if pending is not None:  # an equal operator again: the first's form made
                    self.operators[operator] = None
                    made = self.form(pending.term, expand_calls)
                    if made is not None:
                        pending.names = made[1]
                        self.forms.setdefault((made[0], *nesting), pending)
            form = self.form(term, expand_calls)
        except Unhashable:
            form = None
        if form is None:
            return lay(term, ctx, in_ids)
        shape, names = form
        key = (shape, *nesting)
        known = self.forms.get(key, _NEW)
        if known is _NEW:
            # kept as it is: most forms of a small diagram are never met again
            panel = lay(term, ctx, in_ids)
            self.forms[key] = None if panel.loops else _Template(
                _copied(panel), tuple(in_ids), first, ids.upcoming - first, names, term)
            return panel
        if isinstance(known, _Template):
            if known.again(term, in_ids, first):
                ids.upcoming = first + known.taken
                return known.copy(in_ids, first, {})
            known = self.forms[key] = _first_of_form(known)  # met again: its panel is read
        if known is None or known.refused:
            return lay(term, ctx, in_ids)
        measures = known.measures(names) if known.shown else ()
        template = known.templates.get(measures)
        labels = template.relabelling(names, known.ports) if template is not None else None
        if template is None or labels is None:
            panel = lay(term, ctx, in_ids)
            if template is None and len(known.templates) < MAX_TEMPLATES:
                kept = _kept(panel, tuple(in_ids), first, ids.upcoming - first, names, term)
                if kept is not None:
                    known.templates[measures] = kept
            return panel
        if template.again(term, in_ids, first) or (template.checked and all(
                names[port] == template.names[port] for port in known.pinned)):
            ids.upcoming = first + template.taken
            return template.copy(in_ids, first, labels)
        panel = lay(term, ctx, in_ids)
        if ids.upcoming - first == template.taken \
                and _outline(panel) == _outline(template.copy(in_ids, first, labels)):
            template.checked = True
            known.free.update(port for port, (a, b)
                              in enumerate(zip(template.names, names, strict=True)) if a != b)
            known.pinned = tuple(port for port in range(len(names)) if port not in known.free)
        else:
            known.refused = True
        return panel


def _first_of_form(template: _Template) -> _Form | None:
    """The form of its first template: the ports whose names it draws as labels; None where
    the template cannot be replayed (see `_kept`)."""
    placed = placed_items(template.panel.items)
    if not _ids_of(template.panel, placed) \
            <= {*template.in_ids, *range(template.first, template.first + template.taken)}:
        return None
    drawn = {(text.label, text.size) for text in
             (*placed, *template.panel.left_labels, *template.panel.right_labels)
             if isinstance(text, Text)}
    shown = tuple(sorted({(port, size) for port, name in enumerate(template.names)
                          if name is not None for label, size in drawn
                          if label == Label.axis(name)}))
    form = _Form(shown, {}, set(), tuple(range(len(template.names))),
                 tuple(sorted({port for port, _ in shown})))
    form.templates[form.measures(template.names)] = template
    return form


_NEW = _Form((), {}, set(), ())
"""What `Replays.forms` gives for a form not met yet."""


def _kept(panel: Panel, in_ids: tuple[int, ...], first: int, taken: int,
          names: tuple[str | None, ...], term: ir.Term) -> _Template | None:
    """`panel` kept as a template, or None where it cannot be: a wire id in it neither given
    nor taken (not one a copy could put right), or a scan's loop."""
    known = {*in_ids, *range(first, first + taken)}
    if panel.loops or not _ids_of(panel, placed_items(panel.items)) <= known:
        return None
    return _Template(_copied(panel), in_ids, first, taken, names, term)


def _copied(panel: Panel) -> Panel:
    """`panel` with its lists copied (its values are shared: they do not change)."""
    return Panel(panel.width, list(panel.left), list(panel.right), list(panel.items),
                 list(panel.boxes), list(panel.anchors), panel.top, panel.bottom,
                 list(panel.left_labels), list(panel.right_labels), [])


def _ids_of(panel: Panel, placed: list[Item]) -> set[int]:
    """Every wire and box id in `panel` (its items `placed`)."""
    ids = {e.wire for e in (*panel.left, *panel.right)}
    for item in (*placed, *panel.left_labels, *panel.right_labels):
        if isinstance(item, Path | Text) and item.wire is not None:
            ids.add(item.wire)
        if isinstance(item, Text) and item.owner is not None:
            ids.add(item.owner)
    for box in placed_boxes(panel.boxes):
        ids.add(box.id)
        ids.update(port.wire for port in box.ports)
    return ids


def _ends(ends: list[End], ids: dict[int, int]) -> list[End]:
    return [End(e.y, ids[e.wire], e.spec, e.joint) for e in ends]


def _text(text: Text, ids: dict[int, int], labels: dict[Label, Label]) -> Text:
    if text.wire is None and text.owner is None and text.label not in labels:
        return text
    return Text(labels.get(text.label, text.label), text.x, text.y, text.size, text.color,
                text.width, text.ascent, text.descent,
                None if text.owner is None else ids[text.owner], text.role,
                text.layer, None if text.wire is None else ids[text.wire])


def _box(box: BoxEntry, ids: dict[int, int]) -> BoxEntry:
    if isinstance(box, MovedBoxes):
        return MovedBoxes(tuple([_box(b, ids) for b in box.boxes]), box.dx, box.dy, box.top,
                          box.bottoms)
    return Box(ids[box.id], box.x, box.y, box.width, box.height, box.kind,
               tuple([PortPoint(p.x, p.y, ids[p.wire], p.side) for p in box.ports]),
               box.expected_ports)


def _outline(panel: Panel) -> tuple[object, ...]:
    """Everything `panel` draws and holds, placed (replayed runs spliced, their ids put
    right; groups moved), as comparable values."""
    return (panel.width, panel.left, panel.right, placed_items(panel.items),
            placed_boxes(panel.boxes), placed_anchors(panel.anchors), panel.top,
            panel.bottom, panel.left_labels, panel.right_labels, panel.loops)
