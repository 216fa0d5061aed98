"""The Python API: load a `.ncd` file or source text and use what it defines.

    import ncd
    program = ncd.load("gallery/transformer.ncd", sizes={"m": 256})
    program.names                      # the definitions
    program["attention"].domain        # its input arrays: (R[x, m],)
    svg = program.render("attention", theme="dark")  # a neural circuit diagram
    module = program.to_torch("attention")

Nothing here imports torch until `to_torch` is called.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Never, get_args

from ncd import ir
from ncd.diagnostics import Diagnostic, NcdError, did_you_mean
from ncd.ir import ArrayType  # inside `Definition`, `ir` is its field
from ncd.loader import load_program
from ncd.sizes import from_ir

if TYPE_CHECKING:
    import torch

    from ncd.renderers import RenderOptions
    from ncd.renderers.layout.lens import LensView

WireLabels = Literal["names", "sizes", "both"]
Theme = Literal["light", "dark", "print"]
LabelText = Literal["paths", "text"]
RENDER_OPTIONS = ("wire_labels", "collapse_depth", "expand_calls", "theme", "text",
                  "show_params", "width", "grad", "lens")
DEFAULT_WIDTH = 880.0
"""The width budget of `render` (`RenderOptions.width`'s default)."""


@dataclass(frozen=True)
class Definition:
    """One checked definition of a program."""

    program: Program
    ir: ir.Definition

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def domain(self) -> tuple[ArrayType, ...]:
        return self.ir.domain

    @property
    def codomain(self) -> tuple[ArrayType, ...]:
        return self.ir.codomain

    @property
    def signature(self) -> str:
        inputs = ", ".join(f"{v.name}: {v.array.text()}" for v in self.ir.inputs)
        outputs = ", ".join(v.array.text() for v in self.ir.outputs)
        if len(self.ir.outputs) != 1:
            outputs = f"({outputs})"
        return f"{self.name}({inputs}) -> {outputs}"

    def render(self, *, wire_labels: WireLabels = "names", collapse_depth: int | None = None,
               expand_calls: bool = False, theme: Theme = "light", text: LabelText = "paths",
               show_params: bool = False, width: float | None = DEFAULT_WIDTH,
               grad: bool = False, lens: bool = False, **unknown: Never) -> str:
        """The neural circuit diagram of this definition, as SVG text."""
        return self.program.render(self.name, wire_labels=wire_labels,
                                   collapse_depth=collapse_depth, expand_calls=expand_calls,
                                   theme=theme, text=text, show_params=show_params,
                                   width=width, grad=grad, lens=lens, **unknown)

    def compile(self) -> str:
        """The PyTorch source of this definition and the ones it calls, as text."""
        return self.program.compile(self.name)

    def to_torch(self, *, device: Any = None, dtype: Any = None) -> torch.nn.Module:
        """An instantiated `torch.nn.Module` computing this definition (see
        `Program.to_torch`)."""
        return self.program.to_torch(self.name, device=device, dtype=dtype)

    def grad(self, *, training: bool = True) -> Definition:
        """The backward definition of this one (see `Program.grad`)."""
        return self.program.grad(self.name, training=training)

    def to_torch_grad(self, forward: torch.nn.Module | None = None, *, device: Any = None,
                      dtype: Any = None, training: bool | None = None) -> torch.nn.Module:
        """The backward module of this definition (see `Program.to_torch_grad`)."""
        return self.program.to_torch_grad(self.name, forward, device=device, dtype=dtype,
                                          training=training)

    def _repr_svg_(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"<ncd definition {self.signature}>"


class Program:
    """A checked `.ncd` program: its axes and definitions."""

    def __init__(self, program: ir.Program, sources: Mapping[str, str],
                 path: Path | None = None):
        self.ir = program
        self.sources = dict(sources)
        self.path = path  # the file loaded, absolute; None for source text

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.ir.definitions)

    @property
    def training_names(self) -> tuple[str, ...]:
        """The names of the file's training set-ups (`train NAME { ... }`)."""
        return tuple(t.name for t in self.ir.trainings)

    @property
    def definitions(self) -> tuple[Definition, ...]:
        return tuple(Definition(self, d) for d in self.ir.definitions)

    @property
    def axes(self) -> dict[str, ir.Axis]:
        return {axis.name: axis for axis in self.ir.axes}

    @property
    def main(self) -> Definition:
        """The definition shown by default: the last one of the loaded file."""
        if not self.ir.definitions:
            raise KeyError("the program defines nothing")
        return Definition(self, self.ir.definitions[-1])

    def __getitem__(self, name: str) -> Definition:
        try:
            return Definition(self, self.ir.definition(name))
        except KeyError:
            raise KeyError(f"no definition named {name!r}; the program defines "
                           f"{', '.join(self.names) or 'nothing'}") from None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.ir.definition(name)
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[Definition]:
        return iter(self.definitions)

    def to_json(self, indent: int | None = 2) -> str:
        return self.ir.model_dump_json(indent=indent)

    def render(self, definition: str | None = None, *, wire_labels: WireLabels = "names",
               collapse_depth: int | None = None, expand_calls: bool = False,
               theme: Theme = "light", text: LabelText = "paths", show_params: bool = False,
               width: float | None = DEFAULT_WIDTH, grad: bool = False, lens: bool = False,
               **unknown: Never) -> str:
        """The neural circuit diagram of `definition` (the main one by default), as SVG text."""
        from ncd.renderers import render_svg

        name = definition or self.main.name
        training = name in self.training_names
        if not training:
            self[name]  # a clear KeyError for an unknown name
        options = render_options(unknown, wire_labels=wire_labels,
                                 collapse_depth=collapse_depth, expand_calls=expand_calls,
                                 theme=theme, text=text, show_params=show_params,
                                 width=width, grad=grad, lens=lens)
        program: Program = self
        if training:
            program, name, view = self.training_drawing(name)
            options = replace(options, lens=view)
        elif grad or lens:
            program, name, view = self.derivative_drawing(name, lens=lens)
            options = replace(options, lens=view)
        return render_svg(program.ir, name, options)

    def training_drawing(self, name: str) -> tuple[Program, str, LensView]:
        """What `render(name)` draws for the training set-up `name`: the lens definition of
        its model (`lens`), drawn with the loss on the model's output and the optimiser on
        its parameter wires."""
        from ncd.renderers.layout.lens import LensView

        training = self.ir.training(name)
        program, lens_name, view = self.derivative_drawing(training.model, lens=True)
        return program, lens_name, LensView(view.crossing, view.saved, view.gradient_of,
                                            training)

    def derivative_drawing(self, definition: str, *, lens: bool = False
                           ) -> tuple[Program, str, LensView]:
        """What `render(..., grad=True)` draws: the program holding the backward definition
        of `definition` (with `lens`, its lens definition `NAME_lens`, whose outputs are the
        forward results and then the gradients), that definition's name, and what the lens
        view needs to know of it (the saved values)."""
        from ncd.derivative import with_backward
        from ncd.renderers.layout.lens import LensView

        self[definition]
        extended, made = with_backward(self.ir, definition, self.sources, lens=lens)
        return Program(extended, self.sources, self.path), made.definition.name, \
            LensView.of(made)

    def lens(self, definition: str | None = None) -> Definition:
        """The lens definition of `definition` (the main one by default), `NAME_lens`: the
        backward definition's two blocks, with the forward results leading its outputs
        (`(Y, dX, dW...)` from `(X, dY)`): the forward and backward passes together, as
        `render(..., lens=True)` draws them (docs/derivatives.md)."""
        from ncd.derivative import with_backward

        name = definition or self.main.name
        self[name]
        extended, made = with_backward(self.ir, name, self.sources, lens=True)
        return Definition(Program(extended, self.sources, self.path), made.definition)

    def compile(self, definition: str | None = None) -> str:
        """The PyTorch source of the definition and the ones it calls (every definition by
        default), as text. The header names the source file relative to its project root.
        The name of a training set-up gives its training step (the model's classes, then the
        step's functions and module)."""
        from ncd.compilers.pytorch import compile_program

        if definition is not None and definition in self.training_names:
            from ncd.compilers.training import compile_training

            model = self.ir.training(definition).model
            self._require_fixed_parameters(model)
            with self._sizes_known_at_run_time():
                return compile_training(self.ir, definition, source_name=self._source_name())
        if definition is not None:
            self[definition]
        self._require_fixed_parameters(definition)
        with self._sizes_known_at_run_time():
            return compile_program(self.ir, definition, source_name=self._source_name())

    def training_step(self, name: str | None = None, *, device: Any = None,
                      dtype: Any = None) -> torch.nn.Module:
        """The training step of the set-up `name` (the last of the file by default): a
        `torch.nn.Module` whose `forward(X, target)` runs one step (forward pass, loss,
        gradients, update) and returns the loss; its `model` is the model being trained."""
        from ncd.compilers.training import build_training_step

        if not self.training_names:
            raise KeyError("the program has no training set-up")
        name = name or self.training_names[-1]
        if name not in self.training_names:
            raise KeyError(f"no training set-up named {name!r}; the program has "
                           f"{', '.join(self.training_names)}")
        self._require_fixed_parameters(self.ir.training(name).model)
        with self._sizes_known_at_run_time():
            return build_training_step(self.ir, name, source_name=self._source_name(),
                                       device=device, dtype=dtype)

    def to_torch(self, definition: str | None = None, *, device: Any = None,
                 dtype: Any = None) -> torch.nn.Module:
        """An instantiated `torch.nn.Module` computing the definition (the main one by default),
        its parameters on `device` with `dtype` when given.

        Its class lives in a real module generated from the source (`inspect.getsource`
        works; `print(module)` shows its signature and parameters), and the module pickles:
        `torch.save(module, f)` then `torch.load(f, weights_only=False)`, also in a process
        that never loaded the program. `state_dict()` is the portable route for weights.
        """
        from ncd.compilers.pytorch import build_module

        name = definition or self.main.name
        self[name]
        self._require_fixed_parameters(name)
        with self._sizes_known_at_run_time():
            return build_module(self.ir, name, source_name=self._source_name(), device=device,
                                dtype=dtype)

    def grad(self, definition: str | None = None, *, training: bool = True) -> Definition:
        """The backward definition of `definition` (the main one by default), `NAME_grad`, in a
        program that also holds it (and the backward definitions of what it calls): its
        inputs are the forward inputs and the gradients of the outputs (`dY`), its outputs
        the gradients of the real inputs, then of each learned parameter, then of the
        parameters of called definitions (`d<instance>_<name>`). It renders, compiles and
        runs as any definition (docs/derivatives.md). `training`: the mode differentiated
        (`batchnorm` normalises by the batch's statistics in training mode, by its running
        ones in evaluation mode). An operation with no reverse rule yet is an `NcdError`
        (E320) at its source."""
        from ncd.derivative import with_backward

        name = definition or self.main.name
        self[name]
        extended, backward = with_backward(self.ir, name, self.sources, training=training)
        return Definition(Program(extended, self.sources, self.path), backward.definition)

    def to_torch_grad(self, definition: str | None = None,
                      forward: torch.nn.Module | None = None, *, device: Any = None,
                      dtype: Any = None, training: bool | None = None) -> torch.nn.Module:
        """An instantiated module computing the backward definition of `definition` (see
        `grad`): `backward(*inputs, *output_gradients)` returns the gradients, with no
        `torch.autograd` at run time. Its state-dict keys are the forward module's; with
        `forward` (a module of `to_torch(definition)`), it reads that module's parameters and
        buffers themselves, so an update of the forward module is seen by the backward one.
        `training`: the mode differentiated, fixed when the module is made (by default the
        forward module's mode at that moment; training mode without one)."""
        from ncd.derivative import with_backward

        name = definition or self.main.name
        self[name]
        if training is None:
            training = forward.training if forward is not None else True
        extended, made = with_backward(self.ir, name, self.sources, training=training)
        backward = Definition(Program(extended, self.sources, self.path), made.definition)
        module = backward.to_torch(device=device, dtype=dtype)
        if forward is not None:
            share_parameters(module, forward, dict(made.aliases))
        return module

    def _source_name(self) -> str | None:
        """How generated code names the source: the file relative to its project root,
        wherever the program is compiled from; None (the program's name) for source text."""
        from ncd.compilers.pytorch import source_label

        return source_label(self.path) if self.path is not None else None

    @contextmanager
    def _sizes_known_at_run_time(self) -> Iterator[None]:
        """A module reads its symbolic sizes from the shapes of its inputs; a size that no
        input tells (an axis only an output has) is an input error, E305 at the definition."""
        from ncd.compilers.errors import UnknownSize

        try:
            yield
        except UnknownSize as unknown:
            checked = self.ir.definition(unknown.definition)
            raise NcdError([Diagnostic(
                "E305", f"the size of `{unknown.symbol}` cannot be known when `{checked.name}` "
                "runs: no input of it has an axis that tells it", checked.span,
                hint=f"give `{unknown.symbol}` a size (`axis {unknown.symbol} = 8`), pass "
                f"`-D {unknown.symbol}=8`, or take an input that has the axis")],
                self.sources) from None

    def _require_fixed_parameters(self, definition: str | None) -> None:
        """A generated module allocates its parameters, so their axes need known sizes: a
        symbolic one is an input error (E312 at the parameter), found before compiling."""
        pending = deque([definition] if definition is not None else self.names)
        seen: set[str] = set()
        found: list[Diagnostic] = []
        while pending:
            name = pending.popleft()
            if name in seen or name not in self:
                continue
            seen.add(name)
            checked = self.ir.definition(name)
            pending.extend(term.op.definition for term in ir.walk(checked.body)
                           if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp))
            for parameter in checked.params:
                unsized = [a.name for a in parameter.array.shape.axes
                           if from_ir(a.size).value is None]
                if unsized:
                    found.append(Diagnostic(
                        "E312", f"parameter `{parameter.name}` of `{name}` has axis "
                        f"`{unsized[0]}` of unknown size; a PyTorch module needs the size of "
                        "every parameter", parameter.span or checked.span,
                        hint=f"give `{unsized[0]}` a size (`axis {unsized[0]} = 64`) or pass "
                        f"`-D {unsized[0]}=64`"))
        if found:
            raise NcdError(found, self.sources)

    def _repr_svg_(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"<ncd program {self.ir.source}: {', '.join(self.names)}>"


def load(source: str | Path, sizes: Mapping[str, int] | None = None, *,
         name: str | None = None,
         include: Sequence[str | os.PathLike[str]] | None = None) -> Program:
    """Load and check a `.ncd` file (a `Path`, or a one-line string ending in `.ncd`) or
    source text (named `name` in messages, `<input>` by default).

    `sizes` overrides axis sizes (`{"m": 1024}`), as `-D m=1024` does on the command line. Its
    keys are `str` and its values `int` (not `bool`): anything else is a `TypeError` naming
    what was given. A key that names no declared axis, or a size that is not positive, is an
    input error like any other (E314, with the closest axis name when there is one).

    `include` lists folders searched, in order, for an import not found beside the importing
    file, as `-I DIR` does; the folders of the environment variable `NCD_PATH` come after
    them, and the standard library shipped with ncd (`import "std/attention.ncd"`) last.

    Raises `ncd.NcdError` carrying every diagnostic when the input has errors.
    """
    program, sources = load_program(source, sizes, name=name, include=include)
    path = None
    if isinstance(source, Path) or ("\n" not in source and source.strip().endswith(".ncd")):
        # The same rule as `load_program`: the path is resolved now, so that compiling later
        # from another working directory still finds the file's project.
        path = Path(source.strip() if isinstance(source, str) else source).resolve()
    return Program(program, sources, path)


def share_parameters(backward: torch.nn.Module, forward: torch.nn.Module,
                     aliases: Mapping[str, str] | None = None) -> None:
    """Make `backward` read `forward`'s parameters and buffers: each tensor of the backward
    module is replaced by the forward module's tensor of the same state-dict key, or, under a
    call site of `aliases` (`attention_forward` -> `attention`, where the backward definition
    recomputes a call of the forward pass), of the key with the aliased site."""
    sources = dict(forward.named_parameters()) | dict(forward.named_buffers())
    renames = sorted((aliases or {}).items(), key=lambda item: -len(item[0]))
    for key, _ in [*backward.named_parameters(), *backward.named_buffers()]:
        source = key
        for new, old in renames:
            if source.startswith(new + "."):
                source = old + source[len(new):]
                break
        if source not in sources:
            raise KeyError(f"the forward module has no parameter or buffer {source!r}")
        path, _, leaf = key.rpartition(".")
        owner = backward.get_submodule(path) if path else backward
        if leaf in owner._parameters:
            owner._parameters[leaf] = sources[source]  # type: ignore[assignment]
        else:
            owner._buffers[leaf] = sources[source]


_RENDER_OPTIONS_DOC = """
Options (keyword-only):

- `wire_labels`: what wires are labelled with: `"names"` (the axis names, the default),
  `"sizes"` (their sizes, once fixed) or `"both"`.
- `collapse_depth`: blocks nested deeper than this int are drawn as one titled box (0:
  every block is a box); `None` (the default) collapses nothing.
- `expand_calls`: `True` draws each call of a definition as that definition's diagram,
  framed and titled with its name; `False` (the default) as one named box.
- `theme`: the colours, `"light"` (the default), `"dark"` or `"print"` (greyscale-safe).
- `text`: labels as glyph outlines, `"paths"` (the default, the same in every viewer),
  or as selectable `<text>` elements, `"text"`.
- `width`: a width budget in px (default 880, at which 11 px labels print at 6 pt on a page
  170 mm wide): a composition wider than it breaks onto several rows; `None` draws every
  composition on one row.
- `show_params`: `True` draws learned parameters as wires entering their boxes from
  below; `False` (the default) leaves out those a glyph stands for (the weight of a
  linear map's card); a linear map's bias and a parameter added to or multiplied with an
  array are drawn either way.
- `grad`: `True` draws the backward definition (`grad()`) as a lens: the forward block on
  top, the backward block under it running right to left, the saved values marked.
- `lens`: `True` draws the lens definition (`Program.lens`): the same, with the forward
  results leaving at the top right.

An unknown option is a `TypeError` (with the closest option's name when there is one); a
value of the wrong type a `TypeError`; a value outside the allowed ones a `ValueError`
that lists them.
"""

# One text for both `render` methods, so that `help()` shows the options on each.
for _render in (Definition.render, Program.render):
    _render.__doc__ = f"{_render.__doc__}\n{_RENDER_OPTIONS_DOC}"


def render_options(unknown: Mapping[str, object], **values: Any) -> RenderOptions:
    """The `RenderOptions` of `Program.render`'s keywords, each checked: an unknown keyword
    (`unknown`) or a value of the wrong type is a `TypeError`, a value outside the allowed
    ones a `ValueError`; each says what was given and what is expected."""
    from ncd.renderers import RenderOptions

    for option in unknown:
        hint = did_you_mean(option, RENDER_OPTIONS)
        raise TypeError(f"render() got an unknown option `{option}`; "
                        + (hint or f"the options are {', '.join(RENDER_OPTIONS)}"))
    for flag in ("expand_calls", "show_params", "grad", "lens"):
        if not isinstance(values[flag], bool):
            raise TypeError(f"render(): {flag} must be True or False, got "
                            f"{_shown(values[flag])}")
    depth = values["collapse_depth"]
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
        raise TypeError(f"render(): collapse_depth must be None or an int, got {_shown(depth)}")
    if depth is not None and depth < 0:
        raise ValueError(f"render(): collapse_depth must be None or at least 0, got {depth}")
    width = values["width"]
    if width is not None and (isinstance(width, bool) or not isinstance(width, int | float)):
        raise TypeError(f"render(): width must be None or a number of px, got {_shown(width)}")
    if width is not None and not 200 <= width < float("inf"):
        raise ValueError(f"render(): width must be None or at least 200 px, got {width}")
    for option, choices in (("wire_labels", WireLabels), ("theme", Theme), ("text", LabelText)):
        allowed = get_args(choices)
        if values[option] not in allowed:
            raise ValueError(f"render(): {option} must be one of "
                             f"{', '.join(repr(a) for a in allowed)}; got {_shown(values[option])}")
    values.pop("grad", None)
    values.pop("lens", None)
    return RenderOptions(**values)


def _shown(value: object) -> str:
    """A value as an error message shows it: its repr and its type (`'64' (str)`)."""
    return f"{value!r} ({type(value).__name__})"
