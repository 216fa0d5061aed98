"""Parsing: `.ncd` text to the syntax tree of `ncd.syntax`, or syntax diagnostics.

The grammar lives in `grammar/ncd.lark` (shipped as `ncd.grammar`); lark parses it LALR(1)
and this module turns lark's tree into `ncd.syntax` nodes with spans. Parse failures become
diagnostics with a location and a plain-words list of what could come next.

The parser's tables are precomputed in `ncd/parser_tables.py` (loading them takes
milliseconds, computing them a tenth of a second at every start). After a change to the
grammar, write them again with `python -m ncd.parser`; until then the parser computes its
tables at start-up, and a test says the file is stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import math
import os
import re
import sys
import warnings
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any

import lark
from lark import Token, Tree

from ncd import lalr_driver
from ncd import syntax as s
from ncd.context import paused_collection
from ncd.diagnostics import Diagnostic, Note
from ncd.ir import Span, trusted_span

MAX_SOURCE_BYTES = 1_000_000
MAX_NESTING = 64
MAX_INT_DIGITS = 18
MAX_EXPRESSION_DEPTH = 100  # operators in one expression chain, e.g. `X + X + ... + X`
MAX_POINTFREE_TERMS = 1_000  # names in one point-free expression, e.g. `f ; f ; ... ; f`

# How each terminal reads in "expected one of ..." messages.
TERMINAL_WORDS: dict[str, str] = {
    "IMPORT": "`import`", "FROM": "`from`", "AXIS": "`axis`", "DEF": "`def`",
    "RETURN": "`return`", "PARAM": "`param`", "BUFFER": "`buffer`", "BLOCK": "`block`",
    "COLOR": "`color`", "SHARED": "`shared`", "EACH": "`each`", "TRAIN": "`train`",
    "SUM": "`sum`", "REAL": "`R`", "NAT": "`N`", "BOOL": "`B`",
    "REPEAT": "a repetition like `x6`", "ARROW": "`->`", "TENSOR": "`(x)`",
    "COMPARE": "a comparison", "FLOORDIV": "`//`", "PERCENT": "`%`", "EQUAL": "`=`", "COMMA": "`,`",
    "COLON": "`:`", "SEMICOLON": "`;`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`",
    "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`", "PLUS": "`+`", "MINUS": "`-`",
    "STAR": "`*`", "SLASH": "`/`", "NAME": "a name", "INT": "an integer", "FLOAT": "a number",
    "DOCSTRING": "a docstring", "STRING": "a string", "$END": "the end of the file",
}

_CLOSERS = {"(": ")", "[": "]", "{": "}"}

# Tokens that only shape the tree; the builder skips them.
_PUNCTUATION = {
    "IMPORT", "FROM", "AXIS", "DEF", "RETURN", "PARAM", "BLOCK", "COLOR", "SHARED", "EACH", "TRAIN",
    "ARROW", "TENSOR", "EQUAL", "COMMA", "COLON", "SEMICOLON", "LPAR", "RPAR", "LSQB", "RSQB",
    "LBRACE", "RBRACE", "PLUS", "MINUS", "STAR", "SLASH", "FLOORDIV", "PERCENT",
}


class ParseFailure(Exception):
    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class _Node(Tree):
    """A tree that knows its first and last token (None for a tree of no tokens): what lark's
    `propagate_positions` computes, at a fraction of its cost (it was most of the parse time).
    Set as the tree is built, from the children, which are complete by then."""

    first: Token | None
    last: Token | None

    def __init__(self, data: str, children: list[Any], meta: Any = None) -> None:
        self.data = data
        self.children = children
        self._meta = meta
        first = last = None
        if children:  # most often the first and last children are tokens or end in tokens
            head, tail = children[0], children[-1]
            if head is not None:
                first = head if isinstance(head, Token) else head.first
            if tail is not None:
                last = tail if isinstance(tail, Token) else tail.last
        if first is None:
            for child in children:
                if child is not None:
                    first = child if isinstance(child, Token) else child.first
                    if first is not None:
                        break
        if last is None:
            for child in reversed(children):
                if child is not None:
                    last = child if isinstance(child, Token) else child.last
                    if last is not None:
                        break
        self.first = first
        self.last = last


# The options the parser is built with; the precomputed tables (`ncd.parser_tables`) hold
# them too and are used only while they, the grammar and lark's version all match.
_OPTIONS: dict[str, Any] = {"parser": "lalr", "maybe_placeholders": True}


def grammar_text() -> str:
    return resources.files("ncd.grammar").joinpath("ncd.lark").read_text(encoding="utf-8")


def tables_key(grammar: str) -> str:
    """What the precomputed tables were made from: the grammar, lark's version, the options."""
    made_from = json.dumps([grammar, lark.__version__, _OPTIONS], sort_keys=True)
    return hashlib.sha256(made_from.encode("utf-8")).hexdigest()


def build_parser(grammar: str) -> lark.Lark:
    """The LALR(1) parser, its tables computed from the grammar (about 0.1 s)."""
    return lark.Lark(grammar, **_OPTIONS, tree_class=_Node)


@functools.cache
def _parser() -> lark.Lark:
    """The parser, from the tables precomputed by `write_tables` when they match the grammar
    (a start-up of milliseconds), else computed afresh."""
    from ncd import parser_tables

    if parser_tables.KEY == tables_key(grammar_text()):
        # How lark's own standalone parsers load their tables (`Lark.load` takes no options).
        tables = parser_tables.TABLES
        return lark.Lark._load_from_dict(tables["data"], tables["memo"], tree_class=_Node)
    return build_parser(grammar_text())


def write_tables(path: Path) -> None:
    """Write the parser's tables as a Python module (`python -m ncd.parser`): imported from
    its bytecode, they load faster than lark computes them."""
    import pprint  # here, not at start-up: only the tables' writer uses it

    grammar = grammar_text()
    built = build_parser(grammar)
    data, memo = built.memo_serialize([lark.lexer.TerminalDef, lark.grammar.Rule])
    data["options"]["tree_class"] = None  # a class, not data: `_parser` passes it when loading
    assert ast.literal_eval(repr(data)) == data, "lark's tables are plain data"
    tables = pprint.pformat({"data": data, "memo": memo}, width=99, compact=True)
    path.write_text(
        '"""The LALR(1) tables of `grammar/ncd.lark`, precomputed by lark: generated by '
        "`python -m ncd.parser`;\ndo not edit. `ncd.parser` uses them only while `KEY` matches "
        'the grammar, lark\'s version and the\nparser\'s options."""\n\n'
        "# ruff: noqa: E501\n\nfrom typing import Any\n\n"
        f'KEY = "{tables_key(grammar)}"\n\nTABLES: dict[str, Any] = {tables}\n',
        encoding="utf-8")


def parse(text: str, path: str = "<input>") -> s.Module:
    """Parse `text`; raise `ParseFailure` with one diagnostic on a syntax error."""
    _check_limits(text, path)
    with paused_collection():  # many long-lived objects: see `paused_collection`
        return _parse(text, path)


def _parse(text: str, path: str) -> s.Module:
    # The same tree as lark's own parse, in a faster loop (`ncd.lalr_driver`); a text that
    # does not parse is parsed again by lark, whose error the diagnostic is made from.
    tree = lalr_driver.parse(_parser(), text)
    if tree is None:
        try:
            tree = _parser().parse(text)
        except lark.exceptions.UnexpectedInput as error:
            raise ParseFailure(_syntax_diagnostic(error, text, path)) from None
    builder = _Builder(path)
    try:
        return builder.module(tree)
    except RecursionError:
        # The limits above keep every construct shallow; should one still be too deep, the
        # error points at the item being read.
        raise ParseFailure(Diagnostic(
            "E103", "the input is nested too deeply to read",
            builder.span(builder.reading) if builder.reading is not None else Span(
                file=path, line=1, column=1, end_line=1, end_column=2),
            hint="split long expressions into several statements")) from None


_BRACKET = re.compile(r"[(\[{)\]}]")


def _check_limits(text: str, path: str) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise ParseFailure(Diagnostic(
            "E103", f"the file is larger than {MAX_SOURCE_BYTES:,} bytes",
            Span(file=path, line=1, column=1, end_line=1, end_column=2),
            hint="split the model into several files and import them"))
    depth = 0
    # Only the brackets, as strings: a loop per character, or a match object per bracket, is
    # slow; the place is found again only for the error.
    for count, bracket in enumerate(_BRACKET.findall(text)):
        if bracket in "([{":
            depth += 1
            if depth > MAX_NESTING:
                at = next(islice(_BRACKET.finditer(text), count, None)).start()
                line = text.count("\n", 0, at) + 1
                column = at - (text.rfind("\n", 0, at) + 1) + 1
                raise ParseFailure(Diagnostic(
                    "E103", f"brackets are nested more than {MAX_NESTING} deep",
                    Span(file=path, line=line, column=column, end_line=line, end_column=column + 1),
                    hint="name intermediate results instead of nesting expressions"))
        elif depth:  # a closer with none open counts as nothing
            depth -= 1


def _point_span(path: str, line: int, column: int, width: int = 1) -> Span:
    return Span(file=path, line=line, column=column, end_line=line, end_column=column + width)


def _expected_words(expected: set[str]) -> str:
    words = sorted({TERMINAL_WORDS.get(name, name.lower()) for name in expected})
    if len(words) > 8:
        words = [*words[:8], "..."]
    return ", ".join(words)


def _unclosed_bracket(text: str, path: str) -> tuple[str, Span] | None:
    """The innermost bracket left open at the end of `text`, ignoring strings and comments."""
    try:
        tokens = list(_parser().lex(text))
    except lark.exceptions.LarkError:
        return None
    stack: list[Token] = []
    for token in tokens:
        if token.value in _CLOSERS:
            stack.append(token)
        elif token.value in _CLOSERS.values() and stack:
            stack.pop()
    if not stack:
        return None
    opener = stack[-1]
    return opener.value, _point_span(path, opener.line or 1, opener.column or 1)


def _syntax_diagnostic(error: lark.exceptions.UnexpectedInput, text: str, path: str) -> Diagnostic:
    line = getattr(error, "line", 1) or 1
    column = getattr(error, "column", 1) or 1
    if isinstance(error, lark.exceptions.UnexpectedCharacters):
        position = error.pos_in_stream
        char = text[position] if position is not None and position < len(text) else "?"
        shown = char if char.isprintable() else f"U+{ord(char):04X}"
        hint = None
        if char == '"':
            hint = "strings are written in double quotes and end on the same line"
        return Diagnostic("E100", f"unexpected character `{shown}`",
                          _point_span(path, line, column), hint=hint)
    if isinstance(error, lark.exceptions.UnexpectedToken) and error.token.type != "$END":
        token = error.token
        value = str(token.value)
        shown = value if len(value) <= 30 else value[:27] + "..."
        width = max(len(value.splitlines()[0]) if value else 1, 1)
        word = TERMINAL_WORDS.get(token.type, token.type.lower())
        found = word if word.startswith("`") else \
            f"{word.removeprefix('a ').removeprefix('an ')} `{shown}`"
        return Diagnostic(
            "E101", f"unexpected {found}; expected {_expected_words(set(error.expected))}",
            _point_span(path, token.line or line, token.column or column, width),
            hint=_token_hint(token, set(error.expected)))
    # The end of the input came too soon: point at the bracket left open, not the last token.
    expected = set(getattr(error, "expected", set()) or ())
    opened = _unclosed_bracket(text, path)
    lines = text.splitlines() or [""]
    end = _point_span(path, len(lines), len(lines[-1]) + 1)
    if opened:
        bracket, span = opened
        return Diagnostic(
            "E102", f"`{bracket}` is never closed", span,
            hint=f"add `{_CLOSERS[bracket]}`",
            notes=(Note(end, "the file ends here"),))
    message = "the file ends in the middle of a statement"
    if expected:
        message += f"; expected {_expected_words(expected)}"
    return Diagnostic("E102", message, end)


def is_noncharacter(char: str) -> bool:
    """One of the 66 Unicode noncharacters: U+FDD0..U+FDEF and the last two code points of
    every plane (U+FFFE, U+FFFF, U+1FFFE, ..., U+10FFFF). They are not text: no output carries
    them (U+FFFE and U+FFFF are not even XML)."""
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def _character_name(char: str) -> str:
    kind = "the noncharacter" if is_noncharacter(char) else "the character"
    return f"{kind} U+{ord(char):04X}"


# What no string may hold: lone surrogates (not UTF-8) and noncharacters (not text; U+FFFE and
# U+FFFF are not XML); `_UNPRINTABLE` adds the control characters (category Cc) other than tab
# and newline, which are not XML or not a title. A docstring is read as written, so only the
# first two are refused in it.
_NOT_TEXT = "\ud800-\udfff\ufdd0-\ufdef" + "".join(
    f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
_UNPRINTABLE_IN_DOCSTRING = re.compile(f"[{_NOT_TEXT}]")
_UNPRINTABLE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_NOT_TEXT}]")


# One character of a string literal as written: an escape sequence or a plain character.
_STRING_PIECE = re.compile(
    r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|N\{[^}]*\}|[0-7]{1,3}|.)|.",
    re.DOTALL)


def _written_at(literal: str, wanted: str) -> tuple[int, int] | None:
    """Where in a string literal (quotes included) the first character `wanted` of its value
    is written: the offset and length of that character or of the escape that spells it."""
    for match in _STRING_PIECE.finditer(literal, 1, len(literal) - 1):
        piece = match.group()
        if piece.startswith("\\") and len(piece) > 1:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    piece = str(ast.literal_eval(f'"{piece}"'))
            except (ValueError, SyntaxError):
                continue
        if wanted in piece:
            return match.start(), match.end() - match.start()
    return None


def _token_hint(token: Token, expected: set[str]) -> str | None:
    if token.type == "NAME" and "EQUAL" in expected:
        return "each statement binds names with `=`"
    if token.type == "LBRACE" and "ARROW" in expected:
        return "a definition states its result type: `def f(X: R[x]) -> R[x] { ... }`"
    if "RBRACE" in expected and token.type in {"DEF", "AXIS"}:
        return "the definition above is missing its closing `}`"
    return None


_DTYPES = {"dtype_real": "R", "dtype_nat": "N", "dtype_bool": "B"}
_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%"}


class _Builder:
    """Turns lark's tree into `ncd.syntax` nodes."""

    def __init__(self, path: str):
        self.path = path
        self.depth = 0
        # the item being read, for errors without a place (its span made only for one)
        self.reading: Tree | Token | None = None
        self.pf_names = 0  # names read in the point-free expression being read

    # -- spans
    def span(self, node: Tree | Token) -> Span:
        # A span for every node: made without validation (`ir.trusted`), lark's positions
        # being ints.
        if isinstance(node, Token):
            line = node.line or 1
            column = node.column or 1
            return trusted_span(self.path, line, column, node.end_line or line,
                                node.end_column or column + 1)
        first, last = node.first, node.last  # type: ignore[attr-defined]  # `_Node`
        if first is None or last is None:  # a tree of no tokens, e.g. an empty argument list
            return Span(file=self.path, line=1, column=1, end_line=1, end_column=1)
        return trusted_span(self.path, first.line, first.column, last.end_line, last.end_column)

    def ident(self, token: Token) -> s.Ident:
        # `span` of a token, inline: most spans are a name's
        line = token.line or 1
        column = token.column or 1
        return s.Ident(str(token), trusted_span(self.path, line, column, token.end_line or line,
                                                token.end_column or column + 1))

    @staticmethod
    def parts(tree: Tree) -> list[Any]:
        """Children that carry meaning (punctuation and keywords dropped)."""
        return [c for c in tree.children
                if not (isinstance(c, Token) and c.type in _PUNCTUATION)]

    def docstring(self, token: Token | None) -> str | None:
        if token is None:
            return None
        text = str(token)
        found = _UNPRINTABLE_IN_DOCSTRING.search(text)
        if found is not None:
            at = found.start()
            line = (token.line or 1) + text.count("\n", 0, at)
            column = at - text.rfind("\n", 0, at) if "\n" in text[:at] else \
                (token.column or 1) + at
            raise ParseFailure(Diagnostic(
                "E100", f"the docstring holds {_character_name(text[at])}, which is not text",
                _point_span(self.path, line, column), hint="docstrings are printable text"))
        return inspect.cleandoc(text[3:-3])

    def string(self, token: Token) -> str:
        literal = str(token)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # `"\q"` stays a backslash and a q
                value = str(ast.literal_eval(literal))
        except (ValueError, SyntaxError):
            value = literal[1:-1]
        # Escapes may spell what no output can carry: lone surrogates (not UTF-8),
        # noncharacters (U+FFFE and U+FFFF are not XML) and control characters (not XML, not a
        # title). Tabs and newlines stay.
        found = _UNPRINTABLE.search(value)
        if found is not None:
            bad = found.group()
            span = self.span(token)
            written = _written_at(literal, bad)
            if written is not None:  # a string is one line: the offset is a column
                offset, width = written
                span = _point_span(self.path, span.line, span.column + offset, width)
            raise ParseFailure(Diagnostic(
                "E100", f"the string holds {_character_name(bad)}, which is not printable "
                "text", span, hint="strings (titles, colours, paths) are printable text"))
        return value

    # -- module and items
    def module(self, tree: Tree) -> s.Module:
        doc = None
        items: list[s.Item] = []
        for child in tree.children:
            self.reading = child
            if isinstance(child, Token) and child.type == "DOCSTRING":
                doc = self.docstring(child)
            elif isinstance(child, Tree) and child.data == "axis_decl":
                for axis_item in self.parts(child):
                    sub = self.parts(axis_item)
                    size = self.expr(sub[1]) if len(sub) > 1 and sub[1] is not None else None
                    items.append(s.AxisDecl(self.ident(sub[0]), size, self.span(axis_item)))
            elif isinstance(child, Tree):
                items.append(self.item(child))
        return s.Module(self.path, doc, tuple(items))

    def item(self, tree: Tree) -> s.Item:
        kind = tree.data
        parts = self.parts(tree)
        if kind == "import_all":
            return s.Import(self.string(parts[0]), None, self.span(tree))
        if kind == "import_some":
            return s.Import(self.string(parts[0]), tuple(self.ident(t) for t in parts[1:]),
                            self.span(tree))
        if kind == "definition":
            return self.definition(tree)
        if kind == "pointfree":
            return self.pointfree(tree)
        if kind == "training":
            return self.training(tree)
        raise AssertionError(f"unknown item {kind}")

    def training(self, tree: Tree) -> s.Training:
        parts = self.parts(tree)
        doc = None
        fields: list[s.TrainField] = []
        for child in parts[1:]:
            if isinstance(child, Token) and child.type == "DOCSTRING":
                doc = self.docstring(child)
            elif isinstance(child, Tree):
                fields.append(self.train_field(child))
        return s.Training(self.ident(parts[0]), doc, tuple(fields), self.span(tree))

    def train_field(self, tree: Tree) -> s.TrainField:
        key, value, axes_tree, hypers_tree = self.parts(tree)
        axes = None if axes_tree is None else tuple(
            self.ident(token) for token in self.parts(axes_tree))
        hypers = None
        if hypers_tree is not None:
            hypers = tuple(self.hyper(hyper) for hyper in self.parts(hypers_tree)
                           if hyper is not None)
        return s.TrainField(self.ident(key), self.ident(value), axes, hypers, self.span(tree))

    def hyper(self, tree: Tree) -> s.Hyper:
        name, *values = self.parts(tree)
        return s.Hyper(self.ident(name), tuple(self.expr(value) for value in values),
                       tree.data == "hyper_tuple", self.span(tree))

    def definition(self, tree: Tree) -> s.Definition:
        parts = self.parts(tree)
        name = self.ident(parts[0])
        inputs: list[s.SignatureInput] = []
        index = 1
        while index < len(parts) and (parts[index] is None or (
                isinstance(parts[index], Tree) and parts[index].data == "signature_input")):
            if parts[index] is not None:
                sub = self.parts(parts[index])
                inputs.append(s.SignatureInput(self.ident(sub[0]), self.type_expr(sub[1])))
            index += 1
        outputs_tree: Tree = parts[index]
        body_tree: Tree = parts[index + 1]
        outputs = []
        for out in self.parts(outputs_tree):
            sub = self.parts(out)
            if len(sub) == 2:
                outputs.append(s.SignatureOutput(self.ident(sub[0]), self.type_expr(sub[1])))
            else:
                outputs.append(s.SignatureOutput(None, self.type_expr(sub[-1])))
        doc, body = self.body(body_tree)
        return s.Definition(name, tuple(inputs), tuple(outputs), doc, body, self.span(tree))

    def body(self, tree: Tree) -> tuple[str | None, tuple[s.Statement, ...]]:
        doc = None
        statements: list[s.Statement] = []
        for child in self.parts(tree):
            if isinstance(child, Token) and child.type == "DOCSTRING":
                doc = self.docstring(child)
            elif isinstance(child, Tree):
                statements.append(self.statement(child))
        return doc, tuple(statements)

    def pointfree(self, tree: Tree) -> s.PointFree:
        parts = self.parts(tree)
        doc = self.docstring(parts[2]) if len(parts) > 2 else None
        self.pf_names = 0
        return s.PointFree(self.ident(parts[0]), self.pf(parts[1]), doc, self.span(tree))

    def pf_name(self, token: Token, span: Span) -> s.PfName:
        self.pf_names += 1
        if self.pf_names > MAX_POINTFREE_TERMS:
            raise ParseFailure(Diagnostic(
                "E103", f"this point-free expression has more than {MAX_POINTFREE_TERMS:,} "
                "terms", span, hint="split it into several point-free definitions "
                "(`def a = f ; g`, then `def b = a ; h`)"))
        return s.PfName(self.ident(token), span)

    def pf(self, node: Tree | Token) -> s.PfExpr:
        if isinstance(node, Token):
            return self.pf_name(node, self.span(node))
        parts = self.parts(node)
        if node.data == "pf_name":
            return self.pf_name(parts[0], self.span(node))
        if node.data in ("pf_compose", "pf_tensor"):
            return self.pf_chain(node)
        if len(parts) == 1:
            return self.pf(parts[0])
        raise AssertionError(f"unknown point-free node {node.data}")

    def pf_chain(self, node: Tree) -> s.PfExpr:
        """`f ; g ; h` (or `f (x) g (x) h`) as one node with three terms. The grammar nests a
        chain to the left, one level per operator, so the chain is followed in a loop: its
        length is bounded only by `MAX_POINTFREE_TERMS`, not by Python's recursion. A chain in
        parentheses on the left joins the chain, as `(f ; g) ; h` is `f ; g ; h`."""
        cls = s.PfCompose if node.data == "pf_compose" else s.PfTensor
        rights: list[Tree | Token] = []
        current = node
        while True:
            parts = self.parts(current)
            rights.append(parts[1])
            left = parts[0]
            while isinstance(left, Tree) and left.data not in ("pf_compose", "pf_tensor",
                                                                "pf_name"):
                inner = self.parts(left)
                if len(inner) != 1:
                    break
                left = inner[0]  # a parenthesised expression
            if isinstance(left, Tree) and left.data == node.data:
                current = left
                continue
            first = self.pf(parts[0])
            break
        terms = list(first.terms) if isinstance(first, cls) else [first]
        terms.extend(self.pf(right) for right in reversed(rights))
        return cls(tuple(terms), self.span(node))

    def type_expr(self, tree: Tree) -> s.TypeExpr:
        parts = self.parts(tree)
        dtype_tree: Tree = parts[0]
        bound = None
        if dtype_tree.data == "dtype_nat":
            bound = self.expr(self.parts(dtype_tree)[1])
        dtype = _DTYPES[dtype_tree.data]
        axes = tuple(self.ident(t) for t in parts[1:] if t is not None)
        return s.TypeExpr(dtype, bound, axes, self.span(tree))

    # -- statements
    def statement(self, tree: Tree) -> s.Statement:
        kind = tree.data
        parts = self.parts(tree)
        span = self.span(tree)
        if kind == "assign":
            return s.Assign(tuple(self.ident(t) for t in parts[:-1]), self.expr(parts[-1]), span)
        if kind == "equation":
            target = self.ident(parts[0])
            indices = tuple(self.ident(t) for t in parts[1:-1])
            rhs = parts[-1]
            if isinstance(rhs, Tree) and rhs.data == "summed":
                rparts = self.parts(rhs)
                summed = tuple(self.ident(t) for t in rparts[1:-1])
                return s.Equation(target, indices, summed, self.expr(rparts[-1]), span)
            return s.Equation(target, indices, None, self.expr(rhs), span)
        if kind == "return_stmt":
            return s.Return(tuple(self.expr(p) for p in parts), span)
        if kind == "param_decl":
            buffer = isinstance(parts[0], Token) and parts[0].type == "BUFFER"
            if buffer:
                parts = parts[1:]
            init: s.Expr | None = None
            if len(parts) > 2 and isinstance(parts[2], Tree) and parts[2].data == "init_name":
                token = parts[2].children[0]
                assert isinstance(token, Token)
                init = s.Call(self.ident(token), None, (), self.span(token))
            elif len(parts) > 2 and parts[2] is not None:
                init = self.expr(parts[2])
            assert init is None or isinstance(init, s.Call)
            return s.ParamDecl(self.ident(parts[0]), self.type_expr(parts[1]), init, span,
                               buffer)
        if kind == "block":
            title_token = parts[0]
            repeat, color, shared = 1, None, False
            color_span: Span | None = None
            statements: list[s.Statement] = []
            for child in parts[1:]:
                if isinstance(child, Tree) and child.data == "block_repeat":
                    digits = str(child.children[0])[1:]
                    if len(digits) > MAX_INT_DIGITS:
                        raise ParseFailure(Diagnostic(
                            "E103", f"the repetition `x{digits[:12]}...` is too large",
                            self.span(child.children[0]), hint="repeat a block fewer times"))
                    repeat = int(digits)
                elif isinstance(child, Tree) and child.data == "block_color":
                    color_token = self.parts(child)[0]
                    color = self.string(color_token)
                    color_span = self.span(color_token)
                elif isinstance(child, Tree) and child.data == "block_shared":
                    shared = True
                elif isinstance(child, Tree):
                    statements.append(self.statement(child))
            return s.BlockStmt(self.string(title_token), self.span(title_token), repeat, color,
                               shared, tuple(statements), span, color_span)
        raise AssertionError(f"unknown statement {kind}")

    # -- expressions
    def expr(self, node: Tree | Token) -> s.Expr:
        if isinstance(node, Token):
            raise AssertionError(f"bare token {node.type} in expression")
        # Later stages walk expressions recursively: a bounded depth keeps them safe.
        self.depth += 1
        try:
            if self.depth > MAX_EXPRESSION_DEPTH:
                raise ParseFailure(Diagnostic(
                    "E103", f"this expression is nested more than {MAX_EXPRESSION_DEPTH} "
                    "operations deep", self.span(node),
                    hint="name intermediate results in separate statements"))
            return self._expr(node)
        finally:
            self.depth -= 1

    def _expr(self, node: Tree) -> s.Expr:
        kind = node.data
        parts = self.parts(node)
        span = self.span(node)
        if kind == "var":
            return s.Var(str(parts[0]), span)
        if kind == "int":
            digits = str(parts[0])
            if len(digits) > MAX_INT_DIGITS:
                raise ParseFailure(Diagnostic(
                    "E103", f"the integer `{digits[:12]}...` has more than {MAX_INT_DIGITS} "
                    "digits", span, hint="sizes and indices are at most 18 digits long"))
            return s.Number(int(digits), True, span)
        if kind == "float":
            value = float(str(parts[0]))
            if not math.isfinite(value):
                raise ParseFailure(Diagnostic(
                    "E103", f"the number `{parts[0]}` is too large", span,
                    hint="numbers must be finite floating-point values"))
            return s.Number(value, False, span)
        if kind in _OPERATORS:
            op = _OPERATORS[kind]
            token = next((c for c in node.children if isinstance(c, Token) and str(c) == op),
                         None)
            return s.BinOp(op, self.expr(parts[0]), self.expr(parts[1]), span,
                           self.span(token) if token is not None else None)
        if kind == "neg":
            return s.Neg(self.expr(parts[0]), span)
        if kind == "plain_call":
            return s.Call(self.ident(parts[0]), None, self.arguments(parts[1]), span)
        if kind == "bracket_call":
            return s.Call(self.ident(parts[0]), self.bracket_items(parts[1]),
                          self.arguments(parts[2]), span)
        if kind == "indexed":
            return s.Indexed(self.ident(parts[0]), self.bracket_items(parts[1]), span)
        if len(parts) == 1:  # parenthesised expression
            return self.expr(parts[0])
        raise AssertionError(f"unknown expression {kind}")

    def arguments(self, tree: Tree) -> tuple[s.Expr, ...]:
        return tuple(self.expr(p) for p in self.parts(tree) if p is not None)

    def bracket_items(self, tree: Tree) -> tuple[s.BracketItem, ...]:
        items: list[s.BracketItem] = []
        for item in self.parts(tree):
            parts = self.parts(item)
            span = self.span(item)
            if item.data == "arrow":
                tokens = [c for c in item.children if isinstance(c, Token)]
                arrow_at = next(i for i, t in enumerate(tokens) if t.type == "ARROW")
                items.append(s.Arrow(tuple(self.ident(t) for t in tokens[:arrow_at]),
                                     tuple(self.ident(t) for t in tokens[arrow_at + 1:]), span))
            elif item.data == "comparison":
                op = next(str(c) for c in item.children
                          if isinstance(c, Token) and c.type == "COMPARE")
                items.append(s.Comparison(self.expr(parts[0]), op, self.expr(parts[-1]), span))
            elif item.data == "each":
                name = next(c for c in item.children if isinstance(c, Token) and c.type == "NAME")
                items.append(s.Each(self.ident(name), span))
            elif item.data == "keyword":
                items.append(s.Keyword(self.ident(parts[0]), self.expr(parts[1]), span))
            elif item.data == "plain":
                items.append(self.expr(parts[0]))
            else:
                raise AssertionError(f"unknown bracket item {item.data}")
        return tuple(items)


if __name__ == "__main__":
    # Lark numbers the parser's states in the order of sets of strings: a fixed hash seed
    # makes the written tables the same on every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        import subprocess  # here, not at start-up: `ncd check` never starts a process

        sys.exit(subprocess.run([sys.executable, "-m", "ncd.parser", *sys.argv[1:]],
                                env={**os.environ, "PYTHONHASHSEED": "0"}, check=False).returncode)
    write_tables(Path(sys.argv[1]) if len(sys.argv) > 1 else
                 Path(__file__).resolve().with_name("parser_tables.py"))
