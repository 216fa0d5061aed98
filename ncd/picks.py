"""The negated mean of one pick per row in a term: `-mean[b](L[b, T[b]])`, the loss of a
classifier when `L` is a log-softmax (the cross-entropy at the labels `T`).

A back end with a kernel for it (`F.nll_loss`) runs the pick, the mean and the negation as one
call: one operation where the term written out takes five (gather, its index reshaped twice,
mean, negation), and its gradient is one scatter. The pattern is recognised on the IR, never on
text, and only where the kernel computes exactly the same function:

- the gather reads a two-axis array at each row's own index and at the index array's value
  along the last axis (`L[b, T[b]]`: the index array's one axis is the row axis), with no
  broadcast degree of its own;
- the mean runs over that row axis, the negation follows it, and the picks and the mean flow
  only from one member to the next (a copy, an output, or any other reader stops the match).

Any array is accepted as `L`: the kernel's mean of the picks at the labels is the same function
whatever made them. When a log-softmax over the label axis made `L` and nothing else reads it,
it joins the match (`softmax`): the whole is the cross-entropy of its input at the labels, one
`F.cross_entropy` call (the log-softmax and the same kernel, dispatched once). Nothing here
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ncd import ir
from ncd.term_flow import TermFlow, find_matches, plain_reads


@dataclass(frozen=True)
class NegatedMeanPick:
    """One match: `gather` picks `L[b, T[b]]`, `mean` averages the picks over `b`, `neg`
    negates the mean; `softmax`, when not None, made `L` as the log-softmax of its input over
    the label axis."""

    gather: ir.Broadcasted
    mean: ir.Broadcasted
    neg: ir.Broadcasted
    softmax: ir.Broadcasted | None = None

    @property
    def members(self) -> tuple[ir.Broadcasted, ...]:
        picks = (self.gather, self.mean, self.neg)
        return picks if self.softmax is None else (self.softmax, *picks)


def find_negated_mean_picks(term: ir.Term, flow: TermFlow | None = None) -> list[NegatedMeanPick]:
    """Every match of the pattern inside `term` (`ncd.term_flow.find_matches`)."""
    return find_matches(term, _match, flow)


def _alone(term: ir.Broadcasted, inputs: int) -> bool:
    """An operation of its own (no broadcast degree, no parameters, one output)."""
    return len(term.inputs) == inputs and not term.params and len(term.outputs) == 1 and \
        not term.degree.axes


def _match(flow: TermFlow, neg: ir.Broadcasted) -> NegatedMeanPick | None:
    if not (isinstance(neg.op, ir.ElementwiseOp) and neg.op.function == "neg" and
            _alone(neg, 1) and not neg.inputs[0].array.shape.axes):
        return None
    mean = flow.operation_producer(neg, 0)
    if mean is None or not (isinstance(mean.op, ir.ReduceOp) and mean.op.function == "mean"
                            and _alone(mean, 1)):
        return None
    gather = flow.operation_producer(mean, 0)
    if gather is None or not isinstance(gather.op, ir.GatherOp) or not _alone(gather, 2):
        return None
    picked = gather.outputs[0].array
    if len(picked.shape.axes) != 1 or mean.op.axes != picked.names:
        return None
    (row,) = picked.shape.axes
    source, index = gather.inputs[0].array, gather.inputs[1].array
    if len(source.shape.axes) != 2 or source.shape.axes[0].size != row.size or \
            index.shape.axes != (row,):
        return None
    at_row, at_label = gather.op.indices
    plain_row = at_row.array is None and at_row.coefficients == ((row.name, 1),) and \
        at_row.offset == 0 and at_row.divisor == 1 and at_row.modulus is None
    if not plain_row or at_label.array != 1:
        return None
    return NegatedMeanPick(gather, mean, neg, _log_softmax(flow, gather))


def _log_softmax(flow: TermFlow, gather: ir.Broadcasted) -> ir.Broadcasted | None:
    """The log-softmax over the label axis that made the gathered array, read by nothing
    else, reading an array of the same axes and broadcast over the rows as they are; None
    when another term made it."""
    softmax = flow.operation_producer(gather, 0)
    source = gather.inputs[0].array
    if softmax is None or not isinstance(softmax.op, ir.SoftmaxOp) or not softmax.op.log or \
            softmax.params or len(softmax.inputs) != 1 or len(softmax.outputs) != 1:
        return None
    (read,), (made,) = softmax.inputs, softmax.outputs
    rows = plain_reads(read)
    if softmax.op.axes != (source.names[1],) or made.array != source or \
            read.array != source or rows is None or rows != plain_reads(made):
        return None
    return softmax
