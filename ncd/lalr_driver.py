"""A faster run of lark's LALR(1) parser over a whole text: the same tables, the same
contextual lexers and the same tree callbacks as `lark.Lark.parse`, driven by one loop.

lark lexes through a generator per token, a `LineCounter`, a `Token` constructor with keyword
handling and a `feed_token` call that looks its tables up afresh: most of the time of a parse
of a large file (about 9 microseconds a token). This loop does the same steps inline, with the
tables prepared once (`_prepare`). It builds the same tree, token for token (type, value,
positions), as lark's parse of the same text.

It only parses correct text: at the first character no terminal matches, or the first token
the table has no action for, it gives up (returns None) and the caller parses the text with
lark itself, whose exception the diagnostics are made from. So every error keeps lark's
message, place and expected terminals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from re import Match, Pattern
from typing import Any, NamedTuple

import lark
from lark import Token
from lark.lexer import PatternStr, UnlessCallback
from lark.parse_tree_builder import ExpandSingleChild
from lark.parsers.lalr_analysis import Shift

_START = "start"


class _LexState(NamedTuple):
    """What the contextual lexer matches in one parser state (a `BasicLexer`'s parts)."""

    patterns: tuple[Callable[[str, int], Match[str] | None], ...]
    # A terminal's keywords: a name that is one of them is that keyword's token (what lark's
    # `UnlessCallback` finds by matching the keywords' regex, found in a dict).
    keywords: dict[str, dict[str, str]]
    callbacks: dict[str, Callable[[Token], Token]]  # other callbacks
    ignore: frozenset[str]
    newline: frozenset[str]


class _Action(NamedTuple):
    shift: bool
    target: int  # a shift: the next state
    size: int  # a reduction: how many values it takes
    origin: str  # a reduction: the rule's left-hand side
    build: Callable[[list[Any]], Any] | None  # a reduction: the tree callback
    # a reduction whose callback is lark's `ExpandSingleChild`: one value is the result as it
    # is, and `build` is the callback it wraps (the test done here, not in a call)
    expand_single: bool


class _Tables(NamedTuple):
    lexers: dict[int, _LexState]
    actions: dict[int, dict[str, _Action]]
    token_callbacks: dict[str, Callable[[Token], Any]]
    start: int
    end: int


class _Lexers(dict[int, _LexState]):
    """The lexer of each parser state, made when the state is first reached: making one
    compiles its terminals' regular expression, and a small text reaches few of the states
    (making them all took about 19 ms at every start; parsing a gallery file makes 54 of the
    284, in about 12 ms)."""

    def __init__(self, basics: Mapping[int, lark.lexer.AbstractBasicLexer]) -> None:
        super().__init__()
        self.basics = basics

    def __missing__(self, state: int) -> _LexState:
        basic = self.basics[state]
        assert isinstance(basic, lark.lexer.BasicLexer)  # as `_prepare` checked
        scanner = basic.scanner  # built on first use; also fills `basic.callback`
        patterns: list[Pattern[str]] = scanner._mres
        keywords: dict[str, dict[str, str]] = {}
        others: dict[str, Callable[[Token], Token]] = {}
        for kind, callback in basic.callback.items():
            words = _keywords(callback)
            if words is None:
                others[kind] = callback
            else:
                keywords[kind] = words
        made = _LexState(tuple(p.match for p in patterns), keywords, others,
                         frozenset(basic.ignore_types), frozenset(basic.newline_types))
        self[state] = made
        return made


@functools.cache
def _prepare(parser: lark.Lark) -> _Tables | None:
    """The tables of `parser` in the form the loop reads; None when the parser is not the kind
    this driver knows (LALR with a contextual lexer and no post-lexer)."""
    frontend = parser.parser
    lexer = getattr(frontend, "lexer", None)
    if parser.options.parser != "lalr" or parser.options.postlex is not None or \
            not isinstance(lexer, lark.lexer.ContextualLexer):
        return None
    inner = frontend.parser.parser  # lark's `_Parser`
    table = inner.parse_table
    callbacks: dict[Any, Any] = inner.callbacks
    if not all(isinstance(basic, lark.lexer.BasicLexer) for basic in lexer.lexers.values()):
        return None
    lexers = _Lexers(lexer.lexers)
    actions: dict[int, dict[str, _Action]] = {}
    for state, row in table.states.items():
        actions[state] = {
            terminal: _Action(True, arg, 0, "", None, False) if action is Shift else
            _reduction(len(arg.expansion), arg.origin.name, callbacks.get(arg))
            for terminal, (action, arg) in row.items()}
    token_callbacks = {k: v for k, v in callbacks.items() if isinstance(k, str)}
    return _Tables(lexers, actions, token_callbacks, table.start_states[_START],
                   table.end_states[_START])


def _keywords(callback: Callable[[Token], Token]) -> dict[str, str] | None:
    """The keywords of lark's `UnlessCallback` (a token that fully matches one of its literal
    strings takes that string's type, the first one listed where two are equal), or None
    where `callback` is something else."""
    if type(callback) is not UnlessCallback or callback.scanner.g_regex_flags:
        return None
    words: dict[str, str] = {}
    for terminal in callback.scanner.terminals:
        pattern = terminal.pattern
        if not isinstance(pattern, PatternStr) or pattern.flags:
            return None
        words.setdefault(pattern.value, terminal.name)
    return words


def _reduction(size: int, origin: str, build: Callable[[list[Any]], Any] | None) -> _Action:
    if type(build) is ExpandSingleChild:
        return _Action(False, -1, size, origin, build.node_builder, True)
    return _Action(False, -1, size, origin, build, False)


def parse(parser: lark.Lark, text: str) -> Any | None:
    """The tree `parser.parse(text)` returns, or None where that parse would fail (or where
    this driver does not know the parser's kind): then call lark."""
    tables = _prepare(parser)
    if tables is None:
        return None
    lexers, actions, token_callbacks = tables.lexers, tables.actions, tables.token_callbacks
    end_state = tables.end
    state_stack: list[int] = [tables.start]
    value_stack: list[Any] = []
    position, line, line_start, size = 0, 1, 0, len(text)
    last: Token | None = None
    new_token = str.__new__
    while True:
        # -- the next token, lexed in the current parser state (lark's `next_token`)
        token: Token | None = None
        patterns, keywords, lex_callbacks, ignore, newline = lexers[state_stack[-1]]
        while position < size:
            for match_at in patterns:
                found = match_at(text, position)
                if found is not None:
                    break
            else:
                return None  # unexpected characters: lark says which
            value = found.group(0)
            kind = found.lastgroup
            assert kind is not None
            ignored = kind in ignore
            made: Token | None = None
            if not ignored or kind in keywords or kind in lex_callbacks:
                made = new_token(Token, value)
                made.type = kind
                made.start_pos = position
                made.value = value
                made.line = line
                made.column = position - line_start + 1
            if kind in newline:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = position + value.rindex("\n") + 1
            position += len(value)
            if made is not None:
                made.end_line = line
                made.end_column = position - line_start + 1
                made.end_pos = position
                if kind in keywords:
                    made.type = keywords[kind].get(value, kind)
                elif kind in lex_callbacks:
                    made = lex_callbacks[kind](made)
                if not ignored:
                    token = made
                    break
        is_end = token is None
        if token is None:
            token = Token.new_borrow_pos("$END", "", last) if last is not None else \
                Token("$END", "", 0, 1, 1)
        else:
            last = token
        # -- the token fed to the parser (lark's `feed_token`)
        kind = token.type
        while True:
            action = actions[state_stack[-1]].get(kind)
            if action is None:
                return None  # an unexpected token: lark says which
            shift, target, taking, origin, build, expand_single = action
            if shift:
                if is_end or target == end_state:
                    return None
                state_stack.append(target)
                value_stack.append(token if kind not in token_callbacks
                                   else token_callbacks[kind](token))
                break
            taken: list[Any] = []
            if taking:
                taken = value_stack[-taking:]
                del state_stack[-taking:]
                del value_stack[-taking:]
            if expand_single and len(taken) == 1:
                result = taken[0]
            else:
                result = build(taken) if build is not None else taken
            goto = actions[state_stack[-1]].get(origin)
            if goto is None or not goto[0]:
                return None
            state_stack.append(goto[1])
            value_stack.append(result)
            if is_end and goto[1] == end_state:
                return value_stack[-1]
