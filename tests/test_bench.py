"""`python -m bench` keeps working: every hand-written reference computes the function of the
generated module it is compared with (outputs and input gradients, in float64, checked by the
harness itself before it times anything), and a tiny run writes its report. No timing is
asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.__main__ import build, check_agreement, median_interval, verdict  # noqa: E402
from bench.references import CASES, Case  # noqa: E402


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model)
def test_references_compute_the_generated_function(case: Case) -> None:
    variants, inputs = build(case, case.small)  # raises when a reference disagrees
    assert len(variants) == 1 + len(case.references)
    # and the check is not vacuous: a reference with one weight changed is caught
    reference = variants[1].module
    # (not a constant, which a layer norm after it would cancel; nor a draw from seed 0, which
    # `build` initialises the weights from: a multiple of the first one that a batch norm
    # after it cancels)
    with torch.no_grad():
        first = next(reference.parameters())
        noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(12345))
        first.add_(0.1 * noise)
    with pytest.raises(AssertionError):
        check_agreement(variants[:2], inputs)


def test_a_tiny_run_writes_the_report(tmp_path: Path) -> None:
    output, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--models", "mlp",
         "--sizes", "small", "--output", str(output), "--json", str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = output.read_text()
    assert "| mlp | small | nn.Linear |" in report
    assert "| forward, paired | fwd+bwd, paired |" in report
    assert "torch " + torch.__version__ in report
    assert '"compared_with": "nn.Linear"' in raw.read_text()


def test_the_median_interval_is_the_binomial_one() -> None:
    """The k-th smallest and largest of n values bound the median with at least 95%
    confidence (k = 1 for 6 values, 2 for 11, 6 for 21: the usual tables); 5 values are too
    few."""
    assert median_interval([5.0, 1.0, 4.0, 2.0, 3.0]) is None
    assert median_interval([float(v) for v in range(6)]) == (0.0, 5.0)
    assert median_interval([float(v) for v in range(11)]) == (1.0, 9.0)
    assert median_interval([float(v) for v in range(21)][::-1]) == (5.0, 15.0)


def test_the_verdict_separates_gaps_from_noise() -> None:
    def row(model: str, ratio: float, low: float) -> dict[str, object]:
        return {"model": model, "size": "small", "forward_cpu_ratio": 0.9,
                "forward_cpu_paired_interval": [0.8, 1.0], "backward_cpu_ratio": ratio,
                "backward_cpu_paired_interval": [low, ratio + 0.02]}

    assert verdict([row("a", 0.99, 0.97)]) == [
        "Every one of the 2 CPU-time ratios is at most 1.00."]
    noisy = verdict([row("a", 1.02, 0.99), row("b", 0.98, 0.95)])
    assert noisy[0] == "1 of the 4 CPU-time ratios are above 1.00: a small fwd+bwd (1.02)."
    assert "do not tell it apart from parity" in noisy[1]
    real = verdict([row("a", 1.05, 1.03)])
    assert real[1].endswith("lies wholly above 1 for a small fwd+bwd (1.05).")
