"""Wiring: a dataflow graph of steps becomes a categorical term.

Steps are scheduled in layers (a step sits one layer after the last step it depends on, so
independent statements such as Q, K and V stand side by side in one product). Before each
layer a rearrangement copies, deletes and orders the arrays on the wires; in the layer, the
steps run in parallel with identities for the arrays that pass them by.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from operator import itemgetter

from ncd import ir
from ncd.context import BlockGroup, Step, Value
from ncd.operators import declaration


def block_term(group: BlockGroup, exported: Sequence[Value]) -> ir.Block:
    """The block's term, given which of its inner values are read after it."""
    if group.carried_results is not None:
        inputs = group.inputs if group.inputs is not None else group.reads
        body = build_term(group.steps, inputs, group.carried_results, group.span)
    else:
        body = build_term(group.steps, group.reads, exported, group.span)
    return ir.Block(dom=body.dom, cod=body.cod, span=group.span, title=group.title,
                    color=group.color, repeat=group.repeat, shared=group.shared,
                    copy_of=group.copy_of, body=body)


def _read_ids(step: Step | BlockGroup) -> Iterator[int]:
    """The ids of the values a step reads, anywhere inside it (blocks included)."""
    if isinstance(step, Step):
        for value in step.inputs:
            yield value.id
        return
    for value in step.reads:
        yield value.id
    for inner in step.steps:
        yield from _read_ids(inner)


def _last_reads(steps: Sequence[Step | BlockGroup]) -> dict[int, int]:
    """For each value read by these steps, the index of the last step that reads it."""
    last: dict[int, int] = {}
    for index, step in enumerate(steps):
        for value_id in _read_ids(step):
            last[value_id] = index
    return last


def resolve_blocks(steps: Sequence[Step | BlockGroup], results: Sequence[Value]) -> list[Step]:
    """Turn every block group into a step whose outputs are the inner values read after it."""
    resolved: list[Step] = []
    last_read: dict[int, int] | None = None  # computed at the first block that needs it
    result_ids = {v.id for v in results}
    for index, step in enumerate(steps):
        if isinstance(step, Step):
            resolved.append(step)
            continue
        if step.carried_results is not None:
            resolved.append(Step(block_term(step, ()), list(step.reads), list(step.outputs)))
            continue
        if last_read is None:
            last_read = _last_reads(steps)
        exported = [v for v in step.bound
                    if last_read.get(v.id, -1) > index or v.id in result_ids]
        resolved.append(Step(block_term(step, exported), list(step.reads), exported))
    return resolved


def build_term(steps: Sequence[Step | BlockGroup], inputs: Sequence[Value],
               results: Sequence[Value], span: ir.Span | None) -> ir.Term:
    """The term computing `results` from `inputs` by running `steps`."""
    flat = resolve_blocks(steps, results)
    producer: dict[int, int] = {}
    level: list[int] = []
    # (plain loops, not `max` over generators: this runs for every definition and block)
    for index, step in enumerate(flat):
        depth = 0  # the deepest level of a step this one reads from
        for value in step.inputs:
            made_by = producer.get(value.id)
            if made_by is not None and level[made_by] > depth:
                depth = level[made_by]
        level.append(depth + 1)
        for value in step.outputs:
            producer[value.id] = index
    last_use: dict[int, int] = {}
    for index, step in enumerate(flat):
        step_level = level[index]
        for value in step.inputs:
            if last_use.get(value.id, 0) < step_level:
                last_use[value.id] = step_level
    result_ids = {v.id for v in results}
    by_level: list[list[Step]] = [[] for _ in range(max(level, default=0) + 1)]
    for index, step in enumerate(flat):
        by_level[level[index]].append(step)

    layers: list[ir.Term] = []
    live: list[Value] = list(inputs)
    for current in range(1, len(by_level)):
        group = by_level[current]
        passing: list[Value] = []
        passing_ids: set[int] = set()
        for value in live:
            needed = last_use.get(value.id, 0) > current or value.id in result_ids
            if needed and value.id not in passing_ids:
                passing.append(value)
                passing_ids.add(value.id)
        items: list[tuple[float, int, Step | Value]] = []
        position = {value.id: i for i, value in reversed(list(enumerate(live)))}
        for order, step in enumerate(group):
            places = [position[v.id] for v in step.inputs if v.id in position]
            mean = sum(places) / len(places) if places else float(len(live))
            items.append((mean, order, step))
        for value in passing:
            items.append((position[value.id] + 0.5, len(group) + position[value.id], value))
        items.sort(key=_place_and_order)

        wanted: list[Value] = []
        terms: list[ir.Term] = []
        after: list[Value] = []
        passing_run: list[Value] = []  # consecutive pass-by arrays share one identity
        for _, _, item in items:
            if isinstance(item, Value):
                wanted.append(item)
                passing_run.append(item)
                after.append(item)
                continue
            _close_identity(terms, passing_run)
            item = _operands_in_wire_order(item, position)
            wanted.extend(item.inputs)
            terms.append(item.term)
            after.extend(item.outputs)
        _close_identity(terms, passing_run)
        _add_rearrangement(layers, live, wanted, position)
        layers.append(terms[0] if len(terms) == 1 else _product(terms))
        live = after
    _add_rearrangement(layers, live, list(results))
    dom = tuple(v.array for v in inputs)
    cod = tuple(v.array for v in results)
    # The wiring terms are made without validating them again (`ir.trusted`): their parts are
    # checked nodes, and validating them was a large share of checking many small definitions.
    if not layers:
        return ir.trusted(ir.Identity, dom=dom, cod=cod, span=span, kind="identity",
                          names=tuple(v.name for v in inputs))
    if len(layers) == 1:
        return layers[0]
    return ir.trusted(ir.Composed, dom=dom, cod=cod, span=span, kind="composed",
                      terms=tuple(layers))


def _operands_in_wire_order(step: Step, position: dict[int, int]) -> Step:
    """Operands of a commutative operation taken in the order their wires already lie, so the
    diagram needs no crossing before a residual `+`."""
    term = step.term
    if not (isinstance(term, ir.Broadcasted) and declaration(term.op).commutative):
        return step
    places = [position.get(value.id, len(position)) for value in step.inputs]
    # (a stable sort by place keeps operands that share one in their order)
    order = sorted(range(len(step.inputs)), key=places.__getitem__)
    if order == list(range(len(step.inputs))):
        return step
    # `model_copy(update=...)` without pydantic's copying: the same node (the term's
    # `__dict__` holds its fields alone, in order)
    reordered = ir.trusted(type(term), **{**term.__dict__,
                                          "inputs": tuple(term.inputs[i] for i in order),
                                          "dom": tuple(term.dom[i] for i in order)})
    return Step(reordered, [step.inputs[i] for i in order], step.outputs)


def _close_identity(terms: list[ir.Term], run: list[Value]) -> None:
    if run:
        arrays = tuple([v.array for v in run])
        terms.append(ir.trusted(ir.Identity, dom=arrays, cod=arrays, span=None,
                                kind="identity", names=tuple([v.name for v in run])))
        run.clear()


def _product(terms: Sequence[ir.Term]) -> ir.Product:
    dom = tuple(a for t in terms for a in t.dom)
    cod = tuple(a for t in terms for a in t.cod)
    return ir.trusted(ir.Product, dom=dom, cod=cod, span=None, kind="product",
                      terms=tuple(terms))


def _add_rearrangement(layers: list[ir.Term], live: Sequence[Value], wanted: Sequence[Value],
                       first_index: dict[int, int] | None = None) -> None:
    """The rearrangement from the arrays `live` to `wanted`, unless it is the identity;
    `first_index` is where each value of `live` first lies, when the caller knows it."""
    if first_index is None:
        first_index = {}
        for index, value in enumerate(live):
            first_index.setdefault(value.id, index)
    mapping = tuple([first_index[v.id] for v in wanted])
    if mapping == tuple(range(len(live))):
        return
    layers.append(ir.trusted(ir.Rearrangement, dom=tuple([v.array for v in live]),
                             cod=tuple([v.array for v in wanted]), span=None,
                             kind="rearrangement", mapping=mapping))


# the order of the items of a layer: by where they lie, then by their order among their kind
_place_and_order = itemgetter(0, 1)
