"""Learned arrays read as data: a parameter put onto a wire (`ParameterOp`), so that any
operator can read it (`sigmoid(log_a)`, a class token joined to a sequence, learned queries, a
learned initial state of a `scan`). It has no surface of its own: naming a parameter where an
array is expected makes one. A buffer read as data is a `BufferOp`, the same with a dashed
card."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd.context import Value

from .declaration import Box, Caption, Declaration, Gradients, SizeValue, declare
from .facts import entrywise, view
from .lowering import Emitter, Role, TensorCode

if TYPE_CHECKING:
    from ncd.derivative import Reverser


def _parameter_caption(op: ir.ParameterOp, term: ir.Broadcasted) -> Caption:
    name = term.params[0].name if term.params else None
    return Caption("italic", name or "P")


def _parameter_overview(op: ir.ParameterOp) -> tuple[str, str]:
    return "parameter", "note"


def _parameter_roles(op: ir.ParameterOp, term: ir.Broadcasted,
                     value_of: SizeValue) -> tuple[Role, ...]:
    """Read as data, a parameter starts standard normal (as a table of `nn.Embedding`): a
    learned token, query or state, unless its `param` declaration names an initialiser."""
    return tuple(Role("normal") for _ in term.params)


def _put_on_a_wire(emit: Emitter, term: ir.Broadcasted, noun: str) -> list[TensorCode]:
    """The stored array (a parameter or a buffer) itself, on the term's one wire: no copy, and
    never batched (it does not gain the lifted axes)."""
    (stored,) = emit.parameters(term)
    if stored.names != term.cod[0].names:
        raise emit.error(f"the {noun} {stored.code} is put on a wire of another layout")
    return [TensorCode(stored.code, term.cod[0], batched=False)]


def _parameter_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ParameterOp,
                     inputs: list[TensorCode]) -> list[TensorCode]:
    return _put_on_a_wire(emit, term, "parameter")


def _parameter_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ParameterOp,
                       inputs: Sequence[Value], outputs: Sequence[Value],
                       grads: Sequence[Value]) -> Gradients:
    """The wire's gradient is the parameter's."""
    return Gradients([], [grads[0]])


PARAMETER = declare(Declaration(
    node=ir.ParameterOp, reverse=_parameter_reverse, surfaces=(),
    glyph=Box("card", _parameter_caption, caption_size=14.0, min_width=30.0, min_height=26.0,
              caption_dx=0.06),
    overview=_parameter_overview, roles=_parameter_roles, lower=_parameter_lower,
    # No arithmetic and no new array (the output is the parameter itself); it carries no
    # permutation of an input: an operation that meets it with a permuted array breaks.
    cost=view, symmetry=entrywise))


def _buffer_caption(op: ir.BufferOp, term: ir.Broadcasted) -> Caption:
    name = term.params[0].name if term.params else None
    return Caption("plain", name or "B")


def _buffer_overview(op: ir.BufferOp) -> tuple[str, str]:
    return "buffer", "note"


def _buffer_roles(op: ir.BufferOp, term: ir.Broadcasted, value_of: SizeValue) -> tuple[Role, ...]:
    """A buffer always has its declared initialiser; the role is never read."""
    return tuple(Role("zeros") for _ in term.params)


def _buffer_lower(emit: Emitter, term: ir.Broadcasted, op: ir.BufferOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    return _put_on_a_wire(emit, term, "buffer")


def _buffer_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.BufferOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """A buffer is not learned: no gradient."""
    return Gradients([], [None])


BUFFER = declare(Declaration(
    node=ir.BufferOp, reverse=_buffer_reverse, surfaces=(),
    glyph=Box("buffer_card", _buffer_caption, caption_size=14.0, min_width=30.0,
              min_height=26.0, caption_dx=0.06),
    overview=_buffer_overview, roles=_buffer_roles, lower=_buffer_lower,
    cost=view, symmetry=entrywise))  # as a parameter read as data
