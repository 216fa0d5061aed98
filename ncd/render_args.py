"""The command-line options of the commands that draw for a browser (`ncd watch`, `ncd site`):
how diagrams are drawn (`--labels`, `--collapse`, `--expand`, `--params`, `--theme`, `--text`,
as `ncd render` spells them), the size overrides (`-D AXIS=SIZE`) and the import folders
(`-I DIR`).

Only the standard library is imported here; `render_options` imports the renderers when it
is called.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser,
                  parents: list[argparse.ArgumentParser]) -> None:
    """Declare the drawing options, `-D` and `-I` on `parser` (each only when no parent has
    it)."""
    drawing = parser.add_argument_group("drawing")
    drawing.add_argument("--labels", choices=("names", "sizes", "both"), default="names",
                         help="what wires are labelled with (default: names)")
    drawing.add_argument("--collapse", type=non_negative_int, metavar="DEPTH",
                         help="draw blocks nested deeper than DEPTH as one box")
    drawing.add_argument("--expand", action="store_true",
                         help="draw called definitions in place instead of as named boxes")
    drawing.add_argument("--params", action="store_true",
                         help="draw the parameter wires of learned operations")
    drawing.add_argument("--theme", choices=("light", "dark", "print"), default="light",
                         help="the diagrams' colours (default: light)")
    drawing.add_argument("--text", choices=("paths", "text"), default="paths",
                         help="labels as glyph outlines (default) or selectable <text>")
    declared = {option for parent in parents for action in parent._actions
                for option in action.option_strings}
    if "-D" not in declared:
        parser.add_argument("-D", "--define", action="append", metavar="AXIS=SIZE",
                            help="override the size of a declared axis (repeatable)")
    if "-I" not in declared:
        from ncd.cli import include_option

        include_option(parser)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def render_options(args: argparse.Namespace) -> Any:
    """The `RenderOptions` that the parsed options ask for."""
    from ncd.renderers import RenderOptions

    return RenderOptions(wire_labels=args.labels, collapse_depth=args.collapse,
                         theme=args.theme, text=args.text, expand_calls=args.expand,
                         show_params=args.params)


def sizes(args: argparse.Namespace) -> dict[str, int]:
    """The `-D` overrides (a `UsageError` for a malformed one)."""
    from ncd.cli import parse_size_overrides

    return parse_size_overrides(getattr(args, "define", None) or [])


def include(args: argparse.Namespace) -> list[str]:
    """The `-I` folders (a `UsageError` for one that is not a folder)."""
    from ncd.cli import include_folders

    return include_folders(args)
