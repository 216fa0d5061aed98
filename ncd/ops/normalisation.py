"""Normalisations over target axes: `softmax` and `logsoftmax`, `layernorm` and `rmsnorm`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.diagnostics import Note
from ncd.elision import listed

from .arguments import arguments, bracket_axes, keywords, positive_option, reject_items, same_shape
from .declaration import (
    Box,
    Caption,
    Declaration,
    Gradients,
    SizeValue,
    Surface,
    TypingRule,
    declare,
    no_parameters,
)
from .facts import (
    Break,
    Carried,
    Cost,
    CostSizes,
    SymmetryCalls,
    Verdict,
    axis_list,
    entrywise,
    per_output_entry,
)
from .lowering import (
    Emitter,
    Label,
    Role,
    TensorCode,
    dims_test,
    float_literal,
    target_label,
)

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


def trailing_targets(emit: Emitter, term: ir.Broadcasted, targets: Sequence[str]) -> list[Label]:
    """The output's layout with `targets` moved to the end in the given order."""
    wanted = [target_label(t) for t in targets]
    return [label for label in emit.output_labels(term.outputs[0]) if label not in wanted] + wanted


# ---------------------------------------------------------------------------------------
# softmax, logsoftmax
# ---------------------------------------------------------------------------------------


def _softmax_typing(log: bool) -> TypingRule:
    def typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
        reject_items(builder, call, (s.Var,))
        axes = bracket_axes(builder, call)
        (value,), _ = arguments(builder, call, 1)
        what = "`logsoftmax`" if log else "`softmax`"
        builder.require_reals(value, call.args[0].span, what)
        builder.require_axes(value, axes, what)
        targets = [a.name for a in axes]
        op = ir.trusted(ir.SoftmaxOp, kind="softmax", axes=tuple(targets), log=log)
        return same_shape(builder, op, value, targets, call, name)

    return typing


def _softmax_overview(op: ir.SoftmaxOp) -> tuple[str, str]:
    return f"{'log_softmax' if op.log else 'softmax'}[{listed(op.axes)}]", "box"


def _softmax_caption(op: ir.SoftmaxOp, term: ir.Broadcasted) -> Caption | None:
    """`log` in the triangle of a logsoftmax; the softmax triangle is bare."""
    return Caption("plain", "log") if op.log else None


def _softmax_lower(emit: Emitter, term: ir.Broadcasted, op: ir.SoftmaxOp,
                   inputs: list[TensorCode]) -> list[TensorCode]:
    function = "torch.log_softmax" if op.log else "torch.softmax"
    if len(op.axes) == 1:
        expr, labels = emit.single(term, inputs)
        dim = labels.index(target_label(op.axes[0])) - len(labels)
        expr = f"{function}({expr}, dim={dim})"
    else:
        expr, labels = emit.single(term, inputs, trailing_targets(emit, term, op.axes))
        sizes = emit.sizes_of(term, [term.inputs[0]])
        shape = emit.tuple_text([emit.size(sizes[target_label(a)]) for a in op.axes])
        expr = f"{function}({expr}.flatten(-{len(op.axes)}), dim=-1).unflatten(-1, {shape})"
    return [emit.finish(term, expr, labels, comment=f"softmax over {' '.join(op.axes)}",
                        batched=inputs[0].batched, fallback="softmax")]


def _softmax_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.SoftmaxOp,
                     inputs: Sequence[Value], outputs: Sequence[Value],
                     grads: Sequence[Value]) -> Gradients:
    """softmax: `dX = Y (dY - sum(dY Y))`; log-softmax: `dX = dY - exp(Y) sum(dY)`, the sums
    over the target axes (Y, the output, is the saved value)."""
    (x,), (y,), (gradient,) = inputs, outputs, grads
    kept = ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(
        axes=tuple(a for a in x.array.shape.axes if a.name not in op.axes)))
    if not op.log:
        dot = rev.contract(kept, [gradient, y], name="dot")
        return Gradients([rev.multiply(y, rev.subtract(gradient, dot), like=x.array)])
    total = rev.reduce("sum", gradient, op.axes)
    return Gradients([rev.subtract(gradient, rev.multiply(rev.function("exp", y), total))])


SOFTMAX = declare(Declaration(
    node=ir.SoftmaxOp, reverse=_softmax_reverse,
    surfaces=(
        Surface("softmax", "exponentiate and normalise to sum 1 over the target axes",
                "softmax[y](S)", _softmax_typing(False)),
        Surface("logsoftmax", "the logarithm of softmax over the target axes",
                "logsoftmax[y](S)", _softmax_typing(True)),
    ),
    glyph=Box("triangle_left", _softmax_caption, caption_size=11.0, min_width=22.0,
              min_height=26.0, square=True, caption_dx=0.2),
    overview=_softmax_overview, roles=no_parameters, lower=_softmax_lower,
    cost=per_output_entry(5), symmetry=entrywise))


# ---------------------------------------------------------------------------------------
# layernorm, rmsnorm
# ---------------------------------------------------------------------------------------


def _norm_typing(kind: Literal["layernorm", "rmsnorm"]) -> TypingRule:
    def typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
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
        op = ir.NormOp(norm=kind, axes=tuple(targets),
                       eps=options.get("eps", 1e-5 if kind == "layernorm" else 1e-6),
                       affine=len(param_names) >= 1, bias=len(param_names) == 2)
        return same_shape(builder, op, value, targets, call, name, params)

    return typing


def _norm_overview(op: ir.NormOp) -> tuple[str, str]:
    return f"{op.norm}[{listed(op.axes)}]", "ellipse"


def _norm_roles(op: ir.NormOp, term: ir.Broadcasted, value_of: SizeValue) -> tuple[Role, ...]:
    """The scale starts at one, the shift at zero (as `nn.LayerNorm`)."""
    return (*((Role("ones"),) if op.affine else ()), *((Role("zeros"),) if op.bias else ()))


def _norm_lower(emit: Emitter, term: ir.Broadcasted, op: ir.NormOp,
                inputs: list[TensorCode]) -> list[TensorCode]:
    params = emit.parameters(term)
    weight = params.pop(0) if op.affine else None
    bias = params.pop(0) if op.bias else None
    targets = list(weight.names) if weight is not None else list(op.axes)
    expr, labels = emit.single(term, inputs, trailing_targets(emit, term, targets))
    sizes = emit.sizes_of(term, [term.inputs[0]])
    shape = emit.tuple_text([emit.size(sizes[target_label(a)]) for a in targets])
    weight_code = weight.code if weight is not None else "None"
    bias_code = "None"
    if bias is not None:
        bias_code = emit.permute(bias.code, [target_label(n) for n in bias.names],
                                 [target_label(n) for n in targets])
    if op.norm == "layernorm":
        expr = (f"{emit.functional_call('layer_norm')}({expr}, {shape}, {weight_code}, "
                f"{bias_code}, eps={float_literal(op.eps)})")
    else:
        if bias is not None:
            raise emit.error("rmsnorm has no bias")
        expr = (f"{emit.functional_call('rms_norm')}({expr}, {shape}, {weight_code}, "
                f"eps={float_literal(op.eps)})")
    return [emit.finish(term, expr, labels, comment=f"{op.norm} over {' '.join(op.axes)}",
                        batched=inputs[0].batched, fallback=op.norm)]


def _norm_cost(op: ir.NormOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    per_entry = (5 if op.norm == "layernorm" else 3) + op.affine + op.bias
    return per_output_entry(per_entry)(op, term, sizes)


def _norm_symmetry(op: ir.NormOp, term: ir.Broadcasted, carried: Carried,
                   calls: SymmetryCalls) -> Verdict:
    """Normalising over a set of entries treats them alike; a gain or a bias per entry does
    not."""
    names = carried.any
    if names and term.params:
        return Break(f"the {op.norm} over {axis_list(names)} has a "
                     f"{'gain' if op.affine else 'bias'} ({term.params[0].name}) per position")
    return entrywise(op, term, carried, calls)


def _norm_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.NormOp,
                  inputs: Sequence[Value], outputs: Sequence[Value],
                  grads: Sequence[Value]) -> Gradients:
    """With `x̂` the normalised input, `r` the reciprocal root and `g = dY γ`:
    layer norm `dX = r (g - mean(g) - x̂ mean(g x̂))`, RMS norm `dX = r (g - x̂ mean(g x̂))`
    (means over the target axes); `dγ = sum dY x̂`, `dβ = sum dY` over the other axes."""
    (x,), (gradient,) = inputs, grads
    axes = op.axes
    ports = list(term.params)
    gain = rev.parameter(ports.pop(0).name or "") if op.affine else None
    shift = ports.pop(0) if op.bias else None
    centred = rev.subtract(x, rev.reduce("mean", x, axes)) if op.norm == "layernorm" else x
    variance = rev.reduce("mean", rev.function("square", centred), axes)
    root = rev.function("rsqrt", rev.constant(variance, "+", op.eps))
    normalised = rev.multiply(centred, root, like=x.array)
    scaled = rev.multiply(gradient, gain, like=x.array) if gain is not None else gradient
    dot = rev.reduce("mean", rev.multiply(scaled, normalised), axes)
    inner = rev.subtract(scaled, rev.multiply(normalised, dot, like=x.array))
    if op.norm == "layernorm":
        inner = rev.subtract(inner, rev.reduce("mean", scaled, axes))
    params: list[Value | None] = []
    if gain is not None:
        params.append(rev.sum_to(rev.multiply(gradient, normalised), gain.array))
    if shift is not None:
        params.append(rev.sum_to(gradient, shift.array))
    return Gradients([rev.multiply(inner, root, like=x.array)], params)


NORM = declare(Declaration(
    node=ir.NormOp, reverse=_norm_reverse,
    surfaces=(
        Surface("layernorm", "normalise over the target axes to mean 0 and variance 1; optional "
                "scale and shift parameters", "layernorm[m](X, g, b)", _norm_typing("layernorm")),
        Surface("rmsnorm", "divide by the root mean square over the target axes; optional scale",
                "rmsnorm[m](X, g)", _norm_typing("rmsnorm")),
    ),
    glyph=Box("norm_circle", min_width=30.0, min_height=30.0, square=True),
    overview=_norm_overview, roles=_norm_roles, lower=_norm_lower,
    cost=_norm_cost, symmetry=_norm_symmetry))


# ---------------------------------------------------------------------------------------
# batchnorm
# ---------------------------------------------------------------------------------------


def _batchnorm_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    example = "batchnorm[b, y, x, eps=1e-5, momentum=0.1](X, mean, var, g, beta)"
    reject_items(builder, call, (s.Var, s.Keyword))
    axes = bracket_axes(builder, call)
    options = keywords(builder, call, ["eps", "momentum"])
    positive_option(builder, call, options, "eps", example)
    (value,), names = arguments(builder, call, 1, 2, 2)
    builder.require_reals(value, call.args[0].span, "`batchnorm`")
    builder.require_axes(value, axes, "`batchnorm`")
    momentum = options.get("momentum", 0.1)
    if not 0.0 <= momentum <= 1.0:
        raise builder.ctx.error("E307", f"`momentum` is {momentum}; it lies between 0 and 1",
                                call.span, hint=f"for example `{example}`")
    targets = [a.name for a in axes]
    channels = [a for a in value.array.shape.axes if a.name not in targets]
    channel_type = array(ir.REALS, channels)
    for ident in names[:2]:  # a new statistic lists the channels as a declared one does
        declared = builder.params.get(ident.name)
        if declared is not None and declared.buffer and \
                set(declared.array.names) == {a.name for a in channels}:
            channel_type = declared.array
            break
    params: list[tuple[ir.Parameter, Sequence[str]]] = []
    for index, ident in enumerate(names):
        if index < 2:
            parameter = builder.buffer(ident, channel_type, "ones" if index == 1 else "zeros",
                                       "`batchnorm`'s running " + ("variance" if index else "mean"))
        else:
            parameter = builder.parameter(ident, channel_type, "`batchnorm`")
            if parameter.init == "default":
                parameter = parameter.model_copy(update={"init": "ones" if index == 2 else "zeros"})
                builder.params[parameter.name] = parameter
        if index == 1 and parameter.array.names != params[0][0].array.names:
            raise builder.ctx.error(
                "E312", f"the running variance `{parameter.name}` lists the channel axes as "
                f"[{', '.join(parameter.array.names)}], the running mean "
                f"`{params[0][0].name}` as [{', '.join(params[0][1])}]", ident.span,
                notes=[Note(parameter.span, "declared here")],
                hint="declare both buffers with the channel axes in the same order")
        params.append((parameter, parameter.array.names))
    op = ir.BatchNormOp(axes=tuple(targets), eps=options.get("eps", 1e-5), momentum=momentum,
                        affine=len(names) >= 3, bias=len(names) == 4)
    every = [a.name for a in value.array.shape.axes]
    return same_shape(builder, op, value, every, call, name, params)


def _batchnorm_overview(op: ir.BatchNormOp) -> tuple[str, str]:
    return f"batchnorm[{listed(op.axes)}]", "ellipse"


def _batchnorm_roles(op: ir.BatchNormOp, term: ir.Broadcasted,
                     value_of: SizeValue) -> tuple[Role, ...]:
    """The running mean starts at zero, the running variance at one, the scale at one and the
    shift at zero (as `nn.BatchNorm2d`)."""
    return (Role("zeros"), Role("ones"), *((Role("ones"),) if op.affine else ()),
            *((Role("zeros"),) if op.bias else ()))


def _batchnorm_lower(emit: Emitter, term: ir.Broadcasted, op: ir.BatchNormOp,
                     inputs: list[TensorCode]) -> list[TensorCode]:
    """`F.batch_norm` on the input flattened to `[rows, channels]`: every dim but the
    channels' (the target axes and any leading batch dims) holds the batch's samples."""
    mean, var, *rest = emit.parameters(term)
    channels = [target_label(n) for n in mean.names]
    order = [target_label(a) for a in op.axes] + channels
    sizes = emit.sizes_of(term, [term.inputs[0]])
    # Channels between the sample axes (`b, c, y, x`) are read as `[N, C, L]`, in place: a
    # reshape to rows would copy the array and its result.
    own = emit.plain_labels(inputs[0], term.inputs[0])
    after = _after_channels(own, order, channels)
    if after and own is not None:
        order = list(own)
    expr, labels = emit.single(term, inputs, order)
    x = expr if expr.isidentifier() else emit.assign("x", expr)
    count = emit.size_product([sizes[c] for c in channels])
    if after:
        count += ", " + emit.size_product([sizes[label] for label in after])

    def flat(code: TensorCode, method: str) -> str:
        """A view for the running statistics (`F.batch_norm` updates them in place)."""
        aligned = emit.permute(code.code, [target_label(n) for n in code.names], channels)
        return aligned if len(channels) == 1 else f"{aligned}.{method}(-1)"

    weight = flat(rest[0], "reshape") if op.affine else "None"
    bias = flat(rest[1], "reshape") if op.bias else "None"
    shape = "samples by channels by positions" if after else \
        "one row per sample, one column per channel"
    what = f"batchnorm over {' '.join(op.axes)}"

    def call(operand: str) -> str:
        return (f"{emit.functional_call('batch_norm')}({operand}, {flat(mean, 'view')}, "
                f"{flat(var, 'view')}, {weight}, {bias}, self.training, "
                f"{float_literal(op.momentum)}, {float_literal(op.eps)})")

    def general(comment: str | None = None) -> str:
        rows = emit.assign("rows", f"{x}.reshape(-1, {count})", comment=comment)
        normed = emit.assign("normed", call(rows))
        return f"{normed}.view_as({x})"

    if len(channels) == 1 and labels == emit.output_labels(term.outputs[0]):
        # one dim of samples before the channel (no leading batch dims, or the only one):
        # `F.batch_norm` takes the array as it is, `(N, C)` or `(N, C, positions...)`
        return [emit.finish_either(term, dims_test(x, 2 + len(after)), lambda: call(x), general,
                                   labels, comment=f"{what}: {shape}",
                                   batched=inputs[0].batched, fallback="batchnorm")]
    expr = general(f"{what}{emit.source_note(term.span)}: {shape}")
    return [emit.finish(term, expr, labels, comment=what, batched=inputs[0].batched,
                        fallback="batchnorm")]


def _after_channels(own: Sequence[Label] | None, order: Sequence[Label],
                    channels: Sequence[Label]) -> list[Label]:
    """The sample axes after the channels in the input's memory order, when the channels are
    one block there (`b, c, y, x`: `y, x`); else none."""
    if own is None or sorted(map(str, own)) != sorted(map(str, order)) or not channels:
        return []
    positions = [own.index(c) for c in channels]
    if positions != list(range(positions[0], positions[0] + len(channels))):
        return []
    return list(own[positions[-1] + 1:])


def _batchnorm_cost(op: ir.BatchNormOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """As a layer norm's (the statistics, then a shift and a scale per entry), the running
    statistics' update being per channel, not per entry."""
    return per_output_entry(5 + op.affine + op.bias)(op, term, sizes)


def _batchnorm_symmetry(op: ir.BatchNormOp, term: ir.Broadcasted, carried: Carried,
                        calls: SymmetryCalls) -> Verdict:
    """The statistics treat the entries of the target axes alike; each channel has its own
    running statistics (and scale and shift), so a permutation of a channel axis breaks."""
    channels = carried.any - set(op.axes)
    if channels:
        return Break(f"the batchnorm over {axis_list(op.axes)} keeps running statistics "
                     f"({term.params[0].name}) per channel along {axis_list(channels)}")
    return entrywise(op, term, carried, calls)


def batchnorm_recomputed(rev: Reverser, term: ir.Broadcasted, x: Value) -> Value:
    """The batch normalisation of `x` written out as the mode differentiated computes it
    (`Reverser.training`), for the forward block of a backward definition: in training mode
    `x̂ = (x - mean x) r` with the batch's mean and biased variance over the target axes, in
    evaluation mode with the running statistics (buffers, read as they are), `r = (var +
    eps)^-1/2`; then `γ x̂ + β`. The running statistics are not updated here (the forward
    module's call updates them; the update is not differentiated). `x̂` and `r` are kept for
    the reverse rule (`Reverser.normalised`)."""
    op = term.op
    assert isinstance(op, ir.BatchNormOp)
    ports = [p.name or "" for p in term.params]
    if rev.training:
        centred = rev.subtract(x, rev.reduce("mean", x, op.axes))
        variance = rev.reduce("mean", rev.function("square", centred), op.axes)
    else:
        centred = rev.subtract(x, rev.parameter(ports[0]))
        variance = rev.on_wire(rev.parameter(ports[1]))
    root = rev.function("rsqrt", rev.constant(variance, "+", op.eps))
    normalised = rev.multiply(centred, root, like=x.array)
    result = normalised
    if op.affine:
        result = rev.multiply(result, rev.parameter(ports[2]), like=x.array)
    if op.bias:
        result = rev.add(result, rev.parameter(ports[3]), like=x.array)
    rev.normalised[result.id] = (normalised, root)
    return result


def _batchnorm_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.BatchNormOp,
                       inputs: Sequence[Value], outputs: Sequence[Value],
                       grads: Sequence[Value]) -> Gradients:
    """With `x̂` and `r` as the forward block computed them (`batchnorm_recomputed`) and
    `g = dY γ`: in training mode `dX = r (g - mean(g) - x̂ mean(g x̂))` (means over the target
    axes: the batch's statistics depend on every entry), in evaluation mode `dX = r g` (the
    running statistics are constants: an affine map); `dγ = sum dY x̂`, `dβ = sum dY` over
    the target axes. The running statistics (buffers) get no gradient."""
    (x,), (y,), (gradient,) = inputs, outputs, grads
    normalised, root = rev.normalised[y.id]
    params: list[Value | None] = [None, None]
    scaled = gradient
    if op.affine:
        gain = rev.parameter(term.params[2].name or "")
        scaled = rev.multiply(gradient, gain, like=x.array)
        params.append(rev.sum_to(rev.multiply(gradient, normalised), gain.array))
    if op.bias:
        params.append(rev.sum_to(gradient, term.params[3].array))
    if rev.training:
        dot = rev.reduce("mean", rev.multiply(scaled, normalised), op.axes)
        scaled = rev.subtract(rev.subtract(scaled, rev.multiply(normalised, dot, like=x.array)),
                              rev.reduce("mean", scaled, op.axes))
    return Gradients([rev.multiply(scaled, root, like=x.array)], params)


BATCHNORM = declare(Declaration(
    node=ir.BatchNormOp, reverse=_batchnorm_reverse,
    surfaces=(
        Surface("batchnorm", "normalise each channel over the target axes with the batch's "
                "statistics (training) or the running ones (evaluation), which it updates; "
                "optional scale and shift", "batchnorm[x](X, mean, var, g, beta)",
                _batchnorm_typing),
    ),
    glyph=Box("batchnorm_circle", min_width=30.0, min_height=30.0, square=True),
    overview=_batchnorm_overview, roles=_batchnorm_roles, lower=_batchnorm_lower,
    cost=_batchnorm_cost, symmetry=_batchnorm_symmetry))
