"""Statements and expressions of a definition body: bindings, returns, parameters, blocks,
and the expressions that call operators and definitions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never

from ncd import ir
from ncd import syntax as s
from ncd.colours import NAMED_COLOURS, parse_colour
from ncd.context import BlockGroup, Reject, Value, rearrangement_map
from ncd.diagnostics import Note, did_you_mean
from ncd.equations import elaborate_equation
from ncd.operators import call
from ncd.ops.arithmetic import arithmetic
from ncd.sizes import SizeLimit, from_ir

if TYPE_CHECKING:
    from ncd.elaborate import DefinitionBuilder

MAX_STATEMENTS = 10_000
MAX_REPEAT = 10_000


def elaborate_body(builder: DefinitionBuilder, definition: s.Definition,
                   outputs: Sequence[tuple[str, ir.ArrayType, s.SignatureOutput]] | None
                   ) -> list[Value] | None:
    """Read the statements; return the values of the result, or None after an error."""
    ctx = builder.ctx
    errors_before = len(ctx.sink.diagnostics)
    returned: list[Value] | None = None
    return_stmt: s.Return | None = None
    count = _count_statements(definition.body)
    if count > MAX_STATEMENTS:
        ctx.error("E103", f"the definition has {count} statements; the limit is "
                  f"{MAX_STATEMENTS}", definition.name.span,
                  hint="split it into several definitions")
        return None
    for stmt in definition.body:
        if return_stmt is not None:
            ctx.error("E308", "statement after `return` is never run", stmt.span)
            break
        if isinstance(stmt, s.Return):
            return_stmt = stmt
            try:
                names = [name for name, _, _ in outputs] if outputs is not None and len(
                    outputs) == len(stmt.values) else None
                returned = expression_values(builder, stmt.values, names=names)
            except Reject:
                returned = None
            except SizeLimit as limit:
                ctx.error("E309", f"a size here is too large to check: {limit}", stmt.span)
                returned = None
            continue
        statement(builder, stmt)
    if return_stmt is None:
        ctx.error("E308", f"definition `{definition.name.name}` has no `return`",
                  definition.name.span, hint="end the body with `return ...`")
        return None
    if returned is None or outputs is None or len(ctx.sink.diagnostics) > errors_before:
        return None
    return match_results(builder, returned, outputs, return_stmt)


def _count_statements(statements: Sequence[s.Statement]) -> int:
    total = 0
    for stmt in statements:
        total += 1
        if isinstance(stmt, s.BlockStmt):
            total += _count_statements(stmt.body)
    return total


def match_results(builder: DefinitionBuilder, returned: list[Value],
                  outputs: Sequence[tuple[str, ir.ArrayType, s.SignatureOutput]],
                  stmt: s.Return) -> list[Value] | None:
    ctx = builder.ctx
    if len(returned) != len(outputs):
        ctx.error("E308", f"`return` gives {len(returned)} arrays but the signature promises "
                  f"{len(outputs)}", stmt.span)
        return None
    results: list[Value] = []
    # One expression may give several results (`return split[c -> a b](X)`): then each result
    # points at the whole `return`.
    spans = [e.span for e in stmt.values] if len(stmt.values) == len(returned) else \
        [stmt.span] * len(returned)
    for value, (name, expected, signature), span in zip(returned, outputs, spans, strict=True):
        try:
            builder.check_same_axes(value.array, expected, span,
                                    f"the result `{name}`", signature.type.span)
        except Reject:
            return None
        if value.array.names != expected.names:
            value = transpose(builder, value, expected, span)
        results.append(value)
    return results


def transpose(builder: DefinitionBuilder, value: Value, expected: ir.ArrayType,
              span: ir.Span) -> Value:
    """Reorder the axes of `value` to the order of `expected` (a permutation reindexing)."""
    eta = rearrangement_map(expected.shape, value.array.shape)
    out = builder.new_value(ir.ArrayType(dtype=value.array.dtype, shape=expected.shape),
                            None, span, base=f"{value.name}_t")
    builder.add_step(ir.Reindexing(dom=(value.array,), cod=(out.array,), span=span, eta=eta,
                                   name=out.name, source=value.name), [value], [out])
    return out


def statement(builder: DefinitionBuilder, stmt: s.Statement) -> None:
    try:
        match stmt:
            case s.Assign(targets=targets, value=expr):
                try:
                    values = expression_values(builder, (expr,), names=[t.name for t in targets])
                except Reject:
                    for target in targets:
                        builder.scope[target.name] = None
                    return
                if len(values) != len(targets):
                    for target in targets:
                        builder.scope[target.name] = None
                    raise builder.ctx.error(
                        "E303", f"{len(targets)} names are bound but the right side gives "
                        f"{len(values)} arrays", stmt.span)
                for target, value in zip(targets, values, strict=True):
                    bind(builder, target, value)
            case s.Equation(target=target):
                try:
                    value = elaborate_equation(builder, stmt)
                except Reject:
                    builder.scope[target.name] = None
                    return
                bind(builder, target, value)
            case s.ParamDecl():
                builder.declare_param(stmt)
            case s.BlockStmt():
                block(builder, stmt)
            case s.Return():
                raise builder.ctx.error("E308", "`return` is only allowed at the end of a "
                                        "definition, not inside a block", stmt.span)
            case _:
                assert_never(stmt)
    except Reject:
        return
    except SizeLimit as limit:
        builder.ctx.error("E309", f"a size here is too large to check: {limit}", stmt.span)
        for name in _bound_names(stmt):
            builder.scope[name] = None


def _bound_names(stmt: s.Statement) -> list[str]:
    """The names a statement binds: an assignment's targets, an equation's result."""
    match stmt:
        case s.Assign(targets=targets):
            return [target.name for target in targets]
        case s.Equation(target=target):
            return [target.name]
    return []


def bind(builder: DefinitionBuilder, target: s.Ident, value: Value) -> None:
    if target.name in builder.params:
        raise builder.ctx.error("E207", f"`{target.name}` is a parameter and cannot be rebound",
                                target.span)
    if not any(bound is value for bound in builder.scope.values()):
        # A new array takes the name it is bound to; `Y = X` only adds a second name to an
        # array that has one (renaming it would rename an input of the definition).
        value.name = target.name
        value.span = target.span
    builder.scope[target.name] = value


def block(builder: DefinitionBuilder, stmt: s.BlockStmt) -> None:
    """A block is elaborated as a nested graph; what it reads and exports is found here and
    in the wiring."""
    ctx = builder.ctx
    if stmt.repeat < 1:
        raise ctx.error("E310", "a block repeats at least once", stmt.span)
    if stmt.repeat > MAX_REPEAT:
        raise ctx.error("E310", f"a block repeats at most {MAX_REPEAT} times, not "
                        f"{stmt.repeat}", stmt.span)
    if stmt.color is not None and parse_colour(stmt.color) is None:
        # Reported, and the block is still read (a colour changes nothing it computes).
        ctx.error("E310", f"unknown colour `{stmt.color}`", stmt.color_span or stmt.span,
                  hint=did_you_mean(stmt.color.strip().lower(), NAMED_COLOURS)
                  or "write `#rgb`, `#rrggbb` or a name: " + ", ".join(sorted(NAMED_COLOURS)))
    outer_steps, outer_scope = builder.steps, dict(builder.scope)
    builder.steps = []
    wires = _name_wires(builder, outer_scope) if stmt.repeat > 1 else {}
    for inner in stmt.body:
        statement(builder, inner)
    inner_steps, inner_scope = builder.steps, builder.scope
    builder.steps = outer_steps
    if stmt.repeat == 1:
        outer_reads = _outer_reads(inner_steps, outer_scope)
        # Arrays made inside the block; `Y = X` of an outer array makes none.
        outer_ids = {v.id for v in outer_scope.values() if v is not None}
        bound = [v for name, v in inner_scope.items()
                 if v is not None and outer_scope.get(name) is not v and v.id not in outer_ids]
        builder.steps.append(BlockGroup(stmt.title, stmt.color, 1, stmt.shared, stmt.span,
                                        inner_steps, outer_reads, [], bound=bound))
        return
    # A repeated block is its statements written N times: a name the body reads or rebinds
    # carries from one repetition to the next (by name: `Y = X` before the block and `X = ...`
    # inside make X carried and Y a constant input); a name the body only reads passes through
    # unchanged; names first bound inside stay local to it.
    first_read = {v.id: i for i, v in enumerate(_outer_reads(inner_steps, dict(wires)))}
    read_ids = first_read.keys()
    order = {name: i for i, name in enumerate(wires)}
    carried_names = sorted(  # in the order they are first read, then the rebound ones
        (name for name, wire in wires.items()
         if wire.id in read_ids or inner_scope.get(name) is not wire),
        key=lambda name: (first_read.get(wires[name].id, len(first_read)), order[name]))
    reads: list[Value] = []
    inputs: list[Value] = []
    carried: list[Value] = []
    outputs: list[Value] = []
    for name in carried_names:
        value, wire, result = outer_scope[name], wires[name], inner_scope.get(name)
        assert value is not None
        if result is None:
            if wire.id not in read_ids:  # only rebound, by a statement already reported
                outer_scope[name] = None
                continue
            builder.scope = outer_scope
            raise ctx.error("E310", f"`{name}` failed inside the block", stmt.span)
        if result.array.names != value.array.names or result.array.dtype != value.array.dtype \
                or any(from_ir(a.size) != from_ir(b.size) for a, b in
                       zip(result.array.shape.axes, value.array.shape.axes, strict=True)):
            builder.scope = outer_scope
            raise ctx.error(
                "E310", f"a block repeated x{stmt.repeat} must give `{name}` back with its type "
                f"{value.array.text()}, but it becomes {result.array.text()}", stmt.title_span,
                notes=[Note(result.span, f"`{name}` is rebound here")],
                hint="each repetition feeds the next, so every array the block reads must keep "
                "its axes")
        reads.append(value)
        inputs.append(wire)
        carried.append(result)
        outputs.append(Value(value.array, name, stmt.span))
    builder.scope = outer_scope
    for value in outputs:
        builder.scope[value.name] = value
    builder.steps.append(BlockGroup(stmt.title, stmt.color, stmt.repeat, stmt.shared, stmt.span,
                                    inner_steps, reads, outputs, carried_results=carried,
                                    inputs=inputs))


def _name_wires(builder: DefinitionBuilder, scope: dict[str, Value | None]) -> dict[str, Value]:
    """One input wire of a repeated block's body per bound name, put in scope in its place.

    Two names of one array are two wires: when the body rebinds one of them, the other must
    still hold the array it had before the block."""
    names_of: dict[int, int] = {}
    for value in scope.values():
        if value is not None:
            names_of[value.id] = names_of.get(value.id, 0) + 1
    wires: dict[str, Value] = {}
    for name, value in scope.items():
        if value is None:
            continue
        wire = Value(value.array, name if names_of[value.id] > 1 else value.name, value.span)
        wires[name] = wire
        builder.scope[name] = wire
    return wires


def _outer_reads(steps: Sequence, outer_scope: dict[str, Value | None]) -> list[Value]:
    """Values defined before the block and read inside it, in order of first reading."""
    outer_ids = {v.id for v in outer_scope.values() if v is not None}
    reads: list[Value] = []
    seen: set[int] = set()

    def visit(items: Sequence) -> None:
        for step in items:
            inputs = step.reads if isinstance(step, BlockGroup) else step.inputs
            for value in inputs:
                if value.id in outer_ids and value.id not in seen:
                    seen.add(value.id)
                    reads.append(value)

    visit(steps)
    return reads


# ---------------------------------------------------------------------------------------
# expressions
# ---------------------------------------------------------------------------------------


def expression_values(builder: DefinitionBuilder, exprs: Sequence[s.Expr],
                      names: Sequence[str] | None = None) -> list[Value]:
    """The arrays an expression list evaluates to (a call may give several)."""
    values: list[Value] = []
    for index, expr in enumerate(exprs):
        name = names[index] if names and len(names) == len(exprs) else None
        result = expression(builder, expr, name)
        values.extend(result)
    return values


def single(builder: DefinitionBuilder, expr: s.Expr, name: str | None = None) -> Value:
    values = expression(builder, expr, name)
    if len(values) != 1:
        raise builder.ctx.error("E303", f"this expression gives {len(values)} arrays where one "
                                "is expected", expr.span,
                                hint="bind the results to names first: `A, B = ...`")
    return values[0]


def expression(builder: DefinitionBuilder, expr: s.Expr, name: str | None = None) -> list[Value]:
    ctx = builder.ctx
    match expr:
        case s.Var(name=var, span=span):
            return [builder.lookup(var, span)]
        case s.Call():
            return call(builder, expr, name)
        case s.BinOp() | s.Neg():
            return [arithmetic(builder, expr, name)]
        case s.Number(span=span):
            raise ctx.error("E207", "a number alone is not an array", span,
                            hint="numbers scale arrays: `X * 0.5`")
        case s.Indexed(name=ident, span=span):
            raise ctx.error(
                "E313", f"indexing `{ident.name}[...]` is written in a tensor equation", span,
                hint=f"bind it with indices on the left: `Y[i, j] = {ident.name}[...]`")
    assert_never(expr)

