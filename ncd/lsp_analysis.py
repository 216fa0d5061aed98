"""What the language server knows about one document: its diagnostics, and the names in it.

`analyse` loads the text of an editor buffer as `ncd check` loads a file (imports resolve
relative to the document's folder; the buffer, not the disk, is the document) and keeps what
an editor asks about: the axes and their sizes, the definitions visible in the document, and
for each checked definition the type and binding place of every array, input and parameter.
The queries (`hover`, `definition`, `completions`, `preview`) take 1-based lines and columns
counted in characters, as ncd's spans are; `ncd.lsp` converts to and from the protocol.

Nothing here imports pygls: the analysis is plain Python, usable and testable on its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ncd import elaborate, ir
from ncd import loader as loading
from ncd import syntax as s
from ncd.context import AxisInfo, Context, Value, paused_collection
from ncd.diagnostics import Diagnostic, DiagnosticSink

UNTITLED = "<untitled>"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Role = Literal["axis", "axis-decl", "index", "var", "target", "input", "output", "param-decl",
               "callee", "def-decl", "import"]
"""What a name is where it is written: an axis (in a type, an arrow, an equation's indices),
the name of an axis declaration, a bracket item (an axis, or an array in a tensor equation),
an array read, a name bound by a statement, a signature's input or output, a parameter's
declaration, a called name, a definition's own name, or a name a `from ... import` lists."""


@dataclass(frozen=True)
class Occurrence:
    """A name written in the document, with its role and the definition it is in."""

    name: str
    span: ir.Span
    role: Role
    item: s.Definition | s.PointFree | None


@dataclass(frozen=True)
class Binding:
    """An array (or a parameter) of a definition, with its type and where it is bound."""

    name: str
    array: ir.ArrayType
    span: ir.Span | None
    kind: Literal["array", "parameter", "buffer"]


@dataclass
class DefinitionFacts:
    """What checking recorded for one definition of the program."""

    item: s.Definition
    bindings: list[Binding] = field(default_factory=list)  # in the order they are bound
    reads: dict[tuple[int, int], Binding] = field(default_factory=dict)  # by (line, column)
    params: dict[str, ir.Parameter] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Where a name is defined: a file (None: the document itself) and a span in it."""

    path: Path | None
    span: ir.Span


CompletionKind = Literal["axis", "operator", "definition", "keyword", "type", "variable"]


@dataclass(frozen=True)
class Completion:
    label: str
    kind: CompletionKind
    detail: str


@dataclass
class Analysis:
    """The document's text, diagnostics and names; `program` when it checks."""

    name: str  # the file name the spans of the document carry
    path: Path | None
    text: str
    diagnostics: list[Diagnostic]
    sources: dict[str, str]
    module: s.Module | None = None
    program: ir.Program | None = None
    axes: dict[str, AxisInfo] = field(default_factory=dict)
    # Definitions the document sees by name: its own and those it imports, with their files.
    visible: dict[str, tuple[str, s.Definition | s.PointFree]] = field(default_factory=dict)
    facts: list[DefinitionFacts] = field(default_factory=list)
    occurrences: list[Occurrence] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # file name of a span -> its file

    @property
    def parsed(self) -> bool:
        return self.module is not None


# ---------------------------------------------------------------------------------------
# loading, with a record of the arrays each definition binds
# ---------------------------------------------------------------------------------------


class _Scope(dict[str, Value | None]):
    """A definition's scope that tells its recorder of each array bound in it."""

    def __init__(self, recorder: _Recorder, initial: dict[str, Value | None]):
        super().__init__(initial)
        self.recorder = recorder

    def __setitem__(self, name: str, value: Value | None) -> None:
        super().__setitem__(name, value)
        if value is not None:
            self.recorder.record_binding(name, value)


class _Recorder(elaborate.DefinitionBuilder):
    """A definition builder that records the arrays bound, the names read and the parameters
    used, for hover and go-to-definition. It checks exactly as the builder it extends."""

    log: list[_Recorder]  # every recorder made while loading one document (set per load)

    def __init__(self, ctx: Context, name: str):
        self.bindings: list[Binding] = []
        self.reads: dict[tuple[str, int, int], Binding] = {}
        super().__init__(ctx, name)
        self.log.append(self)

    @property
    def scope(self) -> dict[str, Value | None]:
        return self._scope

    @scope.setter
    def scope(self, value: dict[str, Value | None]) -> None:
        # A repeated block puts a copy of the scope back in place: it is watched too.
        self._scope = value if isinstance(value, _Scope) else _Scope(self, value)

    def record_binding(self, name: str, value: Value) -> None:
        # `Y = X` names an array that has a name: Y is bound where the statement is, which
        # only the syntax tree tells (the array keeps the span of X).
        span = value.span if value.name == name else None
        self.bindings.append(Binding(name, value.array, span, "array"))

    def lookup(self, name: str, span: ir.Span) -> Value:
        value = super().lookup(name, span)
        self.reads[(span.file, span.line, span.column)] = Binding(
            name, value.array, value.span if value.name == name else None, "array")
        return value

    def parameter(self, ident: s.Ident, expected: ir.ArrayType | None,
                  what: str) -> ir.Parameter:
        parameter = super().parameter(ident, expected, what)
        self.reads[(ident.span.file, ident.span.line, ident.span.column)] = Binding(
            parameter.name, parameter.array, parameter.span,
            "buffer" if parameter.buffer else "parameter")
        return parameter

    def buffer(self, ident: s.Ident, expected: ir.ArrayType, init: str,
               what: str) -> ir.Parameter:
        buffer = super().buffer(ident, expected, init, what)
        self.reads[(ident.span.file, ident.span.line, ident.span.column)] = Binding(
            buffer.name, buffer.array, buffer.span, "buffer")
        return buffer


@contextmanager
def _recording(log: list[_Recorder]) -> Iterator[None]:
    """Elaboration builds its definitions with a `_Recorder` (logging to `log`) inside.

    The elaborator makes its builders itself (`elaborate_definition`), so the class it uses is
    swapped for the time of one load; the server loads one document at a time."""
    class Recorder(_Recorder):
        pass

    Recorder.log = log
    original = elaborate.DefinitionBuilder
    elaborate.DefinitionBuilder = Recorder  # type: ignore[misc]
    try:
        yield
    finally:
        elaborate.DefinitionBuilder = original  # type: ignore[misc]


def _display(path: Path) -> str:
    """The file name spans carry for `path`, as `ncd check` shows it."""
    return loading._display(path)


def analyse(text: str, path: Path | None,
            include: Sequence[str | os.PathLike[str]] | None = None) -> Analysis:
    """Check `text`, the content of the document at `path` (None: not saved yet, when its
    imports resolve from the working folder). Imports are found as `ncd check` finds them:
    beside the file, then in the folders of `include` and `NCD_PATH`, then in the standard
    library."""
    if path is not None:
        resolved = path.resolve()
        name, directory, key = _display(resolved), resolved.parent, str(resolved)
    else:
        directory = Path.cwd().resolve()
        name, key = UNTITLED, UNTITLED
    loader = loading.Loader(directory, {}, include=loading.search_path(include))
    log: list[_Recorder] = []
    with _recording(log), paused_collection():
        loader.load_module_text(text, name, directory, key)
        program = loading._check(loader, name, {})
    analysis = Analysis(name=name, path=path, text=text,
                        diagnostics=sorted(loader.sink.diagnostics, key=Diagnostic.sort_key),
                        sources=dict(loader.sources), program=program)
    analysis.module = loader.modules.get(key)
    for module_key, module in loader.modules.items():
        if module_key != UNTITLED:
            analysis.paths[module.path] = Path(module_key)
    declared = [item for module in loader.order for item in module.items
                if isinstance(item, s.AxisDecl)]
    axes = Context(DiagnosticSink())
    elaborate.declare_axes(axes, declared, {})
    analysis.axes = dict(axes.axes)
    if analysis.module is not None:
        analysis.visible = _visible(loader, key)
        analysis.occurrences = list(_occurrences(analysis.module))
    analysis.facts = _facts(loader, log)
    return analysis


def _visible(loader: loading.Loader, key: str) -> dict[str, tuple[str, s.Definition | s.PointFree]]:
    """The definitions module `key` sees: what it imports, then its own."""
    seen: set[str] = set()

    def exports(module_key: str) -> dict[str, tuple[str, s.Definition | s.PointFree]]:
        found: dict[str, tuple[str, s.Definition | s.PointFree]] = {}
        if module_key in seen or module_key not in loader.modules:
            return found
        seen.add(module_key)
        module = loader.modules[module_key]
        for index, item in enumerate(module.items):
            if isinstance(item, s.Import) and (module_key, index) in loader.import_targets:
                available = exports(loader.import_targets[(module_key, index)])
                wanted = available if item.names is None else {
                    ident.name: available[ident.name] for ident in item.names
                    if ident.name in available}
                found.update(wanted)
        for item in module.items:
            if isinstance(item, (s.Definition, s.PointFree)):
                found.setdefault(item.name.name, (module.path, item))
        seen.discard(module_key)
        return found

    return exports(key)


def _facts(loader: loading.Loader, log: list[_Recorder]) -> list[DefinitionFacts]:
    """Each recorder paired with the definition it elaborated: the one whose text holds the
    first thing it bound (an input, or the first statement's result)."""
    items = [item for module in loader.order for item in module.items
             if isinstance(item, s.Definition)]
    facts: list[DefinitionFacts] = []
    for recorder in log:
        first = next((b.span for b in recorder.bindings if b.span is not None), None)
        if first is None:
            first = next((p.span for p in recorder.params.values() if p.span is not None), None)
        item = next((i for i in items if i.name.name == recorder.name and first is not None
                     and _within(first, i.span)), None)
        if item is None:
            continue
        reads = {(line, column): binding for (file, line, column), binding
                 in recorder.reads.items() if file == item.span.file}
        facts.append(DefinitionFacts(item, list(recorder.bindings), reads,
                                     dict(recorder.params)))
    return facts


def _within(inner: ir.Span, outer: ir.Span) -> bool:
    return inner.file == outer.file and \
        (outer.line, outer.column) <= (inner.line, inner.column) and \
        (inner.end_line, inner.end_column) <= (outer.end_line, outer.end_column)


# ---------------------------------------------------------------------------------------
# the names written in the document
# ---------------------------------------------------------------------------------------


def _occurrences(module: s.Module) -> Iterator[Occurrence]:
    for item in module.items:
        match item:
            case s.Import(names=names):
                for ident in names or ():
                    yield Occurrence(ident.name, ident.span, "import", None)
            case s.AxisDecl(name=ident, size=size):
                yield Occurrence(ident.name, ident.span, "axis-decl", None)
                if size is not None:
                    yield from _expr(size, None, "axis")
            case s.Definition():
                yield Occurrence(item.name.name, item.name.span, "def-decl", item)
                for signature_input in item.inputs:
                    ident = signature_input.name
                    yield Occurrence(ident.name, ident.span, "input", item)
                    yield from _type(signature_input.type, item)
                for output in item.outputs:
                    if output.name is not None:
                        yield Occurrence(output.name.name, output.name.span, "output", item)
                    yield from _type(output.type, item)
                yield from _statements(item.body, item)
            case s.PointFree():
                yield Occurrence(item.name.name, item.name.span, "def-decl", item)
                yield from _pointfree(item.expr, item)
            case s.Training(fields=fields):
                # The model is a definition (go to it, hover it); a loss's class axis an axis.
                for train_field in fields:
                    if train_field.key.name == "model":
                        yield Occurrence(train_field.value.name, train_field.value.span,
                                         "callee", None)
                    for ident in train_field.axes or ():
                        yield Occurrence(ident.name, ident.span, "axis", None)


def _type(type_expr: s.TypeExpr, item: s.Definition) -> Iterator[Occurrence]:
    if type_expr.bound is not None:
        yield from _expr(type_expr.bound, item, "axis")
    for ident in type_expr.axes:
        yield Occurrence(ident.name, ident.span, "axis", item)


def _pointfree(expr: s.PfExpr, item: s.PointFree) -> Iterator[Occurrence]:
    match expr:
        case s.PfName(name=ident):
            yield Occurrence(ident.name, ident.span, "callee", item)
        case s.PfCompose(terms=terms) | s.PfTensor(terms=terms):
            for term in terms:
                yield from _pointfree(term, item)


def _statements(body: tuple[s.Statement, ...], item: s.Definition) -> Iterator[Occurrence]:
    for stmt in body:
        match stmt:
            case s.Assign(targets=targets, value=value):
                for ident in targets:
                    yield Occurrence(ident.name, ident.span, "target", item)
                yield from _expr(value, item, "var")
            case s.Equation(target=target, indices=indices, summed=summed, value=value):
                yield Occurrence(target.name, target.span, "target", item)
                for ident in (*indices, *(summed or ())):
                    yield Occurrence(ident.name, ident.span, "axis", item)
                yield from _expr(value, item, "index")
            case s.Return(values=values):
                for value in values:
                    yield from _expr(value, item, "var")
            case s.ParamDecl(name=ident, type=type_expr, init=init):
                yield Occurrence(ident.name, ident.span, "param-decl", item)
                yield from _type(type_expr, item)
                for arg in init.args if init is not None else ():
                    yield from _expr(arg, item, "axis")
            case s.BlockStmt(body=inner):
                yield from _statements(inner, item)


def _expr(expr: s.Expr, item: s.Definition | s.PointFree | None,
          var_role: Role) -> Iterator[Occurrence]:
    """The names of an expression; a plain name there has the role `var_role`."""
    match expr:
        case s.Var(name=name, span=span):
            yield Occurrence(name, span, var_role, item)
        case s.BinOp(left=left, right=right):
            yield from _expr(left, item, var_role)
            yield from _expr(right, item, var_role)
        case s.Neg(operand=operand):
            yield from _expr(operand, item, var_role)
        case s.Call(name=ident, items=items, args=args):
            yield Occurrence(ident.name, ident.span, "callee", item)
            yield from _bracket_items(items or (), item)
            for arg in args:
                yield from _expr(arg, item, var_role)
        case s.Indexed(name=ident, items=items):
            yield Occurrence(ident.name, ident.span, "var", item)
            yield from _bracket_items(items, item)


def _bracket_items(items: tuple[s.BracketItem, ...],
                   item: s.Definition | s.PointFree | None) -> Iterator[Occurrence]:
    for bracket_item in items:
        match bracket_item:
            case s.Arrow(left=left, right=right):
                for ident in (*left, *right):
                    yield Occurrence(ident.name, ident.span, "axis", item)
            case s.Comparison(left=left, right=right):
                yield from _expr(left, item, "index")
                yield from _expr(right, item, "index")
            case s.Keyword(value=value):
                yield from _expr(value, item, "index")
            case s.Each(axis=axis):
                yield Occurrence(axis.name, axis.span, "axis", item)
            case _:
                yield from _expr(bracket_item, item, "index")


# ---------------------------------------------------------------------------------------
# queries
# ---------------------------------------------------------------------------------------


def occurrence_at(analysis: Analysis, line: int, column: int) -> Occurrence | None:
    """The name at (or just before) a 1-based position of the document."""
    best: Occurrence | None = None
    for occurrence in analysis.occurrences:
        span = occurrence.span
        if span.line == line and span.column <= column <= span.end_column:
            # The cursor right after a name still means the name, unless another starts there.
            if best is None or span.column == column or best.span.end_column == column:
                best = occurrence
    return best


def word_at(text: str, line: int, column: int) -> str | None:
    """The word of the text at a 1-based position (for text that does not parse)."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    for match in _NAME.finditer(lines[line - 1]):
        if match.start() + 1 <= column <= match.end() + 1:
            return match.group()
    return None


def _facts_of(analysis: Analysis, item: s.Definition | s.PointFree | None
              ) -> DefinitionFacts | None:
    if not isinstance(item, s.Definition):
        return None
    return next((f for f in analysis.facts if f.item is item), None)


def _binding(analysis: Analysis, occurrence: Occurrence) -> Binding | None:
    """The array or parameter a name of a definition's body or signature stands for."""
    facts = _facts_of(analysis, occurrence.item)
    if facts is None:
        return None
    span = occurrence.span
    read = facts.reads.get((span.line, span.column))
    if read is not None:
        if read.span is None and read.kind == "array":  # a name `Y = X` gave the array
            return Binding(read.name, read.array, _bound_at(facts.item, occurrence), read.kind)
        return read
    if occurrence.role == "param-decl" or (
            occurrence.name in facts.params
            and not any(b.name == occurrence.name for b in facts.bindings)):
        parameter = facts.params.get(occurrence.name)
        if parameter is None:
            return None
        return Binding(parameter.name, parameter.array, parameter.span,
                       "buffer" if parameter.buffer else "parameter")
    if occurrence.role in ("target", "input"):
        exact = [b for b in facts.bindings if b.name == occurrence.name and b.span == span]
        if exact:
            return exact[0]
    # A read the checker did not look up by name (a tensor equation's operand), or a name
    # bound by `Y = X`: the last binding of the name before it.
    before = [b for b in facts.bindings if b.name == occurrence.name and
              (b.span is None or (b.span.line, b.span.column) <= (span.line, span.column))]
    if before:
        binding = before[-1]
        if binding.span is None:
            binding = Binding(binding.name, binding.array, _bound_at(facts.item, occurrence),
                              binding.kind)
        return binding
    return None


def _bound_at(item: s.Definition, occurrence: Occurrence) -> ir.Span | None:
    """The last statement target of the name at or before the occurrence."""
    span = occurrence.span
    targets = [o.span for o in _statements(item.body, item)
               if o.role == "target" and o.name == occurrence.name
               and (o.span.line, o.span.column) <= (span.line, span.column)]
    return targets[-1] if targets else None


def _axis_text(info: AxisInfo) -> str:
    if info.symbolic:
        return f"axis {info.name}  (symbolic: its size is given at run time)"
    return f"axis {info.name} = {info.size}"


def _code(text: str) -> str:
    return f"```ncd\n{text}\n```"


def _slice(text: str, span: ir.Span) -> str:
    """The text of a span, with its whitespace runs made single spaces."""
    lines = text.splitlines()
    if span.line == span.end_line:
        part = lines[span.line - 1][span.column - 1:span.end_column - 1]
    else:
        part = "\n".join([lines[span.line - 1][span.column - 1:],
                          *lines[span.line:span.end_line - 1],
                          lines[span.end_line - 1][:span.end_column - 1]])
    return " ".join(part.split())


def signature(analysis: Analysis, file: str, item: s.Definition | s.PointFree) -> str:
    """How a definition is called, as written: `def f(X: R[x, m]) -> R[x, m]`."""
    source = analysis.sources.get(file, "")
    if isinstance(item, s.PointFree):
        return f"def {item.name.name} = {_slice(source, item.expr.span)}"
    inputs = ", ".join(f"{i.name.name}: {_slice(source, i.type.span)}" for i in item.inputs)
    outputs = [(f"{o.name.name}: " if o.name else "") + _slice(source, o.type.span)
               for o in item.outputs]
    result = outputs[0] if len(outputs) == 1 else f"({', '.join(outputs)})"
    return f"def {item.name.name}({inputs}) -> {result}"


def _definition_hover(analysis: Analysis, name: str) -> str | None:
    found = analysis.visible.get(name)
    if found is not None:
        file, item = found
        text = _code(signature(analysis, file, item))
        if file != analysis.name:
            text += f"\n\nfrom `{file}`"
        return text + (f"\n\n{item.doc.strip()}" if item.doc else "")
    from ncd.operators import OPERATORS

    surface = OPERATORS.get(name)
    if surface is not None:
        return f"**{surface.name}** (operator): {surface.summary}\n\n{_code(surface.example)}"
    return None


def hover(analysis: Analysis, line: int, column: int) -> str | None:
    """Markdown about the name at a position: an axis's size, an array's type, a
    definition's signature, an operator's summary; None when there is nothing to say."""
    occurrence = occurrence_at(analysis, line, column)
    if occurrence is None:
        return None
    name, role = occurrence.name, occurrence.role
    if role in ("axis", "axis-decl") or (role == "index"
                                         and _binding(analysis, occurrence) is None):
        info = analysis.axes.get(name)
        if info is not None:
            return _code(_axis_text(info))
        local = _local_axis(analysis, occurrence)
        if local is None:
            return None
        return _code(f"axis {name} = {ir.size_text(local.size)}  (local to "
                     f"`{occurrence.item.name.name if occurrence.item else ''}`)")
    if role in ("callee", "def-decl", "import"):
        return _definition_hover(analysis, name)
    if role == "output":
        return _output_hover(analysis, occurrence)
    binding = _binding(analysis, occurrence)
    if binding is not None:
        keyword = {"parameter": "param ", "buffer": "buffer ", "array": ""}[binding.kind]
        sizes = " × ".join(ir.size_text(axis.size) for axis in binding.array.shape.axes)
        return _code(f"{keyword}{binding.name}: {binding.array.text()}") + (
            f"\n\nshape {sizes}" if sizes else "\n\na scalar")
    if name in analysis.axes:  # `sqrt(k)` in a tensor equation: an axis's size
        return _code(_axis_text(analysis.axes[name]))
    return None


def hover_word(analysis: Analysis, word: str) -> str | None:
    """Markdown about a word, wherever it is: an axis, a definition or an operator (for a
    text that does not parse, asked of the last analysis of it that did)."""
    if word in analysis.axes:
        return _code(_axis_text(analysis.axes[word]))
    return _definition_hover(analysis, word)


def definition_word(analysis: Analysis, word: str) -> Target | None:
    """Where an axis or a definition named `word` is declared."""
    return _axis_target(analysis, word) or _definition_target(analysis, word)


def _output_hover(analysis: Analysis, occurrence: Occurrence) -> str | None:
    item = occurrence.item
    if not isinstance(item, s.Definition):
        return None
    for output in item.outputs:
        if output.name is not None and output.name.span == occurrence.span:
            return _code(f"{output.name.name}: {_slice(analysis.text, output.type.span)}")
    return None


def definition(analysis: Analysis, line: int, column: int) -> Target | None:
    """Where the name at a position is defined: an axis's declaration, a definition's `def`,
    an array's binding, a parameter's declaration or first use."""
    occurrence = occurrence_at(analysis, line, column)
    if occurrence is None:
        return None
    name, role = occurrence.name, occurrence.role
    if role in ("axis", "axis-decl"):
        return _axis_target(analysis, name) or _local_axis_target(analysis, occurrence)
    if role in ("callee", "def-decl", "import"):
        return _definition_target(analysis, name)
    binding = _binding(analysis, occurrence)
    if binding is not None and binding.span is not None:
        return _target(analysis, binding.span)
    if role == "index" or name in analysis.axes:
        return _axis_target(analysis, name) or _local_axis_target(analysis, occurrence)
    return None


def _local_axis(analysis: Analysis, occurrence: Occurrence) -> ir.Axis | None:
    """An axis no declaration names that an array of the definition has (a tensor
    equation's new index: `S[h, x, y] = ...`)."""
    facts = _facts_of(analysis, occurrence.item)
    for binding in facts.bindings if facts is not None else []:
        for axis in binding.array.shape.axes:
            if axis.name == occurrence.name:
                return axis
    return None


def _local_axis_target(analysis: Analysis, occurrence: Occurrence) -> Target | None:
    """Where a local axis is first written in its definition."""
    if _local_axis(analysis, occurrence) is None:
        return None
    first = next((o for o in analysis.occurrences if o.item is occurrence.item
                  and o.name == occurrence.name and o.role in ("axis", "index")), None)
    return _target(analysis, first.span) if first is not None else None


def _target(analysis: Analysis, span: ir.Span) -> Target:
    return Target(None if span.file == analysis.name else analysis.paths.get(span.file), span)


def _axis_target(analysis: Analysis, name: str) -> Target | None:
    info = analysis.axes.get(name)
    return _target(analysis, info.span) if info is not None and info.span else None


def _definition_target(analysis: Analysis, name: str) -> Target | None:
    found = analysis.visible.get(name)
    return _target(analysis, found[1].name.span) if found is not None else None


def enclosing(analysis: Analysis, line: int) -> s.Definition | s.PointFree | None:
    """The definition of the document whose text holds a line."""
    if analysis.module is None:
        return None
    for item in analysis.module.items:
        if isinstance(item, (s.Definition, s.PointFree)) and \
                item.span.line <= line <= item.span.end_line:
            return item
    return None


def completions(analysis: Analysis, line: int | None = None) -> list[Completion]:
    """Names that may be written: the arrays of the definition around `line`, axes,
    definitions, operators, keywords and datatypes."""
    from ncd.editor_grammar import datatypes, keywords
    from ncd.operators import OPERATORS

    items: list[Completion] = []
    seen: set[str] = set()

    def add(label: str, kind: CompletionKind, detail: str) -> None:
        if label not in seen:
            seen.add(label)
            items.append(Completion(label, kind, detail))

    facts = _facts_of(analysis, enclosing(analysis, line)) if line is not None else None
    for binding in reversed(facts.bindings if facts else []):
        add(binding.name, "variable", binding.array.text())
    for name, param in (facts.params if facts else {}).items():
        add(name, "variable", f"{'buffer' if param.buffer else 'param'} {param.array.text()}")
    for info in analysis.axes.values():
        add(info.name, "axis", _axis_text(info))
    for name, (file, item) in analysis.visible.items():
        add(name, "definition", signature(analysis, file, item))
    for name, surface in sorted(OPERATORS.items()):
        add(name, "operator", surface.summary)
    for word in keywords():
        add(word, "keyword", "keyword")
    for word in datatypes():
        add(word, "type", "datatype")
    return items


class PreviewError(Exception):
    """Why a definition cannot be drawn; the message is for the person who asked."""


def preview(analysis: Analysis, name: str | None, line: int | None = None) -> str:
    """The diagram of a definition as SVG: the one named, else the one around `line`, else
    the document's last one. The analysis must have checked (`program`)."""
    from ncd.api import Program

    if analysis.program is None:
        raise PreviewError(f"`{analysis.name}` has errors; fix them to draw it")
    program = Program(analysis.program, analysis.sources)
    if name is None and line is not None:
        item = enclosing(analysis, line)
        name = item.name.name if item is not None else None
    if name is None:
        if not program.names:
            raise PreviewError(f"`{analysis.name}` defines nothing to draw")
        return program.render()
    if name not in program:
        raise PreviewError(f"no definition named `{name}`; `{analysis.name}` defines "
                           f"{', '.join(program.names) or 'nothing'}")
    return program.render(name)
