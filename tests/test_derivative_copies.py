"""The reverse derivative of parameters held in copies: a call with parameters for each index
(`f[each e](X)`) and a block repeated with parameters of its own (`block "T" x3 { ... }`),
nested in each other; and `torch.export` of compiled backward modules."""

from __future__ import annotations

import pytest
import torch
from differential import module_parameters
from test_derivative import gradients
from test_training import twenty_steps_against_torch_optim

import ncd
from ncd import ir
from ncd.derivative import backward_definition
from ncd.diagnostics import NcdError
from ncd.semantics import Interpreter

# Copies inside copies: each copy of "Layer" has its own gate, its own experts (one per
# index of `e`, each calling `inner` at a site of its own) and two copies of "Mix".
MODEL = """axis b
axis m = 4, f = 3, n = 3, e = 2
def inner(X: R[m]) -> R[f] {
    return tanh(linear[m -> f, bias](X, W, c))
}
def expert(X: R[m]) -> R[m] {
    return linear[f -> m](inner(X), V)
}
def net(X: R[b, m]) -> R[b, n] {
    block "Layer" x2 {
        G = softmax[e](linear[m -> e](X, W_g))
        Z = expert[each e](X)
        Y[b, m] = sum(e) G[b, e] * Z[b, e, m]
        X = X + layernorm[m](Y, g, beta)
        block "Mix" x2 {
            X = tanh(linear[m -> m](X, U))
        }
    }
    return linear[m -> n](X, W_out)
}
train t { model: net  loss: cross_entropy[n]  optimiser: adam(lr = 0.01, weight_decay = 0.01) }
"""


def test_each_copy_has_the_gradients_of_its_own_parameters() -> None:
    """Compiled backward == autograd for every parameter of every copy, keyed by the forward
    module's state-dict keys; the interpreter run on the backward definition agrees."""
    program = ncd.load(MODEL)
    forward = program["net"].to_torch(dtype=torch.float64)
    module = program.to_torch_grad("net", forward, dtype=torch.float64)
    assert set(module.state_dict()) >= set(forward.state_dict())
    made, _ = backward_definition(program.ir, "net")
    parameters = dict(forward.named_parameters())
    assert sorted(made.gradient_of[1:]) == sorted(parameters)
    assert "layer.1.expert.0.inner.W" in parameters and "layer.0.mix.1.U" in parameters
    X = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    dY = torch.randn(3, 3, dtype=torch.float64)
    expected = torch.autograd.grad(forward(X), [X, *(parameters[k] for k in made.gradient_of[1:])],
                                   dY)
    with torch.no_grad():
        found = module(X.detach(), dY)
    for role, a, b in zip(made.gradient_of, found, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=role)
    back = program.grad("net")
    with torch.no_grad():
        reference = Interpreter(back.program.ir, {"b": 3}, module_parameters(module)).run(
            back.name, [X.detach(), dY])
    for role, a, b in zip(made.gradient_of, found, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=role)


def test_the_copies_reverses_run_in_the_opposite_order() -> None:
    """The backward block holds one block per copy, last copy first, each a copy of the
    forward block (`ir.CopyOf`) that reads that copy's parameters."""
    body = ncd.load(MODEL).grad("net").ir.body
    blocks = [t for t in ir.walk(body) if isinstance(t, ir.Block) and t.copy_of is not None
              and t.copy_of.title == "Layer"]
    assert [(b.title, b.copy_of.index) for b in blocks if b.copy_of is not None] == [
        ("Layer, copy 0", 0), ("Layer, copy 1", 1),
        ("Layer, copy 1 (backward)", 1), ("Layer, copy 0 (backward)", 0)]


def test_the_training_step_uses_the_compiled_backward_of_the_copies() -> None:
    program = ncd.load(MODEL)
    assert "torch.autograd" not in program.compile("t")
    twenty_steps_against_torch_optim(program, (5, 4), steps=3)


def test_two_repeated_blocks_of_one_name_are_reported() -> None:
    """The generated module would keep their copies under `l` and `l_`: the backward
    definition, which finds a copy's parameters by its block's title, says so (E320)."""
    block = '    block "L" x2 {\n        X = tanh(linear[m -> m](X, W))\n    }\n'
    program = ncd.load(f"axis b = 2, m = 3\ndef f(X: R[b, m]) -> R[b, m] {{\n{block}{block}"
                       "    return X\n}\n")
    with pytest.raises(NcdError) as caught:
        program.grad("f")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E320" and "are not kept under `l`" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 6


EXPORTED = (("mlp", "mlp"), ("moe", "moe"))


@pytest.mark.parametrize(("stem", "name"), EXPORTED, ids=[s for s, _ in EXPORTED])
def test_torch_export_accepts_the_backward_module(stem: str, name: str) -> None:
    """The exported program of a backward module (with calls: its callees' backward modules
    inside) runs, and equals the eager module and autograd."""
    found = gradients(stem, name, 0)
    arguments = (*found["inputs"], *found["seeds"])
    exported = torch.export.export(found["backward"], arguments)
    with torch.no_grad():
        results = exported.module()(*arguments)
    assert len(results) == len(found["found"]) == len(found["expected"])
    for result, eager, expected in zip(results, found["found"], found["expected"], strict=True):
        torch.testing.assert_close(result, eager)
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
