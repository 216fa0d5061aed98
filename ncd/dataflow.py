"""A term as a dataflow graph: its leaf terms and the values (wires) they read and give.

Identities, rearrangements, compositions and products only route values; flattening them
leaves the terms that compute (broadcasted operations, reindexings, and blocks and scans kept
whole), each with the wires it reads and the wires it gives. A copy is one wire read twice,
so a value is recognised by its wire wherever it is routed. Used by the scan lowering to find
what a step computes without its carried state (`independent_of`) and to recognise standard
recurrent cells (`ncd.recurrent_cells`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import assert_never

from ncd import ir
from ncd.sizes import ProgramSizes

Wire = int
"""A value of the graph: the term's inputs are wires 0 .. n-1, then each node's outputs."""


@dataclass(frozen=True)
class Node:
    """A leaf term and the wires it reads and gives."""

    term: ir.Term
    inputs: tuple[Wire, ...]
    outputs: tuple[Wire, ...]


@dataclass(frozen=True)
class Dataflow:
    inputs: tuple[Wire, ...]
    nodes: tuple[Node, ...]  # in the term's order of evaluation
    outputs: tuple[Wire, ...]

    def producers(self) -> dict[Wire, tuple[Node, int]]:
        """Each computed wire: the node that gives it, and which of its outputs it is."""
        return {wire: (node, index) for node in self.nodes
                for index, wire in enumerate(node.outputs)}

    def readers(self) -> dict[Wire, int]:
        """How many times each wire is read (by nodes, and once more per output)."""
        counts: dict[Wire, int] = {}
        for wire in [w for node in self.nodes for w in node.inputs] + list(self.outputs):
            counts[wire] = counts.get(wire, 0) + 1
        return counts


def dataflow(term: ir.Term) -> Dataflow:
    """The graph of `term` (no recursion into blocks and scans: they are nodes)."""
    nodes: list[Node] = []
    counter = [len(term.dom)]

    def fresh(count: int) -> tuple[Wire, ...]:
        start = counter[0]
        counter[0] += count
        return tuple(range(start, start + count))

    def visit(part: ir.Term, wires: Sequence[Wire]) -> list[Wire]:
        match part:
            case ir.Identity():
                return list(wires)
            case ir.Rearrangement(mapping=mapping):
                return [wires[i] for i in mapping]
            case ir.Composed(terms=terms):
                values = list(wires)
                for inner in terms:
                    values = visit(inner, values)
                return values
            case ir.Product(terms=terms):
                results: list[Wire] = []
                start = 0
                for inner in terms:
                    results += visit(inner, wires[start:start + len(inner.dom)])
                    start += len(inner.dom)
                return results
            case ir.Reindexing() | ir.Broadcasted() | ir.Block() | ir.Scan() | ir.Machine():
                outputs = fresh(len(part.cod))
                nodes.append(Node(part, tuple(wires), outputs))
                return list(outputs)
        assert_never(part)

    inputs = tuple(range(len(term.dom)))
    outputs = visit(term, inputs)
    return Dataflow(inputs, tuple(nodes), tuple(outputs))


def reached_from(flow: Dataflow, sources: Iterable[Wire]) -> set[Wire]:
    """Every wire whose value depends on one of `sources` (the sources included)."""
    reached = set(sources)
    for node in flow.nodes:
        if any(wire in reached for wire in node.inputs):
            reached.update(node.outputs)
    return reached


def independent_of(flow: Dataflow, sources: Iterable[Wire]) -> list[bool]:
    """Per node: whether it computes without any of `sources` (it can run before a loop that
    changes them)."""
    reached = reached_from(flow, sources)
    return [not any(wire in reached for wire in node.inputs) for node in flow.nodes]


def inlinable_step(term: ir.Scan, program: ir.Program,
                   sizes: ProgramSizes) -> tuple[ir.Broadcasted, ir.CallOp, ir.Definition] | None:
    """The call and definition of a scan's step when the step can be written into the loop
    (`compilers.scans`): a lifted call whose ports keep the lifted axes first, in the
    degree's order (the callee's own axes are the trailing dims, as in its own forward),
    whose sequences have the scanned axis just before them, with every size inside the
    step fixed, no block repeated into copies, and every state and output of the step
    depending on its inputs (a value of the parameters alone has no batch dims)."""
    step = term.step
    if not isinstance(step, ir.Broadcasted) or not isinstance(step.op, ir.CallOp) or \
            step.op.each is not None or step.params:
        return None
    lifted = step.degree.names
    for port in (*step.inputs, *step.outputs):
        if port.array.names != (*lifted, *port.targets) or not port.reindexing.is_identity:
            return None
    for sequence, sliced in zip(term.dom[term.carries:], step.dom[term.carries:], strict=True):
        if sequence.names != (term.axis.name, *sliced.names):
            return None
    try:
        definition = program.definition(step.op.definition)
    except KeyError:
        return None
    for part in ir.walk(definition.body):
        if isinstance(part, ir.Block) and part.repeat > 1 and not part.shared:
            return None
        axes = [a for array in (*part.dom, *part.cod) for a in array.shape.axes]
        if isinstance(part, ir.Broadcasted):
            axes += list(part.degree.axes)
        if any(sizes.value(axis.size) is None for axis in axes):
            return None
    flow = dataflow(definition.body)
    reached = reached_from(flow, flow.inputs)
    if any(wire not in reached for wire in flow.outputs):
        return None
    return step, step.op, definition


INLINE_LIMIT = 40
"""The most terms (operations and reindexings, counted over the callee's body) of a callee
written into its caller (`compilers.inline_calls`): a larger body gains little from one call
less and would repeat its text at each call site."""

INLINE_BUDGET = 256
"""The most terms of callees written into one `forward`, in the order of its calls (the calls
after that stay submodule calls): a definition that calls a thousand small ones compiles in
about the time it took, instead of holding all their bodies."""


def inlinable_call(term: ir.Broadcasted, program: ir.Program) -> ir.Definition | None:
    """The callee of a call that the compiler writes into its caller's `forward`
    (`compilers.inline_calls`, which also needs the callee's symbolic sizes readable from the
    caller's inputs and `INLINE_BUDGET` not spent), or None: every port passes its array whole
    (`passes_arrays_whole`: the lifted axes and the callee's in any order, which a view puts
    in the callee's frame), no `each`; the callee takes leading dims, calls nothing (no call,
    scan or machine: a chain of calls compiles each body once more at most), has at most
    `INLINE_LIMIT` terms, no repeated block with copies, no dropout or batch norm (which read
    the module's training flag), and computes every output from its inputs."""
    if not passes_arrays_whole(term):
        return None
    assert isinstance(term.op, ir.CallOp)
    try:
        definition = program.definition(term.op.definition)
    except KeyError:
        return None
    return definition if inlined_terms(definition) is not None else None


def passes_arrays_whole(term: ir.Broadcasted) -> bool:
    """The call's part of `inlinable_call`: a call without `each` whose every port passes
    its array whole, each entry read once (an identity reindexing), its axes the lifted axes
    and the callee's in any order: the inlined body reads the arguments moved into its own
    frame (the lifted axes first in the degree's order, then the callee's axes in its
    declared order), a view, as the submodule call passes them."""
    op = term.op
    if not isinstance(op, ir.CallOp) or op.each is not None or term.params:
        return False
    lifted = term.degree.names
    for port, array in (*zip(term.inputs, term.dom, strict=True),
                        *zip(term.outputs, term.cod, strict=True)):
        if sorted(array.names) != sorted((*lifted, *port.targets)) or \
                port.array.names != array.names or not port.reindexing.is_identity:
            return False
    return True


def inlined_terms(definition: ir.Definition) -> int | None:
    """The callee's part of `inlinable_call`, which depends on the definition alone: the
    terms (operations and reindexings, as `INLINE_LIMIT` and `INLINE_BUDGET` count them) of a
    body that may be written in place, else None."""
    if not definition.leading_dims:
        return None
    terms = 0
    for part in ir.walk(definition.body):  # one walk, left at the first reason
        if isinstance(part, (ir.Machine, ir.Scan)) or (isinstance(part, ir.Block) and (
                (part.repeat > 1 and not part.shared) or part.copy_of is not None)):
            return None
        if isinstance(part, ir.Broadcasted) and isinstance(
                part.op, (ir.CallOp, ir.DropoutOp, ir.BatchNormOp)):
            return None
        terms += isinstance(part, (ir.Broadcasted, ir.Reindexing))
        if terms > INLINE_LIMIT:
            return None
    flow = dataflow(definition.body)
    reached = reached_from(flow, flow.inputs)
    return terms if all(wire in reached for wire in flow.outputs) else None
