"""Entrywise arithmetic: `add` and `multiply` of several arrays, and the expressions that make
them (`A + B`, `A - B`, `A * B`, `-A`, `A * 0.5`, `A / sqrt(k)`), with their constant factors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array

from .arguments import number_text, reject_items
from .declaration import Declaration, Junction, SizeValue, Surface, declare
from .lowering import Emitter, Label, Role, TensorCode

if TYPE_CHECKING:
    from ncd.elaborate import DefinitionBuilder


def combine(builder: DefinitionBuilder, op: ir.Operator, values: Sequence[tuple[Value, ir.Span]],
            span: ir.Span, name: str | None, what: str,
            params: Sequence[tuple[ir.Parameter, ir.Span]] = ()) -> Value:
    """An entrywise operation over arrays (and declared parameters, e.g. a bias `Y + b`)."""
    for value, value_span in values:
        builder.require_reals(value, value_span, what)
    # Parameters take part in the alignment of axes like any operand.
    stand_ins = [(Value(p.array, p.name, p_span), p_span) for p, p_span in params]
    axes = builder.unify_axes([*values, *stand_ins], what)
    out = array(ir.REALS, axes)
    return builder.broadcast(op, [(v, ()) for v, _ in values], [(out, (), name)], span,
                             params=[(p, ()) for p, _ in params])[0]


def _operands(emit: Emitter, term: ir.Broadcasted, inputs: list[TensorCode],
              labels: Sequence[Label]) -> list[str]:
    """Every operand (inputs, then parameters) in the output's layout, with size-1 dims where
    it lacks an axis (broadcast by the arithmetic)."""
    ports = [*term.inputs, *term.params]
    values = [*inputs, *emit.parameters(term)]
    return [emit.normalized(term, value, port, labels, "unsqueeze")
            for value, port in zip(values, ports, strict=True)]


# ---------------------------------------------------------------------------------------
# add
# ---------------------------------------------------------------------------------------


def _add_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, ())
    if len(call.args) < 2:
        raise builder.ctx.error("E303", "`add` takes at least 2 arguments", call.span)
    values = [(builder.single(a), a.span) for a in call.args]
    return [combine(builder, ir.AddOp(), values, call.span, name, "`add`")]


def _add_roles(op: ir.AddOp, term: ir.Broadcasted, value_of: SizeValue) -> tuple[Role, ...]:
    """A bias added in starts at zero."""
    return tuple(Role("zeros") for _ in term.params)


def _add_lower(emit: Emitter, term: ir.Broadcasted, op: ir.AddOp,
               inputs: list[TensorCode]) -> list[TensorCode]:
    labels = emit.output_labels(term.outputs[0])
    return [emit.finish(term, " + ".join(_operands(emit, term, inputs, labels)), labels,
                        comment="sum", batched=any(v.batched for v in inputs), fallback="total")]


ADD = declare(Declaration(
    node=ir.AddOp,
    surfaces=(Surface("add", "entrywise sum; axes missing from an operand are broadcast",
                      "add(X, Y)", _add_typing),),
    glyph=Junction("plus"), overview=lambda op: ("+", "circle"), roles=_add_roles,
    lower=_add_lower, commutative=True))


# ---------------------------------------------------------------------------------------
# multiply
# ---------------------------------------------------------------------------------------


def _multiply_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, ())
    if len(call.args) < 2:
        raise builder.ctx.error("E303", "`multiply` takes at least 2 arguments", call.span)
    values = [(builder.single(a), a.span) for a in call.args]
    return [combine(builder, ir.MultiplyOp(), values, call.span, name, "`multiply`")]


def _multiply_roles(op: ir.MultiplyOp, term: ir.Broadcasted, value_of: SizeValue
                    ) -> tuple[Role, ...]:
    """A gain multiplied in starts at one."""
    return tuple(Role("ones") for _ in term.params)


def _multiply_lower(emit: Emitter, term: ir.Broadcasted, op: ir.MultiplyOp,
                    inputs: list[TensorCode]) -> list[TensorCode]:
    labels = emit.output_labels(term.outputs[0])
    return [emit.finish(term, " * ".join(_operands(emit, term, inputs, labels)), labels,
                        comment="entrywise product", batched=any(v.batched for v in inputs),
                        fallback="product")]


MULTIPLY = declare(Declaration(
    node=ir.MultiplyOp,
    surfaces=(Surface("multiply", "entrywise product; axes missing from an operand are "
                      "broadcast", "multiply(X, Y)", _multiply_typing),),
    glyph=Junction("odot"), overview=lambda op: ("×", "circle"), roles=_multiply_roles,
    lower=_multiply_lower, commutative=True))


# ---------------------------------------------------------------------------------------
# constant factors
# ---------------------------------------------------------------------------------------


def scalar(builder: DefinitionBuilder, expr: s.Expr) -> tuple[float, str]:
    """A constant factor: numbers, `sqrt(...)` and sizes of concrete axes (`/ sqrt(k)`)."""
    value, text = _scalar(builder, expr)
    if not math.isfinite(value):
        raise builder.ctx.error("E309", "this constant factor is too large to be a number",
                                expr.span)
    return value, text


def _scalar(builder: DefinitionBuilder, expr: s.Expr) -> tuple[float, str]:
    ctx = builder.ctx
    match expr:
        case s.Number(value=value):
            return float(value), number_text(value)
        case s.Var(name=name, span=span):
            info = ctx.axes.get(name)
            if info is not None and info.size.value is not None:
                return float(info.size.value), f"|{name}|"
            if info is not None:
                raise ctx.error("E309", f"the size of `{name}` is not known before run time, so "
                                "it cannot be a constant factor", span)
            raise ctx.error("E200", f"`{name}` is not an axis or a number", span)
        case s.Neg(operand=operand):
            value, text = scalar(builder, operand)
            return -value, f"-{text}"
        case s.Call(name=ident, items=None, args=(arg,)) if ident.name == "sqrt":
            value, text = scalar(builder, arg)
            if value < 0:
                raise ctx.error("E309", "square root of a negative number", expr.span)
            return math.sqrt(value), f"√{text}"
        case s.BinOp(op=op, left=left, right=right, span=span) if op in "+-*/":
            a, a_text = scalar(builder, left)
            b, b_text = scalar(builder, right)
            if op == "/" and b == 0:
                raise ctx.error("E309", "division by zero", span)
            value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
            return value, f"{a_text}{op}{b_text}"
    raise ctx.error("E307", "expected a constant (a number, an axis size or sqrt(...))",
                    expr.span)


def _is_scalar(builder: DefinitionBuilder, expr: s.Expr) -> bool:
    match expr:
        case s.Number():
            return True
        case s.Var(name=name):
            return name not in builder.scope and name in builder.ctx.axes
        case s.Neg(operand=operand):
            return _is_scalar(builder, operand)
        case s.Call(name=ident, items=None, args=(arg,)) if ident.name == "sqrt":
            return _is_scalar(builder, arg)
        case s.BinOp(left=left, right=right, op=op) if op != "//":
            return _is_scalar(builder, left) and _is_scalar(builder, right)
    return False


# ---------------------------------------------------------------------------------------
# arithmetic expressions
# ---------------------------------------------------------------------------------------


def _declared_parameter(builder: DefinitionBuilder, expr: s.Expr) -> ir.Parameter | None:
    if isinstance(expr, s.Var) and expr.name not in builder.scope:
        return builder.params.get(expr.name)
    return None


def arithmetic(builder: DefinitionBuilder, expr: s.BinOp | s.Neg, name: str | None) -> Value:
    """`A + B`, `A - B`, `A * B`, `A * 0.5`, `A / sqrt(k)`, `-A`."""
    ctx = builder.ctx
    if isinstance(expr, s.Neg):
        value = builder.single(expr.operand)
        builder.require_reals(value, expr.operand.span, "negation")
        negation = ir.ElementwiseOp(function="neg")
        return builder.broadcast(negation, [(value, ())], [(value.array, (), name)],
                                 expr.span)[0]
    left_scalar, right_scalar = _is_scalar(builder, expr.left), _is_scalar(builder, expr.right)
    if left_scalar and right_scalar:
        raise ctx.error("E207", "a constant alone is not an array", expr.span)
    if expr.op in ("*", "/") and (left_scalar or right_scalar):
        if expr.op == "/" and left_scalar:
            raise ctx.error("E307", "dividing a constant by an array is not an operator of ncd",
                            expr.span, hint="use an elementwise function or multiply")
        array_expr, scalar_expr = (expr.right, expr.left) if left_scalar else (expr.left,
                                                                              expr.right)
        factor, text = scalar(builder, scalar_expr)
        if expr.op == "/":
            if factor == 0:
                raise ctx.error("E309", "division by zero", scalar_expr.span)
            factor, text = 1.0 / factor, f"1/{text}"
        value = builder.single(array_expr)
        builder.require_reals(value, array_expr.span, "scaling")
        scaling = ir.ScaleOp(factor=factor, text=text)
        return builder.broadcast(scaling, [(value, ())], [(value.array, (), name)],
                                 expr.span)[0]
    if left_scalar or right_scalar:
        raise ctx.error("E307", f"`{expr.op}` between an array and a constant is not an "
                        "operator of ncd", expr.span,
                        hint="constants scale arrays with `*` and `/`")
    if expr.op == "//":
        raise ctx.error("E307", "`//` is for sizes, not arrays", expr.span)
    if expr.op == "/":
        raise ctx.error("E307", "division of arrays is not an operator of ncd", expr.span,
                        hint="multiply by an elementwise function of the divisor instead")
    op: ir.Operator = ir.MultiplyOp() if expr.op == "*" else ir.AddOp()
    what = {"*": "`*`", "+": "`+`", "-": "`-`"}[expr.op]
    if expr.op in ("+", "*"):
        operands: list[tuple[Value, ir.Span]] = []
        params: list[tuple[ir.Parameter, ir.Span]] = []
        for side in (expr.left, expr.right):
            parameter = _declared_parameter(builder, side)
            if parameter is not None:
                params.append((parameter, side.span))
            else:
                operands.append((builder.single(side), side.span))
        if not operands:
            raise ctx.error("E207", f"`{what[1:-1]}` of two parameters is not an array on a wire",
                            expr.span)
        return combine(builder, op, operands, expr.span, name, what, params)
    left = builder.single(expr.left)
    right = builder.single(expr.right)
    if expr.op == "-":
        builder.require_reals(right, expr.right.span, "subtraction")
        negated = builder.broadcast(ir.ElementwiseOp(function="neg"), [(right, ())],
                                    [(right.array, (), None)], expr.right.span)[0]
        right = negated
    return combine(builder, op, [(left, expr.left.span), (right, expr.right.span)], expr.span,
                   name, what)
