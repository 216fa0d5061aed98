"""Structure: operators that move entries between axes without arithmetic: `concat`,
`split`, `pad` (with a constant), `rename`, `reshape`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.elision import elide, spaced
from ncd.sizes import Size, from_ir

from .arguments import (
    arguments,
    bracket_arrows,
    keywords,
    new_axis,
    option_error,
    reject_items,
    replace_axes,
)
from .declaration import Box, Caption, Declaration, Gradients, Surface, declare, no_parameters
from .facts import Carried, Carry, SymmetryCalls, Verdict, axis_list, free, positional, view
from .lowering import Emitter, TensorCode, float_literal, slice_text, target_label

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


# ---------------------------------------------------------------------------------------
# concat
# ---------------------------------------------------------------------------------------


def _concat_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrow = bracket_arrows(builder, call)[0]
    if len(arrow.right) != 1 or len(arrow.left) < 2:
        raise option_error(builder, "`concat` joins two or more axes into one: "
                           "`concat[a b -> c](A, B)`", arrow.span)
    if len(call.args) != len(arrow.left):
        raise builder.ctx.error("E303", f"`concat` names {len(arrow.left)} axes, so it takes "
                                f"{len(arrow.left)} arrays, not {len(call.args)}", call.span)
    values = [builder.single(a) for a in call.args]
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
    out_axis = new_axis(builder, arrow.right[0], total)
    out_array = array(values[0].array.dtype, replace_axes(values[0].array.shape.axes,
                                                          [arrow.left[0].name], [out_axis]))
    op = ir.ConcatOp(inputs=tuple(i.name for i in arrow.left), output=out_axis.name)
    return builder.broadcast(op, [(v, (i.name,)) for v, i in zip(values, arrow.left,
                                                                   strict=True)],
                             [(out_array, (out_axis.name,), name)], call.span)


def _concat_overview(op: ir.ConcatOp) -> tuple[str, str]:
    return f"concat {spaced(op.inputs)} → {elide(op.output)}", "box"


def _concat_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ConcatOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    out = emit.output_labels(term.outputs[0])
    position = out.index(target_label(op.output))
    batched = next((v for v in inputs if v.batched), None)
    parts = []
    for value, port, axis in zip(inputs, term.inputs, op.inputs, strict=True):
        order = list(out)
        order[position] = target_label(axis)
        leading = batched if (batched is not None and not value.batched) else None
        parts.append(emit.normalized(term, value, port, order, "expand", leading))
    expr = f"torch.cat({emit.tuple_text(parts)}, dim={position - len(out)})"
    return [emit.finish(term, expr, out, comment=f"concat {' '.join(op.inputs)} -> {op.output}",
                        batched=batched is not None, fallback="joined")]


def _concat_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ConcatOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """The reverse of a concat is a split into the same pieces."""
    return Gradients(rev.inverse(ir.SplitOp(input=op.output, outputs=op.inputs), term, grads))


CONCAT = declare(Declaration(
    node=ir.ConcatOp, reverse=_concat_reverse,
    surfaces=(Surface("concat", "join arrays end to end along one axis each",
                      "concat[a b -> c](A, B)", _concat_typing),),
    glyph=Box("funnel", min_width=16.0, min_height=22.0),
    overview=_concat_overview, roles=no_parameters, lower=_concat_lower,
    cost=free,
    symmetry=positional(lambda op, term, names: f"concat joins arrays end to end along "
                        f"{axis_list(names)}: the pieces keep their places")))


# ---------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------


def _split_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrow = bracket_arrows(builder, call)[0]
    if len(arrow.left) != 1 or len(arrow.right) < 2:
        raise option_error(builder, "`split` cuts one axis into two or more: "
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
    outputs = [(array(value.array.dtype, replace_axes(value.array.shape.axes, [source.name],
                                                      [piece])), (piece.name,), None)
               for piece in pieces]
    op = ir.SplitOp(input=source.name, outputs=tuple(p.name for p in pieces))
    degree = [a for a in value.array.shape.axes if a.name != source.name]
    return builder.broadcast(op, [(value, (source.name,))], outputs, call.span, degree=degree)


def _split_overview(op: ir.SplitOp) -> tuple[str, str]:
    return f"split {elide(op.input)} → {spaced(op.outputs)}", "box"


def _split_lower(emit: Emitter, term: ir.Broadcasted, op: ir.SplitOp,
                 inputs: list[TensorCode]) -> list[TensorCode]:
    first = emit.output_labels(term.outputs[0])
    position = next(i for i, label in enumerate(first) if label == target_label(op.outputs[0]))
    order = list(first)
    order[position] = target_label(op.input)
    source = emit.normalized(term, inputs[0], term.inputs[0], order, "expand")
    if source != inputs[0].code:  # a view, not the value's own name: named once, sliced after
        source = emit.assign(f"{inputs[0].code}_whole", source, fallback="whole")
    results = []
    start: list[ir.SizeExpr] = []
    for index, axis in enumerate(op.outputs):
        port = term.outputs[index]
        size = port.array.shape.axis(axis).size
        begin = emit.size(ir.SizeAdd(terms=(ir.SizeConst(value=0), *start)))
        end = emit.size(ir.SizeAdd(terms=(ir.SizeConst(value=0), *start, size)))
        slots = [":"] * len(order)
        slots[position] = slice_text("" if begin == "0" else begin, end)
        labels = list(order)
        labels[position] = target_label(axis)
        results.append(emit.finish(term, f"{source}[..., {', '.join(slots)}]", labels,
                                   index=index, comment=f"part {axis} of {op.input}",
                                   batched=inputs[0].batched, fallback="part"))
        start.append(size)
    return results


def _split_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.SplitOp,
                   inputs: Sequence[Value], outputs: Sequence[Value],
                   grads: Sequence[Value]) -> Gradients:
    """The reverse of a split is a concat of the pieces' gradients."""
    return Gradients(rev.inverse(ir.ConcatOp(inputs=op.outputs, output=op.input), term, grads))


SPLIT = declare(Declaration(
    node=ir.SplitOp, reverse=_split_reverse,
    surfaces=(Surface("split", "cut one axis into consecutive pieces, one array each",
                      "split[c -> a b](X)", _split_typing),),
    glyph=Box("fan", min_width=16.0, min_height=22.0),
    overview=_split_overview, roles=no_parameters, lower=_split_lower,
    cost=view,
    symmetry=positional(lambda op, term, names: f"split cuts {axis_list(names)} into "
                        "consecutive pieces by position")))


# ---------------------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------------------


def _pad_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow, s.Keyword))
    arrow = bracket_arrows(builder, call)[0]
    if len(arrow.left) != 1 or len(arrow.right) != 1:
        raise option_error(builder, "`pad` extends one axis into one new axis: "
                           "`pad[x -> xp, before=1, after=1](X)`", arrow.span)
    options = keywords(builder, call, ["before", "after", "value"])
    amounts = {}
    for side in ("before", "after"):
        amount = options.get(side, 0.0)
        if amount < 0 or not float(amount).is_integer():
            raise option_error(builder, f"`{side}` is a number of entries (a whole number >= 0), "
                               f"not {amount:g}", call.name.span)
        amounts[side] = int(amount)
    if amounts["before"] + amounts["after"] == 0:
        raise option_error(builder, "`pad` needs `before` or `after`: "
                           "`pad[x -> xp, before=1, after=1](X)`", call.name.span)
    (value,), _ = arguments(builder, call, 1)
    builder.require_reals(value, call.args[0].span, "`pad`")
    builder.require_axes(value, arrow.left, "`pad`")
    source = value.array.shape.axis(arrow.left[0].name)
    if arrow.right[0].name in value.array.names:
        raise builder.ctx.error("E301", f"`{value.name}` already has axis `{arrow.right[0].name}`",
                                arrow.right[0].span)
    grown = from_ir(source.size) + amounts["before"] + amounts["after"]
    out_axis = new_axis(builder, arrow.right[0], grown)
    out_array = array(value.array.dtype, replace_axes(value.array.shape.axes, [source.name],
                                                      [out_axis]))
    op = ir.PadOp(input=source.name, output=out_axis.name, before=amounts["before"],
                  after=amounts["after"], value=options.get("value", 0.0))
    return builder.broadcast(op, [(value, (source.name,))], [(out_array, (out_axis.name,), name)],
                             call.span)


def _pad_caption(op: ir.PadOp, term: ir.Broadcasted) -> Caption:
    return Caption("plain", f"pad {op.before}, {op.after}")


def _pad_overview(op: ir.PadOp) -> tuple[str, str]:
    return f"pad {elide(op.input)} → {elide(op.output)} ({op.before}, {op.after})", "box"


def _pad_lower(emit: Emitter, term: ir.Broadcasted, op: ir.PadOp,
               inputs: list[TensorCode]) -> list[TensorCode]:
    out = emit.output_labels(term.outputs[0])
    position = out.index(target_label(op.output))
    order = list(out)
    order[position] = target_label(op.input)
    expr = emit.normalized(term, inputs[0], term.inputs[0], order, "expand")
    # F.pad lists (before, after) pairs from the last dimension backwards.
    widths = ["0, 0"] * (len(out) - 1 - position) + [f"{op.before}, {op.after}"]
    expr = (f"{emit.functional_call('pad')}({expr}, ({', '.join(widths)}), "
            f"value={float_literal(op.value)})")
    return [emit.finish(term, expr, out, comment=f"pad {op.input} -> {op.output} by "
                        f"{op.before}, {op.after}", batched=inputs[0].batched,
                        fallback="padded")]


def _pad_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.PadOp,
                 inputs: Sequence[Value], outputs: Sequence[Value],
                 grads: Sequence[Value]) -> Gradients:
    """The reverse of a pad is a slice: a split of the padded axis into the margins and the
    original, of which the original is kept (the margins hold constants: no gradient)."""
    (x,), (padded,) = inputs, outputs
    inner = term.inputs[0]
    axis = padded.array.shape.axis(op.output)
    taken = set(x.array.names) | set(padded.array.names)
    pieces: list[ir.Port] = []
    names: list[str] = []
    for margin, size in (("before", op.before), ("input", 0), ("after", op.after)):
        if margin == "input":
            pieces.append(inner)
            names.append(op.input)
            continue
        if size == 0:
            continue
        name = f"{axis.name}_{margin}"
        while name in taken:
            name += "_"
        piece_axis = ir.Axis(name=name, size=ir.SizeConst(value=size))
        axes = [piece_axis if a.name == op.input else a for a in x.array.shape.axes]
        piece = array(ir.REALS, axes)
        targets = tuple(name if t == op.input else t for t in inner.targets)
        pieces.append(inner.model_copy(update={"array": piece, "targets": targets,
                                               "name": name}))
        names.append(name)
    if len(pieces) == 1:
        return Gradients([rev.rename(grads[0], {op.output: op.input})])
    made = rev.inverse(ir.SplitOp(input=op.output, outputs=tuple(names)), term, grads, pieces)
    return Gradients([made[names.index(op.input)]])


PAD = declare(Declaration(
    node=ir.PadOp, reverse=_pad_reverse,
    surfaces=(Surface("pad", "extend an axis with constant entries before and after it (zero "
                      "padding)", "pad[x -> xp, before=1, after=1](X)", _pad_typing),),
    glyph=Box("fan", _pad_caption, caption_size=11.0, min_width=30.0, min_height=22.0),
    overview=_pad_overview, roles=no_parameters, lower=_pad_lower,
    cost=free,
    symmetry=positional(lambda op, term, names: f"pad adds entries at the ends of "
                        f"{axis_list(names)}")))


# ---------------------------------------------------------------------------------------
# rename
# ---------------------------------------------------------------------------------------


def _rename_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    pairs: list[tuple[s.Ident, s.Ident]] = []
    for arrow in bracket_arrows(builder, call):
        if len(arrow.left) != len(arrow.right):
            raise option_error(builder, "`rename` pairs each old axis with one new name",
                               arrow.span)
        pairs.extend(zip(arrow.left, arrow.right, strict=True))
    (value,), _ = arguments(builder, call, 1)
    builder.require_axes(value, [old for old, _ in pairs], "`rename`")
    mapping = {old.name: new for old, new in pairs}
    axes = []
    for axis in value.array.shape.axes:
        if axis.name in mapping:
            axes.append(new_axis(builder, mapping[axis.name], from_ir(axis.size)))
        else:
            axes.append(axis)
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise option_error(builder, "after renaming, two axes would share a name", call.span)
    old_names = [old.name for old, _ in pairs]
    new_names = [new.name for _, new in pairs]
    op = ir.RenameOp(mapping=tuple((o.name, n.name) for o, n in pairs))
    return builder.broadcast(op, [(value, old_names)],
                             [(array(value.array.dtype, axes), new_names, name)], call.span)


def _rename_overview(op: ir.RenameOp) -> tuple[str, str]:
    return "rename " + ", ".join(f"{elide(a)} → {elide(b)}" for a, b in op.mapping), "box"


def _rename_lower(emit: Emitter, term: ir.Broadcasted, op: ir.RenameOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    old_of_new = {target_label(new): target_label(old) for old, new in op.mapping}
    out = emit.output_labels(term.outputs[0])
    order = [old_of_new.get(label, label) for label in out]
    expr = emit.normalized(term, inputs[0], term.inputs[0], order, "expand")
    text = ", ".join(f"{old} -> {new}" for old, new in op.mapping)
    return [emit.finish(term, expr, out, comment=f"rename {text}", batched=inputs[0].batched,
                        fallback="renamed")]


def _rename_symmetry(op: ir.RenameOp, term: ir.Broadcasted, carried: Carried,
                     calls: SymmetryCalls) -> Verdict:
    """The entries stay where they are; the axes that carry the permutation change names."""
    mapping = dict(op.mapping)
    return Carry((frozenset(mapping.get(name, name) for name in carried.any),))


def _rename_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.RenameOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """The reverse of a renaming is the inverse renaming."""
    back = ir.RenameOp(mapping=tuple((new, old) for old, new in op.mapping))
    return Gradients(rev.inverse(back, term, grads))


RENAME = declare(Declaration(
    node=ir.RenameOp, reverse=_rename_reverse,
    surfaces=(Surface("rename", "give axes new names (sizes stay)", "rename[x -> y](X)",
                      _rename_typing),),
    glyph=Box("rename_tag", min_width=18.0, min_height=18.0),
    overview=_rename_overview, roles=no_parameters, lower=_rename_lower,
    cost=view,
    symmetry=_rename_symmetry))


# ---------------------------------------------------------------------------------------
# reshape
# ---------------------------------------------------------------------------------------


def _reshape_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrow = bracket_arrows(builder, call)[0]
    (value,), _ = arguments(builder, call, 1)
    builder.require_axes(value, arrow.left, "`reshape`")
    in_names = [i.name for i in arrow.left]
    total = Size.const(1)
    for ident in arrow.left:
        total = total * from_ir(value.array.shape.axis(ident.name).size)
    if len(arrow.right) == 1:
        out_axes = [new_axis(builder, arrow.right[0], total)]
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
    out_array = array(value.array.dtype, replace_axes(value.array.shape.axes, in_names, out_axes))
    op = ir.ReshapeOp(inputs=tuple(in_names), outputs=tuple(a.name for a in out_axes))
    return builder.broadcast(op, [(value, in_names)],
                             [(out_array, [a.name for a in out_axes], name)], call.span)


def _reshape_overview(op: ir.ReshapeOp) -> tuple[str, str]:
    return f"reshape {spaced(op.inputs)} → {spaced(op.outputs)}", "box"


def _reshape_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ReshapeOp,
                   inputs: list[TensorCode]) -> list[TensorCode]:
    out = emit.output_labels(term.outputs[0])
    outputs = [target_label(a) for a in op.outputs]
    # Merge or split in place where the new axes sit in the output; else at the end.
    position = next((i for i in range(len(out) - len(outputs) + 1)
                     if out[i:i + len(outputs)] == outputs), None)
    if position is None:
        out_work = [label for label in out if label not in outputs] + outputs
        position = len(out_work) - len(outputs)
    else:
        out_work = list(out)
    order = (out_work[:position] + [target_label(a) for a in op.inputs]
             + out_work[position + len(outputs):])
    expr = emit.normalized(term, inputs[0], term.inputs[0], order, "expand")
    rank = len(order)
    if not op.inputs:
        expr += f".unsqueeze({position - rank - 1})"
        rank += 1
    elif len(op.inputs) > 1:
        expr += f".flatten({position - rank}, {position + len(op.inputs) - 1 - rank})"
        rank -= len(op.inputs) - 1
    if not op.outputs:
        expr += f".squeeze({position - rank})"
    elif len(op.outputs) > 1:
        sizes = emit.sizes_of(term, term.outputs)
        shape = emit.tuple_text([emit.size(sizes[o]) for o in outputs])
        expr += f".unflatten({position - rank}, {shape})"
    return [emit.finish(term, expr, out_work,
                        comment=f"reshape {' '.join(op.inputs)} -> {' '.join(op.outputs)}",
                        batched=inputs[0].batched, fallback="reshaped")]


def _reshape_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ReshapeOp,
                     inputs: Sequence[Value], outputs: Sequence[Value],
                     grads: Sequence[Value]) -> Gradients:
    """The reverse of a reshape is the inverse reshape (the same row-major order)."""
    back = ir.ReshapeOp(inputs=op.outputs, outputs=op.inputs)
    return Gradients(rev.inverse(back, term, grads))


RESHAPE = declare(Declaration(
    node=ir.ReshapeOp, reverse=_reshape_reverse,
    surfaces=(Surface("reshape", "merge axes into one (row-major) or split one into several",
                      "reshape[h k -> m](X)", _reshape_typing),),
    glyph=Box("chevron_box", min_width=20.0, min_height=22.0),
    overview=_reshape_overview, roles=no_parameters, lower=_reshape_lower,
    cost=view,
    symmetry=positional(lambda op, term, names: f"reshape regroups {axis_list(names)} by "
                        "position (row-major)")))
