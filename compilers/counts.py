"""The number of entries each place receives, `scatter_add[e -> v](One, Dst)` with
`One[e] = 1`, as one `index_add` of ones into zeros.

`ncd.counts.find_counts` finds the pattern; this module lowers each match: the ones write no
code (only the scatter-add reads them), and the scatter-add becomes
`torch.zeros(v).index_add(-1, Dst, torch.ones(e))` in the values' real type, where the index
array comes without batch dims, as it mostly does; with batch dims, or while `torch.fx` traces
(its proxies do not answer `dim()`), the `else` branch writes the term out (the ones, then the
scatter-add). On the CPU `index_add` refuses every index outside `v` itself, so the index
array's range check is left to it (`ncd.ops.indexing.check_index_array`); `torch.bincount`,
the counting kernel, refuses only negative values (a value past the end lengthens its result,
allocating that much), so it would need the greatest value read first, and a small graph
pays more for that read than for the ones (measured: 8.5 against 15 us at 100 nodes and 400
edges, 24.6 against 25.6 us at 2,708 and 10,556). The sum of ones is the term's own: exact up
to 2^24 entries per place in float32, where the sum stops growing.
"""

from __future__ import annotations

from ncd import ir
from ncd.counts import Count, find_counts
from ncd.operators import declaration
from ncd.ops.indexing import KernelRefusal, check_index_array, refusing_call
from ncd.ops.lowering import TensorCode, dims_test
from ncd.term_flow import TermFlow

from .fused import FusedLowering

PLACEHOLDER = "_fused_count"
"""The code of the ones, which only the scatter-add reads (it writes no code)."""


class CountLowering(FusedLowering[Count]):
    """The ones and the scatter-add of each match, among the terms an emitter writes."""

    def find(self, term: ir.Composed, flow: TermFlow) -> list[Count]:
        return find_counts(term, flow)

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of a member of a match, or None for any other term."""
        match = self.match_of(term)
        if match is None:
            return None
        if term is match.ones:
            return [TensorCode(PLACEHOLDER, term.cod[0], batched=False)]
        return [self._count(match, inputs[1])]

    def _count(self, match: Count, index: TensorCode) -> TensorCode:
        emit = self.emitter
        ones, scatter = match.members
        op = scatter.op
        assert isinstance(op, ir.ScatterAddOp)
        target = scatter.outputs[0].array.shape.axis(op.output)
        left = check_index_array(emit, index.code, "the result", target, scatter.span,
                                 KernelRefusal(f"{index.code}.dim() == 1", below=True,
                                               above=True))
        device, dtype = emit.anchor()
        kind = f"device={device}, dtype={dtype})"
        along = ones.outputs[0].array.shape.axes[0]
        counts = emit.fresh(scatter.outputs[0].name or "counts")
        emit.statement(f"if {dims_test(index.code, 1)}:",
                       f"the entries along {op.input} counted into {op.output}" +
                       emit.source_note(scatter.span))
        with emit.branch():
            refusing_call(emit, left, f"{counts} = torch.zeros({emit.size(target.size)}, {kind}"
                          f".index_add(-1, {index.code}, torch.ones({emit.size(along.size)}, "
                          f"{kind})")
        emit.statement("else:")
        with emit.branch():
            (made,) = declaration(ones.op).lower(emit, ones, ones.op, [])
            (summed,) = declaration(op).lower(emit, scatter, op, [made, index])
            emit.statement(f"{counts} = {summed.code}")
        return TensorCode(counts, scatter.cod[0], index.batched)
