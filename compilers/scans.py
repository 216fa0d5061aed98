"""The lowering of a scan: a loop over its axis, in one of three forms.

- **Fused**: a step that is exactly a standard LSTM or GRU cell (`ncd.recurrent_cells`) runs
  as PyTorch's fused kernel (`torch.lstm`, `torch.gru`), its weights passed as views of the
  step's parameters (the state dict keeps its keys). `torch.compile` cannot compile that
  kernel, so while a graph is captured (`torch.compile`, `torch.export`, `torch.fx`), the
  inlined loop below runs instead (the same values).
- **Inlined and hoisted**: the step's definition is written into the loop (no submodule call
  per step; its parameters are read from its submodule, so their names do not change), and
  everything in it that does not depend on the carried state (`ncd.dataflow.independent_of`:
  the input projections, values of the parameters alone) is computed once before the loop,
  for every step at once (the scanned axis is one more leading dim); the loop reads slices.
- **Generic**: the step's submodule called at every step, when the step cannot be inlined
  (a lift that reorders axes, sizes known only at run time inside the step, block copies),
  and, in the code of the two forms above, where the step's submodule is not the generated
  class as it is or has hooks (its `__call__` does more than its `forward`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ncd import ir
from ncd.dataflow import Dataflow, Wire, dataflow, independent_of, inlinable_step, reached_from
from ncd.ops.lowering import TensorCode
from ncd.recurrent_cells import Cell, CellLinear, recognise
from ncd.sizes import ProgramSizes

from .errors import CompileError
from .inline_calls import unless_replaced
from .modules import ModuleSpec, Scope, submodule_code
from .naming import base_name
from .views import leading_shape

if TYPE_CHECKING:
    from .forward import ForwardEmitter


@dataclass(frozen=True)
class InlinePlan:
    """A step that can be written into the loop: its call, definition and dataflow."""

    call: ir.Broadcasted
    op: ir.CallOp
    definition: ir.Definition
    spec: ModuleSpec
    flow: Dataflow


def lower_scan(emit: ForwardEmitter, term: ir.Scan, inputs: list[TensorCode]) -> list[TensorCode]:
    plan = inline_plan(emit, term)
    if plan is None:
        return generic_scan(emit, term, inputs)
    # The step runs in place (inlined or fused) only for its submodule as generated: one of
    # another class (replaced, wrapped, parametrized) or with hooks of its own is called at
    # every step, as a call written in place is (`compilers/inline_calls.py`).
    info = emit.compiler.info(plan.definition.name)
    attribute = emit.scope.spec.child(plan.op.instance, info.class_name,
                                      f"call site {plan.op.instance} of {plan.definition.name}")
    module = emit.assign(plan.op.instance, submodule_code(emit.scope.owner, attribute),
                         f"{plan.op.definition}, the step{emit.source_note(term.span)}",
                         fallback="module")

    def called() -> list[TensorCode]:
        with emit.inlining.suspended():
            return generic_scan(emit, term, inputs)

    # (a final state nothing reads is not bound by the fused kernel's branch: not rebound)
    unread = emit.flow.unread_outputs(term) if emit.flow is not None else set()
    return unless_replaced(
        emit, module, plan.spec,
        "a replaced, wrapped or hooked step is called at every step; else it runs here",
        called, lambda: _scan_in_place(emit, term, inputs, plan, module), unread)


def _scan_in_place(emit: ForwardEmitter, term: ir.Scan, inputs: list[TensorCode],
                   plan: InlinePlan, module: str) -> list[TensorCode]:
    """The step written into the loop, or run as PyTorch's fused kernel when it is a
    standard LSTM or GRU cell; `module`: the step's submodule, read once."""
    fused = fused_cell(term, emit.compiler.program, emit.sizes)
    if fused is None:
        return inlined_scan(emit, term, inputs, plan, module)
    cell = fused[1]
    # The loop first, into a buffer: the fused branch binds the names it leaves.
    lines, emit.lines = emit.lines, []
    emit.checked.clear()  # the loop rebinds names: what was checked is forgotten
    emit.depth += 1
    try:
        results = inlined_scan(emit, term, inputs, plan, module)
    finally:
        emit.depth -= 1
        loop, emit.lines = emit.lines, lines
    kernel = _kernel(cell)
    # (two `not`s joined by `and`: a condition the line wrapper can split)
    eager = "not torch.compiler.is_compiling() and not " \
        "torch.fx._symbolic_trace.is_fx_symbolic_tracing()"
    emit.emit(f"if {eager}:",
              f"{plan.op.definition} is a standard {cell.kind.upper()} cell: {kernel}"
              f"{emit.source_note(term.span)}")
    with emit.indented():
        fused_scan(emit, term, inputs, plan, cell, results, module)
    emit.emit("else:", "torch.compile cannot compile the fused kernel: the loop")
    emit.lines.extend(loop)
    return results


def fused_cell(term: ir.Scan, program: ir.Program,
               sizes: ProgramSizes) -> tuple[ir.Definition, Cell] | None:
    """The step's definition and cell when the scan runs as PyTorch's fused kernel: a scan
    run forward over one sequence, whose step can be inlined and is exactly a standard LSTM
    or GRU cell."""
    if term.reverse or len(term.dom) != term.carries + 1:
        return None
    found = inlinable_step(term, program, sizes)
    if found is None:
        return None
    cell = recognise(found[2], term.carries, sizes)
    return None if cell is None else (found[2], cell)


def inline_plan(emit: ForwardEmitter, term: ir.Scan) -> InlinePlan | None:
    """The plan when the step can be written into the loop (`ncd.dataflow.inlinable_step`)."""
    found = inlinable_step(term, emit.compiler.program, emit.sizes)
    if found is None:
        return None
    call, op, definition = found
    spec = emit.compiler.specs.get(definition.name)
    if spec is None:
        return None
    return InlinePlan(call, op, definition, spec, dataflow(definition.body))


def initial_states(emit: ForwardEmitter, term: ir.Scan,
                   inputs: list[TensorCode]) -> list[TensorCode]:
    """Fresh names for the carried states (the loop rebinds them), each spread over the
    sequences' leading dims when it has none of its own."""
    carries, sequences = inputs[:term.carries], inputs[term.carries:]
    any_batched = next((v for v in sequences if v.batched), None)
    state: list[TensorCode] = []
    for value in carries:
        expr = value.code
        if not value.batched and any_batched is not None:
            expr = (f"{value.code}.expand({leading_shape(any_batched.code, any_batched.rank)}"
                    f" + {value.code}.shape)")
        state.append(TensorCode(emit.assign(base_name(value.code), expr, fallback="state"),
                                value.array, value.batched or any_batched is not None))
    return state


def stacked_results(emit: ForwardEmitter, term: ir.Scan, collected: list[str],
                    batched: bool) -> list[TensorCode]:
    """The per-step outputs, stacked along the scanned axis."""
    axis = term.axis.name
    results = []
    for bucket, step_array, final in zip(collected, term.step.cod[term.carries:],
                                         term.cod[term.carries:], strict=True):
        names = [n for n in final.names if n != axis]
        position = final.names.index(axis)
        # A reverse scan collected its steps from the last: stacked back in the axis's order.
        tiles = f"{bucket}[::-1]" if term.reverse else bucket
        if names == list(step_array.names):
            name = emit.assign(bucket.removesuffix("_outputs"),
                               f"torch.stack({tiles}, dim={position - len(final.shape.axes)})")
            results.append(TensorCode(name, final, batched))
        else:
            stacked_array = ir.ArrayType(dtype=final.dtype, shape=ir.Shape(
                axes=(*step_array.shape.axes, term.axis)))
            name = emit.assign(bucket.removesuffix("_outputs"),
                               f"torch.stack({tiles}, dim=-1)")
            results.append(emit.relayout(TensorCode(name, stacked_array, batched), final))
    return results


def _loop(emit: ForwardEmitter, term: ir.Scan, note: str) -> tuple[list[str], str]:
    """The lists that collect the step's outputs, and the `for` over the scanned axis (its
    body is what the caller emits next, indented): the lists' names and the index's."""
    collected = [emit.assign(f"{term.step_name or 'step'}_outputs", "[]")
                 for _ in term.step.cod[term.carries:]]
    length = emit.size(term.axis.size)
    index = emit.names.fresh(f"{term.axis.name}_index")
    steps = f"reversed(range({length}))" if term.reverse else f"range({length})"
    emit.emit(f"for {index} in {steps}:", note + emit.source_note(term.span))
    return collected, index


def generic_scan(emit: ForwardEmitter, term: ir.Scan,
                 inputs: list[TensorCode]) -> list[TensorCode]:
    """The step's submodule called at every step."""
    axis = term.axis.name
    sequences = inputs[term.carries:]
    state = initial_states(emit, term, inputs)
    collected, index = _loop(emit, term, f"scan over {axis}")
    with emit.indented():
        slices: list[TensorCode] = []
        for value, wanted in zip(sequences, term.step.dom[term.carries:], strict=True):
            if axis not in value.names:
                raise CompileError(f"scan input {value.array.text()} lacks the axis {axis}")
            position = value.names.index(axis) - value.rank
            rest = ir.ArrayType(dtype=value.array.dtype, shape=ir.Shape(axes=tuple(
                a for a in value.array.shape.axes if a.name != axis)))
            name = emit.assign(f"{value.code}_step", f"{value.code}.select({position}, "
                               f"{index})")
            slices.append(emit.relayout(TensorCode(name, rest, value.batched), wanted))
        outputs = emit.term(term.step, state + slices)
        # The per-step outputs first: one may be a state the step reads, which the write-back
        # rebinds (a step that gives back its state, as the forward pass of a reverse saves).
        for bucket, result in zip(collected, outputs[term.carries:], strict=True):
            emit.emit(f"{bucket}.append({result.code})")
        emit.write_back(state, outputs[:term.carries])
    return state + stacked_results(emit, term, collected, any(v.batched for v in inputs))


def inlined_scan(emit: ForwardEmitter, term: ir.Scan, inputs: list[TensorCode],
                 plan: InlinePlan, module: str) -> list[TensorCode]:
    """The step's definition written into the loop, what does not depend on the state
    computed before it; its parameters read from `module`, the step's submodule."""
    axis = term.axis.name
    definition, flow = plan.definition, plan.flow
    state = initial_states(emit, term, inputs)
    # In the step's own frame: its declared axes trailing, the lifted axes leading.
    variables = [TensorCode(value.code, variable.array, True)
                 for value, variable in zip(state, definition.inputs[:term.carries],
                                            strict=True)]
    values: dict[Wire, TensorCode] = dict(zip(flow.inputs, variables, strict=False))
    for wire, value, variable in zip(flow.inputs[term.carries:], inputs[term.carries:],
                                     definition.inputs[term.carries:], strict=True):
        values[wire] = TensorCode(value.code, variable.array, value.batched)
    # Values that carry the scanned axis as a leading dim (the loop reads one slice of each).
    hoisted = independent_of(flow, flow.inputs[:term.carries])
    before_loop = set(flow.inputs[term.carries:]).union(
        *(node.outputs for node, early in zip(flow.nodes, hoisted, strict=True) if early))
    along = reached_from(flow, flow.inputs[term.carries:]) & before_loop
    lifted = len(plan.call.degree.axes)
    outer = emit.scope
    emit.scope = Scope(plan.spec, module, registered=True)
    # A sum of a product as one call (`compilers.muladd`) where both stand on the same side of
    # the loop: the step's matches, known only while it is written here.
    early = {id(node.term) for node, before in zip(flow.nodes, hoisted, strict=True) if before}
    planned = emit.muladds.plan_step(definition.body, lambda product, total:
                                     (id(product) in early) == (id(total) in early))
    try:
        for node, before in zip(flow.nodes, hoisted, strict=True):
            if before:
                results = emit.term(node.term, [values[w] for w in node.inputs])
                values.update(zip(node.outputs, results, strict=True))
        # Each value the loop reads a step of, cut into its steps once: `unbind`, whose
        # gradient is one `stack` (a `select` per step would add a zero array of the whole
        # sequence per step to the backward pass).
        read_in_loop = [w for node, before in zip(flow.nodes, hoisted, strict=True)
                        if not before for w in node.inputs] + list(flow.outputs)
        steps: dict[Wire, str] = {}
        for wire in dict.fromkeys(w for w in read_in_loop if w in along):
            value = values[wire]
            steps[wire] = emit.assign(f"{base_name(value.code)}_steps",
                                      f"{value.code}.unbind({-(value.rank + lifted + 1)})")
        collected, index = _loop(emit, term, f"scan over {axis}, {definition.name} inlined")
        with emit.indented():
            sliced: dict[Wire, TensorCode] = {}

            def read(wire: Wire) -> TensorCode:
                if wire not in steps:
                    return values[wire]
                if wire not in sliced:
                    name = emit.assign(f"{base_name(values[wire].code)}_step",
                                       f"{steps[wire]}[{index}]")
                    sliced[wire] = TensorCode(name, values[wire].array, True)
                return sliced[wire]

            for node, before in zip(flow.nodes, hoisted, strict=True):
                if not before:
                    results = emit.term(node.term, [read(w) for w in node.inputs])
                    values.update(zip(node.outputs, results, strict=True))
            outputs = [read(wire) for wire in flow.outputs]
            # The per-step outputs before the write-back, as in `generic_scan`.
            for bucket, result, variable in zip(collected, outputs[term.carries:],
                                                definition.outputs[term.carries:], strict=True):
                result = emit.relayout(result, variable.array)
                emit.emit(f"{bucket}.append({result.code})")
            emit.write_back(variables, outputs[:term.carries])
    finally:
        emit.scope = outer
        emit.muladds.forget(planned)
    return state + stacked_results(emit, term, collected, True)


def fused_scan(emit: ForwardEmitter, term: ir.Scan, inputs: list[TensorCode],
               plan: InlinePlan, cell: Cell, results: list[TensorCode], module: str) -> None:
    """`torch.lstm` / `torch.gru` over the sequence, its results bound to `results`' names;
    the weights read from `module`, the step's submodule. The kernel wants (steps, batch,
    features): every lifted and leading dim is one batch. A final state that nothing reads
    is not taken out of the kernel's results."""
    unread = emit.flow.unread_outputs(term) if emit.flow is not None else set()
    sequence = inputs[term.carries]
    lifted = len(plan.call.degree.axes)
    width = _value(emit, cell.input_map.term.inputs[0].array.shape.axes[0].size)
    hidden = _value(emit, cell.input_map.term.outputs[0].array.shape.axis(cell.hidden_axis).size)
    gates = 4 if cell.kind == "lstm" else 3
    carried = [cell.hidden] + ([cell.cell] if cell.cell is not None else [])
    outer = emit.scope
    emit.scope = Scope(plan.spec, module, registered=True)
    try:
        weights = [_weight_view(emit, linear, cell, gates * hidden)
                   for linear in (cell.input_map, cell.hidden_map)]
    finally:
        emit.scope = outer
    params = emit.assign(f"{plan.op.instance}_weights",
                         emit.tuple_text([w for w, _ in weights] + [b for _, b in weights]),
                         f"as {_kernel(cell)} reads them")
    states = [inputs[p].code for p in carried]
    if lifted != 1:
        _kernel_call(emit, term, plan, cell, sequence, states, params, results, width, hidden,
                     unread)
        return
    # One lifted dim and no leading dims (the common call): the arrays are in the kernel's
    # layout already, and the per-call shape work of the general form is skipped.
    # (whole-dim reads and compares: cheaper than comparing slices of the shapes)
    ranks = " and ".join([f"{sequence.code}.dim() == 3", *(f"{s}.dim() == 2" for s in states)])
    same = " == ".join([f"{sequence.code}.shape[1]", *(f"{s}.shape[0]" for s in states)])
    emit.emit(f"if {ranks} and {same}:", "(steps, batch, features) already")
    with emit.indented():
        finals = _final_names(emit, plan, states)
        (stacked,) = results[term.carries:]
        state_text = _state_text([f"{s}[None]" for s in states])
        emit.emit(f"{', '.join([stacked.code, *finals])} = {_kernel(cell)}({sequence.code}, "
                  f"{state_text}, {params}, True, 1, 0.0, False, False, False)")
        by_carry = dict(zip(carried, finals, strict=True))
        for position, result in enumerate(results[:term.carries]):
            if position not in unread:
                emit.emit(f"{result.code} = {by_carry[position]}[0]")
    emit.emit("else:")
    with emit.indented():
        _kernel_call(emit, term, plan, cell, sequence, states, params, results, width, hidden,
                     unread)


def _kernel(cell: Cell) -> str:
    return "torch.lstm" if cell.kind == "lstm" else "torch.gru"


def _state_text(states: list[str]) -> str:
    """The kernel's initial state: `h`, or the pair `(h, c)`."""
    return states[0] if len(states) == 1 else f"({', '.join(states)})"


def _final_names(emit: ForwardEmitter, plan: InlinePlan, states: list[str]) -> list[str]:
    """Fresh names for the kernel's final states, as it gives them: (1, batch, hidden)."""
    return [emit.names.fresh(f"{plan.op.instance}_last") for _ in states]


def _kernel_call(emit: ForwardEmitter, term: ir.Scan, plan: InlinePlan, cell: Cell,
                 sequence: TensorCode, states: list[str], params: str,
                 results: list[TensorCode], width: int, hidden: int, unread: set[int]) -> None:
    """The general form: the sequence's and the states' leading and lifted dims broadcast
    and flattened into the kernel's one batch dim, and its results shaped back."""
    carried = [cell.hidden] + ([cell.cell] if cell.cell is not None else [])
    lifted = len(plan.call.degree.axes)
    # The kernel's batch: the sequence's and the states' leading and lifted dims, broadcast
    # (a state may have fewer leading dims than the sequence, or more).
    time = -lifted - 2
    around = f"{sequence.code}.shape[:{time}]" + \
        (f" + {sequence.code}.shape[{time + 1}:-1]" if lifted else "")
    shapes = [around] + [f"{s}.shape[:-1]" for s in states]
    batch = emit.assign("batch", f"torch.broadcast_shapes({', '.join(shapes)})",
                        "the batch dims of the kernel")
    leading = f"{batch}[:-{lifted}]" if lifted else batch
    ordered = emit.assign(f"{base_name(sequence.code)}_by_{term.axis.name}",
                          f"{sequence.code}.expand({leading} + {sequence.code}.shape[{time}:])"
                          f".movedim({time}, 0)", f"{term.axis.name} first")
    flat = emit.assign(f"{base_name(sequence.code)}_flat",
                       f"{ordered}.reshape({ordered}.shape[0], -1, {width})")
    flat_states = [emit.assign(f"{base_name(s)}_flat",
                               f"{s}.expand({batch} + ({hidden},)).reshape(1, -1, {hidden})")
                   for s in states]
    steps = emit.names.fresh(f"{plan.op.instance}_steps")
    finals = _final_names(emit, plan, states)
    emit.emit(f"{', '.join([steps, *finals])} = {_kernel(cell)}({flat}, "
              f"{_state_text(flat_states)}, {params}, True, 1, 0.0, False, False, False)")
    by_carry = dict(zip(carried, finals, strict=True))
    for position, result in enumerate(results[:term.carries]):
        if position not in unread:
            emit.emit(f"{result.code} = {by_carry[position]}.reshape({batch} + ({hidden},))")
    (stacked,) = results[term.carries:]
    emit.emit(f"{stacked.code} = {steps}.reshape({ordered}.shape[:1] + {batch} + ({hidden},))"
              f".movedim(0, {-lifted - 2})")


def _weight_view(emit: ForwardEmitter, linear: CellLinear, cell: Cell,
                 rows: int) -> tuple[str, str]:
    """The weight as (gates * hidden, input) and the bias as (gates * hidden,), views of the
    parameters in PyTorch's layout (gate-major rows)."""
    weight, bias = emit.parameters(linear.term)
    columns = _value(emit, linear.term.params[0].array.shape.axis(linear.input_axis).size)
    weight_text = _permuted(weight, (cell.gate_axis, cell.hidden_axis, linear.input_axis))
    bias_text = _permuted(bias, (cell.gate_axis, cell.hidden_axis))
    return f"{weight_text}.reshape({rows}, {columns})", f"{bias_text}.reshape({rows})"


def _permuted(value: TensorCode, order: tuple[str, ...]) -> str:
    names = value.names
    if names == order:
        return value.code
    return f"{value.code}.permute({', '.join(str(names.index(n)) for n in order)})"


def _value(emit: ForwardEmitter, size: ir.SizeExpr) -> int:
    value = emit.sizes.value(size)
    if value is None:
        raise CompileError(f"the size {ir.size_text(size)} of a fused cell is not fixed")
    return value
