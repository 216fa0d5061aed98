"""Every operator kind, term kind and elementwise function has an entry in every table a stage
reads. The kinds are taken from the IR's unions (`typing.get_args`), not from a list kept by
hand, so a new kind without its declaration, glyph, caption, overview label, parameter roles
or lowering fails here (and, for a missing declaration, already when `ncd.operators` is
imported)."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from ncd.compilers.pytorch import compile_program
from ncd.renderers import render_svg, render_tikz
from ncd.renderers.dot import program_to_dot
from ncd.renderers.glyphs import GLYPHS, BoxGlyph, CupsGlyph, JunctionGlyph, glyph_of
from ncd.renderers.text import Label

import ncd
from ncd import ir
from ncd.operators import DECLARATIONS, OPERATORS, check_declarations, declaration
from ncd.ops import declaration as decl
from ncd.ops.functions import FUNCTIONS
from ncd.ops.lowering import DefaultInit, Role
from ncd.ops.reductions import REDUCTIONS
from ncd.semantics import elementwise as interpret_elementwise
from ncd.sizes import check_nonnegative
from ncd.stats import stats
from ncd.symmetry import symmetries

OPERATOR_TYPES: tuple[type[ir.Node], ...] = get_args(get_args(ir.Operator)[0])
TERM_TYPES: tuple[type[ir.Node], ...] = get_args(get_args(ir.Term)[0])
ELEMENTWISE: tuple[str, ...] = get_args(ir.ElementwiseOp.model_fields["function"].annotation)
REDUCE: tuple[str, ...] = get_args(ir.ReduceOp.model_fields["function"].annotation)

# Kinds that no operator name makes: other syntax does.
MADE_BY_OTHER_SYNTAX = {ir.EinsumOp: "tensor equations", ir.CallOp: "calls of definitions",
                        ir.ParameterOp: "a parameter named where an array is expected",
                        ir.BufferOp: "a buffer named where an array is expected",
                        ir.IndexValueOp: "tensor equations", ir.GatherOp: "tensor equations"}

AXES = "axis x, y, t = 3, m = 4, h = 2, k = 2, a = 2, b = 3, c = 5, v = 7\n"

# One program per operator kind whose definition `f` makes that kind.
SOURCES: dict[type[ir.Node], str] = {
    ir.EinsumOp: "def f(X: R[x, m], Y: R[y, m]) -> R[x, y] { S[x, y] = sum(m) X[x, m] * Y[y, m]\n"
                 " return S }",
    ir.LinearOp: "def f(X: R[x, m]) -> R[x, h, k] { return linear[m -> h k, bias](X, W, b0) }",
    ir.EmbeddingOp: "def f(T: N[v][x]) -> R[x, m] { return embedding[v -> m](T, E) }",
    ir.SoftmaxOp: "def f(S: R[x, y]) -> R[x, y] { return softmax[y](S) }",
    ir.NormOp: "def f(X: R[x, m]) -> R[x, m] { return layernorm[m](X, g, b0) }",
    ir.BatchNormOp: "def f(X: R[x, m]) -> R[x, m] { return batchnorm[x](X, mu, s2, g, b0) }",
    ir.ElementwiseOp: "def f(X: R[x, m]) -> R[x, m] { return relu(X) }",
    ir.ScaleOp: "def f(X: R[x, m]) -> R[x, m] { return X * 0.5 }",
    ir.DropoutOp: "def f(X: R[x, m]) -> R[x, m] { return dropout[p=0.1](X) }",
    ir.AddOp: "def f(X: R[x, m], B: R[m]) -> R[x, m] { return X + B }",
    ir.MultiplyOp: "def f(X: R[x, m], Y: R[x, m]) -> R[x, m] { return X * Y }",
    ir.MaskOp: "def f(S: R[x, y]) -> R[x, y] { return causal[x, y](S) }",
    ir.ReduceOp: "def f(X: R[x, m]) -> R[m] { return sum[x](X) }",
    ir.ConcatOp: "def f(A: R[x, a], B: R[x, b]) -> R[x, c] { return concat[a b -> c](A, B) }",
    ir.SplitOp: "def f(X: R[x, c]) -> (R[x, a], R[x, b]) { return split[c -> a b](X) }",
    ir.PadOp: "def f(X: R[x, a]) -> R[x, c] { return pad[a -> c, before=1, after=2](X) }",
    ir.RenameOp: "def f(X: R[x, a]) -> R[x, k] { return rename[a -> k](X) }",
    ir.ReshapeOp: "def f(X: R[x, m]) -> R[x, h, k] { return reshape[m -> h k](X) }",
    ir.CallOp: "def g(X: R[m]) -> R[m] { return tanh(X) }\n"
               "def f(X: R[x, m]) -> R[x, m] { return g(X) }",
    ir.ConstantOp: "def f(X: R[x, m]) -> R[x, m] { return 1 - pow[2](X + 1e-5) }",
    ir.BinaryOp: "def f(X: R[x, m], N: R[x]) -> R[x, m] { return maximum(X, N) / N }",
    ir.WhereOp: "def f(C: B[x, m], X: R[x, m], Y: R[m]) -> R[x, m] { return where(C, X, Y) }",
    ir.ParameterOp: "def f(X: R[x, m]) -> R[x, m] { param a: R[m]\n return X * sigmoid(a) }",
    ir.BufferOp: "def f(X: R[x, m]) -> R[x, m] { buffer a: R[m] = ones\n return X * exp(a) }",
    ir.IndexValueOp: "def f(X: R[t, m]) -> R[t, m] { P[t, m] = t * X[t, m]\n return P }",
    ir.GatherOp: "def f(X: R[v, m], S: N[v][x]) -> R[x, m] { Y[x, m] = X[S[x], m]\n return Y }",
    ir.ScatterAddOp: "def f(X: R[x, m], S: N[v][x]) -> R[v, m] {\n"
                     " return scatter_add[x -> v](X, S) }",
    ir.GateOp: "def f(A: B[x, m], C: B[m]) -> B[x] {\n"
               " return xor[m](or(not(and(A, C)), xor(A, C))) }",
}

# Every term kind at once, in `f`.
EVERY_TERM = AXES + """def cell(H: R[m], X: R[m]) -> (R[m], R[m]) {
    Z = tanh(H + X)
    return Z, Z
}
def layer(X: R[m]) -> R[m] { return tanh(X) }
def f(X: R[x, m], S: R[t, m], H0: R[m]) -> (R[m, x], R[x, m], R[m], R[t, m]) {
    Y[m, x] = X[x, m]
    block "B" x2 {
        X = relu(X) + X
    }
    H, O = scan[t](cell, H0, S)
    return Y, machine[m, 1, 3](layer, X), H, O
}
"""


def kind(node: type[ir.Node]) -> str:
    return ir.kind_of(node)


def broadcasts(program: ncd.api.Program, op_type: type[ir.Node]) -> list[ir.Broadcasted]:
    """The operations of kind `op_type` in `f`: at least one, or the test checks nothing."""
    found = [term for term in ir.walk(program.ir.definition("f").body)
             if isinstance(term, ir.Broadcasted) and isinstance(term.op, op_type)]
    assert found, f"the source for {op_type.__name__} has no such operation in `f`"
    return found


# ----------------------------------------------------------------------------- the lists


def test_the_lists_of_kinds_are_derived_from_the_unions() -> None:
    assert ir.OPERATOR_TYPES == OPERATOR_TYPES
    assert ir.OPERATOR_KINDS == tuple(kind(node) for node in OPERATOR_TYPES)
    assert ir.TERM_TYPES == TERM_TYPES
    assert ir.TERM_KINDS == tuple(kind(node) for node in TERM_TYPES)
    assert ir.ELEMENTWISE_FUNCTIONS == ELEMENTWISE
    assert len(set(ir.OPERATOR_KINDS)) == len(ir.OPERATOR_KINDS)
    assert len(set(ir.TERM_KINDS)) == len(ir.TERM_KINDS)


def test_every_operator_kind_has_one_declaration() -> None:
    assert set(DECLARATIONS) == set(OPERATOR_TYPES)
    for node, declared in DECLARATIONS.items():
        assert declared.node is node


def test_a_missing_declaration_fails_the_registry() -> None:
    incomplete = {node: declared for node, declared in DECLARATIONS.items()
                  if node is not ir.PadOp}
    with pytest.raises(ImportError, match="PadOp"):
        check_declarations(incomplete)
    with pytest.raises(ImportError, match="another kind"):
        check_declarations({**DECLARATIONS, ir.PadOp: DECLARATIONS[ir.SplitOp]})


def test_every_operator_kind_has_a_program_here() -> None:
    assert set(SOURCES) == set(OPERATOR_TYPES)


# ----------------------------------------------------------------------------- per operator kind


@pytest.mark.parametrize("node", OPERATOR_TYPES, ids=kind)
def test_typing(node: type[ir.Node]) -> None:
    """Its names and typing rules (or the other syntax that makes it)."""
    declared: decl.Declaration[Any] = DECLARATIONS[node]
    if node in MADE_BY_OTHER_SYNTAX:
        assert declared.surfaces == ()
    else:
        assert declared.surfaces, f"{node.__name__} has no name in the language"
    for surface in declared.surfaces:
        assert OPERATORS[surface.name] is surface
        assert callable(surface.typing)
        assert surface.summary and surface.example.startswith(surface.name)
    program = ncd.load(AXES + SOURCES[node])
    assert broadcasts(program, node), f"the program for {node.__name__} does not make one"


@pytest.mark.parametrize("node", OPERATOR_TYPES, ids=kind)
def test_glyph_and_caption(node: type[ir.Node]) -> None:
    declared: decl.Declaration[Any] = DECLARATIONS[node]
    assert isinstance(declared.glyph, decl.Box | decl.Junction | decl.Cups)
    drawn = GLYPHS[node]
    for term in broadcasts(ncd.load(AXES + SOURCES[node]), node):
        assert glyph_of(term.op) is drawn
        match declared.glyph:
            case decl.Box():
                assert isinstance(drawn, BoxGlyph)
                assert declared.glyph.outline in get_args(decl.Outline)
                caption = declared.glyph.caption(term.op, term)
                if caption is not None:
                    assert caption.kind in get_args(decl.CaptionKind) and caption.text
                    label = drawn.caption(term.op, term)
                    assert isinstance(label, Label) and label.plain_text()
            case decl.Junction():
                assert isinstance(drawn, JunctionGlyph)
                assert declared.glyph.mark in get_args(decl.Mark)
            case decl.Cups():
                assert isinstance(drawn, CupsGlyph)


@pytest.mark.parametrize("node", OPERATOR_TYPES, ids=kind)
def test_overview_label(node: type[ir.Node]) -> None:
    for term in broadcasts(ncd.load(AXES + SOURCES[node]), node):
        label, shape = declaration(term.op).overview(term.op)
        assert label and shape


@pytest.mark.parametrize("node", OPERATOR_TYPES, ids=kind)
def test_parameter_roles(node: type[ir.Node]) -> None:
    """One role per parameter port, each a default initialiser the compiler writes."""
    program = ncd.load(AXES + SOURCES[node])
    sizes = {axis.name: ir.size_value(axis.size) for axis in program.ir.axes}
    for term in broadcasts(program, node):
        roles = declaration(term.op).roles(term.op, term, lambda size: ir.size_value(
            size, {k: v for k, v in sizes.items() if v is not None}))
        assert len(roles) == len(term.params)
        assert all(isinstance(role, Role) for role in roles)
        assert all(role.init in get_args(DefaultInit) for role in roles)


@pytest.mark.parametrize("node", OPERATOR_TYPES, ids=kind)
def test_lowering_and_drawing(node: type[ir.Node]) -> None:
    """Its lowering is reached by the compiler, and every output draws it."""
    declared: decl.Declaration[Any] = DECLARATIONS[node]
    assert callable(declared.lower)
    program = ncd.load(AXES + SOURCES[node])
    assert "(nn.Module):" in compile_program(program.ir, "f")
    assert "<svg" in render_svg(program.ir, "f")
    assert "tikzpicture" in render_tikz(program.ir, "f")
    assert "digraph" in program_to_dot(program.ir, "f")


@pytest.mark.parametrize("node", OPERATOR_TYPES, ids=kind)
def test_cost_and_symmetry(node: type[ir.Node]) -> None:
    """Its cost rule (multiply-adds and FLOPs from the sizes, read by `ncd stats`) and its
    symmetry rule (read by `ncd check --symmetry`): stated, and reached by both analyses."""
    declared: decl.Declaration[Any] = DECLARATIONS[node]
    assert declared.cost is not None, f"{node.__name__} states no cost (ncd/ops/facts.py)"
    assert declared.symmetry is not None, f"{node.__name__} states no symmetry rule"
    program = ncd.load(AXES + SOURCES[node])
    figures = stats(program.ir, "f")
    made = [op for op in figures.operations if op.kind == kind(node)]
    assert made, f"ncd stats lists no {kind(node)} operation"
    for op in made:
        for value in (op.macs, op.flops, op.output_bytes):
            assert check_nonnegative(value).verdict == "holds"
    assert {r.axis for r in symmetries(program.ir, "f")} == {
        n for v in program.ir.definition("f").inputs for n in v.array.names}


def test_every_operator_has_a_reverse_rule_or_is_listed_as_not_yet_reversed() -> None:
    """`ncd.derivative` reads each declaration's reverse rule; an operator without one is in
    the documented list of those not yet supported (reported as E320), never both."""
    from ncd.derivative import NOT_YET_REVERSED

    for node, declared in DECLARATIONS.items():
        assert (declared.reverse is None) == (node in NOT_YET_REVERSED), node.__name__
    assert all(reason for reason in NOT_YET_REVERSED.values())


# ----------------------------------------------------------------------------- functions


@pytest.mark.parametrize("function", ELEMENTWISE)
def test_elementwise_function(function: str) -> None:
    """Its table entry, name in the language, caption, overview label, lowering and meaning in
    the reference interpreter."""
    entry = FUNCTIONS[function]  # type: ignore[index]
    assert entry.meaning and entry.caption and entry.torch
    assert OPERATORS[function].example == f"{function}(X)"
    program = ncd.load(AXES + f"def f(X: R[x, m]) -> R[x, m] {{ return {function}(X) }}")
    (term,) = broadcasts(program, ir.ElementwiseOp)
    assert term.op == ir.ElementwiseOp(function=function)  # type: ignore[arg-type]
    label = GLYPHS[ir.ElementwiseOp].caption(term.op, term)  # type: ignore[union-attr]
    assert label is not None and label.plain_text() == entry.caption
    assert declaration(term.op).overview(term.op) == (function, "box")
    callee = f"{'F' if entry.functional else 'torch'}.{entry.torch}("
    assert callee in compile_program(program.ir, "f")
    torch = pytest.importorskip("torch")
    assert interpret_elementwise(function, torch.ones(2)).shape == (2,)


def test_every_elementwise_function_has_one_entry() -> None:
    assert set(FUNCTIONS) == set(ELEMENTWISE)


def test_logsoftmax_is_the_softmax_triangle_with_log_inside() -> None:
    """Both are drawn as the softmax triangle; only the logarithm's carries `log`, so a
    cross-entropy reads as one in the diagram."""
    program = ncd.load(AXES + "def f(X: R[x, m]) -> (R[x, m], R[x, m]) {\n"
                       "    return softmax[m](X), logsoftmax[m](X)\n}")
    terms = broadcasts(program, ir.SoftmaxOp)
    glyph = GLYPHS[ir.SoftmaxOp]
    declared = DECLARATIONS[ir.SoftmaxOp].glyph
    assert isinstance(glyph, BoxGlyph) and isinstance(declared, decl.Box)
    assert declared.outline == "triangle_left"
    captions = {t.op.log: glyph.caption(t.op, t) for t in terms}  # type: ignore[attr-defined]
    assert captions[False] is None
    label = captions[True]
    assert label is not None and label.plain_text() == "log"
    assert "log" in render_tikz(program.ir, "f")


def test_every_reduction_has_one_entry() -> None:
    assert set(REDUCTIONS) == set(REDUCE)
    assert {s.name for s in DECLARATIONS[ir.ReduceOp].surfaces} == set(REDUCE)


# ----------------------------------------------------------------------------- term kinds


def test_every_term_kind_goes_through_every_stage() -> None:
    program = ncd.load(EVERY_TERM)
    body = program.ir.definition("f").body
    assert {type(term) for term in ir.walk(body)} == set(TERM_TYPES)
    assert "(nn.Module):" in compile_program(program.ir, "f")
    assert "<svg" in render_svg(program.ir, "f")
    assert "tikzpicture" in render_tikz(program.ir, "f")
    assert "digraph" in program_to_dot(program.ir, "f")
