"""What a lowering works with: arrays as code, the labels of their dims, and the services of
the emitter that writes one `forward`.

A declaration's lowering (`Declaration.lower`) writes the PyTorch source of one broadcasted
operation. It is written against the `Emitter` protocol, so it lives beside the operator's
other facts and needs nothing of the compiler package (`compilers.forward.ForwardEmitter`
implements the protocol). A lowering reads its operands in the layout it wants (`single`,
`normalized`, `contraction`), builds one expression, and hands it to `finish`, which moves
the dims to the output's memory order and names the result after the source variable.

Conventions: an array is a tensor whose trailing dims are its declared axes in memory order,
after any number of leading batch dims, so every dim is addressed from the end (`dim=-1`).
This module writes no code and imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from ncd import ir

Label = Hashable
"""What one dim stands for: `target_label(name)` (a target axis of the operation),
`degree_label(i)` (index i of the loop's degree), or any other hashable a lowering chooses
(a linear map gives an input axis and its weight axis one shared label, so they contract)."""


def target_label(name: str) -> Label:
    return ("target", name)


def degree_label(index: int) -> Label:
    return ("degree", index)


Missing = Literal["unsqueeze", "expand"]
"""What a dim of the wanted layout that an operand lacks becomes: a size-1 dim (broadcast by
the arithmetic) or that dim expanded to its size (a real array, for functions that need one)."""


def size_factor(code: str) -> str:
    """A size's code as a factor of a product: parenthesised unless it is an atom already (a
    name, a number, or one pair of brackets around the whole)."""
    if code.isidentifier() or code.isdecimal():
        return code
    depth = 0
    for index, character in enumerate(code):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth == 0 and index < len(code) - 1:
            return f"({code})"
    return code if code.startswith("(") else f"({code})"


@dataclass(frozen=True)
class TensorCode:
    """An array during code generation: the Python expression that holds it and its type.

    `batched` is False only for arrays computed from parameters alone (they have no leading
    batch dims); anything that depends on an input of the definition may carry them.
    """

    code: str
    array: ir.ArrayType
    batched: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return self.array.names

    @property
    def rank(self) -> int:
        return len(self.array.shape.axes)


DefaultInit = Literal["fan_in_uniform", "normal", "ones", "zeros"]
"""How a parameter starts when its `param` declaration names no initialiser: uniform in
±fan_in^-1/2 (as `nn.Linear`), standard normal (as `nn.Embedding`), ones or zeros."""


@dataclass(frozen=True)
class Role:
    """What a parameter does for the operator that reads it, which decides its default
    initialisation (`Declaration.roles` gives one per parameter port)."""

    init: DefaultInit
    like: str | None = None
    """The PyTorch module whose default this follows, named in a comment (`nn.Linear`)."""
    fan_in: int | None = None
    fan_out: int | None = None


@dataclass(frozen=True)
class Submodule:
    """A called definition as the calling module holds it."""

    code: str
    """The expression of the submodule (`self.attention`)."""
    definition: ir.Definition
    outputs_batched: tuple[bool, ...]
    """Per output: whether it depends on an input (False: computed from parameters alone)."""


_PLAIN_BOUND = re.compile(r"-?\w*")  # a name or a number (or nothing)


def slice_text(start: str, stop: str, step: str = "") -> str:
    """`start:stop:step` as a formatter (ruff, black) writes it: the colons spaced when a
    bound is more than a name or a number (`1 : (n + 1)`), tight otherwise (`1:n`, `:n`)."""
    if not (start or stop or step):
        return ":"  # the whole dim: most views read every dim so
    parts = [start, stop, *([step] if step else [])]
    if all(_PLAIN_BOUND.fullmatch(part) for part in parts):
        return ":".join(parts)
    return " : ".join(parts).strip()


def dims_test(code: str, dims: int) -> str:
    """The test of `Emitter.finish_either` that the tensor `code` has exactly `dims` dims (no
    leading batch dims, or exactly one, as a kernel takes it). While `torch.fx` traces, the
    number is a proxy that an `if` cannot read: the test is False and the general code runs
    (`torch.compile` and `torch.export` read it and keep one branch)."""
    return f"not torch.fx._symbolic_trace.is_fx_symbolic_tracing() and {code}.dim() == {dims}"


def float_literal(value: float) -> str:
    """A float as Python source, infinities and NaN included."""
    if value != value:
        return 'float("nan")'
    if value in (float("inf"), float("-inf")):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(float(value))


class Emitter(Protocol):
    """The services of the emitter of one `forward` that a lowering may use."""

    def error(self, message: str) -> Exception:
        """The exception to raise for IR the compiler cannot compile (a broken invariant)."""
        ...

    def statement(self, line: str, comment: str | None = None) -> None:
        """Write one line of code with its comment."""
        ...

    def too_long(self, line: str) -> bool:
        """Whether `line`, at the current indentation, is longer than generated code keeps."""
        ...

    def branch(self) -> AbstractContextManager[None]:
        """The statements written inside it one level deeper: the body of an `if` or `else`
        (checks made before it hold inside, those made inside are forgotten after it)."""
        ...

    def assign(self, hint: str | None, expr: str, comment: str | None = None,
               fallback: str = "value") -> str:
        """Write `name = expr` under a fresh name made from `hint`; returns the name."""
        ...

    def fresh(self, hint: str) -> str:
        """A fresh local name made from `hint`."""
        ...

    def functional_call(self, name: str) -> str:
        """`F.name`: a function of `torch.nn.functional`, which the file then imports as `F`.
        Every use of `F` in a lowering goes through here."""
        ...

    def size(self, size: ir.SizeExpr) -> str:
        """The code of a size: an integer, or an expression of sizes read at run time."""
        ...

    def size_product(self, sizes: Sequence[ir.SizeExpr]) -> str:
        """The code of a product of sizes (1 for none), its known factors folded into one and
        each other factor parenthesised where it is not an atom (`(x + 3) // 3 + 1` times 3
        is `((x + 3) // 3 + 1) * 3`)."""
        ...

    def first_check(self, key: str) -> bool:
        """Whether a run-time check named `key` is written here for the first time where every
        later statement runs after it (the top level of `forward`); False when one there has
        already made it, so that it need not be made again."""
        ...

    def same_size(self, first: ir.SizeExpr, second: ir.SizeExpr) -> bool:
        """Whether two sizes are equal for every size the program allows (proved)."""
        ...

    def source_note(self, span: ir.Span | None) -> str:
        """` (line N)`: where in the source a node came from."""
        ...

    def output_labels(self, port: ir.Port) -> list[Label]:
        """The label of each dim of an output port's array, in its memory order."""
        ...

    def plain_labels(self, value: TensorCode, port: ir.Port) -> list[Label] | None:
        """The labels of `value`'s dims when each is read as it is (no view needed)."""
        ...

    def sizes_of(self, term: ir.Broadcasted, ports: Sequence[ir.Port]
                 ) -> dict[Label, ir.SizeExpr]:
        """The size of each degree label and of each target label of `ports`."""
        ...

    def single(self, term: ir.Broadcasted, inputs: Sequence[TensorCode],
               order: Sequence[Label] | None = None) -> tuple[str, list[Label]]:
        """The one data input read in `order` (the output's layout by default); missing dims
        are expanded. Returns the expression and the labels of its dims."""
        ...

    def normalized(self, term: ir.Broadcasted, value: TensorCode, port: ir.Port,
                   order: Sequence[Label], missing: Missing,
                   leading_from: TensorCode | None = None) -> str:
        """`value` (read through `port`) with its dims in `order`; `leading_from` gives the
        batch dims to an operand computed from parameters alone."""
        ...

    def contraction(self, term: ir.Broadcasted, operands: Sequence[tuple[TensorCode, ir.Port]],
                    relabel: Sequence[Mapping[Label, Label]] | None = None) -> str:
        """`torch.einsum` of the operands, dims in the first output's layout; labels absent
        from the output are summed. `relabel[i]` renames operand i's labels."""
        ...

    def parameters(self, term: ir.Broadcasted) -> list[TensorCode]:
        """The parameters of `term`, registered with the module with the roles its operator's
        declaration gives them, in port order."""
        ...

    def submodule(self, op: ir.CallOp, copies: ir.SizeExpr | None = None) -> Submodule:
        """The module of a called definition, registered as a child of the current module;
        with `copies`, an `nn.ModuleList` of that many independent copies."""
        ...

    def finish(self, term: ir.Broadcasted, expr: str, labels: Sequence[Label], index: int = 0,
               comment: str = "", batched: bool = True, fallback: str = "value") -> TensorCode:
        """Move `expr`'s dims from `labels` to output `index`'s memory order, and name it."""
        ...

    def finish_choice(self, term: ir.Broadcasted, choices: Sequence[tuple[str, str]],
                      otherwise: str, labels: Sequence[Label], index: int = 0,
                      comment: str = "", batched: bool = True,
                      fallback: str = "value") -> TensorCode:
        """As `finish`, for a result that is the value of the first of `choices` (value,
        test) whose test holds, else `otherwise`: one statement, a chain of conditional
        expressions (a straight line of code keeps the liveness pass on its fast path), laid
        out as the formatter lays it out from its parts."""
        ...

    def finish_either(self, term: ir.Broadcasted, test: str, fast: Callable[[], str],
                      general: Callable[[], str], labels: Sequence[Label], index: int = 0,
                      comment: str = "", batched: bool = True,
                      fallback: str = "value") -> TensorCode:
        """As `finish`, for a result computed one way when `test` holds (`dims_test`: a call
        that takes the array as it is) and another otherwise (the array reshaped around the
        call): `if test:` / `else:`, each branch binding the same name to what its function
        returns (a function may write statements first; they land inside its branch)."""
        ...

    def permute(self, expr: str, labels: Sequence[Label], order: Sequence[Label]) -> str:
        """`expr` with its trailing dims moved from `labels` to `order`."""
        ...

    def tuple_text(self, items: Sequence[str]) -> str:
        """A Python tuple of the items (`(3,)`, `(a, b)`)."""
        ...

    def anchor(self) -> tuple[str, str]:
        """The code of the device and of the real dtype that an array built from nothing
        (`torch.arange`) takes: those of the definition's inputs."""
        ...

    def leading_shape(self, value: TensorCode) -> str:
        """The code of `value`'s leading (batch) dims, as a `torch.Size`."""
        ...
