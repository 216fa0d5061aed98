"""The `ncd` command line: check, ir, render, fmt, compile, stats (and watch, site, lsp, declared in
modules of their own). `docs/cli.md` lists every command and option; it is generated from
`build_parser()` by `python -m ncd.cli_reference`.

Inputs. Every command that reads files takes `-` for standard input (shown as `<stdin>`; its
imports resolve relative to the working folder), and `check`, `ir`, `render`, `compile` and
`fmt` take several files and folders: a folder stands for every `*.ncd` file below it
(recursively, sorted, hidden files and folders skipped). One input's errors do not stop the
others; the exit code is the worst. With several inputs, `ir`, `render` and `compile` write
`DIR/<stem>.json`, `.svg` (or the suffix of `-f`) and `.py` into the folder `-o DIR` (made if
needed), and choose each file's main definition; `DEF` (or `--def NAME`) chooses a definition
of a single input. The last of two or more arguments is `DEF` when it is a definition name (a
dotted identifier not ending in `.ncd`); write a folder named like one as `name/`.

Outputs. `-o FILE` is written whole (a temporary file renamed over it); its suffix picks the
format of `render`, and a different `-f` is a usage error. `-o -` writes to standard output,
binary formats (PNG, PDF) included; without `-o`, binary output is refused only when standard
output is a terminal.

Diagnostics. `--diagnostics json` (on `check` also `--format json`) reports them as a JSON list
of objects (`path`, `range` with 1-based, end-exclusive `start`/`end` `line` and `column`,
`code`, `severity`, `message`, `hint`, `notes`): on standard output for `check`, always; on
standard error for the other commands, when there are any. Colour: `--color
{auto,always,never}` or `--no-color`, before or after the command; the flag wins, then
`NO_COLOR` (non-empty: no colour), then `FORCE_COLOR` (non-empty: colour), then whether
standard error is a terminal.

Exit codes: 0 success, 1 diagnostics in the input, 2 usage or I/O error (a size override
`-D` that is not a positive integer or names no declared axis included), 3 an internal error
of ncd itself (please report it; `--debug` shows the traceback); 128 + N after signal N
(SIGTERM, SIGHUP, SIGPIPE when the reader of standard output goes away), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO, cast

from ncd.api import Program, load
from ncd.diagnostics import NcdError
from ncd.loader import STDIN_NAME, kind_of_file
from ncd.progress import ProgressBar

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
RENDER_FORMATS = ("svg", "pdf", "png", "dot", "tex")
Format = Literal["svg", "png", "pdf"]
"""The formats of a drawn overview."""


class UsageError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM or SIGHUP while an output is being written: raised so that the temporary file
    is removed before ncd exits with status 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def write_atomically(path: Path, data: bytes) -> None:
    """Replace the file at `path` whole with `data`, through a temporary file in its folder and
    a rename, so that a failure never leaves a half-written output behind.

    A symbolic link is followed: the file it names is replaced and the link stays a link. Only
    a regular file (or nothing) is replaced: a folder, FIFO, device or socket is a usage error.
    The file keeps its permission bits. An exception, Ctrl-C, SIGTERM or SIGHUP removes the
    temporary file; one left by a killed process (`.NAME.ncd-PID-RANDOM.tmp`) is removed by
    the next write to the same file once no process PID runs."""
    target, mode = _output_target(path)
    directory = target.parent
    prefix = f".{target.name}.ncd-"
    _remove_temporaries(directory, prefix, _is_dead)
    with _signals_raise_terminated():
        temporary: str | None = None
        try:
            handle, temporary = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-",
                                                 suffix=".tmp", dir=directory)
            with os.fdopen(handle, "wb") as stream:
                if hasattr(os, "fchmod"):
                    with contextlib.suppress(OSError):  # some file systems have no modes
                        os.fchmod(stream.fileno(), mode)
                stream.write(data)
            os.replace(temporary, target)
        except BaseException:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            else:  # interrupted inside `mkstemp`
                _remove_temporaries(directory, prefix, lambda pid: pid == os.getpid())
            raise


def _output_target(path: Path) -> tuple[Path, int]:
    """The file that writing to `path` replaces (a symbolic link followed) and the permission
    bits it is to have: its own when it exists, else those a new file gets."""
    try:
        info: os.stat_result | None = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        info = None  # a new file, or a symbolic link to one
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"cannot write {path}: it is a folder")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(f"cannot write {path}: it is not a regular file (it is "
                         f"{kind_of_file(info.st_mode)}); ncd replaces only regular files "
                         "(`-o -` writes to standard output)")
    target = Path(os.path.realpath(path)) if os.path.islink(path) else path
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {path}: folder {target.parent} does not exist")
    if info is not None:
        return target, stat.S_IMODE(info.st_mode) & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    return target, 0o666 & ~umask


_TEMPORARY = re.compile(r"([0-9]{1,10})-[a-z0-9_]+\.tmp")


def _remove_temporaries(directory: Path, prefix: str, remove: Callable[[int], bool]) -> None:
    """Remove the temporary files `PREFIX` + `PID-RANDOM.tmp` of `directory` (those of one
    output file) for which `remove(PID)` holds."""
    try:
        with os.scandir(directory) as entries:
            found = [(entry, _TEMPORARY.fullmatch(entry.name[len(prefix):])) for entry in entries
                     if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry, match in found:
        if match is not None and remove(int(match.group(1))):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)


def _is_dead(pid: int) -> bool:
    """Whether no process `pid` runs: its temporary files are stale (a running write keeps
    its own)."""
    if pid <= 0 or pid == os.getpid() or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: it runs, as another user
        return False
    return False  # it runs


_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextlib.contextmanager
def _signals_raise_terminated() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Terminated` (unless they are ignored or
    handled already, or this is not the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    installed = [signum for signum in _TERMINATING if signal.getsignal(signum) == signal.SIG_DFL]
    for signum in installed:
        signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum in installed:
            signal.signal(signum, signal.SIG_DFL)


# ---- inputs --------------------------------------------------------------------------------


def _check_input(path: str) -> Path:
    """The file `path` names; a usage error when there is none or it is a folder."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{path}: no such file") from None
    except OSError as error:  # a loop of symbolic links, a permission
        raise UsageError(f"{path}: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path}: is a folder, not a .ncd file")
    return Path(path)


@dataclass(frozen=True)
class Inputs:
    """The files a command reads: those given and those found in the folders given."""

    files: list[str]
    """Each file as given or as found below a folder given; `-` is standard input."""
    problems: list[str]
    """Usage errors of single arguments (a folder with no .ncd file), reported in turn."""
    several: bool
    """More than one argument, or a folder: each output goes into the folder `-o DIR`."""


def expand_inputs(arguments: Sequence[str]) -> Inputs:
    """The files `arguments` stand for: a folder stands for every `*.ncd` file below it
    (sorted; hidden files and folders, whose names start with `.`, are skipped; symbolic
    links to folders are not followed). A file given twice is read once."""
    if list(arguments).count("-") > 1:
        raise UsageError("`-` (standard input) can be read only once")
    files: list[str] = []
    problems: list[str] = []
    folders = False
    for argument in arguments:
        if argument != "-" and os.path.isdir(argument):
            folders = True
            found = _ncd_files(argument)
            if not found:
                problems.append(f"{argument}: no .ncd files in this folder")
            files.extend(found)
        else:
            files.append(argument)
    unique = list(dict.fromkeys(files))
    return Inputs(unique, problems, several=len(arguments) > 1 or folders)


def _ncd_files(folder: str) -> list[str]:
    found: list[str] = []
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(os.path.normpath(os.path.join(root, name)) for name in names
                     if name.endswith(".ncd") and not name.startswith("."))
    return sorted(found)


def _is_definition_name(text: str) -> bool:
    """Whether a positional argument is a definition name (`attention`, `lib.g`), not a file."""
    return not text.endswith(".ncd") and all(part.isidentifier() for part in text.split("."))


def _take_definition(args: argparse.Namespace) -> None:
    """Move a positional DEF (the last of two or more arguments, when it is a definition name)
    from `args.inputs` to `args.definition`."""
    if len(args.inputs) < 2 or not _is_definition_name(args.inputs[-1]):
        return
    name = args.inputs.pop()
    if args.definition is not None:
        raise UsageError(f"the definition is given twice ({name} and --def {args.definition}); "
                         f"give it once (a folder named {name} is written {name}/)")
    args.definition = name


def _shown(file: str) -> str:
    return STDIN_NAME if file == "-" else file


def _read_standard_input() -> str:
    from ncd.loader import Loader

    if sys.stdin is None:
        raise UsageError("there is no standard input to read")
    loader = Loader(Path.cwd(), {})
    text = loader.read_stream(sys.stdin.buffer, STDIN_NAME)
    if text is None:
        raise NcdError(loader.sink.diagnostics, {})
    return text


def _load(file: str, sizes: dict[str, int], output: str | None,
          include: Sequence[str] = ()) -> Program:
    """Load `file` (`-`: standard input), its imports looked for also in the folders of
    `include` (`-I`), and check that writing `output` would replace none of the files read."""
    if file == "-":
        from ncd.loader import load_program

        text = _read_standard_input()
        if "\n" not in text and text.strip().endswith(".ncd"):
            text += "\n"  # `load_program` takes one line ending in `.ncd` for a file's name
        program = Program(*load_program(text, sizes, name=STDIN_NAME, include=include))
    else:
        program = load(_check_input(file), sizes=sizes, include=include)
    if output is not None and output != "-":
        _check_output(output, file, program)
    return program


def _check_output(output: str, file: str, program: Program) -> None:
    """`-o` naming a file the command reads (the file given or one it imports, under any name:
    a symbolic or a hard link too) would replace the source, and one naming a folder, FIFO,
    device or socket cannot be replaced: usage errors, found before anything is computed."""
    _output_target(Path(output))
    try:
        written = os.stat(output)
    except OSError:
        return  # nothing there yet (or nothing to examine: the write reports it)
    for name in [file, *program.sources]:
        if name in ("-", STDIN_NAME):
            continue
        try:
            read = os.stat(name)
        except OSError:
            continue
        if os.path.samestat(read, written):
            raise UsageError(f"cannot write {output}: it is an input of the command ({name}); "
                             "choose another output file")


def _output_folder(args: argparse.Namespace, inputs: Inputs, suffix: str) -> dict[str, str]:
    """With several inputs, where each one's output goes: `DIR/<stem>.<suffix>` in the folder
    `-o DIR` (made if needed; standard input's stem is `stdin`). Empty with one input."""
    if not inputs.several:
        return {}
    if args.definition is not None:
        raise UsageError(f"a definition ({args.definition}) can be chosen for one input file "
                         "only; with several inputs each file's main definition is used")
    if args.output in (None, "-"):
        raise UsageError(f"several inputs need -o DIR: a folder for DIR/<name>.{suffix}, one "
                         "file per input")
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {folder}: not a folder; with several inputs -o names a folder "
                         "(made if it does not exist)")
    targets: dict[str, str] = {}
    claimed: dict[str, str] = {}
    for file in inputs.files:
        target = str(folder / f"{'stdin' if file == '-' else Path(file).stem}.{suffix}")
        if target in claimed:
            raise UsageError(f"{claimed[target]} and {_shown(file)} would both be written to "
                             f"{target}; give them in separate commands")
        claimed[target] = _shown(file)
        targets[file] = target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot make the folder {folder}: {error.strerror or error}") from None
    return targets


def include_option(parser: argparse.ArgumentParser) -> None:
    """Declare `-I DIR` (repeatable): the folders searched for imports."""
    parser.add_argument("-I", "--include", action="append", metavar="DIR",
                        help="a folder searched for imports not found beside the importing "
                        "file (repeatable, in order; then $NCD_PATH, then the standard "
                        "library: import \"std/attention.ncd\")")


def include_folders(args: argparse.Namespace) -> list[str]:
    """The `-I` folders, in order; a usage error for one that is not a folder."""
    folders: list[str] = getattr(args, "include", None) or []
    for folder in folders:
        if not os.path.isdir(folder):
            raise UsageError(f"-I {folder}: not a folder")
    return folders


def parse_size_overrides(items: Sequence[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"-D expects NAME=INTEGER, got {item!r}")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise UsageError(f"-D {name}: {value!r} is not an integer") from None
        if sizes[name] <= 0:
            raise UsageError(f"-D {name}={value}: a size is a positive integer")
    return sizes


# ---- reporting -----------------------------------------------------------------------------


def color_enabled(args: argparse.Namespace, stream: TextIO | None = None) -> bool:
    """Whether to colour what is written to `stream` (standard error by default): `--color
    always|never` (`--no-color`) decides; with `auto` (the default), a non-empty `NO_COLOR`
    turns colour off, else a non-empty `FORCE_COLOR` turns it on, else colour is used when the
    stream is a terminal."""
    choice = getattr(args, "color", None) or "auto"
    if choice != "auto":
        return bool(choice == "always")
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


@dataclass
class Reporter:
    """How one command reports: diagnostics as text or JSON, other errors as text, a progress
    bar over many inputs; and the worst exit code so far."""

    color: bool
    json: bool
    debug: bool
    json_to_stdout: bool
    progress: ProgressBar | None = None
    collected: list[dict[str, Any]] = field(default_factory=list)
    status: int = EXIT_OK

    @classmethod
    def of(cls, args: argparse.Namespace, *, json_to_stdout: bool = False) -> Reporter:
        return cls(color=color_enabled(args), json=getattr(args, "diagnostics", None) == "json",
                   debug=bool(getattr(args, "debug", False)), json_to_stdout=json_to_stdout)

    def out(self, text: str) -> None:
        if self.progress:
            self.progress.clear()
        _write_text(text)

    def err(self, text: str) -> None:
        if self.progress:
            self.progress.clear()
        print(text, file=sys.stderr)

    def fail(self, status: int) -> int:
        self.status = max(self.status, status)
        return status

    def diagnostics(self, error: NcdError, file: str, *, summary: bool) -> int:
        """Report the diagnostics of one input; exit 2 when one is a bad size override."""
        if self.json:
            self.collected.extend(d.to_json(_shown(file)) for d in error.diagnostics)
        else:
            self.err(error.render(color=self.color))
            if summary:
                count = len(error.diagnostics)
                self.err(f"{_shown(file)}: {count} error{'s' if count != 1 else ''}")
        overrides = any(d.code == "E314" for d in error.diagnostics)
        return self.fail(EXIT_USAGE if overrides else EXIT_INPUT)

    def usage(self, message: str) -> int:
        self.err(f"ncd: error: {message}")
        return self.fail(EXIT_USAGE)

    def failure(self, error: Exception) -> int:
        """Report an error other than diagnostics; its exit code."""
        if isinstance(error, UsageError):
            return self.usage(str(error))
        if isinstance(error, OSError):
            return self.usage(_os_error_message(error))
        if self.progress:
            self.progress.clear()
        if self.debug:
            traceback.print_exception(error)
        else:
            print(f"ncd: internal error ({type(error).__name__}). This is a bug in ncd, not in "
                  "your input; please report it with the file that triggered it. Run with "
                  "--debug to see the traceback.", file=sys.stderr)
        return self.fail(EXIT_INTERNAL)

    def each(self, inputs: Inputs, work: Callable[[str], None], *, summary: bool) -> int:
        """Run `work` on each input file, reporting its errors and going on with the next;
        the worst exit code. A progress bar shows on a terminal for more than 5 files."""
        for problem in inputs.problems:
            self.usage(problem)
        if len(inputs.files) > 5 and sys.stderr is not None and sys.stderr.isatty():
            self.progress = ProgressBar(sys.stderr)
        try:
            for index, file in enumerate(inputs.files):
                if self.progress:
                    self.progress.show(index, len(inputs.files), after=_shown(file))
                try:
                    work(file)
                except NcdError as error:
                    self.diagnostics(error, file, summary=summary)
                except BrokenPipeError:
                    raise
                except Exception as error:  # reported; the next input is read all the same
                    self.failure(error)
        finally:
            if self.progress:
                self.progress.clear()
                self.progress = None
        return self.status

    def finish(self, *, always: bool = False) -> int:
        """Write the JSON list of diagnostics (when asked for: `always`, or when there are
        some); the worst exit code."""
        if self.json and (always or self.collected):
            text = json.dumps(self.collected, indent=2, ensure_ascii=False) + "\n"
            if self.json_to_stdout:
                self.out(text)
            else:
                sys.stderr.write(text)
                sys.stderr.flush()
        return self.status


def _write_text(text: str) -> None:
    """Write `text` to standard output as UTF-8 (whatever the locale), or as text when standard
    output is a text stream without bytes underneath (`contextlib.redirect_stdout`)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def _os_error_message(error: OSError) -> str:
    return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")


def _definition(program: Program, name: str | None) -> str:
    if name is not None and name in program.training_names:
        training = program.ir.training(name)
        raise UsageError(f"`{name}` is a training set-up, not a definition; its model is "
                         f"`{training.model}` (`ncd render` draws the set-up as a lens, "
                         "`ncd compile` writes its training step)")
    if not program.names:
        raise UsageError(f"{program.ir.source} defines nothing; add a `def`")
    if name is None:
        return program.main.name
    if name not in program:
        from ncd.diagnostics import did_you_mean

        hint = did_you_mean(name, program.names)
        raise UsageError(f"no definition named {name!r} in {program.ir.source}"
                         + (f"; {hint}" if hint else f"; it defines {', '.join(program.names)}"))
    return name


def _emit(data: str | bytes, output: str | None) -> None:
    """Write `data` to the file `output`, or to standard output (`-` or None)."""
    if output not in (None, "-"):
        write_atomically(Path(output), data.encode("utf-8") if isinstance(data, str) else data)
    elif isinstance(data, str):
        _write_text(data)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def _stdout_is_a_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# ---- commands ---------------------------------------------------------------------------


def command_check(args: argparse.Namespace) -> int:
    reporter = Reporter.of(args, json_to_stdout=True)
    sizes = parse_size_overrides(args.define or [])
    include = include_folders(args)
    if args.symmetry:
        if reporter.json:
            raise UsageError("--symmetry writes the certificates as text; --format json "
                             "writes only diagnostics: give one of them")
        _take_definition(args)
    inputs = expand_inputs(args.inputs)

    if args.symmetry:
        if args.definition is not None and inputs.several:
            raise UsageError(f"a definition ({args.definition}) can be chosen for one input "
                             "file only")

    def work(file: str) -> None:
        program = _load(file, sizes, None, include)
        if args.symmetry:
            from ncd.symmetry import report

            names = [_definition(program, args.definition)] if args.definition else \
                [d.name for d in program.definitions if d.name in _own_names(program)]
            reporter.out("".join(report(program.ir, name) for name in names))
            return
        if not args.quiet and not reporter.json:
            signatures = "".join(f"  {d.signature}\n" for d in program.definitions)
            if program.ir.trainings:  # imported only then (with `ncd.learning`, ~10 ms)
                from ncd.training import describe

                signatures += "".join(f"  train {describe(t)}\n" for t in program.ir.trainings)
            count = len(program.names)
            trainings = len(program.ir.trainings)
            also = f", {trainings} training set-up{'s' if trainings != 1 else ''}" \
                if trainings else ""
            reporter.out(f"{signatures}{_shown(file)}: ok "
                         f"({count} definition{'s' if count != 1 else ''}{also})\n")

    reporter.each(inputs, work, summary=True)
    return reporter.finish(always=True)


def _own_names(program: Program) -> set[str]:
    """The definitions a file makes itself (not those it imports)."""
    source = program.ir.source
    return {d.name for d in program.ir.definitions
            if d.span is None or d.span.file == source} or set(program.names)


def command_stats(args: argparse.Namespace) -> int:
    from ncd.stats import StatsError, stats, table

    _take_definition(args)
    reporter = Reporter.of(args)
    sizes = parse_size_overrides([*(args.define or []), *_size_list(args.sizes or [])])
    include = include_folders(args)
    inputs = expand_inputs(args.inputs)
    if inputs.several and args.definition is not None:
        raise UsageError(f"a definition ({args.definition}) can be chosen for one input file "
                         "only")

    def work(file: str) -> None:
        program = _load(file, sizes, args.output, include)
        name = _definition(program, args.definition)
        try:
            figures = stats(program.ir, name)
        except StatsError as error:
            raise UsageError(str(error)) from None
        if args.json:
            text = json.dumps({"file": _shown(file), **figures.to_json()}, indent=2,
                              ensure_ascii=False) + "\n"
        else:
            text = table(figures)
        _emit(text, args.output)

    reporter.each(inputs, work, summary=inputs.several)
    return reporter.finish()


def _size_list(items: Sequence[str]) -> list[str]:
    """`--sizes x=128,b=4` as the overrides `x=128`, `b=4`."""
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def command_ir(args: argparse.Namespace) -> int:
    if args.schema:
        if args.inputs or args.definition:
            raise UsageError("--schema prints the JSON Schema of the IR; it takes no FILE or DEF")
        from ncd import ir

        _emit(json.dumps(ir.Program.model_json_schema(), indent=2, sort_keys=True) + "\n",
              args.output)
        return EXIT_OK
    if not args.inputs:
        raise UsageError("ncd ir: a FILE is needed (or --schema)")
    _take_definition(args)
    reporter = Reporter.of(args)
    sizes = parse_size_overrides(args.define or [])
    include = include_folders(args)
    inputs = expand_inputs(args.inputs)
    targets = _output_folder(args, inputs, "json")

    def work(file: str) -> None:
        output = targets.get(file, args.output)
        program = _load(file, sizes, output, include)
        if args.definition:
            name = _definition(program, args.definition)
            text = program[name].ir.model_dump_json(indent=2)
        else:
            text = program.to_json()
        _emit(text + "\n", output)

    reporter.each(inputs, work, summary=inputs.several)
    return reporter.finish()


def _render_format(args: argparse.Namespace, several: bool) -> str:
    """The format to render to: the suffix of `-o FILE`, else `-f`, else svg; a usage error
    when `-f` names another format than the suffix, or the suffix is no format and no `-f`
    says one."""
    output = args.output if not several and args.output not in (None, "-") else None
    suffix = Path(output).suffix.lower().lstrip(".") if output else ""
    fmt: str | None = args.format
    if suffix in RENDER_FORMATS:
        if fmt is not None and fmt != suffix:
            raise UsageError(f"-f {fmt} contradicts the suffix of -o {output} (.{suffix}); "
                             "the suffix picks the format: drop -f or change the suffix")
        fmt = suffix
    elif suffix and fmt is None:
        raise UsageError(f"cannot render to .{suffix}; use one of: "
                         + ", ".join(f".{f}" for f in RENDER_FORMATS)
                         + " (or say the format with -f)")
    fmt = fmt or "svg"
    if args.overview and args.annotate != "none":
        raise UsageError("--annotate draws figures on the diagram, not on the overview "
                         "(--overview)")
    if args.overview and fmt == "tex":
        raise UsageError("the overview (--overview) is drawn as .svg, .png or .pdf, or written "
                         "as graphviz's .dot; not as .tex")
    if args.standalone and fmt != "tex":
        raise UsageError(f"--standalone makes a LaTeX document: render to .tex, not .{fmt}")
    if fmt in ("png", "pdf") and args.output is None and _stdout_is_a_terminal():
        raise UsageError(f"{fmt.upper()} is binary and standard output is a terminal; "
                         "use -o FILE or -o -")
    return fmt


def _draw(args: argparse.Namespace, program: Program, name: str, fmt: str,
          lens: Any = None) -> str | bytes:
    """The drawing `args` ask for; `lens` (a `LensView`): a derivative drawn as a lens."""
    if args.overview or fmt == "dot":
        from ncd.renderers.dot import LayoutProgramMissing, program_to_dot, render_dot

        source = program_to_dot(program.ir, name, collapse_depth=args.collapse)
        try:
            return source if fmt == "dot" else render_dot(source, cast(Format, fmt))
        except LayoutProgramMissing as error:
            raise UsageError(str(error)) from None
    from ncd.renderers import RenderOptions, render_pdf, render_svg, render_tikz

    notes: tuple[Any, ...] = ()
    legend = None
    if args.annotate == "cost":
        from ncd.renderers.annotate import cost_notes
        from ncd.stats import StatsError

        try:
            notes, legend = cost_notes(program.ir, name)
        except StatsError as error:
            raise UsageError(str(error)) from None
    options = RenderOptions(wire_labels=args.labels, collapse_depth=args.collapse,
                            theme=args.theme, text=args.text, expand_calls=args.expand,
                            show_params=args.params, standalone=args.standalone,
                            notes=notes, legend=legend, lens=lens,
                            **({"width": args.width} if args.width is not None else {}))
    if fmt == "tex":
        return render_tikz(program.ir, name, options)
    if fmt == "pdf":
        return render_pdf(program.ir, name, options)
    svg = render_svg(program.ir, name, options)
    if fmt == "svg":
        return svg
    from ncd.renderers.export import svg_to_png

    return svg_to_png(svg)


def command_render(args: argparse.Namespace) -> int:
    _take_definition(args)
    reporter = Reporter.of(args)
    sizes = parse_size_overrides(args.define or [])
    include = include_folders(args)
    inputs = expand_inputs(args.inputs)
    fmt = _render_format(args, inputs.several)
    targets = _output_folder(args, inputs, fmt)

    def work(file: str) -> None:
        output = targets.get(file, args.output)
        program = _load(file, sizes, output, include)
        view = None
        if args.definition is not None and args.definition in program.training_names:
            # a training set-up: the lens of its model, with the loss and the optimiser
            program, name, view = program.training_drawing(args.definition)
            _emit(_draw(args, program, name, fmt, view), output)
            return
        name = _definition(program, args.definition)
        if args.grad or args.lens:
            program, name, view = program.derivative_drawing(name, lens=args.lens)
        _emit(_draw(args, program, name, fmt, view), output)

    reporter.each(inputs, work, summary=inputs.several)
    return reporter.finish()


def command_compile(args: argparse.Namespace) -> int:
    _take_definition(args)
    reporter = Reporter.of(args)
    sizes = parse_size_overrides(args.define or [])
    include = include_folders(args)
    inputs = expand_inputs(args.inputs)
    targets = _output_folder(args, inputs, "py")

    def work(file: str) -> None:
        output = targets.get(file, args.output)
        program = _load(file, sizes, output, include)
        if args.definition is not None and args.definition in program.training_names:
            _emit(program.compile(args.definition), output)  # a training step
            return
        name = _definition(program, args.definition) if args.definition or not program.names \
            or args.grad else None
        if args.grad and name is not None:
            backward = program.grad(name)
            program, name = backward.program, backward.name
        _emit(program.compile(name), output)

    reporter.each(inputs, work, summary=inputs.several)
    return reporter.finish()


def command_fmt(args: argparse.Namespace) -> int:
    """Format files in place (`--check`: report, `--diff`: show; both exit 1 when a file would
    change); `-` or none: standard input to standard output."""
    import difflib

    from ncd.diagnostics import Diagnostic
    from ncd.formatter import format_source
    from ncd.ir import Span
    from ncd.loader import Loader
    from ncd.parser import ParseFailure

    reporter = Reporter.of(args)
    inputs = expand_inputs(args.inputs or ["-"])

    def work(path: str) -> None:
        loader = Loader(Path.cwd(), {})
        name = _shown(path)
        if path == "-":
            if sys.stdin is None:
                raise UsageError("there is no standard input to read")
            read = loader.read_stream(sys.stdin.buffer, name)
        else:
            read = loader.read(_check_input(path), None, display=name)
        if read is None:
            raise NcdError(loader.sink.diagnostics, {})
        text = read
        try:
            if "\x00" in text:
                raise ParseFailure(Diagnostic(
                    "E104", "the input is not text (it contains NUL bytes)",
                    Span(file=name, line=1, column=1, end_line=1, end_column=2)))
            formatted = format_source(text, name)
        except ParseFailure as failure:
            raise NcdError([failure.diagnostic], {name: text}) from None
        changed = formatted != text
        if args.diff and changed:
            reporter.out("".join(difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True),
                name, f"{name} (formatted)")))
        if args.check or args.diff:
            if changed:
                if args.diff:
                    reporter.err(f"would reformat {name}")
                else:
                    reporter.out(f"would reformat {name}\n")
                reporter.fail(EXIT_INPUT)
        elif path == "-":
            reporter.out(formatted)
        elif changed:
            write_atomically(Path(path), formatted.encode("utf-8"))
            reporter.out(f"reformatted {name}\n")

    reporter.each(inputs, work, summary=True)
    return reporter.finish()


# ---- driver -----------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _width(text: str) -> float:
    from ncd.renderers.layout.options import MIN_WIDTH

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not MIN_WIDTH <= value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a width in px of at least {MIN_WIDTH:g}, got {text!r}")
    return value


def _global_options(*, defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. On the subcommands their
    defaults are suppressed, so that an option given before the command is not reset."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--color", choices=("auto", "always", "never"), default=default(None),
                         help="colour diagnostics: auto (the default) when standard error is a "
                         "terminal, unless NO_COLOR or FORCE_COLOR is set (non-empty)")
    options.add_argument("--no-color", dest="color", action="store_const", const="never",
                         default=default(None), help="the same as --color never")
    options.add_argument("--debug", action="store_true", default=default(False),
                         help="show the traceback of an internal error")
    return options


# The commands whose arguments may come before, between and after their options.
_INTERMIXED = ("check", "ir", "render", "fmt", "compile", "stats")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncd", parents=[_global_options(defaults=True)],
        description="Neural circuit diagrams: check, draw and compile .ncd files.",
        epilog="Exit codes: 0 success, 1 diagnostics in the input, 2 usage or I/O error, "
        "3 internal error of ncd.")
    parser.add_argument("--version", action="version", version="ncd 0.1.0")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    shared = _global_options(defaults=False)

    def inputs(sub: argparse.ArgumentParser, nargs: str, definition: bool) -> None:
        sub.add_argument("inputs", nargs=nargs, metavar="FILE",
                         help="a .ncd file, a folder (every *.ncd file below it), or - "
                         "(standard input)")
        if definition:
            # For the usage line and the help only: FILE takes every argument, and
            # `_take_definition` tells a DEF among them.
            sub.add_argument("definition_argument", nargs="?", metavar="DEF",
                             default=argparse.SUPPRESS,
                             help="the definition to use, with one input FILE (the last of "
                             "two or more arguments, when it is a name not ending in .ncd)")
            sub.add_argument("--def", dest="definition", metavar="NAME",
                             help="the definition to use (one input FILE only); the same as DEF")

    def loading(sub: argparse.ArgumentParser, *, defines: bool = True) -> None:
        if defines:
            sub.add_argument("-D", "--define", action="append", metavar="AXIS=SIZE",
                             help="override the size of a declared axis (repeatable); the "
                             "axis must exist and the size be a positive integer")
            include_option(sub)
        sub.add_argument("--diagnostics", choices=("text", "json"), default="text",
                         help="how diagnostics are written to standard error: text (the "
                         "default) or a JSON list")

    def output(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("-o", "--output", metavar="OUT",
                         help=f"write {what} to the file OUT (- : standard output, the default);"
                         " with several inputs, OUT is a folder")

    check = commands.add_parser(
        "check", parents=[shared], help="parse and check files; report every error",
        description="Parse and check .ncd files and report every error, with location, "
        "excerpt and hint. Prints each definition's signature unless -q.")
    inputs(check, "+", definition=False)
    check.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    check.add_argument("-D", "--define", action="append", metavar="AXIS=SIZE",
                       help="override the size of a declared axis (repeatable); the axis must "
                       "exist and the size be a positive integer")
    include_option(check)
    check.add_argument("--symmetry", action="store_true",
                       help="for each input axis of each definition (or of DEF), whether it "
                       "is equivariant or invariant under permutations and shifts of that "
                       "axis, or neither and the line that breaks it")
    check.add_argument("--def", dest="definition", metavar="NAME",
                       help="with --symmetry: the definition to certify (one input FILE); "
                       "a last argument DEF says the same")
    check.add_argument("--format", "--diagnostics", dest="diagnostics",
                       choices=("text", "json"), default="text",
                       help="text (the default: diagnostics on standard error) or json (one "
                       "JSON list of every diagnostic on standard output, and nothing else)")
    check.set_defaults(run=command_check)

    ir_cmd = commands.add_parser(
        "ir", parents=[shared], help="print the typed IR as JSON",
        description="Print the checked, typed IR of a file (or of one definition) as JSON.")
    inputs(ir_cmd, "*", definition=True)
    output(ir_cmd, "the JSON")
    ir_cmd.add_argument("--schema", action="store_true",
                        help="print the IR's JSON Schema instead (no FILE)")
    loading(ir_cmd)
    ir_cmd.set_defaults(run=command_ir)

    render = commands.add_parser(
        "render", parents=[shared], help="draw a definition (svg, pdf, png, dot, tex)",
        description="Draw a definition (by default the last of the file) as a neural circuit "
        "diagram; the name of a training set-up draws the set-up as a lens (the model's "
        "forward and backward passes, the loss, the optimiser on the parameter wires). The "
        "format is the suffix of -o FILE, else -f, else svg.")
    inputs(render, "+", definition=True)
    output(render, "the drawing")
    render.add_argument("-f", "--format", choices=RENDER_FORMATS,
                        help="the output format when -o has no suffix (standard output, a "
                        "folder of outputs); it must agree with the suffix of -o FILE")
    render.add_argument("--labels", choices=("names", "sizes", "both"), default="names",
                        help="what wires are labelled with")
    render.add_argument("--collapse", type=_non_negative_int, metavar="DEPTH",
                        help="draw blocks nested deeper than DEPTH as one box")
    render.add_argument("--theme", choices=("light", "dark", "print"), default="light",
                        help="the colours of the drawing")
    render.add_argument("--text", choices=("paths", "text"), default="paths",
                        help="labels as glyph outlines (default) or selectable <text>")
    render.add_argument("--expand", action="store_true",
                        help="draw called definitions in place instead of as named boxes")
    render.add_argument("--params", action="store_true",
                        help="draw the parameter wires of learned operations")
    render.add_argument("--width", type=_width, metavar="PX",
                        help="break a composition wider than PX onto several rows, the wires "
                        "that cross a break ending and starting at a numbered mark (default "
                        "880: 11 px labels print at 6 pt on a page 170 mm wide)")
    render.add_argument("--overview", action="store_true",
                        help="draw the graphviz overview (one node per operation) instead: "
                             ".svg, .png, .pdf (or .dot, its DOT text)")
    render.add_argument("--standalone", action="store_true",
                        help="TikZ (.tex) as a complete LaTeX document, not a tikzpicture")
    render.add_argument("--annotate", choices=("none", "cost"), default="none",
                        help="cost: each box shows its FLOPs and output bytes and is shaded "
                        "by its FLOPs (the figures of ncd stats), with a legend")
    render.add_argument("--grad", action="store_true",
                        help="draw the backward definition (NAME_grad: the gradients of the "
                        "inputs and parameters from those of the outputs; docs/derivatives.md) "
                        "as a lens: the forward block on top, the backward block under it "
                        "running right to left, the saved values marked")
    render.add_argument("--lens", action="store_true",
                        help="draw the forward and backward passes together as a lens (the "
                        "lens definition NAME_lens: the forward results leave at the top "
                        "right, the gradients at the bottom left)")
    loading(render)
    render.set_defaults(run=command_render)

    fmt = commands.add_parser(
        "fmt", parents=[shared], help="format files in place (`-` or none: stdin to stdout)",
        description="Rewrite .ncd files in the canonical layout, comments kept. With no FILE "
        "or -, read standard input and write the result to standard output.")
    fmt.add_argument("inputs", nargs="*", metavar="FILE",
                     help="a .ncd file, a folder (every *.ncd file below it), or - "
                     "(standard input; the default)")
    fmt.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if a file is not formatted")
    fmt.add_argument("--diff", action="store_true",
                     help="print a diff instead of writing; exit 1 if a file is not formatted")
    loading(fmt, defines=False)
    fmt.set_defaults(run=command_fmt)

    stats_cmd = commands.add_parser(
        "stats", parents=[shared], help="parameters, FLOPs, memory of a definition",
        description="Figures read off a definition (by default the last of the file): per "
        "operation, per block and in total, parameters, multiply-adds and FLOPs, bytes of "
        "each output, the largest intermediate, peak forward memory and arithmetic "
        "intensity; polynomials in the sizes fixed at run time, with how each grows.")
    inputs(stats_cmd, "+", definition=True)
    output(stats_cmd, "the figures")
    stats_cmd.add_argument("--json", action="store_true",
                           help="the figures as JSON (each: text, value when the sizes are "
                           "fixed, and the highest power of each symbol)")
    stats_cmd.add_argument("--sizes", action="append", metavar="AXIS=SIZE,...",
                           help="fix symbolic sizes (the same as -D, several at once)")
    loading(stats_cmd)
    stats_cmd.set_defaults(run=command_stats)

    compile_cmd = commands.add_parser(
        "compile", parents=[shared], help="generate a PyTorch module",
        description="Generate the source of PyTorch modules: of every definition, or of DEF "
        "and what it calls.")
    inputs(compile_cmd, "+", definition=True)
    output(compile_cmd, "the Python source")
    compile_cmd.add_argument("--grad", action="store_true",
                             help="compile the backward definition of DEF (the main one by "
                             "default): a module computing the gradients of the inputs and "
                             "parameters from those of the outputs, with no torch.autograd "
                             "(docs/derivatives.md)")
    loading(compile_cmd)
    compile_cmd.set_defaults(run=command_compile)

    # Commands that live in modules of their own (the preview server, the site builder, the
    # language server) declare their arguments there, with the global options (`--color`,
    # `--no-color`, `--debug`) as a parent; each module imports only the standard library at
    # import time, so building this parser stays fast.
    from ncd import lsp, site, train_command, watch

    for module in (train_command, watch, site, lsp):
        module.add_parser(commands, [shared])
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; FILE arguments may also follow options (`render a.ncd -o x b.ncd`)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        if args.command in _INTERMIXED and not any(e.startswith("-") and e != "-"
                                                   for e in extras):
            args.inputs.extend(extras)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code not in (0, None) else EXIT_OK
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except NcdError as error:
        print(error.render(color=color_enabled(args)), file=sys.stderr)
        return EXIT_INPUT
    except UsageError as error:
        print(f"ncd: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader of standard output went away (`ncd ir m.ncd | head`): stop quietly, as a
        # program stopped by SIGPIPE does, and keep Python from reporting it again at exit.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + getattr(signal, "SIGPIPE", 13)
    except OSError as error:
        print(f"ncd: error: {_os_error_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Terminated as stop:
        return 128 + stop.signum
    except Exception as error:  # a bug in ncd, never the user's input
        return Reporter.of(args).failure(error)


if __name__ == "__main__":
    sys.exit(main())
