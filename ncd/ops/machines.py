"""`machine`: a machine of finite depth (Vertechi & Bergomi, arXiv 2204.12786), an `ir.Machine`
term rather than an operator of its own.

`X = machine[n, 4, 4, 8](f, Y)` cuts the axis `n` of `Y` into consecutive blocks of 4, 4 and 8
entries and solves them in that order: block `i` of `X` is block `i` of `Y + f(S)`, where `S`
holds the blocks solved before it (zero elsewhere). So `X = Y + g(X)` with `g` of finite depth
(block `i` of `g` reads only the blocks before it), solved in one pass. Arrays written between
`f` and `Y` are context that `f` reads whole at every block (`machine[n, 4, 4](f, C, Y)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Step, Value
from ncd.diagnostics import Note

from .arguments import constant_value, option_error
from .calls import call_reverse, definition_argument, lifted_call, same_axes
from .declaration import Gradients, Surface, Unsupported, declare_surface

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder

EXAMPLE = "machine[n, 2, 2](layer, Y)"


def _blocks(builder: DefinitionBuilder, call: s.Call) -> tuple[s.Ident, list[tuple[int, s.Expr]]]:
    """The axis and the block sizes written in the brackets: `[n, 4, 4, 8]`."""
    items = list(call.items or ())
    if not items or not isinstance(items[0], s.Var):
        raise option_error(builder, "`machine` needs the axis it cuts, then the sizes of its "
                           "blocks, in brackets", items[0].span if items else call.name.span,
                           hint=f"for example `{EXAMPLE}`")
    axis = s.Ident(items[0].name, items[0].span)
    sizes: list[tuple[int, s.Expr]] = []
    for item in items[1:]:
        if isinstance(item, (s.Arrow, s.Comparison, s.Keyword, s.Each)):
            raise option_error(builder, "after the axis, `machine` takes only the sizes of its "
                               "blocks", item.span, hint=f"for example `{EXAMPLE}`")
        value = constant_value(builder.ctx, item)
        if not value.is_integer() or value < 1:
            raise builder.ctx.error("E318", f"a block of a machine has a whole positive number "
                                    f"of entries, not {value:g}", item.span,
                                    hint=f"for example `{EXAMPLE}`")
        sizes.append((int(value), item))
    if len(sizes) < 1:
        raise option_error(builder, f"`machine` needs the sizes of the blocks of `{axis.name}` "
                           "after it", call.name.span, hint=f"for example `{EXAMPLE}`")
    return axis, sizes


def _machine_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    ctx = builder.ctx
    axis_ident, sizes = _blocks(builder, call)
    body = definition_argument(builder, call, "E318",
                               "the first argument of `machine` is the definition it runs",
                               f"for example `{EXAMPLE}`")
    if len(call.args) < 2:
        raise ctx.error("E303", "`machine` needs the array it solves for after the definition",
                        call.span, hint=f"for example `{EXAMPLE}`")
    values = [builder.single(a) for a in call.args[1:]]
    source, source_arg = values[-1], call.args[-1]
    if source.array.dtype.kind != "R":
        raise ctx.error("E302", f"a machine solves for real numbers, but `{source.name}` is "
                        f"{source.array.text()}", source_arg.span)
    if axis_ident.name not in source.array.names:
        raise ctx.error("E318", f"`{source.name}` has no axis `{axis_ident.name}` to cut into "
                        f"blocks (its axes are [{', '.join(source.array.names)}])",
                        axis_ident.span, hint="the last argument is the array the blocks cut")
    axis = source.array.shape.axis(axis_ident.name)
    length = ir.size_value(axis.size)
    if length is None:
        raise ctx.error("E318", f"the blocks of a machine need a fixed size of "
                        f"`{axis.name}`, known only at run time here", axis_ident.span,
                        hint=f"declare it with a size: `axis {axis.name} = 16`")
    total = sum(size for size, _ in sizes)
    if total != length:
        raise ctx.error(
            "E318", f"the blocks {' + '.join(str(n) for n, _ in sizes)} = {total} do not "
            f"cut `{axis.name}`, which has {length} entries", sizes[0][1].span,
            hint=f"give block sizes that add up to {length}")
    if len(body.outputs) != 1:
        raise ctx.error("E318", f"a machine's definition gives one array, but `{body.name}` "
                        f"gives {len(body.outputs)}", call.args[0].span,
                        notes=[Note(body.span, "defined here")])
    state = body.inputs[-1] if body.inputs else None
    if state is None or not same_axes(body.outputs[0].array, state.array):
        raise ctx.error(
            "E318", f"a machine's definition maps its last input to an array of the same type, "
            f"but `{body.name}` maps "
            f"{state.array.text() if state else 'nothing'} to {body.outputs[0].array.text()}",
            call.args[0].span, notes=[Note(body.span, "defined here")],
            hint="`def f(X: R[n]) -> R[n]`: block i of its result is added to block i of Y")
    instance = builder.instance_name(body.name)
    term, outputs = lifted_call(builder, body, [(v.array, a.span, v.name)
                                                for v, a in zip(values, call.args[1:],
                                                                strict=True)],
                                call.span, instance, [name or f"{body.name}_out"])
    if not same_axes(outputs[0], source.array):
        raise ctx.error("E318", f"`{body.name}` gives {outputs[0].text()} here, not an array of "
                        f"the type of `{source.name}`, {source.array.text()}", call.span,
                        hint="the context arrays must not add axes that the solved array lacks")
    machine = ir.Machine(dom=tuple(v.array for v in values), cod=(source.array,),
                         span=call.span, axis=axis, blocks=tuple(n for n, _ in sizes),
                         body=term, body_name=body.name)
    out = Value(source.array, name or builder.fresh_name(f"{body.name}_machine"), call.span)
    builder.add_step(machine, values, [out])
    return [out]


MACHINE = declare_surface(Surface(
    "machine", "a machine of finite depth: cut an axis of Y into blocks, solved in order; "
    "block i of the result is block i of Y + f(the blocks before it)", EXAMPLE,
    _machine_typing))


def machine_reverse(rev: Reverser, term: ir.Machine, inputs: Sequence[Value],
                    outputs: Sequence[Value], grads: Sequence[Value]) -> Gradients:
    """The reverse of a machine is a machine over the same axis, its blocks in the reversed
    order, whose body is the call of the body definition's backward definition at the same
    call site (so the same parameters): it reads the context, the forward state X (the saved
    output) and the gradient of X, and gives the gradients of the context, of Y (the state it
    solves for, `dy = dx + J^T dy`) and of the body's parameters, summed over the blocks
    (`ir.Machine`). The call is built as `call_reverse` builds any call's reverse, then made
    the body of the machine."""
    body = term.body
    if term.backward or not (isinstance(body, ir.Broadcasted) and
                             isinstance(body.op, ir.CallOp)):
        raise Unsupported("this machine has no reverse derivative", term.span,
                          "only a machine of the forward pass, whose body is a call, has one")
    *context, _ = inputs
    mark = len(rev.steps)
    result = call_reverse(rev, body, body.op, [*context, outputs[0]], outputs, grads)
    backward_name = rev.backward_of(body.op.definition).definition.name
    for index in range(mark, len(rev.steps)):
        step = rev.steps[index]
        call = step.term if isinstance(step, Step) else None
        if isinstance(call, ir.Broadcasted) and isinstance(call.op, ir.CallOp) and \
                call.op.definition == backward_name:
            assert isinstance(step, Step)
            step.term = ir.Machine(dom=call.dom, cod=call.cod, span=term.span, axis=term.axis,
                                   blocks=tuple(reversed(term.blocks)), backward=True,
                                   body=call, body_name=backward_name)
            break
    else:
        raise AssertionError("the reverse of a machine's call made no call")
    return result
