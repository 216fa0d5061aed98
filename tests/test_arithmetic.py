"""Arithmetic as a model writes it: constants on either side of `+ - * /`, quotients of
arrays, the functions `reciprocal`, `rsqrt`, `pow`, `sin`, `cos`, `erf`, `gelu_tanh`,
`maximum`, `minimum` and `where`, and broadcasting by axis name (one operand's axes include
the other's, or the operator is an error naming both shapes; an outer sum is an equation).

Each construct is checked three ways: the IR it makes, the compiled module against PyTorch's
own function, and the compiled module against the reference interpreter (`compare_text`)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import diagnostics, err, ok, one
from differential import compare_text
from ncd.renderers import render_svg
from ncd.renderers.glyphs import glyph_of

import ncd
from ncd import ir
from ncd.formatter import format_source

AXES = "axis x, m = 4, n = 3\n"
TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def module(body: str, signature: str = "(X: R[x, m]) -> R[x, m]") -> torch.nn.Module:
    return ncd.load(AXES + f"def f{signature} {{\n{body}\n}}").to_torch("f").double()


def agrees_with_interpreter(text: str) -> None:
    reports = compare_text(text, every_definition=True)
    assert reports
    for name, report in reports.items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


def caption(program: ir.Program, kind: str) -> str:
    term = one(program.definition("f"), kind)
    label = glyph_of(term.op).caption(term.op, term)  # type: ignore[union-attr]
    assert label is not None
    return label.plain_text()


# ----------------------------------------------------------------------------- constants


@pytest.mark.parametrize(("expr", "reference"), [
    ("X + 1e-5", lambda X: X + 1e-5),
    ("1e-5 + X", lambda X: X + 1e-5),
    ("X - 0.5", lambda X: X - 0.5),
    ("1 - X", lambda X: 1 - X),
    ("2 / X", lambda X: 2 / X),
    ("X / 2", lambda X: X / 2),
    ("2 * X", lambda X: 2 * X),
    ("X + sqrt(m)", lambda X: X + 2.0),
    ("X * log(10000)", lambda X: X * math.log(10000)),
    ("X * (-2 * log(10000) / m)", lambda X: X * (-2 * math.log(10000) / 4)),
    ("exp(1) - X", lambda X: math.e - X),
    ("X / exp(log(m) / 2)", lambda X: X / 2),
    ("pow[3](X)", lambda X: torch.pow(X, 3)),
    ("pow[-0.5](abs(X) + 1)", lambda X: torch.pow(X.abs() + 1, -0.5)),
])
def test_constants_on_either_side(expr: str, reference) -> None:  # type: ignore[no-untyped-def]
    X = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(module(f"return {expr}")(X), reference(X), **TOLERANCE)


def test_constant_operations_in_the_ir() -> None:
    program = ok(AXES + "def f(X: R[x, m]) -> R[x, m] { return 1 - X }")
    assert one(program.definition("f"), "constant").op == ir.ConstantOp(
        op="-", constant=1.0, text="1", constant_first=True)
    program = ok(AXES + "def f(X: R[x, m]) -> R[x, m] { return X + 1e-5 }")
    assert one(program.definition("f"), "constant").op == ir.ConstantOp(
        op="+", constant=1e-5, text="1e-05")
    program = ok(AXES + "def f(X: R[x, m]) -> R[x, m] { return pow[2](X) }")
    assert one(program.definition("f"), "constant").op == ir.ConstantOp(
        op="^", constant=2.0, text="2")
    # a constant factor stays a scaling
    program = ok(AXES + "def f(X: R[x, m]) -> R[x, m] { return X / 4 }")
    assert one(program.definition("f"), "scale").op.factor == 0.25  # type: ignore[union-attr]


def test_log_and_exp_of_constants_are_constants() -> None:
    """`log(...)` and `exp(...)` of constants are constants, as `sqrt(...)` is: a frequency
    10000^(-2j / k) is written `exp(J * (-2 * log(10000) / k))`; in a tensor equation too."""
    program = ok(AXES + "def f(X: R[x, m]) -> R[x, m] { return X * (2 * log(10000) / m) }")
    scale = one(program.definition("f"), "scale").op
    assert isinstance(scale, ir.ScaleOp) and scale.factor == 2 * math.log(10000) / 4
    assert scale.text == "2*ln(10000)/|m|"
    text = AXES + """def f(X: R[x, m]) -> R[x, m] {
        Y[x, m] = X[x, m] * log(2) / exp(1)
        return Y
    }"""
    X = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(ncd.load(text).to_torch("f").double()(X),
                               X * math.log(2) / math.e, **TOLERANCE)
    agrees_with_interpreter(text)
    frequencies = """axis x, j = 4, k = 8
def f(X: R[x, j]) -> R[x, j] {
    J[j] = j
    Theta = exp(J * (-2 * log(10000) / k))
    A[x, j] = x * Theta[j]
    return X * cos(A)
}"""
    X = torch.randn(5, 4, dtype=torch.float64)
    angle = torch.arange(5.0, dtype=torch.float64)[:, None] * \
        10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    torch.testing.assert_close(ncd.load(frequencies).to_torch("f").double()(X),
                               X * torch.cos(angle), **TOLERANCE)


@pytest.mark.parametrize(("expr", "message"), [
    ("X * log(0)", "the logarithm of 0"),
    ("X * log(1 - m)", "the logarithm of -3"),
    ("X + exp(1000)", "exp(1000) is too large"),
])
def test_log_and_exp_of_constants_refuse_what_is_no_number(expr: str, message: str) -> None:
    diagnostic = err(AXES + f"def f(X: R[x, m]) -> R[x, m] {{ return {expr} }}", "E309")
    assert message in diagnostic.message


def test_log_of_an_array_in_an_equation_is_an_operator_in_its_own_statement() -> None:
    diagnostic = err(AXES + "def f(X: R[x, m]) -> R[x, m] {\n    Y[x, m] = log(X[x, m])\n"
                     "    return Y\n}", "E313")
    assert "in their own statements" in diagnostic.message


def test_constants_are_drawn_in_the_caption() -> None:
    def drawn(expr: str) -> str:
        return caption(ok(AXES + f"def f(X: R[x, m]) -> R[x, m] {{ return {expr} }}"),
                       "constant")

    # a formula (spaces are the typesetter's), e-notation upright, an exponent raised
    assert drawn("1 - X") == "1\u2212\u00b7"
    assert drawn("X + 1e-5") == "+ 1e-05"
    assert drawn("X - sqrt(m)") == "\u2212\u221a|m|"
    assert drawn("2 / X") == "2/\u00b7"
    assert drawn("pow[0.5](X)") == "(\u00b7)^0.5"


def test_layer_norm_written_out_with_its_epsilon() -> None:
    """The obstacle: `X + 1e-5`, `X / N` and `rsqrt` in a norm written by hand."""
    text = AXES + """
def f(X: R[x, m]) -> R[x, m] {
    mu = mean[m](X)
    D = X - mu
    var = mean[m](square(D))
    return D * rsqrt(var + 1e-5)
}
def g(X: R[x, m]) -> R[x, m] {
    N = sqrt(mean[m](square(X)) + 1e-6)
    return X / N
}
"""
    X = torch.randn(6, 4, dtype=torch.float64)
    program = ncd.load(text)
    torch.testing.assert_close(program.to_torch("f").double()(X),
                               F.layer_norm(X, (4,), eps=1e-5), **TOLERANCE)
    torch.testing.assert_close(program.to_torch("g").double()(X),
                               F.rms_norm(X, (4,), eps=1e-6), **TOLERANCE)
    agrees_with_interpreter(text)


# ----------------------------------------------------------------------------- functions


@pytest.mark.parametrize(("function", "reference"), [
    ("reciprocal", torch.reciprocal), ("rsqrt", torch.rsqrt), ("sin", torch.sin),
    ("cos", torch.cos), ("erf", torch.erf), ("sign", torch.sign), ("softplus", F.softplus),
    ("gelu_tanh", lambda X: F.gelu(X, approximate="tanh")),
])
def test_new_functions_are_torch_functions(function: str, reference) -> None:  # type: ignore[no-untyped-def]
    X = torch.randn(5, 4, dtype=torch.float64) * 3
    if function in ("reciprocal", "rsqrt"):
        X = X.abs() + 0.1
    torch.testing.assert_close(module(f"return {function}(X)")(X), reference(X), **TOLERANCE)


def test_gelu_tanh_compiles_to_the_approximate_gelu() -> None:
    source = ncd.load(AXES + "def f(X: R[x, m]) -> R[x, m] { return gelu_tanh(X) }").compile()
    assert 'F.gelu(X, approximate="tanh")' in source
    X = torch.linspace(-8, 8, 101, dtype=torch.float64).reshape(101, 1).expand(101, 4)
    torch.testing.assert_close(module("return gelu_tanh(X)")(X), F.gelu(X, approximate="tanh"),
                               **TOLERANCE)
    assert not torch.allclose(F.gelu(X, approximate="tanh"), F.gelu(X), atol=1e-6)


def test_gelu_options_point_to_gelu_tanh() -> None:
    found = err(AXES + "def f(X: R[x, m]) -> R[x, m] {\n    return gelu[tanh](X)\n}", "E307",
                at="3:17")
    assert found.hint is not None and "gelu_tanh(X)" in found.hint


def test_pow_takes_its_exponent_in_brackets() -> None:
    found = err(AXES + "def f(X: R[x, m]) -> R[x, m] {\n    return pow(X, 2)\n}", "E307",
                at="3:12")
    assert found.hint is not None and "pow[2](X)" in found.hint


# ----------------------------------------------------------------------------- two arrays


def test_division_and_extrema_broadcast_by_name() -> None:
    text = AXES + """
def f(X: R[x, m], N: R[x], Y: R[m, x]) -> (R[x, m], R[x, m], R[x, m], R[x, m]) {
    A = X / N
    B = N / X
    C = maximum(X, N)
    D = minimum(Y, X)
    return A, B, C, divide(D, Y)
}
"""
    X = torch.randn(5, 4, dtype=torch.float64)
    N = torch.rand(5, dtype=torch.float64) + 0.5
    Y = torch.randn(4, 5, dtype=torch.float64)
    A, B, C, D = ncd.load(text).to_torch("f").double()(X, N, Y)
    torch.testing.assert_close(A, X / N[:, None], **TOLERANCE)
    torch.testing.assert_close(B, N[:, None] / X, **TOLERANCE)
    torch.testing.assert_close(C, torch.maximum(X, N[:, None]), **TOLERANCE)
    torch.testing.assert_close(D, torch.minimum(Y.T, X) / Y.T, **TOLERANCE)
    program = ok(text)
    quotients = [t for t in ir.walk(program.definition("f").body)
                 if isinstance(t, ir.Broadcasted) and t.op == ir.BinaryOp(function="divide")]
    assert [t.outputs[0].array.names for t in quotients] == [("x", "m"), ("x", "m"),
                                                             ("m", "x")]
    agrees_with_interpreter(text)


def test_where_chooses_by_a_boolean_array() -> None:
    text = AXES + """
def f(C: B[x, m], X: R[x, m], Y: R[m]) -> R[x, m] {
    return where(C, X, Y)
}
"""
    C = torch.rand(5, 4) > 0.5
    X = torch.randn(5, 4, dtype=torch.float64)
    Y = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(ncd.load(text).to_torch("f").double()(C, X, Y),
                               torch.where(C, X, Y), **TOLERANCE)
    assert caption(ok(text), "where") == "where"
    agrees_with_interpreter(text)


def test_where_needs_a_boolean_condition() -> None:
    found = err(AXES + "def f(X: R[x, m]) -> R[x, m] {\n    return where(X, X, X)\n}", "E302",
                at="3:18")
    assert "boolean" in found.message


def test_every_new_construct_draws() -> None:
    text = AXES + """
def f(X: R[x, m], N: R[x], C: B[x, m]) -> R[x, m] {
    A = 1 - pow[2](X + 1e-5)
    B = maximum(A, N) / minimum(X, N)
    return where(C, gelu_tanh(B), erf(sin(cos(rsqrt(reciprocal(A))))))
}
"""
    svg = render_svg(ok(text), "f")
    assert svg.count("<path") > 10
    program = ok(text)
    assert caption(program, "where") == "where"
    terms = [t for t in ir.walk(program.definition("f").body)
             if isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.BinaryOp)]
    assert sorted(glyph_of(t.op).caption(t.op, t).plain_text()  # type: ignore[union-attr]
                  for t in terms) == ["max", "min", "\u00f7"]


# ----------------------------------------------------------------------------- broadcasting


def test_an_accidental_outer_sum_is_an_error_at_the_operator() -> None:
    """`linear[m -> n](X, W) + X` no longer builds `[x, n, m]` to fail at `return`."""
    text = AXES + "def f(X: R[x, m]) -> R[x, n] {\n    return linear[m -> n](X, W) + X\n}"
    (found,) = diagnostics(text)
    assert found.code == "E301"
    assert (found.span.line, found.span.column) == (3, 33)  # type: ignore[union-attr]
    assert "[x, n] and [x, m]" in found.message
    assert found.hint is not None and "Z[x, n, m] = A[x, n] + X[x, m]" in found.hint


@pytest.mark.parametrize(("expr", "column"), [
    ("A * B", 11), ("A - B", 11), ("A / B", 11), ("add(A, B)", 9), ("maximum(A, B)", 9),
    ("multiply(B, A, A)", 9),
])
def test_neither_shape_includes_the_other(expr: str, column: int) -> None:
    text = AXES + f"def f(A: R[x, n], B: R[x, m]) -> R[x, n] {{\n    Z = {expr}\n    return A\n}}"
    found = err(text, "E301", at=f"3:{column}")
    assert "[x, n]" in found.message and "[x, m]" in found.message


def test_inclusion_is_broadcasting() -> None:
    text = AXES + """
def f(X: R[x, m], b: R[m], N: R[x]) -> R[x, m] {
    param g: R[m] = ones
    A = X + b
    B = b * X - X
    return (A + B) * g / N
}
"""
    agrees_with_interpreter(text)


def test_an_outer_sum_is_written_as_an_equation() -> None:
    text = AXES + """
def f(X: R[x, m], A: R[x, n]) -> R[x, n, m] {
    Z[x, n, m] = A[x, n] + X[x, m]
    return Z
}
def g(X: R[x, m], A: R[n, x]) -> R[x, m, n] {
    Z[x, m, n] = A[n, x] * 2 - X[x, m] * X[x, m] + X
    return Z
}
"""
    X = torch.randn(5, 4, dtype=torch.float64)
    A = torch.randn(5, 3, dtype=torch.float64)
    program = ncd.load(text)
    torch.testing.assert_close(program.to_torch("f").double()(X, A),
                               A[:, :, None] + X[:, None, :], **TOLERANCE)
    torch.testing.assert_close(program.to_torch("g").double()(X, A.T.contiguous()),
                               2 * A[:, None, :] - (X * X)[:, :, None] + X[:, :, None],
                               **TOLERANCE)
    agrees_with_interpreter(text)


def test_a_summed_equation_is_one_product() -> None:
    text = AXES + ("def f(X: R[x, m], A: R[x, m]) -> R[x] {\n"
                   "    Z[x] = sum(m) A[x, m] + X[x, m]\n    return Z\n}")
    err(text, "E313", at="3:19")
    text = AXES + ("def f(X: R[x, m]) -> R[x, m] {\n"
                   "    Z[x, m] = X[x, m] + 1\n    return Z\n}")
    err(text, "E313", at="3:25")


# ----------------------------------------------------------------------------- formatting


def test_the_formatter_keeps_the_new_constructs() -> None:
    text = (AXES + "def f(X: R[x, m], N: R[x], C: B[x, m]) -> R[x, m] {\n"
            "    A=1-pow[2](X+1e-5)\n    B=maximum(A,N)/minimum(X,N)\n"
            "    Z[x, m]=A[x, m]+N[x]\n    return where(C,gelu_tanh(B),Z)\n}\n")
    formatted = format_source(text)
    assert "    A = 1 - pow[2](X + 1e-5)\n" in formatted
    assert "    B = maximum(A, N) / minimum(X, N)\n" in formatted
    assert "    Z[x, m] = A[x, m] + N[x]\n" in formatted
    assert format_source(formatted) == formatted
    assert ok(formatted).definition("f").body.cod == ok(text).definition("f").body.cod


def test_the_result_axes_are_in_the_order_first_seen() -> None:
    """As for `+` and `*`; `where` takes its order from X and Y before the condition."""
    program = ok(AXES + """
def f(X: R[x, m], B: R[m], C: B[m, x]) -> (R[x, m], R[x, m], R[x, m], R[x, m]) {
    return B / X, maximum(X, B), where(C, B, X), B + X
}
""")
    outputs = [t.outputs[0].array.names for t in ir.walk(program.definition("f").body)
               if isinstance(t, ir.Broadcasted) and t.op.kind in ("binary", "where", "add")]
    assert sorted(outputs) == sorted([("m", "x"), ("x", "m"), ("m", "x"), ("m", "x")])


def test_a_parameter_named_like_an_axis_is_the_parameter_not_the_size() -> None:
    """`exp(a)` with a buffer or parameter `a` and an axis `a`: the array, never the size."""
    for declaration in ("buffer a: R[m] = ones", "param a: R[m]"):
        program = ncd.load("axis x, m = 4, a = 2\n"
                           f"def f(X: R[x, m]) -> R[x, m] {{ {declaration}\n"
                           " return X * exp(a) }")
        kinds = {term.op.kind for term in ir.walk(program.ir.definition("f").body)
                 if isinstance(term, ir.Broadcasted)}
        assert "scale" not in kinds and "multiply" in kinds, kinds
