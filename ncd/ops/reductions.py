"""Reductions over target axes: `sum`, `mean`, `max`, `min`, `logsumexp`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never, get_args

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.elision import listed

from .arguments import arguments, bracket_axes, reject_items
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


@dataclass(frozen=True)
class _Reduction:
    summary: str
    torch: str
    """The PyTorch function that reduces over the dims given as `dim=`."""


REDUCTIONS: dict[ir.ReduceFunction, _Reduction] = {
    "sum": _Reduction("sum over the target axes", "torch.sum"),
    "mean": _Reduction("mean over the target axes (average pooling)", "torch.mean"),
    "max": _Reduction("maximum over the target axes (max pooling)", "torch.amax"),
    "min": _Reduction("minimum over the target axes", "torch.amin"),
    "logsumexp": _Reduction("log of the sum of exponentials over the target axes",
                            "torch.logsumexp"),
}
if set(REDUCTIONS) != set(get_args(ir.ReduceFunction)):  # loud at import, not when compiled
    raise ImportError("every reduction needs one entry in REDUCTIONS; check "
                      f"{sorted(set(REDUCTIONS) ^ set(get_args(ir.ReduceFunction)))}")


def _reduce_typing(function: ir.ReduceFunction) -> TypingRule:
    def typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        reject_items(builder, call, (s.Var,))
        axes = bracket_axes(builder, call)
        (value,), _ = arguments(builder, call, 1)
        builder.require_reals(value, call.args[0].span, f"`{function}`")
        builder.require_axes(value, axes, f"`{function}`")
        targets = [a.name for a in axes]
        kept = [a for a in value.array.shape.axes if a.name not in targets]
        op = ir.ReduceOp(function=function, axes=tuple(targets))
        return builder.broadcast(op, [(value, targets)], [(array(ir.REALS, kept), (), name)],
                                 call.span)

    return typing


def _reduce_caption(op: ir.ReduceOp, term: ir.Broadcasted) -> Caption:
    return Caption("plain", "\u03a3" if op.function == "sum" else op.function)


def _reduce_overview(op: ir.ReduceOp) -> tuple[str, str]:
    return f"{op.function}[{listed(op.axes)}]", "box"


def _reduce_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ReduceOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    out = emit.output_labels(term.outputs[0])
    own = emit.plain_labels(inputs[0], term.inputs[0]) or []
    kept = [label for label in own if label not in {target_label(a) for a in op.axes}]
    if len(set(own)) == len(own) and kept == out:
        order = own
    else:
        order = out + [target_label(a) for a in op.axes]
    expr = emit.normalized(term, inputs[0], term.inputs[0], order, "expand")
    dims = emit.tuple_text([str(order.index(target_label(a)) - len(order)) for a in op.axes])
    if op.axes:
        expr = f"{REDUCTIONS[op.function].torch}({expr}, dim={dims})"
    return [emit.finish(term, expr, out, comment=f"{op.function} over {' '.join(op.axes)}",
                        batched=inputs[0].batched, fallback=op.function)]


def _reduce_cost(op: ir.ReduceOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """One operation per entry read; a mean divides each result, and logsumexp takes
    max, subtract, exp and sum per entry read, log and add per result."""
    read, results = input_entries(sizes, term), output_entries(sizes, term)
    match op.function:
        case "sum" | "max" | "min":
            return Cost(flops=read)
        case "mean":
            return Cost(flops=read + results)
        case "logsumexp":
            return Cost(flops=read * 4 + results * 2)
        case _:
            assert_never(op.function)


def _reduce_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ReduceOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """sum: the gradient copied along the reduced axes; mean: divided by their size; max and
    min: shared evenly by the entries equal to the result (as PyTorch's `amax`), found with
    `1 - sign(|Y - X|)`; logsumexp: times `exp(X - Y)`."""
    (x,), (y,), (gradient,) = inputs, outputs, grads
    axes = [x.array.shape.axis(n) for n in op.axes]
    match op.function:
        case "sum":
            return Gradients([rev.expand(gradient, x.array)])
        case "mean":
            return Gradients([rev.expand(rev.divide_by_count(gradient, axes), x.array)])
        case "max" | "min":
            gap = rev.subtract(y, x) if op.function == "max" else rev.subtract(x, y)
            gap = rev.expand(gap, x.array)
            equal = rev.constant(rev.function("sign", gap), "-", 1.0, constant_first=True)
            count = rev.reduce("sum", equal, op.axes)
            return Gradients([rev.multiply(rev.divide(gradient, count), equal, like=x.array)])
        case "logsumexp":
            share = rev.function("exp", rev.expand(rev.subtract(x, y), x.array))
            return Gradients([rev.multiply(gradient, share, like=x.array)])
    assert_never(op.function)


REDUCE = declare(Declaration(
    node=ir.ReduceOp, reverse=_reduce_reverse,
    surfaces=tuple(Surface(function, reduction.summary, f"{function}[x](X)",
                           _reduce_typing(function)) for function, reduction in REDUCTIONS.items()),
    glyph=Box("plain_box", _reduce_caption, caption_size=13.0, min_width=24.0, min_height=22.0),
    overview=_reduce_overview, roles=no_parameters, lower=_reduce_lower,
    cost=_reduce_cost, symmetry=entrywise))
