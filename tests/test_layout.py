"""Layout: the rules of the visual grammar, checked on the geometry (numbers, not pictures).

Every diagram the samples and the gallery can produce must pass `Diagram.validate()` under
several option sets; the structural tests check that the layout mirrors the term (composition
left to right, products stacked, tiling wires above the box, cups for contractions, ...); and
`validate()` itself is shown to catch each kind of broken figure.
"""

from __future__ import annotations

import itertools
import sys
from math import copysign
from pathlib import Path

import pytest
from gallery_cases import gallery_definitions, gallery_diagram
from ncd.renderers import RenderOptions, diagram
from ncd.renderers.geometry import (
    Anchor,
    Box,
    Circle,
    Diagram,
    PortPoint,
    Rect,
    Stroke,
    Text,
)
from ncd.renderers.geometry import (
    Path as WirePath,
)
from ncd.renderers.glyphs import GLYPHS, THEMES, block_fill
from ncd.renderers.layout import LABEL_SIZE, PITCH
from ncd.renderers.layout.routing import best_offset
from ncd.renderers.text import Label

import ncd
from ncd import ir

sys.path.insert(0, str(Path(__file__).parent))
import ir_samples

ROOT = Path(__file__).resolve().parent.parent

OPTION_SETS = [
    RenderOptions(),
    RenderOptions(wire_labels="sizes", show_params=True),
    RenderOptions(wire_labels="both", expand_calls=True, theme="dark"),
    RenderOptions(collapse_depth=0, theme="print"),
    RenderOptions(collapse_depth=1, expand_calls=True),
]


@pytest.fixture(scope="module")
def samples() -> ir.Program:
    return ir_samples.program()


def boxes_of(d: Diagram, kind: str) -> list[Box]:
    return [b for b in d.boxes if b.kind == kind]


def texts(d: Diagram) -> list[str]:
    return [item.label.plain_text() for item in d.items if isinstance(item, Text)]


# --------------------------------------------------------------------------------------
# The glyph table
# --------------------------------------------------------------------------------------


def test_every_operator_kind_has_a_glyph() -> None:
    assert set(GLYPHS) == set(ir.OPERATOR_TYPES)


# --------------------------------------------------------------------------------------
# Every diagram validates
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ir_samples.SAMPLES)
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: f"{o.wire_labels}-{o.theme}-"
                         f"c{o.collapse_depth}-e{int(o.expand_calls)}-p{int(o.show_params)}")
def test_sample_diagrams_validate(samples: ir.Program, name: str,
                                  options: RenderOptions) -> None:
    d = diagram(samples, name, options)
    assert d.validate() == []
    assert d.width > 0 and d.height > 0


@pytest.mark.parametrize("path,name", gallery_definitions(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
@pytest.mark.parametrize("options", OPTION_SETS[:4], ids=lambda o: f"{o.wire_labels}-"
                         f"c{o.collapse_depth}-e{int(o.expand_calls)}")
def test_gallery_diagrams_validate(path: Path, name: str, options: RenderOptions) -> None:
    assert gallery_diagram(path, name, options).validate() == []


# --------------------------------------------------------------------------------------
# The layout mirrors the term
# --------------------------------------------------------------------------------------


def test_broadcast_box_spans_targets_and_tiling_wire_passes_above(samples: ir.Program) -> None:
    d = diagram(samples, "linear")
    (card,) = boxes_of(d, "linear")
    # One port in (m), two out (h, k): the target wires only.
    assert sorted(p.side for p in card.ports) == ["left", "right", "right"]
    # The tiling wire x runs straight over the card, entirely above it.
    straight_over = [p for p in d.items if isinstance(p, WirePath) and p.role == "axis"
                     and abs(p.start[1] - p.end[1]) < 0.01
                     and p.start[0] <= card.x and p.end[0] >= card.x + card.width]
    assert straight_over and all(p.start[1] < card.y for p in straight_over)
    assert "L_q" in texts(d)


def test_boxes_grow_to_fit_their_captions(samples: ir.Program) -> None:
    d = diagram(samples, "small_ops")
    captions = [item for item in d.items if isinstance(item, Text) and item.owner is not None]
    assert captions
    for item in captions:
        box = next(b for b in d.boxes if b.id == item.owner)
        assert box.x <= item.x and item.x + item.width <= box.x + box.width


def test_composition_goes_left_to_right(samples: ir.Program) -> None:
    d = diagram(samples, "attention", RenderOptions(width=None))  # on one row: no budget
    order = [b.kind for b in sorted(d.boxes, key=lambda b: b.x)]
    assert order.index("mask") < order.index("softmax")
    linears = sorted(boxes_of(d, "linear"), key=lambda b: b.x)
    assert linears[-1].x > max(b.x for b in boxes_of(d, "softmax"))  # L_o is last


def test_product_stacks_and_separates_with_a_dashed_line(samples: ir.Program) -> None:
    d = diagram(samples, "attention")
    q, k, v = sorted(sorted(boxes_of(d, "linear"), key=lambda b: b.x)[:3], key=lambda b: b.y)
    assert abs(q.x - k.x) < 0.01 and abs(k.x - v.x) < 0.01  # one column: one product layer
    assert q.y + q.height < k.y and k.y + k.height < v.y
    separators = [p for p in d.items if isinstance(p, WirePath) and p.role == "sep"]
    assert separators and all(p.stroke is not None and p.stroke.dash for p in separators)
    between = [p for p in separators if q.y + q.height < p.start[1] < k.y and p.start[0] < q.x]
    assert between


def test_einsum_draws_cups_not_boxes(samples: ir.Program) -> None:
    d = diagram(samples, "attention")
    assert not boxes_of(d, "einsum")
    # A cup: one wire path that turns back (its end is left of its furthest point).
    cups = [p for p in d.items if isinstance(p, WirePath) and p.role == "axis"
            and abs(p.start[0] - p.end[0]) < 0.01 and abs(p.start[1] - p.end[1]) > PITCH / 2]
    assert len(cups) == 2  # k in the scores, y in the weighted sum


def test_contraction_of_one_operand_ends_in_a_dot(samples: ir.Program) -> None:
    d = diagram(samples, "contractions")
    dots = {(round(c.cx), round(c.cy)) for c in d.items if isinstance(c, Circle)}
    ends = [p.end for p in d.items if isinstance(p, WirePath) and p.role == "axis"]
    assert any((round(x), round(y)) in dots for x, y in ends)
    assert boxes_of(d, "parameter")  # the learned operand W is a card


def test_copy_forks_at_dots_and_delete_ends_in_a_bar(samples: ir.Program) -> None:
    d = diagram(samples, "attention")
    dots = [c for c in d.items if isinstance(c, Circle)]
    leftmost = min(c.cx for c in dots)
    assert sum(1 for c in dots if abs(c.cx - leftmost) < 0.01) == 2  # x and m of X copied
    deleted = diagram(samples, "delete")
    bars = [p for p in deleted.items if isinstance(p, WirePath) and p.wire is None
            and abs(p.start[0] - p.end[0]) < 0.01]
    assert len(bars) == 2  # the two wires of the deleted [x, m]


def test_reindexing_hexagon_carries_the_index_map(samples: ir.Program) -> None:
    d = diagram(samples, "reindexings")
    assert "2p + w" in texts(d)
    (hexagon,) = boxes_of(d, "reindexing")
    assert len(hexagon.ports) == 3  # xs in; p, w out
    assert boxes_of(d, "element")  # the fixed index 2 is a pentagon
    assert "2" in texts(d)


def test_block_frames_its_body_with_title_brackets_and_repeat(samples: ir.Program) -> None:
    d = diagram(samples, "layer")
    frames = [r for r in d.items if isinstance(r, Rect) and r.layer == 0]
    titles = texts(d)
    assert {"Transformer layer", "Attention", "Feed forward", "\u00d76"} <= set(titles)
    outer = max(frames, key=lambda r: r.width * r.height)
    # every box is inside the frame but the final norm, which is outside it: right of it,
    # or on a row of its own under it where beside it the drawing would overflow its budget
    def framed(box: Box) -> bool:
        return outer.x < box.x and box.x + box.width < outer.x + outer.width \
            and outer.y < box.y and box.y + box.height < outer.y + outer.height
    (final_norm,) = [b for b in d.boxes if not framed(b)]
    assert final_norm.kind == "norm"
    assert final_norm.x > outer.x + outer.width or final_norm.y > outer.y + outer.height
    thick = [p for p in d.items if isinstance(p, WirePath) and p.stroke is not None
             and p.stroke.width > 2.5 and p.wire is None]
    assert len(thick) == 2  # [ and ]
    assert block_fill(THEMES["light"], 0, "purple") in {r.fill for r in frames}


def test_collapse_depth_turns_deep_blocks_into_boxes(samples: ir.Program) -> None:
    assert [b.kind for b in diagram(samples, "layer", RenderOptions(collapse_depth=0)).boxes
            if b.kind == "block"] == ["block"]
    one = diagram(samples, "layer", RenderOptions(collapse_depth=1))
    assert len(boxes_of(one, "block")) == 2  # Attention and Feed forward
    assert "Transformer layer" in texts(one)
    full = diagram(samples, "layer")
    assert not boxes_of(full, "block")
    nested = diagram(samples, "nested", RenderOptions(collapse_depth=1))
    assert "Middle \u00d72" in texts(nested)


def test_expand_calls_draws_the_callee_in_place(samples: ir.Program) -> None:
    boxed = diagram(samples, "calls")
    assert [b.kind for b in boxed.boxes].count("call") == 1 and "inner" in texts(boxed)
    expanded = diagram(samples, "calls", RenderOptions(expand_calls=True))
    assert not boxes_of(expanded, "call")
    assert "inner" in texts(expanded) and boxes_of(expanded, "linear")


def test_batched_call_runs_its_batch_axis_over_the_box(samples: ir.Program) -> None:
    d = diagram(samples, "batched_call")
    (box,) = boxes_of(d, "call")
    assert len(box.ports) == 4  # x, m in and out; b is a tiling wire
    assert "b" in texts(d)


def test_datatype_wires_show_for_naturals_and_booleans(samples: ir.Program) -> None:
    d = diagram(samples, "embedding")
    thin = [p for p in d.items if isinstance(p, WirePath) and p.role == "dtype"]
    assert thin and all(p.stroke is not None and p.stroke.width < 1.0 for p in thin)
    assert any(t.startswith("\u2115") for t in texts(d))
    masked = diagram(samples, "mask_by_array")
    (mask,) = boxes_of(masked, "mask")
    assert len(mask.ports) == 2 + 2 + 1 + 2  # x, y of both inputs, B's datatype, x, y out


def test_wire_labels_names_sizes_both(samples: ir.Program) -> None:
    assert "m" in texts(diagram(samples, "linear"))
    sizes = texts(diagram(samples, "linear", RenderOptions(wire_labels="sizes")))
    assert "512" in sizes and "m" not in sizes and "x" in sizes  # x has no fixed size
    assert "m = 512" in texts(diagram(samples, "linear", RenderOptions(wire_labels="both")))


def test_show_params_draws_parameter_wires(samples: ir.Program) -> None:
    plain = diagram(samples, "linear")
    shown = diagram(samples, "linear", RenderOptions(show_params=True))
    assert not [p for p in plain.items if isinstance(p, WirePath) and p.role == "param"]
    assert [p for p in shown.items if isinstance(p, WirePath) and p.role == "param"]
    assert "W_q" in texts(shown)


def test_labels_sit_above_their_wires_between_neighbours(samples: ir.Program) -> None:
    d = diagram(samples, "attention")
    labels = [item for item in d.items if isinstance(item, Text) and item.role == "axis"]
    assert labels
    for item in labels:
        assert item.ascent + item.descent < PITCH  # fits between two wires
        assert item.size == LABEL_SIZE


def test_layout_is_deterministic(samples: ir.Program) -> None:
    assert diagram(samples, "layer") == diagram(samples, "layer")


# --------------------------------------------------------------------------------------
# validate() catches broken figures
# --------------------------------------------------------------------------------------


def _label(x: float, y: float, text: str = "x", owner: int | None = None,
           wire: int | None = None) -> Text:
    label = Label.axis(text)
    box = label.measure(11.0)
    return Text(label, x, y, 11.0, "#000000", box.width, box.ascent, box.descent, owner,
                wire=wire)


def _wire(wire: int, start: tuple[float, float], end: tuple[float, float]) -> WirePath:
    return WirePath(start, (end,), Stroke("#000000", 1.3), wire=wire, role="axis")


def _box(x: float = 40.0, y: float = 20.0, ports: tuple[PortPoint, ...] = (),
         expected: int = 0) -> Box:
    return Box(1, x, y, 20.0, 20.0, "linear", ports, expected)


def _diagram(items: list, boxes: list[Box] = (), anchors: list[Anchor] = ()) -> Diagram:
    return Diagram(100.0, 60.0, None, tuple(items), tuple(boxes), tuple(anchors))


def test_validate_accepts_a_correct_figure() -> None:
    box = _box(ports=(PortPoint(40.0, 30.0, 1, "left"), PortPoint(60.0, 30.0, 2, "right")),
               expected=2)
    d = _diagram([_wire(1, (0.0, 30.0), (40.0, 30.0)), _wire(2, (60.0, 30.0), (100.0, 30.0)),
                  _label(5.0, 25.0, wire=1), _label(70.0, 25.0, wire=2)], [box])
    assert d.validate() == []


def test_validate_reports_overlapping_labels() -> None:
    problems = _diagram([_label(10.0, 20.0), _label(12.0, 21.0, "y")]).validate()
    assert any("overlaps label" in p for p in problems)


def test_validate_reports_a_label_on_a_box_but_not_its_own_caption() -> None:
    assert any("overlaps the linear box" in p
               for p in _diagram([_label(45.0, 32.0)], [_box()]).validate())
    assert _diagram([_label(45.0, 32.0, owner=1)], [_box()]).validate() == []


def test_validate_reports_a_wire_through_a_box() -> None:
    problems = _diagram([_wire(1, (0.0, 30.0), (100.0, 30.0))], [_box()]).validate()
    assert any("crosses the linear box" in p for p in problems)


def test_validate_reports_a_wire_ending_in_the_open_unless_anchored() -> None:
    loose = [_wire(1, (0.0, 10.0), (50.0, 10.0))]
    assert any("ends in the open" in p for p in _diagram(loose).validate())
    assert _diagram(loose, anchors=[Anchor(50.0, 10.0)]).validate() == []
    joined = [_wire(1, (0.0, 10.0), (50.0, 10.0)), _wire(1, (50.0, 10.0), (100.0, 40.0))]
    assert _diagram(joined).validate() == []


def test_validate_reports_missing_ports_and_portless_wires() -> None:
    box = _box(ports=(PortPoint(40.0, 30.0, 1, "left"),), expected=2)
    problems = _diagram([], [box]).validate()
    assert any("has 1 ports, its node needs 2" in p for p in problems)
    assert any("has no wire" in p for p in problems)


def test_validate_reports_items_outside_the_canvas() -> None:
    assert any("outside the canvas" in p
               for p in _diagram([_wire(1, (0.0, 10.0), (140.0, 10.0))]).validate())


# --------------------------------------------------------------------------------------
# Polish: level chains, inline functions, scan loops, compact contractions
# --------------------------------------------------------------------------------------


def _gallery(name: str) -> ir.Program:
    import ncd

    return ncd.load(str(ROOT / "gallery" / f"{name}.ncd")).ir


def _straight(path: WirePath) -> bool:
    points = path.polyline()
    return all(abs(y - points[0][1]) < 0.01 for _, y in points)


def test_function_of_the_datatype_sits_just_under_its_bundle() -> None:
    d = diagram(_gallery("mlp"), "mlp")
    (box,) = boxes_of(d, "elementwise")
    # Its array's last wire runs straight over the box, just above it (not a pitch away).
    over = [p.start[1] for p in d.items if isinstance(p, WirePath) and p.role == "axis"
            and _straight(p) and p.start[0] <= box.x and p.end[0] >= box.x + box.width
            and p.start[1] < box.y]
    assert over and 0 < box.y - max(over) <= 6.0
    assert box.height < PITCH
    # The box sits on a datatype wire, entered and left with arrowheads.
    assert sorted(p.side for p in box.ports) == ["left", "right"]
    dtype = [p for p in d.items if isinstance(p, WirePath) and p.role == "dtype"]
    centre = box.y + box.height / 2
    assert sum(1 for p in dtype if abs(p.start[1] - centre) < 0.01) == 2


def test_stacked_functions_stay_on_the_pitch_grid() -> None:
    d = diagram(_gallery("lstm"), "lstm_cell")
    gates = boxes_of(d, "elementwise")
    by_x: dict[float, list[float]] = {}
    for box in gates:
        by_x.setdefault(round(box.x, 1), []).append(box.y)
    column = sorted(max(by_x.values(), key=len))
    assert len(column) == 4  # sigma, sigma, tanh, sigma of the four gates, one above another
    steps = {round(b - a, 2) for a, b in itertools.pairwise(column)}
    assert steps == {2 * PITCH}


def test_scan_feeds_its_carried_states_back_over_the_step() -> None:
    program = _gallery("lstm")
    d = diagram(program, "lstm")
    (frame,) = [r for r in d.items if isinstance(r, Rect) and r.stroke is not None
                and r.stroke.dash]
    anchors = {(round(a.x, 1), round(a.y, 1)) for a in d.anchors}
    loops = [p for p in d.items if isinstance(p, WirePath) and p.role == "dtype"
             and p.start[0] > frame.x + frame.width and p.end[0] < frame.x
             and min(y for _, y in p.polyline()) < frame.y]
    scan = next(t for t in ir.walk(program.definition("lstm").body) if isinstance(t, ir.Scan))
    assert len(loops) == scan.carries == 2
    for loop in loops:  # from a dot on the state output to a dot on the state input
        assert (round(loop.start[0], 1), round(loop.start[1], 1)) in anchors
        assert (round(loop.end[0], 1), round(loop.end[1], 1)) in anchors
    # The scanned axis of the sequences runs under the frame as one straight tiling wire.
    under = [p for p in d.items if isinstance(p, WirePath) and p.role == "axis"
             and _straight(p) and p.start[1] > frame.y + frame.height
             and p.start[0] <= frame.x and p.end[0] >= frame.x + frame.width]
    assert len(under) == 1


def test_learned_operand_of_a_contraction_needs_no_detour() -> None:
    d = diagram(_gallery("conv1d"), "conv1d")
    (card,) = boxes_of(d, "parameter")
    ports = {(round(p.x, 1), round(p.y, 1)) for p in card.ports}
    from_card = [p for p in d.items if isinstance(p, WirePath)
                 and (round(p.start[0], 1), round(p.start[1], 1)) in ports]
    assert len(from_card) == 3
    assert all(_straight(p) for p in from_card)  # straight into the cups and the band


def test_residual_chain_stays_level() -> None:
    # On one row (no width budget): wrapped, the residual line continues on the next row.
    d = diagram(_gallery("transformer"), "transformer",
                RenderOptions(expand_calls=True, width=None))
    wires = [p for p in d.items if isinstance(p, WirePath) and p.role == "axis"]
    left = sorted(p.start[1] for p in wires if p.start[0] < 0.01)
    right = sorted(p.end[1] for p in wires if p.end[0] > d.width - 0.01)
    assert left and left == right


def test_scalar_operands_run_into_the_mark() -> None:
    """A sum or product of scalars (`R[]`): their datatype wires meet and run on into the
    mark, ending nowhere in the open."""
    program = ncd.load("def f(A: R[], B: R[]) -> R[] {\n    return A * B\n}\n"
                       "def g(A: R[]) -> R[] {\n    return A + A\n}\n").ir
    for name in ("f", "g"):
        assert diagram(program, name).validate() == []


SCAN_OF_TWO_SEQUENCES = """\
axis t
axis n = 4, a = 2, c = 3, d = 5

def cell(H: R[n], X: R[a, c, d], V: R[n]) -> (R[n], R[a, c, d], R[n]) {
    H2 = tanh(H + V)
    return H2, relu(X), H2
}

def run(H0: R[n], X: R[t, a, c, d], V: R[t, n]) -> (Last: R[n], Y: R[t, a, c, d], Z: R[t, n]) {
    Last, Y, Z = scan[t](cell, H0, X, V)
    return Last, Y, Z
}
"""


def test_separator_level_across_a_fan_of_the_scanned_axis_stops_at_it() -> None:
    """The scanned axis leaves the wire under the frame for the `t` of each sequence, fanning
    up past the separator between `X` (or `Y`) and `V` (or `Z`), which the routing leaves level
    (the three wires of the sequence above it run straight). It stops at the fan's edges, as
    a separator that moves does, instead of running through the fan's wires."""
    d = diagram(ncd.load(SCAN_OF_TWO_SEQUENCES).ir, "run")
    assert d.validate() == []
    # Still drawn between the arrays at both edges of the diagram: nothing was dropped.
    separators = [p for p in d.items if isinstance(p, WirePath) and p.role == "sep"]
    heights = [p.start[1] for p in separators if p.start[0] < 0.01]
    assert len(heights) == 2
    lower = max(heights)
    assert any(abs(p.end[1] - lower) < 0.01 and p.end[0] > d.width - 0.01 for p in separators)


def test_best_offset_of_one_shift_keeps_the_sign_of_the_first_wire_that_counts() -> None:
    """Where every wire moves by the same rounded shift, that shift is taken; of a zero, the
    sign the first wire that counts gives it (a separator before it only breaks ties)."""
    assert best_offset([2.004, 1.996, 2.0]) == 2.0
    assert copysign(1.0, best_offset([-0.001, 0.001])) == -1.0
    assert copysign(1.0, best_offset([-0.001, 0.001], [0.0, 1.0])) == 1.0
    assert copysign(1.0, best_offset([-0.001, 0.001], [0.0, 0.0])) == -1.0
    assert best_offset([0.0, 5.0, 5.0], [1.0, 1.0, 0.0]) == 0.0  # ties: the topmost wire
