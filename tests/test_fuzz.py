"""A bounded fuzz run: generated valid programs and corrupted ones go through check, render and
compile; no input may crash ncd, every rejection is a located diagnostic, and what comes out
is safe (see `fuzz_strategies.exercise`). `bench/fuzz.py` runs the same oracle for longer.

Also the regression tests of what fuzzing found.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fuzz_strategies import (
    Outcome,
    ProgramGenerator,
    RandomChooser,
    exercise,
    mutate,
    mutated_programs,
    programs,
)
from hypothesis import HealthCheck, Phase, given, settings

import ncd
from ncd.cli import main
from ncd.diagnostics import NcdError
from ncd.operators import OPERATORS


def fuzz(examples: int) -> settings:
    """Bounded and reproducible: a fixed seed, and no shrinking (a failure prints its input;
    `bench/fuzz.py` saves what it finds)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=list(HealthCheck))


def accepted(text: str, **options: bool) -> Outcome:
    """`exercise(text)` of a valid program: it must be accepted and go through every stage.
    Compiling either succeeds or is a located E312 (a parameter over a symbolic axis) or E305
    (a symbolic size that no input of the module tells)."""
    outcome = exercise(text, **options)
    assert outcome.accepted, f"{outcome.codes}\n{text}"
    assert {"check", "svg", "tikz", "dot"} <= set(outcome.stages), (outcome, text)
    assert "compile" in outcome.stages or set(outcome.codes) <= {"E305", "E312"}, \
        (outcome, text)
    assert "compile" in outcome.stages or outcome.codes, (outcome, text)
    return outcome


@fuzz(100)
@given(programs())
def test_generated_programs_check_render_and_compile(text: str) -> None:
    accepted(text)


@fuzz(150)
@given(mutated_programs())
def test_mutated_programs_never_crash_the_checker(text: str) -> None:
    """The checker on corrupted input: located diagnostics, never a traceback. (Which inputs
    hypothesis draws can vary with what ran before; the whole pipeline runs on the fixed
    corpus below, so that the suite's outcome does not depend on test order.)"""
    exercise(text, svg=False, tikz=False, dot=False, compile_code=False)


def test_seeded_corpus() -> None:
    """A fixed corpus through check, render and compile: the first inputs of
    `bench/fuzz.py --generated 60 --mutated 400` (seed 0)."""
    compiled = 0
    for seed in range(60):
        outcome = accepted(ProgramGenerator(RandomChooser(seed)).program(),
                           every_definition=seed % 10 == 0)
        compiled += "compile" in outcome.stages
    assert compiled >= 20  # 34 of the 60 today; the others are E312 (symbolic parameters)
    rejected = 0
    for seed in range(400):
        chooser = RandomChooser(10_000_000 + seed)
        outcome = exercise(mutate(chooser, ProgramGenerator(chooser).program()))
        rejected += not outcome.accepted
    assert rejected > 300  # the corruptions do produce invalid input


def test_generator_reaches_every_operator_and_construct() -> None:
    texts = "\n".join(ProgramGenerator(RandomChooser(seed)).program() for seed in range(300))
    missing = [name for name in OPERATORS if not re.search(rf"\b{name}\s*[\[(]", texts)]
    assert not missing
    for construct in ("block ", " x", " shared", "color ", " ; ", " (x) ", "sum(", "param ",
                      "scan[", "N[", "__import__", "lambda", "// ", "bias", "train "):
        assert construct in texts, construct


# ---- regressions found by fuzzing -------------------------------------------------------


def test_alias_inside_block_is_not_an_internal_error() -> None:
    """`Y = X` inside a block once raised KeyError in the wiring."""
    program = ncd.load('axis b = 2\ndef f(X: R[b]) -> R[b] {\n'
                       '    block "B" { Y = X }\n    return relu(Y)\n}\n')
    assert [v.name for v in program["f"].ir.inputs] == ["X"]
    accepted('axis b = 2\ndef f(X: R[b]) -> R[b] {\n'
             '    block "B" x2 { Y = X\n X = relu(Y) }\n    return relu(X)\n}\n')


def test_alias_keeps_the_input_name() -> None:
    """`Y = X` once renamed the input X of the signature (and of the generated forward)."""
    program = ncd.load("axis b = 2\ndef f(X: R[b]) -> R[b] {\n    Y = X\n    return relu(Y)\n}\n")
    assert program["f"].signature == "f(X: R[b]) -> R[b]"
    assert "def forward(self, X: torch.Tensor)" in program.compile()


def test_point_free_over_a_failed_definition_reports_only_its_error() -> None:
    with pytest.raises(NcdError) as caught:
        ncd.load("axis b = 2\ndef f(X: R[b]) -> R[b] { return relu(Q) }\ndef g = f ; f\n")
    assert [d.code for d in caught.value.diagnostics] == ["E200"]


def test_parameter_over_a_symbolic_axis_is_a_diagnostic_when_compiling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to be an internal error (exit 3) of the compiler."""
    source = tmp_path / "p.ncd"
    source.write_text("axis x, m = 4\ndef f(X: R[m]) -> R[x] {\n"
                      "    return linear[m -> x](X, W)\n}\n")
    assert main(["check", str(source)]) == 0  # drawing it needs no size
    capsys.readouterr()
    assert main(["compile", str(source)]) == 1
    err = capsys.readouterr().err
    assert "p.ncd:3:30: error[E312]: parameter `W` of `f` has axis `x`" in err
    assert "-D x=64" in err
    assert main(["compile", "-D", "x=5", str(source), "-o", str(tmp_path / "p.py")]) == 0


def test_a_block_whose_results_are_unused_renders() -> None:
    """The layout of a rearrangement that deletes everything once failed (`max()` of
    nothing)."""
    outcome = accepted('axis b = 6\ndef f(X: R[b]) -> R[b] {\n    block "B" {\n'
                       "        Y = relu(X)\n    }\n    return X\n}\n")
    assert "compile" in outcome.stages


def test_composite_symbolic_sizes_are_read_from_input_shapes() -> None:
    """`n = d * e` is one input axis; `q = d - p` differs from an input axis by a constant.
    The compiler once tried to read the separate symbols d, e and s."""
    import torch

    program = ncd.load("axis d, e\naxis n = d * e\n"
                       "def f(X: R[n]) -> R[n] { return layernorm[n](X) }\n")
    X = torch.randn(2, 12)
    torch.testing.assert_close(program.to_torch("f")(X), torch.nn.functional.layer_norm(X, (12,)))
    program = ncd.load("axis s\naxis d = (s - 1) // 2 + 1, p = 2, q = d - p\n"
                       "def f(X: R[d]) -> (R[p], R[q]) { return split[d -> p q](X) }\n")
    first, rest = program.to_torch("f")(torch.arange(9.0))
    assert first.tolist() == [0.0, 1.0] and rest.tolist() == [float(i) for i in range(2, 9)]


def test_parameters_named_like_python_attributes_get_safe_keys() -> None:
    """`__init__` or `__class__` as a parameter once broke `register_parameter`."""
    import torch

    program = ncd.load("axis m = 4\ndef f(X: R[m]) -> R[m] {\n    param __class__: R[m] = ones\n"
                       "    return linear[m -> m](X, __init__) * __class__\n}\n")
    module = program.to_torch("f")
    assert sorted(module.state_dict()) == ["p__class__", "p__init__"]
    assert module(torch.ones(4)).shape == (4,)


def test_a_window_sized_by_nested_floor_divisions_of_a_symbol() -> None:
    """`d12 = (d6 - 3) // 2 + 1` with `d6 = (y - 1) // 3 + 1` an input axis: the compiler
    once tried to read `y` itself; now `(y - 1) // 3` comes from the input's shape."""
    import torch

    program = ncd.load("axis y\naxis d6 = (y - 1) // 3 + 1\naxis d11 = 2\n"
                       "axis d12 = (d6 - 2 * (2 - 1) - 1) // 2 + 1\n"
                       "def f(X: R[d6]) -> R[d12, d11] {\n"
                       "    W[d12, d11] = X[2*d12 + 2*d11]\n    return W\n}\n")
    module = program.to_torch("f")
    for length in (3, 6, 9):
        X = torch.arange(float(length))
        rows = (length - 3) // 2 + 1
        expected = torch.tensor([[X[2 * i + 2 * j] for j in range(2)] for i in range(rows)])
        torch.testing.assert_close(module(X), expected)
