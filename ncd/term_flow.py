"""What the pattern matchers read of a term: where each array goes (a wire-level walk), and
which degree axis each axis of a port reads.

The fused lowerings (`ncd.attention`, `ncd.convolution`) may take several operations into one
kernel call only when the arrays between them flow from one member of the pattern to the next
and nowhere else. `TermFlow.of(term)` gives each array of `term` a token, records which
operation or reindexing made it and every reader of it (with the input it is read on), through
compositions, products and rearrangements; a block or a scan is a term of its own, opaque here
(it reads its inputs as an outside reader would), and the term's own outputs are read from
outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ncd import ir

ESCAPES = -1
"""The reader of an array read outside the walk (an output, a block or a scan)."""

DISCARDED = -2
"""The reader of a wire that a rearrangement deletes: not a pattern's either, but never read."""

Maker = ir.Broadcasted | ir.Reindexing
Match = TypeVar("Match")


@dataclass
class TermFlow:
    """Each array as a token: which operation or reindexing made it, and who reads it."""

    next_token: int = 0
    made: dict[int, tuple[Maker, int]] = field(default_factory=dict)
    """token -> (the term that made it, which of its outputs)."""
    readers: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """token -> (id of the reading term, `ESCAPES` or `DISCARDED`, input index), one per
    read."""
    reads: dict[int, list[int]] = field(default_factory=dict)
    """id of an operation or reindexing -> the tokens of its inputs."""
    outputs: dict[int, list[int]] = field(default_factory=dict)
    """id of an operation, a reindexing, a block or a scan -> the tokens of its outputs."""
    operations: list[ir.Broadcasted] = field(default_factory=list)
    """Every broadcasted operation reached, in the order of the term."""

    @classmethod
    def of(cls, term: ir.Term) -> TermFlow:
        flow = cls()
        for token in flow.walk(term, [flow.new() for _ in term.dom]):
            flow.read(token, ESCAPES, 0)
        return flow

    def new(self) -> int:
        self.next_token += 1
        self.readers[self.next_token] = []
        return self.next_token

    def read(self, token: int, reader: int, index: int) -> None:
        self.readers[token].append((reader, index))

    def walk(self, term: ir.Term, wires: list[int]) -> list[int]:
        match term:
            # an operation first: most terms are (the cases are tried in order)
            case ir.Broadcasted() | ir.Reindexing():
                if isinstance(term, ir.Broadcasted):
                    self.operations.append(term)
                self.reads[id(term)] = list(wires)
                for index, token in enumerate(wires):
                    self.read(token, id(term), index)
                made = []
                for index in range(len(term.cod)):
                    token = self.new()
                    self.made[token] = (term, index)
                    made.append(token)
                self.outputs[id(term)] = made
                return made
            case ir.Identity():
                return wires
            case ir.Rearrangement(mapping=mapping):
                for index, token in enumerate(wires):
                    if index not in mapping:
                        self.read(token, DISCARDED, index)  # deleted: not only the pattern's
                return [wires[i] for i in mapping]
            case ir.Composed(terms=terms):
                for part in terms:
                    wires = self.walk(part, wires)
                return wires
            case ir.Product(terms=terms):
                out: list[int] = []
                start = 0
                for part in terms:
                    out.extend(self.walk(part, wires[start:start + len(part.dom)]))
                    start += len(part.dom)
                return out
            case ir.Block() | ir.Scan() | ir.Machine():
                for index, token in enumerate(wires):
                    self.read(token, ESCAPES, index)
                made = [self.new() for _ in term.cod]
                self.outputs[id(term)] = made
                return made
        raise AssertionError(f"unknown term {term.kind}")

    def unread_outputs(self, term: ir.Term) -> set[int]:
        """The outputs of `term` (a part of the walked term) that nothing reads: each is
        deleted or never reached. Empty for a term the walk did not record."""
        made = self.outputs.get(id(term), [])
        return {index for index, token in enumerate(made)
                if all(reader == DISCARDED for reader, _ in self.readers[token])}

    def only_reader(self, token: int) -> int | None:
        """The id of the one term that reads `token` (or `ESCAPES`); None for several."""
        readers = self.readers[token]
        return readers[0][0] if len(readers) == 1 else None

    def producer(self, term: Maker, index: int) -> Maker | None:
        """The term that made input `index` of `term`, when that is its single output and
        `term` its only reader."""
        token = self.reads[id(term)][index]
        if token not in self.made or self.only_reader(token) != id(term):
            return None
        producer, output = self.made[token]
        return producer if output == 0 and len(producer.cod) == 1 else None

    def operation_producer(self, term: Maker, index: int) -> ir.Broadcasted | None:
        """`producer`, when it is a broadcasted operation."""
        producer = self.producer(term, index)
        return producer if isinstance(producer, ir.Broadcasted) else None

    def reader_of(self, term: Maker) -> int | None:
        """The id of the one term that reads the single output of `term`."""
        made = self.outputs[id(term)]
        return self.only_reader(made[0]) if len(made) == 1 else None


def find_matches(term: ir.Term, match: Callable[[TermFlow, ir.Broadcasted], Match | None],
                 flow: TermFlow | None = None) -> list[Match]:
    """Every match of a pattern inside `term`, tried at each operation in the order of the term
    (through compositions and products; the body of a block or a scan is a term of its own,
    searched when it is reached). `flow` is `TermFlow.of(term)` where the caller has it
    already: the compiler walks each composition once for all its patterns."""
    if flow is None:
        flow = TermFlow.of(term)
    found = []
    for operation in flow.operations:
        matched = match(flow, operation)
        if matched is not None:
            found.append(matched)
    return found


def plain_reads(port: ir.Port) -> dict[str, int] | None:
    """Each tiling axis of `port` -> the degree index it reads, when each reads one degree
    axis as it is (no offset, no stride) and no two read the same; else None."""
    eta = port.reindexing
    read: dict[str, int] = {}
    for name, row, offset in zip(eta.codomain.names, eta.matrix, eta.offset, strict=True):
        ones = [i for i, c in enumerate(row) if c]
        if offset or len(ones) != 1 or row[ones[0]] != 1 or ones[0] in read.values():
            return None
        read[name] = ones[0]
    return read
