"""Shared state of elaboration: axis sizes, values on wires, and helpers that build IR nodes.

Elaboration reads a definition's statements in order and records each operation as a `Step`
of a dataflow graph over `Value`s (one value per array a statement produces). `ncd.wiring`
later turns the graph into the categorical term (copies, deletes and identities included).
"""

from __future__ import annotations

import functools
import gc
import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from ncd import ir
from ncd import syntax as s
from ncd.diagnostics import DiagnosticSink, Note
from ncd.sizes import Size


class Reject(Exception):
    """Abandons the statement being elaborated; the diagnostic (if any) is already recorded."""


@dataclass(frozen=True)
class AxisInfo:
    name: str
    size: Size
    span: ir.Span | None
    symbolic: bool

    @functools.cached_property
    def axis(self) -> ir.Axis:
        """The IR's axis, made once: every array type that names the axis holds this one."""
        return ir.trusted(ir.Axis, name=self.name, size=self.size.to_ir())


@dataclass(eq=False)
class Value:
    """One array on a wire: produced once, read by any number of steps."""

    array: ir.ArrayType
    name: str
    span: ir.Span | None
    id: int = field(default_factory=itertools.count().__next__)


@dataclass(eq=False)
class Step:
    """An operation of the dataflow graph: its term consumes `inputs` and produces `outputs`."""

    term: ir.Term
    inputs: list[Value]
    outputs: list[Value]


@dataclass(eq=False)
class BlockGroup:
    """A block of statements, kept as a nested graph until the wiring knows what it exports."""

    title: str
    color: str | None
    repeat: int
    shared: bool
    span: ir.Span
    steps: list[Step | BlockGroup]
    reads: list[Value]
    outputs: list[Value]
    # For a repeated block: the inner values that become `outputs`, one per read.
    carried_results: list[Value] | None = None
    # For a repeated block: the body's own input wires, one per carried name (`reads` are the
    # outer values they start from; two names of one array are two wires).
    inputs: list[Value] | None = None
    # For a single block: inner values bound to names at its end (candidate exports).
    bound: list[Value] = field(default_factory=list)
    # For one copy of a repeated block run on its own (the backward definition's): which.
    copy_of: ir.CopyOf | None = None


QUIET_WHEN_INCOMPLETE = frozenset({"E201", "E202"})
"""Unknown axes and definitions: in a module with a failed import, they may be its names."""


class Context:
    """Program-wide state: the axis table, known definitions and the diagnostics sink."""

    def __init__(self, sink: DiagnosticSink):
        self.sink = sink
        self.axes: dict[str, AxisInfo] = {}
        self.definitions: dict[str, ir.Definition] = {}
        self.failed: set[str] = set()  # definitions with errors: calls to them stay quiet
        # Set while a module whose imports did not all load is checked: the names those files
        # would have declared are unknown, and saying so again at each use (E201, E202) would
        # only bury the import's own error.
        self.incomplete = False
        # Axes declared without a size (`axis m`): another file may give one its size.
        self.unsized: set[str] = set()
        self.axis_decls: dict[str, s.AxisDecl] = {}  # the declaration that sized each axis

    # ---- diagnostics
    def error(self, code: str, message: str, span: ir.Span | None, *, hint: str | None = None,
              notes: Iterable[Note] = ()) -> Reject:
        if self.incomplete and code in QUIET_WHEN_INCOMPLETE:
            return Reject(message)
        self.sink.error(code, message, span, hint=hint, notes=notes)
        return Reject(message)


@contextmanager
def paused_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the block (and restored as it was).

    Parsing and checking allocate many objects that all live on (syntax trees, IR nodes) and
    make few reference cycles. The collector would scan every live object again and again as
    they pile up: with thousands of definitions that took more time than the checking itself,
    and a share growing with the program's size. Memory is freed by reference counting all
    the same; the next collection after the block finds any cycles.

    The objects made in the block are then moved to the oldest generation (`gc.freeze` and
    `gc.unfreeze`, two splices of lists): the first collection after the block would
    otherwise look at every one of them at once (about a tenth of the time of checking a
    long program), and they are long-lived. A full collection still looks at them, as at any
    old object. Not done where something else holds objects frozen: unfreezing would
    release those too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


# The nodes below are made at every statement from nodes already valid: `ir.trusted` makes
# them without validating them again (checked by mypy's types; see `ir.trusted`).


# The shapes and array types made, by the ids of their parts (the axes are shared, and an
# entry holds its parts, so an id is not reused while it is a key): a program has few distinct
# ones, and a node made afresh for every operand and result of every statement was a large
# share of checking it. The nodes are values, so sharing one is as good as an equal copy.
# Bounded, for a long-lived process (the language server).
_SHAPES: dict[tuple[int, ...], ir.Shape] = {}
_ARRAYS: dict[tuple[int, int], tuple[ir.Datatype, ir.ArrayType]] = {}
_MADE_LIMIT = 4096


def shape(axes: Sequence[ir.Axis]) -> ir.Shape:
    key = tuple(map(id, axes))
    made = _SHAPES.get(key)
    if made is None:
        if len(_SHAPES) >= _MADE_LIMIT:
            _SHAPES.clear()
        made = _SHAPES[key] = ir.trusted(ir.Shape, axes=tuple(axes))
    return made


def array(dtype: ir.Datatype, axes: Sequence[ir.Axis]) -> ir.ArrayType:
    made_shape = shape(axes)
    key = (id(dtype), id(made_shape))
    made = _ARRAYS.get(key)
    if made is None:
        if len(_ARRAYS) >= _MADE_LIMIT:
            _ARRAYS.clear()
        made = _ARRAYS[key] = (dtype, ir.trusted(ir.ArrayType, dtype=dtype, shape=made_shape))
    return made[1]


def rearrangement_map(domain: ir.Shape, codomain: ir.Shape) -> ir.StrideMorphism:
    """The stride morphism that reads each codomain axis from the domain axis of its name."""
    names = domain.names
    matrix = tuple(
        tuple(1 if name == target.name else 0 for name in names) for target in codomain.axes
    )
    return ir.trusted(ir.StrideMorphism, domain=domain, codomain=codomain, matrix=matrix,
                      offset=(0,) * len(codomain.axes))


# The reindexing of a port by the axes it maps (their ids: the axes are shared, and the
# entry holds them, so an id is not reused while it is a key): a program has few distinct
# pairs of degree and tiling, and building the map was a large share of checking each
# statement. Bounded, for a long-lived process (the language server).
_REINDEXINGS: dict[tuple[tuple[int, ...], tuple[int, ...]],
                   tuple[tuple[ir.Axis, ...], tuple[ir.Axis, ...], ir.StrideMorphism]] = {}
_REINDEXINGS_LIMIT = 4096
# The reindexing of a port by its array type, targets and degree (the ids of the shared types
# and shapes, each held by its entry): found without working out the tiling axes again.
_PORT_REINDEXINGS: dict[tuple[int, tuple[str, ...], int],
                        tuple[ir.ArrayType, ir.Shape, ir.StrideMorphism]] = {}


def port(array_type: ir.ArrayType, targets: Sequence[str], degree: ir.Shape,
         name: str | None) -> ir.Port:
    targets = tuple(targets)
    port_key = (id(array_type), targets, id(degree))
    found = _PORT_REINDEXINGS.get(port_key)
    if found is None:
        tiling_axes = tuple(a for a in array_type.shape.axes if a.name not in targets)
        key = (tuple(map(id, degree.axes)), tuple(map(id, tiling_axes)))
        known = _REINDEXINGS.get(key)
        if known is None:
            if len(_REINDEXINGS) >= _REINDEXINGS_LIMIT:
                _REINDEXINGS.clear()
            known = (degree.axes, tiling_axes, rearrangement_map(degree, shape(tiling_axes)))
            _REINDEXINGS[key] = known
        if len(_PORT_REINDEXINGS) >= _REINDEXINGS_LIMIT:
            _PORT_REINDEXINGS.clear()
        found = _PORT_REINDEXINGS[port_key] = (array_type, degree, known[2])
    return ir.trusted(ir.Port, array=array_type, targets=targets, reindexing=found[2],
                      name=name)
