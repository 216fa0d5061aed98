"""Attention lowered to one `F.scaled_dot_product_attention` call (`ncd/attention.py`,
`compilers/attention.py`): where it fires, where it must not, and that it computes what the
diagram says (the reference interpreter), with gradients (finite differences)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from differential import compare_text

import ncd
from ncd import ir
from ncd.attention import find_attention, keeps_a_key

GALLERY = Path(__file__).resolve().parent.parent / "gallery"

# file -> (the definition that holds the attention, how its mask is passed)
GALLERY_ATTENTION = {
    "attention": ("attention", "is_causal=True"),
    "transformer": ("attention", "is_causal=True"),
    "gpt2_block": ("causal_self_attention", "is_causal=True"),
    "cross_attention": ("cross_attention", None),
    "sliding_window_attention": ("sliding_window_attention", "attn_mask=keep"),
    "llama_block": ("attention", "is_causal=True"),
    "vit": ("attention", None),
}


def forward_of(source: str, class_name: str) -> str:
    """The text of one class's `forward` in a generated file."""
    start = source.index(f"class {class_name}(nn.Module)")
    end = source.find("\nclass ", start + 1)
    body = source[start:end if end >= 0 else len(source)]
    return body[body.index("def forward"):]


@pytest.mark.parametrize("stem", sorted(GALLERY_ATTENTION))
def test_gallery_attention_is_one_fused_call(stem: str) -> None:
    name, mask = GALLERY_ATTENTION[stem]
    program = ncd.load(GALLERY / f"{stem}.ncd")
    source = program.compile(program.main.name)
    class_name = "".join(part.capitalize() for part in name.split("_"))
    forward = forward_of(source, class_name)
    # one call, or one in each branch: the operands as they are when they have one leading
    # dim, reshaped to four dims otherwise (not for grouped-query attention)
    branches = forward.count("# one leading dim: the operands are four-dim as they are")
    assert branches == (0 if stem == "llama_block" else 1)
    assert forward.count("F.scaled_dot_product_attention(") == 1 + branches
    assert "torch.softmax" not in forward and "masked_fill" not in forward
    if mask is None:
        assert "is_causal" not in forward and "attn_mask" not in forward
    else:
        assert mask in forward
    assert "scale=0.125" in forward or "scale=" in forward


AXES = "axis x, y = x\naxis m = 4, h = 2, k = 2\n"
PROJECTIONS = """
    Q = linear[m -> h k](X, W_q)
    K = linear[m -> h k](X, W_k)
    V = linear[m -> h k](X, W_v)
"""


def attention_text(weights: str, rest: str = "", outputs: str = "R[x, h, k]") -> str:
    """Self-attention whose weights `A` are computed by `weights` (from the scores `S`)."""
    return (AXES + f"def f(X: R[x, m]) -> {outputs} {{" + PROJECTIONS +
            "    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)\n"
            f"    A = {weights}\n"
            "    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]\n" + rest +
            ("    return O\n" if not rest else "") + "}\n")


FUSED = {
    "no mask": attention_text("softmax[y](S)"),
    "causal": attention_text("softmax[y](causal[x, y](S))"),
    "window": attention_text("softmax[y](mask[y <= x, x - y < 2](S))"),
    "scaled again": attention_text("softmax[y](causal[x, y](S) * 0.5)"),
}


@pytest.mark.parametrize("case", sorted(FUSED))
def test_fused_attention_agrees_with_the_interpreter(case: str) -> None:
    text = FUSED[case]
    assert "F.scaled_dot_product_attention(" in ncd.load(text).compile("f")
    reports = compare_text(text, sizes=3)
    report = reports["f"]
    assert report.skipped is None and report.compared > 0
    assert not report.findings, report.findings


WINDOWED = """axis g = 5, p = 2, w = 4
def f(X: R[g]) -> R[p, w] {
    H[w, p] = X[w + p]
    S[p, y] = sum(w) H[w, p] * H[w, y] / 2
    A = softmax[y](S)
    O[w, p] = sum(y) A[p, y] * H[w, y]
    return O
}
"""


def test_attention_over_a_window_view_agrees_with_the_interpreter() -> None:
    """Queries, keys and values read from an overlapping window (`X[w + p]`, an `unfold`)
    transposed have their last two dims both of stride 1, which the CPU kernel of
    `F.scaled_dot_product_attention` misreads (garbage, found by the differential fuzzer):
    such operands are copied first."""
    source = ncd.load(WINDOWED).compile("f")
    assert "F.scaled_dot_product_attention(" in source and ".contiguous()" in source
    for seed in range(4):  # what the kernel read past its operand varied from run to run
        report = compare_text(WINDOWED, sizes=1, seed=seed)["f"]
        assert report.skipped is None and report.compared > 0
        assert not report.findings, report.findings
    # (a narrow linear map's weight copied into rows is not an operand of the kernel)
    plain = ncd.load(FUSED["no mask"]).compile("f").replace(".T.contiguous()", "")
    assert ".contiguous()" not in plain


def test_a_nan_in_a_masked_key_is_compared_where_both_are_finite() -> None:
    """`sqrt` of a negative average makes NaNs, which the second causal attention reads as
    keys: the fused kernel skips the masked ones (found by the differential fuzzer, seed
    81393), the written-out term gives `0 * NaN = NaN`. Where both are finite they agree,
    and the judge compares just those entries after a NaN in the interpreter's run."""
    text = ("axis u = 3\naxis v\n"
            "def object(X2: R[v, u]) -> R[v, u] {\n"
            "    Z3[u, v] = X2[v, u]\n"
            "    block \"Attention\" x2 {\n"
            "        T4 = Z3 + relu(Z3)\n"
            "        Z3 = gelu(T4)\n"
            "    }\n"
            "    Scores7[u, y6] = sum(v) Z3[u, v] * Z3[y6, v]\n"
            "    Weights8 = softmax[y6](causal[u, y6](Scores7) * 0.5)\n"
            "    Y9[u, v] = sum(y6) Weights8[u, y6] * Z3[y6, v]\n"
            "    return sqrt(Y9)\n}\n"
            "def twice = object ; object\n")
    assert "is_causal=True" in ncd.load(text).compile("object")
    for seed in range(3):
        report = compare_text(text, sizes=2, seed=81393 + seed)["twice"]
        assert report.skipped is None and report.compared > 0
        assert not report.findings, report.findings


NOT_FUSED = {
    # the weights are an output as well: they must exist
    "weights escape": attention_text(
        "softmax[y](S)", "    return O, A\n", outputs="(R[x, h, k], R[h, x, y])"),
    # the scores are an output as well
    "scores escape": attention_text(
        "softmax[y](S)", "    return O, S\n", outputs="(R[x, h, k], R[h, x, y])"),
    # the first query keeps no key: softmax gives NaN there, the fused kernel zeros
    "a row with no key": attention_text("softmax[y](mask[y > x](S))"),
    # a log-softmax is no attention
    "log softmax": attention_text("logsoftmax[y](S)"),
}


@pytest.mark.parametrize("case", sorted(NOT_FUSED))
def test_attention_whose_intermediates_escape_is_written_out(case: str) -> None:
    text = NOT_FUSED[case]
    source = ncd.load(text).compile("f")
    assert "scaled_dot_product_attention" not in source
    assert "torch.softmax" in source or "torch.log_softmax" in source
    report = compare_text(text, sizes=2)["f"]
    assert report.skipped is None and report.compared > 0
    assert not report.findings, report.findings


def test_the_pattern_is_found_in_the_ir_with_its_roles() -> None:
    program = ncd.load(GALLERY / "llama_block.ncd").ir
    (match,) = find_attention(program.definition("attention").body)
    scores = match.scores
    names = scores.degree.names
    assert names[match.key_s] == "y" and names[match.query_s] == "x"
    assert [names[i] for i in match.batch_s] == ["g"]
    assert [names[i] for i in match.groups_s] == ["r"]  # grouped-query: K and V lack r
    assert match.causal and match.scale == 0.125
    assert [match.values.degree.names[i] for i in match.value_v] == ["k"]


def test_a_mask_that_can_empty_a_row_is_recognised() -> None:
    def condition(text: str, a: int, b: int, offset: int, op: str) -> ir.Comparison:
        return ir.Comparison(coefficients=(("x", a), ("y", b)), offset=offset,
                             op=op, text=text)  # type: ignore[arg-type]

    x, y = ir.SizeSym(name="x"), ir.SizeSym(name="y")
    causal = condition("x >= y", 1, -1, 0, ">=")
    strictly = condition("x > y", 1, -1, 0, ">")
    window = condition("x - y < 4", 1, -1, -4, "<")
    assert keeps_a_key([causal], "x", "y", x, y)  # key 0
    assert not keeps_a_key([strictly], "x", "y", x, x)  # query 0 keeps nothing
    assert keeps_a_key([causal, window], "x", "y", x, x)  # its own position
    assert not keeps_a_key([window, condition("y > x", -1, 1, 0, ">")], "x", "y", x, x)
    # `key = query` needs at least as many keys as queries
    assert not keeps_a_key([causal, window], "x", "y", x, y)


@pytest.mark.parametrize("case", ["causal", "window"])
def test_fused_attention_gradients_are_the_finite_differences(case: str) -> None:
    module = ncd.load(FUSED[case]).to_torch("f", dtype=torch.float64)
    X = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    parameters = tuple(module.parameters())

    def run(X: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(
            module, dict(zip([n for n, _ in module.named_parameters()], weights, strict=True)),
            (X,))

    inputs = (X, *(p.detach().clone().requires_grad_(True) for p in parameters))
    assert torch.autograd.gradcheck(run, inputs)


def test_gallery_attention_gradients_match_the_written_out_term() -> None:
    """The gradients of the fused module equal those of the same module whose attention is
    the term written out (the generated source with the fusion undone by hand: scores by
    einsum, the causal mask, softmax, values by einsum)."""
    program = ncd.load(GALLERY / "gpt2_block.ncd", sizes={"m": 24, "h": 3})
    module = program.to_torch("causal_self_attention", dtype=torch.float64)
    X = torch.randn(2, 7, 24, dtype=torch.float64, requires_grad=True)
    Y = module(X)
    Y.square().sum().backward()
    fused = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    grad_x = X.grad
    assert grad_x is not None

    def written_out(X: torch.Tensor) -> torch.Tensor:
        Q = torch.einsum("bxm,mhk->bxhk", X, module.W_q) + module.b_q
        K = torch.einsum("bxm,mhk->bxhk", X, module.W_k) + module.b_k
        V = torch.einsum("bxm,mhk->bxhk", X, module.W_v) + module.b_v
        S = torch.einsum("bxhk,byhk->bhxy", Q, K) / 8 ** 0.5
        keep = torch.ones(7, 7, dtype=torch.bool).tril()
        A = torch.softmax(S.masked_fill(~keep, float("-inf")), dim=-1)
        weighted = torch.einsum("bhxy,byhk->bxhk", A, V)
        return torch.einsum("bxhk,hkm->bxm", weighted, module.W_o) + module.b_o

    module.zero_grad()
    X2 = X.detach().clone().requires_grad_(True)
    Y2 = written_out(X2)
    torch.testing.assert_close(Y, Y2)
    Y2.square().sum().backward()
    for a, p in zip(fused, [p for p in module.parameters() if p.grad is not None], strict=True):
        torch.testing.assert_close(a, p.grad)
    torch.testing.assert_close(grad_x, X2.grad)
