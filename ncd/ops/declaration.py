"""The shape of an operator declaration, and the tables the declarations fill.

A `Declaration[OpT]` binds one IR operator node type `OpT` to everything each stage needs:

- `surfaces`: the names the language offers for it (`softmax` and `logsoftmax` both make a
  `SoftmaxOp`), each with a one-line summary, an example (checked by the tests and shown in
  the language reference) and its typing rule (elaboration: check the arguments, record the
  broadcasted operation). An operator made by other syntax has none (`einsum`: tensor
  equations; `call`: user definitions).
- `glyph`: how the diagram draws it (a `Box` with an outline and a caption, a `Junction` of
  wires, or `Cups`).
- `overview`: its label and node shape in the graphviz overview.
- `roles`: the default initialisation of each parameter it reads.
- `lower`: the PyTorch source it compiles to (`ncd.ops.lowering`).
- `commutative`: whether its inputs may come in any order (the wiring orders them).
- `cost`: its multiply-adds and FLOPs from the sizes of its degree and targets, and
  `symmetry`: what it does to a permutation (or shift) of the axes it works on
  (`ncd.ops.facts`; read by `ncd stats` and `ncd check --symmetry`).
- `reverse`: its reverse derivative rule (`ncd.derivative` reads it): from the values the
  operation read and made and the gradients of its outputs, the gradients of its inputs and
  parameters, recorded as operations of the backward definition.

`declare` files a declaration under its node type (and its surfaces under their names). Import
`ncd.operators` to read the tables: it imports every declaration module and checks that each
operator kind of the IR has its declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ncd import ir
from ncd import syntax as s
from ncd.context import Value

from .facts import Carried, Cost, CostSizes, SymmetryCalls, Verdict
from .lowering import Emitter, Role, TensorCode

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder

OpT = TypeVar("OpT", bound=ir.Node)

TypingRule = Callable[["DefinitionBuilder", s.Call, "str | None"], list[Value]]
"""Check a call's brackets and arguments and record its operation; returns the arrays it
makes. The name is the variable the result is bound to, when there is one."""

SizeValue = Callable[[ir.SizeExpr], "int | None"]
"""The integer value of a size, or None when it is only known at run time."""

Hook = Callable[..., object]
"""A fact no stage reads yet: its real signature comes with the stage that reads it."""


class Unsupported(Exception):
    """A construct with no reverse rule (yet): what it is, where, and what to do instead
    (`ncd.derivative` reports it as E320)."""

    def __init__(self, what: str, span: ir.Span | None, hint: str):
        super().__init__(what)
        self.what = what
        self.span = span
        self.hint = hint


@dataclass(frozen=True)
class Gradients:
    """What a reverse rule gives: per input port the gradient of its array (None: it has none,
    e.g. an index array), and per parameter port the gradient of the parameter (the same
    array type as the parameter, or one with more axes, which are summed)."""

    inputs: Sequence[Value | None]
    params: Sequence[Value | None] = ()
    called: Mapping[str, Value] = field(default_factory=dict)
    """The gradients of the parameters of a called definition, by their path
    (`instance.name`), each of the parameter's own type."""


ReverseRule = Callable[["Reverser", ir.Broadcasted, OpT, Sequence[Value], Sequence[Value],
                        Sequence[Value]], Gradients]
"""The reverse derivative of a broadcasted operation: given the backward definition's builder,
the term, its operator, the values it read (inputs; parameters are read with
`Reverser.parameter`), the values it made, and the gradient of each output (zeros where an
output has none), the gradients of its inputs and parameters. Every port reads its tile at the
degree's index of the same axis names, so a rule works with whole arrays by axis name."""


@dataclass(frozen=True)
class Surface:
    """A name the language offers for an operator."""

    name: str
    summary: str
    example: str
    typing: TypingRule


# --------------------------------------------------------------------------------------
# Glyphs
# --------------------------------------------------------------------------------------

Outline = Literal["card", "buffer_card", "triangle_left", "norm_circle", "batchnorm_circle",
                  "mask_square", "plain_box", "call_box", "funnel", "fan", "chevron_box",
                  "rename_tag"]
"""The outline of a box (each drawn by `renderers.glyphs`): a card with a folded corner
(learned maps), the same card dashed and unfilled (a buffer: state that is not learned), a
triangle pointing left (softmax), a circle with a V (normalisation), the same with a bar under
the V (batch normalisation), a square split on its diagonal (masks), a plain box, a rounded box
(calls), a funnel (many pieces into one axis), a fan (one axis into many pieces), a box with a
chevron (regrouped axes), a notched tag (renamed axes)."""

Mark = Literal["plus", "odot"]
"""The mark where the wires of a junction meet: `+`, or a dot in a circle."""

CaptionKind = Literal["plain", "math", "operator", "italic", "power"]
"""The diagram's kinds of text: upright text, a formula (`× 1/√|k|`), an operator letter
in bold with an italic subscript (`L_q`), an italic mathematical letter (`σ`), upright text
with a superscript (`(·)^0.5`)."""


@dataclass(frozen=True)
class Caption:
    """The text inside a box."""

    kind: CaptionKind
    text: str
    subscript: str | None = None
    superscript: str | None = None
    """The exponent of a `power` caption."""


def no_caption(op: object, term: ir.Broadcasted) -> Caption | None:
    return None


@dataclass(frozen=True)
class Box(Generic[OpT]):
    """A box spanning the operation's target wires, sized by the layout to fit its caption."""

    outline: Outline
    caption: Callable[[OpT, ir.Broadcasted], Caption | None] = no_caption
    caption_size: float = 12.0
    min_width: float = 24.0
    min_height: float = 24.0
    square: bool = False
    """Width follows height (circles, the mask square, the softmax triangle)."""
    caption_dx: float = 0.0
    """Where the caption sits, as a share of the width right of centre (the card's fold
    takes its lower-left corner)."""
    deck: Callable[[OpT], bool] | None = None
    """Whether this operation is drawn as a deck of boxes (one copy per index of an axis)."""
    legend: Callable[[OpT, ir.Broadcasted], Caption | None] = no_caption
    """Text set under the box, where the outline leaves no room inside (a mask's
    conditions)."""


@dataclass(frozen=True)
class Junction:
    """The inputs' wires meet at dots, and their separators run into a mark (`+`)."""

    mark: Mark


@dataclass(frozen=True)
class Cups:
    """No box: contracted axes are joined by arcs (a tensor contraction)."""


# --------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------


def no_parameters(op: object, term: ir.Broadcasted, value_of: SizeValue) -> tuple[Role, ...]:
    """The roles of an operator that reads no parameters."""
    return ()


@dataclass(frozen=True)
class Declaration(Generic[OpT]):
    """Everything every stage needs to know about one operator kind of the IR."""

    node: type[OpT]
    surfaces: tuple[Surface, ...]
    glyph: Box[OpT] | Junction | Cups
    overview: Callable[[OpT], tuple[str, str]]
    """The label of its node in the graphviz overview, and the node's shape."""
    roles: Callable[[OpT, ir.Broadcasted, SizeValue], tuple[Role, ...]]
    """One role per parameter port of a term (in order), deciding its default initialiser."""
    lower: Callable[[Emitter, ir.Broadcasted, OpT, list[TensorCode]], list[TensorCode]]
    """The values of the term's outputs, written by the emitter from the values of its
    inputs (the parameters come from `Emitter.parameters`)."""
    commutative: bool = False
    """Its inputs may come in any order: the wiring takes them in the order their wires lie,
    so that the diagram needs no crossing before a residual `+`."""
    reverse: ReverseRule[OpT] | None = None
    """The reverse derivative (`ReverseRule`); None: not supported yet, and listed in
    `ncd.derivative.NOT_YET_REVERSED` with the reason (the tests check)."""
    cost: Callable[[OpT, ir.Broadcasted, CostSizes], Cost] | None = None
    """Multiply-adds and FLOPs of the whole broadcasted operation, as polynomials in the sizes
    (`ncd.ops.facts`: the conventions). Every declaration states one (the tests check)."""
    symmetry: Callable[[OpT, ir.Broadcasted, Carried, SymmetryCalls], Verdict] | None = None
    """What the operation does when its target axes carry a permutation or shift of an input
    axis: carries it on (`Carry`) or breaks it (`Break`, with the reason). Every declaration
    states one (the tests check)."""


DECLARATIONS: dict[type[ir.Node], Declaration[Any]] = {}
"""Every declaration by the type of its IR node (complete once `ncd.operators` is imported)."""

SURFACES: dict[str, Surface] = {}
"""Every operator name of the language, in the order declared."""


def declare(declaration: Declaration[OpT]) -> Declaration[OpT]:
    """File a declaration under its node type and its surfaces under their names."""
    if declaration.node in DECLARATIONS:
        raise ValueError(f"{declaration.node.__name__} is declared twice")
    DECLARATIONS[declaration.node] = declaration
    for surface in declaration.surfaces:
        declare_surface(surface)
    return declaration


def declare_surface(surface: Surface) -> Surface:
    """File a name of the language (one that makes no operator of its own, such as `scan`,
    comes here alone)."""
    if surface.name in SURFACES:
        raise ValueError(f"the operator name {surface.name!r} is declared twice")
    SURFACES[surface.name] = surface
    return surface
