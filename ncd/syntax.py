"""The syntax tree of a `.ncd` file: what the parser produces and the elaborator reads.

Plain frozen dataclasses, each with the span of the text it came from. The syntax tree says
what was written; types, sizes and meaning are the elaborator's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ncd.ir import Span


@dataclass(frozen=True)
class Ident:
    name: str
    span: Span


# ---- expressions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True)
class Number:
    value: float
    is_int: bool
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # "+", "-", "*", "/", "//"
    left: Expr
    right: Expr
    span: Span
    op_span: Span | None = field(default=None, compare=False)
    """Where the operator itself is written (errors about the operation point at it)."""


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Arrow:
    """`m -> h k` inside an operator's brackets."""

    left: tuple[Ident, ...]
    right: tuple[Ident, ...]
    span: Span


@dataclass(frozen=True)
class Comparison:
    """`x >= y` inside a mask's brackets."""

    left: Expr
    op: str
    right: Expr
    span: Span


@dataclass(frozen=True)
class Keyword:
    """`p=0.1` inside an operator's brackets."""

    name: Ident
    value: Expr
    span: Span


@dataclass(frozen=True)
class Each:
    """`each e` inside a definition call's brackets: each index of `e` owns its parameters."""

    axis: Ident
    span: Span


BracketItem = Union[Arrow, Comparison, Keyword, Each, "Expr"]


@dataclass(frozen=True)
class Call:
    """`name(args)` or `name[items](args)`: an operator, a definition or an initialiser."""

    name: Ident
    items: tuple[BracketItem, ...] | None
    args: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Indexed:
    """`X[b, 2*p + w]`: an array read at index expressions (tensor equations only)."""

    name: Ident
    items: tuple[BracketItem, ...]
    span: Span


Expr = Union[Var, Number, BinOp, Neg, Call, Indexed]


# ---- types -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeExpr:
    dtype: str  # "R", "N", "B"
    bound: Expr | None
    axes: tuple[Ident, ...]
    span: Span


# ---- statements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    targets: tuple[Ident, ...]
    value: Expr
    span: Span


@dataclass(frozen=True)
class Equation:
    """`Y[i, j] = sum(k) A[i, k] * B[k, j]`."""

    target: Ident
    indices: tuple[Ident, ...]
    summed: tuple[Ident, ...] | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Return:
    values: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    """`param NAME: R[...] = init`, or with `buffer` a non-learned array of the state."""

    name: Ident
    type: TypeExpr
    init: Call | None
    span: Span
    buffer: bool = False


@dataclass(frozen=True)
class BlockStmt:
    title: str
    title_span: Span
    repeat: int
    color: str | None
    shared: bool
    body: tuple[Statement, ...]
    span: Span
    color_span: Span | None = None  # where the colour's string is written


Statement = Union[Assign, Equation, Return, ParamDecl, BlockStmt]


# ---- items -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    path: str
    names: tuple[Ident, ...] | None
    span: Span


@dataclass(frozen=True)
class AxisDecl:
    name: Ident
    size: Expr | None
    span: Span


@dataclass(frozen=True)
class SignatureInput:
    name: Ident
    type: TypeExpr


@dataclass(frozen=True)
class SignatureOutput:
    name: Ident | None
    type: TypeExpr


@dataclass(frozen=True)
class Definition:
    name: Ident
    inputs: tuple[SignatureInput, ...]
    outputs: tuple[SignatureOutput, ...]
    doc: str | None
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True)
class PfName:
    name: Ident
    span: Span


@dataclass(frozen=True)
class PfCompose:
    terms: tuple[PfExpr, ...]
    span: Span


@dataclass(frozen=True)
class PfTensor:
    terms: tuple[PfExpr, ...]
    span: Span


PfExpr = Union[PfName, PfCompose, PfTensor]


@dataclass(frozen=True)
class PointFree:
    """`def f = g ; h (x) k`: a definition built from others in the category's own terms."""

    name: Ident
    expr: PfExpr
    doc: str | None
    span: Span


@dataclass(frozen=True)
class Hyper:
    """`lr = 0.01` or `betas = (0.9, 0.999)` in an optimiser's parentheses."""

    name: Ident
    values: tuple[Expr, ...]
    is_tuple: bool
    span: Span


@dataclass(frozen=True)
class TrainField:
    """`loss: cross_entropy[n]`: a field of a training set-up, naming a thing with optional
    target axes and hyper-parameters."""

    key: Ident
    value: Ident
    axes: tuple[Ident, ...] | None
    hypers: tuple[Hyper, ...] | None
    span: Span


@dataclass(frozen=True)
class Training:
    """`train NAME { model: ...  loss: ...  optimiser: ... }`: how a model is trained."""

    name: Ident
    doc: str | None
    fields: tuple[TrainField, ...]
    span: Span


Item = Union[Import, AxisDecl, Definition, PointFree, Training]


@dataclass(frozen=True)
class Module:
    path: str
    doc: str | None
    items: tuple[Item, ...]
