"""`ncd check --symmetry`: every claim is held to the compiled module. A permutation (or
cyclic shift) of an input axis is applied to the inputs: an equivariant claim must give the
outputs permuted (shifted) alike along the axes it names, an invariant one the same outputs;
for a claim of neither, the test must find an input and a permutation (shift) for which the
outputs are neither unchanged nor transformed along any axis of the same name."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

import ncd
from ncd import ir
from ncd.symmetry import AxisSymmetry, Claim, report, symmetries

torch = pytest.importorskip("torch")

from gallery_cases import gallery_program  # noqa: E402
from test_compile_gallery import cases  # noqa: E402

SIZE = 5  # every symbolic size
TOLERANCE = {"rtol": 1e-9, "atol": 1e-9}


# Narrower models where the width does not change what is claimed (fast in float64).
NARROW = {"attention": {"m": 16}, "transformer": {"m": 16}, "gpt2_block": {"m": 24},
          "cross_attention": {"m": 16, "n": 8}, "sliding_window_attention": {"m": 16},
          "mlp_mixer": {"c": 8, "ds": 8, "dc": 16},
          "llama_block": {"m": 16, "h": 4, "g": 2, "f": 12},
          "unet_level": {"c": 4, "d": 6}, "vit": {"u": 8, "v": 8, "p": 4, "m": 16, "h": 2},
          "resnet_block": {"c": 4}, "lru": {"m": 8, "n": 8}, "graph_conv": {"f": 8, "g": 4},
          "moe": {"m": 8, "h": 8}}


@cache
def compiled(path: Path | str, name: str) -> tuple[ir.Definition, torch.nn.Module]:
    program = ncd.load(path, sizes=NARROW.get(Path(path).stem))
    return program.ir.definition(name), randomised(program.to_torch(name, dtype=torch.float64))


def randomised(module: torch.nn.Module) -> torch.nn.Module:
    """The module with every parameter drawn at random: a claim is about every value of the
    parameters, and some initial values (a gain of ones, a bias of zeros) are symmetric."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dtype == torch.bool:  # a Boolean circuit's switches
                parameter.copy_(torch.rand(parameter.shape, generator=generator) < 0.5)
                continue
            parameter.copy_(torch.randn(parameter.shape, generator=generator,
                                        dtype=parameter.dtype) * 0.5)
    return module.eval()


def inputs(definition: ir.Definition, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for variable in definition.inputs:
        shape = [ir.size_value(axis.size, {s: SIZE for s in _symbols(axis.size)})
                 for axis in variable.array.shape.axes]
        dims = [int(n or 0) for n in shape]
        dtype = variable.array.dtype
        if dtype.kind == "N":  # an index array: values within its bound (labels, node ids)
            bound = ir.size_value(dtype.bound, {s: SIZE for s in _symbols(dtype.bound)}) \
                if dtype.bound is not None else 2
            tensors.append(torch.randint(0, int(bound or 1), dims, generator=generator))
        elif variable.array.dtype.kind == "B":
            tensors.append(torch.rand(dims, generator=generator) > 0.5)
        else:
            tensors.append(torch.randn(dims, generator=generator, dtype=torch.float64))
    return tensors


def _symbols(size: ir.SizeExpr) -> set[str]:
    from ncd.sizes import symbols_of

    return set(symbols_of(size))


def transform(tensor: torch.Tensor, names: tuple[str, ...], axis: str,
              how: tuple[str, object]) -> torch.Tensor:
    """`tensor` permuted (`("permute", index)`) or rolled (`("roll", steps)`) along `axis`."""
    if axis not in names:
        return tensor
    dim = names.index(axis)
    kind, value = how
    if kind == "permute":
        assert isinstance(value, torch.Tensor)
        return tensor.index_select(dim, value)
    assert isinstance(value, int)
    return torch.roll(tensor, value, dims=dim)


def outputs(module: torch.nn.Module, arguments: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        result = module(*arguments)
    return list(result) if isinstance(result, tuple) else [result]


def axis_size(definition: ir.Definition, axis: str) -> int:
    for variable in definition.inputs:
        if axis in variable.array.names:
            size = variable.array.shape.axis(axis).size
            value = ir.size_value(size, {s: SIZE for s in _symbols(size)})
            assert value is not None
            return value
    raise KeyError(axis)


def check_claim(definition: ir.Definition, module: torch.nn.Module, axis: str, claim: Claim,
                mode: str) -> None:
    size = axis_size(definition, axis)
    if size < 2:
        return  # one entry: no other order, no shift to check (the U-Net's one input channel)
    names = [v.array.names for v in definition.inputs]
    out_names = [v.array.names for v in definition.outputs]
    if claim.kind == "neither":
        for seed in range(4):
            how = _transformation(mode, size, seed, stride=1)
            before = outputs(module, inputs(definition, seed))
            after = outputs(module, [transform(t, n, axis, how)
                                     for t, n in zip(inputs(definition, seed), names,
                                                     strict=True)])
            if _differs(before, after, out_names, axis, how):
                return
        raise AssertionError(f"no counterexample found to the claim that {axis} is not "
                             f"{mode}-symmetric: {claim.text()}")
    stride = max((s for _, _, s in claim.carriers), default=1)
    for seed in range(2):
        how = _transformation(mode, size, seed, stride)
        before = outputs(module, inputs(definition, seed))
        after = outputs(module, [transform(t, n, axis, how)
                                 for t, n in zip(inputs(definition, seed), names, strict=True)])
        expected = list(before)
        skip: dict[int, tuple[int, int]] = {}
        for index, carrier, carrier_stride in claim.carriers:
            dim = out_names[index].index(carrier)
            if mode == "permutation":
                expected[index] = transform(expected[index], out_names[index], carrier, how)
            else:
                steps = how[1]
                assert isinstance(steps, int) and steps % carrier_stride == 0
                expected[index] = torch.roll(expected[index], steps // carrier_stride, dim)
                if claim.windowed:  # compare where the windows stay inside the input
                    skip[index] = (dim, steps // carrier_stride)
        for index, (got, want) in enumerate(zip(after, expected, strict=True)):
            if index in skip:
                dim, first = skip[index]
                got, want = got.narrow(dim, first, got.shape[dim] - first), \
                    want.narrow(dim, first, want.shape[dim] - first)
                assert got.numel() > 0
            torch.testing.assert_close(got, want, **TOLERANCE)


def _transformation(mode: str, size: int, seed: int, stride: int) -> tuple[str, object]:
    if mode == "permutation":
        generator = torch.Generator().manual_seed(100 + seed)
        index = torch.randperm(size, generator=generator)
        while bool((index == torch.arange(size)).all()):
            index = torch.randperm(size, generator=generator)
        return ("permute", index)
    return ("roll", stride * (1 + seed % 2))


def _differs(before: list[torch.Tensor], after: list[torch.Tensor],
             out_names: list[tuple[str, ...]], axis: str, how: tuple[str, object]) -> bool:
    """The outputs are neither unchanged nor transformed along the axis of the same name."""
    for index, (b, a) in enumerate(zip(before, after, strict=True)):
        candidates = [b]
        if axis in out_names[index]:
            candidates.append(transform(b, out_names[index], axis, how))
        if all(not torch.allclose(a, c, rtol=1e-6, atol=1e-6) for c in candidates):
            return True
    return False


def gallery_claims() -> list[tuple[Path, str]]:
    return cases()


@pytest.mark.parametrize(("path", "name"), gallery_claims(), ids=lambda c: getattr(c, "stem", c))
def test_every_gallery_claim_holds_on_the_compiled_module(path: Path, name: str) -> None:
    definition, module = compiled(path, name)
    results = symmetries(ncd.load(path, sizes=NARROW.get(path.stem)).ir, name)
    assert results == symmetries(gallery_program(path).ir, name) or path.stem in NARROW
    assert [r.axis for r in results] == list(dict.fromkeys(
        n for v in definition.inputs for n in v.array.names))
    for result in results:
        check_claim(definition, module, result.axis, result.permutation, "permutation")
        check_claim(definition, module, result.axis, result.translation, "translation")


def claims(text: str, name: str = "f") -> dict[str, AxisSymmetry]:
    return {r.axis: r for r in symmetries(ncd.load(text).ir, name)}


GALLERY = Path(__file__).resolve().parent.parent / "gallery"


def test_the_gallery_verdicts() -> None:
    attention = claims((GALLERY / "attention.ncd").read_text(), "attention")
    assert attention["x"].permutation.kind == "neither"
    assert "causal mask keeps x >= y" in attention["x"].permutation.detail
    assert attention["x"].permutation.span is not None
    assert attention["x"].permutation.span.line == 12
    assert attention["m"].permutation.detail.startswith("the linear map over m")
    conv = claims((GALLERY / "conv1d.ncd").read_text(), "conv1d")
    assert conv["x"].permutation.kind == "neither"
    assert conv["x"].translation.kind == "equivariant"
    assert conv["x"].translation.carriers == ((0, "p", 2),)
    assert conv["b"].permutation.kind == "equivariant"
    lstm = claims((GALLERY / "lstm.ncd").read_text(), "lstm")
    assert lstm["t"].permutation.detail == "the scan runs along t in order"
    assert lstm["b"].permutation.kind == "equivariant"


AXES = "axis b\naxis m = 4, h = 2, k = 2, w = 3\n"

# Small programs, one rule each, with the verdict expected for axis x (permutation,
# translation); each is also checked numerically.
RULES = {
    "softmax": ("def f(S: R[b, x]) -> R[b, x] { return softmax[x](S) }",
                "equivariant", "equivariant"),
    "sum": ("def f(S: R[b, x]) -> R[b] { return sum[x](S) }", "invariant", "invariant"),
    "norm without parameters": ("def f(S: R[b, x]) -> R[b, x] { return layernorm[x](S) }",
                                "equivariant", "equivariant"),
    "norm with a gain": ("axis x = 5\ndef f(S: R[b, x]) -> R[b, x] { return rmsnorm[x](S, g) }",
                         "neither", "neither"),
    "positional parameter": ("axis x = 5\ndef f(X: R[x, m]) -> R[x, m] {\n"
                             "    param P: R[x, m]\n    return X + P\n}", "neither", "neither"),
    "self-attention without a mask": (
        "axis x\ndef f(X: R[x, m]) -> R[x, m] {\n"
        "    S[x, y] = sum(m) X[x, m] * X[y, m]\n"
        "    A = softmax[y](S)\n"
        "    O[x, m] = sum(y) A[x, y] * X[y, m]\n"
        "    return O\n}", "equivariant", "equivariant"),
    "reshape": ("axis x = 4\ndef f(X: R[b, x]) -> R[b, h, k] { return reshape[x -> h k](X) }",
                "neither", "neither"),
    "rename": ("axis x, z = x\ndef f(X: R[x, m]) -> R[z, m] { return rename[x -> z](X) }",
               "equivariant", "equivariant"),
    "window": ("axis x = 9\naxis p = x - w + 1\ndef f(X: R[b, x]) -> R[b, p] {\n"
               "    P[b, p, w] = X[b, p + w]\n    return sum[w](P)\n}", "neither",
               "equivariant"),
    "sum after a window": ("axis x = 9\naxis p = x - w + 1\ndef f(X: R[b, x]) -> R[b] {\n"
                           "    P[b, p, w] = X[b, p + w]\n    return sum[p, w](P)\n}",
                           "neither", "neither"),
    "mask on positions": ("def f(S: R[x, y]) -> R[x, y] { return mask[x >= y, fill=0](S) }",
                          "neither", "neither"),
    "mask by an array": ("def f(S: R[x, y], C: B[x, y]) -> R[x, y] { return mask(S, C) }",
                         "equivariant", "equivariant"),
    "a constant along the axis": ("def f(S: R[b, x]) -> R[b, x] {\n    One[x] = 1\n"
                                  "    return S * (One + 1)\n}", "equivariant", "equivariant"),
    "index values": ("def f(S: R[b, x]) -> R[b, x] {\n    P[x] = x\n    return S + P\n}",
                     "neither", "neither"),
    "counts by scatter_add": ("axis v = 3\ndef f(S: R[x], Dst: N[v][x]) -> R[v] {\n"
                              "    One[x] = 1\n"
                              "    return scatter_add[x -> v](S, Dst) / "
                              "(scatter_add[x -> v](One, Dst) + 1)\n}", "invariant", "invariant"),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule(rule: str) -> None:
    source, permutation, translation = RULES[rule]
    text = AXES + ("" if source.startswith("axis x") else "axis x, y\n") + source
    program = ncd.load(text)
    definition = program.ir.definition("f")
    result = claims(text)["x"]
    assert (result.permutation.kind, result.translation.kind) == (permutation, translation), \
        (result.permutation.text(), result.translation.text())
    module = randomised(program.to_torch("f", dtype=torch.float64))
    check_claim(definition, module, "x", result.permutation, "permutation")
    check_claim(definition, module, "x", result.translation, "translation")


def test_report_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    from ncd.cli import main

    program = ncd.load(GALLERY / "conv1d.ncd")
    text = report(program.ir, "conv1d")
    assert "  x\n    permutation  neither: X[(b, c, p, w) -> (b, c, 2*p + 2*w)] reads x by " \
        "position (" in text
    assert main(["check", "--symmetry", str(GALLERY / "transformer.ncd"), "feedforward"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("feedforward(X: R[x, m])")
    assert "attention(" not in out
    assert main(["check", "--symmetry", str(GALLERY / "transformer.ncd")]) == 0
    out = capsys.readouterr().out
    assert "transformer(" in out and "feedforward(" in out and "\nattention(" not in out

    assert main(["check", "--symmetry", "--format", "json", str(GALLERY / "mlp.ncd")]) == 2
    assert "--symmetry" in capsys.readouterr().err
