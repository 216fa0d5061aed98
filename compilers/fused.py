"""What every fused lowering of a pattern does first: find the matches in a composition about
to be written, and tell, for each term the emitter reaches, the match it is a member of.

The terms are the IR's own objects, alive while a composition is written, so their ids name
them. A subclass gives the pattern's finder (`find`) and lowers the members (`lower`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ncd import ir
from ncd.ops.lowering import TensorCode
from ncd.term_flow import TermFlow

if TYPE_CHECKING:
    from .forward import ForwardEmitter


class Members(Protocol):
    @property
    def members(self) -> tuple[ir.Broadcasted, ...]: ...


Match = TypeVar("Match", bound=Members)


class PatternLowering(Protocol):
    """What the emitter asks of each lowering of a pattern of several terms."""

    @property
    def roles(self) -> Mapping[int, object]:
        """The match of each member term, by the term's id."""
        ...

    def plan(self, term: ir.Composed, flow: TermFlow) -> None: ...

    def lower(self, term: ir.Broadcasted,
              inputs: list[TensorCode]) -> list[TensorCode] | None: ...


class FusedLowering(Generic[Match]):
    """The matches of the terms an emitter writes, by the ids of their members."""

    def __init__(self, emitter: ForwardEmitter) -> None:
        self.emitter = emitter
        self.roles: dict[int, Match] = {}  # id of a member term -> its match

    def find(self, term: ir.Composed, flow: TermFlow) -> Sequence[Match]:
        """Every match of the pattern in `term`, whose flow is `flow`."""
        raise NotImplementedError

    def plan(self, term: ir.Composed, flow: TermFlow) -> None:
        """Find the matches in a composition about to be written (`flow`: its `TermFlow`)."""
        for match in self.find(term, flow):
            for member in match.members:
                self.roles.setdefault(id(member), match)

    def match_of(self, term: ir.Broadcasted) -> Match | None:
        """The match `term` is a member of, or None."""
        return self.roles.get(id(term))
