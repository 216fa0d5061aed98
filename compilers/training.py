"""The training step of a training set-up (`ncd compile FILE TRAINDEF`): one Python file with
the model's module, the loss and the optimiser's update as plain functions, and a module
whose `forward(X, target)` runs one step and returns the loss.

One step is the lens: the forward pass, the loss and its gradient with respect to the model's
output (written out, `ncd.learning`), the model's parameter gradients, and the optimiser's
update of the parameters and of its state arrays (written out: no `torch.optim` at run time).
The optimiser's state wires of the IR are buffers of the step module (`exp_avg.W_in`,
`step`), so they are saved and loaded with its `state_dict`.

The parameter gradients come from the model's backward definition (`ncd.derivative`),
compiled into the same file: the step holds a module of it that reads the model's own
parameter tensors, and no `torch.autograd` runs. A model whose backward definition cannot be
built (a scan, batch normalisation: E320), or that draws dropout masks (the backward
definition is the evaluation-mode derivative), takes its gradients from `torch.autograd`
instead (`model_gradients`), and the file says why in a comment.

This module writes text only; it does not import torch.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ncd import ir
from ncd.derivative import Backward, first_applying, with_backward
from ncd.diagnostics import NcdError
from ncd.learning import LOSSES, OPTIMISERS, LossDeclaration, OptimiserDeclaration

from .errors import CompileError
from .generated import load_source
from .modules import ModuleSpec, all_specs, docstring_literal, state_keys
from .naming import Namespace, camel_case, comment_text, string_literal
from .pytorch import compile_with_classes

if TYPE_CHECKING:
    import torch

MODEL_GRADIENTS = '''
def model_gradients(
    output: torch.Tensor, parameters: tuple[torch.Tensor, ...], d_output: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The gradients of the model's parameters, from the gradient `d_output` of its output,
    by torch.autograd (through the graph the forward pass recorded)."""
    return torch.autograd.grad(output, parameters, d_output)
'''

SHARE_PARAMETERS = '''
def share_parameters(backward: nn.Module, forward: nn.Module, aliases: dict[str, str]) -> None:
    """Make `backward` read `forward`'s parameters and buffers themselves (the same tensors,
    so an update of the model is seen): each tensor of the backward module is replaced by the
    forward module's of the same state-dict key, or, under a call site of `aliases` (where
    the backward definition recomputes a call of the forward pass), of the aliased site."""
    sources = dict(forward.named_parameters()) | dict(forward.named_buffers())
    renames = sorted(aliases.items(), key=lambda item: -len(item[0]))
    for key, _ in [*backward.named_parameters(), *backward.named_buffers()]:
        source = key
        for new, old in renames:
            if source.startswith(new + "."):
                source = old + source[len(new) :]
                break
        path, _, leaf = key.rpartition(".")
        owner = backward.get_submodule(path) if path else backward
        if leaf in owner._parameters:
            owner._parameters[leaf] = sources[source]
        else:
            owner._buffers[leaf] = sources[source]
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


@dataclass(frozen=True)
class CompiledBackward:
    """The model's backward definition as the step uses it: its class, what each of its
    outputs is the gradient of (the model's input by its name, a parameter by the model's
    state-dict key), and the call sites whose parameters are another site's."""

    class_name: str
    gradient_of: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...]


def _compile_training(program: ir.Program, name: str,
                      source_name: str | None) -> tuple[str, str, str]:
    """The source file, the name of the model's class and that of the step's class."""
    try:
        training = program.training(name)
    except KeyError:
        raise CompileError(f"no training set-up named {name!r}") from None
    loss = LOSSES[training.loss.name]
    optimiser = OPTIMISERS[training.optimiser.name]
    compiled = _with_backward(program, training, source_name)
    if isinstance(compiled, str):
        why_autograd = compiled
        source, specs = compile_with_classes(program, training.model, source_name=source_name)
        backward = None
    else:
        source, specs, backward = compiled
    model_class = specs[training.model].class_name
    # The classes added here take names no class of the file has (blocks have classes too).
    names = Namespace(set(re.findall(r"^class (\w+)\(", source, re.MULTILINE)))
    state_class = names.fresh("OptimiserState")
    step_class = names.fresh(camel_case(training.name), "TrainingStep")
    functions = [loss.function]
    if loss.correct is not None:
        functions.append(loss.correct)
    functions.append(optimiser.update)
    if backward is None:
        note = textwrap.wrap(comment_text("The parameters' gradients come from torch.autograd: "
                                          + why_autograd),
                             98, break_long_words=False, break_on_hyphens=False)
        functions.append("\n".join(f"# {line}" for line in note) + MODEL_GRADIENTS)
    else:
        functions.append(SHARE_PARAMETERS)
    functions.append(OPTIMISER_STATE.replace("class OptimiserState(", f"class {state_class}("))
    chunks = [chunk.strip("\n") for chunk in functions]
    chunks.append("\n".join(_step_class(training, loss, optimiser, model_class, step_class,
                                        state_class, backward)))
    return source + "".join(f"\n\n{chunk}\n" for chunk in chunks), model_class, step_class


def _with_backward(program: ir.Program, training: ir.Training, source_name: str | None
                   ) -> tuple[str, dict[str, ModuleSpec], CompiledBackward] | str:
    """The file's source with the classes of the model and of its backward definition, the
    class of each definition, and the backward as the step uses it; or why the step takes its
    gradients from torch.autograd instead."""
    try:
        extended, made = with_backward(program, training.model)
    except NcdError as error:
        return f"the model's backward definition cannot be built ({error.diagnostics[0].message})"
    dropout = first_applying(program, training.model,
                             lambda op: isinstance(op, ir.DropoutOp) and op.p > 0)
    if dropout is not None:
        return (f"`{dropout}` draws dropout masks, and the backward definition is the "
                "evaluation-mode derivative")
    grad_name = made.definition.name
    try:
        source, specs = compile_with_classes(extended, [training.model, grad_name],
                                             source_name=source_name)
    except CompileError as error:
        return f"the model's backward definition does not compile ({error})"
    mapped = _gradient_keys(made, specs, training)
    if mapped is None:
        return ("the backward module's parameters do not map by name onto the model's "
                "(a parameter renamed in the generated classes)")
    return source, specs, CompiledBackward(specs[grad_name].class_name, mapped, made.aliases)


def _gradient_keys(made: Backward, specs: dict[str, ModuleSpec],
                   training: ir.Training) -> tuple[str, ...] | None:
    """For each output of the backward definition, the model's state-dict key of the
    parameter it is the gradient of (the input's name for the input's gradient); None unless
    every parameter of the model has one and every parameter and buffer of the backward
    module has a tensor of the model to read (what `share_parameters` does at run time)."""
    classes = {each.class_name: each for spec in specs.values() for each in all_specs(spec)}
    model_keys = state_keys(specs[training.model], classes)
    backward_keys = state_keys(specs[made.definition.name], classes)
    if model_keys is None or backward_keys is None:
        return None
    key_of = {path: key for path, key, buffer in model_keys if not buffer}
    inputs = {training.input.name}
    mapped = tuple(name if name in inputs else key_of.get(name, "") for name in made.gradient_of)
    learned = [key for _, key, buffer in model_keys if not buffer]
    if "" in mapped or sorted(k for k in mapped if k not in inputs) != sorted(learned) or \
            inputs & set(learned):
        return None
    held = {key for _, key, _ in model_keys}
    renames = sorted(made.aliases, key=lambda item: -len(item[0]))
    for _, key, _ in backward_keys:
        source = next((old + key[len(new):] for new, old in renames
                       if key.startswith(new + ".")), key)
        if source not in held:
            return None
    return mapped


def class_dim(training: ir.Training) -> int:
    """The dim of the loss's class axis in the model's output, counted from the end (-1 when
    the loss has none: unused)."""
    names = training.output.array.names
    if not training.loss.axes:
        return -1
    return names.index(training.loss.axes[0].name) - len(names)


def _step_class(training: ir.Training, loss: LossDeclaration,
                optimiser: OptimiserDeclaration, model_class: str,
                step_class: str, state_class: str,
                backward: CompiledBackward | None) -> list[str]:
    names = Namespace({"self", "parameters", "output", "loss", "d_output", "gradients",
                       "param", "grad", "model", "by_key", "key", "backward", "aliases"})
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
    lines.append('        self.register_buffer("step", torch.zeros(()))')
    if backward is not None:
        aliases = ", ".join(f"{string_literal(new)}: {string_literal(old)}"
                            for new, old in backward.aliases)
        gradient_of = ", ".join(string_literal(name) for name in backward.gradient_of)
        if len(backward.gradient_of) == 1:
            gradient_of += ","
        lines += [
            "        # The model's backward module, made without memory or random draws (on the",
            "        # meta device), then given the model's tensors themselves: each update of",
            "        # the model is seen by it. It is no part of the step's state.",
            '        with torch.device("meta"):',
            f"            backward = {backward.class_name}()",
        ]
        if aliases:
            lines += [
                "        # Call sites where the backward definition recomputes a call of the",
                "        # forward pass: their parameters are those of the forward call site.",
                *_assign("self.aliases", f"{{{aliases}}}", "        "),
            ]
        else:
            lines.append("        self.aliases: dict[str, str] = {}")
        lines += [
            "        share_parameters(backward, self.model, self.aliases)",
            "        # In a tuple: a module attribute would be a submodule, in the state dict.",
            "        self.backward_pass = (backward,)",
            "        # What each output of the backward module is the gradient of: the model's",
            "        # input, then its parameters by state-dict key.",
            *_assign("self.gradient_of", f"({gradient_of})", "        "),
            "",
            "    @property",
            "    def backward(self) -> nn.Module:",
            '        """The model\'s backward module."""',
            "        return self.backward_pass[0]",
            "",
            f"    def _apply(self, fn: object, recurse: bool = True) -> \"{step_class}\":",
            '        """`.to()`, `.double()` and the like give the model new buffers (and, by a',
            "        PyTorch setting, new parameters): the backward module is given those.\"\"\"",
            "        super()._apply(fn, recurse)",
            "        share_parameters(self.backward, self.model, self.aliases)",
            "        return self",
        ]
    lines += [
        "",
        f"    def forward(self, {source}: torch.Tensor, {target}: torch.Tensor) -> torch.Tensor:",
        f"        # {comment_text(training.input.array.text())}, "
        f"{comment_text(training.loss.target.text())} -> the loss, R[]",
        "        parameters = tuple(self.model.parameters())",
    ]
    if backward is None:
        lines += [
            "        with torch.enable_grad():",
            f"            output = self.model({source})",
            f"        loss, d_output = {loss.loss_function}(output.detach(), {target}, {dim})",
            "        gradients = model_gradients(output, parameters, d_output)",
            "        with torch.no_grad():",
            "            self.step += 1",
        ]
    else:
        lines += [
            "        with torch.no_grad():",
            f"            output = self.model({source})",
            f"            loss, d_output = {loss.loss_function}(output, {target}, {dim})",
            "            # The compiled reverse pass, its outputs put in the order of the",
            "            # parameters by name.",
            *_assign("by_key", "dict(zip(self.gradient_of, "
                     f"self.backward({source}, d_output), strict=True))", "            "),
            "            gradients = tuple(by_key[key] for key, _ in "
            "self.model.named_parameters())",
            "            self.step += 1",
        ]
    loop = ["param", "grad", *(attribute for _, attribute in states)]
    sources = ["parameters", "gradients", *(f"self.{attribute}.buffers()"
                                           for _, attribute in states)]
    lines += _for_zip(loop, sources, "            ")
    arguments = ", ".join(loop)
    keywords = ", ".join(f"{h.name}={_value_text(h)}" for h in training.optimiser.hyper)
    lines += _call(f"{optimiser.update_function}",
                   ", ".join(part for part in (arguments, "step=self.step", keywords) if part),
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


def _assign(target: str, value: str, indent: str) -> list[str]:
    """`target = value` as `ruff format` lays it out for a call, a tuple or a dict: on one line
    when it fits, else its top-level items one a line (a trailing comma after the last)."""
    one_line = f"{indent}{target} = {value}"
    if len(one_line) <= 100:
        return [one_line]
    opening = min(value.index(bracket) for bracket in "({" if bracket in value)
    head, inner_text = value[:opening + 1], value[opening + 1:-1]
    inner = indent + "    "
    return [f"{indent}{target} = {head}",
            *(f"{inner}{a}," for a in _split_arguments(inner_text)), f"{indent}{value[-1]}"]


def _split_arguments(arguments: str) -> list[str]:
    """The top-level arguments of a call's text (commas inside brackets kept)."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in arguments:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
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

