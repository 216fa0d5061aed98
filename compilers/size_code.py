"""Sizes as Python code: the program's axis sizes folded to integers where they are known, and
the expression of a symbolic size in terms of the sizes read from the inputs at run time."""

from __future__ import annotations

from typing import assert_never

from ncd import ir
from ncd.sizes import ProgramSizes


def size_expression_code(size: ir.SizeExpr, table: ProgramSizes,
                         symbol_code: dict[str, str], used: set[str]) -> str:
    """The code of a size: an integer when it is known, else an expression of the run-time
    sizes in `symbol_code` (symbols, and divisions read whole from an input's shape). The keys
    of `symbol_code` that the code reads are added to `used`."""
    value = table.value(size)
    if value is not None:
        return str(value)
    if isinstance(size, (ir.SizeDiv, ir.SizeFloorDiv)):
        key = f"({ir.size_text(table.expand(size))})"
        known = symbol_code.get(key)
        if known is not None:  # read from an input's shape
            used.add(key)
            return known
    match size:
        case ir.SizeSym(name=name):
            definition = table.declared.get(name)
            if definition is not None and definition != size:
                return size_expression_code(definition, table, symbol_code, used)
            used.add(name)
            return symbol_code[name]
        case ir.SizeAdd(terms=terms):
            constant = sum(v for t in terms if (v := table.value(t)) is not None)
            parts = [_size_atom(t, table, symbol_code, used) for t in terms
                     if table.value(t) is None]
            text = " + ".join(parts)
            if constant > 0:
                text += f" + {constant}"
            elif constant < 0:
                text += f" - {-constant}"
            return text
        case ir.SizeMul(factors=factors):
            return " * ".join(_size_atom(f, table, symbol_code, used) for f in factors)
        case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                numerator=num, denominator=den):
            return (f"{_size_atom(num, table, symbol_code, used)} // "
                    f"{_size_atom(den, table, symbol_code, used, divisor=True)}")
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


def _size_atom(size: ir.SizeExpr, table: ProgramSizes, symbol_code: dict[str, str],
               used: set[str], divisor: bool = False) -> str:
    """`size`'s code as an operand of `*` or `//`: parenthesised where it is a sum or a
    division, and as a divisor a product too (`m // (h * g)`, not `m // h * g`)."""
    text = size_expression_code(size, table, symbol_code, used)
    operators = (" + ", " - ", " // ", " * ") if divisor else (" + ", " - ", " // ")
    return f"({text})" if any(op in text for op in operators) else text

