"""A call of a small definition written into the caller's `forward` instead of a submodule call.

A call costs `nn.Module.__call__` (its hooks, its argument tuple) on every run, and that tuple
keeps the arguments alive until the callee returns, so an intermediate the caller no longer
needs (the layer norm's output in `x + mlp(ln(x))`) lives through the whole callee. Where the
callee is small and its body runs unchanged on the caller's arrays, its statements are
emitted in the caller's `forward`: its parameters are still read from its submodule
(`self.attention.W_q`), so the state dict keeps its keys, and its class is still written
(the submodule holds the parameters; called on its own it runs its own `forward`).

Which calls: `ncd.dataflow.inlinable_call` (ports that pass their arrays as they are, the
lifted axes leading, so that the callee's own axes are the trailing dims as in its own
`forward`; a small callee that takes leading dims and computes every output from its inputs;
`ncd stats` models the same calls as inlined), and every size the callee uses fixed or read
from the caller's inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.dataflow import inlinable_call
from ncd.ops.lowering import TensorCode

from .modules import Scope, attribute_code

if TYPE_CHECKING:
    from .forward import ForwardEmitter


class CallInlining:
    """Writes the body of a small callee into the `forward` being emitted (see the module)."""

    def __init__(self, emit: ForwardEmitter) -> None:
        self.emit = emit
        # per callee: whether the caller can read every size it uses
        self._sizes_readable: dict[str, bool] = {}

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The call's outputs, its callee's statements emitted here; None when the call is
        to be lowered as a submodule call."""
        op = term.op
        if not isinstance(op, ir.CallOp):
            return None
        emit = self.emit
        definition = self._callee(term)
        spec = emit.compiler.specs.get(op.definition)
        if definition is None or spec is None:
            return None
        lifted = bool(term.degree.axes)
        attribute = emit.scope.spec.child(op.instance,
                                          emit.compiler.info(definition.name).class_name,
                                          f"call site {op.instance} of {definition.name}")
        lift = f", lifted over {' '.join(term.degree.names)}" if lifted else ""
        emit.emit(f"# {op.definition}{lift}, inlined{emit.source_note(term.span)}")
        # In the callee's frame: its declared axes trailing, the lifted axes leading dims.
        arguments = [TensorCode(value.code, variable.array, value.batched or lifted)
                     for value, variable in zip(inputs, definition.inputs, strict=True)]
        outer = emit.scope
        owner = attribute_code(outer.owner, attribute)
        if self._reads_module(definition):
            # one look-up of the submodule (`nn.Module.__getattr__` is slow), not one per read
            owner = emit.assign(op.instance, owner, f"{op.definition}'s parameters",
                                fallback="module")
        # New arrays (index vectors, constants) take the callee's arguments' device and
        # dtype, as in its own `forward`.
        anchors, emit.anchors = emit.anchors, arguments
        emit.scope = Scope(spec, owner)
        try:
            results = emit.term(definition.body, arguments)
        finally:
            emit.scope, emit.anchors = outer, anchors
        return [TensorCode(emit.relayout(result, variable.array).code, array,
                           result.batched or lifted)
                for result, variable, array in zip(results, definition.outputs, term.cod,
                                                   strict=True)]

    @staticmethod
    def _reads_module(definition: ir.Definition) -> bool:
        """Whether the callee's body reads its module: a parameter, or a submodule."""
        return bool(definition.params) or any(
            isinstance(part, ir.Scan) or (isinstance(part, ir.Broadcasted) and (
                part.params or isinstance(part.op, ir.CallOp)))
            for part in ir.walk(definition.body))

    def _callee(self, term: ir.Broadcasted) -> ir.Definition | None:
        definition = inlinable_call(term, self.emit.compiler.program)
        if definition is None:
            return None
        readable = self._sizes_readable.get(definition.name)
        if readable is None:
            readable = self._sizes_readable[definition.name] = all(
                self._readable(axis.size) for part in ir.walk(definition.body)
                for axis in _axes(part))
        return definition if readable else None

    def _readable(self, size: ir.SizeExpr) -> bool:
        """Whether the caller can compute `size`: fixed, or each of its symbols the size of
        an axis of one of the caller's inputs."""
        emit = self.emit
        return emit.sizes.value(size) is not None or all(
            emit.reads_symbol(symbol) for symbol in emit.sizes.symbols(size))


def _axes(part: ir.Term) -> list[ir.Axis]:
    """The axes of a term's arrays, and of its lift."""
    axes = [axis for array in (*part.dom, *part.cod) for axis in array.shape.axes]
    if isinstance(part, ir.Broadcasted):
        axes += part.degree.axes
    return axes
