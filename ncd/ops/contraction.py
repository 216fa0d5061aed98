"""Contractions and learned maps: `einsum` (tensor equations), `linear` and `embedding`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.contraction_order import Path, contraction_path, live_intermediates, representative
from ncd.elision import formula, spaced
from ncd.sizes import Size, from_ir

from .arguments import arguments, bracket_arrows, bracket_axes, option_error, reject_items
from .declaration import Box, Caption, Cups, Declaration, Gradients, SizeValue, Surface, declare
from .facts import (
    ZERO,
    Break,
    Carried,
    Carry,
    Cost,
    CostSizes,
    SymmetryCalls,
    Verdict,
    axis_list,
    contraction,
    degree_entries,
    entries,
    entrywise,
    free,
    output_entries,
    target_axes,
)
from .indexing import scatter_adjoint
from .lowering import (
    Emitter,
    Label,
    Role,
    TensorCode,
    degree_label,
    dims_test,
    float_literal,
    size_factor,
    target_label,
)

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


def fans(port: ir.Port, contracted: set[str], value_of: SizeValue
         ) -> tuple[int | None, int | None]:
    """A weight's fan-in (the entries of its contracted axes) and fan-out (the others), or
    None for both when a size is only known at run time."""
    fan_in = fan_out = 1
    for axis in port.array.shape.axes:
        value = value_of(axis.size)
        if value is None:
            return None, None
        if axis.name in contracted:
            fan_in *= value
        else:
            fan_out *= value
    return fan_in, fan_out


def contraction_comment(term: ir.Broadcasted, operands: Sequence[tuple[TensorCode, ir.Port]]
                        ) -> str:
    """`x h k, y h k -> h x y`: the real axis names beside the einsum's letters."""
    parts = [" ".join(value.names) for value, _ in operands]
    return f"{', '.join(parts)} -> {' '.join(term.outputs[0].array.names)}"


def learned_subscript(term: ir.Broadcasted) -> str | None:
    """The subscript of a learned map's letter: `W_q` -> q, else the output variable's name."""
    for param in term.params:
        head, sep, tail = param.name.partition("_") if param.name else ("", "", "")
        if sep and tail and head.lower() in ("w", "e", "weight", "table"):
            return tail
    for output in term.outputs:
        if output.name:
            return output.name
    for param in term.params:
        if param.name:
            return param.name
    return None


# ---------------------------------------------------------------------------------------
# einsum: made by tensor equations (`ncd.equations`), it has no name of its own
# ---------------------------------------------------------------------------------------


def _einsum_overview(op: ir.EinsumOp) -> tuple[str, str]:
    text = f"contract {spaced(op.contracted)}" if op.contracted else "multiply"
    if op.scale_text:
        text += f"\nscale {formula(op.scale_text)}"
    elif op.scale != 1.0:
        text += f"\nscale {op.scale:g}"
    return text, "box"


def _einsum_roles(op: ir.EinsumOp, term: ir.Broadcasted, value_of: SizeValue
                  ) -> tuple[Role, ...]:
    return tuple(Role("fan_in_uniform", "nn.Linear, nn.Conv*",
                      *fans(port, set(port.targets), value_of)) for port in term.params)


def _einsum_lower(emit: Emitter, term: ir.Broadcasted, op: ir.EinsumOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    operands = [*zip(inputs, term.inputs, strict=True),
                *zip(emit.parameters(term), term.params, strict=True)]
    expr = emit.contraction(term, operands)
    if op.scale != 1.0:
        expr += f" * {float_literal(op.scale)}"
    comment = contraction_comment(term, operands)
    if op.scale_text:
        comment += f", times {op.scale_text}"
    return [emit.finish(term, expr, emit.output_labels(term.outputs[0]), comment=comment,
                        batched=any(v.batched for v in inputs), fallback="product")]


def _port_labels(port: ir.Port) -> list[Label]:
    """The labels of an operand as the compiler reads it: the degree indices its tiling axes
    follow, then its target axes."""
    degree = sorted({i for row in port.reindexing.matrix for i, c in enumerate(row) if c})
    return [*(degree_label(i) for i in degree), *(target_label(n) for n in port.targets)]


def contraction_order(term: ir.Broadcasted, sizes: CostSizes
                      ) -> tuple[Path, dict[Label, Size]] | None:
    """The order in which the compiler contracts three or more operands two at a time
    (`ncd.contraction_order`), with the size of every label; None for fewer operands."""
    ports = [*term.inputs, *term.params]
    if len(ports) < 3:
        return None
    polynomials: dict[Label, Size] = {
        degree_label(i): sizes.size(axis.size) for i, axis in enumerate(term.degree.axes)}
    for port in [*ports, term.outputs[0]]:
        for name in port.targets:
            polynomials[target_label(name)] = sizes.size(port.array.shape.axis(name).size)
    values = {label: representative(size) for label, size in polynomials.items()}
    output = [*(degree_label(i) for i in range(len(term.degree.axes))),
              *(target_label(n) for n in term.outputs[0].targets)]
    return contraction_path([_port_labels(p) for p in ports], output, values), polynomials


def _path_cost(path: Path, operands: int, polynomials: Mapping[Label, Size]) -> Cost:
    """Multiply-adds of each pairwise step, and the intermediates held while the path runs
    (where they are largest together, with the sizes the path was chosen with)."""
    def product(labels: Sequence[Label]) -> Size:
        total = Size.const(1)
        for label in labels:
            total = total * polynomials[label]
        return total

    macs = ZERO
    for step in path.steps:
        macs = macs + product(step.counted)
    held = ZERO
    held_value = -1
    for alive in live_intermediates(path, operands):
        total = ZERO
        for number in alive:
            total = total + product(path.steps[number - operands].labels)
        value = representative(total)
        if value > held_value:
            held, held_value = total, value
    return Cost(macs, macs * 2, held)


def _einsum_cost(op: ir.EinsumOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    ordered = contraction_order(term, sizes)
    if ordered is not None:
        cost = _path_cost(ordered[0], len(term.inputs) + len(term.params), ordered[1])
    else:
        cost = contraction(sizes, term, [*term.inputs, *term.params], bool(op.contracted))
    if op.scale != 1.0:  # the product, then the scaled copy
        outputs = output_entries(sizes, term)
        cost = cost + Cost(ZERO, outputs, outputs)
    return cost


def _einsum_symmetry(op: ir.EinsumOp, term: ir.Broadcasted, carried: Carried,
                     calls: SymmetryCalls) -> Verdict:
    """A sum over an axis is invariant to permuting it when every operand that has the axis
    is permuted alike; a learned operand (a weight per position) or an operand that is not
    permuted breaks that."""
    names = carried.any
    for name in sorted(names):
        for port in term.params:
            if name in port.targets:
                return Break(f"the contraction over {name} reads the parameter "
                             f"{port.name or 'W'} at each position of {name}")
        for port, axes in zip(term.inputs, carried.inputs, strict=True):
            if name in port.targets and name not in axes:
                return Break(f"the contraction over {name} pairs a permuted operand with "
                             f"{port.name or 'an operand'}, which is not permuted")
    return entrywise(op, term, carried, calls)


def _einsum_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.EinsumOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """The gradient of each operand is the contraction of the output's gradient with the
    other operands, the operand's axes now the output: inputs and output exchanged."""
    operands = [*inputs, *(rev.parameter(p.name) for p in term.params if p.name is not None)]
    (gradient,) = grads
    found: list[Value | None] = []
    for j, operand in enumerate(operands):
        if operand.array.dtype.kind != "R":
            found.append(None)
            continue
        others = [o for i, o in enumerate(operands) if i != j]
        found.append(rev.contract(operand.array, [gradient, *others], op.scale, op.scale_text,
                                  name=f"d{operand.name}"))
    return Gradients(found[:len(inputs)], found[len(inputs):])


EINSUM = declare(Declaration(
    node=ir.EinsumOp, reverse=_einsum_reverse, surfaces=(), glyph=Cups(), overview=_einsum_overview,
    roles=_einsum_roles, lower=_einsum_lower, cost=_einsum_cost, symmetry=_einsum_symmetry))


# ---------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------


def _linear_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow, s.Var))
    arrow = bracket_arrows(builder, call)[0]
    flags = [i.name for i in call.items or () if isinstance(i, s.Var)]
    if any(f != "bias" for f in flags):
        bad = next(i for i in call.items or () if isinstance(i, s.Var) and i.name != "bias")
        raise option_error(builder, f"`linear` has no flag `{bad.name}`", bad.span,
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
    weight_axes = [ir.trusted(ir.Axis, name=w, size=value.array.shape.axis(n).size)
                   for n, w in zip(in_names, ir.weight_input_names(in_names, out_names),
                                   strict=True)]
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
    # Made without validation (`ir.trusted`): one weight axis for each input axis, as
    # `LinearOp` requires, by the making of `weight_axes`.
    op = ir.trusted(ir.LinearOp, kind="linear", inputs=tuple(in_names), outputs=tuple(out_names),
                    bias=bias, weight_inputs=tuple(a.name for a in weight_axes))
    return builder.broadcast(op, [(value, in_names)], [(out_array, out_names, name)], call.span,
                             params=params)


def _linear_caption(op: ir.LinearOp, term: ir.Broadcasted) -> Caption:
    return Caption("operator", "L", learned_subscript(term))


def _linear_overview(op: ir.LinearOp) -> tuple[str, str]:
    text = f"linear {spaced(op.inputs)} → {spaced(op.outputs)}"
    return text + (" + bias" if op.bias else ""), "note"


def _linear_roles(op: ir.LinearOp, term: ir.Broadcasted, value_of: SizeValue
                  ) -> tuple[Role, ...]:
    role = Role("fan_in_uniform", "nn.Linear", *fans(term.params[0], set(op.weight_inputs),
                                                     value_of))
    return (role, role) if op.bias else (role,)


def _plain_tiling(port: ir.Port) -> list[int] | None:
    """The degree index each tiling axis of `port` follows, when each is read as it is
    (coefficient 1, no offset); else None."""
    indices = []
    for row, offset in zip(port.reindexing.matrix, port.reindexing.offset, strict=True):
        ones = [i for i, c in enumerate(row) if c]
        if len(ones) != 1 or row[ones[0]] != 1 or offset:
            return None
        indices.append(ones[0])
    return indices


def weight_rows_first(op: ir.LinearOp, term: ir.Broadcasted) -> bool | None:
    """How the linear map's weight is laid out, when it is a plain matrix of the input and
    output axes: False for `[inputs..., outputs...]` (as `linear` creates it), True for
    `[outputs..., inputs...]` (`nn.Linear`'s `(out, in)` rows, as a `param` declaration may
    lay it out); None for any other order or a reindexed weight."""
    weight = term.params[0]
    if weight.tiling:
        return None
    if weight.array.names == (*op.weight_inputs, *op.outputs):
        return False
    if weight.array.names == (*op.outputs, *op.weight_inputs):
        return True
    return None


def linear_fuses(op: ir.LinearOp, term: ir.Broadcasted) -> bool:
    """Whether the linear map runs as one `F.linear` (a matrix product with its bias added in
    the same call, no temporary): the input's axes mapped are its trailing axes in the
    weight's order, the output's new axes its trailing axes, the other axes in the same order
    in both, and the weight laid out `[inputs..., outputs...]` (read transposed, a view) or
    `[outputs..., inputs...]` (read as it is; `weight_rows_first`)."""
    source, result = term.inputs[0], term.outputs[0]
    tiling_in, tiling_out = _plain_tiling(source), _plain_tiling(result)
    if tiling_in is None or tiling_out is None or tiling_in != tiling_out:
        return False
    inputs, outputs = len(op.inputs), len(op.outputs)
    if source.array.names[len(source.array.names) - inputs:] != op.inputs or \
            source.array.names[:len(source.array.names) - inputs] != source.tiling:
        return False
    if result.array.names[len(result.array.names) - outputs:] != op.outputs or \
            result.array.names[:len(result.array.names) - outputs] != result.tiling:
        return False
    if weight_rows_first(op, term) is None:
        return False
    return not op.bias or (term.params[1].array.names == op.outputs
                           and not term.params[1].tiling)


def linear_as_addmm(op: ir.LinearOp, term: ir.Broadcasted,
                    value_of: Callable[[ir.SizeExpr], int | None]) -> bool:
    """Whether a linear map that `linear_fuses` runs as one `torch.addmm(b, X, W)` of the
    input's rows where the input has its own rank, or one leading dim more, at run time: it
    has a bias, its weight is laid out `[in, out]` and it is not narrow (`narrow_outputs`,
    sizes by `value_of`). The leading dims and the input axes are flattened into rows (a view
    where the input is contiguous) and the output is a view of the product's rows; `addmm`
    reads the `[in, out]` weight as it is stored where `F.linear` transposes it twice (two
    more views, two more backward steps). An `(out, in)` weight is `F.linear`'s own layout."""
    return op.bias and weight_rows_first(op, term) is False and \
        not narrow_outputs(op, term, value_of)


def linear_is_pointwise(op: ir.LinearOp, term: ir.Broadcasted) -> bool:
    """Whether the linear map runs as one pointwise (kernel size 1) convolution: it maps one
    axis that other axes follow (the channels of `b, c, y, x`) to one axis in its place, as
    `nn.Conv2d(c, o, 1)` does, with the bias added in the same call and no copy of the input
    or the output moved into a layout `F.linear` takes; the weight laid out `[in, out]` (read
    transposed) or `[out, in]`, as `nn.Conv2d` keeps it (read as it is stored)."""
    source, result = term.inputs[0], term.outputs[0]
    tiling_in, tiling_out = _plain_tiling(source), _plain_tiling(result)
    if tiling_in is None or tiling_out is None or tiling_in != tiling_out or \
            len(op.inputs) != 1 or len(op.outputs) != 1:
        return False
    names_in, names_out = source.array.names, result.array.names
    position = names_in.index(op.inputs[0])
    if position == len(names_in) - 1 or names_out.index(op.outputs[0]) != position or \
            names_in[:position] + names_in[position + 1:] != source.tiling or \
            names_out[:position] + names_out[position + 1:] != result.tiling:
        return False
    if weight_rows_first(op, term) is None:
        return False
    return not op.bias or (term.params[1].array.names == op.outputs
                           and not term.params[1].tiling)


def _rows(op: ir.LinearOp, term: ir.Broadcasted, weight: str) -> str:
    """A one-axis map's weight as `(out, in)` rows, as convolutions and `F.linear` take it: as
    it is stored where it is declared so (`weight_rows_first`), else transposed (a view)."""
    return weight if weight_rows_first(op, term) else f"{weight}.T"


POINTWISE_PLANE = 8192
"""Below this many entries of one example's input plane (channels times the positions after
them, sizes fixed), a pointwise convolution's one small product per example costs more than
copying the plane transposed and making one product for the whole batch (`F.linear`); above
it `F.conv1d` is faster and copies nothing (measured on CPU: 16 x 32 planes 1.7x faster
through `F.linear`, 64 x 128 even, 196 x 512 1.3x faster through `F.conv1d`)."""


def pointwise_plane_is_small(op: ir.LinearOp, term: ir.Broadcasted,
                             value_of: Callable[[ir.SizeExpr], int | None]) -> bool:
    """Whether a pointwise linear map's input plane (its mapped axis and the axes after it)
    has fixed sizes and fewer than `POINTWISE_PLANE` entries: then it runs as `F.linear` on
    the plane transposed (a copy) rather than as `F.conv1d`."""
    array = term.inputs[0].array
    position = array.names.index(op.inputs[0])
    values = [value_of(axis.size) for axis in array.shape.axes[position:]]
    return all(v is not None for v in values) and \
        math.prod(v for v in values if v is not None) < POINTWISE_PLANE


def _literal(code: str) -> int | None:
    """A size's code as a number, when it is one (a fixed size)."""
    return int(code) if code.isdecimal() else None


def _pointwise_linear(emit: Emitter, term: ir.Broadcasted, op: ir.LinearOp,
                      value: TensorCode, params: Sequence[TensorCode]
                      ) -> tuple[str, list[Label], tuple[str, str] | None] | None:
    """`F.conv1d(X.reshape(-1, C, L), W.T[:, :, None], b)` split back into the output's
    axes, the labels of its dims, and the test and code of the call on the array as it is
    when it has one dim before the channels (`F.conv2d(X, W.T.reshape(o, c, 1, 1), b)`, as
    `nn.Conv2d(c, o, 1)`; None for more than three positions or more than one axis before
    the channels); for a small plane (`pointwise_plane_is_small`) `F.linear` of the input
    with its channels moved last instead, and no call on the array as it is; None when
    `value`'s layout is not the one `linear_is_pointwise` needs."""
    source, result = term.inputs[0], term.outputs[0]
    degree = [degree_label(i) for i in _plain_tiling(source) or ()]
    position = source.array.names.index(op.inputs[0])
    own = [*degree[:position], target_label(op.inputs[0]), *degree[position:]]
    if emit.plain_labels(value, source) != own:
        return None
    sizes = {axis.name: axis.size for axis in source.array.shape.axes}
    after = [emit.size(sizes[n]) for n in source.array.names[position + 1:]]
    if pointwise_plane_is_small(op, term, lambda size: _literal(emit.size(size))):
        return (*_transposed_linear(emit, term, op, value.code, own,
                                    target_label(op.inputs[0]), params), None)
    length = after[0] if len(after) == 1 else " * ".join(map(size_factor, after))
    channels = emit.size(sizes[op.inputs[0]])
    operand = f"{value.code}.reshape(-1, {channels}, {length})"
    bias = [params[1].code] if op.bias else []
    rows = _rows(op, term, params[0].code)
    arguments = [operand, f"{rows}[:, :, None]", *bias]
    shape = emit.tuple_text([emit.size(axis.size) for axis in result.array.shape.axes])
    if value.batched:
        shape = f"{emit.leading_shape(value)} + {shape}"
    expr = f"{emit.functional_call('conv1d')}({', '.join(arguments)}).reshape({shape})"
    labels = [*degree[:position], target_label(op.outputs[0]), *degree[position:]]
    fast = None
    if value.batched and position <= 1 and len(after) <= 3:
        weight = f"{rows}[:, :, None]"
        if len(after) > 1:
            outputs = emit.size(result.array.shape.axis(op.outputs[0]).size)
            weight = f"{rows}.reshape({outputs}, {channels}{', 1' * len(after)})"
        call = emit.functional_call(f"conv{len(after)}d")
        fast = (dims_test(value.code, 2 + len(after)),
                f"{call}({', '.join([value.code, weight, *bias])})")
    return expr, labels, fast


def _transposed_linear(emit: Emitter, term: ir.Broadcasted, op: ir.LinearOp, code: str,
                       labels: Sequence[Label], mapped: Label, params: Sequence[TensorCode]
                       ) -> tuple[str, list[Label]]:
    """`F.linear` of the input with its mapped axis moved last (a view, which `F.linear`
    copies into rows), as one matrix product for the whole batch, and the labels of its dims
    (the output axis last)."""
    others = [label for label in labels if label != mapped]
    arguments = [emit.permute(code, labels, [*others, mapped]), _rows(op, term, params[0].code)]
    if op.bias:
        arguments.append(params[1].code)
    expr = f"{emit.functional_call('linear')}({', '.join(arguments)})"
    return expr, [*others, target_label(op.outputs[0])]


NARROW_OUTPUT = 12
"""Below this many outputs (sizes fixed), the CPU's matrix product of rows by an `[in, out]`
weight read as it is stored is slow: measured with one thread, 512 rows of 512 entries to 10
outputs took 486 us read so and 229 us with the weight first copied into `(out, in)` rows (as
`nn.Linear` keeps it), the copy included; from 12 outputs up both take the same time."""

NARROW_COPY_ENTRIES = 16384
"""From this many input entries (rows times inputs) a narrow linear map copies its weight
first: below it the copy costs more than it saves (4 rows of 512: 1.8x slower with it; 32
rows of 512, or 64 of 128: 0.66 to 0.87 of the time without it)."""


def narrow_outputs(op: ir.LinearOp, term: ir.Broadcasted,
                   value_of: Callable[[ir.SizeExpr], int | None]) -> bool:
    """Whether the linear map has fixed sizes of fewer than `NARROW_OUTPUT` outputs."""
    values = [value_of(term.outputs[0].array.shape.axis(n).size) for n in op.outputs]
    return all(v is not None for v in values) and \
        math.prod(v for v in values if v is not None) < NARROW_OUTPUT


def _unless_traced(test: str) -> str:
    """`test`, False while `torch.fx` traces (a traced array's sizes are proxies that an
    `if` cannot read; the general code runs)."""
    return f"not torch.fx._symbolic_trace.is_fx_symbolic_tracing() and {test}"


def _weight_matrix(op: ir.LinearOp, term: ir.Broadcasted, params: Sequence[TensorCode]) -> str:
    """The weight as a matrix in its stored order, `[in, out]` or `(out, in)`
    (`weight_rows_first`): several leading or trailing axes flattened (views)."""
    inputs, outputs = len(op.inputs), len(op.outputs)
    first, second = (outputs, inputs) if weight_rows_first(op, term) else (inputs, outputs)
    return params[0].code + (f".flatten(0, {first - 1})" if first > 1 else "") + \
        (".flatten(1)" if second > 1 else "")


def _bias_vector(op: ir.LinearOp, params: Sequence[TensorCode]) -> str:
    """The bias as a vector (a view where it has several output axes)."""
    return params[1].code + (".flatten()" if len(op.outputs) > 1 else "")


def _fused_linear(emit: Emitter, term: ir.Broadcasted, op: ir.LinearOp,
                  value: TensorCode, params: Sequence[TensorCode], rows: bool = False
                  ) -> tuple[str, list[Label]] | None:
    """`F.linear(X, W.T, b)`, or `X @ W` without a bias (weight and bias flattened when they
    have several input or output axes), and the labels of its dims, or None when `value`'s
    layout is not the one `linear_fuses` needs. With `rows`, the weight is copied into
    `(out, in)` rows first: `F.linear(X, W.T.contiguous(), b)`. A weight laid out `(out, in)`
    already (`weight_rows_first`) is read as it is: `F.linear(X, W, b)`, as `nn.Linear`."""
    source = term.inputs[0]
    degree = [degree_label(i) for i in _plain_tiling(source) or ()]
    if emit.plain_labels(value, source) != [*degree, *(target_label(n) for n in op.inputs)]:
        return None
    inputs, outputs = len(op.inputs), len(op.outputs)
    operand = value.code + (f".flatten({-inputs})" if inputs > 1 else "")
    bias = [_bias_vector(op, params)] if op.bias else []
    weight = _weight_matrix(op, term, params)
    if weight_rows_first(op, term):
        expr = f"{emit.functional_call('linear')}({', '.join([operand, weight, *bias])})"
    elif rows or op.bias:
        read = f"{weight}.T.contiguous()" if rows else f"{weight}.T"
        expr = f"{emit.functional_call('linear')}({', '.join([operand, read, *bias])})"
    else:  # the product `F.linear` makes of `W.T`, without transposing `W` there and back
        expr = f"({operand} @ {weight})" if outputs > 1 else f"{operand} @ {weight}"
    if outputs > 1:
        shape = emit.tuple_text([emit.size(term.outputs[0].array.shape.axis(n).size)
                                 for n in op.outputs])
        expr += f".unflatten(-1, {shape})"
    return expr, [*degree, *(target_label(n) for n in op.outputs)]


def _addmm_linear(emit: Emitter, term: ir.Broadcasted, op: ir.LinearOp, value: TensorCode,
                  params: Sequence[TensorCode], dims: int) -> str:
    """`torch.addmm(b, X, W)` of an input of `dims` dims at run time (`linear_as_addmm`): the
    leading dims and the input axes flattened into a matrix (as it is where both are one dim),
    the weight and bias flattened (`_weight_matrix`, `_bias_vector`: views of the stored
    arrays), and the product's rows read back as the leading dims (sizes read from the input)
    and the output axes."""
    inputs, outputs = len(op.inputs), len(op.outputs)
    leading = dims - inputs
    operand = value.code
    if inputs > 1:
        operand += f".flatten({-inputs})"
    if leading > 1:
        operand += ".flatten(0, -2)"
    expr = f"torch.addmm({_bias_vector(op, params)}, {operand}, "\
        f"{_weight_matrix(op, term, params)})"
    sizes = [emit.size(term.outputs[0].array.shape.axis(n).size) for n in op.outputs]
    if leading > 1:
        kept = [f"{value.code}.shape[{dim}]" for dim in range(leading)]
        expr += f".view({', '.join([*kept, *sizes])})"
    elif outputs > 1:
        expr += f".unflatten(-1, {emit.tuple_text(sizes)})"
    return expr


def _linear_lower(emit: Emitter, term: ir.Broadcasted, op: ir.LinearOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    if len(term.params) != (2 if op.bias else 1):
        raise emit.error(f"linear{'with bias' if op.bias else ''} has "
                         f"{len(term.params)} parameters")
    params = emit.parameters(term)
    labels = emit.output_labels(term.outputs[0])
    if linear_fuses(op, term):
        fused = _fused_linear(emit, term, op, inputs[0], params)
        if fused is not None:  # `finish` moves its dims to the output's order (a view)
            comment = f"{' '.join(inputs[0].names)} -> {' '.join(term.outputs[0].array.names)}"

            def value_of(size: ir.SizeExpr) -> int | None:
                return _literal(emit.size(size))

            choices: list[tuple[str, str]] = []
            if narrow_outputs(op, term, value_of) and not weight_rows_first(op, term):
                copied = _fused_linear(emit, term, op, inputs[0], params, rows=True)
                assert copied is not None
                large = f"{inputs[0].code}.numel() >= {NARROW_COPY_ENTRIES}"
                choices.append((copied[0], _unless_traced(large)))
                comment += "; a large input: the weight copied into (out, in) rows"
            elif linear_as_addmm(op, term, value_of):
                # Forms for the input's own rank and for one leading dim more (the usual
                # batch), each reading only the sizes it needs; `F.linear` for any other.
                rank = len(term.inputs[0].array.names)
                choices = [(_addmm_linear(emit, term, op, inputs[0], params, dims),
                            _unless_traced(f"{inputs[0].code}.dim() == {dims}"))
                           for dims in (rank, rank + 1) if dims > len(op.inputs)]
            if choices:
                return [emit.finish_choice(term, choices, fused[0], fused[1], comment=comment,
                                           batched=inputs[0].batched, fallback="linear")]
            return [emit.finish(term, fused[0], fused[1], comment=comment,
                                batched=inputs[0].batched, fallback="linear")]
    if linear_is_pointwise(op, term):
        pointwise = _pointwise_linear(emit, term, op, inputs[0], params)
        if pointwise is not None:
            comment = f"{' '.join(inputs[0].names)} -> {' '.join(term.outputs[0].array.names)}" \
                ", a pointwise convolution"
            general, labels_out, fast = pointwise
            if fast is not None and labels_out == labels:
                test, call = fast
                return [emit.finish_either(term, test, lambda: call, lambda: general, labels,
                                           comment=comment, batched=inputs[0].batched,
                                           fallback="linear")]
            return [emit.finish(term, general, labels_out, comment=comment,
                                batched=inputs[0].batched, fallback="linear")]
    missing = [w for w in op.weight_inputs if w not in term.params[0].array.names]
    if missing:
        raise emit.error(f"the weight {term.params[0].array.text()} of a linear map has no "
                         f"axis {missing[0]}")
    operands = [(inputs[0], term.inputs[0]), (params[0], term.params[0])]
    # Input axis `a` meets the weight axis `op.weight_inputs[i]`; outputs keep their names.
    relabel: list[Mapping[Label, Label]] = [
        {target_label(a): ("contract", a) for a in op.inputs},
        {target_label(w): ("contract", a)
         for a, w in zip(op.inputs, op.weight_inputs, strict=True)}]
    expr = emit.contraction(term, operands, relabel)
    if op.bias:
        expr += " + " + emit.normalized(term, params[1], term.params[1], labels, "unsqueeze")
    return [emit.finish(term, expr, labels, comment=contraction_comment(term, operands),
                        batched=inputs[0].batched, fallback="linear")]


def _linear_cost(op: ir.LinearOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    macs = degree_entries(sizes, term) * entries(sizes, target_axes(term.inputs[0])) * \
        entries(sizes, [term.outputs[0].array.shape.axis(n) for n in op.outputs])
    bias = output_entries(sizes, term) if op.bias else ZERO  # the product, then the sum
    # Fused, the bias is added into the product's output: no temporary; a small pointwise
    # plane is copied transposed first (the bias is then added in place)
    if linear_is_pointwise(op, term) and pointwise_plane_is_small(
            op, term, lambda size: sizes.size(size).value):
        return Cost(macs, macs * 2 + bias, entries(sizes, term.inputs[0].array.shape.axes))
    fused = linear_fuses(op, term) or linear_is_pointwise(op, term)
    return Cost(macs, macs * 2 + bias, ZERO if fused else bias)


def _linear_symmetry(op: ir.LinearOp, term: ir.Broadcasted, carried: Carried,
                     calls: SymmetryCalls) -> Verdict:
    if carried.any:
        weight = term.params[0].name or "its weight"
        return Break(f"the linear map over {axis_list(carried.any)} has a weight ({weight}) "
                     "per position")
    return Carry(tuple(frozenset() for _ in term.outputs))


def _linear_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.LinearOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """`dX = dY W` over the output axes, `dW = X dY` over the tiling axes, `db = sum dY`; the
    input's axes take the weight's names first where an axis is both input and output."""
    (operand,) = inputs
    (gradient,) = grads
    weight_port = term.params[0]
    assert weight_port.name is not None
    weight = rev.parameter(weight_port.name)
    renames = {a: w for a, w in zip(op.inputs, op.weight_inputs, strict=True) if a != w}
    renamed = rev.rename(operand, renames)
    d_renamed = rev.contract(renamed.array, [gradient, weight], name=f"d{operand.name}")
    d_operand = rev.rename(d_renamed, {w: a for a, w in renames.items()})
    params: list[Value | None] = [rev.contract(weight.array, [renamed, gradient],
                                               name=f"d{weight.name}")]
    if op.bias:
        params.append(rev.sum_to(gradient, term.params[1].array))
    return Gradients([d_operand], params)


LINEAR = declare(Declaration(
    node=ir.LinearOp, reverse=_linear_reverse,
    surfaces=(Surface("linear", "a learned linear map from target axes to new axes; weight (and "
                      "bias) named in the arguments", "linear[m -> h k](X, W_q)",
                      _linear_typing),),
    glyph=Box("card", _linear_caption, caption_size=16.0, min_width=34.0, min_height=34.0,
              caption_dx=0.06),
    overview=_linear_overview, roles=_linear_roles, lower=_linear_lower,
    cost=_linear_cost, symmetry=_linear_symmetry))


# ---------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------


def _embedding_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow, s.Var))
    (value,), (table_name,) = arguments(builder, call, 1, 1)
    if value.array.dtype.kind != "N":
        raise builder.ctx.error(
            "E302", f"`embedding` reads indices of datatype N[v], but `{value.name}` holds "
            f"{value.array.dtype.text()}", call.args[0].span)
    arrows = [i for i in call.items or () if isinstance(i, s.Arrow)]
    if arrows:
        if len(arrows[0].left) != 1:
            raise option_error(builder, "`embedding` has one vocabulary axis", arrows[0].span)
        vocab = builder.global_axis(arrows[0].left[0])
        out_axes = [builder.global_axis(i) for i in arrows[0].right]
    else:
        out_axes = [builder.global_axis(i) for i in bracket_axes(builder, call)]
        existing = builder.params.get(table_name.name)
        if existing is None:
            raise option_error(builder, "name the vocabulary axis: `embedding[v -> m](T, E)`",
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


def _embedding_caption(op: ir.EmbeddingOp, term: ir.Broadcasted) -> Caption:
    return Caption("operator", "E", learned_subscript(term))


def _embedding_overview(op: ir.EmbeddingOp) -> tuple[str, str]:
    return f"embedding → {spaced(op.outputs)}", "note"


def _embedding_roles(op: ir.EmbeddingOp, term: ir.Broadcasted, value_of: SizeValue
                     ) -> tuple[Role, ...]:
    return (Role("normal", "nn.Embedding"),)


def _embedding_lower(emit: Emitter, term: ir.Broadcasted, op: ir.EmbeddingOp,
                     inputs: list[TensorCode]) -> list[TensorCode]:
    (table,) = emit.parameters(term)
    if table.rank < 1:
        raise emit.error("an embedding table needs a vocabulary axis")
    degree = [degree_label(i) for i in range(len(term.degree.axes))]
    index = emit.normalized(term, inputs[0], term.inputs[0], degree, "expand")
    if table.rank == 2:
        expr = f"{emit.functional_call('embedding')}({index}, {table.code})"
    else:
        expr = f"{table.code}[{index}]"
    labels = [*degree, *(target_label(n) for n in table.names[1:])]
    return [emit.finish(term, expr, labels, comment=f"embedding into {' '.join(op.outputs)}",
                        fallback="embedded")]


def _embedding_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.EmbeddingOp,
                       inputs: Sequence[Value], outputs: Sequence[Value],
                       grads: Sequence[Value]) -> Gradients:
    """`dE[v, m] = sum over p with T[p] = v of dY[p, m]`: the gradient scatter-added into the
    rows of the table through the same indices (`scatter_add`); the indices get none."""
    (indices,), (gradient,) = inputs, grads
    table = term.params[0].array
    vocabulary = next(a for a in table.shape.axes if a.name not in op.outputs)
    return Gradients([None], [scatter_adjoint(rev, gradient, indices, vocabulary, table)])


EMBEDDING = declare(Declaration(
    node=ir.EmbeddingOp, reverse=_embedding_reverse,
    surfaces=(Surface("embedding", "look up rows of a table by an index of datatype N[v]",
                      "embedding[v -> m](T, E)", _embedding_typing),),
    glyph=Box("card", _embedding_caption, caption_size=16.0, min_width=34.0, min_height=34.0,
              caption_dx=0.06),
    overview=_embedding_overview, roles=_embedding_roles, lower=_embedding_lower,
    cost=free, symmetry=entrywise))
