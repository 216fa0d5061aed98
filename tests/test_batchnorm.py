"""`batchnorm` is `nn.BatchNorm1d/2d`: in training mode it normalises with the batch's mean and
biased variance and moves its running statistics towards the batch's mean and unbiased
variance by `momentum`; in evaluation mode it normalises with the running statistics. The
compiled module is held to PyTorch's layers (weights and buffers copied, several sizes, three
training steps, then evaluation, and gradients) and to the reference interpreter, which takes
the mode and returns the updated buffers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import diagnostics, ok
from differential import compare_text, module_parameters
from torch import nn

import ncd
from ncd import ir
from ncd.semantics import Interpreter, ParameterPath, SizeError

CLOSE = {"atol": 1e-10, "rtol": 1e-10}

BN2D = """axis b, c = 3, y, x

def block(X: R[b, c, y, x]) -> R[b, c, y, x] {
    return batchnorm[b, y, x, eps=1e-3, momentum=0.2](X, mean, var, g, beta)
}
"""

BN1D = """axis b, c = 4

def block(X: R[b, c]) -> R[b, c] {
    return batchnorm[b](X, mean, var, g, beta)
}
"""

BN1D_SEQUENCE = """axis b, c = 4, t

def block(X: R[b, c, t]) -> R[b, c, t] {
    return batchnorm[b, t](X, mean, var, g, beta)
}
"""


def pair(source: str, reference: nn.Module, sizes: dict[str, int]
         ) -> tuple[nn.Module, nn.Module]:
    """The compiled module (float64) and the PyTorch layer with the same weights and buffers."""
    module = ncd.load(source, sizes=sizes).to_torch("block", dtype=torch.float64)
    reference = reference.double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("weight", "bias"):
            value = torch.randn(reference.num_features, generator=generator, dtype=torch.float64)
            getattr(reference, name).copy_(value)
        reference.running_mean.copy_(torch.randn(reference.num_features, generator=generator,
                                                 dtype=torch.float64))
        reference.running_var.copy_(torch.rand(reference.num_features, generator=generator,
                                               dtype=torch.float64) + 0.5)
        module.g.copy_(reference.weight)
        module.beta.copy_(reference.bias)
        module.mean.copy_(reference.running_mean)
        module.var.copy_(reference.running_var)
    return module, reference


CASES = [
    (BN2D, lambda: nn.BatchNorm2d(3, eps=1e-3, momentum=0.2), (3, 3, 4, 5)),
    (BN2D, lambda: nn.BatchNorm2d(3, eps=1e-3, momentum=0.2), (2, 3, 1, 2)),
    (BN1D, lambda: nn.BatchNorm1d(4), (5, 4)),
    (BN1D, lambda: nn.BatchNorm1d(4), (2, 4)),
    (BN1D_SEQUENCE, lambda: nn.BatchNorm1d(4), (3, 4, 6)),
]


@pytest.mark.parametrize(("source", "layer", "shape"), CASES)
def test_batchnorm_is_nn_batchnorm(source: str, layer: Callable[[], nn.Module],
                                   shape: tuple[int, ...]) -> None:
    names = {BN2D: "byx", BN1D: "b", BN1D_SEQUENCE: "bt"}[source]  # every axis but `c`
    symbols = dict(zip(names, [shape[0], *shape[2:]], strict=True))
    module, reference = pair(source, layer(), symbols)
    generator = torch.Generator().manual_seed(2)
    module.train()
    reference.train()
    for _ in range(3):  # training: batch statistics, running statistics updated each step
        X = torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 1
        torch.testing.assert_close(module(X), reference(X), **CLOSE)
        torch.testing.assert_close(module.mean, reference.running_mean, **CLOSE)
        torch.testing.assert_close(module.var, reference.running_var, **CLOSE)
    X = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    mine = module(X)
    theirs = reference(X)
    weights = torch.randn(mine.shape, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad((mine * weights).sum(), [X, module.g, module.beta])
    expected = torch.autograd.grad((theirs * weights).sum(), [X, reference.weight,
                                                               reference.bias])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, **CLOSE)
    module.eval()
    reference.eval()
    X = torch.randn(shape, generator=generator, dtype=torch.float64)
    before = module.mean.clone()
    torch.testing.assert_close(module(X), reference(X), **CLOSE)
    torch.testing.assert_close(module.mean, before, atol=0, rtol=0)  # eval: no update


def test_buffers_are_state_not_parameters() -> None:
    module = ncd.load(BN2D, sizes={"b": 2, "y": 2, "x": 2}).to_torch("block")
    assert set(module.state_dict()) == {"mean", "var", "g", "beta"}
    assert {name for name, _ in module.named_parameters()} == {"g", "beta"}
    assert {name for name, _ in module.named_buffers()} == {"mean", "var"}
    torch.testing.assert_close(module.mean, torch.zeros(3))
    torch.testing.assert_close(module.var, torch.ones(3))


def interpreter_pair(source: str, sizes: dict[str, int], training: bool
                     ) -> tuple[nn.Module, Interpreter]:
    program = ncd.load(source, sizes=sizes).ir
    module = ncd.load(source, sizes=sizes).to_torch("block", dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
                         + 0.5)
    source_of = module_parameters(module)
    snapshot: dict[tuple[object, str], torch.Tensor] = {}

    def parameters(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        """The values before the step (the module updates its buffers in place)."""
        key = (path, parameter.name)
        if key not in snapshot:
            snapshot[key] = source_of(path, parameter).detach().clone()
        return snapshot[key]

    module.train(training)
    return module, Interpreter(program, {}, parameters, training=training)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("source", "sizes", "shape"), [
    (BN2D, {"b": 3, "y": 2, "x": 3}, (3, 3, 2, 3)),
    (BN1D_SEQUENCE, {"b": 2, "t": 5}, (2, 4, 5)),
    (BN1D.replace("batchnorm[b]", "batchnorm[b, c]"), {"b": 3}, (3, 4)),  # one channel: R[]
])
def test_compiled_batchnorm_is_the_interpreter(training: bool, source: str,
                                               sizes: dict[str, int],
                                               shape: tuple[int, ...]) -> None:
    module, interpreter = interpreter_pair(source, sizes, training)
    generator = torch.Generator().manual_seed(4)
    X = torch.randn(shape, generator=generator, dtype=torch.float64)
    (want,) = interpreter.run("block", [X])
    got = module(X)
    torch.testing.assert_close(got, want, **CLOSE)
    updated = {name: tensor for (_, name), tensor in interpreter.updated.items()}
    if training:
        assert set(updated) == {"mean", "var"}
        torch.testing.assert_close(module.mean, updated["mean"], **CLOSE)
        torch.testing.assert_close(module.var, updated["var"], **CLOSE)
    else:
        assert updated == {}


def test_channels_of_several_axes_and_declared_buffers() -> None:
    """Two channel axes (in another order than the buffers'), declared buffers, no affine."""
    source = """axis b, h = 2, c = 3, x

def block(X: R[b, c, x, h]) -> R[b, c, x, h] {
    buffer mu: R[h, c] = zeros
    buffer s2: R[h, c] = constant(2.0)
    return batchnorm[b, x](X, mu, s2)
}
"""
    for training in (True, False):
        module, interpreter = interpreter_pair(source, {"b": 3, "x": 2}, training)
        X = torch.randn(3, 3, 2, 2, dtype=torch.float64)
        (want,) = interpreter.run("block", [X])
        torch.testing.assert_close(module(X), want, **CLOSE)
        if training:
            updated = {name: t for (_, name), t in interpreter.updated.items()}
            torch.testing.assert_close(module.mu, updated["mu"], **CLOSE)
            torch.testing.assert_close(module.s2, updated["s2"], **CLOSE)
    fresh = ncd.load(source, sizes={"b": 3, "x": 2}).to_torch("block")
    torch.testing.assert_close(fresh.s2, torch.full((2, 3), 2.0))
    assert list(fresh.parameters()) == []


def test_a_new_statistic_follows_the_declared_one() -> None:
    """The running mean declared with the channels as [h, c]: the new running variance is made
    in that order too, so both are plain views for `F.batch_norm` to update in place."""
    source = """axis b, c = 3, h = 2

def block(X: R[b, c, h]) -> R[b, c, h] {
    buffer mean: R[h, c] = zeros
    return batchnorm[b](X, mean, var, g, beta)
}
"""
    (definition,) = ok(source).definitions
    assert {p.name: p.array.names for p in definition.params}["var"] == ("h", "c")
    for training in (True, False):
        module, interpreter = interpreter_pair(source, {"b": 4}, training)
        X = torch.randn(4, 3, 2, dtype=torch.float64)
        (want,) = interpreter.run("block", [X])
        torch.testing.assert_close(module(X), want, **CLOSE)
        for (_, name), tensor in interpreter.updated.items():
            torch.testing.assert_close(getattr(module, name), tensor, **CLOSE)


def test_eval_mode_is_differential_clean() -> None:
    """The differential harness (evaluation mode, a batch lift at run time) agrees."""
    for source in (BN2D, BN1D_SEQUENCE):
        (report,) = compare_text(source).values()
        assert report.compared and not report.findings, report


def test_training_needs_two_values_per_channel() -> None:
    source = BN1D.replace("axis b, c = 4", "axis b = 1, c = 4")
    _, interpreter = interpreter_pair(source, {}, True)
    with pytest.raises(SizeError, match="at least two"):
        interpreter.run("block", [torch.randn(1, 4, dtype=torch.float64)])


def test_ir_and_diagram() -> None:
    program = ok(BN2D)
    definition = program.definition("block")
    buffers = [p.name for p in definition.params if p.buffer]
    assert buffers == ["mean", "var"]
    text = program.model_dump_json()
    assert text.count('"buffer":true') == 2 and '"buffer":false' not in text
    assert ir.Program.model_validate_json(text) == program
    svg = ncd.load(BN2D).render("block")
    assert "<svg" in svg


def test_lifted_call_of_batchnorm_is_refused() -> None:
    source = """axis b = 4, c = 3, e = 2

def norm(X: R[b, c]) -> R[b, c] {
    return batchnorm[b](X, mean, var)
}

def f(X: R[e, b, c]) -> R[e, b, c] {
    return norm(X)
}
"""
    (found,) = diagnostics(source)
    assert found.code == "E301"
    assert "lifted over the extra axis `e`" in found.message
    assert found.span is not None and found.span.line == 8


@pytest.mark.parametrize(("body", "code", "message"), [
    ("param m: R[c]\n    return batchnorm[b](X, m, v)", "E312", "is a learned parameter"),
    ("return batchnorm[b](X, m)", "E303", "takes 3 to 5 arguments"),
    ("return batchnorm[b, momentum=2](X, m, v)", "E307", "between 0 and 1"),
    ("return batchnorm[z](X, m, v)", None, None),
    ("buffer m: R[c] = normal(0, 1)\n    return batchnorm[b](X, m, v)", "E312",
     "not drawn at random"),
    ("buffer m: R[c]\n    return batchnorm[b](X, m, v)", "E312", "needs an initialiser"),
    ("buffer m: R[b] = zeros\n    return batchnorm[b](X, m, v)", None, "buffer `m`"),
    ("buffer m: R[c, h] = zeros\n    buffer v: R[h, c] = ones\n    return batchnorm[b](Y, m, v)",
     "E312", "lists the channel axes as [h, c]"),
])
def test_batchnorm_mistakes(body: str, code: str | None, message: str | None) -> None:
    source = (f"axis b = 4, c = 3, h = 2\n\ndef f(X: R[b, c], Y: R[b, c, h]) -> R[b, c] {{\n"
              f"    {body}\n}}\n").replace("return batchnorm[b](Y, m, v)",
                                        "return sum[h](batchnorm[b](Y, m, v))")
    found = diagnostics(source)
    assert len(found) == 1, [d.message for d in found]
    if code is not None:
        assert found[0].code == code
    if message is not None:
        assert message in found[0].message


def test_batchnorm_in_a_scan_updates_once_per_step() -> None:
    """Inside a `scan` step, the running statistics move once per time step, in order."""
    source = """axis b = 3, c = 2, t = 4

def cell(H: R[b, c], X: R[b, c]) -> (R[b, c], R[b, c]) {
    Z = batchnorm[b](H + X, mean, var)
    return Z, Z
}

def block(H0: R[b, c], X: R[t, b, c]) -> R[t, b, c] {
    Last, All = scan[t](cell, H0, X)
    return All
}
"""
    for training in (True, False):
        module, interpreter = interpreter_pair(source, {}, training)
        H0 = torch.randn(3, 2, dtype=torch.float64)
        X = torch.randn(4, 3, 2, dtype=torch.float64)
        (want,) = interpreter.run("block", [H0, X])
        torch.testing.assert_close(module(H0, X), want, **CLOSE)
        updated = {name: t for (_, name), t in interpreter.updated.items()}
        assert set(updated) == ({"mean", "var"} if training else set())
        for name, tensor in updated.items():
            torch.testing.assert_close(dict(module.named_buffers())[f"cell.{name}"], tensor,
                                       **CLOSE)


def test_positions_of_a_size_computed_at_run_time_are_one_product() -> None:
    """The positions after the channels count `h * w` entries, `w = (v - 1) // 2 + 1` computed
    at run time: written `2 * (((size_v - 1) // 2) + 1)`, not `2 * ((size_v - 1) // 2) + 1`
    (which splits the rows wrongly, or cannot split them)."""
    source = """axis b, v
axis c = 3, h = 2
axis w = (v - 1) // 2 + 1

def block(X: R[b, c, h, v]) -> R[b, c, h, w] {
    Y[b, c, h, w] = X[b, c, h, 2*w]
    return batchnorm[b, h, w](Y, mean, var, g, beta)
}
"""
    assert "reshape(-1, 3, 2 * (((size_v - 1) // 2) + 1))" in ncd.load(source).compile()
    (report,) = compare_text(source, seed=5, sizes=3).values()
    assert report.findings == [] and report.compared == 3
