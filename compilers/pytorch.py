"""The PyTorch code generator: an `ir.Program` becomes one readable Python source file.

Each definition becomes an `nn.Module` class. Its `forward` has one statement per node of the
term, named after the source variable, built from `torch.einsum`, `torch.nn.functional` and
tensor views; its parameters are `nn.Parameter`s named as in the source.

Conventions of the generated code (docs/compiling.md explains them with examples):

- An array is a tensor whose trailing dims are its declared axes in memory order
  (`ArrayType.shape`); any number of leading dims may come before them. Those leading dims are
  how a batch lift runs: a call site moves its tiling axes in front and the called module works
  on the trailing dims only, so every dim is addressed from the end (`dim=-1`, `...`).
- Symbolic sizes are read from the input shapes at the top of `forward`.
- A block repeated N times without `shared` is an `nn.ModuleList` of N copies named after the
  block's title (`transformer_layer.0.W_q`); a shared or single block is transparent.

This module writes text only; it does not import torch (`build_module` imports it lazily).
"""

from __future__ import annotations

import hashlib
import linecache
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never

from ncd import ir
from ncd.sizes import Size, SizeLimit, check_nonnegative, substitute
from ncd.sizes import from_ir as size_polynomial

from .naming import (
    MODULE_ATTRIBUTES,
    Namespace,
    camel_case,
    comment_text,
    is_plain_identifier,
    sanitize,
    snake_case,
    string_literal,
)
from .views import (
    Label,
    Missing,
    Row,
    View,
    leading_shape,
    permute_text,
    tuple_text,
    view_through,
)

if TYPE_CHECKING:
    import torch

__all__ = ["CompileError", "build_module", "compile_program"]


class CompileError(Exception):
    """The IR cannot be compiled (it breaks an invariant the elaborator should guarantee)."""


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


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
        match self.expand(size):
            case ir.SizeSym(name=name):
                return set() if name in self.known else {name}
            case ir.SizeConst():
                return set()
            case ir.SizeAdd(terms=parts) | ir.SizeMul(factors=parts):
                return set().union(*(self.symbols(p) for p in parts))
            case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                    numerator=num, denominator=den):
                return self.symbols(num) | self.symbols(den)
        raise AssertionError(size)


def _size_expression_code(size: ir.SizeExpr, table: SizeTable, symbol_code: dict[str, str],
                          ) -> str:
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
                return _size_expression_code(definition, table, symbol_code)
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
    raise AssertionError(size)


def _division_atoms(size: ir.SizeExpr) -> list[ir.SizeExpr]:
    """The divisions inside a size, outermost first (each may be read from an input)."""
    match size:
        case ir.SizeDiv(numerator=num, denominator=den) | ir.SizeFloorDiv(
                numerator=num, denominator=den):
            return [size, *_division_atoms(num), *_division_atoms(den)]
        case ir.SizeAdd(terms=parts) | ir.SizeMul(factors=parts):
            return [atom for part in parts for atom in _division_atoms(part)]
    return []


def _size_atom(size: ir.SizeExpr, table: SizeTable, symbol_code: dict[str, str]) -> str:
    text = _size_expression_code(size, table, symbol_code)
    return f"({text})" if any(op in text for op in (" + ", " - ", " // ")) else text


# --------------------------------------------------------------------------------------
# Values on wires and the labels of their dims
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """An array during code generation: the Python expression that holds it and its type.

    `batched` is False only for arrays computed from parameters alone (they have no leading
    batch dims); anything that depends on an input of the definition may carry them.
    """

    code: str
    array: ir.ArrayType
    batched: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return self.array.names

    @property
    def rank(self) -> int:
        return len(self.array.shape.axes)


def degree_label(index: int) -> Label:
    return ("degree", index)


def target_label(name: str) -> Label:
    return ("target", name)


def _tiling_row(port: ir.Port, axis_name: str) -> tuple[tuple[int, ...], int]:
    names = port.reindexing.codomain.names
    if axis_name not in names:
        raise CompileError(f"axis {axis_name!r} of {port.array.text()} is neither a target nor a "
                           f"tiling axis of its port")
    row = names.index(axis_name)
    return port.reindexing.matrix[row], port.reindexing.offset[row]


def port_rows(value: Value, port: ir.Port) -> list[Row]:
    """How each declared dim of `value` is read at a loop position of the degree."""
    rows: list[Row] = []
    for axis in value.array.shape.axes:
        if axis.name in port.targets:
            rows.append(Row(((target_label(axis.name), 1),)))
        else:
            coefficients, offset = _tiling_row(port, axis.name)
            rows.append(Row(tuple((degree_label(i), c) for i, c in enumerate(coefficients) if c),
                            offset))
    return rows


def output_labels(port: ir.Port) -> list[Label]:
    """The label of each dim of an output array, in its memory order."""
    labels: list[Label] = []
    for axis in port.array.shape.axes:
        if axis.name in port.targets:
            labels.append(target_label(axis.name))
            continue
        coefficients, offset = _tiling_row(port, axis.name)
        ones = [i for i, c in enumerate(coefficients) if c]
        if len(ones) != 1 or coefficients[ones[0]] != 1 or offset:
            raise CompileError(f"output {port.array.text()} must tile over the degree by a "
                               f"permutation, not {port.reindexing.text()}")
        labels.append(degree_label(ones[0]))
    return labels


# --------------------------------------------------------------------------------------
# Modules: what each generated class owns
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """What a parameter does, which decides its default initialisation."""

    kind: str
    fan_in: int | None = None
    fan_out: int | None = None


@dataclass
class ParamEntry:
    parameter: ir.Parameter
    attribute: str
    role: Role


@dataclass
class ChildEntry:
    attribute: str
    class_name: str
    repeat: int | None  # None: a single submodule; N: an nn.ModuleList of N copies
    comment: str


@dataclass
class ModuleSpec:
    """One generated class: the parameters and submodules it registers."""

    class_name: str
    doc: str | None
    declared: dict[str, ir.Parameter]
    params: dict[str, ParamEntry] = field(default_factory=dict)
    children: list[ChildEntry] = field(default_factory=list)
    child_by_instance: dict[str, str] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)
    blocks: list[ModuleSpec] = field(default_factory=list)

    def _attribute(self, wanted: str) -> str:
        # A dunder name (`__init__`, `__class__`) is Python's own on every object: prefix it.
        name = f"p{wanted}" if wanted.startswith("__") and wanted.endswith("__") else wanted
        while name in self.attributes or name in MODULE_ATTRIBUTES:
            name += "_"
        self.attributes.add(name)
        return name

    def param(self, name: str, array: ir.ArrayType, role: Role) -> ParamEntry:
        entry = self.params.get(name)
        if entry is None:
            parameter = self.declared.get(name) or ir.Parameter(name=name, array=array)
            entry = ParamEntry(parameter, self._attribute(name), role)
            self.params[name] = entry
        return entry

    def child(self, instance: str, class_name: str, comment: str) -> str:
        attribute = self.child_by_instance.get(instance)
        if attribute is None:
            attribute = self._attribute(sanitize(instance, "module"))
            self.child_by_instance[instance] = attribute
            self.children.append(ChildEntry(attribute, class_name, None, comment))
        return attribute


def attribute_code(owner: str, attribute: str) -> str:
    if is_plain_identifier(attribute):
        return f"{owner}.{attribute}"
    return f"getattr({owner}, {string_literal(attribute)})"


@dataclass(frozen=True)
class Scope:
    """Where parameters live while a term is emitted: `self`, or a block copy's loop name."""

    spec: ModuleSpec
    owner: str


@dataclass(frozen=True)
class DefinitionInfo:
    class_name: str
    outputs_batched: tuple[bool, ...]


# --------------------------------------------------------------------------------------
# Emitting one forward
# --------------------------------------------------------------------------------------

_ELEMENTWISE = {
    "relu": "F.relu({})", "gelu": "F.gelu({})", "silu": "F.silu({})",
    "sigmoid": "torch.sigmoid({})", "tanh": "torch.tanh({})", "exp": "torch.exp({})",
    "log": "torch.log({})", "neg": "torch.neg({})", "sqrt": "torch.sqrt({})",
    "abs": "torch.abs({})", "square": "torch.square({})",
}

_REDUCE = {"sum": "torch.sum", "mean": "torch.mean", "max": "torch.amax", "min": "torch.amin",
           "logsumexp": "torch.logsumexp"}

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

LINE_LENGTH = 100

# Axes of a large einsum that can be merged: the operands they occur in, and whether the
# output has them.
GroupKey = tuple[tuple[int, ...], bool]


def docstring_literal(text: str) -> str:
    """A one-line docstring in triple quotes when that is safe, else an escaped literal."""
    line = " ".join(text.split())
    if line and line.isprintable() and "\\" not in line and '"' not in line:
        return f'"""{line}"""'
    return string_literal(line)


def float_literal(value: float) -> str:
    if value != value:
        return 'float("nan")'
    if value in (float("inf"), float("-inf")):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(float(value))


class ForwardEmitter:
    """Writes the body of one `forward`: statements for a term, given its input values."""

    def __init__(self, compiler: ProgramCompiler, spec: ModuleSpec) -> None:
        self.compiler = compiler
        self.sizes = compiler.sizes
        self.lines: list[str] = []
        self.depth = 2
        self.names = Namespace()
        self.symbol_code: dict[str, str] = {}
        # Sizes built from several symbols (`n = d * e`) that an input axis has: read from
        # that axis's shape, since the symbols themselves cannot be recovered from it.
        self.arguments: list[Value] = []
        self.composite_reads: dict[str, str] = {}
        self.composite_axes: dict[str, str] = {}  # the input axis each composite is read from
        self.atom_code: dict[str, str] = {}  # divisions inside sizes, computed from those reads
        self.scope = Scope(spec, "self")
        # Run-time checks of bounds that depend on symbolic sizes (the first lines of forward).
        self.checks: list[str] = []

    # ---- text
    def emit(self, line: str, comment: str | None = None) -> None:
        """One line of code; its comment trails it when that fits in 100 columns, else it
        goes on its own line above (where a formatter leaves it alone)."""
        indent = "    " * self.depth
        if comment:
            note = f"# {comment_text(comment)}"
            if len(indent) + len(line) + 2 + len(note) <= LINE_LENGTH:
                line = f"{line}  {note}"
            else:
                self.lines.append(indent + note)
        self.lines.append(indent + line)

    @contextmanager
    def indented(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def assign(self, hint: str | None, expr: str, comment: str | None = None,
               fallback: str = "value") -> str:
        name = self.names.fresh(hint, fallback)
        self.emit(f"{name} = {expr}", comment)
        return name

    def size(self, size: ir.SizeExpr) -> str:
        composite = self._input_size(size)
        if composite is not None:
            return composite
        for atom in _division_atoms(self.sizes.expand(size)):
            # A division an input axis tells (`d6 = (y - 1) // 3 + 1` gives `(y - 1) // 3`).
            key = f"({ir.size_text(atom)})"
            if key not in self.atom_code:
                code = self._input_size(atom)
                if code is not None:
                    self.atom_code[key] = code
        for symbol in sorted(self.sizes.symbols(size)):
            if symbol not in self.symbol_code:
                self.symbol_code[symbol] = self.names.fresh(f"size_{symbol}")
        return _size_expression_code(size, self.sizes, {**self.symbol_code, **self.atom_code})

    def _input_size(self, size: ir.SizeExpr) -> str | None:
        """The code of a composite symbolic size from an input axis whose size differs from it
        by a constant (`n = d * e` read as `X.shape[-1]`, `q = d - 2` as `X.shape[-1] - 2`),
        or None."""
        if self.sizes.value(size) is not None:
            return None
        expanded = self.sizes.expand(size)
        if isinstance(expanded, (ir.SizeSym, ir.SizeConst)):
            return None
        wanted = size_polynomial(expanded)
        for value in self.arguments:
            for position, axis in enumerate(value.array.shape.axes):
                offset = wanted - size_polynomial(self.sizes.expand(axis.size))
                if not offset.is_const or offset.value is None:
                    continue
                key = f"({ir.size_text(self.sizes.expand(axis.size))})"
                if key not in self.symbol_code:
                    self.symbol_code[key] = self.names.fresh(f"size_{axis.name}")
                    self.composite_reads[key] = f"{value.code}.shape[{position - value.rank}]"
                    self.composite_axes[key] = axis.name
                code = self.symbol_code[key]
                shift = offset.value
                return code if shift == 0 else f"({code} {'+' if shift > 0 else '-'} {abs(shift)})"
        return None

    def view(self, value: Value, rows: Sequence[Row], sizes: dict[Label, ir.SizeExpr],
             order: Sequence[Label], missing: Missing, leading_from: Value | None = None) -> View:
        return view_through(
            value.code, rows, [axis.size for axis in value.array.shape.axes], sizes, order,
            missing, self.size, batched=value.batched,
            leading_from=(leading_from.code, leading_from.rank) if leading_from else None)

    def relayout(self, value: Value, array: ir.ArrayType) -> Value:
        """The same array with its axes in `array`'s memory order (matched by name)."""
        if value.names == array.names:
            return Value(value.code, array, value.batched)
        if sorted(value.names) != sorted(array.names):
            raise CompileError(f"cannot align {value.array.text()} with {array.text()}")
        rows = [Row(((target_label(n), 1),)) for n in value.names]
        sizes = {target_label(a.name): a.size for a in value.array.shape.axes}
        view = self.view(value, rows, sizes, [target_label(n) for n in array.names], "drop")
        return Value(self.assign(None, view.expr, f"{' '.join(value.names)} -> "
                                 f"{' '.join(array.names)}", fallback="aligned"),
                     array, value.batched)

    # ---- terms
    def term(self, term: ir.Term, inputs: list[Value]) -> list[Value]:
        if len(inputs) != len(term.dom):
            raise CompileError(f"{term.kind} expects {len(term.dom)} inputs, got {len(inputs)}")
        match term:
            case ir.Identity():
                return list(inputs)
            case ir.Rearrangement(mapping=mapping):
                return [inputs[i] for i in mapping]
            case ir.Reindexing():
                self.check_bounds(term.eta, term.source or inputs[0].code, term.span)
                return [self.reindexing(term, inputs[0])]
            case ir.Broadcasted():
                for port in (*term.inputs, *term.params):
                    self.check_bounds(port.reindexing, port.name or "an operand", term.span)
                return self.broadcasted(term, inputs)
            case ir.Composed(terms=terms):
                values = list(inputs)
                for part in terms:
                    values = self.term(part, values)
                return values
            case ir.Product(terms=terms):
                outputs: list[Value] = []
                start = 0
                for part in terms:
                    outputs.extend(self.term(part, inputs[start:start + len(part.dom)]))
                    start += len(part.dom)
                return outputs
            case ir.Block():
                return self.block(term, inputs)
            case ir.Scan():
                return self.scan(term, inputs)
        assert_never(term)

    def polynomial(self, size: ir.SizeExpr) -> Size:
        """A size in normal form over the run-time symbols (known sizes folded in)."""
        value = size_polynomial(self.sizes.expand(size))
        known = {name: Size.const(self.sizes.known[name]) for name in value.symbols
                 if name in self.sizes.known}
        return substitute(value, known) if known else value

    def check_bounds(self, eta: ir.StrideMorphism, what: str, span: ir.Span | None) -> None:
        """Every index `eta` reads lies inside its axis, for every size the program allows.

        Where that is proved (always, for checked programs with fixed sizes) nothing is
        written; where it depends on symbolic sizes, `forward` starts with a check that raises
        a `ValueError` naming the source line; an index that is out of bounds for fixed sizes
        cannot be compiled. Never a silent truncation."""
        try:
            self._check_bounds(eta, what, span)
        except SizeLimit:
            pass  # sizes too large to reason about: left to torch

    def _check_bounds(self, eta: ir.StrideMorphism, what: str, span: ir.Span | None) -> None:
        domain = [self.polynomial(a.size) for a in eta.domain.axes]
        codomain = [self.polynomial(a.size) for a in eta.codomain.axes]
        positive = [*domain, *codomain]
        reads = f"{what}[{', '.join(_index_text(eta, j) for j in range(len(codomain)))}]"
        where = f"line {span.line}: " if span is not None else ""
        for j, axis in enumerate(eta.codomain.axes):
            row, offset = eta.matrix[j], eta.offset[j]
            if offset == 0 and sorted(row) == [0] * (len(row) - 1) + [1] and \
                    domain[row.index(1)] == codomain[j]:
                continue  # reads the whole axis as it is
            high, low = Size.const(offset), Size.const(offset)
            for coefficient, size in zip(row, domain, strict=True):
                if coefficient > 0:
                    high = high + (size - 1) * coefficient
                elif coefficient < 0:
                    low = low + (size - 1) * coefficient
            size_text = str(codomain[j])
            for reach, slack, needs in (
                    (high, codomain[j] - 1 - high, f"{high} < {size_text}"),
                    (low, low, f"{low} >= 0")):
                if check_nonnegative(slack, positive).verdict == "holds":
                    continue
                message = (f"{where}{reads} reads index {reach} of axis {axis.name} of size "
                           f"{size_text}; needs {needs}")
                if slack.is_const:
                    raise CompileError(message)
                reach_code = self.size(reach.to_ir())
                if reach is high:
                    size_code = self.size(eta.codomain.axes[j].size)
                    condition = f"{reach_code} >= {size_code}"
                    shown = f" (here {size_text} = {{{size_code}}})"
                else:
                    condition = f"{reach_code} < 0"
                    shown = f" (here {reach} = {{{reach_code}}})"
                literal = string_literal(message.replace("{", "{{").replace("}", "}}") + shown)
                lines = [f"        if {condition}:", f"            raise ValueError(f{literal})"]
                if len(lines[1]) > LINE_LENGTH:  # as a formatter wraps it
                    lines[1:] = ["            raise ValueError(", f"                f{literal}",
                                 "            )"]
                if not any(self.checks[i:i + len(lines)] == lines
                           for i in range(len(self.checks))):
                    self.checks.extend(lines)

    def source_note(self, span: ir.Span | None) -> str:
        return f" (line {span.line})" if span is not None else ""

    def reindexing(self, term: ir.Reindexing, value: Value) -> Value:
        eta = term.eta
        codomain = eta.codomain.names
        if sorted(codomain) != sorted(value.names):
            raise CompileError(f"reindexing reads {eta.codomain.names} from {value.array.text()}")
        rows = []
        for name in value.names:
            row = codomain.index(name)
            rows.append(Row(tuple((degree_label(i), c) for i, c in enumerate(eta.matrix[row]) if c),
                            eta.offset[row]))
        sizes = {degree_label(i): axis.size for i, axis in enumerate(eta.domain.axes)}
        output = term.cod[0]
        order = [degree_label(eta.domain.names.index(n)) for n in output.names]
        view = self.view(value, rows, sizes, order, "expand")
        if view.expr == value.code:  # a renaming of axes only: the same tensor
            return Value(value.code, output, value.batched)
        comment = f"{term.source or value.code}[{eta.text()}]" + self.source_note(term.span)
        name = self.assign(term.name, view.expr, comment, fallback="view")
        return Value(name, output, value.batched)

    # ---- blocks and scans
    def block(self, term: ir.Block, inputs: list[Value]) -> list[Value]:
        if term.repeat <= 1:
            return self.term(term.body, inputs)
        if [a.names for a in term.body.dom] != [a.names for a in term.body.cod]:
            raise CompileError(f"block {term.title!r} repeats a body whose outputs "
                               f"{[a.text() for a in term.body.cod]} differ from its inputs")
        # Fresh names: the loop rebinds them, and the values they start from may be read again
        # after the block (a copy that passes it by).
        carried = [Value(self.assign(_base_name(v.code), v.code, fallback="carried"), v.array,
                         v.batched) for v in inputs]
        title = comment_text(term.title)
        if term.shared:
            self.emit(f"for _ in range({term.repeat}):",
                      f"block {title!r} x{term.repeat}, shared weights")
            with self.indented():
                self._block_iteration(term, carried)
            return carried
        spec = self.scope.spec
        block_spec = ModuleSpec(
            class_name=self.compiler.classes.fresh(
                camel_case(f"{spec.class_name} {term.title}", "Block")),
            doc=f"One copy of block {term.title!r}.", declared=spec.declared)
        spec.blocks.append(block_spec)
        attribute = spec._attribute(snake_case(term.title))
        spec.children.append(ChildEntry(attribute, block_spec.class_name, term.repeat,
                                        f"block {title!r} x{term.repeat}"))
        loop_name = self.names.fresh("layer")
        self.emit(f"for {loop_name} in {attribute_code(self.scope.owner, attribute)}:",
                  f"block {title!r} x{term.repeat}")
        outer = self.scope
        self.scope = Scope(block_spec, loop_name)
        try:
            with self.indented():
                self._block_iteration(term, carried)
        finally:
            self.scope = outer
        return carried

    def _block_iteration(self, term: ir.Block, carried: list[Value]) -> None:
        outputs = self.term(term.body, list(carried))
        self.write_back(carried, outputs)

    def write_back(self, variables: Sequence[Value], results: Sequence[Value]) -> None:
        """Rebind the loop's carried names to this iteration's results, all at once: a result
        may be another carried name (`A, B = B, A`), which must be read before it is
        overwritten."""
        pairs: list[tuple[str, str]] = []
        for variable, result in zip(variables, results, strict=True):
            result = self.relayout(result, variable.array)
            if result.code != variable.code:
                pairs.append((variable.code, result.code))
        assigned = {target for target, _ in pairs}
        if any(source in assigned for _, source in pairs):
            self.emit(f"{', '.join(t for t, _ in pairs)} = {', '.join(s for _, s in pairs)}")
            return
        for target, source in pairs:
            self.emit(f"{target} = {source}")

    def scan(self, term: ir.Scan, inputs: list[Value]) -> list[Value]:
        axis = term.axis.name
        carries, sequences = inputs[:term.carries], inputs[term.carries:]
        any_batched = next((v for v in sequences if v.batched), None)
        state: list[Value] = []
        for value in carries:
            expr = value.code
            if not value.batched and any_batched is not None:
                expr = (f"{value.code}.expand({leading_shape(any_batched.code, any_batched.rank)}"
                        f" + {value.code}.shape)")
            state.append(Value(self.assign(_base_name(value.code), expr, fallback="state"),
                               value.array,
                               value.batched or any_batched is not None))
        step_outputs = term.step.cod[term.carries:]
        collected = [self.assign(f"{term.step_name or 'step'}_outputs", "[]") for _ in
                     step_outputs]
        length = self.size(term.axis.size)
        index = self.names.fresh(f"{axis}_index")
        self.emit(f"for {index} in range({length}):",
                  f"scan over {axis}{self.source_note(term.span)}")
        with self.indented():
            slices: list[Value] = []
            for value, wanted in zip(sequences, term.step.dom[term.carries:], strict=True):
                if axis not in value.names:
                    raise CompileError(f"scan input {value.array.text()} lacks the axis {axis}")
                position = value.names.index(axis) - value.rank
                rest = ir.ArrayType(dtype=value.array.dtype, shape=ir.Shape(axes=tuple(
                    a for a in value.array.shape.axes if a.name != axis)))
                name = self.assign(f"{value.code}_step", f"{value.code}.select({position}, "
                                   f"{index})")
                slices.append(self.relayout(Value(name, rest, value.batched), wanted))
            outputs = self.term(term.step, state + slices)
            self.write_back(state, outputs[:term.carries])
            for bucket, result in zip(collected, outputs[term.carries:], strict=True):
                self.emit(f"{bucket}.append({result.code})")
        results = list(state)
        for bucket, step_array, final in zip(collected, step_outputs, term.cod[term.carries:],
                                             strict=True):
            names = [n for n in final.names if n != axis]
            position = final.names.index(axis)
            batched = any(v.batched for v in inputs)
            if names == list(step_array.names):
                name = self.assign(bucket.removesuffix("_outputs"),
                                   f"torch.stack({bucket}, dim={position - len(final.shape.axes)})")
                results.append(Value(name, final, batched))
            else:
                stacked_array = ir.ArrayType(dtype=final.dtype, shape=ir.Shape(
                    axes=(*step_array.shape.axes, term.axis)))
                name = self.assign(bucket.removesuffix("_outputs"),
                                   f"torch.stack({bucket}, dim=-1)")
                results.append(self.relayout(Value(name, stacked_array, batched), final))
        return results

    # ---- broadcasted operations
    def param_value(self, port: ir.Port, role: Role) -> Value:
        if port.name is None:
            raise CompileError("a parameter port has no name")
        entry = self.scope.spec.param(port.name, port.array, role)
        return Value(attribute_code(self.scope.owner, entry.attribute), entry.parameter.array,
                     batched=False)

    def broadcasted(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        lower = getattr(self, f"lower_{op.kind}", None)
        if lower is None:
            raise CompileError(f"no lowering for operator {op.kind!r}")
        results: list[Value] = lower(term, inputs)
        return results

    def sizes_of(self, term: ir.Broadcasted, ports: Sequence[ir.Port]) -> dict[Label, ir.SizeExpr]:
        sizes: dict[Label, ir.SizeExpr] = {
            degree_label(i): axis.size for i, axis in enumerate(term.degree.axes)}
        for port in ports:
            for axis in port.array.shape.axes:
                if axis.name in port.targets:
                    sizes[target_label(axis.name)] = axis.size
        return sizes

    def finish(self, term: ir.Broadcasted, expr: str, labels: Sequence[Label], index: int = 0,
               comment: str = "", batched: bool = True, fallback: str = "value") -> Value:
        """Permute a result from `labels` to output `index`'s memory order and name it."""
        port = term.outputs[index]
        expr = permute_text(expr, labels, output_labels(port))
        name = self.assign(port.name, expr, comment + self.source_note(term.span),
                           fallback=fallback)
        return Value(name, term.cod[index], batched)

    def normalized(self, term: ir.Broadcasted, value: Value, port: ir.Port,
                   order: Sequence[Label], missing: Missing,
                   leading_from: Value | None = None) -> View:
        rows = port_rows(value, port)
        return self.view(value, rows, self.sizes_of(term, [port]), order, missing, leading_from)

    def lower_einsum(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.EinsumOp)
        operands = list(zip(inputs, term.inputs, strict=True)) + [
            (self.param_value(p, Role("einsum", *self._fans(p, set(p.targets)))), p)
            for p in term.params]
        expr = self.contraction(term, operands)
        if op.scale != 1.0:
            expr += f" * {float_literal(op.scale)}"
        comment = self._einsum_comment(term, operands)
        if op.scale_text:
            comment += f", times {op.scale_text}"
        return [self.finish(term, expr, output_labels(term.outputs[0]), comment=comment,
                            batched=any(v.batched for v in inputs), fallback="product")]

    def _fans(self, port: ir.Port, contracted: set[str]) -> tuple[int | None, int | None]:
        fan_in = fan_out = 1
        for axis in port.array.shape.axes:
            value = self.sizes.value(axis.size)
            if value is None:
                return None, None
            if axis.name in contracted:
                fan_in *= value
            else:
                fan_out *= value
        return fan_in, fan_out

    def _einsum_comment(self, term: ir.Broadcasted,
                        operands: Sequence[tuple[Value, ir.Port]]) -> str:
        parts = [" ".join(value.names) for value, _ in operands]
        return f"{', '.join(parts)} -> {' '.join(term.outputs[0].array.names)}"

    def contraction(self, term: ir.Broadcasted, operands: Sequence[tuple[Value, ir.Port]],
                    relabel: Sequence[dict[Label, Label]] | None = None) -> str:
        """`torch.einsum` of the operands, indexed by label; labels absent from the output are
        summed. A plain port is indexed directly (a repeated letter is a diagonal); any other
        reindexing is turned into a view first. `relabel[i]` renames operand i's labels (a
        linear map contracts input axes with differently named weight axes)."""
        out_labels = output_labels(term.outputs[0])
        read: list[tuple[list[Label], str, bool]] = []  # labels, code, batched per operand
        label_sizes: dict[Label, ir.SizeExpr] = {}
        for index, (value, port) in enumerate(operands):
            rows = port_rows(value, port)
            if all(row.is_plain for row in rows):
                labels = [row.terms[0][0] for row in rows]
                code = value.code
                sizes = dict(zip(labels, (a.size for a in value.array.shape.axes), strict=True))
            else:
                order = [degree_label(i) for i in range(len(term.degree.axes))] + [
                    target_label(t) for t in port.targets]
                sizes = self.sizes_of(term, [port])
                view = self.view(value, rows, sizes, order, "drop")
                labels, code = list(view.labels), view.expr
            if relabel is not None:
                labels = [relabel[index].get(label, label) for label in labels]
                sizes = {relabel[index].get(label, label): size for label, size in sizes.items()}
            label_sizes.update((label, sizes[label]) for label in labels if label in sizes)
            read.append((labels, code, value.batched))
        distinct = {*out_labels, *(label for labels, _, _ in read for label in labels)}
        if len(distinct) > len(_LETTERS):
            return self._grouped_contraction(term, operands, read, out_labels, label_sizes)
        letters: dict[Label, str] = {}

        def letter(label: Label) -> str:
            if label not in letters:
                kind, key = label  # type: ignore[misc]
                name = term.degree.axes[key].name if kind == "degree" else str(key)
                name = name.removesuffix("_in")
                taken = set(letters.values())
                preferred = [c for c in name if c in _LETTERS] + list(_LETTERS)
                letters[label] = next(c for c in preferred if c not in taken)
            return letters[label]

        for label in out_labels:
            letter(label)
        subscripts = [("..." if batched else "") + "".join(map(letter, labels))
                      for labels, _, batched in read]
        arguments = [code for _, code, _ in read]
        if len(subscripts) == 1 and subscripts[0] == (
                ("..." if operands[0][0].batched else "") + "".join(map(letter, out_labels))):
            return arguments[0]  # one operand read as it is: no einsum needed
        batched = any(value.batched for value, _ in operands)
        result = ("..." if batched else "") + "".join(letter(label) for label in out_labels)
        equation = f"{','.join(subscripts)}->{result}"
        # The equation holds only letters, commas, dots and "->": safe between double quotes.
        return f'torch.einsum("{equation}", {", ".join(arguments)})'

    def _grouped_contraction(self, term: ir.Broadcasted,
                             operands: Sequence[tuple[Value, ir.Port]],
                             read: Sequence[tuple[list[Label], str, bool]],
                             out_labels: Sequence[Label],
                             label_sizes: dict[Label, ir.SizeExpr]) -> str:
        """An einsum with more distinct axes than `torch.einsum` has letters (52): axes that
        occur in the same operands and the output are merged into one dim (a permute and a
        `flatten` per operand), contracted, and split again (`unflatten`, a permute)."""
        read = list(read)
        for index, (labels, _, batched) in enumerate(read):
            if len(set(labels)) != len(labels):  # a diagonal: take it as a view first
                value, port = operands[index]
                rows = port_rows(value, port)
                originals = [row.terms[0][0] for row in rows]
                renamed = dict(zip(originals, labels, strict=True))
                view = self.view(value, rows, self.sizes_of(term, [port]),
                                 list(dict.fromkeys(originals)), "drop")
                read[index] = ([renamed[label] for label in view.labels], view.expr, batched)
        signature: dict[Label, GroupKey] = {}
        for label in [*out_labels, *(label for labels, _, _ in read for label in labels)]:
            signature[label] = (tuple(i for i, (labels, _, _) in enumerate(read)
                                      if label in labels), label in out_labels)
        groups: dict[GroupKey, list[Label]] = {}
        for label, key in signature.items():
            groups.setdefault(key, []).append(label)
        if len(groups) > len(_LETTERS):
            raise CompileError(f"an einsum whose {len(signature)} axes fall into "
                               f"{len(groups)} groups cannot be written with 52 letters")
        letter = {key: _LETTERS[i] for i, key in enumerate(groups)}

        def merged(code: str, labels: Sequence[Label], keys: Sequence[GroupKey]) -> str:
            ordered = [label for key in keys for label in groups[key]]
            code = permute_text(code, labels, ordered)
            after = 0  # dims to the right of the group being merged, already merged
            for key in reversed(keys):
                width = len(groups[key])
                if width > 1:
                    code = f"{code}.flatten({-after - width}, {-after - 1})"
                after += 1
            return code

        subscripts: list[str] = []
        arguments: list[str] = []
        for index, (labels, code, batched) in enumerate(read):
            keys = [key for key in groups if index in key[0]]
            subscripts.append(("..." if batched else "") + "".join(letter[k] for k in keys))
            arguments.append(merged(code, labels, keys))
        out_keys = [key for key in groups if key[1]]
        out_keys.sort(key=lambda key: min(out_labels.index(label) for label in groups[key]))
        batched = any(value.batched for value, _ in operands)
        result = ("..." if batched else "") + "".join(letter[k] for k in out_keys)
        expr = f'torch.einsum("{",".join(subscripts)}->{result}", {", ".join(arguments)})'
        after = 0
        for key in reversed(out_keys):
            width = len(groups[key])
            if width > 1:
                shape = tuple_text([self.size(label_sizes[label]) for label in groups[key]])
                expr = f"{expr}.unflatten({-after - 1}, {shape})"
            after += width
        grouped = [label for key in out_keys for label in groups[key]]
        return permute_text(expr, grouped, out_labels)

    def lower_linear(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.LinearOp)
        if len(term.params) != (2 if op.bias else 1):
            raise CompileError(f"linear{'with bias' if op.bias else ''} has "
                               f"{len(term.params)} parameters")
        weight_inputs = _linear_weight_inputs(op, term.params[0].array.names)
        fan_in, fan_out = self._fans(term.params[0], set(weight_inputs))
        weight = self.param_value(term.params[0], Role("linear_weight", fan_in, fan_out))
        operands = [(inputs[0], term.inputs[0]), (weight, term.params[0])]
        # Input axis `a` meets the weight axis `weight_inputs[i]`; outputs keep their names.
        relabel = [{target_label(a): ("contract", a) for a in op.inputs},
                   {target_label(w): ("contract", a)
                    for a, w in zip(op.inputs, weight_inputs, strict=True)}]
        expr = self.contraction(term, operands, relabel)
        labels = output_labels(term.outputs[0])
        if op.bias:
            bias_port = term.params[1]
            bias = self.param_value(bias_port, Role("linear_bias", fan_in, fan_out))
            view = self.normalized(term, bias, bias_port, labels, "unsqueeze")
            expr += f" + {view.expr}"
        comment = self._einsum_comment(term, operands)
        return [self.finish(term, expr, labels, comment=comment, batched=inputs[0].batched,
                            fallback="linear")]

    def lower_embedding(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.EmbeddingOp)
        table = self.param_value(term.params[0], Role("embedding"))
        if table.rank < 1:
            raise CompileError("an embedding table needs a vocabulary axis")
        degree = [degree_label(i) for i in range(len(term.degree.axes))]
        index = self.normalized(term, inputs[0], term.inputs[0], degree, "expand")
        if table.rank == 2:
            expr = f"F.embedding({index.expr}, {table.code})"
        else:
            expr = f"{table.code}[{index.expr}]"
        labels = [*degree, *(target_label(n) for n in table.names[1:])]
        return [self.finish(term, expr, labels, comment=f"embedding into {' '.join(op.outputs)}",
                            fallback="embedded")]

    def _single(self, term: ir.Broadcasted, inputs: list[Value],
                order: Sequence[Label] | None = None) -> tuple[View, list[Label]]:
        """The one data input viewed in `order` (the output's layout by default)."""
        labels = list(order) if order is not None else output_labels(term.outputs[0])
        view = self.normalized(term, inputs[0], term.inputs[0], labels, "expand")
        return view, labels

    def lower_elementwise(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.ElementwiseOp)
        view, labels = self._single(term, inputs)
        return [self.finish(term, _ELEMENTWISE[op.function].format(view.expr), labels,
                            comment=op.function, batched=inputs[0].batched, fallback=op.function)]

    def lower_scale(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.ScaleOp)
        view, labels = self._single(term, inputs)
        return [self.finish(term, f"{view.expr} * {float_literal(op.factor)}", labels,
                            comment=f"times {op.text}", batched=inputs[0].batched,
                            fallback="scaled")]

    def lower_dropout(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.DropoutOp)
        view, labels = self._single(term, inputs)
        return [self.finish(term, f"F.dropout({view.expr}, p={float_literal(op.p)}, "
                            f"training=self.training)", labels, comment="dropout",
                            batched=inputs[0].batched, fallback="dropped")]

    def _trailing_targets(self, term: ir.Broadcasted, targets: Sequence[str]) -> list[Label]:
        """The output's layout with `targets` moved to the end in the given order."""
        wanted = [target_label(t) for t in targets]
        return [label for label in output_labels(term.outputs[0]) if label not in wanted] + wanted

    def lower_softmax(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.SoftmaxOp)
        function = "torch.log_softmax" if op.log else "torch.softmax"
        if len(op.axes) == 1:
            view, labels = self._single(term, inputs)
            dim = labels.index(target_label(op.axes[0])) - len(labels)
            expr = f"{function}({view.expr}, dim={dim})"
        else:
            view, labels = self._single(term, inputs, self._trailing_targets(term, op.axes))
            sizes = self.sizes_of(term, [term.inputs[0]])
            shape = tuple_text([self.size(sizes[target_label(a)]) for a in op.axes])
            expr = (f"{function}({view.expr}.flatten(-{len(op.axes)}), dim=-1)"
                    f".unflatten(-1, {shape})")
        return [self.finish(term, expr, labels, comment=f"softmax over {' '.join(op.axes)}",
                            batched=inputs[0].batched, fallback="softmax")]

    def lower_norm(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.NormOp)
        params = list(term.params)
        weight = bias = None
        if op.affine:
            weight = self.param_value(params.pop(0), Role("norm_weight"))
        if op.bias:
            bias_port = params.pop(0)
            bias = self.param_value(bias_port, Role("norm_bias"))
        targets = list(weight.names) if weight is not None else list(op.axes)
        view, labels = self._single(term, inputs, self._trailing_targets(term, targets))
        sizes = self.sizes_of(term, [term.inputs[0]])
        shape = tuple_text([self.size(sizes[target_label(a)]) for a in targets])
        weight_code = weight.code if weight is not None else "None"
        bias_code = "None"
        if bias is not None:
            bias_code = permute_text(bias.code, [target_label(n) for n in bias.names],
                                     [target_label(n) for n in targets])
        if op.norm == "layernorm":
            expr = (f"F.layer_norm({view.expr}, {shape}, {weight_code}, {bias_code}, "
                    f"eps={float_literal(op.eps)})")
        else:
            if bias is not None:
                raise CompileError("rmsnorm has no bias")
            expr = f"F.rms_norm({view.expr}, {shape}, {weight_code}, eps={float_literal(op.eps)})"
        return [self.finish(term, expr, labels, comment=f"{op.norm} over {' '.join(op.axes)}",
                            batched=inputs[0].batched, fallback=op.norm)]

    def _broadcast_operands(self, term: ir.Broadcasted, inputs: list[Value],
                            labels: Sequence[Label]) -> list[str]:
        ports = list(term.inputs)
        values = list(inputs)
        for port in term.params:
            ports.append(port)
            role = Role("multiply" if term.op.kind == "multiply" else "add")
            values.append(self.param_value(port, role))
        return [self.normalized(term, value, port, labels, "unsqueeze").expr
                for value, port in zip(values, ports, strict=True)]

    def lower_add(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        labels = output_labels(term.outputs[0])
        operands = self._broadcast_operands(term, inputs, labels)
        return [self.finish(term, " + ".join(operands), labels, comment="sum",
                            batched=any(v.batched for v in inputs), fallback="total")]

    def lower_multiply(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        labels = output_labels(term.outputs[0])
        operands = self._broadcast_operands(term, inputs, labels)
        return [self.finish(term, " * ".join(operands), labels, comment="entrywise product",
                            batched=any(v.batched for v in inputs), fallback="product")]

    def lower_mask(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.MaskOp)
        view, labels = self._single(term, inputs)
        rank = len(labels)
        sizes = self.sizes_of(term, [term.inputs[0]])
        if op.by_array:
            keep = self.normalized(term, inputs[1], term.inputs[1], labels, "unsqueeze").expr
            description = "where the mask array holds"
        else:
            indices: dict[str, str] = {}
            for condition in op.conditions:
                for name, _ in condition.coefficients:
                    label = target_label(name)
                    if label not in labels:
                        raise CompileError(f"mask condition {condition.text!r} names {name!r}, "
                                           f"which is not a target axis")
                    if name not in indices:
                        indices[name] = self.assign(
                            f"{name}_index", f"torch.arange({self.size(sizes[label])}, "
                            f"device={inputs[0].code}.device)", fallback="index")
            clauses = [self._condition(c, labels, indices, rank) for c in op.conditions]
            if not clauses:
                raise CompileError("a mask has neither conditions nor a mask array")
            keep_expr = " & ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]
            keep = self.assign("keep", keep_expr, "; ".join(c.text for c in op.conditions))
            description = "keep " + "; ".join(c.text for c in op.conditions)
        expr = f"{view.expr}.masked_fill(~{keep}, {float_literal(op.fill)})"
        return [self.finish(term, expr, labels, comment=description,
                            batched=inputs[0].batched, fallback="masked")]

    def _condition(self, condition: ir.Comparison, labels: Sequence[Label],
                   indices: dict[str, str], rank: int) -> str:
        """An affine comparison of indices as a broadcastable boolean tensor."""
        sides: tuple[list[str], list[str]] = ([], [])
        for name, coefficient in condition.coefficients:
            trailing = rank - 1 - labels.index(target_label(name))
            index = indices[name]
            if trailing:
                index += "[" + ", ".join([":"] + ["None"] * trailing) + "]"
            side = sides[0] if coefficient > 0 else sides[1]
            magnitude = abs(coefficient)
            side.append(index if magnitude == 1 else f"{magnitude} * {index}")
        if condition.offset > 0:
            sides[0].append(str(condition.offset))
        elif condition.offset < 0:
            sides[1].append(str(-condition.offset))
        left = " + ".join(sides[0]) or "0"
        right = " + ".join(sides[1]) or "0"
        return f"{left} {condition.op} {right}"

    def lower_reduce(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.ReduceOp)
        out = output_labels(term.outputs[0])
        rows = port_rows(inputs[0], term.inputs[0])
        own = [row.terms[0][0] for row in rows] if all(r.is_plain for r in rows) else []
        kept = [label for label in own if label not in {target_label(a) for a in op.axes}]
        if len(set(own)) == len(own) and kept == out:
            order = own
        else:
            order = out + [target_label(a) for a in op.axes]
        view = self.normalized(term, inputs[0], term.inputs[0], order, "expand")
        dims = tuple_text([str(order.index(target_label(a)) - len(order)) for a in op.axes])
        if not op.axes:
            expr = view.expr
        elif op.function in ("max", "min", "sum", "mean", "logsumexp"):
            expr = f"{_REDUCE[op.function]}({view.expr}, dim={dims})"
        else:
            raise CompileError(f"unknown reduction {op.function!r}")
        return [self.finish(term, expr, out, comment=f"{op.function} over {' '.join(op.axes)}",
                            batched=inputs[0].batched, fallback=op.function)]

    def lower_concat(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.ConcatOp)
        out = output_labels(term.outputs[0])
        position = out.index(target_label(op.output))
        batched = next((v for v in inputs if v.batched), None)
        parts = []
        for value, port, axis in zip(inputs, term.inputs, op.inputs, strict=True):
            order = list(out)
            order[position] = target_label(axis)
            leading = batched if (batched is not None and not value.batched) else None
            parts.append(self.normalized(term, value, port, order, "expand", leading).expr)
        expr = f"torch.cat({tuple_text(parts)}, dim={position - len(out)})"
        return [self.finish(term, expr, out, comment=f"concat {' '.join(op.inputs)} -> "
                            f"{op.output}", batched=batched is not None, fallback="joined")]

    def lower_split(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.SplitOp)
        first = output_labels(term.outputs[0])
        position = next(i for i, label in enumerate(first)
                        if label == target_label(op.outputs[0]))
        order = list(first)
        order[position] = target_label(op.input)
        view = self.normalized(term, inputs[0], term.inputs[0], order, "expand")
        source = view.expr
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", source):
            source = self.assign(f"{inputs[0].code}_whole", source, fallback="whole")
        results = []
        start: list[ir.SizeExpr] = []
        for index, axis in enumerate(op.outputs):
            port = term.outputs[index]
            size = port.array.shape.axis(axis).size
            begin = self.size(ir.SizeAdd(terms=(ir.SizeConst(value=0), *start)))
            end = self.size(ir.SizeAdd(terms=(ir.SizeConst(value=0), *start, size)))
            slots = [":"] * len(order)
            slots[position] = f"{'' if begin == '0' else begin}:{end}"
            labels = list(order)
            labels[position] = target_label(axis)
            results.append(self.finish(term, f"{source}[..., {', '.join(slots)}]", labels,
                                       index=index, comment=f"part {axis} of {op.input}",
                                       batched=inputs[0].batched, fallback="part"))
            start.append(size)
        return results

    def lower_pad(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.PadOp)
        out = output_labels(term.outputs[0])
        position = out.index(target_label(op.output))
        order = list(out)
        order[position] = target_label(op.input)
        view = self.normalized(term, inputs[0], term.inputs[0], order, "expand")
        # F.pad lists (before, after) pairs from the last dimension backwards.
        widths = ["0, 0"] * (len(out) - 1 - position) + [f"{op.before}, {op.after}"]
        expr = (f"F.pad({view.expr}, ({', '.join(widths)}), "
                f"value={float_literal(op.value)})")
        return [self.finish(term, expr, out, comment=f"pad {op.input} -> {op.output} by "
                            f"{op.before}, {op.after}", batched=inputs[0].batched,
                            fallback="padded")]

    def lower_rename(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.RenameOp)
        new_to_old = {new: old for old, new in op.mapping}
        out = output_labels(term.outputs[0])
        order = [target_label(new_to_old[label[1]])  # type: ignore[index]
                 if label[0] == "target" and label[1] in new_to_old else label  # type: ignore[index]
                 for label in out]
        view = self.normalized(term, inputs[0], term.inputs[0], order, "expand")
        text = ", ".join(f"{old} -> {new}" for old, new in op.mapping)
        return [self.finish(term, view.expr, out, comment=f"rename {text}",
                            batched=inputs[0].batched, fallback="renamed")]

    def lower_reshape(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.ReshapeOp)
        out = output_labels(term.outputs[0])
        outputs = [target_label(a) for a in op.outputs]
        # Merge or split in place where the new axes sit in the output; else at the end.
        position = next((i for i in range(len(out) - len(outputs) + 1)
                         if out[i:i + len(outputs)] == outputs), None)
        if position is None:
            out_work = [label for label in out if label not in outputs] + outputs
            position = len(out_work) - len(outputs)
        else:
            out_work = list(out)
        order = (out_work[:position] + [target_label(a) for a in op.inputs]
                 + out_work[position + len(outputs):])
        view = self.normalized(term, inputs[0], term.inputs[0], order, "expand")
        expr, rank = view.expr, len(order)
        if not op.inputs:
            expr += f".unsqueeze({position - rank - 1})"
            rank += 1
        elif len(op.inputs) > 1:
            expr += f".flatten({position - rank}, {position + len(op.inputs) - 1 - rank})"
            rank -= len(op.inputs) - 1
        if not op.outputs:
            expr += f".squeeze({position - rank})"
        elif len(op.outputs) > 1:
            sizes = self.sizes_of(term, term.outputs)
            shape = tuple_text([self.size(sizes[o]) for o in outputs])
            expr += f".unflatten({position - rank}, {shape})"
        return [self.finish(term, expr, out_work,
                            comment=f"reshape {' '.join(op.inputs)} -> {' '.join(op.outputs)}",
                            batched=inputs[0].batched, fallback="reshaped")]

    def lower_call(self, term: ir.Broadcasted, inputs: list[Value]) -> list[Value]:
        op = term.op
        assert isinstance(op, ir.CallOp)
        callee = self.compiler.definition(op.definition)
        info = self.compiler.info(op.definition)
        attribute = self.scope.spec.child(op.instance, info.class_name,
                                          f"call site {op.instance} of {op.definition}")
        degree = [degree_label(i) for i in range(len(term.degree.axes))]
        batched = next((v for v in inputs if v.batched), None)
        arguments = []
        for value, port, variable in zip(inputs, term.inputs, callee.inputs, strict=True):
            targets = _match_axes(port.targets, variable.array.names)
            order = degree + [target_label(t) for t in targets]
            leading = batched if (batched is not None and not value.batched) else None
            arguments.append(self.normalized(term, value, port, order, "expand", leading).expr)
        call = f"{attribute_code(self.scope.owner, attribute)}({', '.join(arguments)})"
        lift = f", lifted over {' '.join(term.degree.names)}" if term.degree.axes else ""
        comment = f"{op.definition}{lift}"
        plans = []
        for index, (variable, port) in enumerate(zip(callee.outputs, term.outputs, strict=True)):
            targets = _match_axes(port.targets, variable.array.names)
            labels = degree + [target_label(t) for t in targets]
            tile = bool(term.degree.axes) and not info.outputs_batched[index]
            direct = not tile and labels == output_labels(port)
            hint = port.name if direct and port.name else f"{op.instance}_result"
            plans.append((self.names.fresh(hint), labels, tile, direct))
        targets_text = ", ".join(name for name, *_ in plans) or "_"
        self.emit(f"{targets_text} = {call}", comment + self.source_note(term.span))
        results: list[Value] = []
        for index, (raw, labels, tile, direct) in enumerate(plans):
            output_batched = batched is not None or info.outputs_batched[index]
            if direct:
                results.append(Value(raw, term.cod[index], output_batched))
                continue
            expr = raw
            if tile:
                # The callee computed this output from its parameters alone: tile it.
                lead = (leading_shape(batched.code, batched.rank) + " + ") if batched else ""
                sizes = tuple_text([self.size(a.size) for a in term.degree.axes])
                expr = f"{raw}.expand({lead}{sizes} + {raw}.shape)"
            results.append(self.finish(term, expr, labels, index, batched=output_batched,
                                       fallback="result"))
        return results


def _index_text(eta: ir.StrideMorphism, row: int) -> str:
    """The index expression of codomain axis `row` as the source writes it: `2*p - w + 2`."""
    text = ""
    for coefficient, axis in zip(eta.matrix[row], eta.domain.axes, strict=True):
        if coefficient:
            magnitude = "" if abs(coefficient) == 1 else f"{abs(coefficient)}*"
            sign = ("-" if coefficient < 0 else "") if not text else \
                (" - " if coefficient < 0 else " + ")
            text += f"{sign}{magnitude}{axis.name}"
    offset = eta.offset[row]
    if offset or not text:
        text += str(offset) if not text else f" {'-' if offset < 0 else '+'} {abs(offset)}"
    return text


def _base_name(code: str) -> str:
    """`X_3` -> `X`, `self.W` -> `W`: a hint for a new name of the same value."""
    return re.sub(r"_\d+$", "", code.rsplit(".", 1)[-1])


def _linear_weight_inputs(op: ir.LinearOp, weight_axes: Sequence[str]) -> list[str]:
    """The weight axes that a linear map contracts with its input axes `op.inputs`.

    The elaborator names them like the input axes, except that an input axis which is also an
    output (`linear[m -> m]`) becomes `m_in`; failing both, the first axes in order.
    """
    chosen = []
    for position, axis in enumerate(op.inputs):
        wanted = f"{axis}_in" if axis in op.outputs else axis
        if wanted not in weight_axes:
            wanted = weight_axes[position]
        chosen.append(wanted)
    return chosen


def _match_axes(targets: Sequence[str], declared: Sequence[str]) -> list[str]:
    """The caller's target axes in the order of the callee's declared axes: by name when the
    names agree, by position otherwise."""
    if sorted(targets) == sorted(declared):
        return list(declared)
    if len(targets) != len(declared):
        raise CompileError(f"a call passes axes {list(targets)} for {list(declared)}")
    return list(targets)


# --------------------------------------------------------------------------------------
# Classes and the program
# --------------------------------------------------------------------------------------


def _initialiser(entry: ParamEntry, owner: str, sizes: SizeTable) -> str:
    """The `nn.init` call that gives a parameter its declared (or default) initial values."""
    parameter = entry.parameter
    target = attribute_code(owner, entry.attribute)
    args = list(parameter.init_args)
    shape_values = [sizes.value(axis.size) or 1 for axis in parameter.array.shape.axes]
    role = entry.role
    fan_in = role.fan_in or (shape_values[0] if shape_values else 1)
    fan_out = role.fan_out or (shape_values[-1] if shape_values else 1)
    init = parameter.init
    if init == "normal":
        mean, std = (args + [0.0, 1.0][len(args):])[:2]
        return f"nn.init.normal_({target}, mean={float_literal(mean)}, std={float_literal(std)})"
    if init == "uniform":
        low, high = (args + [0.0, 1.0][len(args):])[:2]
        return f"nn.init.uniform_({target}, {float_literal(low)}, {float_literal(high)})"
    if init in ("zeros", "ones"):
        return f"nn.init.{init}_({target})"
    if init == "constant":
        return f"nn.init.constant_({target}, {float_literal(args[0] if args else 0.0)})"
    if init == "xavier":
        gain = args[0] if args else 1.0
        bound = f"{float_literal(gain)} * (6 / ({fan_in} + {fan_out})) ** 0.5"
        return f"nn.init.uniform_({target}, -{bound}, {bound})  # xavier (glorot) uniform"
    if init == "kaiming":
        return (f"nn.init.normal_({target}, mean=0.0, std=(2 / {fan_in}) ** 0.5)"
                f"  # kaiming (he) normal, fan_in {fan_in}")
    if init != "default":
        raise CompileError(f"unknown initialiser {init!r} of parameter {parameter.name!r}")
    match role.kind:
        case "linear_weight" | "linear_bias" | "einsum":
            like = "nn.Linear" if role.kind.startswith("linear") else "nn.Linear, nn.Conv*"
            return (f"nn.init.uniform_({target}, -({fan_in}**-0.5), {fan_in}**-0.5)"
                    f"  # as {like}: fan_in {fan_in}")
        case "embedding":
            return f"nn.init.normal_({target})  # as nn.Embedding"
        case "norm_weight" | "multiply":
            return f"nn.init.ones_({target})"
        case "norm_bias" | "add":
            return f"nn.init.zeros_({target})"
    return f"nn.init.uniform_({target}, -({fan_in}**-0.5), {fan_in}**-0.5)"


def commented(indent: str, line: str, comment: str | None) -> list[str]:
    """A line with its comment trailing when that fits in 100 columns, else above it."""
    if not comment:
        return [indent + line]
    note = f"# {comment_text(comment)}"
    if len(indent) + len(line) + 2 + len(note) <= LINE_LENGTH:
        return [f"{indent}{line}  {note}"]
    return [indent + note, indent + line]


def _signature_lines(arguments: Sequence[str], returns: str) -> list[str]:
    """`def forward(...)`, wrapped the way a formatter wraps it when it is too long."""
    one_line = f"    def forward({', '.join(arguments)}) -> {returns}:"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    middle = "        " + ", ".join(arguments)
    if len(middle) <= LINE_LENGTH:
        return ["    def forward(", middle, f"    ) -> {returns}:"]
    return ["    def forward(", *(f"        {a}," for a in arguments), f"    ) -> {returns}:"]


def _class_lines(spec: ModuleSpec, sizes: SizeTable,
                 forward: tuple[list[str], list[str], str] | None) -> list[str]:
    """The class of one module: parameters, submodules, initialisation and `forward`
    (given as its argument list, body lines and return annotation)."""
    inner = "        "
    lines = [f"class {spec.class_name}(nn.Module):"]
    if spec.doc:
        lines.append(f"    {docstring_literal(spec.doc)}")
        lines.append("")
    lines.append("    def __init__(self) -> None:")
    lines.append(f"{inner}super().__init__()")
    for entry in spec.params.values():
        parameter = entry.parameter
        dims = []
        for axis in parameter.array.shape.axes:
            value = sizes.value(axis.size)
            if value is None:
                raise CompileError(f"parameter {parameter.name!r} has the symbolic axis "
                                   f"{axis.name!r}; parameters need fixed sizes")
            dims.append(str(value))
        empty = f"torch.empty({', '.join(dims) if dims else '()'})"
        note = parameter.array.text()
        if entry.attribute != parameter.name:
            note += f", renamed from {parameter.name}"
        if is_plain_identifier(entry.attribute):
            line = f"self.{entry.attribute} = nn.Parameter({empty})"
        else:
            line = (f"self.register_parameter({string_literal(entry.attribute)}, "
                    f"nn.Parameter({empty}))")
        lines.extend(commented(inner, line, note))
    for child in spec.children:
        if child.repeat is None:
            construct = f"{child.class_name}()"
        else:
            construct = f"nn.ModuleList({child.class_name}() for _ in range({child.repeat}))"
        if is_plain_identifier(child.attribute):
            line = f"self.{child.attribute} = {construct}"
        else:
            line = f"self.add_module({string_literal(child.attribute)}, {construct})"
        lines.extend(commented(inner, line, child.comment))
    if spec.params:
        lines.append(f"{inner}self.reset_parameters()")
        lines.append("")
        lines.append("    def reset_parameters(self) -> None:")
        lines.append(f"{inner}with torch.no_grad():")
        for entry in spec.params.values():
            call, _, note = _initialiser(entry, "self", sizes).partition("  # ")
            lines.extend(commented(inner + "    ", call, note or None))
    if forward is not None:
        arguments, body, returns = forward
        lines.append("")
        lines.extend(_signature_lines(arguments, returns))
        lines.extend(body)
    return lines


class ProgramCompiler:
    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.sizes = SizeTable(program)
        self.classes = Namespace()
        self.infos: dict[str, DefinitionInfo] = {}
        self.chunks: list[list[str]] = []

    def definition(self, name: str) -> ir.Definition:
        try:
            return self.program.definition(name)
        except KeyError:
            raise CompileError(f"call to unknown definition {name!r}") from None

    def info(self, name: str) -> DefinitionInfo:
        if name not in self.infos:
            raise CompileError(f"definition {name!r} is used before it is compiled "
                               f"(recursive calls cannot be compiled)")
        return self.infos[name]

    def order(self, roots: Sequence[str]) -> list[str]:
        """Definitions to emit, callees before callers, otherwise in source order."""
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered:
                return
            if name in visiting:
                raise CompileError(f"definition {name!r} calls itself")
            visiting.add(name)
            for term in ir.walk(self.definition(name).body):
                if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp):
                    visit(term.op.definition)
            visiting.discard(name)
            ordered.append(name)

        for root in roots:
            visit(root)
        return ordered

    def compile_definition(self, definition: ir.Definition) -> None:
        class_name = self.classes.fresh(camel_case(definition.name), "Module")
        declared = {p.name: p for p in definition.params}
        doc = definition.doc or f"The ncd definition {definition.name!r}."
        spec = ModuleSpec(class_name=class_name, doc=doc, declared=declared)
        emitter = ForwardEmitter(self, spec)
        arguments: list[Value] = []
        for variable in definition.inputs:
            arguments.append(Value(emitter.names.fresh(variable.name, "input"), variable.array))
        emitter.arguments = arguments
        outputs = emitter.term(definition.body, arguments)
        if len(outputs) != len(definition.outputs):
            raise CompileError(f"{definition.name} returns {len(outputs)} arrays, declares "
                               f"{len(definition.outputs)}")
        outputs = [emitter.relayout(value, variable.array)
                   for value, variable in zip(outputs, definition.outputs, strict=True)]
        returned = ", ".join(v.code for v in outputs)
        emitter.emit(f"return {returned}" if outputs else "return ()")
        for name, parameter in declared.items():  # declared but unused: still learnable
            if not any(name in (s.params) for s in _all_specs(spec)):
                spec.param(name, parameter.array, Role("declared"))
        forward = _symbol_reads(emitter, definition, arguments) + emitter.checks + emitter.lines
        inputs_doc = ", ".join(f"{v.code}: {comment_text(v.array.text())}" for v in arguments)
        outputs_doc = ", ".join(comment_text(v.array.text()) for v in definition.outputs)
        forward.insert(0, f"        # {inputs_doc} -> {outputs_doc}")
        signature = ["self"] + [f"{v.code}: torch.Tensor" for v in arguments]
        returns = "torch.Tensor" if len(outputs) == 1 else \
            "tuple[" + ", ".join(["torch.Tensor"] * len(outputs)) + "]"
        if not outputs:
            returns = "tuple[()]"
        chunk: list[str] = []
        for block_spec in _nested_blocks(spec):
            chunk.extend(_class_lines(block_spec, self.sizes, None))
            chunk.extend(["", ""])
        chunk.extend(_class_lines(spec, self.sizes, (signature, forward, returns)))
        self.chunks.append(chunk)
        self.infos[definition.name] = DefinitionInfo(
            class_name, tuple(v.batched for v in outputs))


def _all_specs(spec: ModuleSpec) -> Iterator[ModuleSpec]:
    yield spec
    for block in spec.blocks:
        yield from _all_specs(block)


def _nested_blocks(spec: ModuleSpec) -> list[ModuleSpec]:
    """Block classes in the order they must be defined (inner before outer)."""
    ordered: list[ModuleSpec] = []
    for block in spec.blocks:
        ordered.extend(_nested_blocks(block))
        ordered.append(block)
    return ordered


def _symbol_reads(emitter: ForwardEmitter, definition: ir.Definition,
                  arguments: list[Value]) -> list[str]:
    """`size_x = X.shape[-2]` for every symbolic size the forward uses."""
    lines = []
    body = "\n".join(emitter.checks + emitter.lines)
    for symbol, code in sorted(emitter.symbol_code.items()):
        if not re.search(rf"\b{code}\b", body):
            continue  # only compared at compile time, never computed with
        source = emitter.composite_reads.get(symbol) or _find_symbol(symbol, arguments,
                                                                     emitter.sizes)
        if source is None:
            raise CompileError(f"the size {symbol!r} used by {definition.name!r} cannot be read "
                               f"from the shapes of its inputs")
        shown = emitter.composite_axes.get(symbol, symbol)
        lines.append(f"        {code} = {source}  # |{shown}|")
    return lines


def _find_symbol(symbol: str, arguments: list[Value], sizes: SizeTable) -> str | None:
    for value in arguments:
        for position, axis in enumerate(value.array.shape.axes):
            if sizes.expand(axis.size) == ir.SizeSym(name=symbol):
                return f"{value.code}.shape[{position - value.rank}]"
    # An axis whose size is `a * symbol + b` also tells the symbol.
    for value in arguments:
        for position, axis in enumerate(value.array.shape.axes):
            if sizes.symbols(axis.size) != {symbol}:
                continue
            probe = {**sizes.known, symbol: 0}
            b = ir.size_value(sizes.expand(axis.size), probe)
            probe[symbol] = 1
            a_plus_b = ir.size_value(sizes.expand(axis.size), probe)
            if b is None or a_plus_b is None or a_plus_b - b <= 0:
                continue
            a = a_plus_b - b
            probe[symbol] = 7
            if ir.size_value(sizes.expand(axis.size), probe) != 7 * a + b:
                continue
            shape = f"{value.code}.shape[{position - value.rank}]"
            text = f"({shape} - {b})" if b else shape
            return f"{text} // {a}" if a != 1 else text
    return None


def _compile(program: ir.Program, definition: str | None,
             source_name: str | None) -> tuple[str, ProgramCompiler]:
    compiler = ProgramCompiler(program)
    roots = [definition] if definition is not None else [d.name for d in program.definitions]
    for name in compiler.order(roots):
        compiler.compile_definition(compiler.definition(name))
    source = comment_text(source_name or program.source or "<string>")
    header = [
        f"# Generated by ncd from {source}. Do not edit: change the .ncd source and regenerate.",
        "# Arrays keep their declared axes as the trailing dims; leading dims are batch dims.",
    ]
    body: list[str] = []
    for chunk in compiler.chunks:
        body.extend(["", ""])
        body.extend(chunk)
    text = "\n".join(body)
    imports = ["import torch"]
    if re.search(r"\bF\.", text):
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    return "\n".join([*header, "", *imports, text, ""]), compiler


def compile_program(program: ir.Program, definition: str | None = None, *,
                    source_name: str | None = None) -> str:
    """One Python source file with an `nn.Module` class per definition.

    With `definition`, only that definition and the ones it calls are emitted; otherwise all.
    The text depends on the IR alone (no timestamps, no unordered iteration), so the same input
    gives the same bytes.
    """
    return _compile(program, definition, source_name)[0]


def build_module(program: ir.Program, definition: str | None = None, *,
                 source_name: str | None = None, device: Any = None,
                 dtype: Any = None) -> torch.nn.Module:
    """Compile `definition` (the last one by default) and instantiate its module in process.

    The source is registered with `linecache`, so tracebacks and `inspect` show the generated
    lines; the class keeps it in `__ncd_source__`.
    """
    if definition is None:
        if not program.definitions:
            raise CompileError("the program has no definitions")
        definition = program.definitions[-1].name
    source, compiler = _compile(program, definition, source_name)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"<ncd-generated {sanitize(definition)} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"ncd_generated_{digest}"}
    exec(compile(source, filename, "exec"), namespace)
    module_class = namespace[compiler.infos[definition].class_name]
    module_class.__ncd_source__ = source
    module = module_class()
    if device is not None or dtype is not None:
        module = module.to(device=device, dtype=dtype)
    return module
