"""The reference of the `ncd` command line, in Markdown, generated from `ncd.cli.build_parser()`:
every command, argument and option with its help, choices and default.

    python -m ncd.cli_reference > docs/cli.md

`docs/cli.md` is this output; a test fails when it is stale. The usage lines and option lists
are written here rather than by argparse's help formatter, whose layout depends on the width
of the terminal and on the version of Python.
"""

from __future__ import annotations

import argparse
import sys

from ncd.cli import build_parser

REGENERATE = "python -m ncd.cli_reference > docs/cli.md"

CONVENTIONS = """\
## Conventions

**Inputs.** Every command that reads a file takes `-` for standard input; diagnostics call it
`<stdin>`, and its imports resolve relative to the working folder. `check`, `ir`, `render`,
`compile` and `fmt` take several files and folders: a folder stands for every `*.ncd` file below
it, recursively, in sorted order; hidden files and folders (names starting with `.`) are
skipped and symbolic links to folders are not followed. An error in one input does not stop
the others, and the exit code is the worst of them. With more than 5 inputs and a terminal
on standard error, a one-line progress bar shows there.

**Several inputs, one folder of outputs.** With more than one input (or a folder), `ir`,
`render` and `compile` need `-o DIR`, a folder (made if it does not exist), and write
`DIR/<stem>.json`, `DIR/<stem>.<format>` (`-f`, default `svg`) and `DIR/<stem>.py`; standard
input's stem is `stdin`. Two inputs with the same stem are a usage error. Each file's main
definition (its last) is drawn; `compile` compiles every definition.

**Choosing a definition.** `DEF` (or `--def NAME`) chooses a definition of a single input
file. The last of two or more arguments is `DEF` when it is a definition name: a dotted
identifier (`attention`, `lib.g`) not ending in `.ncd`. Write a folder named like a definition
as `name/` (or `./name`). With several inputs, choosing a definition is a usage error.

**Outputs.** `-o FILE` is written whole, through a temporary file renamed over it, with the
permissions the umask gives a new file (an existing file keeps its own; a symbolic link is
followed). `-o -` writes to standard output, binary formats (PNG, PDF) included. Without
`-o`, binary output goes to standard output unless that is a terminal (a usage error: use
`-o FILE` or `-o -`). `render` takes its format from the suffix of `-o FILE`; a `-f` naming
another format is a usage error, and `-f` chooses the format when there is no suffix.

**Diagnostics as JSON.** `--diagnostics json` (on `check` also `--format json`) writes the
diagnostics as one JSON list. `check` writes it to standard output, always (`[]` when every
file is fine) and prints nothing else there; the other commands write it to standard error
when there are diagnostics. Each object has `path`, `range`, `code`, `severity`
(`error`), `message`, `hint` (`null` when none) and `notes` (each with `path`, `range` and
`message`). `range` is `{"start": {"line", "column"}, "end": {"line", "column"}}`: lines and
columns are 1-based, as in `path:line:col`, columns count characters, and the end is
exclusive (the position just after the last character). A diagnostic about no place in a file
(a bad `-D`) has `"range": null` and the path of the input being loaded. Usage and I/O
errors (a missing file, a bad option) stay lines of text on standard error, `ncd: error: ...`.

**Colour.** Diagnostics are coloured by `--color always`, never by `--color never` or
`--no-color` (before or after the command name). With `--color auto` (the default), a
non-empty `NO_COLOR` turns colour off, else a non-empty `FORCE_COLOR` turns it on, else colour
is used when standard error is a terminal: the flag wins, then `NO_COLOR`, then `FORCE_COLOR`,
then the terminal.

**Exit codes.**

- 0: success.
- 1: diagnostics in the input; `fmt --check` or `fmt --diff` found a file to reformat.
- 2: a usage or I/O error: a bad option, a missing file, an output that cannot be written, a
  size override `-D` that is not a positive integer, is too large or names no declared axis.
- 3: an internal error of ncd (a bug: please report it; `--debug` shows the traceback).
- 128 + N: stopped by signal N (SIGTERM, SIGHUP; SIGPIPE when the reader of standard output
  goes away); 130 after Ctrl-C.
"""


def reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of `parser` (by default the `ncd` command line)."""
    parser = parser or build_parser()
    global_options = _optionals(parser)
    shared = {string for action in global_options for string in action.option_strings}
    lines = [
        "# The `ncd` command line",
        "",
        f"<!-- Generated from ncd/cli.py by `{REGENERATE}`; do not edit. -->",
        "",
        _sentence(parser.description or ""),
        "",
        "```",
        f"{parser.prog} [GLOBAL OPTIONS] COMMAND [ARGUMENTS AND OPTIONS]",
        "```",
        "",
        "Every command takes `-h` (`--help`). The global options may be given before or after "
        "the command.",
        "",
        "## Global options",
        "",
        *(_describe(action) for action in global_options),
        "",
        CONVENTIONS.rstrip("\n"),
    ]
    for name, command, summary in _commands(parser):
        lines += ["", f"## `{parser.prog} {name}`", "", _sentence(command.description or summary),
                  "", "```", _usage(parser.prog, name, command), "```"]
        positionals = [a for a in command._actions if not a.option_strings]
        if positionals:
            lines += ["", "Arguments:", "", *(_describe(a) for a in positionals)]
        options = [a for a in _optionals(command)
                   if not shared.intersection(a.option_strings)]
        if options:
            lines += ["", "Options:", "", *(_describe(a) for a in options)]
        if any(shared.intersection(a.option_strings) for a in _optionals(command)):
            lines += ["", "And the global options."]
    return "\n".join(lines) + "\n"


def _commands(parser: argparse.ArgumentParser,
              ) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """Each command: its name, its parser and its one-line help, in the order declared."""
    found: list[tuple[str, argparse.ArgumentParser, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, command in action.choices.items():
                if id(command) not in seen:
                    seen.add(id(command))
                    found.append((name, command, summaries.get(name, "")))
    return found


def _optionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings
            and action.help != argparse.SUPPRESS
            and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))]


def _usage(prog: str, name: str, command: argparse.ArgumentParser) -> str:
    words = [prog, name]
    if _optionals(command):
        words.append("[OPTIONS]")
    for action in command._actions:
        if action.option_strings:
            continue
        metavar = _metavar(action)
        if action.nargs == "+":
            words.append(f"{metavar}...")
        elif action.nargs == "*":
            words.append(f"[{metavar}...]")
        elif action.nargs == "?":
            words.append(f"[{metavar}]")
        else:
            words.append(metavar)
    return " ".join(words)


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(str(choice) for choice in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _describe(action: argparse.Action) -> str:
    """One list item: the argument or option, its help, its choices and its default."""
    if action.option_strings:
        takes_value = action.nargs != 0
        value = f" {_metavar(action)}" if takes_value else ""
        name = ", ".join(action.option_strings) + value
    else:
        name = _metavar(action)
    text = _help(action)
    if action.choices is not None and isinstance(action.metavar, str):
        text += f" One of: {', '.join(f'`{choice}`' for choice in action.choices)}."
    default = action.default
    if action.nargs != 0 and default not in (None, False, [], argparse.SUPPRESS) \
            and "default" not in (action.help or ""):
        text += f" Default: `{default}`."
    return f"- `{name}`: {text.strip()}"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        try:
            text = text % {**vars(action), "default": action.default}
        except (KeyError, TypeError, ValueError):
            pass
    return _sentence(text)


def _sentence(text: str) -> str:
    """`text` as Markdown, starting with a capital and ending with a full stop."""
    text = _escape(text.strip())
    if text and not text.endswith("."):
        text += "."
    return text[:1].upper() + text[1:]


def _escape(text: str) -> str:
    """Help text as Markdown: outside code spans, a `<` would open an HTML tag and a `*`
    emphasis."""
    parts = text.split("`")
    return "`".join(part if index % 2 else part.replace("<", "&lt;").replace("*", r"\*")
                    for index, part in enumerate(parts))


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
