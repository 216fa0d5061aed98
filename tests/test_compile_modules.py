"""Compiled ncd definitions compute what PyTorch's own modules compute.

Each test writes the layer in ncd, copies the PyTorch module's weights into the generated
module (reshaped to the axes the source declares), and compares outputs on random inputs of
several sizes with `torch.testing.assert_close` at 1e-5. Parameter counts must be equal.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.elaborate import INITIALISERS

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def build(source: str, definition: str, sizes: dict[str, int] | None = None) -> nn.Module:
    return ncd.load(textwrap.dedent(source), sizes).to_torch(definition)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy weights in by state_dict key; every key of the module must be given."""
    state = module.state_dict()
    assert sorted(state) == sorted(weights)
    for key, value in weights.items():
        assert state[key].shape == value.shape, key
    module.load_state_dict({k: v.detach().clone() for k, v in weights.items()})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- dense layers


LINEAR = """
axis b
axis m = 12, n = 7
def dense(X: R[b, m]) -> R[b, n] { return linear[m -> n, bias](X, W, c) }
def dense_nobias(X: R[b, m]) -> R[b, n] { return linear[m -> n](X, W) }
"""


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_nn_linear(bias: bool) -> None:
    reference = nn.Linear(12, 7, bias=bias)
    module = build(LINEAR, "dense" if bias else "dense_nobias")
    weights = {"W": reference.weight.T}
    if bias:
        weights["c"] = reference.bias
    load_weights(module, weights)
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 3, 10):
        X = torch.randn(batch, 12)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)
    # Leading dims are a batch lift: the same layer runs on every index of them.
    X = torch.randn(2, 5, 3, 12)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


def test_linear_default_initialisation_follows_nn_linear() -> None:
    module = build(LINEAR, "dense")
    bound = 12 ** -0.5
    assert module.W.abs().max() <= bound and module.c.abs().max() <= bound
    assert module.W.std() > bound / 4  # not all zeros: uniform on (-bound, bound)


def test_embedding_matches_nn_embedding() -> None:
    source = """
    axis x
    axis v = 30, m = 8
    def embed(T: N[v][x]) -> R[x, m] { return embedding[v -> m](T, E) }
    """
    reference = nn.Embedding(30, 8)
    module = build(source, "embed")
    load_weights(module, {"E": reference.weight})
    assert parameter_count(module) == parameter_count(reference)
    for length in (1, 5, 17):
        T = torch.randint(0, 30, (length,))
        torch.testing.assert_close(module(T), reference(T), **TOLERANCE)
    T = torch.randint(0, 30, (4, 6))
    torch.testing.assert_close(module(T), reference(T), **TOLERANCE)


# ----------------------------------------------------------------------------- norms


def test_layernorm_matches_nn_layernorm() -> None:
    source = """
    axis b
    axis m = 16
    def norm(X: R[b, m]) -> R[b, m] { return layernorm[m](X, g, beta) }
    """
    reference = nn.LayerNorm(16)
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    module = build(source, "norm")
    load_weights(module, {"g": reference.weight, "beta": reference.bias})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 4, 9):
        X = torch.randn(batch, 16) * 3 + 1
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


def test_layernorm_over_two_axes_not_last_in_memory() -> None:
    """Target axes that are not the trailing dims are moved there and back."""
    source = """
    axis b
    axis h = 3, k = 4
    def norm(X: R[h, b, k]) -> R[h, b, k] { return layernorm[h, k](X, g, beta) }
    """
    reference = nn.LayerNorm((3, 4))
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    module = build(source, "norm")
    load_weights(module, {"g": reference.weight, "beta": reference.bias})
    X = torch.randn(3, 5, 4)
    expected = reference(X.permute(1, 0, 2)).permute(1, 0, 2)
    torch.testing.assert_close(module(X), expected, **TOLERANCE)


def test_rmsnorm_matches_nn_rmsnorm() -> None:
    source = """
    axis b
    axis m = 16
    def norm(X: R[b, m]) -> R[b, m] { return rmsnorm[m, eps=0.00001](X, g) }
    """
    reference = nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        reference.weight.normal_()
    module = build(source, "norm")
    load_weights(module, {"g": reference.weight})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 4, 9):
        X = torch.randn(batch, 16)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


# ----------------------------------------------------------------------------- convolutions


CONV1D = """
axis b
axis x = {x}
axis c = 6, o = 4, w = 3
axis p = (x - 2 * (w - 1) - 1) // 2 + 1
def conv(X: R[b, c, x]) -> R[b, o, p] {{
    param W: R[o, c, w]
    P[b, c, p, w] = X[b, c, 2*p + 2*w]
    Y[b, o, p] = sum(c, w) P[b, c, p, w] * W[o, c, w]
    return Y
}}
"""


@pytest.mark.parametrize("length", [9, 12, 20])
def test_conv1d_stride_and_dilation_match_nn_conv1d(length: int) -> None:
    reference = nn.Conv1d(6, 4, 3, stride=2, dilation=2, bias=False)
    module = build(CONV1D.format(x=length), "conv")
    load_weights(module, {"W": reference.weight})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 3):
        X = torch.randn(batch, 6, length)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


def test_conv1d_written_in_one_equation() -> None:
    """`Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w]`: the window read inside the
    contraction."""
    source = """
    axis b
    axis x = 12, c = 3, o = 4, w = 3
    axis p = (x - w) // 2 + 1
    def conv(X: R[b, c, x]) -> R[b, o, p] {
        param W: R[o, c, w]
        Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w]
        return Y
    }
    """
    reference = nn.Conv1d(3, 4, 3, stride=2, bias=False)
    module = build(source, "conv")
    load_weights(module, {"W": reference.weight})
    X = torch.randn(5, 3, 12)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


CONV1D_PADDED = """
axis b
axis x = {x}
axis c = 6, o = 4, w = 3
axis xp = x + 2
axis p = xp - w + 1
def conv(X: R[b, c, x]) -> R[b, o, p] {{
    param W: R[o, c, w]
    Z[b, c, q] = X[b, c, {x}*q] * 0.0
    Xp = concat[q x q -> xp](Z, X, Z)
    P[b, c, p, w] = Xp[b, c, p + w]
    return linear[c w -> o, bias](P, W, B)
}}
"""


def test_conv1d_with_padding_and_bias_matches_nn_conv1d() -> None:
    """Zero padding by one on each side is a concatenation with a zero column (a stride of
    |x| reads a single column); a convolution with bias is a linear map over (c, w)."""
    reference = nn.Conv1d(6, 4, 3, padding=1, bias=True)
    module = build(CONV1D_PADDED.format(x=10), "conv")
    load_weights(module, {"W": reference.weight, "B": reference.bias})
    assert parameter_count(module) == parameter_count(reference)
    X = torch.randn(2, 6, 10)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


CONV1D_GROUPS = """
axis b
axis x = 11
axis g = 3, cg = 2, og = 4, w = 3, c = g * cg, o = g * og
axis p = x - w + 1
def conv(X: R[b, c, x]) -> R[b, o, p] {
    param W: R[g, og, cg, w]
    Xg = reshape[c -> g cg](X)
    P[b, g, cg, p, w] = Xg[b, g, cg, p + w]
    Y[b, g, og, p] = sum(cg, w) P[b, g, cg, p, w] * W[g, og, cg, w]
    return reshape[g og -> o](Y)
}
"""


def test_grouped_conv1d_matches_nn_conv1d() -> None:
    reference = nn.Conv1d(6, 12, 3, groups=3, bias=False)
    module = build(CONV1D_GROUPS, "conv")
    load_weights(module, {"W": reference.weight.reshape(3, 4, 2, 3)})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 4):
        X = torch.randn(batch, 6, 11)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


CONV2D = """
axis b
axis y = {height}, x = {width}
axis c = 3, o = 5, u = 3, v = 2
axis p = (y - 2 * (u - 1) - 1) // 2 + 1
axis q = (x - v) // 3 + 1
def conv(X: R[b, c, y, x]) -> R[b, o, p, q] {{
    param W: R[o, c, u, v]
    P[b, c, p, q, u, v] = X[b, c, 2*p + 2*u, 3*q + v]
    return linear[c u v -> o, bias](P, W, B)
}}
"""


@pytest.mark.parametrize(("height", "width"), [(9, 8), (12, 14)])
def test_conv2d_stride_dilation_matches_nn_conv2d(height: int, width: int) -> None:
    reference = nn.Conv2d(3, 5, (3, 2), stride=(2, 3), dilation=(2, 1))
    module = build(CONV2D.format(height=height, width=width), "conv")
    load_weights(module, {"W": reference.weight, "B": reference.bias})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 2):
        X = torch.randn(batch, 3, height, width)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


CONV2D_PADDED_GROUPS = """
axis b
axis y = 6, x = 7
axis g = 2, cg = 2, og = 3, u = 3, v = 3, c = g * cg, o = g * og
axis yp = y + 2, xp = x + 2, p = yp - u + 1, q = xp - v + 1
def conv(X: R[b, c, y, x]) -> R[b, o, p, q] {
    param W: R[g, og, cg, u, v]
    Zy[b, c, s, x] = X[b, c, 6*s, x] * 0.0
    Xy = concat[s y s -> yp](Zy, X, Zy)
    Zx[b, c, yp, t] = Xy[b, c, yp, 7*t] * 0.0
    Xp = concat[t x t -> xp](Zx, Xy, Zx)
    Xg = reshape[c -> g cg](Xp)
    P[b, g, cg, p, q, u, v] = Xg[b, g, cg, p + u, q + v]
    Y[b, g, og, p, q] = sum(cg, u, v) P[b, g, cg, p, q, u, v] * W[g, og, cg, u, v]
    return reshape[g og -> o](Y)
}
"""


def test_conv2d_with_padding_and_groups_matches_nn_conv2d() -> None:
    reference = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
    module = build(CONV2D_PADDED_GROUPS, "conv")
    load_weights(module, {"W": reference.weight.reshape(2, 3, 2, 3, 3)})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 3):
        X = torch.randn(batch, 4, 6, 7)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


DEPTHWISE = """
axis b
axis y = 7, x = 6
axis c = 4, u = 3, v = 3
axis p = y - u + 1, q = x - v + 1
def depthwise(X: R[b, c, y, x]) -> R[b, c, p, q] {
    param W: R[c, u, v]
    P[b, c, p, q, u, v] = X[b, c, p + u, q + v]
    Y[b, c, p, q] = sum(u, v) P[b, c, p, q, u, v] * W[c, u, v]
    return Y
}
"""


def test_depthwise_conv2d_matches_nn_conv2d() -> None:
    reference = nn.Conv2d(4, 4, 3, groups=4, bias=False)
    module = build(DEPTHWISE, "depthwise")
    load_weights(module, {"W": reference.weight[:, 0]})
    assert parameter_count(module) == parameter_count(reference)
    for batch in (1, 3):
        X = torch.randn(batch, 4, 7, 6)
        torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


POOL = """
axis b
axis y = {height}, x = {width}
axis c = 3, u = 2, v = 2
axis p = (y - u) // 2 + 1, q = (x - v) // 2 + 1
def pool(X: R[b, c, y, x]) -> R[b, c, p, q] {{
    P[b, c, p, q, u, v] = X[b, c, 2*p + u, 2*q + v]
    return {function}[u, v](P)
}}
"""


@pytest.mark.parametrize(("function", "reference"),
                         [("max", nn.MaxPool2d(2)), ("mean", nn.AvgPool2d(2))])
@pytest.mark.parametrize(("height", "width"), [(8, 8), (9, 6)])
def test_pooling_matches_nn_pooling(function: str, reference: nn.Module, height: int,
                                    width: int) -> None:
    module = build(POOL.format(function=function, height=height, width=width), "pool")
    assert parameter_count(module) == 0
    X = torch.randn(2, 3, height, width)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


# ----------------------------------------------------------------------------- attention


MHA = """
axis x
axis m = 16, h = 4, k = m / h
def mha(X: R[x, m]) -> R[x, m] {
    Q = linear[m -> h k, bias](X, W_q, b_q)
    K = linear[m -> h k, bias](X, W_k, b_k)
    V = linear[m -> h k, bias](X, W_v, b_v)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)
    A = softmax[y](S)
    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]
    return linear[h k -> m, bias](O, W_o, b_o)
}
"""


def attention_weights(reference: nn.MultiheadAttention, heads: int) -> dict[str, torch.Tensor]:
    width = reference.embed_dim
    head = width // heads
    weight_q, weight_k, weight_v = reference.in_proj_weight.chunk(3)
    bias_q, bias_k, bias_v = reference.in_proj_bias.chunk(3)
    return {
        "W_q": weight_q.T.reshape(width, heads, head), "b_q": bias_q.reshape(heads, head),
        "W_k": weight_k.T.reshape(width, heads, head), "b_k": bias_k.reshape(heads, head),
        "W_v": weight_v.T.reshape(width, heads, head), "b_v": bias_v.reshape(heads, head),
        "W_o": reference.out_proj.weight.T.reshape(heads, head, width),
        "b_o": reference.out_proj.bias,
    }


def test_self_attention_matches_nn_multiheadattention() -> None:
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        reference.in_proj_bias.normal_()
        reference.out_proj.bias.normal_()
    module = build(MHA, "mha")
    load_weights(module, attention_weights(reference, 4))
    assert parameter_count(module) == parameter_count(reference)
    for length in (1, 5, 12):
        X = torch.randn(3, length, 16)  # a batch lift over the leading dim
        expected, _ = reference(X, X, X, need_weights=False)
        torch.testing.assert_close(module(X), expected, **TOLERANCE)


def test_causal_attention_matches_scaled_dot_product_attention() -> None:
    source = """
    axis x
    axis h = 2, k = 8
    def sdpa(Q: R[h, x, k], K: R[h, x, k], V: R[h, x, k]) -> R[h, x, k] {
        S[h, x, y] = sum(k) Q[h, x, k] * K[h, y, k] / sqrt(k)
        A = softmax[y](causal[x, y](S))
        O[h, x, k] = sum(y) A[h, x, y] * V[h, y, k]
        return O
    }
    """
    module = build(source, "sdpa")
    for length in (1, 4, 11):
        Q, K, V = (torch.randn(3, 2, length, 8) for _ in range(3))
        expected = F.scaled_dot_product_attention(Q, K, V, is_causal=True)
        torch.testing.assert_close(module(Q, K, V), expected, **TOLERANCE)


ENCODER_LAYER = """
axis x
axis m = 16, h = 4, k = m / h, f = 24
def attention(X: R[x, m]) -> R[x, m] {
    Q = linear[m -> h k, bias](X, W_q, b_q)
    K = linear[m -> h k, bias](X, W_k, b_k)
    V = linear[m -> h k, bias](X, W_v, b_v)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)
    A = softmax[y](S)
    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]
    return linear[h k -> m, bias](O, W_o, b_o)
}
def feedforward(X: R[x, m]) -> R[x, m] {
    H = relu(linear[m -> f, bias](X, W_1, b_1))
    return linear[f -> m, bias](H, W_2, b_2)
}
def post_norm(X: R[x, m]) -> R[x, m] {
    X = layernorm[m](X + attention(X), g_1, n_1)
    return layernorm[m](X + feedforward(X), g_2, n_2)
}
def pre_norm(X: R[x, m]) -> R[x, m] {
    X = X + attention(layernorm[m](X, g_1, n_1))
    return X + feedforward(layernorm[m](X, g_2, n_2))
}
"""


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_nn_transformerencoderlayer(norm_first: bool) -> None:
    reference = nn.TransformerEncoderLayer(16, 4, dim_feedforward=24, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
    with torch.no_grad():
        for parameter in (reference.norm1.weight, reference.norm1.bias, reference.norm2.weight,
                          reference.norm2.bias, reference.self_attn.in_proj_bias):
            parameter.normal_()
    reference.eval()
    module = build(ENCODER_LAYER, "pre_norm" if norm_first else "post_norm")
    weights = {f"attention.{k}": v for k, v in attention_weights(reference.self_attn, 4).items()}
    weights.update({
        "feedforward.W_1": reference.linear1.weight.T, "feedforward.b_1": reference.linear1.bias,
        "feedforward.W_2": reference.linear2.weight.T, "feedforward.b_2": reference.linear2.bias,
        "g_1": reference.norm1.weight, "n_1": reference.norm1.bias,
        "g_2": reference.norm2.weight, "n_2": reference.norm2.bias,
    })
    load_weights(module, weights)
    assert parameter_count(module) == parameter_count(reference)
    for length in (1, 6, 13):
        X = torch.randn(2, length, 16)
        with torch.no_grad():
            torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


# ----------------------------------------------------------------------------- recurrences


LSTM = """
axis t
axis b
axis i = 5, n = 7, g = 4
def lstm_cell(H: R[n], C: R[n], X: R[i]) -> (R[n], R[n], R[n]) {
    Z = linear[i -> g n, bias](X, W_ih, b_ih) + linear[n -> g n, bias](H, W_hh, b_hh)
    Zi[n] = Z[0, n]
    Zf[n] = Z[1, n]
    Zg[n] = Z[2, n]
    Zo[n] = Z[3, n]
    I = sigmoid(Zi)
    F = sigmoid(Zf)
    G = tanh(Zg)
    O = sigmoid(Zo)
    C2 = F * C + I * G
    H2 = O * tanh(C2)
    return H2, C2, H2
}
def lstm(X: R[t, b, i], H0: R[b, n], C0: R[b, n]) -> (R[b, n], R[b, n], R[t, b, n]) {
    H, C, Y = scan[t](lstm_cell, H0, C0, X)
    return H, C, Y
}
"""


def test_lstm_matches_nn_lstm() -> None:
    reference = nn.LSTM(5, 7)
    module = build(LSTM, "lstm")
    load_weights(module, {
        "lstm_cell.W_ih": reference.weight_ih_l0.T.reshape(5, 4, 7),
        "lstm_cell.b_ih": reference.bias_ih_l0.reshape(4, 7),
        "lstm_cell.W_hh": reference.weight_hh_l0.T.reshape(7, 4, 7),
        "lstm_cell.b_hh": reference.bias_hh_l0.reshape(4, 7),
    })
    assert parameter_count(module) == parameter_count(reference)
    for steps, batch in ((1, 1), (4, 3), (9, 2)):
        X = torch.randn(steps, batch, 5)
        H0, C0 = torch.randn(batch, 7), torch.randn(batch, 7)
        expected, (last_h, last_c) = reference(X, (H0[None], C0[None]))
        H, C, Y = module(X, H0, C0)
        torch.testing.assert_close(Y, expected, **TOLERANCE)
        torch.testing.assert_close(H, last_h[0], **TOLERANCE)
        torch.testing.assert_close(C, last_c[0], **TOLERANCE)


GRU = """
axis t
axis b
axis i = 5, n = 6, g = 3
def gru_cell(H: R[n], X: R[i]) -> (R[n], R[n]) {
    A = linear[i -> g n, bias](X, W_ih, b_ih)
    B = linear[n -> g n, bias](H, W_hh, b_hh)
    Ar[n] = A[0, n]
    Az[n] = A[1, n]
    An[n] = A[2, n]
    Br[n] = B[0, n]
    Bz[n] = B[1, n]
    Bn[n] = B[2, n]
    Rg = sigmoid(Ar + Br)
    Zg = sigmoid(Az + Bz)
    Ng = tanh(An + Rg * Bn)
    H2 = Ng + Zg * (H - Ng)
    return H2, H2
}
def gru(X: R[t, b, i], H0: R[b, n]) -> (R[b, n], R[t, b, n]) {
    H, Y = scan[t](gru_cell, H0, X)
    return H, Y
}
"""


def test_gru_matches_nn_gru() -> None:
    reference = nn.GRU(5, 6)
    module = build(GRU, "gru")
    load_weights(module, {
        "gru_cell.W_ih": reference.weight_ih_l0.T.reshape(5, 3, 6),
        "gru_cell.b_ih": reference.bias_ih_l0.reshape(3, 6),
        "gru_cell.W_hh": reference.weight_hh_l0.T.reshape(6, 3, 6),
        "gru_cell.b_hh": reference.bias_hh_l0.reshape(3, 6),
    })
    assert parameter_count(module) == parameter_count(reference)
    for steps, batch in ((1, 2), (6, 3)):
        X = torch.randn(steps, batch, 5)
        H0 = torch.randn(batch, 6)
        expected, last = reference(X, H0[None])
        H, Y = module(X, H0)
        torch.testing.assert_close(Y, expected, **TOLERANCE)
        torch.testing.assert_close(H, last[0], **TOLERANCE)


CONV1D_PLUS_BIAS = """
axis b
axis c = 3, o = 4, x = 10, w = 3
axis p = x - w + 1
def conv(X: R[b, c, x]) -> R[b, o, p] {
    param W: R[o, c, w]
    param bias: R[o] = zeros
    P[b, c, p, w] = X[b, c, p + w]
    Y[b, o, p] = sum(c, w) P[b, c, p, w] * W[o, c, w]
    return Y + bias
}
"""


def test_declared_bias_added_with_plus_matches_nn_conv1d() -> None:
    """A declared parameter is an operand of `+`: the bias broadcasts along (b, p) by name."""
    reference = nn.Conv1d(3, 4, 3)
    module = build(CONV1D_PLUS_BIAS, "conv")
    load_weights(module, {"W": reference.weight, "bias": reference.bias})
    assert parameter_count(module) == parameter_count(reference)
    X = torch.randn(2, 3, 10)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


CONV1D_PAD = """
axis b
axis c = 6, o = 4, x = {x}, w = 3
axis xp = x + 3, p = xp - w + 1
def conv(X: R[b, c, x]) -> R[b, o, p] {{
    param W: R[o, c, w]
    param bias: R[o] = zeros
    Xp = pad[x -> xp, before=2, after=1](X)
    P[b, c, p, w] = Xp[b, c, p + w]
    Y[b, o, p] = sum(c, w) P[b, c, p, w] * W[o, c, w]
    return Y + bias
}}
"""


@pytest.mark.parametrize("length", [7, 12])
def test_pad_then_convolve_matches_functional_pad_and_conv1d(length: int) -> None:
    """`pad` adds zeros before and after an axis: padding (2, 1) then a valid convolution."""
    reference = nn.Conv1d(6, 4, 3)
    module = build(CONV1D_PAD.format(x=length), "conv")
    load_weights(module, {"W": reference.weight, "bias": reference.bias})
    X = torch.randn(2, 6, length)
    torch.testing.assert_close(module(X), reference(F.pad(X, (2, 1))), **TOLERANCE)


@pytest.mark.parametrize("init", sorted(INITIALISERS))
def test_every_initialiser_compiles_and_initialises(init: str) -> None:
    """Each initialiser the checker accepts gives the parameter the values it promises."""
    arguments = {"normal": "(1.0, 0.5)", "uniform": "(-0.25, 0.75)", "constant": "(0.5)"}
    module = build(f"""
        axis m = 64, n = 32
        def f(X: R[m]) -> R[n] {{
            param W: R[m, n] = {init}{arguments.get(init, "")}
            return linear[m -> n](X, W)
        }}""", "f")
    W = module.W.detach()
    assert W.shape == (64, 32)
    match init:
        case "zeros" | "ones" | "constant":
            expected = {"zeros": 0.0, "ones": 1.0, "constant": 0.5}[init]
            assert torch.all(W == expected)
        case "uniform":
            assert W.min() >= -0.25 and W.max() <= 0.75 and W.std() > 0.1
        case "normal":
            assert abs(W.mean() - 1.0) < 0.05 and abs(W.std() - 0.5) < 0.05
        case "default" | "xavier":
            bound = 64 ** -0.5 if init == "default" else (6 / (64 + 32)) ** 0.5
            assert W.abs().max() <= bound and W.std() > bound / 4
        case "kaiming":
            assert abs(W.std() - (2 / 64) ** 0.5) < 0.03
