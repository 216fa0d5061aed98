"""Renderers: the IR drawn as a neural circuit diagram.

`render_svg`, `render_tikz` and `render_pdf` lay a definition out (`layout/`: term ->
geometry) and hand the geometry to a thin emitter (`svg.py`, `tikz.py`, `pdf.py`). They
return the document (a string; bytes for PDF) and never touch files; `diagram` gives the
geometry itself, with `Diagram.validate()`.
"""

from __future__ import annotations

from ncd import ir
from ncd.context import paused_collection

from . import pdf, svg, tikz
from .geometry import Diagram
from .layout import RenderOptions, layout_definition

__all__ = ["Diagram", "RenderOptions", "diagram", "render_pdf", "render_svg", "render_tikz"]


def diagram(program: ir.Program, definition: str,
            options: RenderOptions | None = None) -> Diagram:
    """The geometry of `definition` (raises KeyError for an unknown name)."""
    with paused_collection():  # many long-lived objects: see `paused_collection`
        return layout_definition(program, definition, options or RenderOptions())


def render_svg(program: ir.Program, definition: str,
               options: RenderOptions | None = None) -> str:
    """The neural circuit diagram of `definition` as a standalone SVG document."""
    options = options or RenderOptions()
    with paused_collection():
        return svg.render(diagram(program, definition, options), text=options.text)


def render_tikz(program: ir.Program, definition: str,
                options: RenderOptions | None = None) -> str:
    """The same diagram as a `tikzpicture` environment, or (`options.standalone`) as a
    complete LaTeX document."""
    options = options or RenderOptions()
    with paused_collection():
        return tikz.render(diagram(program, definition, options), standalone=options.standalone)


def render_pdf(program: ir.Program, definition: str,
               options: RenderOptions | None = None) -> bytes:
    """The same diagram as a one-page PDF, its labels real text in the embedded font."""
    with paused_collection():
        return pdf.render(diagram(program, definition, options))
