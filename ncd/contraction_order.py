"""The order in which a contraction of three or more operands is done, two at a time.

`torch.einsum` of many operands contracts them left to right, so the order the source happens
to write them in decides the work: `S[q, k] = X[q, m] W[m, e] Y[k, e]` read left to right
multiplies `X` by `W` first (cheap), but written `Y, X, W` it would build the outer product of
`Y` and `X` over `k, q, m, e`. This module chooses the pairs by cost, as opt_einsum's
"optimal" strategy does: the fewest multiply-adds over every order (every tree of pairwise
contractions), ties broken by the smallest largest intermediate, then by the order of the
operands (so the choice is deterministic); beyond `OPTIMAL_LIMIT` operands, greedily the
cheapest pair first. Parameters and data are alike here: an operand is its labels.

Sizes are integers: the compiler and `ncd stats` give each axis its value, a size known only
at run time its `representative` value, so that both choose the same path.

A pairwise step costs what the matrix product that runs it costs: the product of the sizes of
the labels both operands have or its result keeps (a label only one operand has and nobody
needs later is summed out first, with no multiplications). No torch here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from .sizes import Size

OPTIMAL_LIMIT = 6
"""Up to this many operands every order is tried (3^n subset splits); beyond it, greedy."""

REPRESENTATIVE = 512
"""The value a size known only at run time takes when paths are compared (a sequence length
or a batch of a few hundred): any fixed value keeps the choice deterministic."""


def representative(size: Size) -> int:
    """A size as an integer: its value, or its value with every run-time symbol at
    `REPRESENTATIVE` (at least 1)."""
    value = size.evaluate({symbol: REPRESENTATIVE for symbol in size.symbols})
    return max(1, int(value)) if value is not None else REPRESENTATIVE


@dataclass(frozen=True)
class Step:
    """One pairwise contraction. Arrays are numbered: the operands 0..n-1, then the result of
    step i as n + i."""

    left: int
    right: int
    labels: tuple[Hashable, ...]
    """The labels of its result in order (the output's labels, for the last step)."""
    counted: tuple[Hashable, ...]
    """The labels whose sizes multiply into its multiply-adds (`counted_labels`)."""
    macs: int


@dataclass(frozen=True)
class Path:
    steps: tuple[Step, ...]
    macs: int
    """Multiply-adds of every step together."""
    largest: int
    """Entries of the largest intermediate (the output excluded)."""


def counted_labels(left: Sequence[Hashable], right: Sequence[Hashable],
                   result: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """The labels whose sizes multiply into the multiply-adds of contracting two arrays into
    `result`: those both have or the result keeps."""
    return tuple(label for label in dict.fromkeys([*left, *right])
                 if label in result or (label in left and label in right))


def step_macs(left: Sequence[Hashable], right: Sequence[Hashable],
              result: Sequence[Hashable], sizes: Mapping[Hashable, int]) -> int:
    """Multiply-adds of contracting two arrays into `result`."""
    return entries(counted_labels(left, right, result), sizes)


def entries(labels: Sequence[Hashable], sizes: Mapping[Hashable, int]) -> int:
    total = 1
    for label in labels:
        total *= sizes[label]
    return total


def contraction_path(operands: Sequence[Sequence[Hashable]], output: Sequence[Hashable],
                     sizes: Mapping[Hashable, int]) -> Path:
    """The cheapest order of pairwise contractions of `operands` (the labels of each) into
    `output`; labels absent from the output are summed. Needs at least two operands."""
    if len(operands) < 2:
        raise ValueError("a contraction path needs at least two operands")
    labels = [tuple(dict.fromkeys(op)) for op in operands]
    if len(labels) <= OPTIMAL_LIMIT:
        return _optimal(labels, tuple(output), sizes)
    return _greedy(labels, tuple(output), sizes)


def _kept(inside: Sequence[Hashable], outside: Sequence[Sequence[Hashable]],
          output: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """The labels of an intermediate: those of its operands that the output or an operand
    not yet contracted into it still needs, in order of first appearance."""
    needed = set(output)
    for labels in outside:
        needed.update(labels)
    return tuple(label for label in inside if label in needed)


@dataclass(frozen=True)
class _Best:
    macs: int
    largest: int
    tree: tuple[object, ...] | int
    labels: tuple[Hashable, ...]


def _optimal(operands: list[tuple[Hashable, ...]], output: tuple[Hashable, ...],
             sizes: Mapping[Hashable, int]) -> Path:
    """Every tree of pairwise contractions, by dynamic programming over subsets of operands."""
    count = len(operands)
    full = (1 << count) - 1
    best: dict[int, _Best] = {1 << i: _Best(0, 0, i, operands[i]) for i in range(count)}

    def members(mask: int) -> list[int]:
        return [i for i in range(count) if mask >> i & 1]

    def labels_of(mask: int) -> tuple[Hashable, ...]:
        inside = [label for i in members(mask) for label in operands[i]]
        if mask == full:
            return output
        return _kept(tuple(dict.fromkeys(inside)),
                     [operands[i] for i in range(count) if not mask >> i & 1], output)

    for mask in sorted(range(1, full + 1), key=lambda m: (bin(m).count("1"), m)):
        if mask in best:
            continue
        result = labels_of(mask)
        lowest = mask & -mask
        chosen: _Best | None = None
        rest = mask & ~lowest
        sub = rest
        while True:  # every split into a part with the lowest operand and the rest
            left_mask = lowest | sub
            right_mask = mask & ~left_mask
            if right_mask:
                left, right = best[left_mask], best[right_mask]
                macs = left.macs + right.macs + step_macs(left.labels, right.labels, result,
                                                          sizes)
                size = 0 if mask == full else entries(result, sizes)
                largest = max(left.largest, right.largest, size)
                if chosen is None or (macs, largest) < (chosen.macs, chosen.largest):
                    chosen = _Best(macs, largest, (left.tree, right.tree), result)
            if sub == 0:
                break
            sub = (sub - 1) & rest
        assert chosen is not None
        best[mask] = chosen
    top = best[full]
    steps: list[Step] = []

    def emit(tree: tuple[object, ...] | int) -> tuple[int, tuple[Hashable, ...]]:
        if isinstance(tree, int):
            return tree, operands[tree]
        left_tree, right_tree = tree
        assert isinstance(left_tree, (int, tuple)) and isinstance(right_tree, (int, tuple))
        left, left_labels = emit(left_tree)
        right, right_labels = emit(right_tree)
        mask = _mask(tree)
        result = best[mask].labels
        counted = counted_labels(left_labels, right_labels, result)
        steps.append(Step(left, right, result, counted, entries(counted, sizes)))
        return count + len(steps) - 1, result

    emit(top.tree)
    return Path(tuple(steps), top.macs, top.largest)


def _mask(tree: tuple[object, ...] | int) -> int:
    if isinstance(tree, int):
        return 1 << tree
    mask = 0
    for part in tree:
        assert isinstance(part, (int, tuple))
        mask |= _mask(part)
    return mask


def _greedy(operands: list[tuple[Hashable, ...]], output: tuple[Hashable, ...],
            sizes: Mapping[Hashable, int]) -> Path:
    """The cheapest pair first (pairs that share a label before outer products), ties by the
    smaller result, then by position."""
    arrays: dict[int, tuple[Hashable, ...]] = dict(enumerate(operands))
    steps: list[Step] = []
    largest = 0
    while len(arrays) > 1:
        candidates = []
        for a, b in combinations(sorted(arrays), 2):
            others = [labels for key, labels in arrays.items() if key not in (a, b)]
            merged = tuple(dict.fromkeys([*arrays[a], *arrays[b]]))
            result = output if not others else _kept(merged, others, output)
            shares = bool(set(arrays[a]) & set(arrays[b]))
            candidates.append((not shares, step_macs(arrays[a], arrays[b], result, sizes),
                               entries(result, sizes), a, b, result))
        _, macs, size, a, b, result = min(candidates, key=lambda c: c[:5])
        steps.append(Step(a, b, result, counted_labels(arrays[a], arrays[b], result), macs))
        del arrays[a], arrays[b]
        arrays[len(operands) + len(steps) - 1] = result
        if len(arrays) > 1:
            largest = max(largest, size)
    return Path(tuple(steps), sum(step.macs for step in steps), largest)


def live_intermediates(path: Path, operand_count: int) -> list[list[int]]:
    """For each step, the intermediates alive while it runs (its inputs that are
    intermediates, the other intermediates waiting to be used, and its own result unless it is
    the last step), by array number."""
    consumed_at: dict[int, int] = {}
    for index, step in enumerate(path.steps):
        consumed_at[step.left] = index
        consumed_at[step.right] = index
    alive: list[list[int]] = []
    for index in range(len(path.steps)):
        made = [operand_count + i for i in range(index + 1)]
        alive.append([array for array in made
                      if consumed_at.get(array, len(path.steps)) >= index
                      and array != operand_count + len(path.steps) - 1])
    return alive
