"""The Python API: load a `.ncd` file or source text and use what it defines.

    import ncd
    program = ncd.load("gallery/transformer.ncd", sizes={"m": 256})
    program.names                      # the definitions
    program["attention"].domain        # its input arrays
    svg = program.render("attention")  # a neural circuit diagram
    module = program.to_torch("attention")

Nothing here imports torch until `to_torch` is called.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncd import ir
from ncd.diagnostics import Diagnostic, NcdError
from ncd.ir import ArrayType  # inside `Definition`, `ir` is its field
from ncd.loader import load_program
from ncd.sizes import from_ir

if TYPE_CHECKING:
    import torch


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

    def render(self, **options: Any) -> str:
        return self.program.render(self.name, **options)

    def to_torch(self, **kwargs: Any) -> torch.nn.Module:
        return self.program.to_torch(self.name, **kwargs)

    def _repr_svg_(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"<ncd definition {self.signature}>"


class Program:
    """A checked `.ncd` program: its axes and definitions."""

    def __init__(self, program: ir.Program, sources: Mapping[str, str]):
        self.ir = program
        self.sources = dict(sources)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.ir.definitions)

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
        return name in self.names

    def __iter__(self) -> Iterator[Definition]:
        return iter(self.definitions)

    def to_json(self, indent: int | None = 2) -> str:
        return self.ir.model_dump_json(indent=indent)

    def render(self, definition: str | None = None, **options: Any) -> str:
        """The neural circuit diagram of a definition, as SVG text."""
        from ncd.renderers import RenderOptions, render_svg

        name = definition or self.main.name
        self[name]  # a clear KeyError for an unknown name
        return render_svg(self.ir, name, RenderOptions(**options))

    def compile(self, definition: str | None = None) -> str:
        """The PyTorch source of the definition (and what it calls), as text."""
        from ncd.compilers.pytorch import compile_program

        if definition is not None:
            self[definition]
        self._require_fixed_parameters(definition)
        with self._sizes_known_at_run_time():
            return compile_program(self.ir, definition)

    def to_torch(self, definition: str | None = None, **kwargs: Any) -> torch.nn.Module:
        """An instantiated `torch.nn.Module` computing the definition."""
        from ncd.compilers.pytorch import build_module

        name = definition or self.main.name
        self[name]
        self._require_fixed_parameters(name)
        with self._sizes_known_at_run_time():
            return build_module(self.ir, name, **kwargs)

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
        pending = [definition] if definition is not None else list(self.names)
        seen: set[str] = set()
        found: list[Diagnostic] = []
        while pending:
            name = pending.pop(0)
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


def load(source: str | Path, sizes: Mapping[str, int] | None = None) -> Program:
    """Load and check a `.ncd` file (a path) or source text.

    `sizes` overrides axis sizes (`{"m": 1024}`), as `-D m=1024` does on the command line.
    Raises `ncd.NcdError` carrying every diagnostic when the input has errors.
    """
    program, sources = load_program(source, sizes)
    return Program(program, sources)
