"""The gallery: every file checks, and the diagrams committed next to the sources are exactly
what the renderer draws now (`make demo` redraws them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gallery_cases import gallery_diagram
from ncd.renderers import RenderOptions, svg

import ncd
from ncd import ir
from ncd.gallery_job import BACKWARD, LENS

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
SOURCES = sorted(GALLERY.glob("*.ncd"))
REQUIRED = {"mlp", "conv1d", "attention", "transformer", "lstm"}


def test_the_gallery_has_the_required_models() -> None:
    assert REQUIRED <= {path.stem for path in SOURCES}


def _diagrams(source: Path) -> list[tuple[str, RenderOptions, Path]]:
    """(definition, options, file) of each diagram `make demo` draws of `source` but the
    backward one (`_backward_diagram`)."""
    program = ncd.load(source)
    main = program.main.name
    found = []
    for definition in program.definitions:
        if definition.ir.span is None or Path(definition.ir.span.file).name != source.name:
            continue
        suffix = "" if definition.name == main else f".{definition.name}"
        found.append((definition.name, RenderOptions(), GALLERY / f"{source.stem}{suffix}.svg"))
        if any(isinstance(t, ir.Broadcasted) and t.op.kind == "call"
               for t in ir.walk(definition.ir.body)):
            found.append((definition.name, RenderOptions(expand_calls=True),
                          GALLERY / f"{source.stem}{suffix}.expanded.svg"))
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_diagrams_are_up_to_date(source: Path) -> None:
    diagrams = _diagrams(source)
    assert diagrams, f"{source.name} draws nothing"
    for name, options, path in diagrams:
        assert path.is_file(), f"{path.name} is missing: run `make demo`"
        # `render_svg` is this: the SVG emitter on the definition's layout
        drawn = svg.render(gallery_diagram(source, name, options))
        assert path.read_text(encoding="utf-8") == drawn, (
            f"{path.name} is not what the renderer draws now: run `make demo` and look at it")


@pytest.mark.parametrize(("stems", "kind"), [(BACKWARD, "grad"), (LENS, "lens")])
def test_the_derivative_diagrams_are_up_to_date(stems: tuple[str, ...], kind: str) -> None:
    """`NAME.grad.svg` and `NAME.lens.svg`: the backward definition of the main definition of
    each file in `BACKWARD`, and the lens view of each in `LENS`, drawn as `ncd render --grad`
    and `--lens` draw them."""
    assert stems, f"no {kind} diagram in the gallery"
    for stem in stems:
        program = ncd.load(GALLERY / f"{stem}.ncd")
        path = GALLERY / f"{stem}.{kind}.svg"
        assert path.is_file(), f"{path.name} is missing: run `make demo`"
        assert path.read_text(encoding="utf-8") == program.render(
            grad=kind == "grad", lens=kind == "lens"), (
            f"{path.name} is not what the renderer draws now: run `make demo` and look at it")


def test_the_training_diagrams_are_up_to_date() -> None:
    """`NAME.TRAIN.svg`: each training set-up, drawn as `ncd render FILE TRAIN` draws it."""
    drawn = 0
    for source in SOURCES:
        program = ncd.load(source)
        for training in program.training_names:
            path = GALLERY / f"{source.stem}.{training}.svg"
            assert path.is_file(), f"{path.name} is missing: run `make demo`"
            assert path.read_text(encoding="utf-8") == program.render(training), (
                f"{path.name} is not what the renderer draws now: run `make demo`")
            drawn += 1
    assert drawn, "no training set-up in the gallery"


def test_no_stale_diagrams() -> None:
    expected = {path for source in SOURCES for _, _, path in _diagrams(source)}
    expected |= {GALLERY / f"{source.stem}.{training}.svg" for source in SOURCES
                 for training in ncd.load(source).training_names}
    expected |= {GALLERY / f"{stem}.grad.svg" for stem in BACKWARD}
    expected |= {GALLERY / f"{stem}.lens.svg" for stem in LENS}
    assert set(GALLERY.glob("*.svg")) == expected


def test_transformer_shows_what_the_reference_figure_shows() -> None:
    """The expanded transformer layer carries every element of the published figure
    (`reference-transformer.png`): L_q, L_k, L_v, L_o cards, contraction cups, the softmax
    triangle, the mask square, the residual copies and additions, the norm circles, titled
    blocks and the x6 repetition."""
    from ncd.renderers import diagram
    from ncd.renderers.geometry import Circle, Path, Text
    from ncd.renderers.layout import PITCH

    program = ncd.load(GALLERY / "transformer.ncd").ir
    drawn = diagram(program, "transformer", RenderOptions(expand_calls=True))
    kinds = [box.kind for box in drawn.boxes]
    texts = {item.label.plain_text() for item in drawn.items if isinstance(item, Text)}
    assert {"L_q", "L_k", "L_v", "L_o"} <= texts
    assert kinds.count("linear") >= 4
    assert kinds.count("softmax") == 1 and kinds.count("mask") == 1
    assert kinds.count("norm") >= 2
    assert {"Transformer layer", "Attention", "Feed forward", "×6"} <= texts
    cups = [p for p in drawn.items if isinstance(p, Path) and p.role == "axis"
            and abs(p.start[0] - p.end[0]) < 0.01 and abs(p.start[1] - p.end[1]) > PITCH / 2]
    assert len(cups) >= 2  # k in the scores, y in the weighted sum
    # A residual: the input is copied at a dot and meets the branch at a `+` (two strokes).
    dots = [c for c in drawn.items if isinstance(c, Circle) and c.fill is not None]
    assert len(dots) >= 2
    pluses = [p for p in drawn.items if isinstance(p, Path) and p.role is None
              and len(p.segments) == 1 and abs(abs(p.end[0] - p.start[0]) - 12.0) < 0.01
              and abs(p.end[1] - p.start[1]) < 0.01]
    assert len(pluses) >= 2
