"""Tensor equations: `Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w]`.

An equation elaborates into reindexings (one per operand read through a non-trivial index
map: a diagonal, a window, a stride, a fixed index, a renaming) followed by one einsum whose
degree is the result's indices. Each index variable ranges over an axis whose size is solved
here: exactly from a plain occurrence, from a declared axis of the same name, or as the
largest range that keeps every affine index inside its array (a valid convolution's length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Reject, Value, array, shape
from ncd.diagnostics import Note, did_you_mean
from ncd.ops.arithmetic import scalar
from ncd.sizes import Size, check_nonnegative, from_ir

if TYPE_CHECKING:
    from ncd.elaborate import DefinitionBuilder


@dataclass
class Affine:
    coefficients: dict[str, int]
    offset: int
    span: ir.Span

    @property
    def plain_variable(self) -> str | None:
        if self.offset == 0 and len(self.coefficients) == 1:
            (name, coefficient), = self.coefficients.items()
            if coefficient == 1:
                return name
        return None


@dataclass
class Operand:
    name: str
    value: Value | None  # an array on a wire ...
    parameter: ir.Parameter | None  # ... or a learned parameter
    indices: list[Affine]
    span: ir.Span

    @property
    def array(self) -> ir.ArrayType:
        if self.value is not None:
            return self.value.array
        assert self.parameter is not None
        return self.parameter.array


def elaborate_equation(builder: DefinitionBuilder, stmt: s.Equation) -> Value:
    """An equation: one product (`Y[i, j] = sum(k) A[i, k] * B[k, j]`), or a sum of products
    (`Z[x, n, m] = A[x, n] + B[x, m]`), each term read at the indices it names."""
    terms = _terms(stmt.value, 1)
    if len(terms) == 1 and terms[0][1] == 1:
        return _product(builder, stmt, stmt.target.name)
    return _sum_of_products(builder, stmt, terms)


def _terms(expr: s.Expr, sign: int) -> list[tuple[s.Expr, int]]:
    """The terms of a sum, each with its sign."""
    match expr:
        case s.BinOp(op="+" | "-", left=left, right=right):
            return _terms(left, sign) + _terms(right, sign if expr.op == "+" else -sign)
        case s.Neg(operand=operand):
            return _terms(operand, -sign)
    return [(expr, sign)]


def _sum_of_products(builder: DefinitionBuilder, stmt: s.Equation,
                     terms: Sequence[tuple[s.Expr, int]]) -> Value:
    """Each term is a product over the result's indices it reads; the terms are added, each
    broadcast along the indices it lacks (an outer sum, written as one)."""
    ctx = builder.ctx
    result_vars = _distinct(builder, stmt.indices, "the result")
    if stmt.summed is not None:
        raise ctx.error("E313", "`sum(...)` sums one product, not a sum of terms",
                        stmt.value.span, hint="sum each product in its own equation, then add "
                        "the results")
    values: list[tuple[Value, ir.Span]] = []
    for expr, sign in terms:
        read = _indices_read(builder, expr)
        indices = tuple(ident for ident in stmt.indices if ident.name in read)
        if not any(not _is_constant(builder, f) and isinstance(f, (s.Indexed, s.Var))
                   for f, _ in _factors(builder, expr, False)):
            raise ctx.error("E313", "each term of a tensor equation reads an array",
                            expr.span, hint=f"add a constant in its own statement: "
                            f"`Y = {stmt.target.name} + 1`")
        term = s.Equation(stmt.target, indices, None, expr, expr.span)
        value = _product(builder, term, None)
        if sign < 0:
            value = builder.broadcast(ir.ElementwiseOp(function="neg"), [(value, ())],
                                      [(value.array, (), None)], expr.span)[0]
        values.append((value, expr.span))
    for ident in stmt.indices:
        if not any(ident.name in value.array.names for value, _ in values):
            raise ctx.error("E313", f"index `{ident.name}` does not occur on the right side",
                            ident.span, hint="every index must read some array")
    builder.unify_axes(values, "a tensor equation")
    found = {axis.name: axis for value, _ in values for axis in value.array.shape.axes}
    out = array(ir.REALS, [found[name] for name in result_vars])
    return builder.broadcast(ir.AddOp(), [(value, ()) for value, _ in values],
                             [(out, (), stmt.target.name)], stmt.span)[0]


def _indices_read(builder: DefinitionBuilder, expr: s.Expr) -> set[str]:
    """The index variables a product names (an unindexed array: its own axes)."""
    read: set[str] = set()
    for factor, _ in _factors(builder, expr, False):
        if isinstance(factor, s.Indexed):
            for item in factor.items:
                read |= set(_affine(builder, item).coefficients)
        elif isinstance(factor, s.Var) and not _is_constant(builder, factor):
            value = builder.scope.get(factor.name)
            parameter = builder.params.get(factor.name)
            if value is not None:
                read |= set(value.array.names)
            elif parameter is not None:
                read |= set(parameter.array.names)
    return read


def _product(builder: DefinitionBuilder, stmt: s.Equation, result: str | None) -> Value:
    """One product (or a reindexing), bound to `result` (a fresh name when None)."""
    ctx = builder.ctx
    result_vars = _distinct(builder, stmt.indices, "the result")
    summed = _distinct(builder, stmt.summed or (), "`sum`")
    for ident in stmt.summed or ():
        if ident.name in {i.name for i in stmt.indices}:
            raise ctx.error("E313", f"`{ident.name}` is both an index of the result and summed",
                            ident.span, hint="an index is either kept or summed over")
    index_vars = set(result_vars) | set(summed)
    operands: list[Operand] = []
    factor, factor_text = 1.0, ""
    for expr, inverse in _factors(builder, stmt.value, False):
        if isinstance(expr, (s.Indexed, s.Var)) and not _is_constant(builder, expr):
            if inverse:
                raise ctx.error("E313", "a tensor equation divides only by constants", expr.span)
            operands.append(_operand(builder, expr, index_vars, stmt))
        else:
            number, text = scalar(builder, expr)
            if inverse:
                if number == 0:
                    raise ctx.error("E309", "division by zero", expr.span)
                number, text = 1.0 / number, f"1/{text}"
            factor *= number
            factor_text = f"{factor_text}·{text}" if factor_text else text
    if not operands:
        raise ctx.error("E313", "the right side of a tensor equation reads at least one array",
                        stmt.value.span)
    if not math.isfinite(factor):
        raise ctx.error("E309", f"the constant factor {factor_text} is not a usable number "
                        f"({factor})", stmt.value.span)
    sizes = _solve_sizes(builder, operands, stmt)
    for name in [*result_vars, *summed]:
        if not any(name in index.coefficients for op in operands for index in op.indices):
            ident = next(i for i in (*stmt.indices, *(stmt.summed or ())) if i.name == name)
            raise ctx.error("E313", f"index `{name}` does not occur on the right side",
                            ident.span, hint="every index must read some array")
    axes = {name: ir.Axis(name=name, size=size.to_ir()) for name, size in sizes.items()}
    for name, axis in axes.items():
        if from_ir(axis.size).is_const and (from_ir(axis.size).value or 0) <= 0:
            written = next((i for i in (*stmt.indices, *(stmt.summed or ())) if i.name == name),
                           None)
            raise ctx.error("E304", f"index `{name}` has no valid values: its range would be "
                            f"{from_ir(axis.size)}", written.span if written else stmt.span,
                            hint="the window is larger than the array it reads")
    result_axes = [axes[name] for name in result_vars]
    # A parameter read at other indices than its own axes, or in an equation that reads no
    # array on a wire, is read as data: put on a wire (`ncd.ops.data`) and read like one.
    only_params = all(operand.parameter is not None for operand in operands)
    for index, operand in enumerate(operands):
        if operand.parameter is not None and (only_params or not _is_plain(operand)):
            operand = operands[index] = Operand(
                operand.name, builder.param_wire(operand.parameter, operand.span), None,
                operand.indices, operand.span)

    only = operands[0]
    if len(operands) == 1 and not summed and factor == 1.0 and only.value is not None and \
            {n for index in only.indices for n in index.coefficients} == set(result_vars):
        return _reindex(builder, only, result_axes, result, stmt.span)

    inputs: list[tuple[Value, Sequence[str]]] = []
    params: list[tuple[ir.Parameter, Sequence[str]]] = []
    for operand in operands:
        if operand.parameter is not None:
            params.append((operand.parameter, [n for n in operand.array.names if n in summed]))
            continue
        assert operand.value is not None
        value = operand.value
        if not _is_plain(operand):
            order = _first_appearance(operand.indices)
            value = _reindex(builder, operand, [axes[n] for n in order], None, operand.span)
        inputs.append((value, [n for n in value.array.names if n in summed]))
    op = ir.EinsumOp(contracted=tuple(summed), scale=factor,
                     scale_text=factor_text or None)
    out_array = array(ir.REALS, result_axes)
    for value, _ in inputs:
        builder.require_reals(value, stmt.value.span, "a tensor equation")
    return builder.broadcast(op, inputs, [(out_array, (), result)], stmt.span,
                             params=params, degree=result_axes)[0]


def _distinct(builder: DefinitionBuilder, idents: Sequence[s.Ident], where: str) -> list[str]:
    names: list[str] = []
    for ident in idents:
        if ident.name in names:
            raise builder.ctx.error("E313", f"index `{ident.name}` appears twice in {where}",
                                    ident.span,
                                    hint="a diagonal is read on the right side: "
                                    "`Y[p] = X[p, p]`")
        names.append(ident.name)
    return names


def _is_constant(builder: DefinitionBuilder, expr: s.Expr) -> bool:
    return isinstance(expr, s.Var) and expr.name not in builder.scope and \
        expr.name not in builder.params and expr.name in builder.ctx.axes


def _factors(builder: DefinitionBuilder, expr: s.Expr, inverse: bool
             ) -> list[tuple[s.Expr, bool]]:
    """The factors of a product, each with whether it divides."""
    match expr:
        case s.BinOp(op="*", left=left, right=right):
            return _factors(builder, left, inverse) + _factors(builder, right, inverse)
        case s.BinOp(op="/", left=left, right=right):
            return _factors(builder, left, inverse) + _factors(builder, right, not inverse)
        case s.BinOp(op=op, span=span):
            raise builder.ctx.error(
                "E313", f"a tensor equation is a product of indexed arrays and constants; "
                f"`{op}` is not allowed here", span,
                hint="compute sums of arrays in separate statements: `Z = X + Y`")
        case s.Call(name=ident) if ident.name != "sqrt":
            raise builder.ctx.error(
                "E313", "operators are applied in their own statements, not inside a tensor "
                "equation", expr.span, hint=f"bind it first: `T = {ident.name}(...)`")
    return [(expr, inverse)]


def _operand(builder: DefinitionBuilder, expr: s.Indexed | s.Var, index_vars: set[str],
             stmt: s.Equation) -> Operand:
    ctx = builder.ctx
    name = expr.name.name if isinstance(expr, s.Indexed) else expr.name
    name_span = expr.name.span if isinstance(expr, s.Indexed) else expr.span
    value = builder.scope.get(name) if name in builder.scope else None
    if (name in builder.scope and value is None) or (
            name not in builder.scope and name in builder.failed_params):
        raise Reject(name)  # reported where it was bound or declared
    parameter = builder.params.get(name) if value is None else None
    if value is None and parameter is None:
        raise ctx.error("E200", f"unknown array `{name}`", name_span,
                        hint=did_you_mean(name, [*[n for n in builder.scope if n],
                                                 *builder.params]) or
                        f"a new parameter is declared first: `param {name}: R[...]`")
    if value is not None:
        array_type = value.array
    else:
        assert parameter is not None  # neither is E200 above
        array_type = parameter.array
    if isinstance(expr, s.Var):
        # `Y[i, j] = X * 2`: an unindexed array is read at its own axis names.
        indices = [Affine({n: 1}, 0, expr.span) for n in array_type.names]
    else:
        if len(expr.items) != len(array_type.names):
            raise ctx.error(
                "E313", f"`{name}` has {len(array_type.names)} axes "
                f"[{', '.join(array_type.names)}] but is read with {len(expr.items)} indices",
                expr.span)
        indices = [_affine(builder, item) for item in expr.items]
    for index in indices:
        for var in index.coefficients:
            if var not in index_vars:
                raise ctx.error(
                    "E313", f"index `{var}` is neither an index of the result nor summed",
                    index.span, hint=f"add it to the result `{stmt.target.name}[..., {var}]` or "
                    f"sum over it: `sum({var})`")
    return Operand(name, value, parameter, indices, expr.span)


def _affine(builder: DefinitionBuilder, item: s.BracketItem) -> Affine:
    ctx = builder.ctx
    if isinstance(item, (s.Arrow, s.Comparison, s.Keyword, s.Each)):
        raise ctx.error("E313", "an index is an expression like `i`, `2*p + w` or `3`",
                        item.span)

    def walk(expr: s.Expr) -> tuple[dict[str, int], int]:
        match expr:
            case s.Number(value=value, is_int=True):
                return {}, int(value)
            case s.Var(name=name):
                return {name: 1}, 0
            case s.Neg(operand=operand):
                terms, offset = walk(operand)
                return {k: -v for k, v in terms.items()}, -offset
            case s.BinOp(op=op, left=left, right=right) if op in "+-":
                lt, lo = walk(left)
                rt, ro = walk(right)
                sign = 1 if op == "+" else -1
                for key, coefficient in rt.items():
                    lt[key] = lt.get(key, 0) + sign * coefficient
                return lt, lo + sign * ro
            case s.BinOp(op="*", left=left, right=right):
                lt, lo = walk(left)
                rt, ro = walk(right)
                if lt and rt:
                    raise ctx.error("E306", "an index may not multiply two index variables",
                                    expr.span, hint="indices are affine: `2*p + w`")
                factor, terms, offset = (lo, rt, ro) if not lt else (ro, lt, lo)
                return {k: v * factor for k, v in terms.items()}, offset * factor
        raise ctx.error("E306", "an index is built from index variables, integers, + - and *",
                        expr.span, hint="indices are affine: `2*p + w`")

    terms, offset = walk(item)
    return Affine({k: v for k, v in terms.items() if v}, offset, item.span)


def _is_plain(operand: Operand) -> bool:
    """Every index is the array's own axis name, once: the einsum reads it as it is."""
    names = [index.plain_variable for index in operand.indices]
    return names == list(operand.array.names)


def _first_appearance(indices: Sequence[Affine]) -> list[str]:
    order: list[str] = []
    for index in indices:
        for name in index.coefficients:
            if name not in order:
                order.append(name)
    return order


def _solve_sizes(builder: DefinitionBuilder, operands: Sequence[Operand],
                 stmt: s.Equation) -> dict[str, Size]:
    ctx = builder.ctx
    sizes: dict[str, Size] = {}
    origin: dict[str, ir.Span] = {}
    occurrences = [(index, axis) for op in operands
                   for index, axis in zip(op.indices, op.array.shape.axes, strict=True)]
    # 1. A plain occurrence ranges over the whole axis it reads.
    for index, axis in occurrences:
        name = index.plain_variable
        if name is None:
            continue
        size = from_ir(axis.size)
        if name in sizes and sizes[name] != size:
            raise ctx.error(
                "E300", f"index `{name}` reads axis `{axis.name}` of size {size} here, but an "
                f"axis of size {sizes[name]} elsewhere", index.span,
                notes=[Note(origin[name], f"`{name}` has size {sizes[name]} here")],
                hint="indices that share a name must range over axes of the same size")
        declared = ctx.axes.get(name)
        if declared is not None and declared.size != size:
            raise ctx.error(
                "E300", f"index `{name}` reads axis `{axis.name}` of size {size}, but `{name}` "
                f"is declared with size {declared.size}", index.span,
                notes=[Note(declared.span, f"`{name}` is declared here")] if declared.span
                else (), hint="an index named after a declared axis ranges over that axis; "
                "pick another name for this index")
        sizes.setdefault(name, size)
        origin.setdefault(name, index.span)
    # 2. Otherwise a declared axis of the same name gives the range.
    all_vars = {n for index, _ in occurrences for n in index.coefficients}
    for name in sorted(all_vars - set(sizes)):
        info = ctx.axes.get(name)
        if info is not None:
            sizes[name] = info.size
            origin[name] = info.span or stmt.span
    # 3. The rest: the largest range that keeps each affine index inside its axis.
    progress = True
    while progress:
        progress = False
        for index, axis in occurrences:
            unknown = [n for n in index.coefficients if n not in sizes]
            if len(unknown) != 1 or index.coefficients[unknown[0]] <= 0:
                continue
            name = unknown[0]
            reach = Size.const(index.offset)
            for other, coefficient in index.coefficients.items():
                if other != name and coefficient > 0:
                    reach = reach + (sizes[other] - 1) * coefficient
            room = from_ir(axis.size) - 1 - reach
            sizes[name] = room.floor_div(index.coefficients[name]) + 1
            origin[name] = index.span
            progress = True
    missing = sorted(all_vars - set(sizes))
    if missing:
        name = missing[0]
        span = next(index.span for index, _ in occurrences if name in index.coefficients)
        raise ctx.error("E305", f"cannot tell how far index `{name}` ranges", span,
                        hint=f"read it plainly somewhere, or declare `axis {name} = ...`")
    # 4. Every index stays inside its axis.
    for index, axis in occurrences:
        high = Size.const(index.offset)
        low = Size.const(index.offset)
        for name, coefficient in index.coefficients.items():
            if coefficient > 0:
                high = high + (sizes[name] - 1) * coefficient
            else:
                low = low + (sizes[name] - 1) * coefficient
        limit = from_ir(axis.size) - 1
        over = limit - high
        notes = [Note(origin[n], f"`{n}` ranges over {sizes[n]} values here")
                 for n in index.coefficients if n in origin and origin[n] != index.span]
        if (over.is_const and over.constant < 0) or (low.is_const and low.constant < 0):
            raise ctx.error(
                "E304", f"this index reaches {high if over.is_const and over.constant < 0 else low}"
                f" but axis `{axis.name}` has indices 0 to {limit}", index.span, notes=notes,
                hint="shrink the range of an index or pad the array")
        # With symbolic sizes: refused where the index leaves its axis for every size; where
        # that depends on the sizes, the compiled module checks it when it runs.
        positive = [*sizes.values(), *(from_ir(a.size) for _, a in occurrences)]
        for reach, slack in ((high, over), (low, low)):
            if check_nonnegative(slack, positive).verdict == "fails":
                raise ctx.error(
                    "E304", f"this index reaches {reach} but axis `{axis.name}` has indices 0 "
                    f"to {limit}, for every size", index.span, notes=notes,
                    hint="shrink the range of an index or pad the array")
    return sizes


def _reindex(builder: DefinitionBuilder, operand: Operand, out_axes: Sequence[ir.Axis],
             name: str | None, span: ir.Span) -> Value:
    """The reindexing `Y[p] = X[eta(p)]` that reads `operand` at its index expressions."""
    assert operand.value is not None
    domain = shape(out_axes)
    position = {axis.name: i for i, axis in enumerate(out_axes)}
    matrix = []
    offsets = []
    for index in operand.indices:
        row = [0] * len(out_axes)
        for var, coefficient in index.coefficients.items():
            row[position[var]] = coefficient
        matrix.append(tuple(row))
        offsets.append(index.offset)
    eta = ir.StrideMorphism(domain=domain, codomain=operand.array.shape, matrix=tuple(matrix),
                            offset=tuple(offsets))
    out = builder.new_value(array(operand.array.dtype, out_axes), name, span,
                            base=f"{operand.name}_r")
    term = ir.Reindexing(dom=(operand.array,), cod=(out.array,), span=span, eta=eta,
                         name=out.name, source=operand.value.name)
    builder.add_step(term, [operand.value], [out])
    return out
