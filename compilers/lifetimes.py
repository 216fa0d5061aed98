"""Free each local of a generated `forward` after its last use: `del name` after the last
statement that reads it, so that an intermediate array is released as soon as nothing needs
it (not held until `return`).

The pass reads the emitted lines as Python (`ast`): each statement's reads and writes of
names, and a liveness analysis over its statement list, loops included. In a loop body a name
is deleted only when it is made in the body and needed neither by a later iteration nor after
the loop (a value from before the loop, or carried from one iteration to the next, is left
alone; it is deleted after the loop when nothing later reads it). Each branch of an `if`
deletes what it makes or reads last itself, and nothing is deleted after the `if`, since a
name that one branch makes may be unbound there. Names in `keep` (the sizes read from the
inputs, loop variables) are never deleted: they hold integers or modules.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from .modules import LINE_LENGTH

_INDENT = "    "


def free_after_last_use(lines: Sequence[str], inputs: Sequence[str],
                        keep: set[str]) -> list[str]:
    """`lines` (the body of a `forward`, each indented two levels) with `del` statements
    inserted after the last use of each local: the `inputs` and every name the body
    assigns, except those in `keep`."""
    text = "\n".join(line.removeprefix(_INDENT) for line in lines)
    tree = ast.parse("def forward():\n" + text)
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    local = set(inputs) | set(_names(function.body, ast.Store))
    keep = keep | _never_freed(function) | {n for n in _names(function.body, ast.Load)
                                              if n not in local}
    inserts: dict[int, list[tuple[str, list[str]]]] = {}  # after line (1-based): indent, names
    _body(function.body, set(), keep, inserts)
    out: list[str] = []
    for number, line in enumerate(lines, start=2):  # line 1 of the parsed text is the `def`
        out.append(line)
        for indent, names in inserts.get(number, []):
            out.extend(_del_lines(indent, names))
    return out


def _del_lines(indent: str, names: list[str]) -> list[str]:
    """`del a, b, c`, as many statements as needed to stay within the line length."""
    lines: list[str] = []
    current: list[str] = []
    for name in names:
        if current and len(indent) + len("del ") + len(", ".join([*current, name])) > \
                LINE_LENGTH:
            lines.append(f"{indent}del {', '.join(current)}")
            current = []
        current.append(name)
    if current:
        lines.append(f"{indent}del {', '.join(current)}")
    return lines


def _never_freed(function: ast.FunctionDef) -> set[str]:
    """Loop variables (a module of a `ModuleList`, an index), the names a comprehension or
    a lambda binds (local to it, not to `forward`), and the names one reads: those are
    closure cells, whose `del` torch.compile cannot trace."""
    targets: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.For):
            targets.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                               ast.Lambda)):
            targets.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
            targets.update(a.arg for a in ast.walk(node) if isinstance(a, ast.arg))
    return targets


def _names(nodes: Sequence[ast.AST], context: type[ast.expr_context]) -> list[str]:
    """The names read (`ast.Load`) or written (`ast.Store`) in `nodes`, in order, once."""
    found = sorted((child.lineno, child.col_offset, child.id) for node in nodes
                   for child in ast.walk(node)
                   if isinstance(child, ast.Name) and isinstance(child.ctx, context))
    return list(dict.fromkeys(name for _, _, name in found))


def _exposed(body: Sequence[ast.stmt]) -> set[str]:
    """The names `body` reads before it writes them (live when it starts)."""
    written: set[str] = set()
    exposed: set[str] = set()
    for statement in body:
        if isinstance(statement, ast.For):
            exposed.update(n for n in _names([statement.iter], ast.Load) if n not in written)
            exposed.update(n for n in _exposed(statement.body) if n not in written)
            continue
        if isinstance(statement, ast.If):
            exposed.update(n for n in _names([statement.test], ast.Load) if n not in written)
            exposed.update(n for n in _exposed(statement.body) | _exposed(statement.orelse)
                           if n not in written)
            # made after the `if` only when both branches make it
            written.update(set(_names(statement.body, ast.Store))
                           & set(_names(statement.orelse, ast.Store)))
            continue
        reads = _names([statement], ast.Load)
        exposed.update(n for n in reads if n not in written)
        written.update(_names([statement], ast.Store))
    return exposed


def _body(body: Sequence[ast.stmt], live_out: set[str], keep: set[str],
          inserts: dict[int, list[tuple[str, list[str]]]]) -> set[str]:
    """Record the `del`s of a statement list whose names in `live_out` are needed after it;
    returns the names live when it starts."""
    live = set(live_out)
    for statement in reversed(body):
        assert statement.end_lineno is not None
        indent = " " * (statement.col_offset + len(_INDENT))
        if isinstance(statement, ast.For):
            exposed = _exposed(statement.body)
            inner_out = live | exposed  # the next iteration, or what follows the loop
            _body(statement.body, inner_out, keep, inserts)
            # What the loop reads from before it, or carries from one iteration to the next
            # (made in the body, read before being made): dead after it unless read later.
            touched = [*_names([statement.iter], ast.Load),
                       *(n for n in _names(statement.body, ast.Load) if n in exposed)]
            reads = set(touched)
            dead = [n for n in dict.fromkeys(touched) if n not in live and n not in keep]
            live = live | reads
        elif isinstance(statement, ast.If):
            # Each branch deletes, at their last use in it, what it makes and what it reads
            # last. Nothing is deleted after the `if`: a name that one branch makes, or
            # deletes, may be unbound there, and an `elif` has no place of its own after it
            # (what only a test reads, a condition, lives on).
            branches = [_body(branch, live, keep, inserts)
                        for branch in (statement.body, statement.orelse)]
            dead = []
            live = set(_names([statement.test], ast.Load)).union(*branches)
        else:
            reads_list = _names([statement], ast.Load)
            writes = _names([statement], ast.Store)
            ends = isinstance(statement, (ast.Return, ast.Raise))
            dead = [] if ends else [n for n in dict.fromkeys([*reads_list, *writes])
                                    if n not in live and n not in keep]
            live = (live - set(writes)) | set(reads_list)
        if dead:
            # after what a nested body deletes at the same line: inner lines come first
            inserts.setdefault(statement.end_lineno, []).append((indent, dead))
    return live
