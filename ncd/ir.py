"""The typed IR: a term of the array-broadcasted category Br over the axis-stride category St.

Every stage after elaboration reads these models and nothing else. They are frozen pydantic
models whose containers are tuples, so a term is an immutable value that can be hashed,
compared, dumped to JSON and loaded back unchanged.

St: `SizeExpr`, `Axis`, `Shape`, `StrideMorphism`.
Br: `Datatype`, `ArrayType`, `Port` (an array with its weave and reindexing), the operator
nodes (`Operator`), and the closed set of term nodes (`Term`): `Identity`, `Rearrangement`,
`Reindexing`, `Broadcasted`, `Composed`, `Product`, `Block`, `Scan`, `Machine`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Annotated, Any, Literal, TypeVar, Union, assert_never, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from ncd.ops.functions import ElementwiseFunction


class Node(BaseModel):
    # Masks fill with -inf: JSON carries it as the constant `-Infinity`, so round trips hold.
    # Infinite floats (a mask's fill of -inf) are written as the strings "Infinity" and
    # "-Infinity": the JSON stays standard (RFC 8259) and reads back as floats.
    # The validators and serializers are built when a class is first used, not at import:
    # `ncd check` of a gallery file builds 21 of the 57 classes. (The forward references,
    # `SizeExpr` and `Term`, are resolved then too.)
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings",
                              defer_build=True)


_NodeT = TypeVar("_NodeT", bound=Node)
_new_object = object.__new__
_set_slot = object.__setattr__
# The setters of `BaseModel`'s other slots, taken once: calling a slot's own setter skips the
# look-up by name that `object.__setattr__` makes.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
# The set of fields a trusted node of each class was given: all of them, so one set per class,
# shared by its nodes (pydantic never changes the set of a frozen model in place; a copy, such
# as `model_copy(update=...)`, copies it first). Making a set per node was a sixth of the cost
# of `trusted`.
_FIELDS_SETS: dict[type[Node], set[str]] = {}


def trusted(cls: type[_NodeT], **fields: Any) -> _NodeT:
    """A node made without validation, from values already valid: every field of `cls`, in
    the order the class declares them, of exactly the field's type (tuples, not lists).

    What `model_construct` does, for the nodes the checker makes at every statement (spans,
    shapes, ports, terms): validating them was the largest share of checking a long
    program, and pydantic's own `model_construct` is slower than its validation. The node is
    the one validation would make: equal, with the same hash, repr and JSON
    (tests/test_toolchain_scale.py).
    """
    node = _new_object(cls)
    _set_slot(node, "__dict__", fields)
    fields_set = _FIELDS_SETS.get(cls)
    if fields_set is None:
        fields_set = _FIELDS_SETS[cls] = set(fields)
    _set_fields_set(node, fields_set)
    _set_extra(node, None)
    _set_private(node, None)
    return node


def trusted_span(file: str, line: int, column: int, end_line: int, end_column: int) -> Span:
    """`trusted(Span, ...)` with the fields in order as arguments: the parser makes a span for
    most nodes of a file, and passing them by keyword cost a fifth of making one."""
    node = _new_object(Span)
    _set_slot(node, "__dict__", {"file": file, "line": line, "column": column,
                                 "end_line": end_line, "end_column": end_column})
    fields_set = _FIELDS_SETS.get(Span)
    if fields_set is None:
        fields_set = _FIELDS_SETS[Span] = set(Span.model_fields)
    _set_fields_set(node, fields_set)
    _set_extra(node, None)
    _set_private(node, None)
    return node


# A float field of the IR: in JSON a number, or one of the strings of `Node.model_config`.
Float = Annotated[float, WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"enum": ["Infinity", "-Infinity", "NaN"]}]})]


class Span(Node):
    """A region of source text: 1-based lines and columns, end exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# --------------------------------------------------------------------------------------
# St: sizes, axes, shapes, stride morphisms
# --------------------------------------------------------------------------------------


class SizeConst(Node):
    kind: Literal["const"] = "const"
    value: int


class SizeSym(Node):
    """A symbolic size: the size of a declared axis that is fixed later (at run time)."""

    kind: Literal["sym"] = "sym"
    name: str


class SizeAdd(Node):
    kind: Literal["add"] = "add"
    terms: tuple[SizeExpr, ...]


class SizeMul(Node):
    kind: Literal["mul"] = "mul"
    factors: tuple[SizeExpr, ...]


class SizeDiv(Node):
    """Exact division: the checker guarantees (or states as a run-time check) divisibility."""

    kind: Literal["div"] = "div"
    numerator: SizeExpr
    denominator: SizeExpr


class SizeFloorDiv(Node):
    kind: Literal["floordiv"] = "floordiv"
    numerator: SizeExpr
    denominator: SizeExpr


SizeExpr = Annotated[
    Union[SizeConst, SizeSym, SizeAdd, SizeMul, SizeDiv, SizeFloorDiv],
    Field(discriminator="kind"),
]


def size_value(size: SizeExpr, env: Mapping[str, int] | None = None) -> int | None:
    """The integer value of a size, or None when it depends on a symbol not in `env`
    (a convenience: the size algebra is `ncd.sizes`, see `ncd.sizes.evaluate`)."""
    from ncd.sizes import evaluate  # ncd.sizes is built on this module

    return evaluate(size, env)


def size_text(size: SizeExpr) -> str:
    """Human-readable form of a size, as the user would write it."""
    match size:
        case SizeConst(value=value):
            return str(value)
        case SizeSym(name=name):
            return name
        case SizeAdd(terms=terms):
            parts: list[str] = []
            for i, term in enumerate(terms):
                if isinstance(term, SizeMul) and isinstance(term.factors[0], SizeConst) \
                        and term.factors[0].value < 0:
                    rest = SizeMul(factors=(SizeConst(value=-term.factors[0].value),
                                            *term.factors[1:]))
                    parts.append(f" - {_atom_text(rest)}" if i else f"-{_atom_text(rest)}")
                elif isinstance(term, SizeConst) and term.value < 0 and i > 0:
                    parts.append(f" - {-term.value}")
                else:
                    parts.append((" + " if i else "") + size_text(term))
            return "".join(parts)
        case SizeMul(factors=factors):
            if len(factors) >= 2 and isinstance(factors[0], SizeConst) and factors[0].value == 1:
                factors = factors[1:]
            return " * ".join(_atom_text(f) for f in factors)
        case SizeDiv(numerator=num, denominator=den):
            return f"{_atom_text(num)} / {_denominator_text(den)}"
        case SizeFloorDiv(numerator=num, denominator=den):
            return f"{_atom_text(num)} // {_denominator_text(den)}"
    raise AssertionError(f"unknown size node {size!r}")


def _atom_text(size: SizeExpr) -> str:
    text = size_text(size)
    # A division inside a product or below another division keeps its parentheses:
    # `2 * (x // 2)` is not `2 * x // 2`.
    return f"({text})" if isinstance(size, (SizeAdd, SizeDiv, SizeFloorDiv)) else text


def _denominator_text(size: SizeExpr) -> str:
    # A product divides as a whole: `m // (h * g)` is not `m // h * g`.
    return f"({size_text(size)})" if isinstance(size, SizeMul) else _atom_text(size)


class Axis(Node):
    """An axis: an identity (its name) and a size."""

    name: str
    size: SizeExpr

    @property
    def value(self) -> int | None:
        return size_value(self.size)

    def __repr__(self) -> str:
        """`axis m = 512`, `axis k = m / h`, `axis x` (symbolic), as the source declares it."""
        return f"axis {_axis_text(self)}"

    __str__ = __repr__


_name_of = attrgetter("name")


class Shape(Node):
    axes: tuple[Axis, ...] = ()

    def __repr__(self) -> str:
        """The axes in memory order with their sizes: `[x, m = 512]`."""
        return "[" + ", ".join(_axis_text(axis) for axis in self.axes) + "]"

    __str__ = __repr__

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(map(_name_of, self.axes))  # read often: `map` is the fastest way

    def axis(self, name: str) -> Axis:
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise KeyError(name)


def _axis_text(axis: Axis) -> str:
    """`m = 512`; an axis whose size is its own symbol (`axis x`) is its name alone."""
    if axis.size == SizeSym(name=axis.name):
        return axis.name
    return f"{axis.name} = {size_text(axis.size)}"


class StrideMorphism(Node):
    """An affine map on index tuples `q_j = offset_j + sum_i matrix[j][i] * p_i`.

    `domain` is P (the shape looped over), `codomain` is Q; `matrix` has one row per codomain
    axis and one column per domain axis.
    """

    domain: Shape
    codomain: Shape
    matrix: tuple[tuple[int, ...], ...]
    offset: tuple[int, ...]

    @property
    def is_rearrangement(self) -> bool:
        """Every output coordinate is one input coordinate: a permute, copy or delete."""
        return all(o == 0 for o in self.offset) and all(
            sorted(row) == [0] * (len(row) - 1) + [1] for row in self.matrix
        )

    @property
    def is_identity(self) -> bool:
        return (
            self.is_rearrangement
            and self.domain.names == self.codomain.names
            and all(row[j] == 1 for j, row in enumerate(self.matrix))
        )

    def row_text(self, row: int) -> str:
        """The index expression of codomain axis `row`, e.g. `2*p + w`."""
        parts: list[str] = []
        for coefficient, axis in zip(self.matrix[row], self.domain.axes, strict=True):
            if coefficient in (1, -1):
                parts.append(axis.name if coefficient == 1 else f"-{axis.name}")
            elif coefficient:
                parts.append(f"{coefficient}*{axis.name}")
        if self.offset[row] or not parts:
            parts.append(str(self.offset[row]))
        return " + ".join(parts).replace(" + -", " - ")  # `p - w + 2`, `3 - 2*i` as `-2*i + 3`

    def text(self) -> str:
        """The whole map, e.g. `(b, p, w) -> (b, 2*p + w)`."""
        source = ", ".join(self.domain.names)
        target = ", ".join(self.row_text(j) for j in range(len(self.codomain.axes)))
        return f"({source}) -> ({target})"


# --------------------------------------------------------------------------------------
# Br: datatypes, arrays, weaves
# --------------------------------------------------------------------------------------


DatatypeKind = Literal["R", "N", "B"]


class Datatype(Node):
    """What one entry holds: R (reals), N[bound] (naturals below bound), B (booleans)."""

    kind: DatatypeKind
    bound: SizeExpr | None = None

    def text(self) -> str:
        if self.kind == "N" and self.bound is not None:
            return f"N[{size_text(self.bound)}]"
        return self.kind

    def __repr__(self) -> str:
        return self.text()

    __str__ = __repr__


# Made without validation (`trusted`): validating them at import built a validator in every
# process, and the first validator built loads pydantic's plugins (about 15 ms). A check of a
# gallery file such as attention.ncd now builds none.
REALS = trusted(Datatype, kind="R", bound=None)
BOOLEANS = trusted(Datatype, kind="B", bound=None)


class ArrayType(Node):
    """An array: a datatype and a shape whose axis order is the memory order."""

    dtype: Datatype
    shape: Shape

    @property
    def names(self) -> tuple[str, ...]:
        return self.shape.names

    def text(self) -> str:
        axes = ", ".join(self.shape.names)
        if self.dtype.kind == "N":
            return f"{self.dtype.text()}[{axes}]"
        return f"{self.dtype.kind}[{axes}]"

    def __repr__(self) -> str:
        """As the source writes the type, `R[x, m]` (the sizes are in `shape`)."""
        return self.text()

    __str__ = __repr__


class Port(Node):
    """One input or output of a broadcasted operation: the array and its weave.

    `targets` are the axes the base operation sees (in memory order); every other axis of
    `array` is a tiling axis. `reindexing` maps the degree P to this array's tiling axes:
    it says which tile is read at each loop position (for outputs it is a permutation).
    `name` is the source variable of the array when there is one, or the parameter name.
    """

    array: ArrayType
    targets: tuple[str, ...]
    reindexing: StrideMorphism
    name: str | None = None

    @property
    def tiling(self) -> tuple[str, ...]:
        return tuple(n for n in self.array.names if n not in self.targets)


class Parameter(Node):
    """A learned parameter: a wire of the parametric map, named as in the source. With
    `buffer` set, a non-learned array of the module's state (`buffer` in the source): kept in
    the state dict, never trained (the running statistics of `batchnorm`, a fixed table)."""

    name: str
    array: ArrayType
    init: str = "default"
    init_args: tuple[Float, ...] = ()
    span: Span | None = None
    buffer: bool = False

    @model_serializer(mode="wrap")
    def _omit_default_buffer(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A learned parameter's JSON has no `buffer` key, as before buffers existed."""
        data = handler(self)
        if isinstance(data, dict) and not self.buffer:
            data.pop("buffer", None)
        return data


# --------------------------------------------------------------------------------------
# Base operations (the boxes). The set is open at the registry level; every kind here is
# known to every back end (tests check that each renderer and compiler has an entry).
# --------------------------------------------------------------------------------------


class EinsumOp(Node):
    """Multiply the input tiles and sum over the contracted target axes, times `scale`."""

    kind: Literal["einsum"] = "einsum"
    contracted: tuple[str, ...]
    scale: Float = 1.0
    scale_text: str | None = None


def weight_input_names(inputs: Sequence[str], outputs: Sequence[str]) -> tuple[str, ...]:
    """The weight axis each input axis of a linear map contracts with: its own name, or for
    an axis that is also an output (`linear[m -> m]`) `m_in`, with `_in` added again while
    that names another axis of the map (`linear[m -> m m_in]`: `m_in_in`), so that the
    weight's axes are distinct."""
    taken = {*inputs, *outputs}
    names = []
    for axis in inputs:
        name = axis
        if axis in outputs:
            name = f"{axis}_in"
            while name in taken:
                name += "_in"
            taken.add(name)
        names.append(name)
    return tuple(names)


class LinearOp(Node):
    """A learned linear map from the `inputs` target axes to the `outputs` target axes."""

    kind: Literal["linear"] = "linear"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    bias: bool = False
    weight_inputs: tuple[str, ...]
    """For each axis of `inputs`, the axis of the weight it contracts with. The elaborator
    names it like the input axis, or `a_in` when `a` is also an output (`linear[m -> m]`);
    that naming is the default when a program is built by hand."""

    @model_validator(mode="before")
    @classmethod
    def _default_weight_inputs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "weight_inputs" not in data and "inputs" in data:
            data = {**data, "weight_inputs": weight_input_names(
                tuple(data["inputs"]), tuple(data.get("outputs", ())))}
        return data

    @model_validator(mode="after")
    def _one_weight_axis_per_input(self) -> LinearOp:
        if len(self.weight_inputs) != len(self.inputs):
            raise ValueError(f"a linear map from {list(self.inputs)} pairs them with "
                             f"{len(self.weight_inputs)} weight axes")
        return self


class EmbeddingOp(Node):
    """Look up rows of a table by an `N[v]` index."""

    kind: Literal["embedding"] = "embedding"
    outputs: tuple[str, ...]


class SoftmaxOp(Node):
    kind: Literal["softmax"] = "softmax"
    axes: tuple[str, ...]
    log: bool = False


class NormOp(Node):
    kind: Literal["norm"] = "norm"
    norm: Literal["layernorm", "rmsnorm"]
    axes: tuple[str, ...]
    eps: Float = 1e-5
    affine: bool = False
    bias: bool = False


ELEMENTWISE_FUNCTIONS: tuple[ElementwiseFunction, ...] = get_args(ElementwiseFunction)
"""The elementwise functions, declared in `ncd.ops.functions`."""


class BatchNormOp(Node):
    """Batch normalisation: normalise each channel (the axes not in `axes`) over the target
    `axes` with the batch's statistics (training mode) or the running statistics (evaluation
    mode). Parameter ports: the running mean and the running variance (buffers), then the
    optional scale and shift, all typed by the channel axes. In training mode the running
    statistics become `(1 - momentum) * running + momentum * batch` (the variance unbiased),
    as `nn.BatchNorm1d/2d`."""

    kind: Literal["batchnorm"] = "batchnorm"
    axes: tuple[str, ...]
    eps: Float = 1e-5
    momentum: Float = 0.1
    affine: bool = False
    bias: bool = False


class ElementwiseOp(Node):
    kind: Literal["elementwise"] = "elementwise"
    function: ElementwiseFunction


class ScaleOp(Node):
    kind: Literal["scale"] = "scale"
    factor: Float
    text: str


class DropoutOp(Node):
    kind: Literal["dropout"] = "dropout"
    p: Float


class ConstantOp(Node):
    """An array and a constant, entrywise: `x + c`, `x - c`, `c - x`, `c / x` and `x ^ c`
    (`pow[c](X)`); the constant is the left operand when `constant_first`. (`x * c` and
    `x / c` are a `ScaleOp`.)"""

    kind: Literal["constant"] = "constant"
    op: Literal["+", "-", "/", "^"]
    constant: Float
    text: str
    """The constant as the source writes it (`1e-05`, `|m|`)."""
    constant_first: bool = False


BinaryFunction = Literal["divide", "maximum", "minimum"]


class BinaryOp(Node):
    """An entrywise function of two arrays (`X / Y`, `maximum(X, Y)`); the axes of one input
    include the other's, which is broadcast along the axes it lacks."""

    kind: Literal["binary"] = "binary"
    function: BinaryFunction


class WhereOp(Node):
    """`where(C, X, Y)`: the entry of `X` where the boolean array `C` is true, else the entry
    of `Y`; the axes of one input include the others', which are broadcast."""

    kind: Literal["where"] = "where"


BooleanGate = Literal["xor", "and", "or", "not"]


class GateOp(Node):
    """A Boolean gate on arrays of B, entrywise: `xor(A, B)`, `and(A, B)`, `or(A, B)` (the axes
    of one input include the other's, which is broadcast) and `not(A)`. With `axes` (only for
    `xor`), one input reduced along them: `xor[i](A)`, the XOR of its entries, their sum in Z2
    (the reverse of copying a Boolean wire)."""

    kind: Literal["gate"] = "gate"
    gate: BooleanGate
    axes: tuple[str, ...] = ()


class AddOp(Node):
    """Entrywise sum of the inputs; axes missing from an input are broadcast."""

    kind: Literal["add"] = "add"


class MultiplyOp(Node):
    kind: Literal["multiply"] = "multiply"


class Comparison(Node):
    """An affine condition on indices: `sum coefficients[a] * a + offset  OP  0`."""

    coefficients: tuple[tuple[str, int], ...]
    offset: int
    op: Literal[">=", ">", "<=", "<", "==", "!="]
    text: str


class MaskOp(Node):
    """Keep entries where every condition holds (or where a boolean array is true), fill the
    rest with `fill`. `causal[x, y]` is the condition `x >= y`."""

    kind: Literal["mask"] = "mask"
    axes: tuple[str, ...]
    conditions: tuple[Comparison, ...] = ()
    by_array: bool = False
    fill: Float = Field(default=float("-inf"), json_schema_extra={"default": "-Infinity"})
    causal: bool = False


ReduceFunction = Literal["sum", "mean", "max", "min", "logsumexp"]


class ReduceOp(Node):
    kind: Literal["reduce"] = "reduce"
    function: ReduceFunction
    axes: tuple[str, ...]


class ConcatOp(Node):
    """Join inputs end to end: input i's axis `inputs[i]` becomes part of axis `output`."""

    kind: Literal["concat"] = "concat"
    inputs: tuple[str, ...]
    output: str


class SplitOp(Node):
    """Cut axis `input` into consecutive pieces, one output per axis in `outputs`."""

    kind: Literal["split"] = "split"
    input: str
    outputs: tuple[str, ...]


class PadOp(Node):
    """Extend axis `input` by `before` and `after` entries of `value` into axis `output`."""

    kind: Literal["pad"] = "pad"
    input: str
    output: str
    before: int
    after: int
    value: Float = 0.0


class RenameOp(Node):
    kind: Literal["rename"] = "rename"
    mapping: tuple[tuple[str, str], ...]


class ReshapeOp(Node):
    """Merge the `inputs` axes into the `outputs` axes (row-major), or split them."""

    kind: Literal["reshape"] = "reshape"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class IndexValueOp(Node):
    """The value of an index expression at every index: `P[x] = x`, `R[x, y] = x - y`. Entry
    p is `sum coefficients[a] * p_a + offset`, an integer held as a real; no inputs."""

    kind: Literal["index"] = "index"
    coefficients: tuple[tuple[str, int], ...]
    offset: int = 0
    text: str
    """The expression as the source writes it (`x - y`)."""


class IndexTerm(Node):
    """One coordinate a gather reads: `((sum coefficients[a] * p_a + offset) // divisor) %
    modulus` (no modulus: none taken), or, with `array`, the value of the gather's input
    `array` (an index array of datatype N, read at the output's indices of its axis names)."""

    coefficients: tuple[tuple[str, int], ...] = ()
    offset: int = 0
    divisor: int = 1
    modulus: int | None = None
    array: int | None = None
    text: str


class GatherOp(Node):
    """`Y[p] = X[q(p)]` where `X` is input 0 and each coordinate of `q` (one per axis of `X`,
    in its memory order) is an `IndexTerm`: a reindexing that divides indices (`y // 2`),
    takes remainders (`i % n`) or reads index arrays (`X[Src[e], f]`). The other inputs are
    the index arrays."""

    kind: Literal["gather"] = "gather"
    indices: tuple[IndexTerm, ...]


class ScatterAddOp(Node):
    """`Y[Dst[e], f] += M[e, f]`: for each index of `M`, its entry is added into `Y` at the
    coordinate that index array `Dst` (input 1, read at `M`'s indices) holds along axis
    `output` of `Y`; axis `input` of `M` is summed away. Entries of `Y` that nothing reaches
    are zero (a segment sum)."""

    kind: Literal["scatter_add"] = "scatter_add"
    input: str
    output: str


class CallOp(Node):
    """A user definition used as an operation; its extra axes are a batch lift."""

    kind: Literal["call"] = "call"
    definition: str
    instance: str
    """Unique within the calling definition: each call site owns its own parameters, which the
    generated module keeps under this name (e.g. `attention`, `attention_2`)."""
    each: str | None = None
    """`f[each e](X)`: the name of a degree axis whose every index owns its own copy of the
    callee's parameters (experts, heads); None: the lift shares the parameters."""

    @model_serializer(mode="wrap")
    def _without_shared(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A shared lift writes no `each` field: the JSON of such calls stays as it was."""
        data = handler(self)
        if self.each is None and isinstance(data, dict):
            data.pop("each", None)
        return data


class ParameterOp(Node):
    """A learned parameter put onto a wire, to be read as data (`sigmoid(log_a)`, a class
    token, learned queries): no inputs, one parameter port, one output that is the parameter.
    It tiles over nothing, so the array never gains a batch axis."""

    kind: Literal["parameter"] = "parameter"


class BufferOp(Node):
    """A buffer put onto a wire, to be read as data (a fixed table, a running statistic): as
    `ParameterOp`, with the buffer on its one parameter port."""

    kind: Literal["buffer"] = "buffer"


Operator = Annotated[
    Union[
        EinsumOp, LinearOp, EmbeddingOp, SoftmaxOp, NormOp, BatchNormOp, ElementwiseOp, ScaleOp,
        DropoutOp, AddOp, MultiplyOp, MaskOp, ReduceOp, ConcatOp, SplitOp, PadOp, RenameOp,
        ReshapeOp, CallOp, ConstantOp, BinaryOp, WhereOp, ParameterOp, BufferOp, IndexValueOp,
        GatherOp, ScatterAddOp, GateOp,
    ],
    Field(discriminator="kind"),
]

OPERATOR_TYPES: tuple[type[Node], ...] = get_args(get_args(Operator)[0])
"""The operator node types, in the order of `Operator`; each has one declaration in `ncd.ops`."""


# --------------------------------------------------------------------------------------
# Terms: the closed core. Each node states its domain and codomain (tuples of arrays).
# --------------------------------------------------------------------------------------


class TermBase(Node):
    dom: tuple[ArrayType, ...]
    cod: tuple[ArrayType, ...]
    span: Span | None = None


class Identity(TermBase):
    """Carries arrays unchanged (`dom == cod`)."""

    kind: Literal["identity"] = "identity"
    names: tuple[str | None, ...] = ()


class Rearrangement(TermBase):
    """Permute, copy or delete whole arrays: output j is input `mapping[j]`.

    An index used twice is a copy; an index never used is a delete.
    """

    kind: Literal["rearrangement"] = "rearrangement"
    mapping: tuple[int, ...]


class Reindexing(TermBase):
    """`[a, eta] : [a, Q] -> [a, P]` with `Y[p] = X[eta(p)]`: moves data, no arithmetic.

    `eta.codomain` is the input's shape Q, `eta.domain` the output's shape P.
    """

    kind: Literal["reindexing"] = "reindexing"
    eta: StrideMorphism
    name: str | None = None
    source: str | None = None


class Broadcasted(TermBase):
    """A base operation looped over the degree P.

    For every index p of P, the output tiles at p are `op` applied to the input tiles at
    `inputs[i].reindexing(p)`. `params` are inputs that come from learned parameters
    (the parametric-map construction); they are wires of the term like any input.
    """

    kind: Literal["broadcasted"] = "broadcasted"
    op: Operator
    degree: Shape
    inputs: tuple[Port, ...]
    params: tuple[Port, ...] = ()
    outputs: tuple[Port, ...]


class Composed(TermBase):
    """Sequential composition `t0 ; t1 ; ...` in diagrammatic order."""

    kind: Literal["composed"] = "composed"
    terms: tuple[Term, ...]


class Product(TermBase):
    """Parallel product `t0 (x) t1 (x) ...`: domains and codomains concatenate."""

    kind: Literal["product"] = "product"
    terms: tuple[Term, ...]


class CopyOf(Node):
    """Which copy a block is of a block repeated without `shared` (`block "T" x6 { ... }`):
    copy `index` (from 0) of the `copies` copies of the block titled `title`."""

    title: str
    index: int
    copies: int


class Block(TermBase):
    """A titled, coloured group; `repeat` copies of `body` in sequence.

    Semantically transparent. With `shared`, the copies share their parameters. With `copy_of`,
    the block runs its body once as that copy of a repeated block, reading that copy's
    parameters: the backward definition of a repeated block (`ncd.derivative`) runs the
    copies one by one, in the opposite order.
    """

    kind: Literal["block"] = "block"
    title: str
    color: str | None = None
    repeat: int = 1
    shared: bool = False
    copy_of: CopyOf | None = None
    body: Term

    @model_serializer(mode="wrap")
    def _without_copy(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A block that is no copy writes no `copy_of` field: its JSON stays as it was."""
        data = handler(self)
        if self.copy_of is None and isinstance(data, dict):
            data.pop("copy_of", None)
        return data


class Scan(TermBase):
    """A recurrence along `axis`: `carry[l+1], out[l] = step(carry[l], x[l])`.

    The first `carries` arrays of `dom` are initial states; the rest are sequences that carry
    `axis`. `cod` is the final states followed by the per-step outputs stacked along `axis`.
    """

    kind: Literal["scan"] = "scan"
    axis: Axis
    carries: int
    step: Term
    step_name: str | None = None
    reverse: bool = False
    """Run from the last index of `axis` to the first: `carry[l], out[l] = step(carry[l+1],
    x[l])`, the final states those after index 0 (the reverse of a scan, `ncd.derivative`)."""

    @model_serializer(mode="wrap")
    def _omit_forward(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A scan run forward writes no `reverse` field: the JSON of such scans stays as it
        was."""
        data = handler(self)
        if not self.reverse and isinstance(data, dict):
            data.pop("reverse", None)
        return data


class Machine(TermBase):
    """A machine of finite depth along `axis` (Vertechi & Bergomi): the axis is cut into
    consecutive blocks of the sizes `blocks`, solved one after another in that order, and
    `body` (a call of a definition `f`) is run once per block.

    Forward (`backward` false): the blocks lie from the start of the axis. `dom` is (context
    arrays..., Y) and `cod` is (X,), with `body: dom -> cod`. With the state `s` zero, for each
    block `i`: `s[i] := y[i] + f(context, s)[i]` (`s` then holds the blocks solved so far, zero
    elsewhere); X is the final state. So X solves `x = y + g(x)`, `g_i(x) = f(mask_<i x)_i`,
    which is of finite depth by construction.

    Backward (`backward` true): the reverse pass of a forward machine, the blocks listed in the
    reversed order and lying from the end of the axis. `body` is a call of `f`'s backward
    definition, and `dom` is its inputs: (context..., X, G) where X is the forward state and G
    the gradient of the forward output; `cod` is its outputs: the gradients of the real
    context arrays, of X, then of `f`'s parameters. With the total `t = G`, for each block `i`
    (`m` masks the axis to the entries before block `i`): `dy[i] := t[i]`; `outs := body(
    context, m x, dy on block i only)`; `t += m outs[X]`. The gradient of X in `cod` is `dy`
    (the solution of `dy = G + J^T dy`); the others are `outs` summed over the blocks.
    """

    kind: Literal["machine"] = "machine"
    axis: Axis
    blocks: tuple[int, ...]
    backward: bool = False
    body: Term
    body_name: str | None = None

    def ranges(self, length: int) -> tuple[tuple[int, int], ...]:
        """The `(start, stop)` of each block along the axis of `length` entries, in the order
        they are solved."""
        found: list[tuple[int, int]] = []
        start = length if self.backward else 0
        for size in self.blocks:
            if self.backward:
                found.append((start - size, start))
                start -= size
            else:
                found.append((start, start + size))
                start += size
        return tuple(found)

    @property
    def state_output(self) -> int:
        """The position in `cod` of the machine's state (the forward X; in the backward pass
        the gradient of Y, after those of the real context arrays)."""
        if not self.backward:
            return 0
        return sum(1 for a in self.dom[:-2] if a.dtype.kind == "R")


Term = Annotated[
    Union[Identity, Rearrangement, Reindexing, Broadcasted, Composed, Product, Block, Scan,
          Machine],
    Field(discriminator="kind"),
]

TERM_TYPES: tuple[type[TermBase], ...] = get_args(get_args(Term)[0])
"""The term node types, in the order of `Term`."""


# --------------------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------------------


class Variable(Node):
    name: str
    array: ArrayType


class Definition(Node):
    """A typed definition: inputs, outputs, parameters and the term that computes it."""

    name: str
    doc: str | None = None
    inputs: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    params: tuple[Parameter, ...] = ()
    body: Term
    span: Span | None = None
    leading_dims: bool = True
    """Whether the compiled module takes extra leading (batch) dims on its inputs, each batch
    element a call of its own. False for the backward definition of a training-mode
    `batchnorm`, whose forward module pools such dims into its statistics: the backward
    definition's statistics are per call, so its module refuses them rather than differ."""

    @model_serializer(mode="wrap")
    def _omit_default_dims(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A definition that takes leading dims writes no `leading_dims` field: the JSON of
        such definitions stays as it was."""
        data = handler(self)
        if self.leading_dims and isinstance(data, dict):
            data.pop("leading_dims", None)
        return data

    @property
    def domain(self) -> tuple[ArrayType, ...]:
        return tuple(v.array for v in self.inputs)

    @property
    def codomain(self) -> tuple[ArrayType, ...]:
        return tuple(v.array for v in self.outputs)


# --------------------------------------------------------------------------------------
# Training set-ups: training as parametric lenses
# --------------------------------------------------------------------------------------


class Loss(Node):
    """What a training set-up minimises (a loss declared in `ncd.learning`): the axes it works
    on (the class axis of a cross-entropy) and the array of targets it compares the model's
    output with."""

    name: str
    axes: tuple[Axis, ...] = ()
    target: ArrayType
    span: Span | None = None


class HyperParameter(Node):
    """A hyper-parameter of an optimiser, named as in `torch.optim`: one number, or a tuple of
    numbers (Adam's `betas`)."""

    name: str
    values: tuple[Float, ...]


class Optimiser(Node):
    """How parameters are updated from their gradients (an optimiser declared in
    `ncd.learning`), with every hyper-parameter: those written, the rest at their defaults."""

    name: str
    hyper: tuple[HyperParameter, ...]
    span: Span | None = None


class StateWire(Node):
    """An array of the optimiser's state: a wire that enters a training step and leaves it
    updated (Adam's `exp_avg` of `W_in`). `parameter` is the parameter it belongs to and it
    has that parameter's type; without one it is the optimiser's own (the count of steps)."""

    name: str
    parameter: str | None = None
    array: ArrayType
    init: Float = 0.0


class Training(Node):
    """A training step as a composition of lenses: the model's forward pass, the loss, the
    reverse pass back to the parameters, and the optimiser on the parameter wires.

    `input` and `output` are the model's; `target` (in `loss`) is the other input of a step.
    `params` are the parameters the optimiser updates (the model's and those of the
    definitions it calls, by the name each declares), `state` the optimiser's state wires."""

    name: str
    doc: str | None = None
    model: str
    input: Variable
    output: Variable
    loss: Loss
    optimiser: Optimiser
    params: tuple[Parameter, ...]
    state: tuple[StateWire, ...]
    span: Span | None = None


class Program(Node):
    """A checked file: its axes (with sizes after overrides), its definitions in source
    order, imported ones first, and the training set-ups of the file loaded."""

    source: str
    doc: str | None = None
    axes: tuple[Axis, ...]
    definitions: tuple[Definition, ...]
    trainings: tuple[Training, ...] = ()

    @model_serializer(mode="wrap")
    def _omit_no_trainings(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A program without training set-ups has no `trainings` key, as before they existed."""
        data = handler(self)
        if isinstance(data, dict) and not self.trainings:
            data.pop("trainings", None)
        return data

    def training(self, name: str) -> Training:
        """The training set-up called `name` (a `KeyError` when there is none)."""
        for training in self.trainings:
            if training.name == name:
                return training
        raise KeyError(name)

    def definition(self, name: str) -> Definition:
        """The first definition called `name` (a `KeyError` when there is none)."""
        # An index by name, built at the first look-up and kept in the instance's `__dict__`
        # beside the fields: not a field, so the schema, JSON, equality and hash are those of
        # the fields alone. It remembers the tuple it indexes: a copy with other definitions
        # (`model_copy(update=...)` copies `__dict__`) builds its own.
        cached: tuple[tuple[Definition, ...], dict[str, Definition]] | None = \
            self.__dict__.get(_DEFINITION_INDEX)
        if cached is None or cached[0] is not self.definitions:
            index: dict[str, Definition] = {}
            for definition in self.definitions:
                index.setdefault(definition.name, definition)
            cached = (self.definitions, index)
            object.__setattr__(self, _DEFINITION_INDEX, cached)
        return cached[1][name]


_DEFINITION_INDEX = "_definition_index"




def kind_of(node: type[Node]) -> str:
    """The `kind` tag of a node type (`EinsumOp` -> `einsum`)."""
    kind: str = node.model_fields["kind"].default
    return kind


OPERATOR_KINDS: tuple[str, ...] = tuple(kind_of(node) for node in OPERATOR_TYPES)
TERM_KINDS: tuple[str, ...] = tuple(kind_of(node) for node in TERM_TYPES)


def children(term: Term) -> tuple[Term, ...]:
    """The direct subterms of a term."""
    match term:
        case Composed(terms=terms) | Product(terms=terms):
            return terms
        case Block(body=body):
            return (body,)
        case Scan(step=step):
            return (step,)
        case Machine(body=body):
            return (body,)
        case Identity() | Rearrangement() | Reindexing() | Broadcasted():
            return ()
    assert_never(term)


# The terms without subterms; an operation (the most common term) first.
_LEAVES = (Broadcasted, Reindexing, Rearrangement, Identity)


def walk(term: Term) -> Iterator[Term]:
    """Every subterm, parents before children, in order."""
    # With a stack of the terms still to visit, not a generator per level: a term deep in
    # the tree is passed up by one generator, not by one per level above it.
    stack = [term]
    while stack:
        current = stack.pop()
        yield current
        if not isinstance(current, _LEAVES):
            stack.extend(reversed(children(current)))


def strip_spans(value: object) -> object:
    """The structure of an IR value with every span left out, for structural comparison: a
    node becomes its type's name followed by its other fields' values (plain tuples compare
    much faster than rebuilt nodes)."""
    if isinstance(value, Node):
        return (type(value).__name__, *(strip_spans(getattr(value, name))
                                        for name in type(value).model_fields if name != "span"))
    if isinstance(value, tuple):
        return tuple(strip_spans(v) for v in value)
    return value
