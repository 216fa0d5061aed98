"""Loading: files and imports to a checked `ir.Program`.

Reads each file once (as UTF-8 text within the size limit), resolves imports relative to the
importing file and inside the project root, detects cycles, declares axes (with overrides)
and elaborates definitions in order. Every problem becomes a diagnostic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ncd import ir
from ncd import syntax as s
from ncd.context import Context
from ncd.diagnostics import Diagnostic, DiagnosticSink, NcdError, Note, did_you_mean
from ncd.elaborate import declare_axes, elaborate_definition, elaborate_pointfree
from ncd.parser import MAX_SOURCE_BYTES, ParseFailure, parse

INPUT_NAME = "<input>"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Loader:
    root: Path
    overrides: Mapping[str, int]
    sink: DiagnosticSink = field(default_factory=DiagnosticSink)
    sources: dict[str, str] = field(default_factory=dict)
    modules: dict[str, s.Module] = field(default_factory=dict)
    loading: list[str] = field(default_factory=list)
    order: list[s.Module] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the key of each module of `order`
    # Which module each import statement brought in, by (importing module key, item index).
    import_targets: dict[tuple[str, int], str] = field(default_factory=dict)

    def read(self, path: Path, span: ir.Span | None) -> str | None:
        display = _display(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            self.sink.error("E205", f"cannot read `{display}`: {error.strerror or error}", span)
            return None
        if len(data) > MAX_SOURCE_BYTES:
            self.sink.error("E103", f"`{display}` is larger than {MAX_SOURCE_BYTES:,} bytes", span,
                            hint="split the model into several files")
            return None
        if b"\x00" in data:
            self.sink.error("E104", f"`{display}` is not a text file (it contains NUL bytes)",
                            span or _byte_span(display, data, data.index(b"\x00")))
            return None
        try:
            return data.decode("utf-8").removeprefix("\ufeff")  # a byte order mark is no text
        except UnicodeDecodeError as error:
            self.sink.error("E104", f"`{display}` is not UTF-8 text (byte {error.start})",
                            span or _byte_span(display, data, error.start))
            return None

    def parse_text(self, text: str, name: str) -> s.Module | None:
        self.sources[name] = text
        if "\x00" in text:
            self.sink.error("E104", "the input is not text (it contains NUL bytes)",
                            ir.Span(file=name, line=1, column=1, end_line=1, end_column=2))
            return None
        surrogate = _SURROGATE.search(text)
        if surrogate is not None:  # only a Python string can hold one; no file decodes to it
            line = text.count("\n", 0, surrogate.start()) + 1
            column = surrogate.start() - (text.rfind("\n", 0, surrogate.start()) + 1) + 1
            self.sink.error("E104", "the input is not text (it holds a lone surrogate "
                            f"U+{ord(surrogate.group()):04X})",
                            ir.Span(file=name, line=line, column=column, end_line=line,
                                    end_column=column + 1))
            return None
        try:
            return parse(text, name)
        except ParseFailure as failure:
            self.sink.diagnostics.append(failure.diagnostic)
            return None

    def load_file(self, path: Path, span: ir.Span | None) -> None:
        resolved = path.resolve()
        key = str(resolved)
        if key in self.loading:
            cycle = [*self.loading[self.loading.index(key):], key]
            self.sink.error("E206", "import cycle: " + " -> ".join(_display(Path(p))
                                                                   for p in cycle), span,
                            hint="move the shared definitions into a file both can import")
            return
        if key in self.modules:
            return
        text = self.read(resolved, span)
        if text is None:
            return
        self.load_module_text(text, _display(path), resolved.parent, key)

    def load_module_text(self, text: str, name: str, directory: Path, key: str) -> None:
        module = self.parse_text(text, name)
        if module is None:
            return
        self.modules[key] = module
        self.loading.append(key)
        for index, item in enumerate(module.items):
            if isinstance(item, s.Import):
                target = self.load_import(item, directory)
                if target is not None:
                    self.import_targets[(key, index)] = target
        self.loading.pop()
        self.order.append(module)
        self.keys.append(key)

    def load_import(self, item: s.Import, directory: Path) -> str | None:
        """Load the imported file; its module key, or None when it could not be loaded."""
        target = (directory / item.path).resolve()
        try:
            target.relative_to(self.root)
        except ValueError:
            self.sink.error("E205", f"`{item.path}` is outside the project root "
                            f"`{_display(self.root)}`", item.span,
                            hint="imports stay inside the folder of the file being loaded")
            return None
        if not target.is_file():
            self.sink.error("E205", f"cannot find `{item.path}`", item.span,
                            hint=f"looked for {_display(target)}")
            return None
        self.load_file(target, item.span)
        key = str(target)
        return key if key in self.modules and key not in self.loading else None


def _byte_span(display: str, data: bytes, offset: int) -> ir.Span:
    """Where byte `offset` of a file that cannot be read as text lies (column in bytes)."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return ir.Span(file=display, line=line, column=column, end_line=line, end_column=column + 1)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_program(source: str | Path, sizes: Mapping[str, int] | None = None, *,
                 name: str | None = None) -> tuple[ir.Program, dict[str, str]]:
    """Load a file (a `Path`, or a one-line string ending in `.ncd`) or source text.

    Returns the checked program and the source texts by file name; raises `NcdError` with
    every diagnostic when the input has errors.
    """
    overrides = dict(sizes or {})
    # A one-line string ending in `.ncd` names a file (no program text ends that way).
    if isinstance(source, Path) or ("\n" not in source and source.strip().endswith(".ncd")):
        path = Path(source.strip() if isinstance(source, str) else source)
        loader = Loader(path.resolve().parent, overrides)
        if not path.is_file():
            raise NcdError([Diagnostic("E205", f"cannot find `{path}`", None)])
        loader.load_file(path, None)
        source_name = _display(path)
    else:
        source_name = name or INPUT_NAME
        loader = Loader(Path.cwd().resolve(), overrides)
        loader.load_module_text(source, source_name, Path.cwd(), source_name)
    program = _check(loader, source_name, overrides)
    if loader.sink.has_errors or program is None:
        raise NcdError(loader.sink.diagnostics, loader.sources)
    return program, loader.sources


def _check(loader: Loader, source_name: str, overrides: Mapping[str, int]) -> ir.Program | None:
    ctx = Context(loader.sink)
    declared = [item for module in loader.order for item in module.items
                if isinstance(item, s.AxisDecl)]
    for name, value in overrides.items():
        if loader.sink.has_errors:
            break  # a file that did not parse declares nothing: no override can be judged
        if name not in {d.name.name for d in declared}:
            loader.sink.error("E314", f"`-D {name}={value}` names no declared axis", None,
                              hint=did_you_mean(name, [d.name.name for d in declared]))
        elif value <= 0:
            loader.sink.error("E314", f"`-D {name}={value}`: a size is a positive integer", None)
    valid = {name: value for name, value in overrides.items() if value > 0}
    declare_axes(ctx, declared, valid)
    definitions = _elaborate_modules(loader, ctx)
    if loader.sink.has_errors:
        return None
    top = loader.order[-1] if loader.order else None
    axes = tuple(ir.Axis(name=info.name, size=info.size.to_ir()) for info in ctx.axes.values())
    return ir.Program(source=source_name, doc=top.doc if top else None, axes=axes,
                      definitions=tuple(definitions))


Namespace = dict[str, "ir.Definition | None"]  # None: the definition has errors


def _elaborate_modules(loader: Loader, ctx: Context) -> list[ir.Definition]:
    """Elaborate each module's definitions in its own namespace: its definitions and what it
    imports (everything visible in the file for `import "F"`, the listed names for
    `from "F" import a, b`). A definition whose name is taken by another module's is kept
    under a qualified name (`F.h`) so that every definition of the program is distinct; the
    plain name goes to the file that defines it last (the file being loaded)."""
    exports: dict[str, Namespace] = {}
    taken: set[str] = set()
    definitions: list[ir.Definition] = []
    # The plain name goes to the last module defining it (the file loaded keeps its names).
    last_module = {item.name.name: position for position, module in enumerate(loader.order)
                   for item in module.items if isinstance(item, (s.Definition, s.PointFree))}
    for position, (key, module) in enumerate(zip(loader.keys, loader.order, strict=True)):
        visible: Namespace = {}
        origin: dict[str, ir.Span] = {}
        imported: set[str] = set()
        for index, item in enumerate(module.items):
            if not isinstance(item, s.Import) or (key, index) not in loader.import_targets:
                continue
            available = exports[loader.import_targets[(key, index)]]
            if item.names is None:
                wanted = [(name, item.span) for name in available]
            else:
                wanted = [(ident.name, ident.span) for ident in item.names]
            for name, span in wanted:
                if name not in available:
                    loader.sink.error("E205", f"`{item.path}` defines no `{name}`", span,
                                      hint=did_you_mean(name, available))
                    continue
                visible[name] = available[name]
                origin[name] = span
                imported.add(name)
        for item in module.items:
            if not isinstance(item, (s.Definition, s.PointFree)):
                continue
            name = item.name.name
            if name in visible:
                previous = visible[name]
                first = origin.get(name) or (previous.span if previous else None)
                how = "imported here" if name in imported else "first defined here"
                loader.sink.error("E203", f"`{name}` is defined twice", item.name.span,
                                  notes=[Note(first, how)] if first else ())
                continue
            ctx.definitions = {n: d for n, d in visible.items() if d is not None}
            ctx.failed = {n for n, d in visible.items() if d is None}
            if isinstance(item, s.Definition):
                definition = elaborate_definition(ctx, item)
            else:
                definition = elaborate_pointfree(ctx, item)
            origin[name] = item.name.span
            if definition is None:
                visible[name] = None
                continue
            reserved = taken | ({name} if last_module[name] > position else set())
            unique = _unique_name(name, Path(module.path).stem, reserved)
            if unique != name:
                definition = definition.model_copy(update={"name": unique})
            taken.add(unique)
            visible[name] = definition
            definitions.append(definition)
        exports[key] = visible
    return definitions


def _unique_name(name: str, module: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    candidate = f"{module}.{name}"
    count = 1
    while candidate in taken:
        count += 1
        candidate = f"{module}.{name}_{count}"
    return candidate
