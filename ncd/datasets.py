"""Training data for `ncd train`: a CSV file or a `.pt` file read into two tensors, the
model's inputs and the loss's targets, checked against the training set-up's types.

CSV (docs/training.md): one example per row; first the model input's entries, in the order of
its axes after the batch axis (row-major: for `X: R[b, x, y]`, x * y columns), then the
target's entries (one integer label per row for `cross_entropy[n]` on an output `R[b, n]`; for
`mse` and `bce_with_logits` as many numbers as the output has entries per example). A first
row that is not all numbers is a header and is skipped. Blank lines are skipped.

`.pt` (what `torch.save` writes): a dict with the tensors `inputs` (the batch first, then the
model input's axes) and `targets` (the batch first, then the target's axes), read with
`weights_only=True` (no code in the file runs).

Every problem is a diagnostic (E316) that points at the row and column, never a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ncd import ir
from ncd.diagnostics import Diagnostic, NcdError
from ncd.sizes import ProgramSizes

if TYPE_CHECKING:
    import torch

MAX_DATA_BYTES = 2_000_000_000


@dataclass(frozen=True)
class Dataset:
    inputs: torch.Tensor
    """The model's inputs, the batch first (float32, or bool for a Boolean circuit)."""
    targets: torch.Tensor
    """The loss's targets, the batch first (int64 labels, float32 values, or bool)."""

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class Layout:
    """The entries of one example: the input's and the target's sizes after the batch axis."""

    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    labels: int | None
    """The number of classes when the targets are integer labels."""
    boolean_inputs: bool = False
    boolean_targets: bool = False
    """Whether the inputs (the targets) are Booleans, written 0 or 1 (a Boolean circuit)."""

    @property
    def input_columns(self) -> int:
        return math.prod(self.input_shape)

    @property
    def target_columns(self) -> int:
        return math.prod(self.target_shape)


def layout(program: ir.Program, training: ir.Training) -> Layout:
    """The sizes of one example; a `ValueError` naming the axis whose size is not known."""
    sizes = ProgramSizes(program.axes)

    def known(array: ir.ArrayType) -> tuple[int, ...]:
        values: list[int] = []
        for axis in array.shape.axes[1:]:
            value = sizes.value(axis.size)
            if value is None:
                raise ValueError(f"the axis `{axis.name}` of {array.text()} has no size: give "
                                 f"it one with `-D {axis.name}=...`")
            values.append(value)
        return tuple(values)

    target = training.loss.target
    labels = None
    if target.dtype.kind == "N" and target.dtype.bound is not None:
        labels = sizes.value(target.dtype.bound)
    return Layout(known(training.input.array), known(target), labels,
                  training.input.array.dtype.kind == "B", target.dtype.kind == "B")


def read_dataset(path: Path, data_layout: Layout) -> Dataset:
    """The examples of a `.csv` or `.pt` file; `NcdError` (E316) when the file does not fit."""
    display = str(path)
    if path.suffix not in (".csv", ".pt"):
        _fail(f"`{display}` is neither a .csv nor a .pt file", _whole(display),
              hint="give the examples as CSV (one example a row) or as a .pt file of "
              "`{'inputs': ..., 'targets': ...}` (docs/training.md)")
    try:
        size = path.stat().st_size
        if size > MAX_DATA_BYTES:
            _fail(f"`{display}` is larger than {MAX_DATA_BYTES:,} bytes", _whole(display))
        if path.suffix == ".pt":
            return _read_pt(path, display, data_layout)
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        _fail(f"`{display}` is not UTF-8 text ({error.reason})", _whole(display))
    except OSError as error:
        _fail(f"cannot read `{display}`: {error.strerror or error}", None)
    return _read_csv(text, display, data_layout)


def _read_csv(text: str, display: str, data_layout: Layout) -> Dataset:
    import torch

    width = data_layout.input_columns + data_layout.target_columns
    features: list[list[float]] = []
    targets: list[list[float]] = []
    sources = {display: text}
    first = True
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split(",")
        values = [_number(cell) for cell in cells]
        if first and any(value is None for value in values):
            first = False
            continue  # a header
        first = False
        if len(cells) != width:
            _fail(f"this row has {len(cells)} columns; the training set-up reads {width}: "
                  f"{_columns_text(data_layout)}", _cell_span(display, line, number, None),
                  sources)
        for index, value in enumerate(values):
            if value is None or not math.isfinite(value):
                _fail(f"`{cells[index].strip()}` is not a finite number",
                      _cell_span(display, line, number, index), sources)
        row = [float(value) for value in values if value is not None]
        for index, value in enumerate(row):
            boolean = data_layout.boolean_inputs if index < data_layout.input_columns \
                else data_layout.boolean_targets
            if boolean and value not in (0.0, 1.0):
                _fail(f"`{cells[index].strip()}` is not a Boolean: write 0 or 1",
                      _cell_span(display, line, number, index), sources)
        label_cells = row[data_layout.input_columns:]
        if data_layout.labels is not None:
            for offset, label in enumerate(label_cells):
                if label != int(label) or not 0 <= label < data_layout.labels:
                    _fail(f"the label `{cells[data_layout.input_columns + offset].strip()}` is "
                          f"not a class: labels are 0 to {data_layout.labels - 1}",
                          _cell_span(display, line, number, data_layout.input_columns + offset),
                          sources)
        features.append(row[:data_layout.input_columns])
        targets.append(label_cells)
    if not features:
        _fail(f"`{display}` holds no examples", _whole(display),
              hint=f"one example a row: {_columns_text(data_layout)}")
    inputs = torch.tensor(features, dtype=torch.float32).reshape(
        len(features), *data_layout.input_shape)
    dtype = torch.int64 if data_layout.labels is not None else torch.float32
    labels = torch.tensor(targets, dtype=dtype).reshape(len(targets), *data_layout.target_shape)
    return _booleans(Dataset(inputs, labels), data_layout)


def _booleans(data: Dataset, data_layout: Layout) -> Dataset:
    """The inputs and targets a Boolean circuit reads as bool tensors (their entries are 0 or
    1, checked before)."""
    inputs = data.inputs.bool() if data_layout.boolean_inputs else data.inputs
    targets = data.targets.bool() if data_layout.boolean_targets else data.targets
    return Dataset(inputs, targets)


def _read_pt(path: Path, display: str, data_layout: Layout) -> Dataset:
    import pickle

    import torch

    span = _whole(display)
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as error:
        _fail(f"`{display}` is not a file `torch.save` wrote, or holds more than tensors: "
              f"{str(error).splitlines()[0] if str(error) else type(error).__name__}", span)
    if not isinstance(loaded, dict) or not {"inputs", "targets"} <= set(loaded):
        _fail(f"`{display}` does not hold a dict with `inputs` and `targets`", span,
              hint="save it as `torch.save({'inputs': X, 'targets': T}, path)`")
    inputs, targets = loaded["inputs"], loaded["targets"]
    for key, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            _fail(f"`{key}` in `{display}` is a {type(value).__name__}, not a tensor", span)
    expected = {"inputs": data_layout.input_shape, "targets": data_layout.target_shape}
    for key, value in (("inputs", inputs), ("targets", targets)):
        if tuple(value.shape[1:]) != expected[key] or value.dim() == 0:
            shown = ", ".join(["N", *(str(n) for n in expected[key])])
            _fail(f"`{key}` in `{display}` has the shape {tuple(value.shape)}; the training "
                  f"set-up reads ({shown})", span)
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        _fail(f"`{display}` holds {inputs.shape[0]} inputs and {targets.shape[0]} targets",
              span, hint="one target per input, and at least one example")
    if data_layout.labels is not None:
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            _fail(f"`targets` in `{display}` are {targets.dtype}; labels are integers", span)
        if bool((targets < 0).any()) or bool((targets >= data_layout.labels).any()):
            _fail(f"`targets` in `{display}` holds labels outside 0 to "
                  f"{data_layout.labels - 1}", span)
        targets = targets.long()
    else:
        targets = targets.float()
    if inputs.dtype == torch.bool:
        inputs = inputs.float()
    if not inputs.is_floating_point() or not bool(torch.isfinite(inputs).all()):
        _fail(f"`inputs` in `{display}` are not all finite real numbers", span)
    for key, value, boolean in (("inputs", inputs, data_layout.boolean_inputs),
                                ("targets", targets, data_layout.boolean_targets)):
        if boolean and not bool(((value == 0) | (value == 1)).all()):
            _fail(f"`{key}` in `{display}` are not all Booleans (0 or 1)", span)
    return _booleans(Dataset(inputs.float(), targets), data_layout)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _columns_text(data_layout: Layout) -> str:
    target = "label" if data_layout.labels is not None else "target"
    return (f"{data_layout.input_columns} feature column"
            f"{'s' if data_layout.input_columns != 1 else ''}, then "
            f"{data_layout.target_columns} {target} column"
            f"{'s' if data_layout.target_columns != 1 else ''}")


def _cell_span(display: str, line: str, number: int, index: int | None) -> ir.Span:
    """The span of cell `index` of a row (None: the whole row)."""
    if index is None:
        return ir.Span(file=display, line=number, column=1, end_line=number,
                       end_column=len(line) + 1)
    start = sum(len(cell) + 1 for cell in line.split(",")[:index])
    width = len(line.split(",")[index])
    return ir.Span(file=display, line=number, column=start + 1, end_line=number,
                   end_column=start + max(width, 1) + 1)


def _whole(display: str) -> ir.Span:
    return ir.Span(file=display, line=1, column=1, end_line=1, end_column=1)


def _fail(message: str, span: ir.Span | None, sources: dict[str, str] | None = None, *,
          hint: str | None = None) -> NoReturn:
    raise NcdError([Diagnostic("E316", message, span, hint=hint)], sources)
