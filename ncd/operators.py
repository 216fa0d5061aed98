"""The operator registry: every operator kind of the IR and every operator name of the
language, gathered from their declarations (`ncd.ops`), and how a called name resolves.

Importing this module imports every declaration module and checks that each operator kind of
`ir.Operator` has exactly one declaration, so a kind without one fails loudly here, at import,
rather than when some stage first meets it. Stages find a declaration by the type of the IR
node (`declaration(op)`); the grammar has one generic call rule, and a called name resolves to
a user definition, then to an operator of `OPERATORS`, else to an error with a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ncd import ir
from ncd import syntax as s
from ncd.context import Reject, Value
from ncd.diagnostics import did_you_mean
from ncd.ops import (  # noqa: F401  (each module declares its operators as it is imported)
    arithmetic,
    boolean,
    calls,
    contraction,
    data,
    elementwise,
    indexing,
    machines,
    masks,
    normalisation,
    reductions,
    structure,
)
from ncd.ops.calls import call_definition
from ncd.ops.declaration import DECLARATIONS, SURFACES, Declaration, OpT, Surface

if TYPE_CHECKING:
    from ncd.elaborate import DefinitionBuilder

__all__ = ["DECLARATIONS", "OPERATORS", "call", "check_declarations", "declaration",
           "unknown_callable"]

OPERATORS: dict[str, Surface] = SURFACES
"""Every operator name of the language: its summary, example and typing rule."""


def check_declarations(declarations: Mapping[type[ir.Node], Declaration[Any]]) -> None:
    """Each operator kind of the IR has exactly one declaration, filed under its node type."""
    missing = [node.__name__ for node in ir.OPERATOR_TYPES if node not in declarations]
    extra = [node.__name__ for node in declarations if node not in ir.OPERATOR_TYPES]
    misfiled = [node.__name__ for node, declared in declarations.items()
                if declared.node is not node]
    if missing or extra or misfiled:
        raise ImportError(f"operator kinds without a declaration: {missing}; declarations of "
                          f"no operator kind of the IR: {extra}; filed under another kind: "
                          f"{misfiled}")


check_declarations(DECLARATIONS)


def declaration(op: OpT) -> Declaration[OpT]:
    """The declaration of an operator node, found by its type."""
    found: Declaration[Any] = DECLARATIONS[type(op)]
    return cast(Declaration[OpT], found)


def call(builder: DefinitionBuilder, expr: s.Call, name: str | None) -> list[Value]:
    """A call: of a user definition (which shadows an operator of the same name), else of an
    operator, checked by its typing rule."""
    ctx = builder.ctx
    callee = expr.name.name
    if callee in ctx.definitions:
        return call_definition(builder, expr, name)
    if callee in ctx.failed:
        raise Reject(callee)
    surface = OPERATORS.get(callee)
    if surface is None:
        raise unknown_callable(builder, expr.name)
    for item in expr.items or ():
        if isinstance(item, s.Each):
            raise ctx.error("E307", f"`each` gives the parameters of a definition an index, but "
                            f"`{callee}` is an operator", item.span,
                            hint="write the layer as a definition and call it: "
                            f"`f[each {item.axis.name}](X)`")
    return surface.typing(builder, expr, name)


def unknown_callable(builder: DefinitionBuilder, ident: s.Ident) -> Reject:
    """The error for a name that is neither an operator nor a definition."""
    candidates = [*OPERATORS, *builder.ctx.definitions]
    return builder.ctx.error("E202", f"unknown operator or definition `{ident.name}`",
                             ident.span, hint=did_you_mean(ident.name, candidates))
