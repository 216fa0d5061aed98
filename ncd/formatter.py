"""Formatting: the canonical layout of a `.ncd` file (`ncd fmt`).

The text is parsed (a syntax error raises the parser's `ParseFailure`) and printed again from
the syntax tree: four spaces of indentation per `{ }`, one statement per line, spaces around
`=`, `->` and binary operators and after commas, the fewest parentheses that keep the parse.
The syntax tree keeps meaning, not spelling, so the spelling is read back from the source
through the spans and the tokens: numbers as written (`1e-5` stays `1e-5`), strings and
docstrings verbatim, axis declarations grouped as they were written.

The lexer drops comments, so they are collected from the token stream here and put back:
a comment that ends a line of code stays at the end of the line that code is printed on; a
comment on a line of its own comes before the item or statement that follows it (or before
the closing `}` of the body it is in, or at the end of the file). Blank lines between items
and statements are kept (at most one); a blank line always separates a definition with a body
from its neighbours.
"""

from __future__ import annotations

import bisect
import inspect
import re
from dataclasses import dataclass, field
from typing import Literal

from lark import Token

from ncd import syntax as s
from ncd.ir import Span
from ncd.parser import _parser, parse

INDENT = "    "
_WHITESPACE = " \t\f\r\n"
_NUMBER = re.compile(r"[0-9]+|[0-9]+\.[0-9]*([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+"
                     r"|\.[0-9]+([eE][-+]?[0-9]+)?")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2}
_NEG, _ATOM = 3, 4

# How a line's blank-line-before is decided: kept from the source, always, or never.
Rule = Literal["keep", "force", "none"]


def format_source(text: str, path: str = "<input>") -> str:
    """The canonical layout of `text`; raises `ncd.parser.ParseFailure` on a syntax error."""
    module = parse(text, path)
    return _Formatter(text, module).format()


# ---- the source: offsets, tokens and comments ---------------------------------------------


@dataclass(frozen=True)
class _Comment:
    text: str
    start: int
    end: int
    previous: Token | None  # the token before it
    following: Token | None  # the token after it
    after_code: bool  # code precedes it on its line
    gap: int  # how far it is from the code before it, when after code


_COMMENT = re.compile(r"#[^\n]*")


def _start(token: Token) -> int:
    """Where `token` starts in the text (the lexer gives every token it reads a position)."""
    assert token.start_pos is not None
    return token.start_pos


def _end(token: Token) -> int:
    """Where `token` ends in the text."""
    assert token.end_pos is not None
    return token.end_pos


class _Source:
    def __init__(self, text: str):
        self.text = text
        self.line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        # The tokens as the parser's own (contextual) lexer reads them: `axist = 3` after an
        # axis is `axis t = 3`. Between two tokens there is only whitespace and comments.
        self.tokens: list[Token] = list(_parser().parse_interactive(text).iter_parse())
        self.starts = [_start(t) for t in self.tokens]
        self.comments: list[_Comment] = []
        for position in range(len(self.tokens) + 1):
            previous = self.tokens[position - 1] if position > 0 else None
            following = self.tokens[position] if position < len(self.tokens) else None
            gap_start = _end(previous) if previous is not None else 0
            gap_end = _start(following) if following is not None else len(text)
            for match in _COMMENT.finditer(text, gap_start, gap_end):
                start = match.start()
                after_code = previous is not None and "\n" not in text[gap_start:start]
                self.comments.append(_Comment(match.group().rstrip(), start, match.end(),
                                              previous, following, after_code,
                                              start - gap_start if after_code else 0))

    def offset(self, line: int, column: int) -> int:
        return self.line_starts[line - 1] + column - 1

    def start(self, span: Span) -> int:
        return self.offset(span.line, span.column)

    def end(self, span: Span) -> int:
        return self.offset(span.end_line, span.end_column)

    def slice(self, span: Span) -> str:
        return self.text[self.start(span):self.end(span)]

    def index(self, offset: int) -> int:
        """The index of the token that starts at `offset`."""
        position = bisect.bisect_left(self.starts, offset)
        assert position < len(self.starts) and self.starts[position] == offset, offset
        return position

    def find(self, offset: int, value: str) -> int:
        """The index of the first token spelt `value` at or after `offset`."""
        position = bisect.bisect_left(self.starts, offset)
        while str(self.tokens[position]) != value:
            position += 1
        return position

    def blank_before(self, offset: int) -> bool:
        """Whether a blank line separates `offset` from the code or comment before it."""
        position = offset
        while position > 0 and self.text[position - 1] in _WHITESPACE:
            position -= 1
        return position > 0 and self.text.count("\n", position, offset) >= 2

    def column(self, offset: int) -> int:
        """The 0-based column of `offset` in its line."""
        return offset - (self.text.rfind("\n", 0, offset) + 1)


# ---- output lines ---------------------------------------------------------------------------


@dataclass
class _Line:
    depth: int
    text: str | None  # None: only comments (the end of the file)
    start: int  # the source offsets of the tokens this line prints
    end: int
    first: Rule = "keep"  # the blank line before the line's first entry (a comment or the code)
    code: Rule = "keep"  # the blank line before the code itself
    closes: bool = False  # a closing `}`: its leading comments belong to the body above
    opener: int = 0  # for a closing `}`: where its `{` is
    leading: list[_Comment] = field(default_factory=list)
    trailing: _Comment | None = None


def _reindent(raw: str, old_column: int, new_column: int) -> str:
    """A docstring moved from `old_column` to `new_column`, its later lines shifted alike when
    that keeps its value; else as written."""
    shift = new_column - old_column
    lines = raw.split("\n")
    if shift == 0 or len(lines) == 1:
        return raw
    moved = [lines[0]]
    for line in lines[1:]:
        if not line.strip():
            moved.append(line)
        elif "\t" in line[:len(line) - len(line.lstrip())]:
            return raw  # tabs: leave the lines where they are
        elif shift > 0:
            moved.append(" " * shift + line)
        elif line.startswith(" " * -shift):
            moved.append(line[-shift:])
        else:
            return raw
    result = "\n".join(moved)
    same = inspect.cleandoc(result[3:-3]) == inspect.cleandoc(raw[3:-3])
    return result if same else raw


# ---- the printer ----------------------------------------------------------------------------


class _Formatter:
    def __init__(self, text: str, module: s.Module):
        self.source = _Source(text)
        self.module = module

    # -- the whole file
    def format(self) -> str:
        lines = self.items()
        self.attach_comments(lines)
        return self.render(lines)

    def items(self) -> list[_Line]:
        src = self.source
        groups: list[tuple[str, list[_Line]]] = []
        if self.module.doc is not None:
            token = src.tokens[0]
            raw = _reindent(str(token), src.column(_start(token)), 0)
            groups.append(("doc", [_Line(0, raw, _start(token), _end(token))]))
        items = self.module.items
        index = 0
        while index < len(items):
            item = items[index]
            if isinstance(item, s.AxisDecl):
                keyword = src.tokens[src.index(src.start(item.span)) - 1]
                run = [item]
                index += 1
                while index < len(items):
                    following = items[index]
                    if not isinstance(following, s.AxisDecl) or \
                            str(src.tokens[src.index(src.start(following.span)) - 1]) != ",":
                        break
                    run.append(following)  # `axis a, b`: the same declaration
                    index += 1
                text = "axis " + ", ".join(self.axis_item(a) for a in run)
                groups.append(("axis", [_Line(0, text, _start(keyword),
                                              src.end(run[-1].span))]))
                continue
            if isinstance(item, s.Import):
                groups.append(("import", [self.import_line(item)]))
            elif isinstance(item, s.Definition):
                groups.append(("def", self.definition(item)))
            elif isinstance(item, s.Training):
                groups.append(("def", self.training(item)))
            else:
                groups.append(("pointfree", [self.pointfree(item)]))
            index += 1
        lines: list[_Line] = []
        for position, (kind, group) in enumerate(groups):
            if position == 0:
                group[0].first = "none"
            elif kind == "def" or groups[position - 1][0] in ("def", "doc"):
                group[0].first = "force"
            lines.extend(group)
        return lines

    def axis_item(self, axis: s.AxisDecl) -> str:
        if axis.size is None:
            return axis.name.name
        return f"{axis.name.name} = {self.expr(axis.size)}"

    def import_line(self, item: s.Import) -> _Line:
        src = self.source
        start = src.start(item.span)
        path = str(src.tokens[src.index(start) + 1])
        if item.names is None:
            text = f"import {path}"
        else:
            text = f"from {path} import {', '.join(n.name for n in item.names)}"
        return _Line(0, text, start, src.end(item.span))

    def pointfree(self, item: s.PointFree) -> _Line:
        src = self.source
        text = f"def {item.name.name} = {self.pf(item.expr, None)}"
        end = src.end(item.span)
        if item.doc is not None:
            last = src.tokens[bisect.bisect_left(src.starts, end) - 1]
            assert last.type == "DOCSTRING"
            text += " " + str(last)
        return _Line(0, text, src.start(item.span), end)

    def pf(self, term: s.PfExpr, parent: type | None) -> str:
        if isinstance(term, s.PfName):
            return term.name.name
        if isinstance(term, s.PfCompose):
            text = " ; ".join(self.pf(t, s.PfCompose) for t in term.terms)
            return f"({text})" if parent is not None else text
        text = " (x) ".join(self.pf(t, s.PfTensor) for t in term.terms)
        return f"({text})" if parent is s.PfTensor else text

    # -- definitions and statements
    def definition(self, item: s.Definition) -> list[_Line]:
        src = self.source
        start = src.start(item.span)
        brace = src.find(start, "{")
        inputs = ", ".join(f"{i.name.name}: {self.type_expr(i.type)}" for i in item.inputs)
        header = f"def {item.name.name}({inputs}) -> {self.outputs(item.outputs)} {{"
        lines = [_Line(0, header, start, _end(src.tokens[brace]))]
        if item.doc is not None:
            token = src.tokens[brace + 1]
            raw = _reindent(str(token), src.column(_start(token)), len(INDENT))
            lines.append(_Line(1, raw, _start(token), _end(token), first="none"))
        lines.extend(self.body(item.body, 1, first=item.doc is None))
        lines.append(self.closing(lines[0].end - 1, src.end(item.span), 0,
                                  empty=len(lines) == 1))
        return lines

    def training(self, item: s.Training) -> list[_Line]:
        """`train NAME {`, its docstring, one field a line, `}`."""
        src = self.source
        start = src.start(item.span)
        brace = src.find(start, "{")
        lines = [_Line(0, f"train {item.name.name} {{", start, _end(src.tokens[brace]))]
        if item.doc is not None:
            token = src.tokens[brace + 1]
            raw = _reindent(str(token), src.column(_start(token)), len(INDENT))
            lines.append(_Line(1, raw, _start(token), _end(token), first="none"))
        for train_field in item.fields:
            line = _Line(1, self.train_field(train_field), src.start(train_field.span),
                         src.end(train_field.span))
            if len(lines) == 1:
                line.first = "none"
            lines.append(line)
        lines.append(self.closing(lines[0].end - 1, src.end(item.span), 0,
                                  empty=len(lines) == 1))
        return lines

    def train_field(self, field: s.TrainField) -> str:
        """`loss: cross_entropy[n]`, `optimiser: adam(lr = 0.01, betas = (0.9, 0.999))`."""
        text = f"{field.key.name}: {field.value.name}"
        if field.axes is not None:
            text += "[" + ", ".join(axis.name for axis in field.axes) + "]"
        if field.hypers is not None:
            hypers = []
            for hyper in field.hypers:
                values = ", ".join(self.expr(value) for value in hyper.values)
                hypers.append(f"{hyper.name.name} = " + (f"({values})" if hyper.is_tuple
                                                         else values))
            text += "(" + ", ".join(hypers) + ")"
        return text

    def closing(self, opener: int, end: int, depth: int, *, empty: bool) -> _Line:
        return _Line(depth, "}", end - 1, end, first="none" if empty else "keep", code="none",
                     closes=True, opener=opener)

    def body(self, statements: tuple[s.Statement, ...], depth: int, *,
             first: bool) -> list[_Line]:
        lines: list[_Line] = []
        for statement in statements:
            produced = self.statement(statement, depth)
            if first and not lines:
                produced[0].first = "none"
            lines.extend(produced)
        return lines

    def statement(self, statement: s.Statement, depth: int) -> list[_Line]:
        src = self.source
        start, end = src.start(statement.span), src.end(statement.span)
        if isinstance(statement, s.BlockStmt):
            brace = src.find(src.start(statement.title_span), "{")
            header = f"block {src.slice(statement.title_span)}"
            if statement.repeat != 1:
                header += f" x{statement.repeat}"
            if statement.color is not None:
                title = src.index(src.start(statement.title_span))
                colors = [t for t in src.tokens[title + 1:brace] if t.type == "STRING"]
                header += f" color {colors[-1]}"
            if statement.shared:
                header += " shared"
            lines = [_Line(depth, header + " {", start, _end(src.tokens[brace]))]
            lines.extend(self.body(statement.body, depth + 1, first=True))
            lines.append(self.closing(lines[0].end - 1, end, depth, empty=not statement.body))
            return lines
        return [_Line(depth, self.simple_statement(statement), start, end)]

    def simple_statement(self, statement: s.Statement) -> str:
        if isinstance(statement, s.Assign):
            targets = ", ".join(t.name for t in statement.targets)
            return f"{targets} = {self.expr(statement.value)}"
        if isinstance(statement, s.Equation):
            indices = ", ".join(i.name for i in statement.indices)
            summed = "" if statement.summed is None else \
                f"sum({', '.join(i.name for i in statement.summed)}) "
            return f"{statement.target.name}[{indices}] = {summed}{self.expr(statement.value)}"
        if isinstance(statement, s.Return):
            return "return " + ", ".join(self.expr(v) for v in statement.values)
        if isinstance(statement, s.ParamDecl):
            keyword = "buffer" if statement.buffer else "param"
            text = f"{keyword} {statement.name.name}: {self.type_expr(statement.type)}"
            init = statement.init
            if init is not None:
                bare = init.items is None and not init.args
                text += " = " + (init.name.name if bare else self.expr(init))
            return text
        raise AssertionError(f"unknown statement {statement!r}")

    # -- types
    def type_expr(self, type_: s.TypeExpr) -> str:
        bound = f"[{self.expr(type_.bound)}]" if type_.bound is not None else ""
        return f"{type_.dtype}{bound}[{', '.join(a.name for a in type_.axes)}]"

    def outputs(self, outputs: tuple[s.SignatureOutput, ...]) -> str:
        if len(outputs) == 1 and outputs[0].name is None:
            return self.type_expr(outputs[0].type)
        return "(" + ", ".join((f"{o.name.name}: " if o.name else "") + self.type_expr(o.type)
                               for o in outputs) + ")"

    # -- expressions
    def expr(self, expr: s.Expr, *, tight: bool = False) -> str:
        """`expr` with the fewest parentheses; `tight` (inside brackets) writes a number times a
        name without spaces, as affine indices read: `X[b, 2*p + w]`."""
        if isinstance(expr, s.Var):
            return expr.name
        if isinstance(expr, s.Number):
            return self.number(expr)
        if isinstance(expr, s.BinOp):
            precedence = _PRECEDENCE[expr.op]
            left = self.operand(expr.left, precedence, tight=tight, right=False)
            right = self.operand(expr.right, precedence, tight=tight, right=True)
            atoms = (expr.left, expr.right)
            if tight and expr.op == "*" and all(isinstance(a, (s.Var, s.Number)) for a in atoms) \
                    and any(isinstance(a, s.Number) for a in atoms):
                return f"{left}*{right}"
            return f"{left} {expr.op} {right}"
        if isinstance(expr, s.Neg):  # `-(a + b)`, `-a`, and `- -a` (not `--a`)
            inner = self.operand(expr.operand, _NEG, tight=tight, right=False)
            return ("- " if isinstance(expr.operand, s.Neg) else "-") + inner
        if isinstance(expr, s.Call):
            items = "" if expr.items is None else f"[{self.items_text(expr.items)}]"
            args = ", ".join(self.expr(a) for a in expr.args)
            return f"{expr.name.name}{items}({args})"
        if isinstance(expr, s.Indexed):
            return f"{expr.name.name}[{self.items_text(expr.items)}]"
        raise AssertionError(f"unknown expression {expr!r}")

    def operand(self, expr: s.Expr, precedence: int, *, tight: bool, right: bool) -> str:
        own = _PRECEDENCE[expr.op] if isinstance(expr, s.BinOp) else \
            _NEG if isinstance(expr, s.Neg) else _ATOM
        text = self.expr(expr, tight=tight)
        if own < precedence or (right and own == precedence):
            return f"({text})"
        return text

    def number(self, number: s.Number) -> str:
        text = self.source.slice(number.span)
        if _NUMBER.fullmatch(text):
            return text
        return str(int(number.value)) if number.is_int else repr(number.value)

    def items_text(self, items: tuple[s.BracketItem, ...]) -> str:
        return ", ".join(self.bracket_item(item) for item in items)

    def bracket_item(self, item: s.BracketItem) -> str:
        if isinstance(item, s.Arrow):
            left = " ".join(i.name for i in item.left)
            right = " ".join(i.name for i in item.right)
            return f"{left} -> {right}"
        if isinstance(item, s.Comparison):
            return f"{self.expr(item.left, tight=True)} {item.op} " \
                   f"{self.expr(item.right, tight=True)}"
        if isinstance(item, s.Keyword):
            return f"{item.name.name}={self.expr(item.value, tight=True)}"
        if isinstance(item, s.Each):
            return f"each {item.axis.name}"
        return self.expr(item, tight=True)

    # -- comments
    def attach_comments(self, lines: list[_Line]) -> None:
        """Give each comment to the line it ends (trailing) or the line it precedes."""
        starts = [line.start for line in lines]
        text = self.source.text

        def index_of(offset: int) -> int:
            return max(bisect.bisect_right(starts, offset) - 1, 0)

        def body_end(index: int) -> int:
            """For a `}` that closes a body written on one line (`def f(...) -> R[x] { return
            X }  # ...`), the body's last line; else `index`."""
            while index > 0 and lines[index].closes and \
                    "\n" not in text[lines[index].opener:lines[index].start]:
                index -= 1
            return index

        end_of_file = _Line(0, None, len(text), len(text))
        for comment in self.source.comments:
            if comment.after_code:
                assert comment.previous is not None
                index = index_of(_start(comment.previous))
                if _end(comment.previous) == lines[index].end:
                    lines[body_end(index)].trailing = comment
                else:
                    lines[index].leading.append(comment)
            elif comment.following is not None:
                lines[index_of(_start(comment.following))].leading.append(comment)
            else:
                end_of_file.leading.append(comment)
        if end_of_file.leading:
            if not lines:
                end_of_file.first = "none"
            lines.append(end_of_file)

    # -- output
    def render(self, lines: list[_Line]) -> str:
        src = self.source
        out: list[str] = []
        trailing: list[tuple[int, _Comment, bool]] = []  # (output line, comment, joins above)
        for line in lines:
            entries: list[tuple[bool, str]] = []  # (blank line before, text)
            interior = False
            for comment in line.leading:
                inside = comment.start > line.start
                blank = src.blank_before(line.start if inside and not interior
                                         else comment.start)
                interior = interior or inside
                depth = line.depth + (1 if line.closes else 0)
                entries.append((blank, INDENT * depth + comment.text))
            if line.text is not None:
                blank = False if interior else src.blank_before(line.start)
                if line.code == "none":
                    blank = False
                text = "\n".join(INDENT * line.depth + part if number == 0 else part
                                 for number, part in enumerate(line.text.split("\n")))
                entries.append((blank, text))
            if line.first != "keep" and entries:
                entries[0] = (line.first == "force", entries[0][1])
            for blank, text in entries:
                if blank and out:
                    out.append("")
                out.append(text)
            if line.trailing is not None and line.text is not None:
                joins = bool(trailing) and trailing[-1][0] == len(out) - 2 and \
                    len(entries) == 1 and not entries[0][0]
                trailing.append((len(out) - 1, line.trailing, joins))
        self.place_trailing(out, trailing)
        return "\n".join(out) + "\n" if out else ""

    def place_trailing(self, out: list[str], trailing: list[tuple[int, _Comment, bool]]) -> None:
        """Put trailing comments after their code, keeping the gap the source left (two spaces
        at least); comments aligned in the source on consecutive lines stay aligned."""
        src = self.source
        groups: list[list[tuple[int, _Comment]]] = []
        for index, comment, joins in trailing:
            if joins and src.column(comment.start) == src.column(groups[-1][-1][1].start):
                groups[-1].append((index, comment))
            else:
                groups.append([(index, comment)])
        for group in groups:
            def code_end(index: int) -> int:
                return len(out[index].rsplit("\n", 1)[-1])

            column = max(code_end(index) + max(c.gap, 2) for index, c in group)
            for index, comment in group:
                out[index] += " " * (column - code_end(index)) + comment.text
