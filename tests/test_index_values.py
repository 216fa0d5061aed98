"""Indices as values (`P[x] = x`, `R[x, y] = x - y`), new indices on the left that copy along
a declared axis, and indices divided (`y // 2`) or reduced (`i % n`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import err, ok, one
from differential import compare_text

import ncd
from ncd import ir
from ncd.formatter import format_source


def agrees_with_interpreter(text: str) -> None:
    for name, report in compare_text(text).items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


TABLES = """axis x = 5, y = 4, f = 3, m = 2
def tables(F: R[f]) -> (R[x], R[x, y], R[x, f]) {
    P[x] = x
    Rel[x, y] = x - y + 1
    A[x, f] = x * F[f]
    return P, Rel, A
}
"""


def test_index_values_are_aranges() -> None:
    module = ncd.load(TABLES).to_torch("tables").double()
    freqs = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    P, Rel, A = module(freqs)
    x = torch.arange(5, dtype=torch.float64)
    torch.testing.assert_close(P, x)
    torch.testing.assert_close(Rel, x[:, None] - torch.arange(4.0, dtype=torch.float64) + 1)
    torch.testing.assert_close(A, x[:, None] * freqs)
    assert P.dtype == torch.float64  # an index value is a real, of the inputs' dtype
    agrees_with_interpreter(TABLES)


def test_index_values_in_the_ir() -> None:
    definition = ok(TABLES).definition("tables")
    values = [t for t in ir.walk(definition.body) if isinstance(t, ir.Broadcasted)
              and isinstance(t.op, ir.IndexValueOp)]
    assert [t.op.text for t in values if isinstance(t.op, ir.IndexValueOp)] == \
        ["x", "x - y + 1", "x"]
    rel = values[1].op
    assert isinstance(rel, ir.IndexValueOp)
    assert rel.coefficients == (("x", 1), ("y", -1)) and rel.offset == 1
    assert values[1].cod[0].dtype == ir.REALS


def test_index_values_of_several_indices_compile_to_short_lines() -> None:
    """Each index's positions get a line of their own, so the generated code stays within 100
    columns (as ruff checks it) however many indices a value names."""
    text = """axis x, y = x, p = 2, q = p
def f(S: R[x, y]) -> (R[x, y], R[p, q]) {
    Rel[x, y] = 2*x - y + 1
    Turn[p, q] = p - q
    return S * Rel, Turn
}
"""
    program = ncd.load(text)
    code = program.compile("f")
    assert max(len(line) for line in code.splitlines()) <= 100
    S = torch.randn(5, 5, dtype=torch.float64)
    got, turn = program.to_torch("f").double()(S)
    x = torch.arange(5.0, dtype=torch.float64)
    torch.testing.assert_close(got, S * (2 * x[:, None] - x + 1))
    torch.testing.assert_close(turn, torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64))
    agrees_with_interpreter(text)


def test_sinusoidal_positions_written_directly() -> None:
    text = """axis x = 6, f = 4
def sinusoid(Inv: R[f]) -> R[x, f] {
    A[x, f] = x * Inv[f]
    return sin(A)
}
"""
    module = ncd.load(text).to_torch("sinusoid")
    inv = torch.rand(4)
    torch.testing.assert_close(module(inv), torch.sin(torch.arange(6.0)[:, None] * inv))


CONSTANTS = """axis v = 4, e = 6, n = 3
def degrees(Dst: N[v][e]) -> (R[v], R[e, n]) {
    One[e] = 1
    Minus[e, n] = -2
    return scatter_add[e -> v](One, Dst), Minus
}
"""


def test_an_integer_alone_is_a_constant_array() -> None:
    """`One[e] = 1`: every coefficient zero, the offset 1 (counting, as a degree needs)."""
    module = ncd.load(CONSTANTS).to_torch("degrees")  # no real input: the default dtype
    Dst = torch.tensor([0, 2, 2, 3, 0, 2])
    degree, minus = module(Dst)
    torch.testing.assert_close(degree, torch.zeros(4).index_add_(0, Dst, torch.ones(6)))
    torch.testing.assert_close(minus, torch.full((6, 3), -2.0))
    values = [t.op for t in ir.walk(ok(CONSTANTS).definition("degrees").body)
              if isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.IndexValueOp)]
    assert [(op.coefficients, op.offset, op.text) for op in values
            if isinstance(op, ir.IndexValueOp)] == [((), 1, "1"), ((), -2, "-2")]
    agrees_with_interpreter(CONSTANTS)


def test_a_constant_array_is_an_integer_along_declared_axes() -> None:
    source = "axis e = 3\ndef f(X: R[e]) -> R[e] {{\n    H[{}] = {}\n    return X + H\n}}"
    diagnostic = err(source.format("e", "0.5"), "E313", "3:12")
    assert "written with an integer" in diagnostic.message
    assert diagnostic.hint is not None and "H * 0.5" in diagnostic.hint
    err(source.format("q", "1"), "E201", "3:7")


BROADCAST = """axis s = 3, x = 4, m = 2
def copies(X: R[x, m]) -> R[s, x, m] {
    Y[s, x, m] = X[x, m]
    return Y
}
"""


def test_a_new_index_copies_along_its_declared_axis() -> None:
    module = ncd.load(BROADCAST).to_torch("copies")
    X = torch.randn(4, 2)
    torch.testing.assert_close(module(X), X.expand(3, 4, 2))
    agrees_with_interpreter(BROADCAST)


def test_a_new_index_needs_a_declared_axis() -> None:
    diagnostic = err("axis x = 4, m = 2\ndef f(X: R[x, m]) -> R[q, x, m] {\n"
                     "    Y[q, x, m] = X[x, m]\n    return Y\n}", "E313", "3:7")
    assert "index `q` does not occur on the right side" in diagnostic.message


UPSAMPLE = """axis b = 2, c = 3, h = 3, w = 4, y = 6, x = 8
def up(X: R[b, c, h, w]) -> R[b, c, y, x] {
    U[b, c, y, x] = X[b, c, y // 2, x // 2]
    return U
}
"""


def test_divided_indices_are_nearest_neighbour_upsampling() -> None:
    module = ncd.load(UPSAMPLE).to_torch("up")
    X = torch.randn(2, 3, 3, 4, requires_grad=True)
    Y = module(X)
    reference = F.interpolate(X, scale_factor=2, mode="nearest")
    torch.testing.assert_close(Y, reference)
    Y.sum().backward()
    assert X.grad is not None
    torch.testing.assert_close(X.grad, torch.full_like(X, 4.0))
    agrees_with_interpreter(UPSAMPLE)


def test_a_divided_index_stays_inside_its_axis() -> None:
    src = "axis h = 3, y = {}\ndef f(X: R[h]) -> R[y] {{\n    U[y] = X[y // 2]\n    return U\n}}"
    ok(src.format(6))
    err(src.format(7), "E304", "3:14")


def test_remainders_read_cyclically() -> None:
    text = "axis i = 7, n = 3\n\ndef f(V: R[n]) -> R[i] {\n    C[i] = V[(i + 1) % n]\n" \
           "    return C\n}\n"
    module = ncd.load(text).to_torch("f")
    V = torch.tensor([10.0, 20.0, 30.0])
    torch.testing.assert_close(module(V), V[(torch.arange(7) + 1) % 3])
    agrees_with_interpreter(text)
    assert format_source(text) == text


def test_index_errors_are_located() -> None:
    err("axis i = 7, n = 3\ndef f(V: R[n]) -> R[i] {\n    C[i] = V[i % 4]\n    return C\n}",
        "E304", "3:14")
    err("axis i = 7, n = 3\ndef f(V: R[n]) -> R[i] {\n    C[i] = V[i % 0]\n    return C\n}",
        "E306", "3:18")
    err("axis i = 7, n = 3\ndef f(V: R[n]) -> R[i] {\n    C[i] = V[(i // 2) + 1]\n"
        "    return C\n}", "E306", "3:15")
    err("axis x = 4, y = 4\ndef f(X: R[x]) -> R[x, y] {\n    Y[x, y] = X[x * y]\n"
        "    return Y\n}", "E306", "3:17")


def test_percent_is_not_arithmetic_of_arrays() -> None:
    err("axis x = 4\ndef f(X: R[x]) -> R[x] {\n    return X % 2\n}", "E307", "3:14")


def test_glyphs_and_overview() -> None:
    program = ok(UPSAMPLE)
    gather = one(program.definition("up"), "gather")
    assert isinstance(gather.op, ir.GatherOp)
    assert [t.text for t in gather.op.indices] == ["b", "c", "y // 2", "x // 2"]
