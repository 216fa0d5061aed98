"""Sizes as Python code: the program's axis sizes folded to integers where they are known, and
the expression of a symbolic size in terms of the sizes read from the inputs at run time."""

from __future__ import annotations

from typing import assert_never

from ncd import ir


class SizeTable:
    """Sizes of the program's axes: constants fold to integers, symbols stay names."""

    def __init__(self, program: ir.Program) -> None:
        self.declared = {axis.name: axis.size for axis in program.axes}
        self.known: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for axis in program.axes:
                if axis.name in self.known:
                    continue
                value = ir.size_value(axis.size, self.known)
                if value is not None:
                    self.known[axis.name] = value
                    changed = True

    def value(self, size: ir.SizeExpr) -> int | None:
        return ir.size_value(self.expand(size), self.known)

    def expand(self, size: ir.SizeExpr) -> ir.SizeExpr:
        """Replace each symbol that names a derived axis (`q = x + 1`) by its definition."""
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
        assert_never(size)

    def symbols(self, size: ir.SizeExpr) -> set[str]:
        """The run-time symbols a size depends on."""
        expanded = self.expand(size)
        match expanded:
            case ir.SizeSym(name=name):
                return set() if name in self.known else {name}
            case ir.SizeConst():
                return set()
            case ir.SizeAdd(terms=parts) | ir.SizeMul(factors=parts):
                return set().union(*(self.symbols(p) for p in parts))
            case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                    numerator=num, denominator=den):
                return self.symbols(num) | self.symbols(den)
        assert_never(expanded)


def size_expression_code(size: ir.SizeExpr, table: SizeTable, symbol_code: dict[str, str],
                         ) -> str:
    """The code of a size: an integer when it is known, else an expression of the run-time
    sizes in `symbol_code` (symbols, and divisions read whole from an input's shape)."""
    value = table.value(size)
    if value is not None:
        return str(value)
    if isinstance(size, (ir.SizeDiv, ir.SizeFloorDiv)):
        known = symbol_code.get(f"({ir.size_text(table.expand(size))})")
        if known is not None:  # read from an input's shape
            return known
    match size:
        case ir.SizeSym(name=name):
            definition = table.declared.get(name)
            if definition is not None and definition != size:
                return size_expression_code(definition, table, symbol_code)
            return symbol_code[name]
        case ir.SizeAdd(terms=terms):
            constant = sum(v for t in terms if (v := table.value(t)) is not None)
            parts = [_size_atom(t, table, symbol_code) for t in terms if table.value(t) is None]
            text = " + ".join(parts)
            if constant > 0:
                text += f" + {constant}"
            elif constant < 0:
                text += f" - {-constant}"
            return text
        case ir.SizeMul(factors=factors):
            return " * ".join(_size_atom(f, table, symbol_code) for f in factors)
        case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                numerator=num, denominator=den):
            return f"{_size_atom(num, table, symbol_code)} // {_size_atom(den, table, symbol_code)}"
        case ir.SizeConst(value=constant):
            return str(constant)
    assert_never(size)


def division_atoms(size: ir.SizeExpr) -> list[ir.SizeExpr]:
    """The divisions inside a size, outermost first (each may be read from an input)."""
    match size:
        case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                numerator=num, denominator=den):
            return [size, *division_atoms(num), *division_atoms(den)]
        case ir.SizeAdd(terms=parts) | ir.SizeMul(factors=parts):
            return [atom for part in parts for atom in division_atoms(part)]
    return []


def _size_atom(size: ir.SizeExpr, table: SizeTable, symbol_code: dict[str, str]) -> str:
    text = size_expression_code(size, table, symbol_code)
    return f"({text})" if any(op in text for op in (" + ", " - ", " // ")) else text

