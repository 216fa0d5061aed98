"""`docs/language.md` is checked: every ```ncd example loads, every ```ncd-error example fails
with the code on its first line, and every operator of the registry appears in a checked
example. Examples fenced ```ncd file=NAME are also written to NAME so later examples can
import them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import ncd
from ncd.diagnostics import CATALOGUE, NcdError
from ncd.operators import OPERATORS

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"
FENCE = re.compile(r"^```(ncd(?:-error)?)([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    kind: str  # "ncd" or "ncd-error"
    file: str | None
    source: str
    line: int  # where the example starts in the document

    @property
    def expected_code(self) -> str:
        first = self.source.splitlines()[0]
        match = re.fullmatch(r"#\s*(E\d{3})\s*", first)
        assert match, f"line {self.line}: an ncd-error example starts with `# ECODE`"
        return match.group(1)


def examples() -> list[Example]:
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        options = match.group(2).strip()
        file = options.removeprefix("file=") if options.startswith("file=") else None
        assert not options or file, f"unknown fence options {options!r}"
        line = text.count("\n", 0, match.start()) + 1
        found.append(Example(match.group(1), file, match.group(3), line))
    return found


EXAMPLES = examples()


def test_the_document_has_examples() -> None:
    assert len([e for e in EXAMPLES if e.kind == "ncd"]) >= 20
    assert len([e for e in EXAMPLES if e.kind == "ncd-error"]) >= 5


def _load(example: Example, folder: Path) -> ncd.api.Program:
    for earlier in EXAMPLES:
        if earlier.file is not None:
            (folder / earlier.file).write_text(earlier.source, encoding="utf-8")
    path = folder / (example.file or "example.ncd")
    path.write_text(example.source, encoding="utf-8")
    return ncd.load(path)


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind == "ncd"],
                         ids=lambda e: f"line{e.line}")
def test_example_checks(example: Example, tmp_path: Path) -> None:
    try:
        program = _load(example, tmp_path)
    except NcdError as error:
        pytest.fail(f"docs/language.md line {example.line}:\n{error.render()}")
    if "def " in example.source:
        assert program.names, f"line {example.line}: defines nothing"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind == "ncd-error"],
                         ids=lambda e: f"line{e.line}")
def test_error_example_fails_with_its_code(example: Example, tmp_path: Path) -> None:
    code = example.expected_code
    assert code in CATALOGUE
    with pytest.raises(NcdError) as caught:
        _load(example, tmp_path)
    assert caught.value.diagnostics[0].code == code, caught.value.render()


def test_every_operator_appears_in_a_checked_example() -> None:
    checked = "\n".join(e.source for e in EXAMPLES if e.kind == "ncd")
    # code only: comments do not count
    code = "\n".join(line.split("#", 1)[0] for line in checked.splitlines())
    missing = [name for name in OPERATORS
               if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}\s*[\[(]", code)]
    assert not missing, f"operators without a checked example: {missing}"


def test_every_construct_has_a_section() -> None:
    text = DOC.read_text(encoding="utf-8")
    for heading in ("File structure", "Comments and docstrings", "Axes and sizes", "Datatypes",
                    "Definitions", "Statements", "Tensor equations", "Operators",
                    "Calls and batch lifts", "Blocks", "scan", "Point-free form",
                    "Parameters and initialisers", "Imports", "Diagnostics and exit codes",
                    "The command line"):
        assert re.search(rf"^##+ .*{re.escape(heading)}", text, re.MULTILINE), heading


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind == "ncd" and "def " in e.source],
                         ids=lambda e: f"line{e.line}")
def test_example_renders_without_layout_problems(example: Example, tmp_path: Path) -> None:
    """Every construct of the language has a drawing: each definition of each example lays out
    with no broken rule of the visual grammar, collapsed calls and expanded calls alike."""
    from ncd.renderers import RenderOptions, diagram, render_svg

    program = _load(example, tmp_path)
    assert program.names, f"line {example.line}: defines nothing"
    for name in program.names:
        for options in (RenderOptions(), RenderOptions(expand_calls=True)):
            problems = diagram(program.ir, name, options).validate()
            assert not problems, f"line {example.line}, {name}: {problems}"
        assert "<path" in render_svg(program.ir, name)
