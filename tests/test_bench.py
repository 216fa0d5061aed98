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

from bench.__main__ import build, check_agreement  # noqa: E402
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
    assert "torch " + torch.__version__ in report
    assert '"compared_with": "nn.Linear"' in raw.read_text()
