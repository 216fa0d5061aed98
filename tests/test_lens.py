"""The lens view of a derivative (`ncd render --grad`, `--lens`; renderers/layout/lens.py):
the backward block mirrored under the forward one, the saved values marked, the gradients
leaving at the left; and the lens definition it draws (`Program.lens`)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from ncd.renderers import Diagram, RenderOptions, diagram
from ncd.renderers.geometry import Polygon, Rect, Text
from ncd.renderers.layout.lens import MARK, mirrored
from ncd.renderers.layout.panels import Panel

import ncd
from ncd.cli import main

GALLERY = Path(__file__).resolve().parent.parent / "gallery"


@functools.cache
def drawn(stem: str, name: str, lens: bool) -> Diagram:
    program, drawn_name, view = ncd.load(GALLERY / f"{stem}.ncd").derivative_drawing(name,
                                                                                     lens=lens)
    return diagram(program.ir, drawn_name, RenderOptions(lens=view))


LAID_OUT = (("attention", "attention", True), ("mlp", "mlp", False), ("vit", "vit", False))
"""Lens drawings checked by `validate()`: the attention (as a lens), a perceptron and a model
of calls (`vit`). (The others of `SUPPORTED` pass too, as a lens and as a backward diagram,
among them `lenet5` and `lstm_cell`, whose backward block makes one gradient twice: checked by
hand, as each takes seconds.)"""


@pytest.mark.parametrize(("stem", "name", "lens"), LAID_OUT,
                         ids=[f"{s}.{n}.{'lens' if x else 'grad'}" for s, n, x in LAID_OUT])
def test_lens_drawing_validates(stem: str, name: str, lens: bool) -> None:
    assert drawn(stem, name, lens).validate() == []


def _texts(found: Diagram) -> dict[str, Text]:
    return {t.label.plain_text(): t for t in found.items
            if isinstance(t, Text) and t.role == "caption"}


def test_gradients_leave_left_and_output_gradients_enter_right() -> None:
    found = drawn("mlp", "mlp", False)
    names = _texts(found)
    for gradient in ("dX", "dW_in", "db_in", "dW_out", "db_out"):
        assert names[gradient].x < 20.0, gradient  # each parameter's gradient: its own name
    assert names["dY"].x + names["dY"].width > found.width - 20.0
    assert names["X"].x < 20.0 and names["X"].y < names["dX"].y  # in at the top left
    assert "saved" in names


def test_the_lens_puts_the_forward_results_top_right() -> None:
    found = drawn("attention", "attention", True)
    names = _texts(found)
    assert names["Y"].x + names["Y"].width > found.width - 20.0
    assert names["Y"].y < names["dY"].y


def test_every_saved_wire_is_marked() -> None:
    """One square per wire of each saved value (the forward block's outputs and the inputs
    the backward block reads): H, A, Y and X of the perceptron, two axes each."""
    squares = [r for r in drawn("mlp", "mlp", False).items
               if isinstance(r, Rect) and r.width == MARK and r.height == MARK]
    assert len(squares) == 8


def test_the_backward_block_points_left() -> None:
    """The datatype arrowheads of the elementwise boxes: to the right in the forward block,
    to the left in the mirrored backward block (which starts below the forward one)."""
    found = drawn("mlp", "mlp", False)
    heads = [p for p in found.items if isinstance(p, Polygon) and len(p.points) == 3
             and abs(max(x for x, _ in p.points) - min(x for x, _ in p.points) - 5.5) < 0.01]
    block_titles = {t.label.plain_text(): t.y for t in found.items
                    if isinstance(t, Text) and t.label.plain_text() in ("forward", "backward")}
    lower = [p for p in heads if p.points[0][1] > block_titles["backward"]]
    upper = [p for p in heads if p.points[0][1] < block_titles["backward"]]
    assert lower and upper
    assert all(p.points[0][0] < min(x for x, _ in p.points[1:]) for p in lower)
    assert all(p.points[0][0] > max(x for x, _ in p.points[1:]) for p in upper)


def test_mirroring_twice_gives_the_panel_back() -> None:
    found = drawn("mlp", "mlp", False)
    panel = Panel(found.width, [], [], list(found.items), list(found.boxes),
                  list(found.anchors), 0.0, found.height)
    twice = mirrored(mirrored(panel))
    for again, item in zip(twice.items, panel.items, strict=True):
        assert type(again) is type(item)
        assert again.bbox() == pytest.approx(item.bbox(), abs=1e-9)
    for box, original_box in zip(twice.boxes, panel.boxes, strict=True):
        assert box.bbox() == pytest.approx(original_box.bbox(), abs=1e-9)
    once = mirrored(panel)
    texts = [t for t in once.items if isinstance(t, Text)]
    originals = [t for t in panel.items if isinstance(t, Text)]
    # labels move to their mirrored place and keep their width: they are not mirrored
    for moved, original in zip(texts, originals, strict=True):
        assert moved.width == original.width
        assert moved.x == pytest.approx(found.width - original.x - original.width)


def test_the_lens_definition_computes_the_forward_results_and_the_gradients() -> None:
    """`NAME_lens` returns `Y` as the forward module does and the gradients as autograd."""
    program = ncd.load(GALLERY / "iris.ncd", sizes={"b": 3})
    lens = program.lens("iris_mlp")
    assert lens.name == "iris_mlp_lens"
    assert [v.name for v in lens.ir.outputs] == ["Y", "dX", "dW_in", "db_in", "dW_out",
                                                 "db_out"]
    forward = program["iris_mlp"].to_torch(dtype=torch.float64)
    module = lens.program.to_torch(lens.name, dtype=torch.float64)
    module.load_state_dict(forward.state_dict())
    X = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    dY = torch.randn(3, 3, dtype=torch.float64)
    Y = forward(X)
    expected = torch.autograd.grad(Y, [X, *forward.parameters()], dY)
    with torch.no_grad():
        found = module(X.detach(), dY)
    torch.testing.assert_close(found[0], Y.detach())
    for a, b in zip(found[1:], expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("flag", ["--grad", "--lens"])
def test_cli_draws_the_lens(flag: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "drawn.svg"
    code = main(["render", str(GALLERY / "iris.ncd"), "iris_mlp", flag, "-o", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert output.read_text(encoding="utf-8").startswith("<svg")


def test_api_render_draws_the_lens() -> None:
    program = ncd.load(GALLERY / "iris.ncd")
    plain = program.render("iris_mlp")
    grad = program.render("iris_mlp", grad=True)
    lens = program["iris_mlp"].render(lens=True)
    assert grad != plain and lens != grad and lens.startswith("<svg")
    with pytest.raises(TypeError, match="grad must be True or False"):
        program.render("iris_mlp", grad="yes")  # type: ignore[arg-type]


SET_UP = """axis b
axis m = 3, n = 2

def model(X: R[b, m]) -> R[b, n] {
    return linear[m -> n, bias](X, W, c)
}

train fit {
    model: model
    loss: mse
    optimiser: momentum(lr = 0.1, momentum = 0.9)
}
"""


@functools.cache
def training_drawing(source: str, name: str) -> Diagram:
    program = ncd.load(source) if "\n" in source else ncd.load(GALLERY / source)
    drawn_program, drawn_name, view = program.training_drawing(name)
    return diagram(drawn_program.ir, drawn_name, RenderOptions(lens=view))


@pytest.mark.parametrize(("source", "name"), [("iris.ncd", "fit_iris"), (SET_UP, "fit")],
                         ids=["iris", "momentum"])
def test_a_training_set_up_draws_as_a_lens(source: str, name: str) -> None:
    """The model's lens with the loss on its output (the loss out and the targets in at the
    right, the output's gradient back into the backward block) and the optimiser on the
    parameter wires: its hyper-parameters and state named, a wire up into the model for
    each parameter, the parameters' gradients into it."""
    found = training_drawing(source, name)
    assert found.validate() == []
    kinds = {box.kind: box for box in found.boxes}
    optimiser, loss = kinds["optimiser"], kinds["loss"]
    training = (ncd.load(source) if "\n" in source else ncd.load(GALLERY / source)
                ).ir.training(name)
    inside = {t.label.plain_text() for t in found.items
              if isinstance(t, Text) and t.owner == optimiser.id}
    assert training.optimiser.name in inside
    assert {h.name for h in training.optimiser.hyper} <= {text.split(" = ")[0]
                                                          for text in inside}
    params = [p.name for p in training.params]
    ups = [p for p in optimiser.ports if p.side == "top"]
    assert len(ups) == len(params)
    names = _texts(found)
    for state in {s.name for s in training.state}:
        assert state in names and f"{state}\u2032" in names
    # one gradient wire in per axis of each parameter
    assert len([p for p in optimiser.ports if p.side == "right"]) == sum(
        len(p.array.shape.axes) for p in training.params)
    assert {"L", "T"} <= set(names)
    assert any(p.side == "left" for p in loss.ports) and any(p.side == "right"
                                                             for p in loss.ports)


def test_cli_draws_a_training_set_up(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "fit.svg"
    code = main(["render", str(GALLERY / "iris.ncd"), "fit_iris", "-o", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert output.read_text(encoding="utf-8").startswith("<svg")
