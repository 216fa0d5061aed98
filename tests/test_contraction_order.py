"""The order of a contraction of three or more operands (`ncd.contraction_order`): the path
chosen against every order tried by brute force, the compiled module's FLOPs (counted by
PyTorch) against the best hand-written order, and its numerics against one `torch.einsum`."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Sequence

import pytest

import ncd
from ncd.contraction_order import OPTIMAL_LIMIT, contraction_path, step_macs
from ncd.stats import stats

torch = pytest.importorskip("torch")

from measure import counted_flops  # noqa: E402

# The case: a query projection contracted with keys, written in the natural order
# (data first, the parameter last). Left to right it is the outer product of X and K.
SCORES = """
axis x = 64, y = 96, m = 256, e = 32

def scores(X: R[x, m], K: R[y, e]) -> R[x, y] {
    param W: R[m, e]
    S[x, y] = sum(m, e) X[x, m] * K[y, e] * W[m, e]
    return S
}
"""


def brute_force(operands: Sequence[Sequence[Hashable]], output: Sequence[Hashable],
                sizes: dict[Hashable, int]) -> int:
    """The fewest multiply-adds over every sequence of pairwise contractions, found by
    trying them all (independently of the dynamic programme under test)."""
    best: int | None = None

    def search(arrays: list[tuple[Hashable, ...]], spent: int) -> None:
        nonlocal best
        if len(arrays) == 1:
            best = spent if best is None else min(best, spent)
            return
        for i, j in itertools.combinations(range(len(arrays)), 2):
            rest = [a for k, a in enumerate(arrays) if k not in (i, j)]
            needed = set(output).union(*rest)
            merged = tuple(dict.fromkeys([*arrays[i], *arrays[j]]))
            result = tuple(output) if not rest else tuple(c for c in merged if c in needed)
            search([*rest, result], spent + step_macs(arrays[i], arrays[j], result, sizes))

    search([tuple(o) for o in operands], 0)
    assert best is not None
    return best


def test_the_optimal_path_matches_brute_force_on_random_contractions() -> None:
    generator = random.Random(11)
    letters = "abcdefg"
    for _ in range(60):
        count = generator.randint(3, 5)
        sizes: dict[Hashable, int] = {c: generator.choice([2, 3, 7, 16, 64]) for c in letters}
        operands = [generator.sample(letters, generator.randint(1, 3)) for _ in range(count)]
        used = sorted({c for op in operands for c in op})
        output = generator.sample(used, generator.randint(0, min(3, len(used))))
        path = contraction_path(operands, output, sizes)
        assert path.macs == sum(step.macs for step in path.steps)
        assert path.macs == brute_force(operands, output, sizes)
        assert path.steps[-1].labels == tuple(output)


def test_the_path_is_deterministic_and_a_tie_keeps_the_smaller_intermediate() -> None:
    sizes: dict[Hashable, int] = {"a": 10, "b": 10, "c": 10, "d": 1000}
    first = contraction_path([["a", "b"], ["b", "c"], ["c", "d"]], ["a", "d"], sizes)
    assert first == contraction_path([["a", "b"], ["b", "c"], ["c", "d"]], ["a", "d"], sizes)
    # (ab)(bc) first costs 1000 and keeps [a, c] (100 entries); (bc)(cd) first costs 100000.
    assert (first.steps[0].left, first.steps[0].right) == (0, 1)
    assert first.largest == 100


def test_beyond_the_limit_a_greedy_path_still_avoids_outer_products() -> None:
    """A chain of matrices given out of order: greedy pairs neighbours, never the outer
    product that contracting them as listed would build."""
    count = OPTIMAL_LIMIT + 3
    chain = [[f"i{k}", f"i{k + 1}"] for k in range(count)]
    order = [*range(0, count, 2), *range(1, count, 2)]  # non-neighbours side by side
    operands = [chain[k] for k in order]
    sizes: dict[Hashable, int] = {f"i{k}": 8 + k for k in range(count + 1)}
    path = contraction_path(operands, ["i0", f"i{count}"], sizes)
    assert all(len(step.counted) <= 3 for step in path.steps)  # matrix products only
    in_order = sum(sizes["i0"] * sizes[f"i{k}"] * sizes[f"i{k + 1}"] for k in range(1, count))
    assert path.macs <= in_order  # no worse than multiplying along the chain


def test_natural_order_scores_cost_the_best_hand_written_order() -> None:
    """What the compiled module runs (FLOPs counted by PyTorch) is within 1.1 of the best of
    the three pairings written by hand, and ncd stats counts exactly that."""
    program = ncd.load(SCORES)
    module = program.to_torch("scores").eval()
    X, K = torch.randn(64, 256), torch.randn(96, 32)
    W = module.W.detach()
    generated = counted_flops(module, [X, K])

    def flops(fn: object) -> int:
        from torch.utils.flop_counter import FlopCounterMode
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()  # type: ignore[operator]
        return int(counter.get_total_flops())

    hand = [
        flops(lambda: torch.einsum("xe,ye->xy", torch.einsum("xm,me->xe", X, W), K)),
        flops(lambda: torch.einsum("xm,my->xy", X, torch.einsum("ye,me->my", K, W))),
        flops(lambda: torch.einsum("xmye,me->xy", torch.einsum("xm,ye->xmye", X, K), W)),
    ]
    assert generated <= 1.1 * min(hand)
    assert hand[2] > 20 * min(hand)  # the order as written would be far worse
    assert 2 * stats(program.ir, "scores").macs.value == generated
    with torch.no_grad():
        expected = torch.einsum("xm,ye,me->xy", X, K, W)
        torch.testing.assert_close(module(X, K), expected, rtol=1e-4, atol=1e-4)


def test_the_generated_code_contracts_two_operands_at_a_time() -> None:
    source = ncd.load(SCORES).compile()
    forward = source[source.index("def forward"):]
    assert 'S_partial = torch.einsum("...xm,me->...xe", X, W)' in forward
    assert 'S = torch.einsum("...xe,...ye->...xy", S_partial, K)' in forward


def test_a_batched_chain_of_four_matches_one_einsum() -> None:
    """Leading batch dims (a lifted call) ride along every pairwise step."""
    program = ncd.load("""
    axis a = 5, b = 7, c = 3, d = 11, e = 2
    def chain(A: R[a, b], B: R[b, c], C: R[c, d], D: R[d, e]) -> R[a, e] {
        Z[a, e] = sum(b, c, d) A[a, b] * B[b, c] * C[c, d] * D[d, e]
        return Z
    }
    def lifted(A: R[n, a, b], B: R[b, c], C: R[n, c, d], D: R[d, e]) -> R[n, a, e] {
        return chain(A, B, C, D)
    }
    axis n = 4
    """)
    module = program.to_torch("lifted").eval()
    A, B = torch.randn(4, 5, 7), torch.randn(7, 3)
    C, D = torch.randn(4, 3, 11), torch.randn(11, 2)
    with torch.no_grad():
        torch.testing.assert_close(module(A, B, C, D),
                                   torch.einsum("nab,bc,ncd,de->nae", A, B, C, D),
                                   rtol=1e-4, atol=1e-4)
