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

The compiler is in four parts, one job each: this module orders the definitions and puts the
file together; `compilers.forward` writes each `forward` (a broadcasted operation is lowered by
its operator's declaration, `ncd.ops`); `compilers.modules` writes each class around it (its
parameters, their initial values, its submodules); `compilers.size_code` and
`compilers.einsum` write sizes and contractions.

This module writes text only; it does not import torch (`build_module` imports it lazily).
"""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ncd import ir
from ncd.ops.lowering import Role, TensorCode
from ncd.sizes import ProgramSizes

from .errors import CompileError
from .forward import ForwardEmitter, symbol_reads
from .modules import DefinitionInfo, ModuleSpec, all_specs, class_lines, nested_blocks
from .naming import Namespace, camel_case, comment_text, sanitize

if TYPE_CHECKING:
    import torch

__all__ = ["CompileError", "ForwardEmitter", "build_module", "compile_program"]


class ProgramCompiler:
    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.sizes = ProgramSizes(program.axes)
        self.classes = Namespace()
        self.infos: dict[str, DefinitionInfo] = {}
        self.chunks: list[list[str]] = []
        self.functional = False  # some forward calls torch.nn.functional (`F.`)

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
        """Definitions to emit, callees before callers, otherwise in source order."""
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered:
                return
            if name in visiting:
                raise CompileError(f"definition {name!r} calls itself")
            visiting.add(name)
            for term in ir.walk(self.definition(name).body):
                if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp):
                    visit(term.op.definition)
            visiting.discard(name)
            ordered.append(name)

        for root in roots:
            visit(root)
        return ordered

    def compile_definition(self, definition: ir.Definition) -> None:
        class_name = self.classes.fresh(camel_case(definition.name), "Module")
        declared = {p.name: p for p in definition.params}
        doc = definition.doc or f"The ncd definition {definition.name!r}."
        spec = ModuleSpec(class_name=class_name, doc=doc, declared=declared)
        emitter = ForwardEmitter(self, spec)
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
        forward = symbol_reads(emitter, definition, arguments) + emitter.checks + emitter.lines
        self.functional = self.functional or emitter.functional
        inputs_doc = ", ".join(f"{v.code}: {comment_text(v.array.text())}" for v in arguments)
        outputs_doc = ", ".join(comment_text(v.array.text()) for v in definition.outputs)
        forward.insert(0, f"        # {inputs_doc} -> {outputs_doc}")
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
        self.infos[definition.name] = DefinitionInfo(
            class_name, tuple(v.batched for v in outputs))


def _compile(program: ir.Program, definition: str | None,
             source_name: str | None) -> tuple[str, ProgramCompiler]:
    compiler = ProgramCompiler(program)
    roots = [definition] if definition is not None else [d.name for d in program.definitions]
    for name in compiler.order(roots):
        compiler.compile_definition(compiler.definition(name))
    source = comment_text(source_name or program.source or "<string>")
    header = [
        f"# Generated by ncd from {source}. Do not edit: change the .ncd source and regenerate.",
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
    return "\n".join([*header, "", *imports, text, ""]), compiler


def compile_program(program: ir.Program, definition: str | None = None, *,
                    source_name: str | None = None) -> str:
    """One Python source file with an `nn.Module` class per definition.

    With `definition`, only that definition and the ones it calls are emitted; otherwise all.
    The text depends on the IR alone (no timestamps, no unordered iteration), so the same input
    gives the same bytes.
    """
    return _compile(program, definition, source_name)[0]


def build_module(program: ir.Program, definition: str | None = None, *,
                 source_name: str | None = None, device: Any = None,
                 dtype: Any = None) -> torch.nn.Module:
    """Compile `definition` (the last one by default) and instantiate its module in process.

    The source is registered with `linecache`, so tracebacks and `inspect` show the generated
    lines; the class keeps it in `__ncd_source__`.
    """
    if definition is None:
        if not program.definitions:
            raise CompileError("the program has no definitions")
        definition = program.definitions[-1].name
    source, compiler = _compile(program, definition, source_name)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"<ncd-generated {sanitize(definition)} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"ncd_generated_{digest}"}
    exec(compile(source, filename, "exec"), namespace)
    module_class = namespace[compiler.infos[definition].class_name]
    module_class.__ncd_source__ = source
    module = module_class()
    if device is not None or dtype is not None:
        module = module.to(device=device, dtype=dtype)
    return module
