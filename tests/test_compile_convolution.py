"""Convolutions and pools run as one call of PyTorch's kernels (`F.conv*d`, `F.max_pool*d`,
`F.avg_pool*d`) where the kernel computes exactly the term, and are written out (unfold and
einsum) otherwise. Each case is held to the reference interpreter (`ncd.semantics`, through
`differential.compare_text`, in float64) and the gallery's and a few hand-made ones to the
modules a user would write (`nn.Conv2d`, `nn.MaxPool2d`, ...), with the same weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from differential import compare_text

import ncd
from ncd import ir
from ncd.convolution import find_windows
from ncd.sizes import ProgramSizes

torch = pytest.importorskip("torch")
nn = torch.nn


def _agrees(text: str, name: str = "f", sizes: int = 3) -> None:
    report = compare_text(text, sizes=sizes)[name]
    assert report.skipped is None and report.compared > 0, report
    assert not report.findings, report.findings


def _windows(text: str, name: str = "f") -> list[tuple[str, int, bool]]:
    """(kind, paddings taken in, with a bias) of each match in definition `name`."""
    program = ncd.load(text).ir
    sizes = ProgramSizes(program.axes)
    found = []
    for term in ir.walk(program.definition(name).body):
        if isinstance(term, ir.Composed):
            for match in find_windows(term, sizes):
                found.append((match.kind, len(match.pads), match.bias is not None))
    return sorted(set(found))


# ---- lowered to one kernel call: each against the interpreter

FUSED = {
    "conv1d, stride 2 and dilation 2": ("F.conv1d(", """
        axis b, x
        axis c = 3, o = 4, w = 3
        axis p = (x - 2 * (w - 1) - 1) // 2 + 1
        def f(X: R[b, c, x]) -> R[b, o, p] {
            param W: R[o, c, w]
            Y[b, o, p] = sum(c, w) X[b, c, 2*p + 2*w] * W[o, c, w]
            return Y
        }"""),
    "conv1d, padding inside the call, bias": ("F.conv1d(", """
        axis x
        axis c = 2, o = 3, k = 3, xp = x + 2
        def f(X: R[c, x]) -> R[o, x] {
            param W: R[o, c, k]
            param b: R[o]
            P = pad[x -> xp, before=1, after=1](X)
            Y[o, x] = sum(c, k) P[c, x + k] * W[o, c, k]
            return Y + b
        }"""),
    "conv2d, stride 2, padding 1, odd and even sizes": ("F.conv2d(", """
        axis u, v
        axis c = 2, o = 3, ky = 3, kx = 3
        axis up = u + 2, vp = v + 2
        axis us = (u - 1) // 2 + 1, vs = (v - 1) // 2 + 1
        def f(X: R[c, u, v]) -> R[o, us, vs] {
            param W: R[o, c, ky, kx]
            P = pad[v -> vp, before=1, after=1](pad[u -> up, before=1, after=1](X))
            Y[o, us, vs] = sum(c, ky, kx) P[c, 2*us + ky, 2*vs + kx] * W[o, c, ky, kx]
            return Y
        }"""),
    "conv2d, batch after the channels, output transposed": ("F.conv2d(", """
        axis b, u, v
        axis c = 2, o = 3, ky = 2, kx = 3
        axis p = u - 1, q = v - 2
        def f(X: R[c, b, u, v]) -> R[q, b, o, p] {
            param W: R[c, kx, o, ky]
            Y[q, b, o, p] = sum(c, ky, kx) X[c, b, p + ky, q + kx] * W[c, kx, o, ky]
            return Y
        }"""),
    "depthwise with bias (groups = channels)": ("groups=3", """
        axis b, u, v
        axis c = 3, ky = 3, kx = 3, up = u + 2, vp = v + 2
        def f(X: R[b, c, u, v]) -> R[b, c, u, v] {
            param K: R[c, ky, kx]
            param d: R[c]
            P = pad[v -> vp, before=1, after=1](pad[u -> up, before=1, after=1](X))
            D[b, c, u, v] = sum(ky, kx) P[b, c, u + ky, v + kx] * K[c, ky, kx]
            return D + d
        }"""),
    "grouped: groups of two input channels, three outputs each": ("groups=2", """
        axis u
        axis g = 2, c = 2, o = 3, k = 2
        axis p = u - 1
        def f(X: R[g, c, u]) -> R[g, o, p] {
            param W: R[g, o, c, k]
            Y[g, o, p] = sum(c, k) X[g, c, p + k] * W[g, o, c, k]
            return Y
        }"""),
    "two input channel axes and two output axes": ("F.conv1d(", """
        axis x
        axis c = 2, d = 2, o = 2, h = 3, k = 2
        axis p = x - 1
        def f(X: R[c, d, x]) -> R[o, h, p] {
            param W: R[o, h, d, c, k]
            Y[o, h, p] = sum(c, d, k) X[c, d, p + k] * W[o, h, d, c, k]
            return Y
        }"""),
    "conv3d": ("F.conv3d(", """
        axis t, u, v
        axis c = 2, o = 2, i = 2, j = 2, k = 2
        axis a = t - 1, e = u - 1, f = v - 1
        def f(X: R[c, t, u, v]) -> R[o, a, e, f] {
            param W: R[o, c, i, j, k]
            Y[o, a, e, f] = sum(c, i, j, k) X[c, a + i, e + j, f + k] * W[o, c, i, j, k]
            return Y
        }"""),
    "a window read from an offset (sliced first)": ("F.conv1d(", """
        axis x
        axis c = 2, o = 2, k = 2
        axis p = x - 3
        def f(X: R[c, x]) -> R[o, p] {
            param W: R[o, c, k]
            Y[o, p] = sum(c, k) X[c, p + k + 2] * W[o, c, k]
            return Y
        }"""),
    "max pool 2 x 2, stride 2": ("F.max_pool2d(", """
        axis b, yh, xh
        axis y = 2 * yh, x = 2 * xh, s = 2, t = 2
        def f(X: R[b, y, x]) -> R[b, yh, xh] {
            W[b, yh, xh, s, t] = X[b, 2*yh + s, 2*xh + t]
            return max[s, t](W)
        }"""),
    "max pool 3, stride 2, padded with -inf": ("F.max_pool1d(", """
        axis x
        axis c = 2, k = 3, xp = x + 2, xs = (x - 1) // 2 + 1
        def f(X: R[c, x]) -> R[c, xs] {
            P = pad[x -> xp, before=1, after=1, value=-inf](X)
            W[c, xs, k] = P[c, 2*xs + k]
            return max[k](W)
        }"""),
    "mean pool as a mean": ("F.avg_pool2d(", """
        axis yh, xh
        axis c = 2, y = 2 * yh, x = 2 * xh, s = 2, t = 2
        def f(X: R[c, y, x]) -> R[c, yh, xh] {
            W[c, yh, xh, s, t] = X[c, 2*yh + s, 2*xh + t]
            return mean[s, t](W)
        }"""),
    "mean pool as a scaled sum, zero padding counted": ("F.avg_pool1d(", """
        axis x
        axis k = 3, xp = x + 2
        def f(X: R[x]) -> R[x] {
            P = pad[x -> xp, before=1, after=1](X)
            Y[x] = sum(k) P[x + k] / 3
            return Y
        }"""),
    "a sum pool (a mean pool times its window)": ("F.avg_pool1d(", """
        axis x
        axis k = 2, p = x - 1
        def f(X: R[x]) -> R[p] {
            W[p, k] = X[p + k]
            return sum[k](W)
        }"""),
    "causal padding: padded alike on the right, the extra outputs dropped": ("padding=2)[", """
        axis x
        axis c = 2, o = 2, k = 3, xp = x + 2
        def f(X: R[c, x]) -> R[o, x] {
            param W: R[o, c, k]
            P = pad[x -> xp, before=2](X)
            Y[o, x] = sum(c, k) P[c, x + k] * W[o, c, k]
            return Y
        }"""),
    "padding on the right alone stays a pad": ("F.conv1d(", """
        axis x
        axis c = 2, o = 2, k = 3, xp = x + 2
        def f(X: R[c, x]) -> R[o, x] {
            param W: R[o, c, k]
            P = pad[x -> xp, after=2](X)
            Y[o, x] = sum(c, k) P[c, x + k] * W[o, c, k]
            return Y
        }"""),
    "padding with ones stays a pad": ("F.conv1d(", """
        axis x
        axis c = 2, o = 2, k = 3, xp = x + 2
        def f(X: R[c, x]) -> R[o, x] {
            param W: R[o, c, k]
            P = pad[x -> xp, before=1, after=1, value=1](X)
            Y[o, x] = sum(c, k) P[c, x + k] * W[o, c, k]
            return Y
        }"""),
    "a max pool over zero padding keeps the pad": ("F.max_pool1d(", """
        axis x
        axis k = 3, xp = x + 2
        def f(X: R[x]) -> R[x] {
            P = pad[x -> xp, before=1, after=1](X)
            W[x, k] = P[x + k]
            return max[k](W)
        }"""),
}


@pytest.mark.parametrize("case", sorted(FUSED))
def test_kernel_calls_agree_with_the_interpreter(case: str) -> None:
    call, text = FUSED[case]
    source = ncd.load(text).compile("f")
    assert call in source, source
    assert "unfold" not in source and "torch.einsum" not in source, source
    _agrees(text)


def test_paddings_are_taken_in_only_when_the_kernel_pads_alike() -> None:
    assert _windows(FUSED["conv1d, padding inside the call, bias"][1]) == [("conv", 1, True)]
    assert _windows(FUSED["depthwise with bias (groups = channels)"][1]) == [
        ("conv", 2, True)]
    assert _windows(FUSED["max pool 3, stride 2, padded with -inf"][1]) == [("max", 1, False)]
    assert _windows(FUSED["causal padding: padded alike on the right, the extra outputs "
                          "dropped"][1]) == [("conv", 1, False)]
    for case in ("padding on the right alone stays a pad",
                 "padding with ones stays a pad", "a max pool over zero padding keeps the pad"):
        source = ncd.load(FUSED[case][1]).compile("f")
        assert "F.pad(" in source, case
        assert _windows(FUSED[case][1])[0][1] == 0, case


# ---- written out: the kernel would compute something else, or an array must exist

NOT_FUSED = {
    "the windows are an output too": """
        axis x
        axis c = 2, o = 2, k = 2, p = x - 1
        def f(X: R[c, x]) -> (R[o, p], R[c, p, k]) {
            param W: R[o, c, k]
            V[c, p, k] = X[c, p + k]
            Y[o, p] = sum(c, k) V[c, p, k] * W[o, c, k]
            return Y, V
        }""",
    "a channel summed by the input alone": """
        axis x
        axis c = 2, o = 2, k = 2, p = x - 1
        def f(X: R[c, x]) -> R[o, p] {
            param W: R[o, k]
            Y[o, p] = sum(c, k) X[c, p + k] * W[o, k]
            return Y
        }""",
    "a kernel that is an input, not a parameter": """
        axis x
        axis c = 2, o = 2, k = 2, p = x - 1
        def f(X: R[c, x], W: R[o, c, k]) -> R[o, p] {
            Y[o, p] = sum(c, k) X[c, p + k] * W[o, c, k]
            return Y
        }""",
    "a window read backwards (a correlation flipped)": """
        axis x
        axis c = 2, o = 2, k = 2, p = x - 1
        def f(X: R[c, x]) -> R[o, p] {
            param W: R[o, c, k]
            Y[o, p] = sum(c, k) X[c, p - k + 1] * W[o, c, k]
            return Y
        }""",
    "the kernel reads an output position (a locally connected layer)": """
        axis c = 2, o = 2, k = 2, x = 5, p = 4
        def f(X: R[c, x]) -> R[o, p] {
            param W: R[o, c, p, k]
            Y[o, p] = sum(c, k) X[c, p + k] * W[o, c, p, k]
            return Y
        }""",
    "a minimum over a window": """
        axis x
        axis k = 2, p = x - 1
        def f(X: R[x]) -> R[p] {
            W[p, k] = X[p + k]
            return min[k](W)
        }""",
    "a mean pool with dilation (avg_pool has none)": """
        axis x
        axis k = 2, p = x - 2
        def f(X: R[x]) -> R[p] {
            W[p, k] = X[p + 2*k]
            return mean[k](W)
        }""",
}


@pytest.mark.parametrize("case", sorted(NOT_FUSED))
def test_what_no_kernel_computes_is_written_out(case: str) -> None:
    text = NOT_FUSED[case]
    source = ncd.load(text).compile("f")
    assert not any(f"F.{kernel}" in source for kernel in
                   ("conv1d", "conv2d", "max_pool1d", "avg_pool1d")), source
    assert _windows(text) == []
    _agrees(text)


# ---- against the modules a user would write, in float64


def _module(text: str, name: str = "f") -> torch.nn.Module:
    return ncd.load(text).to_torch(name).double().eval()


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), [
    (1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (3, 1, 1, 2), (1, 1, 1, 4), (2, 0, 3, 4)])
def test_conv2d_computes_what_nn_conv2d_computes(stride: int, padding: int, dilation: int,
                                                  groups: int) -> None:
    c, o, k = 4, 8, 3
    rows = f"{stride}*p + {dilation}*ky, {stride}*q + {dilation}*kx"
    pad = (f"P = pad[v -> vp, before={padding}, after={padding}]"
           f"(pad[u -> up, before={padding}, after={padding}](X))") if padding else "P = X"
    text = f"""
        axis b, u, v
        axis g = {groups}, c = {c // groups}, o = {o // groups}, ky = {k}, kx = {k}
        axis up = u + {2 * padding}, vp = v + {2 * padding}
        axis p = (up - {dilation * (k - 1)} - 1) // {stride} + 1
        axis q = (vp - {dilation * (k - 1)} - 1) // {stride} + 1
        def f(X: R[b, g, c, u, v]) -> R[b, g, o, p, q] {{
            param W: R[g, o, c, ky, kx]
            param d: R[g, o]
            {pad}
            Y[b, g, o, p, q] = sum(c, ky, kx) P[b, g, c, {rows}] * W[g, o, c, ky, kx]
            return Y + d
        }}"""
    source = ncd.load(text).compile("f")
    assert "F.conv2d(" in source and "F.pad" not in source, source
    module = _module(text)
    reference = nn.Conv2d(c, o, k, stride=stride, padding=padding, dilation=dilation,
                          groups=groups).double()
    with torch.no_grad():
        # the same numbers: the module keeps its declared layout (state dicts load as before)
        assert tuple(module.W.shape) == (groups, o // groups, c // groups, k, k)
        reference.weight.copy_(module.W.reshape(o, c // groups, k, k))
        reference.bias.copy_(module.d.reshape(o))
        for shape in ((2, c, 11, 9), (3, 2, c, 8, 12)):  # leading batch dims too
            X = torch.randn(*shape, dtype=torch.float64)
            expected = reference(X.reshape(-1, c, *shape[-2:])).reshape(
                *shape[:-3], groups, o // groups, *reference(X.reshape(-1, c, *shape[-2:]))
                .shape[-2:])
            actual = module(X.reshape(*shape[:-3], groups, c // groups, *shape[-2:]))
            torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 0, 1), (2, 1, 2), (3, 2, 1)])
def test_conv1d_computes_what_nn_conv1d_computes(stride: int, padding: int,
                                                  dilation: int) -> None:
    pad = f"P = pad[x -> xp, before={padding}, after={padding}](X)" if padding else "P = X"
    text = f"""
        axis b, x
        axis c = 3, o = 5, k = 4, xp = x + {2 * padding}
        axis p = (xp - {dilation * 3} - 1) // {stride} + 1
        def f(X: R[b, c, x]) -> R[b, o, p] {{
            param W: R[o, c, k]
            {pad}
            Y[b, o, p] = sum(c, k) P[b, c, {stride}*p + {dilation}*k] * W[o, c, k]
            return Y
        }}"""
    assert "F.conv1d(" in ncd.load(text).compile("f")
    module = _module(text)
    reference = nn.Conv1d(3, 5, 4, stride=stride, padding=padding, dilation=dilation,
                          bias=False).double()
    with torch.no_grad():
        reference.weight.copy_(module.W)
        for length in (13, 14, 20):
            X = torch.randn(2, 3, length, dtype=torch.float64)
            torch.testing.assert_close(module(X), reference(X))


def test_pools_compute_what_nn_max_pool2d_and_nn_avg_pool2d_compute() -> None:
    text = """
        axis b, u, v
        axis c = 3, s = 3, t = 3, up = u + 2, vp = v + 2
        axis p = (u - 1) // 2 + 1, q = (v - 1) // 2 + 1
        def maximum(X: R[b, c, u, v]) -> R[b, c, p, q] {
            Q = pad[u -> up, before=1, after=1, value=-inf](X)
            P = pad[v -> vp, before=1, after=1, value=-inf](Q)
            W[b, c, p, q, s, t] = P[b, c, 2*p + s, 2*q + t]
            return max[s, t](W)
        }
        def average(X: R[b, c, u, v]) -> R[b, c, p, q] {
            P = pad[v -> vp, before=1, after=1](pad[u -> up, before=1, after=1](X))
            W[b, c, p, q, s, t] = P[b, c, 2*p + s, 2*q + t]
            return mean[s, t](W)
        }"""
    source = ncd.load(text).compile()
    assert "F.max_pool2d(" in source and "F.avg_pool2d(" in source and "F.pad" not in source
    for name, reference in (("maximum", nn.MaxPool2d(3, 2, padding=1)),
                            ("average", nn.AvgPool2d(3, 2, padding=1))):
        module = _module(text, name)
        for shape in ((2, 3, 9, 10), (3, 9, 7)):
            X = torch.randn(*shape, dtype=torch.float64)
            torch.testing.assert_close(module(X) if len(shape) == 4 else
                                       module(X[None])[0], reference(X))


def test_the_gallery_convolutions_are_kernel_calls() -> None:
    expected = {"lenet5": ["F.conv2d(", "F.avg_pool2d("], "resnet_block": ["F.conv2d("],
                "depthwise_separable": ["F.conv2d("], "conv1d": ["F.conv1d("],
                "unet_level": ["F.conv2d(", "F.max_pool2d("]}
    for stem, calls in expected.items():
        source = ncd.load(f"gallery/{stem}.ncd").compile()
        for call in calls:
            assert call in source, (stem, call)
        assert "unfold" not in source, stem


def test_gallery_gradients_match_the_written_out_terms() -> None:
    """The depthwise block's gradients through `F.conv2d(groups=...)` are the einsum's."""
    module = _module(open("gallery/depthwise_separable.ncd").read(), "depthwise_separable")
    X = torch.randn(2, 32, 7, 6, dtype=torch.float64, requires_grad=True)
    module(X).square().sum().backward()
    assert X.grad is not None
    grad_x, grad_k = X.grad.clone(), module.K.grad.clone()
    X.grad = None
    module.zero_grad()
    windows = X.unfold(-2, 3, 1).unfold(-2, 3, 1)
    D = torch.einsum("bcpquv,cuv->bcpq", windows, module.K) + module.b_d[:, None, None]
    Y = torch.einsum("bcpq,oc->bopq", D, module.W_p) + module.b_p[:, None, None]
    Y.square().sum().backward()
    torch.testing.assert_close(grad_x, X.grad)
    torch.testing.assert_close(grad_k, module.K.grad)


# ---- nearest-neighbour upsampling: broadcast views copied, one axis at a time

UPSAMPLING = """
    axis yh, xh
    axis c = 2, y = 2 * yh, x = 3 * xh
    def f(X: R[c, yh, xh]) -> R[c, y, x] {
        U[c, y, x] = X[c, y // 2, x // 3]
        return U
    }"""


def test_nearest_upsampling_is_views_copied_an_axis_at_a_time_as_f_interpolate_computes_it(
        ) -> None:
    """Each repeated axis is one view and one copy, the last axis first (`x` by 3, then `y`
    by 2), with no index tensors: what `F.interpolate(mode="nearest")` computes, values and
    gradients."""
    source = ncd.load(UPSAMPLING).compile("f")
    assert source.count(".expand(") == 2 and "torch.arange" not in source, source
    assert source.index("size_xh, 3))") < source.index("size_yh, 2, 3 * size_xh)"), source
    _agrees(UPSAMPLING)
    module = _module(UPSAMPLING)
    X = torch.randn(4, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    ours = module(X)
    expected = torch.nn.functional.interpolate(X, scale_factor=(2, 3), mode="nearest")
    torch.testing.assert_close(ours, expected)
    weights = torch.randn_like(ours)
    torch.testing.assert_close(torch.autograd.grad(ours, X, weights),
                               torch.autograd.grad(expected, X, weights))


def test_upsampling_to_fewer_entries_than_the_factor_gives_stays_a_gather() -> None:
    text = UPSAMPLING.replace("y = 2 * yh", "y = 2 * yh - 1")
    source = ncd.load(text).compile("f")
    assert ".expand(" not in source and "torch.arange" in source, source
    _agrees(text)


def test_the_generated_code_of_every_case_is_lint_clean_and_formatted(tmp_path: Path) -> None:
    texts = [*(text for _, text in FUSED.values()), *NOT_FUSED.values(), UPSAMPLING]
    for index, text in enumerate(texts):
        (tmp_path / f"case_{index}.py").write_text(ncd.load(text).compile())
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", "--isolated", "--line-length", "100", "--select",
                            "E,F,W,B,UP", str(tmp_path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    formatted = subprocess.run([*ruff, "format", "--isolated", "--line-length", "100",
                                "--check", str(tmp_path)], capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout


def test_an_array_laid_out_as_the_kernel_takes_it_is_passed_as_it_is() -> None:
    """With no leading batch dims the call takes X itself (no view before or after it, the
    ops of `F.conv1d` alone); with leading dims the reshaping branch runs; both compute what
    `F.conv1d` computes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    program = ncd.load(FUSED["conv1d, stride 2 and dilation 2"][1])
    assert "F.conv1d(X, W, None, stride=2, dilation=2)" in program.compile("f")
    module = program.to_torch("f")
    X = torch.randn(5, 3, 11)
    with torch.no_grad():
        with Ops() as ops:
            Y = module(X)
        assert ops.names == ["convolution"]
        F = torch.nn.functional
        torch.testing.assert_close(Y, F.conv1d(X, module.W, stride=2, dilation=2))
        stacked = torch.stack([X, X.flip(0)])
        torch.testing.assert_close(module(stacked), torch.stack(
            [F.conv1d(x, module.W, stride=2, dilation=2) for x in stacked]))


def test_an_output_laid_out_otherwise_is_moved_into_place_after_the_call() -> None:
    """Channels last in the output (`Y[b, p, o]`, as ViT's patches): the kernel still takes
    the array as it is where it has no leading dims, and its output is moved after the call,
    in both branches."""
    program = ncd.load(textwrap.dedent("""
    axis b
    axis c = 3, o = 4, x = 12, k = 3
    axis p = (x - k) // 3 + 1
    def f(X: R[b, c, x]) -> R[b, p, o] {
        param W: R[o, c, k]
        Y[b, p, o] = sum(c, k) X[b, c, 3*p + k] * W[o, c, k]
        return Y
    }
    """))
    source = program.compile("f")
    fast = "X.dim() == 3:\n            convolution = F.conv1d(X, W, None, stride=3)\n"
    assert fast in source, source
    assert "Y = convolution.transpose(-2, -1)  # axes back in place" in source, source
    module = program.to_torch("f").double()
    F = torch.nn.functional
    X = torch.randn(5, 3, 12, dtype=torch.float64)
    torch.testing.assert_close(module(X), F.conv1d(X, module.W, stride=3).transpose(-2, -1))
    stacked = torch.stack([X, X.flip(0)])  # a leading dim more: the reshaping branch
    torch.testing.assert_close(module(stacked), torch.stack(
        [F.conv1d(x, module.W, stride=3).transpose(-2, -1) for x in stacked]))
