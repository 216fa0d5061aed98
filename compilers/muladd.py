"""An entrywise sum of an entrywise product that nothing else reads, `C + A * B`, as one
`torch.addcmul(C, A, B)` where autograd records nothing: one kernel and no temporary product.

`ncd.muladd.find_muladds` finds the pattern; this module lowers each match: the product writes
no code (only the sum reads it; its parameters are registered where it stands, so the module's
parameters keep their order), and the sum becomes

    if not torch.is_grad_enabled():
        H2 = torch.addcmul(multiply_step, H0, Lambda)
    else:
        H2 = multiply_step + H0 * Lambda

each of the three operands laid out in the sum's output order with size-1 dims where it lacks
an axis, as the two operations lay them out (leading batch dims broadcast as they do). Where
autograd records, the two operations run, in one statement: `addcmul`'s backward multiplies
each operand by the scalar 1 before the gradient (four products where the two operations'
backward has two), which made the LRU's forward and backward 2% slower (bench, lru small: 1.01
to 1.03 of the hand loop); its forward without autograd gained 20% (1.03 to 0.82). `torch.fx`
traces the branch of the grad mode it traces in.

Rounding: `addcmul` is a fused multiply-add on the CPU (AVX2, float32 and float64), rounding
`C + A * B` once where the two operations round the product and then the sum. The results
agree to that rounding of the product (bit-identical where the product is exact) and the fused
one is the nearer to the exact value; a product that overflows where the sum would not is
finite fused. Gradients are always the two operations'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.muladd import Allowed, MulAdd, find_muladds
from ncd.ops.lowering import TensorCode
from ncd.term_flow import TermFlow

from .errors import CompileError
from .fused import FusedLowering

if TYPE_CHECKING:
    from .forward import ForwardEmitter

Planned = list[tuple[int, MulAdd | None]]
"""What `MulAddLowering.plan_step` set: each member's id and the match it had before."""

PLACEHOLDER = "_fused_product"
"""The code of the product, which only the sum reads (it writes no code)."""


class MulAddLowering(FusedLowering[MulAdd]):
    """The matches of the terms an emitter writes, and the operands of each product so far."""

    def __init__(self, emitter: ForwardEmitter) -> None:
        super().__init__(emitter)
        # id of a match's product -> its operands (inputs, then parameters) and their ports
        self.operands: dict[int, list[tuple[TensorCode, ir.Port]]] = {}

    def find(self, term: ir.Term, flow: TermFlow) -> list[MulAdd]:
        return [match for match in find_muladds(term, flow) if not self._claimed(match)]

    def _claimed(self, match: MulAdd) -> bool:
        """Whether a member of `match` is a member of another pattern's match (found before:
        the emitter plans this pattern last), which lowers it."""
        others = [pattern for pattern in self.emitter.patterns if pattern is not self]
        return any(id(member) in other.roles for other in others for member in match.members)

    def plan_step(self, body: ir.Term, allowed: Allowed) -> Planned:
        """Find the matches in a scan's step, written term by term into and before its loop:
        only those whose product and sum `allowed` keeps together. They hold while the step is
        written there (`forget` them after: the same terms may be written elsewhere too)."""
        planned: Planned = []
        for match in find_muladds(body, allowed=allowed):
            for member in match.members:
                planned.append((id(member), self.roles.get(id(member))))
                self.roles[id(member)] = match
        return planned

    def forget(self, planned: Planned) -> None:
        """Undo `plan_step`: each member's role as it was before."""
        for key, before in reversed(planned):
            if before is None:
                del self.roles[key]
            else:
                self.roles[key] = before

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of a member of a match, or None for any other term."""
        match = self.match_of(term)
        if match is None:
            return None
        if term is match.product:
            values = [*inputs, *self.emitter.parameters(term)]
            self.operands[id(term)] = list(zip(values, (*term.inputs, *term.params),
                                               strict=True))
            return [TensorCode(PLACEHOLDER, term.cod[0], any(v.batched for v in values))]
        product = self.operands.pop(id(match.product), None)
        if product is None or inputs[match.position].code != PLACEHOLDER:
            raise CompileError("a sum fused with its product was reached before the product")
        return [self._addcmul(match, inputs, product)]

    def _addcmul(self, match: MulAdd, inputs: list[TensorCode],
                 product: list[tuple[TensorCode, ir.Port]]) -> TensorCode:
        emit = self.emitter
        total = match.total
        labels = emit.output_labels(total.outputs[0])
        # The sum's other operand: an input, or a parameter (a bias added in).
        others = [(value, port) for index, (value, port)
                  in enumerate(zip(inputs, total.inputs, strict=True)) if index != match.position]
        others += list(zip(emit.parameters(total), total.params, strict=True))
        ((added, added_port),) = others
        operands = [emit.normalized(total, added, added_port, labels, "unsqueeze")]
        operands += [emit.normalized(total, value, match.operand_port(port), labels, "unsqueeze")
                     for value, port in product]
        batched = added.batched or any(value.batched for value, _ in product)
        first, second, third = operands
        return emit.finish_either(
            total, "not torch.is_grad_enabled()", lambda: f"torch.addcmul({first}, {second}, "
            f"{third})", lambda: f"{first} + {second} * {third}", labels,
            comment="sum of a product: one call where no gradient is recorded",
            batched=batched, fallback="total")
