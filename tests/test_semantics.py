"""The reference interpreter (`ncd.semantics`) against PyTorch's own modules and functions, and
the compiled modules against the interpreter on the cases that once compiled wrongly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from differential import compare_definition, compare_text
from torch import nn

import ncd
from ncd import ir
from ncd.semantics import (
    BlockCopy,
    BoundsError,
    CallSite,
    Interpreter,
    ParameterPath,
    ParameterSource,
    SizeError,
    resolve_sizes,
)

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
CLOSE = {"rtol": 1e-10, "atol": 1e-10}


def weights(values: Mapping[str, torch.Tensor]) -> ParameterSource:
    """A parameter source from `{"path.name": tensor}` (path steps joined by dots; a block
    copy is `title#index`)."""

    def source(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        steps = [step.instance if isinstance(step, CallSite) else f"{step.title}#{step.index}"
                 for step in path]
        return values[".".join([*steps, parameter.name])]

    return source


def run(text: str, name: str, inputs: list[torch.Tensor],
        params: Mapping[str, torch.Tensor] | None = None,
        sizes: Mapping[str, int] | None = None) -> tuple[torch.Tensor, ...]:
    program = ncd.load(text).ir
    return Interpreter(program, sizes or {}, weights(params or {})).run(name, inputs)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


# ------------------------------------------------------------------ base operations vs torch


def test_linear_with_bias_is_nn_linear() -> None:
    layer = nn.Linear(5, 3, dtype=torch.float64)
    X = randn(4, 5)
    (Y,) = run("axis b, m = 5, n = 3\n"
               "def f(X: R[b, m]) -> R[b, n] { return linear[m -> n, bias](X, W, c) }",
               "f", [X], {"W": layer.weight.detach().T, "c": layer.bias.detach()}, {"b": 4})
    torch.testing.assert_close(Y, layer(X).detach(), **CLOSE)


def test_strided_dilated_convolution_is_f_conv1d() -> None:
    X, W = randn(2, 3, 13), randn(4, 3, 3, seed=1)
    text = """
    axis b, x = 13, c = 3, o = 4, w = 3
    axis p = (x - 2 * (w - 1) - 1) // 2 + 1
    def conv(X: R[b, c, x]) -> R[b, o, p] {
        param W: R[o, c, w]
        Y[b, o, p] = sum(c, w) X[b, c, 2*p + 2*w] * W[o, c, w]
        return Y
    }
    """
    (Y,) = run(text, "conv", [X], {"W": W}, {"b": 2})
    torch.testing.assert_close(Y, F.conv1d(X, W, stride=2, dilation=2), **CLOSE)


def test_causal_attention_is_scaled_dot_product_attention() -> None:
    Q, K, V = randn(2, 5, 4), randn(2, 5, 4, seed=1), randn(2, 5, 4, seed=2)
    text = """
    axis h = 2, x = 5, k = 4
    def attend(Q: R[h, x, k], K: R[h, x, k], V: R[h, x, k]) -> R[h, x, k] {
        S[h, x, y] = sum(k) Q[h, x, k] * K[h, y, k] / sqrt(k)
        A = softmax[y](causal[x, y](S))
        O[h, x, k] = sum(y) A[h, x, y] * V[h, y, k]
        return O
    }
    """
    (out,) = run(text, "attend", [Q, K, V])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(Q, K, V, is_causal=True),
                               **CLOSE)


def test_norms_are_f_layer_norm_and_f_rms_norm() -> None:
    X, g, c = randn(3, 4, 5), randn(4, 5, seed=1), randn(4, 5, seed=2)
    text = """
    axis b = 3, s = 4, m = 5
    def ln(X: R[b, s, m]) -> R[b, s, m] { return layernorm[s, m, eps=0.001](X, g, c) }
    def rms(X: R[b, s, m]) -> R[b, s, m] { return rmsnorm[s, m](X, g) }
    """
    (Y,) = run(text, "ln", [X], {"g": g, "c": c})
    torch.testing.assert_close(Y, F.layer_norm(X, (4, 5), g, c, eps=0.001), **CLOSE)
    (Y,) = run(text, "rms", [X], {"g": g})
    torch.testing.assert_close(Y, F.rms_norm(X, (4, 5), g, eps=1e-6), **CLOSE)  # its default


def test_softmaxes_reductions_and_elementwise_functions_are_torch() -> None:
    X = randn(3, 4)
    text = """
    axis a = 3, b = 4
    def soft(X: R[a, b]) -> R[a, b] { return softmax[a](X) }
    def logsoft(X: R[a, b]) -> R[a, b] { return logsoftmax[a, b](X) }
    def lse(X: R[a, b]) -> R[b] { return logsumexp[a](X) }
    def top(X: R[a, b]) -> R[a] { return max[b](X) }
    def average(X: R[a, b]) -> R[b] { return mean[a](X) }
    def smooth(X: R[a, b]) -> R[a, b] { return gelu(silu(X)) }
    """
    torch.testing.assert_close(run(text, "soft", [X])[0], torch.softmax(X, 0), **CLOSE)
    torch.testing.assert_close(run(text, "logsoft", [X])[0],
                               torch.log_softmax(X.flatten(), 0).reshape(3, 4), **CLOSE)
    torch.testing.assert_close(run(text, "lse", [X])[0], torch.logsumexp(X, 0), **CLOSE)
    torch.testing.assert_close(run(text, "top", [X])[0], X.amax(1), **CLOSE)
    torch.testing.assert_close(run(text, "average", [X])[0], X.mean(0), **CLOSE)
    torch.testing.assert_close(run(text, "smooth", [X])[0], F.gelu(F.silu(X)), **CLOSE)


def test_softplus_is_f_softplus() -> None:
    """The interpreter's `log(1 + exp(x))`, over the whole range (no overflow where exp(x) is
    huge, no cancellation where it is tiny), and the compiled module held to it."""
    X = torch.cat([randn(3, 4) * 5, torch.tensor([[-800.0, -40.0, 40.0, 800.0]],
                                                  dtype=torch.float64)])
    text = "axis a = 4, b = 4\ndef f(X: R[a, b]) -> R[a, b] { return softplus(X) }"
    torch.testing.assert_close(run(text, "f", [X])[0], F.softplus(X), **CLOSE)
    no_findings(text)


def test_embedding_is_f_embedding() -> None:
    table, tokens = randn(7, 3), torch.tensor([[1, 6, 0], [2, 2, 5]])
    (Y,) = run("axis v = 7, m = 3, b = 2, t = 3\n"
               "def embed(T: N[v][b, t]) -> R[b, t, m] { return embedding[v -> m](T, E) }",
               "embed", [tokens], {"E": table})
    torch.testing.assert_close(Y, F.embedding(tokens, table), **CLOSE)
    # An index outside the vocabulary is a read out of bounds: the first, in row-major order.
    with pytest.raises(BoundsError, match=r"line 2\): index 9 is outside the vocabulary of "
                                          r"size 7"):
        run("axis v = 7, m = 3, b = 2, t = 3\n"
            "def embed(T: N[v][b, t]) -> R[b, t, m] { return embedding[v -> m](T, E) }",
            "embed", [torch.tensor([[1, 6, 9], [-1, 2, 8]])], {"E": table})


def test_structure_is_cat_split_pad_flip_and_reshape() -> None:
    X = randn(2, 6)
    text = """
    axis a = 2, b = 6, c = b + b, p = 2, q = 4, r = b + 3, u = 3
    def joined(X: R[a, b]) -> R[a, c] { return concat[b d -> c](X, rename[b -> d](X)) }
    def parts(X: R[a, b]) -> R[a, q] {
        L, M = split[b -> p q](X)
        return M
    }
    def padded(X: R[a, b]) -> R[a, r] { return pad[b -> r, before=1, after=2, value=-1](X) }
    def flipped(X: R[a, b]) -> R[a, b] {
        Y[a, b] = X[a, 5 - b]
        return Y
    }
    def folded(X: R[a, b]) -> R[b, a] { return reshape[a b -> b a](X) }
    def cut(X: R[a, b]) -> R[a, p, u] { return reshape[b -> p u](X) }
    """
    torch.testing.assert_close(run(text, "joined", [X])[0], torch.cat([X, X], 1), **CLOSE)
    torch.testing.assert_close(run(text, "parts", [X])[0], X[:, 2:], **CLOSE)
    torch.testing.assert_close(run(text, "padded", [X])[0], F.pad(X, (1, 2), value=-1),
                               **CLOSE)
    torch.testing.assert_close(run(text, "flipped", [X])[0], X.flip(1), **CLOSE)
    torch.testing.assert_close(run(text, "folded", [X])[0], X.reshape(6, 2), **CLOSE)
    torch.testing.assert_close(run(text, "cut", [X])[0], X.reshape(2, 2, 3), **CLOSE)


def test_diagonal_and_window_are_torch_views() -> None:
    X = randn(4, 4, 9)
    text = """
    axis m = 4, x = 9, w = 3, p = x - w + 1
    def diagonal(X: R[m, m2, x]) -> R[m, x] {
        Y[m, x] = X[m, m, x]
        return Y
    }
    def windows(X: R[m, m2, x]) -> R[m, m2, p, w] {
        Y[m, m2, p, w] = X[m, m2, p + w]
        return Y
    }
    axis m2 = m
    """
    torch.testing.assert_close(run(text, "diagonal", [X])[0],
                               torch.diagonal(X, dim1=0, dim2=1).T, **CLOSE)
    torch.testing.assert_close(run(text, "windows", [X])[0], X.unfold(2, 3, 1), **CLOSE)


def test_a_scan_is_an_elman_rnn() -> None:
    rnn = nn.RNN(3, 4, dtype=torch.float64)
    X = randn(5, 3)
    text = """
    axis t = 5, i = 3, n = 4
    def cell(H: R[n], Xt: R[i]) -> (R[n], R[n]) {
        Z = linear[i -> n, bias](Xt, Wi, bi) + linear[n -> n, bias](H, Wh, bh)
        H2 = tanh(Z)
        return H2, H2
    }
    def rnn(H0: R[n], X: R[t, i]) -> (R[n], R[t, n]) {
        H, Ys = scan[t](cell, H0, X)
        return H, Ys
    }
    """
    params = {"cell.Wi": rnn.weight_ih_l0.detach().T, "cell.bi": rnn.bias_ih_l0.detach(),
              "cell.Wh": rnn.weight_hh_l0.detach().T, "cell.bh": rnn.bias_hh_l0.detach()}
    H, Ys = run(text, "rnn", [torch.zeros(4, dtype=torch.float64), X], params)
    expected, last = rnn(X)
    torch.testing.assert_close(Ys, expected.detach(), **CLOSE)
    torch.testing.assert_close(H, last[0].detach(), **CLOSE)


def test_block_copies_have_their_own_parameters_and_shared_ones_do_not() -> None:
    W = [randn(2, 2, seed=s) for s in range(3)]
    X = randn(2)
    text = """
    axis m = 2
    def own(X: R[m]) -> R[m] { block "L" x3 { X = linear[m -> m](X, W) } return X }
    def shared(X: R[m]) -> R[m] { block "L" x3 shared { X = linear[m -> m](X, W) } return X }
    """
    program = ncd.load(text).ir
    seen: list[ParameterPath] = []

    def source(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        seen.append(path)
        return W[path[0].index] if path else W[0]

    (Y,) = Interpreter(program, {}, source).run("own", [X])
    assert seen == [(BlockCopy("L", 0),), (BlockCopy("L", 1),), (BlockCopy("L", 2),)]
    torch.testing.assert_close(Y, X @ W[0] @ W[1] @ W[2], **CLOSE)
    seen.clear()
    (Y,) = Interpreter(program, {}, source).run("shared", [X])
    assert seen == [(), (), ()]
    torch.testing.assert_close(Y, X @ W[0] @ W[0] @ W[0], **CLOSE)


def test_out_of_bounds_reads_and_invalid_sizes_are_errors() -> None:
    program = ncd.load("axis n\naxis x = n\ndef f(X: R[x]) -> R[n] {\n"
                       "    Y[n] = X[2*n]\n    return Y\n}\n").ir
    with pytest.raises(BoundsError, match=r"line 4.*2\*n = 2 is outside axis x of size 2"):
        Interpreter(program, {"n": 2}, weights({})).run("f", [randn(2)])
    (Y,) = Interpreter(program, {"n": 1}, weights({})).run("f", [randn(1)])
    assert Y.shape == (1,)
    symbolic = ncd.load("axis x\naxis h = x / 2\ndef f(X: R[x]) -> R[x] { return X }").ir
    with pytest.raises(SizeError, match="not a whole number"):
        resolve_sizes(symbolic, {"x": 3})
    with pytest.raises(SizeError, match="no value"):
        resolve_sizes(symbolic, {})
    with pytest.raises(SizeError, match="shape"):
        Interpreter(symbolic, {"x": 4}, weights({})).run("f", [randn(3)])


# ------------------------------------------------------- compiled modules vs the interpreter


def no_findings(text: str, sizes: int = 3) -> None:
    reports = compare_text(text, sizes=sizes)
    for name, report in reports.items():
        assert report.skipped is None, (name, report.skipped)
        assert report.compared + report.refused > 0, name
        assert not report.findings, "\n".join(map(str, report.findings))


def test_a_repeated_block_after_a_copy_writes_back() -> None:
    text = """
    axis m = 2
    def f(X: R[m]) -> R[m] {
        Y = X
        block "L" x2 shared { X = X * 2 }
        return X + Y
    }
    """
    no_findings(text)
    X = randn(2)
    torch.testing.assert_close(ncd.load(text).to_torch("f")(X), 5 * X)


@pytest.mark.parametrize("block", [
    'block "L" x2 { X = X * 2 }',
    'block "L" x3 { X = X + Y }',
    'block "L" x2 shared { X = relu(X) - Y }',
    'block "L" x2 { block "M" x2 { X = X * 2 } }',
])
def test_repeated_blocks_with_copies_agree_with_the_interpreter(block: str) -> None:
    no_findings(f"""
    axis m = 3
    def f(X: R[m]) -> R[m] {{
        Y = X
        {block}
        return X + Y
    }}
    """)


def test_a_residual_stack_that_keeps_its_input_agrees_with_the_interpreter() -> None:
    no_findings("""
    axis x, m = 4
    def ff(X: R[x, m]) -> R[x, m] { return linear[m -> m, bias](relu(X), W, b) }
    def stack(X: R[x, m]) -> R[x, m] {
        Input = X
        block "layer" x3 { X = X + ff(layernorm[m](X)) }
        return X - Input
    }
    """)


@pytest.mark.parametrize("read", ["X[3 - i]", "X[2 - i]"])
def test_reversal_agrees_with_the_interpreter(read: str) -> None:
    size = 4 if read == "X[3 - i]" else 3
    no_findings(f"""
    axis m = 4, i = {size}
    def f(X: R[b, m]) -> R[b, i] {{
        Y[b, i] = {read.replace("X[", "X[b, ")}
        return Y
    }}
    axis b
    """)


def test_a_window_read_backwards_agrees_with_the_interpreter() -> None:
    no_findings("""
    axis x, w = 3, p = x - w + 1
    def f(X: R[c, x]) -> R[c, p, w] {
        Y[c, p, w] = X[c, p - w + 2]
        return Y
    }
    axis c = 2
    """)


def test_a_symbolic_read_out_of_bounds_is_refused_not_truncated() -> None:
    """`Y[n] = X[2*n]` with `x = n` reads past the end for every n > 1. The checker cannot
    know n, so it accepts the program; the module must refuse those sizes when it runs (a
    module that returns numbers is a silent wrong result), and compute n = 1 as the
    interpreter does."""
    text = "axis n\naxis x = n\ndef f(X: R[x]) -> R[n] {\n    Y[n] = X[2*n]\n    return Y\n}\n"
    program = ncd.load(text)
    report = compare_definition(program.ir, "f", sizes=4)
    assert not report.findings, "\n".join(map(str, report.findings))
    assert report.skipped is None and report.refused >= 1 and report.compared >= 1, report


def test_scan_states_align_by_name() -> None:
    no_findings("""
    axis b = 2, h = 3, t = 4
    def cell(H: R[h, b], Xt: R[b]) -> (R[h, b], R[h, b]) {
        Z = tanh(H + Xt)
        return Z, Z
    }
    def f(H0: R[b, h], Xs: R[t, b]) -> (R[b, h], R[t, h, b]) {
        A, B = scan[t](cell, H0, Xs)
        return A, B
    }
    """)


GALLERY_SIZES = {"attention": {"m": 8, "h": 2}, "conv1d": {"x": 12, "c": 3, "o": 4},
                 "lstm": {"i": 3, "n": 4}, "mlp": {"m": 6, "f": 5, "n": 3},
                 "transformer": {"m": 8, "h": 2}}


@pytest.mark.parametrize("model", sorted(GALLERY_SIZES))
def test_gallery_modules_agree_with_the_interpreter(model: str) -> None:
    # The architectures added later are compared in tests/test_gallery_models.py, which checks
    # that the two lists together cover the gallery.
    assert set(GALLERY_SIZES) <= {p.stem for p in GALLERY.glob("*.ncd")}
    program = ncd.load(GALLERY / f"{model}.ncd", sizes=GALLERY_SIZES[model]).ir
    for definition in program.definitions:
        report = compare_definition(program, definition.name, sizes=2)
        assert report.skipped is None and report.compared == 2, (definition.name, report)
        assert not report.findings, "\n".join(map(str, report.findings))


# ------------------------------------------------------------------ the harness can fail


def test_the_harness_finds_a_wrong_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import differential

    class Wrong(nn.Module):
        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return X * 2 + 1e-6 * X.flip(-1)  # a wrong result, a millionth off

    monkeypatch.setattr(differential, "build_module", lambda *args, **kwargs: Wrong())
    program = ncd.load("axis m = 3\ndef f(X: R[m]) -> R[m] { return X * 2 }").ir
    report = compare_definition(program, "f")
    assert report.ill_conditioned == 0
    assert sorted({f.kind for f in report.findings}) == ["batch", "mismatch"]


def test_the_harness_finds_a_silent_out_of_bounds_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import differential

    class Truncating(nn.Module):
        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return X[..., ::2]  # what a strided slice past the end returns: fewer entries

    monkeypatch.setattr(differential, "build_module", lambda *args, **kwargs: Truncating())
    program = ncd.load("axis n\naxis x = n\ndef f(X: R[x]) -> R[n] {\n"
                       "    Y[n] = X[2*n]\n    return Y\n}\n").ir
    report = compare_definition(program, "f", sizes=3)
    assert "silent-out-of-bounds" in {f.kind for f in report.findings}


def test_the_harness_finds_parameters_that_should_be_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import differential

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = nn.Parameter(torch.randn(2, 2, dtype=torch.float64))
            copy = nn.Module()
            copy.W = self.W  # both copies of the block read one tensor
            self.l = nn.ModuleList([copy, copy])

        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return X @ self.W @ self.W

    monkeypatch.setattr(differential, "build_module", lambda *args, **kwargs: Shared())
    program = ncd.load('axis m = 2\ndef f(X: R[m]) -> R[m] {\n'
                       '    block "L" x2 { X = linear[m -> m](X, W) }\n    return X\n}\n').ir
    report = compare_definition(program, "f")
    assert {f.kind for f in report.findings} == {"parameters"}


def test_rounding_noise_of_an_ill_conditioned_output_is_not_a_finding() -> None:
    """The difference of an array normalised three times and five times is rounding noise;
    its log turns the noise into large numbers (and NaNs) that no two implementations share.
    The module disagrees with itself as much when its inputs move by rounding-level amounts,
    so the disagreement is counted as ill-conditioned, not as a finding."""
    report = compare_definition(ncd.load("""
    axis s = 6
    def f(X: R[s]) -> R[s] {
        block "B" x3 { X = layernorm[s](X) }
        Keep = X
        H = layernorm[s](layernorm[s](X))
        return log(H - Keep)
    }
    """).ir, "f")
    assert report.ill_conditioned > 0
    assert not report.findings, "\n".join(map(str, report.findings))


@pytest.mark.parametrize(("factor", "counts_as"), [("1000", "finding"), ("10000000", "set aside")])
def test_a_disagreement_past_a_million_is_set_aside_and_counted(
        monkeypatch: pytest.MonkeyPatch, factor: str, counts_as: str) -> None:
    """Past 1e6, float64 rounding in a base operation (a variance as a difference of squares)
    can differ from the formula by more than its epsilon: such disagreements are counted as
    ill-conditioned, not reported; below, the same wrong module is a finding."""
    import differential

    class Wrong(nn.Module):
        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return X * float(factor) * 1.01  # one percent off

    monkeypatch.setattr(differential, "build_module", lambda *args, **kwargs: Wrong())
    program = ncd.load(f"axis m = 3\ndef f(X: R[m]) -> R[m] {{ return X * {factor} }}").ir
    report = compare_definition(program, "f")
    if counts_as == "finding":
        assert report.findings and report.ill_conditioned == 0
    else:
        assert not report.findings and report.ill_conditioned > 0


def test_rounding_noise_that_a_normalisation_blows_up_is_not_a_finding() -> None:
    """Softmax after softmax makes the entries equal up to rounding; layer norms of them then
    blow that rounding up to order one. No perturbation of the inputs moves it, but the same
    module in float32 gives other numbers: ill-conditioned, counted, not a finding (found by
    the differential fuzzer, seed 9435)."""
    report = compare_definition(ncd.load("""
    axis a = 2, d = 4, b = 5, c = 2
    def f(Y: R[d], Z: R[b, c], T: N[a][]) -> R[d] {
        X = embedding[a -> d](T, E)
        block "S" x12 { X = softmax[d](softmax[d](X)) }
        block "N" x6 { X = X + layernorm[d](abs(X)) }
        return X
    }
    """).ir, "f", seed=9438)
    assert report.compared == 1
    assert report.ill_conditioned > 0
    assert not report.findings, "\n".join(map(str, report.findings))



def test_a_layer_norm_of_equal_entries_is_exactly_zero_as_the_kernel_gives_it() -> None:
    """The interpreter's mean is exact for a tile (or a batch norm channel) whose entries are
    equal, so its deviations are exactly 0, as `F.layer_norm` gives them. Before, the mean
    rounded: a callee that normalises a broadcast value returned 1 + 3.5e-14 where the module
    returned 1, and twelve residual layer norms of two such entries blew that up to
    [-6.1, 8.1] against the module's exact [1, 1], a reported mismatch (the differential
    fuzzer, semantic seed 28158)."""
    X = torch.full((2, 3), 0.1, dtype=torch.float64)
    text = """
    axis b = 2, d = 3
    def ln(X: R[b, d]) -> R[b, d] { return layernorm[d](X) }
    def bn(X: R[b, d]) -> R[b, d] { return batchnorm[b](X, mean, var) }
    """
    assert torch.equal(run(text, "ln", [X])[0], torch.zeros(2, 3, dtype=torch.float64))
    program = ncd.load(text).ir
    interpreter = Interpreter(program, {}, weights({"mean": torch.zeros(3),
                                                    "var": torch.ones(3)}), training=True)
    assert torch.equal(interpreter.run("bn", [X])[0], torch.zeros(2, 3, dtype=torch.float64))
    reports = compare_text("""
    axis y = 1
    axis k
    axis d3 = y + 2, d23 = k * y
    def object(x: R[y]) -> R[y] {
        Z[d3] = x[d3 % y]
        Keep = Z
        block "" x12 {
            T = layernorm[d3](Z)
            Z = T + relu(T) + Keep
        }
        D = Z - Keep
        Y[y] = D[y + 2]
        return exp(Y)
    }
    def f(X: R[y, k]) -> R[d23] {
        H = reshape[k y -> d23](object(X))
        block "Norm" x12 { H = H + layernorm[d23](H) }
        return H
    }
    """, seed=28158)
    assert reports["f"].compared, reports["f"].skipped
    assert not reports["f"].findings, "\n".join(map(str, reports["f"].findings))


# ------------------------------------------------------------------ arithmetic of issue 10


def test_constants_quotients_extrema_and_where_by_their_definitions() -> None:
    """The interpreter's formulas for `x + c`, `c - x`, `c / x`, `pow`, `X / N`, `maximum`,
    `minimum` and `where` (broadcast by name), held to PyTorch's functions."""
    X, N, Y = randn(3, 4), randn(3).abs() + 0.5, randn(4, 3, seed=1)
    C = randn(3, 4, seed=2) > 0
    text = """axis a = 3, b = 4, c = 4
    def f(X: R[a, b], N: R[a], Y: R[b, a], C: B[a, b]) -> (R[a, b], R[a, b], R[a],
            R[a, b], R[a, b], R[b, a], R[a, b], R[a, b], R[a, b, c]) {
        Z[a, b, c] = X[a, b] - Y[c, a]
        return X + 1e-5, 1 - X, 2 / N, pow[3](X), X / N, maximum(Y, N), minimum(X, Y),
            where(C, X, N), Z
    }
    """
    outputs = run(text, "f", [X, N, Y, C])
    expected = (X + 1e-5, 1 - X, 2 / N, torch.pow(X, 3), X / N[:, None],
                torch.maximum(Y, N[None, :]), torch.minimum(X, Y.T),
                torch.where(C, X, N[:, None]), X[:, :, None] - Y.T[:, None, :])
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(got, want, **CLOSE)


def test_new_functions_by_their_definitions() -> None:
    X = randn(5, 4) * 3
    text = ("axis a = 5, b = 4\ndef f(X: R[a, b]) -> (R[a, b], R[a, b], R[a, b], R[a, b], "
            "R[a, b], R[a, b]) {\n return reciprocal(X), rsqrt(abs(X)), sin(X), cos(X), erf(X), "
            "gelu_tanh(X)\n}")
    outputs = run(text, "f", [X])
    expected = (torch.reciprocal(X), torch.rsqrt(X.abs()), torch.sin(X), torch.cos(X),
                torch.erf(X), F.gelu(X, approximate="tanh"))
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(got, want, **CLOSE)


def test_maximum_and_minimum_keep_nan_as_torch_does() -> None:
    X = torch.tensor([float("nan"), 1.0, 2.0], dtype=torch.float64)
    Y = torch.tensor([0.0, float("nan"), 3.0], dtype=torch.float64)
    text = "axis a = 3\ndef f(X: R[a], Y: R[a]) -> (R[a], R[a]) { return maximum(X, Y), " \
           "minimum(X, Y) }"
    high, low = run(text, "f", [X, Y])
    torch.testing.assert_close(high, torch.maximum(X, Y), equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(low, torch.minimum(X, Y), equal_nan=True, rtol=0, atol=0)


def test_a_gather_from_a_scan_state_reads_the_declared_axis_order() -> None:
    """The state enters the scan as R[g, y] while the step declares R[y, g]: the scan's
    result is typed R[g, y], and a gather's coordinates follow that order, not the order in
    which the step happened to stack its arrays."""
    no_findings("""
    axis t = 3, y = 3, g = 2, d = 4
    def cell(H: R[y, g], X: R[g]) -> (R[y, g], R[y, g]) {
        Z = tanh(H + X)
        return Z, Z
    }
    def net(H0: R[g, y], S: R[t, g]) -> R[d, y] {
        Out, Seq = scan[t](cell, H0, S)
        A[d, y] = Out[(d + 1) % g, y]
        return A
    }
    """)


def test_sign_is_torch_sign_also_where_x_is_nan() -> None:
    """sign is -1, 0 or 1, and 0 where x is NaN (as torch.sign, the compiled call)."""
    X = torch.tensor([[float("nan"), -2.0, 0.0, 3.0, float("inf"), float("-inf")]],
                     dtype=torch.float64)
    text = "axis a = 1, b = 6\ndef s(X: R[a, b]) -> R[a, b] { return sign(X) }\n"
    torch.testing.assert_close(run(text, "s", [X])[0], torch.sign(X), **CLOSE)
    module = ncd.load(text).to_torch("s").double()
    torch.testing.assert_close(module(X), torch.sign(X), **CLOSE)
