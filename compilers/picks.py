"""The negated mean of one pick per row, `-mean[b](L[b, T[b]])`, as one `F.nll_loss` call,
and with the log-softmax that made `L`, `-mean[b](logsoftmax[n](Z)[b, T[b]])`, as one
`F.cross_entropy(Z, T)`.

`ncd.picks.find_negated_mean_picks` finds the pattern (a gather at the labels, a mean over the
rows, a negation); this module lowers each match: the gather and the mean write no code (their
arrays are read by nothing else), and the negation becomes, after the index array's check,
`F.nll_loss(L, T)` (what `F.cross_entropy` calls after its log-softmax) when `L` and `T` come
without batch dims, as they mostly do, and the term written out otherwise (a lifted call, or a
graph traced by `torch.fx`, whose proxies cannot answer `dim()`). The labels are checked first,
as every index array is: the kernel skips a label equal to its `ignore_index` (-100) instead of
refusing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.operators import declaration
from ncd.ops.indexing import KernelRefusal, check_index_array, gather_by_rows, refusing_call
from ncd.ops.lowering import TensorCode
from ncd.picks import NegatedMeanPick, find_negated_mean_picks
from ncd.term_flow import TermFlow

from .fused import FusedLowering

if TYPE_CHECKING:
    from .forward import ForwardEmitter

PLACEHOLDER = "_fused_pick"
"""The code of a member's output that only the next member reads (it writes no code)."""


class PickLossLowering(FusedLowering[NegatedMeanPick]):
    """The matches of the terms an emitter writes, and the operands of each gather so far."""

    def __init__(self, emitter: ForwardEmitter) -> None:
        super().__init__(emitter)
        self.operands: dict[int, list[TensorCode]] = {}  # id of a match's gather -> inputs
        self.logits: dict[int, TensorCode] = {}  # id of a match's gather -> softmax input

    def find(self, term: ir.Composed, flow: TermFlow) -> list[NegatedMeanPick]:
        return find_negated_mean_picks(term, flow)

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of a member of a match, or None for any other term."""
        match = self.match_of(term)
        if match is None:
            return None
        if term is match.softmax:
            self.logits[id(match.gather)] = inputs[0]
        if term is match.gather:
            self.operands[id(match.gather)] = list(inputs)
        if term is not match.neg:
            return [TensorCode(PLACEHOLDER, term.cod[0], inputs[0].batched)]
        return [self._call(match, self.operands.pop(id(match.gather)),
                           self.logits.pop(id(match.gather), None))]

    def _call(self, match: NegatedMeanPick, operands: list[TensorCode],
              logits: TensorCode | None) -> TensorCode:
        """The loss; `logits`: the input of the log-softmax of the match, when it has one."""
        emit = self.emitter
        gather, mean, neg = match.gather, match.mean, match.neg
        assert isinstance(gather.op, ir.GatherOp)
        source, labels = operands
        row, label_axis = source.array.shape.axes
        read = source if logits is None else logits  # the tensor the call reads
        test = f"{labels.code}.dim() == 1 and {read.code}.dim() == 2"
        # On the CPU the kernel refuses a label from the number of classes up itself, but
        # skips one of -100 (its `ignore_index`): the least label is still read.
        left = check_index_array(emit, labels.code, gather.inputs[0].name or "the array",
                                 label_axis, gather.span,
                                 KernelRefusal(test, below=False, above=True))
        result = emit.fresh(neg.outputs[0].name or "loss")
        comment = f"-mean over {row.name} of the picks at [{gather.op.indices[1].text}]"
        emit.statement(f"if not torch.fx._symbolic_trace.is_fx_symbolic_tracing() and {test}:")
        with emit.branch():
            if match.softmax is None:
                call = f"{emit.functional_call('nll_loss')}({source.code}, {labels.code})"
            else:
                # the logits in the layout of `L`: rows, then the labels' axis
                expr, dims = emit.single(match.softmax, [read])
                expr = emit.permute(expr, dims, emit.output_labels(match.softmax.outputs[0]))
                call = f"{emit.functional_call('cross_entropy')}({expr}, {labels.code})"
                comment = f"-mean over {row.name} of the log-softmax over {label_axis.name} " \
                    f"at [{gather.op.indices[1].text}]"
            refusing_call(emit, left, f"{result} = {call}", comment + emit.source_note(neg.span))
        emit.statement("else:")
        with emit.branch():
            if match.softmax is not None:
                softmax = match.softmax
                (source,) = declaration(softmax.op).lower(emit, softmax, softmax.op, [read])
            picked = gather_by_rows(emit, gather, gather.op, [source, labels])
            (averaged,) = declaration(mean.op).lower(emit, mean, mean.op, [picked])
            (negated,) = declaration(neg.op).lower(emit, neg, neg.op, [averaged])
            emit.statement(f"{result} = {negated.code}")
        return TensorCode(result, neg.cod[0], batched=True)
