"""A call of a small definition written into the caller's `forward` instead of a submodule call.

A call costs `nn.Module.__call__` (its hooks, its argument tuple) on every run, and that tuple
keeps the arguments alive until the callee returns, so an intermediate the caller no longer
needs (the layer norm's output in `x + mlp(ln(x))`) lives through the whole callee. Where the
callee is small and its body runs unchanged on the caller's arrays, its statements are
emitted in the caller's `forward`: its parameters are still read from its submodule
(`attention._parameters["W_q"]`, `attention = self._modules["attention"]`), so the state dict
keeps its keys, and its class is still written (the submodule holds the parameters; called on
its own it runs its own `forward`). They are read from the registries `nn.Module` keeps them
in rather than as attributes (`self.attention.W_q`), which `nn.Module.__getattr__` finds only
after the ordinary look-up fails: at small sizes those look-ups cost as much as the
operations (ViT's encoder layer reads sixteen).

Which calls: `ncd.dataflow.inlinable_call` (ports that pass their arrays whole, their axes in
any order: an argument whose axes are not the lifted ones first, then the callee's, is moved
into that frame by a view, as the submodule call moves it, so that the callee's own axes are
the trailing dims as in its own `forward`, and an output is moved back; a small callee that
calls nothing, takes leading dims and computes every output from its inputs; `ncd stats`
models the same calls as inlined), every size the callee uses fixed or read from the caller's
inputs, and no more than `ncd.dataflow.INLINE_BUDGET` terms of callees in one `forward`. The
submodule is still called when it is not the generated class as it is, has hooks, or its
registries do not hold as many parameters and buffers as the class registers (a
`DataParallel` replica keeps them as plain attributes; one deleted and set again as a plain
tensor is no longer registered): the `if` before the body.

A callee inlined more than once in one `forward` (rotary on the queries and on the keys) has
what it computes from sizes alone (index values, constants and what is made of them only)
written once, before its first call's `if`, and read by every call (`SharedValues`); a later
call whose argument may have another device or dtype computes them again in its own when they
differ, so that each call computes what its own `forward` computes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ncd import ir
from ncd.dataflow import (
    INLINE_BUDGET,
    inlined_terms,
    passes_arrays_whole,
)
from ncd.operators import declaration
from ncd.ops.lowering import TensorCode, degree_label, target_label

from .errors import CompileError
from .labels import output_labels
from .modules import ModuleSpec, Scope, registered_counts, submodule_code
from .views import permute_text

if TYPE_CHECKING:
    from .forward import ForwardEmitter


HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
"""The hooks of a module instance that its `__call__` runs around its `forward`, and (with
`_global` before them) those registered for every module at once
(`nn.modules.module.register_module_forward_hook`, ...): the dicts `nn.Module.__call__` tests
before it calls `forward` alone, which registering and removing a hook change in place."""


@dataclass
class SharedValues:
    """The values a callee inlined more than once in a `forward` computes from sizes alone
    (index tables, constants and what is made of them: rotary's angles, cosines and sines),
    written once before its first call and read by the calls after it."""

    anchor: tuple[str, str]
    """The device and dtype (code) the new arrays among them took: its calls' first
    argument's, as in the callee's own `forward`."""
    values: dict[int, list[TensorCode]]
    """The outputs of each of its terms written so, by the term's id (the callee's body is
    the same IR object at every call)."""
    region: int
    """The emitter's region (`ForwardEmitter.regions`) where they were written: only the
    calls in that region read them."""
    lines: list[str]
    """The list of lines they were written into (a loop written into a buffer first has
    its own)."""
    read: set[str] = field(default_factory=set)
    """The code of those that the rest of the body reads (or returns): the ones a later
    call with another device or dtype binds again."""


def unless_replaced(emit: ForwardEmitter, module: str, spec: ModuleSpec, comment: str,
                    called: Callable[[], list[TensorCode]],
                    in_place: Callable[[], list[TensorCode]],
                    unbound: Collection[int] = ()) -> list[TensorCode]:
    """`in_place()` (a callee's body written here, a scan's step inlined or fused) where the
    submodule `module` is the generated class of `spec` as it is, without hooks, its
    parameters and buffers registered as the class registers them; else `called()`, which
    calls it: one that is not (sharded by FSDP, wrapped, replaced, parametrized) or that has
    hooks runs as a call, since its `__call__` does more than its `forward`, and one whose
    registries hold other entries runs its own `forward`, which reads them as attributes.
    `in_place` reads them from the registries (`Scope.registered`). Both branches bind
    `called`'s names, but those at the positions `unbound` (outputs nothing reads, which
    `in_place` may leave unbound)."""
    clauses = [f"type({module}) is not {spec.class_name}",
               *(f"{module}.{hooks}" for hooks in HOOKS),
               *(f"nn_module._global{hooks}" for hooks in HOOKS)]
    emit.global_hooks = True
    counts = registered_counts(spec)
    for registry, count in zip(("_parameters", "_buffers"), counts, strict=True):
        if count:
            clauses.append(f"len({module}.{registry}) != {count}")
    emit.emit(f"if {' or '.join(clauses)}:", comment)
    with emit.branch():
        results = called()
    emit.emit("else:")
    with emit.branch():
        written = in_place()
        for position, (result, value) in enumerate(zip(results, written, strict=True)):
            if value.code != result.code and position not in unbound:
                emit.emit(f"{result.code} = {value.code}")
    if registered_counts(spec) != counts:
        raise CompileError(f"writing {spec.class_name}'s body in place registered parameters "
                           "its own forward does not read")
    return [TensorCode(result.code, result.array, result.batched or value.batched)
            for result, value in zip(results, written, strict=True)]


class CallInlining:
    """Writes the body of a small callee into the `forward` being emitted (see the module)."""

    def __init__(self, emit: ForwardEmitter) -> None:
        self.emit = emit
        # per callee: whether the caller can read every size it uses
        self._sizes_readable: dict[str, bool] = {}
        self._spent = 0  # the terms of the callees written into this forward so far
        # The definitions that the definition being written calls more than once: the
        # values their inlined bodies compute from sizes alone are written once.
        self.repeated: frozenset[str] = frozenset()
        self._shared: dict[str, SharedValues] = {}
        self._distinct: dict[str, bool] = {}  # per callee: whether its terms are distinct objects
        # While a callee's body is walked: its shared values, and whether this walk writes
        # them (the other terms left as placeholders) or reads them (the call's body).
        self.walk: tuple[SharedValues, bool] | None = None
        self._pending: dict[int, TensorCode] = {}  # the placeholders of a writing walk, by id
        self._suspended = 0  # inside `suspended`: calls are not written in place

    def shared(self, term: ir.Term, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of `term` when the walk of a callee's body knows them without writing
        it: written before (reading walk), or placeholders (writing walk: a term that reads
        a call's argument, a parameter or the outcome of a pattern, or a block)."""
        if self.walk is None or isinstance(term, (ir.Identity, ir.Rearrangement, ir.Composed,
                                                   ir.Product)):
            return None  # walked through
        shared, writing = self.walk
        if not writing:
            return shared.values.get(id(term))
        if any(id(value) in self._pending for value in inputs) or not self._shareable(term):
            shared.read.update(value.code for value in inputs if id(value) not in self._pending)
            placeholders = [TensorCode(f"<{term.kind}>", array, False) for array in term.cod]
            self._pending.update((id(value), value) for value in placeholders)
            return placeholders
        return None

    def record(self, term: ir.Term, outputs: list[TensorCode]) -> None:
        """Keep the outputs of a term that a writing walk wrote."""
        if self.walk is not None and self.walk[1] and \
                isinstance(term, (ir.Broadcasted, ir.Reindexing)):
            self.walk[0].values[id(term)] = outputs

    def forget(self) -> None:
        """Forget the values written so far: a loop was written, which rebinds the names it
        carries (a call after it writes them again)."""
        self._shared.clear()

    def _shareable(self, term: ir.Term) -> bool:
        """A term whose outputs are the same at every call given the same inputs: no
        parameter (each call site has its own), no member of a pattern (lowered with the
        others), no block."""
        if any(id(term) in pattern.roles for pattern in self.emit.patterns):
            return False
        if isinstance(term, ir.Broadcasted):
            return not term.params and not isinstance(term.op, ir.CallOp)
        return isinstance(term, ir.Reindexing)

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Every call lowered as a submodule call meanwhile (a scan's loop for a replaced or
        hooked step, which must call it)."""
        self._suspended += 1
        try:
            yield
        finally:
            self._suspended -= 1

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The call's outputs, its callee's statements emitted here; None when the call is
        to be lowered as a submodule call."""
        op = term.op
        if not isinstance(op, ir.CallOp) or self._suspended:
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
        # One look-up of the submodule, not one per read.
        module = emit.assign(op.instance, submodule_code(emit.scope.owner, attribute),
                             f"{op.definition}{lift}{emit.source_note(term.span)}",
                             fallback="module")
        shared = self._write_shared(term, definition, spec, module, inputs) \
            if self._shares(definition) else None
        return unless_replaced(
            emit, module, spec,
            "a replaced, wrapped or hooked submodule is called; else its body runs here",
            lambda: declaration(op).lower(emit, term, op, inputs),
            lambda: self._inline(term, op, definition, spec, module, inputs, shared))

    def _shares(self, definition: ir.Definition) -> bool:
        """Whether the values the callee computes from sizes alone are written once for its
        calls: it is called more than once here, and each term of its body is an object of
        its own (the values are known by the terms' ids)."""
        if definition.name not in self.repeated:
            return False
        distinct = self._distinct.get(definition.name)
        if distinct is None:
            ids = [id(part) for part in ir.walk(definition.body)]
            distinct = self._distinct[definition.name] = len(ids) == len(set(ids))
        return distinct

    def _write_shared(self, term: ir.Broadcasted, definition: ir.Definition, spec: ModuleSpec,
                      module: str, inputs: list[TensorCode]) -> SharedValues | None:
        """The values the callee computes from sizes alone, written here (before the call's
        `if`, so that the later calls read them) at its first call; at a later one whose
        first argument may have another device or dtype, written again under a test of
        those and bound to the same names. None when nothing can be shared."""
        emit = self.emit
        lifted = bool(term.degree.axes)
        # the caller's arrays: the device and dtype of the moved arguments (views)
        anchors = [TensorCode(value.code, variable.array, value.batched or lifted)
                   for value, variable in zip(inputs, definition.inputs, strict=True)]
        outer, emit.anchors = emit.anchors, anchors
        try:
            anchor = emit.anchor()
        finally:
            emit.anchors = outer
        shared = self._shared.get(definition.name)
        # Written in this region of code (not before the loop or branch this call is in, where
        # a loop would run the test below against tables of another iteration's arrays).
        if shared is None or shared.region != emit.regions[-1] or shared.lines is not emit.lines:
            shared = SharedValues(anchor, {}, emit.regions[-1], emit.lines)
            self._walk_body(definition, spec, module, anchors, shared)
            if not shared.values:
                return None
            self._shared[definition.name] = shared
            return shared
        if anchor == shared.anchor:
            return shared
        if not all(code.isidentifier() for code in shared.read):
            return None  # a value that is not a name cannot be bound again
        # torch.fx cannot test a traced array's device or dtype: made again while it traces
        tests = ["torch.fx._symbolic_trace.is_fx_symbolic_tracing()", *(
            f"{new} != {old}" for new, old in zip(anchor, shared.anchor, strict=True)
            if new != old)]
        emit.emit(f"if {' or '.join(tests)}:",
                  f"{definition.name}'s tables again, in this call's device and dtype")
        with emit.branch():
            again = SharedValues(anchor, {}, emit.regions[-1], emit.lines)
            self._walk_body(definition, spec, module, anchors, again)
            for key, values in shared.values.items():
                for old, new in zip(values, again.values[key], strict=True):
                    if old.code in shared.read:
                        emit.emit(f"{old.code} = {new.code}")
        shared.anchor = anchor
        return shared

    def _walk_body(self, definition: ir.Definition, spec: ModuleSpec, module: str,
                   anchors: list[TensorCode], shared: SharedValues) -> None:
        """A writing walk of the callee's body: its terms computed from sizes alone written,
        the others left as placeholders (its arguments are placeholders)."""
        emit = self.emit
        arguments = [TensorCode(f"<{variable.name}>", variable.array, value.batched)
                     for value, variable in zip(anchors, definition.inputs, strict=True)]
        self._pending = {id(value): value for value in arguments}
        outer, outer_anchors, emit.anchors = emit.scope, emit.anchors, anchors
        emit.scope = Scope(spec, module)
        self.walk = (shared, True)
        try:
            with emit.own_patterns():
                results = emit.term(definition.body, arguments)
            shared.read.update(value.code for value in results if id(value) not in self._pending)
        finally:
            emit.scope, emit.anchors, self.walk, self._pending = outer, outer_anchors, None, {}

    def _inline(self, term: ir.Broadcasted, op: ir.CallOp, definition: ir.Definition,
                spec: ModuleSpec, module: str, inputs: list[TensorCode],
                shared: SharedValues | None) -> list[TensorCode]:
        """The callee's statements on the call's arguments, its parameters read from
        `module`, its values computed from sizes alone read from `shared`; its outputs, in
        the call's frame."""
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
        emit.scope = Scope(spec, module, registered=True)
        self.walk = (shared, False) if shared is not None else None
        try:
            with emit.own_patterns():
                results = emit.term(definition.body, arguments)
        finally:
            emit.scope, emit.anchors, self.walk = outer, anchors, None
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

