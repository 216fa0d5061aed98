"""The reverse derivative (`ncd.derivative`): the backward definition of each supported gallery
definition, compiled, equals `torch.autograd`'s gradients of the compiled forward module (inputs
and parameters, float64, two sizes each), agrees with the reference interpreter run on the
backward definition, and draws a diagram that passes `validate()`; every other gallery
definition is reported as E320, never with a traceback."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_generated_code_is_clean
from differential import autograd_beside_backward, module_parameters

import ncd
from ncd import ir
from ncd.derivative import backward_definition
from ncd.diagnostics import NcdError
from ncd.semantics import Interpreter

GALLERY = Path(__file__).resolve().parent.parent / "gallery"

# Two sets of sizes per file (small, so that the whole file runs in seconds): the axes
# declared with a size are overridden, the symbolic ones fixed, as `-D` does.
SIZES: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "attention": ({"m": 8, "h": 2, "x": 3}, {"m": 12, "h": 3, "x": 5}),
    "batchnorm": ({"i": 5, "n": 4, "b": 3}, {"i": 3, "n": 6, "b": 4}),
    "classifier": ({"c": 6, "n": 5, "b": 2, "y": 2, "x": 3}, {"c": 4, "n": 3, "b": 3, "y": 1,
                                                               "x": 2}),
    "conv1d": ({"x": 12, "c": 3, "o": 4, "b": 2}, {"x": 15, "c": 2, "o": 3, "b": 1}),
    "cross_attention": ({"m": 8, "n": 6, "h": 2, "x": 3, "y": 4},
                        {"m": 6, "n": 4, "h": 3, "x": 2, "y": 5}),
    "dense_machine": ({"b": 3}, {"b": 1}),  # its blocks fix n = 12
    "depthwise_separable": ({"c": 3, "o": 4, "b": 2, "x": 5, "y": 4},
                            {"c": 2, "o": 3, "b": 1, "x": 4, "y": 6}),
    "graph_conv": ({"v": 5, "e": 7, "f": 6, "g": 3}, {"v": 4, "e": 9, "f": 4, "g": 5}),
    "gpt2_block": ({"m": 8, "h": 2, "x": 3}, {"m": 6, "h": 3, "x": 4}),
    "gru": ({"i": 3, "n": 4, "b": 2, "t": 2}, {"i": 2, "n": 5, "b": 3, "t": 2}),
    "iris": ({"m": 4, "f": 5, "n": 3, "b": 3}, {"m": 3, "f": 6, "n": 2, "b": 2}),
    "lenet5": ({"x": 11, "y": 11, "u": 2, "v": 2, "c1": 2, "c3": 2, "c5": 3, "f6": 4, "n": 3,
                "b": 1},
               {"x": 18, "y": 18, "u": 3, "v": 3, "c1": 1, "c3": 2, "c5": 3, "f6": 4, "n": 2,
                "b": 1}),
    "llama_block": ({"m": 16, "h": 4, "g": 2, "f": 12, "x": 3},
                    {"m": 24, "h": 6, "g": 3, "f": 8, "x": 4}),
    "lru": ({"m": 4, "n": 3, "t": 2}, {"m": 3, "n": 5, "t": 2}),
    "lstm": ({"i": 3, "n": 4, "b": 2, "t": 2}, {"i": 2, "n": 5, "b": 3, "t": 2}),
    "mlp": ({"m": 6, "f": 5, "n": 4, "b": 3}, {"m": 4, "f": 7, "n": 3, "b": 2}),
    "mlp_mixer": ({"s": 4, "c": 5, "ds": 3, "dc": 6}, {"s": 3, "c": 4, "ds": 5, "dc": 2}),
    "resnet_block": ({"c": 2, "b": 2, "y": 3, "x": 2}, {"c": 3, "b": 1, "y": 2, "x": 3}),
    "moe": ({"m": 6, "h": 5, "e": 2, "x": 3}, {"m": 4, "h": 3, "e": 3, "x": 2}),
    "sliding_window_attention": ({"m": 8, "h": 2, "x": 6}, {"m": 6, "h": 3, "x": 7}),
    "transformer": ({"m": 4, "h": 2, "x": 2}, {"m": 6, "h": 3, "x": 3}),
    "unet_level": ({"c": 2, "d": 2, "yh": 1, "xh": 2}, {"c": 2, "d": 3, "yh": 3, "xh": 2}),
    "vit": ({"c": 1, "u": 4, "v": 4, "p": 2, "m": 4, "h": 2, "s": 2, "g": 1, "r": 1},
            {"c": 1, "u": 6, "v": 9, "p": 3, "m": 6, "h": 3, "s": 1, "g": 1, "r": 1}),
}

SUPPORTED: tuple[tuple[str, str], ...] = (
    ("attention", "attention"), ("batchnorm", "batch_normalizing_transform"),
    ("batchnorm", "batchnorm_layer"), ("classifier", "head"),
    ("classifier", "cross_entropy"), ("classifier", "classifier"),
    ("conv1d", "conv1d"), ("cross_attention", "cross_attention"),
    ("dense_machine", "layer"), ("dense_machine", "dense_machine"),
    ("depthwise_separable", "depthwise_separable"), ("gpt2_block", "causal_self_attention"),
    ("gpt2_block", "mlp"), ("gpt2_block", "gpt2_block"), ("graph_conv", "gcn_conv"),
    ("gru", "gru_cell"), ("gru", "gru"), ("iris", "iris_mlp"),
    ("lenet5", "lenet5"), ("llama_block", "swiglu"), ("llama_block", "rotary"),
    ("llama_block", "attention"), ("llama_block", "llama_block"), ("lru", "lru_step"),
    ("lru", "lru"), ("lstm", "lstm_cell"), ("lstm", "lstm"), ("mlp", "mlp"),
    ("mlp_mixer", "mlp_mixer"), ("moe", "expert"), ("moe", "moe"),
    ("resnet_block", "resnet_block"),
    ("sliding_window_attention", "sliding_window_attention"), ("transformer", "attention"),
    ("transformer", "feedforward"), ("transformer", "transformer"), ("unet_level", "down"),
    ("unet_level", "lower"),
    ("unet_level", "up"), ("unet_level", "unet_level"), ("vit", "attention"),
    ("vit", "feedforward"), ("vit", "patch_embedding"), ("vit", "encoder_layer"),
    ("vit", "vit"),
)
"""The gallery definitions whose backward definition is built and checked."""

BOOLEAN: tuple[tuple[str, str], ...] = (("boolean_circuit", "parity_circuit"),)
"""Gallery circuits of Boolean gates: their backward definitions are over Z2, which autograd
does not know; tests/test_boolean.py checks them against the Z2 reverse derivatives."""


@functools.cache
def program(stem: str, choice: int) -> ncd.Program:
    return ncd.load(GALLERY / f"{stem}.ncd", sizes=SIZES[stem][choice])


@functools.cache
def backward(stem: str, name: str, choice: int) -> ncd.Definition:
    return program(stem, choice).grad(name)


def gradients(stem: str, name: str, choice: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs, output gradients, autograd's gradients and the compiled backward's, by role."""
    run = autograd_beside_backward(program(stem, choice), backward(stem, name, choice), name,
                                   _gradient_of(stem, name, choice), seed)
    return {"inputs": run.inputs, "seeds": run.seeds, "expected": run.expected,
            "found": run.found, "forward": run.forward,  # type: ignore[dict-item]
            "backward": run.backward}


@functools.cache
def _gradient_of(stem: str, name: str, choice: int) -> tuple[str, ...]:
    return backward_definition(program(stem, choice).ir, name)[0].gradient_of


def test_every_gallery_definition_is_supported_or_reported() -> None:
    """A definition not in `SUPPORTED` is an input error (E320) at its source."""
    for path in sorted(GALLERY.glob("*.ncd")):
        loaded = ncd.load(path)
        for name in loaded.names:
            if (path.stem, name) in SUPPORTED or (path.stem, name) in BOOLEAN:
                continue
            with pytest.raises(NcdError) as caught:
                loaded.grad(name)
                pytest.fail(f"{path.stem}.{name} has a backward definition: list it")
            assert [d.code for d in caught.value.diagnostics] == ["E320"], (path.stem, name)
            assert caught.value.diagnostics[0].span is not None


@pytest.mark.parametrize("choice", [0, 1])
@pytest.mark.parametrize(("stem", "name"), SUPPORTED, ids=[f"{s}.{n}" for s, n in SUPPORTED])
def test_backward_module_equals_autograd(stem: str, name: str, choice: int) -> None:
    found = gradients(stem, name, choice)
    gradient_of = _gradient_of(stem, name, choice)
    assert len(found["found"]) == len(found["expected"]) == len(gradient_of)
    for role, expected, actual in zip(gradient_of, found["expected"], found["found"],
                                      strict=True):
        if expected is None:  # autograd: no path from this input or parameter
            expected = torch.zeros_like(actual)
        assert actual.shape == expected.shape, role
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, msg=role)


@pytest.mark.parametrize(("stem", "name"), SUPPORTED, ids=[f"{s}.{n}" for s, n in SUPPORTED])
def test_backward_definition_agrees_with_the_interpreter(stem: str, name: str) -> None:
    found = gradients(stem, name, 0, seed=1)
    back = backward(stem, name, 0)
    # The backward module's parameters are the forward module's (tied), under its own names.
    interpreter = Interpreter(back.program.ir, {}, module_parameters(found["backward"]))
    with torch.no_grad():
        reference = interpreter.run(back.name, [*found["inputs"], *found["seeds"]])
    for role, expected, actual in zip(_gradient_of(stem, name, 0), reference, found["found"],
                                      strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-9, msg=role)


DRAWN: tuple[tuple[str, str], ...] = (
    ("batchnorm", "batch_normalizing_transform"), ("classifier", "head"),
    ("classifier", "classifier"), ("conv1d", "conv1d"), ("dense_machine", "dense_machine"),
    ("depthwise_separable", "depthwise_separable"), ("gpt2_block", "causal_self_attention"),
    ("gpt2_block", "mlp"), ("iris", "iris_mlp"), ("llama_block", "rotary"),
    ("lru", "lru_step"), ("mlp", "mlp"), ("moe", "expert"), ("transformer", "feedforward"),
    ("vit", "feedforward"), ("vit", "patch_embedding"), ("vit", "vit"),
)
"""Backward diagrams checked by `validate()`: the quickest of SUPPORTED (drawing a large
backward diagram takes seconds; the others pass too, checked by hand, not on every run)."""


@pytest.mark.parametrize(("stem", "name"), DRAWN, ids=[f"{s}.{n}" for s, n in DRAWN])
def test_backward_diagram_validates(stem: str, name: str) -> None:
    """What `ncd render --grad` draws: the backward block mirrored under the forward one."""
    from ncd.renderers import RenderOptions, diagram

    extended, grad_name, view = program(stem, 0).derivative_drawing(name)
    assert diagram(extended.ir, grad_name, RenderOptions(lens=view)).validate() == []


def test_backward_diagram_of_softmax_scores_validates() -> None:
    from ncd.renderers import RenderOptions, diagram

    loaded = ncd.load("axis x, y = x\naxis h = 2, k = 3\n"
                      "def g(Q: R[x, h, k], K: R[y, h, k]) -> R[h, x, y] {\n"
                      "    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k]\n"
                      "    return softmax[y](S)\n}\n")
    back = loaded.grad("g")
    assert diagram(back.program.ir, back.name, RenderOptions()).validate() == []


def test_backward_definition_shape() -> None:
    """Inputs: the forward inputs, then the output gradients; outputs: the gradients of the
    inputs, then of each parameter; the same parameters; saved values are the wires from the
    forward block to the backward block."""
    forward = program("mlp", 0).ir.definition("mlp")
    result, callees = backward_definition(program("mlp", 0).ir, "mlp")
    definition = result.definition
    assert callees == []
    assert definition.name == "mlp_grad"
    assert [v.name for v in definition.inputs] == ["X", "dY"]
    # the parameters in the forward definition's order: the declared weights, then the biases
    assert [v.name for v in definition.outputs] == ["dX", "dW_in", "dW_out", "db_in", "db_out"]
    assert definition.params == forward.params
    assert result.gradient_of == ("X", "W_in", "W_out", "b_in", "b_out")
    assert {v.name for v in result.saved} >= {"X", "Y"}  # softmax's reverse reads its output
    blocks = [t for t in ir.walk(definition.body) if isinstance(t, ir.Block)]
    assert [b.title for b in blocks] == ["forward", "backward"]


def test_backward_module_reads_the_forward_modules_parameters() -> None:
    loaded = program("mlp", 0)
    forward = loaded["mlp"].to_torch(dtype=torch.float64)
    module = loaded["mlp"].to_torch_grad(forward)
    assert set(module.state_dict()) == set(forward.state_dict())
    for key, parameter in forward.named_parameters():
        assert module.get_parameter(key) is parameter


def test_compiled_backward_uses_no_autograd() -> None:
    source = backward("mlp", "mlp", 0).compile()
    assert "autograd" not in source and "backward(" not in source
    assert "class MlpGrad" in source


def test_torch_compile_accepts_the_backward_module() -> None:
    loaded = program("mlp", 0)
    module = loaded["mlp"].to_torch_grad()
    X, dY = torch.randn(3, 6), torch.randn(3, 4)
    eager = module(X, dY)
    compiled = torch.compile(module, fullgraph=True, backend="eager")(X, dY)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b)


def test_reindexing_adjoint_is_a_transposed_convolution() -> None:
    """A strided, dilated window and a reversal: the adjoint of each reindexing."""
    text = ("axis b = 2, x = 11, c = 2, o = 3, w = 3, p = 3\n"
            "def f(X: R[b, c, x]) -> R[b, o, p] {\n    param W: R[o, c, w]\n"
            "    Y[b, o, p] = sum(c, w) X[b, c, 2*p + 2*w] * W[o, c, w]\n"
            "    R[b, o, p] = Y[b, o, 2 - p]\n    return R\n}\n")
    loaded = ncd.load(text)
    forward = loaded["f"].to_torch(dtype=torch.float64)
    module = loaded["f"].to_torch_grad(forward)
    X = torch.randn(2, 2, 11, dtype=torch.float64, requires_grad=True)
    dR = torch.randn(2, 3, 3, dtype=torch.float64)
    expected = torch.autograd.grad(forward(X), [X, forward.W], dR)
    with torch.no_grad():
        found = module(X.detach(), dR)
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_cli_renders_and_compiles_the_backward() -> None:
    drawn = subprocess.run([sys.executable, "-m", "ncd", "render", str(GALLERY / "classifier.ncd"),
                            "head", "--grad"],
                           capture_output=True, text=True, check=False)
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("<svg") or "<svg" in drawn.stdout[:200]
    compiled = subprocess.run([sys.executable, "-m", "ncd", "compile", str(GALLERY / "mlp.ncd"),
                               "--grad"],
                              capture_output=True, text=True, check=False)
    assert compiled.returncode == 0, compiled.stderr
    assert "class MlpGrad(nn.Module)" in compiled.stdout


def test_cli_reports_an_operator_with_no_reverse_rule(tmp_path: Path) -> None:
    path = tmp_path / "pairs.ncd"
    path.write_text("axis e = 3, v = 4, w = 5\n"
                    "def f(X: R[v, w], S: N[v][e], D: N[w][e]) -> R[e] {\n"
                    "    Y[e] = X[S[e], D[e]]\n    return Y\n}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "ncd", "compile", str(path), "--grad"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "error[E320]" in result.stderr and "Traceback" not in result.stderr
    assert "pairs.ncd:3:" in result.stderr


def test_shared_repeated_block_and_its_reverse() -> None:
    """A block repeated with shared parameters: its copies run in sequence, their reverses in
    the opposite order, and the parameter's gradient sums the copies' (as autograd's)."""
    text = ("axis b = 2, m = 3\n"
            "def f(X: R[b, m]) -> R[b, m] {\n"
            '    block "Layer" x3 shared {\n        X = tanh(linear[m -> m, bias](X, W, c))\n'
            "    }\n    return X\n}\n")
    loaded = ncd.load(text)
    forward = loaded["f"].to_torch(dtype=torch.float64)
    module = loaded["f"].to_torch_grad(forward)
    X = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    dY = torch.randn(2, 3, dtype=torch.float64)
    expected = torch.autograd.grad(forward(X), [X, forward.W, forward.c], dY)
    with torch.no_grad():
        found = module(X.detach(), dY)
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b)
    titles = [t.title for t in ir.walk(loaded.grad("f").ir.body) if isinstance(t, ir.Block)]
    assert "Layer (backward)" in titles


def test_backward_code_is_lint_clean_and_formatted(tmp_path: Path) -> None:
    """The compiled backward module of every supported definition, as `ncd compile --grad`
    writes it, is as ruff formats it and lint-clean (the rules generated code keeps)."""
    for stem, name in SUPPORTED:
        back = backward(stem, name, 0)
        (tmp_path / f"{stem}_{name}_grad.py").write_text(back.program.compile(back.name))
    assert_generated_code_is_clean(tmp_path)


def test_a_training_mode_batchnorm_backward_refuses_leading_dims() -> None:
    """The forward module's batchnorm pools leading batch dims into its statistics; the
    backward definition's statistics are per call: its module refuses such dims rather than
    compute the derivative of something else. In evaluation mode (running statistics) it
    takes them, each batch element a call of its own."""
    loaded = program("batchnorm", 0)
    forward = loaded["batchnorm_layer"].to_torch(dtype=torch.float64)
    module = loaded.to_torch_grad("batchnorm_layer", forward, dtype=torch.float64)
    X = torch.randn(2, 3, 5, dtype=torch.float64)
    dY = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="leading batch dims"):
        module(X, dY)
    module(X[0], dY[0])  # its declared axes only: computed
    assert backward_definition(loaded.ir, "batchnorm_layer")[0].definition.leading_dims is False
    evaluation = backward_definition(loaded.ir, "batchnorm_layer", training=False)[0]
    assert evaluation.definition.leading_dims is True
    # written out with `mean` and arithmetic, not `batchnorm`: per call in both modules
    assert backward_definition(loaded.ir, "batch_normalizing_transform")[0] \
        .definition.leading_dims


def test_a_call_lifted_over_an_axis_of_the_callees_own_is_reported() -> None:
    """`h(C, Y)` lifted over `b` where `h`'s unlifted input `C` has an axis `b` of its own:
    the gradient of `C` would need `b` twice, so it is an E320 at the call, not an internal
    error; with the axis renamed the backward module equals autograd."""
    text = ("axis k = 2, b = 3, n = 4, c = 3\n"
            "def h(C: R[k, AXIS], X: R[n]) -> R[n] {\n    return X * sum[k, AXIS](C)\n}\n"
            "def g(C: R[k, AXIS], Y: R[n, b]) -> R[n, b] {\n    return h(C, Y)\n}\n")
    with pytest.raises(NcdError) as caught:
        ncd.load(text.replace("AXIS", "b")).grad("g")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E320" and diagnostic.span is not None
    assert diagnostic.span.line == 6 and "lifted over `b`" in diagnostic.message
    renamed = ncd.load(text.replace("AXIS", "c"))
    forward = renamed["g"].to_torch(dtype=torch.float64)
    module = renamed.to_torch_grad("g", forward, dtype=torch.float64)
    C = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    dY = torch.randn(4, 3, dtype=torch.float64)
    expected = torch.autograd.grad(forward(C, Y), [C, Y], dY)
    found = module(C.detach(), Y.detach(), dY)
    for want, got in zip(expected, found, strict=True):
        torch.testing.assert_close(got, want)
