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

Most forwards are a straight run of one-line statements (`Y = F.gelu(X)  # gelu`): their
names are read off each line by a small scanner (`_straight_line`), which gives up, leaving
the body to `ast`, at anything it does not follow (a string, a bracket left open, a
compound statement, a comprehension or lambda, an augmented or annotated assignment, ...).
Parsing thousands of small forwards was a fifth of compiling a program of many definitions.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Sequence

from .modules import LINE_LENGTH

_INDENT = "    "


def free_after_last_use(lines: Sequence[str], inputs: Sequence[str],
                        keep: set[str]) -> list[str]:
    """`lines` (the body of a `forward`, each indented two levels) with `del` statements
    inserted after the last use of each local: the `inputs` and every name the body
    assigns, except those in `keep`."""
    straight = _straight_line(lines)
    if straight is not None:
        return _free_straight_line(lines, straight, inputs, keep)
    return _free_parsed(lines, inputs, keep)


def _free_parsed(lines: Sequence[str], inputs: Sequence[str], keep: set[str]) -> list[str]:
    """`free_after_last_use` of any body, from its `ast`."""
    text = "\n".join(line.removeprefix(_INDENT) for line in lines)
    tree = ast.parse("def forward():\n" + text)
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    names = _Names()
    # Loop variables (a module of a `ModuleList`, an index), the names a comprehension or a
    # lambda binds (local to it, not to `forward`) and the names one reads (closure cells,
    # whose `del` torch.compile cannot trace) are never deleted: `names.never_freed`, known
    # once every statement is walked.
    local = set(inputs) | set(names.of(function.body, ast.Store))
    keep = keep | names.never_freed | {n for n in names.of(function.body, ast.Load)
                                       if n not in local}
    inserts: dict[int, list[tuple[str, list[str]]]] = {}  # after line (1-based): indent, names
    _body(function.body, set(), keep, inserts, names)
    # line 1 of the parsed text is the `def`: its line n is `lines[n - 2]`
    return _with_deletions(lines, {number - 2: dels for number, dels in inserts.items()})


def _with_deletions(lines: Sequence[str], inserts: dict[int, list[tuple[str, list[str]]]]
                    ) -> list[str]:
    """`lines` with the `del` statements of `inserts` (by the index of the line they follow:
    each an indent and the names) after their lines."""
    out: list[str] = []
    for index, line in enumerate(lines):
        out.append(line)
        for indent, names in inserts.get(index, ()):
            out.extend(_del_lines(indent, names))
    return out


def _simple_statement(reads: list[str], writes: list[str], ends: bool, live: set[str],
                      keep: set[str]) -> tuple[list[str], set[str]]:
    """The names to delete after a statement that is neither a loop nor a branch (those it
    reads or writes that nothing later needs; none after a `return` or `raise`), and the
    names live before it, given those live after it."""
    dead = [] if ends else [n for n in dict.fromkeys([*reads, *writes])
                            if n not in live and n not in keep]
    # names never deleted are left out of the live set: it stays as small as the names in
    # flight, where a forward that binds thousands of parameters at its top would otherwise
    # copy all of them at every statement
    return dead, (live - set(writes)) | {n for n in reads if n not in keep}


# A statement of a straight-line body: its line (0-based), the names it reads and writes (in
# order of position, once each) and whether it ends the body (`return`, `raise`).
_Statement = tuple[int, list[str], list[str], bool]

_BODY_INDENT = _INDENT * 2
# The tokens the scanner tells apart, in order of preference: a number (whose letters, as in
# `1e-5`, name nothing), a chain of attributes (`.fx.trace`: the name before it is read), a
# name or keyword, an operator with `=` in it, a bracket, and the characters that end the scan
# (a string, a `:` of a slice or a compound statement, `;`, a line continuation, a non-ASCII
# character, a tab). Anything else (operators, spaces, `,`) separates tokens and is skipped.
_TOKEN = re.compile(r"(\d[\w.]*|\.\d\w*)|((?:\.[A-Za-z_]\w*)+)|([A-Za-z_]\w*)|(==|!=|<=|>=|:=|->"
                    r"|\*\*=|//=|>>=|<<=|[-+*/%@&|^]=|=)|([(\[{])|([)\]}])|(\.)"
                    r"|(['\":;\\\t]|[^\x00-\x7f])")
_OPENING, _CLOSING = re.compile(r"[(\[{]"), re.compile(r"[)\]}]")
# After a name inside brackets: the `=` of a keyword argument (not `==`).
_KEYWORD_EQUALS = re.compile(r" *=(?!=)")
# Keywords a scanned statement may hold; any other ends the scan (`for`, `lambda`, `del`,
# `import`, `global`, ...: scopes and bindings the scanner does not follow).
_EXPRESSION_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "None", "True",
                                  "False"})
_STATEMENT_KEYWORDS = frozenset({"return", "raise", "pass"})
# What the scanner takes for the targets of an assignment: plain names and commas.
_TARGETS = re.compile(r" *[A-Za-z_]\w*(?: *, *[A-Za-z_]\w*)* *,? *")
_SOFT_KEYWORDS = frozenset(keyword.softkwlist)


def _straight_line(lines: Sequence[str]) -> list[_Statement] | None:
    """The statements of a body whose every line is a simple statement at the body's indent
    (a statement wrapped inside its brackets continues on the lines after it) or a comment,
    with the names each reads and writes as `ast` finds them, each at its last line; None
    where the scanner cannot be sure of that (the caller then parses the body)."""
    statements: list[_Statement] = []
    parts: list[str] = []  # the lines so far of a statement whose brackets are still open
    depth = 0
    for index, line in enumerate(lines):
        if not line.startswith(_BODY_INDENT):
            return None
        code, _, _ = line.partition("#")  # a `#` in a string: the scan below gives up
        code = code[len(_BODY_INDENT):].rstrip()
        if not code:
            if line[len(_BODY_INDENT):].startswith("#") and not parts:
                continue  # a comment line
            return None
        if code[0] == " " and not parts:
            return None  # an indented block
        # A line of its own unless it opens a bracket (`_scan` refuses one left open).
        if parts or code[-1] in "([{":
            parts.append(code.strip())
            depth += len(_OPENING.findall(code)) - len(_CLOSING.findall(code))
            if depth < 0:
                return None
            if depth:
                continue
            code, parts = " ".join(parts), []
        scanned = _scan(code)
        if scanned is None:
            return None
        statements.append((index, *scanned))
    return None if parts else statements


def _scan(code: str) -> tuple[list[str], list[str], bool] | None:
    """The names one simple statement reads and writes, and whether it is a `return` or
    `raise`; None where the statement is not one the scanner follows."""
    loads: list[str] = []
    stores: list[str] = []
    pending: list[str] = []  # names at the top level since the last `=`: targets if one follows
    depth = 0
    after_dot = False  # the next name is an attribute
    keyword_argument = False  # the next `=` follows a keyword argument's name
    ends = False
    first = True
    segment = 0  # where the text after the last top-level `=` starts
    for match in _TOKEN.finditer(code):
        number, attribute, name, equals, opening, closing, dot, stop = match.groups()
        if stop is not None:
            return None
        was_first, first = first, False
        if attribute is not None:  # `.a.b` in one token: the name before it is read
            if after_dot:
                return None  # `..name`
            loads.extend(pending)
            pending = []
            continue
        if name is not None:
            if after_dot:
                after_dot = False
                continue
            if keyword.iskeyword(name):
                if name in _STATEMENT_KEYWORDS and was_first:
                    ends = name != "pass"
                elif name not in _EXPRESSION_KEYWORDS:
                    return None
                continue
            if was_first and name in _SOFT_KEYWORDS:
                return None  # `match`, `case`, `type`, `_` may open a statement of their own
            if depth > 0:
                if _KEYWORD_EQUALS.match(code, match.end()):
                    keyword_argument = True
                else:
                    loads.append(name)
            else:
                pending.append(name)
            continue
        if after_dot:
            return None  # `.` followed by something other than a name (`...`)
        if number is not None:
            continue
        if dot is not None:
            after_dot = True
            loads.extend(pending)  # `self.x`: the name before the dot is read
            pending = []
            continue
        if opening is not None:
            depth += 1
            loads.extend(pending)
            pending = []
            continue
        if closing is not None:
            depth -= 1
            if depth < 0:
                return None
            continue
        assert equals is not None
        if equals in ("==", "!=", "<=", ">="):
            continue
        if equals != "=":
            return None  # an augmented assignment, `:=`, `->`
        if depth > 0:
            if not keyword_argument:
                return None
            keyword_argument = False
            continue
        if ends or not _TARGETS.fullmatch(code, segment, match.start()):
            return None  # a target that is not a plain name (`x[i] = `, `a.b = `)
        stores.extend(pending)
        pending = []
        segment = match.end()
    if depth != 0 or after_dot or keyword_argument or segment == len(code):
        return None  # a bracket left open, or an assignment with nothing on its right
    loads.extend(pending)
    return list(dict.fromkeys(loads)), list(dict.fromkeys(stores)), ends


def _free_straight_line(lines: Sequence[str], statements: list[_Statement],
                        inputs: Sequence[str], keep: set[str]) -> list[str]:
    """`free_after_last_use` of a straight-line body: the liveness of `_body` without loops or
    branches, from the scanned names."""
    local = set(inputs)
    for _, _, writes, _ in statements:
        local.update(writes)
    keep = keep | {n for _, reads, _, _ in statements for n in reads if n not in local}
    inserts: dict[int, list[tuple[str, list[str]]]] = {}
    live: set[str] = set()
    for index, reads, writes, ends in reversed(statements):
        dead, live = _simple_statement(reads, writes, ends, live, keep)
        if dead:
            inserts[index] = [(_BODY_INDENT, dead)]
    return _with_deletions(lines, inserts)


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


_SCOPES = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)


def _child_fields(kind: type[ast.AST]) -> tuple[str, ...]:
    """The fields of a node of class `kind` that may hold nodes with names below them: not a
    constant's (a value), not an expression's context (`Load`, `Store`, which holds none)."""
    if kind is ast.Constant:
        return ()
    return tuple(field for field in kind._fields if field != "ctx")


_CHILD_FIELDS: dict[type[ast.AST], tuple[str, ...]] = {}


class _Names:
    """The names each node reads and writes, found by one walk of it and remembered: the
    analysis asks for a statement's names several times (a long `forward` has thousands of
    statements, and walking each again was most of the compile time). The walks also
    collect the names never to delete (`never_freed`)."""

    def __init__(self) -> None:
        # id of a node: its loads and its stores, each in order of first position, once (the
        # lists are shared: no caller changes them)
        self._found: dict[int, tuple[list[str], list[str]]] = {}
        self._nodes: list[ast.AST] = []  # keeps the nodes alive while their ids are keys
        self.never_freed: set[str] = set()

    def _of_node(self, node: ast.AST) -> tuple[list[str], list[str]]:
        found = self._found.get(id(node))
        if found is not None:
            return found
        loads: list[tuple[int, int, str]] = []
        stores: list[tuple[int, int, str]] = []
        stack = [node]
        while stack:  # every node below `node`, in no particular order (sorted below)
            child = stack.pop()
            kind = type(child)
            if kind is ast.Name:
                assert isinstance(child, ast.Name)
                context = type(child.ctx)
                if context is ast.Load:
                    loads.append((child.lineno, child.col_offset, child.id))
                elif context is ast.Store:
                    stores.append((child.lineno, child.col_offset, child.id))
                continue
            if kind is ast.For:
                assert isinstance(child, ast.For)
                self.never_freed.update(n.id for n in ast.walk(child.target)
                                        if isinstance(n, ast.Name))
            elif isinstance(child, _SCOPES):
                self.never_freed.update(n.id for n in ast.walk(child)
                                        if isinstance(n, ast.Name))
                self.never_freed.update(a.arg for a in ast.walk(child)
                                        if isinstance(a, ast.arg))
            fields = _CHILD_FIELDS.get(kind)
            if fields is None:
                fields = _CHILD_FIELDS[kind] = _child_fields(kind)
            for field in fields:
                value = getattr(child, field, None)
                if isinstance(value, list):
                    stack.extend(item for item in value if isinstance(item, ast.AST))
                elif isinstance(value, ast.AST):
                    stack.append(value)
        found = (list(dict.fromkeys(n for _, _, n in sorted(loads))),
                 list(dict.fromkeys(n for _, _, n in sorted(stores))))
        self._found[id(node)] = found
        self._nodes.append(node)
        return found

    def of(self, nodes: Sequence[ast.AST], context: type[ast.expr_context]) -> list[str]:
        """The names read (`ast.Load`) or written (`ast.Store`) in `nodes` (which follow each
        other in the text), in order, once: a list not to be changed (one node's is shared)."""
        index = 0 if context is ast.Load else 1
        if len(nodes) == 1:
            return self._of_node(nodes[0])[index]  # its names once already
        return list(dict.fromkeys(name for node in nodes for name in self._of_node(node)[index]))


def _exposed(body: Sequence[ast.stmt], names: _Names) -> set[str]:
    """The names `body` reads before it writes them (live when it starts)."""
    written: set[str] = set()
    exposed: set[str] = set()
    for statement in body:
        if isinstance(statement, ast.For):
            exposed.update(n for n in names.of([statement.iter], ast.Load) if n not in written)
            exposed.update(n for n in _exposed(statement.body, names) if n not in written)
            continue
        if isinstance(statement, ast.If):
            exposed.update(n for n in names.of([statement.test], ast.Load) if n not in written)
            branches = _exposed(statement.body, names) | _exposed(statement.orelse, names)
            exposed.update(n for n in branches if n not in written)
            # made after the `if` only when both branches make it
            written.update(set(names.of(statement.body, ast.Store))
                           & set(names.of(statement.orelse, ast.Store)))
            continue
        reads = names.of([statement], ast.Load)
        exposed.update(n for n in reads if n not in written)
        written.update(names.of([statement], ast.Store))
    return exposed


def _body(body: Sequence[ast.stmt], live_out: set[str], keep: set[str],
          inserts: dict[int, list[tuple[str, list[str]]]], names: _Names) -> set[str]:
    """Record the `del`s of a statement list whose names in `live_out` are needed after it;
    returns the names live when it starts."""
    live = set(live_out)
    for statement in reversed(body):
        assert statement.end_lineno is not None
        indent = " " * (statement.col_offset + len(_INDENT))
        if isinstance(statement, ast.For):
            exposed = _exposed(statement.body, names) - keep
            inner_out = live | exposed  # the next iteration, or what follows the loop
            _body(statement.body, inner_out, keep, inserts, names)
            # What the loop reads from before it, or carries from one iteration to the next
            # (made in the body, read before being made): dead after it unless read later.
            touched = [*names.of([statement.iter], ast.Load),
                       *(n for n in names.of(statement.body, ast.Load) if n in exposed)]
            reads = {n for n in touched if n not in keep}
            dead = [n for n in dict.fromkeys(touched) if n not in live and n not in keep]
            live = live | reads
        elif isinstance(statement, ast.If):
            # Each branch deletes, at their last use in it, what it makes and what it reads
            # last. Nothing is deleted after the `if`: a name that one branch makes, or
            # deletes, may be unbound there, and an `elif` has no place of its own after it
            # (what only a test reads, a condition, lives on).
            branches = [_body(branch, live, keep, inserts, names)
                        for branch in (statement.body, statement.orelse)]
            dead = []
            live = {n for n in names.of([statement.test], ast.Load) if n not in keep}.union(
                *branches)
        else:
            dead, live = _simple_statement(
                names.of([statement], ast.Load), names.of([statement], ast.Store),
                isinstance(statement, (ast.Return, ast.Raise)), live, keep)
        if dead:
            # after what a nested body deletes at the same line: inner lines come first
            inserts.setdefault(statement.end_lineno, []).append((indent, dead))
    return live
