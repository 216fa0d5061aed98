"""The number of entries each place receives, `scatter_add[e -> v](One, Dst)` with
`One[e] = 1`: a graph's in-degrees, or the size of each segment.

A back end counts the places in one call (`compilers/counts.py`: ones made at once and added
into zeros), where the term written out fills an array with ones, views it at the index
array's batch dims, makes zeros and adds the ones into them. The pattern is recognised on the
IR, never on text, and only where the call computes exactly the same function:

- the values are the constant 1 (`IndexValueOp` with no coefficients and offset 1; any other
  constant would be a product whose rounding differs from the sum of its copies), with the
  summed axis as their only axis, and only the scatter-add reads them (a copy, an output or any
  other reader stops the match);
- the scatter-add has no broadcast degree, and its index array has the summed axis alone.

Counts are integers, exact in the values' real type up to 2^24 entries per place in float32
(where the sum of ones stops growing too). A constant gets no gradient, so neither does the
count. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ncd import ir
from ncd.term_flow import TermFlow, find_matches


@dataclass(frozen=True)
class Count:
    """One match: `ones` makes `One[e] = 1`, `scatter` sums it into the places of an index
    array."""

    ones: ir.Broadcasted
    scatter: ir.Broadcasted

    @property
    def members(self) -> tuple[ir.Broadcasted, ...]:
        return (self.ones, self.scatter)


def find_counts(term: ir.Term, flow: TermFlow | None = None) -> list[Count]:
    """Every match of the pattern inside `term` (`ncd.term_flow.find_matches`)."""
    return find_matches(term, _match, flow)


def _match(flow: TermFlow, scatter: ir.Broadcasted) -> Count | None:
    op = scatter.op
    if not (isinstance(op, ir.ScatterAddOp) and len(scatter.inputs) == 2 and
            not scatter.params and len(scatter.outputs) == 1 and not scatter.degree.axes):
        return None
    ones = flow.operation_producer(scatter, 0)
    if ones is None or not isinstance(ones.op, ir.IndexValueOp) or ones.op.coefficients or \
            ones.op.offset != 1 or ones.inputs or ones.params or ones.degree.axes:
        return None
    values, places = scatter.inputs
    if ones.outputs[0].array.names != (op.input,) or values.array.names != (op.input,) or \
            places.array.names != (op.input,):
        return None
    return Count(ones, scatter)
