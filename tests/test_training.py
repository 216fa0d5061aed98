"""Training set-ups (`train NAME { model: ...  loss: ...  optimiser: ... }`): checked with
diagnostics, compiled to a training step held to `torch.optim` and `torch.nn.functional`, and
run by `ncd train` on the Iris data and on a synthetic image task."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, assert_generated_code_is_clean, err, ok

import ncd
from ncd.cli import main
from ncd.learning import LOSSES, OPTIMISERS

IRIS = ROOT / "gallery" / "iris.ncd"
IRIS_DATA = ROOT / "data" / "iris.csv"
BARS = ROOT / "tests" / "models" / "bars.ncd"

MODEL = """axis b
axis m = 4, f = 5, n = 3, x = 2
def net(X: R[b, m]) -> R[b, n] {
    H = tanh(linear[m -> f, bias](X, W_in, b_in))
    return linear[f -> n, bias](H, W_out, b_out)
}
def wide(X: R[b, m]) -> R[b, n, x] {
    H = tanh(linear[m -> f](X, W_in))
    return linear[f -> n x](H, W_out)
}
"""


def setup(body: str, name: str = "t") -> str:
    return MODEL + f"train {name} {{\n    {body}\n}}\n"


# ---- the training step against torch.optim ------------------------------------------------

# Hyper-parameters away from the defaults, weight decay included, so that every term counts.
HYPER = {
    "sgd": "lr = 0.1, weight_decay = 0.01",
    "momentum": "lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 0.01",
    "nesterov": "lr = 0.05, momentum = 0.8, weight_decay = 0.01",
    "adagrad": "lr = 0.1, lr_decay = 0.01, weight_decay = 0.01, "
               "initial_accumulator_value = 0.1, eps = 1e-8",
    "adam": "lr = 0.01, betas = (0.8, 0.99), eps = 1e-6, weight_decay = 0.01",
    "adamw": "lr = 0.01, betas = (0.85, 0.995), weight_decay = 0.1",
}


# The optimisers and losses of reals; those over the Booleans (`flip`, `xor_error`) have no
# counterpart in torch.optim: tests/test_boolean.py checks them.
REAL_OPTIMISERS = sorted(name for name, d in OPTIMISERS.items() if d.field == "R")
REAL_LOSSES = sorted(name for name, d in LOSSES.items() if d.field == "R")


def test_every_optimiser_is_tested() -> None:
    assert set(HYPER) == set(REAL_OPTIMISERS)


def twenty_steps_against_torch_optim(program: ncd.Program, shape: tuple[int, ...],
                                     steps: int = 20) -> None:
    """Twenty steps (or `steps`) of the set-up `t` (float64) and of `torch.optim` on a copy of
    its model, on the same random batches of inputs of `shape`: the same losses and parameters
    to 1e-6."""
    training = program.ir.training("t")
    declaration = OPTIMISERS[training.optimiser.name]
    step = program.training_step("t", dtype=torch.float64)
    reference = type(step.model)().double()
    reference.load_state_dict(step.model.state_dict())
    hyper = {h.name: h.values[0] if len(h.values) == 1 else tuple(h.values)
             for h in training.optimiser.hyper}
    optimiser = getattr(torch.optim, declaration.torch_class)(
        reference.parameters(), **hyper, **dict(declaration.torch_fixed))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        X = torch.randn(*shape, generator=generator, dtype=torch.float64)
        T = torch.randint(0, 3, (shape[0],), generator=generator)
        loss = step(X, T)
        optimiser.zero_grad()
        expected = F.cross_entropy(reference(X), T)
        expected.backward()
        optimiser.step()
        assert torch.allclose(loss, expected, rtol=0, atol=1e-6)
    for (key, ours), theirs in zip(step.model.named_parameters(), reference.parameters(),
                                   strict=True):
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-6), key
        assert not torch.equal(ours, dict(type(step.model)().double().named_parameters())[key])
    # The optimiser's state is in the step's state_dict: one array per parameter and name.
    keys = set(step.state_dict())
    for spec in declaration.state:
        assert {f"{spec.name.replace('sum', 'sum_1')}.{k.replace('.', '_')}"
                for k, _ in step.model.named_parameters()} <= keys
    assert float(step.step) == steps


@pytest.mark.parametrize("name", REAL_OPTIMISERS)
def test_twenty_steps_equal_torch_optim(name: str) -> None:
    """The step's gradients come from the model's compiled backward definition here."""
    program = ncd.load(setup(f"model: net  loss: cross_entropy[n]  "
                             f"optimiser: {name}({HYPER[name]})"))
    assert "torch.autograd" not in program.compile("t")
    twenty_steps_against_torch_optim(program, (6, 4))


# A model with a scan whose initial state is computed from the input: its backward definition
# runs a reverse scan.
SCAN_MODEL = """axis b
axis t = 3, m = 4, n = 3
def cell(H: R[n], U: R[n]) -> (R[n], R[n]) {
    H2 = tanh(H + U)
    return H2, H2
}
def rnn(X: R[b, t, m]) -> R[b, n] {
    U = linear[m -> n, bias](X, W_in, b_in)
    H0 = mean[t](U)
    Last, Hs = scan[t](cell, H0, U)
    return Last
}
train t { model: rnn  loss: cross_entropy[n]  optimiser: adam(lr = 0.01, weight_decay = 0.01) }
"""

# A model calling a definition twice: the backward module recomputes each call at a site of
# its own (`inner_forward`), whose parameters are tied to the forward call site's.
CALLS_MODEL = """axis b
axis m = 4, f = 5, n = 3
def inner(X: R[b, m]) -> R[b, f] {
    return tanh(linear[m -> f, bias](X, W, c))
}
def outer(X: R[b, m]) -> R[b, n] {
    H = inner(X)
    G = inner(relu(X))
    return linear[f -> n](H * G, W_out)
}
train t { model: outer  loss: cross_entropy[n]  optimiser: momentum(lr = 0.1, momentum = 0.9) }
"""


DROPOUT_MODEL = """axis b
axis m = 4, n = 3
def net(X: R[b, m]) -> R[b, n] {
    return linear[m -> n, bias](dropout[p=0.5](X), W, c)
}
train t { model: net  loss: cross_entropy[n]  optimiser: sgd(lr = 0.1) }
"""


def test_a_model_with_a_scan_uses_its_compiled_backward_and_equals_torch_optim() -> None:
    program = ncd.load(SCAN_MODEL)
    source = program.compile("t")
    assert "torch.autograd" not in source and "model_gradients" not in source
    assert "class CellGradStep(nn.Module):" in source and "reversed(range(" in source
    twenty_steps_against_torch_optim(program, (6, 3, 4))


def test_a_model_calling_definitions_uses_their_compiled_backward() -> None:
    program = ncd.load(CALLS_MODEL)
    source = program.compile("t")
    assert "torch.autograd" not in source and "class OuterGrad(" in source
    assert '{"inner_forward": "inner", "inner_2_forward": "inner_2"}' in source
    twenty_steps_against_torch_optim(program, (6, 4))


def test_a_model_with_dropout_falls_back_to_autograd() -> None:
    """The backward definition is the evaluation-mode derivative: a step in training mode,
    whose forward pass draws dropout masks, takes its gradients from torch.autograd."""
    program = ncd.load(DROPOUT_MODEL)
    source = program.compile("t")
    assert "`net` draws dropout masks" in source and "def model_gradients(" in source
    assert len(re.findall(r"torch\.autograd\.\w+\(", source)) == 1
    step = program.training_step("t")
    assert torch.isfinite(step(torch.randn(4, 4), torch.tensor([0, 1, 2, 0])))


def test_the_iris_step_runs_the_compiled_backward_on_the_models_tensors() -> None:
    program = ncd.load(IRIS)
    source = program.compile("fit_iris")
    assert "torch.autograd" not in source and "model_gradients" not in source
    assert "class IrisMlpGrad(nn.Module):" in source
    torch.manual_seed(3)
    step = program.training_step("fit_iris", dtype=torch.float64)
    drawn = torch.rand(1)
    torch.manual_seed(3)
    type(step.model)()
    assert torch.equal(drawn, torch.rand(1))  # the backward module draws no random numbers
    backward = step.backward
    # The backward module's tensors are the model's own, and stay so across steps; it is no
    # part of the step's state (saved once, under `model.`).
    for key, tensor in step.model.named_parameters():
        assert backward.get_parameter(key) is tensor, key
    assert not any(key.startswith("backward") for key in step.state_dict())
    before = {k: v.clone() for k, v in step.model.named_parameters()}
    X = torch.randn(5, 4, dtype=torch.float64)
    T = torch.tensor([0, 1, 2, 1, 0])
    loss = step(X, T)
    # One step of Adam moves each entry by about lr against the sign of its gradient: the
    # gradients of torch.autograd at the parameters before the step.
    reference = type(step.model)().double()
    reference.load_state_dict(before)
    expected = F.cross_entropy(reference(X), T)
    gradients = torch.autograd.grad(expected, list(reference.parameters()))
    assert torch.allclose(loss, expected, rtol=0, atol=1e-12)
    for (key, after), gradient in zip(step.model.named_parameters(), gradients, strict=True):
        moved = before[key] - after
        assert backward.get_parameter(key) is after
        big = gradient.abs() > 1e-6
        assert torch.equal(torch.sign(moved[big]), torch.sign(gradient[big])), key


SCALED = """axis b
axis m = 3, n = 2
def scaled(X: R[b, m]) -> R[b, n] {
    buffer s: R[n] = ones
    return linear[m -> n](X, W) * s
}
train fit {
    model: scaled
    loss: mse
    optimiser: sgd(lr = 0.1)
}
"""


def test_the_backward_module_follows_the_model_through_a_conversion() -> None:
    """`.double()` (as `.to(device)`) gives the model new buffers: the backward module reads
    those, so a step after the buffer changes is still gradient descent on the model."""
    step = ncd.load(SCALED).training_step("fit").double()
    model = step.model
    assert step.backward.get_buffer("s") is model.s and model.s.dtype == torch.float64
    with torch.no_grad():
        model.s.fill_(3.0)
    X = torch.randn(4, 3, dtype=torch.float64)
    T = torch.randn(4, 2, dtype=torch.float64)
    W = model.W.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.mse_loss(X @ W * model.s, T), [W])
    step(X, T)
    torch.testing.assert_close(model.W.detach(), W.detach() - 0.1 * gradient, rtol=0,
                               atol=1e-12)


# ---- each loss: its value and gradient against torch.nn.functional ------------------------

LOSS_CASES = {
    "mse": ("net", "mse", lambda out, t: F.mse_loss(out, t)),
    "cross_entropy": ("wide", "cross_entropy[n]", lambda out, t: F.cross_entropy(out, t)),
    "bce_with_logits": ("net", "bce_with_logits",
                        lambda out, t: F.binary_cross_entropy_with_logits(out, t)),
}


def test_every_loss_is_tested() -> None:
    assert set(LOSS_CASES) == set(REAL_LOSSES)


@pytest.mark.parametrize("name", REAL_LOSSES)
def test_loss_and_its_gradient_equal_torch(name: str) -> None:
    """One step of plain gradient descent with lr 1 moves each parameter by minus its gradient:
    the loss and the gradient written out agree with autograd through PyTorch's loss."""
    model, loss, reference_loss = LOSS_CASES[name]
    program = ncd.load(setup(f"model: {model}  loss: {loss}  optimiser: sgd(lr = 1.0)"))
    step = program.training_step("t", dtype=torch.float64)
    before = {k: v.clone() for k, v in step.model.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    if name == "cross_entropy":  # the class axis in the middle of R[b, n, x]: labels N[3][b, x]
        T = torch.randint(0, 3, (5, 2), generator=generator)
    elif name == "mse":
        T = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    else:
        T = torch.rand(5, 3, generator=generator, dtype=torch.float64)
    reference = type(step.model)().double()
    reference.load_state_dict(step.model.state_dict())
    expected = reference_loss(reference(X), T)
    gradients = torch.autograd.grad(expected, list(reference.parameters()))
    loss = step(X, T)
    assert torch.allclose(loss, expected, rtol=0, atol=1e-12)
    for (key, after), gradient in zip(step.model.named_parameters(), gradients, strict=True):
        assert torch.allclose(before[key] - after, gradient, rtol=0, atol=1e-12), key


# ---- the IR: state wires, defaults, the program's JSON --------------------------------------


def test_the_ir_holds_parameters_state_wires_and_defaults() -> None:
    program = ok(setup("model: net  loss: cross_entropy[n]  optimiser: adagrad(lr = 0.5, "
                       "initial_accumulator_value = 0.25)"))
    training = program.training("t")
    assert [p.name for p in training.params] == ["W_in", "b_in", "W_out", "b_out"]
    assert [(w.name, w.parameter, w.init) for w in training.state] == [
        ("sum", "W_in", 0.25), ("sum", "b_in", 0.25), ("sum", "W_out", 0.25),
        ("sum", "b_out", 0.25), ("step", None, 0.0)]
    assert training.state[0].array == training.params[0].array
    hyper = {h.name: h.values for h in training.optimiser.hyper}
    assert hyper == {"lr": (0.5,), "lr_decay": (0.0,), "weight_decay": (0.0,),
                     "initial_accumulator_value": (0.25,), "eps": (1e-10,)}
    assert training.loss.target.text() == "N[3][b]"
    assert ncd.ir.Program.model_validate_json(program.model_dump_json()) == program


def test_defaults_are_those_of_torch_optim() -> None:
    import inspect

    for declaration in (OPTIMISERS[name] for name in REAL_OPTIMISERS):
        signature = inspect.signature(getattr(torch.optim, declaration.torch_class))
        for spec in declaration.hyper:
            if spec.default is None:
                continue
            default = signature.parameters[spec.name].default
            assert (default if isinstance(default, tuple) else (default,)) == spec.default, (
                declaration.name, spec.name)


def test_a_program_without_training_has_no_trainings_key() -> None:
    assert "trainings" not in ok(MODEL).model_dump_json()


# ---- diagnostics ----------------------------------------------------------------------------

BAD = [
    ("model: nett  loss: mse  optimiser: sgd()", "E202", "unknown model `nett`",
     "did you mean `net`?"),
    ("model: net  loss: cross_entropy[m]  optimiser: sgd()", "E315",
     "the class axis `m` of `cross_entropy` is not an axis of the model's output R[b, n]",
     "cross_entropy[n]"),
    ("model: net  loss: cross_entropy  optimiser: sgd()", "E315",
     "names one class axis", "cross_entropy[n]"),
    ("model: net  loss: crossentropy[n]  optimiser: sgd()", "E315", "unknown loss",
     "did you mean `cross_entropy`?"),
    ("model: net  loss: mse  optimiser: adamm()", "E315", "unknown optimiser `adamm`",
     "did you mean `adam`?"),
    ("model: net  loss: mse  optimiser: adam(learning_rate = 0.1)", "E315",
     "the optimiser `adam` has no hyper-parameter `learning_rate`", "`lr`"),
    ("model: net  loss: mse  optimiser: sgd(momentum = 0.9)", "E315",
     "no hyper-parameter `momentum`", "optimiser: momentum(momentum = 0.9)"),
    ("model: net  loss: mse  optimiser: momentum(lr = 0.1)", "E315",
     "the optimiser `momentum` needs `momentum`", "momentum = 0.9"),
    ("model: net  loss: mse  optimiser: adam(betas = 0.9)", "E315",
     "`betas` of `adam` is a tuple of 2 numbers", None),
    ("model: net  loss: mse  optimiser: adam(lr = -1)", "E315", "`lr` must be at least 0",
     None),
    ("model: net  loss: mse  optimiser: adam(lr = m)", "E315", "`lr` is a number", None),
    ("model: net  loss: mse", "E315", "names no `optimiser`", None),
    ("model: net  loss: mse  optimizer: sgd()", "E315", "has no field `optimizer`",
     "did you mean `optimiser`?"),
    ("model: net[n]  loss: mse  optimiser: sgd()", "E315", "takes no axes", None),
]


@pytest.mark.parametrize("body, code, message, hint", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_set_ups_say_what_is_wrong(body: str, code: str, message: str,
                                       hint: str | None) -> None:
    diagnostic = err(setup(body), code)
    assert diagnostic.span is not None and diagnostic.span.line > 9
    assert message in diagnostic.message
    if hint is not None:
        assert diagnostic.hint is not None and hint in diagnostic.hint


def test_a_model_must_batch_on_its_first_axis() -> None:
    source = "axis m = 4\ndef f(X: R[m]) -> R[m] { return relu(X) }\n" \
        "train t { model: f  loss: mse  optimiser: sgd() }\n"
    diagnostic = err(source, "E315", at="3:18")
    assert "batch axis" in diagnostic.message


def test_a_training_set_up_and_a_definition_share_no_name() -> None:
    err(setup("model: net  loss: mse  optimiser: sgd()", name="net"), "E203")


# ---- ncd compile, ncd render ----------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errors):
        code = main(list(argv))
    return code, out.getvalue(), errors.getvalue()


def test_compiled_step_is_lint_clean_formatted_and_has_no_torch_optim(tmp_path: Path) -> None:
    sources = {}
    for name, hyper in HYPER.items():
        program = ncd.load(setup(f"model: wide  loss: cross_entropy[n]  "
                                 f"optimiser: {name}({hyper})"))
        sources[name] = program.compile("t")
    sources["iris"] = ncd.load(IRIS).compile("fit_iris")
    sources["calls"] = ncd.load(CALLS_MODEL).compile("t")
    sources["scan"] = ncd.load(SCAN_MODEL).compile("t")
    sources["dropout"] = ncd.load(DROPOUT_MODEL).compile("t")
    # Models whose backward definitions have many outputs (long signatures and returns).
    for stem, model in (("llama_block", "llama_block"), ("lenet5", "lenet5"),
                        ("sliding_window_attention", "sliding_window_attention")):
        text = (ROOT / "gallery" / f"{stem}.ncd").read_text()
        sources[stem] = ncd.load(f"{text}\ntrain t {{ model: {model}  loss: mse  optimiser: "
                                 "sgd() }\n").compile("t")
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(source)
        assert not re.search(r"torch\.optim\.\w+\(", source)  # no call (docstrings name them)
        # the compiled reverse pass; autograd in one named function only where it is not
        # used (the model with dropout)
        calls = len(re.findall(r"torch\.autograd\.\w+\(", source))
        assert calls == (1 if name == "dropout" else 0), name
        assert ("def model_gradients(" in source) == (name == "dropout"), name
    assert_generated_code_is_clean(tmp_path)
    assert ncd.load(IRIS).compile("fit_iris") == sources["iris"]  # the same bytes again


def test_ncd_compile_writes_the_training_step() -> None:
    code, out, _ = run_cli("compile", str(IRIS), "fit_iris")
    assert code == 0
    assert "class FitIris(nn.Module):" in out and "def adam_update(" in out


def test_ncd_render_of_a_training_set_up_draws_it() -> None:
    """As a lens (tests/test_lens.py checks the drawing); a command that reads definitions
    only says what the set-up is and names its model."""
    code, out, errors = run_cli("render", str(IRIS), "fit_iris")
    assert code == 0 and out.startswith("<svg"), errors
    code, out, errors = run_cli("stats", str(IRIS), "fit_iris")
    assert code == 2 and not out
    assert "training set-up" in errors and "iris_mlp" in errors
    assert "Traceback" not in errors


# ---- ncd train ------------------------------------------------------------------------------

EPOCH = re.compile(r"epoch +(\d+)/(\d+)  loss ([0-9.]+)  accuracy +([0-9.]+)%")


def last_accuracy(out: str) -> float:
    epochs = EPOCH.findall(out)
    assert epochs, out
    return float(epochs[-1][3])


def test_ncd_train_fits_the_iris_data() -> None:
    code, out, errors = run_cli("train", str(IRIS), "--data", str(IRIS_DATA),
                                "--epochs", "30", "--batch-size", "16")
    assert code == 0, errors
    assert len(EPOCH.findall(out)) == 30
    assert last_accuracy(out) >= 95.0, out
    assert "\r" not in errors  # no progress bar when standard error is no terminal


def bars_data(path: Path, count: int = 256) -> None:
    """Images of 8 × 8 noise with one bright bar: vertical (label 0) or horizontal (1)."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (count,), generator=generator)
    where = torch.randint(0, 8, (count,), generator=generator)
    images = 0.2 * torch.randn(count, 8, 8, generator=generator)
    for index in range(count):
        if labels[index] == 0:
            images[index, :, where[index]] += 1.0
        else:
            images[index, where[index], :] += 1.0
    torch.save({"inputs": images, "targets": labels}, path)


def test_ncd_train_fits_a_convolutional_network_to_bars(tmp_path: Path) -> None:
    bars_data(tmp_path / "bars.pt")
    code, out, errors = run_cli("train", str(BARS), "--data", str(tmp_path / "bars.pt"),
                                "--epochs", "12", "--batch-size", "32", "--quiet",
                                "-o", str(tmp_path / "bars.weights"))
    assert code == 0, errors
    assert len(EPOCH.findall(out)) == 1  # --quiet: the last epoch only
    assert last_accuracy(out) >= 95.0, out
    weights = torch.load(tmp_path / "bars.weights", weights_only=True)
    assert set(weights) == {"W_c", "b_c", "W_out", "b_out"}


def test_ncd_train_regresses_with_mse_from_a_csv_without_header(tmp_path: Path) -> None:
    """Three target columns per row for an output R[b, n]; no accuracy for a regression."""
    source = tmp_path / "regress.ncd"
    source.write_text(setup("model: net  loss: mse  optimiser: adam(lr = 0.05)"))
    generator = torch.Generator().manual_seed(2)
    X = torch.rand(64, 4, generator=generator)
    Y = torch.stack([X.sum(1), X[:, 0] - X[:, 1], 0.5 * X[:, 3]], dim=1)
    rows = [",".join(f"{v:.6f}" for v in row) for row in torch.cat([X, Y], dim=1).tolist()]
    (tmp_path / "regress.csv").write_text("\n".join(rows) + "\n")
    code, out, errors = run_cli("train", str(source), "--data", str(tmp_path / "regress.csv"),
                                "--epochs", "40", "--batch-size", "16")
    assert code == 0, errors
    losses = [float(line.split("loss ")[1]) for line in out.splitlines() if "loss " in line]
    assert len(losses) == 40 and "accuracy" not in out
    assert losses[-1] < 0.1 * losses[0], losses


BAD_DATA = [
    ("short.csv", "5.1,3.5,1.4,0\n", "has 4 columns; the training set-up reads 5", "1:1"),
    ("word.csv", "a,b,c,d,e\n5.1,3.5,x,0.2,0\n", "`x` is not a finite number", "2:9"),
    ("label.csv", "5.1,3.5,1.4,0.2,3\n", "the label `3` is not a class", "1:17"),
    ("half.csv", "5.1,3.5,1.4,0.2,1.5\n", "the label `1.5` is not a class", "1:17"),
    ("empty.csv", "a,b,c,d,e\n", "holds no examples", "1:1"),
    ("table.txt", "", "neither a .csv nor a .pt file", "1:1"),
]


@pytest.mark.parametrize("name, text, message, at", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_files_are_diagnostics(tmp_path: Path, name: str, text: str, message: str,
                                        at: str) -> None:
    (tmp_path / name).write_text(text)
    code, _, errors = run_cli("train", str(IRIS), "--data", str(tmp_path / name))
    assert code == 1, errors
    assert "error[E316]" in errors and message in errors and f"{name}:{at}:" in errors
    assert "Traceback" not in errors


def test_bad_pt_files_are_diagnostics(tmp_path: Path) -> None:
    cases = {
        "list.pt": ([1, 2], "does not hold a dict with `inputs` and `targets`"),
        "shape.pt": ({"inputs": torch.zeros(3, 5), "targets": torch.zeros(3).long()},
                     "has the shape (3, 5); the training set-up reads (N, 4)"),
        "float.pt": ({"inputs": torch.zeros(3, 4), "targets": torch.zeros(3)},
                     "are torch.float32; labels are integers"),
        "count.pt": ({"inputs": torch.zeros(3, 4), "targets": torch.zeros(2).long()},
                     "holds 3 inputs and 2 targets"),
    }
    for name, (value, message) in cases.items():
        torch.save(value, tmp_path / name)
        code, _, errors = run_cli("train", str(IRIS), "--data", str(tmp_path / name))
        assert code == 1 and "error[E316]" in errors and message in errors, (name, errors)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    code, _, errors = run_cli("train", str(IRIS), "--data", str(tmp_path / "junk.pt"))
    assert code == 1 and "error[E316]" in errors and "Traceback" not in errors


def test_the_progress_bar_redraws_one_line_and_clears_it() -> None:
    from ncd.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar.show(3, 10, before="epoch 2/5 ", after="loss 0.5000")
    bar.show(10, 10, before="epoch 2/5 ", after="loss 0.2500")
    shown = stream.getvalue()
    assert shown.count("\r") == 2 and "\n" not in shown
    assert "epoch 2/5 [#######.................] 3/10 loss 0.5000" in shown
    assert "[########################] 10/10 loss 0.2500" in shown
    bar.clear()
    assert stream.getvalue().endswith("\r") and bar.shown == 0


def test_ncd_train_usage_errors() -> None:
    code, _, errors = run_cli("train", str(IRIS), "fit", "--data", str(IRIS_DATA))
    assert code == 2 and "no training set-up named 'fit'" in errors and "fit_iris" in errors
    code, _, errors = run_cli("train", str(IRIS), "--data", "missing.csv")
    assert code == 2 and "cannot find the data file" in errors
    code, _, errors = run_cli("train", str(ROOT / "gallery" / "mlp.ncd"), "--data",
                              str(IRIS_DATA))
    assert code == 2 and "has no training set-up" in errors
    # `-D b=3` fixes the batch: the set-up checks, but batches of --batch-size cannot run
    assert ok(IRIS.read_text(), sizes={"b": 3}).training("fit_iris").input.name == "X"
    code, _, errors = run_cli("train", str(IRIS), "-D", "b=3", "--data", str(IRIS_DATA))
    assert code == 2 and "the batch axis `b` has a fixed size" in errors
