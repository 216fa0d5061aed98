"""One `torch.einsum` call for the operands of a contraction, each read through its port, with
letters taken from the axis names; more than 52 distinct axes are grouped into merged dims."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ncd import ir
from ncd.contraction_order import Path, contraction_path, representative
from ncd.ops.lowering import Label, TensorCode, degree_label, target_label
from ncd.sizes import SizeLimit

from .errors import CompileError
from .labels import output_labels, port_rows
from .views import permute_text, size_one_dims, tuple_text

if TYPE_CHECKING:
    from .forward import ForwardEmitter

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

GroupKey = tuple[tuple[int, ...], bool]
"""Axes of a large einsum that can be merged: the operands they occur in, and whether the
output has them."""


def contraction(emitter: ForwardEmitter, term: ir.Broadcasted,
                operands: Sequence[tuple[TensorCode, ir.Port]],
                relabel: Sequence[Mapping[Label, Label]] | None = None) -> str:
    """`torch.einsum` of the operands, indexed by label; labels absent from the output are
    summed. A plain port is indexed directly (a repeated letter is a diagonal); any other
    reindexing is turned into a view first. `relabel[i]` renames operand i's labels (a
    linear map contracts input axes with differently named weight axes)."""
    out_labels = output_labels(term.outputs[0])
    read: list[tuple[list[Label], str, bool]] = []  # labels, code, batched per operand
    label_sizes: dict[Label, ir.SizeExpr] = {}
    for index, (value, port) in enumerate(operands):
        rows = port_rows(value, port)
        if all(row.is_plain for row in rows):
            labels = [row.terms[0][0] for row in rows]
            code = value.code
            sizes = dict(zip(labels, (a.size for a in value.array.shape.axes), strict=True))
        else:
            order = [degree_label(i) for i in range(len(term.degree.axes))] + [
                target_label(t) for t in port.targets]
            sizes = emitter.sizes_of(term, [port])
            view = emitter.view(value, rows, sizes, order, "drop")
            labels, code = list(view.labels), view.expr
        if relabel is not None:
            labels = [relabel[index].get(label, label) for label in labels]
            sizes = {relabel[index].get(label, label): size for label, size in sizes.items()}
        label_sizes.update((label, sizes[label]) for label in labels if label in sizes)
        read.append((labels, code, value.batched))
    distinct = {*out_labels, *(label for labels, _, _ in read for label in labels)}
    if len(distinct) > len(_LETTERS):
        return _grouped_contraction(emitter, term, operands, read, out_labels, label_sizes)
    letters: dict[Label, str] = {}

    def letter(label: Label) -> str:
        if label not in letters:
            name = _axis_name(term, label).removesuffix("_in")
            taken = set(letters.values())
            preferred = [c for c in name if c in _LETTERS] + list(_LETTERS)
            letters[label] = next(c for c in preferred if c not in taken)
        return letters[label]

    for label in out_labels:
        letter(label)
    subscripts = [("..." if batched else "") + "".join(map(letter, labels))
                  for labels, _, batched in read]
    arguments = [code for _, code, _ in read]
    if len(subscripts) == 1 and subscripts[0] == (
            ("..." if operands[0][0].batched else "") + "".join(map(letter, out_labels))):
        return arguments[0]  # one operand read as it is: no einsum needed
    batched = any(value.batched for value, _ in operands)
    real = all(value.array.dtype.kind == "R" for value, _ in operands)
    simpler = (reduction(read, out_labels) if real else None) or \
        broadcast_product(read, out_labels) or _matrix_product(
        read, out_labels, lambda label: emitter.size(label_sizes[label]))
    if simpler is not None:
        return simpler
    if len(read) >= 3:
        path = _path(emitter, read, out_labels, label_sizes)
        if path is not None:
            return _pairwise(emitter, term, read, path, letter)
    result = ("..." if batched else "") + "".join(letter(label) for label in out_labels)
    equation = f"{','.join(subscripts)}->{result}"
    # The equation holds only letters, commas, dots and "->": safe between double quotes.
    return f'torch.einsum("{equation}", {", ".join(arguments)})'


def _operand(code: str) -> str:
    """`code` as an operand of `*` or `@`: parenthesised when it is itself an operation (a
    space or a sign outside brackets)."""
    depth = 0
    for index, character in enumerate(code):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(character, 0)
        if depth == 0 and (character == " " or (index == 0 and character in "-~")):
            return f"({code})"
    return code


def reduction(read: Sequence[tuple[list[Label], str, bool]],
              out_labels: Sequence[Label]) -> str | None:
    """A sum of one real array over some of its axes (`Z[p, b] = sum(c) Y[b, c, p]`) as
    `Y.sum(-2)`, the kept axes then moved into the output's order (a view). `torch.einsum`
    parses its equation at every call (4.7 µs against 1.8 at a small size, measured alone),
    and with the output's axes in another order it reduced along the permuted layout: 28 ms
    against 0.5 for `(64, 64, 32, 32)` summed over its second axis. None for several operands
    or a diagonal (a repeated label)."""
    if len(read) != 1 or not _reducible(read[0][0], out_labels):
        return None
    labels, code, _ = read[0]
    summed = [str(i - len(labels)) for i, label in enumerate(labels) if label not in out_labels]
    if summed:
        code = f"{_operand(code)}.sum({summed[0] if len(summed) == 1 else tuple_text(summed)})"
    return permute_text(code, [label for label in labels if label in out_labels], out_labels)


def _reducible(labels: Sequence[Label], out_labels: Sequence[Label]) -> bool:
    """Whether a sum of one array read with `labels` keeps only axes it has, none repeated."""
    return len(set(labels)) == len(labels) and set(out_labels) <= set(labels)


def broadcast_product(read: Sequence[tuple[list[Label], str, bool]],
                       out_labels: Sequence[Label]) -> str | None:
    """A contraction that sums nothing (an outer product, `x, j -> x j`) as an entrywise
    product of size-1-extended views, which is what `torch.einsum` computes with more
    reshapes and permutes around it; None when something is summed or an operand has a
    diagonal."""
    if len(read) < 2 or any(len(set(labels)) != len(labels) or
                            not set(labels) <= set(out_labels) for labels, _, _ in read):
        return None
    if {label for labels, _, _ in read for label in labels} != set(out_labels):
        return None
    return " * ".join(_operand(broadcast_view(labels, code, batched, out_labels))
                      for labels, code, batched in read)


def broadcast_view(labels: Sequence[Label], code: str, batched: bool,
                   out_labels: Sequence[Label]) -> str:
    """An operand read with `labels` (each an output axis, none repeated), as a view that
    broadcasts against the output's axes: permuted into their order, with size-1 dims where
    it lacks one."""
    present = [label for label in out_labels if label in labels]
    if not present and not batched:  # a scalar (one copy's weight): it broadcasts as it is
        return code
    code = permute_text(code, labels, present)
    # a batch dim leads: every output axis before it needs its dim; otherwise the
    # axes before the operand's first are broadcast from the left
    start = 0 if batched else out_labels.index(present[0])
    index = [":" if label in labels else "None" for label in out_labels[start:]]
    if "None" in index:
        if not batched:  # indexed from the left: trailing dims need no `:`
            index = index[:max(i for i, item in enumerate(index) if item == "None") + 1]
        # a batched operand is indexed from the right, after its batch dims
        code = size_one_dims(code, index, from_right=batched)
    return code


@dataclass(frozen=True)
class MatrixForm:
    """A contraction of two operands that is one matrix product: operand `matrix` (no batch
    dims) meets the last `count` axes of operand `array` in their order, laid out
    `[inputs..., outputs...]` or (`rows_first`) `[outputs..., inputs...]`; the output is
    the array's other axes and then the matrix's `outputs`."""

    array: int
    matrix: int
    count: int
    outputs: tuple[Label, ...]
    rows_first: bool


def matrix_form(read: Sequence[tuple[Sequence[Label], bool]], out_labels: Sequence[Label]
                ) -> MatrixForm | None:
    """The matrix product a two-operand contraction is, from each operand's labels and
    whether it has batch dims; None when it is not one."""
    if len(read) != 2:
        return None
    for array, matrix in ((0, 1), (1, 0)):
        (labels, _), (weight, weight_batched) = read[array], read[matrix]
        if weight_batched or not labels or len(set(labels)) != len(labels) or \
                len(set(weight)) != len(weight):
            continue
        summed = [label for label in labels if label in weight]
        count = len(summed)
        kept = [label for label in weight if label not in summed]
        if not count or list(labels[len(labels) - count:]) != summed or not kept or \
                any(label in out_labels for label in summed) or \
                list(out_labels) != [*labels[:len(labels) - count], *kept]:
            continue
        rows_first = list(weight) == [*kept, *summed]
        if rows_first or list(weight) == [*summed, *kept]:
            return MatrixForm(array, matrix, count, tuple(kept), rows_first)
    return None


def _plain_reads(term: ir.Broadcasted) -> list[tuple[Sequence[Label], bool]] | None:
    """Each operand's labels and whether it has batch dims (the inputs do, the parameters
    not), when every operand is read plainly; None otherwise."""
    read: list[tuple[Sequence[Label], bool]] = []
    for port, batched in [*((p, True) for p in term.inputs), *((p, False) for p in term.params)]:
        rows = port_rows(TensorCode("", port.array, batched), port)
        if not all(row.is_plain for row in rows):
            return None
        read.append(([row.terms[0][0] for row in rows], batched))
    return read


def matrix_form_of(term: ir.Broadcasted) -> MatrixForm | None:
    """`matrix_form` of a contraction whose operands are read plainly, as the compiler
    lowers it."""
    read = _plain_reads(term)
    return None if read is None else matrix_form(read, output_labels(term.outputs[0]))


def reduction_of(term: ir.Broadcasted) -> bool:
    """Whether the compiler writes a contraction as `reduction`: one real operand read
    plainly, summed over some of its axes."""
    read = _plain_reads(term)
    if read is None or len(read) != 1 or [*term.inputs, *term.params][0].array.dtype.kind != "R":
        return False
    out_labels = output_labels(term.outputs[0])
    return _reducible(read[0][0], out_labels) and len(out_labels) < len(read[0][0])


def _matrix_product(read: Sequence[tuple[list[Label], str, bool]],
                    out_labels: Sequence[Label], size: Callable[[Label], str]) -> str | None:
    """One matrix product (`matrix_form`): `X @ M`, or `X @ M.T` for a weight laid out
    `[outputs..., inputs...]` as `nn.Linear` keeps it, several trailing or output axes
    flattened into one dim first (`X.flatten(-3) @ W.flatten(1).T`, views of contiguous
    arrays) and the output split again (`.unflatten(-1, ...)`); `size(label)` is the code of
    an output axis's size. `torch.matmul` folds the leading dims into its rows, where
    `torch.einsum` permutes, copies and runs a batched product."""
    form = matrix_form([(labels, batched) for labels, _, batched in read], out_labels)
    if form is None:
        return None
    code, weight = _operand(read[form.array][1]), _operand(read[form.matrix][1])
    operand = code if form.count == 1 else f"{code}.flatten({-form.count})"
    outputs = len(form.outputs)
    first, second = (outputs, form.count) if form.rows_first else (form.count, outputs)
    if second > 1:
        weight = f"{weight}.flatten({first})"
    if first > 1:
        weight = f"{weight}.flatten(0, {first - 1})"
    expr = f"{operand} @ {weight}" + (".T" if form.rows_first else "")
    if outputs > 1:
        expr = f"({expr}).unflatten(-1, {tuple_text([size(label) for label in form.outputs])})"
    return expr


def _path(emitter: ForwardEmitter, read: Sequence[tuple[list[Label], str, bool]],
          out_labels: Sequence[Label], label_sizes: Mapping[Label, ir.SizeExpr]
          ) -> Path | None:
    """The cheapest order of pairwise contractions (`ncd.contraction_order`), with the sizes
    `ncd stats` counts with; None when a size is beyond the size algebra."""
    try:
        sizes = {label: representative(emitter.sizes.polynomial(size))
                 for label, size in label_sizes.items()}
    except SizeLimit:
        return None
    if any(label not in sizes for labels, _, _ in read for label in labels):
        return None
    return contraction_path([labels for labels, _, _ in read], out_labels, sizes)


def _pairwise(emitter: ForwardEmitter, term: ir.Broadcasted,
              read: Sequence[tuple[list[Label], str, bool]], path: Path,
              letter: Callable[[Label], str]) -> str:
    """The contraction as one `torch.einsum` of two arrays per step, in the order of `path`:
    each intermediate a local of its own, the last step the expression returned."""
    arrays: list[tuple[Sequence[Label], str, bool]] = [
        (labels, code, batched) for labels, code, batched in read]
    hint = f"{term.outputs[0].name or 'product'}_partial"
    expr = ""
    for index, step in enumerate(path.steps):
        left, right = arrays[step.left], arrays[step.right]
        batched = left[2] or right[2]
        subscripts = [("..." if b else "") + "".join(map(letter, labels))
                      for labels, _, b in (left, right)]
        result = ("..." if batched else "") + "".join(map(letter, step.labels))
        expr = f'torch.einsum("{",".join(subscripts)}->{result}", {left[1]}, {right[1]})'
        if index == len(path.steps) - 1:
            break
        name = emitter.assign(hint, expr, f"step {index + 1} of {len(path.steps)} (cheapest "
                              "order)", fallback="partial")
        arrays.append((step.labels, name, batched))
    return expr


def _axis_name(term: ir.Broadcasted, label: Label) -> str:
    """The name of the axis a label stands for: its einsum letter is taken from it."""
    if isinstance(label, tuple) and len(label) == 2:
        kind, key = label
        if kind == "degree" and isinstance(key, int):
            return term.degree.axes[key].name
        return str(key)
    return str(label)


def _grouped_contraction(emitter: ForwardEmitter, term: ir.Broadcasted,
                         operands: Sequence[tuple[TensorCode, ir.Port]],
                         read: Sequence[tuple[list[Label], str, bool]],
                         out_labels: Sequence[Label],
                         label_sizes: dict[Label, ir.SizeExpr]) -> str:
    """An einsum with more distinct axes than `torch.einsum` has letters (52): axes that
    occur in the same operands and the output are merged into one dim (a permute and a
    `flatten` per operand), contracted, and split again (`unflatten`, a permute)."""
    read = list(read)
    for index, (labels, _, batched) in enumerate(read):
        if len(set(labels)) != len(labels):  # a diagonal: take it as a view first
            value, port = operands[index]
            rows = port_rows(value, port)
            originals = [row.terms[0][0] for row in rows]
            renamed = dict(zip(originals, labels, strict=True))
            view = emitter.view(value, rows, emitter.sizes_of(term, [port]),
                                list(dict.fromkeys(originals)), "drop")
            read[index] = ([renamed[label] for label in view.labels], view.expr, batched)
    signature: dict[Label, GroupKey] = {}
    for label in [*out_labels, *(label for labels, _, _ in read for label in labels)]:
        signature[label] = (tuple(i for i, (labels, _, _) in enumerate(read)
                                  if label in labels), label in out_labels)
    groups: dict[GroupKey, list[Label]] = {}
    for label, key in signature.items():
        groups.setdefault(key, []).append(label)
    if len(groups) > len(_LETTERS):
        raise CompileError(f"an einsum whose {len(signature)} axes fall into "
                           f"{len(groups)} groups cannot be written with 52 letters")
    letter = {key: _LETTERS[i] for i, key in enumerate(groups)}

    def merged(code: str, labels: Sequence[Label], keys: Sequence[GroupKey]) -> str:
        ordered = [label for key in keys for label in groups[key]]
        code = permute_text(code, labels, ordered)
        after = 0  # dims to the right of the group being merged, already merged
        for key in reversed(keys):
            width = len(groups[key])
            if width > 1:
                code = f"{code}.flatten({-after - width}, {-after - 1})"
            after += 1
        return code

    subscripts: list[str] = []
    arguments: list[str] = []
    for index, (labels, code, batched) in enumerate(read):
        keys = [key for key in groups if index in key[0]]
        subscripts.append(("..." if batched else "") + "".join(letter[k] for k in keys))
        arguments.append(merged(code, labels, keys))
    out_keys = [key for key in groups if key[1]]
    out_keys.sort(key=lambda key: min(out_labels.index(label) for label in groups[key]))
    batched = any(value.batched for value, _ in operands)
    result = ("..." if batched else "") + "".join(letter[k] for k in out_keys)
    expr = f'torch.einsum("{",".join(subscripts)}->{result}", {", ".join(arguments)})'
    after = 0
    for key in reversed(out_keys):
        width = len(groups[key])
        if width > 1:
            shape = tuple_text([emitter.size(label_sizes[label]) for label in groups[key]])
            expr = f"{expr}.unflatten({-after - 1}, {shape})"
        after += width
    grouped = [label for key in out_keys for label in groups[key]]
    return permute_text(expr, grouped, out_labels)
