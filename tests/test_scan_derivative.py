"""The reverse of a scan (`ncd.scan_derivative`): a scan run in the opposite direction
(`ir.Scan.reverse`), whose forward block saves the state entering each step. The gallery's
recurrent layers are checked against `torch.autograd` in tests/test_derivative.py; here: the
reverse scan itself (interpreter, compiled module, JSON), the shape of the backward definition
(saved wires, helper definitions, call sites), a scan inside a called definition, and a
compiled scan whose step gives back the state it reads."""

from __future__ import annotations

from pathlib import Path

import torch

import ncd
from ncd import ir
from ncd.api import Program
from ncd.derivative import backward_definition
from ncd.semantics import Interpreter

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
SIZES = {"t": 4, "b": 2}

DELAY = """axis t, b
axis n = 3
def shift(H: R[n], X: R[n]) -> (R[n], R[n]) {
    \"\"\"The next state is the input; the output is the state read.\"\"\"
    return X, H
}
def delayed(H0: R[b, n], X: R[t, b, n]) -> (Last: R[b, n], Prev: R[t, b, n]) {
    Last, Prev = scan[t](shift, H0, X)
    return Last, Prev
}
"""

NESTED = """axis t, b
axis m = 3, n = 4
def cell(H: R[n], X: R[m]) -> (R[n], R[n]) {
    param a: R[n] = normal(0, 1)
    H2 = tanh(linear[m -> n, bias](X, W, c) + a * H)
    return H2, H2 * H2
}
def rnn(X: R[t, b, m], H0: R[b, n]) -> (R[b, n], R[t, b, n]) {
    Last, Ys = scan[t](cell, H0, X)
    return Last, Ys
}
def model(X: R[t, b, m], H0: R[b, n]) -> R[b, n] {
    Last, Ys = rnn(X, H0)
    S[b, n] = sum(t) Ys[t, b, n]
    return Last * S
}
"""


def _scans(term: ir.Term) -> list[ir.Scan]:
    return [t for t in ir.walk(term) if isinstance(t, ir.Scan)]


def test_a_compiled_scan_whose_step_gives_back_its_state_equals_the_interpreter() -> None:
    """The per-step output is the state the step reads, not the one it gives on."""
    loaded = ncd.load(DELAY)
    H0 = torch.randn(2, 3, dtype=torch.float64)
    X = torch.randn(4, 2, 3, dtype=torch.float64)
    last, prev = loaded["delayed"].to_torch(dtype=torch.float64)(H0, X)
    reference = Interpreter(loaded.ir, SIZES, {}).run("delayed", [H0, X])
    torch.testing.assert_close(prev, torch.cat([H0[None], X[:-1]]), rtol=0, atol=0)
    torch.testing.assert_close(last, X[-1], rtol=0, atol=0)
    for found, expected in zip((last, prev), reference, strict=True):
        torch.testing.assert_close(found, expected, rtol=0, atol=0)


def test_a_reverse_scan_runs_from_the_last_index_in_both_back_ends_and_survives_json() -> None:
    loaded = ncd.load(DELAY)
    forward = loaded.ir.definition("delayed")
    (scan,) = _scans(forward.body)
    assert "reverse" not in scan.model_dump()  # a forward scan's JSON is as before
    body = forward.body.model_copy(update={"terms": tuple(
        t.model_copy(update={"reverse": True}) if isinstance(t, ir.Scan) else t
        for t in forward.body.terms)}) if isinstance(forward.body, ir.Composed) else \
        forward.body.model_copy(update={"reverse": True})
    changed = loaded.ir.model_copy(update={"definitions": tuple(
        d.model_copy(update={"body": body}) if d.name == "delayed" else d
        for d in loaded.ir.definitions)})
    assert ir.Program.model_validate_json(changed.model_dump_json()) == changed
    H0 = torch.randn(2, 3, dtype=torch.float64)
    X = torch.randn(4, 2, 3, dtype=torch.float64)
    # carry[l] = X[l + 1]: the output at l is the state read there, H0 at the last index.
    expected = (X[0], torch.cat([X[1:], H0[None]]))
    module = Program(changed, loaded.sources, None)["delayed"].to_torch(dtype=torch.float64)
    source = Program(changed, loaded.sources, None)["delayed"].compile()
    assert "reversed(range(" in source
    for found, reference, wanted in zip(module(H0, X), Interpreter(changed, SIZES, {}).run(
            "delayed", [H0, X]), expected, strict=True):
        torch.testing.assert_close(found, wanted, rtol=0, atol=0)
        torch.testing.assert_close(reference, wanted, rtol=0, atol=0)


def test_the_backward_definition_of_lstm_saves_the_states_and_scans_back() -> None:
    program = ncd.load(GALLERY / "lstm.ncd", sizes={"i": 3, "n": 4}).ir
    made, callees = backward_definition(program, "lstm")
    assert [c.definition.name for c in callees] == ["lstm_cell_grad"]
    assert [d.name for d in made.helpers] == ["lstm_cell_saving", "lstm_cell_grad_step"]
    # The states entering each step are saved wires, stacked along t.
    saved = {v.name: v.array.text() for v in made.saved}
    assert saved["H0_saved"] == saved["C0_saved"] == "R[t, b, n]"
    forward_scan, backward_scan = _scans(made.definition.body)
    assert not forward_scan.reverse and backward_scan.reverse
    assert isinstance(forward_scan.step, ir.Broadcasted) and \
        isinstance(forward_scan.step.op, ir.CallOp)
    assert (forward_scan.step.op.definition, forward_scan.step.op.instance) == \
        ("lstm_cell_saving", "lstm_cell_forward")
    assert isinstance(backward_scan.step, ir.Broadcasted) and \
        isinstance(backward_scan.step.op, ir.CallOp)
    # The reverse scan's step runs at the forward scan's call site: the same parameters.
    assert (backward_scan.step.op.definition, backward_scan.step.op.instance) == \
        ("lstm_cell_grad_step", "lstm_cell")
    assert dict(made.aliases)["lstm_cell_forward"] == "lstm_cell"
    step = next(d for d in made.helpers if d.name == "lstm_cell_grad_step")
    assert [v.name for v in step.inputs] == ["dY1", "dY2", "H", "C", "X", "dY3"]
    assert backward_scan.carries == 2
    # the parameters in the order the cell declares or first uses them
    assert made.gradient_of == ("X", "H0", "C0", "lstm_cell.W_ih", "lstm_cell.W_hh",
                                "lstm_cell.b_ih", "lstm_cell.b_hh")


def test_the_lstm_forward_keeps_its_fused_kernel_and_its_backward_diagram_validates() -> None:
    from ncd.renderers import RenderOptions, diagram

    loaded = ncd.load(GALLERY / "lstm.ncd", sizes={"i": 3, "n": 4, "b": 2, "t": 2})
    assert "torch.lstm(" in loaded["lstm"].compile()
    back = loaded.grad("lstm")
    assert "torch.lstm(" not in back.compile()
    assert diagram(back.program.ir, back.name, RenderOptions()).validate() == []


def test_a_scan_inside_a_called_definition_equals_autograd() -> None:
    loaded = ncd.load(NESTED)
    torch.manual_seed(0)
    forward = loaded["model"].to_torch(dtype=torch.float64)
    backward = loaded.to_torch_grad("model", forward, dtype=torch.float64)
    made, _ = backward_definition(loaded.ir, "model")
    assert [d.name for d in made.helpers] == ["cell_saving", "cell_grad_step"]
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(3, 2, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    H0 = torch.randn(2, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    dY = torch.randn(2, 4, dtype=torch.float64, generator=generator)
    parameters = dict(forward.named_parameters())
    wrt = [X, H0, *(parameters[key] for key in made.gradient_of[2:])]
    expected = torch.autograd.grad(forward(X, H0), wrt, dY)
    with torch.no_grad():
        found = backward(X.detach(), H0.detach(), dY)
    assert len(found) == len(expected) == len(made.gradient_of)
    for role, actual, wanted in zip(made.gradient_of, found, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-10, atol=1e-10, msg=role)


def test_the_backward_of_a_backward_with_a_scan_equals_autograd() -> None:
    """The reverse of a reverse scan is a scan forward again; the forward block's call sites
    are numbered (`cell_forward_2`), so that each has a module of its own."""
    first = ncd.load(NESTED).grad("rnn").program
    torch.manual_seed(0)
    forward = first["rnn_grad"].to_torch(dtype=torch.float64)
    backward = first.to_torch_grad("rnn_grad", forward, dtype=torch.float64)
    made, _ = backward_definition(first.ir, "rnn_grad")
    assert "cell_forward_2" in dict(made.aliases)
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
              for shape in ((2, 2, 3), (2, 4), (2, 4), (2, 2, 4))]
    outputs = forward(*inputs)
    seeds = [torch.randn(o.shape, dtype=torch.float64, generator=generator) for o in outputs]
    parameters = dict(forward.named_parameters())
    wrt = [*inputs, *(parameters[key] for key in made.gradient_of[len(inputs):])]
    expected = torch.autograd.grad(outputs, wrt, seeds, allow_unused=True)
    with torch.no_grad():
        found = backward(*(x.detach() for x in inputs), *seeds)
    for role, actual, wanted in zip(made.gradient_of, found, expected, strict=True):
        wanted = torch.zeros_like(actual) if wanted is None else wanted
        torch.testing.assert_close(actual, wanted, rtol=1e-10, atol=1e-10, msg=role)
