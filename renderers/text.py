"""Diagram labels: measured and drawn as glyph outlines of one bundled font.

A diagram must look the same on every machine, so its text does not depend on the reader's
fonts: each label becomes SVG path data made from the glyph outlines of STIX Two Math (the
math font that ships inside the `ziamath` package), read with `ziafont`. The same glyphs give
the metrics the layout uses, so what is measured is exactly what is drawn.

A `Label` is a short sequence of `Run`s, each with a style (roman, italic, bold, bold italic)
and a script level (base, subscript, superscript). Styles use the font's Mathematical
Alphanumeric Symbols (italic `x` is U+1D465), as a math typesetter does. Constructors cover the
diagram's kinds of text: axis names (`Label.axis("d_ff")`: italic d, subscript ff), operator
glyphs (`Label.operator("L", "q")`: bold L, italic subscript q), plain titles and index maps
(`Label.math("2*p + w")`).

For web pages that want selectable text there is `svg_text_element`, a real `<text>` element.

Everything is cached (font, glyph outlines, advances, the placement of each label), so
thousands of labels cost milliseconds; output is deterministic (coordinates rounded to two
decimals). Any string is accepted: a character the font lacks is drawn as the font's notdef
glyph, and text written into XML is escaped.

A label's length is bounded, so that a drawing's size does not grow with the length of the
names in the input: a name longer than `MAX_NAME_CHARS` keeps its start and its end around an
ellipsis, a title or formula longer than `MAX_TITLE_CHARS` is cut with one (`elide`).
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from itertools import cycle, groupby
from math import isfinite
from operator import add
from typing import Literal, get_args

from ziafont.glyph import SimpleGlyph
from ziafont.svgpath import Cubic, Lineto, Moveto, Quad

from ncd.elision import ELLIPSIS, MAX_NAME_CHARS, MAX_TITLE_CHARS, Elision, elide, elision_split

from .style import hundredths

with warnings.catch_warnings():
    # importing ziamath loads its default font through a deprecated importlib API
    warnings.simplefilter("ignore", DeprecationWarning)
    from ziamath.mathfont import MathFont
    from ziamath.styles import MathVariant, styledchr

Style = Literal["roman", "italic", "bold", "bold-italic"]
Script = Literal["base", "sub", "sup"]

FONT_FILE = "STIXTwoMath-Regular.ttf"
FONT_FAMILY = "'STIX Two Math', 'STIX Two Text', 'Cambria Math', 'Times New Roman', serif"
"""The CSS font family of `<text>` mode (the reader's fonts: only an approximation)."""

SCRIPT_SCALE = 0.7
"""Size of a subscript or superscript relative to the base (the font's scriptPercentScaleDown)."""
SUB_SHIFT = 0.21
"""Subscript baseline below the base baseline, in em (the font's subscriptShiftDown)."""
SUP_SHIFT = 0.36
"""Superscript baseline above the base baseline, in em (the font's superscriptShiftUp)."""
SPACE_AFTER_SCRIPT = 0.04
"""Gap after a script before base text resumes, in em (the font's spaceAfterScript)."""

_STYLES: tuple[str, ...] = get_args(Style)
_SCRIPTS: tuple[str, ...] = get_args(Script)

@dataclass(frozen=True)
class TextBox:
    """The extent of a label at one size, in px, relative to its left edge and baseline.

    `width` is the advance width (where the next text would start), widened where ink (an
    italic overhang) reaches further right; `ascent` and `descent` are the ink above and below
    the baseline, both positive (or zero). A box `width x (ascent + descent)` holds all ink.
    """

    width: float
    ascent: float
    descent: float

    @property
    def height(self) -> float:
        return self.ascent + self.descent


@dataclass(frozen=True)
class Run:
    """Text in one style at one script level."""

    text: str
    style: Style = "roman"
    script: Script = "base"

    def __post_init__(self) -> None:
        if self.style not in _STYLES:
            raise ValueError(f"unknown text style {self.style!r}; expected one of {_STYLES}")
        if self.script not in _SCRIPTS:
            raise ValueError(f"unknown script level {self.script!r}; expected one of {_SCRIPTS}")


@dataclass(frozen=True)
class Piece:
    """Part of a label that a PDF shows as one text string: characters of the font (italic
    `x` is U+1D465, as the font maps it) at one size on one baseline, whose glyphs follow each
    other by their advance widths, as a text string sets them. `x` is its left edge and `y`
    its baseline, in px. A glyph the font names by no character (the box drawn for a
    character it lacks) is a piece without `text`: its `outline` in px, y down, as
    `M`/`L`/`Q`/`C`/`Z` segments with absolute coordinates."""

    text: str
    x: float
    y: float
    size: float
    outline: tuple[tuple[str, tuple[float, ...]], ...] = ()


@dataclass(frozen=True)
class Label:
    """A short piece of typeset text: runs of styled characters, drawn left to right."""

    runs: tuple[Run, ...]

    def __hash__(self) -> int:
        # The hash `dataclass` would give (of the fields' tuple), computed once: a large
        # diagram hashes the same labels hundreds of thousands of times (each measurement
        # looks one up in a memo), and hashing the runs hashes every run's fields again.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = hash((self.runs,))
        return cached

    def __getstate__(self) -> dict[str, object]:
        # the cached hash belongs to this process (strings hash differently in another)
        return {"runs": self.runs}

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def axis(name: str) -> Label:
        """An axis name or size: `d_ff` -> italic d, subscript ff; `x1`, `x_1` -> x, subscript 1
        (digits upright); `512` -> roman. Anything that is not a name (`m / h`) is a formula.
        Beyond `MAX_NAME_CHARS` characters its middle is an ellipsis."""
        return _axis_label(name)

    @staticmethod
    def operator(symbol: str, subscript: str | None = None) -> Label:
        """An operator glyph's label: bold symbol, italic subscript (`L_q`, `E`, `L_out`)."""
        runs = [Run(symbol, "bold")] if symbol else []
        if subscript:
            runs.extend(_elide_runs(_merge(_letter_runs(subscript, "sub")), MAX_NAME_CHARS))
        return Label(_merge(runs))

    @staticmethod
    def plain(text: str) -> Label:
        """Upright text: block titles, function names (`relu`), `x6`, index maps as written.
        Beyond `MAX_TITLE_CHARS` characters it ends in an ellipsis."""
        return Label((Run(elide(text, MAX_TITLE_CHARS, "end"), "roman"),) if text else ())

    @staticmethod
    def math(text: str) -> Label:
        """A formula such as an index map `2*p + w`: italic variables, upright digits and
        operators, `2*p` written as `2p`, `-` as a minus sign, spaces around binary operators.
        Beyond `MAX_TITLE_CHARS` characters its middle is an ellipsis."""
        return Label(_elide_runs(_merge(_formula_runs(text)), MAX_TITLE_CHARS))

    # ------------------------------------------------------------------ measuring and drawing

    def measure(self, size: float) -> TextBox:
        """The extent of the label drawn at font size `size` (px per em)."""
        return _measured(self, size)

    def svg_path(self, x: float, y: float, size: float) -> str:
        """SVG path data (`d`) of the glyph outlines: left edge `x`, baseline `y`, font size
        `size`, absolute coordinates rounded to two decimals. Empty for an empty label."""
        _check_size(size)
        if not (isfinite(x) and isfinite(y) and abs(x) < 1e12 and abs(y) < 1e12):
            raise ValueError(f"label position must be finite and below 1e12, got ({x}, {y})")
        return _path_data(self, x, y, size)

    def pieces(self, x: float, y: float, size: float) -> tuple[Piece, ...]:
        """The label as a document format with embedded fonts (PDF) shows it as text: left
        edge `x`, baseline `y`, font size `size`, the glyphs where `svg_path` draws them."""
        _check_size(size)
        return tuple(
            Piece(text, x + dx * size, y + dy * size, size * scale,
                  _outline_at(gid, x + dx * size, y + dy * size, size * scale) if not text
                  else ())
            for text, gid, dx, dy, scale in _placed(self).pieces
        )

    def plain_text(self) -> str:
        """The label as plain text: `d_ff`, `L_q`, `x^2`, `2p + w`."""
        parts: list[str] = []
        previous: Script = "base"
        for run in self.runs:
            if run.script != previous:
                if run.script == "sub":
                    parts.append("_")
                elif run.script == "sup":
                    parts.append("^")
            parts.append(run.text)
            previous = run.script
        return "".join(parts)


def _check_size(size: float) -> None:
    if not (isfinite(size) and 0 < size < 1e9):
        raise ValueError(f"font size must be a positive number below 1e9, got {size}")


# --------------------------------------------------------------------------------------
# Parsing names and formulas into runs
# --------------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_IDENTIFIER = re.compile(r"[^\W\d_][\w']*")
_LETTERS_DIGITS = re.compile(r"([^\W\d_]+)(\d+)")
_TOKEN = re.compile(
    r"\s+|[^\W\d_][\w']*|\d+(?:\.\d+)?|->|>=|<=|==|!=|//|\*\*|.",
    re.DOTALL,
)

ROMAN_FUNCTIONS = frozenset({
    "sqrt", "exp", "log", "ln", "sin", "cos", "tan", "tanh", "max", "min", "sum", "mean",
    "softmax", "relu", "gelu", "silu", "sigmoid", "abs", "mod", "floor", "ceil",
})
"""Names set upright in formulas, as mathematics sets function names."""

_BINARY = {"+": "+", "-": "\u2212", "=": "=", "==": "=", "!=": "\u2260", "<": "<", ">": ">",
           "<=": "\u2264", ">=": "\u2265", "->": "\u2192"}
_OPENING = frozenset({"(", "[", ",", "*", "/", "//", "**", *_BINARY})


def _letter_runs(text: str, script: Script) -> list[Run]:
    """Letters italic, everything else (digits, punctuation) roman."""
    return [Run("".join(chars), "italic" if alpha else "roman", script)
            for alpha, chars in groupby(text, key=str.isalpha)]


def _identifier_runs(name: str, script: Script) -> list[Run]:
    """An identifier: `d_ff` is d with subscript ff, `x1` is x with subscript 1."""
    if script == "base":
        head, sep, tail = name.partition("_")
        if sep and head and tail:
            return _letter_runs(head, "base") + _letter_runs(tail, "sub")
        match = _LETTERS_DIGITS.fullmatch(name)
        if match:
            return [Run(match.group(1), "italic"), Run(match.group(2), "roman", "sub")]
    return _letter_runs(name, script)


def _formula_runs(text: str) -> list[Run]:
    tokens = [t for t in _TOKEN.findall(text) if not t.isspace()]
    runs: list[Run] = []
    previous: str | None = None  # the previous token, for unary minus and implicit products
    script: Script = "base"  # "sup" for the one token after `**`
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if token == "**" and following is not None:
            script = "sup"
            previous = token
            continue
        if _NUMBER.fullmatch(token):
            runs.append(Run(token, "roman", script))
        elif _IDENTIFIER.fullmatch(token):
            if token in ROMAN_FUNCTIONS:
                runs.append(Run(token, "roman", script))
            else:
                runs.extend(_identifier_runs(token, script))
        elif token == "*":
            implicit = (previous is not None and _NUMBER.fullmatch(previous) is not None
                        and following is not None
                        and (_IDENTIFIER.fullmatch(following) is not None or following == "("))
            if not implicit:
                runs.append(Run("\u22c5", "roman", script))
        elif token in _BINARY:
            symbol = _BINARY[token]
            unary = token in ("+", "-") and (previous is None or previous in _OPENING)
            spaced = not unary and script == "base"
            runs.append(Run(f" {symbol} " if spaced else symbol, "roman", script))
        elif token == ",":
            runs.append(Run(", " if script == "base" else ",", "roman", script))
        else:
            runs.append(Run(token, "roman", script))
        if script == "sup" and token not in ("-", "+", "("):
            script = "base"
        previous = token
    return runs


def _merge(runs: list[Run]) -> tuple[Run, ...]:
    """Join neighbouring runs of the same style and script (in time linear in the text)."""
    merged: list[tuple[Style, Script, list[str]]] = []
    for run in runs:
        if not run.text:
            continue
        if merged and merged[-1][0] == run.style and merged[-1][1] == run.script:
            merged[-1][2].append(run.text)
        else:
            merged.append((run.style, run.script, [run.text]))
    return tuple(Run("".join(texts), style, script) for style, script, texts in merged)


def _elide_runs(runs: tuple[Run, ...], limit: int,
                where: Elision = "middle") -> tuple[Run, ...]:
    """`elide` for styled text: the runs cut to `limit` characters in all, an upright
    ellipsis where characters were left out (at the script level of the text before it)."""
    if sum(len(run.text) for run in runs) <= limit:
        return runs
    head, tail = elision_split(limit, where)
    kept: list[Run] = []
    left = head
    for run in runs:
        if left <= 0:
            break
        kept.append(Run(run.text[:left], run.style, run.script))
        left -= len(run.text)
    script = kept[-1].script if kept else runs[0].script
    kept.append(Run(ELLIPSIS, "roman", script))
    ending: list[Run] = []
    left = tail
    for run in reversed(runs):
        if left <= 0:
            break
        ending.append(Run(run.text[max(len(run.text) - left, 0):], run.style, run.script))
        left -= len(run.text)
    return _merge([*kept, *reversed(ending)])


# --------------------------------------------------------------------------------------
# The font, glyphs and their outlines (cached)
# --------------------------------------------------------------------------------------

Segment = tuple[str, tuple[float, ...]]


@lru_cache(maxsize=1)
def _font() -> MathFont:
    return MathFont(str(files("ziamath.fonts") / FONT_FILE))


@lru_cache(maxsize=1)
def _units_per_em() -> float:
    return float(_font().info.layout.unitsperem)


@lru_cache(maxsize=8192)
def _glyph_id(char: str, style: Style) -> int:
    """The glyph of one character in a style; 0 (the font's notdef) when the font lacks it."""
    font = _font()
    category = unicodedata.category(char)
    if char in "\t\n\r" or category in ("Zl", "Zp"):
        char = " "
    elif category in ("Cc", "Cs"):
        return 0
    variant = MathVariant(italic="italic" in style, bold="bold" in style)
    styled = styledchr(char, variant)
    gid = font.glyphindex(styled)
    if gid == 0 and styled != char:
        gid = font.glyphindex(char)
    return gid


@lru_cache(maxsize=8192)
def _glyph(gid: int) -> SimpleGlyph | None:
    try:
        return _font().glyph_fromid(gid)
    except Exception:  # a glyph the reader cannot decode is drawn as a box
        return None


@lru_cache(maxsize=65536)
def _advance(gid: int, next_gid: int | None) -> float:
    """Advance width in font units, with the font's pair kerning."""
    try:
        return float(_font().advance(gid, next_gid))
    except Exception:  # a failed kerning lookup falls back to the plain advance
        return float(_font().advance(gid, None))


@lru_cache(maxsize=8192)
def _italic_correction(gid: int) -> float:
    value = _font().math.italicsCorrection.getvalue(gid)
    return float(value) if value else 0.0


def _fallback_box(gid: int) -> tuple[tuple[Segment, ...], tuple[float, float, float, float]]:
    """A hollow box the width of the glyph's advance, for glyphs that cannot be read."""
    width = _advance(gid, None)
    x0, x1, y0, y1 = 0.1 * width, 0.9 * width, 0.0, 0.7 * _units_per_em()
    t = 0.06 * _units_per_em()
    segments: tuple[Segment, ...] = (
        ("M", (x0, y0)), ("L", (x1, y0)), ("L", (x1, y1)), ("L", (x0, y1)), ("Z", ()),
        ("M", (x0 + t, y0 + t)), ("L", (x0 + t, y1 - t)), ("L", (x1 - t, y1 - t)),
        ("L", (x1 - t, y0 + t)), ("Z", ()),
    )
    return segments, (x0, x1, y0, y1)


@lru_cache(maxsize=8192)
def _outline(gid: int) -> tuple[tuple[Segment, ...], tuple[float, float, float, float] | None]:
    """The glyph's outline in font units (y up), closed subpaths, and its ink box
    `(xmin, xmax, ymin, ymax)` or None for a glyph without ink (a space)."""
    glyph = _glyph(gid)
    if glyph is None:
        return _fallback_box(gid)
    segments: list[Segment] = []
    current: tuple[float, float] | None = None
    try:
        for operator in glyph.operators:
            if isinstance(operator, Moveto):
                if segments:
                    segments.append(("Z", ()))
                current = (float(operator.p.x), float(operator.p.y))
                segments.append(("M", current))
            elif isinstance(operator, Lineto):
                point = (float(operator.p.x), float(operator.p.y))
                if point != current:
                    segments.append(("L", point))
                current = point
            elif isinstance(operator, Quad):
                current = (float(operator.p2.x), float(operator.p2.y))
                segments.append(("Q", (float(operator.p1.x), float(operator.p1.y), *current)))
            elif isinstance(operator, Cubic):
                current = (float(operator.p3.x), float(operator.p3.y))
                segments.append(("C", (float(operator.p1.x), float(operator.p1.y),
                                       float(operator.p2.x), float(operator.p2.y), *current)))
    except Exception:  # an outline ziafont cannot decode is drawn as a box
        return _fallback_box(gid)
    if not segments:
        return (), None
    segments.append(("Z", ()))
    box = glyph.bbox
    return tuple(segments), (float(box.xmin), float(box.xmax), float(box.ymin), float(box.ymax))


# --------------------------------------------------------------------------------------
# Placing a label's glyphs (in em, size-independent, cached per label)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    """A label's glyphs placed in em units (x right, y down, baseline at 0): for each glyph
    with ink, its id, its origin and its scale; and the label's extent."""

    glyphs: tuple[tuple[int, float, float, float], ...]
    width: float
    ascent: float
    descent: float
    pieces: tuple[tuple[str, int, float, float, float], ...] = ()
    """Text strings (`Piece`) in em: characters (none for a glyph drawn as its outline),
    that glyph, origin and scale."""


@lru_cache(maxsize=8192)
def _axis_label(name: str) -> Label:
    """`Label.axis`, made once per name: a diagram labels every wire of an axis alike."""
    if not name:
        return Label(())
    if _NUMBER.fullmatch(name):
        return Label((Run(elide(name), "roman"),))
    if not _IDENTIFIER.fullmatch(name):
        return Label.math(name)
    return Label(_elide_runs(_merge(_identifier_runs(name, "base")), MAX_NAME_CHARS))


@lru_cache(maxsize=65536)
def _measured(label: Label, size: float) -> TextBox:
    """`Label.measure`, memoised: a large diagram measures the same few labels at the same
    few sizes thousands of times."""
    _check_size(size)
    placed = _placed(label)
    return TextBox(
        width=placed.width * size, ascent=placed.ascent * size, descent=placed.descent * size
    )


@lru_cache(maxsize=16384)
def _placed(label: Label) -> _Placed:
    upem = _units_per_em()
    pen = 0.0
    ink_right = 0.0
    ascent = 0.0
    descent = 0.0
    glyphs: list[tuple[int, float, float, float]] = []
    last_gid: int | None = None
    last_italic = False
    last_script: Script = "base"
    pieces: list[tuple[str, int, float, float, float]] = []
    for run in label.runs:
        italic = "italic" in run.style
        if last_gid is not None:
            if run.script == "sup" and last_script != "sup" and last_italic:
                pen += _italic_correction(last_gid) / upem
            elif run.script == "base" and last_script == "base" and last_italic and not italic:
                pen += _italic_correction(last_gid) / upem
            if run.script == "base" and last_script != "base":
                pen += SPACE_AFTER_SCRIPT
        scale = 1.0 if run.script == "base" else SCRIPT_SCALE
        shift = {"base": 0.0, "sub": SUB_SHIFT, "sup": -SUP_SHIFT}[run.script]
        gids = [_glyph_id(char, run.style) for char in run.text]
        factor = scale / upem
        piece: list[str] = []  # characters of the text string being gathered
        piece_x = pen
        for i, gid in enumerate(gids):
            box = _outline(gid)[1]
            if box is not None:
                glyphs.append((gid, pen, shift, scale))
                _, xmax, ymin, ymax = box
                ink_right = max(ink_right, pen + xmax * factor)
                ascent = max(ascent, ymax * factor - shift)
                descent = max(descent, shift - ymin * factor)
            next_gid = gids[i + 1] if i + 1 < len(gids) else None
            advance = _advance(gid, next_gid)
            char = _glyph_char(run.text[i], run.style)
            if char:
                if not piece:
                    piece_x = pen
                piece.append(char)
            else:
                if piece:
                    pieces.append(("".join(piece), 0, piece_x, shift, scale))
                    piece = []
                if box is not None:
                    pieces.append(("", gid, pen, shift, scale))
            if piece and advance != _advance(gid, None):  # kerned: the string ends here
                pieces.append(("".join(piece), 0, piece_x, shift, scale))
                piece = []
            pen += advance * factor
            last_gid = gid
        if piece:
            pieces.append(("".join(piece), 0, piece_x, shift, scale))
        if gids:
            last_italic = italic
            last_script = run.script
    return _Placed(tuple(glyphs), max(pen, ink_right), ascent, descent, tuple(pieces))


@lru_cache(maxsize=8192)
def _glyph_char(char: str, style: Style) -> str:
    """The character that names `_glyph_id(char, style)` in the font's character map (italic
    `x` is U+1D465), or "" when none does (a character the font lacks, drawn as the notdef
    box; a control character; a glyph that cannot be read)."""
    gid = _glyph_id(char, style)
    if gid == 0 or _glyph(gid) is None:
        return ""
    category = unicodedata.category(char)
    if char in "\t\n\r" or category in ("Zl", "Zp"):
        return " "
    styled = styledchr(char, MathVariant(italic="italic" in style, bold="bold" in style))
    return styled if styled != char and _font().glyphindex(styled) == gid else char


def _outline_at(gid: int, x: float, y: float, size: float
                ) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """A glyph's outline with its origin at (`x`, `y`) px, font size `size`, y down."""
    factor = size / _units_per_em()
    return tuple(
        (command, tuple(x + v * factor if j % 2 == 0 else y - v * factor
                        for j, v in enumerate(coords)))
        for command, coords in _outline(gid)[0]
    )


def _num(value: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros; never `-0`."""
    return hundredths(round(value * 100))


@lru_cache(maxsize=65536)
def _glyph_template(gid: int, size: float) -> tuple[str, tuple[int, ...]]:
    """A glyph's outline at one (already scaled) size: a format string of its commands and
    its coordinates in integer hundredths of a px from the glyph's origin, x and y alternating
    (y down)."""
    outline = _outline(gid)[0]
    factor = size * 100 / _units_per_em()
    commands: list[str] = []
    flat: list[int] = []
    for command, coords in outline:
        if command == "Z":
            commands.append("Z")
            continue
        commands.append(command + " ".join(["{}"] * len(coords)))
        for j, value in enumerate(coords):
            flat.append(round(value * factor) if j % 2 == 0 else -round(value * factor))
    return "".join(commands), tuple(flat)


def _path_data(label: Label, x: float, y: float, size: float) -> str:
    """Absolute path data. Each coordinate is the glyph's origin and the outline point, each
    rounded to hundredths first, so equal glyphs give equal numbers wherever they stand."""
    text = hundredths
    parts: list[str] = []
    for gid, dx, dy, scale in _placed(label).glyphs:
        template, flat = _glyph_template(gid, size * scale)
        origin = (round((x + dx * size) * 100), round((y + dy * size) * 100))
        parts.append(template.format(*map(text, map(add, flat, cycle(origin)))))
    return "".join(parts)


# --------------------------------------------------------------------------------------
# <text> mode
# --------------------------------------------------------------------------------------

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""The characters XML 1.0 cannot carry at all, not even as character references."""


def xml_clean(text: str) -> str:
    """`text` with every character XML 1.0 forbids replaced by U+FFFD."""
    return _XML_INVALID.sub("\ufffd", text)


def xml_escape(text: str) -> str:
    """Text safe inside an XML element or a quoted attribute: markup characters escaped,
    characters XML cannot carry replaced by U+FFFD, tabs and newlines made spaces."""
    text = xml_clean(text.replace("\t", " ").replace("\r", " ").replace("\n", " "))
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def svg_text_element(label: Label, x: float, y: float, size: float) -> str:
    """A real `<text>` element (selectable, uses the reader's fonts) with one `<tspan>` per
    run: italics and bold as font style and weight, scripts smaller and shifted by `y`."""
    spans: list[str] = []
    for run in label.runs:
        attributes: list[str] = []
        if "italic" in run.style:
            attributes.append('font-style="italic"')
        if "bold" in run.style:
            attributes.append('font-weight="bold"')
        baseline = y
        if run.script != "base":
            attributes.append(f'font-size="{_num(size * SCRIPT_SCALE)}"')
            baseline = y + (SUB_SHIFT if run.script == "sub" else -SUP_SHIFT) * size
        attributes.append(f'y="{_num(baseline)}"')
        spans.append(f"<tspan {' '.join(attributes)}>{xml_escape(run.text)}</tspan>")
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" font-size="{_num(size)}" '
        f'font-family="{FONT_FAMILY}" xml:space="preserve">{"".join(spans)}</text>'
    )
