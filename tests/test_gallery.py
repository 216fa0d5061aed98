"""The gallery: every file checks, and the diagrams committed next to the sources are exactly
what the renderer draws now (`make demo` redraws them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ncd.renderers import RenderOptions, render_svg

import ncd
from ncd import ir

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
SOURCES = sorted(GALLERY.glob("*.ncd"))
REQUIRED = {"mlp", "conv1d", "attention", "transformer", "lstm"}


def test_the_gallery_has_the_required_models() -> None:
    assert REQUIRED <= {path.stem for path in SOURCES}


def _diagrams(source: Path) -> list[tuple[str, RenderOptions, Path]]:
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
    program = ncd.load(source)
    for name, options, path in _diagrams(source):
        assert path.is_file(), f"{path.name} is missing: run `make demo`"
        drawn = render_svg(program.ir, name, options)
        assert path.read_text(encoding="utf-8") == drawn, (
            f"{path.name} is not what the renderer draws now: run `make demo` and look at it")


def test_no_stale_diagrams() -> None:
    expected = {path for source in SOURCES for _, _, path in _diagrams(source)}
    assert set(GALLERY.glob("*.svg")) == expected
