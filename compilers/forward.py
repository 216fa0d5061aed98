"""The emitter of one `forward`: statements for a term, given the values of its inputs.

Terms are matched exhaustively: identities and rearrangements pass values along, reindexings
become tensor views (`compilers.views`), blocks become loops (over the `nn.ModuleList` of their
copies, or a plain loop when they share weights), scans become loops over their axis, and a
broadcasted operation is lowered by its operator's declaration (`ncd.operators.declaration`),
to which the emitter offers the services of `ncd.ops.lowering.Emitter`. Sizes known only at
run time are read from the inputs' shapes (`symbol_reads`), and a read whose bounds depend on
them is checked at the top of `forward`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, assert_never

from ncd import ir
from ncd.operators import declaration
from ncd.ops.lowering import (
    Label,
    Submodule,
    TensorCode,
    degree_label,
    size_factor,
    target_label,
)
from ncd.ops.lowering import Missing as LoweringMissing
from ncd.sizes import ProgramSizes, Size, SizeLimit, check_nonnegative
from ncd.sizes import from_ir as size_polynomial
from ncd.term_flow import TermFlow

from .attention import AttentionLowering
from .convolution import WindowLowering
from .counts import CountLowering
from .einsum import contraction
from .errors import CompileError, UnknownSize
from .expert_sums import ExpertSumLowering
from .inline_calls import CallInlining
from .labels import output_labels, port_rows
from .machines import lower_machine
from .modules import (
    LINE_LENGTH,
    ChildEntry,
    ModuleSpec,
    ParamEntry,
    Scope,
    attribute_code,
    choice_lines,
    wrapped,
)
from .muladd import MulAddLowering
from .naming import (
    Namespace,
    base_name,
    camel_case,
    comment_lines,
    comment_text,
    snake_case,
    string_literal,
)
from .picks import PickLossLowering
from .scans import lower_scan
from .size_code import division_atoms, size_expression_code
from .views import Missing, Row, View, leading_shape, permute_text, tuple_text, view_through

if TYPE_CHECKING:
    from .pytorch import ProgramCompiler


_Patterns = tuple[AttentionLowering, WindowLowering, PickLossLowering, ExpertSumLowering,
                  CountLowering, MulAddLowering]
"""The lowerings of patterns of several terms, in the order they are tried."""


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
        self.arguments: list[TensorCode] = []
        # The arguments whose device and dtype new arrays take (`anchor`): those of the
        # callee whose body is being written in place (`compilers.inline_calls`), else None.
        self.anchors: list[TensorCode] | None = None
        self.composite_reads: dict[str, str] = {}
        self.composite_axes: dict[str, str] = {}  # the input axis each composite is read from
        self.atom_code: dict[str, str] = {}  # divisions inside sizes, computed from those reads
        self.atom_reads: dict[str, str] = {}  # the key of `symbol_code` each of those reads
        # The keys of `symbol_code` that the emitted code reads (only those are read at run
        # time; a size only compared at compile time needs no read).
        self.sizes_read: set[str] = set()
        # id of a size node: the node, the table sizes it was written with, its code, its reads
        self._size_codes: dict[int, tuple[ir.SizeExpr, tuple[int, int, int], str,
                                          tuple[str, ...]]] = {}
        self.functional = False  # whether the code calls torch.nn.functional (`F.`)
        # whether the code reads the hooks registered for every module (`nn_module.`)
        self.global_hooks = False
        # The parameters of `self` the forward reads, each bound to a local once at its top
        # (`own_parameter_lines`), by attribute: (local, entry).
        self.own_parameters: dict[str, tuple[str, ParamEntry]] = {}
        self.scope = Scope(spec, "self", bind=self._own_parameter)
        # The walk of the composition being written: who reads what its parts make.
        self.flow: TermFlow | None = None
        # Run-time checks of bounds that depend on symbolic sizes (the first lines of forward).
        self.checks: list[str] = []
        # Checks of index arrays already made at the top level of forward (array, bound): the
        # arrays are never modified, so each is checked once.
        self.checked: set[str] = set()
        # Locals that are views whose entries share memory (windows, `unfold`): a kernel that
        # misreads such strides is given a contiguous copy (`compilers.attention`).
        self.overlapping: set[str] = set()
        self._use_patterns(self._patterns())
        # The open regions of code (the forward's top level, then each `if`, `else` or loop
        # body being written), innermost last: a name bound in a closed one may be unbound.
        self.regions = [0]
        self._region_count = 0
        # A call of a small definition, its body written here (`compilers.inline_calls`).
        self.inlining = CallInlining(self)

    def _patterns(self) -> _Patterns:
        """The lowerings of patterns of several terms, each knowing its matches by the
        terms' ids: attention as one fused call (`compilers.attention`), convolutions and
        pools as one kernel call (`compilers.convolution`), the negated mean of one pick per
        row as `F.nll_loss` (`compilers.picks`), a weighted sum of experts run one copy at a
        time (`compilers.expert_sums`), the ones summed into the places of an index array as
        one `index_add` of ones (`compilers.counts`), a sum of a product as one
        `torch.addcmul` (`compilers.muladd`)."""
        return (AttentionLowering(self), WindowLowering(self), PickLossLowering(self),
                ExpertSumLowering(self), CountLowering(self), MulAddLowering(self))

    def _use_patterns(self, patterns: _Patterns) -> None:
        """Write with these lowerings of patterns: each by its name, and all of them, in the
        order they are tried, as `patterns`."""
        self.patterns: _Patterns = patterns
        self.attention, self.windows, self.picks, self.expert_sums, self.counts, \
            self.muladds = patterns

    @contextmanager
    def own_patterns(self) -> Iterator[None]:
        """Patterns found anew while another definition's body is written here (an inlined
        callee): a backward definition shares term objects with its forward definition, and
        a match found in one (its weights read by nothing else) need not hold in the other."""
        saved = self.patterns
        self._use_patterns(self._patterns())
        try:
            yield
        finally:
            self._use_patterns(saved)

    # ---- text
    def emit(self, line: str, comment: str | None = None) -> None:
        """One line of code; its comment trails it when that fits in 100 columns, else it
        goes on its own line above (where a formatter leaves it alone). Code too long for a
        line is wrapped as a formatter wraps it."""
        indent = "    " * self.depth
        if comment:
            note = f"# {comment_text(comment)}"
            if len(indent) + len(line) + 2 + len(note) <= LINE_LENGTH:
                line = f"{line}  {note}"
            else:
                self.comment(comment)
        condition = _split_condition(line) if len(indent) + len(line) > LINE_LENGTH else None
        if condition is not None:
            # as a formatter lays out a long `if`: one clause a line, in parentheses
            keyword, joiner, clauses = condition
            self.lines.append(f"{indent}{keyword} (")
            self.lines.append(f"{indent}    {clauses[0]}")
            self.lines.extend(f"{indent}    {joiner} {clause}" for clause in clauses[1:])
            self.lines.append(f"{indent}):")
            return
        self.lines.extend(wrapped(indent, line))

    def comment(self, text: str) -> None:
        """A comment on lines of its own, wrapped within 100 columns."""
        indent = "    " * self.depth
        for part in comment_lines(comment_text(text), LINE_LENGTH - len(indent) - 2) or [""]:
            self.lines.append(f"{indent}# {part}")

    @contextmanager
    def branch(self) -> Iterator[None]:
        """The body of an `if` or `else`: one level deeper. What was checked before it holds
        inside; what is checked inside is forgotten after it (the other branch may run)."""
        checked = set(self.checked)
        self.depth += 1
        try:
            with self._region():
                yield
        finally:
            self.depth -= 1
            self.checked = checked

    @contextmanager
    def indented(self) -> Iterator[None]:
        # a loop may rebind names (the values a block carries): what was checked is forgotten
        self.checked.clear()
        self.depth += 1
        try:
            with self._region():
                yield
        finally:
            self.depth -= 1
            self.inlining.forget()  # tables written before the loop may be read no more

    @contextmanager
    def _region(self) -> Iterator[None]:
        self._region_count += 1
        self.regions.append(self._region_count)
        try:
            yield
        finally:
            self.regions.pop()

    def assign(self, hint: str | None, expr: str, comment: str | None = None,
               fallback: str = "value") -> str:
        name = self.names.fresh(hint, fallback)
        self.emit(f"{name} = {expr}", comment)
        return name

    def size(self, size: ir.SizeExpr, *, read: bool = True) -> str:
        """The code of a size; with `read=False` it is only compared at compile time (so the
        sizes it names need not be read from the inputs at run time)."""
        # The code of a size node already written, while the names it may read are the same
        # (the tables only grow): most views ask for the same few axes' sizes at every step.
        state = (len(self.symbol_code), len(self.atom_code), len(self.arguments))
        known = self._size_codes.get(id(size))
        if known is not None and known[0] is size and known[1] == state:
            if read:
                self.sizes_read.update(known[3])
            return known[2]
        reads: set[str] = set()
        code = self._size(size, reads)
        if read:
            self.sizes_read.update(reads)
        state = (len(self.symbol_code), len(self.atom_code), len(self.arguments))
        self._size_codes[id(size)] = (size, state, code, tuple(sorted(reads)))
        return code

    def _size(self, size: ir.SizeExpr, reads: set[str]) -> str:
        """`size`'s code; the keys of `symbol_code` that it reads at run time go to `reads`."""
        composite = self._input_size(size)
        if composite is not None:
            code, key = composite
            reads.add(key)
            return code
        for atom in division_atoms(self.sizes.expand(size)):
            # A division an input axis tells (`d6 = (y - 1) // 3 + 1` gives `(y - 1) // 3`).
            key = f"({ir.size_text(atom)})"
            if key not in self.atom_code:
                found = self._input_size(atom)
                if found is not None:
                    self.atom_code[key], self.atom_reads[key] = found
        for symbol in sorted(self.sizes.symbols(size)):
            if symbol not in self.symbol_code:
                self.symbol_code[symbol] = self.names.fresh(f"size_{symbol}")
        used: set[str] = set()
        code = size_expression_code(size, self.sizes, {**self.symbol_code, **self.atom_code},
                                    used)
        reads.update(self.atom_reads.get(key, key) for key in used)
        return code

    def size_product(self, sizes: Sequence[ir.SizeExpr]) -> str:
        """The code of a product of sizes (1 for none), its known factors folded into one."""
        constant = 1
        codes = []
        for size in sizes:
            value = self.sizes.value(size)
            if value is not None:
                constant *= value
            else:
                codes.append(self.size(size))
        if constant != 1 or not codes:
            codes.insert(0, str(constant))
        if len(codes) == 1:
            return codes[0]
        return " * ".join(map(size_factor, codes))

    def _input_size(self, size: ir.SizeExpr) -> tuple[str, str] | None:
        """The code of a composite symbolic size from an input axis whose size differs from it
        by a constant (`n = d * e` read as `X.shape[-1]`, `q = d - 2` as `X.shape[-1] - 2`),
        and the key of `symbol_code` it reads; or None."""
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
                axis_size = self.sizes.expand(axis.size)
                if isinstance(axis_size, ir.SizeSym):
                    # an axis of a symbol's size: the symbol's own read (`size_u`), not a second
                    key = axis_size.name
                    if key not in self.symbol_code:
                        self.symbol_code[key] = self.names.fresh(f"size_{key}")
                    code, shift = self.symbol_code[key], offset.value
                    if shift != 0:
                        code = f"({code} {'+' if shift > 0 else '-'} {abs(shift)})"
                    return code, key
                key = f"({ir.size_text(axis_size)})"
                if key not in self.symbol_code:
                    self.symbol_code[key] = self.names.fresh(f"size_{axis.name}")
                    self.composite_reads[key] = f"{value.code}.shape[{position - value.rank}]"
                    self.composite_axes[key] = axis.name
                code = self.symbol_code[key]
                shift = offset.value
                if shift != 0:
                    code = f"({code} {'+' if shift > 0 else '-'} {abs(shift)})"
                return code, key
        return None

    def view(self, value: TensorCode, rows: Sequence[Row], sizes: dict[Label, ir.SizeExpr],
             order: Sequence[Label], missing: Missing,
             leading_from: TensorCode | None = None) -> View:
        return view_through(
            value.code, rows, [axis.size for axis in value.array.shape.axes], sizes, order,
            missing, self.size, batched=value.batched,
            leading_from=(leading_from.code, leading_from.rank) if leading_from else None)

    def relayout(self, value: TensorCode, array: ir.ArrayType) -> TensorCode:
        """The same array with its axes in `array`'s memory order (matched by name)."""
        if value.names == array.names:
            return TensorCode(value.code, array, value.batched)
        if sorted(value.names) != sorted(array.names):
            raise CompileError(f"cannot align {value.array.text()} with {array.text()}")
        rows = [Row(((target_label(n), 1),)) for n in value.names]
        sizes = {target_label(a.name): a.size for a in value.array.shape.axes}
        view = self.view(value, rows, sizes, [target_label(n) for n in array.names], "drop")
        name = self.assign(None, view.expr, f"{' '.join(value.names)} -> "
                           f"{' '.join(array.names)}", fallback="aligned")
        if value.code in self.overlapping:
            self.overlapping.add(name)
        return TensorCode(name, array, value.batched)

    # ---- terms
    def term(self, term: ir.Term, inputs: list[TensorCode]) -> list[TensorCode]:
        if len(inputs) != len(term.dom):
            raise CompileError(f"{term.kind} expects {len(term.dom)} inputs, got {len(inputs)}")
        if self.inlining.walk is None:  # (most terms: no callee's body being walked)
            return self._term(term, inputs)
        # a value an inlined callee computes from sizes alone, written once for its calls
        shared = self.inlining.shared(term, inputs)
        if shared is not None:
            return shared
        outputs = self._term(term, inputs)
        self.inlining.record(term, outputs)
        return outputs

    def _term(self, term: ir.Term, inputs: list[TensorCode]) -> list[TensorCode]:
        match term:
            case ir.Identity():
                return list(inputs)
            case ir.Rearrangement(mapping=mapping):
                return [inputs[i] for i in mapping]
            case ir.Reindexing():
                self.check_bounds(term.eta, term.source or inputs[0].code, term.span)
                fused = self.windows.lower(term, inputs)
                if fused is not None:
                    return fused
                return [self.reindexing(term, inputs[0])]
            case ir.Broadcasted():
                for port in (*term.inputs, *term.params):
                    self.check_bounds(port.reindexing, port.name or "an operand", term.span)
                return self.broadcasted(term, inputs)
            case ir.Composed(terms=terms):
                flow = TermFlow.of(term)  # one walk for every pattern's search
                for pattern in self.patterns:
                    pattern.plan(term, flow)
                values = list(inputs)
                outer_flow, self.flow = self.flow, flow
                try:
                    for part in terms:
                        values = self.term(part, values)
                finally:
                    self.flow = outer_flow
                return values
            case ir.Product(terms=terms):
                outputs: list[TensorCode] = []
                start = 0
                for part in terms:
                    outputs.extend(self.term(part, inputs[start:start + len(part.dom)]))
                    start += len(part.dom)
                return outputs
            case ir.Block():
                return self.block(term, inputs)
            case ir.Scan():
                return self.scan(term, inputs)
            case ir.Machine():
                return lower_machine(self, term, inputs)
        assert_never(term)

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
        if _reads_whole_axes(eta):
            return  # the rearrangement of almost every port: nothing to prove
        domain = [self.sizes.polynomial(a.size) for a in eta.domain.axes]
        codomain = [self.sizes.polynomial(a.size) for a in eta.codomain.axes]
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
                lines = [f"        if {condition}:",
                         *wrapped("            ", f"raise ValueError(f{literal})")]
                if not any(self.checks[i:i + len(lines)] == lines
                           for i in range(len(self.checks))):
                    self.checks.extend(lines)

    def reads_symbol(self, symbol: str) -> bool:
        """Whether the size `symbol` can be read from the shape of an input."""
        return _find_symbol(symbol, self.arguments, self.sizes) is not None

    def source_note(self, span: ir.Span | None) -> str:
        return f" (line {span.line})" if span is not None else ""

    def reindexing(self, term: ir.Reindexing, value: TensorCode) -> TensorCode:
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
            return TensorCode(value.code, output, value.batched)
        comment = f"{term.source or value.code}[{eta.text()}]" + self.source_note(term.span)
        name = self.assign(term.name, view.expr, comment, fallback="view")
        if value.code in self.overlapping or any(len(row.terms) > 1 for row in rows):
            self.overlapping.add(name)  # a window reads an entry at several places
        return TensorCode(name, output, value.batched)

    # ---- blocks and scans
    def block(self, term: ir.Block, inputs: list[TensorCode]) -> list[TensorCode]:
        if term.copy_of is not None:
            return self._block_copy(term, term.copy_of, inputs)
        if term.repeat <= 1:
            return self.term(term.body, inputs)
        if [a.names for a in term.body.dom] != [a.names for a in term.body.cod]:
            raise CompileError(f"block {term.title!r} repeats a body whose outputs "
                               f"{[a.text() for a in term.body.cod]} differ from its inputs")
        # Fresh names: the loop rebinds them, and the values they start from may be read again
        # after the block (a copy that passes it by).
        carried = [TensorCode(self.assign(base_name(v.code), v.code, fallback="carried"),
                              v.array, v.batched) for v in inputs]
        title = comment_text(term.title)
        if term.shared:
            self.emit(f"for _ in range({term.repeat}):",
                      f"block {title!r} x{term.repeat}, shared weights")
            with self.indented():
                self._block_iteration(term, carried)
            return carried
        attribute, block_spec = self._copies(term.title, term.repeat)
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

    def _copies(self, title: str, repeat: int) -> tuple[str, ModuleSpec]:
        """A new `nn.ModuleList` of `repeat` copies of a new block class, named after the
        block's title: its attribute and the class."""
        spec = self.scope.spec
        block_spec = ModuleSpec(
            class_name=self.compiler.classes.fresh(
                camel_case(f"{spec.class_name} {title}", "Block")),
            doc=f"One copy of block {title!r}.", declared=spec.declared)
        spec.blocks.append(block_spec)
        attribute = spec.new_attribute(snake_case(title))
        spec.children.append(ChildEntry(attribute, block_spec.class_name, repeat,
                                        f"block {comment_text(title)!r} x{repeat}",
                                        copies_path=snake_case(title)))
        return attribute, block_spec

    def _block_copy(self, term: ir.Block, copy_of: ir.CopyOf,
                    inputs: list[TensorCode]) -> list[TensorCode]:
        """One copy of a repeated block, run on its own (the backward definition runs them
        one by one): its body reads copy `index` of the block's `nn.ModuleList`, which every
        block that is a copy of the same block shares."""
        spec = self.scope.spec
        key = (copy_of.title, copy_of.copies)
        found = spec.copies_of.get(key)
        if found is None:
            found = spec.copies_of[key] = self._copies(copy_of.title, copy_of.copies)
        attribute, block_spec = found
        owner = self.assign("layer", f"{attribute_code(self.scope.owner, attribute)}"
                            f"[{copy_of.index}]",
                            f"block {comment_text(copy_of.title)!r}, copy {copy_of.index} of "
                            f"{copy_of.copies}")
        outer = self.scope
        self.scope = Scope(block_spec, owner)
        try:
            return self.term(term.body, inputs)
        finally:
            self.scope = outer

    def _block_iteration(self, term: ir.Block, carried: list[TensorCode]) -> None:
        outputs = self.term(term.body, list(carried))
        self.write_back(carried, outputs)

    def write_back(self, variables: Sequence[TensorCode], results: Sequence[TensorCode]) -> None:
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

    def scan(self, term: ir.Scan, inputs: list[TensorCode]) -> list[TensorCode]:
        return lower_scan(self, term, inputs)

    # ---- broadcasted operations: each lowered by its operator's declaration
    def broadcasted(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode]:
        for pattern in self.patterns:
            fused = pattern.lower(term, inputs)
            if fused is not None:
                return fused
        fused = self.inlining.lower(term, inputs)
        if fused is not None:
            return fused
        return declaration(term.op).lower(self, term, term.op, inputs)

    # ---- the services a lowering uses (`ncd.ops.lowering.Emitter`)
    def error(self, message: str) -> CompileError:
        return CompileError(message)

    def first_check(self, key: str) -> bool:
        if key in self.checked:  # made before, at the top level: it holds here too
            return False
        if self.depth == 2:  # inside a loop or a branch, a check may not run before a later one
            self.checked.add(key)
        return True

    def same_size(self, first: ir.SizeExpr, second: ir.SizeExpr) -> bool:
        try:
            return self.sizes.polynomial(first) == self.sizes.polynomial(second)
        except SizeLimit:
            return False

    def statement(self, line: str, comment: str | None = None) -> None:
        self.emit(line, comment)

    def too_long(self, line: str) -> bool:
        return len("    " * self.depth) + len(line) > LINE_LENGTH

    def fresh(self, hint: str) -> str:
        return self.names.fresh(hint)

    def functional_call(self, name: str) -> str:
        self.functional = True
        return f"F.{name}"

    def output_labels(self, port: ir.Port) -> list[Label]:
        return output_labels(port)

    def plain_labels(self, value: TensorCode, port: ir.Port) -> list[Label] | None:
        rows = port_rows(value, port)
        return [row.terms[0][0] for row in rows] if all(r.is_plain for r in rows) else None

    def sizes_of(self, term: ir.Broadcasted, ports: Sequence[ir.Port]) -> dict[Label, ir.SizeExpr]:
        sizes: dict[Label, ir.SizeExpr] = {
            degree_label(i): axis.size for i, axis in enumerate(term.degree.axes)}
        for port in ports:
            for axis in port.array.shape.axes:
                if axis.name in port.targets:
                    sizes[target_label(axis.name)] = axis.size
        return sizes

    def single(self, term: ir.Broadcasted, inputs: Sequence[TensorCode],
               order: Sequence[Label] | None = None) -> tuple[str, list[Label]]:
        labels = list(order) if order is not None else output_labels(term.outputs[0])
        return self.normalized(term, inputs[0], term.inputs[0], labels, "expand"), labels

    def normalized(self, term: ir.Broadcasted, value: TensorCode, port: ir.Port,
                   order: Sequence[Label], missing: LoweringMissing,
                   leading_from: TensorCode | None = None) -> str:
        rows = port_rows(value, port)
        return self.view(value, rows, self.sizes_of(term, [port]), order, missing,
                         leading_from).expr

    def contraction(self, term: ir.Broadcasted, operands: Sequence[tuple[TensorCode, ir.Port]],
                    relabel: Sequence[Mapping[Label, Label]] | None = None) -> str:
        return contraction(self, term, operands, relabel)

    def _own_parameter(self, entry: ParamEntry) -> str:
        """The local bound to a parameter of `self` at the top of `forward`."""
        bound = self.own_parameters.get(entry.attribute)
        if bound is None:
            bound = self.own_parameters[entry.attribute] = (
                self.names.fresh(entry.attribute, "weight"), entry)
        return bound[0]

    def parameters(self, term: ir.Broadcasted) -> list[TensorCode]:
        roles = declaration(term.op).roles(term.op, term, self.sizes.value)
        if len(roles) != len(term.params):
            raise CompileError(f"{term.op.kind} reads {len(term.params)} parameters, its "
                               f"declaration gives roles to {len(roles)}")
        values = []
        for port, role in zip(term.params, roles, strict=True):
            if port.name is None:
                raise CompileError("a parameter port has no name")
            entry = self.scope.spec.param(port.name, port.array, role)
            values.append(TensorCode(self.scope.read(entry), entry.parameter.array,
                                     batched=False))
        return values

    def submodule(self, op: ir.CallOp, copies: ir.SizeExpr | None = None) -> Submodule:
        callee = self.compiler.definition(op.definition)
        info = self.compiler.info(op.definition)
        repeat = None
        comment = f"call site {op.instance} of {op.definition}"
        if copies is not None:
            repeat = self.sizes.value(copies)
            if repeat is None:
                raise CompileError(f"call site {op.instance} has parameters for each index of "
                                   f"`{op.each}`, whose size is not fixed")
            comment += f", its own parameters for each {op.each}"
        attribute = self.scope.spec.child(op.instance, info.class_name, comment, repeat)
        return Submodule(attribute_code(self.scope.owner, attribute), callee,
                         info.outputs_batched)

    def finish(self, term: ir.Broadcasted, expr: str, labels: Sequence[Label], index: int = 0,
               comment: str = "", batched: bool = True, fallback: str = "value") -> TensorCode:
        port = term.outputs[index]
        expr = permute_text(expr, labels, output_labels(port))
        name = self.assign(port.name, expr, comment + self.source_note(term.span),
                           fallback=fallback)
        return TensorCode(name, term.cod[index], batched)

    def finish_choice(self, term: ir.Broadcasted, choices: Sequence[tuple[str, str]],
                      otherwise: str, labels: Sequence[Label], index: int = 0,
                      comment: str = "", batched: bool = True,
                      fallback: str = "value") -> TensorCode:
        port = term.outputs[index]
        order = output_labels(port)
        name = self.names.fresh(port.name, fallback)
        lines = choice_lines("    " * self.depth, name,
                             [(permute_text(value, labels, order), test)
                              for value, test in choices],
                             permute_text(otherwise, labels, order))
        comment += self.source_note(term.span)
        if len(lines) == 1:
            self.emit(lines[0].lstrip(" "), comment)
        else:
            if comment:
                self.comment(comment)
            self.lines.extend(lines)
        return TensorCode(name, term.cod[index], batched)

    def finish_either(self, term: ir.Broadcasted, test: str, fast: Callable[[], str],
                      general: Callable[[], str], labels: Sequence[Label], index: int = 0,
                      comment: str = "", batched: bool = True,
                      fallback: str = "value") -> TensorCode:
        port = term.outputs[index]
        order = output_labels(port)
        name = self.assign_either(
            port.name, test, lambda: permute_text(fast(), labels, order),
            lambda: permute_text(general(), labels, order), comment + self.source_note(term.span),
            fallback)
        return TensorCode(name, term.cod[index], batched)

    def assign_either(self, hint: str | None, test: str, fast: Callable[[], str],
                      general: Callable[[], str], comment: str | None = None,
                      fallback: str = "value") -> str:
        """`name = fast()` where `test` holds, else `name = general()` (each written inside
        its branch, with any lines it emits): the name."""
        name = self.names.fresh(hint, fallback)
        self.emit(f"if {test}:", comment)
        for number, write in enumerate((fast, general)):
            if number:
                self.emit("else:")
            with self.branch():
                self.emit(f"{name} = {write()}")
        return name

    def permute(self, expr: str, labels: Sequence[Label], order: Sequence[Label]) -> str:
        return permute_text(expr, labels, order)

    def tuple_text(self, items: Sequence[str]) -> str:
        return tuple_text(items)

    def anchor(self) -> tuple[str, str]:
        arguments = self.anchors if self.anchors is not None else self.arguments
        reals = [v for v in arguments if v.array.dtype.kind == "R"]
        if reals:
            return f"{reals[0].code}.device", f"{reals[0].code}.dtype"
        if arguments:
            return f"{arguments[0].code}.device", "torch.get_default_dtype()"
        return "None", "torch.get_default_dtype()"

    def leading_shape(self, value: TensorCode) -> str:
        return leading_shape(value.code, value.rank)


# `_reads_whole_axes` of each reindexing asked about, by its id (the entry holds it, so the id is
# not reused while it is a key): the ports of a program share a few reindexings, and every
# port of every operation is checked. Bounded, for a long-lived process.
_WHOLE_AXES: dict[int, tuple[ir.StrideMorphism, bool]] = {}
_WHOLE_AXES_LIMIT = 4096


def _reads_whole_axes(eta: ir.StrideMorphism) -> bool:
    known = _WHOLE_AXES.get(id(eta))
    if known is not None and known[0] is eta:
        return known[1]
    if len(_WHOLE_AXES) >= _WHOLE_AXES_LIMIT:
        _WHOLE_AXES.clear()
    whole = _WHOLE_AXES[id(eta)] = (eta, _reads_each_axis_whole(eta))
    return whole[1]


def _reads_each_axis_whole(eta: ir.StrideMorphism) -> bool:
    """Whether every row of `eta` reads one domain axis whole, as it is (no offset, one
    coefficient 1, an axis of the very same size node): the cases `_check_bounds` skips row
    by row, told without computing any size."""
    domain = eta.domain.axes
    for row, offset, axis in zip(eta.matrix, eta.offset, eta.codomain.axes, strict=True):
        if offset != 0 or sum(row) != 1 or row.count(1) != 1 or row.count(0) != len(row) - 1:
            return False
        if domain[row.index(1)].size is not axis.size:
            return False
    return True


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



def unbatched_checks(definition: ir.Definition, arguments: list[TensorCode]) -> list[str]:
    """For a definition that takes no leading dims (`Definition.leading_dims`): a
    `ValueError` when an input has more dims than its declared axes, where the module would
    otherwise compute something else than its forward module does. Not while a graph is
    being traced symbolically (`torch.fx`), whose shapes are not numbers."""
    if definition.leading_dims or not arguments:
        return []
    lines = ["        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():"]
    for value in arguments:
        message = f"input {value.code} has leading batch dims, which batchnorm would pool"
        lines.append(f"            if {value.code}.dim() != {value.rank}:")
        lines.extend(wrapped("                ", f"raise ValueError({string_literal(message)})"))
    return lines


def raise_value_error(indent: str, parts: Sequence[tuple[str, bool]],
                      suffix: str = "") -> list[str]:
    """`raise ValueError(message){suffix}` at `indent`, laid out as a formatter lays it out:
    on one line; else the message on a line of its own; else its `parts` (text, whether an
    f-string) one string per line."""
    literal = ("f" if any(f for _, f in parts) else "") + string_literal(
        "".join(text for text, _ in parts))
    line = f"{indent}raise ValueError({literal}){suffix}"
    if len(line) <= LINE_LENGTH:
        return [line]
    argument = indent + "    "
    message = [f"{argument}{literal}"]
    if len(message[0]) > LINE_LENGTH:
        message = [f"{argument}{'f' if f else ''}{string_literal(text)}" for text, f in parts]
    return [f"{indent}raise ValueError(", *message, f"{indent}){suffix}"]


def shape_checks(emitter: ForwardEmitter, arguments: list[TensorCode],
                 indent: str) -> list[str]:
    """A check that an input axis whose size is `a * n + b` with `a > 1` (`axis y = 2 * yh`)
    has a size of that form, for a whole `n >= 1`: a `ValueError` naming the input and the
    axis, where without it an odd image would be read as `(y - b) // a` and fail later in
    torch (or silently drop a row)."""
    lines = []
    for value in arguments:
        for position, axis in enumerate(value.array.shape.axes):
            symbols = emitter.sizes.symbols(axis.size)
            if len(symbols) != 1:
                continue
            (symbol,) = symbols
            solution = emitter.sizes.solve(axis.size, symbol)
            if solution is None or solution[0] == 1:
                continue
            a, b = solution
            shape = f"{value.code}.shape[{position - value.rank}]"
            condition = f"{shape} < {a + b} or ({shape} - {b}) % {a}" if b else \
                f"{shape} < {a} or {shape} % {a}"
            form = f"{a}*{symbol}" + (f" {'+' if b > 0 else '-'} {abs(b)}" if b else "")
            written = ir.size_text(axis.size)
            if written.replace(" ", "") != form.replace(" ", ""):
                form = f"{written} = {form}"
            found = f"input {value.code}: axis {axis.name} has {{{shape}}} entries, "
            needed = f"but its size is {form} for a whole {symbol} >= 1"
            lines.append(f"{indent}if {condition}:")
            lines += raise_value_error(indent + "    ", [(found, True), (needed, False)])
    return lines


def input_reads(emitter: ForwardEmitter, definition: ir.Definition,
                arguments: list[TensorCode]) -> list[str]:
    """The first lines of a forward: the shape checks and the size reads
    (`size_x = X.shape[-2]`). Where they read an input's shape, in a `try` whose
    `except IndexError` raises a `ValueError` that names the input with fewer dims than its
    declared axes, and its shape: a missing dim would otherwise end in a bare `IndexError:
    tuple index out of range`. A `try` costs nothing until something raises, and the
    proxies of `torch.fx` never raise there."""
    reads = symbol_reads(emitter, definition, arguments)
    checks = shape_checks(emitter, arguments, "            ")  # inside the `try`
    read = [value for value in arguments
            if any(re.search(rf"(?<![\w.]){re.escape(value.code)}\.shape\[", line)
                   for line in checks + reads)]
    if not read:
        return reads  # and no checks: each reads an input's shape
    guarded = ["        try:", *checks, *("    " + line for line in reads),
               "        except IndexError:"]
    for value in read:
        axes = "axis" if value.rank == 1 else "axes"
        found = f"input {value.code}: {value.array.text()} has {value.rank} {axes}, "
        needed = f"but the tensor has shape {{tuple({value.code}.shape)}}"
        guarded.append(f"            if {value.code}.dim() < {value.rank}:")
        guarded += raise_value_error("                ", [(found, False), (needed, True)],
                                     " from None")
    guarded.append("            raise")
    return guarded


def symbol_reads(emitter: ForwardEmitter, definition: ir.Definition,
                  arguments: list[TensorCode]) -> list[str]:
    """`size_x = X.shape[-2]` for every symbolic size the forward uses."""
    lines = []
    for symbol, code in sorted(emitter.symbol_code.items()):
        if symbol not in emitter.sizes_read:
            continue  # only compared at compile time, never computed with
        source = emitter.composite_reads.get(symbol) or _find_symbol(symbol, arguments,
                                                                     emitter.sizes)
        if source is None:
            raise UnknownSize(definition.name, emitter.composite_axes.get(symbol, symbol))
        shown = emitter.composite_axes.get(symbol, symbol)
        lines.append(f"        {code} = {source}  # |{shown}|")
    return lines


def _find_symbol(symbol: str, arguments: list[TensorCode], sizes: ProgramSizes) -> str | None:
    """The code that reads `symbol` from an input axis of size `symbol`, or failing that of
    size `a * symbol + b` (solved exactly: `(shape - b) // a`); None when no axis tells it."""
    for value in arguments:
        for position, axis in enumerate(value.array.shape.axes):
            if sizes.expand(axis.size) == ir.SizeSym(name=symbol):
                return f"{value.code}.shape[{position - value.rank}]"
    for value in arguments:
        for position, axis in enumerate(value.array.shape.axes):
            solution = sizes.solve(axis.size, symbol)
            if solution is None:
                continue
            a, b = solution
            shape = f"{value.code}.shape[{position - value.rank}]"
            text = f"({shape} - {b})" if b else shape
            return f"{text} // {a}" if a != 1 else text
    return None


def _split_condition(line: str) -> tuple[str, str, list[str]] | None:
    """`if a and b and c:` as its keyword, its operator and its clauses, when the condition
    joins its clauses with one of `and`, `or` outside any brackets; else None."""
    keyword = next((k for k in ("if", "elif") if line.startswith(f"{k} ")), None)
    if keyword is None or not line.endswith(":") or "#" in line or "'" in line or '"' in line:
        return None
    condition = line[len(keyword) + 1:-1]
    for joiner in ("or", "and"):
        clauses, depth, start = [], 0, 0
        for position, character in enumerate(condition):
            depth += (character in "([{") - (character in ")]}")
            if depth == 0 and condition.startswith(f" {joiner} ", position):
                clauses.append(condition[start:position])
                start = position + len(joiner) + 2
        clauses.append(condition[start:])
        if len(clauses) > 1:
            return keyword, joiner, clauses
    return None
