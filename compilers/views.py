"""Reindexing as tensor views: an affine stride morphism becomes a chain of view operations.

`Y[p] = X[eta(p)]` with `eta : P -> Q` affine (`q_j = offset_j + sum_i L_ji p_i`) is lowered
without any loop over elements:

1. one indexing expression `X[..., 3, 1:9:2, :]` does every fixed index (a row of `eta` with
   no term), every offset and every stride (a row with one term);
2. a row with several terms (a convolution window `2*p + w`, dilation `p + 2*w`) is cut to its
   exact extent and `unfold`ed once per extra term, the last term strided with `[..., ::a]`;
3. an index of P read by two rows (a copy: `p -> (p, p)`) becomes a `diagonal`;
4. the remaining dims are permuted into the order asked for (`transpose` / `movedim`);
5. an index of P read by no row (a delete) is either dropped (einsum broadcasts it), inserted
   as a size-1 dim (elementwise broadcasting) or expanded to its size (a real array).

Arrays carry any number of leading batch dims before their declared axes, so every dim is
addressed from the end (negative positions) and `...` stands for the batch. This module writes
code text only; it never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from ncd import ir

Label = Hashable
"""What one dim of a view stands for: an index of P (the caller chooses the labels)."""

Missing = Literal["drop", "unsqueeze", "expand"]


@dataclass(frozen=True)
class Row:
    """One input dim read as `offset + sum coefficient * index` over labelled indices of P."""

    terms: tuple[tuple[Label, int], ...]
    offset: int = 0

    @property
    def is_plain(self) -> bool:
        """Reads exactly one index of P as is (a permute, copy or delete; no arithmetic)."""
        return self.offset == 0 and len(self.terms) == 1 and self.terms[0][1] == 1


@dataclass(frozen=True)
class View:
    expr: str
    labels: tuple[Label, ...]


SizeCode = Callable[[ir.SizeExpr], str]


def tuple_text(items: Sequence[str]) -> str:
    if len(items) == 1:
        return f"({items[0]},)"
    return "(" + ", ".join(items) + ")"


def extent(terms: Sequence[tuple[Label, int]], sizes: dict[Label, ir.SizeExpr],
           start: int = 0) -> ir.SizeExpr:
    """`start + 1 + sum a * (|p| - 1)`: one past the largest index the terms reach."""
    constant = start + 1 - sum(coefficient for _, coefficient in terms)
    parts: list[ir.SizeExpr] = []
    for label, coefficient in terms:
        size = sizes[label]
        parts.append(size if coefficient == 1 else
                     ir.SizeMul(factors=(ir.SizeConst(value=coefficient), size)))
    if constant or not parts:
        parts.append(ir.SizeConst(value=constant))
    return parts[0] if len(parts) == 1 else ir.SizeAdd(terms=tuple(parts))


def permute_text(expr: str, current: Sequence[Label], wanted: Sequence[Label]) -> str:
    """Reorder the trailing dims of `expr` from `current` to `wanted` (same labels)."""
    if list(current) == list(wanted):
        return expr
    rank = len(current)
    moved = [i for i in range(rank) if current[i] != wanted[i]]
    if len(moved) == 2:
        return f"{expr}.transpose({moved[0] - rank}, {moved[1] - rank})"
    source = [i - rank for i in range(rank)]
    destination = [wanted.index(label) - rank for label in current]
    return f"{expr}.movedim({tuple_text([str(s) for s in source])}, " \
           f"{tuple_text([str(d) for d in destination])})"


def leading_shape(value_code: str, rank: int) -> str:
    """The batch part of a value's shape: everything before its `rank` declared axes."""
    return f"{value_code}.shape[:-{rank}]" if rank else f"{value_code}.shape"


def view_through(
    value_code: str,
    rows: Sequence[Row],
    input_sizes: Sequence[ir.SizeExpr],
    sizes: dict[Label, ir.SizeExpr],
    order: Sequence[Label],
    missing: Missing,
    size_code: SizeCode,
    *,
    batched: bool = True,
    leading_from: tuple[str, int] | None = None,
) -> View:
    """The view of `value_code` (trailing dims read through `rows`) with dims in `order`.

    `input_sizes` are the sizes of the value's declared dims, `sizes` the sizes of the labels.
    `leading_from` (code, rank) names another value whose batch dims an `expand` copies; by
    default the value's own batch dims are kept.
    """
    expr = value_code
    items: list[str] = []
    labels: list[Label] = []
    windows: list[tuple[int, list[tuple[Label, int]]]] = []
    for row, input_size in zip(rows, input_sizes, strict=True):
        terms = sorted(row.terms, key=lambda term: -term[1])
        if not terms:
            items.append(str(row.offset))
            continue
        stop = size_code(extent(terms, sizes, row.offset))
        whole = size_code(input_size)
        step = terms[0][1] if len(terms) == 1 else 1
        start_text = str(row.offset) if row.offset else ""
        stop_text = "" if stop == whole else stop
        item = f"{start_text}:{stop_text}" + (f":{step}" if step != 1 else "")
        items.append(item)
        if len(terms) > 1:
            windows.append((len(labels), terms))
        labels.append(terms[0][0])
    if any(item != ":" for item in items):
        expr = f"{expr}[..., {', '.join(items)}]"

    for position, window_terms in windows:
        current = position
        terms = window_terms
        while len(terms) > 1:
            (label, step), rest = terms[0], terms[1:]
            window = size_code(extent(rest, sizes))
            expr = f"{expr}.unfold({current - len(labels)}, {window}, {step})"
            labels[current] = label
            labels.append(rest[0][0])
            current = len(labels) - 1
            terms = rest
        last_label, last_step = terms[0]
        labels[current] = last_label
        if last_step != 1:
            expr = f"{expr}[..., ::{last_step}]"

    while True:
        duplicate = next((label for i, label in enumerate(labels) if label in labels[:i]), None)
        if duplicate is None:
            break
        first = labels.index(duplicate)
        second = labels.index(duplicate, first + 1)
        rank = len(labels)
        expr = f"{expr}.diagonal(0, {first - rank}, {second - rank})"
        labels = [label for i, label in enumerate(labels) if i not in (first, second)]
        labels.append(duplicate)

    unknown = [label for label in labels if label not in order]
    if unknown:
        raise ValueError(f"view labels {unknown} are not in the requested order {list(order)}")
    present = [label for label in order if label in labels]
    expr = permute_text(expr, labels, present)
    if missing == "drop" or (len(present) == len(order) and leading_from is None):
        return View(expr, tuple(present))

    slots = [":" if label in labels else "None" for label in order]
    if missing == "unsqueeze" and not batched:
        # An array without batch dims broadcasts from the right: leading size-1 dims are free.
        while slots and slots[0] == "None":
            slots.pop(0)
    if "None" in slots:
        expr = f"{expr}[..., {', '.join(slots)}]"
    if missing == "unsqueeze":
        kept = [label for label in order if label in labels or order.index(label) >=
                len(order) - len(slots)]
        return View(expr, tuple(kept))
    lead_code, lead_rank = leading_from if leading_from else (value_code, len(rows))
    full = tuple_text([size_code(sizes[label]) for label in order]) if order else "()"
    expr = f"{expr}.expand({leading_shape(lead_code, lead_rank)} + {full})"
    return View(expr, tuple(order))
