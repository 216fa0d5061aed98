"""The gallery's architectures compute what PyTorch computes.

Each model of `gallery/` is compiled at small sizes and held to an independent implementation
written here with PyTorch's own modules and functions (`F.scaled_dot_product_attention`,
`nn.MultiheadAttention`, `nn.GRU`, grouped `F.conv2d`, `F.avg_pool2d`, ...). The reference's
weights, in PyTorch's layout, are copied into the compiled module (every parameter of the
module is covered); on several input sizes the outputs must agree, and so must the gradients
with respect to the inputs and to every parameter (float64). Each model is also held to the
reference interpreter (`tests/differential.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from differential import compare_definition
from test_semantics import GALLERY_SIZES
from torch import nn

import ncd

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
DTYPE = torch.float64
TOLERANCE = {"atol": 1e-9, "rtol": 1e-7}

Tensors = tuple[torch.Tensor, ...]


@dataclass
class Copy:
    """Parameter `name` of the compiled module is `to_ncd(source)`: a linear rearrangement of
    the reference's tensor, so the module's gradient is `to_ncd` of the reference's."""

    name: str
    source: torch.Tensor
    to_ncd: Callable[[torch.Tensor], torch.Tensor] = lambda t: t


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(shape, dtype=DTYPE)  # a tuple: `randn()` is a scalar (a loss's cotangent)


def leaf(*shape: int) -> torch.Tensor:
    return randn(*shape).requires_grad_()


def as_tuple(result: torch.Tensor | Tensors) -> Tensors:
    return result if isinstance(result, tuple) else (result,)


def holds_to_reference(model: str, sizes: dict[str, int], copies: Sequence[Copy],
                       reference: Callable[..., torch.Tensor | Tensors],
                       inputs: Sequence[Tensors]) -> None:
    """Compile `model` with `sizes`, copy the weights, and compare outputs and gradients."""
    module = ncd.load(GALLERY / f"{model}.ncd", sizes=sizes).to_torch().to(DTYPE)
    named = dict(module.named_parameters())
    assert sorted(named) == sorted(c.name for c in copies), "every parameter is copied"
    with torch.no_grad():
        for copy in copies:
            target = named[copy.name]
            value = copy.to_ncd(copy.source.detach())
            assert value.shape == target.shape, (copy.name, value.shape, target.shape)
            target.copy_(value)
    for arguments in inputs:
        mine = [a.clone().requires_grad_(a.is_floating_point()) for a in arguments]
        theirs = [a.clone().requires_grad_(a.is_floating_point()) for a in arguments]
        got, want = as_tuple(module(*mine)), as_tuple(reference(*theirs))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **TOLERANCE)
        cotangents = [randn(*w.shape) for w in want]
        module.zero_grad()
        for copy in copies:
            copy.source.grad = None
        sum((g * c).sum() for g, c in zip(got, cotangents, strict=True)).backward()
        sum((w * c).sum() for w, c in zip(want, cotangents, strict=True)).backward()
        for m, t in zip(mine, theirs, strict=True):
            if m.is_floating_point():  # integer inputs (labels, indices) have no gradient
                torch.testing.assert_close(m.grad, t.grad, **TOLERANCE)
        for copy in copies:
            assert copy.source.grad is not None, f"{copy.name}: the reference does not use it"
            torch.testing.assert_close(named[copy.name].grad, copy.to_ncd(copy.source.grad),
                                       **TOLERANCE, msg=f"gradient of {copy.name}")


def heads_in(weight: torch.Tensor, h: int) -> torch.Tensor:
    """`nn.Linear`'s weight (h k, n) as a map `linear[n -> h k]`: R[n, h, k]."""
    return weight.reshape(h, -1, weight.shape[-1]).permute(2, 0, 1)


def heads_out(weight: torch.Tensor, h: int) -> torch.Tensor:
    """`nn.Linear`'s weight (m, h k) as a map `linear[h k -> m]`: R[h, k, m]."""
    return weight.reshape(weight.shape[0], h, -1).permute(1, 2, 0)


def split_heads(X: torch.Tensor, h: int) -> torch.Tensor:
    """(..., x, h k) -> (..., h, x, k), as `F.scaled_dot_product_attention` wants it."""
    return X.unflatten(-1, (h, -1)).transpose(-3, -2)


def merge_heads(X: torch.Tensor) -> torch.Tensor:
    return X.transpose(-3, -2).flatten(-2)


# ---------------------------------------------------------------------------- GPT-2 block


def test_gpt2_block_is_a_gpt2_block() -> None:
    m, h, f = 8, 2, 32
    ln_1, ln_2 = (leaf(m), leaf(m)), (leaf(m), leaf(m))
    c_attn = (leaf(3 * m, m), leaf(3 * m))  # GPT-2's one projection to queries, keys, values
    c_proj = (leaf(m, m), leaf(m))
    c_fc, mlp_proj = (leaf(f, m), leaf(f)), (leaf(m, f), leaf(m))

    def gpt2_block(X: torch.Tensor) -> torch.Tensor:
        H = F.layer_norm(X, (m,), *ln_1)
        q, k, v = F.linear(H, *c_attn).split(m, dim=-1)
        A = F.scaled_dot_product_attention(split_heads(q, h), split_heads(k, h),
                                           split_heads(v, h), is_causal=True)
        X = X + F.linear(merge_heads(A), *c_proj)
        H = F.gelu(F.linear(F.layer_norm(X, (m,), *ln_2), *c_fc), approximate="tanh")
        return X + F.linear(H, *mlp_proj)

    def rows(t: torch.Tensor, part: int) -> torch.Tensor:
        return t[part * m:(part + 1) * m]

    attention = "causal_self_attention."
    copies = [Copy("g_1", ln_1[0]), Copy("b_1", ln_1[1]), Copy("g_2", ln_2[0]),
              Copy("b_2", ln_2[1]), Copy("mlp.W_fc", c_fc[0], lambda t: t.T),
              Copy("mlp.b_fc", c_fc[1]), Copy("mlp.W_proj", mlp_proj[0], lambda t: t.T),
              Copy("mlp.b_proj", mlp_proj[1]),
              Copy(attention + "W_o", c_proj[0], lambda t: heads_out(t, h)),
              Copy(attention + "b_o", c_proj[1])]
    for part, name in enumerate("qkv"):
        copies.append(Copy(f"{attention}W_{name}", c_attn[0],
                           lambda t, p=part: heads_in(rows(t, p), h)))
        copies.append(Copy(f"{attention}b_{name}", c_attn[1],
                           lambda t, p=part: rows(t, p).reshape(h, -1)))
    holds_to_reference("gpt2_block", {"m": m, "h": h}, copies, gpt2_block,
                       [(randn(2, 5, m),), (randn(1, 1, m),), (randn(7, m),)])


# ---------------------------------------------------------------------------------- MLP


def test_mlp_is_two_nn_linear_layers_whose_weights_load_as_stored() -> None:
    """The gallery declares the weights as `nn.Linear` stores them, `(out, in)`: its state dict
    loads with no transpose."""
    m, f, n = 6, 5, 4
    hidden, out = nn.Linear(m, f, dtype=DTYPE), nn.Linear(f, n, dtype=DTYPE)

    def reference(X: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out(F.gelu(hidden(X))), dim=-1)

    copies = [Copy("W_in", hidden.weight), Copy("b_in", hidden.bias),
              Copy("W_out", out.weight), Copy("b_out", out.bias)]
    holds_to_reference("mlp", {"m": m, "f": f, "n": n}, copies, reference,
                       [(randn(3, m),), (randn(2, 3, m),), (randn(1, m),)])


# ------------------------------------------------------------------------ MLP-Mixer block


@pytest.mark.parametrize("s", [4, 3])
def test_mlp_mixer_block_mixes_tokens_then_channels(s: int) -> None:
    c, ds, dc = 6, 5, 7
    norm_1, norm_2 = (leaf(c), leaf(c)), (leaf(c), leaf(c))
    token = [(leaf(ds, s), leaf(ds)), (leaf(s, ds), leaf(s))]
    channel = [(leaf(dc, c), leaf(dc)), (leaf(c, dc), leaf(c))]

    def mixer(X: torch.Tensor) -> torch.Tensor:
        U = F.layer_norm(X, (c,), *norm_1).transpose(-1, -2)  # (..., c, s)
        U = F.linear(F.gelu(F.linear(U, *token[0])), *token[1])
        X = X + U.transpose(-1, -2)
        U = F.linear(F.gelu(F.linear(F.layer_norm(X, (c,), *norm_2), *channel[0])), *channel[1])
        return X + U

    def transposed(t: torch.Tensor) -> torch.Tensor:
        return t.T

    copies = [Copy("g_1", norm_1[0]), Copy("b_1", norm_1[1]), Copy("g_2", norm_2[0]),
              Copy("b_2", norm_2[1])]
    for number, (weight, bias) in enumerate([*token, *channel], start=1):
        copies += [Copy(f"W_{number}", weight, transposed), Copy(f"b_w{number}", bias)]
    holds_to_reference("mlp_mixer", {"s": s, "c": c, "ds": ds, "dc": dc}, copies, mixer,
                       [(randn(2, s, c),), (randn(s, c),)])


# ------------------------------------------------------------------------ cross-attention


def test_cross_attention_is_multihead_attention_with_other_keys_and_values() -> None:
    m, n, h = 8, 6, 2
    attention = nn.MultiheadAttention(m, h, kdim=n, vdim=n, batch_first=True, dtype=DTYPE)
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        return attention(X, C, C, need_weights=False)[0]

    bias = attention.in_proj_bias
    assert bias is not None
    copies = [Copy("W_q", attention.q_proj_weight, lambda t: heads_in(t, h)),
              Copy("W_k", attention.k_proj_weight, lambda t: heads_in(t, h)),
              Copy("W_v", attention.v_proj_weight, lambda t: heads_in(t, h)),
              Copy("W_o", attention.out_proj.weight, lambda t: heads_out(t, h)),
              Copy("b_o", attention.out_proj.bias)]
    for part, name in enumerate("qkv"):
        copies.append(Copy(f"b_{name}", bias,
                           lambda t, p=part: t[p * m:(p + 1) * m].reshape(h, -1)))
    holds_to_reference("cross_attention", {"m": m, "n": n, "h": h}, copies, reference,
                       [(randn(2, 5, m), randn(2, 3, n)), (randn(1, 2, m), randn(1, 7, n))])


# ------------------------------------------------------------------ sliding-window attention


@pytest.mark.parametrize("window", [4, 2])
def test_sliding_window_attention_attends_to_a_band_of_w(window: int) -> None:
    m, h = 8, 2
    W_q, W_k, W_v, W_o = (leaf(m, m) for _ in range(4))

    def reference(X: torch.Tensor) -> torch.Tensor:
        position = torch.arange(X.shape[-2])
        query, key = position[:, None], position[None, :]
        band = (key <= query) & (query - key < window)
        heads = [split_heads(F.linear(X, W), h) for W in (W_q, W_k, W_v)]
        A = F.scaled_dot_product_attention(*heads, attn_mask=band)
        return F.linear(merge_heads(A), W_o)

    copies = [Copy(f"W_{name}", W, lambda t: heads_in(t, h))
              for name, W in zip("qkv", (W_q, W_k, W_v), strict=True)]
    copies.append(Copy("W_o", W_o, lambda t: heads_out(t, h)))
    holds_to_reference("sliding_window_attention", {"m": m, "h": h, "w": window}, copies,
                       reference, [(randn(2, 9, m),), (randn(1, 3, m),), (randn(6, m),)])


# ------------------------------------------------------------------------------------ GRU


def test_gru_by_scan_is_nn_gru() -> None:
    i, n = 3, 4
    gru = nn.GRU(i, n, dtype=DTYPE)
    with torch.no_grad():
        for parameter in gru.parameters():
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor, H0: torch.Tensor) -> Tensors:
        Y, last = gru(X, H0[None])
        return Y, last[0]

    def gates(t: torch.Tensor) -> torch.Tensor:  # rows r, z, n of (3 n, width): R[g, n, width]
        return t.reshape(3, n, -1)

    copies = [Copy("gru_cell.W_ih", gru.weight_ih_l0, gates),
              Copy("gru_cell.W_hh", gru.weight_hh_l0, gates),
              Copy("gru_cell.b_ih", gru.bias_ih_l0, lambda t: t.reshape(3, n)),
              Copy("gru_cell.b_hh", gru.bias_hh_l0, lambda t: t.reshape(3, n))]
    holds_to_reference("gru", {"i": i, "n": n}, copies, reference,
                       [(randn(5, 2, i), randn(2, n)), (randn(2, 3, i), randn(3, n)),
                        (randn(1, 1, i), randn(1, n))])


# --------------------------------------------------------------- depthwise-separable conv


def test_depthwise_separable_convolution_is_a_grouped_then_pointwise_conv2d() -> None:
    c, o = 3, 4
    depthwise, pointwise = nn.Conv2d(c, c, 3, groups=c, dtype=DTYPE), nn.Conv2d(c, o, 1,
                                                                                  dtype=DTYPE)
    with torch.no_grad():
        for parameter in [*depthwise.parameters(), *pointwise.parameters()]:
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor) -> torch.Tensor:
        return pointwise(depthwise(X))

    assert depthwise.bias is not None and pointwise.bias is not None
    copies = [Copy("K", depthwise.weight, lambda t: t[:, 0]), Copy("b_d", depthwise.bias),
              Copy("W_p", pointwise.weight, lambda t: t[:, :, 0, 0]),
              Copy("b_p", pointwise.bias)]
    holds_to_reference("depthwise_separable", {"c": c, "o": o}, copies, reference,
                       [(randn(2, c, 6, 7),), (randn(1, c, 3, 5),)])


# ---------------------------------------------------------------------------------- LeNet-5


def test_lenet5_is_lenet5() -> None:
    c1, c3, c5, f6, n = 2, 3, 4, 5, 3
    conv_1, conv_3 = (leaf(c1, 1, 5, 5), leaf(c1)), (leaf(c3, c1, 5, 5), leaf(c3))
    conv_5 = (leaf(c5, c3, 5, 5), leaf(c5))
    full_6, output = (leaf(f6, c5), leaf(f6)), (leaf(n, f6), leaf(n))

    def reference(X: torch.Tensor) -> torch.Tensor:
        A = F.avg_pool2d(torch.tanh(F.conv2d(X[:, None], *conv_1)), 2)
        A = F.avg_pool2d(torch.tanh(F.conv2d(A, *conv_3)), 2)
        A = torch.tanh(F.conv2d(A, *conv_5)).flatten(1)  # (b, 120, 1, 1) -> (b, 120)
        return F.linear(torch.tanh(F.linear(A, *full_6)), *output)

    copies = [Copy("W_c1", conv_1[0], lambda t: t[:, 0]), Copy("b_c1", conv_1[1]),
              Copy("W_c3", conv_3[0]), Copy("b_c3", conv_3[1]),
              Copy("W_c5", conv_5[0]), Copy("b_c5", conv_5[1]),
              Copy("W_f6", full_6[0], lambda t: t.T), Copy("b_f6", full_6[1]),
              Copy("W_out", output[0], lambda t: t.T), Copy("b_out", output[1])]
    holds_to_reference("lenet5", {"c1": c1, "c3": c3, "c5": c5, "f6": f6, "n": n}, copies,
                       reference, [(randn(2, 32, 32),), (randn(3, 32, 32),)])


# ----------------------------------- ResNet basic block and batch normalisation (stateful)
#
# `gallery/resnet_block.ncd` (He et al., 2016) and `gallery/batchnorm.ncd` (Ioffe and Szegedy,
# 2015) keep running statistics in buffers. They are held to PyTorch's `nn.BatchNorm1d/2d` in
# training mode (batch statistics; the running mean and unbiased variance move by momentum 0.1
# after every forward, as PyTorch's) and then in evaluation mode (the running statistics
# normalise and stay), outputs and gradients alike.


def holds_to_reference_in_both_modes(model: str, definition: str, sizes: dict[str, int],
                                     copies: Sequence[Copy], buffers: Sequence[Copy],
                                     reference: nn.Module, inputs: Sequence[Tensors]) -> None:
    """`holds_to_reference` for a definition with running statistics: `buffers` copies the
    reference's (random) running statistics in, and after every forward the module's buffers
    must equal the reference's, in training mode (both move) and in evaluation mode (both
    stay)."""
    module = ncd.load(GALLERY / f"{model}.ncd", sizes=sizes).to_torch(definition).to(DTYPE)
    named, held = dict(module.named_parameters()), dict(module.named_buffers())
    assert sorted(named) == sorted(c.name for c in copies), "every parameter is copied"
    assert sorted(held) == sorted(b.name for b in buffers), "every buffer is copied"
    with torch.no_grad():
        for copy, target in [*((c, named[c.name]) for c in copies),
                             *((b, held[b.name]) for b in buffers)]:
            value = copy.to_ncd(copy.source.detach())
            assert value.shape == target.shape, (copy.name, value.shape, target.shape)
            target.copy_(value)
    for training in (True, False):
        module.train(training)
        reference.train(training)
        for arguments in inputs:
            before = {name: buffer.clone() for name, buffer in held.items()}
            mine = [a.clone().requires_grad_() for a in arguments]
            theirs = [a.clone().requires_grad_() for a in arguments]
            got, want = as_tuple(module(*mine)), as_tuple(reference(*theirs))
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, **TOLERANCE)
            for buffer in buffers:
                torch.testing.assert_close(held[buffer.name], buffer.to_ncd(buffer.source),
                                           **TOLERANCE, msg=f"running statistic {buffer.name}")
                moved = not torch.equal(held[buffer.name], before[buffer.name])
                assert moved == training, (buffer.name, "training" if training else "eval")
            cotangents = [randn(*w.shape) for w in want]
            module.zero_grad()
            reference.zero_grad()
            sum((g * c).sum() for g, c in zip(got, cotangents, strict=True)).backward()
            sum((w * c).sum() for w, c in zip(want, cotangents, strict=True)).backward()
            for m, t in zip(mine, theirs, strict=True):
                torch.testing.assert_close(m.grad, t.grad, **TOLERANCE)
            for copy in copies:
                assert copy.source.grad is not None, f"{copy.name}: the reference does not use it"
                torch.testing.assert_close(named[copy.name].grad, copy.to_ncd(copy.source.grad),
                                           **TOLERANCE, msg=f"gradient of {copy.name}")


def randomised(norm: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """Random scale and shift, and random running statistics (positive variances)."""
    with torch.no_grad():
        norm.weight.copy_(randn(*norm.weight.shape))
        norm.bias.copy_(randn(*norm.bias.shape))
        if norm.running_mean is not None and norm.running_var is not None:
            norm.running_mean.copy_(randn(*norm.running_mean.shape))
            norm.running_var.copy_(torch.rand(norm.running_var.shape, dtype=DTYPE) + 0.5)
    return norm


def running(prefix: str, norm: nn.BatchNorm1d | nn.BatchNorm2d, mean: str,
            var: str) -> list[Copy]:
    assert norm.running_mean is not None and norm.running_var is not None
    return [Copy(prefix + mean, norm.running_mean), Copy(prefix + var, norm.running_var)]


class BasicBlock(nn.Module):
    """ResNet's basic block as torchvision writes it (stride 1, no downsampling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, dtype=DTYPE)
        self.bn1 = randomised(nn.BatchNorm2d(channels, dtype=DTYPE))
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, dtype=DTYPE)
        self.bn2 = randomised(nn.BatchNorm2d(channels, dtype=DTYPE))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(X)))
        return torch.relu(self.bn2(self.conv2(out)) + X)


def test_resnet_block_is_a_basic_block_in_training_and_in_evaluation() -> None:
    c = 3
    block = BasicBlock(c)
    assert block.bn1.running_mean is not None and block.bn2.running_mean is not None
    copies = [Copy("W_1", block.conv1.weight), Copy("W_2", block.conv2.weight),
              Copy("gamma_1", block.bn1.weight), Copy("beta_1", block.bn1.bias),
              Copy("gamma_2", block.bn2.weight), Copy("beta_2", block.bn2.bias)]
    buffers = [*running("", block.bn1, "mean_1", "var_1"),
               *running("", block.bn2, "mean_2", "var_2")]
    holds_to_reference_in_both_modes(
        "resnet_block", "resnet_block", {"c": c}, copies, buffers, block,
        [(randn(2, c, 5, 6),), (randn(3, c, 4, 4),), (randn(1, c, 3, 2),)])


def test_batchnorm_layer_is_linear_batchnorm1d_relu() -> None:
    i, n = 4, 3
    linear = nn.Linear(i, n, bias=False, dtype=DTYPE)
    norm = randomised(nn.BatchNorm1d(n, dtype=DTYPE))
    layer = nn.Sequential(linear, norm, nn.ReLU())
    copies = [Copy("W", linear.weight), Copy("gamma", norm.weight),  # W: (out, in) as nn.Linear
              Copy("beta", norm.bias)]
    holds_to_reference_in_both_modes(
        "batchnorm", "batchnorm_layer", {"i": i, "n": n}, copies,
        running("", norm, "running_mean", "running_var"), layer,
        [(randn(5, i),), (randn(2, i),), (randn(7, i),)])


def test_batch_normalizing_transform_is_batchnorm1d_on_batch_statistics() -> None:
    """Algorithm 1 normalises with the mini-batch's statistics in either mode: as
    `nn.BatchNorm1d` that keeps no running statistics."""
    n = 3
    norm = randomised(nn.BatchNorm1d(n, track_running_stats=False, dtype=DTYPE))
    copies = [Copy("gamma", norm.weight), Copy("beta", norm.bias)]
    holds_to_reference_in_both_modes(
        "batchnorm", "batch_normalizing_transform", {"n": n}, copies, [], norm,
        [(randn(5, n),), (randn(2, n),), (randn(9, n),)])


# ---------------------------------------------------------------------- mixture of experts


@pytest.mark.parametrize("e", [4, 3])
def test_moe_mixes_experts_with_their_own_weights_by_a_softmax_gate(e: int) -> None:
    m, h = 6, 5
    gate = nn.Linear(m, e, bias=False, dtype=DTYPE)
    experts = nn.ModuleList(
        nn.Sequential(nn.Linear(m, h, dtype=DTYPE), nn.ReLU(), nn.Linear(h, m, dtype=DTYPE))
        for _ in range(e))
    with torch.no_grad():
        for parameter in [*gate.parameters(), *experts.parameters()]:
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor) -> torch.Tensor:
        G = torch.softmax(gate(X), dim=-1)                          # (..., x, e)
        Z = torch.stack([expert(X) for expert in experts], dim=-2)  # (..., x, e, m)
        return (G.unsqueeze(-1) * Z).sum(dim=-2)

    # the gallery's gate and experts keep nn.Linear's (out, in) layout
    copies = [Copy("W_g", gate.weight)]
    for number, expert in enumerate(experts):
        first, _, second = expert  # type: ignore[misc]
        copies += [Copy(f"expert.{number}.W_1", first.weight),
                   Copy(f"expert.{number}.b_1", first.bias),
                   Copy(f"expert.{number}.W_2", second.weight),
                   Copy(f"expert.{number}.b_2", second.bias)]
    holds_to_reference("moe", {"m": m, "h": h, "e": e}, copies, reference,
                       [(randn(5, m),), (randn(2, 3, m),), (randn(1, m),)])


def test_moe_experts_differ_and_the_gate_weighs_them() -> None:
    """The experts are copies with weights of their own (not one shared layer), and a gate that
    puts all its weight on expert i gives expert i's output."""
    m, h, e = 4, 3, 3
    module = ncd.load(GALLERY / "moe.ncd", sizes={"m": m, "h": h, "e": e}).to_torch().to(DTYPE)
    named = dict(module.named_parameters())
    X = randn(5, m)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(randn(*parameter.shape))
        named["W_g"].zero_()
        uniform = module(X)
        outputs = []
        for i in range(e):
            # the experts' weights are (out, in), as nn.Linear's
            weights = torch.relu(X @ named[f"expert.{i}.W_1"].T + named[f"expert.{i}.b_1"])
            outputs.append(weights @ named[f"expert.{i}.W_2"].T + named[f"expert.{i}.b_2"])
        torch.testing.assert_close(uniform, sum(outputs) / e, **TOLERANCE)
        assert not torch.allclose(outputs[0], outputs[1])
        X_one = torch.zeros(1, m, dtype=DTYPE)
        X_one[0, 0] = 1.0
        # the gate's weight is (out, in): column 0 reads X_one, and picks expert 1
        named["W_g"][:, 0] = torch.tensor([0.0, 1e4, 0.0], dtype=DTYPE)
        picked = module(X_one)
        hidden = torch.relu(X_one @ named["expert.1.W_1"].T + named["expert.1.b_1"])
        torch.testing.assert_close(picked, hidden @ named["expert.1.W_2"].T + named["expert.1.b_2"],
                                   **TOLERANCE)


# ------------------------------------------------------------- classifier and cross-entropy


@pytest.mark.parametrize("n", [5, 2])
def test_classifier_loss_is_f_cross_entropy_of_the_pooled_logits(n: int) -> None:
    c = 4
    fc = nn.Linear(c, n, dtype=DTYPE)
    with torch.no_grad():
        for parameter in fc.parameters():
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        logits = fc(X.mean(dim=(-2, -1)))      # global average pooling, then the fc layer
        return F.cross_entropy(logits, T)       # reduction="mean"

    def labels(b: int) -> torch.Tensor:
        return torch.randint(n, (b,))

    copies = [Copy("head.W_fc", fc.weight, lambda t: t.T), Copy("head.b_fc", fc.bias)]
    holds_to_reference("classifier", {"c": c, "n": n}, copies, reference,
                       [(randn(3, c, 2, 5), labels(3)), (randn(1, c, 1, 1), labels(1)),
                        (randn(6, c, 3, 3), torch.arange(6) % n)])


def test_classifier_refuses_a_label_outside_the_classes() -> None:
    module = ncd.load(GALLERY / "classifier.ncd", sizes={"c": 2, "n": 3}).to_torch()
    with pytest.raises(ValueError, match=r"line \d+: an index array holds a value outside axis n"):
        module(torch.randn(2, 2, 1, 1), torch.tensor([0, 3]))


# ------------------------------------------------------------------------------ Llama block


def rotary_reference(t: torch.Tensor) -> torch.Tensor:
    """RoPE as Llama's code applies it, in real arithmetic: on (..., x, k), the pair (2j, 2j + 1)
    of position x turned by the angle x 10000^(-2j / k)."""
    positions = torch.arange(t.shape[-2], dtype=DTYPE)
    width = t.shape[-1]
    frequencies = 10000.0 ** (-torch.arange(0, width, 2, dtype=DTYPE) / width)
    angle = positions[:, None] * frequencies[None, :]  # (x, k / 2)
    cos, sin = angle.cos(), angle.sin()
    a, b = t[..., 0::2], t[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


@pytest.mark.parametrize(("h", "g"), [(4, 2), (4, 1), (2, 2)])
def test_llama_block_is_a_llama_block(h: int, g: int) -> None:
    m, f = 16, 12
    r, k = h // g, m // h
    attention_norm, ffn_norm = leaf(m), leaf(m)
    wq, wk, wv, wo = leaf(h * k, m), leaf(g * k, m), leaf(g * k, m), leaf(m, h * k)
    w1, w2, w3 = leaf(f, m), leaf(m, f), leaf(f, m)  # Llama's names: gate, down, up

    def attention(X: torch.Tensor) -> torch.Tensor:
        q = rotary_reference(split_heads(F.linear(X, wq), h))
        key = rotary_reference(split_heads(F.linear(X, wk), g))
        value = split_heads(F.linear(X, wv), g)
        # each key-value head serves r consecutive query heads (Llama's repeat_kv)
        key, value = key.repeat_interleave(r, dim=-3), value.repeat_interleave(r, dim=-3)
        A = F.scaled_dot_product_attention(q, key, value, is_causal=True)
        return F.linear(merge_heads(A), wo)

    def llama_block(X: torch.Tensor) -> torch.Tensor:
        H = X + attention(F.rms_norm(X, (m,), attention_norm, eps=1e-5))
        Z = F.rms_norm(H, (m,), ffn_norm, eps=1e-5)
        return H + F.linear(F.silu(F.linear(Z, w1)) * F.linear(Z, w3), w2)

    copies = [Copy("w_attn", attention_norm), Copy("w_ffn", ffn_norm),
              # the rows of a query head: pairs (j, p) of entries 2j + p
              Copy("attention.W_q", wq, lambda t: t.reshape(g, r, k // 2, 2, m)
                   .permute(4, 0, 1, 2, 3)),
              Copy("attention.W_k", wk, lambda t: t.reshape(g, k // 2, 2, m)
                   .permute(3, 0, 1, 2)),
              Copy("attention.W_v", wv, lambda t: heads_in(t, g)),
              Copy("attention.W_o", wo, lambda t: t.reshape(m, g, r, k).permute(1, 2, 3, 0)),
              # the standard library's SwiGLU keeps nn.Linear's (out, in) layout
              Copy("swiglu.W_gate", w1), Copy("swiglu.W_down", w2), Copy("swiglu.W_up", w3)]
    holds_to_reference("llama_block", {"m": m, "h": h, "g": g, "f": f}, copies, llama_block,
                       [(randn(2, 9, m),), (randn(1, 1, m),), (randn(5, m),)])


# ------------------------------------------------- sequences and graphs: LRU, graph convolution
# (gallery/lru.ncd and gallery/graph_conv.ncd)


def lru_by_a_loop(X: torch.Tensor, nu_log: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor) -> torch.Tensor:
    """The LRU written as its recurrence, a step at a time: X is (..., t, m); B and C are
    `nn.Linear` weights (n, m) and (m, n)."""
    lam = torch.exp(-torch.exp(nu_log))
    gamma = torch.sqrt(1 - lam ** 2)
    h = X.new_zeros(*X.shape[:-2], nu_log.shape[0])
    states = []
    for step in range(X.shape[-2]):
        h = lam * h + gamma * F.linear(X[..., step, :], B)
        states.append(h)
    return F.linear(torch.stack(states, dim=-2), C) + D * X


def lru_by_powers(X: torch.Tensor, nu_log: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor) -> torch.Tensor:
    """The same in closed form: h_t = sum over s <= t of λ^(t - s) γ B x_s, the powers of λ
    taken as cumulative products."""
    lam = torch.exp(-torch.exp(nu_log))
    steps = X.shape[-2]
    powers = torch.cumprod(torch.cat([torch.ones_like(lam)[None], lam.expand(steps - 1, -1)]),
                           dim=0)  # (t, n): λ^0, λ^1, ...
    lag = torch.arange(steps)[:, None] - torch.arange(steps)[None, :]
    kernel = torch.where((lag >= 0)[..., None], powers[lag.clamp(min=0)], 0.0)  # (t, s, n)
    U = torch.sqrt(1 - lam ** 2) * F.linear(X, B)
    H = torch.einsum("tsn,...sn->...tn", kernel, U)
    return F.linear(H, C) + D * X


@pytest.mark.parametrize("reference", [lru_by_a_loop, lru_by_powers])
def test_lru_is_the_linear_recurrent_unit(reference: Callable[..., torch.Tensor]) -> None:
    m, n = 3, 4
    nu_log, B, C, D = leaf(n), leaf(n, m), leaf(m, n), leaf(m)
    copies = [Copy("lru_step.nu_log", nu_log), Copy("W_B", B, lambda t: t.T),
              Copy("W_C", C, lambda t: t.T), Copy("D", D)]
    holds_to_reference("lru", {"m": m, "n": n}, copies,
                       lambda X: reference(X, nu_log, B, C, D),
                       [(randn(6, m),), (randn(2, 5, m),), (randn(1, m),)])


def test_lru_starts_from_a_zero_buffer_in_either_mode() -> None:
    module = ncd.load(GALLERY / "lru.ncd", sizes={"m": 3, "n": 4}).to_torch().to(DTYPE)
    assert "H0" in dict(module.named_buffers())
    assert "H0" not in dict(module.named_parameters())
    torch.testing.assert_close(module.state_dict()["H0"], torch.zeros(4, dtype=DTYPE))
    X = randn(2, 5, 3)
    named = dict(module.named_parameters())
    want = lru_by_a_loop(X, named["lru_step.nu_log"], named["W_B"].T, named["W_C"].T,
                         named["D"])
    for train in (True, False):  # no dropout, no running statistics: the modes agree
        module.train(train)
        torch.testing.assert_close(module(X), want, **TOLERANCE)
        torch.testing.assert_close(module.state_dict()["H0"], torch.zeros(4, dtype=DTYPE))


def test_the_lru_decay_lies_between_0_9_and_0_999_at_the_start() -> None:
    module = ncd.load(GALLERY / "lru.ncd").to_torch()
    lam = torch.exp(-torch.exp(dict(module.named_parameters())["lru_step.nu_log"]))
    assert lam.shape == (256,)
    assert bool(((lam > 0.9) & (lam < 0.999)).all())


Graph = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # node features, sources, destinations


def random_graph(nodes: int, edges: int, f: int) -> Graph:
    return (randn(nodes, f), torch.randint(0, nodes, (edges,)),
            torch.randint(0, nodes, (edges,)))


def test_graph_conv_is_gcn_conv() -> None:
    """Against PyG's `GCNConv` written with `index_select` and `index_add_`: self-loops
    appended to the edge list, degrees counted at the destinations, both sides normalised."""
    f, g = 3, 4
    lin = nn.Linear(f, g, bias=False, dtype=DTYPE)
    bias = leaf(g)

    def gcn_conv(X: torch.Tensor, Src: torch.Tensor, Dst: torch.Tensor) -> torch.Tensor:
        nodes = X.shape[0]
        loops = torch.arange(nodes)
        row, col = torch.cat([Src, loops]), torch.cat([Dst, loops])
        degree = torch.zeros(nodes, dtype=DTYPE).index_add_(0, col,
                                                            torch.ones(len(col), dtype=DTYPE))
        scale = degree.pow(-0.5)
        norm = scale.index_select(0, row) * scale.index_select(0, col)
        messages = lin(X).index_select(0, row) * norm[:, None]
        out = torch.zeros(nodes, g, dtype=DTYPE).index_add_(0, col, messages)
        return torch.relu(out + bias)

    copies = [Copy("W", lin.weight), Copy("b", bias)]  # declared (out, in): as stored
    # an isolated node, repeated edges and self-loops among the edges of the random graphs
    path = (randn(4, f), torch.tensor([0, 1, 1, 2, 2]), torch.tensor([1, 0, 2, 1, 2]))
    holds_to_reference("graph_conv", {"f": f, "g": g}, copies, gcn_conv,
                       [random_graph(5, 9, f), random_graph(7, 3, f), random_graph(3, 12, f),
                        path])


# ------------------------------------------------------------------ U-Net level (vision)


@pytest.mark.parametrize(("i", "c", "d"), [(2, 3, 4), (1, 2, 3)])
def test_unet_level_is_down_pool_lower_upsample_concatenate_up(i: int, c: int, d: int) -> None:
    def conv(out: int, into: int) -> tuple[torch.Tensor, torch.Tensor]:
        return leaf(out, into, 3, 3), leaf(out)

    layers = {"down": (conv(c, i), conv(c, c)), "lower": (conv(d, c), conv(d, d)),
              "up": (conv(c, c + d), conv(c, c))}

    def double_conv(X: torch.Tensor, name: str) -> torch.Tensor:
        for weight, bias in layers[name]:
            X = F.relu(F.conv2d(X, weight, bias, padding=1))
        return X

    def reference(X: torch.Tensor) -> torch.Tensor:
        D = double_conv(X, "down")
        L = double_conv(F.max_pool2d(D, 2), "lower")
        U = F.interpolate(L, scale_factor=2, mode="nearest")
        return double_conv(torch.cat([D, U], dim=1), "up")

    copies = [Copy(f"{name}.{kind}_{number}", tensor)
              for name, pair in layers.items()
              for number, (weight, bias) in enumerate(pair, start=1)
              for kind, tensor in (("W", weight), ("b", bias))]
    holds_to_reference("unet_level", {"i": i, "c": c, "d": d}, copies, reference,
                       [(randn(2, i, 6, 8),), (randn(1, i, 4, 2),), (randn(3, i, 2, 2),)])


def test_unet_level_refuses_an_image_it_cannot_halve() -> None:
    module = ncd.load(GALLERY / "unet_level.ncd", sizes={"i": 1, "c": 2, "d": 2}).to_torch()
    assert module(torch.randn(1, 1, 4, 6)).shape == (1, 2, 4, 6)
    with pytest.raises(ValueError, match=r"input X: axis y has 5 entries, but its size is "
                       r"2\*yh for a whole yh >= 1"):
        module(torch.randn(1, 1, 5, 4))


# ------------------------------------------------------------------ Vision Transformer


@pytest.mark.parametrize(("c", "p", "u", "v"), [(3, 2, 4, 6), (2, 3, 3, 6), (1, 2, 2, 2)])
def test_vit_embeds_patches_then_runs_a_pre_norm_encoder_layer(c: int, p: int, u: int,
                                                               v: int) -> None:
    m, h = 8, 2
    x = (u // p) * (v // p) + 1
    patch = (leaf(m, c, p, p), leaf(m))          # nn.Conv2d(c, m, p, stride=p)
    class_token, position = leaf(1, 1, m), leaf(1, x, m)   # as torchvision's ViT holds them
    norm_1, norm_2 = (leaf(m), leaf(m)), (leaf(m), leaf(m))
    attention = nn.MultiheadAttention(m, h, batch_first=True, dtype=DTYPE)
    mlp = (leaf(4 * m, m), leaf(4 * m)), (leaf(m, 4 * m), leaf(m))
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor) -> torch.Tensor:
        batch = X.shape[:-3]
        E = F.conv2d(X, *patch, stride=p)                  # (..., m, u / p, v / p)
        T = E.flatten(-2).transpose(-1, -2)                # the grid row by row: (..., n, m)
        Z = torch.cat([class_token.reshape(1, m).expand(*batch, 1, m), T], dim=-2)
        Z = Z + position.reshape(x, m)
        H = F.layer_norm(Z, (m,), *norm_1, eps=1e-6)
        Z = Z + attention(H, H, H, need_weights=False)[0]
        H = F.layer_norm(Z, (m,), *norm_2, eps=1e-6)
        return Z + F.linear(F.gelu(F.linear(H, *mlp[0])), *mlp[1])

    bias = attention.in_proj_bias
    assert bias is not None
    layer, msa, ff = "encoder_layer.", "encoder_layer.attention.", "encoder_layer.feedforward."
    copies = [Copy("patch_embedding.W_e", patch[0]), Copy("patch_embedding.b_e", patch[1]),
              Copy("patch_embedding.cls", class_token, lambda t: t.reshape(1, m)),
              Copy("patch_embedding.pos", position, lambda t: t.reshape(x, m)),
              Copy(layer + "g_1", norm_1[0]), Copy(layer + "b_1", norm_1[1]),
              Copy(layer + "g_2", norm_2[0]), Copy(layer + "b_2", norm_2[1]),
              # the standard library's attention keeps nn.MultiheadAttention's layout
              Copy(msa + "W_qkv", attention.in_proj_weight, lambda t: t.view(3, h, -1, m)),
              Copy(msa + "b_qkv", bias, lambda t: t.view(3, h, -1)),
              Copy(msa + "W_o", attention.out_proj.weight, lambda t: t.view(m, h, -1)),
              Copy(msa + "b_o", attention.out_proj.bias),
              # the standard library's feed-forward keeps nn.Linear's (out, in) layout
              Copy(ff + "W_in", mlp[0][0]), Copy(ff + "b_in", mlp[0][1]),
              Copy(ff + "W_out", mlp[1][0]), Copy(ff + "b_out", mlp[1][1])]
    holds_to_reference("vit", {"c": c, "p": p, "u": u, "v": v, "m": m, "h": h}, copies,
                       reference, [(randn(2, c, u, v),), (randn(1, c, u, v),), (randn(c, u, v),)])


# -------------------------------------------------------------------- dense machine


def test_dense_machine_is_a_loop_over_its_blocks() -> None:
    """Block i of X is block i of Y + tanh(S W + c), S the blocks before it (zero after)."""
    n, blocks = 12, ((0, 4), (4, 8), (8, 12))
    weight, bias = leaf(n, n), leaf(n)

    def machine(Y: torch.Tensor) -> torch.Tensor:
        state = torch.zeros_like(Y)
        for start, stop in blocks:
            solved = Y + torch.tanh(state @ weight + bias)
            state = torch.cat([state[..., :start], solved[..., start:stop],
                               state[..., stop:]], dim=-1)
        return state

    holds_to_reference("dense_machine", {}, [Copy("layer.W", weight), Copy("layer.c", bias)],
                       machine, [(randn(3, n),), (randn(n),)])


# ------------------------------------------------------------- against the interpreter

INTERPRETER_SIZES = {
    "gpt2_block": {"m": 4, "h": 2},
    "mlp_mixer": {"s": 3, "c": 4, "ds": 2, "dc": 5},
    "cross_attention": {"m": 4, "n": 3, "h": 2},
    "sliding_window_attention": {"m": 4, "h": 2},
    "llama_block": {"m": 8, "h": 2, "g": 1, "f": 2},  # two query heads share a key-value head
    "gru": {"i": 2, "n": 3},
    "depthwise_separable": {"c": 2, "o": 3},
    # LeNet-5 with 2 × 2 windows on an 11 × 11 image: the same layers, far less work
    "lenet5": {"c1": 1, "c3": 2, "c5": 2, "f6": 2, "n": 2, "x": 11, "y": 11, "u": 2, "v": 2},
    # ResNet's basic block: two channels, a 3 × 2 image; batch normalisation: 3 inputs, 2 units
    "resnet_block": {"c": 2, "y": 3, "x": 2},
    "batchnorm": {"i": 3, "n": 2},
    "moe": {"m": 2, "h": 3, "e": 2},
    "classifier": {"c": 2, "n": 3},
    "lru": {"m": 2, "n": 3},
    "graph_conv": {"f": 2, "g": 3},
    "unet_level": {"i": 1, "c": 1, "d": 1, "xh": 1},  # the height stays symbolic
    "vit": {"c": 1, "p": 2, "u": 2, "v": 4, "m": 4, "h": 2},
    "iris": {"f": 5},  # the perceptron of gallery/iris.ncd (its training set-up: test_training)
    "boolean_circuit": {},  # gates and Boolean parameters (learning them: test_boolean)
    "dense_machine": {},  # its blocks fix n = 12
}


@pytest.mark.parametrize("model", sorted(INTERPRETER_SIZES))
def test_gallery_model_agrees_with_the_interpreter(model: str) -> None:
    program = ncd.load(GALLERY / f"{model}.ncd", sizes=INTERPRETER_SIZES[model]).ir
    for definition in program.definitions:
        report = compare_definition(program, definition.name, sizes=2)
        assert report.skipped is None and report.compared >= 1, (definition.name, report)
        assert not report.findings, "\n".join(map(str, report.findings))


def test_every_gallery_model_is_held_to_the_interpreter() -> None:
    """The models above and the first five (tests/test_semantics.py) are the whole gallery."""
    assert not set(INTERPRETER_SIZES) & set(GALLERY_SIZES)
    assert set(INTERPRETER_SIZES) | set(GALLERY_SIZES) == {p.stem for p in GALLERY.glob("*.ncd")}
