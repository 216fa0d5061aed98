"""Cost figures on the diagram (`ncd render --annotate cost`): each box gets its FLOPs and
the bytes of its outputs as a small second line, and a fill from a sequential scale by its
FLOPs, whose lightness falls step by step so that it reads in greyscale too (the `print`
theme uses greys alone); a legend under the drawing says what the shades mean.

The figures come from `ncd.stats`; a box is found by where its operation is in the source
and its kind (`Operation.key`). Shades are by FLOPs relative to the costliest operation,
on a log scale (each shade a factor of ten); with symbolic sizes they are compared with
every symbol at `REFERENCE_SIZE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ncd import ir
from ncd.sizes import Size

from .glyphs import Theme

REFERENCE_SIZE = 1024
"""The value every run-time symbol takes when shades compare symbolic figures."""

SHADES: dict[str, tuple[str, ...]] = {
    # Lightness falls from the first to the last, so the order survives greyscale.
    "light": ("#fff5eb", "#fdd8b0", "#fdb57a", "#f98c45", "#e0601c"),
    "dark": ("#2b2e34", "#4b3a2c", "#6b4626", "#8f521d", "#b86012"),
    "print": ("#ffffff", "#e0e0e0", "#c2c2c2", "#a3a3a3", "#858585"),
}
LEVELS = len(SHADES["light"])


@dataclass(frozen=True)
class BoxNote:
    """The figures drawn on one operation's box: its lines of text and its shade."""

    key: tuple[int, int, str]
    lines: tuple[str, ...]
    level: int


@dataclass(frozen=True)
class Legend:
    lines: tuple[str, ...]


def compact(value: Size) -> str:
    """A polynomial in few characters: `524k·x`, `1.03k·x² + 2.1M·x`."""
    terms = sorted(value.terms, key=lambda t: (-sum(p for _, p in t[0]), t[0]))
    if not terms:
        return "0"
    text = ""
    for index, (monomial, coefficient) in enumerate(terms[:2]):
        factors = "·".join(key + ("" if power == 1 else _superscript(power))
                           for key, power in monomial)
        number = _si(abs(coefficient))
        part = number if not factors else (factors if number == "1" else f"{number}·{factors}")
        if index == 0:
            text = f"-{part}" if coefficient < 0 else part
        else:
            text += f" - {part}" if coefficient < 0 else f" + {part}"
    return text + (" + …" if len(terms) > 2 else "")


def _si(value: Fraction) -> str:
    number = float(value)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= factor:
            return f"{number / factor:.3g}{suffix}"
    return f"{number:.3g}"


def _superscript(power: int) -> str:
    return str(power).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def reference_value(value: Size) -> float:
    env = {symbol: REFERENCE_SIZE for symbol in value.symbols}
    result = value.evaluate(env)
    return float(result) if result is not None else 0.0


def shaded(theme: Theme, level: int) -> Theme:
    """The theme with every box fill in the shade of `level`."""
    from dataclasses import replace

    shade = SHADES["print" if theme.greyscale else theme.name if theme.name in SHADES
                   else "light"][max(0, min(level, LEVELS - 1))]
    return replace(theme, box_fill=shade, card_fill=shade, norm_fill=shade, call_fill=shade)


def level_of(flops: float, top: float) -> int:
    """The shade of an operation: the top one for the costliest, one lighter per factor of
    ten below it, the lightest for none."""
    if flops <= 0 or top <= 0:
        return 0
    below = math.floor(math.log10(top / flops))
    return max(1, LEVELS - 1 - below)


def cost_notes(program: ir.Program, name: str) -> tuple[tuple[BoxNote, ...], Legend]:
    """The notes of every operation of definition `name`, and the legend."""
    from ncd.stats import stats  # the figures read the operator registry: imported when asked

    figures = stats(program, name)
    values = [reference_value(op.flops) for op in figures.operations]
    top = max(values, default=0.0)
    notes = []
    for op, value in zip(figures.operations, values, strict=True):
        if op.key is None:
            continue
        runs = "" if op.runs == Size.const(1) else f" (×{compact(op.runs)})"
        lines = (f"{compact(op.flops)} FLOP{runs}",) if op.flops != Size.const(0) else ()
        notes.append(BoxNote(op.key, (*lines, f"{compact(op.output_bytes)} B"),
                             level_of(value, top)))
    symbols = sorted({s for op in figures.operations for s in op.flops.symbols})
    at = f", symbols at {REFERENCE_SIZE}" if symbols else ""
    legend = Legend((
        f"shade: FLOPs, 10× per step{at}",
        "on each box: FLOPs, bytes of its outputs",
        f"total {compact(figures.flops)} FLOP, {compact(figures.parameters)} parameters",
        f"peak forward {' or '.join(compact(p) for p in figures.peak)} B",
    ))
    return tuple(notes), legend
