"""A sum of an entrywise product that nothing else reads, `C + A * B`, as one `torch.addcmul`
where autograd records nothing, and as `C + A * B` in one statement where it does
(ncd/muladd.py finds it, compilers/muladd.py lowers it).

Each fused form is held to `C + A * B` computed by torch from the module's own parameters
(values without autograd; values and gradients with it; float64, with leading batch dims)
and to the reference interpreter (`compare_text` runs the batched call without autograd);
the forms that must not fuse are written out as before.
"""

from __future__ import annotations

import re

import pytest
import torch
from differential import compare_text

import ncd

PROGRAM = """axis t = 3, m = 4, k = 4

def fused(H: R[m], U: R[m], A: R[m], G: R[m]) -> R[m] {
    return A * H + G * U
}

def broadcast(C: R[t, m], X: R[t, m], A: R[m]) -> R[t, m] {
    return C + A * X
}

def parameters(X: R[t, m], C: R[t, m]) -> R[t, m] {
    param D: R[m] = normal(0, 1)
    param b: R[m] = normal(0, 1)
    Y = C + D * X
    return Y * X + b
}

def equation(C: R[t, m], X: R[t, m]) -> R[t, m] {
    param D: R[m] = normal(0, 1)
    Y[t, m] = C[t, m] + D[m] * X[t, m]
    return Y
}

def outer(C: R[t, m], A: R[t], B: R[m]) -> R[t, m] {
    Y[t, m] = C[t, m] + A[t] * B[m]
    return Y
}

def permuted(C: R[t, m], A: R[m, t], B: R[t]) -> R[t, m] {
    P = A * B
    return C + P
}

def squared(C: R[m], X: R[m]) -> R[m] {
    return C + X * X
}

def nested(A: R[m], B: R[m], C: R[m], D: R[m]) -> R[m] {
    return A * B * C + D
}

def diagonal(C: R[m], A: R[m, k]) -> R[m] {
    Y[m] = C[m] + A[m, m] * C[m]
    return Y
}

def scaled(C: R[m], X: R[m]) -> R[m] {
    return C + X * 2
}

def difference(C: R[m], A: R[m], B: R[m]) -> R[m] {
    return C - A * B
}

def shared(C: R[m], A: R[m], B: R[m]) -> (R[m], R[m]) {
    P = A * B
    return C + P, P
}

def three(C: R[m], A: R[m], B: R[m], D: R[m]) -> R[m] {
    return add(C, A * B, D)
}

def quotient(C: R[m], A: R[m], B: R[m]) -> R[m] {
    return C + A / B
}

def doubled(C: R[t, m], X: R[t, m], D: R[m]) -> R[t, m] {
    Y[t, m] = C[t, m] + 2 * D[m] * X[t, m]
    return Y
}
"""

FUSED = {"fused": 1, "broadcast": 1, "parameters": 2, "equation": 1, "outer": 1, "permuted": 1,
         "squared": 1, "nested": 1, "diagonal": 1}
"""How many sums of a product each definition writes as one call."""
WRITTEN_OUT = ("scaled", "difference", "shared", "three", "quotient", "doubled")

SCAN = """axis t, n = 3

def step(H: R[n], U: R[n]) -> (R[n], R[n]) {
    param nu: R[n] = uniform(0.1, 0.9)
    G = 1 - nu
    H2 = G * U + nu * H
    return H2, H2
}

def scanned(X: R[t, n]) -> R[t, n] {
    buffer H0: R[n] = zeros
    Last, Hs = scan[t](step, H0, X)
    return Hs
}

def kept(H: R[n], U: R[n]) -> (R[n], R[n]) {
    param nu: R[n] = uniform(0.1, 0.9)
    G = 1 - nu
    P = nu * H
    H2 = P + G * U
    return H2, P
}

def apart(X: R[t, n]) -> R[t, n] {
    buffer H0: R[n] = zeros
    Last, Ps = scan[t](kept, H0, X)
    return Ps
}
"""


def _class_source(source: str, name: str) -> str:
    start = source.index(f"class {name.capitalize()}(nn.Module)")
    end = source.find("\nclass ", start + 1)
    return source[start:] if end < 0 else source[start:end]


def test_each_sum_of_a_product_read_by_nothing_else_is_one_addcmul() -> None:
    source = ncd.load(PROGRAM).compile()
    for name, count in FUSED.items():
        code = _class_source(source, name)
        assert code.count("torch.addcmul(") == count, name
        assert code.count("if not torch.is_grad_enabled():") == count, name
    for name in WRITTEN_OUT:
        assert "addcmul" not in _class_source(source, name), name
    # laid out as the two operations would lay the operands out (the product's axes permuted)
    assert "Y = torch.addcmul(C, A.transpose(-2, -1), B.unsqueeze(-1))" in source
    assert "Y = C + A.transpose(-2, -1) * B.unsqueeze(-1)" in source
    assert "Y = torch.addcmul(C, A.unsqueeze(-1), B.unsqueeze(-2))" in source


def test_the_fused_programs_agree_with_the_interpreter() -> None:
    """Every definition, fused or not, with a leading batch dim too (`compare_definition`)."""
    for name, report in compare_text(PROGRAM, sizes=1).items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


def _inputs(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in shapes]


CASES = {
    # definition: (input shapes with leading batch dims, the two operations written by hand)
    "fused": ([(2, 4)] * 4, lambda p, H, U, A, G: A * H + G * U),
    "broadcast": ([(2, 5, 3, 4), (2, 5, 3, 4), (4,)], lambda p, C, X, A: C + A * X),
    "parameters": ([(2, 3, 4), (3, 4)],
                   lambda p, X, C: (C + p["D"] * X) * X + p["b"]),
    "equation": ([(5, 3, 4), (3, 4)], lambda p, C, X: C + p["D"] * X),
    "outer": ([(2, 3, 4), (3,), (2, 4)], lambda p, C, A, B: C + A[:, None] * B[..., None, :]),
    "permuted": ([(3, 4), (2, 4, 3), (3,)], lambda p, C, A, B: C + (A * B).transpose(-2, -1)),
    "squared": ([(2, 4), (4,)], lambda p, C, X: C + X * X),
    "diagonal": ([(2, 4), (4, 4)], lambda p, C, A: C + A.diagonal(dim1=-2, dim2=-1) * C),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_those_of_the_two_operations(name: str) -> None:
    torch.manual_seed(0)
    shapes, by_hand = CASES[name]
    module = ncd.load(PROGRAM).to_torch(name).double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter))
    inputs = _inputs(*shapes)
    copies = [x.detach().clone().requires_grad_(True) for x in inputs]
    parameters = dict(module.named_parameters())
    copied = {key: value.detach().clone().requires_grad_(True)
              for key, value in parameters.items()}
    with torch.no_grad():  # torch.addcmul
        torch.testing.assert_close(module(*inputs), by_hand(copied, *copies))
    got, want = module(*inputs), by_hand(copied, *copies)  # the two operations
    torch.testing.assert_close(got, want)
    weight = torch.randn_like(want)
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    for x, y in [*zip(inputs, copies, strict=True),
                 *((parameters[key], copied[key]) for key in parameters)]:
        assert x.grad is not None and y.grad is not None
        torch.testing.assert_close(x.grad, y.grad)


def test_a_traced_module_runs_the_branch_of_its_grad_mode() -> None:
    module = ncd.load(PROGRAM).to_torch("broadcast").double()
    C, X, A = (x.detach() for x in _inputs((2, 3, 4), (2, 3, 4), (4,)))
    for grad in (False, True):  # the branch is the one taken while tracing
        with torch.set_grad_enabled(grad):
            traced = torch.fx.symbolic_trace(module)
            assert ("addcmul" in traced.code) != grad
            torch.testing.assert_close(traced(C, X, A), module(C, X, A))


def test_in_a_scan_the_product_of_the_state_is_fused_inside_the_loop() -> None:
    """The product of the state runs in the loop, the input's before it: a sum in the loop
    fuses only a product in the loop (`apart`: the product of the state is read twice, and
    the input's, computed before the loop for every step, stays a product), and the scans
    agree with the interpreter."""
    program = ncd.load(SCAN)
    source = program.compile("scanned")
    inlined = re.search(r"for t_index\w* in .*inlined", source)  # (a hooked step's loop first)
    assert inlined is not None, source
    loop = source[inlined.start():]
    assert re.search(r'torch\.addcmul\(\w+, H0\w*, step\._parameters\["nu"\]\)', loop), loop
    apart = program.compile("apart")
    assert "addcmul" not in apart[apart.index("class Apart"):]
    for name, report in compare_text(SCAN, sizes=1).items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_addcmul_agrees_with_the_two_operations_to_the_rounding_of_the_product(
        dtype: torch.dtype) -> None:
    """`addcmul` may round `C + A * B` once (a fused multiply-add, as on an AVX2 CPU) where
    the two operations round the product first: they differ by at most that rounding, half a
    unit in the last place of the product, plus one of the sum's."""
    torch.manual_seed(0)
    c, a, b = (torch.randn(4096, dtype=dtype) for _ in range(3))
    fused, written = torch.addcmul(c, a, b), c + a * b
    ulp = torch.finfo(dtype).eps
    bound = ulp * ((a * b).abs() / 2 + written.abs())
    assert bool(((fused - written).abs() <= bound).all())
    if dtype == torch.float32:  # the fused result is the nearer (or as near) to the exact one
        exact = c.double() + a.double() * b.double()  # the product exact in float64
        assert bool(((fused.double() - exact).abs() <= (written.double() - exact).abs()).all())


def test_a_callee_written_in_place_twice_fuses_at_each_call() -> None:
    """A callee's product of its tables (`P * P`, from sizes alone) is not a table shared by
    its calls: it is the fused sum's, which reads each call's argument."""
    text = """axis e = 5

def small(X: R[e]) -> R[e] {
    P[e] = e
    return X + P * P
}

def twice(X: R[e]) -> R[e] {
    Y = small(X)
    return small(Y)
}
"""
    source = ncd.load(text).compile("twice")
    assert source[source.index("class Twice"):].count("torch.addcmul(") == 2
    for name, report in compare_text(text, sizes=1).items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"
