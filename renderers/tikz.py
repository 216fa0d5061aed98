"""TikZ emitter: the same `Diagram`, drawn as a `tikzpicture` for LaTeX documents.

One SVG px is 0.75 pt, so the figure has the SVG's size. Labels are TikZ nodes whose text is
math mode built from the label's runs (italic axis names, bold operator letters, upright
titles in `\\text{}`); every character that means something to TeX is escaped. The picture
needs `\\usepackage{tikz}` and `\\usepackage{amsmath,amssymb}` in the preamble.
"""

from __future__ import annotations

from typing import assert_never

from .geometry import Circle, Diagram, Path, Polygon, Rect, Stroke, Text
from .style import num as _num
from .style import rgb
from .text import Label, Run

PT_PER_PX = 0.75

_TEXT_ESCAPES = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_SYMBOLS = {
    "\u00d7": r"\times", "\u03c3": r"\sigma", "\u03a3": r"\Sigma", "\u2212": "-",
    "\u22c5": r"\cdot", "\u00b7": r"\cdot", "\u2115": r"\mathbb{N}", "\u211d": r"\mathbb{R}",
    "\U0001d539": r"\mathbb{B}", "\u21bb": r"\circlearrowright", "\u221a": r"\surd",
    "\u2264": r"\leq", "\u2265": r"\geq", "\u2260": r"\neq", "\u2192": r"\to",
    "\u00b2": "^2", "\u2254": r"\coloneqq", "\u2026": r"\ldots",
}


def escape_text(text: str) -> str:
    """Text for `\\text{...}`: TeX's special characters escaped, symbols as math, and any
    other character outside printable ASCII replaced (it may not exist in the font)."""
    out: list[str] = []
    for char in text:
        if char in _TEXT_ESCAPES:
            out.append(_TEXT_ESCAPES[char])
        elif char in _SYMBOLS:
            out.append(rf"\ensuremath{{{_SYMBOLS[char]}}}")
        elif 32 <= ord(char) < 127:
            out.append(char)
        else:
            out.append("?")
    return "".join(out)


def _math_letters(text: str) -> str:
    """Letters and digits as they are; anything else escaped through `\\text{}`."""
    out: list[str] = []
    for char in text:
        if char.isascii() and char.isalnum():
            out.append(char)
        elif char in _SYMBOLS:
            out.append(_SYMBOLS[char] + " ")
        else:
            out.append(r"\text{" + escape_text(char) + "}")
    return "".join(out)


def _run(run: Run) -> str:
    if run.style == "roman":
        body = r"\text{" + escape_text(run.text) + "}"
    elif run.style == "italic":
        body = r"\mathit{" + _math_letters(run.text) + "}"
    elif run.style == "bold":
        body = r"\mathbf{" + _math_letters(run.text) + "}"
    else:
        body = r"\boldsymbol{" + _math_letters(run.text) + "}"
    return body


def label_tex(label: Label) -> str:
    """A label as math-mode TeX: `d_ff` -> `$\\mathit{d}_{\\mathit{ff}}$`."""
    parts: list[str] = []
    index = 0
    runs = label.runs
    while index < len(runs):
        run = runs[index]
        if run.script == "base":
            parts.append(_run(run))
            index += 1
            continue
        script = run.script
        group: list[str] = []
        while index < len(runs) and runs[index].script == script:
            group.append(_run(runs[index]))
            index += 1
        if not parts:
            parts.append("{}")
        parts.append(("_" if script == "sub" else "^") + "{" + "".join(group) + "}")
    return "$" + "".join(parts) + "$" if parts else ""


class _Colours:
    """Named colours, defined once at the top of the picture."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, colour: str) -> str:
        colour = colour.lower()
        if colour not in self.names:
            self.names[colour] = f"ncd{len(self.names)}"
        return self.names[colour]

    def definitions(self) -> list[str]:
        return [rf"\definecolor{{{name}}}{{HTML}}{{{_html(colour)}}}"
                for colour, name in self.names.items()]


def _html(colour: str) -> str:
    """`RRGGBB` for `\\definecolor{...}{HTML}`; black for a colour that cannot be read."""
    return "{:02X}{:02X}{:02X}".format(*(rgb(colour) or (0, 0, 0)))


def _stroke_options(stroke: Stroke | None, colours: _Colours) -> list[str]:
    if stroke is None:
        return []
    options = [f"draw={colours(stroke.color)}", f"line width={_num(stroke.width * PT_PER_PX)}pt"]
    if stroke.dash:
        pattern = " ".join(
            f"{'on' if i % 2 == 0 else 'off'} {_num(d * PT_PER_PX)}pt"
            for i, d in enumerate(stroke.dash)
        )
        options.append(f"dash pattern={pattern}")
    return options


def _point(x: float, y: float) -> str:
    return f"({_num(x)},{_num(y)})"


def render(diagram: Diagram, standalone: bool = False) -> str:
    """The `tikzpicture`, or (`standalone`) a complete document around it (`document`)."""
    colours = _Colours()
    body: list[str] = []
    if diagram.background and diagram.background.lower() != "#ffffff":
        body.append(rf"\fill[{colours(diagram.background)}] (0,0) rectangle "
                    f"{_point(diagram.width, diagram.height)};")
    for item in diagram.sorted_items():
        if isinstance(item, Path):
            options = _stroke_options(item.stroke, colours)
            if item.fill:
                options.insert(0, f"fill={colours(item.fill)}")
            parts = [_point(*item.start)]
            for seg in item.segments:
                if len(seg) == 2:
                    parts.append(f"-- {_point(seg[0], seg[1])}")
                else:
                    parts.append(f".. controls {_point(seg[0], seg[1])} and "
                                 f"{_point(seg[2], seg[3])} .. {_point(seg[4], seg[5])}")
            if item.closed:
                parts.append("-- cycle")
            body.append(rf"\path[{', '.join(options)}] {' '.join(parts)};")
        elif isinstance(item, Rect):
            options = _stroke_options(item.stroke, colours)
            if item.fill:
                options.insert(0, f"fill={colours(item.fill)}")
            if item.radius:
                options.append(f"rounded corners={_num(item.radius * PT_PER_PX)}pt")
            body.append(rf"\path[{', '.join(options)}] {_point(item.x, item.y)} rectangle "
                        f"{_point(item.x + item.width, item.y + item.height)};")
        elif isinstance(item, Polygon):
            options = _stroke_options(item.stroke, colours)
            if item.fill:
                options.insert(0, f"fill={colours(item.fill)}")
            points = " -- ".join(_point(x, y) for x, y in item.points)
            body.append(rf"\path[{', '.join(options)}] {points} -- cycle;")
        elif isinstance(item, Circle):
            options = _stroke_options(item.stroke, colours)
            if item.fill:
                options.insert(0, f"fill={colours(item.fill)}")
            body.append(rf"\path[{', '.join(options)}] {_point(item.cx, item.cy)} circle "
                        f"[radius={_num(item.r)}];")
        elif isinstance(item, Text):
            tex = label_tex(item.label)
            if not tex:
                continue
            size = item.size * PT_PER_PX
            if standalone:  # `|` is a dash in the default (OT1) encoding: ask for a bar
                tex = tex.replace("|", r"\textbar{}")
                tex = rf"\ncdlabel{{{_num(item.width * PT_PER_PX)}pt}}{{{tex}}}"
            body.append(
                rf"\node[anchor=base west, inner sep=0pt, text={colours(item.color)}, "
                rf"font=\fontsize{{{_num(size)}}}{{{_num(size * 1.2)}}}\selectfont] at "
                f"{_point(item.x, item.y)} {{{tex}}};"
            )
        else:
            assert_never(item)
    unit = "bp" if standalone else "pt"
    header = [] if standalone else [
        f"% ncd diagram {escape_text(diagram.title)}: needs \\usepackage{{tikz}} and "
        "\\usepackage{amsmath,amssymb}",
    ]
    header += [
        # A standalone page is exactly the SVG's size: 0.75 big points (PDF's) per px.
        rf"\begin{{tikzpicture}}[x={_num(PT_PER_PX)}{unit}, y=-{_num(PT_PER_PX)}{unit}, "
        "line cap=round, line join=round]",
        *colours.definitions(),
        # The picture's full extent, so LaTeX reserves the same space as the SVG (a standalone
        # page exactly that: curves' control points that stick out do not count).
        (r"\useasboundingbox" if standalone else r"\path")
        + f" (0,0) rectangle {_point(diagram.width, diagram.height)};",
    ]
    picture = "\n".join([*header, *body, r"\end{tikzpicture}"]) + "\n"
    return document(diagram, picture) if standalone else picture


STANDALONE_PREAMBLE = r"""\RequirePackage{fix-cm}
\documentclass[border=0pt]{standalone}
\usepackage{tikz}
\usepackage{amsmath,amssymb}
\usepackage{graphicx}
% \ncdlabel{W}{LABEL}: the label in this document's fonts, centred in the width W that the
% layout measured it at (in STIX Two Math), and scaled down to W where these fonts set it
% wider, so that no label runs out of its place whatever the fonts.
\newsavebox\ncdbox
\newcommand\ncdlabel[2]{\sbox\ncdbox{#2}%
  \ifdim\wd\ncdbox>#1\relax\resizebox{#1}{!}{\usebox\ncdbox}%
  \else\makebox[#1][c]{\usebox\ncdbox}\fi}
"""
"""What a standalone document needs, all of it in every LaTeX installation: `fix-cm` sets
Computer Modern at exactly the sizes asked for (8.25 pt, not the nearest design size),
`graphicx` scales a label that these fonts set wider than the layout measured it (Computer
Modern runs some 10% wider than STIX Two: such a label is set that much smaller, never beyond
its place)."""


def document(diagram: Diagram, picture: str) -> str:
    """A complete LaTeX document of one page, the picture's size (the SVG's: the picture
    draws its full extent): `pdflatex` or `lualatex` make a PDF of it."""
    return (f"% ncd diagram {escape_text(diagram.title)}: a standalone LaTeX document\n"
            + STANDALONE_PREAMBLE + "\\begin{document}\n" + picture + "\\end{document}\n")
