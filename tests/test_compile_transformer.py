"""A whole language model written in ncd: the parameter count, the output distribution and
the numerics against `nn.TransformerEncoder`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd

TRANSFORMER = """
\"\"\"A decoder-style transformer: 6 post-norm layers of causal attention and a ReLU MLP.\"\"\"
axis x                                           # sequence length, read at run time
axis v = 256, m = 512, h = 8, k = 64, f = 2048

def attention(X: R[x, m]) -> R[x, m] {
    Q = linear[m -> h k](X, W_q)
    K = linear[m -> h k](X, W_k)
    V = linear[m -> h k](X, W_v)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)
    A = softmax[y](causal[x, y](S))
    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]
    return linear[h k -> m](O, W_o)
}

def feedforward(X: R[x, m]) -> R[x, m] {
    return linear[f -> m](relu(linear[m -> f](X, W_1)), W_2)
}

def transformer(T: N[v][x]) -> R[x, v] {
    X = embedding[v -> m](T, E)
    block "Transformer layer" x6 {
        X = layernorm[m](X + attention(X), g_1, b_1)
        X = layernorm[m](X + feedforward(X), g_2, b_2)
    }
    return softmax[v](linear[m -> v](X, W_out))
}
"""


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return ncd.load(TRANSFORMER).to_torch("transformer").eval()


def test_parameter_count_is_exact(model: nn.Module) -> None:
    per_layer = 4 * 512 * 512 + 2 * 512 * 2048 + 2 * 2 * 512
    assert sum(p.numel() for p in model.parameters()) == 256 * 512 + 6 * per_layer + 512 * 256
    assert sum(p.numel() for p in model.parameters()) == 19_148_800


def test_state_dict_keys_follow_the_source(model: nn.Module) -> None:
    keys = list(model.state_dict())
    assert keys[:2] == ["E", "W_out"]  # own parameters first, then the submodules
    assert "transformer_layer.0.attention.W_q" in keys
    assert "transformer_layer.5.feedforward.W_2" in keys
    assert "transformer_layer.3.g_1" in keys and "transformer_layer.3.b_2" in keys
    assert model.state_dict()["transformer_layer.0.attention.W_q"].shape == (512, 8, 64)
    # Six independent copies, not one shared layer.
    first, second = model.transformer_layer[0], model.transformer_layer[1]
    assert not torch.equal(first.attention.W_q, second.attention.W_q)


def test_each_output_row_is_a_distribution(model: nn.Module) -> None:
    tokens = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        probabilities = model(tokens)
    assert probabilities.shape == (2, 9, 256)
    assert (probabilities >= 0).all()
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 9), atol=1e-5, rtol=1e-5)


def test_matches_nn_transformerencoder(model: nn.Module) -> None:
    """The same weights in PyTorch's encoder stack (whose LayerNorms have no bias: ours are
    zero after initialisation) give the same distributions."""
    layer = nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0, batch_first=True, bias=False)
    encoder = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False).eval()
    state = model.state_dict()
    with torch.no_grad():
        for index, reference in enumerate(encoder.layers):
            prefix = f"transformer_layer.{index}."
            weights = [state[prefix + f"attention.W_{n}"].reshape(512, 512).T for n in "qkv"]
            reference.self_attn.in_proj_weight.copy_(torch.cat(weights))
            reference.self_attn.out_proj.weight.copy_(
                state[prefix + "attention.W_o"].reshape(512, 512).T)
            reference.linear1.weight.copy_(state[prefix + "feedforward.W_1"].T)
            reference.linear2.weight.copy_(state[prefix + "feedforward.W_2"].T)
            reference.norm1.weight.copy_(state[prefix + "g_1"])
            reference.norm2.weight.copy_(state[prefix + "g_2"])
            assert not state[prefix + "b_1"].any() and not state[prefix + "b_2"].any()
    tokens = torch.randint(0, 256, (2, 7))
    causal = nn.Transformer.generate_square_subsequent_mask(7)
    with torch.no_grad():
        hidden = encoder(state["E"][tokens], mask=causal, is_causal=True)
        expected = torch.softmax(hidden @ state["W_out"], dim=-1)
        torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)
