"""Fewer crossings: the renderer chooses the vertical order of arrays in products, of the
arrays at a diagram's edges and of the tiling wires round a box, counted on the geometry the
way `bench/layout.py` counts them. Each case is compared with the same diagram drawn in the
source order (the choice switched off), and every drawing stays valid and deterministic."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable, Sequence
from itertools import pairwise, permutations
from pathlib import Path
from types import ModuleType

import pytest
from ncd.renderers import RenderOptions, diagram
from ncd.renderers.geometry import Circle, Diagram, Text
from ncd.renderers.geometry import Path as WirePath
from ncd.renderers.layout import broadcast, definition, options, order, terms

import ncd
from ncd import ir

ROOT = Path(__file__).resolve().parent.parent


def _bench_layout() -> ModuleType:
    """`bench/layout.py`, whose crossing count is the one the gallery's figures use."""
    spec = importlib.util.spec_from_file_location("bench_layout", ROOT / "bench" / "layout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench_layout()
crossings = BENCH.crossings
PT_AT_170_MM = 170.0 / 25.4 * 72.0

SOURCE = """\
axis x, b, t
axis i = 4, n = 6, c = 5, d = 7, e = c + d, y = 3, yp = y + 2

def branch(X: R[c, x]) -> R[d, x] {
    return linear[c -> d](relu(X), W)
}

def skip(X: R[c, x]) -> R[e, x] {
    B = branch(X)
    return concat[c d -> e](X, B)
}

def cell(H: R[n], X: R[i]) -> (R[n], R[n]) {
    H2 = tanh(linear[n -> n](H, U) + linear[i -> n](X, V))
    return H2, H2
}

def swapped(X: R[t, b, i], H0: R[b, n]) -> (Y: R[t, b, n], Last: R[b, n]) {
    Last, Y = scan[t](cell, H0, X)
    return Y, Last
}

def padded(X: R[c, y, x]) -> R[c, yp, x] {
    return pad[y -> yp, before=1, after=1](X)
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> ir.Program:
    path = tmp_path_factory.mktemp("order") / "order.ncd"
    path.write_text(SOURCE)
    return ncd.load(str(path)).ir


def count(d: Diagram) -> int:
    """Crossings as `bench/layout.py` counts them."""
    paths = [item for item in d.items if isinstance(item, WirePath) and item.wire is not None
             and item.role in ("axis", "dtype", "param")]
    dots = [(item.cx, item.cy) for item in d.items
            if isinstance(item, Circle) and item.r <= 3.0 and item.fill is not None]
    return crossings(paths, dots)


def source_order(terms_: Sequence[ir.Term]) -> list[ir.Term]:
    return list(terms_)


def test_a_skip_branch_is_stacked_to_reach_its_concatenation_uncrossed(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = diagram(program, "skip")
    with monkeypatch.context() as patch:
        patch.setattr(terms, "drawing_order", source_order)
        source = diagram(program, "skip")
    assert count(source) > 0
    assert count(chosen) < count(source)
    assert chosen.validate() == []
    # the same operations and the same names on the wires: only the stacking changed
    assert sorted(b.kind for b in chosen.boxes) == sorted(b.kind for b in source.boxes)
    assert {str(t.label) for t in chosen.items if isinstance(t, Text)} == \
        {str(t.label) for t in source.items if isinstance(t, Text)}


def test_drawing_order_restacks_a_product_and_adjusts_the_rearrangements(
        program: ir.Program) -> None:
    body = program.definition("skip").body
    assert isinstance(body, ir.Composed)
    restacked = order.drawing_order(body.terms)
    # the types still chain: each term's codomain is the next one's domain
    for first, second in pairwise(restacked):
        assert first.cod == second.dom
    assert restacked[0].dom == body.dom and restacked[-1].cod == body.cod
    assert restacked != list(body.terms)
    # and it is a function of the term: the same result twice
    assert order.drawing_order(body.terms) == restacked


def test_crossings_of_a_rearrangement_weighs_arrays_by_their_wires() -> None:
    assert order.crossings_of([0, 1], [2, 3]) == 0
    assert order.crossings_of([1, 0], [2, 3]) == 6
    assert order.crossings_of([0, 0], [2]) == 0  # a copy: the copies do not cross


def test_inputs_permuted_first_are_drawn_in_that_order_at_the_edge(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = diagram(program, "swapped")
    with monkeypatch.context() as patch:
        patch.setattr(definition, "edges_in_drawing_order",
                      lambda d: (d.domain, d.codomain, d.body))
        source = diagram(program, "swapped")
    assert count(chosen) < count(source)
    assert chosen.validate() == []


def test_arrays_of_one_type_keep_their_order_at_the_edge(program: ir.Program) -> None:
    vector = program.definition("cell").domain[0]  # R[n]
    swap = ir.Rearrangement(dom=(vector, vector), cod=(vector, vector), mapping=(1, 0))
    assert not definition._reorders_freely(swap)


def _bends(d: Diagram) -> int:
    return int(BENCH.bends([item for item in d.items if isinstance(item, WirePath)
                            and item.wire is not None and item.role == "axis"]))


def test_a_tiling_wire_under_the_target_passes_under_the_box(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = diagram(program, "padded")
    with monkeypatch.context() as patch:
        patch.setattr(broadcast, "band_split", lambda left, right, ib, ob, n: n)
        source = diagram(program, "padded")
    # In the source order `x` climbs over `y` into the band above the box and back down
    # (a swap of the two on each side); passing under the box, every wire runs straight.
    assert _bends(source) > 0
    assert _bends(chosen) == 0
    assert chosen.validate() == []


def test_the_choices_are_deterministic(program: ir.Program) -> None:
    from ncd.renderers.svg import render

    for name in ("skip", "swapped", "padded"):
        assert render(diagram(program, name)) == render(diagram(program, name))


@pytest.mark.parametrize("name", ["transformer", "resnet_block", "gru"])
def test_expanded_gallery_diagrams_print_their_labels_at_6_pt(name: str) -> None:
    loaded = ncd.load(str(ROOT / "gallery" / f"{name}.ncd")).ir
    drawn = diagram(loaded, loaded.definitions[-1].name,
                    RenderOptions(expand_calls=name != "resnet_block"))
    smallest = min(t.size for t in drawn.items if isinstance(t, Text))
    assert smallest * PT_AT_170_MM / drawn.width >= 6.0
    assert drawn.validate() == []


def test_no_glyph_caption_is_smaller_than_a_wire_label(program: ir.Program) -> None:
    drawn = diagram(program, "padded")
    assert min(t.size for t in drawn.items if isinstance(t, Text)) >= options.LABEL_SIZE


def test_an_expanded_drawing_too_wide_folds_its_deepest_calls() -> None:
    loaded = ncd.load(str(ROOT / "gallery" / "llama_block.ncd")).ir
    expanded = RenderOptions(expand_calls=True)
    drawn = diagram(loaded, "llama_block", expanded)
    # with every call expanded the drawing is wider than the budget, whatever the wrapping
    unfolded = definition._fitted(loaded, loaded.definition("llama_block"), expanded,
                                  880.0)
    assert unfolded.width > 880.5
    assert drawn.width <= 880.5
    smallest = min(t.size for t in drawn.items if isinstance(t, Text))
    assert smallest * PT_AT_170_MM / drawn.width >= 6.0
    # the top-level calls are expanded (their frames are titled), the deepest are boxes
    titles = {str(t.label.plain_text()) for t in drawn.items if isinstance(t, Text)}
    assert {"attention", "swiglu"} <= titles
    assert [b for b in drawn.boxes if b.kind == "call"]
    assert drawn.validate() == []


def _first_least(count: int, cost: Callable[[Sequence[int]], int]) -> tuple[int, ...]:
    """The exact search as every order tried in turn finds it: the first of least cost."""
    return min(permutations(range(count)), key=cost)


def _crossings_round(groups: list[list[int]], weights: list[int], after: list[int]
                     ) -> Callable[[Sequence[int]], int]:
    """The crossings of a run of factors (`groups` of arrays of `weights` wires) stacked in
    an order, on the left and in a rearrangement `after` it, as `order._restack` counts."""
    def cost(stacking: Sequence[int]) -> int:
        drawn = order._arrays_in_order(groups, stacking)
        position = {a: q for q, a in enumerate(drawn)}
        return (order.crossings_of(drawn, weights)
                + order.crossings_of([position[a] for a in after], [weights[a] for a in drawn]))
    return cost


def test_exact_stacking_order_is_the_first_of_least_cost_among_every_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The dynamic programme over sets of factors picks the order trying all of them would
    (the first, lexicographically, of the least crossings), without trying them, for
    rearrangements round runs of factors of random sizes, copies and dropped arrays among
    them; a cost that is not a sum over pairs of factors is searched over every order."""
    generator = random.Random(11)
    cases: list[tuple[int, Callable[[Sequence[int]], int], tuple[int, ...]]] = []
    for _ in range(30):
        count = generator.randint(2, 6)
        groups = order._groups([generator.randint(1, 3) for _ in range(count)])
        arrays = sum(len(g) for g in groups)
        weights = [generator.randint(1, 3) for _ in range(arrays)]
        after = [generator.randrange(arrays) for _ in range(generator.randint(1, arrays + 2))]
        cost = _crossings_round(groups, weights, after)
        cases.append((count, cost, _first_least(count, cost)))

    def uneven(stacking: Sequence[int]) -> int:  # not a sum over pairs of factors
        return (stacking.index(0) - 2) ** 2 * (stacking.index(1) + 1) + stacking.index(2)

    expected_uneven = _first_least(5, uneven)
    assert order._best_order(5, uneven) == expected_uneven

    def refused(*_: object) -> None:
        raise AssertionError("every order tried")

    monkeypatch.setattr(order, "permutations", refused)
    for count, cost, expected in cases:
        assert order._best_order(count, cost) == expected
    assert any(expected != tuple(range(count)) for count, _, expected in cases)
