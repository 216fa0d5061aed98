"""Buffers: arrays of the module's state that are not learned (`buffer NAME: TYPE = INIT`).
The compiled module registers them with `register_buffer` (in `state_dict`, not among the
parameters, no gradient), with their fixed initial values; read as data they are a `buffer`
operation (a dashed card), and the interpreter reads them as it reads parameters."""

from __future__ import annotations

import pytest
import torch
from conftest import diagnostics, ok
from differential import compare_text

import ncd
from ncd import ir
from ncd.formatter import format_source

SOURCE = """axis x
axis m = 4, n = 3

def f(X: R[x, m]) -> R[x, n] {
    buffer offset: R[m] = constant(0.5)
    buffer scale: R[m] = ones
    buffer table: R[m, n] = zeros
    param W: R[m, n]
    Y = (X - offset) * scale
    return linear[m -> n](Y, W) + sum[m](table)
}
"""


def test_buffers_are_in_the_state_dict_not_the_parameters() -> None:
    module = ncd.load(SOURCE).to_torch("f")
    assert set(module.state_dict()) == {"offset", "scale", "table", "W"}
    assert [name for name, _ in module.named_parameters()] == ["W"]
    assert {name for name, _ in module.named_buffers()} == {"offset", "scale", "table"}
    torch.testing.assert_close(module.offset, torch.full((4,), 0.5))
    torch.testing.assert_close(module.scale, torch.ones(4))
    torch.testing.assert_close(module.table, torch.zeros(4, 3))
    X = torch.randn(2, 4)
    module(X).sum().backward()
    assert module.W.grad is not None
    assert all(not b.requires_grad for b in module.buffers())
    assert "register_buffer(\"offset\", torch.full((4,), 0.5))" in ncd.load(SOURCE).compile("f")
    assert "(offset): Buffer R[m] (4,)" in repr(module)


def test_buffers_load_and_follow_the_module() -> None:
    module = ncd.load(SOURCE).to_torch("f")
    state = {k: torch.randn_like(v) for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    torch.testing.assert_close(module.offset, state["offset"])
    assert module.double().table.dtype == torch.float64


def test_compiled_buffers_are_the_interpreter() -> None:
    (report,) = compare_text(SOURCE).values()
    assert report.compared and not report.findings, report


def test_ir_of_buffers() -> None:
    program = ok(SOURCE)
    (definition,) = program.definitions
    kinds = {p.name: p.buffer for p in definition.params}
    assert kinds == {"offset": True, "scale": True, "table": True, "W": False}
    offset = next(p for p in definition.params if p.name == "offset")
    assert (offset.init, offset.init_args) == ("constant", (0.5,))
    ops = [t.op.kind for t in ir.walk(definition.body) if isinstance(t, ir.Broadcasted)]
    assert ops.count("buffer") == 2  # `offset` and `table` on wires
    multiply = next(t for t in ir.walk(definition.body)
                    if isinstance(t, ir.Broadcasted) and t.op.kind == "multiply")
    assert [p.name for p in multiply.params] == ["scale"]  # a declared operand, as a bias is
    text = program.model_dump_json()
    assert ir.Program.model_validate_json(text) == program
    assert text.count('"buffer":true') == 3 and '"buffer":false' not in text


def test_buffer_is_drawn_as_a_dashed_card() -> None:
    dashed = ncd.load(SOURCE).render("f").count("stroke-dasharray")
    learned = ncd.load(SOURCE.replace("buffer", "param")).render("f").count("stroke-dasharray")
    assert dashed == learned + 2  # the cards of `offset` and `table`


def test_formatter_keeps_buffers() -> None:
    formatted = format_source(SOURCE)
    assert "buffer offset: R[m] = constant(0.5)" in formatted
    assert "buffer scale: R[m] = ones" in formatted
    assert format_source(formatted) == formatted


@pytest.mark.parametrize(("declaration", "message"), [
    ("buffer t: R[m]", "needs an initialiser"),
    ("buffer t: R[m] = normal(0, 1)", "not drawn at random"),
    ("buffer t: R[m] = fancy", "unknown initialiser `fancy`"),
    ("buffer t: N[3][m] = zeros", "buffers hold reals"),
    ("buffer t: R[m] = zeros\n    buffer t: R[m] = ones", "buffer `t` is declared twice"),
])
def test_buffer_mistakes(declaration: str, message: str) -> None:
    source = f"axis m = 4\ndef f(X: R[m]) -> R[m] {{\n    {declaration}\n    return X + t\n}}\n"
    (found,) = diagnostics(source)
    assert message in found.message
    assert found.span is not None and found.span.line == (4 if "twice" in message else 3)


def test_buffers_are_not_counted_as_parameters() -> None:
    """`ncd stats` counts what `module.parameters()` holds: buffers are state, not weights."""
    from ncd.stats import stats

    source = SOURCE.replace("axis x\n", "axis x = 2\n")
    counted = stats(ncd.load(source).ir, "f").parameters
    module = ncd.load(source).to_torch("f")
    assert counted.value == sum(p.numel() for p in module.parameters()) == 12


def test_the_editor_says_buffer() -> None:
    from ncd import lsp_analysis

    source = ("axis b = 4, c = 3\n\ndef f(X: R[b, c]) -> R[b, c] {\n"
                          "    buffer mu: R[c] = zeros\n"
                          "    return batchnorm[b](X, mu, s2) * exp(mu)\n}\n")
    result = lsp_analysis.analyse(source, None)
    assert result.diagnostics == []
    line = source.splitlines().index("    return batchnorm[b](X, mu, s2) * exp(mu)") + 1
    text = source.splitlines()[line - 1]
    assert "buffer s2: R[c]" in (lsp_analysis.hover(result, line, text.index("s2") + 1) or "")
    assert "buffer mu: R[c]" in (lsp_analysis.hover(result, line, text.index("mu") + 1) or "")
    details = {c.label: c.detail for c in lsp_analysis.completions(result, line)}
    assert details["mu"] == "buffer R[c]"
