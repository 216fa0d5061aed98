"""A call of a small definition written into the caller's `forward` instead of a submodule call.

A call costs `nn.Module.__call__` (its hooks, its argument tuple) on every run, and that tuple
keeps the arguments alive until the callee returns, so an intermediate the caller no longer
needs (the layer norm's output in `x + mlp(ln(x))`) lives through the whole callee. Where the
callee is small and its body runs unchanged on the caller's arrays, its statements are
emitted in the caller's `forward`: its parameters are still read from its submodule
(`self.attention.W_q`), so the state dict keeps its keys, and its class is still written
(the submodule holds the parameters; called on its own it runs its own `forward`).

A call is inlined when each port passes its array as it is, the lifted axes leading (the
callee's own axes are then the trailing dims, as in its own `forward`); the callee takes leading
dims, every output depends on an input (one computed from parameters alone would have to be
tiled over the lift), it holds no repeated block with copies, machine, dropout or batch norm
(those read the module's own copies or its training flag), every size it uses is fixed or read
from the caller's inputs, and it has at most `INLINE_LIMIT` terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.dataflow import dataflow, reached_from
from ncd.ops.lowering import TensorCode

from .modules import Scope, attribute_code

if TYPE_CHECKING:
    from .forward import ForwardEmitter

INLINE_LIMIT = 40
"""The most terms (operations and reindexings, counted over the callee's body) of a callee
written into its caller: a larger body gains little from one call less and would repeat its
text at each call site."""


class CallInlining:
    """Writes the body of a small callee into the `forward` being emitted (see the module)."""

    def __init__(self, emit: ForwardEmitter) -> None:
        self.emit = emit
        self._verdicts: dict[str, bool] = {}  # per callee: whether its body can be inlined

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The call's outputs, its callee's statements emitted here; None when the call is
        to be lowered as a submodule call."""
        op = term.op
        if not isinstance(op, ir.CallOp) or not self._passes_as_is(term, op):
            return None
        emit = self.emit
        definition = emit.compiler.definition(op.definition)
        spec = emit.compiler.specs.get(definition.name)
        if spec is None or not self._inlinable(definition):
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
        emit.scope = Scope(spec, owner)
        try:
            results = emit.term(definition.body, arguments)
        finally:
            emit.scope = outer
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

    @staticmethod
    def _passes_as_is(term: ir.Broadcasted, op: ir.CallOp) -> bool:
        """Whether every port passes its array unchanged, the lifted axes first in the
        degree's order and the callee's axes after them in its declared order."""
        if op.each is not None or term.params:
            return False
        lifted = term.degree.names
        for port, array in ((*zip(term.inputs, term.dom, strict=True),
                             *zip(term.outputs, term.cod, strict=True))):
            if array.names != (*lifted, *port.targets) or \
                    port.array.names != array.names or not port.reindexing.is_identity:
                return False
        return True

    def _inlinable(self, definition: ir.Definition) -> bool:
        known = self._verdicts.get(definition.name)
        if known is None:
            known = self._verdicts[definition.name] = self._judge(definition)
        return known

    def _judge(self, definition: ir.Definition) -> bool:
        if not definition.leading_dims:
            return False
        emit = self.emit
        terms = 0
        for part in ir.walk(definition.body):
            if isinstance(part, (ir.Broadcasted, ir.Reindexing)):
                terms += 1
            if isinstance(part, ir.Machine) or (isinstance(part, ir.Block) and (
                    (part.repeat > 1 and not part.shared) or part.copy_of is not None)):
                return False
            if isinstance(part, ir.Broadcasted) and isinstance(part.op,
                                                               (ir.DropoutOp, ir.BatchNormOp)):
                return False
            axes = [a for array in (*part.dom, *part.cod) for a in array.shape.axes]
            if isinstance(part, ir.Broadcasted):
                axes += part.degree.axes
            if not all(self._readable(axis.size) for axis in axes):
                return False
        if terms > INLINE_LIMIT:
            return False
        flow = dataflow(definition.body)
        reached = reached_from(flow, flow.inputs)
        return all(wire in reached for wire in flow.outputs)

    def _readable(self, size: ir.SizeExpr) -> bool:
        """Whether the caller can compute `size`: fixed, or each of its symbols the size of
        an axis of one of the caller's inputs."""
        emit = self.emit
        return emit.sizes.value(size) is not None or all(
            emit.reads_symbol(symbol) for symbol in emit.sizes.symbols(size))
