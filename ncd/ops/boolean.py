"""Boolean gates on arrays of B: `xor(A, B)`, `and(A, B)`, `or(A, B)`, `not(A)`, and the XOR of
an array's entries along axes, `xor[i](A)` (their sum in Z2, the parity).

Their reverse derivatives are those of the parametric lens papers' Boolean circuits, over Z2
(the gradient of a Boolean wire is a Boolean array): XOR sends δ to (δ, δ), AND at (a, b) to
(b ∧ δ, a ∧ δ), OR at (a, b) to (¬b ∧ δ, ¬a ∧ δ) (OR is a ⊕ b ⊕ ab), NOT to δ, and the XOR
along axes copies δ along them. A gradient summed over broadcast axes is their XOR
(`Reverser.sum_to` over B): addition in Z2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never, get_args

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.elision import listed

from .arguments import arguments, bracket_axes, reject_items
from .arithmetic import _operand_name, _operands, including
from .declaration import (
    Box,
    Caption,
    Declaration,
    Gradients,
    Surface,
    TypingRule,
    declare,
    no_parameters,
)
from .facts import Cost, CostSizes, entrywise, input_entries, output_entries
from .lowering import Emitter, TensorCode, target_label

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder

BOOLEANS = ir.BOOLEANS

_SUMMARIES: dict[ir.BooleanGate, str] = {
    "xor": "exclusive or of two Boolean arrays (their sum in Z2); `xor[i](A)`: the XOR of the "
           "entries along `i` (the parity)",
    "and": "and of two Boolean arrays (their product in Z2)",
    "or": "or of two Boolean arrays",
    "not": "negation of a Boolean array",
}
_EXAMPLES: dict[ir.BooleanGate, str] = {"xor": "xor(A, C)", "and": "and(A, C)",
                                        "or": "or(A, C)", "not": "not(A)"}
_SYMBOLS: dict[ir.BooleanGate, str] = {"xor": "\u2295", "and": "\u2227", "or": "\u2228",
                                       "not": "\u00ac"}
_TORCH: dict[ir.BooleanGate, str] = {"xor": "torch.logical_xor", "and": "torch.logical_and",
                                     "or": "torch.logical_or", "not": "torch.logical_not"}
if set(_TORCH) != set(get_args(ir.BooleanGate)):  # loud at import, not when compiled
    raise ImportError("every gate needs its entries in ncd.ops.boolean")


def _require_booleans(builder: DefinitionBuilder, value: Value, span: ir.Span, what: str) -> None:
    if value.array.dtype.kind != "B":
        raise builder.ctx.error(
            "E302", f"{what} needs a Boolean array B, but `{value.name}` holds "
            f"{value.array.dtype.text()}", span,
            hint="the gates work on B[...] arrays: declare the input `B[...]`")


def _gate_typing(gate: ir.BooleanGate) -> TypingRule:
    def typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        what = f"`{gate}`"
        if gate == "xor" and call.items is not None:
            return [_parity(builder, call, name)]
        reject_items(builder, call, ())
        count = 1 if gate == "not" else 2
        if len(call.args) != count:
            raise builder.ctx.error("E303", f"{what} takes {count} argument"
                                    f"{'s' if count > 1 else ''}, not {len(call.args)}",
                                    call.span, hint=f"for example `{_EXAMPLES[gate]}`")
        operands = [(builder.single(a), a.span) for a in call.args]
        for value, value_span in operands:
            _require_booleans(builder, value, value_span, what)
        including(builder, operands, call.span, what, None,
                  [_operand_name(a) for a in call.args])
        out = array(BOOLEANS, builder.unify_axes(operands, what))
        return builder.broadcast(ir.GateOp(gate=gate), [(v, ()) for v, _ in operands],
                                 [(out, (), name)], call.span)

    return typing


def _parity(builder: DefinitionBuilder, call: s.Call, name: str | None) -> Value:
    """`xor[i](A)`: the XOR of A's entries along the bracketed axes."""
    reject_items(builder, call, (s.Var,))
    axes = bracket_axes(builder, call)
    (value,), _ = arguments(builder, call, 1)
    _require_booleans(builder, value, call.args[0].span, "`xor`")
    builder.require_axes(value, axes, "`xor`")
    targets = [a.name for a in axes]
    kept = [a for a in value.array.shape.axes if a.name not in targets]
    op = ir.GateOp(gate="xor", axes=tuple(targets))
    return builder.broadcast(op, [(value, targets)], [(array(BOOLEANS, kept), (), name)],
                             call.span)[0]


def _gate_caption(op: ir.GateOp, term: ir.Broadcasted) -> Caption:
    return Caption("plain", _SYMBOLS[op.gate])


def _gate_overview(op: ir.GateOp) -> tuple[str, str]:
    if op.axes:
        return f"xor[{listed(op.axes)}]", "box"
    return op.gate, "box"


def _gate_lower(emit: Emitter, term: ir.Broadcasted, op: ir.GateOp,
                inputs: list[TensorCode]) -> list[TensorCode]:
    out = emit.output_labels(term.outputs[0])
    batched = any(v.batched for v in inputs)
    if op.axes:
        # The parity along the axes: the count of true entries, odd or even, counted in one
        # byte (a count modulo 256 keeps its parity, and takes no more memory than the bits).
        order = out + [target_label(a) for a in op.axes]
        expr = emit.normalized(term, inputs[0], term.inputs[0], order, "expand")
        dims = emit.tuple_text([str(order.index(target_label(a)) - len(order))
                                for a in op.axes])
        return [emit.finish(term, f"torch.sum({expr}, dim={dims}, dtype=torch.uint8) % 2 == 1",
                            out,
                            comment=f"xor over {' '.join(op.axes)}", batched=batched,
                            fallback="parity")]
    operands = _operands(emit, term, inputs, out)
    return [emit.finish(term, f"{_TORCH[op.gate]}({', '.join(operands)})", out,
                        comment=op.gate, batched=batched, fallback=op.gate)]


def _gate_cost(op: ir.GateOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """One operation per output entry (per entry read for the XOR along axes)."""
    if op.axes:
        return Cost(flops=input_entries(sizes, term))
    return Cost(flops=output_entries(sizes, term))


def _gate_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.GateOp,
                  inputs: Sequence[Value], outputs: Sequence[Value],
                  grads: Sequence[Value]) -> Gradients:
    """The reverse derivatives over Z2: XOR (δ, δ); AND (b ∧ δ, a ∧ δ); OR (¬b ∧ δ, ¬a ∧ δ);
    NOT δ; the XOR along axes δ copied along them. Each gradient is XOR-summed along the axes
    its operand was broadcast on."""
    (gradient,) = grads
    if op.axes:
        return Gradients([rev.expand(gradient, inputs[0].array)])
    match op.gate:
        case "not":
            return Gradients([gradient])
        case "xor":
            a, b = inputs
            return Gradients([rev.sum_to(gradient, a.array), rev.sum_to(gradient, b.array)])
        case "and" | "or":
            a, b = inputs
            other_a, other_b = (b, a) if op.gate == "and" else (rev.gate("not", b),
                                                                rev.gate("not", a))
            return Gradients([rev.sum_to(rev.gate("and", other_a, gradient), a.array),
                              rev.sum_to(rev.gate("and", other_b, gradient), b.array)])
    assert_never(op.gate)


GATE = declare(Declaration(
    node=ir.GateOp, reverse=_gate_reverse,
    surfaces=tuple(Surface(gate, _SUMMARIES[gate], _EXAMPLES[gate], _gate_typing(gate))
                   for gate in get_args(ir.BooleanGate)),
    glyph=Box("plain_box", _gate_caption, caption_size=13.0, min_width=22.0, min_height=18.0),
    overview=_gate_overview, roles=no_parameters, lower=_gate_lower,
    commutative=False, cost=_gate_cost, symmetry=entrywise))
