"""The laws of the theory (docs theory.md, "Laws") hold numerically for compiled definitions.

Sizes, index maps and inputs are drawn by hypothesis; two sides of each law are compiled from
ncd source separately and must agree to 1e-5 (with the same weights copied across).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ncd

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
LAWS = settings(max_examples=12, deadline=None, derandomize=True)

DEFINITIONS = """
axis x, b
axis m = 4
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
"""


def programs(width: int) -> ncd.Program:
    return ncd.load(DEFINITIONS, {"m": width})


def same_weights(source: nn.Module, target: nn.Module) -> None:
    assert sorted(source.state_dict()) == sorted(target.state_dict())
    target.load_state_dict(source.state_dict())


sizes = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**16))


def random_input(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@LAWS
@given(sizes)
def test_composition_is_associative(drawn: tuple[int, int, int]) -> None:
    width, length, seed = drawn
    program = programs(width)
    left, right = program.to_torch("left"), program.to_torch("right")
    same_weights(left, right)
    X = random_input(seed, length, width)
    torch.testing.assert_close(left(X), right(X), **TOLERANCE)


@LAWS
@given(sizes)
def test_identities_are_units(drawn: tuple[int, int, int]) -> None:
    width, length, seed = drawn
    program = programs(width)
    plain = program.to_torch("just_f")
    X = random_input(seed, length, width)
    for name in ("ident_then_f", "f_then_ident"):
        module = program.to_torch(name)
        same_weights(plain, module)
        torch.testing.assert_close(module(X), plain(X), **TOLERANCE)


@LAWS
@given(sizes)
def test_interchange(drawn: tuple[int, int, int]) -> None:
    width, length, seed = drawn
    program = programs(width)
    one, other = program.to_torch("composed_pair"), program.to_torch("paired_composition")
    same_weights(one, other)
    X1, X2 = random_input(seed, length, width), random_input(seed + 1, length + 1, width)
    for a, b in zip(one(X1, X2), other(X1, X2), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


@LAWS
@given(sizes, st.integers(1, 4))
def test_batch_lift_commutes_with_slicing(drawn: tuple[int, int, int], batch: int) -> None:
    """[f, P] ; [Y, p] = [X, p] ; f: the lifted module, sliced at p, is f of the slice."""
    width, length, seed = drawn
    program = programs(width)
    lifted, single = program.to_torch("lifted_f"), program.to_torch("f")
    single.load_state_dict({"W": lifted.state_dict()["f.W"]})
    X = random_input(seed, batch, length, width)
    Y = lifted(X)
    assert Y.shape == (batch, length, width)
    for index in range(batch):
        torch.testing.assert_close(Y[index], single(X[index]), **TOLERANCE)


@LAWS
@given(sizes, st.integers(1, 3))
def test_lift_of_composite_is_composite_of_lifts(drawn: tuple[int, int, int],
                                                 batch: int) -> None:
    width, length, seed = drawn
    program = programs(width)
    whole, parts = program.to_torch("lifted_fg"), program.to_torch("lifted_f_then_g")
    parts.load_state_dict({"f.W": whole.state_dict()["fg.f.W"]})
    X = random_input(seed, batch, length, width)
    torch.testing.assert_close(whole(X), parts(X), **TOLERANCE)


# ----------------------------------------------------------------------------- reindexing


@st.composite
def affine_chains(draw: st.DrawFn) -> dict[str, int]:
    """eta: (p, w) -> x = s*p + t*w + o and mu: (r, w) -> (p, w) = (c*r + d, w)."""
    s, t, c = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    o, d = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    window = draw(st.integers(1, 3))
    r_size = draw(st.integers(1, 4))
    p_size = c * (r_size - 1) + d + 1 + draw(st.integers(0, 2))
    x_size = s * (p_size - 1) + t * (window - 1) + o + 1 + draw(st.integers(0, 2))
    # The elaborator gives each new index the largest size that stays in bounds.
    p_size = (x_size - 1 - o - t * (window - 1)) // s + 1
    r_size = (p_size - 1 - d) // c + 1
    return {"s": s, "t": t, "c": c, "o": o, "d": d, "w": window, "r": r_size, "p": p_size,
            "x": x_size, "seed": draw(st.integers(0, 2**16))}


REINDEXING = """
axis n
axis x = {x}, w = {w}, p = {p}, r = {r}
def eta_then_mu(A: R[n, x]) -> R[n, r, w] {{
    B[n, p, w] = A[n, {s}*p + {t}*w + {o}]
    C[n, r, w] = B[n, {c}*r + {d}, w]
    return C
}}
def composite(A: R[n, x]) -> R[n, r, w] {{
    C[n, r, w] = A[n, {sc}*r + {t}*w + {offset}]
    return C
}}
"""


@LAWS
@given(affine_chains())
def test_reindexing_is_a_contravariant_functor(chain: dict[str, int]) -> None:
    """[a, eta ; mu] = [a, mu] ; [a, eta]: reading through mu then eta is reading through the
    composite map, and both equal an explicit gather."""
    source = REINDEXING.format(**chain, sc=chain["s"] * chain["c"],
                               offset=chain["s"] * chain["d"] + chain["o"])
    program = ncd.load(source)
    A = random_input(chain["seed"], 2, chain["x"])
    two_steps = program.to_torch("eta_then_mu")(A)
    one_step = program.to_torch("composite")(A)
    r = torch.arange(chain["r"])[:, None]
    w = torch.arange(chain["w"])[None, :]
    index = chain["s"] * (chain["c"] * r + chain["d"]) + chain["t"] * w + chain["o"]
    expected = A[:, index]
    torch.testing.assert_close(two_steps, expected, atol=0, rtol=0)
    torch.testing.assert_close(one_step, expected, atol=0, rtol=0)


def test_identity_reindexing_is_the_identity() -> None:
    """[a, id] = id: reading every index as it is gives the same tensor object back."""
    program = ncd.load("""
    axis x = 5, m = 3
    def same(A: R[x, m]) -> R[x, m] {
        B[x, m] = A[x, m]
        return B
    }
    """)
    A = torch.randn(5, 3)
    assert program.to_torch("same")(A) is A
