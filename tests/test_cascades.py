"""One root cause, one diagnostic: each obstacle written the natural way gives exactly one
error, at the place of the cause, with its message, and nothing at the later uses of what the
failed declaration would have defined."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ncd
from ncd.diagnostics import Diagnostic


def errors(source: str | Path, **options: object) -> list[Diagnostic]:
    with pytest.raises(ncd.NcdError) as failure:
        ncd.load(source, **options)  # type: ignore[arg-type]
    return failure.value.diagnostics


def only(source: str | Path, **options: object) -> Diagnostic:
    found = errors(source, **options)
    assert len(found) == 1, [f"{d.code} {d.message}" for d in found]
    return found[0]


def at(diagnostic: Diagnostic) -> tuple[int, int]:
    assert diagnostic.span is not None
    return diagnostic.span.line, diagnostic.span.column


def test_an_undeclared_axis_in_a_parameter_is_the_only_error() -> None:
    """Before: also `unknown array W` at the equation and at `linear`, for a parameter the
    user did declare."""
    diagnostic = only("""
axis x
axis m = 8, n = 4
def f(X: R[x, m]) -> R[x, n] {
    param W: R[m, q]
    Y[x, n] = sum(m) X[x, m] * W[m, n]
    Z = linear[m -> n](X, W)
    return Y + Z
}
""")
    assert diagnostic.code == "E201" and diagnostic.message == "unknown axis `q`"
    assert at(diagnostic) == (5, 19)


def test_a_parameter_of_integers_is_one_error() -> None:
    diagnostic = only("""
axis x
axis m = 8
def f(X: R[x, m]) -> R[x, m] {
    param b: N[m][m]
    return X + b
}
""")
    assert diagnostic.code == "E302" and at(diagnostic) == (5, 14)


def test_an_unknown_initialiser_is_one_error() -> None:
    """The parameter exists with its type: the equation reading it stays quiet and checks."""
    diagnostic = only("""
axis x
axis m = 8, n = 4
def f(X: R[x, m]) -> R[x, n] {
    param W: R[m, n] = gausian(0, 1)
    Y[x, n] = sum(m) X[x, m] * W[m, n]
    return linear[m -> n](X, W) + Y
}
""")
    assert diagnostic.code == "E312" and diagnostic.message == "unknown initialiser `gausian`"
    assert at(diagnostic) == (5, 24)


def test_a_missing_import_is_the_only_error(tmp_path: Path) -> None:
    """Before: also `unknown axis` at every axis the missing file would have declared, and
    `unknown definition` at every call of its definitions."""
    model = tmp_path / "model.ncd"
    model.write_text("""import "layers.ncd"

axis f = 4 * m

def block(X: R[x, m]) -> R[x, m] {
    H = linear[m -> f](X, W)
    return X + mlp(H)
}

def twice = block ; mlp
""", encoding="utf-8")
    diagnostic = only(model)
    assert diagnostic.code == "E205" and diagnostic.message == "cannot find `layers.ncd`"
    assert at(diagnostic) == (1, 1)
    assert diagnostic.hint is not None and "layers.ncd" in diagnostic.hint


def test_the_names_of_a_failed_from_import_are_quiet(tmp_path: Path) -> None:
    model = tmp_path / "model.ncd"
    model.write_text("""from "layers.ncd" import mlp
axis x
axis m = 8
def block(X: R[x, m]) -> R[x, m] { return X + mlp(X) }
def twice = mlp ; mlp
""", encoding="utf-8")
    diagnostic = only(model)
    assert diagnostic.code == "E205" and at(diagnostic) == (1, 1)


def test_an_import_failing_further_down_is_one_error(tmp_path: Path) -> None:
    """`model` imports `layers`, which imports a missing file: the axes that file would have
    declared are unknown in both, and only the failed import is reported."""
    (tmp_path / "layers.ncd").write_text(
        'import "sizes.ncd"\ndef mlp(X: R[x, m]) -> R[x, m] { return relu(X) }\n',
        encoding="utf-8")
    model = tmp_path / "model.ncd"
    model.write_text('import "layers.ncd"\ndef f(X: R[x, m]) -> R[x, m] { return mlp(X) }\n',
                     encoding="utf-8")
    diagnostic = only(model)
    assert diagnostic.code == "E205" and diagnostic.message == "cannot find `sizes.ncd`"
    assert diagnostic.span is not None and diagnostic.span.file.endswith("layers.ncd")


def test_a_genuine_mistake_beside_a_good_import_is_still_reported(tmp_path: Path) -> None:
    """Only a failed import quiets unknown names: with every import loaded, a misspelt axis
    is reported with its hint."""
    (tmp_path / "layers.ncd").write_text("axis x\naxis m = 8\n", encoding="utf-8")
    model = tmp_path / "model.ncd"
    model.write_text('import "layers.ncd"\ndef f(X: R[x, mm]) -> R[x, m] { return X }\n',
                     encoding="utf-8")
    diagnostic = only(model)
    assert diagnostic.code == "E201" and diagnostic.hint == "did you mean `m`?"


def test_an_unknown_colour_suggests_the_closest_name() -> None:
    """Before: the block was silently drawn in the default colour."""
    diagnostic = only("""
axis x
axis m = 8
def f(X: R[x, m]) -> R[x, m] {
    block "Layer" color "purpl" {
        X = relu(X)
    }
    return X
}
""")
    assert diagnostic.code == "E310" and diagnostic.message == "unknown colour `purpl`"
    assert diagnostic.hint == "did you mean `purple`?"
    assert at(diagnostic) == (5, 25)


def test_a_colour_far_from_every_name_lists_what_may_be_written() -> None:
    diagnostic = only("""
axis m = 8
def f(X: R[m]) -> R[m] {
    block "Layer" color "#12345" { Y = relu(X) }
    return Y
}
""")
    assert diagnostic.code == "E310" and diagnostic.hint is not None
    assert diagnostic.hint.startswith("write `#rgb`, `#rrggbb` or a name: black, blue,")


@pytest.mark.parametrize("colour", ["purple", " Teal ", "#4477aa", "#47a", "GREY"])
def test_the_colours_the_diagrams_read_are_accepted(colour: str) -> None:
    ncd.load(f'axis m = 8\ndef f(X: R[m]) -> R[m] {{ block "L" color "{colour}" {{ '
             f'Y = relu(X) }}\n return Y }}')


def test_the_language_reference_lists_every_colour_name() -> None:
    from ncd.colours import NAMED_COLOURS

    text = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text(
        encoding="utf-8")
    listed = text.split("A colour is `#rgb`, `#rrggbb` or one of the names")[1].split("(the")[0]
    assert sorted(set(re.findall(r"`(\w+)`", listed))) == sorted(NAMED_COLOURS)
