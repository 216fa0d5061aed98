"""Sizes: the symbolic normal form, derived axes, overrides, and the sizes that tensor
equations solve (convolution windows, strides, dilations) or reject (out of bounds)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from conftest import diagnostics, err, nodes, ok, sizes
from hypothesis import given, settings
from hypothesis import strategies as st

from ncd import ir
from ncd.sizes import Size, from_ir

x, w, m = Size.sym("x"), Size.sym("w"), Size.sym("m")


# ---- the normal form ---------------------------------------------------------------------


def test_equal_sizes_have_one_normal_form() -> None:
    assert x - w + 1 == 1 + x - w
    assert (x + 1) * 2 == 2 * x + 2
    assert (x - w + 1) * (x + 1) == x * x + 2 * x - w * x - w + 1
    assert x - x == Size.const(0)
    assert (4 * m).exact_div(4) == m


def test_floor_division_simplifies_when_it_can() -> None:
    assert Size.const(7).floor_div(2) == Size.const(3)
    assert (4 * x + 8).floor_div(4) == x + 2
    opaque = (x - 3).floor_div(2)
    assert not opaque.is_const and opaque.symbols == frozenset()
    assert opaque == (x - 3).floor_div(2)
    assert opaque + 1 - 1 == opaque
    with pytest.raises(ZeroDivisionError):
        x.floor_div(0)


def test_text_reads_like_the_source() -> None:
    assert str((x - w).floor_div(2) + 1) == "(x - w) // 2 + 1"
    assert str(x - 2 * w + 2) == "x - 2 * w + 2"
    assert str(-w - x) == "-w - x"
    assert str(x.exact_div(2)) == "x / 2"


def test_evaluate_and_compare() -> None:
    size = (x - w).floor_div(2) + 1
    assert size.evaluate({"x": 11, "w": 3}) == Fraction(5)
    assert size.evaluate({"x": 11}) is None
    assert x + 1 != x + 2 and (x + 1) - (x + 2) == Size.const(-1)
    assert x != w


sizes_strategy = st.recursive(
    st.one_of(st.integers(-5, 20).map(Size.const), st.sampled_from([x, w, m])),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: p[0] + p[1]),
        st.tuples(inner, inner).map(lambda p: p[0] - p[1]),
        st.tuples(inner, inner).map(lambda p: p[0] * p[1]),
        st.tuples(inner, st.integers(1, 4)).map(lambda p: p[0].floor_div(p[1])),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(sizes_strategy, st.integers(1, 30), st.integers(1, 30), st.integers(1, 30))
def test_ir_form_round_trips_and_evaluates_like_python(size: Size, vx: int, vw: int,
                                                       vm: int) -> None:
    expr = size.to_ir()
    again = from_ir(expr)
    assert again == size
    env = {"x": vx, "w": vw, "m": vm}
    assert again.evaluate(env) == size.evaluate(env)
    restored = ir.Axis.model_validate_json(ir.Axis(name="a", size=expr).model_dump_json())
    assert from_ir(restored.size) == size


# ---- declared and derived axes ----------------------------------------------------------------


DERIVED = "axis x\naxis m = 512, h = 8, k = m / h, f = 4 * m, half = m // 2, p = x - 2\n"


def axis_sizes(src: str, overrides: dict[str, int] | None = None) -> dict[str, str]:
    return {a.name: ir.size_text(a.size) for a in ok(src, sizes=overrides).axes}


def test_derived_axes() -> None:
    assert axis_sizes(DERIVED) == {"x": "x", "m": "512", "h": "8", "k": "64", "f": "2048",
                                   "half": "256", "p": "x - 2"}


def test_overrides_recompute_derived_axes() -> None:
    assert axis_sizes(DERIVED, {"m": 1024, "x": 100}) == {
        "x": "100", "m": "1024", "h": "8", "k": "128", "f": "4096", "half": "512", "p": "98"}


def test_override_of_a_derived_axis_replaces_its_formula() -> None:
    assert axis_sizes(DERIVED, {"k": 32})["k"] == "32"


def test_overridden_sizes_reach_the_definitions() -> None:
    program = ok(DERIVED + "def f(X: R[x, k]) -> R[x, k] { return X }", {"m": 256, "x": 7})
    assert sizes(program.definition("f").inputs[0].array) == {"x": "7", "k": "32"}


def test_bad_overrides() -> None:
    found = diagnostics(DERIVED, {"mm": 3})
    assert [d.code for d in found] == ["E314"] and "did you mean `m`?" in (found[0].hint or "")
    assert [d.code for d in diagnostics(DERIVED, {"m": -1})] == ["E314"]
    # an override that makes a derived division inexact is reported where the formula is
    err(DERIVED, "E309", at="2:26", sizes={"m": 100, "h": 3})


def test_symbolic_size_is_fixed_by_override_only() -> None:
    assert axis_sizes("axis x")["x"] == "x"
    assert axis_sizes("axis x", {"x": 5})["x"] == "5"


# ---- sizes solved by tensor equations -------------------------------------------------------


def window(src_equation: str, decl: str = "axis x, w\naxis c = 3\n",
           overrides: dict[str, int] | None = None) -> dict[str, str]:
    program = ok(decl + "def f(X: R[c, x]) -> R[c] {\n  " + src_equation
                 + "\n  return sum[p, w](P)\n}", overrides)
    (reindexing,) = nodes(program.definition("f"), ir.Reindexing)
    return sizes(reindexing.cod[0])  # type: ignore[attr-defined]


def test_strided_window_size_symbolic() -> None:
    assert window("P[c, p, w] = X[c, 2*p + w]") == {"c": "3", "p": "(x - w) // 2 + 1", "w": "w"}


def test_strided_window_size_concrete() -> None:
    assert window("P[c, p, w] = X[c, 2*p + w]", overrides={"x": 11, "w": 3})["p"] == "5"
    assert window("P[c, p, w] = X[c, 2*p + w]", overrides={"x": 12, "w": 3})["p"] == "5"
    assert window("P[c, p, w] = X[c, 2*p + w]", overrides={"x": 13, "w": 3})["p"] == "6"


def test_plain_window_and_dilation() -> None:
    assert window("P[c, p, w] = X[c, p + w]")["p"] == "x - w + 1"
    assert window("P[c, p, w] = X[c, p + 2*w]")["p"] == "x - 2 * w + 2"
    assert window("P[c, p, w] = X[c, p + 2*w]", overrides={"x": 10, "w": 3})["p"] == "6"


@pytest.mark.parametrize(("index", "size_x", "expected"), [
    ("2*p + 1", 10, 5),   # 1, 3, 5, 7, 9
    ("3*p", 10, 4),       # 0, 3, 6, 9
    ("p + 4", 10, 6),     # 4 .. 9
])
def test_slices_and_strides(index: str, size_x: int, expected: int) -> None:
    program = ok(f"axis x = {size_x}\ndef f(X: R[x]) -> R[x] {{\n  Y[p] = X[{index}]\n"
                 "  return X\n}")
    (reindexing,) = nodes(program.definition("f"), ir.Reindexing)
    assert reindexing.cod[0].shape.axes[0].value == expected  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3))
def test_solved_window_is_the_largest_in_bounds(size_x: int, size_w: int, stride: int,
                                                dilation: int) -> None:
    reach = dilation * (size_w - 1)
    src = (f"axis x = {size_x}, w = {size_w}\ndef f(X: R[x]) -> R[w] {{\n"
           f"  P[p, w] = X[{stride}*p + {dilation}*w]\n  return sum[p](P)\n}}")
    if size_x - 1 - reach < 0:
        err(src, "E304")
        return
    program = ok(src)
    (reindexing,) = nodes(program.definition("f"), ir.Reindexing)
    count = reindexing.cod[0].shape.axis("p").value  # type: ignore[attr-defined]
    assert count == (size_x - 1 - reach) // stride + 1
    last = stride * (count - 1) + reach
    assert last <= size_x - 1 < last + stride  # in bounds, and one more would not be


def test_declared_result_axis_must_match_the_window() -> None:
    src = ("axis x, w = 3, c = 2\naxis p = (x - w) // 2 + 1\n"
           "def f(X: R[c, x]) -> R[c, p] {\n  P[c, p, w] = X[c, 2*p + w]\n  return max[w](P)\n}")
    assert sizes(ok(src).definition("f").outputs[0].array)["p"] == "(x - 3) // 2 + 1"
    assert sizes(ok(src, {"x": 9}).definition("f").outputs[0].array)["p"] == "4"


def test_out_of_bounds_index_is_reported() -> None:
    diagnostic = err("axis m = 8\ndef f(X: R[m]) -> R[m] {\n  Y[m] = X[m] * X[m + 1]\n"
                     "  return Y\n}", "E304", at="3:19")
    assert "reaches 8" in diagnostic.message and "0 to 7" in diagnostic.message
    assert diagnostic.notes and diagnostic.notes[0].span is not None
    assert (diagnostic.notes[0].span.line, diagnostic.notes[0].span.column) == (3, 12)


def test_fixed_index_out_of_bounds() -> None:
    err("axis m = 4\ndef f(X: R[m, m2]) -> R[m2] {\n  Y[j] = X[4, j]\n  return Y\n}\n"
        "axis m2 = 4, j = 4", "E304", at="3:12")


def test_symbolic_bounds_are_not_guessed() -> None:
    # x + 1 may or may not fit: the checker does not know x, so it does not complain
    ok("axis x, y\ndef f(X: R[x]) -> R[x] {\n  Y[y] = X[y + 1]\n  return X\n}")


# ---- size mismatches point at both places ------------------------------------------------------


def test_size_mismatch_reports_both_locations() -> None:
    diagnostic = err("axis m = 8, n = 4\ndef f(X: R[m, n]) -> R[m] {\n  D[i] = X[i, i]\n"
                     "  return D\n}", "E300", at="3:15")
    assert "size 4" in diagnostic.message and "8" in diagnostic.message
    (note,) = diagnostic.notes
    assert note.span is not None and (note.span.line, note.span.column) == (3, 12)


def test_operator_size_mismatch_points_at_the_declaration() -> None:
    diagnostic = err("axis x, m = 8, n = 4\ndef f(X: R[x, m]) -> R[x, n] {\n"
                     "  return rename[m -> n](X)\n}", "E300", at="3:22")
    (note,) = diagnostic.notes
    assert note.span is not None and (note.span.line, note.span.column) == (1, 16)


def test_split_sizes_must_add_up() -> None:
    err("axis x, c = 8, a = 3, b = 4\ndef f(X: R[x, c]) -> R[x, a] {\n"
        "  P, Q = split[c -> a b](X)\n  return P\n}", "E300", at="3:16")


def test_reshape_sizes_must_multiply_up() -> None:
    err("axis x, m = 8, h = 3, k = 2\ndef f(X: R[x, m]) -> R[x, h, k] {\n"
        "  return reshape[m -> h k](X)\n}", "E300", at="3:18")


def test_reused_parameter_with_other_sizes() -> None:
    diagnostic = err("axis x, m = 8, n = 4\ndef f(X: R[x, m], Z: R[x, n]) -> R[x, n] {\n"
                     "  A = linear[m -> n](X, W)\n  B = linear[n -> n](Z, W)\n  return A\n}",
                     "E301", at="4:25")
    assert diagnostic.notes and diagnostic.notes[0].span is not None
    assert diagnostic.notes[0].span.line == 3


def test_no_override_complaint_when_the_file_does_not_parse() -> None:
    assert [d.code for d in diagnostics("axis m = 4 $", {"m": 8, "zz": 1})] == ["E100"]


def test_an_index_named_after_a_declared_axis_keeps_its_declared_size() -> None:
    """`q` is declared with size 1; reading an axis of size 12 through it is a mismatch, shown
    at the index with a note at the declaration."""
    diagnostic = err("axis x = 12, q = 1\n"
                     "def f(X: R[x]) -> R[q] {\n"
                     "    Z[q] = X[q]\n"
                     "    return Z\n"
                     "}\n", "E300", at="3:14")
    assert "declared with size 1" in diagnostic.message
    assert diagnostic.notes and diagnostic.notes[0].span is not None
    assert diagnostic.notes[0].span.line == 1
