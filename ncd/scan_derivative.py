"""The reverse of a scan: a scan along the same axis in the opposite direction.

`carry[l+1], out[l] = step(carry[l], x[l])` is reversed in two parts, each built from the IR's
own constructs and two helper definitions that are checked definitions like any other:

- the forward block runs the scan with the step `STEP_saving`, which is `STEP` also giving back
  the states it reads: the state entering each step, stacked along the axis, is a saved wire;
- the backward block runs a reverse scan (`ir.Scan.reverse`) whose step is `STEP_grad_step`,
  the step's backward definition `STEP_grad` with the gradients of the states first (what a
  scan carries): it carries the gradient of the state, reads the saved state, `x[l]` and the
  gradient of `out[l]`, and gives `dx[l]` and the step's parameter gradients at each step.
  Those are summed over the axis afterwards (the steps share the parameters); the gradient of
  the initial state is the reverse scan's final state, that of the final state its initial
  one (zeros where nothing reads the final state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd.context import Step, Value, array, port
from ncd.ops.declaration import Unsupported
from ncd.wiring import build_term

if TYPE_CHECKING:
    from ncd.derivative import Reverser


def step_call(term: ir.Scan) -> tuple[ir.Broadcasted, ir.CallOp]:
    """The call of the step definition a scan runs (what the elaborator makes)."""
    step = term.step
    if not isinstance(step, ir.Broadcasted) or not isinstance(step.op, ir.CallOp) or \
            step.op.each is not None or step.params:
        raise Unsupported("a scan whose step is not a plain call of a definition", term.span,
                          "the reverse of a scan reverses a call of its step definition")
    return step, step.op


def _lifted(degree: ir.Shape, array_type: ir.ArrayType) -> ir.ArrayType:
    """The array with the lifted axes first, as a port of the step's call tiles it."""
    return array(array_type.dtype, [*degree.axes, *array_type.shape.axes])


def _stacked(axis: ir.Axis, array_type: ir.ArrayType) -> ir.ArrayType:
    return array(array_type.dtype, [axis, *array_type.shape.axes])


def _fresh_variable(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def saving_definition(rev: Reverser, callee: ir.Definition, carries: int) -> ir.Definition:
    """`STEP_saving`: the step definition, also giving back the states it reads (made once)."""
    key = ("saving", callee.name)
    found = rev.helpers.get(key)
    if found is not None:
        return found
    inputs = [Value(v.array, v.name, callee.span) for v in callee.inputs]
    outputs = [Value(v.array, v.name, callee.span) for v in callee.outputs]
    taken = {v.name for v in (*callee.inputs, *callee.outputs)}
    saved = [ir.Variable(name=_fresh_variable(f"{v.name}_saved", taken), array=v.array)
             for v in callee.inputs[:carries]]
    body = build_term([Step(callee.body, inputs, outputs)], inputs,
                      [*outputs, *inputs[:carries]], callee.span)
    made = ir.Definition(
        name=rev.definition_name(f"{callee.name}_saving"),
        doc=f"`{callee.name}`, also giving back the states it reads (the backward pass of a "
            "scan saves them).",
        inputs=callee.inputs, outputs=(*callee.outputs, *saved), params=callee.params,
        body=body, span=callee.span)
    rev.helpers[key] = made
    return made


def saving_scan(rev: Reverser, term: ir.Scan, site: str) -> ir.Scan:
    """The scan as the forward block runs it: its step, called at `site`, is `STEP_saving`, and
    the states entering each step are its last outputs, stacked along the axis."""
    step, op = step_call(term)
    callee = rev.program.definition(op.definition)
    saving = saving_definition(rev, callee, term.carries)
    saved = [_lifted(step.degree, v.array) for v in callee.inputs[:term.carries]]
    call = step.model_copy(update={
        "op": op.model_copy(update={"definition": saving.name, "instance": site}),
        "cod": (*step.cod, *saved),
        "outputs": (*step.outputs, *(port(a, v.array.names, step.degree, v.name)
                                     for a, v in zip(saved, saving.outputs[len(step.cod):],
                                                     strict=True)))})
    return term.model_copy(update={
        "cod": (*term.cod, *(_stacked(term.axis, a) for a in saved)), "step": call,
        "step_name": saving.name})


def grad_step_definition(rev: Reverser, callee: ir.Definition, carries: int) -> ir.Definition:
    """`STEP_grad_step`: `STEP_grad` with the gradients of the real states first, then the
    step's inputs, then the gradients of its real per-step outputs (made once). Its outputs
    are `STEP_grad`'s: those of the real states come first already."""
    key = ("grad_step", callee.name)
    found = rev.helpers.get(key)
    if found is not None:
        return found
    grad = rev.backward_of(callee.name).definition
    values = [Value(v.array, v.name, callee.span) for v in grad.inputs]
    outputs = [Value(v.array, v.name, callee.span) for v in grad.outputs]
    count = len(callee.inputs)
    real_states = sum(1 for v in callee.outputs[:carries] if v.array.dtype.kind == "R")
    seeds = values[count:]
    order = [*seeds[:real_states], *values[:count], *seeds[real_states:]]
    body = build_term([Step(grad.body, values, outputs)], order, outputs, callee.span)
    made = ir.Definition(
        name=rev.definition_name(f"{callee.name}_grad_step"),
        doc=f"`{grad.name}` with the gradients of the states first: the step of the reverse "
            f"scan of `{callee.name}`.",
        inputs=tuple(ir.Variable(name=v.name, array=v.array) for v in order),
        outputs=grad.outputs, params=grad.params, body=body, span=callee.span)
    rev.helpers[key] = made
    return made


def reverse_scan(rev: Reverser, term: ir.Scan, inputs: Sequence[Value],
                 saved: Sequence[Value], grads: Sequence[Value]
                 ) -> tuple[list[Value | None], dict[str, Value]]:
    """The reverse scan of `term`, recorded on `rev`: from the scan's inputs, the states it
    saved and the gradients of its outputs, the gradients of its inputs (None for those not
    real) and of its step's parameters (by path, `instance.name`)."""
    step, op = step_call(term)
    callee = rev.program.definition(op.definition)
    backward = rev.backward_of(callee.name)
    for new, old in backward.aliases:
        rev.aliases[f"{op.instance}.{new}"] = f"{op.instance}.{old}"
    wrapper = grad_step_definition(rev, callee, term.carries)
    carries, degree = term.carries, step.degree
    states = [j for j in range(carries) if callee.outputs[j].array.dtype.kind == "R"]
    outs = [j for j in range(carries, len(callee.outputs))
            if callee.outputs[j].array.dtype.kind == "R"]
    real = [i for i, v in enumerate(callee.inputs) if v.array.dtype.kind == "R"]
    # The step's call: ports by axis name, the lifted axes first where the step makes them.
    reads: list[ir.Port] = [port(term.cod[j], callee.outputs[j].array.names, degree, None)
                            for j in states]
    reads += [port(_lifted(degree, v.array), v.array.names, degree, v.name)
              for v in callee.inputs[:carries]]
    reads += list(step.inputs[carries:])
    reads += [port(step.cod[j], callee.outputs[j].array.names, degree, None) for j in outs]
    made = [term.dom[i] if i < carries else _lifted(degree, callee.inputs[i].array)
            for i in real]
    params = wrapper.outputs[len(real):]
    made += [_lifted(degree, v.array) for v in params]
    call = ir.Broadcasted(
        dom=tuple(p.array for p in reads), cod=tuple(made), span=term.span,
        op=op.model_copy(update={"definition": wrapper.name}), degree=degree,
        inputs=tuple(reads),
        outputs=tuple(port(a, v.array.names, degree, None)
                      for a, v in zip(made, wrapper.outputs, strict=True)))
    per_step = len(states)
    scan = ir.Scan(
        dom=(*(term.cod[j] for j in states), *(v.array for v in saved),
             *term.dom[carries:], *(term.cod[j] for j in outs)),
        cod=(*made[:per_step], *(_stacked(term.axis, a) for a in made[per_step:])),
        span=term.span, axis=term.axis, carries=per_step, step=call,
        step_name=wrapper.name, reverse=not term.reverse)
    read = [*(grads[j] for j in states), *saved, *inputs[carries:], *(grads[j] for j in outs)]
    results = [rev.value(a, f"d{v.name}") for a, v in zip(scan.cod, wrapper.outputs,
                                                          strict=True)]
    rev.add_step(scan, read, results)
    d_inputs: list[Value | None] = [None] * len(inputs)
    for i, result in zip(real, results[:len(real)], strict=True):
        d_inputs[i] = result if i < carries else rev.sum_to(result, inputs[i].array)
    called: dict[str, Value] = {}
    for variable, path, result in zip(params, backward.gradient_of[len(real):],
                                      results[len(real):], strict=True):
        full = f"{op.instance}.{path}"
        rev.called_params.setdefault(full, variable.array)
        called[full] = rev.sum_to(result, variable.array)
    return d_inputs, called
