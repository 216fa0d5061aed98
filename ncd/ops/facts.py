"""The facts a declaration states besides its typing, glyph and lowering: what an operation
costs and how it treats a symmetry of its axes. `ncd.stats` and `ncd.symmetry` read them.

Cost. `Declaration.cost(op, term, sizes)` gives the `Cost` of a whole broadcasted operation
(every element of its degree): multiply-adds of contractions and floating-point operations,
as symbolic sizes (`ncd.sizes.Size`, polynomials in the run-time symbols). The conventions,
stated once here and in docs/analysis.md:

- a contraction of n operands over an index space S (the degree times every target axis of
  every operand) costs |S| * (n - 1) multiply-adds and as many FLOPs again for the sums when
  it contracts an axis (a matrix product M x K by K x N: MNK multiply-adds, 2MNK FLOPs), plus
  one per output entry for a constant scale; a learned linear map is a contraction with its
  weight (plus one addition per output entry for a bias);
- an entrywise operation: one FLOP per output entry (a transcendental function counts as one;
  a sum or product of k arrays as k - 1); a mask, `where` and the structural operations
  (concat, split, pad, rename, reshape, embedding lookups) do no arithmetic: zero;
- softmax: five per entry (max, subtract, exp, sum, divide); layer normalisation: five per
  entry (mean, subtract, square, mean, multiply), RMS normalisation: three, plus one per entry
  for a gain and one for a bias; reductions: one per entry read (mean: plus one per result,
  logsumexp: four per entry read plus two per result);
- a call: the cost of the called definition, once per element of its degree (the batch lift).

A cost also says what the operation holds in memory besides its outputs while it runs
(`workspace`, in entries) and whether its outputs are new arrays at all (`allocates`: a rename
or reshape is a view of its input).

Symmetry. `Declaration.symmetry(op, term, carried, calls)` says what the operation does when
some of its target axes carry a tracked input axis of the definition (`carried[i]`: the target
axes of input i that do) and the input is permuted (or cyclically shifted) along it. Degree
axes read with identity reindexing need no rule: a broadcasted operation commutes with any
reindexing of its tiling axes (the construction of Br, theory.md section 2). The rule answers
`Carry` (the operation commutes with the permutation: these target axes of its outputs carry
it on; none when the operation sums it away, which makes it invariant) or `Break` (why not: a
weight per position, a condition on positions, a reshape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ncd import ir
from ncd.sizes import Size

# --------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------

ZERO = Size.const(0)


@dataclass(frozen=True)
class Cost:
    """What an operation computes: multiply-adds of contractions, and every floating-point
    operation (two per multiply-add, and the rest)."""

    macs: Size = ZERO
    flops: Size = ZERO
    workspace: Size = ZERO
    """Entries of the temporaries the operation holds while it runs, besides its outputs (a
    product computed before its bias is added or its constant scale applied)."""
    allocates: bool = True
    """Whether its outputs are new arrays in memory; False for a view of its input (a rename,
    a reshape, the pieces of a split)."""

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.flops + other.flops,
                    self.workspace + other.workspace, self.allocates or other.allocates)

    def times(self, factor: Size) -> Cost:
        return Cost(self.macs * factor, self.flops * factor, self.workspace * factor,
                    self.allocates)


NO_COST = Cost()


class CostSizes(Protocol):
    """What a cost rule may ask: the polynomial of a size (known sizes folded in), and the
    cost of one application of a user definition (for calls)."""

    def size(self, size: ir.SizeExpr) -> Size: ...

    def call(self, definition: str) -> Cost: ...


def entries(sizes: CostSizes, axes: Iterable[ir.Axis]) -> Size:
    """The number of entries of an array with these axes."""
    total = Size.const(1)
    for axis in axes:
        total = total * sizes.size(axis.size)
    return total


def degree_entries(sizes: CostSizes, term: ir.Broadcasted) -> Size:
    """|P|: how many times the base operation is applied."""
    return entries(sizes, term.degree.axes)


def target_axes(port: ir.Port) -> list[ir.Axis]:
    return [port.array.shape.axis(name) for name in port.targets]


def output_entries(sizes: CostSizes, term: ir.Broadcasted) -> Size:
    """The entries of every output of the operation."""
    total = ZERO
    for port in term.outputs:
        total = total + entries(sizes, port.array.shape.axes)
    return total


def input_entries(sizes: CostSizes, term: ir.Broadcasted, index: int = 0) -> Size:
    """The entries of input `index` read over the whole degree: |P| times its tile."""
    return degree_entries(sizes, term) * entries(sizes, target_axes(term.inputs[index]))


def per_output_entry(flops: int) -> Callable[[object, ir.Broadcasted, CostSizes], Cost]:
    """The rule of an entrywise operation: `flops` per output entry."""
    def rule(op: object, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
        return Cost(ZERO, output_entries(sizes, term) * flops)
    return rule


def free(op: object, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """The rule of an operation that does no arithmetic (it moves or selects entries)."""
    return NO_COST


def view(op: object, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """The rule of an operation whose outputs are views of its input: no arithmetic, no new
    array."""
    return Cost(allocates=False)


def contraction(sizes: CostSizes, term: ir.Broadcasted, operands: Sequence[ir.Port],
                contracts: bool) -> Cost:
    """A product of `operands` over their index space, summed when `contracts`."""
    space: dict[str, ir.Axis] = {}
    for port in operands:
        for axis in target_axes(port):
            space.setdefault(axis.name, axis)
    points = degree_entries(sizes, term) * entries(sizes, space.values())
    products = points * (len(operands) - 1)
    if not contracts:
        return Cost(ZERO, products)
    return Cost(products, products + points)


# --------------------------------------------------------------------------------------
# Symmetry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Carry:
    """The operation commutes with the transformation: `outputs[i]` are the target axes of
    output i that carry it on (empty everywhere: the operation is invariant to it)."""

    outputs: tuple[frozenset[str], ...] = ()


@dataclass(frozen=True)
class Break:
    """The operation does not commute with the transformation, and why."""

    reason: str


Verdict = Carry | Break


class SymmetryCalls(Protocol):
    """What a symmetry rule may ask of the analysis: what a called definition does when its
    inputs carry the transformation on the axes at the given positions (one set per input,
    positions in each input's declared axes): the positions of each output that carry it on,
    or why it breaks."""

    def call(self, definition: str, carried: Sequence[frozenset[int]]
             ) -> tuple[frozenset[int], ...] | Break: ...


@dataclass(frozen=True)
class Carried:
    """The target axes of each input that carry the transformation."""

    inputs: tuple[frozenset[str], ...] = field(default_factory=tuple)

    @property
    def any(self) -> frozenset[str]:
        return frozenset().union(*self.inputs) if self.inputs else frozenset()


def entrywise(op: object, term: ir.Broadcasted, carried: Carried,
              calls: SymmetryCalls) -> Verdict:
    """The rule of an operation applied entry by entry to its target axes too (the axes keep
    their names from the inputs to the outputs)."""
    names = carried.any
    return Carry(tuple(frozenset(n for n in port.targets if n in names)
                       for port in term.outputs))


def over_axes(axes: Callable[[object], Sequence[str]], *,
              keeps: bool) -> Callable[[object, ir.Broadcasted, Carried, SymmetryCalls], Verdict]:
    """The rule of an operation over a set of axes that treats their entries alike (softmax,
    a normalisation without parameters, a reduction): the permutation passes through (`keeps`:
    the axes stay on the output) or is summed away."""
    def rule(op: object, term: ir.Broadcasted, carried: Carried,
             calls: SymmetryCalls) -> Verdict:
        names = carried.any
        if not keeps:
            gone = set(axes(op))
            return Carry(tuple(frozenset(n for n in port.targets if n in names and n not in gone)
                               for port in term.outputs))
        return Carry(tuple(frozenset(n for n in port.targets if n in names)
                           for port in term.outputs))
    return rule


def positional(what: Callable[[object, ir.Broadcasted, frozenset[str]], str]
               ) -> Callable[[object, ir.Broadcasted, Carried, SymmetryCalls], Verdict]:
    """The rule of an operation that reads positions along its target axes (a weight per
    entry, a reshape): it breaks the symmetry when a target axis carries it."""
    def rule(op: object, term: ir.Broadcasted, carried: Carried,
             calls: SymmetryCalls) -> Verdict:
        names = carried.any
        if names:
            return Break(what(op, term, names))
        return Carry(tuple(frozenset() for _ in term.outputs))
    return rule


def axis_list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


SymmetryRule = Callable[[object, ir.Broadcasted, Carried, SymmetryCalls], Verdict]
CostRule = Callable[[object, ir.Broadcasted, CostSizes], Cost]

__all__ = [
    "NO_COST",
    "ZERO",
    "Break",
    "Carried",
    "Carry",
    "Cost",
    "CostRule",
    "CostSizes",
    "SymmetryCalls",
    "SymmetryRule",
    "Verdict",
    "axis_list",
    "contraction",
    "degree_entries",
    "entries",
    "entrywise",
    "free",
    "input_entries",
    "output_entries",
    "over_axes",
    "per_output_entry",
    "positional",
    "target_axes",
    "view",
]
