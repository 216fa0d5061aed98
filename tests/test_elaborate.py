"""Elaboration: each construct of the language gives the IR it means (types, axes, sizes, the
shape of the term), not merely "no exception"."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import pytest
from conftest import broadcasts, diagnostics, err, nodes, ok, one, sizes, text

import ncd
from ncd import ir
from ncd.diagnostics import NcdError
from ncd.operators import OPERATORS

AXES = "axis x, t\naxis y = x\naxis m = 8, n = 4, h = 2, k = 4, v = 10, a = 3, b = 5, c = 8\n"
LINE = AXES.count("\n")  # the line of the first definition is LINE + 1


def define(body: str, inputs: str = "X: R[x, m]", out: str = "R[x, m]") -> ir.Definition:
    """A one-definition program `f` over the standard axes."""
    program = ok(f"{AXES}def f({inputs}) -> {out} {{\n{body}\n}}")
    return program.definition("f")


# ---- axes and sizes ----------------------------------------------------------------------


def test_axis_sizes_integer_symbolic_and_derived() -> None:
    program = ok("axis x\naxis m = 512, h = 8, k = m / h, f = 4 * m, q = m // 3, r = x - 1")
    found = {a.name: a.size for a in program.axes}
    assert found["x"] == ir.SizeSym(name="x")
    assert found["m"] == ir.SizeConst(value=512)
    assert found["k"] == ir.SizeConst(value=64)
    assert found["f"] == ir.SizeConst(value=2048)
    assert found["q"] == ir.SizeConst(value=170)
    assert ir.size_text(found["r"]) == "x - 1"
    assert [a.name for a in program.axes] == ["x", "m", "h", "k", "f", "q", "r"]


def test_axes_used_in_types_carry_their_sizes() -> None:
    definition = ok("axis x, m = 4, k = m * 2\ndef f(X: R[x, k]) -> R[x, k] { return X }"
                    ).definition("f")
    (variable,) = definition.inputs
    assert sizes(variable.array) == {"x": "x", "k": "8"}


# ---- datatypes and signatures ---------------------------------------------------------------


def test_datatypes_real_natural_boolean() -> None:
    definition = define("return X", inputs="X: R[x, m], T: N[v][x], M: B[x, y]")
    dtypes = [v.array.dtype for v in definition.inputs]
    assert dtypes == [ir.REALS, ir.Datatype(kind="N", bound=ir.SizeConst(value=10)),
                      ir.Datatype(kind="B")]
    assert definition.inputs[1].array.text() == "N[10][x]"


def test_several_inputs_and_named_outputs() -> None:
    definition = define("Z = linear[m -> n](X, W)\nreturn Z, S",
                        inputs="X: R[x, m], S: R[x, y]", out="(P: R[x, n], Q: R[x, y])")
    assert [v.name for v in definition.inputs] == ["X", "S"]
    assert [v.name for v in definition.outputs] == ["P", "Q"]
    assert [v.array.text() for v in definition.outputs] == ["R[x, n]", "R[x, y]"]
    assert definition.body.cod == definition.codomain
    assert definition.body.dom == definition.domain


def test_unnamed_outputs_are_numbered() -> None:
    definition = define("return X, X", out="(R[x, m], R[x, m])")
    assert [v.name for v in definition.outputs] == ["Y1", "Y2"]


def test_result_in_another_axis_order_is_transposed() -> None:
    definition = define("return X", out="R[m, x]")
    (reindexing,) = nodes(definition, ir.Reindexing)
    assert isinstance(reindexing, ir.Reindexing)
    assert reindexing.eta.text() == "(m, x) -> (x, m)"
    assert reindexing.eta.is_rearrangement and not reindexing.eta.is_identity


# ---- tensor equations ----------------------------------------------------------------------


def test_contraction_is_one_einsum_with_broadcast_reindexings() -> None:
    definition = define("S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k]\nreturn S",
                        inputs="Q: R[x, h, k], K: R[y, h, k]", out="R[h, x, y]")
    einsum = one(definition, "einsum")
    assert einsum.op == ir.EinsumOp(contracted=("k",))
    assert einsum.degree.names == ("h", "x", "y")
    q, key = einsum.inputs
    assert q.targets == ("k",) and key.targets == ("k",)
    # Q is read at (h, x, y) -> (x, h): it ignores y (a delete in the index map)
    assert q.reindexing.text() == "(h, x, y) -> (x, h)"
    assert key.reindexing.text() == "(h, x, y) -> (y, h)"
    assert einsum.cod[0].names == ("h", "x", "y")


def test_scaling_inside_an_equation() -> None:
    definition = define("S[x, y] = sum(k) A[x, k] * B[y, k] / sqrt(k) * 0.5\nreturn S",
                        inputs="A: R[x, k], B: R[y, k]", out="R[x, y]")
    op = one(definition, "einsum").op
    assert isinstance(op, ir.EinsumOp)
    assert op.scale == pytest.approx(0.5 / 2)
    assert op.scale_text is not None and "√" in op.scale_text


def test_strided_convolution_reads_through_an_affine_window() -> None:
    program = ok("axis b = 2, c = 3, x = 32, w = 3, o = 4\naxis p = (x - w) // 2 + 1\n"
                 "def conv(X: R[b, c, x]) -> R[b, o, p] {\n"
                 "  param W: R[o, c, w] = normal(0, 0.02)\n"
                 "  Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w]\n"
                 "  return Y\n}")
    conv = program.definition("conv")
    (window,) = nodes(conv, ir.Reindexing)
    assert isinstance(window, ir.Reindexing)
    assert window.eta.text() == "(b, c, p, w) -> (b, c, 2*p + w)"
    assert window.eta.matrix == ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 2, 1))
    assert not window.eta.is_rearrangement
    assert sizes(window.cod[0]) == {"b": "2", "c": "3", "p": "15", "w": "3"}
    einsum = one(conv, "einsum")
    assert einsum.op == ir.EinsumOp(contracted=("c", "w"))
    (weight,) = einsum.params
    assert weight.name == "W" and weight.targets == ("c", "w")
    (param,) = conv.params
    assert (param.name, param.init, param.init_args) == ("W", "normal", (0.0, 0.02))


def test_diagonal_fixed_index_and_strided_slice() -> None:
    program = ok("axis c = 8, c2 = 8, i = 8, j = 8, s = 4\n"
                 "def f(A: R[c, c2], B: R[c]) -> (R[i], R[j], R[s]) {\n"
                 "  D[i] = A[i, i]\n  F[j] = A[3, j]\n  G[s] = B[2*s + 1]\n  return D, F, G\n}")
    f = program.definition("f")
    etas = {r.eta.text() for r in nodes(f, ir.Reindexing)}  # type: ignore[attr-defined]
    assert etas == {"(i) -> (i, i)", "(j) -> (3, j)", "(s) -> (2*s + 1)"}
    assert not broadcasts(f), "pure reindexings need no broadcasted operation"
    # B is read by one equation, A by two: A is copied
    (copy,) = nodes(f, ir.Rearrangement)
    assert isinstance(copy, ir.Rearrangement) and copy.mapping == (0, 0, 1)


def test_unindexed_array_in_an_equation_is_read_at_its_own_axes() -> None:
    definition = define("Y[x, m] = X * 2\nreturn Y")
    einsum = one(definition, "einsum")
    assert einsum.op == ir.EinsumOp(contracted=(), scale=2.0, scale_text="2")


def test_outer_product() -> None:
    definition = define("C[x, m] = A[x] * B[m]\nreturn C", inputs="A: R[x], B: R[m]")
    einsum = one(definition, "einsum")
    assert [p.reindexing.text() for p in einsum.inputs] == ["(x, m) -> (x)", "(x, m) -> (m)"]


# ---- every operator of the registry ---------------------------------------------------------


def _check_linear(d: ir.Definition) -> None:
    op = one(d, "linear")
    assert op.op == ir.LinearOp(inputs=("m",), outputs=("h", "k"), bias=False)
    assert op.cod[0].names == ("x", "h", "k")
    assert [(p.name, p.array.names) for p in d.params] == [("W", ("m", "h", "k"))]
    assert op.params[0].name == "W"


def _check_linear_bias(d: ir.Definition) -> None:
    op = one(d, "linear")
    assert op.op == ir.LinearOp(inputs=("m",), outputs=("n",), bias=True)
    assert [(p.name, p.array.names) for p in d.params] == [("W", ("m", "n")), ("b0", ("n",))]


def _check_square_linear(d: ir.Definition) -> None:
    assert d.params[0].array.names == ("m_in", "m")


def _check_embedding(d: ir.Definition) -> None:
    op = one(d, "embedding")
    assert op.op == ir.EmbeddingOp(outputs=("m",))
    assert op.dom[0].dtype.kind == "N" and op.cod[0].dtype == ir.REALS
    assert d.params[0].array.names == ("v", "m")


def _norm_check(kind: str, eps: float, count: int) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        op = one(d, "norm").op
        assert isinstance(op, ir.NormOp)
        assert (op.norm, op.axes, op.eps, op.affine, op.bias) == (kind, ("m",), eps, count >= 1,
                                                                   count == 2)
        assert [p.init for p in d.params] == ["ones", "zeros"][:count]
        assert all(p.array.names == ("m",) for p in d.params)
    return check


def _softmax_check(log: bool) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        op = one(d, "softmax")
        assert op.op == ir.SoftmaxOp(axes=("y",), log=log)
        assert op.degree.names == ("x",)
        assert op.inputs[0].targets == ("y",)
    return check


def _elementwise_check(function: str) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        op = one(d, "elementwise")
        assert op.op == ir.ElementwiseOp(function=function)  # type: ignore[arg-type]
        assert op.degree.names == ("x", "m")
    return check


def _check_dropout(d: ir.Definition) -> None:
    assert one(d, "dropout").op == ir.DropoutOp(p=0.25)


def _check_scale(d: ir.Definition) -> None:
    assert [b.op for b in broadcasts(d)] == [
        ir.ScaleOp(factor=0.5, text="0.5"), ir.ScaleOp(factor=0.5, text="0.5"),
        ir.ScaleOp(factor=0.5, text="1/2")]


def _combine_check(kind: str, count: int) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        found = broadcasts(d, kind)
        assert len(found) == count
        for op in found:
            assert op.cod[0].names == ("x", "m")
    return check


def _check_broadcast_add(d: ir.Definition) -> None:
    op = one(d, "add")
    assert op.cod[0].names == ("x", "m")
    # the bias B[m] lacks x: it is broadcast along it
    assert [p.reindexing.text() for p in op.inputs] == ["(x, m) -> (x, m)", "(x, m) -> (m)"]


def _check_minus(d: ir.Definition) -> None:
    assert [b.op.kind for b in broadcasts(d)] == ["elementwise", "add"]
    assert one(d, "elementwise").op == ir.ElementwiseOp(function="neg")


def _check_causal(d: ir.Definition) -> None:
    op = one(d, "mask").op
    assert isinstance(op, ir.MaskOp)
    assert op.causal and op.axes == ("x", "y") and op.fill == float("-inf")
    (condition,) = op.conditions
    assert (condition.coefficients, condition.offset, condition.op) == (
        (("x", 1), ("y", -1)), 0, ">=")


def _check_mask(d: ir.Definition) -> None:
    op = one(d, "mask").op
    assert isinstance(op, ir.MaskOp)
    assert (op.axes, op.fill, op.by_array, op.causal) == (("x", "y"), 0.0, False, False)
    first, second = op.conditions
    assert (first.coefficients, first.offset, first.op) == ((("x", 1), ("y", -1)), -1, ">=")
    assert (second.coefficients, second.offset, second.op) == ((("y", 2),), -3, "<")


def _check_mask_array(d: ir.Definition) -> None:
    mask = one(d, "mask")
    assert isinstance(mask.op, ir.MaskOp) and mask.op.by_array and mask.op.axes == ("x", "y")
    assert [a.dtype.kind for a in mask.dom] == ["R", "B"]


def _reduce_check(function: str) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        op = one(d, "reduce")
        assert op.op == ir.ReduceOp(function=function, axes=("x",))  # type: ignore[arg-type]
        assert op.cod[0].names == ("m",) and op.degree.names == ("m",)
    return check


def _check_concat(d: ir.Definition) -> None:
    op = one(d, "concat")
    assert op.op == ir.ConcatOp(inputs=("a", "b"), output="c")
    assert sizes(op.cod[0]) == {"x": "x", "c": "8"}


def _check_split(d: ir.Definition) -> None:
    op = one(d, "split")
    assert op.op == ir.SplitOp(input="c", outputs=("a", "b"))
    assert [text(a) for a in op.cod] == ["R[x:x, a:3]", "R[x:x, b:5]"]


def _check_pad(d: ir.Definition) -> None:
    op = one(d, "pad")
    assert op.op == ir.PadOp(input="a", output="c", before=2, after=3, value=0.0)
    assert [text(a) for a in op.cod] == ["R[x:x, c:8]"]
    assert op.inputs[0].targets == ("a",) and op.outputs[0].targets == ("c",)


def _check_rename(d: ir.Definition) -> None:
    op = one(d, "rename")
    assert op.op == ir.RenameOp(mapping=(("x", "y"),))
    assert sizes(op.cod[0]) == {"y": "x", "m": "8"}


def _check_reshape(d: ir.Definition) -> None:
    split, merge = broadcasts(d, "reshape")
    assert split.op == ir.ReshapeOp(inputs=("m",), outputs=("h", "k"))
    assert merge.op == ir.ReshapeOp(inputs=("h", "k"), outputs=("m",))
    assert text(split.cod[0]) == "R[x:x, h:2, k:4]"
    assert text(merge.cod[0]) == "R[x:x, m:8]"


def _check_scan(d: ir.Definition) -> None:
    (scan,) = nodes(d, ir.Scan)
    assert isinstance(scan, ir.Scan)
    assert (scan.axis.name, scan.carries, scan.step_name) == ("t", 1, "cell")
    assert [text(a) for a in scan.dom] == ["R[m:8]", "R[t:t, n:4]"]
    assert [text(a) for a in scan.cod] == ["R[m:8]", "R[t:t, m:8]"]
    assert isinstance(scan.step, ir.Broadcasted)
    assert scan.step.op == ir.CallOp(definition="cell", instance="cell")
    assert [text(a) for a in scan.step.dom] == ["R[m:8]", "R[n:4]"]


CELL = ("def cell(H: R[m], X: R[n]) -> (R[m], R[m]) {\n"
        "  Z = tanh(linear[m -> m](H, Wh) + linear[n -> m](X, Wx))\n  return Z, Z\n}\n")
LAYER = "def layer(X: R[n]) -> R[n] { return tanh(linear[n -> n](X, W)) }\n"


def _check_machine(d: ir.Definition) -> None:
    (machine,) = nodes(d, ir.Machine)
    assert isinstance(machine, ir.Machine)
    assert (machine.axis.name, machine.blocks, machine.backward) == ("n", (1, 3), False)
    assert [text(a) for a in machine.dom] == [text(a) for a in machine.cod] == ["R[x:x, n:4]"]
    assert isinstance(machine.body, ir.Broadcasted)
    assert machine.body.op == ir.CallOp(definition="layer", instance="layer")

# name -> (definition source after the axes, check); the definition checked is `f`.
def _check_pow(d: ir.Definition) -> None:
    assert one(d, "constant").op == ir.ConstantOp(op="^", constant=2.0, text="2")


def _check_constants(d: ir.Definition) -> None:
    assert [t.op for t in broadcasts(d, "constant")] == [
        ir.ConstantOp(op="+", constant=1e-5, text="1e-05"),
        ir.ConstantOp(op="-", constant=1.0, text="1", constant_first=True)]


def _binary_check(function: str) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        term = one(d, "binary")
        assert term.op == ir.BinaryOp(function=function)  # type: ignore[arg-type]
        assert [p.array.names for p in term.inputs] == [("x", "m"), ("x",)]
        assert term.outputs[0].array.names == ("x", "m")
    return check


def _check_where(d: ir.Definition) -> None:
    term = one(d, "where")
    assert [p.array.names for p in term.inputs] == [("x",), ("x", "m"), ("m",)]
    assert term.inputs[0].array.dtype.kind == "B"
    assert term.outputs[0].array.names == ("x", "m")


def _check_batchnorm(d: ir.Definition) -> None:
    term = one(d, "batchnorm")
    assert term.op == ir.BatchNormOp(axes=("x",), eps=0.001, momentum=0.2, affine=True,
                                     bias=True)
    assert [p.name for p in term.params] == ["mu", "s2", "g", "b0"]
    assert [p.targets for p in term.params] == [("m",)] * 4
    assert term.inputs[0].targets == term.outputs[0].targets == ("x", "m")
    params = {p.name: p for p in d.params}
    assert [(params[n].buffer, params[n].init) for n in ("mu", "s2", "g", "b0")] == [
        (True, "zeros"), (True, "ones"), (False, "ones"), (False, "zeros")]


def _check_batchnorm_plain(d: ir.Definition) -> None:
    term = one(d, "batchnorm")
    assert term.op == ir.BatchNormOp(axes=("x", "m"))
    assert [p.array.names for p in term.params] == [(), ()]


def _check_scatter_add(d: ir.Definition) -> None:
    term = one(d, "scatter_add")
    assert term.op == ir.ScatterAddOp(input="x", output="v")
    assert [p.targets for p in term.inputs] == [("x",), ("x",)]
    assert term.degree.names == ("m",)
    assert term.outputs[0].array.names == ("v", "m")


def _gate_check(gate: str) -> Callable[[ir.Definition], None]:
    def check(d: ir.Definition) -> None:
        term = one(d, "gate")
        assert term.op == ir.GateOp(gate=gate)  # type: ignore[arg-type]
        assert [p.array.dtype.kind for p in (*term.inputs, *term.outputs)] == \
            ["B"] * (len(term.inputs) + 1)
        assert term.outputs[0].array.names == ("x", "m")
    return check


def _check_parity(d: ir.Definition) -> None:
    term = one(d, "gate")
    assert term.op == ir.GateOp(gate="xor", axes=("m",))
    assert term.inputs[0].targets == ("m",) and term.outputs[0].array.names == ("x",)


OPERATOR_CASES: dict[str, list[tuple[str, Callable[[ir.Definition], None]]]] = {
    "batchnorm": [
        ("def f(X: R[x, m]) -> R[x, m] { return batchnorm[x, eps=0.001, momentum=0.2]"
         "(X, mu, s2, g, b0) }", _check_batchnorm),
        ("def f(X: R[x, m]) -> R[x, m] { return batchnorm[x, m](X, mu, s2) }",
         _check_batchnorm_plain),
    ],
    "linear": [
        ("def f(X: R[x, m]) -> R[x, h, k] { return linear[m -> h k](X, W) }", _check_linear),
        ("def f(X: R[x, m]) -> R[x, n] { return linear[m -> n, bias](X, W, b0) }",
         _check_linear_bias),
        ("def f(X: R[x, m]) -> R[x, n] { return linear[m -> n](X, W, b0) }", _check_linear_bias),
        ("def f(X: R[x, m]) -> R[x, m] { return linear[m -> m](X, W) }", _check_square_linear),
    ],
    "embedding": [("def f(T: N[v][x]) -> R[x, m] { return embedding[v -> m](T, E) }",
                   _check_embedding)],
    "layernorm": [
        ("def f(X: R[x, m]) -> R[x, m] { return layernorm[m](X, g, b0) }",
         _norm_check("layernorm", 1e-5, 2)),
        ("def f(X: R[x, m]) -> R[x, m] { return layernorm[m, eps=0.001](X) }",
         lambda d: _norm_check("layernorm", 0.001, 0)(d)),
    ],
    "rmsnorm": [("def f(X: R[x, m]) -> R[x, m] { return rmsnorm[m](X, g) }",
                 _norm_check("rmsnorm", 1e-6, 1))],
    "softmax": [("def f(S: R[x, y]) -> R[x, y] { return softmax[y](S) }", _softmax_check(False))],
    "logsoftmax": [("def f(S: R[x, y]) -> R[x, y] { return logsoftmax[y](S) }",
                    _softmax_check(True))],
    **{function: [(f"def f(X: R[x, m]) -> R[x, m] {{ return {function}(X) }}",
                   _elementwise_check(function))] for function in ir.ELEMENTWISE_FUNCTIONS},
    "dropout": [("def f(X: R[x, m]) -> R[x, m] { return dropout[p=0.25](X) }", _check_dropout),
                ("def f(X: R[x, m]) -> R[x, m] { return dropout[0.25](X) }", _check_dropout)],
    "scale": [("def f(X: R[x, m]) -> R[x, m] { return scale[0.5](X) * 0.5 / 2 }",
               _check_scale)],
    "add": [("def f(X: R[x, m], Y: R[x, m]) -> R[x, m] { return add(X, Y, X) + Y }",
             _combine_check("add", 2)),
            ("def f(X: R[x, m], B: R[m]) -> R[x, m] { return X + B }", _check_broadcast_add),
            ("def f(X: R[x, m], Y: R[x, m]) -> R[x, m] { return X - Y }", _check_minus)],
    "multiply": [("def f(X: R[x, m], Y: R[x, m]) -> R[x, m] { return multiply(X, Y) * Y }",
                  _combine_check("multiply", 2))],
    "causal": [("def f(S: R[x, y]) -> R[x, y] { return causal[x, y](S) }", _check_causal)],
    "mask": [("def f(S: R[x, y]) -> R[x, y] { return mask[x >= y + 1, 2*y < 3, fill=0](S) }",
              _check_mask),
             ("def f(S: R[x, y], M: B[x, y]) -> R[x, y] { return mask(S, M) }",
              _check_mask_array)],
    **{function: [(f"def f(X: R[x, m]) -> R[m] {{ return {function}[x](X) }}",
                   _reduce_check(function))]
       for function in get_args(ir.ReduceFunction)},
    "concat": [("def f(A: R[x, a], B: R[x, b]) -> R[x, c] { return concat[a b -> c](A, B) }",
                _check_concat)],
    "split": [("def f(X: R[x, c]) -> (R[x, a], R[x, b]) { return split[c -> a b](X) }",
               _check_split)],
    "pad": [("def f(X: R[x, a]) -> R[x, c] { return pad[a -> c, before=2, after=3](X) }",
             _check_pad)],
    "rename": [("def f(X: R[x, m]) -> R[y, m] { return rename[x -> y](X) }", _check_rename)],
    "reshape": [("def f(X: R[x, m]) -> R[x, m] { return reshape[h k -> m](reshape[m -> h k](X)) }",
                 _check_reshape)],
    "scan": [(CELL + "def f(H0: R[m], X: R[t, n]) -> (R[m], R[t, m]) { "
              "return scan[t](cell, H0, X) }", _check_scan)],
    "machine": [(LAYER + "def f(Y: R[x, n]) -> R[x, n] { return machine[n, 1, 3](layer, Y) }",
                 _check_machine)],
    "pow": [("def f(X: R[x, m]) -> R[x, m] { return pow[2](X) }", _check_pow),
            ("def f(X: R[x, m]) -> R[x, m] { return 1 - (X + 1e-5) }", _check_constants)],
    **{function: [(f"def f(X: R[x, m], N: R[x]) -> R[x, m] {{ return {function}(X, N) }}",
                   _binary_check(function))] for function in ("divide", "maximum", "minimum")},
    "where": [("def f(C: B[x], X: R[x, m], Y: R[m]) -> R[x, m] { return where(C, X, Y) }",
               _check_where)],
    "scatter_add": [("def f(X: R[x, m], D: N[v][x]) -> R[m, v] { "
                     "return scatter_add[x -> v](X, D) }", _check_scatter_add)],
    **{gate: [(f"def f(A: B[x, m], C: B[m]) -> B[x, m] {{ return {gate}(A, C) }}",
               _gate_check(gate))] for gate in ("and", "or")},
    "xor": [("def f(A: B[x, m], C: B[m]) -> B[x, m] { return xor(A, C) }", _gate_check("xor")),
            ("def f(A: B[x, m]) -> B[x] { return xor[m](A) }", _check_parity)],
    "not": [("def f(A: B[x, m]) -> B[x, m] { return not(A) }", _gate_check("not"))],
}


def test_every_registered_operator_has_a_case() -> None:
    assert set(OPERATOR_CASES) == set(OPERATORS)


@pytest.mark.parametrize(("name", "index"), [(name, i) for name, cases in OPERATOR_CASES.items()
                                             for i in range(len(cases))])
def test_operator(name: str, index: int) -> None:
    src, check = OPERATOR_CASES[name][index]
    check(ok(AXES + src).definition("f"))


# Inputs and result type that make each registry example a whole definition.
EXAMPLE_SIGNATURES: dict[str, tuple[str, str]] = {
    "linear": ("X: R[x, m], W_q: R[m, h, k]", "R[x, h, k]"),
    "embedding": ("T: N[v][x]", "R[x, m]"),
    "layernorm": ("X: R[x, m]", "R[x, m]"),
    "batchnorm": ("X: R[x, m]", "R[x, m]"),
    "rmsnorm": ("X: R[x, m]", "R[x, m]"),
    "softmax": ("S: R[x, y]", "R[x, y]"),
    "logsoftmax": ("S: R[x, y]", "R[x, y]"),
    "causal": ("S: R[x, y]", "R[x, y]"),
    "mask": ("S: R[x, y]", "R[x, y]"),
    "add": ("X: R[x, m], Y: R[x, m]", "R[x, m]"),
    "multiply": ("X: R[x, m], Y: R[x, m]", "R[x, m]"),
    **{f: ("X: R[x, m], Y: R[x, m]", "R[x, m]") for f in ("divide", "maximum", "minimum")},
    "where": ("C: B[x, m], X: R[x, m], Y: R[x, m]", "R[x, m]"),
    **{f: ("X: R[x, m]", "R[m]") for f in get_args(ir.ReduceFunction)},
    "concat": ("A: R[x, a], B: R[x, b]", "R[x, c]"),
    "split": ("X: R[x, c]", "(R[x, a], R[x, b])"),
    "pad": ("X: R[m, x]", "R[m, xp]"),
    "rename": ("X: R[x, m]", "R[y, m]"),
    "reshape": ("X: R[x, h, k]", "R[x, m]"),
    "scan": ("H0: R[m], X: R[t, n]", "(R[m], R[t, m])"),
    "machine": ("Y: R[x, n]", "R[x, n]"),
    "scatter_add": ("M: R[e, m], Dst: N[v][e]", "R[v, m]"),
    **{gate: ("A: B[x, m], C: B[x, m]", "B[x, m]") for gate in ("xor", "and", "or")},
    "not": ("A: B[x, m]", "B[x, m]"),
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_registry_example_elaborates(name: str) -> None:
    """The example each operator states in the registry is itself valid ncd."""
    inputs, out = EXAMPLE_SIGNATURES.get(name, ("X: R[x, m]", "R[x, m]"))
    prefix = {"scan": CELL, "pad": "axis xp = x + 2\n", "scatter_add": "axis e = 6\n",
              "machine": LAYER}.get(name, "")
    src = f"{AXES}{prefix}def f({inputs}) -> {out} {{ return {OPERATORS[name].example} }}"
    if name == "linear":
        # a parameter cannot also be an input: declare it instead
        src = src.replace(", W_q: R[m, h, k]", "")
        src = src.replace("{ return", "{ param W_q: R[m, h, k]\n return")
    definition = ok(src).definition("f")
    assert broadcasts(definition) or nodes(definition, ir.Scan)


# ---- calls and batch lifts ---------------------------------------------------------------


def test_call_with_batch_lift() -> None:
    program = ok(AXES + "def g(X: R[m]) -> R[n] { return linear[m -> n](X, W) }\n"
                 "def f(X: R[t, x, m]) -> R[t, x, n] { return g(X) }")
    call = one(program.definition("f"), "call")
    assert call.op == ir.CallOp(definition="g", instance="g")
    assert call.degree.names == ("t", "x")
    assert call.inputs[0].targets == ("m",)
    assert call.outputs[0].array.names == ("t", "x", "n")


def test_two_calls_get_distinct_instances() -> None:
    program = ok(AXES + "def g(X: R[m]) -> R[m] { return relu(X) }\n"
                 "def f(X: R[m]) -> R[m] { return g(g(X)) }")
    calls = broadcasts(program.definition("f"), "call")
    assert [c.op.instance for c in calls] == ["g", "g_2"]  # type: ignore[union-attr]


def test_call_of_a_multi_output_definition() -> None:
    program = ok(AXES + "def g(X: R[m]) -> (R[m], R[m]) { return X, relu(X) }\n"
                 "def f(X: R[x, m]) -> R[x, m] { A, B = g(X)\n return A + B }")
    call = one(program.definition("f"), "call")
    assert [a.names for a in call.cod] == [("x", "m"), ("x", "m")]


# ---- point-free form ---------------------------------------------------------------------


POINTFREE = (AXES + "def g(X: R[m]) -> R[m] { return relu(X) }\n"
             "def h(X: R[m]) -> R[m] { return tanh(X) }\n")


def test_pointfree_composition_equals_let_style() -> None:
    program = ok(POINTFREE + "def pf = g ; h ; g\n"
                 "def let(X: R[m]) -> R[m] { return g(h(g(X))) }")
    pf, let = program.definition("pf"), program.definition("let")
    assert isinstance(pf.body, ir.Composed) and len(pf.body.terms) == 3
    assert ir.strip_spans(pf.body) == ir.strip_spans(let.body)
    assert pf.inputs == let.inputs and pf.outputs == let.outputs


def test_pointfree_product_equals_let_style() -> None:
    program = ok(POINTFREE + 'def pf = g (x) h """Side by side."""\n'
                 "def let(X1: R[m], X2: R[m]) -> (Y1: R[m], Y2: R[m]) { return g(X1), h(X2) }")
    pf, let = program.definition("pf"), program.definition("let")
    assert isinstance(pf.body, ir.Product)
    assert [t.op.definition for t in pf.body.terms] == ["g", "h"]  # type: ignore[union-attr]
    assert pf.doc == "Side by side."
    assert ir.strip_spans(pf.body) == ir.strip_spans(let.body)
    assert [v.name for v in pf.inputs] == ["X1", "X2"]


def test_pointfree_mismatch_is_reported() -> None:
    err(POINTFREE + "def g2(X: R[n]) -> R[n] { return relu(X) }\ndef pf = g ; g2",
        "E301", at=f"{LINE + 4}:14")


# ---- copies, deletes and identities ----------------------------------------------------------


def test_copy_and_delete_are_implied_by_use() -> None:
    definition = define("A = relu(X)\nB = tanh(X)\nC = exp(A)\nreturn A + B")
    layers = definition.body
    assert isinstance(layers, ir.Composed)
    kinds = [t.kind for t in layers.terms]
    assert kinds == ["rearrangement", "product", "rearrangement", "product", "rearrangement"]
    copy_x, first, copy_a, second, delete_c = layers.terms
    assert isinstance(copy_x, ir.Rearrangement) and copy_x.mapping == (0, 0)  # X read twice
    assert [t.op.function for t in first.terms] == ["relu", "tanh"]  # type: ignore[attr-defined]
    assert isinstance(copy_a, ir.Rearrangement) and copy_a.mapping == (0, 0, 1)  # A read twice
    assert [t.op.kind for t in second.terms] == ["elementwise", "add"]  # type: ignore[attr-defined]
    # C = exp(A) is never used: it is computed and then deleted
    assert isinstance(delete_c, ir.Rearrangement) and delete_c.mapping == (1,)
    assert len(delete_c.dom) == 2 and layers.cod == (definition.outputs[0].array,)


def test_value_passing_an_operation_by_is_an_identity() -> None:
    definition = define("A = relu(X)\nB = exp(A)\nreturn A + B")
    layers = definition.body
    assert isinstance(layers, ir.Composed)
    relu, copy_a, middle, add = layers.terms
    assert isinstance(copy_a, ir.Rearrangement) and copy_a.mapping == (0, 0)
    assert isinstance(middle, ir.Product)
    assert [t.kind for t in middle.terms] == ["broadcasted", "identity"]
    assert middle.terms[0].op == ir.ElementwiseOp(function="exp")  # type: ignore[union-attr]
    # `+` is commutative: its operands are taken in wire order, so no crossing is needed
    assert isinstance(add, ir.Broadcasted) and add.op.kind == "add"
    assert isinstance(relu, ir.Broadcasted)


def test_unused_input_is_deleted() -> None:
    definition = define("return relu(X)", inputs="X: R[x, m], Unused: R[x, y]")
    first = definition.body.terms[0]  # type: ignore[union-attr]
    assert isinstance(first, ir.Rearrangement) and first.mapping == (0,)
    assert len(first.dom) == 2


def test_identity_definition() -> None:
    definition = define("return X")
    assert isinstance(definition.body, ir.Identity)
    assert definition.body.dom == definition.body.cod


# ---- blocks ----------------------------------------------------------------------------


def test_block_title_colour_repeat_shared() -> None:
    definition = define('block "Layer" x6 color "#336699" shared {\n  X = relu(X) + X\n}\n'
                        "return X")
    (block,) = nodes(definition, ir.Block)
    assert isinstance(block, ir.Block)
    assert (block.title, block.repeat, block.color, block.shared) == ("Layer", 6, "#336699", True)
    assert block.dom == block.cod == (definition.inputs[0].array,)
    kinds = [b.op.kind for b in broadcasts(definition)]
    assert kinds == ["elementwise", "add"]


def test_single_block_exports_what_is_read_after_it() -> None:
    definition = define('block "Attention" {\n  A = relu(X)\n  Unused = exp(X)\n}\n'
                        "return A + X")
    (block,) = nodes(definition, ir.Block)
    assert isinstance(block, ir.Block)
    assert (block.repeat, block.color, block.shared) == (1, None, False)
    assert len(block.cod) == 1 and block.cod[0].names == ("x", "m")


def test_repeated_block_must_keep_types() -> None:
    err(AXES + 'def f(X: R[x, m]) -> R[x, m] {\n  block "L" x2 {\n'
        "    X = linear[m -> n](X, W)\n  }\n  return X\n}", "E310", at=f"{LINE + 2}:9")


# ---- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("init", "name", "args"), [
    ("", "default", ()), (" = zeros", "zeros", ()), (" = ones", "ones", ()),
    (" = normal(0, 0.02)", "normal", (0.0, 0.02)), (" = uniform(-1, 1)", "uniform", (-1.0, 1.0)),
    (" = xavier", "xavier", ()), (" = kaiming()", "kaiming", ()),
    (" = constant(0.5)", "constant", (0.5,)),
])
def test_param_initialisers(init: str, name: str, args: tuple[float, ...]) -> None:
    definition = define(f"param W: R[m, n]{init}\nreturn linear[m -> n](X, W)", out="R[x, n]")
    (param,) = definition.params
    assert (param.name, param.init, param.init_args) == ("W", name, args)
    assert param.array.names == ("m", "n")
    assert param.span is not None and param.span.line == LINE + 2


def test_declared_param_axis_order_is_kept_and_checked() -> None:
    # declared in the order the linear map expects
    definition = define("param W: R[m, n]\nreturn linear[m -> n](X, W)", out="R[x, n]")
    assert definition.params[0].array.names == ("m", "n")
    err(AXES + "def f(X: R[x, m]) -> R[x, n] {\n  param W: R[m, h]\n"
        "  return linear[m -> n](X, W)\n}", "E301", at=f"{LINE + 3}:28")


def test_parameter_in_a_tensor_equation() -> None:
    definition = define("param W: R[m, n] = normal(0, 1)\nY[x, n] = sum(m) X[x, m] * W[m, n]\n"
                        "return Y", out="R[x, n]")
    einsum = one(definition, "einsum")
    assert [p.name for p in einsum.params] == ["W"] and einsum.params[0].targets == ("m",)
    assert len(einsum.dom) == 1  # parameters are not wires of the domain


# ---- imports -----------------------------------------------------------------------------


def test_import_everything_and_import_some(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.ncd").write_text(
        "axis m = 4\ndef g(X: R[m]) -> R[m] { return relu(X) }\n"
        "def h(X: R[m]) -> R[m] { return tanh(X) }\n")
    (tmp_path / "one.ncd").write_text('from "lib/blocks.ncd" import g\n'
                                      "def f(X: R[m]) -> R[m] { return g(X) }\n")
    (tmp_path / "all.ncd").write_text('import "lib/blocks.ncd"\nimport "one.ncd"\n'
                                      "def k(X: R[m]) -> R[m] { return h(f(X)) }\n")
    program = ncd.load(tmp_path / "all.ncd").ir
    assert [d.name for d in program.definitions] == ["g", "h", "f", "k"]
    assert [a.name for a in program.axes] == ["m"]
    calls = broadcasts(program.definition("k"), "call")
    assert [c.op.definition for c in calls] == ["f", "h"]  # type: ignore[union-attr]
    # the same file imported twice (directly and through one.ncd) is read once
    assert [d.name for d in program.definitions].count("g") == 1


def test_import_some_hides_the_other_names(tmp_path: Path) -> None:
    """`from "lib.ncd" import g` brings only g: a local h is a different definition from lib's
    h, which stays in the program (g may need it) under the qualified name `lib.h`."""
    (tmp_path / "lib.ncd").write_text("axis m = 4\ndef h(X: R[m]) -> R[m] { return tanh(X) }\n"
                                      "def g(X: R[m]) -> R[m] { return h(X) }\n")
    (tmp_path / "main.ncd").write_text('from "lib.ncd" import g\n'
                                       "def h(X: R[m]) -> R[m] { return relu(g(X)) }\n")
    program = ncd.load(tmp_path / "main.ncd").ir
    assert [d.name for d in program.definitions] == ["lib.h", "g", "h"]
    # lib's g calls lib's h (tanh), not main's h (relu of g)
    (call,) = [t for t in ir.walk(program.definition("g").body)
               if isinstance(t, ir.Broadcasted) and t.op.kind == "call"]
    assert isinstance(call.op, ir.CallOp) and call.op.definition == "lib.h"
    lib_h = program.definition("lib.h")
    assert lib_h.span is not None and lib_h.span.file.endswith("lib.ncd")
    main_h = program.definition("h")
    assert main_h.span is not None and main_h.span.file.endswith("main.ncd")


def test_import_some_leaves_the_definitions_nothing_reaches_out(tmp_path: Path) -> None:
    """The program holds what the loaded file reaches: its own definitions, the names it
    imports and what those call; the rest of an imported file is checked but left out, so
    compiling the program needs no size of an axis only they use (`n` here)."""
    (tmp_path / "lib.ncd").write_text(
        "axis m = 4, n\n"
        "def inner(X: R[m]) -> R[m] { return tanh(X) }\n"
        "def g(X: R[m]) -> R[m] { return linear[m -> m](inner(X), W) }\n"
        "def wide(X: R[m]) -> R[n] { return linear[m -> n](X, V) }\n")
    (tmp_path / "some.ncd").write_text('from "lib.ncd" import g\n'
                                       "def f(X: R[m]) -> R[m] { return relu(g(X)) }\n")
    some = ncd.load(tmp_path / "some.ncd")
    assert some.names == ("inner", "g", "f")
    assert "class Wide" not in some.compile() and "class Inner" in some.compile()
    (tmp_path / "all.ncd").write_text('import "lib.ncd"\n'
                                      "def f(X: R[m]) -> R[m] { return relu(g(X)) }\n")
    everything = ncd.load(tmp_path / "all.ncd")
    assert everything.names == ("inner", "g", "wide", "f")
    with pytest.raises(NcdError, match="axis `n` of unknown size"):
        everything.compile()
    # a definition left out is still checked
    (tmp_path / "lib.ncd").write_text(
        "axis m = 4\ndef g(X: R[m]) -> R[m] { return X }\n"
        "def broken(X: R[m]) -> R[m] { return relu(Y) }\n")
    (found,) = diagnostics(tmp_path / "some.ncd")
    assert found.code == "E200" and found.span is not None
    assert found.span.file.endswith("lib.ncd")


def test_a_name_not_imported_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "lib.ncd").write_text("axis m = 4\ndef g(X: R[m]) -> R[m] { return relu(X) }\n"
                                      "def h(X: R[m]) -> R[m] { return tanh(X) }\n")
    (tmp_path / "main.ncd").write_text('from "lib.ncd" import g\n'
                                       "def f(X: R[m]) -> R[m] { return h(X) }\n")
    found = diagnostics(tmp_path / "main.ncd")
    assert [(d.code, d.span.line if d.span else None) for d in found] == [("E202", 2)]


def test_importing_a_name_that_is_also_defined_is_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "lib.ncd").write_text("axis m = 4\ndef g(X: R[m]) -> R[m] { return relu(X) }\n")
    (tmp_path / "main.ncd").write_text('import "lib.ncd"\n'
                                       "def g(X: R[m]) -> R[m] { return X }\n")
    (duplicate,) = diagnostics(tmp_path / "main.ncd")
    assert duplicate.code == "E203"
    assert duplicate.notes[0].message == "imported here"


def test_imported_definition_keeps_its_file_in_spans(tmp_path: Path) -> None:
    (tmp_path / "lib.ncd").write_text("axis m = 4\ndef g(X: R[m]) -> R[m] { return relu(X) }\n")
    (tmp_path / "main.ncd").write_text('import "lib.ncd"\ndef f(X: R[m]) -> R[m] { return g(X) }')
    program = ncd.load(str(tmp_path / "main.ncd")).ir
    g = program.definition("g")
    assert g.span is not None and g.span.file.endswith("lib.ncd")


# ---- docstrings ------------------------------------------------------------------------------


def test_docstrings_reach_the_ir() -> None:
    program = ok('"""The file."""\naxis m = 2\n'
                 'def f(X: R[m]) -> R[m] {\n  """What f does."""\n  return X\n}')
    assert program.doc == "The file."
    assert program.definition("f").doc == "What f does."


# ---- the term is well typed ---------------------------------------------------------------------


def _check_types(term: ir.Term) -> None:
    match term:
        case ir.Composed(terms=terms):
            assert term.dom == terms[0].dom and term.cod == terms[-1].cod
            for left, right in itertools.pairwise(terms):
                assert left.cod == right.dom
        case ir.Product(terms=terms):
            assert term.dom == tuple(a for t in terms for a in t.dom)
            assert term.cod == tuple(a for t in terms for a in t.cod)
        case ir.Rearrangement(mapping=mapping):
            assert term.cod == tuple(term.dom[i] for i in mapping)
        case ir.Identity():
            assert term.dom == term.cod
        case ir.Block(body=body):
            assert body.dom == term.dom and body.cod == term.cod
        case ir.Broadcasted():
            assert term.dom == tuple(p.array for p in term.inputs)
            assert term.cod == tuple(p.array for p in term.outputs)
            for port in (*term.inputs, *term.params, *term.outputs):
                assert port.reindexing.domain == term.degree
    for child in ir.children(term):
        _check_types(child)


def test_attention_is_well_typed_everywhere() -> None:
    program = ok("axis x\naxis m = 512, h = 8, k = m / h\n"
                 "def attention(X: R[x, m]) -> R[x, m] {\n"
                 "  Q = linear[m -> h k](X, Wq)\n  K = linear[m -> h k](X, Wk)\n"
                 "  V = linear[m -> h k](X, Wv)\n"
                 "  S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)\n"
                 "  A = softmax[y](causal[x, y](S))\n"
                 "  O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]\n"
                 "  return linear[h k -> m](O, Wo)\n}\n"
                 "def layer(X: R[x, m]) -> R[x, m] {\n"
                 '  block "Layer" x4 {\n    X = layernorm[m](X + attention(X), g, b)\n  }\n'
                 "  return X\n}")
    for definition in program.definitions:
        _check_types(definition.body)
        assert definition.body.dom == definition.domain
        assert definition.body.cod == definition.codomain
    attention = program.definition("attention")
    assert [p.name for p in attention.params] == ["Wq", "Wk", "Wv", "Wo"]
    s_einsum = broadcasts(attention, "einsum")[0]
    assert sizes(s_einsum.cod[0]) == {"h": "8", "x": "x", "y": "x"}
