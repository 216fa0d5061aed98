"""The labels of a broadcasted operation's dims: how each dim of an operand is read at a loop
position of the degree (`port_rows`), and what each dim of an output stands for
(`output_labels`)."""

from __future__ import annotations

from ncd import ir
from ncd.ops.lowering import Label, TensorCode, degree_label, target_label

from .errors import CompileError
from .views import Row


def _tiling_row(port: ir.Port, names: tuple[str, ...], axis_name: str
                ) -> tuple[tuple[int, ...], int]:
    """The row of `axis_name` in the port's reindexing, whose codomain's axes are `names`."""
    if axis_name not in names:
        raise CompileError(f"axis {axis_name!r} of {port.array.text()} is neither a target nor a "
                           f"tiling axis of its port")
    row = names.index(axis_name)
    return port.reindexing.matrix[row], port.reindexing.offset[row]


def port_rows(value: TensorCode, port: ir.Port) -> list[Row]:
    """How each declared dim of `value` is read at a loop position of the degree."""
    rows: list[Row] = []
    names = port.reindexing.codomain.names  # made anew at each use
    for axis in value.array.shape.axes:
        if axis.name in port.targets:
            rows.append(Row(((target_label(axis.name), 1),)))
        else:
            coefficients, offset = _tiling_row(port, names, axis.name)
            rows.append(Row(tuple((degree_label(i), c) for i, c in enumerate(coefficients) if c),
                            offset))
    return rows


def output_labels(port: ir.Port) -> list[Label]:
    """The label of each dim of an output array, in its memory order."""
    labels: list[Label] = []
    names = port.reindexing.codomain.names  # made anew at each use
    for axis in port.array.shape.axes:
        if axis.name in port.targets:
            labels.append(target_label(axis.name))
            continue
        coefficients, offset = _tiling_row(port, names, axis.name)
        ones = [i for i, c in enumerate(coefficients) if c]
        if len(ones) != 1 or coefficients[ones[0]] != 1 or offset:
            raise CompileError(f"output {port.array.text()} must tile over the degree by a "
                               f"permutation, not {port.reindexing.text()}")
        labels.append(degree_label(ones[0]))
    return labels

