"""The `ncd` command line: check, ir, render, compile.

Exit codes: 0 success, 1 diagnostics in the input, 2 usage or I/O error, 3 an internal error
of ncd itself (please report it; `--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ncd.api import Program, load
from ncd.diagnostics import NcdError

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
RENDER_FORMATS = ("svg", "pdf", "png", "dot", "tex")


class UsageError(Exception):
    pass


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
    """Write `data` to `path` through a temporary file and a rename, so that a failure never
    leaves a half-written output behind."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write {path}: folder {directory} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                         dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load(args: argparse.Namespace, path: str) -> Program:
    file = Path(path)
    if not file.exists():
        raise UsageError(f"{path}: no such file")
    if file.is_dir():
        raise UsageError(f"{path}: is a folder, not a .ncd file")
    return load(file, sizes=parse_size_overrides(args.define or []))


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
    from ncd.renderers import RenderOptions, render_svg, render_tikz

    options = RenderOptions(wire_labels=args.labels, collapse_depth=args.collapse,
                            theme=args.theme, text=args.text, expand_calls=args.expand,
                            show_params=args.params)
    data: str | bytes
    if fmt == "dot":
        from ncd.renderers.dot import program_to_dot

        data = program_to_dot(program.ir, name, collapse_depth=args.collapse)
    elif fmt == "tex":
        data = render_tikz(program.ir, name, options)
    else:
        svg = render_svg(program.ir, name, options)
        if fmt == "svg":
            data = svg
        elif fmt == "png":
            from ncd.renderers.export import svg_to_png

            data = svg_to_png(svg)
        else:
            from ncd.renderers.export import svg_to_pdf

            data = svg_to_pdf(svg)
    _emit(args, data)
    return EXIT_OK


def command_fmt(args: argparse.Namespace) -> int:
    """Format files in place (`--check`: report, `--diff`: show); `-` or none: stdin to stdout."""
    import difflib

    from ncd.diagnostics import Diagnostic
    from ncd.formatter import format_source
    from ncd.ir import Span
    from ncd.loader import Loader
    from ncd.parser import ParseFailure

    def report(name: str, diagnostics: list[Diagnostic], sources: dict[str, str]) -> None:
        print(NcdError(diagnostics, sources).render(color=_color(args)), file=sys.stderr)
        count = len(diagnostics)
        print(f"{name}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)

    def out(text: str) -> None:
        sys.stdout.buffer.write(text.encode("utf-8"))

    status = EXIT_OK
    for path in args.files or ["-"]:
        if path == "-":
            name = "<stdin>"
            data = sys.stdin.buffer.read()
            try:
                text = data.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as error:
                report(name, [Diagnostic("E104", f"the input is not UTF-8 text (byte "
                                         f"{error.start})", None)], {})
                status = max(status, EXIT_INPUT)
                continue
        else:
            name = path
            file = Path(path)
            if not file.exists():
                raise UsageError(f"{path}: no such file")
            if file.is_dir():
                raise UsageError(f"{path}: is a folder, not a .ncd file")
            loader = Loader(Path.cwd(), {})
            read = loader.read(file, None)
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
    render.add_argument("--collapse", type=int, metavar="DEPTH",
                        help="draw blocks nested deeper than DEPTH as one box")
    render.add_argument("--theme", choices=("light", "dark", "print"), default="light")
    render.add_argument("--text", choices=("paths", "text"), default="paths",
                        help="labels as glyph outlines (default) or selectable <text>")
    render.add_argument("--expand", action="store_true",
                        help="draw called definitions in place instead of as named boxes")
    render.add_argument("--params", action="store_true",
                        help="draw the parameter wires of learned operations")
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
