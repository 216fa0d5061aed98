"""`ncd stats`: the figures read off a definition, held to textbook formulas, to the compiled
modules (parameters), to PyTorch's FLOP counter and to the memory a forward pass allocates."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

import ncd
from ncd import ir
from ncd.sizes import Size
from ncd.stats import Stats, leading, maxima, polynomial_text, stats

torch = pytest.importorskip("torch")

from gallery_cases import gallery_program  # noqa: E402
from measure import counted_flops, peak_forward_bytes  # noqa: E402
from test_compile_gallery import cases, example_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "gallery"
GPT2 = Path(__file__).resolve().parent / "models" / "gpt2_small.ncd"

x, b, a, k, n = (Size.sym(name) for name in "xbakn")


def figures(text: str, name: str = "f", sizes: dict[str, int] | None = None) -> Stats:
    return stats(ncd.load(text, sizes=sizes).ir, name)


# ----------------------------------------------------------------------------- textbook


def test_a_matrix_product_costs_mnk_multiply_adds() -> None:
    result = figures("axis a, k, n\n"
                     "def f(X: R[a, k], Y: R[k, n]) -> R[a, n] {\n"
                     "    Z[a, n] = sum(k) X[a, k] * Y[k, n]\n    return Z\n}")
    assert result.macs == a * k * n
    assert result.flops == a * k * n * 2
    assert result.parameters == Size.const(0)
    assert result.peak == (a * n * 4,)


def test_an_array_read_backwards_is_a_copy_that_lives_until_its_last_use() -> None:
    """`X[a, 7 - k]` has no view in torch (no negative strides): the compiled module flips X
    into an array of its own, alive while `exp(X)` is made and until the product reads it;
    `X[a, k]` is X itself."""
    text = ("axis a = 16, k = 8\n"
            "def f(X: R[a, k]) -> R[a, k] {\n"
            "    Back[a, k] = X[a, 7 - k]\n"
            "    Y = exp(X)\n"
            "    return Y * Back\n}")
    entries = 16 * 8 * 4
    assert figures(text).peak == (Size.const(3 * entries),)  # the flip, exp(X), the product
    compiled = ncd.load(text).to_torch("f")
    assert peak_forward_bytes(compiled, [torch.randn(16, 8)]) == 3 * entries
    assert figures(text.replace("7 - k", "k")).peak == (Size.const(2 * entries),)


def test_a_learned_linear_map_with_bias() -> None:
    result = figures("axis b\naxis m = 784, f = 512\n"
                     "def f(X: R[b, m]) -> R[b, f] { return linear[m -> f, bias](X, W, c) }")
    assert result.parameters == Size.const(784 * 512 + 512)
    assert result.macs == b * (784 * 512)
    assert result.flops == b * (2 * 784 * 512 + 512)  # the bias: one addition per output


def test_a_convolution_costs_the_textbook_formula() -> None:
    """2 * batch * out channels * out length * in channels * window (stride and dilation
    change the output length only)."""
    source = (GALLERY / "conv1d.ncd").read_text()
    result = figures(source, "conv1d")
    batch, c_out, length, c_in, window = b, 32, (128 - 2 * (3 - 1) - 1) // 2 + 1, 16, 3
    assert result.macs == batch * (c_out * length * c_in * window)
    assert result.flops == batch * (2 * c_out * length * c_in * window + c_out * length)
    assert result.parameters == Size.const(c_out * c_in * window)


def test_attention_costs_the_textbook_formula() -> None:
    """Four projections (4 x m^2 multiply-adds), scores and their weighted sum (x^2 m each);
    softmax five FLOPs per score, the scale by 1/sqrt(k) one, the mask none."""
    result = figures((GALLERY / "attention.ncd").read_text(), "attention")
    m, h = 512, 8
    assert result.macs == x * (4 * m * m) + x * x * (2 * m)
    assert result.flops == x * (8 * m * m) + x * x * (4 * m) + x * x * (5 * h + h)
    assert leading(result.flops) == {"x": 2}
    assert polynomial_text(result.flops) == "2096*x^2 + 2097152*x"
    # The compiled module runs the scores, mask, softmax and values as one fused call
    # (F.scaled_dot_product_attention), which holds no (h, x, y) array; each array is freed
    # after its last use: the peak is the call's output while Q, K and V are alive.
    assert result.peak == (x * m * 4 * 4,)
    assert [name for name, _ in result.largest] == ["Q", "S"]  # which depends on x


def test_sizes_fix_the_figures() -> None:
    result = figures((GALLERY / "attention.ncd").read_text(), "attention", {"x": 128})
    assert result.flops.value == 2096 * 128 ** 2 + 2097152 * 128
    assert result.peak[0].value == 8192 * 128


def test_maxima_keep_what_the_sizes_decide() -> None:
    assert maxima([x * 3, x * 2 + 1, Size.const(7)]) == [x * 3, Size.const(7)]
    assert maxima([Size.const(3), Size.const(9), Size.const(4)]) == [Size.const(9)]


# ----------------------------------------------------------------------------- parameters


@cache
def module(path: Path, name: str, sizes: tuple[tuple[str, int], ...] = ()) -> torch.nn.Module:
    return ncd.load(path, sizes=dict(sizes)).to_torch(name).eval()


@pytest.mark.parametrize(("path", "name"), cases(), ids=lambda c: getattr(c, "stem", c))
def test_parameters_equal_the_compiled_modules(path: Path, name: str) -> None:
    counted = stats(gallery_program(path).ir, name).parameters
    assert counted.value == sum(p.numel() for p in module(path, name).parameters())


def test_gpt2_small_has_124439808_parameters_with_tied_embeddings() -> None:
    program = ncd.load(GPT2)
    result = stats(program.ir, "gpt2")
    assert result.parameters.value == 124_439_808
    table = program.ir.definition("gpt2").params
    (embedding,) = [p for p in table if p.name == "E"]
    assert [ir.size_value(axis.size) for axis in embedding.array.shape.axes] == [50257, 768]
    # Untied, the output projection would be an array of its own: 50257 * 768 more.
    assert result.parameters.value + 50257 * 768 == 163_037_184


def test_gpt2_counts_equal_its_compiled_module_tied() -> None:
    """At small sizes (the same file, sizes overridden), the module holds one table E that
    the lookup and the logits both read, and as many numbers as the count says."""
    sizes = (("v", 97), ("x", 8), ("m", 24), ("h", 4))
    counted = stats(ncd.load(GPT2, sizes=dict(sizes)).ir, "gpt2").parameters.value
    compiled = module(GPT2, "gpt2", sizes)
    assert counted == sum(p.numel() for p in compiled.parameters())
    assert counted == 97 * 24 + 8 * 24 + 12 * (
        4 * (24 * 24 + 24) + 2 * 2 * 24 + (24 * 96 + 96) + (96 * 24 + 24)) + 2 * 24


# ----------------------------------------------------------------------------- measurement

# Sizes at which the gallery is measured: large enough that every figure matters.
MEASURED: dict[tuple[str, str], dict[str, int]] = {
    ("attention", "attention"): {"x": 64, "m": 128},
    ("transformer", "attention"): {"x": 64, "m": 128},
    ("transformer", "transformer"): {"x": 16, "m": 64},
    ("transformer", "feedforward"): {"x": 64, "m": 64},
    ("mlp", "mlp"): {"b": 64},
    ("iris", "iris_mlp"): {"b": 64, "m": 256, "f": 512},  # wide: the products dominate
    ("conv1d", "conv1d"): {"b": 8},
    ("lstm", "lstm"): {"t": 6, "b": 8},
    ("lstm", "lstm_cell"): {},
    ("cross_attention", "cross_attention"): {"x": 32, "y": 48},
    ("depthwise_separable", "depthwise_separable"): {"b": 2, "x": 16, "y": 12},
    ("gpt2_block", "gpt2_block"): {"x": 16, "m": 96},
    ("gpt2_block", "causal_self_attention"): {"x": 16, "m": 96},
    ("gpt2_block", "mlp"): {"x": 16, "m": 96},
    ("gru", "gru"): {"t": 6, "b": 8},
    ("gru", "gru_cell"): {},
    ("lenet5", "lenet5"): {"b": 8},
    ("mlp_mixer", "mlp_mixer"): {"c": 64, "ds": 64, "dc": 128},
    ("sliding_window_attention", "sliding_window_attention"): {"x": 64, "m": 128},
    ("llama_block", "llama_block"): {"x": 16, "m": 128, "h": 4, "g": 2, "f": 344},
    # m = 128: the rotation of the queries and keys (entrywise, uncounted by torch) stays
    # within 5% of the flops beside the projections
    ("llama_block", "attention"): {"x": 64, "m": 128, "h": 4, "g": 2},
    ("llama_block", "rotary"): {"x": 64, "m": 128, "h": 4},
    ("llama_block", "swiglu"): {"m": 128, "f": 344},
    ("resnet_block", "resnet_block"): {"b": 4, "y": 16, "x": 16, "c": 32},
    ("batchnorm", "batchnorm_layer"): {"b": 64},
    ("batchnorm", "batch_normalizing_transform"): {"b": 64},
    ("classifier", "classifier"): {"b": 8, "y": 2, "x": 2, "c": 1024, "n": 100},
    ("classifier", "head"): {"b": 8, "y": 2, "x": 2, "c": 1024, "n": 100},
    ("classifier", "cross_entropy"): {"b": 64, "n": 100},
    ("moe", "moe"): {"x": 32, "m": 128, "h": 256},
    ("moe", "expert"): {"x": 32, "m": 128, "h": 256},
    ("lru", "lru"): {"t": 16, "m": 64, "n": 64},
    ("lru", "lru_step"): {"n": 64},
    ("graph_conv", "gcn_conv"): {"v": 64, "e": 256, "f": 128, "g": 16},
    ("unet_level", "unet_level"): {"yh": 32, "xh": 32, "c": 16, "d": 32},
    ("unet_level", "down"): {"yh": 32, "xh": 32, "c": 16},
    ("unet_level", "lower"): {"yh": 32, "xh": 32, "c": 16, "d": 32},
    ("unet_level", "up"): {"yh": 32, "xh": 32, "c": 16, "d": 32},
    ("vit", "vit"): {"u": 64, "v": 64, "p": 4, "m": 128, "h": 2},
    ("vit", "patch_embedding"): {"u": 64, "v": 64, "p": 4, "m": 128, "h": 2},
    ("vit", "encoder_layer"): {"u": 64, "v": 64, "p": 4, "m": 128, "h": 2},
    ("vit", "attention"): {"u": 64, "v": 64, "p": 4, "m": 128, "h": 2},
    ("vit", "feedforward"): {"m": 96},
    ("boolean_circuit", "parity_circuit"): {"b": 4096},
    ("dense_machine", "dense_machine"): {"b": 64},
    ("dense_machine", "layer"): {},
}
# Definitions whose work is mostly entrywise, which FlopCounterMode does not count (the
# rotation of rotary embeddings: cos, sin and products at every entry; batch normalisation
# written out; a loss; a step of the LRU; the bias and tanh of the dense machine's small
# layer, 12 units wide): only their matrix products are compared.
ENTRYWISE = {("llama_block", "rotary"), ("batchnorm", "batch_normalizing_transform"),
             ("classifier", "cross_entropy"), ("lru", "lru_step"),
             ("dense_machine", "layer"), ("dense_machine", "dense_machine"),
             ("boolean_circuit", "parity_circuit")}  # Boolean gates: no products at all
# Contractions the compiled module runs entrywise, whose multiply-adds FlopCounterMode does
# not count: the mixture's sum over its experts is one weighted add per expert.
UNCOUNTED_MACS = {("moe", "moe"): 32 * 4 * 128}  # x e m


def test_every_gallery_definition_is_measured() -> None:
    assert {(path.stem, name) for path, name in cases()} == set(MEASURED)


@pytest.mark.parametrize(("path", "name"), cases(),
                         ids=lambda c: getattr(c, "stem", c))
def test_figures_agree_with_pytorch(path: Path, name: str) -> None:
    """FlopCounterMode counts the matrix products (twice the multiply-adds, exactly) and not
    the entrywise work, so all FLOPs agree within 5 %; the peak forward memory agrees with
    the bytes the forward pass allocates within 20 %."""
    sizes = tuple(sorted(MEASURED[path.stem, name].items()))
    program = ncd.load(path, sizes=dict(sizes))
    result = stats(program.ir, name)
    compiled = module(path, name, sizes)
    inputs = example_inputs(program.ir.definition(name))
    torch_flops = counted_flops(compiled, inputs)
    assert result.macs.value is not None and result.flops.value is not None
    assert 2 * (result.macs.value - UNCOUNTED_MACS.get((path.stem, name), 0)) == torch_flops
    if (path.stem, name) not in ENTRYWISE:
        assert abs(result.flops.value - torch_flops) <= 0.05 * torch_flops
    (peak,) = result.peak
    assert peak.value is not None
    measured = peak_forward_bytes(compiled, inputs)
    assert abs(peak.value - measured) <= 0.2 * measured, (peak.value, measured)


# ----------------------------------------------------------------------------- the command


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from ncd.cli import main

    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_stats_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "stats", str(GALLERY / "attention.ncd"))
    assert status == 0
    assert "S = contract k" in out and "1032*x^2" in out
    assert "FLOPs                    2096*x^2 + 2097152*x   (grows as x^2)" in out


def test_stats_json_with_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "stats", str(GALLERY / "attention.ncd"), "--json",
                             "--sizes", "x=128")
    assert status == 0
    data = json.loads(out)
    assert data["flops"]["value"] == 2096 * 128 ** 2 + 2097152 * 128
    assert data["parameters"]["value"] == 1048576
    assert [op["kind"] for op in data["operations"]][:3] == ["linear"] * 3
    status, out, _ = run_cli(capsys, "stats", str(GALLERY / "attention.ncd"), "--json")
    assert json.loads(out)["flops"]["leading"] == {"x": 2}


def test_stats_of_a_named_definition_and_bad_sizes(capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    status, out, _ = run_cli(capsys, "stats", str(GALLERY / "transformer.ncd"), "feedforward")
    assert status == 0 and out.startswith("feedforward")
    status, _, err = run_cli(capsys, "stats", str(GALLERY / "mlp.ncd"), "--sizes", "b=0")
    assert status == 2 and "positive integer" in err


def test_render_annotate_cost(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "a.svg"
    status, _, err = run_cli(capsys, "render", str(GALLERY / "attention.ncd"), "--annotate",
                             "cost", "--text", "text", "-o", str(target))
    assert status == 0, err
    svg = target.read_text()
    assert "524k·x FLOP" in svg and "1.03k·x² FLOP" in svg and "shade: FLOPs" in svg
    plain = tmp_path / "b.svg"
    run_cli(capsys, "render", str(GALLERY / "attention.ncd"), "--text", "text", "-o",
            str(plain))
    assert "FLOP" not in plain.read_text()
    status, _, err = run_cli(capsys, "render", str(GALLERY / "attention.ncd"), "--annotate",
                             "cost", "--overview", "-f", "dot")
    assert status == 2 and "--annotate" in err


@pytest.mark.parametrize("theme", ["light", "print"])
def test_annotated_diagrams_are_valid(theme: str) -> None:
    from ncd.renderers import RenderOptions, diagram
    from ncd.renderers.annotate import cost_notes

    for path in (GALLERY / "attention.ncd", GALLERY / "transformer.ncd",
                 GALLERY / "conv1d.ncd"):
        program = ncd.load(path)
        name = program.main.name
        notes, legend = cost_notes(program.ir, name)
        drawn = diagram(program.ir, name, RenderOptions(notes=notes, legend=legend,
                                                        theme=theme))
        assert drawn.validate() == []


def test_the_annotated_diagram_in_the_docs_is_current() -> None:
    """docs/analysis.md shows `ncd render --annotate cost gallery/attention.ncd`."""
    from ncd.renderers import RenderOptions, render_svg
    from ncd.renderers.annotate import cost_notes

    program = ncd.load(GALLERY / "attention.ncd")
    notes, legend = cost_notes(program.ir, "attention")
    drawn = render_svg(program.ir, "attention", RenderOptions(notes=notes, legend=legend))
    assert drawn == (ROOT / "docs" / "attention-cost.svg").read_text()
