"""The standard library shipped with ncd (`ncd/std/`): every definition documented, checked
with the sizes of a program that imports it, and computing what PyTorch's own modules compute
with the same weights, at several input sizes; two libraries imported together share their
axes without a clash."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from differential import compare_text
from torch import nn

import ncd
from ncd import ir
from ncd.loader import STD_ROOT

STD_FILES = sorted(path.name for path in STD_ROOT.glob("*.ncd"))
SIZES = {  # what a program importing each library declares
    "attention.ncd": "axis m = 16, h = 4, k = m / h, g = 2, r = 2",
    "feedforward.ncd": "axis m = 12, f = 20",
    "norms.ncd": "axis m = 10",
    "conv.ncd": "axis c = 3, o = 5",
}


def program(library: str, extra: str = "") -> ncd.Program:
    return ncd.load(f'import "std/{library}"\n{SIZES[library]}\n{extra}')


def test_the_libraries_listed_are_those_shipped() -> None:
    assert STD_FILES == sorted(SIZES)


@pytest.mark.parametrize("library", STD_FILES)
def test_every_definition_has_a_docstring(library: str) -> None:
    checked = program(library)
    assert checked.definitions
    for definition in checked.definitions:
        assert definition.ir.doc and len(definition.ir.doc.split()) >= 5, definition.name
    assert checked.ir.doc is None  # the importing text has none; the library's is its own
    alone = {"attention.ncd": {"m": 8, "h": 2, "k": 4, "g": 2, "r": 1},
             "feedforward.ncd": {"m": 8, "f": 6}}.get(library)
    assert ncd.load(STD_ROOT / library, sizes=alone).ir.doc


def test_all_libraries_imported_together_share_their_axes() -> None:
    """`m` is declared (without a size) by three of the libraries and sized once by the
    importing file: one axis, no E204."""
    text = "\n".join(f'import "std/{name}"' for name in STD_FILES) + """
axis x
axis m = 16, h = 4, k = m / h, g = 2, r = 2, f = 32, c = 3, o = 5
def block(X: R[x, m]) -> R[x, m] {
    Y = X + attention(layer_norm(X))
    return Y + swiglu(rms_norm(Y))
}
"""
    checked = ncd.load(text)
    assert [axis.name for axis in checked.ir.axes].count("m") == 1
    assert checked.axes["m"].size == ir.SizeConst(value=16)
    assert checked.axes["k"].size == ir.SizeConst(value=4)


def test_a_sized_library_axis_is_still_a_clash() -> None:
    """The windows of `conv.ncd` have a size: declaring `kx` again is E204, at the user's."""
    with pytest.raises(ncd.NcdError) as error:
        ncd.load('import "std/conv.ncd"\naxis kx = 5\n')
    (diagnostic,) = error.value.diagnostics
    assert diagnostic.code == "E204" and diagnostic.span is not None
    assert diagnostic.span.file == "<input>" and diagnostic.span.line == 2


def test_the_attention_files_own_axis_leaves_common_names_free() -> None:
    """`std/attention.ncd` sizes the axis of its three projections itself; it is named `qkv`,
    so that a model's own `t` (time, steps) is still its to declare."""
    checked = ncd.load('import "std/attention.ncd"\naxis t = 5\n'
                       "axis m = 8, h = 2, k = m / h, g = 1, r = 2\n")
    assert checked.axes["t"].size == ir.SizeConst(value=5)
    assert checked.axes["qkv"].size == ir.SizeConst(value=3)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def _set(module: nn.Module, **weights: torch.Tensor) -> None:
    with torch.no_grad():
        for name, value in weights.items():
            getattr(module, name).copy_(value)


def _gradients_agree(ours: torch.Tensor, theirs: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """The gradients of a random projection of both outputs, with respect to the inputs."""
    probe = torch.randn_like(ours)
    mine = torch.autograd.grad((ours * probe).sum(), inputs, retain_graph=True)
    reference = torch.autograd.grad((theirs * probe).sum(), inputs)
    for a, b in zip(mine, reference, strict=True):
        _close(a, b)


@pytest.mark.parametrize("name", ["attention", "causal_attention", "cross_attention"])
def test_multi_head_attention_is_nn_multiheadattention(name: str) -> None:
    torch.manual_seed(0)
    module = program("attention.ncd").to_torch(name)
    torch_mha = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        torch_mha.in_proj_bias.normal_()
        torch_mha.out_proj.bias.normal_()
    if name == "cross_attention":
        wq, wk, wv = torch_mha.in_proj_weight.detach().chunk(3)
        bq, bk, bv = torch_mha.in_proj_bias.detach().chunk(3)
        _set(module, W_q=wq.T.reshape(16, 4, 4), W_k=wk.T.reshape(16, 4, 4),
             W_v=wv.T.reshape(16, 4, 4), b_q=bq.reshape(4, 4), b_k=bk.reshape(4, 4),
             b_v=bv.reshape(4, 4), W_o=torch_mha.out_proj.weight.detach().T.reshape(4, 4, 16),
             b_o=torch_mha.out_proj.bias.detach())
    else:
        # the self-attention layers keep nn.MultiheadAttention's layout: views, no transpose
        assert not hasattr(module, "W_q")
        module.load_state_dict({
            "W_qkv": torch_mha.in_proj_weight.detach().view(3, 4, 4, 16),
            "b_qkv": torch_mha.in_proj_bias.detach().view(3, 4, 4),
            "W_o": torch_mha.out_proj.weight.detach().view(16, 4, 4),
            "b_o": torch_mha.out_proj.bias.detach()})
    for batch, length, context in [((), 1, 3), ((2,), 5, 4), ((3,), 7, 9)]:
        X = torch.randn(*batch, length, 16, requires_grad=True)
        C = torch.randn(*batch, context, 16, requires_grad=True)
        mask = None
        if name == "causal_attention":
            mask = torch.ones(length, length, dtype=torch.bool).triu(1)
        keys = C if name == "cross_attention" else X
        expected, _ = torch_mha(X, keys, keys, attn_mask=mask, need_weights=False)
        actual = module(X, C) if name == "cross_attention" else module(X)
        _close(actual, expected)
        _gradients_agree(actual, expected, [X, C] if name == "cross_attention" else [X])


def test_grouped_query_attention_is_scaled_dot_product_attention_with_gqa() -> None:
    torch.manual_seed(1)
    module = program("attention.ncd").to_torch("grouped_query_attention")
    q, k, v = nn.Linear(16, 16, bias=False), nn.Linear(16, 8, bias=False), \
        nn.Linear(16, 8, bias=False)
    out = nn.Linear(16, 16, bias=False)
    _set(module, W_q=q.weight.detach().T.reshape(16, 2, 2, 4),
         W_k=k.weight.detach().T.reshape(16, 2, 4), W_v=v.weight.detach().T.reshape(16, 2, 4),
         W_o=out.weight.detach().T.reshape(2, 2, 4, 16))
    for batch, length in [(1, 1), (2, 6), (3, 11)]:
        X = torch.randn(batch, length, 16, requires_grad=True)
        heads = q(X).view(batch, length, 4, 4).transpose(1, 2)  # head 2 g + i: group g
        keys = k(X).view(batch, length, 2, 4).transpose(1, 2)
        values = v(X).view(batch, length, 2, 4).transpose(1, 2)
        attended = F.scaled_dot_product_attention(heads, keys, values, is_causal=True,
                                                  enable_gqa=True)
        expected = out(attended.transpose(1, 2).reshape(batch, length, 16))
        actual = module(X)
        _close(actual, expected)
        _gradients_agree(actual, expected, [X])


def test_feedforward_and_swiglu() -> None:
    torch.manual_seed(2)
    checked = program("feedforward.ncd")
    first, second = nn.Linear(12, 20), nn.Linear(20, 12)
    feedforward = checked.to_torch("feedforward")
    # nn.Linear's weights as they are: the layers keep its (out, in) layout
    _set(feedforward, W_in=first.weight.detach(), b_in=first.bias.detach(),
         W_out=second.weight.detach(), b_out=second.bias.detach())
    gate, up, down = (nn.Linear(12, 20, bias=False), nn.Linear(12, 20, bias=False),
                      nn.Linear(20, 12, bias=False))
    swiglu = checked.to_torch("swiglu")
    _set(swiglu, W_gate=gate.weight.detach(), W_up=up.weight.detach(),
         W_down=down.weight.detach())
    for shape in [(12,), (4, 12), (2, 3, 12)]:
        X = torch.randn(*shape, requires_grad=True)
        _close(feedforward(X), second(F.gelu(first(X))))
        _gradients_agree(feedforward(X), second(F.gelu(first(X))), [X])
        _close(swiglu(X), down(F.silu(gate(X)) * up(X)))
        _gradients_agree(swiglu(X), down(F.silu(gate(X)) * up(X)), [X])


def test_norms_are_nn_layernorm_and_nn_rmsnorm() -> None:
    torch.manual_seed(3)
    checked = program("norms.ncd")
    layer, rms = nn.LayerNorm(10), nn.RMSNorm(10, eps=1e-6)
    with torch.no_grad():
        for parameter in (layer.weight, layer.bias, rms.weight):
            parameter.normal_()
    layer_norm, rms_norm = checked.to_torch("layer_norm"), checked.to_torch("rms_norm")
    _set(layer_norm, g=layer.weight.detach(), b=layer.bias.detach())
    _set(rms_norm, g=rms.weight.detach())
    for shape in [(10,), (3, 10), (2, 5, 10)]:
        X = torch.randn(*shape, requires_grad=True)
        _close(layer_norm(X), layer(X))
        _close(rms_norm(X), rms(X))
        _gradients_agree(rms_norm(X), rms(X), [X])


CONVOLUTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "conv1d": lambda X, W, b: F.conv1d(X, W, b, padding=1),
    "conv1d_stride2": lambda X, W, b: F.conv1d(X, W, b, stride=2, padding=1),
    "conv2d": lambda X, W, b: F.conv2d(X, W, b, padding=1),
    "conv2d_stride2": lambda X, W, b: F.conv2d(X, W, b, stride=2, padding=1),
}


@pytest.mark.parametrize("name", sorted(CONVOLUTIONS))
def test_convolutions_are_f_conv(name: str) -> None:
    torch.manual_seed(4)
    module = program("conv.ncd").to_torch(name)
    two_d = name.startswith("conv2d")
    W = torch.randn(5, 3, *((3, 3) if two_d else (3,)))
    b = torch.randn(5)
    _set(module, W=W, b=b)
    shapes = [(1, 3, 4, 5), (2, 3, 7, 6), (3, 3, 9, 9)] if two_d else \
        [(1, 3, 1), (2, 3, 8), (3, 3, 11)]
    for shape in shapes:
        X = torch.randn(*shape, requires_grad=True)
        expected = CONVOLUTIONS[name](X, W, b)
        actual = module(X)
        assert actual.shape == expected.shape
        _close(actual, expected)
        _gradients_agree(actual, expected, [X])


def test_depthwise_separable_is_a_grouped_then_a_pointwise_conv2d() -> None:
    torch.manual_seed(5)
    module = program("conv.ncd").to_torch("depthwise_separable")
    depthwise, pointwise = nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.Conv2d(3, 5, 1)
    _set(module, W_d=depthwise.weight.detach()[:, 0], b_d=depthwise.bias.detach(),
         W_p=pointwise.weight.detach()[:, :, 0, 0], b_p=pointwise.bias.detach())
    for shape in [(1, 3, 3, 3), (2, 3, 8, 5)]:
        X = torch.randn(*shape, requires_grad=True)
        _close(module(X), pointwise(depthwise(X)))
        _gradients_agree(module(X), pointwise(depthwise(X)), [X])


@pytest.mark.parametrize("library", STD_FILES)
def test_compiled_libraries_agree_with_the_reference_interpreter(library: str) -> None:
    reports = compare_text(f'import "std/{library}"\n{SIZES[library]}\n', sizes=1)
    assert reports
    for name, report in reports.items():
        assert report.findings == [], name
        assert report.compared > 0, (name, report.skipped)


@pytest.mark.parametrize("library", STD_FILES)
def test_each_definition_renders(library: str) -> None:
    checked = program(library)
    for definition in checked.definitions:
        svg = definition.render()
        assert svg.startswith("<svg") or svg.startswith("<?xml"), definition.name
        assert definition.name.split("_")[0] in svg or "<path" in svg


def test_math_of_the_stride_2_length() -> None:
    """`xs = (x - 1) // 2 + 1` is PyTorch's output length for window 3, padding 1, stride 2."""
    for length in range(1, 20):
        assert (length - 1) // 2 + 1 == math.floor((length + 2 - 3) / 2) + 1
    assert Path(STD_ROOT, "conv.ncd").read_text(encoding="utf-8").count("(x - 1) // 2 + 1") == 1


def test_a_size_given_by_the_importer_resizes_the_library_axes_derived_from_it() -> None:
    """`us = (u - 1) // 2 + 1` in `conv.ncd` is read again once the importer sizes `u`."""
    checked = program("conv.ncd", "axis u = 7, v = 8")
    assert checked.axes["up"].size == ir.SizeConst(value=9)
    assert checked.axes["us"].size == ir.SizeConst(value=4)
    assert checked.axes["vs"].size == ir.SizeConst(value=4)
    assert checked["conv2d_stride2"].signature == "conv2d_stride2(X: R[c, u, v]) -> R[o, us, vs]"
