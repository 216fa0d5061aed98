"""Fewer crossings round an operation: where a contraction's cups sit among its tiling wires,
which tiling wires pass under a box that has parameters hanging from it, the order of a
learned operand's wires on its card, and on which side of the inputs a parameter added or
multiplied in is drawn. Counted on the geometry the way `bench/layout.py` counts them; each
case is compared with the rule switched off where the rule is one function, and with the
fewest crossings the drawing allows."""

from __future__ import annotations

import importlib.util
from itertools import pairwise
from pathlib import Path

import pytest
from ncd.renderers import diagram
from ncd.renderers.geometry import Box, Circle, Diagram, Text
from ncd.renderers.geometry import Path as WirePath
from ncd.renderers.layout import broadcast

import ncd
from ncd import ir

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_layout", ROOT / "bench" / "layout.py")
assert _spec is not None and _spec.loader is not None
BENCH = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(BENCH)


def count(d: Diagram) -> int:
    """Crossings as `bench/layout.py` counts them."""
    paths = [item for item in d.items if isinstance(item, WirePath) and item.wire is not None
             and item.role in BENCH.WIRE_ROLES]
    dots = [(item.cx, item.cy) for item in d.items
            if isinstance(item, Circle) and item.r <= BENCH.DOT_TOLERANCE
            and item.fill is not None]
    return int(BENCH.crossings(paths, dots))

SOURCE = """\
axis x, b, p
axis y = 3, k = 4, c = 5, o = 6, u = 3

def contract(A: R[x, y], V: R[y, k]) -> R[x, k] {
    O[x, k] = sum(y) A[x, y] * V[y, k]
    return O
}

def mapped(X: R[b, c, p, x]) -> R[b, o, p, x] {
    return linear[c -> o, bias](X, W, B)
}

def depthwise(X: R[c, p, u]) -> R[c, p] {
    param K: R[c, u] = kaiming
    D[c, p] = sum(u) X[c, p, u] * K[c, u]
    return D
}

def biased(X: R[c, y, x]) -> R[c, y, x] {
    param G: R[c] = zeros
    return X + G
}

def conv(X: R[p, y, k, x, u]) -> R[c, y, x] {
    param W: R[u, k, p, c] = kaiming
    O[c, y, x] = sum(p, k, u) X[p, y, k, x, u] * W[u, k, p, c]
    return O
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> ir.Program:
    path: Path = tmp_path_factory.mktemp("crossings") / "crossings.ncd"
    path.write_text(SOURCE)
    return ncd.load(str(path)).ir


def labels(d: Diagram) -> list[str]:
    return sorted(str(t.label) for t in d.items if isinstance(t, Text))


def test_cups_sit_between_the_tiling_wires_they_would_cross(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    # A[x, y] V[y, k]: with the cup of y under the band rows x and k, k climbs over both of
    # its wires; between x and k, the cup closes to the left and nothing crosses.
    chosen = diagram(program, "contract")
    with monkeypatch.context() as patch:
        patch.setattr(broadcast, "cups_position", lambda *args: None)
        under = diagram(program, "contract")
    assert count(under) == 2
    assert count(chosen) == 0
    assert chosen.validate() == []
    assert labels(chosen) == labels(under)


def test_tiling_wires_pass_under_a_box_and_the_parameters_hanging_from_it(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    # linear[c -> o, bias] on [b, c, p, x]: p and x climbing over the box into the band
    # cross c on the way in and o on the way out; under the box (and its bias's name) they
    # run straight.
    chosen = diagram(program, "mapped")
    with monkeypatch.context() as patch:
        patch.setattr(broadcast, "band_split", lambda left, right, ib, ob, n: n)
        above = diagram(program, "mapped")
    assert count(above) == 4
    assert count(chosen) == 0
    assert chosen.validate() == []
    assert labels(chosen) == labels(above)


def test_a_card_wire_joining_an_input_band_row_leaves_the_card_above_its_cups(
        program: ir.Program) -> None:
    # X[c, p, u] K[c, u]: K's c joins the band row of X's c. Leaving the card under its u
    # wire it crosses the cup of u as well as p and X's u; above it, only p and X's u.
    chosen = diagram(program, "depthwise")
    card = next(b for b in chosen.boxes if b.kind == "parameter")
    name_of = {t.wire: "".join(run.text for run in t.label.runs) for t in chosen.items
               if isinstance(t, Text) and t.wire is not None}
    assert [name_of[port.wire] for port in sorted(card.ports, key=lambda port: port.y)] \
        == ["c", "u"]
    assert count(chosen) == 2  # p and X's u
    assert chosen.validate() == []


def test_a_parameter_added_to_the_top_wires_is_drawn_above_the_inputs(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    # X[c, y, x] + G[c]: from under the bundle G's c climbs over x and y to reach c; from
    # above, it joins c crossing nothing. The mark sits between the card and the inputs.
    chosen = diagram(program, "biased")
    with monkeypatch.context() as patch:
        patch.setattr(broadcast, "_card_above", lambda *args: False)
        under = diagram(program, "biased")
    assert count(under) >= 1
    assert count(chosen) == 0
    assert chosen.validate() == []
    card = next(b for b in chosen.boxes if b.kind == "parameter")
    card_under = next(b for b in under.boxes if b.kind == "parameter")
    def top_input(d: Diagram) -> float:  # the highest wire entering at the left edge
        return min(item.start[1] for item in d.items if isinstance(item, WirePath)
                   and item.role == "axis" and item.start[0] == 0.0)

    assert card.y + card.height < top_input(chosen)
    assert card_under.y > top_input(under)
    assert labels(chosen) == labels(under)


def test_a_kernel_whose_cups_nest_from_above_is_drawn_above_the_inputs(
        program: ir.Program, monkeypatch: pytest.MonkeyPatch) -> None:
    # X[p, y, k, x, u] W[u, k, p, c] -> O[c, y, x], a convolution's shape: under the inputs
    # the cups of p and k enclose y and x (3 crossings) and W's c climbs over y and x to the
    # top of the result (2); above them the cups enclose the same wires and c starts on top.
    chosen = diagram(program, "conv")
    with monkeypatch.context() as patch:
        patch.setattr(broadcast._Operands, "cost", lambda self, right, out_band:
                      0 if not self.card_above else 1)
        under = diagram(program, "conv")
    assert (count(under), count(chosen)) == (5, 3)
    assert chosen.validate() == []
    card = next(b for b in chosen.boxes if b.kind == "parameter")
    inputs_top = min(item.start[1] for item in chosen.items if isinstance(item, WirePath)
                     and item.role == "axis" and item.start[0] == 0.0)
    assert card.y + card.height < inputs_top
    assert set(labels(chosen)) == set(labels(under))


def test_the_choices_are_deterministic(program: ir.Program) -> None:
    from ncd.renderers.svg import render

    for name in ("contract", "mapped", "depthwise", "biased", "conv"):
        assert render(diagram(program, name)) == render(diagram(program, name))


def test_each_card_is_a_box_with_its_ports(program: ir.Program) -> None:
    for name in ("depthwise", "biased"):
        cards = [b for b in diagram(program, name).boxes if b.kind == "parameter"]
        assert cards and all(isinstance(b, Box) and len(b.ports) == b.expected_ports
                             for b in cards)


THREE_COPIES = """\
axis x, m = 4

def three(X: R[x, m]) -> (R[x, m], R[x, m], R[x, m]) {
    Y = relu(X)
    return Y, Y, Y
}
"""


def test_three_copies_of_a_bundle_are_drawn_as_a_cascade(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three copies of [x, m] fanned from one dot per wire: m's first copy crosses the second
    # and third copies of x, its second copy the third (3); copied in two and the second
    # copied again, each copy crosses once (2).
    from ncd.renderers.layout import order, terms

    path = tmp_path / "three.ncd"
    path.write_text(THREE_COPIES)
    program = ncd.load(str(path)).ir
    body = program.definition("three").body
    assert isinstance(body, ir.Composed)
    split = order.cascaded_copies(body.terms)
    assert len(split) == len(body.terms) + 1  # the copy in three: a copy in two, then one more
    for first, second in pairwise(split):
        assert first.cod == second.dom
    chosen = diagram(program, "three")
    with monkeypatch.context() as patch:
        patch.setattr(terms, "drawing_order", lambda ts: list(ts))
        fanned = diagram(program, "three")
    assert chosen.validate() == []
    assert set(labels(chosen)) == set(labels(fanned))
    assert (count(fanned), count(chosen)) == (3, 2)


CENTRED = """\
axis b, n = 4

def centred(X: R[b, n]) -> R[b, n] {
    M = mean[b](X)
    return X - M
}
"""


def test_the_operands_of_a_sum_are_stacked_to_reach_its_rows_uncrossed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # X - mean[b](X): the mean, [n], stacked over X, [b, n], has its n cross X's b on the way
    # to the sum's rows (b over n); X over the mean, nothing crosses there.
    from ncd.renderers.layout import order

    path = tmp_path / "centred.ncd"
    path.write_text(CENTRED)
    program = ncd.load(str(path)).ir
    chosen = diagram(program, "centred")
    with monkeypatch.context() as patch:
        patch.setattr(order, "_commutative_junction", lambda *args: None)
        kept = diagram(program, "centred")
    assert count(kept) == count(chosen) + 1
    assert chosen.validate() == []
    # the same operations on wires of the same names
    assert sorted(b.kind for b in chosen.boxes) == sorted(b.kind for b in kept.boxes)
    assert {str(t.label) for t in chosen.items if isinstance(t, Text) and t.role == "axis"} \
        == {str(t.label) for t in kept.items if isinstance(t, Text) and t.role == "axis"}


class _Polyline:
    """A wire as the counter reads it: its points and its wire id."""

    def __init__(self, points: list[tuple[float, float]], wire: int) -> None:
        self.points, self.wire = points, wire

    def polyline(self) -> list[tuple[float, float]]:
        return self.points


@pytest.mark.parametrize(("first", "second", "expected"), [
    ([(0, 0), (10, 10)], [(0, 10), (10, 0)], 1),  # inside a segment of each
    ([(0, 0), (5, 5), (10, 10)], [(0, 10), (5, 5), (10, 0)], 1),  # a swap through one vertex
    ([(0, 0), (5, 5), (10, 0)], [(0, 10), (5, 5), (10, 10)], 0),  # touch and turn back
    ([(0, 5), (10, 5)], [(5, 0), (5, 5), (6, 10)], 1),  # a vertex on a segment, passing over
    ([(0, 5), (10, 5)], [(5, 0), (5, 5), (6, 0)], 0),  # a vertex on a segment, turning back
    ([(0, 0), (10, 0)], [(10, 0), (20, 5)], 0),  # wires that meet at their ends
])
def test_the_counter_sees_crossings_at_shared_points(
        first: list[tuple[float, float]], second: list[tuple[float, float]],
        expected: int) -> None:
    """Two curves swapped symmetrically share their middle sample: a crossing at a vertex
    of both is still a crossing, and a touch is not."""
    assert BENCH.crossings([_Polyline(first, 1), _Polyline(second, 2)]) == expected
