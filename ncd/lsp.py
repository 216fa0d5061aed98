"""`ncd lsp`: the language server for editors, over standard input and output.

The server (`ncd.lsp_server`, built on pygls) publishes the checker's diagnostics as the
document changes and answers hover, go-to-definition and completion requests, and the command
`ncd.preview` (the SVG of a definition, for a preview pane). pygls is an optional dependency
(`pip install 'ncd[lsp]'`): this module imports only the standard library, so the CLI starts
without it, and `ncd lsp` says what to install when it is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

EXIT_USAGE = 2
INSTALL_HINT = "pip install 'ncd[lsp]'"


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Declare `ncd lsp` and its arguments on the CLI's subcommand parser."""
    sub = commands.add_parser(
        "lsp", help="run the language server (stdio) for editors", parents=parents,
        description="Run the ncd language server on standard input and output (the Language "
        "Server Protocol): diagnostics as you type, hover, go to definition, completion, and "
        "the command `ncd.preview` that draws a definition. Editors start it themselves; see "
        "docs/editors.md.")
    sub.add_argument("--stdio", action="store_true",
                     help="talk over standard input and output (the default and only "
                     "transport; accepted because editors pass it)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("pygls") is None:
        print(f"ncd: error: the language server needs pygls, which is not installed; install "
              f"it with `{INSTALL_HINT}`", file=sys.stderr)
        return EXIT_USAGE
    from ncd.lsp_server import build_server

    build_server().start_io()
    return 0
