"""The lens view of a derivative: a definition made of a `forward` block and a `backward`
block (`ncd.derivative`: a backward definition `NAME_grad`, or a lens definition `NAME_lens`)
drawn as the lens papers draw one.

- The forward block runs left to right on top; the definition's inputs enter it at the left.
- The backward block underneath is laid out as usual, then mirrored (`mirrored`: geometry only,
  labels stay readable), so that it runs right to left: its inputs on its right, its outputs
  on its left.
- The wires that cross from the forward block to the backward one (the saved values) turn
  down in a column on the right, each marked by a small filled square and named, under the
  caption "saved"; an input the backward block reads as well (`X`) is copied at a dot on the
  left and runs under the forward block to that column.
- The output gradients (`dY`) enter at the bottom right; the gradients (`dX`, then one wire
  per parameter, `dW`) leave at the bottom left; in a lens definition, the forward results
  (`Y`) leave at the top right. Each array at the diagram's edge is named.

What the view needs beyond the IR comes from `ncd.derivative.Backward` (`LensView.of`); the
layout reads the wiring between the blocks off the body's terms, and derives nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ncd import ir

from ..geometry import (
    LAYER_FRAME,
    LAYER_MARK,
    Anchor,
    Box,
    BoxEntry,
    Circle,
    Diagram,
    Item,
    Loop,
    Path,
    Polygon,
    PortPoint,
    Rect,
    Stroke,
    Text,
    placed_anchors,
    placed_boxes,
    placed_items,
)
from ..glyphs import THEMES
from ..text import Label, Run, elide
from .context import Context, WireIds, size_environment
from .options import LABEL_RAISE, LABEL_SIZE, MARGIN, PITCH, ROW_PAD, RenderOptions
from .panels import End, Panel, array_specs, bar, dot, stroke_for, text_item, wire_path
from .routing import assemble
from .terms import layout

if TYPE_CHECKING:
    from ncd.derivative import Backward

__all__ = ["LensView", "layout_lens", "mirrored"]


@dataclass(frozen=True)
class LensView:
    """What the lens view draws beyond the IR: the names of the forward block's outputs
    (the wires that cross to the backward block, forward results first), which of them are
    saved values, and the titles of the two blocks."""

    crossing: tuple[str, ...]
    saved: frozenset[str]
    gradient_of: tuple[str, ...] = ()
    """What each gradient the definition outputs is the gradient of (`Backward`)."""
    training: ir.Training | None = None
    """A training set-up drawn round the lens of its model: the loss on the right, the
    optimiser on the parameter wires on the left."""
    forward_title: str = "forward"
    backward_title: str = "backward"

    @staticmethod
    def of(backward: Backward, training: ir.Training | None = None) -> LensView:
        return LensView(backward.crossing, frozenset(v.name for v in backward.saved),
                        backward.gradient_of, training)


Origin = tuple[Literal["input", "forward", "backward"], int]
"""Where an array of the body comes from: a definition input, or an output of a block."""


@dataclass(frozen=True)
class _Wiring:
    forward: ir.Block | None
    forward_from: tuple[Origin, ...]
    backward: ir.Block
    backward_from: tuple[Origin, ...]
    outputs: tuple[Origin, ...]


def _wiring(definition: ir.Definition, view: LensView) -> _Wiring | None:
    """The two blocks and what feeds each array they read, followed through the body's
    rearrangements and products; None for a body of another shape."""
    terms = definition.body.terms if isinstance(definition.body, ir.Composed) \
        else (definition.body,)
    current: list[Origin] = [("input", i) for i in range(len(definition.inputs))]
    blocks: dict[str, tuple[ir.Block, tuple[Origin, ...]]] = {}
    for term in terms:
        if isinstance(term, ir.Rearrangement):
            current = [current[m] for m in term.mapping]
            continue
        if isinstance(term, ir.Identity):
            continue
        if not isinstance(term, ir.Product | ir.Block):
            return None
        made: list[Origin] = []
        position = 0
        for part in term.terms if isinstance(term, ir.Product) else (term,):
            taken = current[position:position + len(part.dom)]
            position += len(part.dom)
            if isinstance(part, ir.Identity):
                made.extend(taken)
                continue
            role: Literal["forward", "backward"]
            if isinstance(part, ir.Block) and part.title == view.forward_title:
                role = "forward"
            elif isinstance(part, ir.Block) and part.title == view.backward_title:
                role = "backward"
            else:
                return None
            if role in blocks:
                return None
            blocks[role] = (part, tuple(taken))
            made.extend((role, j) for j in range(len(part.cod)))
        current = made
    if "backward" not in blocks:
        return None
    forward, forward_from = blocks.get("forward", (None, ()))
    if any(kind != "input" for kind, _ in forward_from):
        return None
    backward, backward_from = blocks["backward"]
    return _Wiring(forward, forward_from, backward, backward_from, tuple(current))


# --------------------------------------------------------------------------------------
# Mirroring
# --------------------------------------------------------------------------------------


def _mirrored_item(item: Item, width: float) -> Item:
    match item:
        case Path():
            return Path((width - item.start[0], item.start[1]),
                        tuple(tuple(width - v if k % 2 == 0 else v for k, v in enumerate(s))
                              for s in item.segments),
                        item.stroke, item.fill, item.closed, item.wire, item.role,
                        item.free_ends, item.layer)
        case Rect():
            return Rect(width - item.x - item.width, item.y, item.width, item.height, item.fill,
                        item.stroke, item.radius, item.layer)
        case Polygon():
            return Polygon(tuple((width - x, y) for x, y in item.points), item.fill,
                           item.stroke, item.layer)
        case Circle():
            return Circle(width - item.cx, item.cy, item.r, item.fill, item.stroke, item.layer)
        case Text():
            # The label's box is mirrored, not its glyphs: it stays readable.
            return Text(item.label, width - item.x - item.width, item.y, item.size, item.color,
                        item.width, item.ascent, item.descent, item.owner, item.role,
                        item.layer, item.wire)


_OTHER_SIDE: dict[str, Literal["left", "right", "top", "bottom"]] = {
    "left": "right", "right": "left", "top": "top", "bottom": "bottom"}


def mirrored(panel: Panel) -> Panel:
    """`panel` flipped left to right: every piece of geometry mirrored (a datatype wire's
    arrowhead then points left), each label moved to its mirrored place but not mirrored
    itself; its left wires become its right ones and the other way round."""
    width = panel.width
    boxes: list[BoxEntry] = [Box(b.id, width - b.x - b.width, b.y, b.width, b.height, b.kind,
                                 tuple(PortPoint(width - p.x, p.y, p.wire, _OTHER_SIDE[p.side])
                                       for p in b.ports),
                                 b.expected_ports) for b in placed_boxes(panel.boxes)]
    items = [_mirrored_item(item, width) for item in placed_items(panel.items)]
    left_labels = [_mirrored_item(t, width) for t in panel.right_labels]
    right_labels = [_mirrored_item(t, width) for t in panel.left_labels]
    return Panel(
        width, list(panel.right), list(panel.left), list(items), boxes,
        [Anchor(width - a.x, a.y) for a in placed_anchors(panel.anchors)], panel.top,
        panel.bottom,
        [t for t in left_labels if isinstance(t, Text)],
        [t for t in right_labels if isinstance(t, Text)],
        [Loop(loop.wire, width - loop.x_in, width - loop.x_out, loop.state_in, loop.state_out)
         for loop in panel.loops])


# --------------------------------------------------------------------------------------
# The lens drawing
# --------------------------------------------------------------------------------------

SPLIT_COLUMN = 34.0
"""Room on the left for the dot where an input the forward block reads twice is copied."""
SPLIT_DOT = 8.0
"""Where an input read by both blocks is copied, from the left zone."""
BAND_STEP = 9.0
"""Spacing of the wires that run under the forward block to the backward one."""
ROW_GAP = 24.0
"""Space between the forward row, the band under it and the backward row."""
LANE = 9.0
"""Spacing of the wires that turn down in the column on the right."""
TURN = 6.0
"""Radius of a wire's turn into and out of that column."""
MARK = 5.0
"""Side of the square that marks a saved value."""
NAME_PAD = 6.0


LOSS_NAME = "L"
"""The name of the loss where it leaves a training set-up's drawing."""
TARGET_NAME = "T"
"""The name of the targets where they enter it."""
OPTIMISER_INSET = 12.0
"""How far right of the forward block's left edge the first parameter wire rises into it."""
OPTIMISER_GAP = 16.0
"""Between the optimiser's box and the backward block."""
OPTIMISER_PITCH = 18.0
"""Spacing of the parameter and state wires at the optimiser's left."""


class _Optimiser:
    """The optimiser's box: its name and hyper-parameters, the parameters' names over the
    wires that rise from it into the model, and the wires at its left: each parameter and
    each kind of state, in and (primed) out."""

    def __init__(self, ctx: Context, training: ir.Training):
        params = [p.name for p in training.params]
        state = list(dict.fromkeys(s.name for s in training.state))
        self.left: list[tuple[Label, Literal["param", "dtype"]]] = [
            *((Label.axis(p), "param") for p in params),
            *((Label.plain(s), "dtype") for s in state),
            *((_primed(Label.axis(p)), "param") for p in params),
            *((_primed(Label.plain(s)), "dtype") for s in state)]
        self.lines = [Label((Run(training.optimiser.name, "bold"),)), *(
            Label.plain(f"{h.name} = " + (f"{h.values[0]:g}" if len(h.values) == 1 else
                                          "(" + ", ".join(f"{v:g}" for v in h.values) + ")"))
            for h in training.optimiser.hyper)]
        self.names: list[tuple[Label, float, float]] = []  # label, left, centre
        x = 0.0
        for name in params:
            label = Label.axis(name)
            size = label.measure(LABEL_SIZE).width
            self.names.append((label, x, x + size / 2))
            x += size + 2 * NAME_PAD
        self.names_at = NAME_PAD
        widths = [x - 2 * NAME_PAD, *(line.measure(LABEL_SIZE).width for line in self.lines)]
        self.width = max(widths) + 2 * NAME_PAD
        self.x = 0.0
        del ctx


class _Loss:
    """The loss's box: a lens of its own, the loss forward at its top, its reverse (the
    gradient of the model's output) at its bottom."""

    def __init__(self, ctx: Context, training: ir.Training, x: float):
        loss = training.loss
        axes = f"[{', '.join(a.name for a in loss.axes)}]" if loss.axes else ""
        self.title = Label.plain(f"{loss.name}{axes}")
        self.reverse = Label.plain("reverse")
        self.target_specs = [s for s in array_specs((loss.target,), ctx) if s.kind != "sep"]
        self.width = max(self.title.measure(LABEL_SIZE).width,
                         self.reverse.measure(LABEL_SIZE).width) + 2 * NAME_PAD
        self.x = x


@dataclass
class _Bundle:
    """The wires of one array at an edge of a row: their ends (separators left out)."""

    ends: list[End]

    @property
    def top(self) -> float:
        return min(e.y for e in self.ends)


def _bundles(ends: Sequence[End], count: int) -> list[_Bundle]:
    found: list[_Bundle] = [_Bundle([]) for _ in range(count)]
    for end in ends:
        if end.spec.kind != "sep":
            found[end.spec.array].ends.append(end)
    return found


def _name(text: str) -> Label:
    """An array's name (`dW_q`: italic, subscript q); several, separated by commas."""
    runs = [run for k, name in enumerate(text.split(", "))
            for run in ((Run(", "),) if k else ()) + Label.axis(name).runs]
    return Label(tuple(runs))


def layout_lens(program: ir.Program, definition: ir.Definition, options: RenderOptions,
                view: LensView) -> Diagram | None:
    """The lens drawing of `definition`, or None when its body is not a forward and a
    backward block wired together (then it is drawn as any other definition)."""
    wiring = _wiring(definition, view)
    if wiring is None:
        return None
    ctx = Context(program, options, THEMES[options.theme], size_environment(program),
                  WireIds(), calls=(definition.name,))
    return _Lens(ctx, definition, wiring, view).draw()


class _Lens:
    def __init__(self, ctx: Context, definition: ir.Definition, wiring: _Wiring,
                 view: LensView):
        self.ctx = ctx
        self.definition = definition
        self.wiring = wiring
        self.view = view
        self.items: list[Item] = []
        self.boxes: list[Box] = []
        self.anchors: list[Anchor] = []
        self.loops: list[Loop] = []
        self.saved_named: set[int] = set()
        # the wire ids of each definition input's axes (and datatype wire)
        self.input_ids = [[ctx.fresh() for s in array_specs((v.array,), ctx)]
                          for v in definition.inputs]

    # ---- rows
    def _row(self, block: ir.Block, origins: Sequence[Origin],
             ids_of: dict[Origin, list[int]]) -> tuple[Panel, list[int]]:
        """The block between labelled edges, its input wires carrying the ids of what feeds
        them; and those ids."""
        left = array_specs(block.dom, self.ctx)
        right = array_specs(block.cod, self.ctx)
        taken = {k: iter(ids_of[o]) for k, o in enumerate(origins)}
        in_ids = [self.ctx.fresh() if s.kind == "sep" else next(taken[s.array]) for s in left]
        body = layout(block, self.ctx, in_ids)
        panel = assemble(self.ctx, left, in_ids, list(range(len(left))), body,
                         list(range(len(right))), right)
        return panel, in_ids

    def draw(self) -> Diagram:
        ctx, wiring, definition = self.ctx, self.wiring, self.definition
        ids_of: dict[Origin, list[int]] = {("input", i): ids
                                           for i, ids in enumerate(self.input_ids)}
        # The forward row, its top at 0.
        forward: Panel | None = None
        forward_out: list[_Bundle] = []
        if wiring.forward is not None:
            forward, _ = self._row(wiring.forward, wiring.forward_from, ids_of)
            forward = forward.moved(0.0, -forward.top)
            forward_out = _bundles(forward.right, len(wiring.forward.cod))
            for j, bundle in enumerate(forward_out):
                ids_of[("forward", j)] = [e.wire for e in bundle.ends]
        backward, _ = self._row(wiring.backward, wiring.backward_from, ids_of)
        backward = mirrored(backward)

        fed_forward = {o for o in wiring.forward_from}
        # Inputs the backward block reads that also enter the forward one run in a band
        # under the forward row; the others (the output gradients) enter at the right.
        banded = [k for k, o in enumerate(wiring.backward_from)
                  if o[0] == "input" and o in fed_forward]
        from_right = [k for k, o in enumerate(wiring.backward_from)
                      if o[0] == "input" and o not in fed_forward]
        crossing = [k for k, o in enumerate(wiring.backward_from) if o[0] == "forward"]

        # Names at the edges: the left zone names inputs and gradients, the right zone the
        # output gradients and results, the saved zone the saved values.
        inputs = [v.name for v in definition.inputs]
        outputs = [v.name for v in definition.outputs]
        left_names = [inputs[i] for i in range(len(inputs))
                      if ("input", i) in fed_forward or not any(
                          o == ("input", i) for o in wiring.backward_from)]
        # An array the definition outputs twice is one bundle with both names.
        output_names: dict[Origin, list[str]] = {}
        for n, origin in enumerate(wiring.outputs):
            output_names.setdefault(origin, []).append(outputs[n])
        training = self.view.training
        optimiser = _Optimiser(ctx, training) if training is not None else None
        if optimiser is None:
            left_names += [", ".join(names) for o, names in output_names.items()
                           if o[0] == "backward"]
            right_names = [inputs[o[1]] for k in from_right
                           for o in [wiring.backward_from[k]]]
            right_names += [", ".join(names) for o, names in output_names.items()
                            if o[0] == "forward"]
        else:

            right_names = [LOSS_NAME, TARGET_NAME]
        saved_names = [self.view.crossing[j] for j in range(len(forward_out))
                       if j < len(self.view.crossing)]
        left_zone = _zone(left_names)
        if optimiser is not None:
            left_zone = max(left_zone, max(label.measure(LABEL_SIZE).width
                                           for label, _ in optimiser.left) + 2 * NAME_PAD)
        right_zone = _zone(right_names)
        saved_zone = _zone([*saved_names, "saved"]) + MARK + NAME_PAD

        band_wires = sum(1 for k in banded for s in array_specs(
            (wiring.backward.dom[k],), ctx) if s.kind != "sep")
        # The copies turn down on the left in lanes of their own, the topmost outermost.
        split = SPLIT_DOT + TURN + band_wires * LANE + SPLIT_DOT if banded else 0.0
        x_forward = left_zone + split
        band_top = (forward.bottom if forward is not None else 0.0) + ROW_GAP
        band_height = band_wires * BAND_STEP + (len(banded) - 1) * BAND_STEP
        backward_top = band_top + max(0.0, band_height) + (ROW_GAP if banded else 0.0)
        x_backward = left_zone
        if optimiser is not None:
            # its parameter wires rise into the forward block's frame
            frames = [item.x for item in placed_items(forward.items)
                      if isinstance(item, Rect) and item.layer == LAYER_FRAME] \
                if forward is not None else []
            inset = min(frames, default=0.0) + OPTIMISER_INSET
            optimiser.x = max(left_zone, x_forward + inset - optimiser.names_at)
            x_backward = optimiser.x + optimiser.width + OPTIMISER_GAP
        backward = backward.moved(x_backward, backward_top - backward.top)
        backward_in = _bundles(backward.right, len(wiring.backward.dom))
        backward_out = _bundles(backward.left, len(wiring.backward.cod))
        x_forward_right = x_forward + (forward.width if forward is not None else 0.0)
        x_backward_right = x_backward + backward.width
        lanes_start = max(x_forward_right + saved_zone, x_backward_right) + TURN + LANE

        # Every wire into the backward block from above gets a lane in the column; the one
        # that comes from highest takes the outermost lane, so that the turns nest.
        arriving: list[tuple[float, int, int]] = []  # (height it arrives at, array, wire)
        band_y: dict[tuple[int, int], float] = {}
        y = band_top
        band_order: dict[tuple[int, int], int] = {}
        for k in banded:
            for w, _ in enumerate(backward_in[k].ends):
                band_order[(k, w)] = len(band_y)
                band_y[(k, w)] = y
                arriving.append((y, k, w))
                y += BAND_STEP
            y += BAND_STEP
        placed_forward = forward.moved(x_forward, 0.0) if forward is not None else None
        forward_right = _bundles(placed_forward.right, len(forward_out)) \
            if placed_forward is not None else []
        for k in crossing:
            j = wiring.backward_from[k][1]
            for w, end in enumerate(forward_right[j].ends):
                arriving.append((end.y, k, w))
        arriving.sort(key=lambda a: (a[0], -a[1], -a[2]))
        lane_x = {(k, w): lanes_start + (len(arriving) - 1 - n) * LANE
                  for n, (_, k, w) in enumerate(arriving)}
        lanes_end = lanes_start + max(0, len(arriving) - 1) * LANE
        caption_x = lanes_end + TURN + NAME_PAD
        width = max(caption_x + _text_width("saved") + NAME_PAD if crossing else 0.0,
                    lanes_end + TURN) + right_zone
        width = max(width, x_backward_right + right_zone, x_forward_right + right_zone)
        loss: _Loss | None = None
        if training is not None:
            loss = _Loss(ctx, training, width - right_zone + NAME_PAD)
            width = loss.x + loss.width + right_zone + _zone([
                *(s.label.plain_text() for s in loss.target_specs if s.label is not None)])

        for panel in (placed_forward, backward):
            if panel is not None:
                self._take(panel)

        # Inputs: in at the left edge, into the forward row (copied at a dot when the
        # backward block reads them too).
        if placed_forward is not None:
            forward_in = _bundles(placed_forward.left, len(wiring.forward_from))
            entered: set[int] = set()
            for k, origin in enumerate(wiring.forward_from):
                i = origin[1]
                for w, end in enumerate(forward_in[k].ends):
                    if i in entered:  # a second read of the same input: from its dot
                        x0 = left_zone + split / 2
                        y0 = forward_in[wiring.forward_from.index(origin)].ends[w].y
                        self._wire(end, [(x0, y0), *_s(x0, y0, x_forward, end.y)])
                        continue
                    self._wire(end, [(0.0, end.y), (x_forward, end.y)])
                if i not in entered:
                    self._name(inputs[i], 0.0, left_zone, forward_in[k].top, "left")
                entered.add(i)
            # The copies the backward block reads: down into the band, right to the column.
            for k in banded:
                origin = wiring.backward_from[k]
                source = forward_in[wiring.forward_from.index(origin)]
                x0 = left_zone + SPLIT_DOT
                for w, end in enumerate(backward_in[k].ends):
                    y0 = source.ends[w].y
                    yb = band_y[(k, w)]
                    down = x0 + TURN + (band_wires - 1 - band_order[(k, w)]) * LANE
                    self.items.append(dot(ctx, x0, y0))
                    self.anchors.append(Anchor(x0, y0))
                    self._wire(end, [(x0, y0), *_turn_into_band(down, y0, yb),
                                     *_turn_down(lane_x[(k, w)], yb, end.y, x_backward_right)])
                    self._mark(x_forward + NAME_PAD, yb)
        # The saved values: out of the forward row, marked, down the column into the
        # backward row.
        marked: set[tuple[int, int]] = set()
        for k in crossing:
            j = wiring.backward_from[k][1]
            for w, end in enumerate(backward_in[k].ends):
                source_end = forward_right[j].ends[w]
                x0, y0 = x_forward_right, source_end.y
                path = [(x0, y0), *_turn_down(lane_x[(k, w)], y0, end.y, x_backward_right)]
                self._wire(end, path)
                if (j, w) not in marked:
                    marked.add((j, w))
                    self._mark(x0 + NAME_PAD, y0)
                else:  # read twice: the copies part at a dot
                    self.items.append(dot(ctx, x0 + NAME_PAD + MARK, y0))
                    self.anchors.append(Anchor(x0 + NAME_PAD + MARK, y0))
            if all((j, w) in marked for w in range(len(backward_in[k].ends))) \
                    and j < len(saved_names) and j not in self.saved_named:
                self._name(saved_names[j], x0 + NAME_PAD + MARK, x0 + saved_zone,
                           forward_right[j].top, "left")
                self.saved_named.add(j)
        if crossing:
            middle = (backward_top + (forward.bottom if forward is not None else 0.0)) / 2
            label = Label.plain("saved")
            self.items.append(text_item(label, caption_x, middle + LABEL_SIZE / 3, LABEL_SIZE,
                                        ctx.theme.text, role="caption"))

        if training is not None and optimiser is not None and loss is not None:
            self._training(optimiser, loss, width, left_zone, forward_right, backward_in,
                           backward_out, from_right, output_names, placed_forward,
                           x_forward_right, x_backward, x_backward_right)
            return self._diagram(width)
        # The output gradients: in at the right edge of the bottom row.
        for k in from_right:
            i = wiring.backward_from[k][1]
            for end in backward_in[k].ends:
                self._wire(end, [(width, end.y), (x_backward_right, end.y)])
            self._name(inputs[i], width - right_zone, width, backward_in[k].top, "right")
        # The gradients: out at the left edge; results: out at the right edge of the top row.
        for origin, names in output_names.items():
            if origin[0] == "backward":
                bundle = backward_out[origin[1]]
                for end in bundle.ends:
                    self._wire(end, [(left_zone, end.y), (0.0, end.y)])
                self._name(", ".join(names), 0.0, left_zone, bundle.top, "left")
            elif origin[0] == "forward":
                bundle = forward_right[origin[1]]
                for end in bundle.ends:
                    self._wire(end, [(x_forward_right, end.y), (width, end.y)])
                self._name(", ".join(names), width - right_zone, width, bundle.top, "right")
        # A gradient the definition does not output (the same as another) ends in a bar.
        for j, bundle in enumerate(backward_out):
            if ("backward", j) not in output_names:
                self._bar(bundle, x_backward)
        return self._diagram(width)

    def _bar(self, bundle: _Bundle, x_edge: float) -> None:
        """The wires of `bundle` end in a bar just left of `x_edge` (a gradient not used)."""
        for end in bundle.ends:
            x = x_edge - NAME_PAD
            self._wire(end, [(x_edge, end.y), (x, end.y)])
            self.items.append(bar(self.ctx, x, end.y))
            self.anchors.append(Anchor(x, end.y))

    # ---- a training set-up
    def _training(self, optimiser: _Optimiser, loss: _Loss, width: float, left_zone: float,
                  forward_right: Sequence[_Bundle], backward_in: Sequence[_Bundle],
                  backward_out: Sequence[_Bundle], from_right: Sequence[int],
                  output_names: dict[Origin, list[str]], placed_forward: Panel | None,
                  x_forward_right: float, x_backward: float, x_backward_right: float) -> None:
        """The loss on the right (the model's output in, the gradient of the output back out
        into the backward block; the loss out and the targets in at the right edge) and the
        optimiser on the left (the gradients of the parameters in; the parameters up into the
        forward block; the parameters and the optimiser's state in and out at the left
        edge)."""
        ctx, view = self.ctx, self.view
        results = [forward_right[o[1]] for o in output_names if o[0] == "forward"]
        seeds = [backward_in[k] for k in from_right]
        self._loss(loss, width, results, seeds, x_forward_right, x_backward_right)
        made = [n for n, o in enumerate(self.wiring.outputs) if o[0] == "backward"]
        model_input = view.training.input.name if view.training is not None else ""
        gradients: list[_Bundle] = []
        for position, n in enumerate(made):
            bundle = backward_out[self.wiring.outputs[n][1]]
            of = view.gradient_of[position] if position < len(view.gradient_of) else ""
            if of == model_input:  # a training step does not use the input's gradient
                self._bar(bundle, x_backward)
            elif all(bundle is not g for g in gradients):
                gradients.append(bundle)
        for j, bundle in enumerate(backward_out):
            if ("backward", j) not in output_names:
                self._bar(bundle, x_backward)
        forward_bottom = placed_forward.bottom if placed_forward is not None else 0.0
        self._optimiser(optimiser, left_zone, gradients, x_backward, forward_bottom)
        del ctx

    def _box(self, kind: str, x: float, y: float, width: float, height: float,
             ports: Sequence[PortPoint], texts: Sequence[tuple[Label, float, float]]) -> None:
        box_id = self.ctx.fresh()
        self.items.append(Rect(x, y, width, height, self.ctx.theme.call_fill,
                               Stroke(self.ctx.theme.ink, 1.0), radius=3.0))
        self.boxes.append(Box(box_id, x, y, width, height, kind, tuple(
            PortPoint(p.x, p.y, p.wire, p.side) for p in ports), len(ports)))
        for label, tx, baseline in texts:
            self.items.append(text_item(label, tx, baseline, LABEL_SIZE, self.ctx.theme.text,
                                        owner=box_id, role="glyph"))

    def _loss(self, loss: _Loss, width: float, results: Sequence[_Bundle],
              seeds: Sequence[_Bundle], x_forward_right: float,
              x_backward_right: float) -> None:
        ctx = self.ctx
        ys = [e.y for b in (*results, *seeds) for e in b.ends]
        top = min(ys, default=0.0) - ROW_PAD
        level = min((e.y for b in results for e in b.ends), default=top + ROW_PAD)
        ports: list[PortPoint] = []
        right = loss.x + loss.width
        for bundle in results:
            for end in bundle.ends:
                self._wire(end, [(x_forward_right, end.y), (loss.x, end.y)])
                ports.append(PortPoint(loss.x, end.y, end.wire, "left"))
        for bundle in seeds:
            for end in bundle.ends:
                self._wire(end, [(loss.x, end.y), (x_backward_right, end.y)])
                ports.append(PortPoint(loss.x, end.y, end.wire, "left"))
        # The loss leaves at the model's output's height; the targets enter under it.
        loss_wire = ctx.fresh()
        self.items.append(Path((right, level), ((width, level),), stroke_for(ctx, "dtype"),
                               wire=loss_wire, role="dtype"))
        ports.append(PortPoint(right, level, loss_wire, "right"))
        self._name(LOSS_NAME, width - NAME_PAD - _text_width(LOSS_NAME) - NAME_PAD, width,
                   level, "right")
        y = level + PITCH
        target_top = y
        for spec in loss.target_specs:
            wire = ctx.fresh()
            self.items.append(wire_path(ctx, spec, wire, (width, y), [(right, y)]))
            ports.append(PortPoint(right, y, wire, "right"))
            if spec.label is not None:
                self.items.append(text_item(spec.label, right + NAME_PAD, y - LABEL_RAISE,
                                            LABEL_SIZE, ctx.theme.text, wire=wire))
            y += PITCH
        self._name(TARGET_NAME, right, width, target_top, "right")
        bottom = max([*ys, y - PITCH]) + ROW_PAD
        ascent = loss.title.measure(LABEL_SIZE).ascent
        descent = loss.reverse.measure(LABEL_SIZE).descent
        self._box("loss", loss.x, top, loss.width, bottom - top, ports, [
            (loss.title, loss.x + NAME_PAD, top + NAME_PAD + ascent),
            (loss.reverse, loss.x + NAME_PAD, bottom - NAME_PAD - descent)])

    def _optimiser(self, optimiser: _Optimiser, left_zone: float,
                   gradients: Sequence[_Bundle], x_backward: float,
                   forward_bottom: float) -> None:
        ctx = self.ctx
        ys = [e.y for b in gradients for e in b.ends]
        top = min(ys, default=forward_bottom + 2 * ROW_GAP) - ROW_PAD
        ports: list[PortPoint] = []
        right = optimiser.x + optimiser.width
        for bundle in gradients:
            for end in bundle.ends:
                self._wire(end, [(x_backward, end.y), (right, end.y)])
                ports.append(PortPoint(right, end.y, end.wire, "right"))
        # The parameters and the state in and out at the left edge, one wire each.
        y = top
        for label, kind in optimiser.left:
            y += OPTIMISER_PITCH
            wire = ctx.fresh()
            self.items.append(Path((0.0, y), ((optimiser.x, y),), stroke_for(ctx, kind),
                                   wire=wire, role="param"))
            ports.append(PortPoint(optimiser.x, y, wire, "left"))
            self.items.append(text_item(label, NAME_PAD, y - LABEL_RAISE, LABEL_SIZE,
                                        ctx.theme.text, role="caption"))
        # The parameters up into the forward block, each under its name.
        texts: list[tuple[Label, float, float]] = []
        line = LABEL_SIZE * 1.3
        baseline = top + NAME_PAD + line * 0.8
        for label, offset, centre in optimiser.names:
            x = optimiser.x + optimiser.names_at + centre
            wire = ctx.fresh()
            self.items.append(Path((x, top), ((x, forward_bottom),), stroke_for(ctx, "param"),
                                   wire=wire, role="param"))
            ports.append(PortPoint(x, top, wire, "top"))
            self.anchors.append(Anchor(x, forward_bottom))
            texts.append((label, optimiser.x + optimiser.names_at + offset, baseline))
        for label in optimiser.lines:
            baseline += line
            texts.append((label, optimiser.x + NAME_PAD, baseline))
        bottom = max([*ys, y, baseline]) + ROW_PAD
        self._box("optimiser", optimiser.x, top, optimiser.width, bottom - top, ports, texts)

    # ---- pieces
    def _take(self, panel: Panel) -> None:
        self.items.extend(placed_items(panel.items))
        self.boxes.extend(placed_boxes(panel.boxes))
        self.anchors.extend(placed_anchors(panel.anchors))
        self.loops.extend(panel.loops)

    def _wire(self, end: End, points: Sequence[tuple[float, ...]]) -> None:
        start, *rest = points
        self.items.append(wire_path(self.ctx, end.spec, end.wire, (start[0], start[1]), rest))

    def _mark(self, x: float, y: float) -> None:
        """The small filled square on a saved value's wire."""
        self.items.append(Rect(x - MARK / 2, y - MARK / 2, MARK, MARK, self.ctx.theme.ink, None,
                               layer=LAYER_MARK))

    def _name(self, text: str, x0: float, x1: float, top: float,
              side: Literal["left", "right"]) -> None:
        label = _name(text)
        box = label.measure(LABEL_SIZE)
        x = x0 + NAME_PAD if side == "left" else x1 - NAME_PAD - box.width
        self.items.append(text_item(label, x, top - LABEL_RAISE, LABEL_SIZE, self.ctx.theme.text,
                                    role="caption"))

    def _diagram(self, width: float) -> Diagram:
        tops = [item.y_extent()[0] for item in self.items]
        bottoms = [item.y_extent()[1] for item in self.items]
        top = min([*tops, *(b.y for b in self.boxes)])
        bottom = max([*bottoms, *(b.y + b.height for b in self.boxes)])
        dy = MARGIN - top
        items = tuple(item.moved(0.0, dy) for item in self.items)
        return Diagram(
            width=round(width, 2), height=round(bottom - top + 2 * MARGIN, 2),
            background=self.ctx.theme.background, items=items,
            boxes=tuple(b.moved(0.0, dy) for b in self.boxes),
            anchors=tuple(a.moved(0.0, dy) for a in self.anchors),
            title=elide(self.definition.name),
            loops=tuple(loop.moved(0.0, dy) for loop in self.loops))


def _primed(label: Label) -> Label:
    """The label of an array's new value: `W_in` -> `W_in′`."""
    return Label((*label.runs, Run("\u2032")))


def _text_width(text: str) -> float:
    return Label.axis(text).measure(LABEL_SIZE).width


def _zone(names: Sequence[str]) -> float:
    widths = [_name(n).measure(LABEL_SIZE).width for n in names]
    return max(widths, default=0.0) + 2 * NAME_PAD if widths else 0.0


def _s(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, ...]]:
    """An S-curve from (x0, y0) to (x1, y1), horizontal at both ends."""
    mid = (x1 - x0) / 2
    return [(x0 + mid, y0, x1 - mid, y1, x1, y1)]


def _turn_into_band(lane: float, y0: float, y1: float) -> list[tuple[float, ...]]:
    """From the current point at height `y0`, as far right as `lane`: down it to `y1` and
    on to the right, with rounded turns (the first one starting at once)."""
    k = 0.552 * TURN
    x0 = lane - TURN
    return [(x0, y0), (x0 + k, y0, lane, y0 + TURN - k, lane, y0 + TURN), (lane, y1 - TURN),
            (lane, y1 - TURN + k, lane + TURN - k, y1, lane + TURN, y1)]


def _turn_down(lane: float, y0: float, y1: float, x1: float) -> list[tuple[float, ...]]:
    """From the current point at height `y0`: right to the lane, down it to `y1`, and left to
    `x1`, with rounded turns."""
    k = 0.552 * TURN  # a quarter circle as a cubic
    return [(lane - TURN, y0), (lane - TURN + k, y0, lane, y0 + TURN - k, lane, y0 + TURN),
            (lane, y1 - TURN), (lane, y1 - TURN + k, lane - TURN + k, y1, lane - TURN, y1),
            (x1, y1)]

