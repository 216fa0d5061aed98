"""The laws of theory.md hold for the reference interpreter, and every definition used to state
them compiles to a module that agrees with the interpreter.

`test_compile_laws.py` checks the same laws between compiled modules; here the two sides are
evaluated by `ncd.semantics`, which is written from the definitions, with the same weights on
both sides (a parameter's value depends only on its call site's name and its own).
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from differential import compare_definition

import ncd
from ncd import ir
from ncd.semantics import CallSite, Interpreter, ParameterPath, ParameterSource

CLOSE = {"rtol": 1e-10, "atol": 1e-10}

DEFINITIONS = """
axis x, b
axis m = 3
def f(X: R[x, m]) -> R[x, m] { return linear[m -> m](X, W) }
def g(X: R[x, m]) -> R[x, m] { return softmax[m](tanh(X)) }
def h(X: R[x, m]) -> R[x, m] { return linear[m -> m, bias](X, W, c) }
def ident(X: R[x, m]) -> R[x, m] { return X }

def left = (f ; g) ; h
def right = f ; (g ; h)
def ident_then_f = ident ; f
def f_then_ident = f ; ident
def just_f = f

def composed_pair = (f ; g) (x) (h ; f)
def paired_composition = (f (x) h) ; (g (x) f)

def fg = f ; g
def lifted_fg(X: R[b, x, m]) -> R[b, x, m] { return fg(X) }
def lifted_f_then_g(X: R[b, x, m]) -> R[b, x, m] { return g(f(X)) }
def lifted_f(X: R[b, x, m]) -> R[b, x, m] { return f(X) }

def in_a_block(X: R[x, m]) -> R[x, m] { block "B" color "red" { X = f(X) } return X }
def shared_three(X: R[x, m]) -> R[x, m] { block "B" x3 shared { X = f(X) } return X }
def two_copies(X: R[x, m]) -> R[x, m] { block "B" x2 { X = f(X) } return X }

axis y = 9, w = 2, p = 4, r = 2
def eta_then_mu(A: R[y]) -> R[r, w] {
    B[p, w] = A[2*p + w]
    C[r, w] = B[2 - r, w]
    return C
}
def composite(A: R[y]) -> R[r, w] {
    C[r, w] = A[4 - 2*r + w]
    return C
}
def identity_map(A: R[y]) -> R[y] {
    B[y] = A[y]
    return B
}
"""


def value_of(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def by_call_site(top: str) -> ParameterSource:
    """The same weights for `f.W` wherever the call site named `f` sits (the definition run,
    `top`, counts as a call site of its own name); block copies get their own weights (the
    copy number is part of the key)."""

    def source(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        copies = [str(step.index) for step in path if not isinstance(step, CallSite)]
        sites = [top] + [step.instance for step in path if isinstance(step, CallSite)]
        shape = tuple(int(ir.size_value(a.size) or 0) for a in parameter.array.shape.axes)
        return value_of(".".join([*copies, sites[-1], parameter.name]), shape)

    return source


PROGRAM = ncd.load(DEFINITIONS).ir


def interpret(name: str, *inputs: torch.Tensor, sizes: dict[str, int]) -> tuple[torch.Tensor,
                                                                                   ...]:
    return Interpreter(PROGRAM, sizes, by_call_site(name)).run(name, list(inputs))


def same(one: tuple[torch.Tensor, ...], other: tuple[torch.Tensor, ...]) -> None:
    assert len(one) == len(other)
    for a, b in zip(one, other, strict=True):
        torch.testing.assert_close(a, b, **CLOSE)


SIZES = [{"x": 1, "b": 2}, {"x": 3, "b": 1}, {"x": 4, "b": 3}]


@pytest.mark.parametrize("sizes", SIZES)
def test_composition_is_associative_and_has_units(sizes: dict[str, int]) -> None:
    X = value_of(f"X{sizes}", (sizes["x"], 3))
    same(interpret("left", X, sizes=sizes), interpret("right", X, sizes=sizes))
    for name in ("ident_then_f", "f_then_ident"):
        same(interpret(name, X, sizes=sizes), interpret("just_f", X, sizes=sizes))


@pytest.mark.parametrize("sizes", SIZES)
def test_interchange(sizes: dict[str, int]) -> None:
    X1, X2 = value_of(f"X1{sizes}", (sizes["x"], 3)), value_of(f"X2{sizes}", (sizes["x"], 3))
    same(interpret("composed_pair", X1, X2, sizes=sizes),
         interpret("paired_composition", X1, X2, sizes=sizes))


@pytest.mark.parametrize("sizes", SIZES)
def test_batch_lift_commutes_with_slicing_and_composition(sizes: dict[str, int]) -> None:
    X = value_of(f"Xb{sizes}", (sizes["b"], sizes["x"], 3))
    (lifted,) = interpret("lifted_f", X, sizes=sizes)
    for index in range(sizes["b"]):
        same((lifted[index],), interpret("f", X[index], sizes=sizes))
    same(interpret("lifted_fg", X, sizes=sizes), interpret("lifted_f_then_g", X, sizes=sizes))


@pytest.mark.parametrize("sizes", SIZES)
def test_a_block_changes_nothing_but_the_picture(sizes: dict[str, int]) -> None:
    X = value_of(f"Xk{sizes}", (sizes["x"], 3))
    same(interpret("in_a_block", X, sizes=sizes), interpret("f", X, sizes=sizes))
    # Three shared copies: f three times with one weight; two independent copies: f with
    # copy 0's weight, then with copy 1's.
    W = value_of("f.W", (3, 3))
    same(interpret("shared_three", X, sizes=sizes), (X @ W @ W @ W,))
    W0, W1 = (value_of(f"{i}.f.W", (3, 3)) for i in range(2))
    same(interpret("two_copies", X, sizes=sizes), (X @ W0 @ W1,))


def test_reindexing_is_a_contravariant_functor() -> None:
    A = value_of("A", (9,))
    r, w = torch.arange(2)[:, None], torch.arange(2)[None, :]
    gather = A[2 * (2 - r) + w]
    sizes = {"x": 1, "b": 1}
    same(interpret("eta_then_mu", A, sizes=sizes), (gather,))
    same(interpret("composite", A, sizes=sizes), (gather,))
    same(interpret("identity_map", A, sizes=sizes), (A,))


@pytest.mark.parametrize("name", [d.name for d in PROGRAM.definitions])
def test_each_side_compiles_to_what_the_interpreter_computes(name: str) -> None:
    report = compare_definition(PROGRAM, name, sizes=2)
    assert report.skipped is None and report.compared == 2
    assert not report.findings, "\n".join(map(str, report.findings))
