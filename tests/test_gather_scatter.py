"""Gather by index arrays of datatype N inside tensor equations (`X[Src[e], f]`,
`Z[b, T[b]]`) and `scatter_add` (a segment sum), against PyTorch written by hand and against
the interpreter, gradients included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import err, ok, one
from differential import compare_text

import ncd
from ncd import ir
from ncd.semantics import BoundsError, Interpreter

GRAPH = """axis v = 6, e = 9, f = 3, g = 4
def graph_conv(X: R[v, f], Src: N[v][e], Dst: N[v][e]) -> R[v, g] {
    M[e, f] = X[Src[e], f]
    H = scatter_add[e -> v](M, Dst)
    return linear[f -> g, bias](H, W, b)
}
"""

LOSS = """axis b = 5, k = 7
def cross_entropy(Z: R[b, k], T: N[k][b]) -> R[] {
    L[b] = Z[b, T[b]]
    return mean[b](logsumexp[k](Z) - L)
}
"""


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def agrees_with_interpreter(text: str) -> None:
    for name, report in compare_text(text).items():
        assert not report.findings, f"{name}: {report.findings}"
        assert report.compared >= 1, f"{name} was not compared ({report.skipped})"


def edges() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 2])
    dst = torch.tensor([1, 2, 3, 4, 5, 0, 3, 3, 1])  # node 3 receives three messages
    return src, dst


def test_graph_convolution_is_index_add_with_gradients() -> None:
    module = ncd.load(GRAPH).to_torch("graph_conv").double()
    weight, bias = module.W, module.b
    X = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    src, dst = edges()
    Y = module(X, src, dst)

    X2 = X.detach().clone().requires_grad_(True)
    summed = torch.zeros(6, 3, dtype=torch.float64).index_add_(0, dst, X2[src])
    reference = torch.einsum("vf,fg->vg", summed, weight.detach()) + bias.detach()
    torch.testing.assert_close(Y, reference)
    Y.square().sum().backward()
    reference.square().sum().backward()
    assert X.grad is not None and X2.grad is not None
    torch.testing.assert_close(X.grad, X2.grad)
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_graph_convolution_agrees_with_the_interpreter() -> None:
    agrees_with_interpreter(GRAPH)


def test_cross_entropy_pick_is_f_cross_entropy_with_gradients() -> None:
    module = ncd.load(LOSS).to_torch("cross_entropy").double()
    Z = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    T = torch.tensor([0, 6, 3, 3, 1])
    loss = module(Z, T)
    Z2 = Z.detach().clone().requires_grad_(True)
    reference = F.cross_entropy(Z2, T)
    torch.testing.assert_close(loss, reference)
    loss.backward()
    reference.backward()
    assert Z.grad is not None
    torch.testing.assert_close(Z.grad, Z2.grad)
    agrees_with_interpreter(LOSS)


def test_gather_and_scatter_are_typed_operations_in_the_ir() -> None:
    program = ok(GRAPH)
    definition = program.definition("graph_conv")
    gather = one(definition, "gather")
    assert isinstance(gather.op, ir.GatherOp)
    assert [t.text for t in gather.op.indices] == ["Src[e]", "f"]
    assert gather.op.indices[0].array == 1
    scatter = one(definition, "scatter_add")
    assert scatter.op == ir.ScatterAddOp(input="e", output="v")
    restored = ir.Program.model_validate_json(program.model_dump_json())
    assert restored == program


def test_out_of_range_index_values() -> None:
    bad = torch.tensor([0, 1, 2, 3, 4, 6, 0, 2, 2])  # 6 is outside v = 6
    _, dst = edges()
    module = ncd.load(GRAPH).to_torch("graph_conv")
    with pytest.raises(ValueError, match="line 3: an index array holds a value outside axis v"):
        module(torch.randn(6, 3), bad, dst)
    with pytest.raises(ValueError, match="line 4: "):
        module(torch.randn(6, 3), dst, bad)
    program = ncd.load(GRAPH).ir
    interpreter = Interpreter(program, {}, lambda path, p: torch.zeros(
        [int(ir.size_value(a.size) or 0) for a in p.array.shape.axes], dtype=torch.float64))
    with pytest.raises(BoundsError, match=r"gather \(line 3\)"):
        interpreter.run("graph_conv", [torch.randn(6, 3, dtype=torch.float64), bad, dst])
    with pytest.raises(BoundsError, match=r"scatter_add \(line 4\)"):
        interpreter.run("graph_conv", [torch.randn(6, 3, dtype=torch.float64), dst, bad])


def test_gathers_and_scatters_are_captured_whole_by_export_compile_and_fx() -> None:
    """The bounds check of an index array cannot branch on its values inside a captured graph:
    there it is the graph's assertion, which still refuses a value outside the axis."""
    src, dst = edges()
    bad = torch.tensor([0, 1, 2, 3, 4, 6, 0, 2, 2])
    module = ncd.load(GRAPH).to_torch("graph_conv").eval()
    inputs = (torch.randn(6, 3), src, dst)
    with torch.no_grad():
        expected = module(*inputs)
        exported = torch.export.export(module, inputs).module()
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        traced = torch.fx.symbolic_trace(module)
        for captured in (exported, compiled, traced):
            torch.testing.assert_close(captured(*inputs), expected)
            with pytest.raises(RuntimeError, match="line 3: an index array holds a value "
                                                   r"outside axis v of X \(0 to 5\)"):
                captured(inputs[0], bad, dst)
            with pytest.raises(RuntimeError, match="line 4: "):
                captured(inputs[0], src, bad)
    torch._dynamo.reset()
    loss = ncd.load(LOSS).to_torch()
    Z, T = torch.randn(5, 7), torch.tensor([0, 6, 2, 7, 1])
    with pytest.raises(ValueError, match=r"line 3: .* outside axis k of Z \(0 to 6\)"):
        loss(Z, T)
    with pytest.raises(RuntimeError, match="line 3: "):
        torch.export.export(loss, (Z, T.clamp(max=6))).module()(Z, T)


def test_bound_of_an_index_array_must_match_its_axis() -> None:
    diagnostic = err("axis v = 6, w = 5, e = 4, f = 2\n"
                     "def f(X: R[v, f], S: N[w][e]) -> R[e, f] {\n"
                     "    M[e, f] = X[S[e], f]\n    return M\n}", "E300", "3:17")
    assert "`S` holds indices below 5" in diagnostic.message
    assert "N[v][e]" in (diagnostic.hint or "")
    err("axis v = 6, w = 5, e = 4, f = 2\n"
        "def f(M: R[e, f], S: N[v][e]) -> R[w, f] {\n"
        "    return scatter_add[e -> w](M, S)\n}", "E300", "3:35")


def test_an_index_array_holds_naturals() -> None:
    diagnostic = err("axis v = 6, e = 4, f = 2\ndef f(X: R[v, f], S: R[e]) -> R[e, f] {\n"
                     "    M[e, f] = X[S[e], f]\n    return M\n}", "E302", "3:17")
    assert "holds R" in diagnostic.message


def test_index_arrays_are_read_at_index_variables() -> None:
    err("axis v = 6, e = 4, f = 2\ndef f(X: R[v, f], S: N[v][e]) -> R[e, f] {\n"
        "    M[e, f] = X[S[e + 1], f]\n    return M\n}", "E306", "3:19")
    err("axis v = 6, e = 4, f = 2\ndef f(X: R[v, f], S: N[v][e]) -> R[e, f] {\n"
        "    M[e, f] = X[S[e] + 1, f]\n    return M\n}", "E306", "3:17")


def test_gather_by_a_batched_index_array() -> None:
    """A call lifted over a batch: the index arrays carry the batch dims too."""
    module = ncd.load(LOSS).to_torch("cross_entropy")
    Z = torch.randn(2, 5, 7)
    T = torch.randint(0, 7, (2, 5))
    batched = module(Z, T)
    for i in range(2):
        torch.testing.assert_close(batched[i], F.cross_entropy(Z[i], T[i]))


def test_scatter_of_values_built_from_nothing_by_a_batched_index_array() -> None:
    """Values without batch dims (`P[e] = e`) take those of a batched index array."""
    text = """axis v = 4, e = 5, f = 2
def counts(X: R[v, f], Dst: N[v][e]) -> R[v, f] {
    P[e] = e
    return X + scatter_add[e -> v](P, Dst)
}
"""
    module = ncd.load(text).to_torch("counts").double()
    X = torch.randn(3, 4, 2, dtype=torch.float64)
    Dst = torch.randint(0, 4, (3, 5))
    position = torch.arange(5, dtype=torch.float64)
    want = torch.stack([torch.zeros(4, dtype=torch.float64).index_add(0, Dst[i], position)
                        for i in range(3)])
    torch.testing.assert_close(module(X, Dst), X + want[:, :, None])
    agrees_with_interpreter(text)


def test_symmetry_of_the_graph_convolution() -> None:
    """Relabelling the edges (both index arrays alike) changes nothing; the nodes are read at
    the index arrays' values, which no permutation of an axis relabels."""
    from ncd.symmetry import symmetries

    found = {r.axis: r for r in symmetries(ncd.load(GRAPH).ir, "graph_conv")}
    assert found["e"].permutation.kind == "invariant"
    assert found["v"].permutation.kind == "neither"
    module = ncd.load(GRAPH).to_torch("graph_conv").double()
    X = torch.randn(6, 3, dtype=torch.float64)
    src, dst = edges()
    order = torch.randperm(9)
    torch.testing.assert_close(module(X, src[order], dst[order]), module(X, src, dst))


def test_an_index_array_is_checked_once_against_each_bound() -> None:
    """`gallery/graph_conv.ncd` reads through `Src` twice and `Dst` three times, all against
    the node axis: one check each (the arrays never change), and a bad index still raises."""
    program = ncd.load("gallery/graph_conv.ncd", sizes={"f": 6, "g": 3})
    source = program.compile()
    assert source.count(").any()") == 2, source
    module = program.to_torch("gcn_conv").eval()
    X = torch.randn(5, 6)
    Src, Dst = torch.tensor([0, 1, 4, 2]), torch.tensor([1, 2, 3, 0])
    assert module(X, Src, Dst).shape == (5, 3)
    for bad_src, bad_dst in ((torch.tensor([0, 1, 5, 2]), Dst), (Src, torch.tensor([1, -1, 3, 0]))):
        with pytest.raises(ValueError, match="an index array holds a value outside axis v"):
            module(X, bad_src, bad_dst)


def test_an_empty_index_array_passes_its_check() -> None:
    """A graph without edges: the check reads the least and greatest index, which an empty
    array lacks; it holds no value outside the axis, and each node keeps its own features."""
    module = ncd.load("gallery/graph_conv.ncd", sizes={"f": 6, "g": 3}).to_torch(
        "gcn_conv", dtype=torch.float64)
    X = torch.randn(5, 6, dtype=torch.float64)
    none = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        expected = F.relu(F.linear(X, module.W, module.b))  # W declared (out, in)
        torch.testing.assert_close(module(X, none, none), expected)


def test_one_index_array_is_an_index_select_or_a_gather_and_batched_ones_still_agree() -> None:
    """A gather through one index array of one axis is `index_select` (whole slices) or
    `gather` (a pick in each row), a `scatter_add` through one `index_add` along the values'
    own dim (a sum of ones: ones added into zeros), and the negated
    mean of the picks at the labels one `F.nll_loss`, when the index array has no batch dims;
    with batch dims they are spelled out by rows and places as before. Both equal the
    per-element results."""
    graph = ncd.load("gallery/graph_conv.ncd", sizes={"f": 6, "g": 3})
    source = graph.compile()
    assert ".index_select(-2, Src)" in source and ".index_add(-2, Dst, M)" in source
    assert "-1, Dst, torch.ones(size_e, device=X.device, dtype=X.dtype)" in source  # degrees
    assert "Coef = gather * gather_2" in source and "torch.einsum" not in source  # entrywise
    module = graph.to_torch("gcn_conv", dtype=torch.float64).eval()
    X = torch.randn(2, 5, 6, dtype=torch.float64)
    Src = torch.tensor([[0, 1, 4, 2], [3, 3, 0, 1]])
    Dst = torch.tensor([[1, 2, 3, 0], [0, 4, 4, 2]])
    together = module(X, Src, Dst)
    for i in range(2):
        torch.testing.assert_close(together[i], module(X[i], Src[i], Dst[i]))
    assert ".gather(-1, T.unsqueeze(-1)).squeeze(-1)" in ncd.load(LOSS).compile()
    loss = ncd.load("gallery/classifier.ncd", sizes={"n": 5})
    assert "= F.cross_entropy(Z, T)" in loss.compile("cross_entropy")  # with its log-softmax
    pick = loss.to_torch("cross_entropy", dtype=torch.float64)
    Z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    T = torch.tensor([[0, 4, 2], [1, 1, 3]])
    together = pick(Z, T)
    for i in range(2):
        expected = torch.nn.functional.cross_entropy(Z[i], T[i])
        torch.testing.assert_close(pick(Z[i], T[i]), expected)
        torch.testing.assert_close(together[i], expected)
        (mine,) = torch.autograd.grad(pick(Z[i], T[i]), Z)
        (theirs,) = torch.autograd.grad(expected, Z)
        torch.testing.assert_close(mine, theirs)
    with pytest.raises(ValueError, match=r"line \d+: .* outside axis n of L \(0 to 4\)"):
        pick(Z[0], torch.tensor([0, -100, 2]))  # the kernel alone would skip -100


COUNTS = """axis v = 6, e = 9
def degrees(Dst: N[v][e]) -> R[v] {
    One[e] = 1
    return scatter_add[e -> v](One, Dst)
}
def both(Src: N[v][e], Dst: N[v][e]) -> R[v] {
    One[e] = 1
    return scatter_add[e -> v](One, Src) + scatter_add[e -> v](One, Dst)
}
"""


def test_ones_summed_into_places_are_one_call_in_eager_and_captured_code() -> None:
    """A sum of ones into the places of an index array is one `index_add` of ones when nothing
    else reads the ones (the ones read twice: written out), equal to `index_add` of ones in the
    values' type; with batch dims the term is written out; graphs captured by export, compile
    and fx agree, and the index check still refuses a value outside the axis."""
    program = ncd.load(COUNTS)
    assert ".index_add(\n                    -1, Dst, torch.ones(9, device=Dst.device" in \
        program.compile("degrees")
    assert "torch.ones(" not in program.compile("both")
    module = program.to_torch("degrees").eval()
    dst = torch.tensor([1, 2, 3, 4, 5, 0, 3, 3, 1])
    counted = module(dst)  # no real input: in the default real type, as the ones were
    assert counted.dtype == torch.get_default_dtype()
    torch.testing.assert_close(counted, torch.zeros(6).index_add(0, dst, torch.ones(9)),
                               rtol=0, atol=0)
    rows = torch.stack([dst, dst.flip(0)])
    torch.testing.assert_close(module(rows), torch.stack([counted, module(dst.flip(0))]))
    bad = torch.tensor([0, 1, 2, 3, 4, 6, 0, 2, 2])
    with pytest.raises(ValueError, match=r"line 4: .* outside axis v of the result"):
        module(bad)
    with torch.no_grad():
        exported = torch.export.export(module, (dst,)).module()
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        traced = torch.fx.symbolic_trace(module)
        for captured in (exported, compiled, traced):
            torch.testing.assert_close(captured(dst), counted)
            with pytest.raises(RuntimeError, match="line 4: "):
                captured(bad)
    torch._dynamo.reset()
    agrees_with_interpreter(COUNTS)


def test_the_negated_mean_of_picks_is_fused_only_when_nothing_else_reads_them() -> None:
    """`-mean[b](L[b, T[b]])` is one `F.nll_loss`; picks or a mean read elsewhere too are
    written out. A graph traced by `torch.fx` takes the written-out reading, and agrees."""
    def source(body: str) -> str:
        return "axis b, k = 5\ndef loss(L: R[b, k], T: N[k][b]) -> R[] {\n" + body + "}\n"
    fused = ncd.load(source("    P[b] = L[b, T[b]]\n    return -mean[b](P)\n"))
    assert "F.nll_loss(L, T)" in fused.compile()
    for body in ("    P[b] = L[b, T[b]]\n    return -mean[b](P) + sum[b](P)\n",
                 "    P[b] = L[b, T[b]]\n    M = mean[b](P)\n    return -M + M\n",
                 "    P[b] = L[b, T[b]]\n    return -sum[b](P)\n"):
        assert "nll_loss" not in ncd.load(source(body)).compile(), body
    # with the log-softmax that made `L`, one `F.cross_entropy`; not when `L` is read again
    softmax = "    L = logsoftmax[k](Z)\n    P[b] = L[b, T[b]]\n    return -mean[b](P){}\n"
    entropy = ncd.load(source(softmax.format("")).replace("(L: R[b, k]", "(Z: R[b, k]"))
    assert "F.cross_entropy(Z, T)" in entropy.compile() and "nll_loss" not in entropy.compile()
    again = source(softmax.format(" + sum[b, k](L)")).replace("(L: R[b, k]", "(Z: R[b, k]")
    assert "F.nll_loss(L, T)" in ncd.load(again).compile()
    Z = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    T = torch.tensor([[4, 0, 2, 2], [1, 3, 3, 0]])
    model = entropy.to_torch("loss", dtype=torch.float64)
    traced = torch.fx.symbolic_trace(model)
    for i in range(2):
        expected = F.cross_entropy(Z[i], T[i])
        torch.testing.assert_close(model(Z[i], T[i]), expected)
        torch.testing.assert_close(traced(Z[i], T[i]), expected)
        (mine,) = torch.autograd.grad(model(Z[i], T[i]), Z)
        (theirs,) = torch.autograd.grad(expected, Z)
        torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(model(Z, T), torch.stack([F.cross_entropy(Z[i], T[i])
                                                         for i in range(2)]))
    agrees_with_interpreter(source(softmax.format("")).replace("(L: R[b, k]", "(Z: R[b, k]"))
    agrees_with_interpreter(again)
    module = fused.to_torch("loss", dtype=torch.float64)
    L = torch.randn(4, 5, dtype=torch.float64)
    T = torch.tensor([4, 0, 2, 2])
    traced = torch.fx.symbolic_trace(module)
    assert "nll_loss" not in traced.code
    expected = -L[torch.arange(4), T].mean()
    torch.testing.assert_close(module(L, T), expected)
    torch.testing.assert_close(traced(L, T), expected)
    agrees_with_interpreter(source("    P[b] = L[b, T[b]]\n    return -mean[b](P)\n"))


def test_kernels_that_refuse_a_value_outside_the_axis_still_raise_the_located_error() -> None:
    """On the CPU the range check leaves to `index_select` and `index_add` the whole test and
    to `cross_entropy` the values past the end (it skips -100, its `ignore_index`); every
    value outside the axis, either way and in either integer type, still raises the check's
    `ValueError`, and an error of the kernel's own (a label type `cross_entropy` does not
    take) is not turned into one."""
    program = ncd.load("gallery/graph_conv.ncd", sizes={"f": 6, "g": 3})
    source = program.compile()
    assert "Norm.index_select(-1, Src)\n            except (IndexError, RuntimeError):" in source
    module = program.to_torch("gcn_conv").eval()
    X = torch.randn(5, 6)
    good = torch.tensor([0, 1, 4, 2])
    for value in (5, 6, 2**40, -1, -100, -(2**40)):
        for dtype in (torch.int64, torch.int32):
            if abs(value) > 2**31 and dtype == torch.int32:
                continue
            bad = torch.tensor([0, value, 4, 2], dtype=dtype)
            with pytest.raises(ValueError, match=r"line 21: .* outside axis v of Norm"):
                module(X, bad, good.to(dtype))
            with pytest.raises(ValueError, match=r"line 19: .* outside axis v of the result"):
                module(X, good.to(dtype), bad)
    loss = ncd.load("gallery/classifier.ncd", sizes={"n": 5}).to_torch("cross_entropy")
    Z = torch.randn(3, 5)
    for value in (5, 2**40, -1, -100):
        with pytest.raises(ValueError, match=r"line \d+: .* outside axis n of L \(0 to 4\)"):
            loss(Z, torch.tensor([0, value, 2]))
    with pytest.raises(RuntimeError, match="Long"):
        loss(Z, torch.tensor([0, 4, 2], dtype=torch.int32))
