"""A weighted sum of experts, `sum(e) G * f[each e](X)`, run one copy at a time.

`ncd.expert_sums.find_expert_sums` finds the pattern (a call with its own parameters for each
index of `e` whose output only a contraction over `e` reads); this module lowers each match:
the call writes no code (its output is read by nothing else), and the contraction becomes a
loop over the copies that adds each copy's output, times its slice of the other operand, to a
running sum. Only one copy's output is alive at a time, and nothing is stacked: the module's
peak memory is that of a hand-written loop over `nn.ModuleList` experts. A call whose output
is computed from parameters alone (tiled over the other lifted axes) is lowered as written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.expert_sums import ExpertSum, find_expert_sums
from ncd.ops.calls import EachCopies, copy_call, each_copies
from ncd.ops.lowering import Label, TensorCode, target_label
from ncd.term_flow import TermFlow

from .einsum import broadcast_product, broadcast_view
from .fused import FusedLowering
from .labels import output_labels, port_rows

if TYPE_CHECKING:
    from .forward import ForwardEmitter

PLACEHOLDER = "_fused_experts"
"""The code of the call's output, which only the contraction reads (it writes no code)."""


class ExpertSumLowering(FusedLowering[ExpertSum]):
    """The matches of the terms an emitter writes, and the copies of each call so far."""

    def __init__(self, emitter: ForwardEmitter) -> None:
        super().__init__(emitter)
        self.copies: dict[int, EachCopies] = {}  # id of a match's call -> its copies

    def find(self, term: ir.Composed, flow: TermFlow) -> list[ExpertSum]:
        emit = self.emitter
        taken = {*emit.attention.roles, *emit.windows.roles, *emit.picks.roles, *self.roles}
        found = []
        for match in find_expert_sums(term, flow):
            # a member another lowering takes is written by it (it reads the call's output)
            if not any(id(member) in taken for member in match.members):
                found.append(match)
                taken.update(id(member) for member in match.members)
        return found

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of a member of a match, or None for any other term."""
        match = self.match_of(term)
        if match is None:
            return None
        if term is match.call:
            copies = each_copies(self.emitter, term, inputs)
            if not isinstance(copies, EachCopies):  # lowered as written: the match is given up
                self.roles.pop(id(match.contraction), None)
                return copies
            self.copies[id(term)] = copies
            return [TensorCode(PLACEHOLDER, term.cod[0], copies.batched)]
        return [self._sum(match, self.copies.pop(id(match.call)), inputs)]

    def _sum(self, match: ExpertSum, copies: EachCopies,
             inputs: list[TensorCode]) -> TensorCode:
        emit = self.emitter
        contraction, summed = match.contraction, target_label(match.summed)
        weights_port = 1 - match.experts_port
        weights = inputs[weights_port]
        weights_labels = _labels(weights, contraction.inputs[weights_port])
        dim = weights_labels.index(summed) - len(weights_labels)
        experts_labels = [label for label in _labels(inputs[match.experts_port],
                                                     contraction.inputs[match.experts_port])
                          if label != summed]
        kept = [label for label in weights_labels if label != summed]
        out_labels = output_labels(contraction.outputs[0])
        total = emit.fresh(contraction.outputs[0].name or "total")
        index = emit.fresh("index")

        narrowed = _narrowed(weights_labels, summed, out_labels, weights.batched)

        def weighted(at: str) -> str:
            weight = (kept, f"{weights.code}.select({dim}, {at})", weights.batched)
            if narrowed is not None:
                weight = (narrowed, f"{weights.code}.narrow({dim}, {at}, 1)", weights.batched)
            factors = [weight, (experts_labels, copy_call(emit, copies, at), copies.batched)]
            if match.experts_port == 0:
                factors.reverse()
            product = broadcast_product(factors, out_labels)
            assert product is not None, "the matcher admits plain entrywise products alone"
            return product

        call = match.call
        assert isinstance(call.op, ir.CallOp)
        comment = f"{call.op.definition}[each {call.op.each}], weighted and summed over " \
            f"{match.summed} one copy at a time" + emit.source_note(contraction.span)
        emit.statement(f"{total} = {weighted('0')}", comment)
        emit.statement(f"for {index} in range(1, len({copies.module})):")
        with emit.branch():
            line = f"{total} = {total} + {weighted(index)}"
            if emit.too_long(line):  # the term on a line of its own, as a formatter keeps it
                term = emit.fresh("weighted")
                emit.statement(f"{term} = {weighted(index)}")
                line = f"{total} = {total} + {term}"
            emit.statement(line)
        batched = weights.batched or copies.batched
        return TensorCode(total, contraction.cod[0], batched)


def _narrowed(weights_labels: list[Label], summed: Label, out_labels: list[Label],
              batched: bool) -> list[Label] | None:
    """The weights' labels when one copy's weights can be read as a size-1 slice along the
    summed axis (`G.narrow(-1, i, 1)`, one view) instead of a selection and then a size-1 dim
    for broadcasting (`G.select(-1, i).unsqueeze(-1)`, two): with the summed label standing
    for an output axis that only the experts' output has, the slice broadcasts as it is.
    None where that would need any other view."""
    kept = [label for label in weights_labels if label != summed]
    for stand_in in (label for label in out_labels if label not in kept):
        labels = [stand_in if label == summed else label for label in weights_labels]
        if broadcast_view(labels, "W", batched, out_labels) == "W":
            return labels
    return None


def _labels(value: TensorCode, port: ir.Port) -> list[Label]:
    """The label of each dim of an operand whose every dim reads one index as it is."""
    return [row.terms[0][0] for row in port_rows(value, port)]
