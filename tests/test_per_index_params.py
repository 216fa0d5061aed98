"""Per-index parameters: `f[each e](X)` lifts `f` over axis `e` with every index of `e` owning
its own copy of `f`'s parameters (experts, heads). The call is `CallOp.each` in the IR, a deck
of boxes in the diagram, an `nn.ModuleList` of copies in the compiled module, and its own
parameter slice per index in the reference interpreter (`EachIndex` on the parameter path).

A mixture of experts is compared with PyTorch written by hand (separate `nn.Linear`s per
expert, weights copied), outputs and gradients, and with the interpreter."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import broadcasts, err, ok
from differential import compare_text

import ncd
from ncd import ir

E, M, H = 4, 8, 16

MOE = f"""axis x, e = {E}
axis m = {M}, h = {H}

def expert(X: R[m]) -> R[m] {{
    Hid = relu(linear[m -> h](X, W1, b1))
    return linear[h -> m](Hid, W2, b2)
}}

def moe(X: R[x, m]) -> R[x, m] {{
    G = softmax[e](linear[m -> e](X, Wg))
    Z = expert[each e](X)
    Y[x, m] = sum(e) G[x, e] * Z[x, e, m]
    return Y
}}
"""

# The owning axis is already an axis of the argument (one input per expert, as after a
# dispatch), the callee has two inputs and two outputs, one argument lacks the axis, and the
# call is lifted over a second axis `t` too.
SLICED = """axis t, e = 3
axis m = 4, n = 5

def pair(A: R[m], B: R[n]) -> (R[n], R[m]) {
    P = tanh(linear[m -> n](A, W) + B)
    return P, linear[n -> m](P, V)
}

def routed(A: R[t, e, m], B: R[t, n]) -> (R[e, t, n], R[t, e, m]) {
    P, Q = pair[each e](A, B)
    return P, Q
}

def shared(A: R[t, e, m], B: R[t, n]) -> R[t, e, n] {
    P, Q = pair(A, B)
    return P
}
"""


class TorchMoE(torch.nn.Module):
    """The same mixture of experts in plain PyTorch: E experts of two `nn.Linear`s each."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = torch.nn.Linear(M, E, bias=False)
        self.experts = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(M, H), torch.nn.ReLU(), torch.nn.Linear(H, M))
            for _ in range(E))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.softmax(self.gate(x), dim=-1)                      # [x, e]
        outputs = torch.stack([expert(x) for expert in self.experts], -2)  # [x, e, m]
        return (gates.unsqueeze(-1) * outputs).sum(-2)


def _copy_weights(reference: TorchMoE, module: torch.nn.Module) -> None:
    with torch.no_grad():
        module.Wg.copy_(reference.gate.weight.T)
        for mine, theirs in zip(module.expert, reference.experts, strict=True):
            mine.W1.copy_(theirs[0].weight.T)
            mine.b1.copy_(theirs[0].bias)
            mine.W2.copy_(theirs[2].weight.T)
            mine.b2.copy_(theirs[2].bias)


@pytest.mark.parametrize("rows", [1, 7])
def test_mixture_of_experts_equals_pytorch(rows: int) -> None:
    torch.manual_seed(rows)
    reference = TorchMoE().double()
    module = ncd.load(MOE)["moe"].to_torch(dtype=torch.float64)
    _copy_weights(reference, module)
    x = torch.randn(rows, M, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    x_mine = x.clone().requires_grad_(True)
    expected = reference(x_ref)
    actual = module(x_mine)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(expected)
    (expected * weights).sum().backward()
    (actual * weights).sum().backward()
    assert x_mine.grad is not None and x_ref.grad is not None
    torch.testing.assert_close(x_mine.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    assert module.Wg.grad is not None and reference.gate.weight.grad is not None
    torch.testing.assert_close(module.Wg.grad, reference.gate.weight.grad.T)
    for mine, theirs in zip(module.expert, reference.experts, strict=True):
        torch.testing.assert_close(mine.W1.grad, theirs[0].weight.grad.T)
        torch.testing.assert_close(mine.b2.grad, theirs[2].bias.grad)
    # The experts really own their parameters: each copy's gradient differs.
    assert not torch.allclose(module.expert[0].W1.grad, module.expert[1].W1.grad)


def test_copies_are_distinct_modules_and_independently_initialised() -> None:
    module = ncd.load(MOE)["moe"].to_torch()
    assert isinstance(module.expert, torch.nn.ModuleList) and len(module.expert) == E
    names = dict(module.named_parameters())
    assert {f"expert.{i}.W1" for i in range(E)} <= set(names)
    assert names["expert.0.W1"].shape == (M, H)
    assert not torch.equal(module.expert[0].W1, module.expert[1].W1)


def test_compiled_equals_interpreter() -> None:
    for text in (MOE, SLICED):
        reports = compare_text(text, sizes=2)
        for name, report in reports.items():
            assert not report.findings, (name, report.findings)
            assert report.skipped is None and report.compared, (name, report)


def test_sliced_owning_axis_equals_a_loop_over_copies() -> None:
    """Index i of `e` reads its own slice of `A` with copy i; `B` (no `e`) is read whole."""
    program = ncd.load(SLICED)
    module = program["routed"].to_torch(dtype=torch.float64)
    a = torch.randn(2, 3, 4, dtype=torch.float64)
    b = torch.randn(2, 5, dtype=torch.float64)
    p, q = module(a, b)
    assert p.shape == (3, 2, 5) and q.shape == (2, 3, 4)
    for i, copy in enumerate(module.pair):
        pi, qi = copy(a[:, i], b)
        torch.testing.assert_close(p[i], pi)
        torch.testing.assert_close(q[:, i], qi)


def test_ir_field_and_json() -> None:
    program = ok(MOE)
    call = next(t for t in broadcasts(program.definition("moe"), "call"))
    assert isinstance(call.op, ir.CallOp) and call.op.each == "e"
    assert call.degree.names == ("x", "e")
    assert call.cod[0].names == ("x", "e", "m")
    text = program.model_dump_json()
    assert '"each":"e"' in text
    assert ir.Program.model_validate_json(text) == program
    # A shared lift writes no `each` field: its JSON is what it was.
    shared = ok(SLICED)
    plain = next(t for t in broadcasts(shared.definition("shared"), "call"))
    assert isinstance(plain.op, ir.CallOp) and plain.op.each is None
    dumped = json.loads(plain.op.model_dump_json())
    assert "each" not in dumped


def test_diagram_draws_a_deck() -> None:
    svg = ncd.load(MOE)["moe"].render()
    plain = ncd.load(MOE.replace("expert[each e](X)", "expert(rename[m -> m](X))")
                     .replace("Z[x, e, m]", "Z[x, m]"))["moe"].render()
    assert "each e" in svg
    # Three outlines for the deck, one for the plain call.
    assert svg.count("<rect") >= plain.count("<rect") + 2


def test_formatter_keeps_each() -> None:
    from ncd.formatter import format_source

    assert "expert[each e](X)" in format_source(MOE.replace("[each e]", "[ each   e ]"))


@pytest.mark.parametrize(("source", "code", "at", "words"), [
    # the definition takes the axis itself
    ("axis e = 3, m = 4\ndef f(X: R[e, m]) -> R[m] { return linear[e m -> m](X, W) }\n"
     "def g(X: R[e, m]) -> R[m] { return f[each e](X) }", "E301", "3:43", "takes axis `e`"),
    # an axis that is not declared
    ("axis x, m = 4\ndef f(X: R[m]) -> R[m] { return linear[m -> m](X, W) }\n"
     "def g(X: R[x, m]) -> R[x, m] { return f[each q](X) }", "E201", "3:46", "unknown axis"),
    # the owning axis has no fixed size
    ("axis x, m = 4\ndef f(X: R[m]) -> R[m] { return linear[m -> m](X, W) }\n"
     "def g(X: R[x, m]) -> R[x, m] { return f[each x](X) }", "E312", "3:46", "no fixed size"),
    # nothing to own
    ("axis x, e = 2, m = 4\ndef f(X: R[m]) -> R[m] { return relu(X) }\n"
     "def g(X: R[x, e, m]) -> R[x, e, m] { return f[each e](X) }", "E312", "3:52",
     "has none"),
    # `each` on an operator
    ("axis x, e = 2, m = 4\ndef g(X: R[x, m]) -> R[x, m] { return relu[each e](X) }",
     "E307", "2:44", "is an operator"),
    # any other bracket item on a definition
    ("axis x, e = 2, m = 4\ndef f(X: R[m]) -> R[m] { return linear[m -> m](X, W) }\n"
     "def g(X: R[x, m]) -> R[x, m] { return f[e](X) }", "E307", "3:41", "only `each AXIS`"),
])
def test_errors_are_located(source: str, code: str, at: str, words: str) -> None:
    diagnostic = err(source, code, at)
    assert words in diagnostic.message


def test_nested_parameters_count() -> None:
    """A definition whose parameters are those of a definition it calls owns them too."""
    program = ok(MOE.replace("def moe", "def outer(X: R[m]) -> R[m] { return expert(X) }\n"
                             "def moe").replace("expert[each e]", "outer[each e]"))
    call = next(t for t in broadcasts(program.definition("moe"), "call"))
    assert isinstance(call.op, ir.CallOp) and call.op.each == "e"


def test_compiles_without_graph_breaks_and_exports() -> None:
    """The loop over the copies unrolls: `torch.compile(fullgraph=True)` and `torch.export`."""
    module = ncd.load(MOE)["moe"].to_torch().eval()
    x = torch.randn(5, M)
    with torch.no_grad():
        expected = module(x)
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), expected)
        torch._dynamo.reset()
        exported = torch.export.export(module, (x,))
        torch.testing.assert_close(exported.module()(x), expected)


def test_stats_count_every_copy_and_symmetry_breaks_along_the_owning_axis() -> None:
    from ncd.sizes import Size
    from ncd.stats import stats
    from ncd.symmetry import symmetries

    module = ncd.load(MOE)["moe"].to_torch()
    figures = stats(ok(MOE), "moe")
    assert figures.parameters == Size.const(sum(p.numel() for p in module.parameters()))
    assert figures.parameters == Size.const(M * E + E * (M * H + H + H * M + M))
    claims = {r.axis: r for r in symmetries(ok(SLICED), "routed")}
    assert claims["t"].permutation.kind == "equivariant"
    assert claims["e"].permutation.kind == "neither"
    assert "own parameters" in claims["e"].permutation.detail
    # The shared lift over the same axis is equivariant along it.
    assert {r.axis: r for r in symmetries(ok(SLICED), "shared")}["e"].permutation.kind == \
        "equivariant"
