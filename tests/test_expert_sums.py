"""A weighted sum of experts, `sum(e) G * f[each e](X)`, compiled as a loop that adds one
copy's weighted output at a time (`compilers/expert_sums.py`): the same values and gradients as
the sum written out, held to the interpreter and to `torch.einsum` over the stacked outputs,
and the peak memory of a hand-written loop over `nn.ModuleList` experts."""

from __future__ import annotations

import pytest
import torch
from differential import compare_text
from measure import peak_forward_bytes

import ncd

SOURCE = """axis b, x, e = 3
axis m = 4, n = 5

def expert(X: R[m]) -> R[n] {
    return tanh(linear[m -> n, bias](X, W, c))
}

def gated(X: R[x, m]) -> R[x, n] {
    G = softmax[e](linear[m -> e](X, Wg))
    Z = expert[each e](X)
    Y[x, n] = sum(e) G[x, e] * Z[x, e, n]
    return Y
}

def mix(X: R[b, x, m], G: R[e, x]) -> R[b, x, n] {
    Z = expert[each e](X)
    Y[b, x, n] = sum(e) Z[b, x, e, n] * G[e, x]
    return Y
}

def routed(X: R[x, e, m], G: R[x, e]) -> R[x, n] {
    Z = expert[each e](X)
    Y[x, n] = sum(e) G[x, e] * Z[x, e, n]
    return Y
}

def fixed(X: R[x, m]) -> R[x, n] {
    G[e] = e + 1
    Z = expert[each e](X)
    Y[x, n] = sum(e) G[e] * Z[x, e, n]
    return Y
}

def lone(X: R[m]) -> R[n] {
    param C: R[n]
    return tanh(C)
}

def tiled(X: R[x, m], G: R[x, e]) -> R[x, n] {
    Z = lone[each e](X)
    Y[x, n] = sum(e) G[x, e] * Z[x, e, n]
    return Y
}

def twice(X: R[x, m], G: R[x, e]) -> (R[x, n], R[x, e, n]) {
    Z = expert[each e](X)
    Y[x, n] = sum(e) G[x, e] * Z[x, e, n]
    return Y, Z
}
"""

LOOP = "one copy at a time"


@pytest.fixture(scope="module")
def program() -> ncd.Program:
    return ncd.load(SOURCE)


def test_matches_are_lowered_as_a_loop_and_others_stacked(program: ncd.Program) -> None:
    for name in ("gated", "mix", "routed", "fixed"):  # fixed: one number weighs each copy
        source = program.compile(name)
        assert LOOP in source and "torch.stack" not in source, name
    # The experts' outputs returned too, or computed from parameters alone (tiled over x):
    # stacked as written.
    for name in ("twice", "tiled"):
        source = program.compile(name)
        assert LOOP not in source and "torch.stack" in source, name


def test_a_copys_weights_are_a_slice_where_it_broadcasts_as_it_is(program: ncd.Program
                                                                    ) -> None:
    """`G[x, e]` against the copy's `[x, n]`: `G.narrow(-1, i, 1)`, one view, stands in for
    `n`; `G[e, x]` against `[b, x, n]` needs a size-1 dim after it anyway: a selection."""
    for name in ("gated", "routed", "fixed"):
        source = program.compile(name)
        assert "G.narrow(-1, index, 1) * self.expert[index](" in source, name
        assert ".select(-1, index)" not in source, name
    assert "G.select(-2, index)[..., None, :, None]" in program.compile("mix")


def test_compiled_equals_interpreter() -> None:
    reports = compare_text(SOURCE, sizes=2)
    for name, report in reports.items():
        assert not report.findings, (name, report.findings)
        assert report.skipped is None and report.compared, (name, report)


def _written_out(module: torch.nn.Module, name: str, x: torch.Tensor,
                 g: torch.Tensor) -> torch.Tensor:
    """The sum as written: every copy's output stacked along e, then one `torch.einsum`."""
    copies = list(module.expert)
    if name == "mix":
        z = torch.stack([copy(x) for copy in copies], dim=-2)  # b x e n
        return torch.einsum("bxen,ex->bxn", z, g)
    if name == "routed":
        z = torch.stack([copy(x[:, i]) for i, copy in enumerate(copies)], dim=-2)
        return torch.einsum("xe,xen->xn", g, z)
    raise AssertionError(name)


@pytest.mark.parametrize(("name", "x_shape", "g_shape"),
                         [("mix", (2, 3, 4), (3, 3)), ("routed", (6, 3, 4), (6, 3))])
def test_values_and_gradients_equal_the_stacked_einsum(program: ncd.Program, name: str,
                                                       x_shape: tuple[int, ...],
                                                       g_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    module = program.to_torch(name, dtype=torch.float64)
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(g_shape, dtype=torch.float64, requires_grad=True)
    actual = module(x, g)
    expected = _written_out(module, name, x, g)
    torch.testing.assert_close(actual, expected)
    weights = torch.randn_like(expected)
    leaves = [x, g, *module.parameters()]
    ours = torch.autograd.grad((actual * weights).sum(), leaves)
    theirs = torch.autograd.grad((expected * weights).sum(), leaves)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference)


class _Loop(torch.nn.Module):
    """The hand-written mixture: each expert's output weighted and added as it comes."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(x @ self.module.Wg, dim=-1)
        out = weights[..., 0:1] * self.module.expert[0](x)
        for i in range(1, len(self.module.expert)):
            out = out + weights[..., i:i + 1] * self.module.expert[i](x)
        return out


def test_peak_memory_is_the_hand_loop(program: ncd.Program) -> None:
    """Bytes allocated and alive at once (tests/measure.py), not time: the generated forward
    holds no list of outputs and no stacked copy, so it peaks as the hand-written loop does,
    below the stacked sum."""
    module = program.to_torch("gated", dtype=torch.float64)
    x = torch.randn(64, 4, dtype=torch.float64)
    loop = _Loop(module)
    torch.testing.assert_close(module(x), loop(x))
    ours, hand = peak_forward_bytes(module, [x]), peak_forward_bytes(loop, [x])
    copies = list(module.expert)

    def stacked(x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(x @ module.Wg, dim=-1)
        return torch.einsum("xe,xen->xn", weights, torch.stack([c(x) for c in copies], -2))

    class _Stacked(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return stacked(x)

    assert ours <= hand < peak_forward_bytes(_Stacked(), [x])
