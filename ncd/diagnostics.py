"""Diagnostics: the catalogue of error codes and how a diagnostic is shown to a person.

A diagnostic is data (code, message, span, hint, notes); `Diagnostic.to_json` gives it as a
JSON object (`ncd check --format json`), and `format_diagnostic` turns it into

    path:line:col: error[E300]: message
       |
     3 |     Y = A + B
       |         ^^^^^
       = note: ...
       = hint: ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ncd.ir import Span

# Every code ncd can emit, with a one-line title. Each code has a test that triggers it.
CATALOGUE: dict[str, str] = {
    # input and syntax
    "E100": "unexpected character",
    "E101": "unexpected token",
    "E102": "unexpected end of input",
    "E103": "input exceeds a limit",
    "E104": "input is not text",
    # names
    "E200": "unknown variable",
    "E201": "unknown axis",
    "E202": "unknown operator or definition",
    "E203": "duplicate definition",
    "E204": "duplicate axis",
    "E205": "bad import",
    "E206": "import cycle",
    "E207": "name used in the wrong role",
    # types, sizes and alignment
    "E300": "axis size mismatch",
    "E301": "axes do not align",
    "E302": "datatype mismatch",
    "E303": "wrong number of arguments or results",
    "E304": "index out of bounds",
    "E305": "index size cannot be determined",
    "E306": "index is not affine",
    "E307": "bad operator options",
    "E308": "result does not match the signature",
    "E309": "bad size",
    "E310": "bad block",
    "E311": "bad scan",
    "E312": "bad parameter",
    "E313": "bad tensor equation",
    "E314": "bad size override",
    "E315": "bad training set-up",
    "E316": "bad training data",
    "E318": "bad machine",
    # derivatives
    "E320": "no reverse derivative",
}

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Note:
    span: Span | None
    message: str


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None
    hint: str | None = None
    notes: tuple[Note, ...] = ()
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if self.code not in CATALOGUE:
            raise ValueError(f"diagnostic code {self.code} is not in the catalogue")

    def to_json(self, path: str | None = None) -> dict[str, Any]:
        """The diagnostic as a JSON object: `path`, `range` (`start` and `end`, each a `line`
        and a `column`: 1-based, as in `path:line:col`, the end exclusive), `code`, `severity`,
        `message`, `hint` (null when none) and `notes` (each a `path`, `range` and `message`).
        A diagnostic about no place in a file (a bad `-D`) has a null `range`, and `path` is
        the given one (the file being loaded) or null."""
        return {"path": self.span.file if self.span else path, "range": _json_range(self.span),
                "code": self.code, "severity": self.severity, "message": self.message,
                "hint": self.hint,
                "notes": [{"path": note.span.file if note.span else None,
                           "range": _json_range(note.span), "message": note.message}
                          for note in self.notes]}

    def sort_key(self) -> tuple[str, int, int, str]:
        if self.span is None:
            return ("", 0, 0, self.code)
        return (self.span.file, self.span.line, self.span.column, self.code)


def _json_range(span: Span | None) -> dict[str, dict[str, int]] | None:
    if span is None:
        return None
    return {"start": {"line": span.line, "column": span.column},
            "end": {"line": span.end_line, "column": span.end_column}}


@dataclass
class DiagnosticSink:
    """Collects diagnostics so that independent errors in one file are all reported."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None, *, hint: str | None = None,
              notes: Iterable[Note] = ()) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, hint, tuple(notes)))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


class NcdError(Exception):
    """Raised by the API when the input has errors; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None):
        self.diagnostics = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        self.sources = dict(sources or {})
        super().__init__(self.render())

    def render(self, color: bool = False) -> str:
        return "\n".join(format_diagnostic(d, self.sources, color=color) for d in self.diagnostics)


def _excerpt(span: Span, sources: Mapping[str, str], marker: str) -> list[str]:
    text = sources.get(span.file)
    if text is None:
        return []
    lines = text.splitlines()
    if not 1 <= span.line <= len(lines):
        return []
    line = lines[span.line - 1].expandtabs(4)
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    number = str(span.line)
    gutter = " " * len(number)
    start = max(span.column - 1, 0)
    end = span.end_column - 1 if span.end_line == span.line else len(line)
    width = max(end - start, 1)
    width = min(width, max(len(line) - start, 1))
    return [
        f"{gutter} |",
        f"{number} | {line}",
        f"{gutter} | {' ' * start}{marker * width}",
    ]


def format_diagnostic(diagnostic: Diagnostic, sources: Mapping[str, str], *,
                      color: bool = False) -> str:
    """The diagnostic as a person reads it: location, code, message, excerpt, notes, hint."""
    red, bold, reset = ("\x1b[31m", "\x1b[1m", "\x1b[0m") if color else ("", "", "")
    where = f"{diagnostic.span}: " if diagnostic.span else "ncd: "
    lines = [f"{bold}{where}{red}{diagnostic.severity}[{diagnostic.code}]{reset}{bold}: "
             f"{diagnostic.message}{reset}"]
    if diagnostic.span:
        lines.extend(_excerpt(diagnostic.span, sources, "^"))
    for note in diagnostic.notes:
        if note.span:
            lines.append(f"{note.span}: note: {note.message}")
            lines.extend(_excerpt(note.span, sources, "-"))
        else:
            lines.append(f"  = note: {note.message}")
    if diagnostic.hint:
        lines.append(f"  = hint: {diagnostic.hint}")
    return "\n".join(lines)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, when one is close enough."""
    import difflib

    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None
