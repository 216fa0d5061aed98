"""Hand-written PyTorch equivalents of gallery models, as a practitioner would write them, each
built from a compiled ncd module with its weights copied in, so that both compute exactly the
same function (`python -m bench` checks that before it times anything).

A reference is an `nn.Module` taking the ncd module's inputs (leading batch dims included)
and returning its outputs. `CASES` lists, per gallery model, the sizes it is run at and the
references it is compared with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Inputs = Callable[[torch.Generator], tuple[torch.Tensor, ...]]
Reference = Callable[[nn.Module, dict[str, int]], nn.Module]


def _flat_in(weight: torch.Tensor) -> torch.Tensor:
    """An ncd weight `R[in, out...]` as `nn.Linear`'s `(out, in)` matrix."""
    return weight.detach().reshape(weight.shape[0], -1).T.contiguous()


def _flat_out(weight: torch.Tensor, inputs: int) -> torch.Tensor:
    """An ncd weight `R[in..., out]` (the first `inputs` axes read) as `(out, in)`."""
    out = weight.shape[inputs:].numel()
    return weight.detach().reshape(-1, out).T.contiguous()


def _linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.detach().reshape(-1))
    return layer


def _norm(width: int, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
          ) -> nn.LayerNorm:
    norm = nn.LayerNorm(width, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight.detach())
        norm.bias.copy_(bias.detach())
    return norm


def _maybe(module: nn.Module, name: str) -> torch.Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


# ---- attention


class SdpaAttention(nn.Module):
    """Multi-head attention as usually written: `nn.Linear` projections, heads split by a
    view, `F.scaled_dot_product_attention`, heads merged, an output projection."""

    def __init__(self, source: nn.Module, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q = _linear(_flat_in(source.W_q), _maybe(source, "b_q"))
        self.k = _linear(_flat_in(source.W_k), _maybe(source, "b_k"))
        self.v = _linear(_flat_in(source.W_v), _maybe(source, "b_v"))
        self.o = _linear(_flat_out(source.W_o, 2), _maybe(source, "b_o"))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.split(self.q(x)), self.split(self.k(context)), self.split(self.v(context))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.o(o.transpose(-3, -2).flatten(-2))


class EinsumAttention(nn.Module):
    """Multi-head attention written out with `torch.einsum`: scores, a causal mask, softmax,
    the weighted sum (what a careful hand-written version without SDPA does)."""

    def __init__(self, source: nn.Module, heads: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.W_q, self.W_k, self.W_v, self.W_o = (
            nn.Parameter(getattr(source, n).detach().clone()) for n in ("W_q", "W_k", "W_v",
                                                                      "W_o"))
        self.scale = source.W_q.shape[-1] ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.einsum("bxm,mhk->bhxk", x, self.W_q)
        k = torch.einsum("bym,mhk->bhyk", x, self.W_k)
        v = torch.einsum("bym,mhk->bhyk", x, self.W_v)
        s = torch.einsum("bhxk,bhyk->bhxy", q, k) * self.scale
        if self.causal:
            n = x.shape[-2]
            keep = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            s = s.masked_fill(~keep, float("-inf"))
        o = torch.einsum("bhxy,bhyk->bxhk", torch.softmax(s, dim=-1), v)
        return torch.einsum("bxhk,hkm->bxm", o, self.W_o)


def sdpa_attention(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return SdpaAttention(source, sizes["h"], causal=True)


def einsum_attention(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return EinsumAttention(source, sizes["h"], causal=True)


def sdpa_cross_attention(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return SdpaAttention(source, sizes["h"], causal=False)


# ---- transformer


class TorchTransformer(nn.Module):
    """Six `nn.TransformerEncoderLayer(norm_first=True, activation="gelu")` with a causal mask
    and a final `nn.LayerNorm`. The gallery's attention has no projection biases: PyTorch's
    layer always has them, so they are zero here."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        m, h = sizes["m"], sizes["h"]
        self.layers = nn.ModuleList()
        for block in source.transformer_layer:
            layer = nn.TransformerEncoderLayer(m, h, dim_feedforward=4 * m, dropout=0.0,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)
            attention, feedforward = block.attention, block.feedforward
            with torch.no_grad():
                layer.self_attn.in_proj_weight.copy_(torch.cat(
                    [_flat_in(attention.W_q), _flat_in(attention.W_k),
                     _flat_in(attention.W_v)]))
                layer.self_attn.in_proj_bias.zero_()
                layer.self_attn.out_proj.weight.copy_(_flat_out(attention.W_o, 2))
                layer.self_attn.out_proj.bias.zero_()
                layer.linear1.weight.copy_(_flat_in(feedforward.W_in))
                layer.linear1.bias.copy_(feedforward.b_in)
                layer.linear2.weight.copy_(_flat_in(feedforward.W_out))
                layer.linear2.bias.copy_(feedforward.b_out)
                for norm, (g, b) in ((layer.norm1, (block.g_1, block.b_1)),
                                     (layer.norm2, (block.g_2, block.b_2))):
                    norm.weight.copy_(g)
                    norm.bias.copy_(b)
            self.layers.append(layer)
        self.norm = _norm(m, source.g_f, source.b_f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[-2], device=x.device,
                                                              dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=True)
        return self.norm(x)


def torch_transformer(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return TorchTransformer(source, sizes)


class Gpt2Block(nn.Module):
    """A GPT-2 block as nanoGPT writes it: `nn.LayerNorm`, `nn.Linear` projections, SDPA with
    `is_causal=True`, GELU (tanh), residuals."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        m = sizes["m"]
        self.ln_1 = _norm(m, source.g_1, source.b_1)
        self.ln_2 = _norm(m, source.g_2, source.b_2)
        self.attention = SdpaAttention(source.causal_self_attention, sizes["h"], causal=True)
        mlp = source.mlp
        self.fc = _linear(_flat_in(mlp.W_fc), mlp.b_fc)
        self.proj = _linear(_flat_in(mlp.W_proj), mlp.b_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


def gpt2_block(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return Gpt2Block(source, sizes)


# ---- feed-forward, convolution


class Mlp(nn.Module):
    """Two `nn.Linear` layers: the gallery declares their weights `(out, in)` as they are."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.hidden = _linear(source.W_in.detach(), source.b_in)
        self.out = _linear(source.W_out.detach(), source.b_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(F.gelu(self.hidden(x))), dim=-1)


def mlp(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return Mlp(source, sizes)


class Conv1d(nn.Module):
    """`F.conv1d` with stride 2 and dilation 2, then ReLU."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.W = nn.Parameter(source.W.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv1d(x, self.W, stride=2, dilation=2))


def conv1d(source: nn.Module, sizes: dict[str, int]) -> nn.Module:
    return Conv1d(source, sizes)


# ---- recurrences


def _recurrent_weights(cell: nn.Module) -> tuple[torch.Tensor, ...]:
    """A gallery cell's weights, declared `R[g, n, in]` as `nn.LSTM` / `nn.GRU` keep them, as
    their `(g n, in)` matrices and `(g n)` biases."""
    return (cell.W_ih.detach().flatten(0, 1).clone(), cell.W_hh.detach().flatten(0, 1).clone(),
            cell.b_ih.detach().reshape(-1), cell.b_hh.detach().reshape(-1))


class TorchLstm(nn.Module):
    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        w_ih, w_hh, b_ih, b_hh = _recurrent_weights(source.lstm_cell)
        self.lstm = nn.LSTM(w_ih.shape[1], w_hh.shape[1])
        with torch.no_grad():
            for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh),
                                ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
                getattr(self.lstm, name).copy_(value)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        return self.lstm(x, (h0[None], c0[None]))[0]


class LoopLstm(nn.Module):
    """An LSTM as a hand loop: the input projection of every step in one `F.linear`, then per
    step one `F.linear` of the hidden state and the gates."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = (
            nn.Parameter(w.clone()) for w in _recurrent_weights(source.lstm_cell))

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        projected = F.linear(x, self.w_ih, self.b_ih)
        outputs = []
        for step in projected.unbind(0):
            i, f, g, o = (step + F.linear(h, self.w_hh, self.b_hh)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs)


class TorchGru(nn.Module):
    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        w_ih, w_hh, b_ih, b_hh = _recurrent_weights(source.gru_cell)
        self.gru = nn.GRU(w_ih.shape[1], w_hh.shape[1])
        with torch.no_grad():
            for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh),
                                ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
                getattr(self.gru, name).copy_(value)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, last = self.gru(x, h0[None])
        return y, last[0]


# ---- vision


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, **options: int) -> nn.Conv2d:
    """`nn.Conv2d` holding an ncd weight already in PyTorch's `(out, in, kh, kw)` layout."""
    out, into, kh, kw = weight.shape  # `into` is per group
    layer = nn.Conv2d(into * options.get("groups", 1), out, (kh, kw), bias=bias is not None,
                      **options)
    with torch.no_grad():
        layer.weight.copy_(weight.detach())
        if bias is not None:
            layer.bias.copy_(bias.detach())  # type: ignore[union-attr]
    return layer


def _batch_norm(norm: nn.BatchNorm1d | nn.BatchNorm2d, gamma: torch.Tensor, beta: torch.Tensor,
                mean: torch.Tensor, var: torch.Tensor) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """A PyTorch batch norm with the generated module's scale, shift and running statistics."""
    with torch.no_grad():
        norm.weight.copy_(gamma.detach())
        norm.bias.copy_(beta.detach())
        norm.running_mean.copy_(mean)  # type: ignore[union-attr]
        norm.running_var.copy_(var)  # type: ignore[union-attr]
    return norm


class LeNet5(nn.Module):
    """LeNet-5 as usually written: `nn.Conv2d`, tanh, `F.avg_pool2d`, `nn.Linear`."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.c1 = _conv(source.W_c1.detach()[:, None], source.b_c1)
        self.c3 = _conv(source.W_c3, source.b_c3)
        self.c5 = _conv(source.W_c5, source.b_c5)
        self.f6 = _linear(_flat_in(source.W_f6), source.b_f6)
        self.out = _linear(_flat_in(source.W_out), source.b_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(torch.tanh(self.c1(x.unsqueeze(-3))), 2)
        x = F.avg_pool2d(torch.tanh(self.c3(x)), 2)
        x = torch.tanh(self.c5(x)).flatten(-3)
        return self.out(torch.tanh(self.f6(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block as torchvision writes it (stride 1, no downsampling):
    `nn.Conv2d(3, padding=1, bias=False)`, `nn.BatchNorm2d`, ReLU, the identity shortcut."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.conv1 = _conv(source.W_1, None, padding=1)
        self.bn1 = _batch_norm(nn.BatchNorm2d(source.W_1.shape[0]), source.gamma_1,
                               source.beta_1, source.mean_1, source.var_1)
        self.conv2 = _conv(source.W_2, None, padding=1)
        self.bn2 = _batch_norm(nn.BatchNorm2d(source.W_2.shape[0]), source.gamma_2,
                               source.beta_2, source.mean_2, source.var_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class DepthwiseSeparable(nn.Module):
    """`nn.Conv2d(c, c, 3, groups=c)`, then the pointwise `nn.Conv2d(c, o, 1)`."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        channels = source.K.shape[0]
        self.depthwise = _conv(source.K.detach()[:, None], source.b_d, groups=channels)
        self.pointwise = _conv(source.W_p.detach()[:, :, None, None], source.b_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class UnetLevel(nn.Module):
    """A U-Net level as common implementations write it: double convolutions
    (`nn.Conv2d(3, padding=1)` and ReLU), `F.max_pool2d`, `F.interpolate(mode="nearest")` and
    `torch.cat` for the skip."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.stages = nn.ModuleDict({
            name: nn.Sequential(
                _conv(getattr(source, name).W_1, getattr(source, name).b_1, padding=1),
                nn.ReLU(),
                _conv(getattr(source, name).W_2, getattr(source, name).b_2, padding=1),
                nn.ReLU())
            for name in ("down", "lower", "up")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stages["down"](x)
        below = self.stages["lower"](F.max_pool2d(skip, 2))
        upsampled = F.interpolate(below, scale_factor=2, mode="nearest")
        return self.stages["up"](torch.cat([skip, upsampled], dim=-3))


class VitAttention(nn.Module):
    """timm's `Attention`: one `nn.Linear` to queries, keys and values, SDPA, a projection."""

    def __init__(self, source: nn.Module, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # the standard library's attention keeps nn.MultiheadAttention's (out, in) layout
        self.qkv = _linear(source.W_qkv.detach().flatten(0, 2), source.b_qkv)
        self.proj = _linear(source.W_o.detach().flatten(1), source.b_o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).flatten(-2))


class Vit(nn.Module):
    """ViT as timm and torchvision write it: the patches by `nn.Conv2d(stride=p)`, the class
    token concatenated, position embeddings added, then a pre-norm encoder layer
    (`nn.LayerNorm(eps=1e-6)`, attention by SDPA, an MLP with GELU)."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        embedding, layer = source.patch_embedding, source.encoder_layer
        patch = embedding.W_e.shape[-1]
        m = embedding.W_e.shape[0]
        self.patch = _conv(embedding.W_e, embedding.b_e, stride=patch)
        self.cls_token = nn.Parameter(embedding.cls.detach().clone())
        self.pos_embed = nn.Parameter(embedding.pos.detach().clone())
        self.norm1 = _norm(m, layer.g_1, layer.b_1, eps=1e-6)
        self.attn = VitAttention(layer.attention, layer.attention.W_qkv.shape[1])
        self.norm2 = _norm(m, layer.g_2, layer.b_2, eps=1e-6)
        ff = layer.feedforward
        self.fc1 = _linear(ff.W_in.detach(), ff.b_in)  # the standard library's (out, in)
        self.fc2 = _linear(ff.W_out.detach(), ff.b_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        z = torch.cat([cls, tokens], dim=1) + self.pos_embed
        z = z + self.attn(self.norm1(z))
        return z + self.fc2(F.gelu(self.fc1(self.norm2(z))))


# ---- mixers, Llama, attention variants


class MixerBlock(nn.Module):
    """An MLP-Mixer block as timm writes it: token mixing by `nn.Linear` on the transposed
    normalised input, channel mixing by `nn.Linear`, GELU, residuals."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        c = source.g_1.shape[0]
        self.norm1 = _norm(c, source.g_1, source.b_1)
        self.token_fc1 = _linear(_flat_in(source.W_1), source.b_w1)
        self.token_fc2 = _linear(_flat_in(source.W_2), source.b_w2)
        self.norm2 = _norm(c, source.g_2, source.b_2)
        self.channel_fc1 = _linear(_flat_in(source.W_3), source.b_w3)
        self.channel_fc2 = _linear(_flat_in(source.W_4), source.b_w4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.token_fc2(F.gelu(self.token_fc1(self.norm1(x).transpose(-1, -2))))
        x = x + mixed.transpose(-1, -2)
        return x + self.channel_fc2(F.gelu(self.channel_fc1(self.norm2(x))))


class LlamaBlock(nn.Module):
    """A Llama block as Meta's reference code writes it: `F.rms_norm`, bias-free `nn.Linear`
    projections, rotary embeddings on interleaved pairs, SDPA with `is_causal=True` and
    `enable_gqa=True`, and the SwiGLU MLP."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        attention, mlp = source.attention, source.swiglu
        _, groups, per_group, _, _ = attention.W_q.shape  # (m, g, r, j, p)
        self.heads, self.kv_heads = groups * per_group, groups
        self.attention_norm = nn.Parameter(source.w_attn.detach().clone())
        self.ffn_norm = nn.Parameter(source.w_ffn.detach().clone())
        self.wq = _linear(_flat_in(attention.W_q))
        self.wk = _linear(_flat_in(attention.W_k))
        self.wv = _linear(_flat_in(attention.W_v))
        self.wo = _linear(_flat_out(attention.W_o, 3))
        self.w1 = _linear(mlp.W_gate.detach())  # the standard library's (out, in)
        self.w3 = _linear(mlp.W_up.detach())
        self.w2 = _linear(mlp.W_down.detach())

    @staticmethod
    def rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        a, b = t.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        length, width = x.shape[-2], self.wq.out_features // self.heads
        theta = 10000.0 ** (-torch.arange(0, width, 2, dtype=x.dtype) / width)
        angle = torch.arange(length, dtype=x.dtype)[:, None] * theta  # (x, k / 2)
        cos, sin = angle.cos(), angle.sin()
        q = self.rotate(self.wq(x).unflatten(-1, (self.heads, -1)).transpose(-3, -2), cos, sin)
        k = self.rotate(self.wk(x).unflatten(-1, (self.kv_heads, -1)).transpose(-3, -2), cos,
                        sin)
        v = self.wv(x).unflatten(-1, (self.kv_heads, -1)).transpose(-3, -2)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.wo(o.transpose(-3, -2).flatten(-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = (x.shape[-1],)
        h = x + self.attention(F.rms_norm(x, width, self.attention_norm, eps=1e-5))
        z = F.rms_norm(h, width, self.ffn_norm, eps=1e-5)
        return h + self.w2(F.silu(self.w1(z)) * self.w3(z))


class SlidingWindowAttention(nn.Module):
    """Bias-free `F.linear` projections and SDPA with a boolean band mask."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.heads, self.window = source.W_q.shape[1], sizes["w"]
        self.q = _linear(_flat_in(source.W_q))
        self.k = _linear(_flat_in(source.W_k))
        self.v = _linear(_flat_in(source.W_v))
        self.o = _linear(_flat_out(source.W_o, 2))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = torch.arange(x.shape[-2], device=x.device)
        lag = position[:, None] - position[None, :]
        band = (lag >= 0) & (lag < self.window)
        o = F.scaled_dot_product_attention(self.split(self.q(x)), self.split(self.k(x)),
                                           self.split(self.v(x)), attn_mask=band)
        return self.o(o.transpose(-3, -2).flatten(-2))


class Moe(nn.Module):
    """Dense softmax-gated experts: `nn.Linear` gate, each expert an `nn.Sequential` of
    `nn.Linear`, ReLU, `nn.Linear`, their outputs summed with the gate's weights."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.gate = _linear(source.W_g.detach())  # (out, in) already
        self.experts = nn.ModuleList(
            nn.Sequential(_linear(e.W_1.detach(), e.b_1), nn.ReLU(),  # (out, in) already
                          _linear(e.W_2.detach(), e.b_2))
            for e in source.expert)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.gate(x), dim=-1)
        out = weights[..., 0:1] * self.experts[0](x)
        for i in range(1, len(self.experts)):
            out = out + weights[..., i:i + 1] * self.experts[i](x)
        return out


# ---- normalisation, sequences, graphs, losses


class BatchnormLayer(nn.Module):
    """`nn.Linear(i, n, bias=False)`, `nn.BatchNorm1d(n)`, ReLU."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.linear = _linear(source.W.detach())  # (out, in) already
        self.norm = _batch_norm(nn.BatchNorm1d(source.W.shape[0]), source.gamma, source.beta,
                                source.running_mean, source.running_var)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.linear(x)))


class LoopLru(nn.Module):
    """The LRU as a hand loop: the input projection of every step in one `F.linear`, the
    diagonal recurrence a step at a time, the output projection of every step at once."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.nu_log = nn.Parameter(source.lru_step.nu_log.detach().clone())
        self.B = nn.Parameter(_flat_in(source.W_B))
        self.C = nn.Parameter(_flat_in(source.W_C))
        self.D = nn.Parameter(source.D.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decay = torch.exp(-torch.exp(self.nu_log))
        u = torch.sqrt(1 - decay * decay) * F.linear(x, self.B)
        h = u.new_zeros(*u.shape[:-2], u.shape[-1])
        states = []
        for step in u.unbind(-2):
            h = decay * h + step
            states.append(h)
        return F.linear(torch.stack(states, dim=-2), self.C) + self.D * x


class GcnConv(nn.Module):
    """`GCNConv` over an edge list, written with `bincount`, `index_select` and `index_add`:
    the self-loops added as a separate term instead of appended edges."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.lin = _linear(source.W.detach())  # the gallery declares it (out, in)
        self.bias = nn.Parameter(source.b.detach().clone())

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        xw = self.lin(x)
        degree = torch.bincount(dst, minlength=x.shape[0]).to(x.dtype) + 1
        scale = degree.rsqrt()
        coefficient = scale.index_select(0, src) * scale.index_select(0, dst)
        messages = xw.index_select(0, src) * coefficient[:, None]
        out = torch.zeros_like(xw).index_add(0, dst, messages) + xw / degree[:, None]
        return F.relu(out + self.bias)


class Classifier(nn.Module):
    """Global average pooling, `nn.Linear`, `F.cross_entropy`."""

    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.fc = _linear(_flat_in(source.head.W_fc), source.head.b_fc)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.fc(x.mean(dim=(-2, -1))), labels)


# ---- the cases


@dataclass(frozen=True)
class Size:
    name: str  # "small" or "realistic"
    sizes: dict[str, int]  # the program's sizes (`-D`), the symbolic ones included
    batch: tuple[int, ...] = ()  # leading batch dims of the inputs


@dataclass(frozen=True)
class Case:
    model: str  # the gallery file's stem
    definition: str
    references: tuple[tuple[str, Reference], ...]  # (what it is compared with, builder)
    small: Size
    realistic: Size


CASES: tuple[Case, ...] = (
    Case("attention", "attention",
         (("F.linear + SDPA", sdpa_attention), ("einsum, mask, softmax", einsum_attention)),
         Size("small", {"x": 32, "m": 64, "h": 4}, (4,)),
         Size("realistic", {"x": 128, "m": 512, "h": 8}, (8,))),
    Case("cross_attention", "cross_attention", (("F.linear + SDPA", sdpa_cross_attention),),
         Size("small", {"x": 32, "y": 48, "m": 64, "n": 32, "h": 4}, (4,)),
         Size("realistic", {"x": 128, "y": 128, "m": 512, "n": 256, "h": 8}, (8,))),
    Case("transformer", "transformer", (("nn.TransformerEncoderLayer x6", torch_transformer),),
         Size("small", {"x": 32, "m": 64, "h": 4}, (4,)),
         Size("realistic", {"x": 128, "m": 256, "h": 8}, (4,))),
    Case("gpt2_block", "gpt2_block", (("nanoGPT block (SDPA)", gpt2_block),),
         Size("small", {"x": 32, "m": 96, "h": 12}, (4,)),
         Size("realistic", {"x": 128, "m": 768, "h": 12}, (4,))),
    Case("mlp", "mlp", (("nn.Linear", mlp),),
         Size("small", {"b": 32}), Size("realistic", {"b": 512})),
    Case("conv1d", "conv1d", (("F.conv1d", conv1d),),
         Size("small", {"b": 4}), Size("realistic", {"b": 64, "x": 1024, "c": 64, "o": 128})),
    Case("lstm", "lstm", (("nn.LSTM", TorchLstm), ("hand loop, F.linear", LoopLstm)),
         Size("small", {"t": 16, "b": 4}), Size("realistic", {"t": 64, "b": 32, "n": 256,
                                                               "i": 128})),
    Case("gru", "gru", (("nn.GRU", TorchGru),),
         Size("small", {"t": 16, "b": 4}), Size("realistic", {"t": 64, "b": 32, "n": 256,
                                                               "i": 128})),
    Case("lenet5", "lenet5", (("nn.Conv2d, F.avg_pool2d", LeNet5),),
         Size("small", {"b": 16}), Size("realistic", {"b": 256})),
    Case("resnet_block", "resnet_block", (("torchvision BasicBlock", BasicBlock),),
         Size("small", {"b": 4, "y": 16, "x": 16, "c": 16}),
         Size("realistic", {"b": 4, "y": 56, "x": 56, "c": 64})),
    Case("vit", "vit", (("nn.Conv2d patches, timm block (SDPA)", Vit),),
         Size("small", {"c": 3, "u": 32, "v": 32, "p": 8, "m": 64, "h": 4}, (4,)),
         Size("realistic", {"c": 3, "u": 224, "v": 224, "p": 16, "m": 768, "h": 12}, (2,))),
    Case("mlp_mixer", "mlp_mixer", (("timm MixerBlock", MixerBlock),),
         Size("small", {"s": 16, "c": 32, "ds": 16, "dc": 64}, (4,)),
         Size("realistic", {"s": 196, "c": 512, "ds": 256, "dc": 2048}, (4,))),
    Case("llama_block", "llama_block", (("Llama block (SDPA, GQA)", LlamaBlock),),
         Size("small", {"x": 32, "m": 64, "h": 4, "g": 2, "f": 172}, (2,)),
         Size("realistic", {"x": 128, "m": 2048, "h": 32, "g": 4, "f": 5632}, (2,))),
    Case("depthwise_separable", "depthwise_separable",
         (("nn.Conv2d groups=c, 1x1", DepthwiseSeparable),),
         Size("small", {"b": 4, "x": 32, "y": 32}),
         Size("realistic", {"b": 16, "x": 112, "y": 112, "c": 32, "o": 64})),
    Case("unet_level", "unet_level", (("F.conv2d, max_pool2d, interpolate", UnetLevel),),
         Size("small", {"yh": 8, "xh": 8, "c": 16, "d": 32}, (2,)),
         Size("realistic", {"yh": 32, "xh": 32, "i": 1, "c": 64, "d": 128}, (4,))),
    Case("batchnorm", "batchnorm_layer", (("nn.Linear, nn.BatchNorm1d", BatchnormLayer),),
         Size("small", {"b": 32}), Size("realistic", {"b": 512, "i": 784, "n": 100})),
    Case("sliding_window_attention", "sliding_window_attention",
         (("F.linear + SDPA, band mask", SlidingWindowAttention),),
         Size("small", {"x": 32, "m": 64, "h": 4, "w": 4}, (4,)),
         Size("realistic", {"x": 256, "m": 512, "h": 8, "w": 64}, (4,))),
    Case("lru", "lru", (("hand loop, F.linear", LoopLru),),
         Size("small", {"t": 16, "m": 32, "n": 32}, (4,)),
         Size("realistic", {"t": 128, "m": 256, "n": 256}, (16,))),
    Case("graph_conv", "gcn_conv", (("index_select, index_add", GcnConv),),
         Size("small", {"v": 100, "e": 400, "f": 64, "g": 16}),
         Size("realistic", {"v": 2708, "e": 10556, "f": 1433, "g": 16})),
    Case("moe", "moe", (("nn.Linear experts, loop", Moe),),
         Size("small", {"x": 32, "m": 64, "h": 128}, (4,)),
         Size("realistic", {"x": 256, "m": 512, "h": 1024, "e": 4}, (4,))),
    Case("classifier", "classifier", (("mean, nn.Linear, F.cross_entropy", Classifier),),
         Size("small", {"b": 4, "y": 7, "x": 7, "c": 256, "n": 100}),
         Size("realistic", {"b": 64, "y": 7, "x": 7, "c": 2048, "n": 1000})),
)
