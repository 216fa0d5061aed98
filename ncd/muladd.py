"""An entrywise sum that reads an entrywise product nothing else reads, `C + A * B`
(`H2 = Lambda * H + Gamma * U`, `Y[t, m] = CH[t, m] + D[m] * X[t, m]`).

A back end computes the pair in one call (`compilers/muladd.py`: `torch.addcmul(C, A, B)`),
one kernel and no temporary where the two operations take two kernels and hold the product.
The pattern is recognised on the IR, never on text, and only where the call computes the same
function:

- the sum is an `AddOp` of exactly two operands (inputs or a parameter), the product a
  `MultiplyOp` of exactly two operands or an `EinsumOp` of two operands that sums nothing and
  scales by 1 (`D[m] * X[t, m]` in a tensor equation; a diagonal read is not a product);
- only the sum reads the product (`TermFlow`: an output, a copy or another reader stops the
  match);
- every array is real, every port reads whole axes as they are (no offset, stride or
  diagonal: each axis of an array reads one loop axis, no two the same) and has no target
  axes, and each output is its loop's axes in some order: so each operand of the product
  reads the sum's loop axes through the product's output, and is laid out in the sum's
  output order exactly as the two operations would broadcast it (`MulAdd.operand_port`).

Where both operands of a sum are such products (`F * C + I * G`) one of them is fused, the
first that `allowed` accepts (a scan's step keeps a product computed before the loop apart
from a sum inside it). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ncd import ir
from ncd.term_flow import TermFlow, find_matches, plain_reads


@dataclass(frozen=True)
class MulAdd:
    """One match: `product` makes `A * B`, which `total` reads as its operand `position` and
    adds to its other operand."""

    product: ir.Broadcasted
    total: ir.Broadcasted
    position: int

    @property
    def members(self) -> tuple[ir.Broadcasted, ...]:
        return (self.product, self.total)

    def operand_port(self, port: ir.Port) -> ir.Port:
        """`port`, an operand of the product, as read from the sum's loop: each of its axes
        reads the sum's loop axis that reads the product's output axis that it reads."""
        product_axis = _axis_names(self.product.outputs[0])  # degree index -> output axis
        read_by_sum = plain_reads(self.total.inputs[self.position])
        reads = plain_reads(port)
        assert read_by_sum is not None and reads is not None  # as `_match` checked
        degree = self.total.degree
        rows = []
        for name in port.array.names:
            row = [0] * len(degree.axes)
            row[read_by_sum[product_axis[reads[name]]]] = 1
            rows.append(tuple(row))
        eta = ir.StrideMorphism(domain=degree, codomain=port.array.shape, matrix=tuple(rows),
                                offset=(0,) * len(rows))
        return ir.Port(array=port.array, targets=(), reindexing=eta, name=port.name)


Allowed = Callable[[ir.Broadcasted, ir.Broadcasted], bool]
"""Whether a product may be fused into the sum that reads it (`product, total`)."""


def find_muladds(term: ir.Term, flow: TermFlow | None = None,
                 allowed: Allowed | None = None) -> list[MulAdd]:
    """Every match of the pattern inside `term` (`ncd.term_flow.find_matches`)."""
    def match(flow: TermFlow, total: ir.Broadcasted) -> MulAdd | None:
        return _match(flow, total, allowed)
    return find_matches(term, match, flow)


def _match(flow: TermFlow, total: ir.Broadcasted, allowed: Allowed | None) -> MulAdd | None:
    if not (isinstance(total.op, ir.AddOp) and len(total.inputs) + len(total.params) == 2):
        return None
    sum_checked = False  # the sum's ports are read only where a product feeds it (cheap first)
    for position in range(len(total.inputs)):
        product = flow.operation_producer(total, position)
        if product is None or not _is_product(product):
            continue
        if not sum_checked:
            if not _entrywise(total):
                return None
            sum_checked = True
        if _entrywise(product) and (allowed is None or allowed(product, total)):
            return MulAdd(product, total, position)
    return None


def _is_product(term: ir.Broadcasted) -> bool:
    """A product of exactly two operands: `A * B`, or a tensor equation's `A[..] * B[..]` that
    sums nothing and scales by exactly 1."""
    match term.op:
        case ir.MultiplyOp():
            return len(term.inputs) + len(term.params) == 2
        case ir.EinsumOp(contracted=contracted, scale=scale):
            return not contracted and scale == 1.0 and len(term.inputs) + len(term.params) == 2
    return False


def _entrywise(term: ir.Broadcasted) -> bool:
    """Real arrays, each port reading whole loop axes as they are and no target axes, one
    output that is the loop's axes in some order."""
    if len(term.outputs) != 1 or len(term.outputs[0].array.shape.axes) != len(term.degree.axes):
        return False
    ports = (*term.inputs, *term.params, *term.outputs)
    return all(port.array.dtype.kind == "R" and not port.targets and
               port.reindexing.codomain.names == port.array.names and
               plain_reads(port) is not None for port in ports)


def _axis_names(port: ir.Port) -> dict[int, str]:
    """Degree index -> the axis of the output `port` that reads it."""
    reads = plain_reads(port)
    assert reads is not None
    return {index: name for name, index in reads.items()}
