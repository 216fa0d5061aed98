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
    def __init__(self, source: nn.Module, sizes: dict[str, int]) -> None:
        super().__init__()
        self.hidden = _linear(_flat_in(source.W_in), source.b_in)
        self.out = _linear(_flat_in(source.W_out), source.b_out)

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
    return (_flat_in(cell.W_ih), _flat_in(cell.W_hh), cell.b_ih.detach().reshape(-1),
            cell.b_hh.detach().reshape(-1))


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
)
