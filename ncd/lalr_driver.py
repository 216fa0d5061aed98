"""A faster run of lark's LALR(1) parser over a whole text: the same tables, the same
contextual lexers and the same tree callbacks as `lark.Lark.parse`, driven by one loop.

lark lexes through a generator per token, a `LineCounter`, a `Token` constructor with keyword
handling and a `feed_token` call that looks its tables up afresh: most of the time of a parse
of a large file (about 9 microseconds a token). This loop does the same steps inline, with the
tables prepared once (`_prepare`). It builds the same tree, token for token (type, value,
positions), as lark's parse of the same text.

Each lexer state says per terminal, in one look-up, which of lark's steps a token needs
(`_handling`): most need none but its positions. A reduction's callback chain (lark's child
filter, `?rule` expansion, the tree class) is taken apart once and run in the loop; a
reduction that passes its one value up as it is only changes the state.

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
from lark.parse_tree_builder import (
    ChildFilterLALR,
    ChildFilterLALR_NoPlaceholders,
    ExpandSingleChild,
)
from lark.parsers.lalr_analysis import Shift

_START = "start"


class _LexState(NamedTuple):
    """What the contextual lexer matches in one parser state (a `BasicLexer`'s parts)."""

    match: Callable[[str, int], Match[str] | None]  # the state's terminals, in lark's order
    # What to do with each terminal the state matches (`_handling`): one dict look-up per
    # token in place of four set and dict tests.
    kinds: dict[str, int]
    # A terminal's keywords: a name that is one of them is that keyword's token (what lark's
    # `UnlessCallback` finds by matching the keywords' regex, found in a dict).
    keywords: dict[str, dict[str, str]]
    callbacks: dict[str, Callable[[Token], Token]]  # other callbacks
    ignore: frozenset[str]
    newline: frozenset[str]


# How the loop handles a terminal, the cases lark's general steps come to: a token on one
# line with no callback (most tokens), the same looked up among its keywords (a name), an
# ignored one on one line (spaces), an ignored one that may hold newlines (spaces and
# newlines), and everything else, in lark's general steps.
_PLAIN, _KEYWORD, _SKIP, _SKIP_LINES, _GENERAL = range(5)


def _handling(ignored: bool, newlines: bool, keywords: bool, callback: bool) -> int:
    if callback or (ignored and keywords):
        return _GENERAL
    if ignored:
        return _SKIP_LINES if newlines else _SKIP
    if newlines:
        return _GENERAL
    return _KEYWORD if keywords else _PLAIN


class _Reduction(NamedTuple):
    """A rule's reduction, taken apart so that the loop runs the steps of lark's callback
    chain itself (`ChildFilterLALR*`, then `ExpandSingleChild`) and calls the tree class
    directly, not one callback object per step."""

    size: int  # how many values it takes
    origin: str  # the rule's left-hand side
    # lark's child filter: (index, to_expand, Nones before it) for each value kept, and the
    # Nones after them; None where the rule has no filter (the values are the children)
    include: tuple[tuple[int, bool, int], ...] | None
    append_none: int
    expand_single: bool  # one child is the result as it is (`?rule`)
    data: str | None  # the node's name where the node is `_Node(data, children)`, else None
    build: Callable[[list[Any]], Any] | None  # otherwise lark's callback, called as it is


class _Tables(NamedTuple):
    lexers: dict[int, _LexState]
    # a state's actions by terminal (and gotos by rule name): the next state (an int) for a
    # shift or a goto, the rule's name (a str) for a reduction of one value that passes it up
    # as it is (`?rule: other`), or the reduction
    actions: dict[int, dict[str, int | str | _Reduction]]
    token_callbacks: dict[str, Callable[[Token], Any]]
    start: int
    end: int
    # the tree class (`_Node`) that makes a node from `_Reduction.data` and the children
    node_class: Callable[[str, list[Any]], Any]


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
        ignore = frozenset(basic.ignore_types)
        newline = frozenset(basic.newline_types)
        kinds: dict[str, int] = {}
        for pattern in patterns:
            for kind in pattern.groupindex:
                kinds[kind] = _handling(kind in ignore, kind in newline, kind in keywords,
                                        kind in others)
        made = _LexState(_first_match(tuple(p.match for p in patterns)), kinds, keywords,
                         others, ignore, newline)
        self[state] = made
        return made


def _first_match(matchers: tuple[Callable[[str, int], Match[str] | None], ...]
                 ) -> Callable[[str, int], Match[str] | None]:
    """The first of the patterns' matches (lark splits a state's terminals into several
    patterns only where one would hold too many groups; this grammar needs one)."""
    if len(matchers) == 1:
        return matchers[0]

    def match(text: str, position: int) -> Match[str] | None:
        for match_at in matchers:
            found = match_at(text, position)
            if found is not None:
                return found
        return None

    return match


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
    # the class lark makes nodes of (`Lark` takes `Tree` where none is given)
    node_class: Callable[[str, list[Any]], Any] = parser.options.tree_class or lark.Tree
    lexers = _Lexers(lexer.lexers)
    actions: dict[int, dict[str, int | str | _Reduction]] = {}
    for state, row in table.states.items():
        actions[state] = {
            terminal: arg if action is Shift else
            _passed_up(_reduction(len(arg.expansion), arg.origin.name, callbacks.get(arg),
                                  node_class))
            for terminal, (action, arg) in row.items()}
    token_callbacks = {k: v for k, v in callbacks.items() if isinstance(k, str)}
    return _Tables(lexers, actions, token_callbacks, table.start_states[_START],
                   table.end_states[_START], node_class)


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


def _reduction(size: int, origin: str, build: Any,
               node_class: Callable[[str, list[Any]], Any]) -> _Reduction:
    """A reduction taken apart into the steps of lark's callback chain, where each step is one
    this driver knows; else one that calls the chain as it is."""
    chain = build
    include: tuple[tuple[int, bool, int], ...] | None = None
    append_none = 0
    # The outermost step first: lark wraps the filter around `ExpandSingleChild`.
    if type(chain) is ChildFilterLALR:
        include = tuple((i, bool(expand), int(nones)) for i, expand, nones in chain.to_include)
        append_none = chain.append_none
        chain = chain.node_builder
    elif type(chain) is ChildFilterLALR_NoPlaceholders:
        include = tuple((i, bool(expand), 0) for i, expand in chain.to_include)
        chain = chain.node_builder
    expand_single = type(chain) is ExpandSingleChild
    if expand_single:
        chain = chain.node_builder
    if type(chain) is functools.partial and chain.func is node_class and \
            not chain.keywords and len(chain.args) == 1 and isinstance(chain.args[0], str):
        return _Reduction(size, origin, include, append_none, expand_single, chain.args[0],
                          None)
    return _Reduction(size, origin, None, 0, False, None, build)


def _passed_up(reduction: _Reduction) -> str | _Reduction:
    """The rule's name where the reduction takes one value and passes it up as it is (the
    value stack stays as it was: only the state changes), else the reduction."""
    size, origin, include, append_none, expand_single, data, _ = reduction
    if size == 1 and expand_single and data is not None and not append_none and \
            include in (None, ((0, False, 0),)):
        return origin
    return reduction


def parse(parser: lark.Lark, text: str) -> Any | None:
    """The tree `parser.parse(text)` returns, or None where that parse would fail (or where
    this driver does not know the parser's kind): then call lark."""
    tables = _prepare(parser)
    if tables is None:
        return None
    lexers, actions, token_callbacks = tables.lexers, tables.actions, tables.token_callbacks
    end_state = tables.end
    node_class = tables.node_class
    state = tables.start
    state_stack: list[int] = [state]
    value_stack: list[Any] = []
    push_state, push_value = state_stack.append, value_stack.append
    position, line, line_start, size = 0, 1, 0, len(text)
    last: Token | None = None
    new_token = str.__new__
    while True:
        # -- the next token, lexed in the current parser state (lark's `next_token`)
        token: Token | None = None
        match, kinds, keywords, lex_callbacks, ignore, newline = lexers[state]
        while position < size:
            found = match(text, position)
            if found is None:
                return None  # unexpected characters: lark says which
            kind = found.lastgroup
            assert kind is not None
            handling = kinds[kind]
            if handling == _SKIP:
                position = found.end()
                continue
            value = found.group(0)
            if handling == _SKIP_LINES:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = position + value.rindex("\n") + 1
                position = found.end()
                continue
            made = new_token(Token, value)
            made.type = kind
            made.start_pos = position
            made.value = value
            made.line = line
            made.column = position - line_start + 1
            if handling <= _KEYWORD:  # on one line, no callback but a keyword's
                position = found.end()
                made.end_line = line
                made.end_column = position - line_start + 1
                made.end_pos = position
                if handling == _KEYWORD:
                    made.type = keywords[kind].get(value, kind)
                token = made
                break
            # lark's general steps: newlines counted, then the token's callback
            if kind in newline:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = position + value.rindex("\n") + 1
            position += len(value)
            made.end_line = line
            made.end_column = position - line_start + 1
            made.end_pos = position
            if kind in keywords:
                made.type = keywords[kind].get(value, kind)
            elif kind in lex_callbacks:
                made = lex_callbacks[kind](made)
            if kind not in ignore:
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
            action: Any = actions[state].get(kind)  # read by its type, as tested below
            if action is None:
                return None  # an unexpected token: lark says which
            if type(action) is int:  # a shift
                if is_end or action == end_state:
                    return None
                state = action
                push_state(state)
                push_value(token if kind not in token_callbacks
                           else token_callbacks[kind](token))
                break
            if type(action) is str:  # one value passed up: a new state, the same value
                del state_stack[-1]
                state = actions[state_stack[-1]].get(action)  # type: ignore[assignment]
                if type(state) is not int:
                    return None
                push_state(state)
                if is_end and state == end_state:
                    return value_stack[-1]
                continue
            taking, origin, include, append_none, expand_single, data, build = action
            children: list[Any] = []
            if taking:
                children = value_stack[-taking:]
                del state_stack[-taking:]
                del value_stack[-taking:]
            if data is None:
                result = build(children) if build is not None else children
            else:
                if include is not None:  # lark's `ChildFilterLALR`, step for step
                    taken, children = children, []
                    for index, to_expand, nones in include:
                        if nones:
                            children += [None] * nones
                        if to_expand:
                            if children:
                                children += taken[index].children
                            else:  # lark's left recursion: the child's list, reused
                                children = taken[index].children
                        else:
                            children.append(taken[index])
                    if append_none:
                        children += [None] * append_none
                if expand_single and len(children) == 1:
                    result = children[0]
                else:
                    result = node_class(data, children)
            state = actions[state_stack[-1]].get(origin)  # type: ignore[assignment]
            if type(state) is not int:
                return None
            push_state(state)
            push_value(result)
            if is_end and state == end_state:
                return value_stack[-1]
