"""The operator registry: every named operator of the language, declared once.

Each entry gives the operator's name, a one-line summary, an example (checked by the tests and
shown in the language reference), and its typing rule: a function that checks the arguments
and records the broadcasted operation. The grammar has one generic call rule; names resolve
here, or to a user definition, with a did-you-mean on a miss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ncd import ir
from ncd import syntax as s
from ncd.context import Context, Reject, Value, array, port, shape
from ncd.diagnostics import Note, did_you_mean
from ncd.elaborate import DefinitionBuilder, constant_value
from ncd.sizes import Size, from_ir
from ncd.statements import single, unknown_callable

Elaborator = Callable[[DefinitionBuilder, s.Call, "str | None"], list[Value]]


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    summary: str
    example: str
    elaborate: Elaborator


OPERATORS: dict[str, OperatorSpec] = {}


def operator(name: str, summary: str, example: str) -> Callable[[Elaborator], Elaborator]:
    def register(function: Elaborator) -> Elaborator:
        OPERATORS[name] = OperatorSpec(name, summary, example, function)
        return function

    return register


# ---------------------------------------------------------------------------------------
# reading an operator's brackets and arguments
# ---------------------------------------------------------------------------------------


def _ctx_error(builder: DefinitionBuilder, message: str, span: ir.Span,
               hint: str | None = None) -> Reject:
    return builder.ctx.error("E307", message, span, hint=hint)


def bracket_axes(builder: DefinitionBuilder, call: s.Call, *, required: bool = True
                 ) -> list[s.Ident]:
    """`softmax[y, z]`: the plain axis names in the brackets."""
    axes: list[s.Ident] = []
    for item in call.items or ():
        if isinstance(item, s.Var):
            axes.append(s.Ident(item.name, item.span))
    if required and not axes:
        raise _ctx_error(builder, f"`{call.name.name}` needs its target axes in brackets",
                         call.name.span, hint=f"for example `{OPERATORS[call.name.name].example}`")
    return axes


def bracket_arrows(builder: DefinitionBuilder, call: s.Call) -> list[s.Arrow]:
    items = list(call.items or ())
    for before, after in itertools.pairwise(items):
        if isinstance(before, s.Var) and isinstance(after, s.Arrow):
            raise _ctx_error(builder, f"`{before.name}` stands apart from the arrow after it",
                             before.span, hint="inside an arrow, axes are separated by spaces: "
                             "`linear[h k -> m]`")
    arrows = [item for item in items if isinstance(item, s.Arrow)]
    if not arrows:
        raise _ctx_error(builder, f"`{call.name.name}` needs an arrow in brackets",
                         call.name.span,
                         hint=f"for example `{OPERATORS[call.name.name].example}`")
    return arrows


def keywords(builder: DefinitionBuilder, call: s.Call, allowed: Sequence[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in call.items or ():
        if isinstance(item, s.Keyword):
            if item.name.name not in allowed:
                raise _ctx_error(builder, f"`{call.name.name}` has no option `{item.name.name}`",
                                 item.name.span, hint=did_you_mean(item.name.name, allowed))
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
        raise _ctx_error(builder, f"`{name}` of `{call.name.name}` must be a positive number, "
                         f"not {value:g}", keyword_spans(call)[name], hint=f"for example "
                         f"`{example}`")


# An initialiser's arguments: the names of the required ones, then of the optional ones.
INITIALISER_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()), "zeros": ((), ()), "ones": ((), ()), "kaiming": ((), ()),
    "normal": (("mean", "std"), ()), "uniform": (("low", "high"), ()),
    "constant": (("value",), ()), "xavier": ((), ("gain",)),
}


def check_initialiser(ctx: Context, init: s.Call, args: Sequence[float]) -> None:
    """The initialiser `init` (a known name) can initialise a parameter with `args`: the right
    number of finite numbers, a standard deviation >= 0, low <= high, a positive gain."""
    name = init.name.name
    required, optional = INITIALISER_ARGUMENTS[name]
    if not len(required) <= len(args) <= len(required) + len(optional):
        wanted = ", ".join((*required, *(f"[{o}]" for o in optional)))
        count = str(len(required)) if not optional else \
            f"{len(required)} to {len(required) + len(optional)}"
        noun = "number" if count == "1" else "numbers"
        raise ctx.error("E312", f"`{name}` takes {count} {noun}, not {len(args)}", init.span,
                        hint=f"write `{name}({wanted})`" if wanted else f"write `{name}`")
    named = dict(zip((*required, *optional), args, strict=False))
    spans = dict(zip((*required, *optional), (a.span for a in init.args), strict=False))
    for argument, value in named.items():
        if not math.isfinite(value):
            raise ctx.error("E312", f"the {argument} of `{name}` must be a finite number, not "
                            f"{value}", spans[argument])
    if name == "normal" and named["std"] < 0:
        raise ctx.error("E312", f"the standard deviation of `normal` must be >= 0, not "
                        f"{named['std']:g}", spans["std"],
                        hint="`normal(mean, std)`, for example `normal(0, 0.02)`")
    if name == "uniform" and named["low"] > named["high"]:
        raise ctx.error("E312", f"`uniform(low, high)` needs low <= high, but {named['low']:g} > "
                        f"{named['high']:g}", init.span,
                        hint=f"swap them: `uniform({named['high']:g}, {named['low']:g})`")
    if name == "xavier" and "gain" in named and named["gain"] <= 0:
        raise ctx.error("E312", f"the gain of `xavier` must be positive, not {named['gain']:g}",
                        spans["gain"], hint="`xavier(gain)`, for example `xavier(1.0)`")


def reject_items(builder: DefinitionBuilder, call: s.Call, allowed: tuple[type, ...]) -> None:
    for item in call.items or ():
        if not isinstance(item, allowed):
            raise _ctx_error(builder, f"this is not an option of `{call.name.name}`",
                             item.span, hint=f"for example `{OPERATORS[call.name.name].example}`")


def arguments(builder: DefinitionBuilder, call: s.Call, data: int, params: int = 0,
              optional_params: int = 0) -> tuple[list[Value], list[s.Ident]]:
    """Evaluate `data` array arguments; the rest name parameters."""
    low, high = data + params, data + params + optional_params
    count = len(call.args)
    if not low <= count <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise builder.ctx.error("E303", f"`{call.name.name}` takes {expected} arguments, not "
                                f"{count}", call.span,
                                hint=f"for example `{OPERATORS[call.name.name].example}`")
    values = [single(builder, arg) for arg in call.args[:data]]
    names: list[s.Ident] = []
    for arg in call.args[data:]:
        if not isinstance(arg, s.Var):
            raise builder.ctx.error("E312", "a parameter is given by its name", arg.span)
        names.append(s.Ident(arg.name, arg.span))
    return values, names


def same_shape(builder: DefinitionBuilder, op: ir.Operator, value: Value,
               targets: Sequence[str], call: s.Call, name: str | None,
               params: Sequence[tuple[ir.Parameter, Sequence[str]]] = ()) -> list[Value]:
    return builder.broadcast(op, [(value, targets)], [(value.array, targets, name)], call.span,
                             params=params)


def unary(builder: DefinitionBuilder, call: s.Call, what: str) -> Value:
    reject_items(builder, call, ())
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, what)
    return value


# ---------------------------------------------------------------------------------------
# learned maps
# ---------------------------------------------------------------------------------------


@operator("linear", "a learned linear map from target axes to new axes; weight (and bias) "
          "named in the arguments", "linear[m -> h k](X, W_q)")
def _linear(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow, s.Var))
    arrow = bracket_arrows(builder, call)[0]
    flags = [i.name for i in call.items or () if isinstance(i, s.Var)]
    if any(f != "bias" for f in flags):
        bad = next(i for i in call.items or () if isinstance(i, s.Var) and i.name != "bias")
        raise _ctx_error(builder, f"`linear` has no flag `{bad.name}`", bad.span,
                         hint="the only flag is `bias`")
    bias = "bias" in flags or len(call.args) == 3
    (value,), param_names = arguments(builder, call, 1, 1, 1 if bias or len(call.args) > 2 else 0)
    builder.require_reals(value, call.args[0].span, "`linear`")
    builder.require_axes(value, arrow.left, "`linear`")
    in_names = [i.name for i in arrow.left]
    out_axes = [builder.global_axis(i) for i in arrow.right]
    out_names = [a.name for a in out_axes]
    for ident in arrow.right:
        if ident.name in value.array.names and ident.name not in in_names:
            raise builder.ctx.error(
                "E301", f"`linear` makes axis `{ident.name}`, which `{value.name}` already has",
                ident.span, hint="name the new axis differently")
    # A square map (`linear[m -> m]`) needs two distinct weight axes: the input one is `m_in`.
    weight_axes = [ir.Axis(name=f"{n}_in" if n in out_names else n,
                           size=value.array.shape.axis(n).size) for n in in_names]
    weight = builder.parameter(param_names[0], array(ir.REALS, [*weight_axes, *out_axes]),
                               "`linear`")
    params: list[tuple[ir.Parameter, Sequence[str]]] = [(weight, weight.array.names)]
    if bias:
        if len(param_names) < 2:
            raise builder.ctx.error("E303", "`linear[..., bias]` needs a bias parameter: "
                                    "`linear[m -> n, bias](X, W, b)`", call.span)
        bias_param = builder.parameter(param_names[1], array(ir.REALS, out_axes), "`linear`")
        params.append((bias_param, bias_param.array.names))
    axes = value.array.shape.axes
    first = min(i for i, a in enumerate(axes) if a.name in in_names)
    kept = [a for a in axes if a.name not in in_names]
    position = sum(1 for a in axes[:first] if a.name not in in_names)
    out_array = array(value.array.dtype, [*kept[:position], *out_axes, *kept[position:]])
    op = ir.LinearOp(inputs=tuple(in_names), outputs=tuple(out_names), bias=bias)
    return builder.broadcast(op, [(value, in_names)], [(out_array, out_names, name)], call.span,
                             params=params)


@operator("embedding", "look up rows of a table by an index of datatype N[v]",
          "embedding[v -> m](T, E)")
def _embedding(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow, s.Var))
    (value,), (table_name,) = arguments(builder, call, 1, 1)
    if value.array.dtype.kind != "N":
        raise builder.ctx.error(
            "E302", f"`embedding` reads indices of datatype N[v], but `{value.name}` holds "
            f"{value.array.dtype.text()}", call.args[0].span)
    arrows = [i for i in call.items or () if isinstance(i, s.Arrow)]
    if arrows:
        if len(arrows[0].left) != 1:
            raise _ctx_error(builder, "`embedding` has one vocabulary axis", arrows[0].span)
        vocab = builder.global_axis(arrows[0].left[0])
        out_axes = [builder.global_axis(i) for i in arrows[0].right]
    else:
        out_axes = [builder.global_axis(i) for i in bracket_axes(builder, call)]
        existing = builder.params.get(table_name.name)
        if existing is None:
            raise _ctx_error(builder, "name the vocabulary axis: `embedding[v -> m](T, E)`",
                             call.name.span)
        others = [a for a in existing.array.shape.axes if a.name not in {o.name for o in out_axes}]
        if len(others) != 1:
            raise builder.ctx.error("E312", f"the table `{table_name.name}` should have one "
                                    "vocabulary axis besides the embedding axes",
                                    table_name.span)
        vocab = others[0]
    bound = value.array.dtype.bound
    if bound is not None and from_ir(bound) != from_ir(vocab.size):
        raise builder.ctx.error(
            "E300", f"the vocabulary axis `{vocab.name}` has size {from_ir(vocab.size)} but the "
            f"indices are below {from_ir(bound)}", call.span)
    for axis in out_axes:
        if axis.name in value.array.names:
            raise builder.ctx.error("E301", f"`{value.name}` already has axis `{axis.name}`",
                                    call.span)
    table = builder.parameter(table_name, array(ir.REALS, [vocab, *out_axes]), "`embedding`")
    out_names = [a.name for a in out_axes]
    out_array = array(ir.REALS, [*value.array.shape.axes, *out_axes])
    op = ir.EmbeddingOp(outputs=tuple(out_names))
    return builder.broadcast(op, [(value, ())], [(out_array, out_names, name)], call.span,
                             params=[(table, table.array.names)])


def _norm(kind: str) -> Elaborator:
    def elaborate(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        reject_items(builder, call, (s.Var, s.Keyword))
        axes = bracket_axes(builder, call)
        options = keywords(builder, call, ["eps"])
        positive_option(builder, call, options, "eps", f"{kind}[m, eps=1e-5](X)")
        optional = 2 if kind == "layernorm" else 1
        (value,), param_names = arguments(builder, call, 1, 0, optional)
        builder.require_reals(value, call.args[0].span, f"`{kind}`")
        builder.require_axes(value, axes, f"`{kind}`")
        targets = [a.name for a in axes]
        target_axes = [value.array.shape.axis(t) for t in targets]
        params = []
        for index, ident in enumerate(param_names):
            parameter = builder.parameter(ident, array(ir.REALS, target_axes), f"`{kind}`")
            if parameter.init == "default":
                parameter = parameter.model_copy(update={"init": "ones" if index == 0 else "zeros"})
                builder.params[parameter.name] = parameter
            params.append((parameter, parameter.array.names))
        op = ir.NormOp(norm=kind, axes=tuple(targets),  # type: ignore[arg-type]
                       eps=options.get("eps", 1e-5 if kind == "layernorm" else 1e-6),
                       affine=len(param_names) >= 1, bias=len(param_names) == 2)
        return same_shape(builder, op, value, targets, call, name, params)

    return elaborate


operator("layernorm", "normalise over the target axes to mean 0 and variance 1; optional "
         "scale and shift parameters", "layernorm[m](X, g, b)")(_norm("layernorm"))
operator("rmsnorm", "divide by the root mean square over the target axes; optional scale",
         "rmsnorm[m](X, g)")(_norm("rmsnorm"))


def _softmax(log: bool) -> Elaborator:
    def elaborate(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        reject_items(builder, call, (s.Var,))
        axes = bracket_axes(builder, call)
        (value,), _ = arguments(builder, call, 1)
        what = "`logsoftmax`" if log else "`softmax`"
        builder.require_reals(value, call.args[0].span, what)
        builder.require_axes(value, axes, what)
        targets = [a.name for a in axes]
        return same_shape(builder, ir.SoftmaxOp(axes=tuple(targets), log=log), value, targets,
                          call, name)

    return elaborate


operator("softmax", "exponentiate and normalise to sum 1 over the target axes",
         "softmax[y](S)")(_softmax(False))
operator("logsoftmax", "the logarithm of softmax over the target axes",
         "logsoftmax[y](S)")(_softmax(True))


def _elementwise(function: str) -> Elaborator:
    def elaborate(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        value = unary(builder, call, f"`{function}`")
        op = ir.ElementwiseOp(function=function)  # type: ignore[arg-type]
        return same_shape(builder, op, value, (), call, name)

    return elaborate


for _function in ir.ELEMENTWISE_FUNCTIONS:
    operator(_function, f"`{_function}` applied to every entry",
             f"{_function}(X)")(_elementwise(_function))


@operator("dropout", "zero entries with probability p during training (identity in eval)",
          "dropout[p=0.1](X)")
def _dropout(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Keyword, s.Number))
    options = keywords(builder, call, ["p"])
    plain = [i for i in call.items or () if isinstance(i, s.Number)]
    p = options.get("p", plain[0].value if plain else 0.1)
    if not 0 <= p < 1:
        where = keyword_spans(call).get("p") or (plain[0].span if plain else call.span)
        raise _ctx_error(builder, f"dropout probability must be in [0, 1), not {p:g}", where,
                         hint="`p` is the chance that an entry is zeroed: `dropout[p=0.1](X)`")
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`dropout`")
    return same_shape(builder, ir.DropoutOp(p=p), value, (), call, name)


@operator("scale", "multiply every entry by a constant", "scale[0.5](X)")
def _scale(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    items = list(call.items or ())
    if len(items) != 1 or isinstance(items[0], (s.Arrow, s.Keyword, s.Comparison)):
        raise _ctx_error(builder, "`scale` takes one constant: `scale[0.5](X)`", call.name.span)
    factor, text = scalar(builder, items[0])
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`scale`")
    return same_shape(builder, ir.ScaleOp(factor=factor, text=text), value, (), call, name)


# ---------------------------------------------------------------------------------------
# entrywise arithmetic on several arrays
# ---------------------------------------------------------------------------------------


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


def _declared_parameter(builder: DefinitionBuilder, expr: s.Expr) -> ir.Parameter | None:
    if isinstance(expr, s.Var) and expr.name not in builder.scope:
        return builder.params.get(expr.name)
    return None


@operator("add", "entrywise sum; axes missing from an operand are broadcast", "add(X, Y)")
def _add(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, ())
    if len(call.args) < 2:
        raise builder.ctx.error("E303", "`add` takes at least 2 arguments", call.span)
    values = [(single(builder, a), a.span) for a in call.args]
    return [combine(builder, ir.AddOp(), values, call.span, name, "`add`")]


@operator("multiply", "entrywise product; axes missing from an operand are broadcast",
          "multiply(X, Y)")
def _multiply(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, ())
    if len(call.args) < 2:
        raise builder.ctx.error("E303", "`multiply` takes at least 2 arguments", call.span)
    values = [(single(builder, a), a.span) for a in call.args]
    return [combine(builder, ir.MultiplyOp(), values, call.span, name, "`multiply`")]


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
            return float(value), _number_text(value)
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


def _number_text(value: float) -> str:
    small = float(value).is_integer() and abs(value) < 1e15
    return str(int(value)) if small else repr(float(value))


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


def arithmetic(builder: DefinitionBuilder, expr: s.BinOp | s.Neg, name: str | None) -> Value:
    """`A + B`, `A - B`, `A * B`, `A * 0.5`, `A / sqrt(k)`, `-A`."""
    ctx = builder.ctx
    if isinstance(expr, s.Neg):
        value = single(builder, expr.operand)
        builder.require_reals(value, expr.operand.span, "negation")
        op = ir.ElementwiseOp(function="neg")
        return builder.broadcast(op, [(value, ())], [(value.array, (), name)], expr.span)[0]
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
        value = single(builder, array_expr)
        builder.require_reals(value, array_expr.span, "scaling")
        op = ir.ScaleOp(factor=factor, text=text)
        return builder.broadcast(op, [(value, ())], [(value.array, (), name)], expr.span)[0]
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
                operands.append((single(builder, side), side.span))
        if not operands:
            raise ctx.error("E207", f"`{what[1:-1]}` of two parameters is not an array on a wire",
                            expr.span)
        return combine(builder, op, operands, expr.span, name, what, params)
    left = single(builder, expr.left)
    right = single(builder, expr.right)
    if expr.op == "-":
        builder.require_reals(right, expr.right.span, "subtraction")
        negated = builder.broadcast(ir.ElementwiseOp(function="neg"), [(right, ())],
                                    [(right.array, (), None)], expr.right.span)[0]
        right = negated
    return combine(builder, op, [(left, expr.left.span), (right, expr.right.span)], expr.span,
                   name, what)


# ---------------------------------------------------------------------------------------
# masks and reductions
# ---------------------------------------------------------------------------------------


@operator("causal", "keep entries with query index >= key index; the rest become -inf",
          "causal[x, y](S)")
def _causal(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Var,))
    axes = bracket_axes(builder, call)
    if len(axes) != 2:
        raise _ctx_error(builder, "`causal` takes two axes: the query axis and the key axis",
                         call.name.span, hint="for example `causal[x, y](S)`")
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`causal`")
    builder.require_axes(value, axes, "`causal`")
    query, key = axes[0].name, axes[1].name
    condition = ir.Comparison(coefficients=((query, 1), (key, -1)), offset=0, op=">=",
                              text=f"{query} >= {key}")
    op = ir.MaskOp(axes=(query, key), conditions=(condition,), causal=True)
    return same_shape(builder, op, value, (query, key), call, name)


def _affine_terms(builder: DefinitionBuilder, expr: s.Expr, axes: Sequence[str]
                  ) -> tuple[dict[str, int], int]:
    """An integer affine combination of axis indices: `2*x - y + 3`."""
    ctx = builder.ctx
    match expr:
        case s.Number(value=value, is_int=True):
            return {}, int(value)
        case s.Var(name=name, span=span):
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


@operator("mask", "keep entries where index conditions hold (or where a boolean array is "
          "true); fill the rest", "mask[x >= y, fill=0](S)")
def _mask(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
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
    targets = [n for n in value.array.names if n in used]
    op = ir.MaskOp(axes=tuple(targets), conditions=tuple(compiled), fill=fill)
    return same_shape(builder, op, value, targets, call, name)


def _expr_text(expr: s.Expr) -> str:
    match expr:
        case s.Number(value=value):
            return _number_text(value)
        case s.Var(name=name):
            return name
        case s.Neg(operand=operand):
            return f"-{_expr_text(operand)}"
        case s.BinOp(op=op, left=left, right=right):
            return f"{_expr_text(left)} {op} {_expr_text(right)}"
    return "?"


def _reduce(function: str) -> Elaborator:
    def elaborate(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        reject_items(builder, call, (s.Var,))
        axes = bracket_axes(builder, call)
        (value,), _ = arguments(builder, call, 1)
        builder.require_reals(value, call.args[0].span, f"`{function}`")
        builder.require_axes(value, axes, f"`{function}`")
        targets = [a.name for a in axes]
        kept = [a for a in value.array.shape.axes if a.name not in targets]
        op = ir.ReduceOp(function=function, axes=tuple(targets))  # type: ignore[arg-type]
        return builder.broadcast(op, [(value, targets)], [(array(ir.REALS, kept), (), name)],
                                 call.span)

    return elaborate


for _function, _summary in (("sum", "sum over the target axes"),
                            ("mean", "mean over the target axes (average pooling)"),
                            ("max", "maximum over the target axes (max pooling)"),
                            ("min", "minimum over the target axes"),
                            ("logsumexp", "log of the sum of exponentials over the target axes")):
    operator(_function, _summary, f"{_function}[x](X)")(_reduce(_function))


# ---------------------------------------------------------------------------------------
# structure: concatenate, split, rename, reshape
# ---------------------------------------------------------------------------------------


def _new_axis(builder: DefinitionBuilder, ident: s.Ident, size: Size) -> ir.Axis:
    """An axis made by an operator: a declared axis must have the size it gets."""
    info = builder.ctx.axes.get(ident.name)
    if info is not None and info.size != size:
        raise builder.ctx.error(
            "E300", f"axis `{ident.name}` is declared with size {info.size} but gets size "
            f"{size} here", ident.span, notes=[Note(info.span, "declared here")])
    return ir.Axis(name=ident.name, size=size.to_ir())


def _replace(axes: Sequence[ir.Axis], old: Sequence[str], new: Sequence[ir.Axis]
             ) -> list[ir.Axis]:
    """`axes` with the `old` ones removed and `new` placed where the first of them stood."""
    first = min(i for i, a in enumerate(axes) if a.name in old)
    kept = [a for a in axes if a.name not in old]
    position = sum(1 for a in axes[:first] if a.name not in old)
    return [*kept[:position], *new, *kept[position:]]


@operator("concat", "join arrays end to end along one axis each", "concat[a b -> c](A, B)")
def _concat(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrow = bracket_arrows(builder, call)[0]
    if len(arrow.right) != 1 or len(arrow.left) < 2:
        raise _ctx_error(builder, "`concat` joins two or more axes into one: "
                         "`concat[a b -> c](A, B)`", arrow.span)
    if len(call.args) != len(arrow.left):
        raise builder.ctx.error("E303", f"`concat` names {len(arrow.left)} axes, so it takes "
                                f"{len(arrow.left)} arrays, not {len(call.args)}", call.span)
    values = [single(builder, a) for a in call.args]
    first_rest: list[ir.Axis] | None = None
    total = Size.const(0)
    for value, ident, arg in zip(values, arrow.left, call.args, strict=True):
        builder.require_axes(value, [ident], "`concat`")
        rest = [a for a in value.array.shape.axes if a.name != ident.name]
        if first_rest is None:
            first_rest = rest
        elif {a.name for a in rest} != {a.name for a in first_rest}:
            raise builder.ctx.error("E301", "the arrays of `concat` must agree on their other "
                                    f"axes: [{', '.join(a.name for a in first_rest)}] vs "
                                    f"[{', '.join(a.name for a in rest)}]", arg.span)
        else:
            for axis in rest:
                builder.check_size(axis, next(a for a in first_rest if a.name == axis.name),
                                   arg.span, f"`{value.name}`")
        total = total + from_ir(value.array.shape.axis(ident.name).size)
    out_axis = _new_axis(builder, arrow.right[0], total)
    out_array = array(values[0].array.dtype, _replace(values[0].array.shape.axes,
                                                      [arrow.left[0].name], [out_axis]))
    op = ir.ConcatOp(inputs=tuple(i.name for i in arrow.left), output=out_axis.name)
    return builder.broadcast(op, [(v, (i.name,)) for v, i in zip(values, arrow.left,
                                                                   strict=True)],
                             [(out_array, (out_axis.name,), name)], call.span)


@operator("split", "cut one axis into consecutive pieces, one array each",
          "split[c -> a b](X)")
def _split(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrow = bracket_arrows(builder, call)[0]
    if len(arrow.left) != 1 or len(arrow.right) < 2:
        raise _ctx_error(builder, "`split` cuts one axis into two or more: "
                         "`split[c -> a b](X)`", arrow.span)
    (value,), _ = arguments(builder, call, 1)
    builder.require_axes(value, arrow.left, "`split`")
    pieces = [builder.global_axis(i) for i in arrow.right]
    total = Size.const(0)
    for piece in pieces:
        total = total + from_ir(piece.size)
    source = value.array.shape.axis(arrow.left[0].name)
    if total != from_ir(source.size):
        raise builder.ctx.error(
            "E300", f"the pieces add up to {total} but `{source.name}` has size "
            f"{from_ir(source.size)}", arrow.span)
    outputs = [(array(value.array.dtype, _replace(value.array.shape.axes, [source.name],
                                                  [piece])), (piece.name,), None)
               for piece in pieces]
    op = ir.SplitOp(input=source.name, outputs=tuple(p.name for p in pieces))
    degree = [a for a in value.array.shape.axes if a.name != source.name]
    return builder.broadcast(op, [(value, (source.name,))], outputs, call.span, degree=degree)


@operator("pad", "extend an axis with constant entries before and after it (zero padding)",
          "pad[x -> xp, before=1, after=1](X)")
def _pad(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow, s.Keyword))
    arrow = bracket_arrows(builder, call)[0]
    if len(arrow.left) != 1 or len(arrow.right) != 1:
        raise _ctx_error(builder, "`pad` extends one axis into one new axis: "
                         "`pad[x -> xp, before=1, after=1](X)`", arrow.span)
    options = keywords(builder, call, ["before", "after", "value"])
    amounts = {}
    for side in ("before", "after"):
        amount = options.get(side, 0.0)
        if amount < 0 or not float(amount).is_integer():
            raise _ctx_error(builder, f"`{side}` is a number of entries (a whole number >= 0), "
                             f"not {amount:g}", call.name.span)
        amounts[side] = int(amount)
    if amounts["before"] + amounts["after"] == 0:
        raise _ctx_error(builder, "`pad` needs `before` or `after`: "
                         "`pad[x -> xp, before=1, after=1](X)`", call.name.span)
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`pad`")
    builder.require_axes(value, arrow.left, "`pad`")
    source = value.array.shape.axis(arrow.left[0].name)
    if arrow.right[0].name in value.array.names:
        raise builder.ctx.error("E301", f"`{value.name}` already has axis `{arrow.right[0].name}`",
                                arrow.right[0].span)
    grown = from_ir(source.size) + amounts["before"] + amounts["after"]
    out_axis = _new_axis(builder, arrow.right[0], grown)
    out_array = array(value.array.dtype, _replace(value.array.shape.axes, [source.name],
                                                  [out_axis]))
    op = ir.PadOp(input=source.name, output=out_axis.name, before=amounts["before"],
                  after=amounts["after"], value=options.get("value", 0.0))
    return builder.broadcast(op, [(value, (source.name,))], [(out_array, (out_axis.name,), name)],
                             call.span)


@operator("rename", "give axes new names (sizes stay)", "rename[x -> y](X)")
def _rename(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    pairs: list[tuple[s.Ident, s.Ident]] = []
    for arrow in bracket_arrows(builder, call):
        if len(arrow.left) != len(arrow.right):
            raise _ctx_error(builder, "`rename` pairs each old axis with one new name",
                             arrow.span)
        pairs.extend(zip(arrow.left, arrow.right, strict=True))
    (value,), _ = arguments(builder, call, 1)
    builder.require_axes(value, [old for old, _ in pairs], "`rename`")
    mapping = {old.name: new for old, new in pairs}
    axes = []
    for axis in value.array.shape.axes:
        if axis.name in mapping:
            axes.append(_new_axis(builder, mapping[axis.name], from_ir(axis.size)))
        else:
            axes.append(axis)
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise _ctx_error(builder, "after renaming, two axes would share a name", call.span)
    old_names = [old.name for old, _ in pairs]
    new_names = [new.name for _, new in pairs]
    op = ir.RenameOp(mapping=tuple((o.name, n.name) for o, n in pairs))
    return builder.broadcast(op, [(value, old_names)],
                             [(array(value.array.dtype, axes), new_names, name)], call.span)


@operator("reshape", "merge axes into one (row-major) or split one into several",
          "reshape[h k -> m](X)")
def _reshape(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrow = bracket_arrows(builder, call)[0]
    (value,), _ = arguments(builder, call, 1)
    builder.require_axes(value, arrow.left, "`reshape`")
    in_names = [i.name for i in arrow.left]
    total = Size.const(1)
    for ident in arrow.left:
        total = total * from_ir(value.array.shape.axis(ident.name).size)
    if len(arrow.right) == 1:
        out_axes = [_new_axis(builder, arrow.right[0], total)]
    else:
        out_axes = [builder.global_axis(i) for i in arrow.right]
        product = Size.const(1)
        for axis in out_axes:
            product = product * from_ir(axis.size)
        if product != total:
            raise builder.ctx.error("E300", f"reshape from {total} entries to {product}",
                                    arrow.span)
    for axis in out_axes:
        if axis.name in value.array.names and axis.name not in in_names:
            raise builder.ctx.error("E301", f"`{value.name}` already has axis `{axis.name}`",
                                    arrow.span)
    out_array = array(value.array.dtype, _replace(value.array.shape.axes, in_names, out_axes))
    op = ir.ReshapeOp(inputs=tuple(in_names), outputs=tuple(a.name for a in out_axes))
    return builder.broadcast(op, [(value, in_names)],
                             [(out_array, [a.name for a in out_axes], name)], call.span)


# ---------------------------------------------------------------------------------------
# definitions as operations, and recurrences
# ---------------------------------------------------------------------------------------


def lifted_call(builder: DefinitionBuilder, definition: ir.Definition,
                args: Sequence[tuple[ir.ArrayType, ir.Span, str | None]], span: ir.Span,
                instance: str, names: Sequence[str | None]) -> tuple[ir.Broadcasted,
                                                                     list[ir.ArrayType]]:
    """`definition` applied to arrays that may carry extra axes: those are a batch lift."""
    ctx = builder.ctx
    if len(args) != len(definition.inputs):
        raise ctx.error("E303", f"`{definition.name}` takes {len(definition.inputs)} arrays, "
                        f"not {len(args)}", span,
                        notes=[Note(definition.span, "defined here")])
    extra: dict[str, tuple[ir.Axis, ir.Span]] = {}
    for (arg, arg_span, arg_name), variable in zip(args, definition.inputs, strict=True):
        what = f"argument `{variable.name}` of `{definition.name}`"
        for axis in variable.array.shape.axes:
            if axis.name not in arg.names:
                raise ctx.error(
                    "E301", f"{what} needs axis `{axis.name}`, but "
                    f"{'`' + arg_name + '`' if arg_name else 'the argument'} has axes "
                    f"[{', '.join(arg.names)}]", arg_span,
                    notes=[Note(definition.span, f"`{definition.name}` takes "
                                f"{variable.name}: {variable.array.text()}")],
                    hint="axes align by name; rename with `rename[a -> b](X)`")
            builder.check_size(arg.shape.axis(axis.name), axis, arg_span, what,
                               definition.span)
        builder.check_dtype(arg, variable.array.dtype, arg_span, what)
        for axis in arg.shape.axes:
            if axis.name in variable.array.names:
                continue
            if axis.name in extra and from_ir(extra[axis.name][0].size) != from_ir(axis.size):
                raise ctx.error("E300", f"the batch axis `{axis.name}` has different sizes in "
                                "two arguments", arg_span,
                                notes=[Note(extra[axis.name][1], "the other one")])
            extra.setdefault(axis.name, (axis, arg_span))
    degree = [axis for axis, _ in extra.values()]
    outputs: list[ir.ArrayType] = []
    for variable in definition.outputs:
        clash = [a.name for a in degree if a.name in variable.array.names]
        if clash:
            raise ctx.error("E301", f"the batch axis `{clash[0]}` is also an axis of the result "
                            f"of `{definition.name}`", span,
                            hint="rename the batch axis before the call")
        outputs.append(ir.ArrayType(dtype=variable.array.dtype,
                                    shape=shape([*degree, *variable.array.shape.axes])))
    degree_shape = shape(degree)
    term = ir.Broadcasted(
        dom=tuple(a for a, _, _ in args), cod=tuple(outputs), span=span,
        op=ir.CallOp(definition=definition.name, instance=instance), degree=degree_shape,
        inputs=tuple(port(a, v.array.names, degree_shape, n)
                     for (a, _, n), v in zip(args, definition.inputs, strict=True)),
        outputs=tuple(port(a, v.array.names, degree_shape, n)
                      for a, v, n in zip(outputs, definition.outputs, names, strict=True)))
    return term, outputs


def call_definition(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    ctx = builder.ctx
    definition = ctx.definitions[call.name.name]
    if call.items is not None:
        raise _ctx_error(builder, f"`{definition.name}` is a definition and takes no brackets",
                         call.name.span)
    values = [single(builder, a) for a in call.args]
    instance = builder.instance_name(call.name.name)
    names = [name if len(definition.outputs) == 1 else None] * len(definition.outputs)
    out_names = [n or builder.fresh_name(definition.name) for n in names]
    term, outputs = lifted_call(builder, definition,
                                [(v.array, a.span, v.name) for v, a in zip(values, call.args,
                                                                           strict=True)],
                                call.span, instance, out_names)
    out_values = [Value(a, n, call.span) for a, n in zip(outputs, out_names, strict=True)]
    builder.add_step(term, values, out_values)
    return out_values


@operator("scan", "run a step definition along an axis, carrying state: "
          "carry[l+1], out[l] = step(carry[l], x[l])", "scan[t](cell, H0, X)")
def _scan(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    ctx = builder.ctx
    axes = bracket_axes(builder, call)
    if len(axes) != 1:
        raise _ctx_error(builder, "`scan` runs along one axis: `scan[t](cell, H0, X)`",
                         call.name.span)
    if call.args and isinstance(call.args[0], s.Var) and call.args[0].name in ctx.failed:
        raise Reject(call.args[0].name)
    if not call.args or not isinstance(call.args[0], s.Var) or \
            call.args[0].name not in ctx.definitions:
        raise ctx.error("E311", "the first argument of `scan` is the step definition",
                        call.args[0].span if call.args else call.span,
                        hint=did_you_mean(call.args[0].name, ctx.definitions)
                        if call.args and isinstance(call.args[0], s.Var) else None)
    step = ctx.definitions[call.args[0].name]
    axis_name = axes[0].name
    values = [single(builder, a) for a in call.args[1:]]
    carries = 0
    while carries < len(values) and axis_name not in values[carries].array.names:
        carries += 1
    for value, arg in zip(values[carries:], call.args[1 + carries:], strict=True):
        if axis_name not in value.array.names:
            raise ctx.error("E311", f"initial states come first: `{value.name}` has no axis "
                            f"`{axis_name}` but follows a sequence", arg.span)
    if carries == len(values):
        raise ctx.error("E311", f"no argument of `scan` runs along `{axis_name}`", call.span)
    sequence_axes = [v.array.shape.axis(axis_name) for v in values[carries:]]
    for axis, arg in zip(sequence_axes[1:], call.args[1 + carries + 1:], strict=False):
        if from_ir(axis.size) != from_ir(sequence_axes[0].size):
            raise ctx.error("E300", f"the sequences have different lengths along `{axis_name}`",
                            arg.span)
    time_axis = sequence_axes[0]
    slices = [ir.ArrayType(dtype=v.array.dtype,
                           shape=shape([a for a in v.array.shape.axes if a.name != axis_name]))
              for v in values[carries:]]
    step_args = [(v.array, a.span, v.name) for v, a in zip(values[:carries],
                                                          call.args[1:1 + carries], strict=True)]
    step_args += [(sl, a.span, None) for sl, a in zip(slices, call.args[1 + carries:],
                                                      strict=True)]
    if len(step.outputs) < carries:
        raise ctx.error("E311", f"`{step.name}` gives {len(step.outputs)} arrays but there are "
                        f"{carries} states to carry", call.span)
    instance = builder.instance_name(call.args[0].name)
    step_names = [f"{step.name}_out{i}" for i in range(len(step.outputs))]
    term, step_outputs = lifted_call(builder, step, step_args, call.span, instance, step_names)
    for index in range(carries):
        # Axes align by name: a state may list its axes in another order than the step.
        if not _same_axes(step_outputs[index], values[index].array):
            raise ctx.error(
                "E311", f"the step must give state {index + 1} back as "
                f"{values[index].array.text()}, but gives {step_outputs[index].text()}",
                call.args[1 + index].span)
    stacked = []
    for out in step_outputs[carries:]:
        if axis_name in out.names:
            raise ctx.error("E311", f"a step output already has axis `{axis_name}`", call.span)
        stacked.append(ir.ArrayType(dtype=out.dtype, shape=shape([time_axis,
                                                                  *out.shape.axes])))
    # The final states keep the initial states' types (their axis order).
    cod = (*(v.array for v in values[:carries]), *stacked)
    scan = ir.Scan(dom=tuple(v.array for v in values), cod=cod, span=call.span, axis=time_axis,
                   carries=carries, step=term, step_name=step.name)
    out_values = [Value(a, builder.fresh_name(f"{step.name}_{i}"), call.span)
                  for i, a in enumerate(cod)]
    builder.add_step(scan, values, out_values)
    return out_values


def _same_axes(a: ir.ArrayType, b: ir.ArrayType) -> bool:
    """The same datatype and the same axes by name and size, in any order."""
    if a.dtype.kind != b.dtype.kind or sorted(a.names) != sorted(b.names):
        return False
    if (a.dtype.bound is None) != (b.dtype.bound is None) or (
            a.dtype.bound is not None and b.dtype.bound is not None
            and from_ir(a.dtype.bound) != from_ir(b.dtype.bound)):
        return False
    return all(from_ir(axis.size) == from_ir(b.shape.axis(axis.name).size)
               for axis in a.shape.axes)


# ---------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------


def call(builder: DefinitionBuilder, expr: s.Call, name: str | None) -> list[Value]:
    ctx = builder.ctx
    callee = expr.name.name
    if callee in ctx.definitions:
        return call_definition(builder, expr, name)
    if callee in ctx.failed:
        raise Reject(callee)
    spec = OPERATORS.get(callee)
    if spec is None:
        raise unknown_callable(builder, expr.name)
    return spec.elaborate(builder, expr, name)
