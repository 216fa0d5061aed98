"""The reverse derivative of every gallery definition, measured: is it built, does it equal
`torch.autograd`, does its diagram pass the layout checks, and what does it save.

    python -m bench.derivatives               # writes bench/DERIVATIVES.md
    python bench/derivatives.py --json out.json --files mlp lenet5

For every definition of every `gallery/*.ncd` (those `make demo` draws):

- whether `ncd` builds its backward definition, or the E320 it reports (with its message);
- the largest difference between the compiled backward module's gradients (inputs and
  parameters) and `torch.autograd`'s gradients of the compiled forward module, in float64,
  over three conditions: the two size sets of `tests/test_derivative.py` (`SIZES`), and the
  first of them with a leading batch dim of 2 on every input (the gradients of a batch of
  two, each parameter's summed over it);
- `validate()` of its backward diagram as `ncd render --grad` draws it (the layout checks
  every gallery diagram passes), and the time it takes to draw;
- the saved forward values (`Backward.saved`): how many wires, and their entries at the first
  size set.

The unit tests (`tests/test_derivative.py`) hold the same comparison at two sizes for every
supported definition and draw the quickest fifteen diagrams; this script draws every one.
Not a test: it asserts nothing; it prints the table and writes `bench/DERIVATIVES.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from differential import autograd_beside_backward, module_parameters  # noqa: E402
from test_derivative import SIZES  # noqa: E402

import ncd  # noqa: E402
from ncd import ir  # noqa: E402
from ncd.derivative import backward_definition  # noqa: E402
from ncd.diagnostics import NcdError  # noqa: E402
from ncd.semantics import Interpreter, resolve_sizes  # noqa: E402

GALLERY = ROOT / "gallery"
TOLERANCE = 1e-5  # what the unit tests hold the gradients to


@dataclass
class Row:
    file: str
    definition: str
    built: bool
    reason: str = ""  # the E320 message when not built; a note when built
    gap: float | None = None  # largest |compiled - autograd| over the conditions
    interpreter_gap: float | None = None  # largest |compiled - interpreter|, first size set
    conditions: int = 0
    valid: bool | None = None  # validate() of the backward diagram
    problems: list[str] = field(default_factory=list)
    draw_seconds: float | None = None
    saved_wires: int = 0
    saved_entries: int = 0


def gaps(program: ncd.Program, name: str, lead: tuple[int, ...], seed: int = 0
         ) -> tuple[float, float | None]:
    """The largest difference between the compiled backward module and autograd (and, without
    a batch dim, the reference interpreter run on the backward definition)."""
    back = program.grad(name)
    gradient_of = backward_definition(program.ir, name)[0].gradient_of
    run = autograd_beside_backward(program, back, name, gradient_of, seed, lead)
    inputs, seeds, expected, found, module = (run.inputs, run.seeds, run.expected, run.found,
                                              run.backward)
    gap = 0.0
    for want, got in zip(expected, found, strict=True):
        if lead and want is not None and got.dim() == want.dim() + len(lead):
            # Each batch element is a call of the backward definition of its own: a
            # parameter's gradient comes per element (per-example gradients); autograd's is
            # their sum.
            got = got.sum(dim=tuple(range(len(lead))))
        want = torch.zeros_like(got) if want is None else want
        if want.shape != got.shape:
            print(f"  {name}: shape {tuple(got.shape)}, autograd {tuple(want.shape)}")
            return math.inf, None
        gap = max(gap, (want - got).abs().max().item() if got.numel() else 0.0)
    if lead:
        return gap, None
    interpreter = Interpreter(back.program.ir, {}, module_parameters(module))
    with torch.no_grad():
        reference = interpreter.run(back.name, [*inputs, *seeds])
    interpreter_gap = max(((r - f).abs().max().item() if f.numel() else 0.0)
                          for r, f in zip(reference, found, strict=True))
    return gap, interpreter_gap


def measure(path: Path, name: str) -> Row:
    row = Row(path.stem, name, built=False)
    choices = SIZES.get(path.stem)
    if choices is None:  # the symbolic axes fixed at 3, as `-D` fixes them
        loaded = ncd.load(path)
        fixed = {a.name: 3 for a in loaded.ir.axes if ir.size_value(a.size) is None}
        choices = (fixed,)
    program = ncd.load(path, sizes=choices[0])
    try:
        back = program.grad(name)
    except NcdError as error:
        row.reason = error.diagnostics[0].message
        return row
    row.built = True
    built, _ = backward_definition(program.ir, name)
    env = resolve_sizes(program.ir, {})
    row.saved_wires = len(built.saved)
    row.saved_entries = sum(math.prod(ir.size_value(a.size, env) or 0
                                      for a in v.array.shape.axes) for v in built.saved)
    from ncd.renderers import RenderOptions, diagram

    start = time.process_time()
    extended, grad_name, view = program.derivative_drawing(name)  # what `--grad` draws
    problems = diagram(extended.ir, grad_name, RenderOptions(lens=view)).validate()
    row.draw_seconds = time.process_time() - start
    row.valid = not problems
    row.problems = [str(p) for p in problems[:3]]
    if all(v.array.dtype.kind == "B" for v in program.ir.definition(name).outputs):
        # differentiated over Z2, where autograd has nothing to say: tests/test_boolean.py
        # holds it to the brute-force reverse derivative of every gate
        row.reason = "over Z2"
        return row
    conditions: list[tuple[ncd.Program, tuple[int, ...]]] = []
    for sizes in choices:
        conditions.append((ncd.load(path, sizes=sizes), ()))
    if back.ir.leading_dims:  # else its module refuses them (training-mode batchnorm)
        conditions.append((program, (2,)))
    else:
        row.reason = "refuses leading dims"
    row.gap = 0.0
    for loaded, lead in conditions:
        gap, interpreter_gap = gaps(loaded, name, lead)
        row.gap = max(row.gap, gap)
        if interpreter_gap is not None:
            row.interpreter_gap = max(row.interpreter_gap or 0.0, interpreter_gap)
        row.conditions += 1
    return row


def report(rows: list[Row]) -> str:
    built = [r for r in rows if r.built]
    held = [r for r in built if r.gap is not None and r.gap <= TOLERANCE]
    boolean = [r for r in built if r.gap is None]
    valid = [r for r in built if r.valid]
    lines = [
        "# The reverse derivative of every gallery definition",
        "",
        "Written by `python -m bench.derivatives` (not by hand): the backward definition of "
        "every definition of every gallery file, compiled and held to `torch.autograd` in "
        "float64 at the two size sets of `tests/test_derivative.py` and with a leading batch "
        "dim of 2; its diagram drawn and checked by `validate()`.",
        "",
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, ncd "
        f"{metadata.version('ncd')}",
        f"- {len(built)} of {len(rows)} definitions have a backward definition; "
        f"{len(held)} of them equal autograd to {TOLERANCE:g} under every condition, and "
        f"{len(boolean)} {'is' if len(boolean) == 1 else 'are'} over Z2 "
        "(tests/test_boolean.py holds it to the brute-force reverse derivative); "
        f"{len(valid)} of their diagrams pass `validate()`.",
        "",
        "| file | definition | backward | conditions | largest gap to autograd | to the "
        "interpreter | diagram | drawn in (CPU s) | saved wires | saved entries |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if not r.built:
            lines.append(f"| {r.file} | {r.definition} | E320: {r.reason} | | | | | | | |")
            continue
        interp = f"{r.interpreter_gap:.1e}" if r.interpreter_gap is not None else ""
        diagram = "valid" if r.valid else "; ".join(r.problems)
        built_text = f"built ({r.reason})" if r.reason else "built"
        gap = f"{r.gap:.1e}" if r.gap is not None else ""
        lines.append(f"| {r.file} | {r.definition} | {built_text} | {r.conditions} | "
                     f"{gap} | "
                     f"{interp} | {diagram} | {r.draw_seconds:.2f} | {r.saved_wires} | "
                     f"{r.saved_entries} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="*", help="gallery file stems (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for path in sorted(GALLERY.glob("*.ncd")):
        if args.files and path.stem not in args.files:
            continue
        for name in ncd.load(path).names:
            row = measure(path, name)
            rows.append(row)
            gap = f"{row.gap:.1e}" if row.gap is not None else row.reason
            state = f"gap {gap}, diagram {'valid' if row.valid else row.problems}" \
                if row.built else "E320"
            print(f"{path.stem}.{name}: {state}", flush=True)
    text = report(rows)
    print(text)
    if not args.no_write and not args.files:
        (ROOT / "bench" / "DERIVATIVES.md").write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
