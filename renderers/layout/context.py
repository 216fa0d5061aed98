"""What a layout knows as it runs: the program, the options and theme, the values of the
sizes that are fixed, a counter of fresh wire ids and how deep it is nested (blocks, scans,
expanded calls); and how it labels a wire with an axis's name or size, or a datatype.

Sizes are read with the checker's size algebra (`ncd.sizes`): a size is shown as its value
once every symbol in it has one, else as its normal form (`x - 2`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ncd import ir, sizes

from ..glyphs import Theme
from ..text import Label, Run
from .options import RenderOptions

if TYPE_CHECKING:
    from .replay import Replays


def size_value(size: ir.SizeExpr, env: Mapping[str, int]) -> int | None:
    """The value of a size, or None when it depends on a symbol `env` does not fix (or is
    not a whole number)."""
    value = sizes.from_ir(size).evaluate(env)
    if value is None or value.denominator != 1:
        return None
    return int(value)


def size_label(size: ir.SizeExpr, env: Mapping[str, int], value: bool = True) -> str:
    """A size as a wire shows it: its value where `env` fixes it (and `value` is asked for),
    else the size as the checker writes it."""
    known = size_value(size, env) if value else None
    return str(known) if known is not None else str(sizes.from_ir(size))


def size_environment(program: ir.Program) -> dict[str, int]:
    """The values of the program's axes that are fixed: a declared size (`m = 512`), or one
    computed from those declared before it (`k = m / h`)."""
    env: dict[str, int] = {}
    for axis in program.axes:  # in declaration order: later sizes may use earlier ones
        value = size_value(axis.size, env)
        if value is not None:
            env[axis.name] = value
    return env


class WireIds:
    """The fresh wire ids of one diagram, from 1 up, as `itertools.count` gives them, with
    the next one in sight: a panel replayed (`replay`) takes as many ids as laying it out
    took, and must know which."""

    __slots__ = ("upcoming",)

    def __init__(self) -> None:
        self.upcoming = 1


class TooWide(Exception):
    """A composition grew wider than `Context.give_up_beyond`: every panel holding it is at
    least as wide, so the whole drawing is too."""


@dataclass
class Context:
    program: ir.Program
    options: RenderOptions
    theme: Theme
    env: dict[str, int]
    counter: WireIds
    depth: int = 0
    calls: tuple[str, ...] = ()
    breaks: itertools.count = field(default_factory=lambda: itertools.count(1))
    """Numbers of the row breaks of wrapped compositions, one sequence per diagram."""
    nested_calls: int | None = None
    """With `expand_calls`, how many calls deep are drawn expanded (None: all); a call
    deeper is its titled box, as a drawing too wide to print is folded."""
    give_up_beyond: float | None = None
    """A width past which the drawing is of no use (`TooWide` is raised as soon as a
    composition is wider): the one-row drawing that only tells whether a diagram fits its
    budget stops there instead of laying out the rest of a long chain."""
    replays: Replays | None = None
    """The panels already laid out in this diagram, for terms of the same form (None: every
    term is laid out)."""

    def fresh(self) -> int:
        ids = self.counter
        value = ids.upcoming
        ids.upcoming = value + 1
        return value

    def next_break(self) -> int:
        return next(self.breaks)

    def deeper(self, call: str | None = None) -> Context:
        return Context(self.program, self.options, self.theme, self.env, self.counter,
                       self.depth + 1, (*self.calls, call) if call else self.calls,
                       self.breaks, self.nested_calls, self.give_up_beyond, self.replays)

    def with_depth(self, depth: int) -> Context:
        return Context(self.program, self.options, self.theme, self.env, self.counter, depth,
                       self.calls, self.breaks, self.nested_calls, self.give_up_beyond,
                       self.replays)

    # -- labels ------------------------------------------------------------------------

    def axis_label(self, axis: ir.Axis) -> Label:
        mode = self.options.wire_labels
        if mode == "names":
            return Label.axis(axis.name)
        size = size_label(axis.size, self.env)
        if mode == "sizes":
            return Label.axis(size)
        if size == axis.name:
            return Label.axis(axis.name)
        return Label((*Label.axis(axis.name).runs, Run(" = ", "roman"),
                      *Label.axis(size).runs))

    def dtype_label(self, dtype: ir.Datatype) -> Label:
        if dtype.kind == "N":
            bound = ""
            if dtype.bound is not None:
                bound = size_label(dtype.bound, self.env, self.options.wire_labels != "names")
            return Label((Run("\u2115", "roman"),) + (Label.axis(bound).runs if bound else ()))
        return Label.plain({"R": "\u211d", "B": "\U0001d539"}[dtype.kind])
