"""Parameters read as data: a parameter named where an array is expected is put onto a wire
(a `parameter` operation: no inputs, the parameter as its output), shared by every later use,
so that any operator reads it: `sigmoid(log_a)`, a class token joined to a sequence, a learned
initial state of a `scan`, learned queries, `where`/`/`/`maximum` with a parameter, an equation
that reads only parameters, a parameter alone as a term of an equation.

Each is compared with the reference interpreter (`compare_text`, which also checks the batch
lift: a parameter never gains the batch axis) and, where PyTorch has the model, with it."""

from __future__ import annotations

import pytest
import torch
from conftest import broadcasts, ok
from differential import compare_text
from ncd.renderers import RenderOptions, diagram, render_svg
from ncd.renderers.glyphs import glyph_of

import ncd
from ncd import ir

PROGRAM = """axis p
axis o = 1, s = p + 1, m = 4, t, q = 3, k = 4

def embed(X: R[p, m]) -> R[s, m] {
    param cls: R[o, m]
    return concat[o p -> s](cls, X)
}

def cell(H: R[m], X: R[m]) -> (R[m], R[m]) {
    Z = tanh(linear[m -> m](H, Wh) + X)
    return Z, Z
}

def rnn(X: R[t, m]) -> R[t, m] {
    param H0: R[m]
    Last, All = scan[t](cell, H0, X)
    return All
}

def queries(K: R[p, k]) -> R[q, p] {
    param Qp: R[q, k]
    S[q, p] = sum(k) Qp[q, k] * K[p, k]
    return softmax[p](S)
}

def gram(X: R[p, q]) -> R[p, q] {
    param Qp: R[q, k]
    G[q, r] = sum(k) Qp[q, k] * Qp[r, k] / 2
    return X + rename[r -> q](sum[q](G))
}

def ops(X: R[p, m], C: B[p, m]) -> R[p, m] {
    param P: R[m]
    A = X / P
    B = maximum(X, P)
    D = where(C, P, X)
    E = P / X
    return A + B + D + E + P * P + (1 - P)
}

def outer(X: R[p, m]) -> R[p, m, q] {
    param bq: R[q]
    Z[p, m, q] = X[p, m] + bq[q]
    return Z
}

def decay(X: R[p, m]) -> R[p, m] {
    param log_a: R[m]
    return X * sigmoid(log_a)
}
"""


def test_every_use_agrees_with_the_interpreter_and_keeps_the_batch_lift() -> None:
    reports = compare_text(PROGRAM, every_definition=True)
    assert set(reports) >= {"embed", "rnn", "queries", "gram", "ops", "outer", "decay"}
    for name, report in reports.items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


def test_a_parameter_is_one_wire_shared_by_its_uses() -> None:
    program = ok(PROGRAM)
    ops = program.definition("ops")
    wires = [t for t in ir.walk(ops.body)
             if isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.ParameterOp)]
    assert len(wires) == 1  # P is read six times, put on a wire once
    (wire,) = wires
    assert wire.dom == () and wire.degree.axes == ()
    assert [p.name for p in wire.params] == ["P"] and wire.cod == (ops.params[0].array,)
    # Read by an operator as its weight, a parameter stays a parameter port.
    queries = program.definition("queries")
    (einsum,) = broadcasts(queries, "einsum")
    assert einsum.inputs and not broadcasts(queries, "parameter")
    assert [p.name for p in einsum.params] == ["Qp"]


def test_a_class_token_and_a_learned_decay_as_pytorch_writes_them() -> None:
    source = ncd.load(PROGRAM)
    embed = source.to_torch("embed").double()
    X = torch.randn(2, 5, 4, dtype=torch.float64)
    expected = torch.cat([embed.cls.expand(2, 1, 4), X], dim=1)
    torch.testing.assert_close(embed(X), expected)
    decay = source.to_torch("decay").double()
    torch.testing.assert_close(decay(X), X * torch.sigmoid(decay.log_a))
    (decay(X).sum()).backward()
    assert decay.log_a.grad is not None and decay.log_a.grad.abs().sum() > 0
    assert "torch.sigmoid(log_a)" in source.compile("decay")


def test_a_learned_initial_state_as_an_rnn_cell_loop() -> None:
    rnn = ncd.load(PROGRAM).to_torch("rnn").double()
    X = torch.randn(3, 6, 4, dtype=torch.float64)
    weight = dict(rnn.named_parameters())
    h = rnn.H0.expand(3, 4)
    outputs = []
    for step in range(6):
        wh = next(v for k, v in weight.items() if k.endswith("Wh"))
        h = torch.tanh(torch.einsum("bi,io->bo", h, wh) + X[:, step])
        outputs.append(h)
    torch.testing.assert_close(rnn(X), torch.stack(outputs, dim=1))


def test_drawn_as_a_card_feeding_a_wire_without_params_option() -> None:
    """Drawn by default (it is data here): a card with the parameter's name, no wire in, its
    axes out; `--params` draws no second wire under it."""
    program = ok(PROGRAM)
    for options in (RenderOptions(), RenderOptions(show_params=True)):
        d = diagram(program, "decay", options)
        assert d.validate() == []
        (card,) = [b for b in d.boxes if b.kind == "parameter"]
        assert [p.side for p in card.ports] == ["right"]
    (term,) = broadcasts(program.definition("decay"), "parameter")
    caption = glyph_of(term.op).caption(term.op, term)  # type: ignore[union-attr]
    assert caption is not None and caption.plain_text() == "log_a"
    assert "log_a" in render_svg(program, "decay")


@pytest.mark.parametrize("body", [
    "return P",
    "Y[m] = P[m] * 2\n    return Y",
    "return P + P",
])
def test_a_definition_of_parameters_alone(body: str) -> None:
    text = f"axis m = 3\ndef f(X: R[m]) -> R[m] {{\n    param P: R[m]\n    {body}\n}}\n"
    reports = compare_text(text)
    assert not reports["f"].findings and reports["f"].compared >= 1
