"""Checked programs compile to modules that compute what the program means.

Every test here compares a generated module's output with a result computed independently in
the test, with plain torch in float64 on random inputs (never with the compiler's own numbers):
repeated blocks whose variables were copied before the block, reindexings with negative
coefficients, symbolic bounds, scans whose states come in another axis order, einsums with
more than 52 axes. Programs that cannot run correctly are refused at check time or raise a
`ValueError` naming the source line when the module is called.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ncd.compilers.pytorch import build_module
from torch import nn

import ncd
from ncd import ir
from ncd.diagnostics import NcdError

DTYPE = torch.float64
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def load(source: str, sizes: dict[str, int] | None = None) -> ncd.api.Program:
    return ncd.load(textwrap.dedent(source), sizes)


def module(source: str, definition: str, sizes: dict[str, int] | None = None) -> nn.Module:
    return load(source, sizes).to_torch(definition).to(DTYPE)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=DTYPE)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def codes(source: str, sizes: dict[str, int] | None = None) -> list[str]:
    with pytest.raises(NcdError) as caught:
        load(source, sizes)
    return [d.code for d in caught.value.diagnostics]


# ----------------------------------------------------------------------------------------
# 1. repeated blocks: every repetition feeds the next, by name
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", ["shared", ""])
def test_block_after_a_copy_still_repeats(shared: str) -> None:
    f = module(f"""
        axis m = 2
        def f(X: R[m]) -> R[m] {{
            Y = X
            block "L" x2 {shared} {{ X = X * 2 }}
            return X + Y
        }}
        """, "f")
    X = randn(3, 2)
    close(f(X), 4 * X + X)


def test_block_that_reads_the_copy() -> None:
    f = module("""
        axis m = 3
        def f(X: R[m]) -> R[m] {
            Y = X
            block "L" x2 { X = X + Y }
            return X - Y
        }
        """, "f")
    X = randn(4, 3)
    close(f(X), (X + X + X) - X)


def test_residual_stack_with_the_input_kept_aside() -> None:
    program = load("""
        axis x
        axis m = 4
        def ff(X: R[m]) -> R[m] {
            return linear[m -> m](relu(linear[m -> m](X, W1)), W2)
        }
        def stack(X: R[x, m]) -> R[x, m] {
            Input = X
            block "layer" x3 { X = X + ff(layernorm[m](X)) }
            return X - Input
        }
        """)
    f = program.to_torch("stack").to(DTYPE)
    weights = f.state_dict()
    X = randn(5, 4)
    H = X
    for layer in range(3):
        W1, W2 = weights[f"layer.{layer}.ff.W1"], weights[f"layer.{layer}.ff.W2"]
        N = (H - H.mean(-1, keepdim=True)) / torch.sqrt(H.var(-1, unbiased=False, keepdim=True)
                                                         + 1e-5)
        H = H + torch.relu(N @ W1) @ W2
    result = f(X)
    close(result, H - X)
    assert result.abs().max() > 1e-3  # not the zeros of a skipped block


def test_block_with_several_carried_variables_and_a_swap() -> None:
    f = module("""
        axis m = 3
        def f(A: R[m], B: R[m]) -> (R[m], R[m], R[m]) {
            C = A
            block "L" x3 shared {
                A = A + B
                B = B * 0.5
                T = C
                C = A
                A = T
            }
            return A, B, C
        }
        """, "f")
    A0, B0 = randn(3), randn(3)
    a, b, c = A0, B0, A0
    for _ in range(3):
        a = a + b
        b = b * 0.5
        a, c = c, a
    for actual, expected in zip(f(A0, B0), (a, b, c), strict=True):
        close(actual, expected)


@pytest.mark.parametrize("factor", ["", " * 2"])
def test_block_swapping_two_names_writes_back_at_once(factor: str) -> None:
    f = module(f"""
        axis m = 2
        def f(A: R[m], B: R[m]) -> (R[m], R[m]) {{
            block "swap" x3 shared {{
                T = A
                A = B{factor}
                B = T
            }}
            return A, B
        }}
        """, "f")
    A0, B0 = randn(2), randn(2)
    a, b = A0, B0
    for _ in range(3):
        a, b = (b * 2 if factor else b), a
    result = f(A0, B0)
    close(result[0], a)
    close(result[1], b)


def test_names_rebound_but_not_read_carry_their_last_value() -> None:
    f = module("""
        axis m = 3
        def f(X: R[m]) -> (R[m], R[m]) {
            Y = tanh(X)
            block "L" x2 {
                Y = relu(X)
                X = X * 0.5
            }
            return X, Y
        }
        """, "f")
    X = randn(3)
    result = f(X)
    close(result[0], X * 0.25)
    close(result[1], torch.relu(X * 0.5))


def test_both_names_of_a_copy_rebound_in_the_block() -> None:
    f = module("""
        axis m = 2
        def f(X: R[m]) -> R[m] {
            Y = X
            block "L" x2 {
                X = X * 2
                Y = Y + X
            }
            return X + Y
        }
        """, "f")
    X = randn(2)
    close(f(X), 4 * X + 7 * X)


def test_nested_repeated_blocks_with_copies() -> None:
    f = module("""
        axis m = 2
        def f(X: R[m]) -> R[m] {
            Z = X
            block "outer" x2 {
                Y = X
                block "inner" x3 shared { X = X * 2 }
                X = X + Y
            }
            return X - Z
        }
        """, "f")
    X = randn(4, 2)
    close(f(X), 81 * X - X)


def test_block_in_a_called_definition() -> None:
    program = load("""
        axis x
        axis m = 2
        def g(X: R[m]) -> R[m] {
            Y = X
            block "L" x2 shared { X = X * 2 }
            return X + Y
        }
        def f(X: R[x, m]) -> R[x, m] { return g(X) - X }
        """)
    f = program.to_torch("f").to(DTYPE)
    X = randn(2, 5, 2)
    close(f(X), 4 * X)


def test_block_with_parameters_reads_an_invariant_copy() -> None:
    program = load("""
        axis m = 3
        def f(X: R[m]) -> R[m] {
            X0 = X
            block "L" x2 { X = linear[m -> m](X, W) + X0 }
            return X
        }
        """)
    f = program.to_torch("f").to(DTYPE)
    weights = f.state_dict()
    X = randn(2, 3)
    H = X
    for layer in range(2):
        H = H @ weights[f"l.{layer}.W"] + X
    close(f(X), H)


# ----------------------------------------------------------------------------------------
# 2. reindexings with negative coefficients: flips, and gathers where no view exists
# ----------------------------------------------------------------------------------------


def test_reversal() -> None:
    f = module("""
        axis m = 4
        def f(X: R[m]) -> R[m] {
            Y[m] = X[3 - m]
            return Y
        }
        """, "f")
    X = randn(2, 3, 4)
    close(f(X), X.flip(-1))


def test_negative_coefficient_with_an_offset_and_a_stride() -> None:
    f = module("""
        axis x = 9, i = 3, j = 4
        def f(X: R[x]) -> (R[i], R[j]) {
            A[i] = X[7 - 2*i]
            B[j] = X[8 - 2*j]
            return A, B
        }
        """, "f")
    X = randn(5, 9)
    A, B = f(X)
    close(A, X[..., [7, 5, 3]])
    close(B, X[..., [8, 6, 4, 2]])


def test_anti_diagonal_and_zero_coefficients() -> None:
    f = module("""
        axis a = 4, b = 4, c = 3
        def f(X: R[a, b], Z: R[c, b]) -> (R[i], R[c, j]) {
            D[i] = X[i, 3 - i]
            E[c, j] = Z[c + 0*j, 0*c + 3 - j]
            return D, E
        }
        axis i = 4, j = 4
        """, "f")
    X, Z = randn(2, 4, 4), randn(2, 3, 4)
    D, E = f(X, Z)
    close(D, torch.stack([X[..., k, 3 - k] for k in range(4)], -1))
    close(E, Z.flip(-1))


def test_flipped_kernel_convolution_with_a_symbolic_length() -> None:
    """A true convolution `sum(w) X[p - w + 2] K[w]`: the window has a negative coefficient
    next to a positive one, on a symbolic axis."""
    program = load("""
        axis b, x
        axis w = 3
        def conv(X: R[b, x], K: R[w]) -> R[b, p] {
            P[b, p, w] = X[b, p - w + 2]
            Y[b, p] = sum(w) P[b, p, w] * K[w]
            return Y
        }
        def direct(X: R[b, x], K: R[w]) -> R[b, p] {
            Y[b, p] = sum(w) X[b, p - w + 2] * K[w]
            return Y
        }
        axis p = x - 2
        """)
    for name in ("conv", "direct"):
        f = program.to_torch(name).to(DTYPE)
        for length in (3, 4, 9):
            X, K = randn(2, length), randn(3)
            expected = torch.stack([sum(X[:, p - w + 2] * K[w] for w in range(3))
                                    for p in range(length - 2)], -1)
            close(f(X, K), expected)


def test_negative_coefficient_inside_an_einsum_operand_with_batch_dims() -> None:
    f = module("""
        axis c = 3, o = 2, x = 8, w = 3, p = 3
        def f(X: R[c, x], W: R[o, c, w]) -> R[o, p] {
            Y[o, p] = sum(c, w) X[c, 2*p - w + 2] * W[o, c, w]
            return Y
        }
        """, "f")
    X, W = randn(2, 5, 3, 8), randn(2, 3, 3)
    expected = torch.zeros(2, 5, 2, 3, dtype=DTYPE)
    for p in range(3):
        for w in range(3):
            expected[..., p] += torch.einsum("...c,oc->...o", X[..., 2 * p - w + 2], W[:, :, w])
    close(f(X, W), expected)


def test_reversal_in_a_tensor_equation_with_two_operands() -> None:
    f = module("""
        axis m = 5, n = 2
        def f(A: R[n, m], B: R[m]) -> R[n] {
            S[n] = sum(m) A[n, m] * B[4 - m]
            return S
        }
        """, "f")
    A, B = randn(3, 2, 5), randn(3, 5)
    close(f(A, B), torch.einsum("...nm,...m->...n", A, B.flip(-1)))


def _const_axis(name: str, size: int) -> ir.Axis:
    return ir.Axis(name=name, size=ir.SizeConst(value=size))


def _port(array: ir.ArrayType, degree: ir.Shape, matrix: list[list[int]],
          offsets: list[int]) -> ir.Port:
    tiling = ir.Shape(axes=array.shape.axes)
    eta = ir.StrideMorphism(domain=degree, codomain=tiling,
                            matrix=tuple(tuple(row) for row in matrix), offset=tuple(offsets))
    return ir.Port(array=array, targets=(), reindexing=eta)


@pytest.mark.parametrize("kind", ["einsum", "add"])
def test_negative_coefficient_in_the_port_of_an_operation(kind: str) -> None:
    """IR that reads an operand backwards through its port (no separate reindexing):
    `Y[p, q] = A[3 - p] op B[q, p]`, as an einsum (a view dropped into the equation) and as a
    broadcast sum (a view with a size-1 dim inserted)."""
    p, q, a = _const_axis("p", 3), _const_axis("q", 2), _const_axis("a", 4)
    degree = ir.Shape(axes=(p, q))

    def reals(*axes: ir.Axis) -> ir.ArrayType:
        return ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(axes=axes))

    A, B, Y = reals(a), reals(q, p), reals(p, q)
    op: ir.Operator = ir.EinsumOp(contracted=()) if kind == "einsum" else ir.AddOp()
    term = ir.Broadcasted(
        dom=(A, B), cod=(Y,), op=op, degree=degree,
        inputs=(_port(A, degree, [[-1, 0]], [3]), _port(B, degree, [[0, 1], [1, 0]], [0, 0])),
        outputs=(_port(Y, degree, [[1, 0], [0, 1]], [0, 0]),))
    definition = ir.Definition(
        name="f", inputs=(ir.Variable(name="A", array=A), ir.Variable(name="B", array=B)),
        outputs=(ir.Variable(name="Y", array=Y),), body=term)
    program = ir.Program(source="ports.ncd", axes=(p, q, a), definitions=(definition,))
    f = build_module(program, "f")
    A0, B0 = randn(2, 4), randn(2, 2, 3)
    reversed_a = A0[..., [3, 2, 1]][..., :, None]
    expected = reversed_a * B0.transpose(-1, -2) if kind == "einsum" else \
        reversed_a + B0.transpose(-1, -2)
    close(f(A0, B0), expected)


def _reindexing_program(p_sizes: list[int], matrix: list[list[int]], offsets: list[int],
                        q_sizes: list[int], output_order: list[int]) -> ir.Program:
    def axis(name: str, size: int) -> ir.Axis:
        return ir.Axis(name=name, size=ir.SizeConst(value=size))

    p_axes = [axis(f"p{i}", size) for i, size in enumerate(p_sizes)]
    q_axes = [axis(f"q{j}", size) for j, size in enumerate(q_sizes)]
    eta = ir.StrideMorphism(domain=ir.Shape(axes=tuple(p_axes)),
                            codomain=ir.Shape(axes=tuple(q_axes)),
                            matrix=tuple(tuple(row) for row in matrix), offset=tuple(offsets))
    source = ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(axes=tuple(q_axes)))
    target = ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(axes=tuple(p_axes[i]
                                                                    for i in output_order)))
    body = ir.Reindexing(dom=(source,), cod=(target,), eta=eta, name="Y", source="X")
    definition = ir.Definition(name="view", inputs=(ir.Variable(name="X", array=source),),
                               outputs=(ir.Variable(name="Y", array=target),), body=body)
    return ir.Program(source="views.ncd", axes=(*q_axes, *p_axes), definitions=(definition,))


@st.composite
def signed_stride_morphisms(draw: st.DrawFn) -> tuple:
    p_count = draw(st.integers(1, 3))
    q_count = draw(st.integers(1, 3))
    p_sizes = [draw(st.integers(1, 4)) for _ in range(p_count)]
    matrix = [[draw(st.sampled_from([0, 0, 1, 2, -1, -1, -2, -3])) for _ in range(p_count)]
              for _ in range(q_count)]
    offsets, q_sizes = [], []
    for row in matrix:
        low = sum(c * (n - 1) for c, n in zip(row, p_sizes, strict=True) if c < 0)
        high = sum(c * (n - 1) for c, n in zip(row, p_sizes, strict=True) if c > 0)
        offset = -low + draw(st.integers(0, 2))
        offsets.append(offset)
        q_sizes.append(offset + high + 1 + draw(st.integers(0, 2)))
    output_order = list(draw(st.permutations(range(p_count))))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    return p_sizes, matrix, offsets, q_sizes, output_order, batch


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(signed_stride_morphisms())
def test_any_signed_stride_morphism_reads_what_it_says(case: tuple) -> None:
    p_sizes, matrix, offsets, q_sizes, output_order, batch = case
    program = _reindexing_program(p_sizes, matrix, offsets, q_sizes, output_order)
    f = build_module(program, "view")
    X = randn(*batch, *q_sizes)
    index = [torch.tensor(offset).reshape([1] * len(p_sizes)) for offset in offsets]
    for j, row in enumerate(matrix):
        for i, (coefficient, size) in enumerate(zip(row, p_sizes, strict=True)):
            shape = [1] * len(p_sizes)
            shape[i] = size
            index[j] = index[j] + coefficient * torch.arange(size).reshape(shape)
    index = [i.expand(p_sizes) for i in index]
    expected = X[(..., *index)]
    lead = expected.dim() - len(p_sizes)
    expected = expected.permute((*range(lead), *(lead + i for i in output_order)))
    close(f(X), expected)


# ----------------------------------------------------------------------------------------
# 6. einsums with more distinct axes than torch.einsum has letters
# ----------------------------------------------------------------------------------------


def _many_axes_program(count: int) -> tuple[str, list[int]]:
    sizes = [1 + (i % 3 == 0) for i in range(count)]
    names = [f"a{i}" for i in range(count)]
    half = count // 2
    left, right = names[:half], names[half - 4:]  # four shared axes: summed
    kept = [n for n in names if n not in names[half - 4:half]]
    source = "\n".join([
        "axis " + ", ".join(f"{n} = {s}" for n, s in zip(names, sizes, strict=True)),
        "axis b",
        f"def f(A: R[b, {', '.join(left)}], B: R[{', '.join(right)}]) -> "
        f"R[b, {', '.join(kept)}] {{",
        f"    Y[b, {', '.join(kept)}] = sum({', '.join(names[half - 4:half])}) "
        f"A[b, {', '.join(left)}] * B[{', '.join(right)}]",
        "    return Y",
        "}",
    ])
    return source, sizes


def test_einsum_with_sixty_axes() -> None:
    source, sizes = _many_axes_program(60)
    f = module(source, "f")
    half = 30
    A = randn(2, 3, *sizes[:half])
    B = randn(*sizes[half - 4:])
    # The reference: both operands flattened by hand into (kept, summed) matrices.
    summed = sizes[half - 4:half]
    a = A.reshape(2, 3, -1, int(torch.tensor(summed).prod()))
    b = B.reshape(int(torch.tensor(summed).prod()), -1)
    expected = torch.einsum("xbks,sr->xbkr", a, b).reshape(2, 3, *sizes[:half - 4],
                                                           *sizes[half:])
    close(f(A, B), expected)


def test_einsum_with_sixty_axes_and_a_diagonal() -> None:
    names = [f"a{i}" for i in range(56)]
    sizes = [2 if i < 3 else 1 for i in range(56)]
    source = "\n".join([
        "axis " + ", ".join(f"{n} = {s}" for n, s in zip(names, sizes, strict=True)),
        "axis i = 2, j = 2",
        f"def f(A: R[i, j, {', '.join(names[:28])}], B: R[{', '.join(names[28:])}]) -> "
        f"R[{', '.join(reversed(names))}, i] {{",
        f"    Y[{', '.join(reversed(names))}, i] = A[i, i, {', '.join(names[:28])}] "
        f"* B[{', '.join(names[28:])}]",
        "    return Y",
        "}",
    ])
    f = module(source, "f")
    A, B = randn(2, 2, *sizes[:28]), randn(*sizes[28:])
    diagonal = A.diagonal(0, 0, 1)  # (a0..a27, i)
    outer = diagonal[(..., *([None] * 28), slice(None))] * B[..., None]
    # outer: (a0..a27, a28..a55, i) -> reversed names, then i
    expected = outer.permute(*reversed(range(56)), 56)
    close(f(A, B), expected)


# ----------------------------------------------------------------------------------------
# 5. scan: states, sequences and step outputs align by name
# ----------------------------------------------------------------------------------------

SCAN = """
axis t
axis b = 2, h = 3, i = 4
def cell(H: R[h, b], X: R[i, b]) -> (R[h, b], R[b, h]) {
    Z = tanh(linear[h -> h](H, Wh) + linear[i -> h](X, Wx))
    return Z, Z
}
def run(H0: R[b, h], X: R[t, b, i]) -> (Last: R[b, h], All: R[t, h, b]) {
    return scan[t](cell, H0, X)
}
"""


def test_scan_with_states_in_another_axis_order_than_the_step() -> None:
    program = load(SCAN)
    f = program.to_torch("run").to(DTYPE)
    weights = f.state_dict()
    Wh, Wx = weights["cell.Wh"], weights["cell.Wx"]  # (h_in, h), (i, h)
    H0, X = randn(2, 3), randn(5, 2, 4)
    H, outputs = H0, []
    for step in range(5):  # the loop written out, on (b, h) throughout
        H = torch.tanh(H @ Wh + X[step] @ Wx)
        outputs.append(H)
    last, every = f(H0, X)
    close(last, H)
    close(every, torch.stack(outputs).transpose(1, 2))


def test_scan_state_lifted_over_a_batch_axis_in_another_order() -> None:
    f = module("""
        axis t
        axis b = 2, h = 3
        def cell(H: R[h], X: R[h]) -> R[h] { return H * 0.5 + X }
        def run(H0: R[h, b], X: R[t, b, h]) -> R[h, b] {
            Last = scan[t](cell, H0, X)
            return Last
        }
        """, "run")
    H0, X = randn(3, 2), randn(4, 2, 3)
    H = H0
    for step in range(4):
        H = H * 0.5 + X[step].T
    close(f(H0, X), H)


# ----------------------------------------------------------------------------------------
# 4. initialisers and options the module could not use are refused at check time
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("init", "code"), [
    ("normal(0, -1)", "E312"), ("uniform(5, 1)", "E312"), ("xavier(0)", "E312"),
    ("xavier(-2)", "E312"), ("xavier(1, 2)", "E312"), ("normal(0)", "E312"),
    ("uniform(0, 1, 2)", "E312"), ("constant()", "E312"), ("zeros(1)", "E312"),
    ("normal(0, 1e999)", "E103"),
])
def test_bad_initialisers_are_refused(init: str, code: str) -> None:
    assert codes(f"""
        axis m = 4
        def f(X: R[m]) -> R[m] {{
            param W: R[m] = {init}
            return X + W
        }}
        """) == [code]


@pytest.mark.parametrize("option", [
    "layernorm[m, eps=-1](X)", "layernorm[m, eps=0](X)", "rmsnorm[m, eps=-0.5](X)",
    "dropout[p=1](X)", "dropout[p=-0.1](X)", "dropout[1.5](X)",
])
def test_bad_options_are_refused(option: str) -> None:
    assert codes(f"""
        axis m = 4
        def f(X: R[m]) -> R[m] {{ return {option} }}
        """) == ["E307"]


def test_accepted_initialisers_initialise() -> None:
    f = module("""
        axis m = 64, n = 32
        def f(X: R[m]) -> (R[n], R[m], R[m]) {
            param W: R[m, n] = xavier(2.0)
            param Z: R[m] = normal(3, 0)
            param U: R[m] = uniform(1, 1)
            return linear[m -> n](X, W), X + Z, X + U
        }
        """, "f")
    bound = 2.0 * (6 / (64 + 32)) ** 0.5
    assert f.W.abs().max() <= bound and f.W.std() > bound / 4
    assert torch.all(f.Z == 3) and torch.all(f.U == 1)
    X = randn(64)
    close(f(X)[0], X @ f.W)


# ----------------------------------------------------------------------------------------
# 3. bounds with symbolic sizes: proved, refused (E304), or checked when the module runs
# ----------------------------------------------------------------------------------------


def test_stride_past_a_symbolic_end_raises_when_the_module_runs() -> None:
    """`X[2*n]` with `|x| = n` fits only when n = 1: checked when the module runs."""
    program = load("""
        axis n
        axis x = n
        def f(X: R[x]) -> R[n] {
            Y[n] = X[2*n]
            return Y
        }
        """)
    f = program.to_torch("f").to(DTYPE)
    X = randn(3, 1)
    close(f(X), X)
    for size in (2, 3, 8):
        with pytest.raises(ValueError, match=r"line 5: X\[2\*n\] reads index 2 \* n - 2 of "
                           rf"axis x of size n; needs .* \(here n = {size}\)"):
            f(randn(size))


def test_an_input_with_fewer_dims_than_its_axes_is_named_with_its_shape() -> None:
    """Where a forward reads a size from an input (`size_b = X.shape[-3]`) or checks one, an
    input that lacks that dim raises a `ValueError` that names it and its shape, not a bare
    `IndexError: tuple index out of range`. The right ranks run as before, and so does
    symbolic tracing (its shapes are proxies)."""
    program = load("""
        axis y
        def f(Y: R[y]) -> R[y] {
            I[y] = y                        # the index values: |y| read from Y
            return Y * I
        }
        """)
    f = program.to_torch("f").to(DTYPE)
    Y = randn(2, 6)
    close(f(Y), Y * torch.arange(6, dtype=DTYPE))
    close(torch.fx.symbolic_trace(f)(Y), Y * torch.arange(6, dtype=DTYPE))
    with pytest.raises(ValueError, match=r"^input Y: R\[y\] has 1 axis, but the tensor has "
                       r"shape \(\)$"):
        f(randn(()))
    # the gallery's strided convolution reads |b| from the input's third dim from the end
    conv1d = ncd.load(Path(__file__).resolve().parent.parent / "gallery" / "conv1d.ncd")
    assert "size_b = X.shape[-3]" in conv1d.compile()
    with pytest.raises(ValueError, match=r"^input X: R\[b, c, x\] has 3 axes, but the tensor "
                       r"has shape \(16, 128\)$"):
        conv1d.to_torch()(torch.randn(16, 128))


def test_an_input_axis_of_size_a_times_n_plus_b_is_checked_when_the_module_runs() -> None:
    """`axis y = 2 * yh`: an input of odd length along y is no `R[y]` (it would be read as
    `yh = y // 2` and fail inside torch, or drop an entry); `yp = y + 2` needs an even
    length plus two. A `ValueError` names the input and the axis."""
    program = load("""
        axis yh
        axis y = 2 * yh, yp = y + 2
        def up(X: R[y], P: R[yp]) -> (R[y], R[yp]) {
            H[yh] = X[2*yh]                 # every other entry
            U[y] = H[y // 2]                # each of them twice
            return U, P
        }
        """)
    f = program.to_torch("up").to(DTYPE)
    for length in (2, 6):
        X, P = randn(3, length), randn(3, length + 2)
        U, Q = f(X, P)
        close(U, X[..., ::2].repeat_interleave(2, dim=-1))
        close(Q, P)
    for length in (1, 5):
        with pytest.raises(ValueError, match=rf"input X: axis y has {length} entries, but its "
                           r"size is 2\*yh for a whole yh >= 1"):
            f(randn(length), randn(6))
    with pytest.raises(ValueError, match=r"input P: axis yp has 7 entries, but its size is "
                       r"(y \+ 2 = )?2\*yh \+ 2 for a whole yh >= 1"):
        f(randn(4), randn(7))
    with pytest.raises(ValueError, match=r"input P: axis yp has 2 entries"):
        f(randn(4), randn(2))       # yh would be 0
    # sizes fixed with -D: nothing to check
    identity = """
        axis yh
        axis y = 2 * yh
        def f(X: R[y]) -> R[y] { return X }
        """
    assert "ValueError" in load(identity).compile("f")
    assert "ValueError" not in load(identity, {"yh": 3}).compile("f")


def test_strided_convolution_one_too_long_is_refused() -> None:
    with pytest.raises(NcdError) as caught:
        load("""
            axis b, x
            axis c = 3, o = 2, w = 3
            axis p = (x - w) // 2 + 2
            def conv(X: R[b, c, x]) -> R[b, o, p] {
                param W: R[o, c, w]
                Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w]
                return Y
            }
            """)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E304" and diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == (7, 36)  # `2*p + w`
    assert "for every size" in diagnostic.message


@pytest.mark.parametrize("length", [3, 4, 7, 10, 33])
def test_strided_convolution_with_the_right_length_runs_for_every_size(length: int) -> None:
    program = load("""
        axis b, x
        axis c = 3, o = 2, w = 3
        axis p = (x - w) // 2 + 1
        def conv(X: R[b, c, x]) -> R[b, o, p] {
            param W: R[o, c, w]
            Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w]
            return Y
        }
        """)
    assert "reads index" not in program.compile("conv")  # no bound checked at run time
    f = program.to_torch("conv").to(DTYPE)
    X = randn(2, 3, length)
    close(f(X), torch.nn.functional.conv1d(X, f.W, stride=2))


def test_bound_that_depends_on_the_size_is_checked_when_the_module_runs() -> None:
    program = load("""
        axis x
        axis p = x // 2 + 1
        def f(X: R[x]) -> R[p] {
            Y[p] = X[2*p]
            return Y
        }
        """)
    source = program.compile("f")
    forward = [line.strip() for line in source[source.index("def forward"):].splitlines()]
    # the size read first (in the `try` that names an input lacking its dim), then the check
    assert forward[2:4] == ["try:", "size_x = X.shape[-1]  # |x|"]
    check = forward.index("raise") + 1
    assert forward[check].startswith("if ") and "raise ValueError" in forward[check + 1]
    f = program.to_torch("f").to(DTYPE)
    for length in (1, 3, 9):
        X = randn(2, length)
        close(f(X), X[..., ::2])
    for length in (2, 8):
        with pytest.raises(ValueError, match=r"line 5: X\[2\*p\] reads index .* of axis x"):
            f(randn(length))


def test_fixed_range_read_from_a_symbolic_axis_is_checked_when_the_module_runs() -> None:
    f = module("""
        axis x
        axis i = 10
        def f(X: R[x]) -> R[i] {
            Y[i] = X[i + 1]
            return Y
        }
        """, "f")
    X = randn(3, 12)
    close(f(X), X[..., 1:11])
    with pytest.raises(ValueError, match=r"line 5: X\[i \+ 1\] reads index 10 of axis x.*x = 10"):
        f(randn(10))


def test_negative_reach_that_depends_on_the_size_is_checked_when_the_module_runs() -> None:
    f = module("""
        axis x, w
        axis p = x - 2
        def f(X: R[x], K: R[w]) -> R[p] {
            Y[p] = sum(w) X[p - w + 2] * K[w]
            return Y
        }
        """, "f")
    for width in (1, 2, 3):
        X, K = randn(9), randn(width)
        expected = torch.stack([sum(X[p - w + 2] * K[w] for w in range(width))
                                for p in range(7)])
        close(f(X, K), expected)
    with pytest.raises(ValueError, match=r"line 5: X\[p - w \+ 2\] reads index .* of axis x"):
        f(randn(9), randn(4))


@pytest.mark.parametrize("name", ["attention", "conv1d", "lstm", "mlp", "transformer"])
def test_gallery_has_no_run_time_bound_checks_and_runs_for_several_sizes(name: str) -> None:
    path = ROOT / "gallery" / f"{name}.ncd"
    program = ncd.load(path)
    assert "reads index" not in program.compile()  # no bound checked at run time
    f = program.to_torch().to(DTYPE)
    for size in (1, 2, 5):
        inputs = [randn(*(size if a.value is None else a.value for a in variable.array.shape.axes))
                  for variable in program.ir.definitions[-1].inputs]
        outputs = f(*inputs)
        for output in outputs if isinstance(outputs, tuple) else (outputs,):
            assert torch.isfinite(output).all()


def test_a_size_that_no_input_tells_is_an_input_error_not_an_internal_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`j` is only an axis of the output: the module cannot know it (found by the
    differential fuzzer, it was a CompileError and exit 3)."""
    from ncd.cli import main

    text = "axis a\naxis j\ndef f(X: R[a]) -> R[j] {\n    Y[j] = X[j + 1]\n    return Y\n}\n"
    program = ncd.load(text)
    for build in (program.compile, program.to_torch):
        with pytest.raises(NcdError) as caught:
            build("f")
        (diagnostic,) = caught.value.diagnostics
        assert diagnostic.code == "E305" and "`j`" in diagnostic.message
        assert diagnostic.span is not None and (diagnostic.span.line, diagnostic.span.column) \
            == (3, 5)
    source = tmp_path / "j.ncd"
    source.write_text(text)
    assert main(["compile", str(source)]) == 1
    assert "j.ncd:3:5: error[E305]" in capsys.readouterr().err
    fixed = ncd.load(text, sizes={"j": 2}).to_torch("f")
    X = randn(5)
    close(fixed(X), X[1:3])
