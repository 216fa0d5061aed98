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
from ncd.ops.arguments import size_constant
from ncd.ops.arithmetic import is_constant_call, is_scalar, scalar
from ncd.sizes import Size, check_nonnegative, from_ir

if TYPE_CHECKING:
    from ncd.elaborate import DefinitionBuilder


@dataclass
class Affine:
    """One index of an array read: `(sum coefficients[a] * a + offset) // divisor % modulus`,
    or the value of an index array (`X[Src[e], f]`), which then has no coefficients."""

    coefficients: dict[str, int]
    offset: int
    span: ir.Span
    divisor: int = 1
    modulus: int | None = None
    index_array: Operand | None = None

    @property
    def is_affine(self) -> bool:
        return self.divisor == 1 and self.modulus is None and self.index_array is None

    @property
    def variables(self) -> list[str]:
        """The index variables this index reads (an index array's: those it is read at)."""
        if self.index_array is not None:
            return [n for index in self.index_array.indices for n in index.coefficients]
        return list(self.coefficients)

    @property
    def plain_variable(self) -> str | None:
        if self.is_affine and self.offset == 0 and len(self.coefficients) == 1:
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
    new = _new_indices(builder, stmt)
    if new and _lone_number(stmt.value) is None:
        # `Y[s, x, m] = X[x, m]`: computed without `s`, then copied along it.
        kept = tuple(i for i in stmt.indices if i.name not in new)
        inner = _equation(builder, s.Equation(stmt.target, kept, stmt.summed, stmt.value,
                                              stmt.span), None)
        axes = [inner.array.shape.axis(i.name) if i.name not in new else
                builder.global_axis(i) for i in stmt.indices]
        operand = Operand(inner.name, inner, None,
                          [Affine({n: 1}, 0, stmt.span) for n in inner.array.names], stmt.span)
        return _reindex(builder, operand, axes, stmt.target.name, stmt.span)
    return _equation(builder, stmt, stmt.target.name)


def _equation(builder: DefinitionBuilder, stmt: s.Equation, result: str | None) -> Value:
    pure = _pure_index(builder, stmt)
    if pure is not None:
        coefficients, offset = pure
        axes = [builder.global_axis(i) for i in stmt.indices]
        return _index_value(builder, coefficients, offset, _source_text(stmt.value), axes,
                            result, stmt.span)
    terms = _terms(stmt.value, 1)
    if len(terms) == 1 and terms[0][1] == 1:
        return _product(builder, stmt, result)
    return _sum_of_products(builder, stmt, terms, result)


def _names_in(expr: s.Expr | s.BracketItem) -> set[str]:
    """Every name an expression writes (arrays, indices, sizes)."""
    match expr:
        case s.Var(name=name):
            return {name}
        case s.BinOp(left=left, right=right):
            return _names_in(left) | _names_in(right)
        case s.Neg(operand=operand):
            return _names_in(operand)
        case s.Indexed(name=ident, items=items) | s.Call(name=ident, items=items):
            found = {ident.name}
            for item in items or ():
                found |= _names_in(item)
            for arg in getattr(expr, "args", ()):
                found |= _names_in(arg)
            return found
        case s.Comparison(left=left, right=right):
            return _names_in(left) | _names_in(right)
        case s.Keyword(value=value):
            return _names_in(value)
    return set()


def _new_indices(builder: DefinitionBuilder, stmt: s.Equation) -> set[str]:
    """The result's indices that nothing on the right side names and an axis is declared
    for: the result is copied along them."""
    written = _names_in(stmt.value)
    for expr in _all_factors(stmt.value):
        name = expr.name if isinstance(expr, s.Var) else None
        value = builder.scope.get(name) if name is not None else None
        parameter = builder.params.get(name) if name is not None else None
        if value is not None:
            written |= set(value.array.names)
        elif parameter is not None:
            written |= set(parameter.array.names)
    return {i.name for i in stmt.indices
            if i.name not in written and i.name in builder.ctx.axes}


def _all_factors(expr: s.Expr) -> list[s.Expr]:
    match expr:
        case s.BinOp(left=left, right=right):
            return [*_all_factors(left), *_all_factors(right)]
        case s.Neg(operand=operand):
            return _all_factors(operand)
    return [expr]


def _pure_index(builder: DefinitionBuilder, stmt: s.Equation
                ) -> tuple[dict[str, int], int] | None:
    """`P[x] = x`, `R[x, y] = x - y + 1`: a right side that reads no array and is affine in the
    result's indices is one array of index values (None otherwise); an integer alone,
    `One[e] = 1`, is the constant array (every coefficient zero)."""
    index_vars = {i.name for i in stmt.indices}
    names = _names_in(stmt.value)
    constant = _lone_number(stmt.value)
    if stmt.summed is None and stmt.indices and constant is not None:
        if not constant.is_int:
            raise builder.ctx.error("E313", "an array of one constant is written with an "
                                    "integer", stmt.value.span,
                                    hint=f"write `{stmt.target.name}[...] = 1`, then scale "
                                    f"it: `{stmt.target.name} * 0.5`")
        affine = _affine(builder, stmt.value, index_vars)
        return affine.coefficients, affine.offset
    if stmt.summed is not None or not names & index_vars or \
            any(n in builder.scope or n in builder.params for n in names) or \
            any(isinstance(f, (s.Indexed, s.Call)) for f in _all_factors(stmt.value)):
        return None
    if any(n not in index_vars and n not in builder.ctx.axes for n in names):
        return None
    affine = _affine(builder, stmt.value, index_vars)
    if not affine.is_affine:
        return None
    return affine.coefficients, affine.offset


def _lone_number(expr: s.Expr) -> s.Number | None:
    """The number of a right side that is one number (`1`, `-2`), else None."""
    inner = expr.operand if isinstance(expr, s.Neg) else expr
    return inner if isinstance(inner, s.Number) else None


def _source_text(expr: s.Expr) -> str:
    match expr:
        case s.Number(value=value):
            return str(int(value)) if float(value).is_integer() else repr(value)
        case s.Var(name=name):
            return name
        case s.Neg(operand=operand):
            return f"-{_source_text(operand)}"
        case s.BinOp(op=op, left=left, right=right):
            inner = f"{_source_text(left)} {op} {_source_text(right)}"
            return inner if op in "+-" else inner.replace(" * ", "*")
    return "?"


def _terms(expr: s.Expr, sign: int) -> list[tuple[s.Expr, int]]:
    """The terms of a sum, each with its sign."""
    match expr:
        case s.BinOp(op="+" | "-", left=left, right=right):
            return _terms(left, sign) + _terms(right, sign if expr.op == "+" else -sign)
        case s.Neg(operand=operand):
            return _terms(operand, -sign)
    return [(expr, sign)]


def _sum_of_products(builder: DefinitionBuilder, stmt: s.Equation,
                     terms: Sequence[tuple[s.Expr, int]], result: str | None) -> Value:
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
        read = _indices_read(builder, expr, set(result_vars))
        indices = tuple(ident for ident in stmt.indices if ident.name in read)
        if not any((not _is_constant(builder, f) and isinstance(f, (s.Indexed, s.Var))) or
                   _is_index_value(builder, f, set(result_vars))
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
                             [(out, (), result)], stmt.span)[0]


def _indices_read(builder: DefinitionBuilder, expr: s.Expr, index_vars: set[str]) -> set[str]:
    """The index variables a product names (an unindexed array: its own axes)."""
    read: set[str] = set()
    for factor, _ in _factors(builder, expr, False):
        if isinstance(factor, s.Indexed):
            for item in factor.items:
                read |= set(_affine(builder, item, index_vars).variables)
        elif _is_index_value(builder, factor, index_vars):
            assert isinstance(factor, s.Var)
            read.add(factor.name)
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
    index_values: list[s.Var] = []
    factor, factor_text = 1.0, ""
    for expr, inverse in _factors(builder, stmt.value, False):
        if _is_index_value(builder, expr, index_vars) and not inverse:
            # (`/ k` divides by the size of `k`, as before index values existed)
            assert isinstance(expr, s.Var)
            index_values.append(expr)
        elif isinstance(expr, (s.Indexed, s.Var)) and not _is_constant(builder, expr):
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
    if not operands and not index_values:
        raise ctx.error("E313", "the right side of a tensor equation reads at least one array",
                        stmt.value.span)
    if not math.isfinite(factor):
        raise ctx.error("E309", f"the constant factor {factor_text} is not a usable number "
                        f"({factor})", stmt.value.span)
    sizes = _solve_sizes(builder, operands, stmt, [v.name for v in index_values])
    for name in [*result_vars, *summed]:
        if not any(name in index.variables for op in operands for index in op.indices) and \
                name not in {v.name for v in index_values}:
            ident = next(i for i in (*stmt.indices, *(stmt.summed or ())) if i.name == name)
            raise ctx.error("E313", f"index `{name}` does not occur on the right side",
                            ident.span, hint="every index must read some array")
    axes = {name: ir.trusted(ir.Axis, name=name, size=size.to_ir())
            for name, size in sizes.items()}
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

    if not operands and len(index_values) == 1 and not summed and factor.is_integer():
        # `P[x] = x`, `Y[x] = 2 * x`: the index's values, no product.
        (only_index,) = index_values
        coefficient = int(factor)
        text = only_index.name if coefficient == 1 else f"{factor_text} * {only_index.name}"
        return _index_value(builder, {only_index.name: coefficient}, 0, text, result_axes,
                            result, stmt.span)
    if len(operands) == 1 and not index_values and not summed and factor == 1.0 and \
            operands[0].value is not None and \
            {n for index in operands[0].indices for n in index.variables} == set(result_vars):
        return _read(builder, operands[0], result_axes, result, stmt.span)

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
            value = _read(builder, operand, [axes[n] for n in order], None, operand.span)
        inputs.append((value, [n for n in value.array.names if n in summed]))
    for index_value in index_values:
        value = _index_value(builder, {index_value.name: 1}, 0, index_value.name,
                             [axes[index_value.name]], None, index_value.span)
        inputs.append((value, [index_value.name] if index_value.name in summed else []))
    op = ir.trusted(ir.EinsumOp, kind="einsum", contracted=tuple(summed), scale=float(factor),
                    scale_text=factor_text or None)
    out_array = array(ir.REALS, result_axes)
    for value, _ in inputs:
        builder.require_reals(value, stmt.value.span, "a tensor equation")
    return builder.broadcast(op, inputs, [(out_array, (), result)], stmt.span,
                             params=params, degree=result_axes)[0]


def _index_value(builder: DefinitionBuilder, coefficients: dict[str, int], offset: int,
                 text: str, axes: Sequence[ir.Axis], name: str | None, span: ir.Span) -> Value:
    """The array of an index expression's values (`x`, `x - y`): reals, built from nothing."""
    op = ir.IndexValueOp(coefficients=tuple((n, c) for n, c in coefficients.items() if c),
                         offset=offset, text=text)
    out = array(ir.REALS, axes)
    return builder.broadcast(op, [], [(out, out.names, name)], span, degree=[])[0]


def _read(builder: DefinitionBuilder, operand: Operand, out_axes: Sequence[ir.Axis],
          name: str | None, span: ir.Span) -> Value:
    """An array read at its indices: a reindexing where every index is affine, else a gather."""
    if all(index.is_affine for index in operand.indices):
        return _reindex(builder, operand, out_axes, name, span)
    return _gather(builder, operand, out_axes, name, span)


def _gather(builder: DefinitionBuilder, operand: Operand, out_axes: Sequence[ir.Axis],
            name: str | None, span: ir.Span) -> Value:
    """`Y[p] = X[q(p)]` with indices that divide (`y // 2`), take remainders (`i % n`) or
    read index arrays (`X[Src[e], f]`)."""
    assert operand.value is not None
    by_name = {axis.name: axis for axis in out_axes}
    inputs: list[tuple[Value, Sequence[str]]] = [(operand.value, operand.array.names)]
    terms: list[ir.IndexTerm] = []
    for index in operand.indices:
        text = _index_text(index)
        inner = index.index_array
        if inner is not None:
            assert inner.value is not None
            read = inner.value
            if not _is_plain(inner):  # read at other names than its own: renamed
                read = _reindex(builder, inner, [by_name[i.plain_variable or ""]
                                                 for i in inner.indices], None, inner.span)
            inputs.append((read, read.array.names))
            terms.append(ir.IndexTerm(array=len(inputs) - 1, text=text))
            continue
        terms.append(ir.IndexTerm(coefficients=tuple(index.coefficients.items()),
                                  offset=index.offset, divisor=index.divisor,
                                  modulus=index.modulus, text=text))
    op = ir.GatherOp(indices=tuple(terms))
    out = array(operand.array.dtype, out_axes)
    return builder.broadcast(op, inputs, [(out, out.names, name)], span, degree=[])[0]


def _index_text(index: Affine) -> str:
    """An index as the source would write it: `y // 2`, `(i + 1) % n`, `Src[e]`."""
    if index.index_array is not None:
        names = [i.plain_variable or "?" for i in index.index_array.indices]
        return f"{index.index_array.name}[{', '.join(names)}]"
    parts: list[str] = []
    for var, coefficient in index.coefficients.items():
        magnitude = "" if abs(coefficient) == 1 else f"{abs(coefficient)}*"
        sign = "-" if coefficient < 0 else "+"
        parts.append(f"{sign} {magnitude}{var}" if parts else
                     f"{'-' if coefficient < 0 else ''}{magnitude}{var}")
    if index.offset or not parts:
        value = index.offset
        parts.append(f"{'-' if value < 0 else '+'} {abs(value)}" if parts else str(value))
    text = " ".join(parts)
    compound = len(parts) > 1
    if index.divisor != 1:
        text = f"({text}) // {index.divisor}" if compound else f"{text} // {index.divisor}"
        compound = True
    if index.modulus is not None:
        text = f"({text}) % {index.modulus}" if compound else f"{text} % {index.modulus}"
    return text


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


def _is_index_value(builder: DefinitionBuilder, expr: s.Expr, index_vars: set[str]) -> bool:
    """An index variable used as a value (`x` in `P[x] = x`): an integer, held as a real."""
    return isinstance(expr, s.Var) and expr.name in index_vars and \
        expr.name not in builder.scope and expr.name not in builder.params


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
        case s.Call(name=ident) if not (is_constant_call(expr) and is_scalar(builder, expr)):
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
        indices = [_affine(builder, item, index_vars) for item in expr.items]
    for index in indices:
        for var in index.variables:
            if var not in index_vars:
                raise ctx.error(
                    "E313", f"index `{var}` is neither an index of the result nor summed",
                    index.span, hint=f"add it to the result `{stmt.target.name}[..., {var}]` or "
                    f"sum over it: `sum({var})`")
    return Operand(name, value, parameter, indices, expr.span)


def _affine(builder: DefinitionBuilder, item: s.BracketItem, index_vars: set[str]) -> Affine:
    """An index as written: affine in the index variables (`2*p + w`, `s*p` with a declared
    size `s`), divided (`y // 2`) or reduced (`i % n`) by a constant or a size, or an index
    array read at index variables (`Src[e]`)."""
    ctx = builder.ctx
    if isinstance(item, (s.Arrow, s.Comparison, s.Keyword, s.Each)):
        raise ctx.error("E313", "an index is an expression like `i`, `2*p + w` or `3`",
                        item.span)

    def size_of(expr: s.Expr) -> int | None:
        """A declared size standing for a number (`s` in `s*p`), read after `-D`."""
        if isinstance(expr, s.Var) and expr.name not in index_vars and \
                expr.name not in builder.scope and expr.name not in builder.params:
            return size_constant(ctx, expr.name, expr.span)
        return None

    def constant(expr: s.Expr, what: str) -> int:
        match expr:
            case s.Number(value=value, is_int=True) if value > 0:
                return int(value)
        size = size_of(expr)
        if size is not None and size > 0:
            return size
        raise ctx.error("E306", f"{what} is by a positive integer or a declared size",
                        expr.span, hint="for example `y // 2` or `i % n`")

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
                left_size, right_size = size_of(left), size_of(right)
                lt, lo = ({}, left_size) if left_size is not None else walk(left)
                rt, ro = ({}, right_size) if right_size is not None else walk(right)
                if lt and rt:
                    raise ctx.error("E306", "an index may not multiply two index variables",
                                    expr.span, hint="indices are affine: `2*p + w`; a declared "
                                    "size is a coefficient: `s*p + w`")
                factor, terms, offset = (lo, rt, ro) if not lt else (ro, lt, lo)
                return {k: v * factor for k, v in terms.items()}, offset * factor
            case s.BinOp(op="//" | "%", span=span):
                raise ctx.error("E306", f"`{expr.op}` applies to a whole index", span,
                                hint="for example `X[y // 2]` or `X[(i + 1) % n]`")
            case s.Indexed():
                raise ctx.error("E306", "an index array is a whole index", expr.span,
                                hint="for example `X[Src[e], f]`")
        raise ctx.error("E306", "an index is built from index variables, integers, sizes, "
                        "+ - *, `//` and `%`", expr.span, hint="indices are affine: `2*p + w`")

    modulus: int | None = None
    divisor = 1
    expr: s.Expr = item
    if isinstance(expr, s.BinOp) and expr.op == "%":
        modulus = constant(expr.right, "a remainder")
        expr = expr.left
    if isinstance(expr, s.BinOp) and expr.op == "//":
        divisor = constant(expr.right, "a division of an index")
        expr = expr.left
    if isinstance(expr, s.Indexed):
        if modulus is not None or divisor != 1:
            raise ctx.error("E306", "an index array is read as it is, not divided",
                            item.span, hint="for example `X[Src[e], f]`")
        return Affine({}, 0, item.span, index_array=_index_array(builder, expr, index_vars))
    terms, offset = walk(expr)
    return Affine({k: v for k, v in terms.items() if v}, offset, item.span, divisor, modulus)


def _index_array(builder: DefinitionBuilder, expr: s.Indexed, index_vars: set[str]) -> Operand:
    """`Src[e]` inside an index: an array of datatype N with a bound, read at plain index
    variables."""
    ctx = builder.ctx
    name = expr.name.name
    value = builder.scope.get(name)
    if name in builder.scope and value is None:
        raise Reject(name)
    if value is None:
        raise ctx.error("E200", f"unknown index array `{name}`", expr.name.span,
                        hint=did_you_mean(name, [n for n in builder.scope if n]))
    if value.array.dtype.kind != "N" or value.array.dtype.bound is None:
        raise ctx.error("E302", f"an index array holds naturals with a bound, N[v], but `{name}` "
                        f"holds {value.array.dtype.text()}", expr.name.span,
                        hint="declare it with its bound, for example `Src: N[v][e]`")
    if len(expr.items) != len(value.array.names):
        raise ctx.error("E313", f"`{name}` has {len(value.array.names)} axes "
                        f"[{', '.join(value.array.names)}] but is read with {len(expr.items)} "
                        "indices", expr.span)
    indices = []
    for item in expr.items:
        if not isinstance(item, s.Var):
            raise ctx.error("E306", "an index array is read at index variables", item.span,
                            hint=f"for example `{name}[{', '.join(value.array.names)}]`")
        indices.append(Affine({item.name: 1}, 0, item.span))
    return Operand(name, value, None, indices, expr.span)


def _is_plain(operand: Operand) -> bool:
    """Every index is the array's own axis name, once: the einsum reads it as it is."""
    names = [index.plain_variable for index in operand.indices]
    return names == list(operand.array.names)


def _first_appearance(indices: Sequence[Affine]) -> list[str]:
    order: list[str] = []
    for index in indices:
        for name in index.variables:
            if name not in order:
                order.append(name)
    return order


def _occurrences(builder: DefinitionBuilder, operands: Sequence[Operand]
                 ) -> list[tuple[Affine, ir.Axis]]:
    """Each index with the axis it reads; an index array's own indices are read too, and its
    bound is the size of the axis it indexes."""
    found: list[tuple[Affine, ir.Axis]] = []
    for op in operands:
        for index, axis in zip(op.indices, op.array.shape.axes, strict=True):
            inner = index.index_array
            if inner is None:
                found.append((index, axis))
                continue
            bound = inner.array.dtype.bound
            assert bound is not None  # `_index_array` requires one
            if from_ir(bound) != from_ir(axis.size):
                raise builder.ctx.error(
                    "E300", f"`{inner.name}` holds indices below {from_ir(bound)} "
                    f"({inner.array.dtype.text()}) but indexes axis `{axis.name}` of `{op.name}`, "
                    f"of size {from_ir(axis.size)}", inner.span,
                    hint=f"an index array's bound is the size of the axis it indexes: "
                    f"`{inner.name}: N[{axis.name}][{', '.join(inner.array.names)}]`")
            found.extend(zip(inner.indices, inner.array.shape.axes, strict=True))
    return found


def _reach_size(index: Affine, axis: ir.Axis) -> Size:
    """How far the affine part of an index may reach: the axis's size, times the divisor of
    `y // d` (`2*|y'|` for `y // 2`)."""
    return from_ir(axis.size) * index.divisor


def _solve_sizes(builder: DefinitionBuilder, operands: Sequence[Operand],
                 stmt: s.Equation, extra: Sequence[str] = ()) -> dict[str, Size]:
    ctx = builder.ctx
    sizes: dict[str, Size] = {}
    origin: dict[str, ir.Span] = {}
    occurrences = _occurrences(builder, operands)
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
    all_vars = {n for index, _ in occurrences for n in index.coefficients} | set(extra)
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
            if len(unknown) != 1 or index.coefficients[unknown[0]] <= 0 or \
                    index.modulus is not None:
                continue
            name = unknown[0]
            reach = Size.const(index.offset)
            for other, coefficient in index.coefficients.items():
                if other != name and coefficient > 0:
                    reach = reach + (sizes[other] - 1) * coefficient
            room = _reach_size(index, axis) - 1 - reach
            sizes[name] = room.floor_div(index.coefficients[name]) + 1
            origin[name] = index.span
            progress = True
    missing = sorted(all_vars - set(sizes))
    if missing:
        name = missing[0]
        span = next((index.span for index, _ in occurrences if name in index.coefficients),
                    stmt.span)
        raise ctx.error("E305", f"cannot tell how far index `{name}` ranges", span,
                        hint=f"read it plainly somewhere, or declare `axis {name} = ...`")
    # 4. Every index stays inside its axis.
    for index, axis in occurrences:
        if index.modulus is not None:
            # `i % n` lies in 0 to n - 1 whatever `i` is: n must not exceed the axis.
            if check_nonnegative(from_ir(axis.size) - index.modulus,
                                 [from_ir(a.size) for _, a in occurrences]).verdict != "holds":
                raise ctx.error(
                    "E304", f"this index reaches {index.modulus - 1} but axis `{axis.name}` has "
                    f"indices 0 to {from_ir(axis.size) - 1}", index.span,
                    hint="take the remainder by at most the axis's size")
            continue
        high = Size.const(index.offset)
        low = Size.const(index.offset)
        for name, coefficient in index.coefficients.items():
            if coefficient > 0:
                high = high + (sizes[name] - 1) * coefficient
            else:
                low = low + (sizes[name] - 1) * coefficient
        limit = _reach_size(index, axis) - 1
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
    eta = ir.trusted(ir.StrideMorphism, domain=domain, codomain=operand.array.shape,
                     matrix=tuple(matrix), offset=tuple(offsets))
    out = builder.new_value(array(operand.array.dtype, out_axes), name, span,
                            base=f"{operand.name}_r")
    term = ir.trusted(ir.Reindexing, dom=(operand.array,), cod=(out.array,), span=span,
                      kind="reindexing", eta=eta, name=out.name, source=operand.value.name)
    builder.add_step(term, [operand.value], [out])
    return out
