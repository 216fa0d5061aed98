"""Reading an operator call for its typing rule: the brackets (target axes, arrows, options,
flags), the array arguments and the parameters named after them.

Every helper reports a mistake as a diagnostic at the place it is written, with the operator's
example as the hint (from its `Surface`), and raises `Reject`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Context, Reject, Value
from ncd.diagnostics import Note, did_you_mean
from ncd.sizes import Size

from .declaration import SURFACES

if TYPE_CHECKING:
    from ncd.elaborate import DefinitionBuilder


def example(call: s.Call) -> str:
    """The example of the operator called, for hints."""
    return SURFACES[call.name.name].example


def option_error(builder: DefinitionBuilder, message: str, span: ir.Span,
                 hint: str | None = None) -> Reject:
    """A mistake in an operator's brackets (E307)."""
    return builder.ctx.error("E307", message, span, hint=hint)


def constant_value(ctx: Context, expr: s.Expr) -> float:
    """A number written in the source (`0.02`, `-1`, `1e-5`, `-inf`), or computed from the
    sizes of axes (`k - 1`, `(k - 1) // 2`): sizes are read after `-D` overrides."""
    match expr:
        case s.Number(value=value):
            return float(value)
        case s.Neg(operand=operand):
            return -constant_value(ctx, operand)
        case s.Var(name=name, span=span):
            size = size_constant(ctx, name, span)
            if size is not None:
                return float(size)
            if name == "inf":
                return math.inf
        case s.BinOp(op=op, left=left, right=right) if op in ("+", "-", "*", "/", "//"):
            a, b = constant_value(ctx, left), constant_value(ctx, right)
            if op in ("/", "//") and b == 0:
                raise ctx.error("E309", "division by zero", expr.span)
            value = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                     "/": lambda: a / b, "//": lambda: float(math.floor(a / b))}[op]()
            if math.isnan(value):
                raise ctx.error("E309", f"this option is not a number ({number_text(a)} {op} "
                                f"{number_text(b)})", expr.span)
            return value
    raise ctx.error("E307", "expected a number here (a number, `inf`, or sizes of axes "
                    "with + - * / //)", expr.span)


def size_constant(ctx: Context, name: str, span: ir.Span) -> int | None:
    """The size of the declared axis `name` where a number goes, or None when no axis has that
    name; an axis whose size is known only at run time is an error here."""
    info = ctx.axes.get(name)
    if info is None:
        return None
    if info.size.value is None:
        raise ctx.error("E309", f"the size of `{name}` is known only at run time, so it cannot "
                        "stand for a number here", span,
                        hint=f"give it a size: `axis {name} = 3`, or `-D {name}=3`")
    return info.size.value


def number_text(value: float) -> str:
    """A number as the source would write it: `2`, `0.5`, `1e+20`."""
    small = float(value).is_integer() and abs(value) < 1e15
    return str(int(value)) if small else repr(float(value))


def bracket_axes(builder: DefinitionBuilder, call: s.Call, *, required: bool = True
                 ) -> list[s.Ident]:
    """`softmax[y, z]`: the plain axis names in the brackets."""
    axes: list[s.Ident] = []
    for item in call.items or ():
        if isinstance(item, s.Var):
            axes.append(s.Ident(item.name, item.span))
    if required and not axes:
        raise option_error(builder, f"`{call.name.name}` needs its target axes in brackets",
                           call.name.span, hint=f"for example `{example(call)}`")
    return axes


def bracket_arrows(builder: DefinitionBuilder, call: s.Call) -> list[s.Arrow]:
    """`linear[h k -> m]`: the arrows in the brackets."""
    items = list(call.items or ())
    for before, after in itertools.pairwise(items):
        if isinstance(before, s.Var) and isinstance(after, s.Arrow):
            raise option_error(builder, f"`{before.name}` stands apart from the arrow after it",
                               before.span, hint="inside an arrow, axes are separated by spaces: "
                               "`linear[h k -> m]`")
    arrows = [item for item in items if isinstance(item, s.Arrow)]
    if not arrows:
        raise option_error(builder, f"`{call.name.name}` needs an arrow in brackets",
                           call.name.span, hint=f"for example `{example(call)}`")
    return arrows


def keywords(builder: DefinitionBuilder, call: s.Call, allowed: Sequence[str]) -> dict[str, float]:
    """`dropout[p=0.1]`: the `name=number` options, each one of `allowed`."""
    values: dict[str, float] = {}
    for item in call.items or ():
        if isinstance(item, s.Keyword):
            if item.name.name not in allowed:
                raise option_error(builder, f"`{call.name.name}` has no option "
                                   f"`{item.name.name}`", item.name.span,
                                   hint=did_you_mean(item.name.name, allowed))
            values[item.name.name] = constant_value(builder.ctx, item.value)
    return values


def keyword_spans(call: s.Call) -> dict[str, ir.Span]:
    """Where each `name=value` option's value is written."""
    return {item.name.name: item.value.span for item in call.items or ()
            if isinstance(item, s.Keyword)}


def positive_option(builder: DefinitionBuilder, call: s.Call, options: dict[str, float],
                    name: str, example: str) -> None:
    """An option that must be a finite number above 0 (`eps`)."""
    value = options.get(name)
    if value is not None and not (math.isfinite(value) and value > 0):
        raise option_error(builder, f"`{name}` of `{call.name.name}` must be a positive number, "
                           f"not {value:g}", keyword_spans(call)[name], hint=f"for example "
                           f"`{example}`")


def reject_items(builder: DefinitionBuilder, call: s.Call, allowed: tuple[type, ...]) -> None:
    """Refuse any bracket item that is not of an `allowed` kind."""
    for item in call.items or ():
        if not isinstance(item, allowed):
            raise option_error(builder, f"this is not an option of `{call.name.name}`",
                               item.span, hint=f"for example `{example(call)}`")


def arguments(builder: DefinitionBuilder, call: s.Call, data: int, params: int = 0,
              optional_params: int = 0) -> tuple[list[Value], list[s.Ident]]:
    """Evaluate `data` array arguments; the rest name parameters."""
    low, high = data + params, data + params + optional_params
    count = len(call.args)
    if not low <= count <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise builder.ctx.error("E303", f"`{call.name.name}` takes {expected} arguments, not "
                                f"{count}", call.span, hint=f"for example `{example(call)}`")
    values = [builder.single(arg) for arg in call.args[:data]]
    names: list[s.Ident] = []
    for arg in call.args[data:]:
        if not isinstance(arg, s.Var):
            raise builder.ctx.error("E312", "a parameter is given by its name", arg.span)
        names.append(s.Ident(arg.name, arg.span))
    return values, names


def same_shape(builder: DefinitionBuilder, op: ir.Operator, value: Value,
               targets: Sequence[str], call: s.Call, name: str | None,
               params: Sequence[tuple[ir.Parameter, Sequence[str]]] = ()) -> list[Value]:
    """Record an operation whose one output has the input's shape."""
    return builder.broadcast(op, [(value, targets)], [(value.array, targets, name)], call.span,
                             params=params)


def unary(builder: DefinitionBuilder, call: s.Call, what: str) -> Value:
    """The one array of reals of a call without brackets (`relu(X)`)."""
    reject_items(builder, call, ())
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, what)
    return value


def new_axis(builder: DefinitionBuilder, ident: s.Ident, size: Size) -> ir.Axis:
    """An axis made by an operator: a declared axis must have the size it gets."""
    info = builder.ctx.axes.get(ident.name)
    if info is not None and info.size != size:
        raise builder.ctx.error(
            "E300", f"axis `{ident.name}` is declared with size {info.size} but gets size "
            f"{size} here", ident.span, notes=[Note(info.span, "declared here")])
    return ir.trusted(ir.Axis, name=ident.name, size=size.to_ir())


def replace_axes(axes: Sequence[ir.Axis], old: Sequence[str], new: Sequence[ir.Axis]
                 ) -> list[ir.Axis]:
    """`axes` with the `old` ones removed and `new` placed where the first of them stood."""
    first = min(i for i, a in enumerate(axes) if a.name in old)
    kept = [a for a in axes if a.name not in old]
    position = sum(1 for a in axes[:first] if a.name not in old)
    return [*kept[:position], *new, *kept[position:]]
