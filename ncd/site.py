"""`ncd site`: placeholder registered by the CLI; its implementation is being written."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Declare `ncd site` and its arguments on the CLI's subcommand parser."""
    sub = commands.add_parser("site", help="build a static gallery site from .ncd files",
                              parents=parents)
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("ncd site")
