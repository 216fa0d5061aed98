"""The reference interpreter: what an IR term means, computed from the definitions of theory.md.

This is the judge that compiled modules are held to (`tests/differential.py`, `bench/fuzz.py
--semantic`), so it is written from the mathematics and shares no code with the compiler:

- a `Reindexing` reads `Y[p] = X[eta(p)]` for every index tuple `p` of its output (the
  indices `eta(p)` of every `p` computed together, each checked to lie inside `X`);
- a `Broadcasted` operation reads each input's tile at every element `p` of its degree through
  its stride morphism (`q = offset + matrix @ p` on the tiling axes; the target axes are taken
  whole), applies the base operation to the tiles of each `p`, and writes the result tiles at
  `p`. The tiles of all the `p` are stacked along a leading axis (`POINT`): a base operation
  defined entrywise on its tile (an activation, a sum) or written for a stack of tiles
  (softmax over each tile's entries) runs on the whole stack at once; the others (a call, a
  gather, a scatter, batchnorm) loop over the elements `p` in row-major order;
- composition, product, rearrangement, block (`repeat` copies in sequence) and scan (a loop
  that carries its states) are what their names say.

Arrays are *named*: an `Array` is a tensor and the names of its axes, and every operation
aligns its operands by name, never by position. Reads outside an array raise `BoundsError`
(the program is unsound for the sizes given), never wrap or truncate. The base operations use
torch on small tiles, written out from their formulas (softmax as `exp(x - max) / sum`, layer
normalisation with the biased variance, ...), not the torch functions the compiler calls.

It is slow (a Python loop per degree element of a call, per step of a scan): use it on small
sizes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import assert_never

import torch

from ncd import ir

__all__ = [
    "Array",
    "BlockCopy",
    "BoundsError",
    "CallSite",
    "EachIndex",
    "Interpreter",
    "InterpreterError",
    "MalformedTerm",
    "ParameterPath",
    "ParameterSource",
    "PathStep",
    "SizeError",
    "resolve_sizes",
]


POINT = "__point"
"""The leading axis of a stack of tiles: the tile at each degree element `p` of a broadcasted
operation, in row-major order of `p` (a name no program can give an axis)."""


class InterpreterError(Exception):
    """The interpreter cannot give a meaning to a term with these sizes and inputs."""


class BoundsError(InterpreterError):
    """A read lands outside its array: the program is unsound for the sizes given."""


class SizeError(InterpreterError):
    """The sizes given are not valid for the program (a size is not positive, a division is
    not exact, a symbol has no value, an input has the wrong shape)."""


class MalformedTerm(InterpreterError):
    """The IR breaks an invariant of its definition (a bug of the elaborator)."""


@dataclass(frozen=True)
class Array:
    """A tensor with a name for each of its axes (in the tensor's dim order)."""

    data: torch.Tensor
    axes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.data.dim() != len(self.axes) or len(set(self.axes)) != len(self.axes):
            raise MalformedTerm(f"array of shape {tuple(self.data.shape)} named {self.axes}")

    def size(self, name: str) -> int:
        return int(self.data.shape[self.axes.index(name)])

    def sizes(self) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.axes, self.data.shape, strict=True)}

    def aligned(self, names: Sequence[str]) -> Array:
        """The same array with its axes in the order `names` (the same set of names)."""
        if tuple(names) == self.axes:
            return self
        if sorted(names) != sorted(self.axes):
            raise MalformedTerm(f"cannot align axes {self.axes} with {tuple(names)}")
        return Array(self.data.permute(tuple(self.axes.index(n) for n in names)), tuple(names))

    def spread(self, names: Sequence[str]) -> torch.Tensor:
        """The tensor laid out on `names` (a superset of its axes), size 1 where it lacks one:
        ready to combine with others by broadcasting."""
        missing = [n for n in self.axes if n not in names]
        if missing:
            raise MalformedTerm(f"axes {missing} are not among {tuple(names)}")
        present = [n for n in names if n in self.axes]
        data = self.aligned(present).data
        shape = [self.size(n) if n in self.axes else 1 for n in names]
        return data.reshape(shape)

    def renamed(self, mapping: Mapping[str, str]) -> Array:
        return Array(self.data, tuple(mapping.get(n, n) for n in self.axes))


@dataclass(frozen=True)
class CallSite:
    """A step of a parameter's path: the parameters of call site `instance`."""

    instance: str


@dataclass(frozen=True)
class BlockCopy:
    """A step of a parameter's path: copy `index` of a block of independent copies."""

    title: str
    index: int


@dataclass(frozen=True)
class EachIndex:
    """A step of a parameter's path, after a `CallSite` of `f[each e](X)`: the copy of the
    parameters that index `index` of axis `axis` owns."""

    axis: str
    index: int


PathStep = CallSite | BlockCopy | EachIndex
ParameterPath = tuple[PathStep, ...]

ParameterSource = Callable[[ParameterPath, ir.Parameter], torch.Tensor]
"""Gives the value of a learned parameter: `(path, parameter) -> tensor` with the axes of
`parameter.array` in their declared order. `path` says whose parameter it is: a `CallSite` per
call (followed by an `EachIndex` where the call gives each index of an axis its own copy),
and a `BlockCopy` per block of independent copies (`repeat > 1`, not `shared`) around it;
shared and single blocks are not on the path (their copies share the parameters)."""


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


def _evaluate(size: ir.SizeExpr, env: Mapping[str, int]) -> int | None:
    """The integer value of a size, None while a symbol it needs has no value; an inexact
    division is a `SizeError` (its size does not exist)."""
    match size:
        case ir.SizeConst(value=value):
            return value
        case ir.SizeSym(name=name):
            return env.get(name)
        case ir.SizeAdd(terms=terms):
            total = 0
            for term in terms:
                addend = _evaluate(term, env)
                if addend is None:
                    return None
                total += addend
            return total
        case ir.SizeMul(factors=factors):
            product = 1
            for factor in factors:
                multiplier = _evaluate(factor, env)
                if multiplier is None:
                    return None
                product *= multiplier
            return product
        case ir.SizeDiv(numerator=num, denominator=den):
            n, d = _evaluate(num, env), _evaluate(den, env)
            if n is None or d is None:
                return None
            if d == 0 or n % d:
                raise SizeError(f"{ir.size_text(size)} = {n} / {d} is not a whole number")
            return n // d
        case ir.SizeFloorDiv(numerator=num, denominator=den):
            n, d = _evaluate(num, env), _evaluate(den, env)
            if n is None or d is None:
                return None
            if d == 0:
                raise SizeError(f"{ir.size_text(size)} divides by zero")
            return n // d
    assert_never(size)


def resolve_sizes(program: ir.Program, symbols: Mapping[str, int]) -> dict[str, int]:
    """The value of every axis of the program, given the values of its free symbols.

    A free symbol is an axis whose size is itself (`axis x`). Every axis must come out
    positive; otherwise the sizes are not valid for the program (`SizeError`).
    """
    env = {name: int(value) for name, value in symbols.items()}
    pending = [axis for axis in program.axes if axis.name not in env]
    while pending:
        rest = []
        for axis in pending:
            if axis.size == ir.SizeSym(name=axis.name):
                raise SizeError(f"axis `{axis.name}` is symbolic and has no value")
            value = _evaluate(axis.size, env)
            if value is None:
                rest.append(axis)
            else:
                env[axis.name] = value
        if len(rest) == len(pending):
            raise SizeError("the sizes of " + ", ".join(a.name for a in rest) + " depend on "
                            "symbols that have no value")
        pending = rest
    for axis in program.axes:
        if env[axis.name] <= 0:
            raise SizeError(f"axis `{axis.name}` = {ir.size_text(axis.size)} has size "
                            f"{env[axis.name]}; sizes are positive")
    return env


# --------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reads:
    """Where a stride morphism reads over a domain, for given sizes of the axes it reads:
    the index tuples `p` of the domain in row-major order and `q = offset + matrix @ p` for
    each (one row per `p`), and the first `(element, row)` of `q` outside its axis, if any."""

    points: torch.Tensor
    q: torch.Tensor
    sizes: tuple[int, ...]
    outside: tuple[int, int] | None


@dataclass(frozen=True)
class Scope:
    """Whose parameters a term reads: the definition it belongs to and the path to it."""

    definition: ir.Definition
    path: ParameterPath


class Interpreter:
    """Evaluates the definitions of one program for fixed sizes and parameters."""

    def __init__(self, program: ir.Program, sizes: Mapping[str, int],
                 parameters: ParameterSource, real: torch.dtype = torch.float64,
                 training: bool = False) -> None:
        self.program = program
        self.training = training
        """The mode: `batchnorm` normalises with the batch's statistics and updates its
        running statistics in training mode, and uses the running ones in evaluation mode."""
        self.updated: dict[tuple[ParameterPath, str], torch.Tensor] = {}
        """The buffers written so far (training mode), by path and name, in the declared axis
        order; a later read of the buffer sees its new value."""
        self.env = resolve_sizes(program, sizes)
        self.parameters = parameters
        self.real = real
        self.definitions = {d.name: d for d in program.definitions}
        self.largest = 0.0
        """The largest finite magnitude of a real entry of any array computed so far: past
        about 1e6, float64 rounding in a base operation (a variance as a difference of
        squares, say) can differ from the formula by more than its epsilon."""
        self.nonfinite = False
        """Whether an array computed so far held a NaN or an infinity. IEEE's special values
        follow no algebraic identity (`0 * NaN` is NaN), so where one arises, an equivalent
        order of evaluation (a fused kernel that skips masked entries) may place them
        elsewhere downstream."""
        # Pure index computations, memoised: the sizes are fixed for the interpreter's life,
        # and a call runs its callee's terms once per degree element. Keyed by the IR node's
        # id, the node kept beside the value (so the id cannot be reused while it is cached).
        self.shape_memo: dict[int, tuple[ir.Shape, tuple[str, ...], tuple[int, ...]]] = {}
        self.reads_memo: dict[tuple[int, int, tuple[int, ...]],
                              tuple[ir.StrideMorphism, ir.Shape, Reads]] = {}

    # ---- entry point
    def run(self, name: str, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The outputs of definition `name` for `inputs` (tensors in the declared axis order,
        without batch dims), in the declared axis order."""
        definition = self.definitions.get(name)
        if definition is None:
            raise InterpreterError(f"no definition named {name!r}")
        if len(inputs) != len(definition.inputs):
            raise SizeError(f"{name} takes {len(definition.inputs)} inputs, got {len(inputs)}")
        arrays = []
        for variable, tensor in zip(definition.inputs, inputs, strict=True):
            expected = tuple(self.size(a.size) for a in variable.array.shape.axes)
            if tuple(tensor.shape) != expected:
                raise SizeError(f"input {variable.name} has shape {tuple(tensor.shape)}, "
                                f"expected {expected}")
            arrays.append(Array(tensor, variable.array.names))
        outputs = self.call(definition, arrays, ())
        return tuple(array.aligned(variable.array.names).data
                     for array, variable in zip(outputs, definition.outputs, strict=True))

    def call(self, definition: ir.Definition, arrays: list[Array],
             path: ParameterPath) -> list[Array]:
        return self.term(definition.body, arrays, Scope(definition, path))

    # ---- sizes and types
    def size(self, size: ir.SizeExpr) -> int:
        value = _evaluate(size, self.env)
        if value is None:
            raise SizeError(f"the size {ir.size_text(size)} has no value")
        return value

    def dtype(self, datatype: ir.Datatype) -> torch.dtype:
        match datatype.kind:
            case "R":
                return self.real
            case "N":
                return torch.int64
            case "B":
                return torch.bool
        assert_never(datatype.kind)

    def layout(self, shape: ir.Shape) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The name and the size of each axis of `shape`, in its order."""
        found = self.shape_memo.get(id(shape))
        if found is None:
            found = shape, shape.names, tuple(self.size(a.size) for a in shape.axes)
            self.shape_memo[id(shape)] = found
        return found[1], found[2]

    def shape_sizes(self, shape: ir.Shape) -> tuple[int, ...]:
        """The size of each axis of `shape`, in its order."""
        return self.layout(shape)[1]

    def check(self, array: Array, expected: ir.ArrayType, what: str) -> None:
        """`array` is of type `expected`: the same axes by name, with the same sizes."""
        names, sizes = self.layout(expected.shape)
        if array.axes == names and tuple(array.data.shape) == sizes:
            return  # the common case: the type's own axis order
        if sorted(names) != sorted(array.axes):
            raise MalformedTerm(f"{what}: axes {array.axes} where {names} are expected")
        for axis, size in zip(expected.shape.axes, sizes, strict=True):
            if array.size(axis.name) != size:
                raise MalformedTerm(f"{what}: axis {axis.name} has {array.size(axis.name)} "
                                    f"entries, its type says {size}")

    # ---- terms
    def term(self, term: ir.Term, values: list[Array], scope: Scope) -> list[Array]:
        if len(values) != len(term.dom):
            raise MalformedTerm(f"{term.kind} takes {len(term.dom)} arrays, got {len(values)}")
        for index, (value, array_type) in enumerate(zip(values, term.dom, strict=True)):
            self.check(value, array_type, f"input {index} of a {term.kind}")
        results = self._term(term, values, scope)
        if len(results) != len(term.cod):
            raise MalformedTerm(f"{term.kind} gives {len(results)} arrays, its type says "
                                f"{len(term.cod)}")
        # The results of a composite that ran a part are results of its parts, noted there.
        noted = ((isinstance(term, ir.Composed | ir.Product) and bool(term.terms))
                 or (isinstance(term, ir.Block) and term.repeat >= 1))
        for index, (value, array_type) in enumerate(zip(results, term.cod, strict=True)):
            self.check(value, array_type, f"output {index} of a {term.kind}")
            if not noted and value.data.is_floating_point() and value.data.numel():
                self.note_magnitude(value.data)
        return results

    def note_magnitude(self, data: torch.Tensor) -> None:
        """Keeps `largest` and `nonfinite` up to date with a real array just computed."""
        top = float(data.abs().max())
        if math.isfinite(top):  # the common case: every entry is finite
            self.largest = max(self.largest, top)
            return
        self.nonfinite = True
        finite = data[torch.isfinite(data)]
        if finite.numel():
            self.largest = max(self.largest, float(finite.abs().max()))

    def _term(self, term: ir.Term, values: list[Array], scope: Scope) -> list[Array]:
        match term:
            case ir.Identity():
                return list(values)
            case ir.Rearrangement(mapping=mapping):
                return [values[i] for i in mapping]
            case ir.Reindexing():
                return [self.reindexing(term, values[0])]
            case ir.Broadcasted():
                return self.broadcasted(term, values, scope)
            case ir.Composed(terms=terms):
                for part in terms:
                    values = self.term(part, values, scope)
                return values
            case ir.Product(terms=terms):
                results: list[Array] = []
                start = 0
                for part in terms:
                    results.extend(self.term(part, values[start:start + len(part.dom)], scope))
                    start += len(part.dom)
                return results
            case ir.Block():
                return self.block(term, values, scope)
            case ir.Scan():
                return self.scan(term, values, scope)
            case ir.Machine():
                return self.machine(term, values, scope)
        assert_never(term)

    def elements(self, shape: ir.Shape) -> Iterator[tuple[int, ...]]:
        """Every index tuple of a shape, in row-major order."""
        return itertools.product(*(range(n) for n in self.shape_sizes(shape)))

    def reindexing(self, term: ir.Reindexing, value: Array) -> Array:
        """`Y[p] = X[eta(p)]` for every index tuple `p` of the output."""
        eta = term.eta
        output_type = term.cod[0]
        if sorted(eta.codomain.names) != sorted(value.axes):
            raise MalformedTerm(f"reindexing reads {eta.codomain.names} from {value.axes}")
        if sorted(eta.domain.names) != sorted(output_type.names):
            raise MalformedTerm(f"reindexing writes {eta.domain.names} as {output_type.names}")
        entries = self.read_through(eta, value, (), eta.domain, term.source or "the input",
                                    term.span)
        return Array(entries.reshape([self.size(a.size) for a in eta.domain.axes]),
                     eta.domain.names)

    def read_through(self, eta: ir.StrideMorphism, value: Array, targets: Sequence[str],
                     domain: ir.Shape, what: str, span: ir.Span | None) -> torch.Tensor:
        """What `value` holds at `eta(p)` for every index tuple `p` of `domain` (the shape
        `eta` maps from), in row-major order of `p`: a tensor of shape
        `[number of p, *targets]`. The codomain
        axes of `eta` are indexed at `q = offset + matrix @ p` (every `q` checked to lie
        inside `value`: the first that does not, in row-major order, is the `BoundsError`);
        the `targets` (the other axes of `value`) are taken whole, in `value`'s order."""
        reads = self.reads(eta, domain, tuple(value.size(a.name) for a in eta.codomain.axes))
        if reads.outside is not None:
            element, row = reads.outside
            where = f" (line {span.line})" if span is not None else ""
            point = ", ".join(f"{a.name}={int(i)}" for a, i in zip(
                eta.domain.axes, reads.points[element], strict=True))
            raise BoundsError(f"{what}{where}: at {point}, {eta.row_text(row)} = "
                              f"{int(reads.q[element, row])} is outside axis "
                              f"{eta.codomain.axes[row].name} of size {reads.sizes[row]}")
        data = value.aligned((*eta.codomain.names, *targets)).data
        if not reads.sizes:  # nothing to index: every p reads the whole array
            return data.unsqueeze(0).expand(len(reads.points), *data.shape)
        return data[reads.q.unbind(1)]

    def reads(self, eta: ir.StrideMorphism, domain: ir.Shape,
              sizes: tuple[int, ...]) -> Reads:
        """Where `eta` reads over `domain` in arrays whose codomain axes have `sizes` (see
        `read_through`); memoised, as it depends on nothing else."""
        key = (id(eta), id(domain), sizes)
        found = self.reads_memo.get(key)
        if found is not None:
            return found[2]
        rows, columns = len(eta.codomain.axes), len(eta.domain.axes)
        if len(domain.axes) != columns or len(eta.matrix) != rows or any(
                len(row) != columns for row in eta.matrix):
            raise MalformedTerm(f"a stride morphism {eta.text()} read over {domain}")
        listed = list(self.elements(domain))
        points = torch.tensor(listed, dtype=torch.int64).reshape(len(listed), columns)
        matrix = torch.tensor(eta.matrix, dtype=torch.int64).reshape(rows, columns)
        q = points @ matrix.T + torch.tensor(eta.offset, dtype=torch.int64)  # one row per p
        outside = (q < 0) | (q >= torch.tensor(sizes, dtype=torch.int64))
        first = None
        if bool(outside.any()):
            first = divmod(int(outside.reshape(-1).nonzero()[0]), rows)
        reads = Reads(points, q, sizes, first)
        self.reads_memo[key] = eta, domain, reads
        return reads

    # ---- blocks and scans
    def block(self, term: ir.Block, values: list[Array], scope: Scope) -> list[Array]:
        for copy in range(term.repeat):
            path = scope.path
            if term.copy_of is not None:  # one copy of a repeated block, run on its own
                path = (*path, BlockCopy(term.copy_of.title, term.copy_of.index))
            elif term.repeat > 1 and not term.shared:
                path = (*path, BlockCopy(term.title, copy))
            values = self.term(term.body, values, Scope(scope.definition, path))
        return values

    def scan(self, term: ir.Scan, values: list[Array], scope: Scope) -> list[Array]:
        axis = term.axis.name
        states, sequences = values[:term.carries], values[term.carries:]
        collected: list[list[Array]] = [[] for _ in term.step.cod[term.carries:]]
        order = range(self.size(term.axis.size))
        for step in reversed(order) if term.reverse else order:
            slices = []
            for sequence in sequences:
                if axis not in sequence.axes:
                    raise MalformedTerm(f"scan sequence {sequence.axes} lacks the axis {axis}")
                position = sequence.axes.index(axis)
                slices.append(Array(sequence.data.select(position, step),
                                    tuple(n for n in sequence.axes if n != axis)))
            outputs = self.term(term.step, states + slices, scope)
            states = outputs[:term.carries]
            for bucket, output in zip(collected, outputs[term.carries:], strict=True):
                bucket.append(output)
        stacked = []
        for bucket, step_type in zip(collected, term.step.cod[term.carries:], strict=True):
            names = step_type.names
            if bucket:
                tiles = reversed(bucket) if term.reverse else bucket  # in the axis's order
                data = torch.stack([tile.aligned(names).data for tile in tiles])
            else:
                shape = [0] + [self.size(a.size) for a in step_type.shape.axes]
                data = torch.zeros(shape, dtype=self.dtype(step_type.dtype))
            stacked.append(Array(data, (axis, *names)))
        return states + stacked

    def machine(self, term: ir.Machine, values: list[Array], scope: Scope) -> list[Array]:
        """Block by block along the axis, each block read from the body run on the state built
        so far (the forward pass), or on the forward state masked to the blocks before it with
        the gradient of the block just solved (the backward pass: `ir.Machine`)."""
        axis = term.axis.name
        length = self.size(term.axis.size)
        if sum(term.blocks) != length:
            raise MalformedTerm(f"machine blocks {term.blocks} do not cut {axis} of {length}")

        def kept(value: Array, start: int, stop: int) -> Array:
            """`value` with the entries of `axis` outside [start, stop) set to zero."""
            if axis not in value.axes:
                raise MalformedTerm(f"machine array {value.axes} lacks the axis {axis}")
            position = torch.arange(length)
            inside = ((position >= start) & (position < stop)).to(value.data.dtype)
            shape = [length if n == axis else 1 for n in value.axes]
            return Array(value.data * inside.reshape(shape), value.axes)

        def plus(left: Array, right: Array) -> Array:
            return Array(left.data + right.aligned(left.axes).data, left.axes)

        if not term.backward:
            *context, source = values
            state = Array(torch.zeros_like(source.data), source.axes)
            for start, stop in term.ranges(length):
                (result,) = self.term(term.body, [*context, state], scope)
                state = plus(state, kept(plus(source, result), start, stop))
            return [state]
        *context, forward, gradient = values
        where = term.state_output
        total = gradient
        solved = Array(torch.zeros_like(gradient.data), gradient.axes)
        sums: list[Array | None] = [None] * len(term.cod)
        for start, stop in term.ranges(length):
            block = kept(total, start, stop)
            solved = plus(solved, block)
            outputs = self.term(term.body, [*context, kept(forward, 0, start), block], scope)
            total = plus(total, kept(outputs[where], 0, start))
            for index, output in enumerate(outputs):
                found = sums[index]
                sums[index] = output if found is None else plus(found, output)
        results: list[Array] = []
        for index, found in enumerate(sums):
            if index == where:
                results.append(solved)
            elif found is None:
                raise MalformedTerm("a machine has no blocks")
            else:
                results.append(found)
        return results

    # ---- broadcasted operations
    def parameter(self, port: ir.Port, scope: Scope) -> Array:
        if port.name is None:
            raise MalformedTerm("a parameter port has no name")
        declared = next((p for p in scope.definition.params if p.name == port.name), None)
        if declared is None:
            raise MalformedTerm(f"parameter {port.name!r} is not declared by "
                                f"{scope.definition.name!r}")
        tensor = self.updated.get((scope.path, declared.name))
        if tensor is None:
            tensor = self.parameters(scope.path, declared)
        expected = tuple(self.size(a.size) for a in declared.array.shape.axes)
        if tuple(tensor.shape) != expected:
            raise SizeError(f"parameter {port.name} of {scope.definition.name} has shape "
                            f"{tuple(tensor.shape)}, expected {expected}")
        return Array(tensor, declared.array.names)

    def tiles(self, value: Array, port: ir.Port, degree: ir.Shape,
              span: ir.Span | None) -> Array:
        """The tiles of `value` that the base operation reads at the degree elements `p`,
        stacked along a leading axis `POINT` in row-major order of `p`: the tiling axes read
        through the port's stride morphism, the target axes taken whole."""
        eta = port.reindexing
        tiling = [n for n in value.axes if n not in port.targets]
        if sorted(tiling) != sorted(eta.codomain.names):
            raise MalformedTerm(f"port of {value.axes} with targets {port.targets} tiles over "
                                f"{eta.codomain.names}")
        missing = [t for t in port.targets if t not in value.axes]
        if missing:
            raise MalformedTerm(f"targets {missing} are not axes of {value.axes}")
        kept = tuple(n for n in value.axes if n in port.targets)
        stacked = self.read_through(eta, value, kept, degree, port.name or "an operand", span)
        return Array(stacked, (POINT, *kept))

    def tile_writer(self, result: torch.Tensor, output_axes: tuple[str, ...],
                    port: ir.Port, degree: ir.Shape) -> Callable[[Array], None]:
        """Writes a stack of tiles (one per degree element `p`, see `tiles`) into the output:
        outputs tile by a permutation (checked once here), so the tile of `p` lands at the
        entries `p` names."""
        eta = port.reindexing
        places: list[int | None] = []  # per output axis: None for a target, else a degree axis
        for name in output_axes:
            if name in port.targets:
                places.append(None)
                continue
            row = eta.codomain.names.index(name)
            ones = [i for i, c in enumerate(eta.matrix[row]) if c]
            if eta.offset[row] or len(ones) != 1 or eta.matrix[row][ones[0]] != 1:
                raise MalformedTerm(f"output {output_axes} tiles by {eta.text()}, "
                                    f"not a permutation")
            places.append(ones[0])
        targets = tuple(n for n in output_axes if n in port.targets)
        sizes = self.shape_sizes(degree)
        # Where each degree axis is one output axis of its size, the stack laid out on the
        # degree's axes is the output with its axes permuted; otherwise tile by tile.
        at_once = sorted(at for at in places if at is not None) == list(range(len(sizes))) \
            and all(at is None or result.shape[i] == sizes[at] for i, at in enumerate(places))
        order, target = [], len(sizes)
        for at in places:  # the grid's dims (degree axes, then targets) in the output's order
            order.append(target if at is None else at)
            target += at is None

        def write(stack: Array) -> None:
            if stack.axes[:1] != (POINT,) or sorted(targets) != sorted(stack.axes[1:]):
                raise MalformedTerm(f"a base operation gave axes {stack.axes[1:]} for targets "
                                    f"{targets}")
            tiles = stack.aligned((POINT, *targets)).data
            if at_once:
                result[...] = tiles.reshape((*sizes, *tiles.shape[1:])).permute(order)
                return
            for tile, p in zip(tiles, self.elements(degree), strict=True):
                result[tuple(slice(None) if at is None else p[at] for at in places)] = tile

        return write

    def broadcasted(self, term: ir.Broadcasted, values: list[Array], scope: Scope) -> list[Array]:
        if len(values) != len(term.inputs):
            raise MalformedTerm(f"{term.op.kind} has {len(term.inputs)} input ports and "
                                f"{len(values)} inputs")
        params = [self.parameter(port, scope) for port in term.params]
        results = [torch.zeros(self.shape_sizes(port.array.shape),
                               dtype=self.dtype(port.array.dtype)) for port in term.outputs]
        # Every read is checked before the first base operation runs: a program that reads
        # outside an array is refused (`BoundsError`) whatever else it would do.
        inputs = [self.tiles(value, port, term.degree, term.span)
                  for value, port in zip(values, term.inputs, strict=True)]
        param_inputs = [self.tiles(value, port, term.degree, term.span)
                        for value, port in zip(params, term.params, strict=True)]
        writers = [self.tile_writer(result, port.array.names, port, term.degree)
                   for result, port in zip(results, term.outputs, strict=True)]
        outputs = self.base(term, inputs, param_inputs, scope)
        if len(outputs) != len(term.outputs):
            raise MalformedTerm(f"{term.op.kind} gave {len(outputs)} tiles for "
                                f"{len(term.outputs)} outputs")
        for write, stack in zip(writers, outputs, strict=True):
            write(stack)
        return [Array(result, port.array.names) for result, port in
                zip(results, term.outputs, strict=True)]

    def each_point(self, term: ir.Broadcasted, tiles: list[Array], params: list[Array],
                   compute: Callable[[list[Array], list[Array], tuple[int, ...]], list[Array]],
                   ) -> list[Array]:
        """A base operation that is not written for a stack of tiles: `compute(tiles, params,
        p)` on the tiles of one degree element `p` at a time, in row-major order, its results
        stacked (as `base` gives them)."""

        def at(stack: Array, element: int) -> Array:
            return Array(stack.data[element], stack.axes[1:])

        columns: list[list[Array]] = [[] for _ in term.outputs]
        for element, p in enumerate(self.elements(term.degree)):
            outputs = compute([at(t, element) for t in tiles], [at(t, element) for t in params],
                              p)
            if len(outputs) != len(term.outputs):
                raise MalformedTerm(f"{term.op.kind} gave {len(outputs)} tiles for "
                                    f"{len(term.outputs)} outputs")
            for column, tile in zip(columns, outputs, strict=True):
                column.append(tile)
        stacks = []
        for column in columns:
            names = column[0].axes
            stacks.append(Array(torch.stack([tile.aligned(names).data for tile in column]),
                                (POINT, *names)))
        return stacks

    # ---- base operations on stacks of tiles
    def base(self, term: ir.Broadcasted, tiles: list[Array], params: list[Array],
             scope: Scope) -> list[Array]:
        """The base operation at every degree element: `tiles` and `params` are stacks of
        tiles (leading axis `POINT`, see `tiles`), and so is each result. An operation defined
        entrywise on its tile, or whose formula is written for a stack, runs on the whole
        stack; the others run at one element at a time (`each_point`)."""
        op = term.op
        out = [(POINT, *port.targets) for port in term.outputs]
        match op:
            case ir.EinsumOp():
                return [self.product_sum([*tiles, *params], op.contracted, out[0], op.scale)]
            case ir.LinearOp():
                return [self.linear(op, tiles[0], params)]
            case ir.EmbeddingOp():
                return [self.embedding(op, tiles[0], params[0], term)]
            case ir.SoftmaxOp():
                return [softmax(tiles[0], op.log)]
            case ir.NormOp():
                return [normalise(op, tiles[0], params)]
            case ir.BatchNormOp():
                # Training mode writes the running statistics at every element, in order.
                def batchnorm(tile: list[Array], param: list[Array],
                              _: tuple[int, ...], op: ir.BatchNormOp = op) -> list[Array]:
                    return [self.batchnorm(op, term, tile[0], param, scope)]
                return self.each_point(term, tiles, params, batchnorm)
            case ir.ElementwiseOp():
                return [Array(elementwise(op.function, tiles[0].data), tiles[0].axes)]
            case ir.ScaleOp():
                return [Array(tiles[0].data * op.factor, tiles[0].axes)]
            case ir.DropoutOp():
                return [tiles[0]]  # the meaning at inference: dropout keeps every entry
            case ir.AddOp():
                return [combine([*tiles, *params], out[0], torch.add)]
            case ir.MultiplyOp():
                return [combine([*tiles, *params], out[0], torch.mul)]
            case ir.MaskOp():
                return [mask(op, tiles)]
            case ir.ReduceOp():
                return [reduce(op, tiles[0])]
            case ir.ConcatOp():
                return [concatenate(op, tiles)]
            case ir.SplitOp():
                sizes = [self.size(port.array.shape.axis(axis).size)
                         for port, axis in zip(term.outputs, op.outputs, strict=True)]
                return split(op, tiles[0], sizes)
            case ir.PadOp():
                return [pad(op, tiles[0])]
            case ir.RenameOp():
                return [tiles[0].renamed(dict(op.mapping))]
            case ir.ReshapeOp():
                shape = [self.size(term.outputs[0].array.shape.axis(a).size) for a in op.outputs]
                return [reshape(op, tiles[0], shape)]
            case ir.CallOp():
                # The callee runs once per element (with its own parameters where `each`).
                def call(tile: list[Array], _: list[Array], p: tuple[int, ...],
                         op: ir.CallOp = op) -> list[Array]:
                    return self.call_site(term, op, tile, scope, p)
                return self.each_point(term, tiles, params, call)
            case ir.ConstantOp():
                return [Array(with_constant(op, tiles[0].data), tiles[0].axes)]
            case ir.BinaryOp():
                return [combine(tiles, out[0], BINARY[op.function])]
            case ir.WhereOp():
                return [choose(tiles, out[0])]
            case ir.GateOp():
                return [gate(op, tiles, out[0])]
            case ir.ParameterOp() | ir.BufferOp():
                return [params[0]]  # the parameter itself, as data on a wire
            case ir.IndexValueOp():
                def index_values(_: list[Array], __: list[Array], ___: tuple[int, ...],
                                 op: ir.IndexValueOp = op) -> list[Array]:
                    return [self.index_values(op, term.outputs[0].array)]
                return self.each_point(term, tiles, params, index_values)
            case ir.GatherOp():
                def gather(tile: list[Array], _: list[Array], __: tuple[int, ...],
                           op: ir.GatherOp = op) -> list[Array]:
                    # The coordinates follow the source's axes in its declared order, whatever
                    # order the array arrived in (a scan stacks its outputs in its step's
                    # order).
                    source = tile[0].aligned(term.inputs[0].targets)
                    return [self.gather(op, [source, *tile[1:]], term.outputs[0].array,
                                        term.span)]
                return self.each_point(term, tiles, params, gather)
            case ir.ScatterAddOp():
                size = self.size(term.outputs[0].array.shape.axis(op.output).size)

                def scatter(tile: list[Array], _: list[Array], __: tuple[int, ...],
                            op: ir.ScatterAddOp = op) -> list[Array]:
                    return [scatter_add(op, tile[0], tile[1], size, term.span)]
                return self.each_point(term, tiles, params, scatter)
        assert_never(op)

    def index_values(self, op: ir.IndexValueOp, out: ir.ArrayType) -> Array:
        """Entry p is `sum c_a * p_a + offset`, one entry at a time."""
        result = torch.zeros([self.size(a.size) for a in out.shape.axes], dtype=self.real)
        coefficients = dict(op.coefficients)
        for p in self.elements(out.shape):
            point = dict(zip(out.names, p, strict=True))
            result[p] = op.offset + sum(c * point[n] for n, c in coefficients.items())
        return Array(result, out.names)

    def gather(self, op: ir.GatherOp, tiles: list[Array], out: ir.ArrayType,
               span: ir.Span | None) -> Array:
        """`Y[p] = X[q(p)]`, one entry at a time; each coordinate is checked to lie inside X."""
        source = tiles[0]
        if len(op.indices) != len(source.axes):
            raise MalformedTerm(f"a gather reads {len(op.indices)} indices of {source.axes}")
        result = torch.zeros([self.size(a.size) for a in out.shape.axes],
                             dtype=source.data.dtype)
        where = f" (line {span.line})" if span is not None else ""
        for p in self.elements(out.shape):
            point = dict(zip(out.names, p, strict=True))
            q: list[int] = []
            for axis, index in zip(source.axes, op.indices, strict=True):
                if index.array is not None:
                    table = tiles[index.array]
                    value = int(table.data[tuple(point[n] for n in table.axes)])
                else:
                    value = index.offset + sum(c * point[n] for n, c in index.coefficients)
                    value = value // index.divisor
                    if index.modulus is not None:
                        value = value % index.modulus
                if not 0 <= value < source.size(axis):
                    at = ", ".join(f"{n}={i}" for n, i in point.items())
                    raise BoundsError(f"gather{where}: at {at}, {index.text} = {value} is "
                                      f"outside axis {axis} of size {source.size(axis)}")
                q.append(value)
            result[p] = source.data[tuple(q)]
        return Array(result, out.names)

    def product_sum(self, operands: list[Array], contracted: Sequence[str],
                    outputs: Sequence[str], scale: float = 1.0) -> Array:
        """`scale * sum over contracted of the product of the operands`, by name."""
        names = list(dict.fromkeys([*outputs, *contracted]))
        for operand in operands:
            extra = [n for n in operand.axes if n not in names]
            if extra:
                raise MalformedTerm(f"operand axes {extra} are neither contracted nor outputs")
        sizes: dict[str, int] = {}
        for operand in operands:
            for name, size in operand.sizes().items():
                if sizes.setdefault(name, size) != size:
                    raise MalformedTerm(f"axis {name} has sizes {sizes[name]} and {size}")
        product = torch.ones([sizes.get(n, 1) for n in names], dtype=self.real)
        for operand in operands:
            product = product * operand.spread(names)
        dims = [names.index(n) for n in contracted]
        total = product.sum(dim=dims) if dims else product
        return Array(total * scale if scale != 1.0 else total, tuple(outputs))

    def batchnorm(self, op: ir.BatchNormOp, term: ir.Broadcasted, tile: Array,
                  params: list[Array], scope: Scope) -> Array:
        """Each channel (the axes not in `op.axes`) normalised over `op.axes`: in training mode
        by the batch's mean and biased variance, and the running statistics move towards the
        batch's mean and unbiased variance by `momentum`; in evaluation mode by the running
        statistics."""
        channels = tuple(n for n in tile.axes if n not in op.axes)
        layout = (*op.axes, *channels)
        x = tile.aligned(layout).data
        count = 1
        for name in op.axes:
            count *= tile.size(name)
        rows = x.reshape(count, -1)
        running_mean, running_var, *rest = (p.aligned(channels).data.reshape(-1) for p in params)
        if self.training:
            if count < 2:
                raise SizeError(f"batchnorm over {op.axes} sees {count} value per channel; "
                                "training mode needs at least two")
            # shifted by the first row, as `normalise` shifts a layer norm's tile: exact
            # for a channel whose entries are equal
            mean = rows[0] + (rows - rows[0]).sum(0) / count
            deviation = rows - mean
            variance = (deviation * deviation).sum(0) / count
            y = deviation / torch.sqrt(variance + op.eps)
            new_mean = (1 - op.momentum) * running_mean + op.momentum * mean
            new_var = ((1 - op.momentum) * running_var
                       + op.momentum * variance * count / (count - 1))
            for port, value, source in zip(term.params, (new_mean, new_var), params[:2],
                                           strict=False):
                assert port.name is not None  # parameter() has read it
                declared = self.declared(port.name, scope)
                shaped = Array(value.reshape(source.aligned(channels).data.shape), channels)
                self.updated[(scope.path, port.name)] = shaped.aligned(declared.array.names).data
        else:
            y = (rows - running_mean) / torch.sqrt(running_var + op.eps)
        if op.affine:
            y = y * rest.pop(0)
        if op.bias:
            y = y + rest.pop(0)
        return Array(y.reshape(x.shape), layout).aligned(tile.axes)

    def declared(self, name: str, scope: Scope) -> ir.Parameter:
        found = next((p for p in scope.definition.params if p.name == name), None)
        if found is None:
            raise MalformedTerm(f"parameter {name!r} is not declared by {scope.definition.name!r}")
        return found

    def linear(self, op: ir.LinearOp, x: Array, params: list[Array]) -> Array:
        """`Y[o] = sum_i X[i] W[i, o] (+ b[o])`, for stacks of tiles; input axis `op.inputs[i]`
        is paired with the weight axis `op.weight_inputs[i]` (named `a`, or `a_in` when `a` is
        also an output axis, by the elaborator)."""
        weight = params[0]
        pairing: dict[str, str] = {}
        for axis, wanted in zip(op.inputs, op.weight_inputs, strict=True):
            if wanted not in weight.axes:
                raise MalformedTerm(f"linear weight {weight.axes} has no axis {wanted}")
            pairing[wanted] = f"__input_{axis}"
        inputs = x.renamed({a: f"__input_{a}" for a in op.inputs})
        outputs = (POINT, *op.outputs)
        result = self.product_sum([inputs, weight.renamed(pairing)],
                                  [f"__input_{a}" for a in op.inputs], outputs)
        if op.bias:
            result = Array(result.data + params[1].aligned(outputs).data, result.axes)
        return result

    def embedding(self, op: ir.EmbeddingOp, index: Array, table: Array,
                  term: ir.Broadcasted) -> Array:
        """Row `index[p]` of `table[p]` at each element `p` of the stacks; the first index
        outside the vocabulary, in the order of `p`, is the `BoundsError`."""
        if index.axes != (POINT,):
            raise MalformedTerm(f"an embedding index tile has axes {index.axes[1:]}")
        vocabulary = [n for n in table.axes[1:] if n not in op.outputs]
        if len(vocabulary) != 1:
            raise MalformedTerm(f"embedding table {table.axes[1:]} for outputs {op.outputs}")
        rows = index.data.to(torch.int64)
        size = table.size(vocabulary[0])
        outside = (rows < 0) | (rows >= size)
        if bool(outside.any()):
            row = int(rows[int(outside.nonzero()[0])])
            where = f" (line {term.span.line})" if term.span is not None else ""
            raise BoundsError(f"embedding{where}: index {row} is outside the vocabulary of "
                              f"size {size}")
        entries = table.aligned((POINT, vocabulary[0], *op.outputs)).data
        return Array(entries[torch.arange(len(rows)), rows], (POINT, *op.outputs))

    def call_site(self, term: ir.Broadcasted, op: ir.CallOp, tiles: list[Array],
                  scope: Scope, p: Sequence[int]) -> list[Array]:
        callee = self.definitions.get(op.definition)
        if callee is None:
            raise MalformedTerm(f"call of unknown definition {op.definition!r}")
        arguments = []
        for tile, variable in zip(tiles, callee.inputs, strict=True):
            if sorted(tile.axes) != sorted(variable.array.names):
                raise MalformedTerm(f"call of {op.definition} passes axes {tile.axes} for "
                                    f"{variable.name}: {variable.array.text()}")
            arguments.append(tile)
        path: ParameterPath = (*scope.path, CallSite(op.instance))
        if op.each is not None:
            # `f[each e](X)`: at degree element p, the copy of the parameters of index p[e].
            if op.each not in term.degree.names:
                raise MalformedTerm(f"call of {op.definition} has parameters for each "
                                    f"{op.each}, which is not a lifted axis "
                                    f"{term.degree.names}")
            path = (*path, EachIndex(op.each, p[term.degree.names.index(op.each)]))
        results = self.call(callee, arguments, path)
        for result, port in zip(results, term.outputs, strict=True):
            if sorted(result.axes) != sorted(port.targets):
                raise MalformedTerm(f"{op.definition} returns axes {result.axes} for "
                                    f"targets {port.targets}")
        return results


# --------------------------------------------------------------------------------------
# Base operations, each from its formula
# --------------------------------------------------------------------------------------


def elementwise(function: str, x: torch.Tensor) -> torch.Tensor:
    match function:
        case "relu":
            return torch.where(x < 0, torch.zeros_like(x), x)  # NaN stays NaN
        case "gelu":
            return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        case "silu":
            return x / (1 + torch.exp(-x))
        case "sigmoid":
            return 1 / (1 + torch.exp(-x))
        case "tanh":
            return torch.tanh(x)
        case "exp":
            return torch.exp(x)
        case "log":
            return torch.log(x)
        case "neg":
            return -x
        case "sqrt":
            return torch.sqrt(x)
        case "abs":
            return torch.where(x < 0, -x, x)
        case "square":
            return x * x
        case "softplus":
            return torch.logaddexp(x, torch.zeros_like(x))  # log(exp(x) + exp(0)), no overflow
        case "reciprocal":
            return 1 / x
        case "rsqrt":
            return 1 / torch.sqrt(x)
        case "sin":
            return torch.sin(x)
        case "cos":
            return torch.cos(x)
        case "erf":
            return torch.erf(x)
        case "gelu_tanh":
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
        case "sign":
            # 0 where x is NaN: the language defines sign so (as torch.sign computes it).
            ones = torch.ones_like(x)
            return torch.where(x > 0, ones, torch.where(x < 0, -ones, torch.zeros_like(x)))
    raise MalformedTerm(f"unknown elementwise function {function!r}")


def per_tile(stack: Array) -> torch.Tensor:
    """A stack of tiles (leading axis `POINT`) as a matrix: one row of entries per tile."""
    return stack.data.reshape(stack.data.shape[0], -1)


def softmax(stack: Array, log: bool) -> Array:
    """Over every entry of each tile (its target axes together)."""
    flat = per_tile(stack)
    top = flat.amax(1, keepdim=True)
    shifted = flat - top
    total = torch.exp(shifted).sum(1, keepdim=True)
    result = shifted - torch.log(total) if log else torch.exp(shifted) / total
    return Array(result.reshape(stack.data.shape), stack.axes)


def normalise(op: ir.NormOp, tile: Array, params: list[Array]) -> Array:
    """Each tile of the stack over all its entries."""
    x = tile.data
    count = per_tile(tile).shape[1]

    def total(entries: torch.Tensor) -> torch.Tensor:  # per tile, shaped to broadcast
        return entries.reshape(x.shape[0], -1).sum(1).reshape(-1, *[1] * (x.dim() - 1))

    if op.norm == "layernorm":
        # The mean of the entries shifted by the tile's first one, added back: the same
        # number, and exact for a tile whose entries are equal (its deviations exactly 0, as
        # a layer norm kernel gives them), where `total(x) / count` rounds; a later
        # normalisation of entries that differ by that rounding only would blow it up.
        first = x.reshape(x.shape[0], -1)[:, :1].reshape(-1, *[1] * (x.dim() - 1))
        mean = first + total(x - first) / count
        variance = total((x - mean) ** 2) / count  # biased, as the definition of layer norm
        y = (x - mean) / torch.sqrt(variance + op.eps)
    else:
        y = x / torch.sqrt(total(x * x) / count + op.eps)
    rest = list(params)
    if op.affine:
        y = y * rest.pop(0).aligned(tile.axes).data
    if op.bias:
        y = y + rest.pop(0).aligned(tile.axes).data
    return Array(y, tile.axes)


def combine(operands: list[Array], outputs: Sequence[str],
            function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Array:
    """An entrywise sum or product; an operand lacking an axis is broadcast along it."""
    if not operands:
        raise MalformedTerm("an entrywise operation without operands")
    names = list(outputs)
    result = operands[0].spread(names)
    for operand in operands[1:]:
        result = function(result, operand.spread(names))
    shape = []
    for name in names:
        sizes = {o.size(name) for o in operands if name in o.axes}
        if len(sizes) != 1:
            raise MalformedTerm(f"axis {name} has sizes {sorted(sizes)} among the operands")
        shape.append(sizes.pop())
    return Array(result.expand(shape).clone(), tuple(names))


def with_constant(op: ir.ConstantOp, x: torch.Tensor) -> torch.Tensor:
    """`x + c`, `x - c`, `c - x`, `c / x`, `x ^ c`: the constant on the side it is written."""
    c = torch.full_like(x, op.constant)
    left, right = (c, x) if op.constant_first else (x, c)
    match op.op:
        case "+":
            return left + right
        case "-":
            return left - right
        case "/":
            return left / right
        case "^":
            return torch.pow(left, right)
    assert_never(op.op)


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(a) | (a >= b), a, b)  # NaN in either operand stays NaN


def _minimum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(a) | (a <= b), a, b)


BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "divide": torch.div, "maximum": _maximum, "minimum": _minimum,
}
"""The entrywise functions of two arrays, the first operand on the left."""


def gate(op: ir.GateOp, operands: list[Array], outputs: Sequence[str]) -> Array:
    """A Boolean gate from its polynomial over Z2 (entries as the integers 0 and 1): XOR is
    a + b, AND ab, OR a + b + ab, NOT 1 + a, all mod 2; the XOR along axes is the sum of the
    tile's entries mod 2."""
    numbers = [Array(o.data.to(torch.int64), o.axes) for o in operands]
    if op.axes:
        if op.gate != "xor" or sorted(op.axes) != sorted(numbers[0].axes[1:]):
            raise MalformedTerm(f"{op.gate} over {op.axes} of a tile with axes "
                                f"{numbers[0].axes[1:]}")
        return Array(per_tile(numbers[0]).sum(1) % 2 == 1, (POINT,))
    match op.gate:
        case "xor":
            value = combine(numbers, outputs, torch.add)
        case "and":
            value = combine(numbers, outputs, torch.mul)
        case "or":
            value = combine(numbers, outputs, lambda a, b: a + b + a * b)
        case "not":
            single = combine(numbers, outputs, torch.add)  # one operand: itself
            value = Array(single.data + 1, single.axes)
        case _:
            assert_never(op.gate)
    return Array(value.data % 2 == 1, value.axes)


def choose(operands: list[Array], outputs: Sequence[str]) -> Array:
    """`where(C, X, Y)`, each operand broadcast along the output axes it lacks."""
    condition, first, second = (o.spread(list(outputs)) for o in operands)
    shape = [next(o.size(name) for o in operands if name in o.axes) for name in outputs]
    chosen = torch.where(condition.expand(shape), first.expand(shape), second.expand(shape))
    return Array(chosen.clone(), tuple(outputs))


def mask(op: ir.MaskOp, tiles: list[Array]) -> Array:
    """Each tile of the stack where the conditions hold (and the mask array is true), `fill`
    elsewhere."""
    tile = tiles[0]
    axes, shape = tile.axes[1:], tile.data.shape[1:]
    keep = torch.ones(tile.data.shape, dtype=torch.bool)
    if op.by_array:
        keep = keep & tiles[1].spread(tile.axes).to(torch.bool)
    elif not op.conditions:
        raise MalformedTerm("a mask has neither conditions nor a mask array")
    holding = torch.ones(shape, dtype=torch.bool)  # within a tile, the same for every tile
    for index in itertools.product(*(range(n) for n in shape)):
        position = dict(zip(axes, index, strict=True))
        for condition in op.conditions:
            if not holds(condition, position):
                holding[index] = False
    keep = keep & holding
    fill = torch.full_like(tile.data, op.fill)
    return Array(torch.where(keep, tile.data, fill), tile.axes)


def holds(condition: ir.Comparison, position: Mapping[str, int]) -> bool:
    value = condition.offset
    for name, coefficient in condition.coefficients:
        if name not in position:
            raise MalformedTerm(f"mask condition {condition.text!r} names {name!r}, which is "
                                f"not a target axis")
        value += coefficient * position[name]
    match condition.op:
        case ">=":
            return value >= 0
        case ">":
            return value > 0
        case "<=":
            return value <= 0
        case "<":
            return value < 0
        case "==":
            return value == 0
        case "!=":
            return value != 0
    assert_never(condition.op)


def scatter_add(op: ir.ScatterAddOp, value: Array, places: Array, size: int,
                span: ir.Span | None) -> Array:
    """`Y[places[e]] += X[e]` for every e along `op.input`; Y starts at zero."""
    if value.axes != (op.input,) or places.axes != (op.input,):
        raise MalformedTerm(f"scatter_add tiles {value.axes} and {places.axes} for {op.input}")
    result = torch.zeros(size, dtype=value.data.dtype)
    for e in range(value.size(op.input)):
        place = int(places.data[e])
        if not 0 <= place < size:
            where = f" (line {span.line})" if span is not None else ""
            raise BoundsError(f"scatter_add{where}: at {op.input}={e}, the index array holds "
                              f"{place}, outside axis {op.output} of size {size}")
        result[place] = result[place] + value.data[e]
    return Array(result, (op.output,))


def reduce(op: ir.ReduceOp, tile: Array) -> Array:
    """Each tile of the stack to one value."""
    if sorted(op.axes) != sorted(tile.axes[1:]):
        raise MalformedTerm(f"reduce over {op.axes} of a tile with axes {tile.axes[1:]}")
    flat = per_tile(tile)
    match op.function:
        case "sum":
            value = flat.sum(1)
        case "mean":
            value = flat.sum(1) / flat.shape[1]
        case "max":
            value = flat.amax(1)
        case "min":
            value = flat.amin(1)
        case "logsumexp":
            top = flat.amax(1)
            shifted = top + torch.log(torch.exp(flat - top.unsqueeze(1)).sum(1))
            value = torch.where(torch.isinf(top), top, shifted)  # an infinite top is the value
        case _:
            assert_never(op.function)
    return Array(value, (POINT,))


def concatenate(op: ir.ConcatOp, tiles: list[Array]) -> Array:
    """Each stack's tiles (of one axis each) one after another, tile by tile."""
    parts = []
    for tile, axis in zip(tiles, op.inputs, strict=True):
        if tile.axes != (POINT, axis):
            raise MalformedTerm(f"concat reads axis {axis} from a tile with axes "
                                f"{tile.axes[1:]}")
        parts.append(tile.data)
    return Array(torch.cat(parts, 1), (POINT, op.output))


def split(op: ir.SplitOp, tile: Array, sizes: Sequence[int]) -> list[Array]:
    """Each tile (of one axis) cut into consecutive pieces of `sizes`."""
    if tile.axes != (POINT, op.input) or sum(sizes) != tile.data.shape[1]:
        raise MalformedTerm(f"split of {tile.axes[1:]} into {op.outputs} of sizes "
                            f"{list(sizes)}")
    results, start = [], 0
    for axis, size in zip(op.outputs, sizes, strict=True):
        results.append(Array(tile.data[:, start:start + size], (POINT, axis)))
        start += size
    return results


def pad(op: ir.PadOp, tile: Array) -> Array:
    """Each tile (of one axis) with `before` and `after` entries of `value` around it."""
    if tile.axes != (POINT, op.input):
        raise MalformedTerm(f"pad of axis {op.input} on a tile with axes {tile.axes[1:]}")
    points, length = tile.data.shape
    result = torch.full((points, op.before + length + op.after), op.value,
                        dtype=tile.data.dtype)
    result[:, op.before:op.before + length] = tile.data
    return Array(result, (POINT, op.output))


def reshape(op: ir.ReshapeOp, tile: Array, shape: Sequence[int]) -> Array:
    """Row-major: each tile's entries in order, read again as the outputs."""
    flat = per_tile(tile.aligned((POINT, *op.inputs)))
    if flat.shape[1] != math.prod(shape):
        raise MalformedTerm(f"reshape of {flat.shape[1]} entries into {list(shape)}")
    return Array(flat.reshape(flat.shape[0], *shape), (POINT, *op.outputs))
