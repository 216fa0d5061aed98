"""The gallery as the tests see it: every file loaded, and every diagram laid out, once per
test process.

Several test modules parametrize over every gallery definition at collection and then render,
compile or measure each one; loading a file once (the IR is immutable) keeps each worker from
checking the whole gallery five times over. Collection fails if the gallery is missing or a
file does not load: a case left out is a case never checked.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ncd.renderers import Diagram, RenderOptions, diagram

import ncd

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
SOURCES = tuple(sorted(GALLERY.glob("*.ncd")))
assert SOURCES, f"no gallery files in {GALLERY}"
DEFAULT = RenderOptions()


@functools.cache
def gallery_program(path: Path) -> ncd.Program:
    """The checked program of a gallery file, with its declared sizes."""
    program = ncd.load(path)
    assert program.names, f"{path.name} defines nothing"
    return program


def gallery_definitions() -> list[tuple[Path, str]]:
    """(file, definition name) for every definition of every gallery file, in file order."""
    return [(path, name) for path in SOURCES for name in gallery_program(path).names]


@functools.cache
def gallery_diagram(path: Path, name: str, options: RenderOptions = DEFAULT) -> Diagram:
    """The geometry of a gallery definition, laid out once per test process: the layout, the
    PDF and the committed-SVG tests read the same diagrams, and nothing that reads a `Diagram`
    (an emitter, `validate()`) changes it."""
    return diagram(gallery_program(path).ir, name, options)
