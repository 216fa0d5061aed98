"""Every gallery definition compiles, runs, and survives `torch.fx.symbolic_trace` with
unchanged results; every definition that no other one calls (and so every definition, inside
its callers' graphs) survives `torch.export.export` and `torch.compile(fullgraph=True)`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gallery_cases import SOURCES, gallery_definitions, gallery_program

import ncd
from ncd import ir

GALLERY = Path(__file__).resolve().parent.parent / "gallery"
RUN_SIZE = 3  # every symbolic size, at run time


def symbolic_axes(program: ncd.Program) -> list[str]:
    return [a.name for a in program.ir.axes if a.size == ir.SizeSym(name=a.name)]


def cases() -> list[tuple[Path, str]]:
    return gallery_definitions()


def called(program: ncd.Program) -> set[str]:
    """The definitions that another definition of the program calls."""
    return {term.op.definition for definition in program.ir.definitions
            for term in ir.walk(definition.body)
            if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp)}


def example_inputs(definition: ir.Definition) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    env = {name: RUN_SIZE for name in ir_symbols(definition)}
    tensors = []
    for variable in definition.inputs:
        shape = [ir.size_value(axis.size, env) for axis in variable.array.shape.axes]
        assert None not in shape, f"size of {variable.array.text()} unknown"
        dtype = variable.array.dtype
        if dtype.kind == "N":
            bound = ir.size_value(dtype.bound, env) if dtype.bound is not None else 2
            tensors.append(torch.randint(0, bound, shape, generator=generator))
        elif dtype.kind == "B":
            tensors.append(torch.rand(shape, generator=generator) > 0.5)
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def ir_symbols(definition: ir.Definition) -> set[str]:
    names: set[str] = set()

    def visit(size: ir.SizeExpr) -> None:
        match size:
            case ir.SizeSym(name=name):
                names.add(name)
            case ir.SizeAdd(terms=parts) | ir.SizeMul(factors=parts):
                for part in parts:
                    visit(part)
            case ir.SizeDiv(numerator=a, denominator=b) | ir.SizeFloorDiv(numerator=a,
                                                                          denominator=b):
                visit(a)
                visit(b)

    for variable in definition.inputs:
        for axis in variable.array.shape.axes:
            visit(axis.size)
    return names


def outputs(result: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def assert_same(actual: object, expected: object, tolerance: float = 1e-5) -> None:
    for a, b in zip(outputs(actual), outputs(expected), strict=True):  # type: ignore[arg-type]
        torch.testing.assert_close(a, b, atol=tolerance, rtol=tolerance)


def test_the_gallery_is_not_empty() -> None:
    assert len(SOURCES) >= 3


@pytest.mark.parametrize(("path", "name"), cases(), ids=lambda v: getattr(v, "stem", v))
def test_gallery_definition_compiles_traces_and_exports(path: Path, name: str) -> None:
    program = gallery_program(path)
    torch.manual_seed(0)
    module = program.to_torch(name).eval()
    inputs = example_inputs(program[name].ir)
    with torch.no_grad():
        expected = module(*inputs)
        for result in outputs(expected):
            assert torch.isfinite(result).all()
        # An empty batch (a leading dim of size 0 on every input) gives empty results of the
        # same trailing shapes, as PyTorch's own modules do.
        empty = module(*(x[None][:0] for x in inputs))
        assert [tuple(r.shape) for r in outputs(empty)] == \
            [(0, *r.shape) for r in outputs(expected)]

    # A definition that another one calls is exported and compiled as part of its caller.
    if name not in called(program):
        export_and_compile(module, inputs, expected)

    # torch.fx traces symbolically, so a scan's length must be a fixed size: fix every
    # symbolic size (as `-D t=3` does) and copy the weights over.
    fixed = ncd.load(path, {axis: RUN_SIZE for axis in symbolic_axes(program)})
    traced_source = fixed.to_torch(name).eval()
    traced_source.load_state_dict(module.state_dict())
    graph = torch.fx.symbolic_trace(traced_source)
    with torch.no_grad():
        assert_same(graph(*inputs), expected)


def export_and_compile(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                       expected: object) -> None:
    with torch.no_grad():
        # torch.export: sizes are read from the example inputs' shapes.
        exported = torch.export.export(module, inputs)
        assert_same(exported.module()(*inputs), expected)

        # torch.compile without graph breaks (the aot_eager backend keeps CI fast; inductor
        # is exercised by test_inductor_compiles_a_gallery_model).
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        assert_same(compiled(*inputs), expected)
        torch._dynamo.reset()


def test_inductor_compiles_a_gallery_model() -> None:
    program = ncd.load(GALLERY / "mlp.ncd")
    module = program.to_torch("mlp").eval()
    inputs = example_inputs(program["mlp"].ir)
    # Inductor's own set-up, not what it makes of the module, is skipped: compiling a test
    # program per vector instruction set (the set is still picked from the CPU's flags) and a
    # precompiled header, about 9 of this test's 16 s on two cores
    with torch.no_grad(), torch._inductor.config.patch(
            {"cpp_cache_precompile_headers": False, "cpp.vec_isa_ok": True}):
        expected = module(*inputs)
        compiled = torch.compile(module, fullgraph=True)
        assert_same(compiled(*inputs), expected, 1e-4)
    torch._dynamo.reset()
