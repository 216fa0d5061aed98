"""Diagrams that fit the page: the small wrongs of the renderer, each fixed and each caught by
`Diagram.validate()`, checked on the geometry (numbers, not pictures).

Each wrong has a test on a real diagram that failed before the fix, and a test that
`validate()` reports a figure with that wrong (a hand-built geometry).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from ncd.renderers import RenderOptions, diagram
from ncd.renderers.geometry import (
    BOX_GAP,
    Anchor,
    Box,
    Circle,
    Diagram,
    Loop,
    PortPoint,
    Stroke,
    Text,
    _crossings,
)
from ncd.renderers.geometry import (
    Path as WirePath,
)
from ncd.renderers.text import Label

import ncd
from ncd import ir

ROOT = Path(__file__).resolve().parent.parent

SOURCE = """\
axis x, y = x
axis i = 4, j = 5, o = 3, e = 8, v = 6, u = v

def two_cards(X: R[x, i, j]) -> R[x, o] {
    param U: R[i, o]
    param V: R[j, o]
    Y[x, o] = sum(i, j) X[x, i, j] * U[i, o] * V[j, o]
    return Y
}

def scaled(Q: R[x, e]) -> R[x, y] {
    param K: R[y, e]
    S[x, y] = sum(e) Q[x, e] * K[y, e] / sqrt(e)
    return S
}

def normalised(S: R[x, y]) -> (R[x, y], R[x, y]) {
    return softmax[y](S), logsoftmax[y](S)
}

def banded(S: R[x, y]) -> R[x, y] {
    return mask[x - y < 4, fill=0](causal[x, y](S))
}

def renamed(X: R[x, v]) -> R[u, x] {
    Y[u, x] = X[x, u]
    return Y
}

def transposed(X: R[x, v]) -> R[v, x] {
    Y[v, x] = X[x, v]
    return Y
}

def scaled_by(X: R[x, e]) -> R[x, e] {
    param g: R[e]
    return X * g
}

def shifted_by(X: R[x, e]) -> R[x, e] {
    param bias: R[e]
    return X + bias
}

def affine(X: R[x, e]) -> R[x, o] {
    return linear[e -> o, bias](X, W, b)
}

def residual(X: R[x, e]) -> R[x, e] {
    param W: R[e, o]
    param V: R[o, e]
    H[x, o] = sum(e) X[x, e] * W[e, o]
    Y[x, e] = sum(o) H[x, o] * V[o, e]
    X = X + Y
    return X
}

def gated(X: R[x, e], G: R[x, e]) -> R[x, e] {
    return X * G
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> ir.Program:
    path = tmp_path_factory.mktemp("quality") / "wrongs.ncd"
    path.write_text(SOURCE)
    return ncd.load(str(path)).ir


def _texts(d: Diagram) -> list[Text]:
    return [item for item in d.items if isinstance(item, Text)]


def _wires(d: Diagram) -> list[WirePath]:
    return [item for item in d.items if isinstance(item, WirePath) and item.wire is not None]


# --------------------------------------------------------------------------------------
# Parameter cards of one contraction keep a gap, and their wires are named
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [RenderOptions(), RenderOptions(wire_labels="both")])
def test_two_cards_of_one_contraction_do_not_touch(program: ir.Program,
                                                   options: RenderOptions) -> None:
    d = diagram(program, "two_cards", options)
    cards = sorted((b for b in d.boxes if b.kind == "parameter"), key=lambda b: b.y)
    assert len(cards) == 2
    upper, lower = cards
    assert lower.y - (upper.y + upper.height) >= BOX_GAP
    assert d.validate() == []


@pytest.mark.parametrize("name", ["two_cards", "scaled"])
def test_every_wire_leaving_a_card_is_named_beside_it(program: ir.Program, name: str) -> None:
    d = diagram(program, name)
    cards = [b for b in d.boxes if b.kind == "parameter"]
    assert cards
    texts = _texts(d)
    names = []
    for card in cards:
        for port in card.ports:
            # A label just right of the card, just above the wire, naming an axis.
            near = [t for t in texts if t.owner is None and t.wire == port.wire
                    and 0 <= t.x - port.x <= 8.0 and 0 < port.y - t.y <= 8.0]
            assert len(near) == 1, (card, port)
            names.append(near[0].label.plain_text())
    names.sort()
    expected = {"two_cards": ["i", "j", "o", "o"], "scaled": ["e", "y"]}[name]
    assert names == expected


def test_the_conv1d_kernel_names_its_wires() -> None:
    d = diagram(ncd.load(str(ROOT / "gallery" / "conv1d.ncd")).ir, "conv1d")
    (card,) = [b for b in d.boxes if b.kind == "parameter"]
    named = {t.label.plain_text() for t in _texts(d) if t.wire in {p.wire for p in card.ports}
             and t.x < card.x + card.width + 8.0}
    assert named == {"o", "c", "w"}


# --------------------------------------------------------------------------------------
# A contraction's scale sits clear of every wire
# --------------------------------------------------------------------------------------


def test_the_scale_of_a_contraction_sits_under_its_wires(program: ir.Program) -> None:
    d = diagram(program, "scaled")
    (scale,) = [t for t in _texts(d) if t.role == "caption"]
    assert scale.label.plain_text().startswith("1/")
    x0, y0, x1, y1 = scale.bbox()
    for wire in _wires(d):
        for px, py in wire.polyline(48):
            assert not (x0 < px < x1 and y0 < py < y1), (wire.wire, px, py)
    assert d.validate() == []


# --------------------------------------------------------------------------------------
# A scan's feedback loop spans its whole state
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_the_feedback_loop_spans_every_wire_of_its_state(name: str) -> None:
    d = diagram(ncd.load(str(ROOT / "gallery" / f"{name}.ncd")).ir, name)
    assert d.loops
    dots = {(round(c.cx, 1), round(c.cy, 1)) for c in d.items if isinstance(c, Circle)}
    for loop in d.loops:
        assert len(loop.state_in) >= 2  # the state is R[b, n]: two wires
        (path,) = [w for w in _wires(d) if w.wire == loop.wire]
        points = path.polyline()
        for x, state in ((loop.x_in, loop.state_in), (loop.x_out, loop.state_out)):
            leg = [py for px, py in points if abs(px - x) < 0.01]
            assert min(leg) <= min(state) and max(leg) >= max(state) - 0.01
            # tied to each of its wires by a dot
            assert all((round(x, 1), round(y, 1)) in dots for y in state)
    assert d.validate() == []


# --------------------------------------------------------------------------------------
# logsoftmax is not softmax; a mask shows its conditions; a renamed axis passes a rename tag
# --------------------------------------------------------------------------------------


def _captions(d: Diagram, box: Box) -> list[str]:
    return [t.label.plain_text() for t in _texts(d) if t.owner == box.id]


def test_logsoftmax_is_drawn_unlike_softmax(program: ir.Program) -> None:
    d = diagram(program, "normalised")
    boxes = sorted((b for b in d.boxes if b.kind == "softmax"), key=lambda b: b.y)
    assert len(boxes) == 2
    plain, log = boxes
    assert _captions(d, plain) == []
    assert _captions(d, log) == ["log"]
    assert d.validate() == []


def test_a_mask_shows_its_conditions_under_its_square(program: ir.Program) -> None:
    d = diagram(program, "banded")
    squares = sorted((b for b in d.boxes if b.kind == "mask"), key=lambda b: b.x)
    assert len(squares) == 2
    _causal, band = squares
    legends = [t for t in _texts(d) if t.role == "caption"]
    (legend,) = legends  # the causal triangle says x >= y by itself
    assert legend.label.plain_text().replace("\u2212", "-").replace(" ", "") == "x-y<4"
    x0, y0, x1, _ = legend.bbox()
    assert y0 >= band.y + band.height  # under the square
    assert x0 < band.x + band.width / 2 < x1  # centred on it
    assert d.validate() == []


def test_an_axis_that_changes_its_name_passes_a_rename_tag(program: ir.Program) -> None:
    d = diagram(program, "renamed")
    (tag,) = [b for b in d.boxes if b.kind == "rename"]
    sides = {port.side: port.wire for port in tag.ports}
    names = {side: sorted(t.label.plain_text() for t in _texts(d) if t.wire == wire)
             for side, wire in sides.items()}
    assert names == {"left": ["v"], "right": ["u"]}
    assert d.validate() == []


def test_a_transpose_that_keeps_the_names_draws_no_rename_tag(program: ir.Program) -> None:
    d = diagram(program, "transposed")
    assert not [b for b in d.boxes if b.kind == "rename"]
    assert d.validate() == []


# --------------------------------------------------------------------------------------
# Every operand visible: a parameter in a sum or product, the bias of a linear map
# --------------------------------------------------------------------------------------

BOTH = [RenderOptions(), RenderOptions(show_params=True)]


@pytest.mark.parametrize("options", BOTH, ids=["plain", "params"])
@pytest.mark.parametrize("name,param", [("scaled_by", "g"), ("shifted_by", "bias")])
def test_a_parameter_operand_of_a_junction_is_a_card_wired_into_it(
        program: ir.Program, options: RenderOptions, name: str, param: str) -> None:
    d = diagram(program, name, options)
    assert d.validate() == []
    (card,) = [b for b in d.boxes if b.kind == "parameter"]
    assert param in _captions(d, card)
    wires = _wires(d)
    by_port = {port.wire: port for port in card.ports}
    axis = [w for w in wires if w.wire in by_port and w.role == "axis"]
    sep = [w for w in wires if w.wire in by_port and w.role == "sep"]
    assert len(axis) == 1 and len(sep) == 1
    # The card's e wire joins X's e wire at a dot: a dot on a straight e wire of X.
    dots = [(c.cx, c.cy) for c in d.items if isinstance(c, Circle)]
    end_x, end_y = axis[0].end
    joined = [(x, y) for x, y in dots if abs(x - end_x) < 0.6 and abs(y - end_y) < 0.6]
    assert joined, "the card's wire ends at a dot"
    (x_dot, y_dot) = joined[0]
    assert any(w.role == "axis" and w.wire not in by_port and w.start[1] == y_dot
               and w.end[1] == y_dot and w.start[0] < x_dot < w.end[0] + 0.6 for w in wires)
    # Its separator runs on (as the junction's joint) into the mark.
    marks = [a for a in d.anchors if abs(a.y - sep[0].end[1]) < 0.6]
    assert any(0 < a.x - sep[0].end[0] <= 20.0 for a in marks)


@pytest.mark.parametrize("options", BOTH, ids=["plain", "params"])
def test_the_bias_of_a_linear_map_enters_its_card(program: ir.Program,
                                                 options: RenderOptions) -> None:
    d = diagram(program, "affine", options)
    assert d.validate() == []
    (box,) = [b for b in d.boxes if b.kind == "linear"]
    below = [port for port in box.ports if port.side == "bottom"]
    names = sorted(t.label.plain_text() for t in _texts(d) if t.role == "param")
    # Without --params only the bias (the card's L names the weight); with it, both.
    assert names == (["W", "b"] if options.show_params else ["b"])
    assert len(below) == len(names)
    for port in below:
        (wire,) = [w for w in _wires(d) if w.wire == port.wire]
        assert wire.role == "param" and wire.end == (port.x, port.y)
        assert wire.start[1] > box.y + box.height


# --------------------------------------------------------------------------------------
# Elementwise operations between arrays: the arrays meet at the mark, the separator ends on it
# --------------------------------------------------------------------------------------


def _marks(d: Diagram) -> list[tuple[float, float]]:
    """The centres of `+` marks: a horizontal and a vertical stroke crossing at their middles."""
    strokes = [p for p in d.items if isinstance(p, WirePath) and p.wire is None
               and len(p.segments) == 1 and len(p.segments[0]) == 2]
    across = {((p.start[0] + p.end[0]) / 2, p.start[1]) for p in strokes
              if p.start[1] == p.end[1]}
    return [(x, y) for p in strokes if p.start[0] == p.end[0]
            for x, y in across if abs(x - p.start[0]) < 0.01
            and abs(y - (p.start[1] + p.end[1]) / 2) < 0.01]


@pytest.mark.parametrize("name", ["residual", "gated"])
def test_the_arrays_of_a_sum_or_product_meet_at_its_mark(program: ir.Program,
                                                         name: str) -> None:
    d = diagram(program, name)
    assert d.validate() == []
    wires = _wires(d)
    separator = max((w for w in wires if w.role == "sep"), key=lambda w: w.end[0])
    # The separator runs straight into the mark: it does not curl round a wire.
    ys = {round(y, 2) for _, y in separator.polyline()}
    assert len(ys) == 1
    y_sep = separator.end[1]
    if name == "residual":
        (plus,) = _marks(d)
        assert abs(plus[1] - y_sep) < 0.01 and 0 < plus[0] - separator.end[0] <= 8.0
    else:  # the dot in a circle
        (circle,) = [c for c in d.items if isinstance(c, Circle) and c.r > 4.0]
        assert abs(circle.cy - y_sep) < 0.01 and 0 < circle.cx - separator.end[0] <= 8.0
    x_mark = separator.end[0]
    # ... between the two arrays: a wire of each passes above and below it there ...
    heights = [a[1] + (b[1] - a[1]) * (x_mark - a[0]) / (b[0] - a[0])
               for w in wires if w.role == "axis" for a, b in pairwise(w.polyline(48))
               if a[0] <= x_mark < b[0]]
    assert any(y < y_sep - 10.0 for y in heights) and any(y > y_sep + 10.0 for y in heights)
    # ... and the two arrays' x and e wires meet at dots just right of the mark.
    merges = [c for c in d.items if isinstance(c, Circle) and 2.0 < c.r < 4.0
              and c.cx > x_mark]
    assert len(merges) == 2 and all(c.cx - x_mark <= 100.0 for c in merges)


# --------------------------------------------------------------------------------------
# A separator never curls out of the gap between its arrays
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer", "lru", "vit", "resnet_block", "mlp_mixer"])
def test_no_separator_crosses_a_wire_in_the_gallery(name: str) -> None:
    program = ncd.load(str(ROOT / "gallery" / f"{name}.ncd")).ir
    for options in (RenderOptions(), RenderOptions(expand_calls=True)):
        d = diagram(program, name, options)
        assert not [p for p in d.validate() if "separator" in p]
        separators = [w for w in _wires(d) if w.role == "sep"]
        others = [w for w in _wires(d) if w.role != "sep"
                  and w.wire not in {loop.wire for loop in d.loops}]
        for separator in separators:
            for other in others:
                assert not list(_crossings(separator.polyline(), other.polyline())), \
                    (name, separator.wire, other.wire)


@pytest.mark.parametrize("name,options", [
    ("resnet_block", RenderOptions()), ("vit", RenderOptions(expand_calls=True)),
    ("lru", RenderOptions(expand_calls=True))])
def test_no_separator_bends_into_a_row_break(name: str, options: RenderOptions) -> None:
    d = diagram(ncd.load(str(ROOT / "gallery" / f"{name}.ncd")).ir, name, options)
    # The brackets of the break marks: three-segment decorations, vertical in the middle.
    brackets = [(p.segments[0][0], p.start[1], p.segments[1][1]) for p in d.items
                if isinstance(p, WirePath) and p.wire is None and len(p.segments) == 3
                and p.segments[0][0] == p.segments[1][0] and p.start[1] == p.segments[0][1]]
    assert brackets
    for separator in (w for w in _wires(d) if w.role == "sep"):
        if len({round(y, 2) for _, y in separator.polyline()}) == 1:
            continue  # straight into a mark or out of one: the arrays run on across the break
        for x, y0, y1 in brackets:
            for px, py in (separator.start, separator.end):
                assert not (abs(px - x) < 0.6 and y0 <= py <= y1), (separator.wire, px, py)


# --------------------------------------------------------------------------------------
# validate() catches each kind of wrong
# --------------------------------------------------------------------------------------


def _label(x: float, y: float, text: str = "x", wire: int | None = None) -> Text:
    label = Label.axis(text)
    box = label.measure(11.0)
    return Text(label, x, y, 11.0, "#000000", box.width, box.ascent, box.descent, wire=wire)


def _wire(wire: int, start: tuple[float, float], *points: tuple[float, ...],
          role: str = "axis") -> WirePath:
    return WirePath(start, tuple(points), Stroke("#000000", 1.3), wire=wire,
                    role=role)  # type: ignore[arg-type]


def _figure(items: list, boxes: tuple[Box, ...] = (), anchors: tuple[Anchor, ...] = (),
            loops: tuple[Loop, ...] = ()) -> Diagram:
    return Diagram(200.0, 100.0, None, tuple(items), boxes, anchors, loops=loops)


def test_validate_reports_boxes_closer_than_the_gap() -> None:
    def card(box_id: int, y: float) -> Box:
        return Box(box_id, 10.0, y, 30.0, 28.0, "parameter", (), 0)

    touching = _figure([], (card(1, 10.0), card(2, 38.0)))
    assert any("px apart" in p and "parameter box" in p for p in touching.validate())
    overlapping = _figure([], (card(1, 10.0), card(2, 30.0)))
    assert any("0.0 px apart" in p for p in overlapping.validate())
    apart = _figure([], (card(1, 10.0), card(2, 38.0 + BOX_GAP)))
    assert apart.validate() == []


def test_validate_reports_a_wire_through_a_label() -> None:
    crossed = _figure([_wire(1, (0.0, 40.0), (200.0, 40.0)), _label(50.0, 44.0, wire=1)])
    assert any("runs through the label 'x'" in p for p in crossed.validate())
    above = _figure([_wire(1, (0.0, 40.0), (200.0, 40.0)), _label(50.0, 35.5, wire=1)])
    assert above.validate() == []


def test_validate_reports_a_loop_that_does_not_span_its_state() -> None:
    state = (30.0, 52.0)
    wires = [_wire(1, (0.0, 30.0), (200.0, 30.0)), _wire(2, (0.0, 52.0), (200.0, 52.0))]
    anchors = tuple(Anchor(x, y) for x in (20.0, 180.0) for y in state)
    short = _wire(9, (180.0, 30.0), (180.0, 10.0), (20.0, 10.0), (20.0, 30.0), role="dtype")
    problems = _figure([*wires, short], anchors=anchors,
                       loops=(Loop(9, 20.0, 180.0, state, state),)).validate()
    assert any("reaches 1 of the 2 wires of its state" in p for p in problems)
    whole = _wire(9, (180.0, 52.0), (180.0, 10.0), (20.0, 10.0), (20.0, 52.0), role="dtype")
    assert _figure([*wires, whole], anchors=anchors,
                   loops=(Loop(9, 20.0, 180.0, state, state),)).validate() == []


def test_validate_reports_a_separator_that_crosses_a_wire() -> None:
    wires = [_wire(1, (0.0, 30.0), (200.0, 30.0)), _wire(2, (0.0, 60.0), (200.0, 60.0))]
    anchors = (Anchor(150.0, 75.0),)
    curled = _wire(3, (0.0, 45.0), (100.0, 45.0), (125.0, 45.0, 125.0, 75.0, 150.0, 75.0),
                   role="sep")
    problems = _figure([*wires, curled], anchors=anchors).validate()
    assert any("separator 3 crosses a wire" in p for p in problems)
    between = _wire(3, (0.0, 45.0), (150.0, 45.0), role="sep")
    assert _figure([*wires, between], anchors=(Anchor(150.0, 45.0),)).validate() == []


def test_validate_reports_an_unlabelled_wire_at_a_box_port() -> None:
    box = Box(1, 10.0, 20.0, 30.0, 28.0, "parameter", (PortPoint(40.0, 34.0, 5, "right"),), 1)
    wire = _wire(5, (40.0, 34.0), (200.0, 34.0))
    problems = _figure([wire], (box,)).validate()
    assert any("right port of the parameter box" in p and "no label" in p for p in problems)
    assert _figure([wire, _label(44.0, 29.5, "o", wire=5)], (box,)).validate() == []


# --------------------------------------------------------------------------------------
# Wrapping: a long composition breaks onto rows within a width budget
# --------------------------------------------------------------------------------------

PT_AT_170_MM = 170.0 / 25.4 * 72.0


def _lenet() -> ir.Program:
    return ncd.load(str(ROOT / "gallery" / "lenet5.ncd")).ir


def test_lenet5_wraps_to_the_page_and_prints_its_labels_at_6_pt() -> None:
    unwrapped = diagram(_lenet(), "lenet5", RenderOptions(width=None))
    wrapped = diagram(_lenet(), "lenet5")  # the default budget
    assert unwrapped.width > 880.0 >= wrapped.width
    assert max(wrapped.width, wrapped.height) / min(wrapped.width, wrapped.height) <= 3.0
    smallest = min(t.size for t in _texts(wrapped))
    assert smallest * PT_AT_170_MM / wrapped.width >= 6.0
    assert wrapped.validate() == []
    # the same operations, the same boxes: wrapping moves them, it draws nothing less
    assert sorted(b.kind for b in wrapped.boxes) == sorted(b.kind for b in unwrapped.boxes)


@pytest.mark.parametrize("width", [880.0, 600.0])
def test_the_wires_at_a_break_end_and_start_at_one_numbered_mark(width: float) -> None:
    d = diagram(_lenet(), "lenet5", RenderOptions(width=width))
    marks: dict[str, list[Text]] = {}
    for t in _texts(d):
        if t.role == "title" and t.label.plain_text().isdigit():
            marks.setdefault(t.label.plain_text(), []).append(t)
    assert marks, "no break"
    assert sorted(int(n) for n in marks) == list(range(1, len(marks) + 1))
    wires = _wires(d)
    for number, pair in marks.items():
        assert len(pair) == 2, number
        upper, lower = sorted(pair, key=lambda t: t.y)
        x_end = upper.x + upper.width / 2 - 11.0  # the mark sits beside the wires' ends
        x_start = lower.x + lower.width / 2 + 11.0
        # each mark has a bracket spanning the wires it ends or starts
        y_end = _bracket(d, x_end, -4.0, upper)
        y_start = _bracket(d, x_start, 4.0, lower)
        ending = {w.wire for w in wires if w.role == "axis" and abs(w.end[0] - x_end) < 0.6
                  and y_end[0] < w.end[1] < y_end[1]}
        starting = {w.wire for w in wires if w.role == "axis"
                    and abs(w.start[0] - x_start) < 0.6 and y_start[0] < w.start[1] < y_start[1]}
        assert ending and ending == starting, number
        for wire in ending:  # named before the break and after it
            assert sum(1 for t in _texts(d) if t.wire == wire) >= 2, (number, wire)
    assert d.validate() == []


def _bracket(d: Diagram, x: float, tick: float, mark: Text) -> tuple[float, float]:
    """The span of the bracket at `x` whose ticks point by `tick`, beside `mark`."""
    y = mark.y - mark.ascent / 2
    (found,) = [(p.start[1], p.segments[1][1]) for p in d.items
                if isinstance(p, WirePath) and p.wire is None and len(p.segments) == 3
                and abs(p.start[0] - (x + tick)) < 0.01 and abs(p.segments[0][0] - x) < 0.01
                and abs(p.segments[1][0] - x) < 0.01 and p.start[1] < y < p.segments[1][1]]
    return found


def test_a_narrower_budget_makes_a_narrower_drawing() -> None:
    widths = [diagram(_lenet(), "lenet5", RenderOptions(width=w)).width
              for w in (None, 1500.0, 880.0, 600.0)]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 4


def test_a_budget_below_the_least_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 200"):
        RenderOptions(width=100.0)


def test_a_drawing_that_fits_its_budget_stays_on_one_row() -> None:
    program = ncd.load(str(ROOT / "gallery" / "mlp.ncd")).ir
    one_row = diagram(program, "mlp", RenderOptions(width=None))
    assert one_row.width <= 880.0
    assert diagram(program, "mlp") == one_row


def test_wrapped_rows_are_evened_out() -> None:
    program = ncd.load(str(ROOT / "gallery" / "sliding_window_attention.ncd")).ir
    one_row = diagram(program, "sliding_window_attention", RenderOptions(width=None))
    wrapped = diagram(program, "sliding_window_attention")
    assert one_row.width > 880.0
    marks = [t for t in _texts(wrapped) if t.role == "title" and t.label.plain_text() == "1"]
    assert len(marks) == 2  # two rows
    # Filled greedily, the first row would take nearly the whole budget and the second the
    # rest; evened out, the two rows share the width.
    assert wrapped.width < 0.7 * one_row.width
    assert wrapped.validate() == []
