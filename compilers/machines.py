"""The lowering of a machine of finite depth (`ir.Machine`): a loop over its blocks, the body
(a call of the machine's definition) run once per block.

The state is rebuilt out of place at every block (`slice_scatter`), never written in place,
so the module stays differentiable by autograd and capturable by `torch.compile`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.ops.lowering import TensorCode

from .errors import CompileError

if TYPE_CHECKING:
    from .forward import ForwardEmitter


def lower_machine(emit: ForwardEmitter, term: ir.Machine,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    axis = term.axis.name
    length = ir.size_value(term.axis.size)
    if length is None or sum(term.blocks) != length:
        raise CompileError(f"machine blocks {term.blocks} do not cut axis {axis}")
    for value in inputs[-2 if term.backward else -1:]:
        if axis not in value.names:
            raise CompileError(f"machine input {value.array.text()} lacks the axis {axis}")
    pairs = [f"({start}, {stop})" for start, stop in term.ranges(length)]
    ranges = ", ".join(pairs) if len(pairs) > 1 else f"{pairs[0]},"
    bounds = emit.names.fresh("start"), emit.names.fresh("stop")
    blocks = "|".join(str(n) for n in term.blocks)
    note = (f"machine {axis}: {blocks} ({term.body_name or 'body'}"
            f"{', backward' if term.backward else ''}), block by block"
            + emit.source_note(term.span))
    if term.backward:
        return _backward(emit, term, inputs, bounds, f"for {bounds[0]}, {bounds[1]} in "
                         f"({ranges}):", note)
    start, stop = bounds
    *context, source = inputs
    state = TensorCode(emit.assign("state", f"torch.zeros_like({source.code})"), source.array,
                       source.batched)
    emit.emit(f"for {start}, {stop} in ({ranges}):", note)
    with emit.indented():
        (result,) = emit.term(term.body, [*context, state])
        result = emit.relayout(result, source.array)
        emit.emit(f"{state.code} = " + _scatter(state.code, f"{source.code} + {result.code}",
                                                 _dim(source, axis), start, stop))
    return [state]


def _dim(value: TensorCode, axis: str) -> int:
    """The dim of `axis` counted from the end (leading batch dims may come first)."""
    return value.names.index(axis) - value.rank


def _scatter(into: str, source: str, dim: int, start: str, stop: str) -> str:
    """`into` with the entries [start, stop) along `dim` taken from `source` (of the same
    layout)."""
    piece = source if source.isidentifier() else f"({source})"
    length = stop if start == "0" else f"{stop} - {start}"
    return (f"{into}.slice_scatter({piece}.narrow({dim}, {start}, {length}), "
            f"dim={dim}, start={start}, end={stop})")


def _kept(value: str, dim: int, start: str, stop: str) -> str:
    """`value` with the entries outside [start, stop) along `dim` set to zero."""
    return _scatter(f"torch.zeros_like({value})", value, dim, start, stop)


def _backward(emit: ForwardEmitter, term: ir.Machine, inputs: list[TensorCode],
              bounds: tuple[str, str], loop: str, note: str) -> list[TensorCode]:
    """The reverse pass (`ir.Machine` with `backward`): block by block from the end, the
    gradient of each block read from the total so far, the body's gradient of the forward
    state added to the total on the blocks before it, the other gradients summed."""
    axis = term.axis.name
    start, stop = bounds
    *context, forward, gradient = inputs
    where = term.state_output
    total = emit.assign("total", gradient.code)
    solved = emit.assign("solved", f"torch.zeros_like({gradient.code})")
    collected = {index: emit.assign("parts", "[]") for index in range(len(term.cod))
                 if index != where}
    dim, forward_dim = _dim(gradient, axis), _dim(forward, axis)
    emit.emit(loop, note)
    with emit.indented():
        block = emit.assign("block", _kept(total, dim, start, stop))
        emit.emit(f"{solved} = {solved} + {block}")
        before = emit.assign("before", _kept(forward.code, forward_dim, "0", start))
        outputs = emit.term(term.body, [*context, TensorCode(before, forward.array, True),
                                        TensorCode(block, gradient.array, True)])
        back = emit.relayout(outputs[where], gradient.array)
        emit.emit(f"{total} = {total} + {_kept(back.code, dim, '0', start)}")
        for index, bucket in collected.items():
            emit.emit(f"{bucket}.append({outputs[index].code})")
    batched = any(v.batched for v in inputs)
    results: list[TensorCode] = []
    for index, array in enumerate(term.cod):
        if index == where:
            results.append(TensorCode(solved, gradient.array, batched))
            continue
        summed = emit.assign("summed", f"torch.stack({collected[index]}).sum(dim=0)")
        results.append(emit.relayout(TensorCode(summed, term.body.cod[index], batched), array))
    return results
