"""The drawing order of parallel arrays: which factor of a product is stacked above which.

The IR keeps the source order. Where a run of products sits between rearrangements (a copy
that feeds a branch and a skip, a swap that brings two arrays to a concatenation), the order
in which the product's factors are stacked decides how many wires cross in the rearrangements
round it. `drawing_order` rewrites a composition into an equal one (the same morphism: the
same operations on the same arrays, every wire keeping its label) whose products are stacked
in the order that makes the fewest crossings in the routing columns at both ends of the run:
exact over every order for a few factors, by swaps of neighbours beyond that. The rewrite is
a pure function of the term, so the drawing stays deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import permutations

from ncd import ir

from .panels import dtype_shown

EXACT_FACTORS = 7
"""Up to this many factors every stacking order is tried; beyond, a local search."""


def _wires(array: ir.ArrayType) -> int:
    return len(array.shape.axes) + int(dtype_shown(array))


def _factors(product: ir.Product) -> list[ir.Term]:
    """The factors of a product, nested products flattened and an identity on several arrays
    split into one identity per array (the same morphism, with more freedom to reorder)."""
    factors: list[ir.Term] = []
    for term in product.terms:
        if isinstance(term, ir.Product):
            factors.extend(_factors(term))
        elif isinstance(term, ir.Identity) and len(term.dom) > 1:
            names = term.names if len(term.names) == len(term.dom) else (None,) * len(term.dom)
            factors.extend(ir.Identity(dom=(a,), cod=(a,), names=(n,) if term.names else (),
                                       span=term.span)
                           for a, n in zip(term.dom, names, strict=True))
        else:
            factors.append(term)
    return factors


def _aligned(first: Sequence[ir.Term], second: Sequence[ir.Term]) -> bool:
    """Whether factor i of one product feeds exactly factor i of the next, for every i."""
    return len(first) == len(second) and all(
        len(a.cod) == len(b.dom) for a, b in zip(first, second, strict=True))


def crossings_of(mapping: Sequence[int], weights: Sequence[int]) -> int:
    """Wire crossings of a rearrangement (output j is input `mapping[j]`) whose input array i
    has `weights[i]` wires: every pair of outputs drawn in the other order than their inputs
    crosses each other's wires."""
    total = 0
    for j, a in enumerate(mapping):
        for b in mapping[j + 1:]:
            if a > b:
                total += weights[a] * weights[b]
    return total


def _arrays_in_order(groups: Sequence[Sequence[int]], order: Sequence[int]) -> list[int]:
    return [a for g in order for a in groups[g]]


def _groups(sizes: Sequence[int]) -> list[list[int]]:
    groups: list[list[int]] = []
    start = 0
    for size in sizes:
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def _best_order(count: int, cost: Callable[[Sequence[int]], int],
                seeds: Sequence[Sequence[int]] = ()) -> tuple[int, ...]:
    """The order of `count` factors with the least cost; the source order on ties. Exact up
    to `EXACT_FACTORS`; beyond, the best of `seeds` and the source order improved by moving
    one factor or swapping two while that lowers the cost (it falls each time, so it ends)."""
    identity = tuple(range(count))
    best, best_cost = identity, cost(identity)
    if best_cost == 0:
        return identity
    if count <= EXACT_FACTORS:
        return _exact_order(count, cost, best_cost)
    for seed in seeds:
        c = cost(seed)
        if c < best_cost:
            best, best_cost = tuple(seed), c
    improved = True
    while improved:
        improved = False
        for i in range(count):
            for j in range(count):
                if i == j:
                    continue
                swapped = list(best)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                moved = list(best)
                moved.insert(j, moved.pop(i))
                for trial in (tuple(swapped), tuple(moved)):
                    c = cost(trial)
                    if c < best_cost:
                        best, best_cost, improved = trial, c, True
    return best


def _exact_order(count: int, cost: Callable[[Sequence[int]], int], identity_cost: int
                 ) -> tuple[int, ...]:
    """The first order in `permutations` order (lexicographic) of least cost, as trying
    every order finds it, without trying every order.

    The crossings `_restack` counts are a sum over pairs of wires, and the two wires of a
    pair cross or not depending only on which of their factors is drawn above (the wires of
    one factor keep their own order), so: cost(order) = cost(identity) + the sum of
    `swap[g][h]` over the pairs g < h drawn h above g. `swap[g][h]` is read off two orders
    that differ only in those two, drawn first; the best order is then found by dynamic
    programming over the sets of factors still to draw (2^count sets instead of count!
    orders), taking at each step the lowest-numbered factor that stays optimal. Its cost is
    checked against `cost` itself; where they disagree (a cost that is not such a sum),
    every order is tried."""
    swap = [[0] * count for _ in range(count)]
    for g in range(count):
        for h in range(g + 1, count):
            rest = [f for f in range(count) if f != g and f != h]
            swap[g][h] = cost((h, g, *rest)) - cost((g, h, *rest))
    full = (1 << count) - 1
    # least[s]: the least added cost of drawing the factors of set s after the others
    least = [0] * (full + 1)
    for remaining in range(1, full + 1):
        least[remaining] = min(_placed_first(swap, remaining, g) + least[remaining & ~(1 << g)]
                               for g in range(count) if remaining >> g & 1)
    order: list[int] = []
    remaining = full
    while remaining:
        g = next(g for g in range(count) if remaining >> g & 1
                 and _placed_first(swap, remaining, g) + least[remaining & ~(1 << g)]
                 == least[remaining])
        order.append(g)
        remaining &= ~(1 << g)
    found = tuple(order)
    if cost(found) == identity_cost + least[full]:
        return found
    best, best_cost = found, cost(found)  # not a sum over pairs: every order, as before
    for trial in permutations(range(count)):
        c = cost(trial)
        if c < best_cost or (c == best_cost and trial < best):
            best, best_cost = trial, c
    return best


def _placed_first(swap: Sequence[Sequence[int]], remaining: int, g: int) -> int:
    """What drawing factor `g` above every other factor of set `remaining` adds: the swaps
    of the pairs (h, g) with h < g."""
    return sum(swap[h][g] for h in range(g) if remaining >> h & 1)


def cascaded_copies(terms: Sequence[ir.Term]) -> list[ir.Term]:
    """The terms of a composition with each rearrangement that copies an array of several
    wires three or more times into neighbouring places drawn as a cascade of copies in two.

    A fan of k copies of a bundle of w wires from one dot per wire crosses k(k-1)/2 * w(w-1)/2
    times; splitting one copy off at a time, (k-1) * w(w-1)/2 (the same morphism: a copy in
    two, then the second copied again)."""
    out: list[ir.Term] = []
    for term in terms:
        if isinstance(term, ir.Rearrangement):
            out.extend(_cascade(term))
        else:
            out.append(term)
    return out


def _cascade(term: ir.Rearrangement) -> list[ir.Term]:
    """`term` as a rearrangement that copies each run in two, then a product that copies the
    second of the two again (a cascade itself where copies remain); `[term]` where no run of
    three or more copies of an array of several wires is drawn side by side."""
    mapping = term.mapping
    runs: dict[int, int] = {}  # first output of a run -> its length
    j = 0
    while j < len(mapping):
        k = j
        while k + 1 < len(mapping) and mapping[k + 1] == mapping[j]:
            k += 1
        if k - j >= 2 and _wires(term.dom[mapping[j]]) >= 2:
            runs[j] = k - j + 1
        j = k + 1
    if not runs:
        return [term]
    first_mapping: list[int] = []
    factors: list[ir.Term] = []
    j = 0
    while j < len(mapping):
        array = term.cod[j]
        factors.append(ir.Identity(dom=(array,), cod=(array,)))
        if j in runs:
            first_mapping.extend((mapping[j], mapping[j]))
            factors.append(_copies(array, runs[j] - 1, term.span))
            j += runs[j]
        else:
            first_mapping.append(mapping[j])
            j += 1
    middle = tuple(a for f in factors for a in f.dom)
    return [ir.Rearrangement(dom=term.dom, cod=middle, mapping=tuple(first_mapping),
                             span=term.span),
            ir.Product(dom=middle, cod=term.cod, terms=tuple(factors))]


def _copies(array: ir.ArrayType, count: int, span: ir.Span | None) -> ir.Term:
    """`count` copies of `array`, cascaded where there are three or more."""
    copy = ir.Rearrangement(dom=(array,), cod=(array,) * count, mapping=(0,) * count, span=span)
    if count < 3:
        return copy
    return ir.Composed(dom=(array,), cod=(array,) * count, terms=tuple(_cascade(copy)))


def drawing_order(terms: Sequence[ir.Term]) -> list[ir.Term]:
    """The terms of a composition with each run of aligned products restacked (and the
    rearrangements at its ends adjusted) and its copies of bundles cascaded, to cross the
    fewest wires."""
    out = list(terms)
    i = 0
    while i < len(out):
        if not isinstance(out[i], ir.Product):
            i += 1
            continue
        runs = [_factors(out[i])]  # type: ignore[arg-type]
        j = i + 1
        while j < len(out) and isinstance(out[j], ir.Product):
            nxt = _factors(out[j])  # type: ignore[arg-type]
            if not _aligned(runs[-1], nxt):
                break
            runs.append(nxt)
            j += 1
        out, i = _restack(out, i, j, runs)
    # Cascaded last: the restacking adjusts the rearrangements round the products it moves,
    # the copies among them included.
    return cascaded_copies(out)


def _restack(out: list[ir.Term], start: int, stop: int,
             runs: list[list[ir.Term]]) -> tuple[list[ir.Term], int]:
    """Restack the products `out[start:stop]` (their factors `runs`); the index after them."""
    count = len(runs[0])
    if count < 2:
        return out, stop
    first, last = out[start], out[stop - 1]
    in_groups = _groups([len(f.dom) for f in runs[0]])
    out_groups = _groups([len(f.cod) for f in runs[-1]])
    before = out[start - 1] if start > 0 and isinstance(out[start - 1], ir.Rearrangement) \
        else None
    after = out[stop] if stop < len(out) and isinstance(out[stop], ir.Rearrangement) else None
    in_weights = [_wires(a) for a in first.dom]
    out_weights = [_wires(a) for a in last.cod]

    def left_mapping(order: Sequence[int]) -> list[int]:
        arrays = _arrays_in_order(in_groups, order)
        if before is None:
            return arrays
        assert isinstance(before, ir.Rearrangement)
        return [before.mapping[a] for a in arrays]

    def right_mapping(order: Sequence[int]) -> list[int]:
        arrays = _arrays_in_order(out_groups, order)
        position = {a: q for q, a in enumerate(arrays)}
        if after is None:
            return [position[a] for a in range(len(arrays))]
        assert isinstance(after, ir.Rearrangement)
        return [position[a] for a in after.mapping]

    left_weights = [_wires(a) for a in before.dom] if before is not None else in_weights
    # A sum or product right after the run takes its operands in any order: it is permuted
    # with the run instead of a rearrangement before it, and its wires' crossings on their
    # way to its band rows are what the order costs on the right.
    junction = _commutative_junction(out, stop, len(last.cod)) if after is None else None

    def cost(order: Sequence[int]) -> int:
        drawn = _arrays_in_order(out_groups, order)  # the output arrays, top to bottom
        right = (junction_crossings(junction, drawn) if junction is not None else
                 crossings_of(right_mapping(order), [out_weights[a] for a in drawn]))
        return crossings_of(left_mapping(order), left_weights) + right

    # Seeds for a local search among many factors: each factor where the arrays it makes
    # are wanted after the run, or where the arrays it reads come from before it.
    def by_right(g: int) -> tuple[float, int]:
        wanted = [j for j, a in enumerate(after.mapping) if a in out_groups[g]] \
            if isinstance(after, ir.Rearrangement) else out_groups[g]
        return (sum(wanted) / len(wanted) if wanted else float(g), g)

    def by_left(g: int) -> tuple[float, int]:
        sources = [before.mapping[a] for a in in_groups[g]] \
            if isinstance(before, ir.Rearrangement) else in_groups[g]
        return (sum(sources) / len(sources) if sources else float(g), g)

    seeds = [sorted(range(count), key=by_right), sorted(range(count), key=by_left)]
    order = _best_order(count, cost, seeds)
    if order == tuple(range(count)):
        return out, stop
    restacked: list[ir.Term] = []
    for factors in runs:
        chosen = [factors[g] for g in order]
        restacked.append(ir.Product(dom=tuple(a for f in chosen for a in f.dom),
                                    cod=tuple(a for f in chosen for a in f.cod),
                                    terms=tuple(chosen)))
    new_in = restacked[0].dom
    new_out = restacked[-1].cod
    head = _rearrangement(before.dom if before is not None else first.dom, new_in,
                          left_mapping(order), before.span if before is not None else None)
    tail = _rearrangement(new_out, after.cod if after is not None else last.cod,
                          right_mapping(order), after.span if after is not None else None)
    if junction is not None:  # its operands permuted with the run: no rearrangement between
        drawn = _arrays_in_order(out_groups, order)
        tail = None
        permuted = junction.model_copy(update={
            "dom": tuple(junction.dom[a] for a in drawn),
            "inputs": tuple(junction.inputs[a] for a in drawn)})
        out = [*out[:stop], permuted, *out[stop + 1:]]
    lo = start - 1 if before is not None else start
    hi = stop + 1 if after is not None else stop
    middle = ([head] if head is not None else []) + restacked
    rest = [tail] if tail is not None else []
    result = out[:lo] + middle + rest + out[hi:]
    # Resume after the products: the rearrangement after them may start the next run's
    # left end, and is looked at again there.
    resume = lo + len(middle)
    return result, resume


COMMUTATIVE = ("add", "multiply")
"""Operations whose operands may be drawn in any order: the same sum, the same product."""


def _commutative_junction(out: Sequence[ir.Term], stop: int,
                          arrays: int) -> ir.Broadcasted | None:
    """The sum or product of the `arrays` arrays a run of products ends with, if the term
    after the run is one (its operands all arrays of the run, no parameter operand)."""
    if stop >= len(out):
        return None
    term = out[stop]
    if not isinstance(term, ir.Broadcasted) or term.op.kind not in COMMUTATIVE \
            or term.params or len(term.inputs) != arrays or len(term.dom) != arrays:
        return None
    return term


def junction_crossings(junction: ir.Broadcasted, drawn: Sequence[int]) -> int:
    """Crossings of the wires of a sum's or product's operands, stacked in the order `drawn`
    (indices of its inputs, top to bottom), on their way to its band rows, which follow its
    result's axes: a wire crosses each one above it bound for a lower row. Wires into one
    row meet at a dot and do not cross."""
    rank = {name: n for n, name in enumerate(junction.outputs[0].array.names)}
    rows = [rank[axis.name] for a in drawn for axis in junction.inputs[a].array.shape.axes
            if axis.name in rank]
    return sum(1 for i, r in enumerate(rows) for q in rows[i + 1:] if r > q)


def _rearrangement(dom: tuple[ir.ArrayType, ...], cod: tuple[ir.ArrayType, ...],
                   mapping: Sequence[int], span: ir.Span | None) -> ir.Term | None:
    """A rearrangement, or None where it would change nothing."""
    if len(dom) == len(cod) and list(mapping) == list(range(len(dom))):
        return None
    return ir.Rearrangement(dom=dom, cod=cod, mapping=tuple(mapping), span=span)
