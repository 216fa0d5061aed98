"""Replayed panels (`renderers/layout/replay.py`): a term of a form already laid out in the
diagram gets a copy of that panel with its wire ids put right. The copy must be exactly what
laying the term out gives: the diagrams with and without replaying are compared whole, wire
and box ids included, on programs that repeat forms with other names, and on the gallery."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ncd.renderers import RenderOptions, diagram
from ncd.renderers.geometry import Diagram
from ncd.renderers.layout import definition, replay

import ncd

sys.path.insert(0, str(Path(__file__).parent))
from gallery_cases import SOURCES, gallery_diagram, gallery_program

REPEATS = '''
axis b, m = 8, n = 4

def block(X: R[b, m]) -> R[b, m] {
    return X + relu(X)
}

def repeated(X: R[b, m], Y: R[b, m]) -> R[b, m] {
    param s1: R[m] = ones
    param s2: R[m] = ones
    X = gelu(X)
    A = X + relu(X)
    A = linear[m -> m, bias](A, W1, c1)
    A = layernorm[m](A, g1, h1)
    A = linear[m -> m, bias](A, W4, c4)
    B = gelu(A)
    B = B + relu(B)
    B = linear[m -> m, bias](B, W2, c2)
    B = layernorm[m](B, g2, h2)
    C = block(B)
    C = block(C)
    Z = X * s1
    Z = Z * s2
    T1 = relu(s1)
    T2 = relu(s2)
    Z = Z + T1
    Z = Z + T2
    P = linear[m -> n](C, V1)
    Q = linear[m -> n](Z, V2)
    D = C + Y
    E = D + Y
    return E + A
}
'''


def _without_replays(monkeypatch: pytest.MonkeyPatch, program: ncd.Program, name: str,
                     options: RenderOptions) -> Diagram:
    with monkeypatch.context() as patch:
        patch.setattr(definition, "Replays", lambda: None)
        return diagram(program.ir, name, options)


OPTIONS = [
    RenderOptions(),
    RenderOptions(show_params=True, wire_labels="both", theme="dark"),
    RenderOptions(expand_calls=True, width=300.0),
]


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "params", "expanded"])
def test_replaying_repeated_forms_draws_what_laying_them_out_draws(
        monkeypatch: pytest.MonkeyPatch, options: RenderOptions) -> None:
    program = ncd.load(REPEATS, name="repeats.ncd")
    made: list[replay.Replays] = []

    class Counted(replay.Replays):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(definition, "Replays", Counted)
    replayed = diagram(program.ir, "repeated", options)
    assert _without_replays(monkeypatch, program, "repeated", options) == replayed
    forms = [form for r in made for form in r.forms.values()
             if isinstance(form, replay._Form)]  # (forms met more than once)
    # replayed with other names: a linear's bias drawn with its own name (`c4` for `c1`,
    # measuring alike; its caption names the array it makes, `A` both times)
    assert any(t.checked and "c1" in t.names and form.free
               for form in forms for t in form.templates.values())
    # a parameter put on a wire is captioned with its name in italics, not as a label of
    # the name: that form was laid out every time
    assert any(form.refused and any("s1" in t.names for t in form.templates.values())
               for form in forms)


def test_a_long_chain_replays_its_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = ["X = gelu(X)", "X = X + relu(X)", "X = linear[m -> m, bias](X, W{i}, c{i})",
             "X = layernorm[m](X, g{i}, h{i})"]
    body = "\n".join("    " + steps[i % 4].format(i=i) for i in range(40))
    program = ncd.load(f"axis b, m = 16\n\ndef chain(X: R[b, m]) -> R[b, m] {{\n{body}\n"
                       "    return X\n}\n", name="chain.ncd")
    for options in (RenderOptions(), RenderOptions(width=None)):
        replayed = diagram(program.ir, "chain", options)
        assert replayed.validate() == []
        assert _without_replays(monkeypatch, program, "chain", options) == replayed


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_gallery_diagrams_are_the_same_replayed(monkeypatch: pytest.MonkeyPatch,
                                                path: Path) -> None:
    program = gallery_program(path)
    for name in program.names:  # (the diagrams the other layout tests read, replayed)
        assert _without_replays(monkeypatch, program, name, RenderOptions()) \
            == gallery_diagram(path, name), name
