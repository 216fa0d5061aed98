"""Every affine reindexing compiles to views that read exactly `Y[p] = X[eta(p)]`.

The IR is built by hand here (the language only writes some of these maps): random stride
morphisms with permutations, copies (diagonals), deletes (broadcasts), fixed indices, offsets,
strides and windows, checked entry by entry against an explicit gather.
"""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ncd.compilers.pytorch import build_module, compile_program

from ncd import ir


def axis(name: str, size: int) -> ir.Axis:
    return ir.Axis(name=name, size=ir.SizeConst(value=size))


def reals(*axes: ir.Axis) -> ir.ArrayType:
    return ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(axes=axes))


def reindexing_program(p_sizes: list[int], matrix: list[list[int]], offsets: list[int],
                       slack: list[int], output_order: list[int]) -> ir.Program:
    p_axes = [axis(f"p{i}", size) for i, size in enumerate(p_sizes)]
    q_axes = []
    for j, (row, offset) in enumerate(zip(matrix, offsets, strict=True)):
        reach = offset + sum(c * (n - 1) for c, n in zip(row, p_sizes, strict=True)) + 1
        q_axes.append(axis(f"q{j}", reach + slack[j]))
    eta = ir.StrideMorphism(domain=ir.Shape(axes=tuple(p_axes)),
                            codomain=ir.Shape(axes=tuple(q_axes)),
                            matrix=tuple(tuple(row) for row in matrix), offset=tuple(offsets))
    source, target = reals(*q_axes), reals(*(p_axes[i] for i in output_order))
    body = ir.Reindexing(dom=(source,), cod=(target,), eta=eta, name="Y", source="X")
    definition = ir.Definition(name="view", inputs=(ir.Variable(name="X", array=source),),
                               outputs=(ir.Variable(name="Y", array=target),), body=body)
    return ir.Program(source="views.ncd", axes=(*q_axes, *p_axes), definitions=(definition,))


def gather(X: torch.Tensor, p_sizes: list[int], matrix: list[list[int]], offsets: list[int],
           output_order: list[int]) -> torch.Tensor:
    """The reference: Y[p] = X[..., eta(p)] entry by entry."""
    Y = torch.empty((*X.shape[:X.dim() - len(matrix)], *p_sizes))
    for p in itertools.product(*(range(n) for n in p_sizes)):
        q = tuple(o + sum(c * i for c, i in zip(row, p, strict=True))
                  for row, o in zip(matrix, offsets, strict=True))
        Y[(..., *p)] = X[(..., *q)]
    lead = Y.dim() - len(p_sizes)
    return Y.permute((*range(lead), *(lead + i for i in output_order)))


@st.composite
def stride_morphisms(draw: st.DrawFn) -> tuple:
    p_count = draw(st.integers(0, 3))
    q_count = draw(st.integers(0, 3))
    p_sizes = [draw(st.integers(1, 4)) for _ in range(p_count)]
    matrix = [[draw(st.sampled_from([0, 0, 1, 1, 2, 3])) for _ in range(p_count)]
              for _ in range(q_count)]
    offsets = [draw(st.integers(0, 2)) for _ in range(q_count)]
    slack = [draw(st.integers(0, 2)) for _ in range(q_count)]
    output_order = draw(st.permutations(range(p_count)))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    return p_sizes, matrix, offsets, slack, list(output_order), batch


@settings(max_examples=150, deadline=None, derandomize=True)
@given(stride_morphisms())
def test_any_stride_morphism_reads_what_it_says(case: tuple) -> None:
    p_sizes, matrix, offsets, slack, output_order, batch = case
    program = reindexing_program(p_sizes, matrix, offsets, slack, output_order)
    module = build_module(program, "view")
    q_sizes = [ir.size_value(a.size) for a in program.definitions[0].inputs[0].array.shape.axes]
    X = torch.randn((*batch, *q_sizes))
    torch.testing.assert_close(module(X), gather(X, p_sizes, matrix, offsets, output_order),
                               atol=0, rtol=0)


def test_views_have_no_python_loop_and_no_copy() -> None:
    """A window with stride and dilation, a diagonal, a fixed index and a broadcast: one
    statement of views into the input's storage, no loop in the generated forward."""
    p_sizes = [3, 2, 4, 2, 3]  # p4 is read by no row: a broadcast
    matrix = [[2, 2, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
    offsets, order = [1, 0, 2, 0], [4, 3, 2, 1, 0]
    program = reindexing_program(p_sizes, matrix, offsets, [0, 1, 0, 0], order)
    source = compile_program(program)
    forward = source[source.index("def forward"):]
    assert "for " not in forward
    for view in (".unfold(", ".diagonal(", ".expand(", "[..., 1:"):
        assert view in forward
    module = build_module(program, "view")
    X = torch.randn(2, 8, 5, 3, 2)
    Y = module(X)
    assert Y.untyped_storage().data_ptr() == X.untyped_storage().data_ptr()  # a view
    torch.testing.assert_close(Y, gather(X, p_sizes, matrix, offsets, order), atol=0, rtol=0)


def test_a_single_fixed_index_is_a_select() -> None:
    """`Y[p] = X[2, p]` (a gate of a cell, one of stacked q, k, v) is `X.select(-2, 2)`, a plain
    call, not an index tuple with `...`; with and without leading dims, a view."""
    program = reindexing_program([4], [[0], [1]], [2, 0], [1, 0], [0])
    forward = compile_program(program)
    forward = forward[forward.index("def forward"):]
    assert "X.select(-2, 2)" in forward and "[..." not in forward
    module = build_module(program, "view")
    for shape in [(4, 4), (3, 4, 4), (2, 3, 4, 4)]:
        X = torch.randn(shape)
        Y = module(X)
        assert Y.untyped_storage().data_ptr() == X.untyped_storage().data_ptr()
        torch.testing.assert_close(Y, gather(X, [4], [[0], [1]], [2, 0], [0]), atol=0, rtol=0)
