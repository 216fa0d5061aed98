"""Definitions used as operations (`CallOp`, with a batch lift over any extra axes), and
`scan`, which runs a step definition along an axis, carrying state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Reject, Value, array, port, shape
from ncd.diagnostics import Note, did_you_mean
from ncd.elision import elide
from ncd.sizes import from_ir

from .arguments import bracket_axes, option_error
from .declaration import (
    Box,
    Caption,
    Declaration,
    Gradients,
    Surface,
    Unsupported,
    declare,
    declare_surface,
    no_parameters,
)
from .facts import (
    Break,
    Carried,
    Carry,
    Cost,
    CostSizes,
    SymmetryCalls,
    Verdict,
    degree_entries,
)
from .lowering import Emitter, Label, Submodule, TensorCode, degree_label, target_label

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


# ---------------------------------------------------------------------------------------
# definitions as operations
# ---------------------------------------------------------------------------------------


def uses_batchnorm(builder: DefinitionBuilder, definition: ir.Definition) -> bool:
    """Whether `definition`, or a definition it calls, normalises with batch statistics."""
    for term in ir.walk(definition.body):
        if isinstance(term, ir.Broadcasted):
            if isinstance(term.op, ir.BatchNormOp):
                return True
            if isinstance(term.op, ir.CallOp):
                called = builder.ctx.definitions.get(term.op.definition)
                if called is not None and uses_batchnorm(builder, called):
                    return True
    return False


def lifted_call(builder: DefinitionBuilder, definition: ir.Definition,
                args: Sequence[tuple[ir.ArrayType, ir.Span, str | None]], span: ir.Span,
                instance: str, names: Sequence[str | None], each: s.Ident | None = None
                ) -> tuple[ir.Broadcasted, list[ir.ArrayType]]:
    """`definition` applied to arrays that may carry extra axes: those are a batch lift.
    With `each`, every index of that lifted axis owns its own copy of the parameters."""
    ctx = builder.ctx
    if len(args) != len(definition.inputs):
        raise ctx.error("E303", f"`{definition.name}` takes {len(definition.inputs)} arrays, "
                        f"not {len(args)}", span,
                        notes=[Note(definition.span, "defined here")])
    extra: dict[str, tuple[ir.Axis, ir.Span]] = {}
    for (arg, arg_span, arg_name), variable in zip(args, definition.inputs, strict=True):
        what = f"argument `{variable.name}` of `{definition.name}`"
        arg_names, variable_names = arg.names, variable.array.names  # each a new tuple
        for axis in variable.array.shape.axes:
            if axis.name not in arg_names:
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
            if axis.name in variable_names:
                continue
            if axis.name in extra and from_ir(extra[axis.name][0].size) != from_ir(axis.size):
                raise ctx.error("E300", f"the batch axis `{axis.name}` has different sizes in "
                                "two arguments", arg_span,
                                notes=[Note(extra[axis.name][1], "the other one")])
            extra.setdefault(axis.name, (axis, arg_span))
    degree = [axis for axis, _ in extra.values()]
    if each is not None:
        owner = _check_each(builder, definition, each, extra)
        if owner.name not in extra:
            degree.append(owner)
    if degree and uses_batchnorm(builder, definition):
        raise ctx.error(
            "E301", f"`{definition.name}` uses `batchnorm`, so it cannot be lifted over the "
            f"extra {'axes' if len(degree) > 1 else 'axis'} "
            f"{', '.join(f'`{a.name}`' for a in degree)}: whether they join the batch "
            "statistics would be a guess", span, notes=[Note(definition.span, "defined here")],
            hint="give the definition these axes in its inputs and name them among "
            "`batchnorm`'s target axes")
    outputs: list[ir.ArrayType] = []
    for variable in definition.outputs:
        clash = [a.name for a in degree if a.name in variable.array.names]
        if clash:
            raise ctx.error("E301", f"the batch axis `{clash[0]}` is also an axis of the result "
                            f"of `{definition.name}`", span,
                            hint="rename the batch axis before the call")
        outputs.append(array(variable.array.dtype, [*degree, *variable.array.shape.axes]))
    degree_shape = shape(degree)
    # Made without validating it again (`ir.trusted`), as `DefinitionBuilder.broadcast` does.
    term = ir.trusted(
        ir.Broadcasted, dom=tuple(a for a, _, _ in args), cod=tuple(outputs), span=span,
        kind="broadcasted",
        op=ir.trusted(ir.CallOp, kind="call", definition=definition.name, instance=instance,
                      each=each.name if each is not None else None), degree=degree_shape,
        inputs=tuple(port(a, v.array.names, degree_shape, n)
                     for (a, _, n), v in zip(args, definition.inputs, strict=True)),
        params=(),
        outputs=tuple(port(a, v.array.names, degree_shape, n)
                      for a, v, n in zip(outputs, definition.outputs, names, strict=True)))
    return term, outputs


def _check_each(builder: DefinitionBuilder, definition: ir.Definition, each: s.Ident,
                extra: dict[str, tuple[ir.Axis, ir.Span]]) -> ir.Axis:
    """The axis of `f[each e](X)`: an extra axis of an argument (the call is lifted over it),
    or a declared axis that no argument has (every copy reads the same arguments); of a fixed
    size; and `f` has parameters to give each index of it."""
    ctx = builder.ctx
    consumer = next((v for v in definition.inputs if each.name in v.array.names), None)
    if consumer is not None:
        raise ctx.error(
            "E301", f"`{definition.name}` takes axis `{each.name}` itself (its input "
            f"`{consumer.name}: {consumer.array.text()}`), so the call is not lifted over it",
            each.span, notes=[Note(definition.span, "defined here")],
            hint="`each` names an axis the definition does not take: an extra axis of the "
            "argument, or a new one")
    axis = extra[each.name][0] if each.name in extra else builder.global_axis(each)
    if ir.size_value(axis.size) is None:
        raise ctx.error("E312", f"`each {each.name}` gives every index of `{each.name}` its own "
                        f"parameters, but `{each.name}` has no fixed size", each.span,
                        hint=f"declare it with a size: `axis {each.name} = 4`")
    if not _owns_parameters(builder, definition, set()):
        raise ctx.error("E312", f"`each {each.name}` gives every index its own parameters, but "
                        f"`{definition.name}` has none", each.span,
                        notes=[Note(definition.span, "defined here")],
                        hint=f"without parameters there is nothing to own: "
                        f"`{definition.name}(...)` lifts the same computation")
    return axis


def _owns_parameters(builder: DefinitionBuilder, definition: ir.Definition,
                     seen: set[str]) -> bool:
    """Whether `definition`, or a definition it calls, declares a learned parameter."""
    if definition.params:
        return True
    seen.add(definition.name)
    for term in ir.walk(definition.body):
        if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp) \
                and term.op.definition not in seen:
            callee = builder.ctx.definitions.get(term.op.definition)
            if callee is not None and _owns_parameters(builder, callee, seen):
                return True
    return False


def call_definition(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    ctx = builder.ctx
    definition = ctx.definitions[call.name.name]
    each: s.Each | None = None
    for item in call.items or ():
        if isinstance(item, s.Each) and each is None:
            each = item
            continue
        raise option_error(builder, f"`{definition.name}` is a definition: its brackets take "
                           "only `each AXIS`", item.span,
                           hint=f"for per-index parameters: `{definition.name}[each e](X)`")
    values = [builder.single(a) for a in call.args]
    instance = builder.instance_name(call.name.name)
    names = [name if len(definition.outputs) == 1 else None] * len(definition.outputs)
    out_names = [n or builder.fresh_name(definition.name) for n in names]
    term, outputs = lifted_call(builder, definition,
                                [(v.array, a.span, v.name) for v, a in zip(values, call.args,
                                                                           strict=True)],
                                call.span, instance, out_names,
                                each.axis if each is not None else None)
    out_values = [Value(a, n, call.span) for a, n in zip(outputs, out_names, strict=True)]
    builder.add_step(term, values, out_values)
    return out_values


def _call_caption(op: ir.CallOp, term: ir.Broadcasted) -> Caption:
    if op.each is not None:
        return Caption("plain", elide(op.definition), subscript=f"each {op.each}")
    return Caption("plain", elide(op.definition))


def _call_deck(op: ir.CallOp) -> bool:
    return op.each is not None


def _call_overview(op: ir.CallOp) -> tuple[str, str]:
    each = f" [each {op.each}]" if op.each is not None else ""
    return elide(op.definition) + each, "box3d"


def _passed_axes(emit: Emitter, port: ir.Port, variable: ir.Variable) -> list[str]:
    """The caller's axes that a call's port passes for the callee's `variable`: the port's
    targets, which the elaborator lists in the order of the callee's declared axes (target j
    is the callee's axis j; docs/ir.md)."""
    if len(port.targets) != len(variable.array.shape.axes):
        raise emit.error(f"a call passes axes {list(port.targets)} for "
                         f"{list(variable.array.names)}")
    return list(port.targets)


@dataclass(frozen=True)
class _PreparedCall:
    """A call's submodule and arguments, read through their ports, before anything runs."""

    module: Submodule
    each: int | None  # the degree index of `each`, when each index owns its parameters
    degree: list[Label]  # the lifted axes, the owning one last
    batched: TensorCode | None  # an argument with batch dims (the others take its leading dims)
    arguments: list[str]
    sliced: list[int | None]  # per argument: the dim each copy reads its slice of


def _prepare_call(emit: Emitter, term: ir.Broadcasted, op: ir.CallOp,
                  inputs: list[TensorCode]) -> _PreparedCall:
    each = term.degree.names.index(op.each) if op.each is not None else None
    module = emit.submodule(op, term.degree.axes[each].size if each is not None else None)
    callee = module.definition
    degree = [degree_label(i) for i in range(len(term.degree.axes)) if i != each]
    if each is not None:
        # The owning axis goes last of the lifted ones, just before the callee's own axes:
        # each copy reads its slice there, and the results stack there.
        degree.append(degree_label(each))
    batched = next((v for v in inputs if v.batched), None)
    arguments = []
    sliced: list[int | None] = []
    for value, in_port, variable in zip(inputs, term.inputs, callee.inputs, strict=True):
        targets = _passed_axes(emit, in_port, variable)
        order = degree + [target_label(t) for t in targets]
        if each is not None and op.each not in value.array.names:
            # Every copy reads this argument whole: no need to spread it along the axis.
            order.remove(degree_label(each))
            sliced.append(None)
        else:
            sliced.append(-len(targets) - 1)
        leading = batched if (batched is not None and not value.batched) else None
        arguments.append(emit.normalized(term, value, in_port, order, "expand", leading))
    return _PreparedCall(module, each, degree, batched, arguments, sliced)


@dataclass(frozen=True)
class EachCopies:
    """A call with parameters for each index of a lifted axis, to be run copy by copy
    (`copy_call`) by a lowering that takes its one output apart along that axis."""

    module: str
    """The `nn.ModuleList` of the copies."""
    arguments: tuple[tuple[str, int | None], ...]
    """Per argument: its code, and the dim each copy reads its slice of (None: read whole)."""
    labels: tuple[Label, ...]
    """The labels of the dims of one copy's output: the lifted axes but the owning one, then
    the callee's own axes."""
    order: tuple[Label, ...]
    """The same labels in the order of the call's output array (the owning axis left out)."""
    batched: bool
    """Whether a copy's output has batch dims."""


def each_copies(emit: Emitter, term: ir.Broadcasted,
                inputs: list[TensorCode]) -> EachCopies | list[TensorCode]:
    """The copies of a call `f[each e](X)` with one output; or, when that output is not simply
    the copies' outputs side by side (one computed from parameters alone is tiled), the call
    lowered as written (its outputs)."""
    op = term.op
    assert isinstance(op, ir.CallOp) and op.each is not None
    prepared = _prepare_call(emit, term, op, inputs)
    (variable,), (out_port,) = prepared.module.definition.outputs, term.outputs
    owning = degree_label(term.degree.names.index(op.each))
    labels = [label for label in prepared.degree if label != owning] + [
        target_label(t) for t in _passed_axes(emit, out_port, variable)]
    if not prepared.module.outputs_batched[0] and \
            (len(prepared.degree) > 1 or prepared.batched is not None):
        return _lower_prepared(emit, term, op, prepared)
    order = [label for label in emit.output_labels(out_port) if label != owning]
    return EachCopies(prepared.module.code,
                      tuple(zip(prepared.arguments, prepared.sliced, strict=True)),
                      tuple(labels), tuple(order),
                      prepared.batched is not None or prepared.module.outputs_batched[0])


def copy_call(emit: Emitter, copies: EachCopies, index: str) -> str:
    """Copy `index` of the call on its slices of the arguments, its output's dims in
    `copies.order`."""
    passed = [code if dim is None else f"{code}.select({dim}, {index})"
              for code, dim in copies.arguments]
    call = f"{copies.module}[{index}]({', '.join(passed)})"
    return emit.permute(call, copies.labels, copies.order)


def _call_lower(emit: Emitter, term: ir.Broadcasted, op: ir.CallOp,
                inputs: list[TensorCode]) -> list[TensorCode]:
    return _lower_prepared(emit, term, op, _prepare_call(emit, term, op, inputs))


def _lower_prepared(emit: Emitter, term: ir.Broadcasted, op: ir.CallOp,
                    prepared: _PreparedCall) -> list[TensorCode]:
    module, each, degree, batched = \
        prepared.module, prepared.each, prepared.degree, prepared.batched
    callee = module.definition
    arguments, sliced = prepared.arguments, prepared.sliced
    lift = f", lifted over {' '.join(term.degree.names)}" if term.degree.axes else ""
    comment = f"{op.definition}{lift}"
    plans: list[tuple[str, list[Label], bool, bool]] = []
    for index, (variable, out_port) in enumerate(zip(callee.outputs, term.outputs,
                                                     strict=True)):
        targets = _passed_axes(emit, out_port, variable)
        labels = degree + [target_label(t) for t in targets]
        tile = bool(term.degree.axes) and not module.outputs_batched[index] and (
            each is None or len(degree) > 1 or batched is not None)
        direct = not tile and labels == emit.output_labels(out_port)
        hint = out_port.name if direct and out_port.name else f"{op.instance}_result"
        plans.append((emit.fresh(hint), labels, tile, direct))
    if each is None:
        call = f"{module.code}({', '.join(arguments)})"
        targets_text = ", ".join(name for name, *_ in plans) or "_"
        note = comment + emit.source_note(term.span)
        if len(plans) > 1 and emit.too_long(f"{targets_text} = {module.code}("):
            # as a formatter lays it out: the targets one per line in parentheses
            emit.statement("(", note)
            for name, *_ in plans:
                emit.statement(f"    {name},")
            emit.statement(f") = {call}")
        else:
            emit.statement(f"{targets_text} = {call}", note)
    else:
        _each_call(emit, term, op, module.code, list(zip(arguments, sliced, strict=True)),
                   [(name, len(variable.array.shape.axes)) for (name, *_), variable in
                    zip(plans, callee.outputs, strict=True)], comment)
    results: list[TensorCode] = []
    for index, (raw, labels, tile, direct) in enumerate(plans):
        output_batched = batched is not None or module.outputs_batched[index]
        if direct:
            results.append(TensorCode(raw, term.cod[index], output_batched))
            continue
        expr = raw
        if tile:
            # The callee computed this output from its parameters alone: tile it (over the
            # lifted axes other than the owning one, which the stacked copies already give).
            lead = (emit.leading_shape(batched) + " + ") if batched else ""
            sizes = emit.tuple_text([emit.size(a.size) for i, a in enumerate(term.degree.axes)
                                     if i != each])
            expr = f"{raw}.expand({lead}{sizes} + {raw}.shape)"
        results.append(emit.finish(term, expr, labels, index, batched=output_batched,
                                   fallback="result"))
    return results


def _call_cost(op: ir.CallOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """The called definition's cost, once per element of the batch lift."""
    return sizes.call(op.definition).times(degree_entries(sizes, term))


def _call_symmetry(op: ir.CallOp, term: ir.Broadcasted, carried: Carried,
                   calls: SymmetryCalls) -> Verdict:
    """What the called definition does (target j of a port is the callee's axis j)."""
    positions = [frozenset(j for j, name in enumerate(port.targets) if name in axes)
                 for port, axes in zip(term.inputs, carried.inputs, strict=True)]
    if not any(positions):
        return Carry(tuple(frozenset() for _ in term.outputs))
    result = calls.call(op.definition, positions)
    if isinstance(result, Break):
        return Break(f"in {op.definition}: {result.reason}")
    return Carry(tuple(frozenset(port.targets[j] for j in kept)
                       for port, kept in zip(term.outputs, result, strict=True)))


def _each_call(emit: Emitter, term: ir.Broadcasted, op: ir.CallOp, copies: str,
               arguments: Sequence[tuple[str, int | None]], outputs: Sequence[tuple[str, int]],
               comment: str) -> None:
    """`f[each e](X)`: copy i of the `nn.ModuleList` reads slice i of `e` of the arguments
    that have it (the dim just before the callee's own axes) and the others whole; its
    results stack there."""
    copy = emit.fresh("copy")
    streams = [copies]
    names = [copy]
    passed = []
    for code, dim in arguments:
        if dim is None:
            passed.append(code)
            continue
        piece = emit.fresh("piece")
        streams.append(f"{code}.unbind({dim})")
        names.append(piece)
        passed.append(piece)
    source = streams[0] if len(streams) == 1 else f"zip({', '.join(streams)}, strict=True)"
    per_index = emit.fresh(f"{op.instance}_per_{op.each}")
    emit.statement(f"{per_index} = [{copy}({', '.join(passed)}) for {', '.join(names)} in "
                   f"{source}]",
                   f"{comment}, its own parameters for each {op.each}"
                   + emit.source_note(term.span))
    for position, (name, rank) in enumerate(outputs):
        results = per_index if len(outputs) == 1 else f"[r[{position}] for r in {per_index}]"
        emit.statement(f"{name} = torch.stack({results}, dim={-rank - 1})")


def call_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.CallOp,
                  inputs: Sequence[Value], outputs: Sequence[Value],
                  grads: Sequence[Value]) -> Gradients:
    """A call of the callee's backward definition at the same call site (the same instance,
    so the same parameters), lifted over the same axes: it reads the call's inputs and the
    gradients of its outputs, and gives the gradients of its real inputs and of the callee's
    parameters (summed over the lifted axes, which share them). A call with parameters for
    each index of `e` (`f[each e](X)`) is reversed by the same call with `each e`: each index's
    copy of the backward definition reads that index's parameters, and the gradients of the
    parameters are summed over the other lifted axes only, then taken index by index (copy
    `i`'s parameter `instance.i.W`, as the generated module keys it)."""
    backward = rev.backward_of(op.definition)
    copies = _each_copies(term, op)
    for new, old in backward.aliases:
        for prefix in _site_prefixes(rev.site(op.instance), copies):
            rev.aliases[f"{prefix}.{new}"] = f"{prefix}.{old}"
    callee = rev.program.definition(op.definition)
    degree = list(term.degree.axes)
    _refuse_shadowed_lift(term, op, callee, backward.definition)

    def lifted(array_type: ir.ArrayType) -> ir.ArrayType:
        """The array with the lifted axes first, as a port of this call tiles it."""
        return array(array_type.dtype, [*degree, *array_type.shape.axes])

    reads = [(v, p.targets) for v, p in zip(inputs, term.inputs, strict=True)]
    reads += [(g, p.targets) for g, p, o in zip(grads, term.outputs, callee.outputs, strict=True)
              if o.array.dtype.kind == "R"]
    made: list[tuple[ir.ArrayType, Sequence[str], str]] = []
    real = [(v, p) for v, p in zip(inputs, term.inputs, strict=True)
            if v.array.dtype.kind == "R"]
    for value, in_port in real:
        tiled = value.array if set(term.degree.names) <= set(in_port.tiling) else \
            lifted(array(value.array.dtype, [a for a in value.array.shape.axes
                                             if a.name in in_port.targets]))
        made.append((tiled, in_port.targets, f"d{value.name}"))
    paths = backward.gradient_of[len(real):]
    for path, variable in zip(paths, backward.definition.outputs[len(real):], strict=True):
        made.append((lifted(variable.array), variable.array.names, f"d{path}"))
    call = op.model_copy(update={"definition": backward.definition.name})
    results = rev.op(call, reads, made, degree=degree)
    d_inputs: list[Value | None] = []
    found = iter(results[:len(real)])
    for value in inputs:
        d_inputs.append(rev.sum_to(next(found), value.array)
                        if value.array.dtype.kind == "R" else None)
    called: dict[str, Value] = {}
    variables = backward.definition.outputs[len(real):]
    if copies is None:
        for path, variable, gradient in zip(paths, variables, results[len(real):],
                                            strict=True):
            full = f"{rev.site(op.instance)}.{path}"
            rev.called_params.setdefault(full, variable.array)
            called[full] = rev.sum_to(gradient, variable.array)
        return Gradients(d_inputs, called=called)
    owner, count = copies
    stacked = [rev.sum_to(gradient, array(variable.array.dtype,
                                          [owner, *variable.array.shape.axes]))
               for variable, gradient in zip(variables, results[len(real):], strict=True)]
    for index in range(count):  # copy by copy, as the module lists its parameters
        for path, variable, per_index in zip(paths, variables, stacked, strict=True):
            full = f"{rev.site(op.instance)}.{index}.{path}"
            rev.called_params.setdefault(full, variable.array)
            called[full] = rev.select(per_index, owner.name, index)
    return Gradients(d_inputs, called=called)


def _refuse_shadowed_lift(term: ir.Broadcasted, op: ir.CallOp, callee: ir.Definition,
                         backward: ir.Definition) -> None:
    """A call lifted over an axis that an input the call does not lift (or a parameter of the
    callee) also has, under the same name: its gradient would need the lifted axis twice
    (once per copy, once as its own), which an array cannot hold. Reported (E320) rather
    than built."""
    lifted = set(term.degree.names)
    shadowed = [(variable.name, name) for variable, in_port in zip(callee.inputs, term.inputs,
                                                                    strict=True)
                if variable.array.dtype.kind == "R" and not lifted <= set(in_port.tiling)
                for name in variable.array.names if name in lifted]
    shadowed += [(variable.name, name) for variable in backward.outputs
                 for name in variable.array.names if name in lifted]
    if shadowed:
        owner, name = shadowed[0]
        raise Unsupported(
            f"the call of `{op.definition}` is lifted over `{name}`, an axis that "
            f"`{owner}` of `{op.definition}` has as its own", term.span,
            f"the gradient of `{owner}` would need `{name}` twice; give `{op.definition}`'s "
            "axis another name")


def _each_copies(term: ir.Broadcasted, op: ir.CallOp) -> tuple[ir.Axis, int] | None:
    """For `f[each e](X)`: the axis `e` and its size (the number of copies); else None."""
    if op.each is None:
        return None
    owner = term.degree.axis(op.each)
    count = ir.size_value(owner.size)
    assert count is not None, "the checker requires a fixed size for `each`"
    return owner, count


def _site_prefixes(instance: str, copies: tuple[ir.Axis, int] | None) -> list[str]:
    """The state-dict prefixes of a call site's parameters: `instance`, or one per copy
    (`instance.0`, `instance.1`, ...) for a call with parameters for each index."""
    if copies is None:
        return [instance]
    return [f"{instance}.{index}" for index in range(copies[1])]


CALL = declare(Declaration(
    node=ir.CallOp, reverse=call_reverse, surfaces=(),
    glyph=Box("call_box", _call_caption, caption_size=12.0, min_width=30.0, min_height=26.0,
              deck=_call_deck),
    overview=_call_overview, roles=no_parameters, lower=_call_lower,
    cost=_call_cost, symmetry=_call_symmetry))


# ---------------------------------------------------------------------------------------
# scan: a recurrence (an `ir.Scan` term, not an operator of its own)
# ---------------------------------------------------------------------------------------


def definition_argument(builder: DefinitionBuilder, call: s.Call, code: str, message: str,
                        hint: str | None = None) -> ir.Definition:
    """The definition named by the first argument of `scan` or `machine`: a failed one is
    not reported again; anything else is error `code` (with a did-you-mean for a name)."""
    ctx = builder.ctx
    if call.args and isinstance(call.args[0], s.Var) and call.args[0].name in ctx.failed:
        raise Reject(call.args[0].name)
    if not call.args or not isinstance(call.args[0], s.Var) or \
            call.args[0].name not in ctx.definitions:
        raise ctx.error(code, message, call.args[0].span if call.args else call.span,
                        hint=did_you_mean(call.args[0].name, ctx.definitions)
                        if call.args and isinstance(call.args[0], s.Var) else hint)
    return ctx.definitions[call.args[0].name]


def _scan_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    ctx = builder.ctx
    axes = bracket_axes(builder, call)
    if len(axes) != 1:
        raise option_error(builder, "`scan` runs along one axis: `scan[t](cell, H0, X)`",
                           call.name.span)
    step = definition_argument(builder, call, "E311",
                               "the first argument of `scan` is the step definition")
    axis_name = axes[0].name
    values = [builder.single(a) for a in call.args[1:]]
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
    step_args: list[tuple[ir.ArrayType, ir.Span, str | None]] = [
        (v.array, a.span, v.name)
        for v, a in zip(values[:carries], call.args[1:1 + carries], strict=True)]
    step_args += [(sl, a.span, None) for sl, a in zip(slices, call.args[1 + carries:],
                                                      strict=True)]
    if len(step.outputs) < carries:
        raise ctx.error("E311", f"`{step.name}` gives {len(step.outputs)} arrays but there are "
                        f"{carries} states to carry", call.span)
    instance = builder.instance_name(step.name)
    step_names = [f"{step.name}_out{i}" for i in range(len(step.outputs))]
    term, step_outputs = lifted_call(builder, step, step_args, call.span, instance, step_names)
    for index in range(carries):
        # Axes align by name: a state may list its axes in another order than the step.
        if not same_axes(step_outputs[index], values[index].array):
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


def same_axes(a: ir.ArrayType, b: ir.ArrayType) -> bool:
    """The same datatype and the same axes by name and size, in any order."""
    if a.dtype.kind != b.dtype.kind or sorted(a.names) != sorted(b.names):
        return False
    if (a.dtype.bound is None) != (b.dtype.bound is None) or (
            a.dtype.bound is not None and b.dtype.bound is not None
            and from_ir(a.dtype.bound) != from_ir(b.dtype.bound)):
        return False
    return all(from_ir(axis.size) == from_ir(b.shape.axis(axis.name).size)
               for axis in a.shape.axes)


SCAN = declare_surface(Surface(
    "scan", "run a step definition along an axis, carrying state: carry[l+1], out[l] = "
    "step(carry[l], x[l])", "scan[t](cell, H0, X)", _scan_typing))
