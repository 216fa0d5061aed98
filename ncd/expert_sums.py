"""A weighted sum of experts in a term: `Z = f[each e](X)` whose output is read only by one
contraction `Y = sum(e) G * Z`, the mixture of experts.

Written out, every copy's output is held while the others run, then stacked into a second
array of the same size, then contracted over `e`. A back end can instead run the copies one at
a time and add each one's weighted output to a running sum: the same function (the contraction
is linear in `Z` and sums exactly `e`), with one copy's output alive at a time. The pattern is
recognised on the IR, never on text, and only where that reordering is exactly the sum:

- the call has its own parameters for each index of one lifted axis (`each e`) and one output,
  which it writes along that axis plainly, and that output flows to the contraction alone;
- the contraction multiplies two operands, no parameters, scale 1, and sums exactly the axis
  the copies fill, a target of both ports; every dim of both operands reads one index as it is
  (no offsets, strides or diagonals), so that each copy's term is a plain entrywise product.

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ncd import ir
from ncd.term_flow import TermFlow, find_matches, plain_reads


@dataclass(frozen=True)
class ExpertSum:
    """One match: `call` runs a copy per index of `call.op.each`; `contraction` sums its output
    (input `experts_port` of the contraction) against the other input over `summed`."""

    call: ir.Broadcasted
    contraction: ir.Broadcasted
    experts_port: int
    summed: str

    @property
    def members(self) -> tuple[ir.Broadcasted, ...]:
        return (self.call, self.contraction)


def find_expert_sums(term: ir.Term, flow: TermFlow | None = None) -> list[ExpertSum]:
    """Every match of the pattern inside `term` (`ncd.term_flow.find_matches`)."""
    return find_matches(term, _match, flow)


def _plain_port(port: ir.Port) -> bool:
    """Every tiling dim of `port` reads one degree index as it is, no two the same one."""
    return plain_reads(port) is not None


def _filled_axis(call: ir.Broadcasted, each: str) -> str | None:
    """The name of the output's axis that the copies fill (the one reading the `each` degree
    axis as it is), or None when the output reads it otherwise."""
    (port,) = call.outputs
    reads = plain_reads(port)
    if reads is None:
        return None
    index = call.degree.names.index(each)
    filled = [name for name, read in reads.items() if read == index]
    return filled[0] if len(filled) == 1 else None


def _match(flow: TermFlow, contraction: ir.Broadcasted) -> ExpertSum | None:
    op = contraction.op
    if not (isinstance(op, ir.EinsumOp) and op.scale == 1.0 and len(op.contracted) == 1 and
            len(contraction.inputs) == 2 and not contraction.params and
            len(contraction.outputs) == 1):
        return None
    (summed,) = op.contracted
    for experts_port in (0, 1):
        call = flow.operation_producer(contraction, experts_port)
        if call is None or not isinstance(call.op, ir.CallOp) or call.op.each is None or \
                len(call.outputs) != 1 or call.params:
            continue
        filled = _filled_axis(call, call.op.each)
        ports = contraction.inputs
        if filled is None or filled != summed or \
                any(summed not in port.targets or not _plain_port(port) for port in ports):
            continue
        if any(len(set(port.targets)) != len(port.targets) for port in ports):
            continue
        return ExpertSum(call, contraction, experts_port, summed)
    return None
