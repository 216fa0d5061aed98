"""`ncd fmt`: the canonical layout of a file, printed from the syntax tree.

Guarantees checked here, on the gallery, on every example of `docs/language.md` and on
generated programs (with their layout scrambled and comments sprinkled in): formatting is
idempotent, keeps the meaning (the same IR, or the same diagnostics), keeps every comment (and
in the definition it was in), and the gallery is already formatted. Then the layout rules one
by one, and the command line.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from fuzz_strategies import mutated_programs, programs, tokens
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ncd
from ncd import syntax as s
from ncd.cli import main
from ncd.diagnostics import NcdError
from ncd.formatter import format_source
from ncd.ir import strip_spans
from ncd.parser import ParseFailure, parse

ROOT = Path(__file__).resolve().parent.parent
GALLERY = sorted((ROOT / "gallery").glob("*.ncd"))
DOC = ROOT / "docs" / "language.md"
FENCE = re.compile(r"^```(ncd(?:-error)?)([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
EXAMPLES = [(m.group(1), m.group(2).strip().removeprefix("file=") or None, m.group(3))
            for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


# ---- helpers ----------------------------------------------------------------------------------


def comments(text: str) -> Counter[str]:
    """The comments of `text` (tokenised apart from strings and docstrings), as a multiset."""
    return Counter(t.rstrip() for t in tokens(text) if t.startswith("#"))


def outcome(path: Path) -> object:
    """What loading `path` gives: the IR without spans, or the diagnostic codes."""
    try:
        return strip_spans(ncd.load(path).ir)
    except NcdError as error:
        return tuple(d.code for d in error.diagnostics)


def is_program(outcome: object) -> bool:
    """Whether an outcome is a loaded program (`strip_spans` of an `ir.Program`), not codes."""
    return isinstance(outcome, tuple) and outcome[:1] == ("Program",)


def outcome_of_text(text: str) -> object:
    try:
        return strip_spans(ncd.load(text).ir)
    except NcdError as error:
        return tuple(d.code for d in error.diagnostics)


def shape(node: object) -> object:
    """A syntax tree without its spans, for comparing parses."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, *(shape(getattr(node, f.name))
                                       for f in dataclasses.fields(node)
                                       if f.name != "span" and not f.name.endswith("_span")))
    if isinstance(node, tuple):
        return tuple(shape(n) for n in node)
    return node


def owners(text: str) -> list[tuple[str, int]]:
    """Each comment with the definition it belongs to: the one holding the code it ends, or
    for a comment on a line of its own, the one it precedes (-1: after the last one)."""
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    ends = [line_starts[item.span.end_line - 1] + item.span.end_column - 1
            for item in parse(text).items if isinstance(item, (s.Definition, s.PointFree))]
    found = []
    offset = 0
    code_end = 0  # where the last token ended
    for token in tokens(text):
        if token.startswith("#"):
            after_code = code_end > 0 and "\n" not in text[code_end:offset]
            at = code_end if after_code else offset
            found.append((token.rstrip(), next((i for i, end in enumerate(ends) if end >= at),
                                               -1)))
        elif not token.isspace():
            code_end = offset + len(token)
        offset += len(token)
    return sorted(found)


def check_formatting(text: str) -> str:
    """Format `text` and check the guarantees that need no files; the formatted text."""
    formatted = format_source(text)
    assert format_source(formatted) == formatted, "not idempotent"
    assert shape(parse(formatted)) == shape(parse(text)), "the syntax tree changed"
    assert comments(formatted) == comments(text), "comments changed"
    assert owners(formatted) == owners(text), "a comment moved to another definition"
    assert all(line == line.rstrip() for line in formatted.splitlines()
               if '"""' not in line), "trailing whitespace"
    return formatted


# ---- the gallery and the language reference ----------------------------------------------------


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.name)
def test_gallery_files_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert check_formatting(text) == text


def test_gallery_meaning_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder, change in (("original", False), ("formatted", True)):
        (tmp_path / folder).mkdir()
        for path in GALLERY:
            text = path.read_text(encoding="utf-8")
            # Scrambled first, so that formatting has something to do.
            if change:
                text = format_source(scramble_simply(text))
            (tmp_path / folder / path.name).write_text(text, encoding="utf-8")
    results = {}
    for folder in ("original", "formatted"):
        monkeypatch.chdir(tmp_path / folder)
        results[folder] = [outcome(Path(p.name)) for p in GALLERY]
    assert all(is_program(r) for r in results["original"])
    assert results["original"] == results["formatted"]


def scramble_simply(text: str) -> str:
    """Every space doubled and every line indented oddly: the same program, badly laid out."""
    parts = tokens(text)
    return "".join(p.replace(" ", "  ").replace("\n", "\n ") if p.isspace() else p
                   for p in parts)


@pytest.mark.parametrize("example", range(len(EXAMPLES)))
def test_documentation_examples(example: int, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    kind, file, text = EXAMPLES[example]
    formatted = check_formatting(text)
    results = []
    for folder, source in (("original", text), ("formatted", formatted)):
        (tmp_path / folder).mkdir()
        for _, other_file, other in EXAMPLES:
            if other_file is not None:
                (tmp_path / folder / other_file).write_text(other, encoding="utf-8")
        (tmp_path / folder / (file or "example.ncd")).write_text(source, encoding="utf-8")
        monkeypatch.chdir(tmp_path / folder)
        results.append(outcome(Path(file or "example.ncd")))
    assert results[0] == results[1]
    assert is_program(results[0]) == (kind == "ncd")


# ---- generated programs ------------------------------------------------------------------------

FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPACES = (" ", "  ", "\n", "\n\n", "\n\n\n", "\n  ", "\t", " \n\t ", "\n        ")


@st.composite
def scrambled(draw: st.DrawFn) -> tuple[str, str]:
    """A generated program, and the same program with its whitespace replaced at random and
    comments put in at line ends and on lines of their own."""
    text = draw(programs())
    out: list[str] = []
    count = 0
    for part in tokens(text):
        if part.isspace():
            choice = draw(st.integers(0, len(SPACES) + 2))
            if choice < len(SPACES):
                part = SPACES[choice]
                if out and out[-1].startswith("#") and "\n" not in part:
                    part += "\n"  # a comment ends its line
            else:
                count += 1
                part = f" # note {count}\n" if choice == len(SPACES) else \
                    f"\n  # own line {count}\n\n"
        out.append(part)
    return text, "".join(out)


def without_comments_and_blank_lines(text: str) -> list[str]:
    code = "".join(t for t in tokens(text) if not t.startswith("#"))
    return [line.rstrip() for line in code.splitlines() if line.strip()]


@FUZZ
@given(programs())
def test_generated_programs(text: str) -> None:
    formatted = check_formatting(text)
    assert outcome_of_text(formatted) == outcome_of_text(text)
    assert is_program(outcome_of_text(text))


@FUZZ
@given(scrambled())
def test_layout_and_comments_do_not_matter(pair: tuple[str, str]) -> None:
    """However a program is laid out, it formats to the same code (blank lines and comments
    aside), means the same, and keeps its comments in their definitions."""
    text, messy = pair
    formatted = check_formatting(messy)
    assert without_comments_and_blank_lines(formatted) == \
        without_comments_and_blank_lines(format_source(text))
    assert outcome_of_text(formatted) == outcome_of_text(text)


@FUZZ
@given(mutated_programs())
def test_broken_programs(text: str) -> None:
    """A syntax error raises the parser's own failure; a program that parses but does not
    check gives the same diagnostic codes once formatted."""
    try:
        expected = parse(text)
    except ParseFailure as failure:
        with pytest.raises(ParseFailure) as caught:
            format_source(text)
        assert caught.value.diagnostic == failure.diagnostic
        return
    formatted = check_formatting(text)
    assert shape(parse(formatted)) == shape(expected)
    if "\n" in text:  # a one-line text ending in .ncd would be read as a path
        assert outcome_of_text(formatted) == outcome_of_text(text)


# ---- expressions: the fewest parentheses that keep the parse ----------------------------------

ATOMS = st.sampled_from(["a", "b", "c", "1", "2", "1e-5", "0.50", ".5"])


def expressions() -> st.SearchStrategy[str]:
    """Fully parenthesised expressions."""
    return st.recursive(ATOMS, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//"]), inner)
        .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"(-{e})")), max_leaves=8)


def point_free_expressions() -> st.SearchStrategy[str]:
    """Fully parenthesised point-free expressions."""
    return st.recursive(st.sampled_from(["f", "g", "h"]), lambda inner: st.tuples(
        inner, st.sampled_from([" ; ", " (x) ", " ⊗ "]), inner)
        .map(lambda t: f"({t[0]}{t[1]}{t[2]})"), max_leaves=8)


def parsed(text: str) -> object:
    """The expression of `axis z = ...` or `def z = ...`."""
    item = parse(text).items[0]
    assert isinstance(item, (s.AxisDecl, s.PointFree))
    return shape(item.size if isinstance(item, s.AxisDecl) else item.expr)


def check_minimal_parentheses(prefix: str, expr: str) -> None:
    source = f"{prefix}{expr}\n"
    formatted = format_source(source)
    assert parsed(formatted) == parsed(source)
    # Every pair of parentheses left is needed: without it the parse differs (or fails).
    body = formatted.removeprefix(prefix).rstrip("\n")
    for open_at, ch in enumerate(body):
        if ch != "(" or body.startswith("(x)", open_at):
            continue
        depth = 0
        for close_at in range(open_at, len(body)):
            depth += {"(": 1, ")": -1}.get(body[close_at], 0)  # `(x)` counts 0 in all
            if depth == 0:
                break
        stripped = body[:open_at] + body[open_at + 1:close_at] + body[close_at + 1:]
        try:
            changed = parsed(f"{prefix}{stripped}\n")
        except ParseFailure:
            continue
        assert changed != parsed(source), f"{body}: parentheses at {open_at} are not needed"


@settings(max_examples=150, deadline=None)
@given(expressions())
def test_parentheses_are_minimal(expr: str) -> None:
    check_minimal_parentheses("axis z = ", expr)


@settings(max_examples=100, deadline=None)
@given(point_free_expressions())
def test_point_free_parentheses_are_minimal(expr: str) -> None:
    check_minimal_parentheses("def z = ", expr)


@pytest.mark.parametrize(("written", "formatted"), [
    ("(a + b) * c", "(a + b) * c"),
    ("a + (b * c)", "a + b * c"),
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("a + (b + c)", "a + (b + c)"),
    ("a / (b * c)", "a / (b * c)"),
    ("-(a + b)", "-(a + b)"),
    ("-(-a)", "- -a"),
    ("a * (-b)", "a * -b"),
    ("(-a) * b", "-a * b"),
    ("((a))", "a"),
    ("1e-5", "1e-5"),
    ("1.50", "1.50"),
    (".5", ".5"),
    ("1E+3", "1E+3"),
    ("x//2+1", "x // 2 + 1"),
])
def test_expressions(written: str, formatted: str) -> None:
    assert format_source(f"axis z = {written}") == f"axis z = {formatted}\n"


# ---- layout ----------------------------------------------------------------------------------


def test_a_whole_file() -> None:
    messy = '''\
"""The file."""
import "a.ncd"
from "b.ncd" import f,g
axis x
axis m=512,h=8 , k = m/h
def attention( X : R[x,m], T: N[m] [x] ) -> ( Y: R[x, m], R[] ) {
  """Doc
  on two lines."""
  Q=linear[m->h k,bias](X,W,b)
  A,B=split[ m -> h k ](Q)
  S[h,x,y]=sum(k) Q[x,h,k]*K[ y , h, 2*k+1 ]/sqrt(k)
  param W2: R[m] = zeros()
  param W3: R[m]=normal(0,0.02)
  block "Layer" shared color "red" x1 color "blue" x6 { X = X+relu(X) }
  return mask[x - y < 4, fill=-1.5](S), dropout[p=0.1](X)
}
def g = f ; (g ; h) (x) (k (x) l) ; (f ⊗ g)  """Point free."""
def h = ((f ; g)) (x) h
'''
    assert format_source(messy) == '''\
"""The file."""

import "a.ncd"
from "b.ncd" import f, g
axis x
axis m = 512, h = 8, k = m / h

def attention(X: R[x, m], T: N[m][x]) -> (Y: R[x, m], R[]) {
    """Doc
    on two lines."""
    Q = linear[m -> h k, bias](X, W, b)
    A, B = split[m -> h k](Q)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, 2*k + 1] / sqrt(k)
    param W2: R[m] = zeros
    param W3: R[m] = normal(0, 0.02)
    block "Layer" x6 color "blue" shared {
        X = X + relu(X)
    }
    return mask[x - y < 4, fill=-1.5](S), dropout[p=0.1](X)
}

def g = f ; (g ; h) (x) (k (x) l) ; f (x) g """Point free."""
def h = (f ; g) (x) h
'''


def test_outputs_and_empty_bodies() -> None:
    assert format_source("def f()->(R[x]){}def g()->(Y:R[x]){block \"b\"{}}") == '''\
def f() -> R[x] {
}

def g() -> (Y: R[x]) {
    block "b" {
    }
}
'''


def test_blank_lines() -> None:
    """Blank lines are kept (one at most) except at the start and end of a body; a definition
    with a body is always set apart; axes and point-free definitions may stay together."""
    text = '''\
axis a
axis b


axis c
def f(X: R[a]) -> R[a] {

    A = relu(X)



    B = tanh(A)

}
def g = f ; f
def h = f ; f

def k = f ; f
'''
    assert format_source(text) == '''\
axis a
axis b

axis c

def f(X: R[a]) -> R[a] {
    A = relu(X)

    B = tanh(A)
}

def g = f ; f
def h = f ; f

def k = f ; f
'''


def test_docstrings_are_verbatim_and_follow_their_indentation() -> None:
    text = 'def f(X: R[a]) -> R[a] {\n  """One.\n\n    Two.\n  """\n  return X\n}\n'
    assert format_source(text) == \
        'def f(X: R[a]) -> R[a] {\n    """One.\n\n      Two.\n    """\n    return X\n}\n'
    # A docstring whose lines cannot move back as far as its start stays as written.
    stuck = 'def f(X: R[a]) -> R[a] {\n        """A \\"quoted\\" doc # no comment\n  more"""\n' \
            'return X }\n'
    assert format_source(stuck) == 'def f(X: R[a]) -> R[a] {\n    """A \\"quoted\\" doc ' \
        '# no comment\n  more"""\n    return X\n}\n'


# ---- comments ---------------------------------------------------------------------------------


def test_comments_trailing_and_leading() -> None:
    text = '''\
# The file's first comment.

"""Doc."""  # after the docstring
axis x      # trailing
axis m = 8  # aligned
# before f

def f(X: R[x, m]) -> R[x, m] {   # on the header
    # first in the body
    A = relu(X)    # after A
    B = f(A,       # inside a statement
          # on its own line inside it
          A)       # after B
    # the last in the body
}  # after the body
# at the end of the file
'''
    assert format_source(text) == '''\
# The file's first comment.

"""Doc."""  # after the docstring

axis x      # trailing
axis m = 8  # aligned

# before f

def f(X: R[x, m]) -> R[x, m] {   # on the header
    # first in the body
    A = relu(X)    # after A
    # inside a statement
    # on its own line inside it
    B = f(A, A)       # after B
    # the last in the body
}  # after the body
# at the end of the file
'''


def test_aligned_comments_stay_aligned() -> None:
    text = "axis x=1       # one\naxis yy=2      # two\naxis zzzzzz=300 # three\n"
    assert format_source(text) == f"{'axis x = 1':17}# one\n{'axis yy = 2':17}# two\n" \
        "axis zzzzzz = 300  # three\n"


def test_a_comment_after_a_one_line_body_stays_with_its_statement() -> None:
    text = 'def f(X: R[m]) -> R[m] { return relu(X) }   # why\n' \
           'def g(X: R[m]) -> R[m] { block "b" { X = relu(X) } return X }  # how\n'
    assert format_source(text) == '''\
def f(X: R[m]) -> R[m] {
    return relu(X)   # why
}

def g(X: R[m]) -> R[m] {
    block "b" {
        X = relu(X)
    }
    return X  # how
}
'''


def test_comments_only() -> None:
    assert format_source("") == ""
    assert format_source("  # one\n\n\n# two   \n") == "# one\n\n# two\n"


def test_hash_in_strings_is_no_comment() -> None:
    text = 'def f(X: R[m]) -> R[m] {\n    block "#1" color "#336699" {\n        X = relu(X)\n' \
           '    }\n    return X\n}\n'
    assert check_formatting(text) == text


def test_syntax_errors_raise_the_parsers_failure() -> None:
    text = "axis m = 512\ndef f(X: R[m]) -> R[m] {\n    return relu(X\n}\n"
    with pytest.raises(ParseFailure) as expected:
        parse(text, "model.ncd")
    with pytest.raises(ParseFailure) as caught:
        format_source(text, "model.ncd")
    assert caught.value.diagnostic == expected.value.diagnostic


# ---- the command line ---------------------------------------------------------------------------

MESSY = "axis x\naxis m=8  # width\ndef f(X:R[x,m])->R[x,m]{return relu(X)}\n"
TIDY = "axis x\naxis m = 8  # width\n\ndef f(X: R[x, m]) -> R[x, m] {\n    return relu(X)\n}\n"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_rewrites_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messy, tidy = tmp_path / "messy.ncd", tmp_path / "tidy.ncd"
    messy.write_text(MESSY)
    tidy.write_text(TIDY)
    code, out, err = run(["fmt", str(messy), str(tidy)], capsys)
    assert (code, err) == (0, "")
    assert out == f"reformatted {messy}\n"
    assert messy.read_text() == TIDY and tidy.read_text() == TIDY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy.ncd", "tidy.ncd"]


def test_cli_check_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messy, tidy = tmp_path / "messy.ncd", tmp_path / "tidy.ncd"
    messy.write_text(MESSY)
    tidy.write_text(TIDY)
    code, out, _ = run(["fmt", "--check", str(messy), str(tidy)], capsys)
    assert code == 1 and out == f"would reformat {messy}\n"
    assert run(["fmt", "--check", str(tidy)], capsys)[:2] == (0, "")
    code, out, err = run(["fmt", "--diff", str(messy)], capsys)
    assert code == 1  # as `ruff format --diff`: a file would change
    assert out.startswith(f"--- {messy}\n+++ {messy} (formatted)\n")
    assert "-axis m=8  # width\n" in out and "+axis m = 8  # width\n" in out
    assert err == f"would reformat {messy}\n"
    code, _, _ = run(["fmt", "--check", "--diff", str(messy)], capsys)
    assert code == 1
    assert messy.read_text() == MESSY  # --check and --diff write nothing


def test_cli_stdin_to_stdout(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["fmt"], ["fmt", "-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSY.encode())))
        assert run(argv, capsys) == (0, TIDY, "")


def test_cli_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.ncd"
    broken.write_text("axis m = 8\ndef f(X: R[m]) -> R[m] {\n    return relu(X\n}\n")
    code, out, err = run(["fmt", str(broken)], capsys)
    assert code == 1 and out == ""
    assert f"{broken}:4:1: error[E101]: unexpected `}}`" in err
    assert "4 | }" in err and f"{broken}: 1 error" in err
    assert broken.read_text().startswith("axis m = 8\n")  # left alone
    binary = tmp_path / "binary.ncd"
    binary.write_bytes(b"axis m\xff")
    code, _, err = run(["fmt", str(binary)], capsys)
    assert code == 1 and "error[E104]" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"axis \x00")))
    code, out, err = run(["fmt"], capsys)
    assert code == 1 and out == "" and "error[E104]" in err
    code, _, err = run(["fmt", str(tmp_path / "missing.ncd")], capsys)
    assert code == 2 and "no such file" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["fmt", str(empty)], capsys)
    assert code == 2 and "no .ncd files in this folder" in err


def test_the_documented_example() -> None:
    """The "Formatting" section of the reference shows a file and its formatted form."""
    section = DOC.read_text(encoding="utf-8").split("## Formatting", 1)[1]
    before, after = (m.group(3) for m in FENCE.finditer(section))
    assert before != after and format_source(before) == after


def test_windows_line_ends_and_tabs() -> None:
    text = 'axis m = 8 # w\r\n\r\ndef f(X: R[m]) -> R[m] {\r\n\t"""Doc\r\n\tmore"""\r\n' \
           '\tA = relu(X)\t# tab\r\n\treturn A\r\n}\r\n'
    formatted = check_formatting(text)
    assert formatted == 'axis m = 8  # w\n\ndef f(X: R[m]) -> R[m] {\n    """Doc\r\n\tmore"""\n' \
        '    A = relu(X)  # tab\n    return A\n}\n'
    assert outcome_of_text(formatted) == outcome_of_text(text)


def test_tokens_are_read_as_the_parser_reads_them() -> None:
    """After a declaration, `axist` is the keyword `axis` and the name `t` (the contextual
    lexer's reading); `x6` after a block's title is a repetition."""
    assert format_source("axis u\naxist = 3 # t\n") == "axis u\naxis t = 3  # t\n"
    text = 'def f(X: R[m]) -> R[m] { block "b"x6{X = relu(X)} return X }\n'
    assert check_formatting(text) == \
        'def f(X: R[m]) -> R[m] {\n    block "b" x6 {\n        X = relu(X)\n    }\n' \
        '    return X\n}\n'
