"""Recognise a scan step that is exactly a standard LSTM or GRU cell (as `nn.LSTM` and
`nn.GRU` compute them), so that the compiler can run PyTorch's fused kernel.

The match is on the dataflow of the step's definition (`ncd.dataflow`), value by value, and
every piece is checked: the two learned linear maps with bias (input and hidden state to the
gate axis and the hidden axis), the gate picked by its fixed index on the gate axis (LSTM: i,
f, g, o; GRU: r, z, n, as PyTorch orders them), the nonlinearities, and the update. Sums and
products match in either operand order. Anything else (another gate order, a missing bias, a
peephole, a gate written another way) is no match, and the scan keeps its generic lowering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ncd import ir
from ncd.dataflow import Dataflow, Node, Wire, dataflow
from ncd.sizes import ProgramSizes


@dataclass(frozen=True)
class CellLinear:
    """One learned linear map of the cell: `linear[in -> gate hidden, bias]`."""

    term: ir.Broadcasted
    input_axis: str  # the axis of the weight that meets the input


@dataclass(frozen=True)
class Cell:
    """A recognised cell. `hidden` and `cell` are the carry positions of h and c (LSTM)."""

    kind: Literal["lstm", "gru"]
    hidden: int
    cell: int | None
    input_map: CellLinear
    hidden_map: CellLinear
    gate_axis: str
    hidden_axis: str


class _Graph:
    """The step's dataflow with the look-ups the patterns need."""

    def __init__(self, flow: Dataflow) -> None:
        self.flow = flow
        self.made = flow.producers()

    def node(self, wire: Wire) -> Node | None:
        found = self.made.get(wire)
        return found[0] if found is not None and found[1] == 0 else None

    def entrywise(self, wire: Wire, op: type[ir.Node]) -> tuple[ir.Broadcasted, Node] | None:
        """The broadcasted operation of kind `op` that gives `wire`, applied entry by entry
        (no target axes, every port read whole in the degree's order)."""
        node = self.node(wire)
        if node is None or not isinstance(node.term, ir.Broadcasted):
            return None
        term = node.term
        if not isinstance(term.op, op) or term.params or len(term.outputs) != 1:
            return None
        for port in (*term.inputs, *term.outputs):
            if port.targets or port.array.names != term.degree.names or \
                    not port.reindexing.is_identity:
                return None
        return term, node

    def function(self, wire: Wire, name: str) -> Wire | None:
        found = self.entrywise(wire, ir.ElementwiseOp)
        if found is None or not isinstance(found[0].op, ir.ElementwiseOp) or \
                found[0].op.function != name:
            return None
        return found[1].inputs[0]

    def pair(self, wire: Wire, op: type[ir.Node]) -> tuple[Wire, Wire] | None:
        found = self.entrywise(wire, op)
        if found is None or len(found[1].inputs) != 2:
            return None
        return found[1].inputs[0], found[1].inputs[1]

    def one_minus(self, wire: Wire) -> Wire | None:
        found = self.entrywise(wire, ir.ConstantOp)
        if found is None:
            return None
        op = found[0].op
        if not isinstance(op, ir.ConstantOp) or (op.op, op.constant, op.constant_first) != \
                ("-", 1.0, True):
            return None
        return found[1].inputs[0]

    def gate(self, wire: Wire, index: int, gate_axis: str, hidden_axis: str) -> Wire | None:
        """`Z[index, n]`: entry `index` of the gate axis of the array on the returned wire."""
        node = self.node(wire)
        if node is None or not isinstance(node.term, ir.Reindexing):
            return None
        eta = node.term.eta
        if eta.domain.names != (hidden_axis,) or sorted(eta.codomain.names) != \
                sorted((gate_axis, hidden_axis)):
            return None
        for row, (axis, offset) in enumerate(zip(eta.codomain.names, eta.offset, strict=True)):
            wanted = ((0,), index) if axis == gate_axis else ((1,), 0)
            if (eta.matrix[row], offset) != wanted:
                return None
        return node.inputs[0]

    def linear(self, wire: Wire, source: Wire, gate_axis: str, hidden_axis: str,
               hidden_size: ir.SizeExpr, sizes: ProgramSizes) -> CellLinear | None:
        """`linear[a -> gate hidden, bias]` of the one-axis array on `source`, with no lift."""
        node = self.node(wire)
        if node is None or not isinstance(node.term, ir.Broadcasted) or \
                node.inputs != (source,):
            return None
        term = node.term
        op = term.op
        if not isinstance(op, ir.LinearOp) or not op.bias or len(op.inputs) != 1 or \
                term.degree.axes or len(term.params) != 2 or \
                sorted(op.outputs) != sorted((gate_axis, hidden_axis)):
            return None
        (port,) = term.inputs
        if port.array.names != op.inputs or port.targets != op.inputs:
            return None
        weight, bias = term.params
        wanted_weight = {op.weight_inputs[0], gate_axis, hidden_axis}
        if set(weight.array.names) != wanted_weight or len(weight.array.names) != 3 or \
                set(bias.array.names) != {gate_axis, hidden_axis} or \
                len(bias.array.names) != 2:
            return None
        out = term.outputs[0].array
        if sizes.value(out.shape.axis(hidden_axis).size) != sizes.value(hidden_size) or \
                sizes.value(hidden_size) is None:
            return None
        return CellLinear(term, op.weight_inputs[0])


def _gate_axes(flow: Dataflow, graph: _Graph, wire: Wire, count: int,
               sizes: ProgramSizes) -> tuple[str, str] | None:
    """The gate and hidden axes of a gate pick `Z[k, n]` giving `wire`, if the gate axis has
    `count` entries."""
    node = graph.node(wire)
    if node is None or not isinstance(node.term, ir.Reindexing):
        return None
    eta = node.term.eta
    if len(eta.domain.axes) != 1 or len(eta.codomain.axes) != 2:
        return None
    hidden_axis = eta.domain.names[0]
    others = [a for a in eta.codomain.axes if a.name != hidden_axis]
    if len(others) != 1 or sizes.value(others[0].size) != count:
        return None
    return others[0].name, hidden_axis


def _either(pair: tuple[Wire, Wire] | None) -> list[tuple[Wire, Wire]]:
    return [] if pair is None else [pair, (pair[1], pair[0])]


def recognise(step: ir.Definition, carries: int, sizes: ProgramSizes) -> Cell | None:
    """The standard cell that `step` is, or None."""
    if any(v.array.dtype.kind != "R" or len(v.array.shape.axes) != 1
           for v in (*step.inputs, *step.outputs)):
        return None
    flow = dataflow(step.body)
    graph = _Graph(flow)
    if carries == 2 and len(step.inputs) == 3 and len(step.outputs) == 3:
        for hidden in (0, 1):
            cell = _lstm(graph, hidden, 1 - hidden, sizes)
            if cell is not None:
                return cell
    if carries == 1 and len(step.inputs) == 2 and len(step.outputs) == 2:
        return _gru(graph, sizes)
    return None


def _lstm(graph: _Graph, hidden: int, cell: int, sizes: ProgramSizes) -> Cell | None:
    """h' = o tanh(c'), c' = f c + i g with (i, f, g, o) = (σ, σ, tanh, σ) of the gate rows
    0..3 of W_ih x + b_ih + W_hh h + b_hh; the step gives (h', c') in the carries' order
    and h' as its output."""
    flow = graph.flow
    h_in, c_in, x_in = flow.inputs[hidden], flow.inputs[cell], flow.inputs[2]
    h_out, c_out = flow.outputs[hidden], flow.outputs[cell]
    if flow.outputs[2] != h_out or h_out == c_out:
        return None
    for o_wire, tanh_wire in _either(graph.pair(h_out, ir.MultiplyOp)):
        if graph.function(tanh_wire, "tanh") != c_out:
            continue
        zo = graph.function(o_wire, "sigmoid")
        if zo is None:
            continue
        axes = _gate_axes(flow, graph, zo, 4, sizes)
        if axes is None:
            continue
        gate_axis, hidden_axis = axes
        z = graph.gate(zo, 3, gate_axis, hidden_axis)
        if z is None:
            continue
        for forget, update in _either(graph.pair(c_out, ir.AddOp)):
            gates = _lstm_gates(graph, forget, update, c_in, z, gate_axis, hidden_axis)
            if not gates:
                continue
            maps = _summed_maps(graph, z, x_in, h_in, gate_axis, hidden_axis,
                                 step_size(flow, hidden_axis, graph, zo), sizes)
            if maps is not None:
                return Cell("lstm", hidden, cell, maps[0], maps[1], gate_axis, hidden_axis)
    return None


def step_size(flow: Dataflow, hidden_axis: str, graph: _Graph, wire: Wire) -> ir.SizeExpr:
    """The size of the hidden axis, as the gate pick giving `wire` reads it."""
    node = graph.node(wire)
    assert node is not None and isinstance(node.term, ir.Reindexing)
    return node.term.eta.domain.axis(hidden_axis).size


def _lstm_gates(graph: _Graph, forget: Wire, update: Wire, c_in: Wire, z: Wire,
                gate_axis: str, hidden_axis: str) -> bool:
    """forget = σ(Z[1]) c and update = σ(Z[0]) tanh(Z[2])."""
    kept = False
    for f_wire, c_wire in _either(graph.pair(forget, ir.MultiplyOp)):
        zf = graph.function(f_wire, "sigmoid")
        if c_wire == c_in and zf is not None and \
                graph.gate(zf, 1, gate_axis, hidden_axis) == z:
            kept = True
    if not kept:
        return False
    for i_wire, g_wire in _either(graph.pair(update, ir.MultiplyOp)):
        zi, zg = graph.function(i_wire, "sigmoid"), graph.function(g_wire, "tanh")
        if zi is not None and zg is not None and \
                graph.gate(zi, 0, gate_axis, hidden_axis) == z and \
                graph.gate(zg, 2, gate_axis, hidden_axis) == z:
            return True
    return False


def _summed_maps(graph: _Graph, z: Wire, x_in: Wire, h_in: Wire, gate_axis: str,
                 hidden_axis: str, hidden_size: ir.SizeExpr,
                 sizes: ProgramSizes) -> tuple[CellLinear, CellLinear] | None:
    """Z = linear(x) + linear(h), each with its bias."""
    for x_wire, h_wire in _either(graph.pair(z, ir.AddOp)):
        x_map = graph.linear(x_wire, x_in, gate_axis, hidden_axis, hidden_size, sizes)
        h_map = graph.linear(h_wire, h_in, gate_axis, hidden_axis, hidden_size, sizes)
        if x_map is not None and h_map is not None:
            return x_map, h_map
    return None


def _gru(graph: _Graph, sizes: ProgramSizes) -> Cell | None:
    """h' = (1 - z) n + z h with r = σ(Gx[0] + Gh[0]), z = σ(Gx[1] + Gh[1]),
    n = tanh(Gx[2] + r Gh[2]), Gx = W_ih x + b_ih, Gh = W_hh h + b_hh; the step gives h'
    as its state and as its output."""
    flow = graph.flow
    h_in, x_in = flow.inputs
    h_out = flow.outputs[0]
    if flow.outputs[1] != h_out:
        return None
    for new_part, kept_part in _either(graph.pair(h_out, ir.AddOp)):
        for keep_wire, h_wire in _either(graph.pair(kept_part, ir.MultiplyOp)):
            if h_wire != h_in:
                continue
            for minus_wire, n_wire in _either(graph.pair(new_part, ir.MultiplyOp)):
                if graph.one_minus(minus_wire) != keep_wire:
                    continue
                cell = _gru_gates(graph, keep_wire, n_wire, x_in, h_in, sizes)
                if cell is not None:
                    return cell
    return None


def _gru_gates(graph: _Graph, z_wire: Wire, n_wire: Wire, x_in: Wire, h_in: Wire,
               sizes: ProgramSizes) -> Cell | None:
    update = graph.function(z_wire, "sigmoid")
    candidate = graph.function(n_wire, "tanh")
    if update is None or candidate is None:
        return None
    for picks in _either(graph.pair(update, ir.AddOp)):
        axes = _gate_axes(graph.flow, graph, picks[0], 3, sizes)
        if axes is None:
            continue
        gate_axis, hidden_axis = axes
        gx, gh = (graph.gate(w, 1, gate_axis, hidden_axis) for w in picks)
        if gx is None or gh is None:
            continue
        size = step_size(graph.flow, hidden_axis, graph, picks[0])
        x_map = graph.linear(gx, x_in, gate_axis, hidden_axis, size, sizes)
        h_map = graph.linear(gh, h_in, gate_axis, hidden_axis, size, sizes)
        if x_map is None or h_map is None:
            continue
        if _gru_candidate(graph, candidate, gx, gh, gate_axis, hidden_axis):
            return Cell("gru", 0, None, x_map, h_map, gate_axis, hidden_axis)
    return None


def _gru_candidate(graph: _Graph, candidate: Wire, gx: Wire, gh: Wire, gate_axis: str,
                   hidden_axis: str) -> bool:
    """candidate = Gx[2] + σ(Gx[0] + Gh[0]) Gh[2]."""
    for x_pick, reset_part in _either(graph.pair(candidate, ir.AddOp)):
        if graph.gate(x_pick, 2, gate_axis, hidden_axis) != gx:
            continue
        for reset_wire, h_pick in _either(graph.pair(reset_part, ir.MultiplyOp)):
            if graph.gate(h_pick, 2, gate_axis, hidden_axis) != gh:
                continue
            reset = graph.function(reset_wire, "sigmoid")
            if reset is None:
                continue
            for a, b in _either(graph.pair(reset, ir.AddOp)):
                if graph.gate(a, 0, gate_axis, hidden_axis) == gx and \
                        graph.gate(b, 0, gate_axis, hidden_axis) == gh:
                    return True
    return False
