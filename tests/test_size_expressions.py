"""Sizes wherever a number goes: operator options (`before=k - 1`), index coefficients
(`X[c, s*p + w]`), mask conditions (`x - y < w`), and the literal `inf`; sizes overridden
with `-D` flow through every number computed from them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import err, ok, one
from differential import compare_text

import ncd
from ncd import ir
from ncd.sizes import ProgramSizes

PAD = """axis x = 6, k = 3, xp = x + k - 1
def causal_pad(X: R[x]) -> R[xp] {
    return pad[x -> xp, before=k - 1, value=-inf](X)
}
"""


def agrees_with_interpreter(text: str) -> None:
    for name, report in compare_text(text).items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


def test_options_are_computed_from_sizes_and_follow_overrides() -> None:
    X = torch.randn(6)
    for k in (3, 5):
        program = ncd.load(PAD, sizes={"k": k})
        term = one(program.ir.definition("causal_pad"), "pad")
        assert isinstance(term.op, ir.PadOp) and term.op.before == k - 1
        assert term.op.value == float("-inf")
        Y = program.to_torch("causal_pad")(X)
        torch.testing.assert_close(Y, F.pad(X, (k - 1, 0), value=float("-inf")))
    agrees_with_interpreter(PAD)


def test_a_size_known_only_at_run_time_is_not_a_number() -> None:
    diagnostic = err("axis x, k\ndef f(X: R[x]) -> R[x] {\n    return dropout[p=1 / k](X)\n}",
                     "E309", "3:26")
    assert "known only at run time" in diagnostic.message
    assert "-D k=3" in (diagnostic.hint or "")


def test_options_still_refuse_what_is_not_a_number() -> None:
    err("axis x = 4\ndef f(X: R[x]) -> R[x] {\n    return dropout[p=X](X)\n}", "E307", "3:22")
    err("axis x = 4, k = 2\ndef f(X: R[x]) -> R[x] {\n    return dropout[p=1 // (k - k)](X)\n}",
        "E309", "3:22")


BAND = """axis x = 5, y = 5, w = 2
def band(S: R[x, y]) -> R[x, y] {
    return mask[x - y < w, fill=-inf](S)
}
"""


def test_mask_conditions_name_sizes() -> None:
    S = torch.randn(5, 5)
    for w in (2, 4):
        Y = ncd.load(BAND, sizes={"w": w}).to_torch("band")(S)
        i = torch.arange(5)
        keep = (i[:, None] - i[None, :]) < w
        torch.testing.assert_close(Y, S.masked_fill(~keep, float("-inf")))
    agrees_with_interpreter(BAND)


STRIDED = """axis c = 2, x = 11, w = 3, s = 2, p = 5
def strided(X: R[c, x], K: R[w]) -> R[c, p] {
    Y[c, p] = sum(w) X[c, s*p + w] * K[w]
    return Y
}
"""


def test_an_index_coefficient_is_a_size() -> None:
    X = torch.randn(2, 11)
    K = torch.randn(3)
    module = ncd.load(STRIDED).to_torch("strided")
    reference = F.conv1d(X[:, None], K[None, None], stride=2)[:, 0]
    torch.testing.assert_close(module(X, K), reference)
    agrees_with_interpreter(STRIDED)
    # With s = 1 (and p = 9) the same source is a stride-1 convolution.
    module = ncd.load(STRIDED, sizes={"s": 1, "p": 9}).to_torch("strided")
    torch.testing.assert_close(module(X, K), F.conv1d(X[:, None], K[None, None])[:, 0])
    err(STRIDED, "E304", "3:27", sizes={"s": 3})


def test_an_unread_size_is_not_an_index() -> None:
    """A declared axis that is not an index of the equation is a size only as a coefficient:
    a forgotten `sum(w)` stays an error."""
    err("axis c = 2, x = 11, w = 3, p = 5\ndef f(X: R[c, x]) -> R[c, p] {\n"
        "    Y[c, p] = X[c, 2*p + w]\n    return Y\n}", "E313", "3:20")


def test_inf_is_a_number_in_options() -> None:
    program = ok("axis x = 4, y = 4\ndef f(S: R[x, y]) -> R[x, y] {\n"
                 "    return mask[x >= y, fill=-inf](S)\n}")
    term = one(program.definition("f"), "mask")
    assert isinstance(term.op, ir.MaskOp) and term.op.fill == float("-inf")


def test_a_product_divides_as_a_whole_in_messages_and_in_code() -> None:
    """`m // (h * g)` is shown, and computed at run time, as written: never `m // h * g`,
    which Python and a reader both take as `(m // h) * g`."""
    from ncd.compilers.size_code import size_expression_code

    diagnostic = err("axis b, m, h, g\naxis k = m // (h * g)\n"
                     "def f(X: R[b, m]) -> R[b, k] { W[b, k] = X[b, k]\n return W }", "E300")
    assert "m // (g * h)" in diagnostic.message
    product = ir.SizeMul(factors=(ir.SizeSym(name="h"), ir.SizeSym(name="g")))
    for division, operator in ((ir.SizeFloorDiv, "//"), (ir.SizeDiv, "/")):
        size = division(numerator=ir.SizeSym(name="m"), denominator=product)
        assert ir.size_text(size) == f"m {operator} (h * g)"
        code = size_expression_code(size, ProgramSizes(()), {n: f"size_{n}" for n in "mhg"},
                                    set())
        assert code == "size_m // (size_h * size_g)"
        assert eval(code, {"size_m": 24, "size_h": 2, "size_g": 3}) == 4
