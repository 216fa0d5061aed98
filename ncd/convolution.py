"""Convolutions and pools in a term: a sum over a window (`X[s*p + d*k]`) against a kernel, or
a maximum, mean or scaled sum over a window, maybe read through zero padding, maybe followed by
a bias.

A back end with convolution and pooling kernels (`F.conv2d`, `F.max_pool2d`, ...) runs a match
as one call that never copies the windows out (the written-out term unfolds the input and
contracts the copy). The pattern is recognised on the IR, never on text, and only where the
kernel computes exactly the same function:

- the windowed array, the padded arrays before it and the contraction's output (when a bias
  follows) flow only from one member of the pattern to the next;
- every index of the input is one role: a batch index (read as it is by the input alone), a
  group index (read as it is by the input and the kernel: a depthwise convolution), an input
  channel (summed, read as it is by both), an output channel (the kernel alone), or a spatial
  index `stride * p + dilation * k + offset` with p an output index and k a summed index that
  the kernel reads (a window axis);
- zero padding is taken into the call (`padding=`) only when the kernel's symmetric padding
  covers every read; any other padding stays a `pad` of its own;
- a max pool takes in padding only of `-inf`, a mean pool only of zeros (as
  `count_include_pad=True` counts them), and neither more than half its window's entries
  (`padding <= kernel_size // 2`, dilation aside: what PyTorch accepts).

`ncd stats` reads the same matches to count memory as the kernels hold it. Nothing here
imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from ncd import ir
from ncd.sizes import ProgramSizes, SizeLimit, check_nonnegative
from ncd.term_flow import TermFlow, plain_reads

Kind = Literal["conv", "max", "mean"]

_MAX_SPATIAL = 3  # F.conv1d, conv2d, conv3d (and the pools): no kernel beyond three axes


@dataclass(frozen=True)
class Spatial:
    """One spatial axis of the source: output index `output` (a degree index of the reducer)
    reads source index `stride * p + dilation * k + start` for kernel index `kernel` (the
    name of a summed axis), zero outside the source. The kernel adds `padding` zeros on
    each side and starts reading at `cut` (a slice of the source)."""

    source_axis: int
    output: int
    kernel: str
    stride: int
    dilation: int
    padding: int
    cut: int
    kernel_size: int
    trim: bool
    """The kernel makes more outputs than the term has (or may): keep the first ones."""


@dataclass(frozen=True)
class Window:
    """One match. Degree indices are those of `reducer`; names of summed axes are the targets
    of its windowed port."""

    kind: Kind
    pads: tuple[ir.Broadcasted, ...]
    """The zero paddings taken into the call, the first (reading the source) first."""
    window: ir.Reindexing
    reducer: ir.Broadcasted
    data_port: int
    """Which input of `reducer` reads the window (its other operand is the kernel)."""
    kernel_port: tuple[Literal["input", "param"], int] | None
    bias: ir.Broadcasted | None
    bias_port: tuple[Literal["input", "param"], int] | None
    batch: tuple[int, ...]
    """Degree indices read by the source alone, in the source's axis order."""
    groups: tuple[int, ...]
    """Degree indices read by the source and the kernel (channels each with its own kernel)."""
    in_channels: tuple[str, ...]
    """Summed axes read by the source and the kernel, in the source's axis order."""
    out_channels: tuple[int, ...]
    """Degree indices read by the kernel alone, in the kernel's axis order."""
    spatial: tuple[Spatial, ...]
    """In the source's axis order."""
    factor: Fraction = Fraction(1)
    """A pool's result is the kernel's times this (a scaled sum as a mean pool)."""
    kernel_axes: tuple[tuple[str, int | str], ...] = ()
    """The kernel's axes in memory order, each with its role: `("group", degree)`,
    `("out", degree)`, `("in", name)`, `("window", name)`."""
    source_roles: tuple[tuple[Literal["batch", "group", "in", "spatial"], int | str], ...] = ()
    """Each axis of the source in memory order: its role and label (for a spatial axis, its
    position in `spatial`)."""
    members: tuple[ir.Term, ...] = field(default=())

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def source_port(self) -> ir.Term:
        """The member that reads the source array."""
        return self.pads[0] if self.pads else self.window


def find_windows(term: ir.Term, sizes: ProgramSizes, flow: TermFlow | None = None
                 ) -> list[Window]:
    """Every match inside `term` (through compositions and products; the body of a block or
    a scan is a term of its own, searched when it is reached). `flow`: as `find_matches`'s."""
    if flow is None:
        flow = TermFlow.of(term)
    found = []
    by_id = {id(op): op for op in flow.operations}
    for operation in flow.operations:
        try:
            match = _match(flow, operation, sizes, by_id)
        except SizeLimit:
            match = None
        if match is not None:
            found.append(match)
    return found


# ---- the match

Label = int | str
"""A degree index of the reducer, or the name of one of its summed axes."""


def _port_labels(port: ir.Port) -> list[Label] | None:
    """The label each axis of a plainly read operand stands for, in memory order."""
    tiling = plain_reads(port)
    if tiling is None:
        return None
    return [name if name in port.targets else tiling[name] for name in port.array.names]


def _reducer_kind(term: ir.Broadcasted) -> tuple[Kind, Fraction] | None:
    op = term.op
    if isinstance(op, ir.EinsumOp):
        if len(term.inputs) + len(term.params) == 2:
            return ("conv", Fraction(1)) if op.scale == 1.0 else None
        if len(term.inputs) == 1 and not term.params:
            return "mean", Fraction(op.scale).limit_denominator(1 << 20)
        return None
    if isinstance(op, ir.ReduceOp) and len(term.inputs) == 1 and not term.params:
        if op.function == "max":
            return "max", Fraction(1)
        if op.function == "mean":
            return "mean", Fraction(-1)  # marks a mean: the factor is the window's size
        if op.function == "sum":
            return "mean", Fraction(1)
    return None


def _match(flow: TermFlow, reducer: ir.Broadcasted, sizes: ProgramSizes,
           by_id: dict[int, ir.Broadcasted]) -> Window | None:
    kind = _reducer_kind(reducer)
    if kind is None or len(reducer.outputs) != 1 or reducer.outputs[0].targets:
        return None
    for data_port in range(len(reducer.inputs)):
        window = flow.producer(reducer, data_port)
        if isinstance(window, ir.Reindexing):
            found = _roles(flow, reducer, data_port, window, kind[0], kind[1], sizes, by_id)
            if found is not None:
                return found
    return None


def _composed_rows(reducer: ir.Broadcasted, data_port: int, window: ir.Reindexing
                   ) -> list[tuple[dict[Label, int], int]] | None:
    """Each axis of the window's source as `offset + sum c * label` over the reducer's
    labels."""
    port = reducer.inputs[data_port]
    eta = port.reindexing
    tiling: dict[str, tuple[dict[Label, int], int]] = {}
    for name, row, offset in zip(eta.codomain.names, eta.matrix, eta.offset, strict=True):
        tiling[name] = ({i: c for i, c in enumerate(row) if c}, offset)
    rows = []
    reindex = window.eta
    for row, offset in zip(reindex.matrix, reindex.offset, strict=True):
        total: dict[Label, int] = {}
        constant = offset
        for coefficient, axis in zip(row, reindex.domain.axes, strict=True):
            if not coefficient:
                continue
            if axis.name in port.targets:
                total[axis.name] = total.get(axis.name, 0) + coefficient
                continue
            if axis.name not in tiling:
                return None
            inner, inner_offset = tiling[axis.name]
            constant += coefficient * inner_offset
            for label, c in inner.items():
                total[label] = total.get(label, 0) + coefficient * c
        rows.append(({label: c for label, c in total.items() if c}, constant))
    return rows


def _pad_chain(flow: TermFlow, window: ir.Reindexing, spatial_axes: set[int], kind: Kind
               ) -> list[tuple[ir.Broadcasted, int]]:
    """The paddings that made the window's source, last first, each with the source axis it
    pads: only paddings of spatial axes with the value the kernel pads with."""
    wanted = {"conv": 0.0, "mean": 0.0, "max": float("-inf")}[kind]
    chain: list[tuple[ir.Broadcasted, int]] = []
    current: ir.Broadcasted | ir.Reindexing = window
    while True:
        made = flow.producer(current, 0)
        if not isinstance(made, ir.Broadcasted) or not isinstance(made.op, ir.PadOp) or \
                made.op.value != wanted or len(made.inputs) != 1 or made.params:
            return chain
        source, target = made.inputs[0], made.outputs[0]
        names_in, names_out = source.array.names, target.array.names
        position = names_out.index(made.op.output)
        if len(names_in) != len(names_out) or names_in[position] != made.op.input or \
                position not in spatial_axes:
            return chain
        read_in, read_out = plain_reads(source), plain_reads(target)
        if read_in is None or read_out is None:
            return chain
        if any(names_in[j] != names_out[j] or read_in[names_in[j]] != read_out[names_out[j]]
               for j in range(len(names_in)) if j != position):
            return chain
        chain.append((made, position))
        current = made


def _roles(flow: TermFlow, reducer: ir.Broadcasted, data_port: int, window: ir.Reindexing,
           kind: Kind, factor: Fraction, sizes: ProgramSizes,
           by_id: dict[int, ir.Broadcasted]) -> Window | None:
    rows = _composed_rows(reducer, data_port, window)
    if rows is None:
        return None
    port = reducer.inputs[data_port]
    windowed = window.cod[0]
    target_sizes = {name: windowed.shape.axis(name).size for name in port.targets}
    degree_sizes = {i: axis.size for i, axis in enumerate(reducer.degree.axes)}

    def size_of(label: Label) -> ir.SizeExpr:
        return target_sizes[label] if isinstance(label, str) else degree_sizes[label]

    # the kernel: the other operand, read plainly
    kernel_port: tuple[Literal["input", "param"], int] | None = None
    kernel_labels: list[Label] = []
    if kind == "conv":
        if len(reducer.params) != 1:
            return None  # a kernel that is a parameter (an array without batch dims)
        kernel = reducer.params[0]
        labels = _port_labels(kernel)
        if labels is None or len(set(labels)) != len(labels):
            return None
        kernel_port, kernel_labels = ("param", 0), labels
    in_kernel = set(kernel_labels)
    summed = set(port.targets)
    if kind == "conv" and not summed <= in_kernel | {
            label for row, _ in rows for label in row}:
        return None
    # each source axis: its role
    source_axes = window.eta.codomain.axes
    batch: list[int] = []
    groups: list[int] = []
    in_channels: list[str] = []
    spatial_rows: list[tuple[int, int, str, int, int, int]] = []  # axis, p, k, s, d, start
    roles: list[tuple[Literal["batch", "group", "in", "spatial"], int | str]] = []
    seen: list[Label] = []
    for j, (row, offset) in enumerate(rows):
        seen.extend(row)
        if len(row) == 1 and offset == 0 and next(iter(row.values())) == 1:
            (label,) = row
            same = sizes.polynomial(source_axes[j].size) == sizes.polynomial(size_of(label))
            if not same:
                return None
            if isinstance(label, str):
                if label not in in_kernel:
                    return None
                in_channels.append(label)
                roles.append(("in", label))
            elif label in in_kernel:
                groups.append(label)
                roles.append(("group", label))
            else:
                batch.append(label)
                roles.append(("batch", label))
            continue
        if len(row) != 2:
            return None
        outputs = [label for label in row if isinstance(label, int)]
        kernels = [label for label in row if isinstance(label, str)]
        if len(outputs) != 1 or len(kernels) != 1 or outputs[0] in in_kernel or \
                (kind == "conv" and kernels[0] not in in_kernel):
            return None
        stride, dilation = row[outputs[0]], row[kernels[0]]
        if stride < 1 or dilation < 1:
            return None
        roles.append(("spatial", len(spatial_rows)))
        spatial_rows.append((j, outputs[0], kernels[0], stride, dilation, offset))
    if not spatial_rows or len(spatial_rows) > _MAX_SPATIAL or len(set(seen)) != len(seen):
        return None
    if any(label not in seen for label in summed):
        return None  # a sum over an axis of the kernel alone is no convolution
    out_channels = [label for label in kernel_labels if isinstance(label, int)
                    and label not in groups]
    if any(isinstance(label, str) and label not in seen for label in kernel_labels):
        return None
    if set(range(len(reducer.degree.axes))) != {*batch, *groups, *out_channels,
                                               *(r[1] for r in spatial_rows)}:
        return None
    if kind != "conv" and (groups or in_channels):
        return None
    # the output: every degree index as it is
    written = _port_labels(reducer.outputs[0])
    if written is None:
        return None
    # paddings, as many as the kernel's symmetric padding can take; else none
    chain = _pad_chain(flow, window, {r[0] for r in spatial_rows}, kind)
    spatial = None
    for taken in (len(chain), 0):
        spatial = _spatial(spatial_rows, chain[:taken], source_axes, size_of, sizes, kind)
        if spatial is not None:
            chain = chain[:taken]
            break
    if spatial is None:
        return None
    if kind == "mean":
        window_size = 1
        for axis in spatial:
            window_size *= axis.kernel_size
        if any(axis.dilation != 1 for axis in spatial):
            return None  # the average pools have no dilation
        factor = Fraction(1) if factor == -1 else factor * window_size
    pads = tuple(reversed([pad for pad, _ in chain]))
    kernel_axes: list[tuple[str, int | str]] = []
    for label in kernel_labels:
        if isinstance(label, str):
            role = "in" if label in in_channels else "window"
        else:
            role = "group" if label in groups else "out"
        kernel_axes.append((role, label))
    bias, bias_port = _bias(flow, reducer, groups, out_channels, by_id) if kind == "conv" \
        else (None, None)
    members: list[ir.Term] = [*pads, window, reducer]
    if bias is not None:
        members.append(bias)
    return Window(kind=kind, pads=pads, window=window, reducer=reducer, data_port=data_port,
                  kernel_port=kernel_port, bias=bias, bias_port=bias_port,
                  batch=tuple(batch), groups=tuple(groups), in_channels=tuple(in_channels),
                  out_channels=tuple(out_channels), spatial=spatial, factor=factor,
                  kernel_axes=tuple(kernel_axes), source_roles=tuple(roles),
                  members=tuple(members))


def _spatial(rows: list[tuple[int, int, str, int, int, int]],
             chain: list[tuple[ir.Broadcasted, int]], source_axes: tuple[ir.Axis, ...],
             size_of: Callable[[Label], ir.SizeExpr], sizes: ProgramSizes, kind: Kind
             ) -> tuple[Spatial, ...] | None:
    """Each spatial axis as the kernel runs it, when symmetric padding covers every read;
    None otherwise."""
    before: dict[int, int] = {}
    lengths = {j: axis.size for j, axis in enumerate(source_axes)}
    for pad, position in chain:
        assert isinstance(pad.op, ir.PadOp)
        before[position] = before.get(position, 0) + pad.op.before
        lengths[position] = pad.inputs[0].array.shape.axes[position].size
    found = []
    for j, output, kernel, stride, dilation, offset in rows:
        start = offset - before.get(j, 0)  # the first source index read (negative: padding)
        padding, cut = max(0, -start), max(0, start)
        length = sizes.polynomial(lengths[j])
        outputs = sizes.polynomial(size_of(output))
        kernel_size = sizes.value(size_of(kernel))
        if kernel_size is None:
            return None  # a kernel of fixed size only
        if kind != "conv" and padding > kernel_size // 2:
            return None  # PyTorch's pools pad at most half their window (dilation aside)
        # the last index read, and the last the kernel can read with its padding
        last = outputs * stride - stride + (kernel_size - 1) * dilation + start
        if check_nonnegative(length - 1 + padding - last, [length, outputs]).verdict != \
                "holds":
            return None
        made = (length - cut + 2 * padding - (kernel_size - 1) * dilation - 1).floor_div(
            stride) + 1
        trim = made != outputs
        found.append(Spatial(source_axis=j, output=output, kernel=kernel, stride=stride,
                             dilation=dilation, padding=padding, cut=cut,
                             kernel_size=kernel_size, trim=trim))
    return tuple(found)


def _bias(flow: TermFlow, reducer: ir.Broadcasted, groups: list[int], out_channels: list[int],
          by_id: dict[int, ir.Broadcasted]
          ) -> tuple[ir.Broadcasted | None, tuple[Literal["input", "param"], int] | None]:
    """The addition of a bias per output channel that reads the convolution alone, and which
    operand of it is the bias."""
    reader = flow.reader_of(reducer)
    add = by_id.get(reader) if reader is not None else None
    if add is None or not isinstance(add.op, ir.AddOp) or \
            len(add.inputs) + len(add.params) != 2 or len(add.outputs) != 1:
        return None, None
    made = reducer.outputs[0].array
    ports: list[tuple[Literal["input", "param"], int, ir.Port]] = [
        ("input", i, p) for i, p in enumerate(add.inputs)]
    ports += [("param", i, p) for i, p in enumerate(add.params)]
    data = [i for i, p in enumerate(add.inputs) if flow.producer(add, i) is reducer]
    if len(data) != 1:
        return None, None
    conv_port = add.inputs[data[0]]
    (where, index, bias_port) = next(q for q in ports if q[2] is not conv_port)
    if where != "param":
        return None, None  # a bias that is a parameter (an array without batch dims)
    read_conv, read_out = plain_reads(conv_port), plain_reads(add.outputs[0])
    read_bias = _port_labels(bias_port)
    if read_conv is None or read_out is None or read_bias is None or conv_port.targets or \
            add.outputs[0].targets or bias_port.targets:
        return None, None
    if conv_port.array.names != made.names or add.outputs[0].array.names != made.names or \
            any(read_conv[n] != read_out[n] for n in made.names) or \
            len(read_conv) != len(add.degree.axes):
        return None, None
    # the bias's axes, as the reducer's degree indices
    written = plain_reads(reducer.outputs[0])
    assert written is not None
    degree_of_name = {name: index for name, index in written.items()}
    name_of_add = {index: name for name, index in read_conv.items()}
    bias_labels = [degree_of_name[name_of_add[label]] for label in read_bias
                   if isinstance(label, int)]
    if len(bias_labels) != len(read_bias) or bias_labels != [*groups, *out_channels]:
        return None, None
    if bias_port.array.dtype.kind != "R":
        return None, None
    return add, (where, index)
