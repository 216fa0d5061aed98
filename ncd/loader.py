"""Loading: files and imports to a checked `ir.Program`.

Reads each file once (as UTF-8 text within the size limit), resolves imports relative to the
importing file and inside the project root, detects cycles, declares axes (with overrides)
and elaborates definitions in order. Every problem becomes a diagnostic.
"""

from __future__ import annotations

import difflib
import operator
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ncd import ir
from ncd import syntax as s
from ncd.context import Context, paused_collection
from ncd.diagnostics import Diagnostic, DiagnosticSink, NcdError, Note, did_you_mean
from ncd.elaborate import declare_axes, elaborate_definition, elaborate_pointfree
from ncd.parser import MAX_INT_DIGITS, MAX_SOURCE_BYTES, ParseFailure, parse

STD_ROOT = Path(__file__).resolve().parent / "std"
"""The standard library shipped with ncd: `import "std/attention.ncd"`."""
SEARCH_PATH_VARIABLE = "NCD_PATH"
"""The environment variable of import folders searched after `-I` (os.pathsep-separated)."""
INPUT_NAME = "<input>"
STDIN_NAME = "<stdin>"
# How deep imports may nest below the file loaded (`a` imports `b`, which imports `c`, ...).
MAX_IMPORT_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
# Opening a FIFO waits for a writer and a terminal may become the controlling one: neither
# may happen, even when a file is swapped for one between its `stat` and its `open`.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


@dataclass
class _Open:
    """A module whose imports are being loaded, and which of them comes next."""

    key: str
    module: s.Module
    directory: Path
    imports: list[tuple[int, s.Import]]
    root: Path  # the folder its own relative imports stay inside
    next_import: int = 0


@dataclass
class Loader:
    root: Path
    overrides: Mapping[str, int]
    sink: DiagnosticSink = field(default_factory=DiagnosticSink)
    # Folders searched, in order, for an import not found beside the importing file (`-I`,
    # `NCD_PATH`); the standard library shipped with ncd comes after them.
    include: tuple[Path, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    modules: dict[str, s.Module] = field(default_factory=dict)
    loading: list[str] = field(default_factory=list)
    order: list[s.Module] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the key of each module of `order`
    # Which module each import statement brought in, by (importing module key, item index).
    import_targets: dict[tuple[str, int], str] = field(default_factory=dict)

    def read(self, path: Path, span: ir.Span | None, display: str | None = None) -> str | None:
        """The text of the file at `path`, or None after a diagnostic, located at `span` (the
        import naming the file) or else at the start of the file. Only a regular file is
        opened (a FIFO waits for a writer, a device may never end), and at most one byte more
        than the size limit is read, so an oversized file is never read whole."""
        display = display or _display(path)
        where = span or _whole_file(display)
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                self._not_a_regular_file(display, info.st_mode, where)
                return None
            if info.st_size > MAX_SOURCE_BYTES:
                self._too_large(f"`{display}`", where)
                return None
            with open(os.open(path, _OPEN_FLAGS), "rb") as stream:
                mode = os.fstat(stream.fileno()).st_mode
                if not stat.S_ISREG(mode):  # replaced since the `stat` above
                    self._not_a_regular_file(display, mode, where)
                    return None
                data = _read_at_most(stream, MAX_SOURCE_BYTES + 1)
        except (OSError, ValueError) as error:
            message = error.strerror if isinstance(error, OSError) and error.strerror else error
            self.sink.error("E205", f"cannot read `{display}`: {message}", where)
            return None
        if len(data) > MAX_SOURCE_BYTES:  # a file that grew, or one whose size is not known
            self._too_large(f"`{display}`", where)
            return None
        return self.decode(data, display, span)

    def read_stream(self, stream: BinaryIO, display: str = STDIN_NAME) -> str | None:
        """The text of a stream (standard input), or None after a diagnostic; reads at most one
        byte more than the size limit."""
        data = _read_at_most(stream, MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            self._too_large("the standard input" if display == STDIN_NAME else f"`{display}`",
                            _whole_file(display))
            return None
        return self.decode(data, display, None)

    def decode(self, data: bytes, display: str, span: ir.Span | None) -> str | None:
        """`data` as text, or None after E104 (at `span`, or else at the offending byte)."""
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

    def _too_large(self, what: str, where: ir.Span) -> None:
        self.sink.error("E103", f"{what} is larger than {MAX_SOURCE_BYTES:,} bytes", where,
                        hint="split the model into several files")

    def _not_a_regular_file(self, display: str, mode: int, where: ir.Span) -> None:
        if stat.S_ISDIR(mode):
            self.sink.error("E205", f"`{display}` is a folder, not a .ncd file", where)
        else:
            self.sink.error("E205", f"`{display}` is not a regular file "
                            f"(it is {kind_of_file(mode)})", where,
                            hint="ncd reads .ncd files; FIFOs, devices and sockets may never "
                            "end, so they are not opened")

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
        """Load the file at `path` and everything it imports."""
        display = _display(path)
        resolved = _resolve(path)
        if resolved is None:
            self.sink.error("E205", f"cannot read `{display}`: a loop of symbolic links",
                            span or _whole_file(display))
            return
        key = str(resolved)
        if key in self.modules:
            return
        text = self.read(resolved, span, display)
        if text is None:
            return
        self.load_module_text(text, display, resolved.parent, key)

    def load_module_text(self, text: str, name: str, directory: Path, key: str) -> None:
        """Parse a module and load what it imports, depth first, each file once. An explicit
        stack of the files being loaded (not recursion) follows the chains of imports, which
        `load_import` bounds by MAX_IMPORT_DEPTH. A module comes in `order` after the modules
        it imports."""
        module = self.parse_text(text, name)
        if module is None:
            return
        stack = [self._enter(key, module, directory, self.root)]
        while stack:
            current = stack[-1]
            if current.next_import == len(current.imports):
                stack.pop()
                self.loading.pop()
                self.order.append(current.module)
                self.keys.append(current.key)
                continue
            index, item = current.imports[current.next_import]
            current.next_import += 1
            loaded = self.load_import(item, current.directory, len(stack), current.root)
            if loaded is None:
                continue
            target, opened = loaded
            self.import_targets[(current.key, index)] = target
            if opened is not None:
                stack.append(opened)

    def _enter(self, key: str, module: s.Module, directory: Path, root: Path) -> _Open:
        self.modules[key] = module
        self.loading.append(key)
        imports = [(index, item) for index, item in enumerate(module.items)
                   if isinstance(item, s.Import)]
        return _Open(key, module, directory, imports, root)

    def find_import(self, item: s.Import, directory: Path,
                    root: Path) -> tuple[Path, Path] | None:
        """Where the file `item` names is, and the folder its own relative imports stay
        inside; None after a diagnostic at the import. Looked for, in order: beside the
        importing file (inside `root`, its project), in each folder of the search path, in
        the standard library (`std/...`)."""
        places: list[tuple[Path, Path]] = [(directory / item.path, root)]
        places += [(folder / item.path, folder) for folder in self.include]
        places.append((STD_ROOT.parent / item.path, STD_ROOT))
        looked: list[str] = []
        outside: Path | None = None
        for candidate, inside in places:
            target = _resolve(candidate)
            if target is None:
                self.sink.error("E205", f"cannot read `{item.path}`: a loop of symbolic links",
                                item.span)
                return None
            try:
                target.relative_to(_resolve(inside) or inside)
            except ValueError:
                if inside is root:
                    outside = target
                continue
            try:
                os.stat(target)
            except (FileNotFoundError, NotADirectoryError):
                looked.append(f"{item.path} in the standard library" if inside is STD_ROOT
                              else _display(target))
                continue
            except OSError as error:
                self.sink.error("E205", f"cannot read `{item.path}`: {error.strerror or error}",
                                item.span)
                return None
            return target, inside
        if outside is not None and not looked:
            self.sink.error("E205", f"`{item.path}` is outside the project root "
                            f"`{_display(root)}`", item.span,
                            hint="imports stay inside the folder of the file being loaded; "
                            "add a folder to the search path with `-I DIR` or `NCD_PATH`")
            return None
        where = ", ".join(looked) if looked else "nowhere"
        if Path(item.path).parts[:1] == ("std",):
            shipped = sorted(path.name for path in STD_ROOT.glob("*.ncd"))
            closest = difflib.get_close_matches(Path(item.path).name, shipped, n=1, cutoff=0.6)
            advice = f"did you mean `std/{closest[0]}`?" if closest else \
                "the standard library holds " + ", ".join(f"`std/{name}`" for name in shipped)
        else:
            advice = "add a folder to the search path with `-I DIR` or `NCD_PATH`"
        self.sink.error("E205", f"cannot find `{item.path}`", item.span,
                        hint=f"looked for {where}; {advice}")
        return None

    def load_import(self, item: s.Import, directory: Path, depth: int,
                    root: Path | None = None) -> tuple[str, _Open | None] | None:
        """Find, read and parse the file `item` imports, from a module in `directory` (inside
        `root`, by default the project's) that is `depth - 1` imports below the file loaded.
        Returns its module key and, when it was not loaded before, the module whose own
        imports are to be loaded next; None (after a diagnostic at the import) when it cannot
        be imported."""
        found = self.find_import(item, directory, self.root if root is None else root)
        if found is None:
            return None
        target, inside = found
        key = str(target)
        if key in self.loading:
            cycle = [*self.loading[self.loading.index(key):], key]
            self.sink.error("E206", "import cycle: " + " -> ".join(_display(Path(p))
                                                                   for p in cycle), item.span,
                            hint="move the shared definitions into a file both can import")
            return None
        if key in self.modules:
            return key, None
        if depth > MAX_IMPORT_DEPTH:
            self.sink.error("E103", f"importing `{item.path}` nests imports more than "
                            f"{MAX_IMPORT_DEPTH} deep", item.span,
                            hint="import the files from one file rather than each from the "
                            "one before")
            return None
        text = self.read(target, item.span)
        if text is None:
            return None
        module = self.parse_text(text, _display(target))
        if module is None:
            return None
        return key, self._enter(key, module, target.parent, inside)


def _read_at_most(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes of `stream`: fewer only at its end."""
    chunks: list[bytes] = []
    while size > 0:
        chunk = stream.read(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def kind_of_file(mode: int) -> str:
    """What a file that is not a regular file or a folder is, for a message."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _resolve(path: Path) -> Path | None:
    """`path`, absolute, with every symbolic link followed; None for a loop of links."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop is a RuntimeError before Python 3.13
        return None


def _whole_file(display: str) -> ir.Span:
    """Where a problem with a whole file is reported: its start."""
    # Made without validation (`ir.trusted`): every file read makes one.
    return ir.trusted(ir.Span, file=display, line=1, column=1, end_line=1, end_column=1)


def _byte_span(display: str, data: bytes, offset: int) -> ir.Span:
    """Where byte `offset` of a file that cannot be read as text lies (column in bytes)."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return ir.Span(file=display, line=line, column=column, end_line=line, end_column=column + 1)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)


def search_path(include: Sequence[str | os.PathLike[str]] | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The folders an import not found beside its file is looked for in, in order: `include`
    (`-I DIR`, `ncd.load(..., include=[...])`), then those of `NCD_PATH` (separated by
    `os.pathsep`; empty entries are skipped). The standard library comes after them all."""
    if isinstance(include, (str, os.PathLike)):
        raise TypeError("include must be a list of folders, like ['layers'], not one "
                        f"{type(include).__name__}")
    folders = [Path(folder) for folder in include or ()]
    variable = (os.environ if environ is None else environ).get(SEARCH_PATH_VARIABLE, "")
    folders += [Path(entry) for entry in variable.split(os.pathsep) if entry.strip()]
    return tuple(_resolve(folder) or folder.absolute() for folder in folders)


def load_program(source: str | Path, sizes: Mapping[str, int] | None = None, *,
                 name: str | None = None,
                 include: Sequence[str | os.PathLike[str]] | None = None
                 ) -> tuple[ir.Program, dict[str, str]]:
    """Load a file (a `Path`, or a one-line string ending in `.ncd`) or source text.

    Returns the checked program and the source texts by file name; raises `NcdError` with
    every diagnostic when the input has errors. `sizes` overrides axis sizes: a key that is not
    a `str` or a value that is not an `int` is a `TypeError` (`sizes_checked`); a name that no
    axis declares or a size that is not positive is E314. `include` lists folders searched for
    imports after the importing file's own, before `NCD_PATH`'s and the standard library
    (`search_path`).
    """
    overrides = sizes_checked(sizes)
    folders = search_path(include)
    # Parsing and checking under one pause of the collector (see `paused_collection`): its
    # first collection afterwards looks at the syntax trees and the IR once, not twice.
    with paused_collection():
        return _load_and_check(source, overrides, folders, name)


def _load_and_check(source: str | Path, overrides: Mapping[str, int],
                    folders: tuple[Path, ...], name: str | None
                    ) -> tuple[ir.Program, dict[str, str]]:
    # A one-line string ending in `.ncd` names a file (no program text ends that way).
    if isinstance(source, Path) or ("\n" not in source and source.strip().endswith(".ncd")):
        path = Path(source.strip() if isinstance(source, str) else source)
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NcdError([Diagnostic("E205", f"cannot find `{path}`", None)]) from None
        except (OSError, ValueError) as error:  # a loop of symbolic links, a NUL in the path
            message = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise NcdError([Diagnostic("E205", f"cannot read `{path}`: {message}",
                                       _whole_file(_display(path)))]) from None
        loader = Loader((_resolve(path) or path.absolute()).parent, overrides, include=folders)
        loader.load_file(path, None)
        source_name = _display(path)
    else:
        source_name = name or INPUT_NAME
        loader = Loader(Path.cwd().resolve(), overrides, include=folders)
        loader.load_module_text(source, source_name, Path.cwd(), source_name)
    program = _check(loader, source_name, overrides)
    if loader.sink.has_errors or program is None:
        raise NcdError(loader.sink.diagnostics, loader.sources)
    return program, loader.sources


def sizes_checked(sizes: object) -> dict[str, int]:
    """The size overrides as a dict of `str` to `int`, or a `TypeError` that says what was given
    and what is expected (`sizes["d"] must be a positive int, got '64' (str)`). `bool` is no
    size; an integer of another type (numpy's) is taken by its `__index__`. Whether the names
    are declared axes and the sizes positive is judged with the program (E314)."""
    if sizes is None:
        return {}
    if not isinstance(sizes, Mapping):
        raise TypeError("sizes must be a mapping of axis names to positive ints, like "
                        f"{{'m': 512}}; got {_shown(sizes)}")
    checked: dict[str, int] = {}
    for name, value in sizes.items():
        if not isinstance(name, str):
            raise TypeError(f"sizes: the keys are axis names (str); got {_shown(name)}")
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            hint = ""
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                hint = f" (write {int(value)}, not {value!r})"
            raise TypeError(f"sizes[{name!r}] must be a positive int, got {_shown(value)}"
                            + hint)
        checked[name] = operator.index(value)
    return checked


def _shown(value: object) -> str:
    """A value as a message shows it: its repr, cut short, and its type (`'64' (str)`)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _check(loader: Loader, source_name: str, overrides: Mapping[str, int]) -> ir.Program | None:
    ctx = Context(loader.sink)
    declared = [item for module in loader.order for item in module.items
                if isinstance(item, s.AxisDecl)]
    for name, value in overrides.items():
        if loader.sink.has_errors:
            # A file that did not parse or an import that failed declares nothing: no
            # override can be judged.
            break
        names = [d.name.name for d in declared]
        if name not in names:
            listed = ", ".join(f"`{n}`" for n in sorted(set(names)))
            loader.sink.error("E314", f"`-D {name}={value}` names no declared axis", None,
                              hint=did_you_mean(name, names)
                              or (f"the declared axes are {listed}" if listed
                                  else "the program declares no axis"))
        elif value <= 0:
            loader.sink.error("E314", f"`-D {name}={value}`: a size is a positive integer", None)
        elif value >= 10 ** MAX_INT_DIGITS:
            loader.sink.error("E314", f"`-D {name}=...`: the size has more than "
                              f"{MAX_INT_DIGITS} digits", None)
    valid = {name: value for name, value in overrides.items()
             if 0 < value < 10 ** MAX_INT_DIGITS}
    incomplete = _incomplete_modules(loader)
    for key, module in zip(loader.keys, loader.order, strict=True):
        ctx.incomplete = key in incomplete
        declare_axes(ctx, [item for item in module.items if isinstance(item, s.AxisDecl)], valid)
    definitions, trainings = _elaborate_modules(loader, ctx, incomplete)
    ctx.incomplete = False
    if loader.sink.has_errors:
        return None
    top = loader.order[-1] if loader.order else None
    axes = tuple(info.axis for info in ctx.axes.values())
    # Made without validating it again (`ir.trusted`): its parts are checked nodes.
    return ir.trusted(ir.Program, source=source_name, doc=top.doc if top else None, axes=axes,
                      definitions=tuple(definitions), trainings=tuple(trainings))


Namespace = dict[str, "ir.Definition | None"]  # None: the definition has errors


def _incomplete_modules(loader: Loader) -> set[str]:
    """The modules (by key) with an import that did not load, directly or through a module
    they import: the names the missing file would have declared are unknown there."""
    incomplete: set[str] = set()
    for key, module in zip(loader.keys, loader.order, strict=True):
        for index, item in enumerate(module.items):
            if not isinstance(item, s.Import):
                continue
            target = loader.import_targets.get((key, index))
            if target is None or target in incomplete:
                incomplete.add(key)
    return incomplete


def _elaborate_modules(loader: Loader, ctx: Context,
                       incomplete: set[str] | frozenset[str] = frozenset()
                       ) -> tuple[list[ir.Definition], list[ir.Training]]:
    """Elaborate each module's definitions in its own namespace: its definitions and what it
    imports (everything visible in the file for `import "F"`, the listed names for
    `from "F" import a, b`). A definition whose name is taken by another module's is kept
    under a qualified name (`F.h`) so that every definition of the program is distinct; the
    plain name goes to the file that defines it last (the file being loaded).

    The training set-ups are those of the file loaded (an imported file's are not part of
    the program), elaborated last, in its namespace."""
    exports: dict[str, Namespace] = {}
    taken: set[str] = set()
    definitions: list[ir.Definition] = []
    trainings: list[ir.Training] = []
    # The plain name goes to the last module defining it (the file loaded keeps its names).
    last_module = {item.name.name: position for position, module in enumerate(loader.order)
                   for item in module.items if isinstance(item, (s.Definition, s.PointFree))}
    for position, (key, module) in enumerate(zip(loader.keys, loader.order, strict=True)):
        visible: Namespace = {}
        origin: dict[str, ir.Span] = {}
        imported: set[str] = set()
        ctx.incomplete = key in incomplete
        for index, item in enumerate(module.items):
            if not isinstance(item, s.Import):
                continue
            if (key, index) not in loader.import_targets:
                # Reported at the import: the names it lists are known, and failed.
                for ident in item.names or ():
                    visible.setdefault(ident.name, None)
                    origin.setdefault(ident.name, ident.span)
                    imported.add(ident.name)
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
        # What the module's definitions see, kept up to date as they are elaborated (built
        # once per module, not once per definition: that was quadratic in their number).
        ctx.definitions = {n: d for n, d in visible.items() if d is not None}
        ctx.failed = {n for n, d in visible.items() if d is None}
        stem = Path(module.path).stem  # the qualifier of a name another module has taken
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
            if isinstance(item, s.Definition):
                definition = elaborate_definition(ctx, item)
            else:
                definition = elaborate_pointfree(ctx, item)
            origin[name] = item.name.span
            if definition is None:
                visible[name] = None
                ctx.failed.add(name)
                continue
            extra = {name} if last_module[name] > position else set()
            unique = _unique_name(name, stem, taken, extra)
            if unique != name:
                definition = definition.model_copy(update={"name": unique})
            taken.add(unique)
            visible[name] = definition
            ctx.definitions[name] = definition
            definitions.append(definition)
        exports[key] = visible
        if position == len(loader.order) - 1:
            trainings = _elaborate_trainings(ctx, module, origin)
    if not loader.order:
        return definitions, trainings
    return _reached(definitions, exports[loader.keys[-1]]), trainings


def _elaborate_trainings(ctx: Context, module: s.Module,
                         origin: dict[str, ir.Span]) -> list[ir.Training]:
    trainings: list[ir.Training] = []
    for item in module.items:
        if not isinstance(item, s.Training):
            continue
        name = item.name.name
        if name in origin:
            loader_note = Note(origin[name], "first defined here")
            ctx.error("E203", f"`{name}` is defined twice", item.name.span, notes=[loader_note])
            continue
        origin[name] = item.name.span
        # Imported here: only a file with a training set-up pays for the losses and
        # optimisers at start-up.
        from ncd.training import elaborate_training

        training = elaborate_training(ctx, item)
        if training is not None:
            trainings.append(training)
    return trainings


def _reached(definitions: list[ir.Definition], visible: Namespace) -> list[ir.Definition]:
    """The definitions the loaded file can reach: its own, those it imports (all of a file's
    for `import "F"`, the listed ones for `from "F" import a, b`) and what they call. The rest
    of an imported file (`from "std/attention.ncd" import attention` leaves out the other
    attention layers) is checked but not part of the program, so that compiling the program
    does not need the sizes of axes only those definitions use."""
    by_name = {definition.name: definition for definition in definitions}
    pending = [d.name for d in visible.values() if d is not None]
    kept: set[str] = set()
    while pending:
        name = pending.pop()
        if name in kept or name not in by_name:
            continue
        kept.add(name)
        pending.extend(term.op.definition for term in ir.walk(by_name[name].body)
                       if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp))
    return [definition for definition in definitions if definition.name in kept]


def _unique_name(name: str, module: str, taken: set[str],
                 extra: set[str] | frozenset[str] = frozenset()) -> str:
    if name not in taken and name not in extra:
        return name
    candidate = f"{module}.{name}"
    count = 1
    while candidate in taken or candidate in extra:
        count += 1
        candidate = f"{module}.{name}_{count}"
    return candidate
