"""The reverse rules of batch normalisation (training and evaluation mode), embeddings and
gathers through index arrays: the compiled backward module against `torch.autograd` of the
compiled forward module and of PyTorch's own modules (`nn.BatchNorm1d`, `nn.Embedding`), and
against the reference interpreter. The gallery's uses are checked by tests/test_derivative.py
(SUPPORTED); this file checks what those do not: evaluation mode, PyTorch's modules, the
running statistics, and index arrays of other shapes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from differential import module_parameters

import ncd
from ncd import ir
from ncd.derivative import backward_definition
from ncd.diagnostics import NcdError
from ncd.semantics import Interpreter

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
BATCHNORM_SIZES = {"i": 5, "n": 4, "b": 3}


def _randomise_statistics(module: torch.nn.Module) -> None:
    """Running statistics away from their initial zeros and ones, so that evaluation mode
    reads them (positive, so that each may be a variance)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for buffer in module.buffers():
            buffer.copy_(torch.rand(buffer.shape, generator=generator, dtype=buffer.dtype) + 0.5)


def _backward_against_autograd(program: ncd.Program, name: str, inputs: list[torch.Tensor],
                               training: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The backward module (in the forward module's mode) equals autograd of the compiled
    forward module, leaves the running statistics as the forward call left them, and agrees
    with the interpreter; returns both modules."""
    torch.manual_seed(0)
    forward = program[name].to_torch(dtype=torch.float64)
    _randomise_statistics(forward)
    forward.train(training)
    backward = program[name].to_torch_grad(forward, dtype=torch.float64)
    leaves = [x.clone().requires_grad_(True) if x.is_floating_point() else x for x in inputs]
    output = forward(*leaves)
    seed = torch.randn(output.shape, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))
    gradient_of = backward_definition(program.ir, name, training=training)[0].gradient_of
    real = [x for x in leaves if x.is_floating_point()]
    wrt = real + [forward.get_parameter(key) for key in gradient_of[len(real):]]
    expected = torch.autograd.grad(output, wrt, seed)
    statistics = {key: buffer.clone() for key, buffer in forward.named_buffers()}
    with torch.no_grad():
        found = backward(*inputs, seed)
    found = found if isinstance(found, tuple) else (found,)
    for role, actual, wanted in zip(gradient_of, found, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-5, msg=role)
    for key, buffer in forward.named_buffers():  # the backward pass updates nothing
        assert torch.equal(buffer, statistics[key]), key
    back = program.grad(name, training=training)
    interpreter = Interpreter(back.program.ir, {}, module_parameters(backward))
    with torch.no_grad():
        reference = interpreter.run(back.name, [*inputs, seed])
    for role, actual, wanted in zip(gradient_of, found, reference, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-7, atol=1e-9, msg=role)
    return forward, backward


# ---- batch normalisation ------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batchnorm_layer_in_both_modes(training: bool) -> None:
    program = ncd.load(GALLERY / "batchnorm.ncd", sizes=BATCHNORM_SIZES)
    X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _backward_against_autograd(program, "batchnorm_layer", [X], training)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batchnorm_with_two_channel_axes_declared_in_another_order(training: bool) -> None:
    """Channels `c, d` around the normalised axis, the statistics and the scale declared
    `[d, c]`, no shift."""
    program = ncd.load("axis c = 2, b = 4, d = 3\n"
                       "def f(X: R[b, c, d]) -> R[b, c, d] {\n"
                       "    buffer mu: R[d, c] = zeros\n    buffer s2: R[d, c] = ones\n"
                       "    param g: R[d, c] = ones\n"
                       "    return sigmoid(batchnorm[b](X, mu, s2, g))\n}\n")
    X = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    _backward_against_autograd(program, "f", [X], training)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batchnorm_layer_equals_pytorchs_modules(training: bool) -> None:
    """`relu(batchnorm[b](linear[i -> n](X, W), ...))` against `nn.Linear(bias=False)`,
    `nn.BatchNorm1d` and `nn.ReLU` with the same weights and statistics, differentiated by
    autograd."""
    program = ncd.load(GALLERY / "batchnorm.ncd", sizes=BATCHNORM_SIZES)
    forward = program["batchnorm_layer"].to_torch(dtype=torch.float64)
    _randomise_statistics(forward)
    with torch.no_grad():
        forward.gamma.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
        forward.beta.copy_(torch.randn(4, dtype=torch.float64))
    linear = torch.nn.Linear(5, 4, bias=False).double()
    norm = torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        linear.weight.copy_(forward.W)  # W: R[n, i], as nn.Linear's weight
        norm.weight.copy_(forward.gamma)
        norm.bias.copy_(forward.beta)
        norm.running_mean.copy_(forward.running_mean)
        norm.running_var.copy_(forward.running_var)
    reference = torch.nn.Sequential(linear, norm, torch.nn.ReLU()).train(training)
    forward.train(training)
    backward = program["batchnorm_layer"].to_torch_grad(forward, dtype=torch.float64)
    X = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    dY = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(forward(X), reference(X))
    expected = torch.autograd.grad(reference(X), [X, linear.weight, norm.weight, norm.bias], dY)
    with torch.no_grad():
        dX, dW, dgamma, dbeta = backward(X.detach(), dY)
    torch.testing.assert_close(dX, expected[0])
    torch.testing.assert_close(dW, expected[1])
    torch.testing.assert_close(dgamma, expected[2])
    torch.testing.assert_close(dbeta, expected[3])


def test_batchnorm_backward_definition_writes_the_normalisation_out() -> None:
    """No `batchnorm` operation in the backward definition (it would follow the module's mode
    and move the running statistics); training mode reads no running statistics, evaluation
    mode reads both (buffers, with no gradient)."""
    program = ncd.load(GALLERY / "batchnorm.ncd", sizes=BATCHNORM_SIZES)
    for training in (True, False):
        made = backward_definition(program.ir, "batchnorm_layer", training=training)[0]
        ops = [t.op for t in ir.walk(made.definition.body) if isinstance(t, ir.Broadcasted)]
        assert not any(isinstance(op, ir.BatchNormOp) for op in ops)
        buffers = [t for t in ir.walk(made.definition.body) if isinstance(t, ir.Broadcasted)
                   and isinstance(t.op, ir.BufferOp)]
        assert len(buffers) == (0 if training else 2)
        assert made.gradient_of == ("X", "W", "gamma", "beta")


def test_backward_module_takes_the_forward_modules_mode() -> None:
    program = ncd.load(GALLERY / "batchnorm.ncd", sizes=BATCHNORM_SIZES)
    forward = program["batchnorm_layer"].to_torch(dtype=torch.float64).eval()
    _randomise_statistics(forward)
    X = torch.randn(3, 5, dtype=torch.float64)
    dY = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        following = program["batchnorm_layer"].to_torch_grad(forward)(X, dY)
        evaluation = program["batchnorm_layer"].to_torch_grad(forward, training=False)(X, dY)
        training = program["batchnorm_layer"].to_torch_grad(forward, training=True)(X, dY)
    torch.testing.assert_close(following[0], evaluation[0])
    assert not torch.allclose(training[0], evaluation[0])


def test_a_call_of_a_definition_with_batchnorm_is_reported() -> None:
    """The backward pass would recompute the call with the forward module's batchnorm."""
    loaded = ncd.load("axis b = 3, m = 4\n"
                      "def norm(X: R[b, m]) -> R[b, m] { return batchnorm[b](X, mu, s2) }\n"
                      "def f(X: R[b, m]) -> R[b, m] {\n    H = norm(X)\n    return H * H\n}\n")
    with pytest.raises(NcdError) as caught:
        loaded.grad("f")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E320" and "`norm`, which applies `batchnorm`" in diagnostic.message


def test_a_training_step_with_batchnorm_uses_the_compiled_backward() -> None:
    from test_training import twenty_steps_against_torch_optim

    program = ncd.load("axis b\naxis m = 4, f = 5, n = 3\n"
                       "def net(X: R[b, m]) -> R[b, n] {\n"
                       "    H = relu(batchnorm[b](linear[m -> f](X, W_in), mu, s2, g, beta))\n"
                       "    return linear[f -> n, bias](H, W_out, b_out)\n}\n"
                       "train t { model: net  loss: cross_entropy[n]  "
                       "optimiser: momentum(lr = 0.1, momentum = 0.9) }\n")
    assert "torch.autograd" not in program.compile("t")
    twenty_steps_against_torch_optim(program, (6, 4))


# ---- embeddings and index arrays ----------------------------------------------------------


@pytest.mark.parametrize("indices", [(), (4,), (2, 3)], ids=["scalar", "vector", "matrix"])
def test_embedding_equals_nn_embedding(indices: tuple[int, ...]) -> None:
    """`dE` is the scatter-add of `dY` into the rows that `T` names (repeated rows summed), as
    autograd of `nn.Embedding` gives it; the indices get no gradient."""
    axes = "".join(f", a{k} = {size}" for k, size in enumerate(indices))
    names = ", ".join(f"a{k}" for k in range(len(indices)))
    program = ncd.load(f"axis v = 5, m = 3{axes}\n"
                       f"def f(T: N[v][{names}]) -> R[{names + ', ' if names else ''}m] "
                       "{ return embedding[v -> m](T, E) }\n")
    forward = program["f"].to_torch(dtype=torch.float64)
    backward = program["f"].to_torch_grad(forward)
    T = torch.tensor([1, 3, 1, 1, 0, 3][:math.prod(indices)]).reshape(indices)
    reference = torch.nn.Embedding(5, 3).double()
    with torch.no_grad():
        reference.weight.copy_(forward.E)
    dY = torch.randn(*indices, 3, dtype=torch.float64)
    (expected,) = torch.autograd.grad(reference(T), [reference.weight], dY)
    with torch.no_grad():
        found = backward(T, dY)
    torch.testing.assert_close(found, expected)
    back = program.grad("f")
    with torch.no_grad():
        (interpreted,) = Interpreter(back.program.ir, {}, module_parameters(backward)).run(
            back.name, [T, dY])
    torch.testing.assert_close(found, interpreted)


def test_tied_embedding_table() -> None:
    """The table read by the lookup and by the output projection (GPT-2's tied weights): its
    gradient is the scatter-add plus the contraction's."""
    program = ncd.load("axis v = 6, x = 4, m = 3\n"
                       "def f(T: N[v][x]) -> R[x, v] {\n    param P: R[x, m]\n"
                       "    H = layernorm[m](embedding[v -> m](T, E) + P, g, b)\n"
                       "    L[x, v] = sum(m) H[x, m] * E[v, m]\n    return L\n}\n")
    _backward_against_autograd(program, "f", [torch.tensor([2, 5, 2, 0])], True)


GATHERS = {
    # the index array indexes an axis the result keeps: a permutation per row, with repeats
    "own_axis": ("def f(X: R[b, n], T: N[n][b, n]) -> R[b, n] {\n"
                 "    Y[b, n] = X[b, T[b, n]]\n    return Y\n}\n", 4),
    # the index array indexes the other axis
    "other_axis": ("def f(X: R[b, n], T: N[b][b, n]) -> R[b, n] {\n"
                   "    Y[b, n] = X[T[b, n], n]\n    return Y\n}\n", 3),
    # read at the axes the result keeps, one entry per row (`classifier.cross_entropy`)
    "one_per_row": ("def f(X: R[b, n], T: N[n][b]) -> R[b] {\n"
                    "    Y[b] = X[b, T[b]]\n    return Y\n}\n", 4),
}


@pytest.mark.parametrize("case", sorted(GATHERS))
def test_gather_through_an_index_array_along_kept_axes(case: str) -> None:
    source, bound = GATHERS[case]
    program = ncd.load("axis b = 3, n = 4\n" + source)
    generator = torch.Generator().manual_seed(4)
    X = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    shape = program.ir.definition("f").inputs[1].array.names
    T = torch.randint(0, bound, tuple(3 if a == "b" else 4 for a in shape), generator=generator)
    _backward_against_autograd(program, "f", [X, T], True)


REMAINDERS = {
    # a periodic read: each entry of X read at m = q, q + 3, q + 6
    "period": ("axis m = 7, n = 3\ndef f(X: R[n]) -> R[m] {\n    Y[m] = X[m % 3]\n"
               "    return Y\n}\n", (3,)),
    # a floor division inside, a batch axis passing, negative numerators wrapped
    "divided": ("axis m = 7, n = 3, b = 2\ndef f(X: R[b, n]) -> R[b, m] {\n"
                "    Y[b, m] = X[b, (5 - 2*m) // 3 % 3]\n    return Y\n}\n", (2, 3)),
}


@pytest.mark.parametrize("case", sorted(REMAINDERS))
def test_gather_through_a_remainder(case: str) -> None:
    source, shape = REMAINDERS[case]
    X = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    _backward_against_autograd(ncd.load(source), "f", [X], True)
