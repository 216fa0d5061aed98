"""Masks: keep the entries where affine conditions on the indices hold (`mask[x >= y]`,
`causal[x, y]`) or where a boolean array is true, and fill the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Value
from ncd.diagnostics import did_you_mean
from ncd.elision import formula, listed

from .arguments import (
    arguments,
    bracket_axes,
    keywords,
    number_text,
    option_error,
    reject_items,
    same_shape,
    size_constant,
)
from .declaration import Box, Caption, Declaration, Gradients, Surface, declare, no_parameters
from .facts import Break, Carried, SymmetryCalls, Verdict, axis_list, entrywise, free
from .lowering import Emitter, Label, TensorCode, float_literal, target_label

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


def _causal_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Var,))
    axes = bracket_axes(builder, call)
    if len(axes) != 2:
        raise option_error(builder, "`causal` takes two axes: the query axis and the key axis",
                           call.name.span, hint="for example `causal[x, y](S)`")
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`causal`")
    builder.require_axes(value, axes, "`causal`")
    query, key = axes[0].name, axes[1].name
    condition = ir.trusted(ir.Comparison, coefficients=((query, 1), (key, -1)), offset=0,
                           op=">=", text=f"{query} >= {key}")
    op = ir.trusted(ir.MaskOp, kind="mask", axes=(query, key), conditions=(condition,),
                    by_array=False, fill=float("-inf"), causal=True)
    return same_shape(builder, op, value, (query, key), call, name)


def _affine_terms(builder: DefinitionBuilder, expr: s.Expr, axes: Sequence[str]
                  ) -> tuple[dict[str, int], int]:
    """An integer affine combination of axis indices: `2*x - y + 3`."""
    ctx = builder.ctx
    match expr:
        case s.Number(value=value, is_int=True):
            return {}, int(value)
        case s.Var(name=name, span=span):
            size = size_constant(ctx, name, span) if name not in axes else None
            if size is not None:  # `mask[x - y < w]`: a declared size, read after `-D`
                return {}, size
            if name not in axes:
                raise ctx.error("E301", f"`{name}` is not an axis of the masked array "
                                f"([{', '.join(axes)}])", span, hint=did_you_mean(name, axes))
            return {name: 1}, 0
        case s.Neg(operand=operand):
            terms, offset = _affine_terms(builder, operand, axes)
            return {k: -v for k, v in terms.items()}, -offset
        case s.BinOp(op=op, left=left, right=right) if op in "+-":
            lt, lo = _affine_terms(builder, left, axes)
            rt, ro = _affine_terms(builder, right, axes)
            sign = 1 if op == "+" else -1
            for key, coefficient in rt.items():
                lt[key] = lt.get(key, 0) + sign * coefficient
            return lt, lo + sign * ro
        case s.BinOp(op="*", left=left, right=right):
            lt, lo = _affine_terms(builder, left, axes)
            rt, ro = _affine_terms(builder, right, axes)
            if lt and rt:
                raise ctx.error("E306", "a mask condition must be affine in the indices",
                                expr.span)
            factor, terms, offset = (lo, rt, ro) if not lt else (ro, lt, lo)
            return {k: v * factor for k, v in terms.items()}, offset * factor
    raise ctx.error("E306", "a mask condition is built from indices, integers, + - and *",
                    expr.span)


def _mask_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Comparison, s.Keyword))
    options = keywords(builder, call, ["fill"])
    fill = options.get("fill", float("-inf"))
    conditions = [i for i in call.items or () if isinstance(i, s.Comparison)]
    if not conditions:
        (value, mask), _ = arguments(builder, call, 2)
        builder.require_reals(value, call.args[0].span, "`mask`")
        if mask.array.dtype.kind != "B":
            raise builder.ctx.error("E302", f"a mask array holds booleans B, but `{mask.name}` "
                                    f"holds {mask.array.dtype.text()}", call.args[1].span)
        for axis in mask.array.shape.axes:
            if axis.name not in value.array.names:
                raise builder.ctx.error("E301", f"the mask has axis `{axis.name}`, which "
                                        f"`{value.name}` lacks", call.args[1].span)
            builder.check_size(axis, value.array.shape.axis(axis.name), call.args[1].span,
                               "the mask")
        targets = mask.array.names
        op = ir.MaskOp(axes=tuple(targets), by_array=True, fill=fill)
        return builder.broadcast(op, [(value, targets), (mask, targets)],
                                 [(value.array, targets, name)], call.span)
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`mask`")
    compiled: list[ir.Comparison] = []
    used: list[str] = []
    for condition in conditions:
        left, left_offset = _affine_terms(builder, condition.left, value.array.names)
        right, right_offset = _affine_terms(builder, condition.right, value.array.names)
        for key, coefficient in right.items():
            left[key] = left.get(key, 0) - coefficient
        terms = tuple((k, v) for k, v in left.items() if v)
        for key, _ in terms:
            if key not in used:
                used.append(key)
        text = f"{_expr_text(condition.left)} {condition.op} {_expr_text(condition.right)}"
        compiled.append(ir.Comparison(coefficients=terms, offset=left_offset - right_offset,
                                      op=condition.op, text=text))  # type: ignore[arg-type]
    masked = [n for n in value.array.names if n in used]
    op = ir.MaskOp(axes=tuple(masked), conditions=tuple(compiled), fill=fill)
    return same_shape(builder, op, value, masked, call, name)


def _expr_text(expr: s.Expr) -> str:
    match expr:
        case s.Number(value=value):
            return number_text(value)
        case s.Var(name=name):
            return name
        case s.Neg(operand=operand):
            return f"-{_expr_text(operand)}"
        case s.BinOp(op=op, left=left, right=right):
            return f"{_expr_text(left)} {op} {_expr_text(right)}"
    return "?"


def _mask_overview(op: ir.MaskOp) -> tuple[str, str]:
    if op.causal:
        text = f"causal[{listed(op.axes)}]"
    elif op.by_array:
        text = f"mask[{listed(op.axes)}] by array"
    else:
        text = f"mask[{listed(op.axes)}]"
        if op.conditions:
            text += "\n" + formula(", ".join(c.text for c in op.conditions))
    return text, "Msquare"


def _condition(condition: ir.Comparison, labels: Sequence[Label], indices: dict[str, str],
               rank: int) -> str:
    """An affine comparison of indices as a broadcastable boolean tensor."""
    sides: tuple[list[str], list[str]] = ([], [])
    for name, coefficient in condition.coefficients:
        trailing = rank - 1 - labels.index(target_label(name))
        index = indices[name]
        if trailing:
            index += "[" + ", ".join([":"] + ["None"] * trailing) + "]"
        side = sides[0] if coefficient > 0 else sides[1]
        magnitude = abs(coefficient)
        side.append(index if magnitude == 1 else f"{magnitude} * {index}")
    if condition.offset > 0:
        sides[0].append(str(condition.offset))
    elif condition.offset < 0:
        sides[1].append(str(-condition.offset))
    left = " + ".join(sides[0]) or "0"
    right = " + ".join(sides[1]) or "0"
    return f"{left} {condition.op} {right}"


def _mask_lower(emit: Emitter, term: ir.Broadcasted, op: ir.MaskOp,
                inputs: list[TensorCode]) -> list[TensorCode]:
    expr, labels = emit.single(term, inputs)
    rank = len(labels)
    sizes = emit.sizes_of(term, [term.inputs[0]])
    if op.by_array:
        keep = emit.normalized(term, inputs[1], term.inputs[1], labels, "unsqueeze")
        description = "where the mask array holds"
    else:
        indices: dict[str, str] = {}
        for condition in op.conditions:
            for name, _ in condition.coefficients:
                label = target_label(name)
                if label not in labels:
                    raise emit.error(f"mask condition {condition.text!r} names {name!r}, "
                                     f"which is not a target axis")
                if name not in indices:
                    indices[name] = emit.assign(
                        f"{name}_index", f"torch.arange({emit.size(sizes[label])}, "
                        f"device={inputs[0].code}.device)", fallback="index")
        clauses = [_condition(c, labels, indices, rank) for c in op.conditions]
        if not clauses:
            raise emit.error("a mask has neither conditions nor a mask array")
        keep_expr = " & ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]
        keep = emit.assign("keep", keep_expr, "; ".join(c.text for c in op.conditions))
        description = "keep " + "; ".join(c.text for c in op.conditions)
    expr = f"{expr}.masked_fill(~{keep}, {float_literal(op.fill)})"
    return [emit.finish(term, expr, labels, comment=description, batched=inputs[0].batched,
                        fallback="masked")]


def _mask_symmetry(op: ir.MaskOp, term: ir.Broadcasted, carried: Carried,
                   calls: SymmetryCalls) -> Verdict:
    """A condition on indices reads positions; a mask array is permuted with the scores when
    it carries the same axes."""
    names = carried.any
    if op.by_array:
        for name in sorted(names):
            for port, axes in zip(term.inputs, carried.inputs, strict=True):
                if name in port.targets and name not in axes:
                    return Break(f"the mask array {port.name or ''} is not permuted along "
                                 f"{name}".replace("  ", " "))
        return entrywise(op, term, carried, calls)
    for condition in op.conditions:
        touched = {name for name, _ in condition.coefficients} & names
        if touched:
            what = "the causal mask" if op.causal else "the mask"
            return Break(f"{what} keeps {condition.text}: it depends on the positions of "
                         f"{axis_list(touched)}")
    return entrywise(op, term, carried, calls)


def _mask_legend(op: ir.MaskOp, term: ir.Broadcasted) -> Caption | None:
    """The conditions a mask keeps, under its square (`x - y < 4`); the causal mask's
    triangle says `x >= y` already, and a mask array enters the box as a wire."""
    if op.causal or op.by_array or not op.conditions:
        return None
    return Caption("math", formula(", ".join(c.text for c in op.conditions)))


def _mask_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.MaskOp,
                  inputs: Sequence[Value], outputs: Sequence[Value],
                  grads: Sequence[Value]) -> Gradients:
    """The same mask on the gradient, filling with 0: masked entries get no gradient."""
    reads = [(grads[0], term.inputs[0].targets),
             *((v, p.targets) for v, p in zip(inputs[1:], term.inputs[1:], strict=True))]
    (gradient,) = rev.op(op.model_copy(update={"fill": 0.0}), reads,
                         [(inputs[0].array, term.outputs[0].targets, f"d{inputs[0].name}")],
                         degree=term.degree.axes)
    return Gradients([gradient, *(None for _ in inputs[1:])])


MASK = declare(Declaration(
    node=ir.MaskOp, reverse=_mask_reverse,
    surfaces=(
        Surface("causal", "keep entries with query index >= key index; the rest become -inf",
                "causal[x, y](S)", _causal_typing),
        Surface("mask", "keep entries where index conditions hold (or where a boolean array is "
                "true); fill the rest", "mask[x >= y, fill=0](S)", _mask_typing),
    ),
    glyph=Box("mask_square", min_width=26.0, min_height=26.0, square=True,
              legend=_mask_legend),
    overview=_mask_overview, roles=no_parameters, lower=_mask_lower,
    cost=free, symmetry=_mask_symmetry))
