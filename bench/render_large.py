"""Render a 96-layer transformer, collapsed and fully expanded, and time each (target < 10 s).

    .venv/bin/python bench/render_large.py

The model is the gallery's transformer layer written out 96 times as separate blocks (rather
than one block `x96`, which is drawn once), so the expanded diagram really has 96 layers,
each with its attention and feed-forward definitions drawn in place. Not a unit test: it
prints timings and sizes, and exits non-zero if a render misses the target or a diagram
breaks a layout rule.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ncd.renderers import RenderOptions, diagram, render_svg

import ncd
from ncd import ir

ROOT = Path(__file__).resolve().parent.parent
LAYERS = 96
TARGET_SECONDS = 10.0


def deep_transformer(layers: int = LAYERS) -> ir.Program:
    program = ncd.load(str(ROOT / "gallery" / "transformer.ncd")).ir
    model = program.definition("transformer")
    body = model.body
    assert isinstance(body, ir.Composed)
    layer, *rest = body.terms
    assert isinstance(layer, ir.Block)
    blocks = [layer.model_copy(update={"title": f"Layer {i + 1}", "repeat": 1})
              for i in range(layers)]
    deep = model.model_copy(update={
        "name": "deep_transformer",
        "body": ir.Composed(terms=(*blocks, *rest), dom=body.dom, cod=body.cod),
    })
    return program.model_copy(update={"definitions": (*program.definitions, deep)})


def main() -> int:
    program = deep_transformer()
    failed = False
    for label, options in [
        ("collapsed", RenderOptions(collapse_depth=0)),
        ("expanded", RenderOptions(expand_calls=True)),
    ]:
        start = time.perf_counter()
        svg = render_svg(program, "deep_transformer", options)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        geometry = diagram(program, "deep_transformer", options)
        problems = geometry.validate()
        checked = time.perf_counter() - start
        print(f"{label:9s} render {elapsed:6.2f} s  {len(svg) / 1e6:6.2f} MB  "
              f"{geometry.width:9.0f} x {geometry.height:5.0f} px  {len(geometry.boxes):5d} boxes"
              f"  (layout + validate {checked:.2f} s, {len(problems)} problems)")
        failed |= elapsed > TARGET_SECONDS or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
