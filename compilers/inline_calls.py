"""A call of a small definition written into the caller's `forward` instead of a submodule call.

A call costs `nn.Module.__call__` (its hooks, its argument tuple) on every run, and that tuple
keeps the arguments alive until the callee returns, so an intermediate the caller no longer
needs (the layer norm's output in `x + mlp(ln(x))`) lives through the whole callee. Where the
callee is small and its body runs unchanged on the caller's arrays, its statements are
emitted in the caller's `forward`: its parameters are still read from its submodule
(`self.attention.W_q`), so the state dict keeps its keys, and its class is still written
(the submodule holds the parameters; called on its own it runs its own `forward`).

Which calls: `ncd.dataflow.inlinable_call` (ports that pass their arrays whole, their axes in
any order: an argument whose axes are not the lifted ones first, then the callee's, is moved
into that frame by a view, as the submodule call moves it, so that the callee's own axes are
the trailing dims as in its own `forward`, and an output is moved back; a small callee that
calls nothing, takes leading dims and computes every output from its inputs; `ncd stats`
models the same calls as inlined), every size the callee uses fixed or read from the caller's
inputs, and no more than `ncd.dataflow.INLINE_BUDGET` terms of callees in one `forward`. The
submodule is still called when it is not the generated class as it is, or has hooks (the
`if` before the body).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.dataflow import (
    INLINE_BUDGET,
    inlined_terms,
    passes_arrays_whole,
)
from ncd.operators import declaration
from ncd.ops.lowering import TensorCode, degree_label, target_label

from .labels import output_labels
from .modules import ModuleSpec, Scope, attribute_code
from .views import permute_text

if TYPE_CHECKING:
    from .forward import ForwardEmitter


HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
"""The hooks of a module instance that its `__call__` runs around its `forward`."""

class CallInlining:
    """Writes the body of a small callee into the `forward` being emitted (see the module)."""

    def __init__(self, emit: ForwardEmitter) -> None:
        self.emit = emit
        # per callee: whether the caller can read every size it uses
        self._sizes_readable: dict[str, bool] = {}
        self._spent = 0  # the terms of the callees written into this forward so far

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
        info = emit.compiler.info(definition.name)
        attribute = emit.scope.spec.child(op.instance, info.class_name,
                                          f"call site {op.instance} of {definition.name}")
        lift = f", lifted over {' '.join(term.degree.names)}" if lifted else ""
        # One look-up of the submodule (`nn.Module.__getattr__` is slow), not one per read.
        module = emit.assign(op.instance, attribute_code(emit.scope.owner, attribute),
                             f"{op.definition}{lift}{emit.source_note(term.span)}",
                             fallback="module")
        # A submodule that is not the generated class as it is (sharded by FSDP, wrapped,
        # replaced, parametrized) or that has hooks runs as a call: its `__call__` does more
        # than its `forward`.
        clauses = [f"type({module}) is not {info.class_name}",
                   *(f"{module}.{hooks}" for hooks in HOOKS)]
        emit.emit(f"if {' or '.join(clauses)}:",
                  "a replaced, wrapped or hooked submodule is called; else its body runs here")
        with emit.branch():
            called = declaration(op).lower(emit, term, op, inputs)
        emit.emit("else:")
        with emit.branch():
            inlined = self._inline(term, op, definition, spec, module, inputs)
            for result, value in zip(called, inlined, strict=True):
                if value.code != result.code:
                    emit.emit(f"{result.code} = {value.code}")
        return [TensorCode(result.code, result.array, result.batched or value.batched)
                for result, value in zip(called, inlined, strict=True)]

    def _inline(self, term: ir.Broadcasted, op: ir.CallOp, definition: ir.Definition,
                spec: ModuleSpec, module: str, inputs: list[TensorCode]) -> list[TensorCode]:
        """The callee's statements on the call's arguments, its parameters read from
        `module`; its outputs, in the call's frame."""
        emit = self.emit
        lifted = bool(term.degree.axes)
        emit.comment(f"{op.definition}, inlined")
        # In the callee's frame: its declared axes trailing, the lifted axes leading dims in
        # the degree's order; an argument laid out otherwise is moved there (a view).
        degree = [degree_label(i) for i in range(len(term.degree.axes))]
        arguments = []
        for value, port, variable in zip(inputs, term.inputs, definition.inputs, strict=True):
            code = value.code
            if port.array.names != (*term.degree.names, *port.targets):
                order = [*degree, *(target_label(t) for t in port.targets)]
                moved = emit.normalized(term, value, port, order, "expand")
                frame = (*term.degree.names, *port.targets)
                code = emit.assign(variable.name, moved, f"{' '.join(port.array.names)} -> "
                                   f"{' '.join(frame)}, the callee's frame")
            arguments.append(TensorCode(code, variable.array, value.batched or lifted))
        # New arrays (index vectors, constants) take the callee's arguments' device and
        # dtype, as in its own `forward`.
        outer, anchors, emit.anchors = emit.scope, emit.anchors, arguments
        emit.scope = Scope(spec, module)
        try:
            with emit.own_patterns():
                results = emit.term(definition.body, arguments)
        finally:
            emit.scope, emit.anchors = outer, anchors
        outputs = []
        for result, variable, port, array in zip(results, definition.outputs, term.outputs,
                                                 term.cod, strict=True):
            # In the caller's frame: the output's axes moved to its order (a view).
            labels = [*degree, *(target_label(t) for t in port.targets)]
            code = permute_text(emit.relayout(result, variable.array).code, labels,
                                output_labels(port))
            outputs.append(TensorCode(code, array, result.batched or lifted))
        return outputs

    def _callee(self, term: ir.Broadcasted) -> ir.Definition | None:
        """The callee when its body is written here (`ncd.dataflow.inlinable_call`, the
        sizes it uses readable here, and `INLINE_BUDGET` not spent by this `forward`)."""
        if self._spent >= INLINE_BUDGET:
            return None
        assert isinstance(term.op, ir.CallOp)
        compiler = self.emit.compiler
        definition = compiler.definition(term.op.definition)
        name = definition.name
        if name not in compiler.inlinable:  # judged once per program
            compiler.inlinable[name] = inlined_terms(definition)
        terms = compiler.inlinable[name]
        # The callee first: judged once, it rules out most calls (those of callees that call)
        # before their ports are looked at.
        if terms is None or self._spent + terms > INLINE_BUDGET or \
                not passes_arrays_whole(term):
            return None
        readable = self._sizes_readable.get(name)
        if readable is None:
            readable = self._sizes_readable[name] = all(
                self._readable(axis.size) for part in ir.walk(definition.body)
                for axis in _axes(part))
        if not readable:
            return None
        self._spent += terms
        return definition

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

