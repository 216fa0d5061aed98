"""Entrywise maps of one array: the elementwise functions (`relu`, ...; listed in
`ncd.ops.functions`), `scale` by a constant, and `dropout`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never

from ncd import ir
from ncd import syntax as s
from ncd.context import Value
from ncd.elision import formula

from .arguments import (
    arguments,
    keyword_spans,
    keywords,
    option_error,
    reject_items,
    same_shape,
    unary,
)
from .arithmetic import scalar
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
from .facts import entrywise, per_output_entry
from .functions import FUNCTIONS, ElementwiseFunction
from .lowering import Emitter, TensorCode, float_literal

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


# ---------------------------------------------------------------------------------------
# the elementwise functions
# ---------------------------------------------------------------------------------------


def _elementwise_typing(function: ElementwiseFunction) -> TypingRule:
    def typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        if function == "gelu" and call.items is not None:
            raise option_error(builder, "`gelu` takes no options; its tanh approximation is "
                               "the function `gelu_tanh`", call.items[0].span,
                               hint="write `gelu_tanh(X)` (GPT-2's GELU)")
        value = unary(builder, call, f"`{function}`")
        return same_shape(builder, ir.trusted(ir.ElementwiseOp, kind="elementwise",
                                                     function=function),
                          value, (), call, name)

    return typing


def _elementwise_caption(op: ir.ElementwiseOp, term: ir.Broadcasted) -> Caption:
    function = FUNCTIONS[op.function]
    return Caption("italic" if function.italic else "plain", function.caption)


def _elementwise_overview(op: ir.ElementwiseOp) -> tuple[str, str]:
    return op.function, "box"


def _elementwise_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ElementwiseOp,
                       inputs: list[TensorCode]) -> list[TensorCode]:
    expr, labels = emit.single(term, inputs)
    function = FUNCTIONS[op.function]
    callee = emit.functional_call(function.torch) if function.functional else \
        f"torch.{function.torch}"
    options = f", {function.options}" if function.options else ""
    return [emit.finish(term, f"{callee}({expr}{options})", labels,
                        comment=op.function, batched=inputs[0].batched, fallback=op.function)]


def _slope(rev: Reverser, function: ElementwiseFunction, x: Value, y: Value) -> Value | None:
    """The derivative of `function` at `x` (whose value is `y`), entrywise; None: zero."""
    match function:
        case "relu":
            return rev.step(x)
        case "gelu":  # Φ(x) + x φ(x)
            cdf = rev.scale(rev.constant(rev.function("erf", rev.scale(
                x, 1 / math.sqrt(2), "1/√2")), "+", 1.0), 0.5)
            density = rev.scale(rev.function("exp", rev.scale(rev.function("square", x), -0.5)),
                                1 / math.sqrt(2 * math.pi), "1/√(2π)")
            return rev.add(cdf, rev.multiply(x, density))
        case "silu":  # σ(x) (1 + x (1 - σ(x)))
            sigma = rev.function("sigmoid", x)
            return rev.multiply(sigma, rev.constant(rev.multiply(
                x, rev.constant(sigma, "-", 1.0, constant_first=True)), "+", 1.0))
        case "sigmoid":
            return rev.multiply(y, rev.constant(y, "-", 1.0, constant_first=True))
        case "tanh":
            return rev.constant(rev.function("square", y), "-", 1.0, constant_first=True)
        case "exp":
            return y
        case "log":
            return rev.function("reciprocal", x)
        case "neg":
            return rev.scale(rev.constant_array(x.array, 1), -1.0)
        case "sqrt":
            return rev.scale(rev.function("reciprocal", y), 0.5)
        case "abs":
            return rev.function("sign", x)
        case "square":
            return rev.scale(x, 2.0)
        case "softplus":
            return rev.function("sigmoid", x)
        case "reciprocal":
            return rev.scale(rev.function("square", y), -1.0)
        case "rsqrt":
            return rev.scale(rev.constant(y, "^", 3.0), -0.5)
        case "sin":
            return rev.function("cos", x)
        case "cos":
            return rev.scale(rev.function("sin", x), -1.0)
        case "erf":
            return rev.scale(rev.function("exp", rev.scale(rev.function("square", x), -1.0)),
                             2 / math.sqrt(math.pi), "2/√π")
        case "gelu_tanh":  # ½(1 + t) + ½ x (1 - t²) √(2/π) (1 + 3·0.044715 x²)
            c = math.sqrt(2 / math.pi)
            cube = rev.multiply(x, rev.function("square", x))
            t = rev.function("tanh", rev.scale(rev.add(x, rev.scale(cube, 0.044715)), c,
                                               "√(2/π)"))
            half = rev.scale(rev.constant(t, "+", 1.0), 0.5)
            inner = rev.scale(rev.constant(rev.scale(rev.function("square", x),
                                                     3 * 0.044715), "+", 1.0), c, "√(2/π)")
            sech = rev.constant(rev.function("square", t), "-", 1.0, constant_first=True)
            return rev.add(half, rev.scale(rev.multiply(x, sech, inner), 0.5))
        case "sign":
            return None
    assert_never(function)


def _elementwise_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ElementwiseOp,
                         inputs: Sequence[Value], outputs: Sequence[Value],
                         grads: Sequence[Value]) -> Gradients:
    """`dX = dY f'(X)`, with `f'` written with the elementwise functions themselves."""
    slope = _slope(rev, op.function, inputs[0], outputs[0])
    if slope is None:
        return Gradients([None])
    return Gradients([rev.multiply(grads[0], slope, like=inputs[0].array)])


ELEMENTWISE = declare(Declaration(
    node=ir.ElementwiseOp, reverse=_elementwise_reverse,
    surfaces=tuple(Surface(name, f"`{name}` applied to every entry: {function.meaning}",
                           f"{name}(X)", _elementwise_typing(name))
                   for name, function in FUNCTIONS.items()),
    glyph=Box("plain_box", _elementwise_caption, caption_size=11.0, min_width=22.0,
              min_height=18.0),
    overview=_elementwise_overview, roles=no_parameters, lower=_elementwise_lower,
    cost=per_output_entry(1), symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# scale
# ---------------------------------------------------------------------------------------


def _scale_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    items = list(call.items or ())
    if len(items) != 1 or isinstance(items[0], (s.Arrow, s.Keyword, s.Comparison, s.Each)):
        raise option_error(builder, "`scale` takes one constant: `scale[0.5](X)`",
                           call.name.span)
    factor, text = scalar(builder, items[0])
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`scale`")
    return same_shape(builder, ir.ScaleOp(factor=factor, text=text), value, (), call, name)


def _scale_caption(op: ir.ScaleOp, term: ir.Broadcasted) -> Caption:
    return Caption("math", f"\u00d7 {op.text}" if op.text else f"\u00d7 {op.factor:g}")


def _scale_overview(op: ir.ScaleOp) -> tuple[str, str]:
    return f"× {formula(op.text)}", "box"


def _scale_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ScaleOp,
                 inputs: list[TensorCode]) -> list[TensorCode]:
    expr, labels = emit.single(term, inputs)
    return [emit.finish(term, f"{expr} * {float_literal(op.factor)}", labels,
                        comment=f"times {op.text}", batched=inputs[0].batched,
                        fallback="scaled")]


def _scale_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ScaleOp,
                   inputs: Sequence[Value], outputs: Sequence[Value],
                   grads: Sequence[Value]) -> Gradients:
    """A scale is its own reverse."""
    return Gradients([rev.scale(grads[0], op.factor, op.text)])


SCALE = declare(Declaration(
    node=ir.ScaleOp, reverse=_scale_reverse,
    surfaces=(Surface("scale", "multiply every entry by a constant", "scale[0.5](X)",
                      _scale_typing),),
    glyph=Box("plain_box", _scale_caption, caption_size=11.0, min_width=22.0, min_height=18.0),
    overview=_scale_overview, roles=no_parameters, lower=_scale_lower,
    cost=per_output_entry(1), symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------


def _dropout_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Keyword, s.Number))
    options = keywords(builder, call, ["p"])
    plain = [i for i in call.items or () if isinstance(i, s.Number)]
    p = options.get("p", plain[0].value if plain else 0.1)
    if not 0 <= p < 1:
        where = keyword_spans(call).get("p") or (plain[0].span if plain else call.span)
        raise option_error(builder, f"dropout probability must be in [0, 1), not {p:g}", where,
                           hint="`p` is the chance that an entry is zeroed: `dropout[p=0.1](X)`")
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`dropout`")
    return same_shape(builder, ir.DropoutOp(p=p), value, (), call, name)


def _dropout_caption(op: ir.DropoutOp, term: ir.Broadcasted) -> Caption:
    return Caption("plain", f"drop {op.p:g}")


def _dropout_overview(op: ir.DropoutOp) -> tuple[str, str]:
    return f"dropout {op.p:g}", "box"


def _dropout_lower(emit: Emitter, term: ir.Broadcasted, op: ir.DropoutOp,
                   inputs: list[TensorCode]) -> list[TensorCode]:
    expr, labels = emit.single(term, inputs)
    return [emit.finish(term, f"{emit.functional_call('dropout')}({expr}, p={float_literal(op.p)}, "
                        "training=self.training)", labels, comment="dropout",
                        batched=inputs[0].batched, fallback="dropped")]


def _dropout_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.DropoutOp,
                     inputs: Sequence[Value], outputs: Sequence[Value],
                     grads: Sequence[Value]) -> Gradients:
    """In evaluation mode dropout is the identity, and so is its reverse. (In training mode
    the reverse multiplies by the same mask, scaled by 1/(1-p): the mask would be a saved
    forward value; the backward definition is the evaluation-mode derivative.)"""
    return Gradients([grads[0]])


DROPOUT = declare(Declaration(
    node=ir.DropoutOp, reverse=_dropout_reverse,
    surfaces=(Surface("dropout", "zero entries with probability p during training (identity "
                      "in eval)", "dropout[p=0.1](X)", _dropout_typing),),
    glyph=Box("plain_box", _dropout_caption, caption_size=11.0, min_width=22.0,
              min_height=18.0),
    overview=_dropout_overview, roles=no_parameters, lower=_dropout_lower,
    cost=per_output_entry(1), symmetry=entrywise))
