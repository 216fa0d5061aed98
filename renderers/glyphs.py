"""The glyph of each base operation, drawn as its declaration says, and the colour themes.

An operator's declaration (`ncd.ops`) gives its glyph: a *box* spanning the operation's target
wires, with a named outline and a caption (the bold `L_q` of a linear map, the function name of
an elementwise map); a *junction* where the wires of several inputs meet, with a mark (`+` for
addition); or *cups* (einsum: contracted axes joined by arcs, no box at all). This module
draws each outline and mark into a frame the layout has sized to fit the caption, and sets the
caption in the diagram's text. `glyph_of(op)` finds an operation's glyph by the type of its IR
node; the outlines, marks and caption kinds are matched exhaustively, so a new one is a type
error here, not a silent default in the picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

from ncd import ir
from ncd.operators import DECLARATIONS
from ncd.ops import declaration as decl

from .geometry import LAYER_BOX, LAYER_MARK, Circle, Item, Path, Polygon, Rect, Stroke
from .style import hex_colour, rgb
from .text import Label, Run

# --------------------------------------------------------------------------------------
# Themes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Theme:
    name: str
    background: str | None
    ink: str
    """Wires, outlines and dots."""
    text: str
    separator: str
    box_fill: str
    card_fill: str
    norm_fill: str
    call_fill: str
    hexagon_fill: str
    mask_dark: str
    mask_light: str
    block_stroke: str
    blocks: tuple[str, ...]
    """Block fills by nesting depth; neighbours differ in lightness so they survive greyscale."""
    mix_with: str
    """A user's block colour is mixed with this to make a light (or dark) fill."""
    greyscale: bool = False


THEMES: dict[str, Theme] = {
    "light": Theme(
        name="light", background="#ffffff", ink="#000000", text="#000000", separator="#6e6e6e",
        box_fill="#ffffff", card_fill="#e3ebee", norm_fill="#e5f6fb", call_fill="#eef1f6",
        hexagon_fill="#f0f0f0", mask_dark="#7f7f7f", mask_light="#f6c4d7",
        block_stroke="#8c8c8c",
        blocks=("#f3f3c8", "#cbc3e3", "#c4e6f5", "#f7dccb", "#d5edd2"),
        mix_with="#ffffff",
    ),
    "dark": Theme(
        name="dark", background="#1c1e22", ink="#e6e6e6", text="#f0f0f0", separator="#9a9a9a",
        box_fill="#2b2e34", card_fill="#38454d", norm_fill="#274852", call_fill="#343a46",
        hexagon_fill="#3a3a3a", mask_dark="#a0a0a0", mask_light="#a85f7b",
        block_stroke="#6a6a6a",
        blocks=("#3b3d26", "#332d4b", "#213f4c", "#4a3527", "#29402a"),
        mix_with="#1c1e22",
    ),
    # Greyscale-safe: fills are greys of distinct lightness, the mask keeps its contrast.
    "print": Theme(
        name="print", background="#ffffff", ink="#000000", text="#000000", separator="#000000",
        box_fill="#ffffff", card_fill="#e6e6e6", norm_fill="#f2f2f2", call_fill="#ededed",
        hexagon_fill="#f2f2f2", mask_dark="#6b6b6b", mask_light="#d4d4d4",
        block_stroke="#7a7a7a",
        blocks=("#f2f2f2", "#dcdcdc", "#ebebeb", "#d0d0d0", "#f7f7f7"),
        mix_with="#ffffff", greyscale=True,
    ),
}

def block_fill(theme: Theme, depth: int, colour: str | None) -> str:
    """The fill of a block: the user's colour (a `#rgb`/`#rrggbb` or a common name; anything
    else is ignored, so source text never reaches the output) made light enough to draw
    wires on, or the theme's palette colour for the nesting depth."""
    base = rgb(colour) if colour is not None else None
    mix = rgb(theme.mix_with)
    if base is None or mix is None:
        return theme.blocks[depth % len(theme.blocks)]
    r, g, b = base
    mr, mg, mb = mix
    t = 0.72  # share of the background: a tint, never a saturated fill under black wires
    mixed = (r + (mr - r) * t, g + (mg - g) * t, b + (mb - b) * t)
    if theme.greyscale:
        grey = 0.299 * mixed[0] + 0.587 * mixed[1] + 0.114 * mixed[2]
        return hex_colour((grey, grey, grey))
    return hex_colour(mixed)


# --------------------------------------------------------------------------------------
# Glyph outlines
# --------------------------------------------------------------------------------------

OUTLINE = 1.2
"""Stroke width of glyph outlines (wires are 1.3; the norm circle is heavier, as published)."""


def _stroke(theme: Theme, width: float = OUTLINE) -> Stroke:
    return Stroke(theme.ink, width)


def card(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A card with its bottom-left corner folded (learned maps: linear, embedding)."""
    fold = min(9.0, h * 0.3)
    outline = Polygon(
        ((x + fold, y + h), (x, y + h - fold), (x, y), (x + w, y), (x + w, y + h)),
        theme.card_fill, _stroke(theme),
    )
    crease = Path((x, y + h - fold), ((x + fold, y + h - fold), (x + fold, y + h)),
                  _stroke(theme, 0.8), layer=LAYER_BOX)
    return [outline, crease]


def buffer_card(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """The card of `card`, dashed and unfilled: a buffer, state that is not learned."""
    fold = min(9.0, h * 0.3)
    dashed = Stroke(theme.ink, OUTLINE, (3.0, 2.0))
    outline = Polygon(
        ((x + fold, y + h), (x, y + h - fold), (x, y), (x + w, y), (x + w, y + h)),
        theme.box_fill, dashed,
    )
    crease = Path((x, y + h - fold), ((x + fold, y + h - fold), (x + fold, y + h)),
                  _stroke(theme, 0.8), layer=LAYER_BOX)
    return [outline, crease]


def triangle_left(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A white triangle pointing left (softmax)."""
    return [Polygon(((x, y + h / 2), (x + w, y), (x + w, y + h)), theme.box_fill,
                    _stroke(theme, 1.5))]


def norm_circle(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A circle (a stadium when it spans several wires) with a V inside (normalisation)."""
    radius = min(w, h) / 2
    cx, cy = x + w / 2, y + h / 2
    v = radius * 0.62
    return [
        Rect(x, y, w, h, theme.norm_fill, _stroke(theme, 2.2), radius=radius),
        Path((cx - v * 0.72, cy - v * 0.62), ((cx, cy + v * 0.8), (cx + v * 0.72, cy - v * 0.62)),
             _stroke(theme, 1.3), layer=LAYER_BOX),
    ]


def batchnorm_circle(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """The normalisation circle with a bar under its V: the statistics of the batch."""
    radius = min(w, h) / 2
    cx, cy = x + w / 2, y + h / 2
    v = radius * 0.62
    bar = cy + v * 0.8 + radius * 0.16
    return [*norm_circle(x, y, w, h, theme),
            Path((cx - v * 0.72, bar), ((cx + v * 0.72, bar),), _stroke(theme, 1.3),
                 layer=LAYER_BOX)]


def mask_square(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A square split on its diagonal: dark above, pink below (a triangular mask)."""
    return [
        Polygon(((x, y), (x + w, y), (x + w, y + h)), theme.mask_dark, None),
        Polygon(((x, y), (x, y + h), (x + w, y + h)), theme.mask_light, None),
        Rect(x, y, w, h, None, _stroke(theme, 1.8)),
    ]


def plain_box(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    return [Rect(x, y, w, h, theme.box_fill, _stroke(theme), radius=2.0)]


def call_box(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    return [Rect(x, y, w, h, theme.call_fill, _stroke(theme), radius=4.0)]


def funnel(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """Narrowing to the right: many pieces become one axis (concat)."""
    inset = h * 0.22
    return [Polygon(((x, y), (x + w, y + inset), (x + w, y + h - inset), (x, y + h)),
                    theme.box_fill, _stroke(theme))]


def fan(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """Widening to the right: one axis becomes many pieces (split)."""
    inset = h * 0.22
    return [Polygon(((x, y + inset), (x + w, y), (x + w, y + h), (x, y + h - inset)),
                    theme.box_fill, _stroke(theme))]


def chevron_box(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A box with a chevron: axes regrouped row-major (reshape)."""
    return [
        Rect(x, y, w, h, theme.box_fill, _stroke(theme), radius=1.0),
        Path((x + w * 0.3, y + h * 0.2), ((x + w * 0.7, y + h / 2), (x + w * 0.3, y + h * 0.8)),
             _stroke(theme, 0.9), layer=LAYER_BOX),
    ]


def rename_tag(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A tag with notched ends: the same data under new axis names (rename)."""
    notch = min(5.0, w * 0.2)
    return [Polygon(((x, y), (x + w, y), (x + w - notch, y + h / 2), (x + w, y + h), (x, y + h),
                     (x + notch, y + h / 2)), theme.box_fill, _stroke(theme))]


def hexagon(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A hexagon (a non-trivial reindexing: stride, window, shift)."""
    tip = min(8.0, h / 2)
    return [Polygon(((x, y + h / 2), (x + tip, y), (x + w - tip, y), (x + w, y + h / 2),
                     (x + w - tip, y + h), (x + tip, y + h)), theme.hexagon_fill,
                    _stroke(theme))]


def pentagon(x: float, y: float, w: float, h: float, theme: Theme) -> list[Item]:
    """A pentagon pointing right (an element: a fixed index)."""
    tip = min(8.0, h / 2)
    return [Polygon(((x, y), (x + w - tip, y), (x + w, y + h / 2), (x + w - tip, y + h),
                     (x, y + h)), theme.box_fill, _stroke(theme))]


def plus_sign(cx: float, cy: float, theme: Theme) -> list[Item]:
    arm = 6.0
    stroke = _stroke(theme, 1.6)
    return [Path((cx - arm, cy), ((cx + arm, cy),), stroke, layer=LAYER_MARK),
            Path((cx, cy - arm), ((cx, cy + arm),), stroke, layer=LAYER_MARK)]


def odot(cx: float, cy: float, theme: Theme) -> list[Item]:
    return [Circle(cx, cy, 5.5, theme.box_fill, _stroke(theme, 1.3)),
            Circle(cx, cy, 1.6, theme.ink, None)]


# --------------------------------------------------------------------------------------
# Glyphs from the declarations
# --------------------------------------------------------------------------------------

Shape = Callable[[float, float, float, float, Theme], list[Item]]
Mark = Callable[[float, float, Theme], list[Item]]


def outline_shape(outline: decl.Outline) -> Shape:
    """The drawing of a box outline named by a declaration."""
    match outline:
        case "card":
            return card
        case "buffer_card":
            return buffer_card
        case "triangle_left":
            return triangle_left
        case "norm_circle":
            return norm_circle
        case "batchnorm_circle":
            return batchnorm_circle
        case "mask_square":
            return mask_square
        case "plain_box":
            return plain_box
        case "call_box":
            return call_box
        case "funnel":
            return funnel
        case "fan":
            return fan
        case "chevron_box":
            return chevron_box
        case "rename_tag":
            return rename_tag
    assert_never(outline)


def junction_mark(mark: decl.Mark) -> Mark:
    """The drawing of a junction's mark named by a declaration."""
    match mark:
        case "plus":
            return plus_sign
        case "odot":
            return odot
    assert_never(mark)


def caption_label(caption: decl.Caption) -> Label:
    """A declaration's caption set in the diagram's kind of text."""
    match caption.kind:
        case "plain":
            if caption.subscript:
                return Label((Run(caption.text), Run(caption.subscript, script="sub")))
            return Label.plain(caption.text)
        case "math":
            return Label.math(caption.text)
        case "operator":
            return Label.operator(caption.text, caption.subscript)
        case "italic":
            return Label((Run(caption.text, "italic"),))
        case "power":
            return Label((Run(caption.text), Run(caption.superscript or "", script="sup")))
    assert_never(caption.kind)


@dataclass(frozen=True)
class BoxGlyph:
    """A box on the operation's target wires: its outline and caption, and its least size."""

    shape: Shape
    describe: Callable[[Any, ir.Broadcasted], decl.Caption | None]
    caption_size: float = 12.0
    min_width: float = 24.0
    min_height: float = 24.0
    square: bool = False
    """Width follows height (circles, the mask square, the softmax triangle)."""
    caption_dx: float = 0.0
    """Where the caption sits, as a share of the width right of centre (the card's fold
    takes its lower-left corner)."""
    deck: Callable[[Any], bool] | None = None
    """Whether an operation is drawn as a deck of boxes (copies with their own parameters)."""
    describe_legend: Callable[[Any, ir.Broadcasted], decl.Caption | None] | None = None
    """Text set under the box (a mask's conditions)."""

    def legend(self, op: ir.Operator, term: ir.Broadcasted) -> Label | None:
        described = self.describe_legend(op, term) if self.describe_legend else None
        return caption_label(described) if described is not None else None

    def stacked(self, op: ir.Operator) -> bool:
        return self.deck is not None and self.deck(op)

    def caption(self, op: ir.Operator, term: ir.Broadcasted) -> Label | None:
        described = self.describe(op, term)
        return caption_label(described) if described is not None else None


@dataclass(frozen=True)
class JunctionGlyph:
    """The inputs' wires meet at dots; their separators run into the mark."""

    mark: Mark


@dataclass(frozen=True)
class CupsGlyph:
    """No box: the contracted axes are joined by arcs."""


Glyph = BoxGlyph | JunctionGlyph | CupsGlyph


def _glyph(spec: decl.Box[Any] | decl.Junction | decl.Cups) -> Glyph:
    match spec:
        case decl.Box():
            return BoxGlyph(outline_shape(spec.outline), spec.caption, spec.caption_size,
                            spec.min_width, spec.min_height, spec.square, spec.caption_dx,
                            spec.deck, spec.legend)
        case decl.Junction(mark=mark):
            return JunctionGlyph(junction_mark(mark))
        case decl.Cups():
            return CupsGlyph()
    assert_never(spec)


GLYPHS: dict[type[ir.Node], Glyph] = {node: _glyph(declared.glyph)
                                      for node, declared in DECLARATIONS.items()}
"""The glyph of every operator kind, by the type of its IR node."""


def glyph_of(op: ir.Operator) -> Glyph:
    """The glyph of an operation, found by the type of its operator."""
    return GLYPHS[type(op)]
