"""The PyTorch code generator: an `ir.Program` becomes one readable Python source file.

Each definition becomes an `nn.Module` class. Its `forward` has one statement per node of the
term, named after the source variable, built from `torch.einsum`, `torch.nn.functional` and
tensor views; its parameters are `nn.Parameter`s named as in the source.

Conventions of the generated code (docs/compiling.md explains them with examples):

- An array is a tensor whose trailing dims are its declared axes in memory order
  (`ArrayType.shape`); any number of leading dims may come before them. Those leading dims are
  how a batch lift runs: a call site moves its tiling axes in front and the called module works
  on the trailing dims only, so every dim is addressed from the end (`dim=-1`, `...`).
- Symbolic sizes are read from the input shapes at the top of `forward`.
- A block repeated N times without `shared` is an `nn.ModuleList` of N copies named after the
  block's title (`transformer_layer.0.W_q`); a shared or single block is transparent.

The compiler is in parts, one job each: this module orders the definitions and puts the
file together; `compilers.forward` writes each `forward` (a broadcasted operation is lowered by
its operator's declaration, `ncd.ops`); `compilers.modules` writes each class around it (its
parameters, their initial values, its submodules); `compilers.size_code` and
`compilers.einsum` write sizes and contractions; `compilers.lifetimes` deletes each local of
a `forward` after its last use.

This module writes text only; it does not import torch (`build_module` imports it lazily).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncd import ir
from ncd.context import paused_collection
from ncd.ops.lowering import Role, TensorCode
from ncd.sizes import ProgramSizes

from .errors import CompileError
from .forward import ForwardEmitter, input_reads, unbatched_checks
from .generated import load_source
from .lifetimes import free_after_last_use
from .modules import (
    LINE_LENGTH,
    DefinitionInfo,
    ModuleSpec,
    all_specs,
    class_lines,
    nested_blocks,
    own_parameter_lines,
)
from .naming import Namespace, camel_case, comment_lines, comment_text

# A folder holding one of these is the root of a project: headers name sources from there.
PROJECT_MARKERS = (".git", "pyproject.toml", "setup.cfg")

if TYPE_CHECKING:
    import torch

__all__ = ["CompileError", "ForwardEmitter", "build_module", "compile_program",
           "compile_with_classes", "source_label"]


class ProgramCompiler:
    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.sizes = ProgramSizes(program.axes)
        self.classes = Namespace()
        self.infos: dict[str, DefinitionInfo] = {}
        # Each compiled definition's class: a caller that inlines it (a scan's step) reads
        # the parameters this class registers.
        self.specs: dict[str, ModuleSpec] = {}
        # Per callee: its terms when a call can write its body in place, else None
        # (`compilers.inline_calls`).
        self.inlinable: dict[str, int | None] = {}
        self.chunks: list[list[str]] = []
        self._callee_lists: dict[str, list[str]] = {}
        self.functional = False  # some forward calls torch.nn.functional (`F.`)
        self.global_hooks = False  # some forward reads nn.Module's global hooks

    def definition(self, name: str) -> ir.Definition:
        try:
            return self.program.definition(name)
        except KeyError:
            raise CompileError(f"call to unknown definition {name!r}") from None

    def info(self, name: str) -> DefinitionInfo:
        if name not in self.infos:
            raise CompileError(f"definition {name!r} is used before it is compiled "
                               f"(recursive calls cannot be compiled)")
        return self.infos[name]

    def order(self, roots: Sequence[str]) -> list[str]:
        """Definitions to emit, callees before callers, otherwise in source order.

        A depth-first search with its own stack: a chain of calls thousands of definitions
        deep is as good as a shallow one (no recursion limit)."""
        ordered: list[str] = []
        done: set[str] = set()
        for root in roots:
            if root in done:
                continue
            visiting = {root}
            stack = [(root, self._callees(root))]
            while stack:
                name, callees = stack[-1]
                for callee in callees:
                    if callee in done:
                        continue
                    if callee in visiting:
                        raise CompileError(f"definition {callee!r} calls itself")
                    visiting.add(callee)
                    stack.append((callee, self._callees(callee)))
                    break
                else:
                    stack.pop()
                    visiting.discard(name)
                    done.add(name)
                    ordered.append(name)
        return ordered

    def _callees(self, name: str) -> Iterator[str]:
        """The definitions that `name` calls, in the order of its terms (repeats included);
        found by one walk of its body (the order of compilation asks first, then its own
        compilation)."""
        found = self._callee_lists.get(name)
        if found is None:
            found = self._callee_lists[name] = [
                term.op.definition for term in ir.walk(self.definition(name).body)
                if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp)]
        return iter(found)

    def compile_definition(self, definition: ir.Definition) -> None:
        class_name = self.classes.fresh(camel_case(definition.name), "Module")
        declared = {p.name: p for p in definition.params}
        doc = definition.doc or f"The ncd definition {definition.name!r}."
        spec = ModuleSpec(class_name=class_name, doc=doc, declared=declared)
        emitter = ForwardEmitter(self, spec)
        calls = Counter(self._callees(definition.name))
        emitter.inlining.repeated = frozenset(name for name, count in calls.items() if count > 1)
        arguments = [TensorCode(emitter.names.fresh(variable.name, "input"), variable.array)
                     for variable in definition.inputs]
        emitter.arguments = arguments
        outputs = emitter.term(definition.body, arguments)
        if len(outputs) != len(definition.outputs):
            raise CompileError(f"{definition.name} returns {len(outputs)} arrays, declares "
                               f"{len(definition.outputs)}")
        outputs = [emitter.relayout(value, variable.array)
                   for value, variable in zip(outputs, definition.outputs, strict=True)]
        returned = ", ".join(v.code for v in outputs)
        emitter.emit(f"return {returned}" if outputs else "return ()")
        for name, parameter in declared.items():  # declared but unused: still learnable
            if not any(name in (s.params) for s in all_specs(spec)):
                spec.param(name, parameter.array, Role("fan_in_uniform"))
        body = (unbatched_checks(definition, arguments)
                + input_reads(emitter, definition, arguments) + emitter.checks + emitter.lines)
        # Each intermediate released after its last use; the sizes read stay (integers). The
        # module's own parameters are bound before the body the liveness pass reads, so it
        # never deletes them (the module holds them: a `del` frees nothing) and keeps them out
        # of its live set: live over the whole body, they made it quadratic in the statements
        # of a forward that binds one parameter per few statements.
        forward = (own_parameter_lines(spec, list(emitter.own_parameters.values()))
                   + free_after_last_use(body, [v.code for v in arguments],
                                         set(emitter.symbol_code.values())))
        self.functional = self.functional or emitter.functional
        self.global_hooks = self.global_hooks or emitter.global_hooks
        inputs_doc = ", ".join(f"{v.code}: {comment_text(v.array.text())}" for v in arguments)
        outputs_doc = ", ".join(comment_text(v.array.text()) for v in definition.outputs)
        forward[0:0] = [f"        # {line}" for line in
                        comment_lines(f"{inputs_doc} -> {outputs_doc}", LINE_LENGTH - 10)]
        forward = _wrapped_return(forward)
        spec.signature = ", ".join(f"{v.code}: {v.array.text()}" for v in arguments) + \
            " -> " + ", ".join(v.array.text() for v in definition.outputs)
        signature = ["self"] + [f"{v.code}: torch.Tensor" for v in arguments]
        returns = "torch.Tensor" if len(outputs) == 1 else \
            "tuple[" + ", ".join(["torch.Tensor"] * len(outputs)) + "]"
        if not outputs:
            returns = "tuple[()]"
        chunk: list[str] = []
        for block_spec in nested_blocks(spec):
            chunk.extend(class_lines(block_spec, self.sizes, None))
            chunk.extend(["", ""])
        chunk.extend(class_lines(spec, self.sizes, (signature, forward, returns)))
        self.chunks.append(chunk)
        self.specs[definition.name] = spec
        self.infos[definition.name] = DefinitionInfo(
            class_name, tuple(v.batched for v in outputs))


def _wrapped_return(lines: list[str]) -> list[str]:
    """The body with its last line, `return a, b, ...`, one value a line in parentheses when
    it is too long (many outputs: a backward definition's), as the formatter lays it out."""
    last = lines[-1] if lines else ""
    prefix = "        return "
    if len(last) <= LINE_LENGTH or not last.startswith(prefix) or "#" in last:
        return lines
    values = last[len(prefix):].split(", ")
    if not all(v.isidentifier() for v in values):
        return lines
    return [*lines[:-1], "        return (", *(f"            {v}," for v in values), "        )"]


def _compile(program: ir.Program, definition: str | Sequence[str] | None,
             source_name: str | None) -> tuple[str, ProgramCompiler]:
    compiler = ProgramCompiler(program)
    if definition is None:
        roots = [d.name for d in program.definitions]
    else:
        roots = [definition] if isinstance(definition, str) else list(definition)
    with paused_collection():  # many long-lived objects: see `paused_collection`
        for name in compiler.order(roots):
            compiler.compile_definition(compiler.definition(name))
    source = comment_text(source_name or source_label(program.source or "<string>"))
    notice = f"# Generated by ncd from {source}."
    do_not_edit = "Do not edit: change the .ncd source and regenerate."
    # A long file name puts the notice on two lines.
    sep = " " if len(notice) + 1 + len(do_not_edit) <= 100 else "\n# "
    notice += sep + do_not_edit
    header = [
        notice,
        "# Arrays keep their declared axes as the trailing dims; leading dims are batch dims.",
    ]
    body: list[str] = []
    for chunk in compiler.chunks:
        body.extend(["", ""])
        body.extend(chunk)
    text = "\n".join(body)
    imports = ["import torch"]
    if compiler.functional:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    if compiler.global_hooks:
        imports.append("from torch.nn.modules import module as nn_module")
    return "\n".join([*header, "", *imports, text, ""]), compiler


def compile_program(program: ir.Program, definition: str | None = None, *,
                    source_name: str | None = None) -> str:
    """One Python source file with an `nn.Module` class per definition.

    With `definition`, only that definition and the ones it calls are emitted; otherwise all.
    The text depends on the IR alone (no timestamps, no unordered iteration), so the same input
    gives the same bytes.
    """
    return _compile(program, definition, source_name)[0]


def compile_with_classes(program: ir.Program, definitions: str | Sequence[str], *,
                         source_name: str | None = None) -> tuple[str, dict[str, ModuleSpec]]:
    """The source `compile_program` writes for `definitions` (one name or several, each with
    the definitions it calls), and the class of each definition in it (for code written after
    it: a training step names its model's class and reads the parameters it registers)."""
    source, compiler = _compile(program, definitions, source_name)
    return source, dict(compiler.specs)


def source_label(source: str | Path) -> str:
    """How a generated file's header names its source: the path of the source file relative to
    its project root (the nearest folder above it holding `.git`, `pyproject.toml` or
    `setup.cfg`), else the file name alone; never relative to the working directory, so the
    output is the same wherever the command runs. A name that is no file (`<input>`,
    `<stdin>`) is kept as it is."""
    text = str(source)
    if text.startswith("<") and text.endswith(">"):
        return text
    path = Path(source)
    try:
        resolved = path.resolve()
        if not resolved.is_file():
            return path.as_posix()
    except (OSError, RuntimeError, ValueError):
        return path.as_posix()
    for folder in resolved.parents:
        try:
            if any((folder / marker).exists() for marker in PROJECT_MARKERS):
                return resolved.relative_to(folder).as_posix()
        except OSError:
            continue
    return resolved.name


def build_module(program: ir.Program, definition: str | None = None, *,
                 source_name: str | None = None, device: Any = None,
                 dtype: Any = None) -> torch.nn.Module:
    """Compile `definition` (the last one by default) and instantiate its module in process.

    The source becomes a real module, `ncd_generated_<name>_<hash>`, imported from a file in
    the cache folder (`compilers.generated`): `inspect.getsource` works on its classes,
    tracebacks show the generated lines, and the module pickles (`torch.save`) and deep-copies,
    also into a process that never built it. Each class keeps its source in `__ncd_source__`.
    """
    if definition is None:
        if not program.definitions:
            raise CompileError("the program has no definitions")
        definition = program.definitions[-1].name
    source, compiler = _compile(program, definition, source_name)
    generated = load_source(source, definition)
    module_class = getattr(generated, compiler.infos[definition].class_name)
    module = module_class()
    if device is not None or dtype is not None:
        module = module.to(device=device, dtype=dtype)
    return module
