"""The number of entries each place receives, `scatter_add[e -> v](One, Dst)` with
`One[e] = 1`, as one `torch.bincount` call.

`ncd.counts.find_counts` finds the pattern; this module lowers each match: the ones write no
code (only the scatter-add reads them), and the scatter-add becomes, after the index array's
check, `torch.bincount(Dst, minlength=v)` in the values' real type, where the index array comes
without batch dims, as it mostly does (the check holds every value below `v`, so there are `v`
counts); with batch dims, or while `torch.fx` traces (its proxies do not answer `dim()`), the
`else` branch writes the term out (the ones, then the scatter-add).
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
        # On the CPU `bincount` refuses a negative value itself; a value from `v` up would
        # only lengthen its result (and allocate that much), so the greatest is still read.
        left = check_index_array(emit, index.code, "the result", target, scatter.span,
                                 KernelRefusal(f"{index.code}.dim() == 1", below=True,
                                               above=False))
        _, dtype = emit.anchor()
        size = emit.size(target.size)
        counts = emit.fresh(scatter.outputs[0].name or "counts")
        emit.statement(f"if {dims_test(index.code, 1)}:",
                       f"the entries along {op.input} counted into {op.output}" +
                       emit.source_note(scatter.span))
        with emit.branch():
            refusing_call(emit, left, f"{counts} = torch.bincount({index.code}, "
                          f"minlength={size}).to({dtype})")
        emit.statement("else:")
        with emit.branch():
            (made,) = declaration(ones.op).lower(emit, ones, ones.op, [])
            (summed,) = declaration(op).lower(emit, scatter, op, [made, index])
            emit.statement(f"{counts} = {summed.code}")
        return TensorCode(counts, scatter.cod[0], index.batched)
