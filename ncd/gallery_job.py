"""The main job (`make demo`): check every gallery file, draw each definition, compile it.

Diagrams are written next to their sources (`gallery/NAME.svg` for the file's main definition,
`gallery/NAME.DEF.svg` for the others, `*.expanded.svg` with called definitions drawn in
place, `NAME.grad.svg`, the backward definition of the main one drawn as a lens, for the
files in `BACKWARD`, and `NAME.lens.svg`, its forward and backward passes together, for those
in `LENS`, and `NAME.TRAIN.svg` for each training set-up, drawn as a lens); generated
PyTorch modules go to `build/gallery/`. The figures of docs/derivatives.md's reverse rules
(`RULES`) are drawn too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ncd.api import load
from ncd.cli import write_atomically
from ncd.diagnostics import NcdError

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "gallery"
BUILD = ROOT / "build" / "gallery"
BACKWARD = ("attention", "boolean_circuit", "dense_machine")
"""The files whose main definition's backward diagram is drawn too (`ncd render --grad`): a
showcase of the reverse derivative, not every file, as each takes seconds to draw."""
LENS = ("attention", "iris")
"""The files whose main definition's lens view is drawn too (`ncd render --lens`)."""
RULES = ROOT / "docs" / "derivatives" / "rules.ncd"
"""Small definitions whose backward diagrams illustrate the reverse rules in
docs/derivatives.md: each drawn as `ncd render --grad` draws it, `NAME.grad.svg` beside it."""


def draw_rule_figures() -> list[str]:
    """Draw the figures of the reverse rules (`RULES`); the names drawn."""
    program = load(RULES)
    for name in program.names:
        write_atomically(RULES.with_name(f"{name}.grad.svg"),
                         program.render(name, grad=True).encode())
    return list(program.names)


def main() -> int:
    from ncd import ir
    from ncd.renderers import RenderOptions, render_svg

    BUILD.mkdir(parents=True, exist_ok=True)
    failures = 0
    for source in sorted(GALLERY.glob("*.ncd")):
        try:
            program = load(source)
        except NcdError as error:
            print(error.render(), file=sys.stderr)
            failures += 1
            continue
        main_name = program.main.name
        local = [d for d in program.definitions
                 if d.ir.span is None or Path(d.ir.span.file).name == source.name]
        for definition in local:
            suffix = "" if definition.name == main_name else f".{definition.name}"
            svg_path = GALLERY / f"{source.stem}{suffix}.svg"
            write_atomically(svg_path, render_svg(program.ir, definition.name).encode())
            calls = any(isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.CallOp)
                        for t in ir.walk(definition.ir.body))
            if calls:
                expanded = render_svg(program.ir, definition.name,
                                      RenderOptions(expand_calls=True))
                write_atomically(GALLERY / f"{source.stem}{suffix}.expanded.svg",
                                 expanded.encode())
        if source.stem in BACKWARD:
            write_atomically(GALLERY / f"{source.stem}.grad.svg",
                             program.render(main_name, grad=True).encode())
        if source.stem in LENS:
            write_atomically(GALLERY / f"{source.stem}.lens.svg",
                             program.render(main_name, lens=True).encode())
        for training in program.training_names:
            write_atomically(GALLERY / f"{source.stem}.{training}.svg",
                             program.render(training).encode())
        code_path = BUILD / f"{source.stem}.py"
        try:
            code = program.compile()
        except NcdError as error:
            print(error.render(), file=sys.stderr)
            failures += 1
            continue
        write_atomically(code_path, code.encode())
        names = ", ".join(d.name for d in local)
        print(f"{source.relative_to(ROOT)}: checked, drew {names}, compiled to "
              f"{code_path.relative_to(ROOT)}")
    drawn = ", ".join(draw_rule_figures())
    print(f"{RULES.relative_to(ROOT)}: drew the backward diagrams of {drawn}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
