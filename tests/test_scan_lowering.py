"""A scan's lowering: its step inlined, what does not depend on the state hoisted out of the
loop, and a standard LSTM or GRU cell run by PyTorch's fused kernel (compilers/scans.py,
ncd/recurrent_cells.py, ncd/dataflow.py).

Every form is held to `nn.LSTM` / `nn.GRU` (values and gradients of the inputs and of every
parameter, float64, several sizes, with and without extra leading batch dims) and to the
reference interpreter. The loop that `torch.compile` runs instead of the fused kernel is
checked the same way, by making `torch.compiler.is_compiling` answer True. Cells that differ
from the standard ones in one piece must not be fused, and must still compute what they say.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch
from differential import compare_definition
from test_gallery_models import Copy, holds_to_reference, randn
from torch import nn

import ncd
from ncd.recurrent_cells import recognise
from ncd.sizes import ProgramSizes

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
DTYPE = torch.float64


@contextmanager
def the_loop() -> Iterator[None]:
    """Run the branch `torch.compile` runs: the inlined loop instead of the fused kernel."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.compiler, "is_compiling", lambda: True)
        yield


def per_leading(reference, X: torch.Tensor, *states: torch.Tensor):  # type: ignore[no-untyped-def]
    """`reference` of a sequence with one extra leading dim, element by element (the states
    are shared), stacked: what a batch lift of the generated module computes."""
    if X.dim() == 3:
        return reference(X, *states)
    results = [reference(x, *states) for x in X.unbind(0)]
    if isinstance(results[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*results, strict=True))
    return torch.stack(results)


def gates_of(weight: torch.Tensor, gates: int, n: int) -> torch.Tensor:
    """PyTorch's (gates n, width) weight as the gallery cells declare it, R[g, n, width]."""
    return weight.reshape(gates, n, -1)


@pytest.mark.parametrize("mode", ["fused", "loop"])
@pytest.mark.parametrize(("i", "n"), [(3, 4), (5, 2)])
def test_gallery_lstm_is_nn_lstm(mode: str, i: int, n: int) -> None:
    lstm = nn.LSTM(i, n, dtype=DTYPE)
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor, H0: torch.Tensor, C0: torch.Tensor) -> torch.Tensor:
        return per_leading(lambda x, h, c: lstm(x, (h[None], c[None]))[0], X, H0, C0)

    copies = [Copy("lstm_cell.W_ih", lstm.weight_ih_l0, lambda t: gates_of(t, 4, n)),
              Copy("lstm_cell.W_hh", lstm.weight_hh_l0, lambda t: gates_of(t, 4, n)),
              Copy("lstm_cell.b_ih", lstm.bias_ih_l0, lambda t: t.reshape(4, n)),
              Copy("lstm_cell.b_hh", lstm.bias_hh_l0, lambda t: t.reshape(4, n))]
    with the_loop() if mode == "loop" else nullcontext():
        holds_to_reference("lstm", {"i": i, "n": n}, copies, reference,
                           [(randn(5, 2, i), randn(2, n), randn(2, n)),
                            (randn(1, 1, i), randn(1, n), randn(1, n)),
                            (randn(2, 4, 3, i), randn(3, n), randn(3, n))])


@pytest.mark.parametrize("mode", ["fused", "loop"])
@pytest.mark.parametrize(("i", "n"), [(3, 4), (2, 5)])
def test_gallery_gru_is_nn_gru(mode: str, i: int, n: int) -> None:
    gru = nn.GRU(i, n, dtype=DTYPE)
    with torch.no_grad():
        for parameter in gru.parameters():
            parameter.copy_(randn(*parameter.shape))

    def reference(X: torch.Tensor, H0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def one(x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            Y, last = gru(x, h[None])
            return Y, last[0]
        return per_leading(one, X, H0)  # type: ignore[no-any-return]

    copies = [Copy("gru_cell.W_ih", gru.weight_ih_l0, lambda t: gates_of(t, 3, n)),
              Copy("gru_cell.W_hh", gru.weight_hh_l0, lambda t: gates_of(t, 3, n)),
              Copy("gru_cell.b_ih", gru.bias_ih_l0, lambda t: t.reshape(3, n)),
              Copy("gru_cell.b_hh", gru.bias_hh_l0, lambda t: t.reshape(3, n))]
    with the_loop() if mode == "loop" else nullcontext():
        holds_to_reference("gru", {"i": i, "n": n}, copies, reference,
                           [(randn(5, 2, i), randn(2, n)), (randn(1, 3, i), randn(3, n)),
                            (randn(2, 4, 3, i), randn(3, n))])


def test_the_fused_kernel_reads_the_parameters_in_place() -> None:
    """The gallery cells declare their weights as PyTorch keeps them, `R[g, n, in]`: they
    reach the kernel as contiguous views of the parameters (nothing to copy, in the generated
    code or in the kernel), and the state dict keeps the step's keys."""
    source = ncd.load(GALLERY / "lstm.ncd").compile("lstm")
    assert "torch.lstm(" in source
    assert 'lstm_cell._parameters["W_ih"].reshape(256, 32),' in source
    assert 'lstm_cell._parameters["W_hh"].reshape(256, 64),' in source
    module = ncd.load(GALLERY / "lstm.ncd").to_torch("lstm")
    assert sorted(module.state_dict()) == ["lstm_cell.W_hh", "lstm_cell.W_ih",
                                           "lstm_cell.b_hh", "lstm_cell.b_ih"]
    for W in (module.lstm_cell.W_ih, module.lstm_cell.W_hh):
        matrix = W.reshape(256, -1)
        assert matrix.data_ptr() == W.data_ptr() and matrix.is_contiguous()
    # contiguous in the declared layout, as FSDP and parameters_to_vector require
    assert all(parameter.is_contiguous() for parameter in module.parameters())
    gru = ncd.load(GALLERY / "gru.ncd").compile("gru")
    assert 'gru_cell._parameters["W_ih"].reshape(192, 32),' in gru


def test_weights_laid_out_as_linear_makes_them_reach_the_kernel_as_views() -> None:
    """Weights that `linear` creates, `R[in, g, n]`, reach the kernel as views read
    transposed (the kernel lays them out in rows at each call), and the parameters stay
    contiguous in their declared layout."""
    program = ncd.load(lstm_text())
    source = program.compile("lstm")
    assert 'cell._parameters["W_ih"].permute(1, 2, 0).reshape(16, 3),' in source
    assert 'cell._parameters["W_hh"].permute(1, 2, 0).reshape(16, 4),' in source
    module = program.to_torch("lstm")
    W = module.cell.W_ih
    assert W.shape == (3, 4, 4)
    assert W.permute(1, 2, 0).reshape(16, 3).data_ptr() == W.data_ptr()
    assert all(parameter.is_contiguous() for parameter in module.parameters())


def loop_of(source: str, definition: str) -> tuple[str, str]:
    """The code of `definition`'s forward before its inlined scan loop (from the `else:` of
    the test for a replaced or hooked step on), and the loop's body."""
    forward = source.split(f"class {definition}(nn.Module):")[1].split("def forward")[1]
    before, loop = re.split(r"\n\s*for t_index\w* in range\(.*inlined.*\n", forward,
                            maxsplit=1)
    before = before.split("# a replaced, wrapped or hooked step")[1].split("\n        else:")[1]
    return before, loop.split("torch.stack")[0].rsplit("\n", 1)[0]


def test_the_lru_computes_its_input_terms_and_decay_before_the_loop() -> None:
    """Only the state's own update stays in the loop: the input term and λ, γ (functions of
    the parameters alone) are computed once."""
    before, loop = loop_of(ncd.load(GALLERY / "lru.ncd").compile("lru"), "Lru")
    assert 'torch.exp(lru_step._parameters["nu_log"])' in before
    assert "torch.sqrt(" in before
    assert "self.lru_step(" not in loop and "torch.exp" not in loop
    # one slice of γ U; its sum with H Λ, one call without autograd (`torch.addcmul`), one
    # statement with it; the new state
    assert loop.count(" = ") == 4 and "torch.addcmul(" in loop, loop


def test_the_loop_of_a_fused_cell_projects_the_inputs_once() -> None:
    source = ncd.load(GALLERY / "lstm.ncd").compile("lstm")
    before, loop = loop_of(source, "Lstm")
    assert 'lstm_cell._parameters["W_ih"]' in before.split("else:  # torch.compile")[1]
    assert 'lstm_cell._parameters["W_ih"]' not in loop
    assert 'lstm_cell._parameters["W_hh"]' in loop


LSTM = """
axis t
axis b
axis i = 3, n = 4, g = 4
def cell(H: R[n], C: R[n], X: R[i]) -> (R[n], R[n], R[n]) {{
    Z = {input_map} + linear[n -> g n, bias](H, W_hh, b_hh)
    Z0[n] = Z[0, n]
    Z1[n] = Z[1, n]
    Z2[n] = Z[2, n]
    Z3[n] = Z[3, n]
    I = sigmoid(Z0)
    F = sigmoid(Z1)
    G = {g_function}(Z{g_row})
    O = sigmoid(Z{o_row})
    C2 = F * C + I * G
    H2 = O * tanh(C2)
    return {returned}
}}
def lstm(X: R[t, b, i], H0: R[b, n], C0: R[b, n]) -> (R[b, n], R[b, n], R[t, b, n]) {{
    H, C, Y = scan[t](cell, H0, C0, X)
    return H, C, Y
}}
"""

STANDARD = {"input_map": "linear[i -> g n, bias](X, W_ih, b_ih)", "g_function": "tanh",
            "g_row": 2, "o_row": 3, "returned": "H2, C2, H2"}


def lstm_text(**changes: object) -> str:
    return LSTM.format(**{**STANDARD, **changes})


VARIANTS = {
    "gates g and o swapped": {"g_row": 3, "o_row": 2},
    "no input bias": {"input_map": "linear[i -> g n](X, W_ih)"},
    "sigmoid candidate": {"g_function": "sigmoid"},
    "cell state as output": {"returned": "H2, C2, C2"},
    "states swapped": {"returned": "C2, H2, H2"},
}


def test_the_standard_lstm_text_is_fused() -> None:
    program = ncd.load(lstm_text())
    assert "torch.lstm(" in program.compile("lstm")
    report = compare_definition(program.ir, "lstm")
    assert report.compared and not report.findings, report.findings


RETURNS = {"H": "R[b, n]", "C": "R[b, n]", "Y": "R[t, b, n]", "C, Y": "(R[b, n], R[t, b, n])"}


@pytest.mark.parametrize("returned", sorted(RETURNS))
def test_only_the_final_states_read_are_taken_from_the_kernel(returned: str) -> None:
    """A final state the caller deletes is not read out of the kernel's results (in the
    common form nor the general one); those it returns are, and agree with the interpreter
    in both branches."""
    text = lstm_text().replace("-> (R[b, n], R[b, n], R[t, b, n])", f"-> {RETURNS[returned]}") \
        .replace("return H, C, Y", f"return {returned}")
    program = ncd.load(text)
    source = program.compile("lstm")
    assert "torch.lstm(" in source
    states_read = sum(name in ("H", "C") for name in returned.split(", "))
    assert len(re.findall(r"= cell_last\w*\[0\]", source)) == states_read  # the common form
    assert len(re.findall(r"= cell_last\w*\.reshape\(", source)) == states_read  # general
    for context in (nullcontext(), the_loop()):
        with context:
            report = compare_definition(program.ir, "lstm")
        assert report.compared and not report.findings, report.findings


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_cell_that_differs_in_one_piece_is_not_fused(variant: str) -> None:
    program = ncd.load(lstm_text(**VARIANTS[variant]))
    step = program.ir.definition("cell")
    assert recognise(step, 2, ProgramSizes(program.ir.axes)) is None
    source = program.compile("lstm")
    # inlined: the step's submodule is called only where it is replaced or hooked
    assert "torch.lstm(" not in source and "scan over t, cell inlined" in source
    assert source.count("self.cell(") == 1
    report = compare_definition(program.ir, "lstm")
    assert report.compared and not report.findings, report.findings


GRU_VARIANT = (GALLERY / "gru.ncd").read_text().replace(
    "H2 = (1 - Zt) * Nt + Zt * H", "H2 = Zt * Nt + (1 - Zt) * H")


def test_a_gru_that_keeps_the_other_share_is_not_fused() -> None:
    program = ncd.load(GRU_VARIANT, sizes={"i": 2, "n": 3})
    source = program.compile("gru")
    assert "torch.gru(" not in source
    report = compare_definition(program.ir, "gru")
    assert report.compared and not report.findings, report.findings


@pytest.mark.parametrize("name", ["lstm", "gru", "lru"])
def test_gallery_scans_agree_with_the_interpreter_in_both_branches(name: str) -> None:
    program = ncd.load(GALLERY / f"{name}.ncd", sizes={"n": 3, "i": 2} if name != "lru"
                       else {"m": 2, "n": 3}).ir
    for context in (nullcontext(), the_loop()):
        with context:
            report = compare_definition(program, name)
        assert report.compared and not report.findings, report.findings


def test_states_with_leading_dims_of_their_own_broadcast_as_in_the_loop() -> None:
    """The kernel's batch is the sequence's and the states' leading dims broadcast, as the
    loop broadcasts them (a state may have more leading dims than the sequence)."""
    module = ncd.load(GALLERY / "lstm.ncd", sizes={"i": 3, "n": 4}).to_torch("lstm").to(DTYPE)
    cases = [(randn(5, 2, 3), randn(6, 2, 4), randn(2, 4)),
             (randn(2, 5, 2, 3), randn(2, 4), randn(1, 2, 4))]
    for X, H0, C0 in cases:
        fused = module(X, H0, C0)
        with the_loop():
            loop = module(X, H0, C0)
        assert fused.shape == loop.shape
        torch.testing.assert_close(fused, loop, atol=1e-12, rtol=1e-10)


def test_a_fused_scan_without_lifted_axes() -> None:
    """`X: R[t, i]`, `H0: R[n]`: the kernel's batch is the leading dims alone (none, or the
    batch-lift law's)."""
    text = lstm_text().replace("R[t, b, i]", "R[t, i]").replace("R[b, n]", "R[n]") \
        .replace("R[t, b, n]", "R[t, n]")
    program = ncd.load(text)
    assert "torch.lstm(" in program.compile("lstm")
    for context in (nullcontext(), the_loop()):
        with context:
            report = compare_definition(program.ir, "lstm")
        assert report.compared and not report.findings, report.findings


@pytest.mark.parametrize("name", ["lstm", "lru"])
def test_a_hooked_or_replaced_step_is_called_at_every_step(name: str) -> None:
    """The step runs in place (fused, or written into the loop) only for its submodule as
    generated: a forward hook on it sees every step, and a replaced step (another class whose
    forward differs) is the one that runs, as it would if the loop called it each time."""
    sizes = {"i": 3, "n": 4} if name == "lstm" else {"m": 2, "n": 3}
    module = ncd.load(GALLERY / f"{name}.ncd", sizes=sizes).to_torch(name).to(DTYPE)
    step_name = "lstm_cell" if name == "lstm" else "lru_step"
    step = getattr(module, step_name)
    inputs = [randn(5, 2, 3), randn(2, 4), randn(2, 4)] if name == "lstm" else [randn(5, 2)]
    expected = module(*inputs)
    seen: list[object] = []
    handle = step.register_forward_hook(lambda _, args, out: seen.append(out))
    torch.testing.assert_close(module(*inputs), expected)
    assert len(seen) == 5  # one call per step of the scanned axis t
    handle.remove()

    class Doubled(type(step)):  # type: ignore[misc]
        def forward(self, *args: torch.Tensor):  # type: ignore[no-untyped-def]
            return tuple(2 * y for y in super().forward(*args))

    replaced = Doubled()
    replaced.load_state_dict(step.state_dict())
    setattr(module, step_name, replaced.to(DTYPE))
    got = module(*inputs)
    assert not torch.allclose(got, expected)  # the replacement ran
    setattr(module, step_name, step)
    torch.testing.assert_close(module(*inputs), expected)
