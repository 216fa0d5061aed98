"""Each operator compiles to what the equivalent torch expression computes, whatever the
memory order of its axes and whatever leading batch dims its inputs carry."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from differential import compare_definition

import ncd

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def build(source: str, definition: str) -> torch.nn.Module:
    return ncd.load(textwrap.dedent(source)).to_torch(definition)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


HEADER = """
axis a = 3, b = 4, c = 5, n
"""


@pytest.mark.parametrize(("function", "reference"), [
    ("relu", F.relu), ("gelu", F.gelu), ("silu", F.silu), ("sigmoid", torch.sigmoid),
    ("tanh", torch.tanh), ("exp", torch.exp), ("neg", torch.neg), ("abs", torch.abs),
    ("square", torch.square), ("softplus", F.softplus),
])
def test_elementwise_functions(function: str, reference) -> None:
    module = build(HEADER + f"def f(X: R[n, a]) -> R[n, a] {{ return {function}(X) }}", "f")
    X = torch.randn(6, 3)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


def test_softplus_is_f_softplus_far_from_zero() -> None:
    """`log(1 + exp(x))` without overflow or loss where exp(x) is huge or tiny."""
    module = build(HEADER + "def f(X: R[n, a]) -> R[n, a] { return softplus(X) }", "f")
    X = torch.tensor([[-100.0, -20.0, -1e-3], [0.0, 25.0, 100.0]])
    torch.testing.assert_close(module(X), F.softplus(X), **TOLERANCE)
    assert torch.isfinite(module(X)).all()


def test_log_and_sqrt_on_positive_inputs() -> None:
    module = build(HEADER + "def f(X: R[a]) -> (R[a], R[a]) { return log(X), sqrt(X) }", "f")
    X = torch.rand(3) + 0.1
    log, sqrt = module(X)
    torch.testing.assert_close(log, torch.log(X), **TOLERANCE)
    torch.testing.assert_close(sqrt, torch.sqrt(X), **TOLERANCE)


def test_softmax_over_a_middle_axis_and_over_two_axes() -> None:
    module = build(HEADER + """
    def f(X: R[a, b, c]) -> (R[a, b, c], R[a, b, c], R[a, b, c]) {
        return softmax[b](X), softmax[a, c](X), logsoftmax[b](X)
    }""", "f")
    X = torch.randn(2, 3, 4, 5)
    one, two, log = module(X)
    torch.testing.assert_close(one, torch.softmax(X, dim=-2), **TOLERANCE)
    expected = torch.softmax(X.transpose(-2, -3).reshape(2, 4, 15), -1).reshape(2, 4, 3, 5)
    torch.testing.assert_close(two, expected.transpose(-2, -3), **TOLERANCE)
    torch.testing.assert_close(log, torch.log_softmax(X, dim=-2), **TOLERANCE)


@pytest.mark.parametrize(("function", "reference"), [
    ("sum", lambda X: X.sum((-3, -1))), ("mean", lambda X: X.mean((-3, -1))),
    ("max", lambda X: X.amax((-3, -1))), ("min", lambda X: X.amin((-3, -1))),
    ("logsumexp", lambda X: torch.logsumexp(X, (-3, -1))),
])
def test_reductions(function: str, reference) -> None:
    module = build(HEADER + f"def f(X: R[a, b, c]) -> R[b] {{ return {function}[a, c](X) }}",
                   "f")
    X = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(module(X), reference(X), **TOLERANCE)


def test_concat_split_rename_reshape() -> None:
    module = build("""
    axis a = 3, b = 4, c = 7, d = 3, h = 2, k = 6, m = 12, n
    def f(A: R[n, a], B: R[n, b], X: R[n, h, k]) -> (R[n, c], R[n, d], R[n, b], R[n, m],
                                                     R[n, h, k]) {
        J = concat[a b -> c](A, B)
        P, Q = split[c -> a b](J)
        M = reshape[h k -> m](X)
        return J, rename[a -> d](P), Q, M, reshape[m -> h k](M)
    }
    """, "f")
    A, B, X = torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 2, 6)
    joined, renamed, second, merged, split = module(A, B, X)
    torch.testing.assert_close(joined, torch.cat([A, B], -1), atol=0, rtol=0)
    torch.testing.assert_close(renamed, A, atol=0, rtol=0)
    torch.testing.assert_close(second, B, atol=0, rtol=0)
    torch.testing.assert_close(merged, X.reshape(5, 12), atol=0, rtol=0)
    torch.testing.assert_close(split, X, atol=0, rtol=0)


def test_concat_of_arrays_in_different_memory_orders() -> None:
    module = build("""
    axis a = 3, b = 4, c = 7, n
    def f(A: R[a, n], B: R[n, b]) -> R[n, c] { return concat[a b -> c](A, B) }
    """, "f")
    A, B = torch.randn(3, 5), torch.randn(5, 4)
    torch.testing.assert_close(module(A, B), torch.cat([A.T, B], -1), atol=0, rtol=0)


def test_broadcasting_sum_product_and_scale() -> None:
    module = build(HEADER + """
    def f(X: R[a, b], Y: R[b], Z: R[b, a]) -> R[a, b] { return (X + Y) * Z * 0.5 - X }
    """, "f")
    X, Y, Z = torch.randn(3, 4), torch.randn(4), torch.randn(4, 3)
    torch.testing.assert_close(module(X, Y, Z), (X + Y) * Z.T * 0.5 - X, **TOLERANCE)


def test_general_mask_conditions_and_fill() -> None:
    module = build("""
    axis x = 6, y = 6
    def band(S: R[x, y]) -> R[x, y] { return mask[x - y <= 1, y <= x + 2, fill=0](S) }
    """, "band")
    S = torch.randn(6, 6)
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    expected = torch.where((i - j <= 1) & (j <= i + 2), S, torch.zeros(()))
    torch.testing.assert_close(module(S), expected, atol=0, rtol=0)


def test_dropout_follows_training_mode() -> None:
    module = build(HEADER + "def f(X: R[n, a]) -> R[n, a] { return dropout[p=0.5](X) }", "f")
    X = torch.ones(200, 3)
    module.eval()
    torch.testing.assert_close(module(X), X)
    module.train()
    dropped = module(X)
    assert set(dropped.unique().tolist()) <= {0.0, 2.0} and (dropped == 0).any()


def test_einsum_with_a_diagonal_and_a_broadcast_operand() -> None:
    module = build("""
    axis i = 4, i2 = 4, j = 3
    def f(A: R[i, i2], B: R[j]) -> R[i, j] {
        C[i, j] = A[i, i] * B[j]
        return C
    }
    """, "f")
    A, B = torch.randn(4, 4), torch.randn(3)
    torch.testing.assert_close(module(A, B), torch.diagonal(A)[:, None] * B, **TOLERANCE)


@pytest.mark.parametrize(("equation", "code", "reference"), [
    ("Z[b, p, q] = sum(c) Y[b, c, p, q]", "Y.sum(-3)", "...bcpq->...bpq"),
    ("Z[q, b] = sum(c, p) Y[b, c, p, q]", "Y.sum((-3, -2)).transpose(-2, -1)", "...bcpq->...qb"),
    ("Z[p, q, b] = sum(c) Y[b, c, p, q]", "Y.sum(-3).movedim(", "...bcpq->...pqb"),
])
def test_a_sum_of_one_array_is_a_reduction_then_a_view(equation: str, code: str,
                                                       reference: str) -> None:
    """No `torch.einsum` (it parses its equation at every call, and reduces along a permuted
    layout when the output's axes come in another order): `sum`, then the kept axes moved."""
    names = equation[2:equation.index("]")]
    program = ncd.load(textwrap.dedent(f"""
    axis b, c = 3, p = 4, q = 5
    def f(Y: R[b, c, p, q]) -> R[{names}] {{
        {equation}
        return Z
    }}
    """))
    source = program.compile("f")
    assert "einsum" not in source and code in source
    module = program.to_torch("f", dtype=torch.float64)
    for shape in [(2, 3, 4, 5), (6, 2, 3, 4, 5)]:
        Y = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        expected = torch.einsum(reference, Y)
        actual = module(Y)
        torch.testing.assert_close(actual, expected)
        probe = torch.randn_like(expected)
        torch.testing.assert_close(torch.autograd.grad((actual * probe).sum(), Y)[0],
                                   torch.autograd.grad((expected * probe).sum(), Y)[0])


def test_a_product_that_sums_nothing_is_entrywise_on_batched_operands() -> None:
    program = ncd.load(textwrap.dedent("""
    axis i = 4, j = 3
    def f(A: R[i], B: R[j], C: R[j, i]) -> R[i, j] {
        D[i, j] = A[i] * B[j]
        E[i, j] = D[i, j] * C[j, i]
        return E
    }
    """))
    assert "einsum" not in program.compile("f")
    A, B, C = torch.randn(2, 4), torch.randn(3), torch.randn(5, 2, 3, 4)
    expected = torch.einsum("zi,j,yzji->yzij", A, B, C)
    torch.testing.assert_close(program.to_torch("f")(A, B, C), expected, **TOLERANCE)


@pytest.mark.parametrize("matrix", ["M[p, q]", "M[q, p]"])
def test_a_matrix_meeting_the_last_axis_is_one_matrix_product(matrix: str) -> None:
    program = ncd.load(textwrap.dedent(f"""
    axis b = 5, p = 3, q = 4
    def f(X: R[b, q]) -> R[b, p] {{
        param M: R[{matrix[2:-1]}]
        Y[b, p] = sum(q) {matrix} * X[b, q]
        return Y
    }}
    """))
    code = program.compile("f")
    assert "einsum" not in code and " @ M" in code
    module = program.to_torch("f")
    X = torch.randn(2, 5, 4)
    equation = "pq,zbq->zbp" if matrix == "M[p, q]" else "qp,zbq->zbp"
    torch.testing.assert_close(module(X), torch.einsum(equation, module.M, X), **TOLERANCE)


@pytest.mark.parametrize(("weight", "equation"), [
    ("W[o, c, u, v]", "ocuv,...bcuv->...bo"),         # as nn.Conv2d keeps a kernel: a dense layer
    ("W[c, u, v, o]", "cuvo,...bcuv->...bo"),
    ("W[o, p, c, u, v]", "opcuv,...bcuv->...bop"),    # two output axes: split again
    ("W[c, u, v, o, p]", "cuvop,...bcuv->...bop"),
])
def test_a_weight_meeting_several_trailing_axes_is_one_matrix_product(weight: str,
                                                                      equation: str) -> None:
    """The trailing axes summed against a weight that has them in the same order, before
    or after its others, flattened into one dim of one matrix product (LeNet-5's C5)."""
    output = "Y[b, o, p]" if "p" in weight else "Y[b, o]"
    program = ncd.load(textwrap.dedent(f"""
    axis b = 5, c = 3, u = 2, v = 4, o = 6, p = 2
    def f(X: R[b, c, u, v]) -> R[{output[2:-1]}] {{
        param W: R[{weight[2:-1]}]
        {output} = sum(c, u, v) X[b, c, u, v] * {weight}
        return Y
    }}
    """))
    code = program.compile("f")
    assert "einsum" not in code and "X.flatten(-3) @ W.flatten(" in code
    module = program.to_torch("f").double()
    for X in (torch.randn(5, 3, 2, 4, dtype=torch.float64),
              torch.randn(2, 7, 5, 3, 2, 4, dtype=torch.float64)):
        torch.testing.assert_close(module(X), torch.einsum(equation, module.W, X),
                                   **TOLERANCE)


def test_a_weight_meeting_axes_in_another_order_stays_an_einsum() -> None:
    """`W[o, u, c, v]` does not read the trailing axes in their order: flattening them would
    pair the wrong entries."""
    program = ncd.load(textwrap.dedent("""
    axis b = 5, c = 3, u = 2, v = 4, o = 6
    def f(X: R[b, c, u, v]) -> R[b, o] {
        param W: R[o, u, c, v]
        Y[b, o] = sum(c, u, v) X[b, c, u, v] * W[o, u, c, v]
        return Y
    }
    """))
    assert "torch.einsum(" in program.compile("f")
    module = program.to_torch("f").double()
    X = torch.randn(5, 3, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(module(X), torch.einsum("oucv,bcuv->bo", module.W, X),
                               **TOLERANCE)


def test_symbolic_size_solved_from_a_derived_input_axis() -> None:
    """|x| is read from an input whose axis has size 2 * x + 1."""
    module = build("""
    axis x, t = 2
    axis y = 2 * x + 1
    def pairs(A: R[y]) -> R[x, t] {
        B[x, t] = A[2*x + t]
        return B
    }
    """, "pairs")
    for length in (1, 5, 9):
        A = torch.randn(3, 2 * length + 1)
        torch.testing.assert_close(module(A), A[:, :2 * length].reshape(3, length, 2),
                                   atol=0, rtol=0)


@pytest.mark.parametrize(("positions", "convolved"), [(5, False), (4096, True)])
def test_a_pointwise_linear_map_is_a_convolution_only_on_a_large_plane(
        positions: int, convolved: bool) -> None:
    program = ncd.load(textwrap.dedent(f"""
    axis c = 4, o = 3, x = {positions}
    def f(X: R[c, x]) -> R[o, x] {{
        return linear[c -> o, bias](X, W, b)
    }}
    """))
    assert ("F.conv1d" in program.compile("f")) == convolved
    module = program.to_torch("f")
    X = torch.randn(2, 4, positions)
    expected = torch.einsum("co,zcx->zox", module.W, X) + module.b[:, None]
    torch.testing.assert_close(module(X), expected, **TOLERANCE)


@pytest.mark.parametrize("product", [
    "Y[t, m] = X[t, m] * D[m]",  # D's axis trails the output's: `*` lines it up
    "Y[t, m] = X[t, m] * X[t, m]",  # both batched, both whole
    "Y[t, m] = X[t, m] * E[t]",  # E's axis does not trail: a size-1 dim after it
    "Y[m, t] = X[t, m] * D[m]",  # X read transposed
])
def test_a_product_that_sums_nothing_is_one_multiplication(product: str) -> None:
    """Two operands, no axis summed: `a * b` of views laid out in the output's order, not
    einsum (whose per-call overhead is several times the product at small sizes)."""
    text = textwrap.dedent(f"""\
        axis t = 3, m = 4
        def f(X: R[t, m]) -> R[{product[2:6]}] {{
            param D: R[m] = normal(0, 1)
            param E: R[t] = normal(0, 1)
            {product}
            return Y
        }}
        """)
    program = ncd.load(text)
    source = program.compile("f")
    assert "torch.einsum(" not in source and " * " in source, source
    report = compare_definition(program.ir, "f")
    assert report.compared and not report.findings, report.findings
