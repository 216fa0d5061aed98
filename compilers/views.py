"""Reindexing as tensor views: an affine stride morphism becomes a chain of view operations.

`Y[p] = X[eta(p)]` with `eta : P -> Q` affine (`q_j = offset_j + sum_i L_ji p_i`) is lowered
without any loop over elements:

1. one indexing expression `X[..., 3, 1:9:2, :]` does every fixed index (a row of `eta` with
   no term), every offset and every stride (a row with one term); a single fixed index and
   nothing else is `X.select(-2, 3)`;
2. a row with several terms (a convolution window `2*p + w`, dilation `p + 2*w`) is cut to its
   exact extent and `unfold`ed once per extra term, the last term strided with `[..., ::a]`;
3. an index of P read by two rows (a copy: `p -> (p, p)`) becomes a `diagonal`;
4. the remaining dims are permuted into the order asked for (`transpose` / `movedim`);
5. an index of P read by no row (a delete) is either dropped (einsum broadcasts it), inserted
   as a size-1 dim (elementwise broadcasting) or expanded to its size (a real array).

Negative coefficients have no strided view (torch has no negative strides). An index of P that
is only ever read backwards (`3 - i`, the `- w` of `p - w + 2`) is counted from its other end,
which makes every coefficient positive, and its dim of the result is `flip`ped; failing that, a
row read wholly backwards is cut to the range it reads and flipped in the input; failing both
(an index read forwards by one row and backwards by another, mixed with other indices), the
view is an explicit gather with index tensors computed from the affine map. `flip` and the
gather copy; everything else stays a view.

Arrays carry any number of leading batch dims before their declared axes, so every dim is
addressed from the end (negative positions) and `...` stands for the batch. This module writes
code text only; it never imports torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ncd import ir
from ncd.ops.lowering import slice_text
from ncd.sizes import Size, from_ir

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


class SizeCode(Protocol):
    """The code of a size (`ForwardEmitter.size`). With `read=False` the code is only compared
    with other code at compile time, never written out, so it reads no size at run time."""

    def __call__(self, size: ir.SizeExpr, *, read: bool = True) -> str: ...


def tuple_text(items: Sequence[str]) -> str:
    if len(items) == 1:
        return f"({items[0]},)"
    return "(" + ", ".join(items) + ")"


def extent(terms: Sequence[tuple[Label, int]], sizes: dict[Label, ir.SizeExpr],
           start: int | ir.SizeExpr = 0) -> ir.SizeExpr:
    """`start + 1 + sum a * (|p| - 1)`: one past the largest index the terms reach."""
    constant = (start if isinstance(start, int) else 0) + 1 - sum(c for _, c in terms)
    parts: list[ir.SizeExpr] = []
    for label, coefficient in terms:
        size = sizes[label]
        parts.append(size if coefficient == 1 else
                     ir.SizeMul(factors=(ir.SizeConst(value=coefficient), size)))
    if not isinstance(start, int):
        parts.append(start)
    if constant or not parts:
        parts.append(ir.SizeConst(value=constant))
    return parts[0] if len(parts) == 1 else ir.SizeAdd(terms=tuple(parts))


def affine_size(constant: int, parts: Sequence[tuple[int, ir.SizeExpr]]) -> int | ir.SizeExpr:
    """`constant + sum c * size` in normal form: an int when it is a known number."""
    total = Size.const(constant)
    for coefficient, size in parts:
        total = total + from_ir(size) * coefficient
    value = total.value
    return value if value is not None else total.to_ir()


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


def size_one_dims(expr: str, slots: Sequence[str], from_right: bool) -> str:
    """`expr` with a size-1 dim wherever `slots` (one per trailing dim of the result: `:` a dim
    of `expr`, `None` a new one) has `None`: indexed from the right (after any batch dims,
    `x[..., :, None]`) or from the left. One new dim is `unsqueeze`, a plain call that costs a
    third of what indexing with `None` costs to dispatch at every run."""
    if slots.count("None") == 1:
        position = slots.index("None")
        return f"{expr}.unsqueeze({position - len(slots) if from_right else position})"
    return f"{expr}[{', '.join(['...', *slots] if from_right else slots)}]"


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
    plain = [row.terms[0][0] for row in rows if row.is_plain]
    if len(plain) == len(rows) and len(set(plain)) == len(plain):
        return _plain_view(value_code, plain, input_sizes, sizes, order, missing, size_code,
                           batched=batched, leading_from=leading_from)
    rows = list(rows)
    input_sizes = list(input_sizes)
    backward = [j for j, row in enumerate(rows) if row.terms and all(c < 0 for _, c in row.terms)]
    reversed_labels = _reversible(rows, [])
    if reversed_labels is None:
        reversed_labels = _reversible(rows, backward)
        if reversed_labels is None:
            return _gather(value_code, rows, sizes, order, missing, size_code, batched=batched,
                           leading_from=leading_from)
    else:
        backward = []
    expr = value_code
    if backward:
        # Rows read wholly backwards: cut each to the range it reads, flip it, read forwards.
        cuts = [":"] * len(rows)
        for j in backward:
            row = rows[j]
            parts = [(c, sizes[label]) for label, c in row.terms]
            low = affine_size(row.offset - sum(c for c, _ in parts), parts)  # the lowest read
            low_text = "" if low == 0 else (str(low) if isinstance(low, int) else size_code(low))
            stop = str(row.offset + 1)
            whole = size_code(input_sizes[j], read=False)
            cuts[j] = slice_text(low_text, "" if stop == whole else stop)
            rows[j] = Row(tuple((label, -c) for label, c in row.terms))
            length = affine_size(1 + sum(c for c, _ in parts), [(-c, n) for c, n in parts])
            input_sizes[j] = ir.SizeConst(value=length) if isinstance(length, int) else length
        if any(cut != ":" for cut in cuts):
            expr = f"{expr}[..., {', '.join(cuts)}]"
        expr = f"{expr}.flip({', '.join(str(j - len(rows)) for j in backward)})"
    starts: list[int | ir.SizeExpr] = []
    for j, row in enumerate(rows):
        negative = [(c, sizes[label]) for label, c in row.terms if c < 0]
        if not negative:
            starts.append(row.offset)
            continue
        # Count each reversed index from its other end: `c * p = c * (|p| - 1) - c * p'`.
        starts.append(affine_size(row.offset - sum(c for c, _ in negative), negative))
        rows[j] = Row(tuple((label, abs(c)) for label, c in row.terms), 0)
    items: list[str] = []
    fixed: list[int] = []  # the positions of the items that are a fixed index
    labels: list[Label] = []
    windows: list[tuple[int, list[tuple[Label, int]]]] = []
    for row, input_size, first in zip(rows, input_sizes, starts, strict=True):
        terms = sorted(row.terms, key=lambda term: -term[1])
        first_text = str(first) if isinstance(first, int) else size_code(first)
        if not terms:
            fixed.append(len(items))
            items.append(first_text)
            continue
        stop_size = extent(terms, sizes, first)
        stop = size_code(stop_size, read=False)
        whole = size_code(input_size, read=False)
        step = terms[0][1] if len(terms) == 1 else 1
        start_text = "" if first == 0 else first_text
        stop_text = "" if stop == whole else size_code(stop_size)
        item = slice_text(start_text, stop_text, str(step) if step != 1 else "")
        items.append(item)
        if len(terms) > 1:
            windows.append((len(labels), terms))
        labels.append(terms[0][0])
    read = [position for position, item in enumerate(items) if item != ":"]
    if read == fixed and len(fixed) == 1:
        # One fixed index and nothing else (a gate of a cell, one of q, k, v): `select`, a
        # plain call, costs less than parsing an index tuple with `...`.
        expr = f"{expr}.select({fixed[0] - len(items)}, {items[fixed[0]]})"
    elif read:
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
    if reversed_labels:
        dims = [str(present.index(label) - len(present)) for label in present
                if label in reversed_labels]
        expr = f"{expr}.flip({', '.join(dims)})"
    return _complete(expr, present, order, missing, size_code, sizes, batched=batched,
                     leading_from=leading_from, own=(value_code, len(rows)))


def _plain_view(value_code: str, labels: list[Label], input_sizes: Sequence[ir.SizeExpr],
                sizes: dict[Label, ir.SizeExpr], order: Sequence[Label], missing: Missing,
                size_code: SizeCode, *, batched: bool,
                leading_from: tuple[str, int] | None) -> View:
    """`view_through` where each row reads a different index of P whole (a permute or a
    delete: most operands), in fewer steps: what the general steps come to for such rows
    (no flip, no window, no diagonal), the same code."""
    items: list[str] = []
    for label, input_size in zip(labels, input_sizes, strict=True):
        stop_size = sizes[label]  # `extent` of one index read forwards from 0
        stop = size_code(stop_size, read=False)
        # the same node has the same code (a second call only finds the first one's)
        whole = stop if input_size is stop_size else size_code(input_size, read=False)
        items.append(":" if stop == whole else slice_text("", size_code(stop_size)))
    expr = value_code
    if any(item != ":" for item in items):
        expr = f"{expr}[..., {', '.join(items)}]"
    unknown = [label for label in labels if label not in order]
    if unknown:
        raise ValueError(f"view labels {unknown} are not in the requested order {list(order)}")
    present = [label for label in order if label in labels]
    expr = permute_text(expr, labels, present)
    return _complete(expr, present, order, missing, size_code, sizes, batched=batched,
                     leading_from=leading_from, own=(value_code, len(labels)))


def _complete(expr: str, present: Sequence[Label], order: Sequence[Label], missing: Missing,
              size_code: SizeCode, sizes: dict[Label, ir.SizeExpr], *, batched: bool,
              leading_from: tuple[str, int] | None, own: tuple[str, int]) -> View:
    """Step 5: the labels of `order` that no row reads (not in `present`, the trailing dims of
    `expr` in order) are dropped, inserted as size-1 dims or expanded."""
    if missing == "drop" or (len(present) == len(order) and leading_from is None):
        return View(expr, tuple(present))

    slots = [":" if label in present else "None" for label in order]
    if missing == "unsqueeze" and not batched:
        # An array without batch dims broadcasts from the right: leading size-1 dims are free.
        while slots and slots[0] == "None":
            slots.pop(0)
    if "None" in slots:
        expr = size_one_dims(expr, slots, from_right=True)
    if missing == "unsqueeze":
        kept = [label for label in order if label in present or order.index(label) >=
                len(order) - len(slots)]
        return View(expr, tuple(kept))
    lead_code, lead_rank = leading_from if leading_from else own
    full = tuple_text([size_code(sizes[label]) for label in order]) if order else "()"
    expr = f"{expr}.expand({leading_shape(lead_code, lead_rank)} + {full})"
    return View(expr, tuple(order))


def _reversible(rows: Sequence[Row], flipped: Sequence[int]) -> set[Label] | None:
    """The indices to count from their other end so that every coefficient is positive (rows
    in `flipped` are read after a flip of their input dim: their signs change), or None when
    an index is read forwards by one row and backwards by another."""
    signs: dict[Label, set[bool]] = {}
    for j, row in enumerate(rows):
        for label, coefficient in row.terms:
            signs.setdefault(label, set()).add((coefficient < 0) != (j in flipped))
    if any(len(seen) > 1 for seen in signs.values()):
        return None
    return {label for label, seen in signs.items() if True in seen}


def _gather(value_code: str, rows: Sequence[Row], sizes: dict[Label, ir.SizeExpr],
            order: Sequence[Label], missing: Missing, size_code: SizeCode, *, batched: bool,
            leading_from: tuple[str, int] | None) -> View:
    """`X[..., i_0, i_1, ...]` with one index tensor per row, `offset + sum c * arange(|p|)`
    broadcast over the labels in `order`: any affine map, as a copy."""
    used = {label for row in rows for label, _ in row.terms}
    present = [label for label in order if label in used]
    unknown = used - set(present)
    if unknown:
        raise ValueError(f"view labels {sorted(map(str, unknown))} are not in the requested "
                         f"order {list(order)}")
    indices: list[str] = []
    for row in rows:
        parts: list[str] = []
        for label, coefficient in row.terms:
            position = present.index(label)
            index = f"torch.arange({size_code(sizes[label])}, device={value_code}.device)"
            if len(present) > 1:
                slots = ["None"] * len(present)
                slots[position] = ":"
                index += f"[{', '.join(slots)}]"
            parts.append(index if coefficient == 1 else f"{coefficient} * {index}")
        if row.offset or not parts:
            parts.append(str(row.offset))
        indices.append(" + ".join(parts).replace("+ -", "- "))
    expr = f"{value_code}[..., {', '.join(indices)}]" if indices else value_code
    return _complete(expr, present, order, missing, size_code, sizes, batched=batched,
                     leading_from=leading_from, own=(value_code, len(rows)))
