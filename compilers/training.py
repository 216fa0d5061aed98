"""The training step of a training set-up (`ncd compile FILE TRAINDEF`): one Python file with
the model's module, the loss and the optimiser's update as plain functions, and a module
whose `forward(X, target)` runs one step and returns the loss.

One step is the lens: the forward pass, the loss and its gradient with respect to the model's
output (written out, `ncd.learning`), the model's parameter gradients (`model_gradients`, the
one place that still uses `torch.autograd`: the compiled reverse pass is to take its place),
and the optimiser's update of the parameters and of its state arrays (written out: no
`torch.optim` at run time). The optimiser's state wires of the IR are buffers of the step
module (`exp_avg.W_in`, `step`), so they are saved and loaded with its `state_dict`.

This module writes text only; it does not import torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ncd import ir
from ncd.learning import LOSSES, OPTIMISERS, LossDeclaration, OptimiserDeclaration

from .errors import CompileError
from .generated import load_source
from .modules import docstring_literal
from .naming import Namespace, camel_case, comment_text
from .pytorch import compile_with_classes

if TYPE_CHECKING:
    import torch

MODEL_GRADIENTS = '''
def model_gradients(
    output: torch.Tensor, parameters: tuple[torch.Tensor, ...], d_output: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The gradients of the model's parameters, from the gradient `d_output` of its output.

    The one use of torch.autograd in a training step (through the graph the forward pass
    recorded); the compiled reverse pass of the model is to take its place."""
    return torch.autograd.grad(output, parameters, d_output)
'''

OPTIMISER_STATE = '''
class OptimiserState(nn.Module):
    """One array of the optimiser's state per parameter of the model, of the parameter's
    shape, named after it (`exp_avg.W_in`), starting at `init`."""

    def __init__(self, model: nn.Module, init: float) -> None:
        super().__init__()
        for name, param in model.named_parameters():
            self.register_buffer(name.replace(".", "_"), torch.full_like(param.detach(), init))
'''


def compile_training(program: ir.Program, name: str, *,
                     source_name: str | None = None) -> str:
    """One Python source file: the model's classes, then the training step `name`."""
    return _compile_training(program, name, source_name)[0]


def _compile_training(program: ir.Program, name: str,
                      source_name: str | None) -> tuple[str, str, str]:
    """The source file, the name of the model's class and that of the step's class."""
    try:
        training = program.training(name)
    except KeyError:
        raise CompileError(f"no training set-up named {name!r}") from None
    loss = LOSSES[training.loss.name]
    optimiser = OPTIMISERS[training.optimiser.name]
    source, classes = compile_with_classes(program, training.model, source_name=source_name)
    model_class = classes[training.model]
    # The classes added here take names no class of the file has (blocks have classes too).
    names = Namespace(set(re.findall(r"^class (\w+)\(", source, re.MULTILINE)))
    state_class = names.fresh("OptimiserState")
    step_class = names.fresh(camel_case(training.name), "TrainingStep")
    functions = [loss.function]
    if loss.correct is not None:
        functions.append(loss.correct)
    functions += [optimiser.update, MODEL_GRADIENTS,
                  OPTIMISER_STATE.replace("class OptimiserState(", f"class {state_class}(")]
    chunks = [chunk.strip("\n") for chunk in functions]
    chunks.append("\n".join(_step_class(training, loss, optimiser, model_class, step_class,
                                        state_class)))
    return source + "".join(f"\n\n{chunk}\n" for chunk in chunks), model_class, step_class


def class_dim(training: ir.Training) -> int:
    """The dim of the loss's class axis in the model's output, counted from the end (-1 when
    the loss has none: unused)."""
    names = training.output.array.names
    if not training.loss.axes:
        return -1
    return names.index(training.loss.axes[0].name) - len(names)


def _step_class(training: ir.Training, loss: LossDeclaration,
                optimiser: OptimiserDeclaration, model_class: str,
                step_class: str, state_class: str) -> list[str]:
    names = Namespace({"self", "parameters", "output", "loss", "d_output", "gradients",
                       "param", "grad", "model"})
    source = names.fresh(training.input.name, "X")
    target = names.fresh("target")
    states = [(spec, names.fresh(spec.name, "state")) for spec in optimiser.state]
    hyper_text = ", ".join(f"{h.name}={_value_text(h)}" for h in training.optimiser.hyper)
    axes = f"[{', '.join(a.name for a in training.loss.axes)}]" if training.loss.axes else ""
    summary = (f"One training step of `{training.model}`: the forward pass, the loss "
               f"{training.loss.name}{axes}, the parameters' gradients and the update "
               f"{optimiser.name}({hyper_text}).")
    doc = f"{training.doc}\n\n{summary}" if training.doc else summary
    dim = class_dim(training)
    # Each state array's first value (the IR's state wires hold it; the same for every
    # parameter).
    inits = {spec.name: float(_hyper(training, spec.init)[0]) if spec.init else 0.0
             for spec in optimiser.state}
    lines = [
        f"class {step_class}(nn.Module):",
        f"    {docstring_literal(doc)}",
        "",
        f"    def __init__(self, model: {model_class} | None = None) -> None:",
        "        super().__init__()",
        f"        self.model = {model_class}() if model is None else model",
        "        # The optimiser's state wires: arrays per parameter, and the count of steps.",
    ]
    for spec, attribute in states:
        lines.append(f"        self.{attribute} = {state_class}(self.model, {inits[spec.name]!r})")
    lines += [
        '        self.register_buffer("step", torch.zeros(()))',
        "",
        f"    def forward(self, {source}: torch.Tensor, {target}: torch.Tensor) -> torch.Tensor:",
        f"        # {comment_text(training.input.array.text())}, "
        f"{comment_text(training.loss.target.text())} -> the loss, R[]",
        "        parameters = tuple(self.model.parameters())",
        "        with torch.enable_grad():",
        f"            output = self.model({source})",
        f"        loss, d_output = {loss.loss_function}(output.detach(), {target}, {dim})",
        "        gradients = model_gradients(output, parameters, d_output)",
        "        with torch.no_grad():",
        "            self.step += 1",
    ]
    loop = ["param", "grad", *(attribute for _, attribute in states)]
    sources = ["parameters", "gradients", *(f"self.{attribute}.buffers()"
                                           for _, attribute in states)]
    lines += _for_zip(loop, sources, "            ")
    arguments = ", ".join(loop)
    keywords = ", ".join(f"{h.name}={_value_text(h)}" for h in training.optimiser.hyper)
    lines += _call(f"{optimiser.update_function}", f"{arguments}, step=self.step, {keywords}",
                   "                ")
    lines += ["        return loss", ""]
    if loss.correct_function is not None:
        lines += [
            f"    def correct(self, {source}: torch.Tensor, {target}: torch.Tensor) -> int:",
            '        """How many of the predictions for the batch are right."""',
            "        with torch.no_grad():",
            f"            return {loss.correct_function}(self.model({source}), {target}, {dim})",
        ]
    else:
        lines += [
            f"    def correct(self, {source}: torch.Tensor, {target}: torch.Tensor) -> None:",
            f'        """The loss {loss.name} has no right answers to count."""',
            "        return None",
        ]
    return lines


def _hyper(training: ir.Training, name: str) -> tuple[float, ...]:
    return next(h.values for h in training.optimiser.hyper if h.name == name)


def _value_text(hyper: ir.HyperParameter) -> str:
    numbers = [repr(float(v)) for v in hyper.values]
    return numbers[0] if len(numbers) == 1 else "(" + ", ".join(numbers) + ")"


def _for_zip(names: list[str], sources: list[str], indent: str) -> list[str]:
    """`for a, b in zip(x, y, strict=True):` as `ruff format` lays it out."""
    one_line = f"{indent}for {', '.join(names)} in zip({', '.join(sources)}, strict=True):"
    if len(one_line) <= 100:
        return [one_line]
    inner = indent + "    "
    return [f"{indent}for {', '.join(names)} in zip(",
            *(f"{inner}{s}," for s in sources),
            f"{inner}strict=True,",
            f"{indent}):"]


def _call(function: str, arguments: str, indent: str) -> list[str]:
    """A call statement as `ruff format` lays it out: on one line when it fits, else one
    argument a line."""
    one_line = f"{indent}{function}({arguments})"
    if len(one_line) <= 100:
        return [one_line]
    inner = indent + "    "
    return [f"{indent}{function}(", *(f"{inner}{a}," for a in _split_arguments(arguments)),
            f"{indent})"]


def _split_arguments(arguments: str) -> list[str]:
    """The top-level arguments of a call's text (commas inside parentheses kept)."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in arguments:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def build_training_step(program: ir.Program, name: str, *, source_name: str | None = None,
                        device: Any = None, dtype: Any = None) -> torch.nn.Module:
    """Compile the training set-up `name` and instantiate its step module in process (a real
    module of the cache folder, as `build_module` makes for a definition)."""
    source, model_class, step_class = _compile_training(program, name, source_name)
    generated = load_source(source, name)
    model = getattr(generated, model_class)()
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    # The state arrays are made from the model's parameters, already of their device and
    # dtype: a first value made in float32 and then converted would not be the value asked for
    # (0.1 is not 0.1 in float32).
    step: torch.nn.Module = getattr(generated, step_class)(model)
    if device is not None or dtype is not None:
        step = step.to(device=device, dtype=dtype)
    return step

