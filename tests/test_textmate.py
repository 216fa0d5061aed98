"""The TextMate grammar of `.ncd` files (editors/textmate/ncd.tmLanguage.json).

The committed file is what `python -m ncd.editor_grammar` writes; every pattern compiles with
Python's `re` (the grammar keeps to the part of Oniguruma both read alike); and a small
tokeniser applying the grammar as a TextMate editor does (first match leftmost, a begin/end
rule's end tried before its own patterns) gives the gallery's words the intended scopes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ncd import editor_grammar

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / editor_grammar.GRAMMAR_PATH
GALLERY = sorted((ROOT / "gallery").glob("*.ncd"))


@pytest.fixture(scope="module")
def grammar() -> dict[str, Any]:
    return json.loads(GRAMMAR.read_text(encoding="utf-8"))


@pytest.mark.parametrize("relative", editor_grammar.GRAMMAR_PATHS, ids=str)
def test_the_committed_grammar_is_the_generated_one(relative: Path) -> None:
    assert (ROOT / relative).read_text(encoding="utf-8") == editor_grammar.grammar_json(), (
        f"{relative} is out of date (the keywords or the operators changed); regenerate it "
        f"with `{editor_grammar.REGENERATE}`")


def _rules(grammar: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule of the grammar, nested ones included."""
    found: list[dict[str, Any]] = []

    def visit(rule: dict[str, Any]) -> None:
        found.append(rule)
        for inner in rule.get("patterns", []):
            visit(inner)

    for rule in [*grammar["patterns"], *grammar["repository"].values()]:
        visit(rule)
    return found


def test_the_grammar_is_well_formed(grammar: dict[str, Any]) -> None:
    assert grammar["scopeName"] == "source.ncd"
    assert grammar["fileTypes"] == ["ncd"]
    for rule in _rules(grammar):
        if "include" in rule:
            assert rule["include"].startswith("#"), rule
            assert rule["include"][1:] in grammar["repository"], rule
            continue
        assert "match" in rule or "begin" in rule or "patterns" in rule, rule
        assert ("begin" in rule) == ("end" in rule), rule
        for key, captures in (("match", "captures"), ("begin", "beginCaptures"),
                              ("end", "endCaptures")):
            if key in rule:
                compiled = re.compile(rule[key])
                assert "(?P" not in rule[key], rule[key]  # Oniguruma names groups `(?<n>`
                for group, capture in rule.get(captures, {}).items():
                    assert 1 <= int(group) <= compiled.groups, rule
                    assert capture["name"].endswith(".ncd"), rule
        assert rule.get("name", ".ncd").endswith(".ncd"), rule


@dataclass(frozen=True)
class Token:
    text: str
    scope: str
    line: int


def _expand(grammar: dict[str, Any], rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules with includes replaced by what they name, in order."""
    expanded: list[dict[str, Any]] = []
    for rule in rules:
        if "include" in rule:
            expanded.extend(_expand(grammar, [grammar["repository"][rule["include"][1:]]]))
        elif "match" not in rule and "begin" not in rule:
            expanded.extend(_expand(grammar, rule["patterns"]))
        else:
            expanded.append(rule)
    return expanded


def tokenise(grammar: dict[str, Any], text: str) -> list[Token]:
    """The scoped pieces of `text` (unscoped text is left out), as a TextMate editor finds
    them: at each place the leftmost match of the rules in force, the first rule on a tie, an
    open region's end before its own rules. A named region (a docstring) is one token, from
    its begin to its end."""
    top = _expand(grammar, grammar["patterns"])
    lines = text.splitlines()
    stack: list[tuple[dict[str, Any], int, int]] = []  # open regions: rule, line, column
    tokens: list[Token] = []

    def close(rule: dict[str, Any], line: int, column: int, end_line: int, end: int) -> None:
        if "name" in rule:
            region = "\n".join([lines[line][column:], *lines[line + 1:end_line],
                                lines[end_line][:end]]) if end_line > line \
                else lines[line][column:end]
            tokens.append(Token(region, rule["name"], line + 1))

    for number, line in enumerate(lines):
        position = 0
        while position <= len(line):
            rules = _expand(grammar, stack[-1][0].get("patterns", [])) if stack else top
            best: tuple[int, int, re.Match[str], dict[str, Any], str] | None = None
            candidates = [(stack[-1][0], "end")] if stack else []
            candidates += [(rule, "begin" if "begin" in rule else "match") for rule in rules]
            for order, (rule, key) in enumerate(candidates):
                match = re.compile(rule[key]).search(line, position)
                if match and (best is None or match.start() < best[0]):
                    best = (match.start(), order, match, rule, key)
            if best is None:
                break
            _, _, match, rule, key = best
            if key == "match":
                if "name" in rule and match.group():
                    tokens.append(Token(match.group(), rule["name"], number + 1))
                captures = rule.get("captures", {})
            elif key == "begin":
                stack.append((rule, number, match.start()))
                captures = rule.get("beginCaptures", {})
            else:
                opened, line_of, column = stack.pop()
                close(opened, line_of, column, number, match.end())
                captures = opened.get("endCaptures", {})
            for group, capture in captures.items():
                if match.group(int(group)):
                    tokens.append(Token(match.group(int(group)), capture["name"], number + 1))
            # An empty match (an end at `$` or before `#`) moves on by one character.
            position = match.end() if match.end() > match.start() or key == "begin" \
                else position + 1
        # A region that ends at the end of its line (`$`) closes there.
        while stack and stack[-1][0]["end"].startswith("$"):
            opened, line_of, column = stack.pop()
            close(opened, line_of, column, number, len(line))
    return tokens


def test_the_tokeniser_scopes_a_small_program(grammar: dict[str, Any]) -> None:
    text = ('import "lib.ncd"  # a comment with def and linear in it\n'
            'axis m = 512, k = m / 8\n'
            'def f(X: R[x, m]) -> R[x, m] {\n'
            '    """Docstring: return linear."""\n'
            '    block "Layer" x6 shared {\n'
            '        H = linear[m -> m](X, W) * 0.5\n'
            '    }\n'
            '    return H\n'
            '}\n')
    tokens = {(t.text, t.scope) for t in tokenise(grammar, text)}
    for expected in [
        ("import", "keyword.control.ncd"),
        ('"lib.ncd"', "string.quoted.double.ncd"),
        ("# a comment with def and linear in it", "comment.line.number-sign.ncd"),
        ("axis", "keyword.other.axis.ncd"),
        ("m", "variable.other.constant.axis.ncd"),
        ("512", "constant.numeric.ncd"),
        ("def", "keyword.other.def.ncd"),
        ("f", "entity.name.function.ncd"),
        ("R", "storage.type.ncd"),
        ('"""Docstring: return linear."""', "string.quoted.docstring.ncd"),
        ("x6", "keyword.other.repeat.ncd"),
        ("shared", "keyword.control.ncd"),
        ("linear", "support.function.ncd"),
        ("->", "keyword.operator.arrow.ncd"),
        ("0.5", "constant.numeric.ncd"),
        ("return", "keyword.control.ncd"),
        ("{", "punctuation.bracket.ncd"),
    ]:
        assert expected in tokens, expected
    # Words inside comments and docstrings are not keywords or operators.
    assert ("linear", "support.function.ncd") in tokens
    assert sum(1 for t in tokenise(grammar, text) if t.text == "linear") == 1


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.name)
def test_the_gallery_gets_the_intended_scopes(grammar: dict[str, Any], path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tokens = tokenise(grammar, text)
    scopes: dict[str, set[str]] = {}
    for token in tokens:
        scopes.setdefault(token.scope, set()).add(token.text)
    assert {"def", "axis"} <= scopes["keyword.other.def.ncd"] | scopes["keyword.other.axis.ncd"]
    assert "return" in scopes["keyword.control.ncd"]
    assert scopes["keyword.control.ncd"] <= set(editor_grammar.keywords())
    assert scopes["support.function.ncd"] and \
        scopes["support.function.ncd"] <= set(editor_grammar.operator_names())
    assert scopes["storage.type.ncd"] <= set(editor_grammar.datatypes())
    assert scopes["constant.numeric.ncd"]
    assert all(text.startswith("#") for text in scopes.get("comment.line.number-sign.ncd", ()))
    # Every definition's name is scoped as one.
    defined = set(re.findall(r"^def\s+([A-Za-z_]\w*)", text, re.MULTILINE))
    assert defined and defined <= scopes["entity.name.function.ncd"]
    # No word of a comment is scoped as anything but the comment.
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            on_line = [t for t in tokens if t.line == number]
            assert [t.scope for t in on_line] == ["comment.line.number-sign.ncd"], line


VSCODE = ROOT / "editors" / "vscode"


def test_the_vscode_extension_refers_to_files_that_exist() -> None:
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    contributes = manifest["contributes"]
    assert (VSCODE / manifest["main"]).is_file()
    [language] = contributes["languages"]
    assert language["id"] == "ncd" and language["extensions"] == [".ncd"]
    configuration = json.loads((VSCODE / language["configuration"]).read_text(encoding="utf-8"))
    assert configuration["comments"]["lineComment"] == "#"
    assert ["{", "}"] in configuration["brackets"]
    [grammar_entry] = contributes["grammars"]
    assert grammar_entry["scopeName"] == editor_grammar.SCOPE_NAME
    assert (VSCODE / grammar_entry["path"]).resolve() == \
        (ROOT / editor_grammar.GRAMMAR_PATHS[1]).resolve()
    assert "vscode-languageclient" in manifest["dependencies"]
    # The command the extension registers is the one it contributes, and it asks the server
    # for the command the server offers.
    script = (VSCODE / manifest["main"]).read_text(encoding="utf-8")
    [command] = (c["command"] for c in contributes["commands"])
    assert f'registerCommand("{command}"' in script
    assert 'command: "ncd.preview"' in script
    assert "node_modules/" in (VSCODE / ".gitignore").read_text(encoding="utf-8").split()
