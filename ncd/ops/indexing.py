"""Indices as data: the values of index expressions (`P[x] = x`), reads through indices that
divide, take remainders or come from index arrays (`X[b, y // 2]`, `X[Src[e], f]`), and the
sum of entries into the places an index array names (`scatter_add[e -> v](M, Dst)`).

The first two are made by tensor equations (`ncd.equations`); `scatter_add` is an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ncd import ir
from ncd import syntax as s
from ncd.context import Value, array
from ncd.elision import formula
from ncd.sizes import from_ir

from .arguments import arguments, bracket_arrows, option_error, reject_items, replace_axes
from .declaration import (
    Box,
    Caption,
    Declaration,
    Gradients,
    Surface,
    Unsupported,
    declare,
    no_parameters,
)
from .facts import (
    ZERO,
    Break,
    Carried,
    Carry,
    Cost,
    CostSizes,
    SymmetryCalls,
    Verdict,
    free,
    input_entries,
    positional,
)
from .lowering import (
    Emitter,
    Label,
    TensorCode,
    degree_label,
    dims_test,
    target_label,
)

if TYPE_CHECKING:
    from ncd.derivative import Reverser
    from ncd.elaborate import DefinitionBuilder


def _arange(emit: Emitter, size: ir.SizeExpr, position: int, rank: int, real: bool) -> str:
    """`torch.arange(n)` laid along dim `position` of `rank` trailing dims."""
    device, dtype = emit.anchor()
    kind = f", dtype={dtype}" if real else ""
    code = f"torch.arange({emit.size(size)}, device={device}{kind})"
    if rank > 1:
        shape = ["1"] * rank
        shape[position] = "-1"
        code += f".view({', '.join(shape)})"
    return code


def _affine_code(emit: Emitter, coefficients: Sequence[tuple[str, int]], offset: int,
                 axes: Sequence[ir.Axis], real: bool) -> str:
    names = [axis.name for axis in axes]
    parts: list[str] = []
    for name, coefficient in coefficients:
        position = names.index(name)
        index = _arange(emit, axes[position].size, position, len(axes), real)
        if len(coefficients) > 1:  # each position on a line of its own, the sum after them
            index = emit.assign(f"{name}_index", index, fallback="index")
        magnitude = abs(coefficient)
        term = index if magnitude == 1 else f"{magnitude} * {index}"
        parts.append(("- " if coefficient < 0 else "+ " if parts else "") + term)
    if offset or not parts:
        parts.append(f"{'-' if offset < 0 else '+'} {abs(offset)}" if parts else str(offset))
    return " ".join(parts)


# ---------------------------------------------------------------------------------------
# index values
# ---------------------------------------------------------------------------------------


def _index_value_lower(emit: Emitter, term: ir.Broadcasted, op: ir.IndexValueOp,
                       inputs: list[TensorCode]) -> list[TensorCode]:
    out = term.outputs[0].array
    axes = out.shape.axes
    expr = _affine_code(emit, op.coefficients, op.offset, axes, True)
    if not op.coefficients:
        device, dtype = emit.anchor()
        expr = f"torch.full({emit.tuple_text([emit.size(a.size) for a in axes])}, " \
               f"{op.offset}, device={device}, dtype={dtype})"
    elif {n for n, _ in op.coefficients} != set(out.names):
        expr = f"({expr}).expand({', '.join(emit.size(a.size) for a in axes)})"
    labels = [target_label(n) for n in out.names]
    return [emit.finish(term, expr, labels, comment=f"index values {op.text}", batched=False,
                        fallback="index")]


def _index_value_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.IndexValueOp,
                         inputs: Sequence[Value], outputs: Sequence[Value],
                         grads: Sequence[Value]) -> Gradients:
    """An index value reads nothing: nothing to give a gradient to."""
    return Gradients([])


INDEX_VALUE = declare(Declaration(
    node=ir.IndexValueOp, reverse=_index_value_reverse, surfaces=(),
    glyph=Box("plain_box", lambda op, term: Caption("math", op.text)),
    overview=lambda op: (formula(op.text), "box"), roles=no_parameters,
    lower=_index_value_lower,
    # Built from positions, it reads no input: nothing it meets can carry a permutation.
    cost=free, symmetry=positional(lambda op, term, names: "index values are positions")))


# ---------------------------------------------------------------------------------------
# gather
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelRefusal:
    """What the CPU kernel about to read through an index array refuses itself, raising an
    error (measured for each kernel: `index_select` and `gather` refuse every value outside
    the axis, `index_add` too where the slices it adds are not empty (it skips the test for
    empty ones: the counts add single ones); `nll_loss` every one but -100, its
    `ignore_index`): values below 0 (`below`), values from the axis' size up (`above`), when
    `test` holds (the run-time condition of the branch that calls it, `T.dim() == 1`)."""

    test: str
    below: bool
    above: bool


@dataclass(frozen=True)
class LeftToKernel:
    """A check that left part of its test to the kernel after it (`refusing_call`): the
    whole test of the index array's values, and the text of the `ValueError`'s message."""

    outside: str
    text: str


def check_index_array(emit: Emitter, code: str, source: str, axis: ir.Axis,
                      span: ir.Span | None,
                      refusal: KernelRefusal | None = None) -> LeftToKernel | None:
    """A run-time check that an index array's values lie inside the axis they index: a
    `ValueError` naming the line when the module runs as Python, from the array's least and
    greatest values (two reductions and two reads of a scalar: eagerly, where each operation
    costs a dispatch, cheaper than comparing every value twice; an empty array holds no value
    to check, and its `min` is an error). A graph being captured (`torch.compile`, `torch.export`,
    `torch.fx.symbolic_trace`) cannot branch on the values of a tensor, so there the test is
    the graph's own assertion, `torch._assert_async`, which raises a `RuntimeError` with the
    same message when the graph runs.

    With a `refusal`, on the CPU and where its test holds, the side of the test that the
    kernel refuses itself is not run (a small batch pays mostly for the reductions): the
    caller then writes the kernel call by `refusing_call` with what this returns, whose
    handler turns the kernel's error into the same `ValueError`. Off the CPU every value is
    still tested first (a device kernel's assertion is asynchronous, or absent)."""
    where = f"line {span.line}: " if span is not None else ""
    size = emit.size(axis.size)
    if not emit.first_check(f"{code} < {size}"):
        return None  # the same array, checked against the same bound before
    known = ir.size_value(axis.size)
    last = str(known - 1) if known is not None else f"{ir.size_text(axis.size)} - 1"
    text = f"{where}an index array holds a value outside axis {axis.name} of {source} " \
        f"(0 to {last})"
    message = f"\"{text}\""
    capturing = "torch.compiler.is_compiling() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()"
    emit.statement(f"if {capturing}:")
    with emit.branch():
        outside = emit.assign("outside", f"(({code} < 0) | ({code} >= {size})).any()",
                              fallback="outside")
        emit.statement(f"torch._assert_async(~{outside}, {message})")
    whole = f"{code}.numel() and (int({code}.min()) < 0 or int({code}.max()) >= {size})"
    if refusal is None or not (refusal.below or refusal.above):
        emit.statement(f"elif {whole}:")
        emit.statement(f"    raise ValueError({message})")
        return None
    # Off the CPU, or where another branch reads through the array, the whole test; else
    # only the side the kernel lets through.
    emit.statement(f"elif not ({code}.is_cpu and {refusal.test}) and {whole}:")
    emit.statement(f"    raise ValueError({message})")
    if not (refusal.below and refusal.above):
        side = f"int({code}.max()) >= {size}" if refusal.below else f"int({code}.min()) < 0"
        emit.statement(f"elif {code}.numel() and {side}:")
        emit.statement(f"    raise ValueError({message})")
    return LeftToKernel(whole, text)


def refusing_call(emit: Emitter, left: LeftToKernel | None, line: str,
                  comment: str | None = None) -> None:
    """`line`, a kernel's call through an index array whose check left part of its test to
    the kernel (`left`; None: a plain statement): in a `try` (free where nothing is raised)
    whose handler raises the check's `ValueError` when a value is outside the axis, and the
    kernel's own error for anything else."""
    if left is None:
        emit.statement(line, comment)
        return
    emit.statement("try:")
    with emit.branch():
        emit.statement(line, comment)
    emit.statement("except (IndexError, RuntimeError):")
    with emit.branch():
        emit.statement(f"if {left.outside}:")
        with emit.branch():
            message = f"\"{left.text}\""
            if not emit.too_long(f"    {message}"):
                emit.statement(f"raise ValueError({message}) from None")
            else:  # adjacent literals, one a line, as a formatter leaves them
                emit.statement("raise ValueError(")
                with emit.branch():
                    for part in _literal_parts(emit, left.text):
                        emit.statement(part)
                emit.statement(") from None")
        emit.statement("raise")


def _literal_parts(emit: Emitter, text: str) -> list[str]:
    """`text` as string literals that each fit on a line (split after a space)."""
    parts: list[str] = []
    for word in text.split(" "):
        if parts and not emit.too_long(f"\"{parts[-1]} {word} \""):
            parts[-1] += f" {word}"
        else:
            parts.append(word)
    return [f"\"{part} \"" if index < len(parts) - 1 else f"\"{part}\""
            for index, part in enumerate(parts)]


def _trailing(code: str, rank: int) -> str:
    """The shape of `code`'s last `rank` dims."""
    return f"{code}.shape[-{rank}:]" if rank else "()"


def _leading(code: str, rank: int) -> str:
    """The shape of `code`'s batch dims (all but its last `rank`)."""
    return f"{code}.shape[:-{rank}]" if rank else f"{code}.shape"


def _lead_view(code: str, rank: int) -> str:
    """An empty view with the shape of `code`'s batch dims: one entry expanded, no copy."""
    return f"{code}.new_empty(()).expand({_leading(code, rank)})"


def _gather_lower(emit: Emitter, term: ir.Broadcasted, op: ir.GatherOp,
                  inputs: list[TensorCode]) -> list[TensorCode]:
    source = inputs[0]
    out = term.outputs[0].array
    labels: list[Label] = [target_label(n) for n in out.names]
    if len(op.indices) != source.rank:
        raise emit.error(f"a gather reads {len(op.indices)} indices of {source.array.text()}")
    texts = ", ".join(t.text for t in op.indices)
    arrays = [(term_index, axis) for term_index, axis in
              zip(op.indices, source.array.shape.axes, strict=True) if term_index.array is not None]
    indices: list[str] = []
    if not arrays:
        upsampled = _nearest_upsampling(emit, op, source, out)
        if upsampled is not None:
            return [emit.finish(term, upsampled, labels, comment=f"read at [{texts}]: each "
                                "entry repeated, one axis at a time",
                                batched=source.batched, fallback="upsampled")]
        # Indices computed from the positions alone: read from the trailing dims.
        for term_index in op.indices:
            indices.append(_computed_index(emit, term_index, out))
        expr = f"{source.code}[..., {', '.join(indices)}]"
        if len(expr) > LONG_EXPRESSION:
            # Each index on a line of its own, so that every line of the module stays short.
            indices = [emit.assign(f"at_{axis.name}", code, fallback="at")
                       for axis, code in zip(source.array.shape.axes, indices, strict=True)]
            expr = f"{source.code}[..., {', '.join(indices)}]"
        return [emit.finish(term, expr, labels, comment=f"read at [{texts}]",
                            batched=source.batched, fallback="gathered")]
    single = _single_index_read(emit, op, source, out, inputs)
    # Each index array checked once, before either way of reading through it; on the CPU,
    # `index_select` and `gather` refuse every value outside the axis themselves.
    refusal = None
    if single is not None:
        refusal = KernelRefusal(_single_test(single, source), below=True, above=True)
    left: LeftToKernel | None = None
    for term_index, axis in arrays:
        assert term_index.array is not None
        left = check_index_array(emit, inputs[term_index.array].code,
                                 term.inputs[0].name or "the array", axis, term.span, refusal)
    if single is None:
        expr = _gather_by_rows(emit, term, op, source, inputs, arrays, labels)
        return [emit.finish(term, expr, labels, comment=f"read at [{texts}]", batched=True,
                            fallback="gathered")]
    # One index array, the other axes read as they are: when the index array has no batch
    # dims (as it mostly has not), one `index_select` or `gather`, as a user would write it;
    # else the general reading by rows.
    position, index, pick = single
    dim = position - source.rank
    gathered = emit.fresh("gathered")
    if pick:
        fast = f"{source.code}.gather({dim}, {index.code}.unsqueeze({dim})).squeeze({dim})"
    else:
        fast = f"{source.code}.index_select({dim}, {index.code})"
    emit.statement("if not torch.fx._symbolic_trace.is_fx_symbolic_tracing() and "
                   f"{_single_test(single, source)}:")
    with emit.branch():
        refusing_call(emit, left, f"{gathered} = {fast}")
    emit.statement("else:")
    with emit.branch():
        emit.statement(f"{gathered} = "
                       f"{_gather_by_rows(emit, term, op, source, inputs, arrays, labels)}")
    return [emit.finish(term, gathered, labels, comment=f"read at [{texts}]", batched=True,
                        fallback="gathered")]


def _single_test(single: tuple[int, TensorCode, bool], source: TensorCode) -> str:
    """The run-time test under which `_gather_lower` reads through one index array by one
    call: the index array has no batch dims (nor, for a pick in each row, the source)."""
    _, index, pick = single
    test = f"{index.code}.dim() == 1"
    return f"{test} and {source.code}.dim() == {source.rank}" if pick else test


def gather_by_rows(emit: Emitter, term: ir.Broadcasted, op: ir.GatherOp,
                   inputs: list[TensorCode]) -> TensorCode:
    """The gather through index arrays read in general, by rows, with no faster call beside
    it: for a fused lowering whose own call takes the place of `_gather_lower`'s faster ones,
    and which has checked the index arrays before (`check_index_array`)."""
    source = inputs[0]
    out = term.outputs[0].array
    labels: list[Label] = [target_label(n) for n in out.names]
    arrays = [(term_index, axis) for term_index, axis in
              zip(op.indices, source.array.shape.axes, strict=True) if term_index.array is not None]
    texts = ", ".join(t.text for t in op.indices)
    expr = _gather_by_rows(emit, term, op, source, inputs, arrays, labels)
    return emit.finish(term, expr, labels, comment=f"read at [{texts}]", batched=True,
                       fallback="gathered")


def _single_index_read(emit: Emitter, op: ir.GatherOp, source: TensorCode, out: ir.ArrayType,
                       inputs: list[TensorCode]) -> tuple[int, TensorCode, bool] | None:
    """For a gather through one index array of one axis whose other coordinates are the
    output's axes read as they are, in the output's order: the source axis the index array
    indexes, the index array, and whether its axis is also one of those kept (`L[b, T[b]]`,
    a pick in each row, for a source of two axes: `gather`) or not (`XW[Src[e], g]`, whole
    slices: `index_select`); None for any other gather."""
    arrays = [(i, t) for i, t in enumerate(op.indices) if t.array is not None]
    if len(arrays) != 1:
        return None
    (position, term_index), = arrays
    assert term_index.array is not None
    index = inputs[term_index.array]
    if index.rank != 1 or index.array.names[0] not in out.names:
        return None
    kept: list[str] = []
    for i, (coordinate, axis) in enumerate(zip(op.indices, source.array.shape.axes,
                                               strict=True)):
        if i == position:
            continue
        if coordinate.array is not None or coordinate.modulus is not None or \
                coordinate.offset or coordinate.divisor != 1 or \
                len(coordinate.coefficients) != 1 or coordinate.coefficients[0][1] != 1:
            return None
        name = coordinate.coefficients[0][0]
        if name not in out.names or not emit.same_size(axis.size,
                                                        out.shape.axis(name).size):
            return None
        kept.append(name)
    axis_name = index.array.names[0]
    if axis_name in kept:
        if source.rank != 2 or list(out.names) != kept:
            return None
        return position, index, True
    expected = [*kept[:position], axis_name, *kept[position:]]
    if list(out.names) != expected:
        return None
    return position, index, False


def _gather_by_rows(emit: Emitter, term: ir.Broadcasted, op: ir.GatherOp, source: TensorCode,
                    inputs: list[TensorCode], arrays: list[tuple[ir.IndexTerm, ir.Axis]],
                    labels: list[Label]) -> str:
    """The gather through index arrays in general (checked by the caller): the batch dims of
    the source and of the index arrays broadcast and flattened into one, which a row index
    reads alongside the others."""
    out = term.outputs[0].array
    rank = len(out.names)
    indices: list[str] = []
    places: dict[int, str] = {}
    for term_index, _ in arrays:
        assert term_index.array is not None
        value, port = inputs[term_index.array], term.inputs[term_index.array]
        places[term_index.array] = emit.assign(
            "places", emit.normalized(term, value, port, labels, "unsqueeze"), fallback="places")
    # The broadcast batch shape, from empty views (`torch.broadcast_shapes` takes integers,
    # which `torch.fx.symbolic_trace` does not have: it traces shapes as proxies).
    leads = [_lead_view(source.code, source.rank), *(_lead_view(c, rank) for c in places.values())]
    broadcast = emit.assign("leads", f"torch.broadcast_tensors({', '.join(leads)})",
                            fallback="leads")
    batch = emit.assign("batch", f"{broadcast}[0].shape", fallback="batch")
    flat = emit.assign("flat", f"{source.code}.expand({batch} + "
                       f"{_trailing(source.code, source.rank)}).reshape((-1,) + "
                       f"{_trailing(source.code, source.rank)})", fallback="flat")
    rows = f"torch.arange({flat}.shape[0], device={flat}.device)" + \
        (f".view(-1{', 1' * rank})" if rank else "")
    for term_index in op.indices:
        if term_index.array is None:
            indices.append(_computed_index(emit, term_index, out))
            continue
        code = places[term_index.array]
        indices.append(f"{code}.expand({batch} + {_trailing(code, rank)}).reshape((-1,) + "
                       f"{_trailing(code, rank)})")
    read = emit.assign("read", f"{flat}[{rows}, {', '.join(indices)}]", fallback="read")
    return f"{read}.reshape({batch} + {read}.shape[1:])"


LONG_EXPRESSION = 70
"""An expression longer than this, assigned at the indentation of a `forward`, would make a line
longer than generated code keeps (100 columns)."""


def _nearest_upsampling(emit: Emitter, op: ir.GatherOp, source: TensorCode,
                        out: ir.ArrayType) -> str | None:
    """`X[d, y // 2, x // 2]` with `|y| = 2 |yh|` (nearest-neighbour upsampling, as
    `F.interpolate(mode="nearest")` computes it for a whole factor): each axis read as it is or
    divided by its factor, in the source's order, as views that repeat each entry along one
    axis and a copy for each axis repeated (`X[..., :, None].expand(...).reshape(...)`), the
    last axis first, with no index tensors; None for any other gather. One axis at a time:
    each copy and each gradient's sum then moves whole runs of entries, where one view
    repeating along every axis at once is slow both ways (`2 x 32 x 8 x 8` doubled in both
    axes: 55 against 78 us forward, 234 against 351 us forward and backward; `4 x 128 x 32 x
    32`: 3.7 against 5.4 ms, 9.3 against 26.7 ms)."""
    if len(out.shape.axes) != len(op.indices):
        return None
    factors = []
    for index, axis_in, axis_out in zip(op.indices, source.array.shape.axes, out.shape.axes,
                                        strict=True):
        if index.array is not None or index.modulus is not None or index.offset or \
                index.coefficients != ((axis_out.name, 1),) or index.divisor < 1:
            return None
        grown = axis_in.size if index.divisor == 1 else ir.SizeMul(
            factors=(ir.SizeConst(value=index.divisor), axis_in.size))
        if not emit.same_size(axis_out.size, grown):
            return None
        factors.append(index.divisor)
    if all(f == 1 for f in factors):
        return None
    leading = emit.leading_shape(source)
    sizes = [emit.size(axis.size) for axis in source.array.shape.axes]
    code = source.code
    repeated = [position for position, factor in enumerate(factors) if factor != 1]
    for position in reversed(repeated):  # the last axis first; the first one is returned
        if code != source.code:
            code = emit.assign("upsampled", code)
        slots = [":"] * (position + 1) + ["None"] + [":"] * (len(sizes) - position - 1)
        spread = [*sizes[:position + 1], str(factors[position]), *sizes[position + 1:]]
        sizes[position] = emit.size(out.shape.axes[position].size)
        # each view a local of its own: one call per line, which a formatter leaves as it is
        view = emit.assign("repeated", f"{code}[..., {', '.join(slots)}].expand("
                           f"{leading} + {emit.tuple_text(spread)})")
        code = f"{view}.reshape({leading} + {emit.tuple_text(sizes)})"
    return code


def _computed_index(emit: Emitter, term_index: ir.IndexTerm, out: ir.ArrayType) -> str:
    code = _affine_code(emit, term_index.coefficients, term_index.offset, out.shape.axes, False)
    if term_index.divisor != 1:
        code = f"({code}) // {term_index.divisor}" if " " in code else \
            f"{code} // {term_index.divisor}"
    if term_index.modulus is not None:
        code = f"({code}) % {term_index.modulus}"
    return code


def _gather_symmetry(op: ir.GatherOp, term: ir.Broadcasted, carried: Carried,
                     calls: SymmetryCalls) -> Verdict:
    """An output axis carries a permutation when everything that reads it is permuted along it
    alike: the array read through a plain index (`f` of `X[Src[e], f]`) and the index arrays
    (`e` of `Src[e]`); an axis read through a computed index or an index array's value does not
    (`v` of `X[Src[e], f]`, `y` of `X[y // 2]`)."""
    source = term.inputs[0].array.names
    moved = carried.inputs[0] if carried.inputs else frozenset()
    readers: dict[str, list[bool]] = {}  # per output axis: whether each reader is permuted
    for axis, index in zip(source, op.indices, strict=True):
        plain = index.array is None and index.offset == 0 and index.divisor == 1 and \
            index.modulus is None and len(index.coefficients) == 1 and index.coefficients[0][1] == 1
        if plain:
            readers.setdefault(index.coefficients[0][0], []).append(axis in moved)
            continue
        if axis in moved:
            return Break(f"a gather reads {axis} at computed positions ({index.text})")
        for name, _ in index.coefficients:
            readers.setdefault(name, []).append(False)
    for position, port in enumerate(term.inputs[1:], start=1):
        along = carried.inputs[position] if position < len(carried.inputs) else frozenset()
        for name in port.targets:
            readers.setdefault(name, []).append(name in along)
    for name, flags in readers.items():
        if any(flags) and not all(flags):
            return Break(f"a gather reads {name} both permuted and in place")
    kept = frozenset(name for name, flags in readers.items() if flags and all(flags))
    return Carry(tuple(frozenset(n for n in port.targets if n in kept) for port in term.outputs))


def _gather_caption(op: ir.GatherOp, term: ir.Broadcasted) -> Caption:
    return Caption("math", f"[{', '.join(t.text for t in op.indices)}]")


def scatter_adjoint(rev: Reverser, gradient: Value, places: Value, target: ir.Axis,
                    like: ir.ArrayType) -> Value:
    """The adjoint of a read through an index array, `Y[p] = X[..., places[p], ...]` with the
    other coordinates of `X` read at the axes of `p` of their own names: `dX[..., q, ...] =
    sum over p with places[p] = q of dY[p]`, as a scatter-add of `gradient` through `places`
    into axis `target` of `like` (the type of `X`). The axes of `gradient` that `like` lacks
    are summed: the last one by the scatter-add, the others kept as its degree and summed
    after; with none, the scatter-add runs along an axis of size one put in. `places` has
    axes among `gradient`'s."""
    if target.name in gradient.array.names:  # `X[b, T[b, n]]`: the output's n is summed
        fresh = _fresh_name(f"{target.name}_p", {*gradient.array.names, *like.names})
        gradient = rev.rename(gradient, {target.name: fresh})
        places = rev.rename(places, {target.name: fresh})
    summed = [a for a in gradient.array.shape.axes if a.name not in like.names]
    if not summed:
        one = ir.Axis(name=_fresh_name("one", {*gradient.array.names, *like.names}),
                      size=ir.SizeConst(value=1))
        gradient = rev.expand(gradient, array(ir.REALS, [*gradient.array.shape.axes, one]))
        summed = [one]
    along = summed[-1]
    if along.name not in places.array.names:
        places = rev.expand(places, array(places.array.dtype,
                                          [*places.array.shape.axes, along]))
    rest = [a for a in gradient.array.shape.axes if a.name != along.name]
    (scattered,) = rev.op(ir.ScatterAddOp(input=along.name, output=target.name),
                          [(gradient, (along.name,)), (places, (along.name,))],
                          [(array(ir.REALS, [*rest, target]), (target.name,), "scattered")],
                          degree=rest)
    return rev.sum_to(scattered, like)


def _fresh_name(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    return name


def _gather_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.GatherOp,
                    inputs: Sequence[Value], outputs: Sequence[Value],
                    grads: Sequence[Value]) -> Gradients:
    """The adjoint of a gather. Through affine indices with floor divisions (`X[y // 2]`,
    `X[2*i + 1]`): a sum over the preimage of each index, with indicator arrays
    (`ncd.derivative.affine_adjoint`), remainders included (`X[i % n]`). Through one index
    array, the other axes read as they are (`X[Src[e], f]`, `X[b, T[b]]`): a scatter-add of
    the gradient through the same array (`dX[Src[e], f] += dY[e, f]`, `scatter_adjoint`).
    Several index arrays have no rule yet."""
    from ncd.derivative import AffineRow, affine_adjoint

    x, (y,), (gradient,) = inputs[0], outputs, grads
    arrays = [i for i, index in enumerate(op.indices) if index.array is not None]
    if len(arrays) == 1 and len(inputs) == 2:
        position = arrays[0]
        index = op.indices[position]
        assert index.array is not None
        passing = all(t.array is None and t.modulus is None and t.divisor == 1 and
                      t.offset == 0 and t.coefficients == ((x.array.names[i], 1),)
                      for i, t in enumerate(op.indices) if i != position)
        if passing:
            target = x.array.shape.axes[position]
            return Gradients([scatter_adjoint(rev, gradient, inputs[index.array], target,
                                              x.array), None])
    for index in op.indices:
        if index.array is not None:
            raise Unsupported(
                f"the gather reads `{index.text}`, an index array", term.span,
                "the reverse of this gather is not built yet; gathers through affine indices, "
                "floor divisions and remainders, and through one index array with the other "
                "axes read as they are (`X[Src[e], f]`, `X[b, T[b]]`), have one")
    rows = [AffineRow(index.coefficients, index.offset, index.divisor, index.text,
                      index.modulus) for index in op.indices]
    try:
        adjoint = affine_adjoint(rev, gradient, x.array, y.array.shape.axes, rows)
    except Unsupported as unsupported:
        raise Unsupported(unsupported.what, term.span, unsupported.hint) from None
    return Gradients([adjoint])


GATHER = declare(Declaration(
    node=ir.GatherOp, reverse=_gather_reverse, surfaces=(),
    glyph=Box("plain_box", _gather_caption),
    overview=lambda op: (formula(f"[{', '.join(t.text for t in op.indices)}]"), "box"),
    roles=no_parameters, lower=_gather_lower, cost=free, symmetry=_gather_symmetry))


# ---------------------------------------------------------------------------------------
# scatter_add
# ---------------------------------------------------------------------------------------


def _scatter_typing(builder: DefinitionBuilder, call: s.Call, name: str | None) -> list[Value]:
    reject_items(builder, call, (s.Arrow,))
    arrows = bracket_arrows(builder, call)
    arrow = arrows[0]
    if len(arrows) != 1 or len(arrow.left) != 1 or len(arrow.right) != 1:
        raise option_error(builder, "`scatter_add` sums one axis into one axis: "
                           "`scatter_add[e -> v](M, Dst)`", arrow.span)
    (value, index), _ = arguments(builder, call, 2)
    builder.require_reals(value, call.args[0].span, "`scatter_add`")
    builder.require_axes(value, arrow.left, "`scatter_add`")
    source = value.array.shape.axis(arrow.left[0].name)
    dtype = index.array.dtype
    if dtype.kind != "N" or dtype.bound is None:
        raise builder.ctx.error("E302", f"`scatter_add` places entries by an index array of "
                                f"datatype N[v], but `{index.name}` holds {dtype.text()}",
                                call.args[1].span, hint="declare it with its bound, for "
                                f"example `{index.name}: N[{arrow.right[0].name}][{source.name}]`")
    if source.name not in index.array.names:
        raise builder.ctx.error("E301", f"the index array `{index.name}` has no axis "
                                f"`{source.name}`: it names a place for each entry along it",
                                call.args[1].span)
    for axis in index.array.shape.axes:
        if axis.name not in value.array.names:
            raise builder.ctx.error("E301", f"the index array has axis `{axis.name}`, which "
                                    f"`{value.name}` lacks", call.args[1].span)
        builder.check_size(axis, value.array.shape.axis(axis.name), call.args[1].span,
                           "the index array")
    target = builder.global_axis(arrow.right[0])
    if target.name in value.array.names:
        raise builder.ctx.error("E301", f"`{value.name}` already has axis `{target.name}`",
                                arrow.right[0].span)
    assert dtype.bound is not None
    if from_ir(dtype.bound) != from_ir(target.size):
        raise builder.ctx.error(
            "E300", f"`{index.name}` holds indices below {from_ir(dtype.bound)} "
            f"({dtype.text()}) but axis `{target.name}` has size {from_ir(target.size)}",
            call.args[1].span, hint=f"an index array's bound is the size of the axis it "
            f"indexes: `{index.name}: N[{target.name}][{', '.join(index.array.names)}]`")
    out = array(ir.REALS, replace_axes(value.array.shape.axes, [source.name], [target]))
    op = ir.ScatterAddOp(input=source.name, output=target.name)
    return builder.broadcast(op, [(value, [source.name]), (index, [source.name])],
                             [(out, [target.name], name)], call.span)


def _scatter_lower(emit: Emitter, term: ir.Broadcasted, op: ir.ScatterAddOp,
                   inputs: list[TensorCode]) -> list[TensorCode]:
    index = inputs[1]
    target = term.outputs[0].array.shape.axis(op.output)
    check_index_array(emit, index.code, "the result", target, term.span)
    # Values built from nothing (`One[e] = 1`) take the batch dims of a batched index array.
    lead = index if index.batched and not inputs[0].batched else None
    own = emit.plain_labels(inputs[0], term.inputs[0])
    # Summed in place only when that is the output's layout: a result moved after it is a
    # strided view, and in a branch a second move would undo the first.
    if lead is None and index.names == (op.input,) and own is not None and \
            target_label(op.input) in own and emit.output_labels(term.outputs[0]) == [
                target_label(op.output) if label == target_label(op.input) else label
                for label in own]:
        return [_index_add_in_place(emit, term, op, inputs, own)]
    degree: list[Label] = [degree_label(i) for i in range(len(term.degree.axes))]
    expr = _scatter_moved(emit, term, op, inputs, lead)
    labels = [*degree, target_label(op.output)]
    return [emit.finish(term, expr, labels, comment=f"sum along {op.input} into {op.output}",
                        batched=inputs[0].batched or index.batched, fallback="summed")]


def _index_add_in_place(emit: Emitter, term: ir.Broadcasted, op: ir.ScatterAddOp,
                        inputs: list[TensorCode], own: list[Label]) -> TensorCode:
    """The values read as they are, summed along their own axis by `index_add` (no dims moved
    to the end and back: a transposed result that the next operation would read strided), when
    the index array has the summed axis alone; an index array with batch dims at run time is
    summed as `_scatter_moved` does it, its result then moved to this layout."""
    value, index = inputs
    along = own.index(target_label(op.input)) - len(own)
    labels = [target_label(op.output) if label == target_label(op.input) else label
              for label in own]
    size = emit.size(term.outputs[0].array.shape.axis(op.output).size)
    after = f" + {value.code}.shape[{along + 1}:]" if along < -1 else ""
    zeros = f"{value.code}.new_zeros({value.code}.shape[:{along}] + ({size},){after})"
    comment = f"sum along {op.input} into {op.output}"
    batched = value.batched or index.batched

    def fast() -> str:
        return f"{emit.assign('zeros', zeros)}.index_add({along}, {index.code}, {value.code})"

    if not index.batched:
        return emit.finish(term, fast(), labels, comment=comment, batched=batched,
                           fallback="summed")
    degree: list[Label] = [degree_label(i) for i in range(len(term.degree.axes))]

    def general() -> str:
        moved = _scatter_moved(emit, term, op, inputs, None, index_add=False)
        return emit.permute(moved, [*degree, target_label(op.output)], labels)

    return emit.finish_either(term, dims_test(index.code, 1), fast, general, labels,
                              comment=comment, batched=batched, fallback="summed")


def _scatter_moved(emit: Emitter, term: ir.Broadcasted, op: ir.ScatterAddOp,
                   inputs: list[TensorCode], lead: TensorCode | None,
                   index_add: bool = True) -> str:
    """The sum with the values' dims moved to (degree..., summed axis): `index_add` along the
    last dim when the index array has the summed axis alone and no batch dims, else each
    place spelled out for `scatter_add` (always, without `index_add`: in a branch that runs
    only when the index array has batch dims, or while `torch.fx` traces). Returns the
    expression, its dims (degree..., target)."""
    degree: list[Label] = [degree_label(i) for i in range(len(term.degree.axes))]
    order = [*degree, target_label(op.input)]
    index = inputs[1]
    value = emit.normalized(term, inputs[0], term.inputs[0], order, "expand", leading_from=lead)
    target = term.outputs[0].array.shape.axis(op.output)
    size = emit.size(target.size)
    moved = emit.assign("moved", value, fallback="moved")
    zeros = f"{moved}.new_zeros({moved}.shape[:-1] + ({size},))"
    one_axis = index.names == (op.input,)
    if one_axis and not index.batched:
        return f"{emit.assign('zeros', zeros)}.index_add(-1, {index.code}, {moved})"
    # the batch dims of the moved values (as many trailing dims as the result has)
    moved_code = TensorCode(moved, term.outputs[0].array)
    general = emit.normalized(term, index, term.inputs[1], order, "expand",
                              leading_from=moved_code if lead is None else None)
    if not (one_axis and index_add):
        where = emit.assign("places", general)
        return f"{emit.assign('zeros', zeros)}.scatter_add(-1, {where}, {moved})"
    # With no batch dims on the index array (as it mostly has none): `index_add`, as a user
    # would write it; else each place spelled out for `scatter_add`.
    expr = emit.fresh("summed")
    emit.statement(f"if {dims_test(index.code, 1)}:")
    with emit.branch():
        emit.statement(f"{expr} = {zeros}.index_add(-1, {index.code}, {moved})")
    emit.statement("else:")
    with emit.branch():
        where = emit.assign("places", general)
        emit.statement(f"{expr} = {zeros}.scatter_add(-1, {where}, {moved})")
    return expr


def _scatter_cost(op: ir.ScatterAddOp, term: ir.Broadcasted, sizes: CostSizes) -> Cost:
    """One addition per entry summed in."""
    return Cost(ZERO, input_entries(sizes, term))


def _scatter_symmetry(op: ir.ScatterAddOp, term: ir.Broadcasted, carried: Carried,
                      calls: SymmetryCalls) -> Verdict:
    """Permuting the summed axis of the entries and of the places alike changes nothing (a
    sum); permuting one of them alone does."""
    values, places = (*carried.inputs, frozenset(), frozenset())[:2]
    if (op.input in values) != (op.input in places):
        return Break(f"scatter_add pairs each entry along {op.input} with its place: the two "
                     "are not permuted alike")
    return Carry(tuple(frozenset() for _ in term.outputs))


def _scatter_add_reverse(rev: Reverser, term: ir.Broadcasted, op: ir.ScatterAddOp,
                         inputs: Sequence[Value], outputs: Sequence[Value],
                         grads: Sequence[Value]) -> Gradients:
    """The reverse of `Y[Dst[e], f] += M[e, f]` is the gather `dM[e, f] = dY[Dst[e], f]`."""
    (values, places), (gradient,) = inputs, grads
    indices = tuple(
        ir.IndexTerm(array=1, text=f"{places.name}[{op.input}]") if name == op.output else
        ir.IndexTerm(coefficients=((name, 1),), text=name)
        for name in gradient.array.names)
    (gathered,) = rev.op(ir.GatherOp(indices=indices),
                         [(gradient, gradient.array.names), (places, places.array.names)],
                         [(values.array, values.array.names, f"d{values.name}")], degree=[])
    return Gradients([gathered, None])


SCATTER_ADD = declare(Declaration(
    node=ir.ScatterAddOp, reverse=_scatter_add_reverse,
    surfaces=(Surface("scatter_add", "sum the entries along an axis into the places an index "
                      "array names (a segment sum)", "scatter_add[e -> v](M, Dst)",
                      _scatter_typing),),
    glyph=Box("funnel", lambda op, term: Caption("math", f"Σ {op.input}→{op.output}")),
    overview=lambda op: (f"scatter_add[{op.input} → {op.output}]", "invtrapezium"),
    roles=no_parameters, lower=_scatter_lower, cost=_scatter_cost, symmetry=_scatter_symmetry))
