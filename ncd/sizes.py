"""Symbolic axis sizes: polynomials over symbols, in a normal form that decides equality.

A size is a polynomial with rational coefficients over atoms; an atom is a symbolic axis
size (`x`) or a floor division that cannot be simplified (`(x - 3) // 2`). Two sizes are equal
when their normal forms are. This is what lets the checker compare `x - w + 1` with `x - 2`
when `w = 3`, and report a mismatch before anything runs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, assert_never

from ncd import ir

Monomial = tuple[tuple[str, int], ...]  # sorted (atom key, power)

# What a size may grow to. Sizes are small polynomials; without bounds, a few lines that square
# a size again and again (`b = a * a`, `c = b * b`, ...) would take minutes and gigabytes.
MAX_SIZE_TERMS = 64
MAX_SIZE_DEGREE = 16
MAX_SIZE_BITS = 256  # numerators and denominators of coefficients


class SizeLimit(ValueError):
    """A size grew past the bounds above; the elaborator reports it as E309 where it arose."""


@dataclass(frozen=True)
class Size:
    terms: tuple[tuple[Monomial, Fraction], ...]
    atoms: tuple[tuple[str, ir.SizeExpr], ...] = ()

    # ---- construction
    # A size is an immutable value: the sizes of constants and symbols, which the checker
    # and the compiler ask for again at every statement, are made once (bounded caches).
    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def const(value: int | Fraction) -> Size:
        return Size._build({(): Fraction(value)}, {})

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def sym(name: str) -> Size:
        return Size._build({((name, 1),): Fraction(1)},
                           {name: ir.trusted(ir.SizeSym, kind="sym", name=name)})

    @staticmethod
    def _build(terms: Mapping[Monomial, Fraction], atoms: Mapping[str, ir.SizeExpr]) -> Size:
        kept = tuple(sorted((m, c) for m, c in terms.items() if c != 0))
        if len(kept) > MAX_SIZE_TERMS:
            raise SizeLimit(f"the size has more than {MAX_SIZE_TERMS} terms")
        for monomial, coefficient in kept:
            if sum(power for _, power in monomial) > MAX_SIZE_DEGREE:
                raise SizeLimit(f"the size has a degree above {MAX_SIZE_DEGREE}")
            if max(abs(coefficient.numerator), coefficient.denominator).bit_length() > \
                    MAX_SIZE_BITS:
                raise SizeLimit(f"the size has a number above 2**{MAX_SIZE_BITS}")
        used = {key for monomial, _ in kept for key, _ in monomial}
        return Size(kept, tuple(sorted((k, v) for k, v in atoms.items() if k in used)))

    @staticmethod
    def _opaque(expr: ir.SizeExpr) -> Size:
        key = ir.size_text(expr)
        key = f"({key})"
        return Size._build({((key, 1),): Fraction(1)}, {key: expr})

    # ---- queries
    @property
    def is_const(self) -> bool:
        return all(not monomial for monomial, _ in self.terms)

    @property
    def constant(self) -> Fraction:
        return dict(self.terms).get((), Fraction(0))

    @property
    def value(self) -> int | None:
        """The integer value when the size is a known integer."""
        if not self.is_const:
            return None
        c = self.constant
        return int(c) if c.denominator == 1 else None

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(key for key, expr in self.atoms if isinstance(expr, ir.SizeSym))

    def evaluate(self, env: Mapping[str, int]) -> Fraction | None:
        total = Fraction(0)
        atom_exprs = dict(self.atoms)
        for monomial, coefficient in self.terms:
            term = coefficient
            for key, power in monomial:
                value = evaluate(atom_exprs[key], env)
                if value is None:
                    return None
                term *= Fraction(value) ** power
            total += term
        return total

    def linear_in(self, symbol: str) -> tuple[int, int] | None:
        """`(a, b)` when the size is exactly `a * symbol + b` with integers `a > 0` and `b`
        (read from the coefficients of the normal form), else None."""
        if self.atoms != ((symbol, ir.SizeSym(name=symbol)),):
            return None
        coefficients = dict(self.terms)
        if set(coefficients) - {(), ((symbol, 1),)}:
            return None  # a power of the symbol
        a, b = coefficients.get(((symbol, 1),), Fraction(0)), self.constant
        if a <= 0 or a.denominator != 1 or b.denominator != 1:
            return None
        return int(a), int(b)

    # ---- arithmetic
    def _merged_atoms(self, other: Size) -> dict[str, ir.SizeExpr]:
        return {**dict(self.atoms), **dict(other.atoms)}

    def __add__(self, other: Size | int) -> Size:
        other = _lift(other)
        terms = dict(self.terms)
        for monomial, coefficient in other.terms:
            terms[monomial] = terms.get(monomial, Fraction(0)) + coefficient
        return Size._build(terms, self._merged_atoms(other))

    def __radd__(self, other: int) -> Size:
        return self + other

    def __neg__(self) -> Size:
        return Size._build({m: -c for m, c in self.terms}, dict(self.atoms))

    def __sub__(self, other: Size | int) -> Size:
        return self + (-_lift(other))

    def __rsub__(self, other: int) -> Size:
        return _lift(other) - self

    def __mul__(self, other: Size | int) -> Size:
        other = _lift(other)
        terms: dict[Monomial, Fraction] = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                powers = dict(m1)
                for key, power in m2:
                    powers[key] = powers.get(key, 0) + power
                monomial = tuple(sorted(powers.items()))
                terms[monomial] = terms.get(monomial, Fraction(0)) + c1 * c2
        return Size._build(terms, self._merged_atoms(other))

    def __rmul__(self, other: int) -> Size:
        return self * other

    def exact_div(self, other: Size | int) -> Size:
        """`self / other` where the division must be exact (checked by the caller)."""
        other = _lift(other)
        if other.is_const:
            if other.constant == 0:
                raise ZeroDivisionError("division of a size by zero")
            return Size._build({m: c / other.constant for m, c in self.terms}, dict(self.atoms))
        return Size._opaque(ir.SizeDiv(numerator=self.to_ir(), denominator=other.to_ir()))

    def floor_div(self, other: Size | int) -> Size:
        other = _lift(other)
        if other.is_const and other.constant == 0:
            raise ZeroDivisionError("division of a size by zero")
        if self.is_const and other.is_const:
            return Size.const(self.constant // other.constant)
        if other.is_const and all((c / other.constant).denominator == 1 for _, c in self.terms):
            return self.exact_div(other)
        return Size._opaque(ir.SizeFloorDiv(numerator=self.to_ir(), denominator=other.to_ir()))

    def divisible_by(self, other: Size) -> bool | None:
        """Whether `self / other` is an integer: True, False, or None when unknown."""
        if self.is_const and other.is_const:
            if other.constant == 0:
                return False
            return (self.constant / other.constant).denominator == 1
        return None

    # ---- output
    def to_ir(self) -> ir.SizeExpr:
        # The nodes are made without validation (`ir.trusted`, see `_const`).
        atom_exprs = dict(self.atoms)
        if not self.terms:
            return _const(0)
        denominator = 1
        for _, coefficient in self.terms:
            denominator = denominator * coefficient.denominator // _gcd(denominator,
                                                                        coefficient.denominator)
        parts: list[ir.SizeExpr] = []
        for monomial, coefficient in sorted(self.terms,
                                             key=lambda t: (len(t[0]) == 0, t[1] < 0, t[0])):
            scaled = coefficient * denominator
            assert scaled.denominator == 1
            factors: list[ir.SizeExpr] = []
            for key, power in monomial:
                factors.extend([atom_exprs[key]] * power)
            if not factors:
                parts.append(_const(int(scaled)))
            elif scaled == 1:
                single = len(factors) == 1
                parts.append(factors[0] if single else _mul(tuple(factors)))
            else:
                parts.append(_mul((_const(int(scaled)), *factors)))
        total: ir.SizeExpr = parts[0] if len(parts) == 1 else _add(tuple(parts))
        if denominator != 1:
            return _div(total, _const(denominator))
        return total

    def __str__(self) -> str:
        return ir.size_text(self.to_ir())


# The IR's size nodes, made without validating them again (`ir.trusted`): the checker makes
# them from ints and nodes already valid, and a validated node built pydantic's validator of
# its class (and loaded pydantic's plugins) in every `ncd check`.
def _const(value: int) -> ir.SizeConst:
    return ir.trusted(ir.SizeConst, kind="const", value=value)


def _mul(factors: tuple[ir.SizeExpr, ...]) -> ir.SizeMul:
    return ir.trusted(ir.SizeMul, kind="mul", factors=factors)


def _add(terms: tuple[ir.SizeExpr, ...]) -> ir.SizeAdd:
    return ir.trusted(ir.SizeAdd, kind="add", terms=terms)


def _div(numerator: ir.SizeExpr, denominator: ir.SizeExpr) -> ir.SizeDiv:
    return ir.trusted(ir.SizeDiv, kind="div", numerator=numerator, denominator=denominator)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _lift(value: Size | int) -> Size:
    return value if isinstance(value, Size) else Size.const(value)


def evaluate(expr: ir.SizeExpr, env: Mapping[str, int] | None = None) -> int | None:
    """The integer value of a size expression given the values of symbols in `env`, or None
    when it depends on a symbol not in `env` (or divides by zero). Divisions round down."""
    env = env or {}
    match expr:
        case ir.SizeConst(value=value):
            return value
        case ir.SizeSym(name=name):
            return env.get(name)
        case ir.SizeAdd(terms=terms):
            values = [evaluate(t, env) for t in terms]
            known = [v for v in values if v is not None]
            return sum(known) if len(known) == len(values) else None
        case ir.SizeMul(factors=factors):
            product = 1
            for factor in factors:
                multiplier = evaluate(factor, env)
                if multiplier is None:
                    return None
                product *= multiplier
            return product
        case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                numerator=num, denominator=den):
            n, d = evaluate(num, env), evaluate(den, env)
            if n is None or d is None or d == 0:
                return None
            return n // d
        case _:
            assert_never(expr)


def symbols_of(expr: ir.SizeExpr) -> frozenset[str]:
    """The symbols a size expression names, inside divisions too."""
    match expr:
        case ir.SizeConst():
            return frozenset()
        case ir.SizeSym(name=name):
            return frozenset((name,))
        case ir.SizeAdd(terms=parts) | ir.SizeMul(factors=parts):
            return frozenset().union(*(symbols_of(part) for part in parts))
        case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                numerator=num, denominator=den):
            return symbols_of(num) | symbols_of(den)
        case _:
            assert_never(expr)


class ProgramSizes:
    """The sizes of a program's axes: those that fold to integers (`k = m / h`), the
    definitions of derived axes (`q = x + 1`), and the symbols left for run time."""

    def __init__(self, axes: Sequence[ir.Axis]) -> None:
        self.declared: dict[str, ir.SizeExpr] = {axis.name: axis.size for axis in axes}
        self.known: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for axis in axes:
                if axis.name in self.known:
                    continue
                value = evaluate(axis.size, self.known)
                if value is not None:
                    self.known[axis.name] = value
                    changed = True
        # The answers for sizes asked about before, by the identity of the expression: a
        # compiler asks about the same few IR nodes at every statement (comparing them by
        # value would cost more than the answer), and `declared` and `known` do not change
        # after this point. Each entry holds its key, so no other node can take its id.
        self._values: dict[int, tuple[ir.SizeExpr, int | None]] = {}
        self._expanded: dict[int, tuple[ir.SizeExpr, ir.SizeExpr]] = {}
        self._polynomials: dict[int, tuple[ir.SizeExpr, Size]] = {}

    def value(self, size: ir.SizeExpr) -> int | None:
        """The integer value of a size, or None when it depends on a run-time symbol."""
        seen = self._values.get(id(size))
        if seen is not None and seen[0] is size:
            return seen[1]
        value = evaluate(self.expand(size), self.known)
        self._values[id(size)] = (size, value)
        return value

    def expand(self, size: ir.SizeExpr) -> ir.SizeExpr:
        """Replace each symbol that names a derived axis (`q = x + 1`) by its definition."""
        seen = self._expanded.get(id(size))
        if seen is not None and seen[0] is size:
            return seen[1]
        expanded = self._expand(size)
        self._expanded[id(size)] = (size, expanded)
        return expanded

    def _expand(self, size: ir.SizeExpr) -> ir.SizeExpr:
        match size:
            case ir.SizeSym(name=name):
                definition = self.declared.get(name)
                if definition is None or definition == size or name in self.known:
                    return size
                return self.expand(definition)
            case ir.SizeConst():
                return size
            case ir.SizeAdd(terms=terms):
                return ir.SizeAdd(terms=tuple(self.expand(t) for t in terms))
            case ir.SizeMul(factors=factors):
                return ir.SizeMul(factors=tuple(self.expand(f) for f in factors))
            case ir.SizeDiv(numerator=num, denominator=den):
                return ir.SizeDiv(numerator=self.expand(num), denominator=self.expand(den))
            case ir.SizeFloorDiv(numerator=num, denominator=den):
                return ir.SizeFloorDiv(numerator=self.expand(num), denominator=self.expand(den))
            case _:
                assert_never(size)

    def symbols(self, size: ir.SizeExpr) -> frozenset[str]:
        """The run-time symbols a size depends on (as written, after expansion)."""
        return frozenset(s for s in symbols_of(self.expand(size)) if s not in self.known)

    def polynomial(self, size: ir.SizeExpr) -> Size:
        """A size in normal form over the run-time symbols (known sizes folded in); may raise
        `SizeLimit`."""
        seen = self._polynomials.get(id(size))
        if seen is not None and seen[0] is size:
            return seen[1]
        value = from_ir(self.expand(size))
        known = {name: Size.const(self.known[name]) for name in value.symbols
                 if name in self.known}
        polynomial = substitute(value, known) if known else value
        self._polynomials[id(size)] = (size, polynomial)
        return polynomial

    def solve(self, size: ir.SizeExpr, symbol: str) -> tuple[int, int] | None:
        """`(a, b)` when `size` is exactly `a * symbol + b` (integers, `a > 0`), so that an
        axis of that size tells the symbol: `symbol = (size - b) // a`; else None."""
        expanded = self.expand(size)
        if expanded == ir.SizeSym(name=symbol):
            return 1, 0
        if self.symbols(size) != {symbol}:
            return None
        try:
            return self.polynomial(size).linear_in(symbol)
        except SizeLimit:
            return None


@functools.lru_cache(maxsize=4096)
def from_ir(expr: ir.SizeExpr) -> Size:
    """The normal form of a size expression (cached: IR nodes and sizes are immutable, and
    the few distinct sizes of a program are asked for at every statement); may raise
    `SizeLimit` or `ZeroDivisionError`."""
    match expr:
        case ir.SizeConst(value=value):
            return Size.const(value)
        case ir.SizeSym(name=name):
            return Size.sym(name)
        case ir.SizeAdd(terms=terms):
            total = Size.const(0)
            for term in terms:
                total = total + from_ir(term)
            return total
        case ir.SizeMul(factors=factors):
            product = Size.const(1)
            for factor in factors:
                product = product * from_ir(factor)
            return product
        case ir.SizeDiv(numerator=num, denominator=den):
            return from_ir(num).exact_div(from_ir(den))
        case ir.SizeFloorDiv(numerator=num, denominator=den):
            return from_ir(num).floor_div(from_ir(den))
    raise AssertionError(f"unknown size node {expr!r}")


# ---------------------------------------------------------------------------------------
# bounds: is a size expression >= 0 for every size the program allows?
# ---------------------------------------------------------------------------------------

Verdict = Literal["holds", "fails", "unknown"]

# How far the smallest allowed value of a symbol is searched for (`x - 300 >= 1`: x >= 301).
_SEARCH_LIMIT = 1024


@dataclass(frozen=True)
class Bound:
    """Whether `value >= 0` for every allowed size: it `holds`, it `fails` for every allowed
    size, or it is `unknown` (it depends on the sizes: a run-time check decides)."""

    verdict: Verdict


def _atom_size(key: str, expr: ir.SizeExpr) -> Size:
    return Size._build({((key, 1),): Fraction(1)}, {key: expr})


def substitute(value: Size, replacements: Mapping[str, Size]) -> Size:
    """`value` with each atom named in `replacements` (by its key) replaced."""
    atoms = dict(value.atoms)
    total = Size.const(0)
    for monomial, coefficient in value.terms:
        term = Size.const(coefficient)
        for key, power in monomial:
            factor = replacements.get(key) or _atom_size(key, atoms[key])
            for _ in range(power):
                term = term * factor
        total = total + term
    return total


def _floor_bounds(expr: ir.SizeExpr) -> tuple[Size, Size] | None:
    """Lower and upper bounds of a floor division `n // d` by a positive constant:
    `(n - d + 1) / d <= n // d <= n / d`; None for any other atom."""
    if not isinstance(expr, ir.SizeFloorDiv):
        return None
    denominator = from_ir(expr.denominator)
    if not denominator.is_const or denominator.constant <= 0:
        return None
    d = denominator.constant
    numerator = from_ir(expr.numerator)
    return (numerator - Size.const(d - 1)).exact_div(Size.const(d)), numerator.exact_div(
        Size.const(d))


def _lower_polynomial(value: Size) -> Size | None:
    """A polynomial in the symbols alone that is <= `value` for all sizes >= 1: each floor
    division is replaced by its lower or upper bound, as the sign of its term asks (outer
    divisions first, so that `q - 3 * ((q - 1) // 3)` keeps its cancellation). None when an
    atom cannot be bounded that way (a product with a division, a division by a symbol)."""
    for _ in range(16):
        atoms = dict(value.atoms)
        divisions = {key for key, expr in atoms.items() if not isinstance(expr, ir.SizeSym)}
        if not divisions:
            return value
        inner: set[str] = set()
        for key in divisions:
            expr = atoms[key]
            if isinstance(expr, (ir.SizeDiv, ir.SizeFloorDiv)):
                for part in (expr.numerator, expr.denominator):
                    inner |= {k for k, _ in from_ir(part).atoms} & divisions
        outer = divisions - inner
        total = Size.const(0)
        for monomial, coefficient in value.terms:
            opaque = [(key, power) for key, power in monomial if key in divisions]
            if not opaque:
                total = total + Size._build({monomial: coefficient}, atoms)
                continue
            if not any(key in outer for key, _ in opaque):
                total = total + Size._build({monomial: coefficient}, atoms)
                continue
            if len(opaque) != 1 or opaque[0][1] != 1:
                return None
            bounds = _floor_bounds(atoms[opaque[0][0]])
            if bounds is None:
                return None
            low, high = bounds
            rest = Size._build({tuple((k, p) for k, p in monomial if k != opaque[0][0]):
                                coefficient}, atoms)
            total = total + rest * (low if coefficient > 0 else high)
        if total == value:
            return None
        value = total
    return None


def _nonnegative(value: Size, lowest: Mapping[str, int]) -> bool:
    """True when `value` (a polynomial in symbols) is >= 0 whenever every symbol `s` is at
    least `lowest[s]`: after `s = lowest[s] + t` every coefficient is >= 0."""
    shifted = substitute(value, {s: Size.sym(f"{s}'") + low for s, low in lowest.items()})
    return all(coefficient >= 0 for _, coefficient in shifted.terms)


def all_symbols(value: Size) -> frozenset[str]:
    """The symbols a size depends on, inside divisions too."""
    return frozenset().union(*(symbols_of(expr) for _, expr in value.atoms))


@functools.lru_cache(maxsize=4096)
def _smallest(constraint: Size, symbol: str) -> int:
    """The smallest value >= 1 of `symbol` for which `constraint >= 1` (a size is positive)."""
    for value in range(1, _SEARCH_LIMIT + 1):
        result = constraint.evaluate({symbol: value})
        if result is None or result >= 1:
            return value
    return _SEARCH_LIMIT


def check_nonnegative(value: Size, positive: Sequence[Size] = ()) -> Bound:
    """Is `value >= 0` for every assignment of the symbols that makes each size of `positive`
    at least 1 (every symbol is a size, so at least 1 too)?"""
    try:
        return _check_nonnegative(value, positive)
    except SizeLimit:
        return Bound("unknown")


def _check_nonnegative(value: Size, positive: Sequence[Size]) -> Bound:
    if value.is_const:
        return Bound("holds" if value.constant >= 0 else "fails")
    symbols = set(all_symbols(value))
    for size in positive:
        symbols |= all_symbols(size)
    lowest = dict.fromkeys(sorted(symbols), 1)
    for size in positive:
        if len(all_symbols(size)) == 1 and not size.is_const:
            (symbol,) = all_symbols(size)
            lowest[symbol] = max(lowest[symbol], _smallest(size, symbol))
    lower = _lower_polynomial(value)
    if lower is not None and _nonnegative(lower, lowest):
        return Bound("holds")
    # `value < 0`, that is `-value - 1 >= 0` (sizes are integers), for every allowed size.
    upper = _lower_polynomial(-value - 1)
    if upper is not None and _nonnegative(upper, lowest):
        return Bound("fails")
    return Bound("unknown")
