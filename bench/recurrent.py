"""The gallery's LSTM and GRU (`scan` of a cell) against `nn.LSTM` and `nn.GRU`, on the CPU.

    python bench/recurrent.py                          # small and realistic sizes
    python bench/recurrent.py --quick                  # fewer runs
    python bench/recurrent.py --before /path/to/older/ncd/checkout

For each model and size it times, in one process on one thread, interleaved (run 1 of every
variant, then run 2, ...), the forward pass and the forward and backward pass (the sum of the
outputs, then `backward`), and reports the medians of process CPU time (`time.process_time`)
and the ratio to PyTorch's module (above 1: slower), and the ATen operations one forward pass
runs. Variants: PyTorch's module; the
generated module as it runs (the fused kernel where the step is a standard cell); the same
module's loop (the branch that `torch.compile` runs: the step inlined, its input projections
hoisted); and, with `--before DIR`, the module that the ncd at DIR generates (for a checkout
whose packages are laid out as installed: `DIR/ncd/compilers` and so on, see `--help`).
Every generated module gets the weights of PyTorch's module, and its outputs are checked
against it before timing.

Not a test: it asserts nothing and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ncd.compilers.generated import load_source  # noqa: E402

import ncd  # noqa: E402

SIZES = {  # name: (input width i, hidden width n, steps t, batch b)
    "small": (32, 64, 16, 4),
    "realistic": (256, 256, 64, 32),
}


@dataclass
class Variant:
    name: str
    module: nn.Module
    loop: bool = False  # run the branch torch.compile runs


def reference_module(model: str, i: int, n: int) -> nn.Module:
    return nn.LSTM(i, n) if model == "lstm" else nn.GRU(i, n)


def ncd_weights(reference: nn.Module, target: nn.Module, n: int, gates: int,
                cell: str) -> dict[str, torch.Tensor]:
    """PyTorch's (gates n, width) weights laid out as `target`, the generated module, declares
    them: R[g, n, width] as PyTorch keeps them (the gallery's cells), or R[width, g, n] as
    `linear` creates them; the biases R[g, n]."""
    shapes = {name: tuple(value.shape) for name, value in target.state_dict().items()}

    def as_map(name: str, weight: torch.Tensor) -> torch.Tensor:
        rows = weight.detach().reshape(gates, n, -1)
        if shapes[name] == tuple(rows.shape):
            return rows.clone()
        return rows.permute(2, 0, 1).contiguous()

    named = dict(reference.named_parameters())
    return {f"{cell}.W_ih": as_map(f"{cell}.W_ih", named["weight_ih_l0"]),
            f"{cell}.W_hh": as_map(f"{cell}.W_hh", named["weight_hh_l0"]),
            f"{cell}.b_ih": named["bias_ih_l0"].detach().reshape(gates, n).clone(),
            f"{cell}.b_hh": named["bias_hh_l0"].detach().reshape(gates, n).clone()}


def older_source(before: Path, model: str, i: int, n: int) -> str:
    """The module source that the ncd checkout at `before` generates."""
    script = ("import sys, ncd; sys.stdout.write(ncd.load(sys.argv[1], "
              "sizes={'i': int(sys.argv[2]), 'n': int(sys.argv[3])}).compile(sys.argv[4]))")
    environment = {**os.environ, "PYTHONPATH": str(before)}
    result = subprocess.run([sys.executable, "-c", script, str(ROOT / "gallery" / f"{model}.ncd"),
                             str(i), str(n), model], capture_output=True, text=True, check=True,
                            env=environment, cwd=str(before))
    return result.stdout


def class_name(model: str) -> str:
    return model.capitalize()


def variants(model: str, i: int, n: int, before: Path | None) -> tuple[nn.Module,
                                                                       list[Variant]]:
    reference = reference_module(model, i, n)
    gates, cell = (4, "lstm_cell") if model == "lstm" else (3, "gru_cell")
    generated = ncd.load(ROOT / "gallery" / f"{model}.ncd", sizes={"i": i, "n": n}).to_torch(model)
    weights = ncd_weights(reference, generated, n, gates, cell)
    generated.load_state_dict(weights)
    found = [Variant("ncd", generated), Variant("ncd loop", generated, loop=True)]
    if before is not None:
        source = older_source(before, model, i, n)
        older = getattr(load_source(source, f"{model}_before"), class_name(model))()
        older.load_state_dict(weights)
        found.append(Variant("ncd before", older))
    return reference, found


def run(variant: Variant | None, reference: nn.Module, model: str, X: torch.Tensor,
        H0: torch.Tensor, C0: torch.Tensor) -> torch.Tensor:
    """The outputs at every step, from PyTorch's module (`variant` None) or a generated one."""
    if variant is None:
        output = reference(X, (H0[None], C0[None]))[0] if model == "lstm" else \
            reference(X, H0[None])[0]
        assert isinstance(output, torch.Tensor)
        return output
    with patch("torch.compiler.is_compiling", return_value=True) if variant.loop else \
            _nothing():
        result = variant.module(X, H0, C0) if model == "lstm" else variant.module(X, H0)[0]
    assert isinstance(result, torch.Tensor)
    return result


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


class _Counting(TorchDispatchMode):
    """Counts the ATen operations run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def aten_operations(action: Callable[[], object]) -> int:
    with _Counting() as counting:
        action()
    return counting.count


def cpu_seconds(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def measure(model: str, size: str, repeats: int, before: Path | None) -> list[str]:
    i, n, t, b = SIZES[size]
    torch.manual_seed(0)
    reference, found = variants(model, i, n, before)
    X, H0, C0 = torch.randn(t, b, i), torch.randn(b, n), torch.randn(b, n)
    with torch.no_grad():
        want = run(None, reference, model, X, H0, C0)
        for generated in found:
            torch.testing.assert_close(run(generated, reference, model, X, H0, C0), want,
                                       atol=1e-4, rtol=1e-4)
    names = ["nn." + ("LSTM" if model == "lstm" else "GRU")] + [v.name for v in found]
    chosen: list[Variant | None] = [None, *found]
    forward: dict[str, list[float]] = {name: [] for name in names}
    backward: dict[str, list[float]] = {name: [] for name in names}

    def forward_only(variant: Variant | None) -> None:
        with torch.no_grad():
            run(variant, reference, model, X, H0, C0)

    def forward_backward(variant: Variant | None) -> None:
        inputs = X.clone().requires_grad_()
        run(variant, reference, model, inputs, H0, C0).sum().backward()

    for variant in chosen:  # warm-up
        forward_only(variant)
        forward_backward(variant)
    for _ in range(repeats):
        for name, variant in zip(names, chosen, strict=True):
            forward[name].append(cpu_seconds(partial(forward_only, variant)))
            backward[name].append(cpu_seconds(partial(forward_backward, variant)))
    operations = {name: aten_operations(partial(forward_only, variant))
                  for name, variant in zip(names, chosen, strict=True)}
    rows = []
    base_forward = statistics.median(forward[names[0]])
    base_backward = statistics.median(backward[names[0]])
    for name in names:
        f, fb = statistics.median(forward[name]), statistics.median(backward[name])
        rows.append(f"| {model} | {size} (i={i}, n={n}, t={t}, b={b}) | {name} | "
                    f"{f * 1e3:.2f} | {f / base_forward:.2f} | {fb * 1e3:.2f} | "
                    f"{fb / base_backward:.2f} | {operations[name]:,} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each variant")
    parser.add_argument("--before", type=Path, default=None,
                        help="an older ncd checkout whose `ncd` package imports from "
                        "PYTHONPATH (with ncd/compilers, ncd/renderers and ncd/grammar "
                        "linked to the folders of that checkout)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    repeats = arguments.repeats or (5 if arguments.quick else 15)
    print(f"torch {torch.__version__}, one thread, medians of {repeats} runs of process CPU "
          "time, ratio to PyTorch's module\n")
    print("| model | size | variant | forward ms | ratio | forward + backward ms | ratio | "
          "ATen ops (forward) |")
    print("|---|---|---|---|---|---|---|---|")
    for model in ("lstm", "gru"):
        for size in arguments.sizes:
            for row in measure(model, size, repeats, arguments.before):
                print(row, flush=True)


if __name__ == "__main__":
    main()
