"""Convolutions and pools as one call of PyTorch's kernels (`F.conv1d`/`2d`/`3d`,
`F.max_pool*d`, `F.avg_pool*d`).

`ncd.convolution.find_windows` finds the pattern (zero paddings, a window reindexing, a sum
against a kernel or a max or mean over the window, a bias); this module lowers each match: the
paddings and the window write no code (their arrays are read by nothing else), and the last
member becomes one call. The source array is laid out as the kernel wants it (its batch axes
flattened into one leading dim, its group and input channel axes into one channel dim, then
its spatial axes: a view when they are already in that order), the kernel parameter is viewed
as `(groups * out, in, window...)` (its layout and values are the module's own, so state
dicts are unchanged), and the output is split back into the term's axes. The kernels never
copy the windows out, which is what makes them faster and smaller than the term written out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd import ir
from ncd.convolution import Window, find_windows
from ncd.ops.lowering import Label, TensorCode, degree_label, dims_test, float_literal
from ncd.term_flow import TermFlow

from .views import permute_text

if TYPE_CHECKING:
    from .forward import ForwardEmitter

PLACEHOLDER = "_fused_window"
"""The code of a member's output that only the next member reads (it writes no code)."""


class WindowLowering:
    """The matches of the terms an emitter writes, and the sources and kernels read so far."""

    def __init__(self, emitter: ForwardEmitter) -> None:
        self.emitter = emitter
        self.roles: dict[int, Window] = {}  # id of a member term -> its match
        self.sources: dict[int, TensorCode] = {}  # id of a match's reducer -> its source
        self.kernels: dict[int, TensorCode] = {}  # id of a match's reducer -> its kernel

    def plan(self, term: ir.Composed, flow: TermFlow) -> None:
        """Find the matches in a composition about to be written, whose flow is `flow` (the
        terms are the IR's own objects, alive while it is written, so their ids name them)."""
        for match in find_windows(term, self.emitter.sizes, flow):
            if any(id(member) in self.roles for member in match.members):
                continue  # found again from an enclosing composition
            for member in match.members:
                self.roles[id(member)] = match

    def lower(self, term: ir.Term, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of a member of a match, or None for any other term."""
        match = self.roles.get(id(term))
        if match is None:
            return None
        key = id(match.reducer)
        if term is match.source_port:
            self.sources[key] = inputs[0]
        if term is match.reducer and match.kernel_port is not None:
            self.kernels[key] = self.emitter.parameters(match.reducer)[0]
        last = match.bias if match.bias is not None else match.reducer
        if term is not last:
            return [TensorCode(PLACEHOLDER, term.cod[0], inputs[0].batched)]
        source = self.sources.pop(key)
        bias = None
        if match.bias is not None:
            bias = self.emitter.parameters(match.bias)[0]
        return [self._call(match, source, self.kernels.pop(key, None), bias)]

    # ---- the call
    def _call(self, match: Window, source: TensorCode, kernel: TensorCode | None,
              bias: TensorCode | None) -> TensorCode:
        emit = self.emitter
        reducer = match.reducer
        degree = reducer.degree.axes
        names = source.array.names
        axes = source.array.shape.axes
        by_role: dict[str, list[str]] = {"batch": [], "group": [], "in": [], "spatial": []}
        for name, (role, _) in zip(names, match.source_roles, strict=True):
            by_role[role].append(name)
        channels = [*by_role["group"], *by_role["in"]]
        layout = [*by_role["batch"], *channels, *by_role["spatial"]]
        expr = permute_text(source.code, names, layout)
        spatial_sizes = [emit.size(axes[axis.source_axis].size) for axis in match.spatial]
        plain = not source.batched and len(by_role["batch"]) == 1 and \
            (match.kind != "conv" or len(channels) == 1)
        general = expr
        if not plain:
            if match.kind == "conv":
                channel_sizes = [source.array.shape.axis(n).size for n in channels]
                sizes = [self.emitter.size_product(channel_sizes)]
            else:
                # one channel, batch mode: the unbatched form `(planes, spatial...)` of a pool
                # refuses zero planes, so an empty batch would fail
                sizes = ["1"]
            general = f"{expr}.reshape({', '.join(['-1', *sizes, *spatial_sizes])})"
        out_labels: list[int] = [*match.batch, *match.groups, *match.out_channels,
                                 *(axis.output for axis in match.spatial)]

        def shape() -> str:
            """The output's shape after the flattened call (its sizes read when written)."""
            text = emit.tuple_text([emit.size(degree[i].size) for i in out_labels])
            return f"{emit.leading_shape(source)} + {text}" if source.batched else text

        windowed = " ".join(axis.kernel for axis in match.spatial)
        comment = f"{self._described(match)} over {windowed} in one call"
        if match.pads:
            comment += ", the padding inside it"
        if match.bias is not None:
            comment += ", with its bias"
        labels: list[Label] = [degree_label(i) for i in out_labels]
        term = reducer
        if match.bias is not None:
            term = match.bias
            labels = self._bias_labels(match, out_labels)
        fallback = self._described(match).replace(" ", "_")
        fast = None if plain else self._fast_dims(match, source, expr, by_role, channels)
        in_place = labels == emit.output_labels(term.outputs[0])
        if fast is not None:
            # the array as the kernel takes it (no leading batch dims, or exactly one): no
            # reshape before the call or after it
            test = dims_test(source.code, fast)

            def fast_call() -> str:
                return self._kernel(match, expr, kernel, bias)

            def general_call() -> str:
                return f"{self._kernel(match, general, kernel, bias)}.reshape({shape()})"

            if in_place:
                return emit.finish_either(term, test, fast_call, general_call, labels,
                                          comment=comment, batched=source.batched,
                                          fallback=fallback)
            expr = emit.assign_either(fallback, test, fast_call, general_call,
                                      comment + emit.source_note(term.span), fallback)
            comment = "axes back in place"
        else:
            expr = self._kernel(match, general, kernel, bias)
            if not plain:
                expr = f"{expr}.reshape({shape()})"
            if not in_place:
                # the call on a line of its own, so that a formatter wraps its arguments, not
                # the permute after it
                expr = emit.assign(fallback, expr, comment + emit.source_note(term.span))
                comment = "axes back in place"
        return emit.finish(term, expr, labels, comment=comment, batched=source.batched,
                           fallback=fallback)

    @staticmethod
    def _described(match: Window) -> str:
        return {"conv": "convolution", "max": "max pool"}.get(match.kind, "mean pool")

    def _fast_dims(self, match: Window, source: TensorCode, expr: str,
                   by_role: dict[str, list[str]], channels: list[str]) -> int | None:
        """The number of dims for which the kernel takes the source as it is, its layout
        `(N, C, spatial...)` already: no permute, one batch dim (the only declared batch axis,
        or one leading dim when none is declared) and one channel dim (a convolution's input
        channels, one output channel axis; a pool's planes: its last batch axis, of a fixed
        size, since a pool refuses zero planes). None when a reshape is always needed."""
        if expr != source.code or not source.batched:
            return None
        batch = by_role["batch"]
        if match.kind == "conv":
            if len(batch) > 1 or len(channels) != 1 or \
                    len(match.groups) + len(match.out_channels) != 1:
                return None
        else:
            if channels or not 1 <= len(batch) <= 2:
                return None
            planes = self.emitter.sizes.value(source.array.shape.axis(batch[-1]).size)
            if not planes:
                return None
        return match.rank + 2

    def _kernel(self, match: Window, operand: str, kernel: TensorCode | None,
                bias: TensorCode | None) -> str:
        """The kernel's call on `operand` (laid out `(N, C, spatial...)`), cut, scaled and
        trimmed to the output's positions."""
        emit = self.emitter
        degree = match.reducer.degree.axes
        expr = operand
        if any(axis.cut for axis in match.spatial):
            cuts = [f"{axis.cut}:" if axis.cut else ":" for axis in match.spatial]
            expr = f"{expr}[..., {', '.join(cuts)}]"
        rank = match.rank
        strides = self._ints([axis.stride for axis in match.spatial])
        paddings = self._ints([axis.padding for axis in match.spatial])
        dilations = self._ints([axis.dilation for axis in match.spatial])
        windows = self._ints([axis.kernel_size for axis in match.spatial])
        if match.kind == "conv":
            assert kernel is not None
            bias_code = "None"
            if bias is not None:
                bias_code = bias.code if bias.rank == 1 else f"{bias.code}.flatten()"
            arguments = [expr, self._weight(match, kernel), bias_code]
            if strides != "1":
                arguments.append(f"stride={strides}")
            if paddings != "0":
                arguments.append(f"padding={paddings}")
            if dilations != "1":
                arguments.append(f"dilation={dilations}")
            if match.groups:
                arguments.append(
                    f"groups={self.emitter.size_product([degree[i].size for i in match.groups])}")
            call = f"conv{rank}d"
        elif match.kind == "max":
            arguments = [expr, windows, strides]
            if paddings != "0":
                arguments.append(f"padding={paddings}")
            if dilations != "1":
                arguments.append(f"dilation={dilations}")
            call = f"max_pool{rank}d"
        else:
            arguments = [expr, windows, strides]
            if paddings != "0":
                arguments.append(f"padding={paddings}")
            call = f"avg_pool{rank}d"
        expr = f"{emit.functional_call(call)}({', '.join(arguments)})"
        if match.factor != 1:
            expr = f"({expr} * {float_literal(float(match.factor))})"
        if any(axis.trim for axis in match.spatial):
            trims = [f":{emit.size(degree[axis.output].size)}" if axis.trim else ":"
                     for axis in match.spatial]
            expr = f"{expr}[..., {', '.join(trims)}]"
        return expr

    def _weight(self, match: Window, kernel: TensorCode) -> str:
        """The kernel parameter as `(groups * out, in, window...)`: a view when its axes are
        already in that order."""
        emit = self.emitter
        names = kernel.array.names
        role_of = dict(zip(names, match.kernel_axes, strict=True))
        groups = [n for n in names if role_of[n][0] == "group"]
        outs = [n for n in names if role_of[n][0] == "out"]
        source_ins = [label for role, label in match.source_roles if role == "in"]
        ins = sorted((n for n in names if role_of[n][0] == "in"),
                     key=lambda n: source_ins.index(role_of[n][1]))
        window_of = {label: n for n in names for role, label in [role_of[n]]
                     if role == "window"}
        windows = [window_of[axis.kernel] for axis in match.spatial]
        # groups in the source's order, as the channel dim of the input flattens them
        source_groups = [label for role, label in match.source_roles if role == "group"]
        groups.sort(key=lambda n: source_groups.index(role_of[n][1]))
        order = [*groups, *outs, *ins, *windows]
        expr = permute_text(kernel.code, names, order)
        if len(groups) + len(outs) == 1 and len(ins) == 1:
            return expr
        sizes = {axis.name: axis.size for axis in kernel.array.shape.axes}
        shape = [self.emitter.size_product([sizes[n] for n in [*groups, *outs]]),
                 self.emitter.size_product([sizes[n] for n in ins]),
                 *(emit.size(sizes[n]) for n in windows)]
        return f"{expr}.reshape({', '.join(shape)})"

    def _bias_labels(self, match: Window, out_labels: Sequence[int]) -> list[Label]:
        """The labels of the bias addition's degree for the reducer's degree indices."""
        assert match.bias is not None
        written = match.reducer.outputs[0].reindexing
        name_of = {}
        for name, row in zip(written.codomain.names, written.matrix, strict=True):
            name_of[row.index(1)] = name
        read = match.bias.inputs[0].reindexing
        index_of = {}
        for name, row in zip(read.codomain.names, read.matrix, strict=True):
            index_of[name] = row.index(1)
        return [degree_label(index_of[name_of[i]]) for i in out_labels]

    def _ints(self, values: Sequence[int]) -> str:
        """One int when every axis has it, else a tuple."""
        if len(set(values)) == 1:
            return str(values[0])
        return self.emitter.tuple_text([str(v) for v in values])
