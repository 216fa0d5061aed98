"""Figures read off a definition before anything runs: parameters, multiply-adds and FLOPs,
the bytes of every intermediate, the largest one, the peak memory of the forward pass and the
arithmetic intensity; per operation, per block and in total, as polynomials in the sizes that
are fixed only at run time (`9216*x^2 + 2101248*x`).

Each operation's multiply-adds and FLOPs come from its declaration (`Declaration.cost`, the
conventions in `ncd.ops.facts`); this module adds them up through the term: a block runs its
body `repeat` times, a scan its step once per entry of the scanned axis, a call the called
definition once per element of its batch lift, a machine its body once per block.

Memory is counted as the compiled forward pass holds it (`torch.no_grad`; docs/analysis.md):
every array a definition computes is freed once no wire holds it any more (the generated
forward deletes each local after its last use), a view (a rename, a rearranging reindexing)
is no new array and keeps the array it reads alive, a window (`X[2*p + w]`) is a view that
the operation reading it copies while it runs, the copies of a repeated block run one after
another, a scan keeps each step's outputs until they are stacked, and so does a call with
parameters for each index (`f[each e](X)`), whose copies run one after another. Inputs and
parameters are not counted: they exist before the forward pass. Entries of R are 4 bytes
(float32), of N 8 (int64), of B 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, assert_never

from ncd import ir
from ncd.attention import Attention, find_attention
from ncd.convolution import Window, find_windows
from ncd.dataflow import (
    INLINE_BUDGET,
    dataflow,
    independent_of,
    inlinable_call,
    inlinable_step,
    inlined_terms,
    reached_from,
)
from ncd.expert_sums import ExpertSum, find_expert_sums
from ncd.muladd import MulAdd, find_muladds
from ncd.operators import declaration
from ncd.ops.facts import ZERO, Cost
from ncd.recurrent_cells import Cell, recognise
from ncd.sizes import ProgramSizes, Size, SizeLimit, check_nonnegative

BYTES_PER_ENTRY = {"R": 4, "N": 8, "B": 1}


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def leading(value: Size) -> dict[str, int]:
    """The highest power of each symbol in a polynomial: `{"x": 2}` for `9216*x^2 + 4*x`."""
    powers: dict[str, int] = {}
    for monomial, _ in value.terms:
        for key, power in monomial:
            powers[key] = max(powers.get(key, 0), power)
    return powers


def polynomial_text(value: Size) -> str:
    """`9216*x^2 + 2101248*x`: terms by falling degree, powers with `^`."""
    if not value.terms:
        return "0"
    parts: list[str] = []
    ordered = sorted(value.terms, key=lambda t: (-sum(p for _, p in t[0]), t[0]))
    for index, (monomial, coefficient) in enumerate(ordered):
        factors = [key if power == 1 else f"{key}^{power}" for key, power in monomial]
        magnitude = abs(coefficient)
        number = str(magnitude.numerator) if magnitude.denominator == 1 else \
            f"({magnitude.numerator}/{magnitude.denominator})"
        if factors and magnitude == 1:
            text = "*".join(factors)
        else:
            text = "*".join([number, *factors])
        if index == 0:
            parts.append(f"-{text}" if coefficient < 0 else text)
        else:
            parts.append(f" - {text}" if coefficient < 0 else f" + {text}")
    return "".join(parts)


def leading_text(value: Size) -> str:
    """How a polynomial grows, per symbol: `x^2`, `b`, `b, t`; empty for a constant."""
    return ", ".join(key if power == 1 else f"{key}^{power}"
                     for key, power in sorted(leading(value).items()))


def figure_json(value: Size) -> dict[str, Any]:
    exact = value.value
    return {"text": polynomial_text(value), "value": exact, "leading": leading(value)}


def _dominates(a: Size, b: Size) -> bool:
    """Whether `a >= b` for every allowed size."""
    if a.is_const and b.is_const:
        return a.constant >= b.constant
    return check_nonnegative(a - b).verdict == "holds"


def maxima(values: Iterable[Size]) -> list[Size]:
    """The values that no other value is at least as large as, for every size: one value when
    the sizes are fixed, more when which is largest depends on the sizes."""
    kept: list[Size] = []
    for value in values:
        if any(_dominates(other, value) for other in kept):
            continue
        kept = [other for other in kept if not _dominates(value, other)]
        kept.append(value)
    return kept


def max_text(values: Sequence[Size]) -> str:
    if len(values) == 1:
        return polynomial_text(values[0])
    return "max(" + ", ".join(polynomial_text(v) for v in values) + ")"


def intensity(flops: Size, moved: Size) -> Fraction | None:
    """FLOPs per byte moved: exact when the sizes are fixed; the limit as the sizes grow when
    both grow alike in one symbol; None otherwise."""
    if flops.is_const and moved.is_const:
        return flops.constant / moved.constant if moved.constant else None
    top_f, top_m = leading(flops), leading(moved)
    if top_f != top_m or len(top_f) != 1:
        return None
    (symbol, power), = top_f.items()
    key = ((symbol, power),)
    f, m = dict(flops.terms).get(key), dict(moved.terms).get(key)
    if f is None or m is None or m == 0:
        return None
    return f / m


def intensity_text(flops: Size, moved: Size) -> str:
    value = intensity(flops, moved)
    if flops == ZERO:
        return "0"
    if value is None:
        return "-"
    text = f"{float(value):.3g}"
    return text if flops.is_const and moved.is_const else f"→ {text}"


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation of the definition (a call counts as one)."""

    kind: str
    label: str
    span: ir.Span | None
    blocks: tuple[str, ...]
    runs: Size
    """How often it runs in one forward pass (block repeats, scan steps)."""
    parameters: Size
    macs: Size
    flops: Size
    output_bytes: Size
    """The bytes of its outputs (one run)."""
    moved: Size
    """Bytes read and written over all runs: inputs, parameters, outputs."""

    @property
    def key(self) -> tuple[int, int, str] | None:
        """Where it is in the source and what it is: how a drawing finds its figures."""
        return None if self.span is None else (self.span.line, self.span.column, self.kind)


@dataclass(frozen=True)
class BlockFigures:
    path: tuple[str, ...]
    repeat: int
    macs: Size
    flops: Size
    parameters: Size


@dataclass(frozen=True)
class Stats:
    """Every figure of one definition."""

    definition: str
    operations: tuple[Operation, ...]
    blocks: tuple[BlockFigures, ...]
    parameters: Size
    macs: Size
    flops: Size
    moved: Size
    largest: tuple[tuple[str, Size], ...]
    """The largest intermediate (several when which one is largest depends on the sizes)."""
    peak: tuple[Size, ...]
    """Peak bytes of the forward pass (several when which is larger depends on the sizes)."""
    intermediates: tuple[tuple[str, Size], ...]
    """Every array the definition computes (in calls too) with its bytes, in order."""

    def to_json(self) -> dict[str, Any]:
        return {
            "definition": self.definition,
            "parameters": figure_json(self.parameters),
            "macs": figure_json(self.macs),
            "flops": figure_json(self.flops),
            "bytes_moved": figure_json(self.moved),
            "arithmetic_intensity": _fraction_json(intensity(self.flops, self.moved)),
            "largest_intermediate": [{"name": name, "bytes": figure_json(size)}
                                     for name, size in self.largest],
            "peak_forward_bytes": [figure_json(size) for size in self.peak],
            "peak_forward_backward_bytes": None,
            "operations": [{
                "kind": op.kind, "label": op.label, "blocks": list(op.blocks),
                "line": op.span.line if op.span else None,
                "runs": figure_json(op.runs), "parameters": figure_json(op.parameters),
                "macs": figure_json(op.macs), "flops": figure_json(op.flops),
                "output_bytes": figure_json(op.output_bytes),
                "bytes_moved": figure_json(op.moved),
                "arithmetic_intensity": _fraction_json(intensity(op.flops, op.moved)),
            } for op in self.operations],
            "blocks": [{"path": list(b.path), "repeat": b.repeat, "macs": figure_json(b.macs),
                        "flops": figure_json(b.flops), "parameters": figure_json(b.parameters)}
                       for b in self.blocks],
            "intermediates": [{"name": name, "bytes": figure_json(size)}
                              for name, size in self.intermediates],
        }


def _fraction_json(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------------------
# The analysis
# --------------------------------------------------------------------------------------


class StatsError(ValueError):
    """A figure grew past what the size algebra holds (`ncd.sizes.SizeLimit`)."""


def stats(program: ir.Program, name: str) -> Stats:
    """The figures of definition `name` of a checked program."""
    try:
        return _Analysis(program).definition_stats(name)
    except SizeLimit as error:
        raise StatsError(f"a figure of {name} is too large a polynomial to state ({error}); "
                         "fix some sizes with -D AXIS=SIZE") from None


def array_bytes(sizes: ProgramSizes, array: ir.ArrayType) -> Size:
    total = Size.const(BYTES_PER_ENTRY[array.dtype.kind])
    for axis in array.shape.axes:
        total = total * sizes.polynomial(axis.size)
    return total


def is_view(eta: ir.StrideMorphism) -> bool:
    """A reindexing torch does as a view: every index of the input is one index of the
    output times a positive stride plus an offset, or a constant (a slice, a selection, a
    transpose). A window (`2*p + w`) is materialised by the contraction that reads it."""
    return all(sum(1 for c in row if c) <= 1 for row in eta.matrix) and not reads_backwards(eta)


def reads_backwards(eta: ir.StrideMorphism) -> bool:
    """A reindexing that reads an index backwards (`1 - p`): torch has no negative strides,
    so the compiled module makes it an array of its own (`flip`, or a gather; see
    `compilers/views.py`), which lives until its last use."""
    return any(c < 0 for row in eta.matrix for c in row)


Wire = int | None
"""An array on a wire: the id of a live array the definition made, or None (an input or a
parameter, which the figures do not count)."""


@dataclass
class _Memory:
    """Live arrays while a definition runs, and the candidates for its peak."""

    live: dict[int, Size] = field(default_factory=dict)
    peaks: list[Size] = field(default_factory=list)
    next_id: int = 0
    held: list[list[Wire]] = field(default_factory=list)
    """The wires that enclosing terms still hold (the other parts of a product): their arrays
    are not freed while an inner term runs."""
    pinned: dict[int, list[Wire]] = field(default_factory=dict)
    """The queries and keys of a fused attention (by the match's id): the call reads them
    until it has made its output, after the scores' place in the term."""
    scratch: dict[int, Size] = field(default_factory=dict)
    """What a fused attention holds while it runs besides its operands and output (a general
    mask read as floats), by the match's id."""
    inlined: int = 0
    """The terms of the calls written in place so far (`ncd.dataflow.INLINE_BUDGET`)."""
    windows: dict[int, Size] = field(default_factory=dict)
    """Windowed views (`X[2*p + w]`): no array of their own, but the operation that reads
    one copies it while it runs."""

    def window(self, size: Size) -> int:
        self.next_id += 1
        self.windows[self.next_id] = size
        return self.next_id

    @property
    def total(self) -> Size:
        total = ZERO
        for size in self.live.values():
            total = total + size
        return total

    def alloc(self, size: Size) -> int:
        self.next_id += 1
        self.live[self.next_id] = size
        self.peaks.append(self.total)
        return self.next_id

    def note(self, extra: Size) -> None:
        self.peaks.append(self.total + extra)

    def free(self, ident: int | None) -> None:
        if ident is not None:
            self.live.pop(ident, None)

    def collect(self, wires: Sequence[Wire]) -> None:
        """Free every array no wire holds any more: the generated forward deletes a local
        after the last statement that reads it."""
        needed = set(wires)
        for held in [*self.held, *self.pinned.values()]:
            needed.update(held)
        for ident in [i for i in self.live if i not in needed]:
            del self.live[ident]


@dataclass(frozen=True)
class _Run:
    """What running a definition once gives its caller."""

    peaks: tuple[Size, ...]
    output_groups: tuple[int, ...]
    """For each output, which distinct array it is (outputs that are one array share it)."""
    arrays: tuple[tuple[str, Size], ...]


class _Analysis:
    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.sizes = ProgramSizes(program.axes)
        self._stats: dict[str, Stats] = {}
        self._runs: dict[str | tuple[str, tuple[bool, ...]], _Run] = {}
        # Members of attention patterns, which the compiled module runs as one fused call.
        self._fused: dict[int, Attention] = {}
        # Members of convolutions and pools, which the compiled module runs as one kernel call.
        self._windows: dict[int, Window] = {}
        # Members of weighted sums of experts, which the compiled module runs copy by copy.
        self._experts: dict[int, ExpertSum] = {}
        # Members of sums of a product, which the compiled module runs as one call.
        self._muladds: dict[int, MulAdd] = {}

    # ---- the CostSizes protocol of the declarations
    def size(self, size: ir.SizeExpr) -> Size:
        return self.sizes.polynomial(size)

    def call(self, definition: str) -> Cost:
        figures = self.definition_stats(definition)
        return Cost(figures.macs, figures.flops)

    # ---- figures
    def definition_stats(self, name: str) -> Stats:
        if name in self._stats:
            return self._stats[name]
        definition = self.program.definition(name)
        self._find_windows(definition.body)
        operations = list(self._operations(definition.body, (), Size.const(1)))
        parameters = self._parameters(definition)
        macs = flops = moved = ZERO
        for op in operations:
            macs, flops, moved = macs + op.macs, flops + op.flops, moved + op.moved
        run = self._run(name)
        largest = self._largest(run.arrays)
        result = Stats(name, tuple(operations), tuple(self._blocks(definition, operations)),
                       parameters, macs, flops, moved, largest, tuple(maxima(run.peaks)),
                       run.arrays)
        self._stats[name] = result
        return result

    def _largest(self, arrays: Sequence[tuple[str, Size]]) -> tuple[tuple[str, Size], ...]:
        top = maxima(size for _, size in arrays)
        chosen: list[tuple[str, Size]] = []
        for value in top:
            chosen.append(next((n, s) for n, s in arrays if s == value))
        return tuple(chosen)

    def _operations(self, term: ir.Term, blocks: tuple[str, ...], runs: Size
                    ) -> Iterator[Operation]:
        match term:
            case ir.Broadcasted():
                yield self._operation(term, blocks, runs)
            case ir.Reindexing():
                if not is_view(term.eta) and id(term) not in self._windows:
                    out = array_bytes(self.sizes, term.cod[0])
                    moved = (array_bytes(self.sizes, term.dom[0]) + out) * runs
                    yield Operation("reindexing", f"{term.name or 'reindexing'} = "
                                    f"{term.source or ''}[{term.eta.text()}]", term.span,
                                    blocks, runs, ZERO, ZERO, ZERO, out, moved)
            case ir.Identity() | ir.Rearrangement():
                return
            case ir.Composed() | ir.Product():
                for child in term.terms:
                    yield from self._operations(child, blocks, runs)
            case ir.Block():
                yield from self._operations(term.body, (*blocks, term.title),
                                            runs * term.repeat)
            case ir.Scan():
                steps = self.sizes.polynomial(term.axis.size)
                yield from self._operations(term.step, blocks, runs * steps)
            case ir.Machine():
                yield from self._operations(term.body, blocks, runs * len(term.blocks))
            case _:
                assert_never(term)

    def _operation(self, term: ir.Broadcasted, blocks: tuple[str, ...], runs: Size
                   ) -> Operation:
        rule = declaration(term.op).cost
        if rule is None:
            raise StatsError(f"the operator {term.op.kind} states no cost")
        cost = rule(term.op, term, self)
        parameters = ZERO
        if isinstance(term.op, ir.CallOp):
            parameters = self.definition_stats(term.op.definition).parameters * \
                self._owners(term)
        output = ZERO
        for port in term.outputs:
            output = output + array_bytes(self.sizes, port.array)
        moved = output
        if isinstance(term.op, ir.CallOp):
            moved = self.definition_stats(term.op.definition).moved * \
                self._degree(term)
        else:
            for port in (*term.inputs, *term.params):
                moved = moved + array_bytes(self.sizes, port.array)
        label, _ = declaration(term.op).overview(term.op)
        label = label.splitlines()[0]
        names = [p.name for p in term.outputs if p.name]
        if names:
            label = f"{', '.join(names)} = {label}"
        return Operation(term.op.kind, label, term.span, blocks, runs, parameters,
                         cost.macs * runs, cost.flops * runs, output, moved * runs)

    def _find_windows(self, body: ir.Term) -> None:
        """The convolutions and pools of a definition (found once, from the outermost
        composition that holds them)."""
        for term in ir.walk(body):
            if isinstance(term, ir.Composed):
                for match in find_windows(term, self.sizes):
                    if not any(id(member) in self._windows for member in match.members):
                        for member in match.members:
                            self._windows[id(member)] = match

    def _owners(self, term: ir.Broadcasted) -> Size:
        """How many copies of a call's parameters it holds: one, or one per index of the
        owning axis of `f[each e](X)`."""
        if isinstance(term.op, ir.CallOp) and term.op.each is not None:
            return self.sizes.polynomial(term.degree.axis(term.op.each).size)
        return Size.const(1)

    def _degree(self, term: ir.Broadcasted, leaving: str | None = None) -> Size:
        """The number of entries of the term's lift (without axis `leaving`)."""
        total = Size.const(1)
        for axis in term.degree.axes:
            if axis.name != leaving:
                total = total * self.sizes.polynomial(axis.size)
        return total

    def _parameters(self, definition: ir.Definition) -> Size:
        """Each parameter once per copy that owns it: blocks of independent copies multiply,
        each call site owns the called definition's parameters; a name used twice (tied
        weights) is one array."""
        copies: dict[str, int] = {}
        total = ZERO

        def visit(term: ir.Term, factor: int) -> None:
            nonlocal total
            match term:
                case ir.Broadcasted():
                    for port in term.params:
                        if port.name is not None:
                            copies[port.name] = max(copies.get(port.name, 0), factor)
                    if isinstance(term.op, ir.CallOp):
                        total = total + self.definition_stats(term.op.definition).parameters \
                            * self._owners(term) * factor
                case ir.Block():
                    visit(term.body, factor * (1 if term.shared else term.repeat))
                case _:
                    for child in ir.children(term):
                        visit(child, factor)

        visit(definition.body, 1)
        for parameter in definition.params:
            if parameter.buffer:  # state, not learned: as `module.parameters()` counts
                continue
            count = copies.get(parameter.name, 1)
            entries = Size.const(1)
            for axis in parameter.array.shape.axes:
                entries = entries * self.sizes.polynomial(axis.size)
            total = total + entries * count
        return total

    def _blocks(self, definition: ir.Definition, operations: Sequence[Operation]
                ) -> Iterator[BlockFigures]:
        for path, block in _block_paths(definition.body, ()):
            inside = [op for op in operations if op.blocks[:len(path)] == path]
            macs = flops = parameters = ZERO
            for op in inside:
                macs, flops = macs + op.macs, flops + op.flops
            parameters = self._block_parameters(definition, block)
            yield BlockFigures(path, block.repeat, macs, flops, parameters)

    def _block_parameters(self, definition: ir.Definition, block: ir.Block) -> Size:
        inner = ir.Definition(name=definition.name, inputs=definition.inputs,
                              outputs=definition.outputs, body=block,
                              params=tuple(p for p in definition.params
                                           if p.name in _parameter_names(block)))
        return self._parameters(inner)

    # ---- memory
    def _run(self, name: str, counted: tuple[bool, ...] = ()) -> _Run:
        """A run of definition `name`; with `counted`, the inputs marked True are counted
        until their last use (the caller's arrays that a call written into the caller frees
        there, `compilers.inline_calls`)."""
        cached = (name, counted) if any(counted) else name
        if cached in self._runs:
            return self._runs[cached]
        definition = self.program.definition(name)
        self._find_windows(definition.body)
        memory = _Memory()
        arrays: list[tuple[str, Size]] = []
        inputs: list[Wire] = [
            memory.alloc(array_bytes(self.sizes, variable.array)) if mark else None
            for variable, mark in zip(definition.inputs, counted or
                                      (False,) * len(definition.inputs), strict=True)]
        outputs = self._simulate(definition.body, inputs, memory, arrays)
        groups: dict[Wire, int] = {}
        output_groups = []
        for wire in outputs:
            key: Wire = wire if wire is not None else -len(groups) - 1
            output_groups.append(groups.setdefault(key, len(groups)))
        run = _Run(tuple(memory.peaks) or (ZERO,), tuple(output_groups), tuple(arrays))
        self._runs[cached] = run
        return run

    def _simulate(self, term: ir.Term, wires: list[Wire], memory: _Memory,
                  arrays: list[tuple[str, Size]]) -> list[Wire]:
        match term:
            case ir.Identity():
                return wires
            case ir.Rearrangement(mapping=mapping):
                return [wires[i] for i in mapping]
            case ir.Reindexing() if id(term) in self._windows:
                return self._simulate_window(term, self._windows[id(term)], memory, arrays,
                                             wires)
            case ir.Broadcasted() if id(term) in self._windows:
                return self._simulate_window(term, self._windows[id(term)], memory, arrays,
                                             wires)
            case ir.Reindexing():
                if is_view(term.eta):
                    return wires
                size = array_bytes(self.sizes, term.cod[0])
                arrays.append((term.name or "reindexing", size))
                if reads_backwards(term.eta):
                    return [memory.alloc(size)]
                return [memory.window(size)]
            case ir.Broadcasted() if id(term) in self._fused:
                return self._simulate_fused(term, self._fused[id(term)], memory, arrays, wires)
            case ir.Broadcasted() if id(term) in self._experts:
                return self._simulate_experts(term, self._experts[id(term)], memory, arrays,
                                              wires)
            case ir.Broadcasted() if id(term) in self._muladds:
                return self._simulate_muladd(term, self._muladds[id(term)], memory, arrays,
                                             wires)
            case ir.Broadcasted():
                copies = ZERO  # the windows it reads, copied while it runs
                for wire in dict.fromkeys(wires):
                    if wire is not None and wire in memory.windows:
                        copies = copies + memory.windows[wire]
                return self._simulate_operation(term, wires, memory, arrays, copies)
            case ir.Composed(terms=terms):
                for match in find_attention(term):
                    for member in match.members:
                        self._fused.setdefault(id(member), match)
                for expert_sum in find_expert_sums(term):
                    if not any(id(member) in self._fused for member in expert_sum.members):
                        for member in expert_sum.members:
                            self._experts.setdefault(id(member), expert_sum)
                claimed = self._fused.keys() | self._experts.keys() | self._windows.keys()
                for muladd in find_muladds(term):  # as compilers/muladd.py
                    if not any(id(member) in claimed for member in muladd.members):
                        for member in muladd.members:
                            self._muladds.setdefault(id(member), muladd)
                for child in terms:
                    wires = self._simulate(child, wires, memory, arrays)
                    memory.collect(wires)
                return wires
            case ir.Product(terms=terms):
                out: list[Wire] = []
                start = 0
                for child in terms:
                    count = len(child.dom)
                    memory.held.append([*out, *wires[start + count:]])
                    try:
                        out.extend(self._simulate(child, wires[start:start + count], memory,
                                                  arrays))
                    finally:
                        memory.held.pop()
                    start += count
                    memory.collect([*out, *wires[start:]])
                return out
            case ir.Block():
                return self._simulate_block(term, wires, memory, arrays)
            case ir.Scan():
                return self._simulate_scan(term, wires, memory, arrays)
            case ir.Machine():
                return self._simulate_machine(term, memory, arrays)
            case _:
                assert_never(term)

    def _simulate_operation(self, term: ir.Broadcasted, inputs: list[Wire], memory: _Memory,
                            arrays: list[tuple[str, Size]], copies: Size) -> list[Wire]:
        sizes = [array_bytes(self.sizes, port.array) for port in term.outputs]
        if isinstance(term.op, ir.CallOp):
            # A call written into its caller frees the caller's arrays that nothing reads
            # after it at their last use inside the callee, not when the call returns.
            freed = self._freed_inside(term, inputs, memory)
            run = self._run(term.op.definition, tuple(
                wire in freed and wire not in inputs[:position]
                for position, wire in enumerate(inputs)))
            for wire in freed:
                memory.free(wire)
            lift = self._degree(term)
            arrays.extend((f"{term.op.definition}: {name}", size * lift)
                          for name, size in run.arrays)
            if term.op.each is not None:
                # One copy per index, run one after another: a copy's arrays are freed when
                # it returns, its outputs kept in a list (a local until return) that is then
                # stacked. At most every output but the last is done while a copy runs.
                outputs = ZERO
                for size in sizes:
                    outputs = outputs + size
                per_copy = self._degree(term, leaving=term.op.each)
                for peak in run.peaks:
                    memory.note(peak * per_copy + outputs + copies)
                memory.alloc(outputs)  # the list of each copy's outputs
            else:
                for peak in run.peaks:
                    memory.note(peak * lift + copies)
            made: dict[int, int] = {}
            wires: list[Wire] = []
            for group, size in zip(run.output_groups, sizes, strict=True):
                if group not in made:
                    made[group] = memory.alloc(size)
                wires.append(made[group])
            return wires
        rule = declaration(term.op).cost
        assert rule is not None
        cost = rule(term.op, term, self)
        if not cost.allocates:  # a view: it keeps the array it reads alive
            viewed = next((w for w in inputs if w is not None and w in memory.live), None)
            return [viewed for _ in term.outputs]
        wires = []
        for port, size in zip(term.outputs, sizes, strict=True):
            arrays.append((port.name or term.op.kind, size))
            wires.append(memory.alloc(size))
        held = cost.workspace * BYTES_PER_ENTRY["R"] + copies
        if held != ZERO:
            memory.note(held)
        return wires

    def _freed_inside(self, term: ir.Broadcasted, inputs: list[Wire], memory: _Memory
                      ) -> set[Wire]:
        """The arrays a call written into its caller (`ncd.dataflow.inlinable_call`) reads
        that nothing holds after it: none for a submodule call, whose arguments live until
        it returns."""
        callee = inlinable_call(term, self.program)
        terms = inlined_terms(callee) if callee is not None else None
        if terms is None or memory.inlined + terms > INLINE_BUDGET:
            return set()
        memory.inlined += terms
        held = {wire for wires in [*memory.held, *memory.pinned.values()] for wire in wires}
        return {wire for wire in inputs
                if wire is not None and wire in memory.live and wire not in held}

    def _simulate_fused(self, term: ir.Broadcasted, match: Attention, memory: _Memory,
                        arrays: list[tuple[str, Size]], inputs: list[Wire]) -> list[Wire]:
        """A member of an attention pattern: the fused call holds no score matrix (nor the
        masked scores, nor the weights); it makes the values' output while the queries and
        keys are still alive, and a general mask is a boolean matrix of queries by keys that
        the kernel reads as floats while it runs."""
        port = term.outputs[0]
        size = array_bytes(self.sizes, port.array)
        arrays.append((port.name or term.op.kind, size))
        if term is match.scores:
            memory.pinned[id(match)] = list(inputs)
        if term is not match.values:
            if term is match.mask and not match.causal:
                array = term.inputs[0].array
                keep = self.size(array.shape.axis(match.mask_query).size) * \
                    self.size(array.shape.axis(match.mask_key).size)
                memory.alloc(keep * BYTES_PER_ENTRY["B"])
                memory.scratch[id(match)] = keep * BYTES_PER_ENTRY["R"]
            return [None]
        output = memory.alloc(size)
        memory.note(memory.scratch.pop(id(match), ZERO))
        memory.pinned.pop(id(match), None)
        return [output]

    def _simulate_experts(self, term: ir.Broadcasted, match: ExpertSum, memory: _Memory,
                          arrays: list[tuple[str, Size]], inputs: list[Wire]) -> list[Wire]:
        """A member of a weighted sum of experts: the call makes no array (its arguments are
        read by the loop, after the call's place in the term); the loop holds the running
        sum while a copy runs, then that copy's output and its weighted product, then the
        old sum and the product while the new sum is made."""
        call = match.call
        assert isinstance(call.op, ir.CallOp) and call.op.each is not None
        if term is call:
            memory.pinned[id(match)] = list(inputs)
            arrays.extend((f"{call.op.definition}: {name}", size * self._degree(call))
                          for name, size in self._run(call.op.definition).arrays)
            return [None]
        run = self._run(call.op.definition)
        experts = call.outputs[0].array
        one_copy = Size.const(BYTES_PER_ENTRY[experts.dtype.kind])
        for axis in experts.shape.axes:
            if axis.name != match.summed:
                one_copy = one_copy * self.sizes.polynomial(axis.size)
        port = term.outputs[0]
        size = array_bytes(self.sizes, port.array)
        arrays.append((port.name or term.op.kind, size))
        per_copy = self._degree(call, leaving=call.op.each)
        for peak in run.peaks:
            memory.note(size + peak * per_copy)
        memory.note(size + one_copy + size)
        output = memory.alloc(size)
        memory.note(size + size)
        memory.pinned.pop(id(match), None)
        return [output]

    def _simulate_muladd(self, term: ir.Broadcasted, match: MulAdd, memory: _Memory,
                         arrays: list[tuple[str, Size]], inputs: list[Wire]) -> list[Wire]:
        """A member of a sum of a product: the product makes no array (its operands are read
        by the sum's call, and live until it); the call makes the sum."""
        if term is match.product:
            memory.pinned[id(match)] = list(inputs)
            return [None]
        size = array_bytes(self.sizes, term.cod[0])
        arrays.append((term.outputs[0].name or term.op.kind, size))
        output = memory.alloc(size)
        memory.pinned.pop(id(match), None)
        return [output]

    def _simulate_window(self, term: ir.Reindexing | ir.Broadcasted, match: Window,
                         memory: _Memory, arrays: list[tuple[str, Size]], inputs: list[Wire]
                         ) -> list[Wire]:
        """A member of a convolution or pool: the kernel reads the source (not a padded
        copy, not the windows) until it has made its output, which is the only array the
        pattern allocates."""
        if term is match.source_port:
            memory.pinned[id(match)] = list(inputs)
        last = match.bias if match.bias is not None else match.reducer
        if term is not last:
            return [None]
        size = array_bytes(self.sizes, term.cod[0])
        port = match.reducer.outputs[0] if match.bias is None else match.bias.outputs[0]
        arrays.append((port.name or match.kind, size))
        output = memory.alloc(size)
        memory.pinned.pop(id(match), None)
        return [output]

    def _simulate_block(self, term: ir.Block, wires: list[Wire], memory: _Memory,
                        arrays: list[tuple[str, Size]]) -> list[Wire]:
        if term.repeat == 1:
            return self._simulate(term.body, wires, memory, arrays)
        # Copy 1, then copy 2 on copy 1's outputs (each copy frees its arrays as it goes, so
        # later copies repeat copy 2).
        first = self._simulate(term.body, wires, memory, arrays)
        memory.collect(first)
        return self._simulate(term.body, first, memory, [])

    def _simulate_scan(self, term: ir.Scan, wires: list[Wire], memory: _Memory,
                       arrays: list[tuple[str, Size]]) -> list[Wire]:
        steps = self.sizes.polynomial(term.axis.size)
        inlined = inlinable_step(term, self.program, self.sizes)
        if inlined is not None:
            call, _, definition = inlined
            cell = None if term.reverse else recognise(definition, term.carries, self.sizes)
            if cell is not None and len(term.dom) == term.carries + 1:
                return self._simulate_fused_scan(term, cell, memory, arrays)
            kept, transient, consumed = self._hoisted(term, call, steps)
            memory.note(kept + transient)  # while the hoisted values are made
            memory.alloc(kept)  # locals of forward, read by the loop
            held = {wire for wires_held in memory.held for wire in wires_held}
            for index in consumed:  # sequences the loop no longer reads: deleted before it
                if wires[index] not in held and wires.count(wires[index]) == 1:
                    memory.free(wires[index])
        step_memory = _Memory()
        step_arrays: list[tuple[str, Size]] = []
        step_inputs: list[Wire] = [None] * len(term.step.dom)
        step_out = self._simulate(term.step, step_inputs, step_memory, step_arrays)
        carries = step_out[:term.carries]
        sequences = step_out[term.carries:]
        kept = ZERO  # what each step leaves behind in the list of outputs
        for wire in dict.fromkeys(w for w in sequences if w is not None):
            kept = kept + step_memory.live[wire]
        carried = ZERO  # the previous step's states besides those
        for wire in dict.fromkeys(w for w in carries if w is not None and w not in sequences):
            carried = carried + step_memory.live[wire]
        for peak in step_memory.peaks:
            memory.note(kept * (steps - 1) + carried + peak)
        arrays.extend((f"{term.step_name or 'step'}: {name}", size)
                      for name, size in step_arrays)
        out: list[Wire] = []
        for array in term.cod[:term.carries]:
            out.append(memory.alloc(array_bytes(self.sizes, array)))
        memory.note(kept * steps)  # the list of step outputs, stacked into one array
        for array in term.cod[term.carries:]:
            size = array_bytes(self.sizes, array)
            arrays.append((f"{term.step_name or 'scan'} outputs", size))
            out.append(memory.alloc(size))
        return out

    def _simulate_machine(self, term: ir.Machine, memory: _Memory,
                          arrays: list[tuple[str, Size]]) -> list[Wire]:
        """A machine's state (its outputs) lives through the loop over its blocks, and each
        block runs the body once (`compilers.machines`); the backward pass also keeps each
        block's gradients until they are summed."""
        body_memory = _Memory()
        body_arrays: list[tuple[str, Size]] = []
        self._simulate(term.body, [None] * len(term.body.dom), body_memory, body_arrays)
        out: list[Wire] = [memory.alloc(array_bytes(self.sizes, array)) for array in term.cod]
        state = array_bytes(self.sizes, term.cod[term.state_output])
        if term.backward:
            # Each block's gradients until they are summed, and the masked copies the body
            # reads (the block's gradient and the forward state before the block).
            kept = state * 2
            for index, array in enumerate(term.body.cod):
                if index != term.state_output:
                    kept = kept + array_bytes(self.sizes, array) * len(term.blocks)
            for peak in body_memory.peaks:
                memory.note(kept + peak)
        else:
            for peak in body_memory.peaks:
                memory.note(peak)
            # After the body: its result, `Y + result`, and the new state beside the old one.
            memory.note(state * 3)
        name = term.body_name or "machine"
        arrays.extend((f"{name}: {array_name}", size) for array_name, size in body_arrays)
        return out

    def _hoisted(self, term: ir.Scan, call: ir.Broadcasted, steps: Size
                 ) -> tuple[Size, Size, set[int]]:
        """What the compiled scan computes before its loop (`compilers.scans`): the step's
        values that do not depend on the carried state, for every step and every index of
        the lift when they depend on the sequences, once when on the parameters alone. Returns
        the bytes of those the loop reads (kept through it), the largest of the others (each
        freed after its last use before the loop), and which sequences (by position among the
        scan's inputs) only the hoisted values read (deleted before the loop)."""
        assert isinstance(call.op, ir.CallOp)
        flow = dataflow(self.program.definition(call.op.definition).body)
        along = reached_from(flow, flow.inputs[term.carries:])
        lifted = Size.const(1)
        for axis in call.degree.axes:
            lifted = lifted * self.sizes.polynomial(axis.size)
        early = independent_of(flow, flow.inputs[:term.carries])
        late_reads = {wire for node, first in zip(flow.nodes, early, strict=True)
                      if not first for wire in node.inputs} | set(flow.outputs)
        kept = ZERO
        transient: list[Size] = []
        for node, first in zip(flow.nodes, early, strict=True):
            if not first:
                continue
            for wire, array in zip(node.outputs, node.term.cod, strict=True):
                size = array_bytes(self.sizes, array)
                size = size * steps * lifted if wire in along else size
                if wire in late_reads:
                    kept = kept + size
                else:
                    transient.append(size)
        largest = ZERO
        for size in transient:
            largest = largest if _dominates(largest, size) else size
        consumed = {index for index, wire in enumerate(flow.inputs)
                    if index >= term.carries and wire not in late_reads}
        return kept, largest, consumed

    def _simulate_fused_scan(self, term: ir.Scan, cell: Cell, memory: _Memory,
                             arrays: list[tuple[str, Size]]) -> list[Wire]:
        """A scan run by PyTorch's fused kernel (`torch.lstm`, `torch.gru`): its results, and
        the work arrays the CPU kernels hold at their peak (as measured with torch 2.13): the
        GRU kernel the input projections of every step and a second copy of the outputs, the
        LSTM kernel a copy of the final states."""
        out: list[Wire] = []
        finals = ZERO
        for array in term.cod[:term.carries]:
            size = array_bytes(self.sizes, array)
            finals = finals + size
            out.append(memory.alloc(size))
        stacked = ZERO
        for array in term.cod[term.carries:]:
            size = array_bytes(self.sizes, array)
            stacked = stacked + size
            arrays.append((f"{term.step_name or 'scan'} outputs", size))
            out.append(memory.alloc(size))
        memory.note(finals if cell.kind == "lstm" else stacked * Size.const(4))
        return out


def _block_paths(term: ir.Term, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...],
                                                                          ir.Block]]:
    if isinstance(term, ir.Block):
        inner = (*path, term.title)
        yield inner, term
        yield from _block_paths(term.body, inner)
        return
    for child in ir.children(term):
        yield from _block_paths(child, path)


def _parameter_names(term: ir.Term) -> set[str]:
    return {port.name for t in ir.walk(term) if isinstance(t, ir.Broadcasted)
            for port in t.params if port.name is not None}


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def table(figures: Stats) -> str:
    """The figures as text: one row per operation, then the blocks and the totals."""
    rows: list[list[str]] = [["line", "operation", "runs", "params", "MACs", "FLOPs",
                              "output bytes", "FLOP/B"]]
    for op in figures.operations:
        rows.append([str(op.span.line) if op.span else "",
                     ("  " * len(op.blocks)) + op.label,
                     polynomial_text(op.runs), _or_blank(op.parameters),
                     _or_blank(op.macs), _or_blank(op.flops),
                     polynomial_text(op.output_bytes), intensity_text(op.flops, op.moved)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) if column in (1,) else cell.rjust(width)
                 for column, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    out = [f"{figures.definition}", "", *lines, ""]
    if figures.blocks:
        out.append("blocks:")
        for block in figures.blocks:
            repeat = f" x{block.repeat}" if block.repeat != 1 else ""
            out.append(f"  {' / '.join(block.path)}{repeat}: params "
                       f"{polynomial_text(block.parameters)}, MACs {polynomial_text(block.macs)}"
                       f", FLOPs {polynomial_text(block.flops)}")
        out.append("")
    largest = ", ".join(f"{name} ({polynomial_text(size)} B)" for name, size in figures.largest)
    totals = [
        ("parameters", polynomial_text(figures.parameters), figures.parameters),
        ("multiply-adds", polynomial_text(figures.macs), figures.macs),
        ("FLOPs", polynomial_text(figures.flops), figures.flops),
        ("bytes moved", polynomial_text(figures.moved), figures.moved),
        ("arithmetic intensity", intensity_text(figures.flops, figures.moved) + " FLOP/B",
         None),
        ("largest intermediate", largest, None),
        ("peak forward memory", max_text(figures.peak) + " B", None),
        ("peak forward + backward", "- (no backward pass yet)", None),
    ]
    width = max(len(name) for name, _, _ in totals)
    for name, text, value in totals:
        grows = f"   (grows as {leading_text(value)})" if value is not None and \
            leading(value) else ""
        out.append(f"{name.ljust(width)}  {text}{grows}")
    return "\n".join(out) + "\n"


def _or_blank(value: Size) -> str:
    return "" if value == ZERO else polynomial_text(value)
