"""Facts the IR records at elaboration so that back ends read them instead of re-deriving them,
and the one size algebra (`ncd.sizes`) that the checker and the compiler share."""

from __future__ import annotations

import pytest
from ncd.compilers.pytorch import compile_program

import ncd
from ncd import ir
from ncd.sizes import ProgramSizes, Size, evaluate, from_ir, symbols_of

X, D = ir.SizeSym(name="x"), ir.SizeSym(name="d")


def c(value: int) -> ir.SizeExpr:
    return ir.SizeConst(value=value)


def broadcasts(program: ncd.Program, node: type) -> list[ir.Broadcasted]:
    return [t for d in program.ir.definitions for t in ir.walk(d.body)
            if isinstance(t, ir.Broadcasted) and isinstance(t.op, node)]


# ---- sizes ---------------------------------------------------------------------------------


def test_evaluate_rounds_divisions_down_and_needs_every_symbol() -> None:
    size = ir.SizeAdd(terms=(ir.SizeFloorDiv(numerator=X, denominator=c(2)), c(1)))
    assert evaluate(size, {"x": 7}) == 4
    assert evaluate(size) is None
    assert evaluate(ir.SizeDiv(numerator=X, denominator=c(0)), {"x": 3}) is None
    assert ir.size_value(size, {"x": 7}) == 4  # the IR's convenience delegates
    assert symbols_of(ir.SizeMul(factors=(X, ir.SizeFloorDiv(numerator=D, denominator=X)))) \
        == {"x", "d"}


def program_sizes(*axes: tuple[str, ir.SizeExpr]) -> ProgramSizes:
    return ProgramSizes([ir.Axis(name=name, size=size) for name, size in axes])


def test_program_sizes_fold_constants_and_expand_derived_axes() -> None:
    q = ir.SizeAdd(terms=(X, c(1)))
    sizes = program_sizes(("m", c(512)), ("h", c(8)),
                          ("k", ir.SizeDiv(numerator=ir.SizeSym(name="m"),
                                           denominator=ir.SizeSym(name="h"))),
                          ("x", X), ("q", q))
    assert sizes.known == {"m": 512, "h": 8, "k": 64}
    assert sizes.value(ir.SizeSym(name="k")) == 64
    assert sizes.expand(ir.SizeSym(name="q")) == q
    assert sizes.symbols(ir.SizeMul(factors=(ir.SizeSym(name="q"), ir.SizeSym(name="m")))) \
        == {"x"}
    assert sizes.polynomial(ir.SizeMul(factors=(ir.SizeSym(name="q"), ir.SizeSym(name="h")))) \
        == 8 * Size.sym("x") + 8


@pytest.mark.parametrize(("size", "solution"), [
    (X, (1, 0)),
    (ir.SizeAdd(terms=(ir.SizeMul(factors=(c(2), X)), c(1))), (2, 1)),
    (ir.SizeAdd(terms=(X, c(-3))), (1, -3)),
    (ir.SizeDiv(numerator=ir.SizeAdd(terms=(ir.SizeMul(factors=(c(2), X)), c(4))),
                denominator=c(2)), (1, 2)),
    (ir.SizeMul(factors=(ir.SizeSym(name="m"), X)), (4, 0)),  # m = 4 is folded in
    (ir.SizeDiv(numerator=X, denominator=c(2)), None),  # not a whole multiple
    (ir.SizeMul(factors=(X, X)), None),
    (ir.SizeFloorDiv(numerator=ir.SizeAdd(terms=(X, c(1))), denominator=c(2)), None),
    (ir.SizeAdd(terms=(X, D)), None),  # another symbol
    (ir.SizeAdd(terms=(c(3), ir.SizeMul(factors=(c(-1), X)))), None),  # decreasing
])
def test_solving_an_axis_size_for_a_symbol_is_exact(size: ir.SizeExpr,
                                                    solution: tuple[int, int] | None) -> None:
    sizes = program_sizes(("m", c(4)), ("x", X), ("d", D))
    assert sizes.solve(size, "x") == solution


def test_linear_in_reads_the_coefficients() -> None:
    x = Size.sym("x")
    assert (3 * x + 5).linear_in("x") == (3, 5)
    assert (3 * x + 5).linear_in("y") is None
    assert from_ir(ir.SizeDiv(numerator=X, denominator=c(3))).linear_in("x") is None


# ---- the weight axes of a linear map --------------------------------------------------------


def test_linear_records_its_weight_axes() -> None:
    program = ncd.load("axis x, m = 4, n = 3\n"
                       "def f(X: R[x, m]) -> R[x, m] { return linear[m -> m](X, W) }\n"
                       "def g(X: R[x, m]) -> R[x, n] { return linear[m -> n](X, V) }")
    square, plain = (t.op for t in broadcasts(program, ir.LinearOp))
    assert isinstance(square, ir.LinearOp) and isinstance(plain, ir.LinearOp)
    assert square.weight_inputs == ("m_in",)
    assert plain.weight_inputs == ("m",)
    text = program.ir.model_dump_json()
    assert '"weight_inputs":["m_in"]' in text
    assert ir.Program.model_validate_json(text) == program.ir


def test_a_hand_built_linear_map_defaults_to_the_naming_rule() -> None:
    assert ir.LinearOp(inputs=("m", "k"), outputs=("k",)).weight_inputs == ("m", "k_in")
    with pytest.raises(ValueError, match="weight axes"):
        ir.LinearOp(inputs=("m",), outputs=("k",), weight_inputs=())


def test_the_lowering_pairs_the_recorded_weight_axes() -> None:
    """A weight whose axes the naming rule does not name: the recorded pairing decides."""
    program = ncd.load("axis x, m = 4, n = 3\n"
                       "def g(X: R[x, m]) -> R[x, n] { return linear[m -> n](X, V) }")
    definition = program.ir.definitions[0]
    (term,) = broadcasts(program, ir.LinearOp)
    weight = ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(axes=(
        ir.Axis(name="a", size=c(4)), ir.Axis(name="n", size=c(3)))))
    renamed = term.model_copy(update={
        "op": term.op.model_copy(update={"weight_inputs": ("a",)}),
        "params": (term.params[0].model_copy(update={"array": weight, "targets": ("a", "n")}),)})
    parameter = definition.params[0].model_copy(update={"array": weight})
    edited = program.ir.model_copy(update={"definitions": (definition.model_copy(update={
        "body": _replace(definition.body, term, renamed), "params": (parameter,)}),)})
    code = compile_program(edited, "g")
    # the weight's axis `a` is contracted with the input's `m` (one matrix product)
    assert "X @ V" in code


def _replace(term: ir.Term, old: ir.Term, new: ir.Term) -> ir.Term:
    if term == old:
        return new
    if isinstance(term, ir.Composed | ir.Product):
        return term.model_copy(update={"terms": tuple(_replace(t, old, new)
                                                      for t in term.terms)})
    return term


# ---- calls: the callee's axes in order -------------------------------------------------------


def test_call_ports_list_the_callee_axes_in_its_order() -> None:
    program = ncd.load("axis x, m = 4, b = 2\n"
                       "def f(X: R[m, x]) -> R[x, m] { return relu(X) }\n"
                       "def g(X: R[b, x, m]) -> R[x, b, m] { return f(X) }")
    (call,) = broadcasts(program, ir.CallOp)
    callee = program.ir.definition("f")
    for port, variable in zip(call.inputs, callee.inputs, strict=True):
        assert port.targets == variable.array.names
    for port, variable in zip(call.outputs, callee.outputs, strict=True):
        assert port.targets == variable.array.names


# ---- the generated file: F imported exactly when used ------------------------------------------


def test_functional_import_follows_the_lowerings() -> None:
    with_f = ncd.load("axis x, m = 4\ndef f(X: R[x, m]) -> R[x, m] { return relu(X) }")
    without = ncd.load("axis x, m = 4\n"
                       "def f(X: R[x, m]) -> R[x, m] {\n  \"\"\"Not F.relu: tanh.\"\"\"\n"
                       "  return tanh(X)\n}")
    assert "import torch.nn.functional as F" in compile_program(with_f.ir)
    assert "import torch.nn.functional as F" not in compile_program(without.ir)
