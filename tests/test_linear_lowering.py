"""A linear map runs as one `F.linear` (a matrix product with the bias added in the same
call) where its layout allows, as an einsum otherwise; either way it computes what
`nn.Linear` (or `torch.einsum`) computes with the same weights, which keep their declared
layout `[inputs..., outputs...]`."""

from __future__ import annotations

import pytest

import ncd

torch = pytest.importorskip("torch")


def test_a_linear_map_with_bias_is_one_f_linear_as_nn_linear_computes_it() -> None:
    """`F.linear` of the weight transposed (a view), or for rows without leading dims
    `torch.addmm` of the weight as stored: what `nn.Linear` computes, values and gradients,
    with and without leading dims."""
    program = ncd.load("axis b\naxis m = 12, f = 16\n"
                       "def f(X: R[b, m]) -> R[b, f] { return linear[m -> f, bias](X, W, c) }")
    source = program.compile()
    assert "F.linear(X, W.T, c)" in source
    assert "torch.addmm(c, X, W)" in source and "X.dim() == 2" in source
    assert "torch.addmm(c, X.flatten(0, -2), W).view(X.shape[0], X.shape[1], 16)" \
        in source and "X.dim() == 3" in source
    assert "torch.einsum" not in source
    module = program.to_torch("f").double()
    assert tuple(module.W.shape) == (12, 16)  # the declared layout: checkpoints load as before
    reference = torch.nn.Linear(12, 16).double()
    with torch.no_grad():
        reference.weight.copy_(module.W.T)
        reference.bias.copy_(module.c)
    for shape in ((7, 12), (3, 4, 7, 12)):  # leading batch dims too
        X = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        ours, theirs = module(X), reference(X)
        torch.testing.assert_close(ours, theirs)
        weights = (torch.randn_like(ours),)
        got = torch.autograd.grad(ours, (X, module.W, module.c), weights)
        want = torch.autograd.grad(theirs, (X, reference.weight, reference.bias), weights)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1].T)
        torch.testing.assert_close(got[2], want[2])


def probe_inputs(axes: tuple[int, ...]) -> list[torch.Tensor]:
    """Inputs of a definition over arrays of sizes `axes`: at its own rank, with one leading
    dim (the usual batch) and with two; each contiguous, not contiguous, and with no rows;
    float64, requiring grad."""
    found = []
    for extra in ((), (4,), (2, 3)):
        shape = (*extra, *axes)
        empty = (0, *shape[1:]) if len(shape) > 1 else (0, *shape)
        found += [torch.randn(shape, dtype=torch.float64),
                  torch.randn(shape[::-1], dtype=torch.float64).permute(
                      *range(len(shape) - 1, -1, -1)),  # not contiguous
                  torch.randn(empty, dtype=torch.float64)]
    return [X.requires_grad_(True) for X in found]


ADDMM_FORMS = """
axis b, x
axis m = 12, f = 16, h = 2, k = 8
def vector(X: R[m]) -> R[f] { return linear[m -> f, bias](X, W, c) }
def rows(X: R[b, m]) -> R[b, f] { return linear[m -> f, bias](X, W, c) }
def grid(X: R[b, x, m]) -> R[b, x, f] { return linear[m -> f, bias](X, W, c) }
def heads(X: R[b, m]) -> R[b, h, k] { return linear[m -> h k, bias](X, W, c) }
def merge(X: R[b, h, k]) -> R[b, f] { return linear[h k -> f, bias](X, W, c) }
"""


@pytest.mark.parametrize("name", ["vector", "rows", "grid", "heads", "merge"])
def test_a_map_with_bias_runs_as_addmm_of_its_rows_at_its_own_rank_and_one_more(
        name: str) -> None:
    """`torch.addmm` of the input's rows where the input has the definition's rank, or one
    leading dim more (a vector input only with it: `addmm` takes matrices), `F.linear` at any
    other rank and while `torch.fx` traces (the test reads no size then): all compute what
    `torch.einsum` computes, values and gradients, contiguous input or not, no rows or many."""
    program = ncd.load(ADDMM_FORMS)
    source = program.compile(name)
    axes = {"vector": "m", "rows": "bm", "grid": "bxm", "heads": "bm", "merge": "bhk"}[name]
    mapped = "hk" if name == "merge" else "m"
    outputs = "hk" if name == "heads" else "f"
    # `addmm` takes a matrix: at least one leading dim before the mapped axes
    ranks = [dims for dims in (len(axes), len(axes) + 1) if dims > len(mapped)]
    assert [f"X.dim() == {dims}" in source for dims in (len(axes), len(axes) + 1)] == \
        [dims in ranks for dims in (len(axes), len(axes) + 1)]
    assert source.count("torch.addmm(") == len(ranks) and "F.linear(" in source
    module = program.to_torch(name).double()
    traced = torch.fx.symbolic_trace(module)
    assert "addmm" not in traced.code and "linear" in traced.code
    formula = f"...{mapped},{mapped}{outputs}->...{outputs}"
    sizes = {"b": 5, "x": 3, "m": 12, "h": 2, "k": 8}
    for X in probe_inputs(tuple(sizes[a] for a in axes)):
        ours = module(X)
        theirs = torch.einsum(formula, X, module.W) + module.c
        torch.testing.assert_close(ours, theirs)
        with torch.no_grad():
            torch.testing.assert_close(traced(X), theirs)
        if ours.numel():
            weights = torch.randn_like(ours)
            got = torch.autograd.grad(ours, (X, module.W, module.c), weights)
            want = torch.autograd.grad(theirs, (X, module.W, module.c), weights)
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b)


ROWS_FIRST = """
axis b, x
axis m = 12, f = 16, h = 2, k = 8, o = 3
def vector(X: R[m]) -> R[f] {{
    param W: R[f, m]
    return linear[m -> f{bias}](X, W{c})
}}
def rows(X: R[b, m]) -> R[b, f] {{
    param W: R[f, m]
    return linear[m -> f{bias}](X, W{c})
}}
def grid(X: R[b, x, m]) -> R[b, x, f] {{
    param W: R[f, m]
    return linear[m -> f{bias}](X, W{c})
}}
def heads(X: R[b, m]) -> R[b, h, k] {{
    param W: R[h, k, m]
    return linear[m -> h k{bias}](X, W{c})
}}
def merge(X: R[b, h, k]) -> R[b, f] {{
    param W: R[f, h, k]
    return linear[h k -> f{bias}](X, W{c})
}}
def narrow(X: R[b, m]) -> R[b, o] {{
    param W: R[o, m]
    return linear[m -> o{bias}](X, W{c})
}}
"""


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", ["vector", "rows", "grid", "heads", "merge", "narrow"])
def test_a_weight_declared_as_nn_linear_keeps_it_is_read_as_it_is_stored(
        name: str, bias: bool) -> None:
    """A weight declared `(out..., in...)`, as `nn.Linear` keeps it, is `F.linear`'s own
    layout: one `F.linear(X, W, b)` at every rank (the weight flattened as a view, never
    transposed nor copied, narrow or not), what `torch.einsum` computes, values and
    gradients, contiguous input or not, no rows or many, and under `torch.fx` tracing."""
    program = ncd.load(ROWS_FIRST.format(bias=", bias" if bias else "",
                                         c=", c" if bias else ""))
    forward = program.compile(name).split("def forward")[1]
    (statement,) = [line for line in forward.splitlines() if "F.linear(" in line]
    weight = {"heads": "W.flatten(0, 1)", "merge": "W.flatten(1)"}.get(name, "W")
    operand = "X.flatten(-2)" if name == "merge" else "X"
    bias_code = {"heads": ", c.flatten()"}.get(name, ", c") if bias else ""
    assert f"= F.linear({operand}, {weight}{bias_code})" in statement, statement
    # (after the parameters bound at the top)
    body = forward.split("        else:\n", 1)[1]
    assert not any(word in body for word in ("addmm", "contiguous", "einsum", " if "))
    module = program.to_torch(name).double()
    traced = torch.fx.symbolic_trace(module)
    axes = {"vector": "m", "rows": "bm", "grid": "bxm", "heads": "bm", "merge": "bhk",
            "narrow": "bm"}[name]
    mapped = "hk" if name == "merge" else "m"
    outputs = {"heads": "hk", "narrow": "o"}.get(name, "f")
    formula = f"...{mapped},{outputs}{mapped}->...{outputs}"
    sizes = {"b": 5, "x": 3, "m": 12, "h": 2, "k": 8}
    learned = (module.W, module.c) if bias else (module.W,)
    for X in probe_inputs(tuple(sizes[a] for a in axes)):
        ours = module(X)
        theirs = torch.einsum(formula, X, module.W) + (module.c if bias else 0)
        torch.testing.assert_close(ours, theirs)
        with torch.no_grad():
            torch.testing.assert_close(traced(X), theirs)
        if ours.numel():
            weights = torch.randn_like(ours)
            got = torch.autograd.grad(ours, (X, *learned), weights)
            want = torch.autograd.grad(theirs, (X, *learned), weights)
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bias", [True, False])
def test_a_narrow_map_of_a_large_input_copies_its_weight_into_rows_first(bias: bool) -> None:
    """Fewer than 12 outputs: from 16,384 input entries the weight is copied into `(out, in)`
    rows (the CPU's product of rows by the weight as stored is slow there), below that it is
    read as a view; both compute what `nn.Linear` computes, values and gradients, with the
    declared layout kept."""
    option, arguments = (", bias", "X, W, c") if bias else ("", "X, W")
    program = ncd.load("axis b\naxis m = 16, h = 2, k = 3\n"
                       f"def f(X: R[b, m]) -> R[b, h, k] {{ return linear[m -> h k{option}]"
                       f"({arguments}) }}")
    source = program.compile()
    assert "X.numel() >= 16384" in source and "W.flatten(1).T.contiguous()" \
        in source
    module = program.to_torch("f").double()
    assert tuple(module.W.shape) == (16, 2, 3) and module.W.is_contiguous()
    reference = torch.nn.Linear(16, 6, bias=bias).double()
    with torch.no_grad():
        reference.weight.copy_(module.W.flatten(1).T)
        if bias:
            reference.bias.copy_(module.c.flatten())
    for rows in (7, 1024, 1025):  # 112 entries: a view; 16,384 and more: the copy
        X = torch.randn(rows, 16, dtype=torch.float64, requires_grad=True)
        ours, theirs = module(X), reference(X).unflatten(-1, (2, 3))
        torch.testing.assert_close(ours, theirs)
        weights = (torch.randn_like(ours),)
        got = torch.autograd.grad(ours, (X, module.W), weights)
        want = torch.autograd.grad(theirs, (X, reference.weight), weights)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1].T.unflatten(-1, (2, 3)))


def test_several_input_and_output_axes_flatten_the_weight_as_a_view() -> None:
    program = ncd.load("""
    axis x
    axis m = 16, h = 2, k = 8
    def heads(X: R[x, m]) -> R[x, h, k] { return linear[m -> h k, bias](X, W, c) }
    def merge(O: R[x, h, k]) -> R[x, m] { return linear[h k -> m](O, W_o) }
    """)
    source = program.compile()
    assert "F.linear(X, W.flatten(1).T, c.flatten()).unflatten(-1, (2, 8))" \
        in source
    assert "O.flatten(-2) @ W_o.flatten(0, 1)" in source
    heads, merge = program.to_torch("heads").eval(), program.to_torch("merge").eval()
    X, heads_out = torch.randn(9, 16), torch.randn(9, 2, 8)
    with torch.no_grad():
        torch.testing.assert_close(heads(X), torch.einsum("xm,mhk->xhk", X, heads.W) + heads.c)
        torch.testing.assert_close(merge(heads_out),
                                   torch.einsum("xhk,hkm->xm", heads_out, merge.W_o))


def test_a_map_over_a_leading_axis_is_a_pointwise_convolution() -> None:
    """`linear[m -> f]` of `X: R[m, x]`: F.linear would need a transposed copy of X; a
    convolution of kernel size 1 (`nn.Conv1d(m, f, 1)`) reads X as it is."""
    program = ncd.load("axis x\naxis m = 6, f = 4\n"
                       "def f(X: R[m, x]) -> R[f, x] { return linear[m -> f, bias](X, W, c) }")
    source = program.compile()
    assert "F.linear" not in source and "torch.einsum" not in source
    assert "F.conv1d(X.reshape(-1, 6, size_x), W.T[:, :, None], c)" in source
    module = program.to_torch("f").eval()
    X = torch.randn(6, 10)
    with torch.no_grad():
        torch.testing.assert_close(module(X),
                                   torch.einsum("mx,mf->fx", X, module.W) + module.c[:, None])


def test_a_map_of_the_channels_of_an_image_is_what_nn_conv2d_of_kernel_size_1_computes() -> None:
    program = ncd.load("axis b, y, x\naxis c = 5, o = 3\n"
                       "def f(X: R[b, c, y, x]) -> R[b, o, y, x] {"
                       " return linear[c -> o, bias](X, W, d) }")
    assert "F.conv1d(" in program.compile()
    module = program.to_torch("f").double().eval()
    reference = torch.nn.Conv2d(5, 3, 1).double()
    with torch.no_grad():
        reference.weight.copy_(module.W.T[:, :, None, None])
        reference.bias.copy_(module.d)
        for X in (torch.randn(2, 5, 4, 7, dtype=torch.float64),
                  torch.randn(3, 2, 5, 4, 7, dtype=torch.float64)):
            expected = reference(X.reshape(-1, 5, 4, 7)).reshape(*X.shape[:-3], 3, 4, 7)
            torch.testing.assert_close(module(X), expected)


@pytest.mark.parametrize("plane", ["symbolic", "small"])
def test_a_pointwise_weight_declared_as_nn_conv2d_keeps_it_is_read_as_it_is_stored(
        plane: str) -> None:
    """`param W: R[o, c]`, as `nn.Conv2d(c, o, 1)` keeps its weight: the pointwise convolution
    reads it as it is stored (`W.reshape(o, c, 1, 1)`, `W[:, :, None]`, or `F.linear` of the
    transposed plane with `W`), never transposed, and computes what `nn.Conv2d` computes with
    that very weight, values and gradients, with and without leading dims."""
    sizes = "axis b, y, x\n" if plane == "symbolic" else "axis b\naxis y = 4, x = 7\n"
    program = ncd.load(sizes + "axis c = 5, o = 3\n"
                       "def f(X: R[b, c, y, x]) -> R[b, o, y, x] {\n"
                       "    param W: R[o, c]\n"
                       "    return linear[c -> o, bias](X, W, d)\n}")
    forward = program.compile().split("def forward")[1]
    assert not any(word in forward for word in (".T[", ".T.", ".T,", ".T)", "contiguous", "einsum"))
    if plane == "symbolic":
        assert "F.conv2d(X, W.reshape(3, 5, 1, 1), d)" in forward
        assert "W[:, :, None]" in forward
    else:
        assert "F.linear(X.movedim((-4, -3, -2, -1), (-4, -1, -3, -2)), W, d)" \
            in forward
    module = program.to_torch("f").double()
    reference = torch.nn.Conv2d(5, 3, 1).double()
    with torch.no_grad():
        reference.weight.copy_(module.W[:, :, None, None])
        reference.bias.copy_(module.d)
    for X in (torch.randn(2, 5, 4, 7, dtype=torch.float64, requires_grad=True),
              torch.randn(3, 2, 5, 4, 7, dtype=torch.float64, requires_grad=True)):
        ours = module(X)
        theirs = reference(X.reshape(-1, 5, 4, 7)).reshape(*X.shape[:-3], 3, 4, 7)
        torch.testing.assert_close(ours, theirs)
        weights = torch.randn_like(ours)
        got = torch.autograd.grad(ours, (X, module.W, module.d), weights)
        want = torch.autograd.grad(theirs, (X, reference.weight, reference.bias), weights)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1][:, :, 0, 0])
        torch.testing.assert_close(got[2], want[2])


@pytest.mark.parametrize(("header", "expected"), [
    ("linear[m -> m m_in, bias]", ("m_in_in", "m", "m_in")),
    ("linear[m m_in -> m, bias]", ("m_in_in", "m_in", "m")),
])
def test_a_square_map_names_its_weight_input_axis_apart_from_a_declared_one(
        header: str, expected: tuple[str, ...]) -> None:
    """Where `m_in` is an axis of the program (`axis m_in = m`, as a weight declared in
    PyTorch's layout needs) and of the map, the weight's input axis for `m` is `m_in_in`:
    three distinct axes, computed as the interpreter computes them."""
    from differential import compare_text

    inputs = "m, m_in" if "m m_in ->" in header else "m"
    outputs = "m" if "m m_in ->" in header else "m, m_in"
    text = (f"axis b\naxis m = 3\naxis m_in = m\n"
            f"def f(X: R[b, {inputs}]) -> R[b, {outputs}] {{ return {header}(X, W, c) }}")
    program = ncd.load(text)
    (weight,) = [p for p in program.ir.definition("f").params if p.name == "W"]
    assert weight.array.names == expected
    module = program.to_torch("f").double()
    assert tuple(module.W.shape) == (3, 3, 3)
    X = torch.randn(5, *(3 for _ in inputs.split(", ")), dtype=torch.float64)
    formula = "bx,xmn->bmn" if inputs == "m" else "bxy,xym->bm"
    torch.testing.assert_close(module(X), torch.einsum(formula, X, module.W) + module.c)
    report = compare_text(text)["f"]
    assert report.compared and not report.findings, report.findings
