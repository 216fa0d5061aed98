"""Generated modules against hand-written PyTorch, and the toolchain.

    python -m bench                 # every case at both sizes, then bench/toolchain.py
    python -m bench --quick         # fewer runs, no toolchain: a few minutes
    python -m bench --json out.json --models attention transformer --no-toolchain

For every gallery model with an idiomatic hand-written equivalent (`bench/references.py`),
at a small and a realistic size: the compiled ncd module and each reference, built with the
same weights and checked to compute the same function (outputs equal to 1e-5 in float64,
before anything is timed), are timed in one process on one thread, interleaved (one run of
every variant, then the next run of every variant), forward (under `torch.no_grad`) and
forward + backward; the medians of process CPU time and of wall time are reported, and the
peak memory of each, measured as `tests/measure.py` does (every storage an ATen operation
returns, from its allocation until Python frees it; inputs and parameters not counted).
Ratios are generated / hand-written: above 1 the generated module is slower or larger.

A shared machine is noisy, so beside each ratio of medians the report gives the median of the
runs' own ratios (each run times the generated module and the reference back to back, in the
opposite order on every other run, so that a slow spell of the machine falls on both) with a
distribution-free 95% confidence interval: a ratio above 1 whose interval reaches 1 or below is
not told apart from parity by that run.

Not a test: it asserts only that the functions agree, prints a table and writes
`bench/RESULTS.md` (machine, versions, date) and, with `--json FILE`, the raw figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ncd
from ncd import ir

from .references import CASES, Case, Size

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from measure import LiveStorage  # noqa: E402  (the tests' measurement, shared)

TOLERANCE = 1e-5
SAMPLE_SECONDS = 0.02  # a timed sample repeats the call until it takes about this long


@dataclass
class Variant:
    """One module of a comparison: the generated one, or a reference."""

    label: str
    module: nn.Module
    forward: list[tuple[float, float]]  # (cpu, wall) seconds per call, one per run
    backward: list[tuple[float, float]]
    repeats: int = 1
    peak_forward: int = 0
    peak_backward: int = 0


def outputs(result: object) -> tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)  # type: ignore[arg-type]


def program_sizes(case: Case, size: Size) -> tuple[dict[str, int], dict[str, int]]:
    """The sizes fixed at load (`-D`) and all sizes (those read from the inputs too)."""
    program = ncd.load(ROOT / "gallery" / f"{case.model}.ncd")
    symbolic = {a.name for a in program.ir.axes if a.size == ir.SizeSym(name=a.name)}
    fixed = {k: v for k, v in size.sizes.items() if k not in symbolic}
    return fixed, dict(size.sizes)


def make_inputs(definition: ir.Definition, env: dict[str, int], batch: tuple[int, ...],
                seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for variable in definition.inputs:
        shape = [ir.size_value(axis.size, env) for axis in variable.array.shape.axes]
        if any(s is None for s in shape):
            raise ValueError(f"a size of {variable.array.text()} is not given")
        dims = (*batch, *shape)
        dtype = variable.array.dtype
        if dtype.kind == "N":  # indices or labels: naturals below the bound
            bound = ir.size_value(dtype.bound, env) if dtype.bound is not None else None
            if bound is None:
                raise ValueError(f"the bound of {variable.array.text()} is not given")
            tensors.append(torch.randint(bound, dims, generator=generator))  # type: ignore[arg-type]
        elif dtype.kind == "B":
            tensors.append(torch.rand(dims, generator=generator) < 0.5)  # type: ignore[arg-type]
        else:
            tensors.append(torch.randn(dims, generator=generator))  # type: ignore[arg-type]
    return tuple(tensors)


def build(case: Case, size: Size) -> tuple[list[Variant], tuple[torch.Tensor, ...]]:
    """The generated module and its references, same weights, checked to agree."""
    fixed, every = program_sizes(case, size)
    torch.manual_seed(0)
    program = ncd.load(ROOT / "gallery" / f"{case.model}.ncd", sizes=fixed)
    generated = program.to_torch(case.definition)
    sized = ncd.load(ROOT / "gallery" / f"{case.model}.ncd", sizes=every)
    inputs = make_inputs(sized.ir.definition(case.definition), every, size.batch, seed=1)
    variants = [Variant("ncd", generated, [], [])]
    for label, builder in case.references:
        variants.append(Variant(label, builder(generated, every), [], []))
    check_agreement(variants, inputs)
    return variants, inputs


def check_agreement(variants: Sequence[Variant], inputs: tuple[torch.Tensor, ...]) -> None:
    """Every reference computes what the generated module computes: outputs and the
    gradients of the inputs equal to `TOLERANCE` in float64 (a benchmark of a different
    function is worthless)."""
    doubled = [v.module.double() for v in variants]
    try:
        # integer inputs (indices, labels) stay as they are and have no gradient
        wide = [x.double().requires_grad_(True) if x.is_floating_point() else x for x in inputs]
        real = [x for x in wide if x.is_floating_point()]
        expected = outputs(doubled[0](*wide))
        weight = [torch.randn_like(y) for y in expected]
        grads = torch.autograd.grad(sum((y * w).sum() for y, w in zip(expected, weight,
                                                                       strict=True)), real)
        for variant, module in zip(variants[1:], doubled[1:], strict=True):
            again = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in wide]
            actual = outputs(module(*again))
            for a, b in zip(actual, expected, strict=True):
                torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=TOLERANCE,
                                           msg=lambda m, v=variant: f"{v.label}: {m}")
            other = torch.autograd.grad(
                sum((y * w).sum() for y, w in zip(actual, weight, strict=True)),
                [x for x in again if x.is_floating_point()])
            for a, b in zip(other, grads, strict=True):
                torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=TOLERANCE,
                                           msg=lambda m, v=variant: f"{v.label} grad: {m}")
    finally:
        for module in doubled:
            module.float()


def forward_call(variant: Variant, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            variant.module(*inputs)
    return run


def backward_call(variant: Variant, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    def run() -> None:
        for parameter in variant.module.parameters():
            parameter.grad = None
        total = sum(y.sum() for y in outputs(variant.module(*inputs)))
        total.backward()  # type: ignore[union-attr]
    return run


def sample(call: Callable[[], None], repeats: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.process_time() - cpu) / repeats, (time.perf_counter() - wall) / repeats


def calibrate(call: Callable[[], None]) -> int:
    call()  # warm up
    _, wall = sample(call, 1)
    return max(1, min(50, round(SAMPLE_SECONDS / max(wall, 1e-6))))


def peak_bytes(variant: Variant, inputs: tuple[torch.Tensor, ...], backward: bool) -> int:
    existing = [*inputs, *variant.module.parameters(), *variant.module.buffers()]
    mode = LiveStorage(existing)
    if backward:
        with mode:
            backward_call(variant, inputs)()
        for parameter in variant.module.parameters():
            parameter.grad = None
    else:
        with mode:
            forward_call(variant, inputs)()
    return mode.peak


def measure(case: Case, size: Size, runs: int) -> list[dict[str, Any]]:
    variants, inputs = build(case, size)
    grad_inputs = tuple(x.clone() for x in inputs)
    calls = [(forward_call(v, inputs), backward_call(v, grad_inputs)) for v in variants]
    repeats = [(calibrate(f), calibrate(b)) for f, b in calls]
    timed = list(zip(variants, calls, repeats, strict=True))
    for run in range(runs):  # interleaved: every variant once per run, the order alternating
        for variant, (f, b), (rf, rb) in (timed if run % 2 == 0 else timed[::-1]):
            variant.forward.append(sample(f, rf))
            variant.backward.append(sample(b, rb))
    for variant in variants:
        variant.peak_forward = peak_bytes(variant, inputs, backward=False)
        variant.peak_backward = peak_bytes(variant, grad_inputs, backward=True)
    generated, rows = variants[0], []
    for reference in variants[1:]:
        rows.append(row(case, size, generated, reference))
    return rows


def median(samples: list[tuple[float, float]], which: int) -> float:
    return statistics.median(s[which] for s in samples)


def median_interval(values: Sequence[float], confidence: float = 0.95
                    ) -> tuple[float, float] | None:
    """A distribution-free confidence interval of the median: the k-th smallest and k-th
    largest values, k the largest for which the chance that the median lies outside is at
    most 1 - confidence (each value falls below the median with probability 1/2). None for
    fewer than 6 values, where no k gives 95%."""
    ordered, n = sorted(values), len(values)
    outside, k = 0.0, 0
    while k < n // 2:
        # P(at most k of n values fall below the median), twice for both tails
        tail = 2 * (outside + math.comb(n, k) / 2 ** n)
        if tail > 1 - confidence:
            break
        outside += math.comb(n, k) / 2 ** n
        k += 1
    if k == 0:
        return None
    return ordered[k - 1], ordered[n - k]


def paired(generated: list[tuple[float, float]], reference: list[tuple[float, float]]
           ) -> tuple[float, tuple[float, float] | None]:
    """The median of the runs' own CPU-time ratios, and its confidence interval."""
    ratios = [ours[0] / theirs[0] for ours, theirs in zip(generated, reference, strict=True)
              if theirs[0] > 0]
    return statistics.median(ratios), median_interval(ratios)


def row(case: Case, size: Size, generated: Variant, reference: Variant) -> dict[str, Any]:
    figures: dict[str, Any] = {"model": case.model, "size": size.name, "sizes": size.sizes,
                               "batch": list(size.batch), "compared_with": reference.label}
    for key, attribute in (("forward", "forward"), ("backward", "backward")):
        for which, clock in ((0, "cpu"), (1, "wall")):
            ours = median(getattr(generated, attribute), which)
            theirs = median(getattr(reference, attribute), which)
            figures[f"{key}_{clock}_ncd_s"] = ours
            figures[f"{key}_{clock}_reference_s"] = theirs
            figures[f"{key}_{clock}_ratio"] = ours / theirs if theirs else None
        middle, interval = paired(getattr(generated, attribute), getattr(reference, attribute))
        figures[f"{key}_cpu_paired_ratio"] = middle
        figures[f"{key}_cpu_paired_interval"] = list(interval) if interval else None
    for key in ("peak_forward", "peak_backward"):
        ours, theirs = getattr(generated, key), getattr(reference, key)
        figures[f"{key}_ncd_bytes"] = ours
        figures[f"{key}_reference_bytes"] = theirs
        figures[f"{key}_ratio"] = ours / theirs if theirs else None
    return figures


def machine() -> dict[str, str]:
    import platform

    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"processor": processor, "python": platform.python_version(),
            "torch": torch.__version__, "ncd": ncd.__version__ if hasattr(ncd, "__version__")
            else "?", "platform": platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "threads": str(torch.get_num_threads())}


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def paired_text(middle: float, interval: list[float] | None) -> str:
    if interval is None:
        return f"{middle:.2f}"
    return f"{middle:.2f} ({interval[0]:.2f}–{interval[1]:.2f})"


def verdict(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Which timed ratios are above 1, and which of those the runs tell apart from parity."""
    above, apart = [], []
    for r in rows:
        for key, label in (("forward", "forward"), ("backward", "fwd+bwd")):
            ratio = r[f"{key}_cpu_ratio"]
            if ratio is None or round(ratio, 2) <= 1.0:
                continue
            name = f"{r['model']} {r['size']} {label} ({ratio:.2f})"
            above.append(name)
            interval = r[f"{key}_cpu_paired_interval"]
            if interval is not None and interval[0] > 1.0:
                apart.append(name)
    timed = 2 * len(rows)
    if not above:
        return [f"Every one of the {timed} CPU-time ratios is at most 1.00."]
    lines = [f"{len(above)} of the {timed} CPU-time ratios are above 1.00: "
             f"{'; '.join(above)}."]
    if apart:
        lines.append(f"Of these, the runs' 95% interval lies wholly above 1 for "
                     f"{'; '.join(apart)}.")
    else:
        lines.append("For each of them the runs' 95% interval reaches 1 or below: these runs "
                     "do not tell it apart from parity.")
    return lines


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        "# Generated modules against hand-written PyTorch",
        "",
        "Written by `python -m bench` (`bench/__main__.py`; the references are in "
        "`bench/references.py`). Each reference has the generated module's weights and is "
        "checked to compute the same function (outputs and input gradients equal to 1e-5 in "
        "float64) before it is timed.",
        "",
        f"Machine: {info['processor']}, {info['platform']}; Python {info['python']}, torch "
        f"{info['torch']}, one thread (`torch.set_num_threads(1)`); {info['date']}; "
        f"{results['runs']} interleaved runs per case.",
        "",
        "Ratio = generated / hand-written (above 1: the generated module is slower or "
        "larger). Times are medians of process CPU time (wall time beside it); forward under "
        "`torch.no_grad`, forward + backward of the sum of the outputs. Peak memory as "
        "`tests/measure.py` counts it (storages allocated during the call; inputs and "
        "parameters not counted).",
        "",
        "Paired: the median of the runs' own CPU-time ratios (the two modules timed back to "
        "back in each run, in alternating order), with its distribution-free 95% confidence "
        "interval. A shared machine is noisy: a ratio above 1 whose interval reaches 1 or "
        "below is not told apart from parity by this run.",
        "",
        "| model | size | compared with | forward (CPU) | forward (wall) | fwd+bwd (CPU) | "
        "fwd+bwd (wall) | forward, paired | fwd+bwd, paired | peak memory fwd | "
        "peak memory fwd+bwd | ncd fwd ms | ref fwd ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['compared_with']} | "
            f"{ratio_text(r['forward_cpu_ratio'])} | {ratio_text(r['forward_wall_ratio'])} | "
            f"{ratio_text(r['backward_cpu_ratio'])} | {ratio_text(r['backward_wall_ratio'])} | "
            f"{paired_text(r['forward_cpu_paired_ratio'], r['forward_cpu_paired_interval'])} | "
            f"{paired_text(r['backward_cpu_paired_ratio'], r['backward_cpu_paired_interval'])}"
            f" | {ratio_text(r['peak_forward_ratio'])} | "
            f"{ratio_text(r['peak_backward_ratio'])} | "
            f"{r['forward_cpu_ncd_s'] * 1e3:.3f} | {r['forward_cpu_reference_s'] * 1e3:.3f} |")
    lines += ["", *verdict(results["rows"])]
    lines += ["", "Sizes (`-D`, and the leading batch dims of the inputs):", ""]
    seen = set()
    for r in results["rows"]:
        key = (r["model"], r["size"])
        if key in seen:
            continue
        seen.add(key)
        sizes = ", ".join(f"{k} = {v}" for k, v in r["sizes"].items())
        batch = f"; batch {' x '.join(map(str, r['batch']))}" if r["batch"] else ""
        lines.append(f"- {r['model']} ({r['size']}): {sizes}{batch}")
    if results.get("toolchain"):
        lines += ["", "The toolchain (check, compile, render on large programs) is in "
                  "`bench/TOOLCHAIN.md`, written by the same run."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 runs per case and no toolchain benchmark")
    parser.add_argument("--runs", type=int,
                        help="interleaved runs per case (default 21; 3 with --quick)")
    parser.add_argument("--models", nargs="+", choices=[c.model for c in CASES],
                        help="only these gallery models")
    parser.add_argument("--sizes", nargs="+", choices=["small", "realistic"],
                        default=["small", "realistic"])
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw figures")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md",
                        help="the Markdown report (default bench/RESULTS.md)")
    parser.add_argument("--no-toolchain", action="store_true",
                        help="skip bench/toolchain.py (skipped by --quick too)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = args.runs or (3 if args.quick else 21)
    rows: list[dict[str, Any]] = []
    for case in CASES:
        if args.models and case.model not in args.models:
            continue
        for size in (case.small, case.realistic):
            if size.name not in args.sizes:
                continue
            for figures in measure(case, size, runs):
                rows.append(figures)
                print(f"{figures['model']:16} {figures['size']:9} "
                      f"{figures['compared_with']:32} fwd {figures['forward_cpu_ratio']:.2f} "
                      f"fwd+bwd {figures['backward_cpu_ratio']:.2f} "
                      f"peak {ratio_text(figures['peak_forward_ratio'])}", flush=True)
    results: dict[str, Any] = {"machine": machine(), "runs": runs, "rows": rows,
                               "toolchain": False}
    if not (args.quick or args.no_toolchain):
        from .toolchain import main as toolchain

        toolchain([])
        results["toolchain"] = True
    args.output.write_text(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
