"""The reverse derivative of a checked definition, built as another checked definition.

`backward_definition(program, name)` returns the definition `NAME_grad` of the backward pass:

- its inputs are the forward inputs, then one gradient wire per real output of the forward
  definition (`dY`); its outputs are the gradient of each real input (`dX`), then of each
  learned parameter (`dW`), in the order the forward definition declares them. A definition
  whose outputs are all Boolean (a circuit of gates) has its backward definition over Z2:
  the same with Boolean outputs, inputs and parameters, its sums XORs (`Reverser.field`);
- its parameters are the forward definition's, under the same names: the generated module
  of the backward definition has the forward module's state-dict keys, and reads the
  forward module's weights (`ncd.api.Definition.to_torch_grad` ties them);
- its body is two blocks: `forward` recomputes the forward pass, `backward` runs the
  reverse rules in the opposite order. The wires from the first block to the second are
  the saved forward values: visible in the diagram, and listed (`Backward.saved`).

Everything is built from the IR's own constructs, so that the checker's invariants hold and
every stage (the renderer, the compiler, the reference interpreter) reads the result as any
other definition. Identities and rearrangements are routing only: a wire read twice (a copy)
receives a gradient from each reader and they are added (the reverse of a copy is an add, of
a delete a zero). Each broadcasted operation's rule is its declaration's `reverse`
(`ncd.ops.*`); reindexings have their adjoint here (a sum over the preimage of each index,
which for a convolution window is the transposed convolution); a block becomes a block of the
backward pass, whose steps come in the reverse order; a scan a reverse scan
(`ncd.scan_derivative`); the copies of a block repeated with parameters of its own become one
block per copy (`ir.CopyOf`), each reading its copy's parameters. A construct with no rule yet
is an input error (E320) at its source, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import assert_never

from ncd import ir
from ncd.compilers.naming import MODULE_ATTRIBUTES, sanitize, snake_case
from ncd.context import BlockGroup, Step, Value, array, port, rearrangement_map, shape
from ncd.dataflow import dataflow
from ncd.diagnostics import Diagnostic, NcdError
from ncd.operators import declaration
from ncd.ops.declaration import Gradients, Unsupported
from ncd.ops.machines import machine_reverse
from ncd.ops.normalisation import batchnorm_recomputed
from ncd.scan_derivative import reverse_scan, saving_scan, step_call
from ncd.sizes import from_ir
from ncd.wiring import build_term

__all__ = ["Backward", "Reverser", "Unsupported", "backward_definition", "first_applying",
           "with_backward"]

NOT_YET_REVERSED: dict[type[ir.Node], str] = {}
"""Operators whose declaration has no reverse rule yet, each with the reason (the coverage
test lists these; `ncd` reports their use as E320)."""


@dataclass(frozen=True)
class Backward:
    """The backward definition and what it keeps of the forward pass."""

    definition: ir.Definition
    saved: tuple[ir.Variable, ...]
    """The forward values the backward block reads (the saved wires), by name and type."""
    gradient_of: tuple[str, ...]
    """For each output of the backward definition, the forward input or parameter it is the
    gradient of: a parameter of a called definition, or of a copy, by its path as the forward
    module keys it (`instance.name`, `instance.2.name` for a call with parameters for each
    index, `block_title.3.name` for a copy of a repeated block)."""
    aliases: tuple[tuple[str, str], ...] = ()
    """Call-site paths of the backward definition whose parameters are those of a call-site
    path of the forward definition (`Reverser.aliases`, with those of the callees)."""
    crossing: tuple[str, ...] = ()
    """The names of the `forward` block's outputs, in order: the wires that cross to the
    `backward` block (and, in a lens definition, the forward results first)."""
    results: int = 0
    """How many forward results lead the definition's outputs: 0 in a backward definition,
    the forward definition's output count in a lens definition (`lens=True`)."""
    helpers: tuple[ir.Definition, ...] = ()
    """Definitions the backward pass calls that are not backward definitions (a scan's
    `STEP_saving` and `STEP_grad_step`, `ncd.scan_derivative`), those of the callees too."""


@dataclass(eq=False)
class _Entry:
    """One computing node of the forward pass as recorded: its term, the values it read and
    made; for a block, the entries of its body."""

    term: ir.Term
    inputs: list[Value]
    outputs: list[Value]
    body: list[_Entry] = field(default_factory=list)
    saved: list[Value] = field(default_factory=list)
    """For a scan, the states entering each step, stacked along its axis."""


class Reverser:
    """Builds the steps of the backward definition; the reverse rules call its helpers, each of
    which records one broadcasted operation (or reindexing) and returns the values it makes."""

    def __init__(self, program: ir.Program, definition: ir.Definition, training: bool = True):
        self.program = program
        self.definition = definition
        self.training = training
        """The mode the backward definition differentiates (`batchnorm` reads the batch's
        statistics in training mode, its running ones in evaluation mode); a generated module
        starts in training mode."""
        self.normalised: dict[int, tuple[Value, Value]] = {}
        """For the output of each batch normalisation recomputed by the forward block, its
        normalised input and reciprocal root (`ncd.ops.normalisation.batchnorm_recomputed`),
        which its reverse rule reads (saved values)."""
        self.params = {p.name: p for p in definition.params}
        self.steps: list[Step | BlockGroup] = []
        self.param_wires: dict[tuple[int, str], Value] = {}
        self.stand_ins: dict[int, ir.Parameter] = {}
        self.span: ir.Span | None = definition.span
        self.field: ir.DatatypeKind = "B" if definition.outputs and all(
            v.array.dtype.kind == "B" for v in definition.outputs) else "R"
        """Where the gradients live: the reals, or Z2 for a Boolean circuit (a definition
        whose outputs are all B): its gradient wires are B arrays, added by XOR."""
        self.callees: dict[str, Backward] = {}
        """The backward definitions of the definitions called, by the callee's name, in the
        order they were made (a callee's own callees first); shared by nested reversers."""
        self.aliases: dict[str, str] = {}
        """Call sites of the backward definition that stand for a call site of the forward
        one (`attention_forward` -> `attention`): the forward pass recomputed inside the
        backward definition calls the callee at a site of its own, since the forward call's
        site is taken by the call of the callee's backward definition. Its parameters are the
        forward call site's (`ncd.api.share_parameters` ties them)."""
        self.instances = {t.op.instance for t in ir.walk(definition.body)
                          if isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.CallOp)}
        self.called_params: dict[str, ir.ArrayType] = {}
        """The parameters of called definitions, and of the copies of repeated blocks, that
        get gradients, by their path (`instance.name`, `block_title.3.name`), in the order
        first met."""
        self.helpers: dict[tuple[str, str], ir.Definition] = {}
        """The helper definitions of scans' reverses, by role and step definition (made once,
        shared by nested reversers)."""
        self.copy_path = ""
        """The path of the copy of a repeated block being recorded or reversed, as the
        generated module keys its parameters (`transformer_layer.3.`; empty outside copies)."""
        self.copies: list[str] = []
        """The paths of the copies, in the order the forward pass runs them."""
        self.forward_sites: dict[str, str] = {}
        """The call site at which the forward block recomputes each call site (`attention`
        -> `attention_forward`): the same for every copy of a block."""

    def site(self, name: str) -> str:
        """The path of a parameter or call site of the definition as the generated module
        keys it: inside a copy of a repeated block, under that copy."""
        return self.copy_path + name

    def backward_of(self, name: str) -> Backward:
        """The backward definition of a called definition (made once)."""
        found = self.callees.get(name)
        if found is None:
            nested = Reverser(self.program, self.program.definition(name), self.training)
            nested.callees = self.callees
            nested.helpers = self.helpers
            found = _build(nested, self._taken())
            self.callees[name] = found
        return found

    def definition_name(self, stem: str) -> str:
        """A name for a new definition that no definition of the program, backward definition
        or helper has."""
        return _fresh(stem, self._taken())

    def _taken(self) -> set[str]:
        return {d.name for d in self.program.definitions} | \
            {b.definition.name for b in self.callees.values()} | \
            {d.name for d in self.helpers.values()}

    # ---- values and steps
    def value(self, array_type: ir.ArrayType, name: str) -> Value:
        return Value(array_type, name, self.span)

    def add_step(self, term: ir.Term, inputs: Sequence[Value], outputs: Sequence[Value]) -> None:
        self.steps.append(Step(term, list(inputs), list(outputs)))

    def op(self, op: ir.Operator, inputs: Sequence[tuple[Value, Sequence[str]]],
           outputs: Sequence[tuple[ir.ArrayType, Sequence[str], str]],
           params: Sequence[tuple[ir.Parameter, Sequence[str]]] = (),
           degree: Sequence[ir.Axis] | None = None) -> list[Value]:
        """One broadcasted operation; the degree defaults to the first output's tiling axes.
        A parameter's stand-in (`parameter`) among the inputs of a contraction, product or
        sum is read on a parameter port, as `W` in `sum(c) X[c] * W[o, c]`; elsewhere the
        parameter is put onto a wire first."""
        if degree is None:
            first, targets, _ = outputs[0]
            degree = [a for a in first.shape.axes if a.name not in targets]
        degree_shape = shape(degree)
        reads: list[tuple[Value, Sequence[str]]] = []
        param_reads = list(params)
        for value, targets in inputs:
            parameter = self.stand_ins.get(value.id)
            if parameter is not None and isinstance(op, _READS_PARAMETERS):
                param_reads.append((parameter, targets))
            else:
                reads.append((self.on_wire(value), targets))
        made = [self.value(a, n) for a, _, n in outputs]
        term = ir.Broadcasted(
            dom=tuple(v.array for v, _ in reads), cod=tuple(v.array for v in made),
            span=self.span, op=op, degree=degree_shape,
            inputs=tuple(port(v.array, t, degree_shape, v.name) for v, t in reads),
            params=tuple(port(p.array, t, degree_shape, p.name) for p, t in param_reads),
            outputs=tuple(port(a, t, degree_shape, v.name)
                          for (a, t, _), v in zip(outputs, made, strict=True)))
        self.add_step(term, [v for v, _ in reads], made)
        return made

    def inverse(self, op: ir.Operator, term: ir.Broadcasted, grads: Sequence[Value],
                made: Sequence[ir.Port] | None = None) -> list[Value]:
        """`op` run backwards through `term`'s weave: it reads the gradients of the term's
        outputs as their ports do, and makes arrays typed as the term's inputs' ports (or
        `made`): the reverse of a concat is a split, of a rename the inverse rename."""
        ports = term.inputs if made is None else made
        return self.op(op, [(g, p.targets) for g, p in zip(grads, term.outputs, strict=True)],
                       [(p.array, p.targets, f"d{p.name or 'x'}") for p in ports],
                       degree=term.degree.axes)

    def parameter(self, name: str) -> Value:
        """A stand-in for a parameter of the definition: read on a parameter port by the
        operations that have them, put onto a wire (`on_wire`) for the others."""
        parameter = self.params[name]
        made = Value(parameter.array, name, self.span)
        self.stand_ins[made.id] = parameter
        return made

    def on_wire(self, value: Value) -> Value:
        """The value itself, or for a parameter's stand-in the parameter put onto a wire (once
        per list of steps)."""
        parameter = self.stand_ins.get(value.id)
        if parameter is None:
            return value
        key = (id(self.steps), parameter.name)
        found = self.param_wires.get(key)
        if found is not None:
            return found
        degree = shape([])
        op: ir.Operator = ir.BufferOp() if parameter.buffer else ir.ParameterOp()
        made = self.value(parameter.array, parameter.name)
        term = ir.Broadcasted(
            dom=(), cod=(parameter.array,), span=self.span, op=op, degree=degree, inputs=(),
            params=(port(parameter.array, parameter.array.names, degree, parameter.name),),
            outputs=(port(parameter.array, parameter.array.names, degree, parameter.name),))
        self.add_step(term, [], [made])
        self.param_wires[key] = made
        return made

    # ---- entrywise arithmetic (axes missing from an operand are broadcast)
    def _entrywise(self, op: ir.Operator, operands: Sequence[Value], name: str,
                   like: ir.ArrayType | None = None) -> Value:
        if like is None:
            axes: dict[str, ir.Axis] = {}
            for operand in operands:
                for axis in operand.array.shape.axes:
                    axes.setdefault(axis.name, axis)
            like = array(ir.REALS, list(axes.values()))
        return self.op(op, [(v, ()) for v in operands], [(like, (), name)])[0]

    def add(self, *operands: Value, like: ir.ArrayType | None = None) -> Value:
        if len(operands) == 1 and (like is None or operands[0].array == like):
            return operands[0]
        if operands[0].array.dtype.kind == "B":  # addition in Z2
            total = operands[0]
            for operand in operands[1:]:
                total = self.gate("xor", total, operand)
            return total if like is None else self.expand(total, like)
        return self._entrywise(ir.AddOp(), operands, "sum", like)

    def gate(self, gate: ir.BooleanGate, *operands: Value) -> Value:
        """A Boolean gate on B arrays; axes missing from an operand are broadcast."""
        like = array(ir.Datatype(kind="B"), _union_axes(*operands))
        return self._entrywise(ir.GateOp(gate=gate), operands, gate, like)

    def multiply(self, *operands: Value, like: ir.ArrayType | None = None) -> Value:
        return self._entrywise(ir.MultiplyOp(), operands, "product", like)

    def divide(self, numerator: Value, denominator: Value) -> Value:
        return self._entrywise(ir.BinaryOp(function="divide"), (numerator, denominator),
                               "quotient")

    def subtract(self, left: Value, right: Value) -> Value:
        return self.add(left, self.scale(right, -1.0))

    def scale(self, operand: Value, factor: float, text: str | None = None) -> Value:
        return self._entrywise(ir.ScaleOp(factor=factor, text=text or _number(factor)),
                               (operand,), "scaled")

    def constant(self, operand: Value, op: str, constant: float, *,
                 constant_first: bool = False) -> Value:
        """`x + c`, `x - c`, `c - x`, `c / x`, `x ^ c` (`op` one of `+ - / ^`)."""
        assert op in ("+", "-", "/", "^")
        node = ir.ConstantOp(op=op, constant=constant, text=_number(constant),  # type: ignore[arg-type]
                             constant_first=constant_first)
        return self._entrywise(node, (operand,), "shifted")

    def function(self, function: ir.ElementwiseFunction, operand: Value) -> Value:
        return self._entrywise(ir.ElementwiseOp(function=function), (operand,), function)

    def where(self, condition: Value, chosen: Value, otherwise: Value) -> Value:
        return self._entrywise(ir.WhereOp(), (condition, chosen, otherwise), "chosen",
                               like=array(ir.REALS, _union_axes(chosen, otherwise, condition)))

    def constant_array(self, array_type: ir.ArrayType, value: int) -> Value:
        """An array of one integer everywhere (an index value with no coefficients)."""
        op = ir.IndexValueOp(coefficients=(), offset=value, text=str(value))
        real = array(ir.REALS, array_type.shape.axes)
        return self.op(op, [], [(real, real.names, "zeros" if value == 0 else "ones")],
                       degree=[])[0]

    def zeros(self, array_type: ir.ArrayType) -> Value:
        if array_type.dtype.kind == "B":
            raise Unsupported("a Boolean wire that no gradient reaches", self.span,
                              "a zero gradient over B is not built yet: make every input and "
                              "parameter of the circuit reach its output")
        return self.constant_array(array_type, 0)

    def step(self, operand: Value) -> Value:
        """1 where the entry is positive, else 0: `relu(sign(x))`."""
        return self.function("relu", self.function("sign", operand))

    # ---- axes
    def contract(self, like: ir.ArrayType, operands: Sequence[Value], scale: float = 1.0,
                 scale_text: str | None = None, name: str = "contracted") -> Value:
        """`Y[like] = scale * sum(...) prod(operands)` summing every axis not in `like`; an
        axis of `like` that no operand has is broadcast (the entries are copied along it)."""
        present = {n for v in operands for n in v.array.names}
        kept = [a for a in like.shape.axes if a.name in present]
        partial = array(ir.REALS, kept)
        contracted = tuple(dict.fromkeys(n for v in operands for n in v.array.names
                                         if n not in partial.names))
        if len(operands) == 1 and not contracted and scale == 1.0:
            result = self.on_wire(operands[0])
        else:
            op = ir.EinsumOp(contracted=contracted, scale=scale, scale_text=scale_text)
            result = self.op(op, [(v, tuple(n for n in v.array.names if n in contracted))
                                  for v in operands], [(partial, (), name)])[0]
        return self.expand(result, like)

    def expand(self, operand: Value, like: ir.ArrayType) -> Value:
        """`operand` with the axes of `like`, in its order: copied along the axes it lacks
        (a reindexing whose map ignores them), reordered when only the order differs."""
        if operand.array.names == like.names:
            return operand
        operand = self.on_wire(operand)
        eta = rearrangement_map(like.shape, operand.array.shape)
        target = array(operand.array.dtype, like.shape.axes)
        made = self.value(target, operand.name)
        self.add_step(ir.Reindexing(dom=(operand.array,), cod=(target,), span=self.span,
                                    eta=eta, name=made.name, source=operand.name),
                      [operand], [made])
        return made

    def sum_to(self, operand: Value, like: ir.ArrayType) -> Value:
        """`operand` summed over the axes `like` lacks, with the axes of `like` in its order
        (the reverse of broadcasting an array along those axes)."""
        extra = tuple(n for n in operand.array.names if n not in like.names)
        if not extra:
            return self.expand(operand, like)
        if operand.array.dtype.kind == "B":  # a sum in Z2: the XOR along those axes
            return self.op(ir.GateOp(gate="xor", axes=extra), [(operand, extra)],
                           [(array(operand.array.dtype, like.shape.axes), (), "summed")])[0]
        target = array(ir.REALS, like.shape.axes)
        return self.op(ir.ReduceOp(function="sum", axes=extra), [(operand, extra)],
                       [(target, (), "summed")])[0]

    def reduce(self, function: ir.ReduceFunction, operand: Value, axes: Sequence[str]) -> Value:
        if operand.array.dtype.kind == "B" and function == "sum":
            kept_axes = [a for a in operand.array.shape.axes if a.name not in axes]
            return self.sum_to(operand, array(operand.array.dtype, kept_axes))
        kept = array(ir.REALS, [a for a in operand.array.shape.axes if a.name not in axes])
        return self.op(ir.ReduceOp(function=function, axes=tuple(axes)),
                       [(operand, tuple(axes))], [(kept, (), function)])[0]

    def rename(self, operand: Value, mapping: dict[str, str]) -> Value:
        """The same entries with axes renamed (`old -> new`), as a reindexing."""
        if not any(n in mapping for n in operand.array.names):
            return operand
        operand = self.on_wire(operand)
        axes = [ir.Axis(name=mapping.get(a.name, a.name), size=a.size)
                for a in operand.array.shape.axes]
        target = array(operand.array.dtype, axes)
        eta = ir.StrideMorphism(
            domain=target.shape, codomain=operand.array.shape,
            matrix=tuple(tuple(1 if j == i else 0 for j in range(len(axes)))
                         for i in range(len(axes))),
            offset=(0,) * len(axes))
        made = self.value(target, operand.name)
        self.add_step(ir.Reindexing(dom=(operand.array,), cod=(target,), span=self.span,
                                    eta=eta, name=made.name, source=operand.name),
                      [operand], [made])
        return made

    def select(self, operand: Value, axis: str, index: int) -> Value:
        """The entries at `index` of `axis`, without that axis (`X[i, m]` -> `X[3, m]`), as
        a reindexing whose row for `axis` is the constant `index`."""
        operand = self.on_wire(operand)
        source = operand.array.shape
        kept = [a for a in source.axes if a.name != axis]
        target = array(operand.array.dtype, kept)
        names = [a.name for a in kept]
        eta = ir.StrideMorphism(
            domain=target.shape, codomain=source,
            matrix=tuple(tuple(1 if a.name == n else 0 for n in names) for a in source.axes),
            offset=tuple(index if a.name == axis else 0 for a in source.axes))
        made = self.value(target, f"{operand.name}_{index}")
        self.add_step(ir.Reindexing(dom=(operand.array,), cod=(target,), span=self.span,
                                    eta=eta, name=made.name, source=operand.name),
                      [operand], [made])
        return made

    def size_of(self, axes: Sequence[ir.Axis]) -> int | None:
        """The number of entries along `axes`, when every size is fixed."""
        total = 1
        for axis in axes:
            value = from_ir(axis.size).value
            if value is None:
                return None
            total *= value
        return total

    def divide_by_count(self, operand: Value, axes: Sequence[ir.Axis]) -> Value:
        """`operand / |axes|`: a scale when the sizes are fixed, else a division by the sum of
        ones along them."""
        count = self.size_of(axes)
        if count is not None:
            text = "1/" + "".join(f"|{a.name}|" for a in axes)
            return self.scale(operand, 1.0 / count, text)
        ones = self.constant_array(array(ir.REALS, axes), 1)
        total = self.reduce("sum", ones, [a.name for a in axes])
        return self.divide(operand, total)


_READS_PARAMETERS = (ir.EinsumOp, ir.MultiplyOp, ir.AddOp)
"""The operators whose operands may be parameter ports (`sum(c) X[c] * W[o, c]`, `X * g`,
`X + b`)."""


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else f"{value:.6g}"


def _union_axes(*values: Value) -> list[ir.Axis]:
    axes: dict[str, ir.Axis] = {}
    for value in values:
        for axis in value.array.shape.axes:
            axes.setdefault(axis.name, axis)
    return list(axes.values())


# --------------------------------------------------------------------------------------
# The forward pass, recorded
# --------------------------------------------------------------------------------------


def _record(term: ir.Term, inputs: Sequence[Value], rev: Reverser,
            produced: list[Value]) -> tuple[list[Value], list[_Entry]]:
    """Add the computing nodes of `term` to `rev.steps` (blocks as nested groups), reading
    `inputs`; returns the values of its outputs and the entries for the backward pass."""
    flow = dataflow(term)
    wires: dict[int, Value] = dict(zip(flow.inputs, inputs, strict=True))
    entries: list[_Entry] = []
    for node in flow.nodes:
        read = [wires[w] for w in node.inputs]
        part = node.term
        match part:
            case ir.Broadcasted() if isinstance(part.op, ir.BatchNormOp):
                # Written out in the mode differentiated: the operation itself would follow
                # the module's mode and move the running statistics a second time.
                start = len(rev.steps)
                made = [batchnorm_recomputed(rev, part, read[0])]
                produced.extend(v for s in rev.steps[start:] if isinstance(s, Step)
                                for v in s.outputs)
                entries.append(_Entry(part, read, made))
            case ir.Broadcasted() | ir.Reindexing() | ir.Machine():
                made = [Value(a, _port_name(part, i), part.span)
                        for i, a in enumerate(part.cod)]
                rev.add_step(_recomputed(part, rev), read, made)
                produced.extend(made)
                entries.append(_Entry(part, read, made))
            case ir.Scan():
                # Run with a step that also gives back the states it reads: they are saved.
                _, step_op = step_call(part)
                saving = saving_scan(rev, part, _forward_site(step_op.instance, rev))
                made = [Value(a, _port_name(part, i), part.span)
                        for i, a in enumerate(part.cod)]
                saved = [Value(a, f"{v.name}_saved", part.span) for a, v in
                         zip(saving.cod[len(part.cod):], read[:part.carries], strict=True)]
                rev.add_step(saving, read, [*made, *saved])
                produced.extend([*made, *saved])
                entries.append(_Entry(part, read, made, saved=saved))
            case ir.Block() if part.repeat > 1 and not part.shared:
                made = read
                for index in range(part.repeat):
                    made = _record_copy(part, index, made, rev, produced, entries)
            case ir.Block():
                outer = rev.steps
                group = BlockGroup(title=part.title, color=part.color, repeat=1, shared=False,
                                   span=part.span or _no_span(rev), steps=[], reads=[],
                                   outputs=[])
                rev.steps = group.steps
                inner_produced: list[Value] = []
                current = read
                body: list[_Entry] = []
                for _ in range(part.repeat):
                    current, copy = _record(part.body, current, rev, inner_produced)
                    body.extend(copy)
                rev.steps = outer
                group.bound = inner_produced
                group.reads = _outside_reads(group.steps)
                outer.append(group)
                produced.extend(inner_produced)
                made = current
                entries.append(_Entry(part, read, list(made), body))
            case ir.Identity() | ir.Rearrangement() | ir.Composed() | ir.Product():
                raise AssertionError("dataflow leaves only computing nodes")
            case _:
                assert_never(part)
        for wire, value in zip(node.outputs, made, strict=True):
            wires[wire] = value
    return [wires[w] for w in flow.outputs], entries


def _record_copy(block: ir.Block, index: int, read: list[Value], rev: Reverser,
                 produced: list[Value], entries: list[_Entry]) -> list[Value]:
    """Copy `index` of a block repeated with parameters of its own, recorded as a block of
    its own that reads that copy's parameters (`ir.CopyOf`); returns the values it makes."""
    copy_of = ir.CopyOf(title=block.title, index=index, copies=block.repeat)
    term = block.model_copy(update={"title": f"{block.title}, copy {index}", "repeat": 1,
                                    "copy_of": copy_of})
    outer, outer_path = rev.steps, rev.copy_path
    group = BlockGroup(title=term.title, color=block.color, repeat=1, shared=False,
                       span=block.span or _no_span(rev), steps=[], reads=[], outputs=[],
                       copy_of=copy_of)
    rev.steps = group.steps
    rev.copy_path = copy_path(rev.copy_path, copy_of)
    rev.copies.append(rev.copy_path)
    inner_produced: list[Value] = []
    made, body = _record(block.body, read, rev, inner_produced)
    rev.steps, rev.copy_path = outer, outer_path
    group.bound = inner_produced
    group.reads = _outside_reads(group.steps)
    outer.append(group)
    produced.extend(inner_produced)
    entries.append(_Entry(term, read, list(made), body))
    return made


def copy_path(outer: str, copy_of: ir.CopyOf) -> str:
    """The path of a copy's parameters (`transformer_layer.3.`): the generated module keeps a
    block's copies in an `nn.ModuleList` named after its title (docs/compiling.md)."""
    return f"{outer}{snake_case(copy_of.title)}.{copy_of.index}."


def _check_copy_names(term: ir.Term) -> None:
    """The blocks repeated with parameters of their own must be found by their title in the
    forward module (`copy_path`): in each class, no two of them share a name, and none is
    renamed for a parameter, a call site or an attribute of `nn.Module` of that name."""
    blocks: list[ir.Block] = []
    names: set[str] = set()

    def visit(part: ir.Term) -> None:
        if isinstance(part, ir.Block) and part.repeat > 1 and not part.shared:
            blocks.append(part)
            _check_copy_names(part.body)  # its copies' class
            return
        if isinstance(part, ir.Broadcasted):
            names.update(p.name for p in part.params if p.name is not None)
            if isinstance(part.op, ir.CallOp):
                names.add(sanitize(part.op.instance, "module"))
        for child in ir.children(part):
            visit(child)

    visit(term)
    for index, block in enumerate(blocks):
        name = snake_case(block.title)
        if name in names or name in MODULE_ATTRIBUTES or name.startswith("__") or \
                any(snake_case(b.title) == name for b in blocks[:index]):
            raise Unsupported(
                f"the copies of the block \"{block.title}\" are not kept under `{name}` in the "
                "generated module (another block, a parameter or a call site has that name)",
                block.span, "give the block a title of its own")


def _recomputed(term: ir.Term, rev: Reverser) -> ir.Term:
    """The term as the forward block runs it: a call at a site of its own (see
    `Reverser.aliases`), the same site for every copy of a block."""
    if isinstance(term, ir.Machine):
        return term.model_copy(update={"body": _recomputed(term.body, rev)})
    if not (isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp)):
        return term
    if first_applying(rev.program, term.op.definition,
                      lambda op: isinstance(op, ir.BatchNormOp)) is not None:
        raise Unsupported(
            f"the call of `{term.op.definition}`, which applies `batchnorm`, would be "
            "recomputed by the backward pass", term.span,
            "the recomputed call would follow the module's mode and update the running "
            "statistics again; write the callee's body out in the caller")
    site = _forward_site(term.op.instance, rev)
    return term.model_copy(update={"op": term.op.model_copy(update={"instance": site})})


def _forward_site(instance: str, rev: Reverser) -> str:
    """The call site at which the forward block recomputes the call at `instance` (or a
    scan's step there): a site of its own, the same for every copy of a block, aliased to
    it (under the copy's path inside a copy)."""
    site = rev.forward_sites.get(instance)
    if site is None:
        # Numbered, not `_`-suffixed: the compiler names a call site's attribute without
        # trailing underscores, so `cell_forward_` would share `cell_forward`'s.
        site, count = f"{instance}_forward", 1
        while site in rev.instances:
            count += 1
            site = f"{instance}_forward_{count}"
        rev.instances.add(site)
        rev.forward_sites[instance] = site
    rev.aliases[rev.site(site)] = rev.site(instance)
    return site


def first_applying(program: ir.Program, name: str,
                   wanted: Callable[[ir.Operator], bool]) -> str | None:
    """The first definition, of `name` and those it calls, with an operation that `wanted`
    accepts (`batchnorm`, dropout with p > 0, ...); None when there is none."""
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for term in ir.walk(program.definition(current).body):
            if not isinstance(term, ir.Broadcasted):
                continue
            if wanted(term.op):
                return current
            if isinstance(term.op, ir.CallOp):
                pending.append(term.op.definition)
    return None


def _port_name(term: ir.Term, index: int) -> str:
    if isinstance(term, ir.Broadcasted):
        name = term.outputs[index].name
        if name:
            return name
        return term.op.kind
    if isinstance(term, ir.Reindexing) and term.name:
        return term.name
    return "t"


def _no_span(rev: Reverser) -> ir.Span:
    return rev.span or ir.Span(file=rev.program.source, line=1, column=1, end_line=1,
                               end_column=1)


def _prune(steps: list[Step | BlockGroup], needed: set[int]) -> None:
    """Drop the steps (in place, blocks included) whose outputs nothing in `needed` reads,
    transitively: the forward block recomputes only what the backward block reads. `needed`
    gains the values the kept steps read."""
    kept: list[Step | BlockGroup] = []
    for item in reversed(steps):
        if isinstance(item, Step):
            if any(v.id in needed for v in item.outputs):
                kept.append(item)
                needed.update(v.id for v in item.inputs)
            continue
        _prune(item.steps, needed)
        if item.steps:
            item.bound = [v for v in item.bound if v.id in _made_ids(item.steps)]
            item.reads = _outside_reads(item.steps)
            kept.append(item)
    steps[:] = reversed(kept)


def _made_ids(steps: Sequence[Step | BlockGroup]) -> set[int]:
    """The ids of the values that `steps` make (blocks included)."""
    made: set[int] = set()
    for item in steps:
        if isinstance(item, Step):
            made.update(v.id for v in item.outputs)
        else:
            made |= _made_ids(item.steps)
    return made


def _outside_reads(steps: Sequence[Step | BlockGroup]) -> list[Value]:
    """The values read by `steps` (blocks included) that no step among them makes."""
    made: set[int] = set()
    reads: dict[int, Value] = {}

    def visit(items: Sequence[Step | BlockGroup]) -> None:
        for item in items:
            if isinstance(item, Step):
                for value in item.inputs:
                    if value.id not in made:
                        reads.setdefault(value.id, value)
                made.update(v.id for v in item.outputs)
            else:
                visit(item.steps)

    visit(steps)
    return list(reads.values())


# --------------------------------------------------------------------------------------
# The backward pass
# --------------------------------------------------------------------------------------


class _Accumulator:
    """The gradient contributions of each value; read once, they are added into one."""

    def __init__(self, rev: Reverser):
        self.rev = rev
        self.parts: dict[int, list[Value]] = {}
        self.params: dict[str, list[Value]] = {}

    def give(self, value: Value, gradient: Value | None) -> None:
        if gradient is None or value.array.dtype.kind != self.rev.field:
            return
        if gradient.array != value.array:
            gradient = self.rev.sum_to(gradient, value.array)
        self.parts.setdefault(value.id, []).append(gradient)

    def total(self, value: Value) -> Value | None:
        parts = self.parts.pop(value.id, None)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return self.rev.add(*parts, like=value.array)


def _reverse(entries: Sequence[_Entry], rev: Reverser, grads: _Accumulator) -> None:
    for entry in reversed(entries):
        outputs = [grads.total(v) for v in entry.outputs]
        if all(g is None for g in outputs):
            continue
        rev.span = entry.term.span or rev.span
        # An output with no gradient gets zeros (an index array's stand-in is never read).
        filled = [g if g is not None else rev.zeros(v.array)
                  for g, v in zip(outputs, entry.outputs, strict=True)]
        term = entry.term
        match term:
            case ir.Broadcasted():
                _check_ports(term)
                rule = declaration(term.op).reverse
                if rule is None:
                    name = type(term.op).__name__
                    raise Unsupported(
                        f"`{term.op.kind}` has no reverse derivative yet", term.span,
                        NOT_YET_REVERSED.get(type(term.op), f"{name} is not supported by "
                                             "`--grad` yet"))
                result: Gradients = rule(rev, term, term.op, entry.inputs, entry.outputs,
                                         filled)
                for value, gradient in zip(entry.inputs, result.inputs, strict=True):
                    grads.give(value, gradient)
                param_grads = [*result.params, *[None] * (len(term.params) - len(result.params))]
                for param_port, gradient in zip(term.params, param_grads, strict=True):
                    if gradient is not None and param_port.name is not None:
                        parameter = rev.params.get(param_port.name)
                        if parameter is not None and not parameter.buffer:
                            path = rev.site(param_port.name)
                            if rev.copy_path:  # a copy's own parameter
                                rev.called_params.setdefault(path, parameter.array)
                            grads.params.setdefault(path, []).append(
                                rev.sum_to(gradient, parameter.array))
                for path, gradient in result.called.items():
                    grads.params.setdefault(path, []).append(gradient)
            case ir.Reindexing():
                (gradient,) = filled
                assert gradient is not None
                grads.give(entry.inputs[0], _reindexing_adjoint(rev, term, gradient))
            case ir.Block():
                # The block's reverse is a block: its body's steps in the reverse order.
                outer, outer_path = rev.steps, rev.copy_path
                group = BlockGroup(title=f"{term.title} (backward)", color=term.color,
                                   repeat=1, shared=False, span=term.span or _no_span(rev),
                                   steps=[], reads=[], outputs=[], copy_of=term.copy_of)
                rev.steps = group.steps
                if term.copy_of is not None:  # the copy's reverse reads its own parameters
                    rev.copy_path = copy_path(rev.copy_path, term.copy_of)
                for value, gradient in zip(entry.outputs, filled, strict=True):
                    grads.parts[value.id] = [gradient]
                _reverse(entry.body, rev, grads)
                rev.steps, rev.copy_path = outer, outer_path
                made = _made_ids(group.steps)
                group.bound = [v for parts in (*grads.parts.values(), *grads.params.values())
                               for v in parts if v.id in made]
                group.reads = _outside_reads(group.steps)
                outer.append(group)
            case ir.Scan():
                # A scan in the opposite direction (`ncd.scan_derivative`).
                d_inputs, called = reverse_scan(rev, term, entry.inputs, entry.saved, filled)
                for value, gradient in zip(entry.inputs, d_inputs, strict=True):
                    grads.give(value, gradient)
                for path, gradient in called.items():
                    grads.params.setdefault(path, []).append(gradient)
            case ir.Machine():
                # The reverse of a machine is a machine on the reversed blocks (ncd.ops.machines).
                result = machine_reverse(rev, term, entry.inputs, entry.outputs, filled)
                for value, gradient in zip(entry.inputs, result.inputs, strict=True):
                    grads.give(value, gradient)
                for path, gradient in result.called.items():
                    grads.params.setdefault(path, []).append(gradient)
            case ir.Identity() | ir.Rearrangement() | ir.Composed() | ir.Product():
                raise AssertionError("dataflow leaves only computing nodes")
            case _:
                assert_never(term)


def _check_ports(term: ir.Broadcasted) -> None:
    """Every port reads its tile at the degree's index of the same axis name (what every rule
    assumes when it works with whole arrays)."""
    for each in (*term.inputs, *term.params, *term.outputs):
        eta = each.reindexing
        for row, axis in zip(eta.matrix, eta.codomain.axes, strict=True):
            named = [d.name for d, c in zip(eta.domain.axes, row, strict=True) if c]
            if named != [axis.name] or 1 not in row or any(eta.offset):
                raise Unsupported(
                    f"`{term.op.kind}` reads a tile through the index map {eta.text()}",
                    term.span, "the reverse rules read whole arrays by axis name")


def _reindexing_adjoint(rev: Reverser, term: ir.Reindexing, gradient: Value) -> Value:
    """`dX[q] = sum over p with eta(p) = q of dY[p]`.

    Axes that pass through (`b -> b`) stay; a bijective renaming or permutation is the
    inverse reindexing; otherwise each group of codomain rows that share domain axes gets an
    indicator array `I[q, p] = [eta(p) == q]` (ones, masked by the affine conditions) and the
    gradient is contracted with them: for a convolution window, the transposed convolution.
    """
    eta = term.eta
    source = term.dom[0]
    domain = eta.domain.axes
    codomain = eta.codomain.axes
    passing: set[int] = set()  # codomain rows that copy the domain axis of their own name
    for j, axis in enumerate(codomain):
        row = eta.matrix[j]
        nonzero = [i for i, c in enumerate(row) if c]
        if eta.offset[j] == 0 and len(nonzero) == 1 and row[nonzero[0]] == 1 and \
                domain[nonzero[0]].name == axis.name:
            passing.add(j)
    rest = [j for j in range(len(codomain)) if j not in passing]
    # A renaming or permutation: each remaining row reads one domain axis (coefficient 1, no
    # offset), each domain axis is read once, with the same size.
    if all(eta.offset[j] == 0 and sorted(eta.matrix[j]).count(0) == len(domain) - 1 and
           max(eta.matrix[j]) == 1 for j in rest):
        reads = {j: eta.matrix[j].index(1) for j in rest}
        if len(set(reads.values())) == len(rest) and all(
                from_ir(codomain[j].size) == from_ir(domain[i].size) for j, i in reads.items()):
            mapping = {domain[i].name: codomain[j].name for j, i in reads.items()}
            unread = [a.name for i, a in enumerate(domain)
                      if i not in reads.values() and a.name not in
                      {codomain[j].name for j in passing}]
            summed = rev.reduce("sum", gradient, unread) if unread else gradient
            return rev.expand(rev.rename(summed, mapping), source)
    if gradient.array.dtype.kind == "B":
        raise Unsupported("an affine reindexing of a Boolean wire", rev.span,
                          "its reverse over Z2 is not built yet: copies, renamings and "
                          "permutations of Boolean wires have one")
    rows = [AffineRow(tuple((domain[i].name, c) for i, c in enumerate(eta.matrix[j]) if c),
                      eta.offset[j], 1, eta.row_text(j)) for j in range(len(codomain))]
    return affine_adjoint(rev, gradient, source, list(domain), rows)


@dataclass(frozen=True)
class AffineRow:
    """One coordinate read: `(sum coefficients[a] * p_a + offset) // divisor % modulus`
    (no modulus: none taken)."""

    coefficients: tuple[tuple[str, int], ...]
    offset: int
    divisor: int
    text: str
    modulus: int | None = None


def affine_adjoint(rev: Reverser, gradient: Value, source: ir.ArrayType,
                   domain: Sequence[ir.Axis], rows: Sequence[AffineRow]) -> Value:
    """The adjoint of `Y[p] = X[q(p)]` (`p` over `domain`, one row of `q` per axis of
    `source`): `dX[q] = sum over p with q(p) = q of dY[p]`. A row that copies the domain axis
    of its own name passes through; the others, in groups linked by the domain axes they read,
    become indicator arrays `[q(p) = q]` (ones masked by affine conditions: `q == e`, or
    `D q <= e < D q + D` for a floor division by `D`), contracted with the gradient. A
    remainder `e // D % n` is `q + n k` for some whole `k`: the indicator gains an axis `k`
    over the range those take (the sizes must be known), summed by the contraction."""
    codomain = source.shape.axes
    domain_names = {a.name for a in domain}
    rest = [j for j, row in enumerate(rows)
            if not (row.divisor == 1 and row.offset == 0 and row.modulus is None and
                    row.coefficients == ((codomain[j].name, 1),))]
    fresh: dict[str, str] = {}
    taken = domain_names | {a.name for a in codomain}
    for j in rest:
        name = codomain[j].name
        if name in domain_names:
            fresh[name] = _fresh(name + "_q", taken)
    groups: list[tuple[list[int], set[str]]] = []
    for j in rest:
        reads_j = {n for n, _ in rows[j].coefficients}
        merged = [g for g in groups if g[1] & reads_j]
        members, axes = [j], set(reads_j)
        for g in merged:
            members += g[0]
            axes |= g[1]
            groups.remove(g)
        groups.append((sorted(members), axes))
    operands = [gradient]
    for members, axes_read in groups:
        q_axes = [ir.Axis(name=fresh.get(codomain[j].name, codomain[j].name),
                          size=codomain[j].size) for j in members]
        p_axes = [a for a in domain if a.name in axes_read]
        k_axes: list[ir.Axis] = []
        conditions: list[ir.Comparison] = []
        for j, q_axis in zip(members, q_axes, strict=True):
            row = rows[j]
            read = tuple((n, -c) for n, c in row.coefficients)
            q = q_axis.name
            d = row.divisor
            # `q + n k` (k = k_axis + lowest) in place of q for a remainder
            wrapped: tuple[tuple[str, int], ...] = ()
            shift = 0
            if row.modulus is not None:
                k_axis, lowest = _wraps(row, domain, _fresh("k_" + codomain[j].name, taken))
                k_axes.append(k_axis)
                wrapped, shift = ((k_axis.name, row.modulus),), row.modulus * lowest
            scaled = tuple((n, d * c) for n, c in ((q, 1), *wrapped))
            if d == 1:
                conditions.append(ir.Comparison(coefficients=(*scaled, *read),
                                                offset=shift - row.offset, op="==",
                                                text=f"{q} == {row.text}"))
            else:
                conditions.append(ir.Comparison(coefficients=(*scaled, *read),
                                                offset=d * shift - row.offset, op="<=",
                                                text=f"{d}*{q} <= {row.text}"))
                conditions.append(ir.Comparison(
                    coefficients=(*((n, -c) for n, c in scaled), *row.coefficients),
                    offset=row.offset - d - d * shift, op="<",
                    text=f"{row.text} < {d}*{q} + {d}"))
        indicator_type = array(ir.REALS, [*q_axes, *k_axes, *p_axes])
        ones = rev.constant_array(indicator_type, 1)
        indicator = rev.op(ir.MaskOp(axes=indicator_type.names, conditions=tuple(conditions),
                                     fill=0.0),
                           [(ones, indicator_type.names)],
                           [(indicator_type, indicator_type.names, "indicator")],
                           degree=[])[0]
        operands.append(indicator)
    # Domain axes no row reads are summed (a broadcast's adjoint): the einsum sums them.
    result_axes = [ir.Axis(name=fresh.get(a.name, a.name), size=a.size) if j in rest else a
                   for j, a in enumerate(codomain)]
    result = rev.contract(array(ir.REALS, result_axes), operands, name="adjoint")
    back = {new: old for old, new in fresh.items()}
    return rev.expand(rev.rename(result, back), source)


def _wraps(row: AffineRow, domain: Sequence[ir.Axis], name: str) -> tuple[ir.Axis, int]:
    """For a remainder `f % n` with `f = e // D`: the axis over the whole numbers `k` with
    `f = q + n k` for some `q` in `0 .. n-1` and `e` over the domain, and the lowest `k`."""
    assert row.modulus is not None
    sizes = {a.name: from_ir(a.size).value for a in domain}
    low = high = row.offset
    for axis_name, coefficient in row.coefficients:
        size = sizes.get(axis_name)
        if size is None:
            raise Unsupported(f"the gather reads `{row.text}`, a remainder of an index whose "
                              "range is not known", None, "give the axes it reads a size")
        low += min(0, coefficient * (size - 1))
        high += max(0, coefficient * (size - 1))
    n = row.modulus
    lowest, highest = (low // row.divisor - n + 1) // n, high // row.divisor // n
    return ir.Axis(name=name, size=ir.SizeConst(value=highest - lowest + 1)), lowest


# --------------------------------------------------------------------------------------
# The definition
# --------------------------------------------------------------------------------------


def _fresh(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def backward_definition(program: ir.Program, name: str, *, training: bool = True,
                        lens: bool = False) -> tuple[Backward, list[Backward]]:
    """The backward definition of `name` (see the module's docstring) in the given mode, and
    those of the definitions it calls (callees first); raises `Unsupported` at the first
    construct with no reverse rule. With `lens`, the lens definition `NAME_lens` instead: the
    same two blocks, the forward block also making the forward results, which lead the
    outputs (forward and backward passes together, as the lens view draws them)."""
    rev = Reverser(program, program.definition(name), training)
    backward = _build(rev, {d.name for d in program.definitions}, lens=lens)
    return backward, list(rev.callees.values())


def _build(rev: Reverser, taken: set[str], lens: bool = False) -> Backward:
    forward = rev.definition
    _check_copy_names(forward.body)
    name = forward.name
    grad_name = _fresh(f"{name}_lens" if lens else f"{name}_grad", taken)
    names = {v.name for v in forward.inputs} | {p.name for p in forward.params}
    inputs = [Value(v.array, v.name, forward.span) for v in forward.inputs]
    seeds = [Value(v.array, _fresh(f"d{v.name}", names), forward.span)
             for v in forward.outputs if v.array.dtype.kind == rev.field]

    group = BlockGroup(title="forward", color=None, repeat=1, shared=False,
                       span=_no_span(rev), steps=[], reads=[], outputs=[])
    rev.steps = group.steps
    produced: list[Value] = []
    results, entries = _record(forward.body, inputs, rev, produced)
    group.bound = [*produced]
    group.reads = _outside_reads(group.steps)

    grads = _Accumulator(rev)
    back = BlockGroup(title="backward", color=None, repeat=1, shared=False,
                      span=_no_span(rev), steps=[], reads=[], outputs=[])
    rev.steps = back.steps
    real_results = [v for v, o in zip(results, forward.outputs, strict=True)
                    if o.array.dtype.kind == rev.field]
    for result, seed in zip(real_results, seeds, strict=True):
        grads.give(result, seed)
    _reverse(entries, rev, grads)
    outputs: list[Value] = []
    out_vars: list[ir.Variable] = []
    gradient_of: list[str] = []
    out_names = {v.name for v in inputs} | {v.name for v in seeds}
    for value in inputs:
        if value.array.dtype.kind != rev.field:
            continue
        gradient = grads.total(value) or rev.zeros(value.array)
        outputs.append(gradient)
        out_vars.append(ir.Variable(name=_fresh(f"d{value.name}", out_names),
                                    array=value.array))
        gradient_of.append(value.name)
    outside = _read_outside_copies(forward.body)
    for parameter in forward.params:
        if parameter.buffer or parameter.name not in outside or \
                parameter.array.dtype.kind != rev.field:
            # a buffer, a parameter of which each copy of a block has its own, or one of the
            # other field (a Boolean parameter of a real-valued model)
            continue
        parts = grads.params.get(parameter.name, [])
        gradient = rev.add(*parts, like=parameter.array) if parts else \
            rev.zeros(parameter.array)
        outputs.append(gradient)
        out_vars.append(ir.Variable(name=_fresh(f"d{parameter.name}", out_names),
                                    array=parameter.array))
        gradient_of.append(parameter.name)
    for path, array_type in _in_forward_order(rev.called_params, rev.copies):
        parts = grads.params.get(path, [])
        gradient = rev.add(*parts, like=array_type) if parts else rev.zeros(array_type)
        outputs.append(gradient)
        out_vars.append(ir.Variable(name=_fresh("d" + path.replace(".", "_"), out_names),
                                    array=array_type))
        gradient_of.append(path)
    back.bound = list(outputs)
    # A gradient that is a wire of the backward block's inputs (the seed of `xor(A, B)`,
    # passed to both operands) is read by the block too, though no step of it reads it.
    back.reads = _outside_reads(back.steps)
    made = _made_ids(back.steps)
    for value in outputs:
        if value.id not in made and all(value.id != read.id for read in back.reads):
            back.reads.append(value)
    read_ids = {v.id for v in back.reads}
    # A lens definition keeps the forward results too: they leave the forward block first.
    kept = _unique([v for v in results if v.id in {p.id for p in produced}]) if lens else []
    _prune(group.steps, read_ids | {v.id for v in kept})
    saved = [v for v in produced if v.id in read_ids]
    group.bound = [*kept, *(v for v in saved if v not in kept)]
    group.reads = _outside_reads(group.steps)
    crossing = [v.name for v in group.bound]
    saved += [v for v in inputs if v.id in read_ids]
    if lens:
        outputs = [*results, *outputs]
        out_vars = [*(ir.Variable(name=v.name, array=v.array) for v in forward.outputs),
                    *out_vars]
    body = build_term([group, back] if group.steps else [back], [*inputs, *seeds], outputs,
                      forward.span)
    definition = ir.Definition(
        name=grad_name,
        doc=f"The reverse derivative of `{name}`: the gradients of its inputs and parameters "
            "from the gradients of its outputs.",
        inputs=tuple(ir.Variable(name=v.name, array=v.array) for v in [*inputs, *seeds]),
        outputs=tuple(out_vars), params=forward.params, body=body, span=forward.span,
        leading_dims=not (rev.training and _applies_batchnorm(forward)))
    return Backward(definition, tuple(ir.Variable(name=v.name, array=v.array) for v in saved),
                    tuple(gradient_of), tuple(rev.aliases.items()), tuple(crossing),
                    len(forward.outputs) if lens else 0, tuple(rev.helpers.values()))


def _applies_batchnorm(definition: ir.Definition) -> bool:
    """Whether the definition's body applies `batchnorm` (a call of one that does is E320)."""
    return any(isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.BatchNormOp)
               for t in ir.walk(definition.body))


def _unique(values: Sequence[Value]) -> list[Value]:
    return list({v.id: v for v in values}.values())


def _read_outside_copies(term: ir.Term) -> set[str]:
    """The parameters that `term` reads outside the blocks repeated with parameters of their
    own (whose copies each have their own)."""
    match term:
        case ir.Block() if term.repeat > 1 and not term.shared:
            return set()
        case ir.Broadcasted():
            return {p.name for p in term.params if p.name is not None}
        case _:
            return set().union(*(_read_outside_copies(c) for c in ir.children(term)))


def _in_forward_order(paths: dict[str, ir.ArrayType], copies: Sequence[str]
                      ) -> list[tuple[str, ir.ArrayType]]:
    """The called definitions' and the copies' parameters: a copy's after those of the
    copies the forward pass runs before it (the backward pass meets them last first)."""
    def order(path: str) -> int:
        return next((i for i, prefix in enumerate(copies) if path.startswith(prefix)), -1)
    return sorted(paths.items(), key=lambda item: order(item[0]))


def with_backward(program: ir.Program, name: str, sources: dict[str, str] | None = None, *,
                  training: bool = True, lens: bool = False) -> tuple[ir.Program, Backward]:
    """The program with the backward definition of `name` (in the given mode; with `lens`,
    its lens definition) added last; an unsupported construct is an `NcdError` (E320) at its
    source."""
    try:
        backward, callees = backward_definition(program, name, training=training, lens=lens)
    except Unsupported as unsupported:
        raise NcdError([Diagnostic("E320", f"no reverse derivative: {unsupported.what}",
                                   unsupported.span or program.definition(name).span,
                                   hint=unsupported.hint)], sources or {}) from None
    extended = program.model_copy(update={"definitions": (
        *program.definitions, *(b.definition for b in callees), *backward.helpers,
        backward.definition)})
    return extended, backward

