"""The layout reads sizes with the checker's algebra (`ncd.sizes`): a wire shows a size's
value once every symbol in it is fixed, else the size in the checker's normal form; and the
layout package keeps its public names where callers import them."""

from __future__ import annotations

from ncd.renderers import RenderOptions, layout
from ncd.renderers.geometry import Text
from ncd.renderers.layout import PITCH, size_environment
from ncd.renderers.layout.context import size_label, size_value
from ncd.renderers.layout.definition import layout_definition

import ncd
from ncd import ir
from ncd.sizes import Size

SOURCE = """
axis x
axis m = 512, h = 8, k = m / h
axis w = 3

def heads(X: R[x, m]) -> R[x, h, k] {
    return linear[m -> h k](X, W)
}
"""


def sym(name: str) -> ir.SizeExpr:
    return ir.SizeSym(name=name)


def test_the_environment_holds_every_fixed_size_in_declaration_order() -> None:
    program = ncd.load(SOURCE).ir
    assert size_environment(program) == {"m": 512, "h": 8, "k": 64, "w": 3}


def test_a_size_shows_its_value_only_when_every_symbol_is_fixed() -> None:
    env = {"m": 512, "h": 8}
    product = (Size.sym("m") * Size.sym("h")).to_ir()
    assert size_value(product, env) == 4096
    assert size_label(product, env) == "4096"
    assert size_label(product, env, value=False) == str(Size.sym("m") * Size.sym("h"))
    shifted = (Size.sym("x") - 2).to_ir()
    assert size_value(shifted, env) is None
    assert size_label(shifted, env) == "x - 2"
    half = Size.sym("x").exact_div(2).to_ir()  # not a whole number for every x
    assert size_value(half, {"x": 5}) is None
    assert size_value(half, {"x": 6}) == 3
    assert size_value(sym("x"), {}) is None


def labels(program: ir.Program, name: str, mode: str) -> list[str]:
    options = RenderOptions(wire_labels=mode)  # type: ignore[arg-type]
    diagram = layout_definition(program, name, options)
    return [item.label.plain_text() for item in diagram.items if isinstance(item, Text)]


def test_wire_labels_show_values_and_symbolic_sizes() -> None:
    program = ncd.load(SOURCE).ir
    assert {"512", "8", "64", "x"} <= set(labels(program, "heads", "sizes"))
    both = labels(program, "heads", "both")
    assert "m = 512" in both and "k = 64" in both and "x" in both


def test_the_package_keeps_its_public_names() -> None:
    assert layout.PITCH == PITCH
    for name in layout.__all__:
        assert hasattr(layout, name), name
