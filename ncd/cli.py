"""The `ncd` command line: check, ir, render, compile.

Exit codes: 0 success, 1 diagnostics in the input, 2 usage or I/O error, 3 an internal error
of ncd itself (please report it; `--debug` shows the traceback).
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
from pathlib import Path
from types import FrameType
from typing import Literal, cast

from ncd.api import Program, load
from ncd.diagnostics import NcdError
from ncd.loader import kind_of_file

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
            raise UsageError(f"-D {name}: a size is a positive integer")
    return sizes


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


def _load(args: argparse.Namespace, path: str) -> Program:
    program = load(_check_input(path), sizes=parse_size_overrides(args.define or []))
    _check_output(args, program)
    return program


def _check_output(args: argparse.Namespace, program: Program) -> None:
    """`-o` naming a file the command reads (the file given or one it imports, under any name:
    a symbolic or a hard link too) would replace the source, and one naming a folder, FIFO,
    device or socket cannot be replaced: usage errors, found before anything is computed."""
    output = getattr(args, "output", None)
    if output in (None, "-"):
        return
    _output_target(Path(output))
    try:
        written = os.stat(output)
    except OSError:
        return  # nothing there yet (or nothing to examine: the write reports it)
    for name in [args.file, *program.sources]:
        try:
            read = os.stat(name)
        except OSError:
            continue
        if os.path.samestat(read, written):
            raise UsageError(f"cannot write {output}: it is an input of the command ({name}); "
                             "choose another output file")


def _definition(program: Program, name: str | None) -> str:
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


def _emit(args: argparse.Namespace, data: str | bytes) -> None:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if args.output in (None, "-"):
        if isinstance(data, bytes) and not args.output:
            raise UsageError("binary output needs -o FILE")
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
    else:
        write_atomically(Path(args.output), raw)


# ---- commands ---------------------------------------------------------------------------


def command_check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            program = _load(args, path)
        except NcdError as error:
            print(error.render(color=_color(args)), file=sys.stderr)
            count = len(error.diagnostics)
            print(f"{path}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
            status = max(status, EXIT_INPUT)
            continue
        if not args.quiet:
            for definition in program.definitions:
                print(f"  {definition.signature}")
            print(f"{path}: ok ({len(program.names)} definitions)")
    return status


def command_ir(args: argparse.Namespace) -> int:
    if args.schema:
        from ncd import ir

        _emit(args, json.dumps(ir.Program.model_json_schema(), indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    if not args.file:
        raise UsageError("ncd ir: a FILE is needed (or --schema)")
    program = _load(args, args.file)
    if args.definition:
        name = _definition(program, args.definition)
        text = program[name].ir.model_dump_json(indent=2)
    else:
        text = program.to_json()
    _emit(args, text + "\n")
    return EXIT_OK


def command_render(args: argparse.Namespace) -> int:
    program = _load(args, args.file)
    name = _definition(program, args.definition)
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else "svg"
        fmt = suffix or "svg"
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"cannot render to .{fmt}; use one of: "
                         + ", ".join(f".{f}" for f in RENDER_FORMATS))
    if args.overview and fmt == "tex":
        raise UsageError("the overview (--overview) is drawn as .svg, .png or .pdf, or written "
                         "as graphviz's .dot; not as .tex")
    if args.standalone and fmt != "tex":
        raise UsageError(f"--standalone makes a LaTeX document: render to .tex, not .{fmt}")
    data: str | bytes
    if args.overview or fmt == "dot":
        from ncd.renderers.dot import LayoutProgramMissing, program_to_dot, render_dot

        source = program_to_dot(program.ir, name, collapse_depth=args.collapse)
        try:
            data = source if fmt == "dot" else render_dot(source, cast(Format, fmt))
        except LayoutProgramMissing as error:
            raise UsageError(str(error)) from None
        _emit(args, data)
        return EXIT_OK
    from ncd.renderers import RenderOptions, render_pdf, render_svg, render_tikz

    options = RenderOptions(wire_labels=args.labels, collapse_depth=args.collapse,
                            theme=args.theme, text=args.text, expand_calls=args.expand,
                            show_params=args.params, standalone=args.standalone)
    if fmt == "tex":
        data = render_tikz(program.ir, name, options)
    elif fmt == "pdf":
        data = render_pdf(program.ir, name, options)
    else:
        svg = render_svg(program.ir, name, options)
        if fmt == "svg":
            data = svg
        else:
            from ncd.renderers.export import svg_to_png

            data = svg_to_png(svg)
    _emit(args, data)
    return EXIT_OK


def command_fmt(args: argparse.Namespace) -> int:
    """Format files in place (`--check`: report, `--diff`: show); `-` or none: stdin to stdout."""
    import difflib

    from ncd.diagnostics import Diagnostic
    from ncd.formatter import format_source
    from ncd.ir import Span
    from ncd.loader import STDIN_NAME, Loader
    from ncd.parser import ParseFailure

    def report(name: str, diagnostics: list[Diagnostic], sources: dict[str, str]) -> None:
        print(NcdError(diagnostics, sources).render(color=_color(args)), file=sys.stderr)
        count = len(diagnostics)
        print(f"{name}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)

    def out(text: str) -> None:
        sys.stdout.buffer.write(text.encode("utf-8"))

    status = EXIT_OK
    for path in args.files or ["-"]:
        loader = Loader(Path.cwd(), {})
        if path == "-":
            name = STDIN_NAME
            if sys.stdin is None:
                raise UsageError("there is no standard input to read")
            read = loader.read_stream(sys.stdin.buffer, name)
        else:
            name = path
            read = loader.read(_check_input(path), None, display=name)
        if read is None:
            report(name, loader.sink.diagnostics, {})
            status = max(status, EXIT_INPUT)
            continue
        text = read
        try:
            if "\x00" in text:
                raise ParseFailure(Diagnostic(
                    "E104", "the input is not text (it contains NUL bytes)",
                    Span(file=name, line=1, column=1, end_line=1, end_column=2)))
            formatted = format_source(text, name)
        except ParseFailure as failure:
            report(name, [failure.diagnostic], {name: text})
            status = max(status, EXIT_INPUT)
            continue
        changed = formatted != text
        if args.diff and changed:
            out("".join(difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True),
                name, f"{name} (formatted)")))
        if args.check or args.diff:
            if changed:
                print(f"would reformat {name}", file=sys.stderr if args.diff else sys.stdout)
                status = max(status, EXIT_INPUT if args.check else EXIT_OK)
        elif path == "-":
            out(formatted)
        elif changed:
            write_atomically(Path(path), formatted.encode("utf-8"))
            print(f"reformatted {name}")
    sys.stdout.flush()
    return status


def command_compile(args: argparse.Namespace) -> int:
    program = _load(args, args.file)
    name = _definition(program, args.definition) if args.definition or not program.names \
        else None
    _emit(args, program.compile(name))
    return EXIT_OK


# ---- driver -----------------------------------------------------------------------------


def _color(args: argparse.Namespace) -> bool:
    if getattr(args, "no_color", False) or os.environ.get("NO_COLOR"):
        return False
    return sys.stderr.isatty()


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncd", description="Neural circuit diagrams: check, draw and compile .ncd files.")
    parser.add_argument("--version", action="version", version="ncd 0.1.0")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an internal error")
    parser.add_argument("--no-color", action="store_true", help="plain diagnostics")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-D", "--define", action="append", metavar="AXIS=SIZE",
                         help="override the size of a declared axis (repeatable)")

    check = commands.add_parser("check", help="parse and check files; report every error")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    common(check)
    check.set_defaults(run=command_check)

    ir_cmd = commands.add_parser("ir", help="print the typed IR as JSON")
    ir_cmd.add_argument("file", nargs="?", metavar="FILE")
    ir_cmd.add_argument("definition", nargs="?", metavar="DEF")
    ir_cmd.add_argument("-o", "--output", metavar="OUT")
    ir_cmd.add_argument("--schema", action="store_true", help="print the IR's JSON Schema")
    common(ir_cmd)
    ir_cmd.set_defaults(run=command_ir)

    render = commands.add_parser("render", help="draw a definition (svg, pdf, png, dot, tex)")
    render.add_argument("file", metavar="FILE")
    render.add_argument("definition", nargs="?", metavar="DEF")
    render.add_argument("-o", "--output", metavar="OUT", help="the suffix picks the format")
    render.add_argument("-f", "--format", choices=RENDER_FORMATS)
    render.add_argument("--labels", choices=("names", "sizes", "both"), default="names",
                        help="what wires are labelled with")
    render.add_argument("--collapse", type=_non_negative_int, metavar="DEPTH",
                        help="draw blocks nested deeper than DEPTH as one box")
    render.add_argument("--theme", choices=("light", "dark", "print"), default="light")
    render.add_argument("--text", choices=("paths", "text"), default="paths",
                        help="labels as glyph outlines (default) or selectable <text>")
    render.add_argument("--expand", action="store_true",
                        help="draw called definitions in place instead of as named boxes")
    render.add_argument("--params", action="store_true",
                        help="draw the parameter wires of learned operations")
    render.add_argument("--overview", action="store_true",
                        help="draw the graphviz overview (one node per operation) instead: "
                             ".svg, .png, .pdf (or .dot, its DOT text)")
    render.add_argument("--standalone", action="store_true",
                        help="TikZ (.tex) as a complete LaTeX document, not a tikzpicture")
    common(render)
    render.set_defaults(run=command_render)

    fmt = commands.add_parser("fmt", help="format files in place (`-` or none: stdin to stdout)")
    fmt.add_argument("files", nargs="*", metavar="FILE")
    fmt.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if a file is not formatted")
    fmt.add_argument("--diff", action="store_true", help="print a diff instead of writing")
    fmt.set_defaults(run=command_fmt)

    compile_cmd = commands.add_parser("compile", help="generate a PyTorch module")
    compile_cmd.add_argument("file", metavar="FILE")
    compile_cmd.add_argument("definition", nargs="?", metavar="DEF")
    compile_cmd.add_argument("-o", "--output", metavar="OUT")
    common(compile_cmd)
    compile_cmd.set_defaults(run=command_compile)

    # Commands that live in modules of their own (the preview server, the site builder, the
    # language server) declare their arguments there; each module imports only the standard
    # library at import time, so building this parser stays fast.
    from ncd import lsp, site, watch

    for module in (watch, site, lsp):
        module.add_parser(commands, [])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code not in (0, None) else EXIT_OK
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except NcdError as error:
        print(error.render(color=_color(args)), file=sys.stderr)
        return EXIT_INPUT
    except UsageError as error:
        print(f"ncd: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"ncd: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Terminated as stop:
        return 128 + stop.signum
    except Exception:  # a bug in ncd, never the user's input
        if args.debug:
            traceback.print_exc()
        else:
            kind = sys.exc_info()[0]
            print(f"ncd: internal error ({kind.__name__ if kind else 'unknown'}). This is a bug "
                  "in ncd, not in your input; please report it with the file that triggered it."
                  " Run with --debug to see the traceback.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
