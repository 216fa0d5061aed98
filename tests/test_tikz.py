"""The TikZ emitter: the same geometry as the SVG, as a well-formed `tikzpicture`.

When `pdflatex` or `lualatex` is installed the pictures are compiled; otherwise only their
form is checked (and the compile test says it was skipped, never that it passed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ncd.renderers import RenderOptions, diagram, render_tikz
from ncd.renderers.geometry import Circle, Polygon, Rect, Text
from ncd.renderers.geometry import Path as WirePath
from ncd.renderers.text import Label, Run
from ncd.renderers.tikz import escape_text, label_tex

from ncd import ir

sys.path.insert(0, str(Path(__file__).parent))
import ir_samples

LATEX = shutil.which("lualatex") or shutil.which("pdflatex")


@pytest.fixture(scope="module")
def samples() -> ir.Program:
    return ir_samples.program()


def balanced(text: str) -> bool:
    depth = 0
    escaped = False
    for char in text:
        if escaped:
            escaped = False
            continue
        if char == "\\":
            escaped = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


@pytest.mark.parametrize("name", ir_samples.SAMPLES)
def test_picture_is_well_formed(samples: ir.Program, name: str) -> None:
    tex = render_tikz(samples, name, RenderOptions(show_params=True))
    assert tex.count(r"\begin{tikzpicture}") == 1 and tex.count(r"\end{tikzpicture}") == 1
    assert tex.index(r"\begin{tikzpicture}") < tex.index(r"\end{tikzpicture}")
    assert balanced(tex)
    assert tex.count("[") == tex.count("]")
    for line in tex.splitlines()[2:-1]:
        assert line.startswith(("\\definecolor", "\\path", "\\node", "\\fill")), line
        assert line.endswith(";") or line.startswith("\\definecolor"), line
    assert render_tikz(samples, name) == render_tikz(samples, name)


def test_picture_draws_the_same_geometry(samples: ir.Program) -> None:
    d = diagram(samples, "attention")
    tex = render_tikz(samples, "attention")
    assert tex.count(r"\node") == sum(1 for i in d.items if isinstance(i, Text))
    shapes = sum(1 for i in d.items if isinstance(i, WirePath | Rect | Polygon | Circle))
    assert tex.count(r"\path[") == shapes
    width, height = (f"{v:.2f}".rstrip("0").rstrip(".") for v in (d.width, d.height))
    assert f"rectangle ({width},{height});" in tex


def test_labels_become_math_mode() -> None:
    assert label_tex(Label.axis("d_ff")) == r"$\mathit{d}_{\mathit{ff}}$"
    assert label_tex(Label.operator("L", "q")) == r"$\mathbf{L}_{\mathit{q}}$"
    assert label_tex(Label.plain("a_b & {c}")) == r"$\text{a\_b \& \{c\}}$"
    assert label_tex(Label((Run("\u00d76"),))) == r"$\text{\ensuremath{\times}6}$"


def test_tex_specials_are_escaped() -> None:
    assert escape_text("100% $#^~\\") == (r"100\% \$\#\^{}\~{}\textbackslash{}")
    hostile = ir.Program(
        source="<hostile>", axes=ir_samples.AXES,
        definitions=(ir_samples.definition("hostile", ir.Block(
            dom=(ir_samples.XM,), cod=(ir_samples.XM,), title=r"}\end{tikzpicture}\input{x}",
            body=ir_samples.norm())),))
    tex = render_tikz(hostile, "hostile")
    assert tex.count(r"\end{tikzpicture}") == 1 and r"\input" not in tex
    assert balanced(tex)


@pytest.mark.skipif(LATEX is None, reason="no pdflatex or lualatex installed: compile not run")
@pytest.mark.parametrize("name", ["attention", "layer", "reindexings", "embedding"])
def test_picture_compiles(samples: ir.Program, name: str, tmp_path: Path) -> None:
    document = "\n".join([
        r"\documentclass{article}", r"\usepackage{tikz}", r"\usepackage{amsmath,amssymb}",
        r"\begin{document}", render_tikz(samples, name), r"\end{document}",
    ])
    (tmp_path / "figure.tex").write_text(document, encoding="utf-8")
    assert LATEX is not None
    result = subprocess.run([LATEX, "-interaction=nonstopmode", "-halt-on-error", "figure.tex"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, re.sub(r"\n+", "\n", result.stdout[-3000:])
    assert (tmp_path / "figure.pdf").exists()


# ----------------------------------------------------------------------------- standalone


STANDALONE_LATEX = shutil.which("pdflatex") or shutil.which("lualatex")
"""pdflatex first: the standalone class needs `luatex85` under LuaLaTeX, which minimal
installations leave out."""
OPEN = r"\begin{tikzpicture}[x=0.75bp, y=-0.75bp, line cap=round, line join=round]"


def standalone(program: ir.Program, name: str) -> str:
    return render_tikz(program, name, RenderOptions(standalone=True))


@pytest.mark.parametrize("name", ["attention", "layer", "embedding"])
def test_standalone_is_a_complete_document(samples: ir.Program, name: str) -> None:
    document = standalone(samples, name)
    lines = document.splitlines()
    assert lines[0].startswith("% ncd diagram")
    assert lines.index(r"\documentclass[border=0pt]{standalone}") \
        < lines.index(r"\begin{document}") \
        < lines.index(OPEN) < lines.index(r"\end{tikzpicture}") \
        < lines.index(r"\end{document}") == len(lines) - 1
    for package in ("tikz", "amsmath,amssymb", "graphicx"):
        assert rf"\usepackage{{{package}}}" in lines
    assert balanced(document)
    assert document == standalone(samples, name)


def test_standalone_draws_the_picture_with_labels_fitted_to_their_place(
        samples: ir.Program) -> None:
    """The same picture as the plain TikZ, each label set in a box of the width the layout
    measured it at, so that the document's fonts cannot make it run out of its place."""
    picture = render_tikz(samples, "attention").splitlines()
    document = standalone(samples, "attention").splitlines()
    body = document[document.index(OPEN):document.index(r"\end{document}")]
    # The page is the SVG's size in PDF points, its bounding box fixed to the canvas.
    assert body[0] == picture[1].replace("pt", "bp")
    assert [line for line in body[1:] if not line.startswith(r"\node")] \
        == [line.replace(r"\path (0,0)", r"\useasboundingbox (0,0)") for line in picture[2:]
            if not line.startswith(r"\node")]
    texts = [item for item in diagram(samples, "attention").items if isinstance(item, Text)]
    nodes = [line for line in body if line.startswith(r"\node")]
    assert len(nodes) == len(texts)
    for node, item, plain in zip(nodes, texts, [n for n in picture if n.startswith(r"\node")],
                                 strict=True):
        width = f"{item.width * 0.75:.2f}".rstrip("0").rstrip(".")
        tex = plain[plain.index("{$"):-1]
        assert node.endswith(rf"{{\ncdlabel{{{width}pt}}{tex}}};"), node


def test_plain_picture_is_unchanged_by_the_option(samples: ir.Program) -> None:
    assert render_tikz(samples, "attention", RenderOptions(standalone=False)) \
        == render_tikz(samples, "attention")
    assert r"\ncdlabel" not in render_tikz(samples, "attention")


@pytest.mark.skipif(STANDALONE_LATEX is None,
                    reason="no pdflatex or lualatex installed: compile not run")
@pytest.mark.parametrize("name", ["attention", "reindexings", "embedding"])
def test_standalone_compiles_to_the_svg_size(samples: ir.Program, name: str,
                                             tmp_path: Path) -> None:
    import io

    import pypdf

    (tmp_path / "figure.tex").write_text(standalone(samples, name), encoding="utf-8")
    assert STANDALONE_LATEX is not None
    result = subprocess.run([STANDALONE_LATEX, "-interaction=nonstopmode", "-halt-on-error",
                             "figure.tex"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, re.sub(r"\n+", "\n", result.stdout[-3000:])
    d = diagram(samples, name)
    box = pypdf.PdfReader(io.BytesIO((tmp_path / "figure.pdf").read_bytes())).pages[0].mediabox
    assert float(box.width) == pytest.approx(d.width * 0.75, abs=0.01)
    assert float(box.height) == pytest.approx(d.height * 0.75, abs=0.01)
