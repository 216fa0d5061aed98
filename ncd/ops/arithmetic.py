"""Entrywise arithmetic: `add` and `multiply` of several arrays, and the expressions that make
them (`A + B`, `A - B`, `A * B`, `-A`, `A * 0.5`, `A / sqrt(k)`), with their constant factors."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never, get_args

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.elision import formula

from .arguments import arguments, number_text, option_error, reject_items, same_shape
from .declaration import (
    Box,
    Caption,
    CaptionKind,
    Declaration,
    Gradients,
    Junction,
    SizeValue,
    Surface,
    TypingRule,
    declare,
    no_parameters,
)
from .facts import Cost, CostSizes, entrywise, free, output_entries, per_output_entry
from .lowering import Emitter, Label, Role, TensorCode, float_literal

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


# The operators of `+` and `*`, made once without validation (`ir.trusted`): they have no
# fields but their kind.
_ADD = ir.trusted(ir.AddOp, kind="add")
_MULTIPLY = ir.trusted(ir.MultiplyOp, kind="multiply")


def including(builder: DefinitionBuilder, operands: Sequence[tuple[Value, ir.Span]],
              span: ir.Span, what: str, outer: str | None = None,
              names: Sequence[str | None] = ()) -> int:
    """Broadcasting by axis name: the position of an operand whose axes include every other
    operand's (shared axes must have equal sizes); anything else is an error at the operator,
    naming the shapes. `outer` is the tensor equation's operator that writes what an operand
    of each shape would make (`+`: an outer sum)."""
    builder.unify_axes(operands, what)
    union = {n for value, _ in operands for n in value.array.names}
    for position, (value, _) in enumerate(operands):
        if set(value.array.names) == union:
            return position
    shapes = [f"[{', '.join(value.array.names)}]" for value, _ in operands]
    described = " and ".join(shapes) if len(shapes) == 2 else ", ".join(shapes)
    neither = "neither's axes include the other's" if len(shapes) == 2 else \
        "no operand's axes include all the others'"
    everything = list(dict.fromkeys(n for value, _ in operands for n in value.array.names))
    if outer is not None:
        given = [*names, *[None] * len(operands)]
        letters = [given[i] or chr(ord("A") + i) for i in range(len(operands))]
        reads = f" {outer} ".join(f"{letter}[{', '.join(value.array.names)}]"
                                  for letter, (value, _) in zip(letters, operands, strict=True))
        hint = (f"broadcasting never adds axes that both operands lack; if every combination "
                f"is meant, write a tensor equation: `Z[{', '.join(everything)}] = {reads}`")
    else:
        hint = ("broadcasting never adds axes that both operands lack; rename, reduce or map "
                "an axis so that one operand has every axis of the other")
    raise builder.ctx.error("E301", f"{what} between arrays with axes {described}: {neither}",
                            span, hint=hint)


def combine(builder: DefinitionBuilder, op: ir.Operator, values: Sequence[tuple[Value, ir.Span]],
            span: ir.Span, name: str | None, what: str,
            params: Sequence[tuple[ir.Parameter, ir.Span]] = (), outer: str | None = None,
            names: Sequence[str | None] = (), at: ir.Span | None = None) -> Value:
    """An entrywise operation over arrays (and declared parameters, e.g. a bias `Y + b`);
    a mistake in their axes is reported `at` the operator (the whole `span` by default)."""
    for value, value_span in values:
        builder.require_reals(value, value_span, what)
    # Parameters take part in the alignment of axes like any operand.
    stand_ins = [(Value(p.array, p.name, p_span), p_span) for p, p_span in params]
    including(builder, [*values, *stand_ins], at or span, what, outer,
              [*names, *[None] * (len(values) - len(names)), *(p.name for p, _ in params)])
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


def _operands_less_one(op: object, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """A sum or product of k arrays: k - 1 operations per output entry."""
    return Cost(flops=output_entries(sizes, term) * (len(term.inputs) + len(term.params) - 1))


def _add_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.AddOp, inputs: Sequence[Value],
                 outputs: Sequence[Value], grads: Sequence[Value]) -> Gradients:
    """Each operand gets the output's gradient, summed along the axes it was broadcast on
    (the reverse of the add is a copy)."""
    (gradient,) = grads
    return Gradients([rev.sum_to(gradient, v.array) for v in inputs],
                     [rev.sum_to(gradient, p.array) for p in term.params])


ADD = declare(Declaration(
    node=ir.AddOp, reverse=_add_reverse,
    surfaces=(Surface("add", "entrywise sum; axes missing from an operand are broadcast",
                      "add(X, Y)", _add_typing),),
    glyph=Junction("plus"), overview=lambda op: ("+", "circle"), roles=_add_roles,
    lower=_add_lower, commutative=True, cost=_operands_less_one, symmetry=entrywise))


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


def _multiply_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.MultiplyOp,
                      inputs: Sequence[Value], outputs: Sequence[Value],
                      grads: Sequence[Value]) -> Gradients:
    """Each operand gets the output's gradient times the other operands."""
    operands = [*inputs, *(rev.parameter(p.name) for p in term.params if p.name is not None)]
    found = [rev.sum_to(rev.multiply(grads[0], *(o for i, o in enumerate(operands) if i != j)),
                        operand.array) for j, operand in enumerate(operands)]
    return Gradients(found[:len(inputs)], found[len(inputs):])


MULTIPLY = declare(Declaration(
    node=ir.MultiplyOp, reverse=_multiply_reverse,
    surfaces=(Surface("multiply", "entrywise product; axes missing from an operand are "
                      "broadcast", "multiply(X, Y)", _multiply_typing),),
    glyph=Junction("odot"), overview=lambda op: ("×", "circle"), roles=_multiply_roles,
    lower=_multiply_lower, commutative=True, cost=_operands_less_one, symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# an array and a constant: `X + 1e-5`, `1 - X`, `1 / X`, `pow[2](X)`
# ---------------------------------------------------------------------------------------


def _pow_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    items = list(call.items or ())
    if len(items) != 1 or isinstance(items[0], (s.Arrow, s.Keyword, s.Comparison, s.Each)):
        hint = None
        if not items and len(call.args) == 2:
            hint = "the exponent is a constant in brackets: `pow[2](X)`"
        raise option_error(builder, "`pow` takes one constant exponent in brackets",
                           call.name.span, hint=hint or "for example `pow[2](X)`")
    exponent, text = scalar(builder, items[0])
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`pow`")
    op = ir.ConstantOp(op="^", constant=exponent, text=text)
    return same_shape(builder, op, value, (), call, name)


_SIGN = {"+": "+", "-": "\u2212", "/": "/"}


def _constant_caption(op: ir.ConstantOp, term: ir.Broadcasted) -> Caption:
    # Numbers in e-notation read as a formula would set `e` as a variable: upright text then.
    kind: CaptionKind = "plain" if re.search(r"[0-9.]e", op.text) else "math"
    if op.op == "^":
        return Caption("power", "(\u00b7)", superscript=op.text)
    if op.constant_first:
        return Caption(kind, f"{op.text} {_SIGN[op.op]} \u00b7")
    return Caption(kind, f"{_SIGN[op.op]} {op.text}")


def _constant_overview(op: ir.ConstantOp) -> tuple[str, str]:
    text = formula(op.text)
    if op.op == "^":
        return f"^ {text}", "box"
    return (f"{text} {op.op} ·" if op.constant_first else f"{op.op} {text}"), "box"


def _constant_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ConstantOp,
                    inputs: list[TensorCode]) -> list[TensorCode]:
    expr, labels = emit.single(term, inputs)
    constant = float_literal(op.constant)
    if op.op == "^":
        code, comment, fallback = f"torch.pow({expr}, {constant})", f"to the power {op.text}", \
            "power"
    else:
        code = f"{constant} {op.op} {expr}" if op.constant_first else f"{expr} {op.op} {constant}"
        written = f"{op.text} {op.op} x" if op.constant_first else f"x {op.op} {op.text}"
        comment, fallback = written, {"+": "shifted", "-": "difference", "/": "quotient"}[op.op]
    return [emit.finish(term, code, labels, comment=comment, batched=inputs[0].batched,
                        fallback=fallback)]


def _constant_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ConstantOp,
                      inputs: Sequence[Value], outputs: Sequence[Value],
                      grads: Sequence[Value]) -> Gradients:
    """`x ± c`: the gradient; `c - x`: its negative; `c / x`: times `-c / x²`; `x / c`: times
    `1 / c`; `x ^ c`: times `c x^(c-1)`; `c ^ x`: times `log(c) c^x`."""
    (x,), (y,), (gradient,) = inputs, outputs, grads
    c = op.constant
    match op.op, op.constant_first:
        case ("+", _) | ("-", False):
            return Gradients([gradient])
        case ("-", True):
            return Gradients([rev.scale(gradient, -1.0)])
        case ("/", True):
            return Gradients([rev.scale(rev.divide(gradient, rev.function("square", x)), -c)])
        case ("/", False):
            return Gradients([rev.scale(gradient, 1 / c)])
        case ("^", False):
            return Gradients([rev.multiply(gradient, rev.scale(rev.constant(x, "^", c - 1), c))])
        case ("^", True):
            return Gradients([rev.multiply(gradient, rev.scale(y, math.log(c)))])
    raise AssertionError(op.op)


CONSTANT = declare(Declaration(
    node=ir.ConstantOp, reverse=_constant_reverse,
    surfaces=(Surface("pow", "every entry to a constant power (`X + c`, `c - X` and `c / X` "
                      "make the same kind of operation)", "pow[2](X)", _pow_typing),),
    glyph=Box("plain_box", _constant_caption, caption_size=11.0, min_width=22.0,
              min_height=18.0),
    overview=_constant_overview, roles=no_parameters, lower=_constant_lower,
    cost=per_output_entry(1), symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# entrywise functions of two arrays: `X / Y`, `maximum(X, Y)`, `minimum(X, Y)`
# ---------------------------------------------------------------------------------------


def binary(builder: DefinitionBuilder, function: ir.BinaryFunction,
           operands: Sequence[tuple[Value, ir.Span]], span: ir.Span, name: str | None,
           what: str, names: Sequence[str | None] = (), at: ir.Span | None = None) -> Value:
    """An entrywise function of two arrays, one of whose axes include the other's; the
    result's axes are in the order they are first seen, as for `+` and `*`."""
    for value, value_span in operands:
        builder.require_reals(value, value_span, what)
    including(builder, operands, at or span, what, None, names)
    out = array(ir.REALS, builder.unify_axes(operands, what))
    return builder.broadcast(ir.BinaryOp(function=function), [(v, ()) for v, _ in operands],
                             [(out, (), name)], span)[0]


def _binary_typing(function: ir.BinaryFunction) -> TypingRule:
    def typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        reject_items(builder, call, ())
        if len(call.args) != 2:
            raise builder.ctx.error("E303", f"`{function}` takes 2 arguments, not "
                                    f"{len(call.args)}", call.span,
                                    hint=f"for example `{function}(X, Y)`")
        operands = [(builder.single(a), a.span) for a in call.args]
        return [binary(builder, function, operands, call.span, name, f"`{function}`",
                       [_operand_name(a) for a in call.args])]

    return typing


_BINARY_CAPTIONS: dict[str, str] = {"divide": "\u00f7", "maximum": "max", "minimum": "min"}
_BINARY_SUMMARIES: dict[str, str] = {
    "divide": "entrywise quotient (also `X / Y`)",
    "maximum": "entrywise maximum of two arrays",
    "minimum": "entrywise minimum of two arrays",
}


def _binary_lower(emit: Emitter, term: ir.Broadcasted, op: ir.BinaryOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    labels = emit.output_labels(term.outputs[0])
    first, second = _operands(emit, term, inputs, labels)
    code = f"{first} / {second}" if op.function == "divide" else \
        f"torch.{op.function}({first}, {second})"
    comment = {"divide": "entrywise quotient", "maximum": "entrywise maximum",
               "minimum": "entrywise minimum"}[op.function]
    return [emit.finish(term, code, labels, comment=comment,
                        batched=any(v.batched for v in inputs), fallback=op.function)]


def _binary_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.BinaryOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """`a / b`: `dY / b` and `-dY a / b²`; `maximum`: the gradient goes to the larger operand,
    half to each where they are equal (as PyTorch's); `minimum` likewise to the smaller."""
    (a, b), (y,), (gradient,) = inputs, outputs, grads
    match op.function:
        case "divide":
            d_a = rev.divide(gradient, b)
            d_b = rev.scale(rev.divide(rev.multiply(gradient, y), b), -1.0)
        case "maximum" | "minimum":
            difference = rev.subtract(a, b) if op.function == "maximum" else rev.subtract(b, a)
            share = rev.scale(rev.constant(rev.function("sign", difference), "+", 1.0), 0.5)
            d_a = rev.multiply(gradient, share)
            d_b = rev.subtract(gradient, d_a)
        case _:
            assert_never(op.function)
    return Gradients([rev.sum_to(d_a, a.array), rev.sum_to(d_b, b.array)])


BINARY = declare(Declaration(
    node=ir.BinaryOp, reverse=_binary_reverse,
    surfaces=tuple(Surface(function, _BINARY_SUMMARIES[function] + "; the axes of one include "
                           "the other's, which is broadcast", f"{function}(X, Y)",
                           _binary_typing(function))
                   for function in get_args(ir.BinaryFunction)),
    glyph=Box("plain_box", lambda op, term: Caption("plain", _BINARY_CAPTIONS[op.function]),
              caption_size=11.0, min_width=22.0, min_height=18.0),
    overview=lambda op: (_BINARY_CAPTIONS[op.function], "box"), roles=no_parameters,
    lower=_binary_lower, cost=per_output_entry(1), symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# where
# ---------------------------------------------------------------------------------------


def _where_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, ())
    if len(call.args) != 3:
        raise builder.ctx.error("E303", f"`where` takes 3 arguments, not {len(call.args)}",
                                call.span, hint="for example `where(C, X, Y)`")
    operands = [(builder.single(a), a.span) for a in call.args]
    (condition, condition_span), *choices = operands
    if condition.array.dtype.kind != "B":
        raise builder.ctx.error(
            "E302", f"the condition of `where` is a boolean array B[...], but `{condition.name}` "
            f"holds {condition.array.dtype.text()}", condition_span,
            hint="`where(C, X, Y)` takes the entry of X where C is true, else the entry of Y")
    for value, value_span in choices:
        builder.require_reals(value, value_span, "`where`")
    including(builder, operands, call.span, "`where`", None,
              [_operand_name(a) for a in call.args])
    # The axes in the order they are first seen in X and Y, then in the condition.
    out = array(ir.REALS, builder.unify_axes([*choices, operands[0]], "`where`"))
    return builder.broadcast(ir.WhereOp(), [(v, ()) for v, _ in operands], [(out, (), name)],
                             call.span)


def _where_lower(emit: Emitter, term: ir.Broadcasted, op: ir.WhereOp,
                 inputs: list[TensorCode]) -> list[TensorCode]:
    labels = emit.output_labels(term.outputs[0])
    condition, first, second = _operands(emit, term, inputs, labels)
    return [emit.finish(term, f"torch.where({condition}, {first}, {second})", labels,
                        comment="where", batched=any(v.batched for v in inputs),
                        fallback="chosen")]


def _where_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.WhereOp,
                   inputs: Sequence[Value], outputs: Sequence[Value],
                   grads: Sequence[Value]) -> Gradients:
    """The gradient goes to the chosen operand: `where(C, dY, 0)` and `where(C, 0, dY)`."""
    (condition, chosen, otherwise), (gradient,) = inputs, grads
    zero = rev.zeros(ir.ArrayType(dtype=ir.REALS, shape=ir.Shape()))
    return Gradients([None, rev.sum_to(rev.where(condition, gradient, zero), chosen.array),
                      rev.sum_to(rev.where(condition, zero, gradient), otherwise.array)])


WHERE = declare(Declaration(
    node=ir.WhereOp, reverse=_where_reverse,
    surfaces=(Surface("where", "the entry of X where the boolean array C is true, else the "
                      "entry of Y; the axes of one operand include the others'",
                      "where(C, X, Y)", _where_typing),),
    glyph=Box("plain_box", lambda op, term: Caption("plain", "where"), caption_size=11.0,
              min_width=22.0, min_height=18.0),
    overview=lambda op: ("where", "box"), roles=no_parameters, lower=_where_lower,
    cost=free, symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# constant factors
# ---------------------------------------------------------------------------------------


# The functions that make a constant of a constant (`/ sqrt(k)`, `* log(10000)`).
CONSTANT_FUNCTIONS = frozenset({"sqrt", "log", "exp"})


def is_constant_call(expr: s.Expr) -> bool:
    """`sqrt(...)`, `log(...)` or `exp(...)` of one argument and no brackets: a constant when
    its argument is one."""
    return isinstance(expr, s.Call) and expr.name.name in CONSTANT_FUNCTIONS and \
        expr.items is None and len(expr.args) == 1


def scalar(builder: DefinitionBuilder, expr: s.Expr) -> tuple[float, str]:
    """A constant factor: numbers, sizes of concrete axes (`/ sqrt(k)`), `+ - * /` of these and
    `sqrt(...)`, `log(...)` and `exp(...)` of these."""
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
        case s.Call(name=ident, items=None, args=(arg,)) if ident.name == "log":
            value, text = scalar(builder, arg)
            if value <= 0:
                raise ctx.error("E309", f"the logarithm of {number_text(value)}: a constant's "
                                "logarithm needs a positive number", expr.span)
            return math.log(value), f"ln({text})"
        case s.Call(name=ident, items=None, args=(arg,)) if ident.name == "exp":
            value, text = scalar(builder, arg)
            try:
                return math.exp(value), f"exp({text})"
            except OverflowError:
                raise ctx.error("E309", f"exp({number_text(value)}) is too large to be a "
                                "number", expr.span) from None
        case s.BinOp(op=op, left=left, right=right, span=span) if op in "+-*/":
            a, a_text = scalar(builder, left)
            b, b_text = scalar(builder, right)
            if op == "/" and b == 0:
                raise ctx.error("E309", "division by zero", span)
            value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
            return value, f"{a_text}{op}{b_text}"
    raise ctx.error("E307", "expected a constant (a number, an axis size, or sqrt(...), "
                    "log(...) or exp(...) of these)", expr.span)


def is_scalar(builder: DefinitionBuilder, expr: s.Expr) -> bool:
    match expr:
        case s.Number():
            return True
        case s.Var(name=name):
            # An array, parameter or buffer of that name is the array, not the axis's size.
            return name not in builder.scope and name not in builder.params \
                and name in builder.ctx.axes
        case s.Neg(operand=operand):
            return is_scalar(builder, operand)
        case s.Call(args=(arg,)) if is_constant_call(expr):
            return is_scalar(builder, arg)
        case s.BinOp(left=left, right=right, op=op) if op != "//":
            return is_scalar(builder, left) and is_scalar(builder, right)
    return False


# ---------------------------------------------------------------------------------------
# arithmetic expressions
# ---------------------------------------------------------------------------------------


def _declared_parameter(builder: DefinitionBuilder, expr: s.Expr) -> ir.Parameter | None:
    if isinstance(expr, s.Var) and expr.name not in builder.scope:
        return builder.params.get(expr.name)
    return None


def _operand_name(expr: s.Expr) -> str | None:
    return expr.name if isinstance(expr, s.Var) else None


def arithmetic(builder: DefinitionBuilder, expr: s.BinOp | s.Neg, name: str | None) -> Value:
    """`A + B`, `A - B`, `A * B`, `A / B`, `A * 0.5`, `A / sqrt(k)`, `A + 1e-5`, `1 - A`,
    `1 / A`, `-A`."""
    ctx = builder.ctx
    if isinstance(expr, s.Neg):
        value = builder.single(expr.operand)
        builder.require_reals(value, expr.operand.span, "negation")
        negation = ir.ElementwiseOp(function="neg")
        return builder.broadcast(negation, [(value, ())], [(value.array, (), name)],
                                 expr.span)[0]
    at = expr.op_span or expr.span
    left_scalar, right_scalar = is_scalar(builder, expr.left), is_scalar(builder, expr.right)
    if left_scalar and right_scalar:
        raise ctx.error("E207", "a constant alone is not an array", expr.span)
    if expr.op in ("//", "%"):
        raise ctx.error("E307", f"`{expr.op}` is for sizes and indices, not arrays", at,
                        hint="divide arrays with `/`")
    if expr.op == "*" or (expr.op == "/" and right_scalar):
        if left_scalar or right_scalar:
            return _scaled(builder, expr, left_scalar, name)
    elif left_scalar or right_scalar:
        return _with_constant(builder, expr, left_scalar, name)
    what = f"`{expr.op}`"
    names = [_operand_name(expr.left), _operand_name(expr.right)]
    if expr.op in ("+", "*"):
        op: ir.Operator = _MULTIPLY if expr.op == "*" else _ADD
        operands: list[tuple[Value, ir.Span]] = []
        params: list[tuple[ir.Parameter, ir.Span]] = []
        for side in (expr.left, expr.right):
            parameter = _declared_parameter(builder, side)
            if parameter is not None:
                params.append((parameter, side.span))
            else:
                operands.append((builder.single(side), side.span))
        operand_names = [n for n, side in zip(names, (expr.left, expr.right), strict=True)
                         if _declared_parameter(builder, side) is None]
        if not operands:  # two parameters: both read as data, on wires
            operands = [(builder.param_wire(p, p_span), p_span) for p, p_span in params]
            operand_names, params = [p.name for p, _ in params], []
        return combine(builder, op, operands, expr.span, name, what, params, outer=expr.op,
                       names=operand_names, at=at)
    left = builder.single(expr.left)
    right = builder.single(expr.right)
    sides = [(left, expr.left.span), (right, expr.right.span)]
    if expr.op == "/":
        return binary(builder, "divide", sides, expr.span, name, what, names, at=at)
    builder.require_reals(right, expr.right.span, "subtraction")
    builder.require_reals(left, expr.left.span, what)
    including(builder, sides, at, what, outer="-", names=names)
    negated = builder.broadcast(ir.ElementwiseOp(function="neg"), [(right, ())],
                                [(right.array, (), None)], expr.right.span)[0]
    return combine(builder, ir.AddOp(), [(left, expr.left.span), (negated, expr.right.span)],
                   expr.span, name, what, at=at)


def _scaled(builder: DefinitionBuilder, expr: s.BinOp, left_scalar: bool,
            name: str | None) -> Value:
    """`X * c`, `c * X`, `X / c`: a `ScaleOp`."""
    array_expr, scalar_expr = (expr.right, expr.left) if left_scalar else (expr.left, expr.right)
    factor, text = scalar(builder, scalar_expr)
    if expr.op == "/":
        if factor == 0:
            raise builder.ctx.error("E309", "division by zero", scalar_expr.span)
        factor, text = 1.0 / factor, f"1/{text}"
    value = builder.single(array_expr)
    builder.require_reals(value, array_expr.span, "scaling")
    scaling = ir.ScaleOp(factor=factor, text=text)
    return builder.broadcast(scaling, [(value, ())], [(value.array, (), name)], expr.span)[0]


def _with_constant(builder: DefinitionBuilder, expr: s.BinOp, left_scalar: bool,
                   name: str | None) -> Value:
    """`X + c`, `c + X`, `X - c`, `c - X`, `c / X`: a `ConstantOp`."""
    array_expr, scalar_expr = (expr.right, expr.left) if left_scalar else (expr.left, expr.right)
    constant, text = scalar(builder, scalar_expr)
    value = builder.single(array_expr)
    builder.require_reals(value, array_expr.span, f"`{expr.op}` with a constant")
    op = ir.ConstantOp(op="+" if expr.op == "+" else "-" if expr.op == "-" else "/",
                       constant=constant, text=text, constant_first=left_scalar)
    return builder.broadcast(op, [(value, ())], [(value.array, (), name)], expr.span)[0]
