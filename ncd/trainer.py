"""Running a training set-up (`ncd train`): its compiled training step over a data set for a
number of epochs, in shuffled mini-batches, with the mean loss and the accuracy of each epoch.

The step is the module `ncd compile FILE TRAINDEF` writes (`compilers.training`), built in
process; this module only feeds it batches and reports. Accuracy is measured after each epoch
over the whole data set with the parameters as they are then (the training accuracy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ncd.api import Program
from ncd.datasets import Dataset
from ncd.progress import ProgressBar

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Epoch:
    number: int
    loss: float
    """The mean of the step losses over the epoch, each batch weighted by its size."""
    accuracy: float | None
    """The share of right predictions over the whole data set after the epoch (None: the loss
    has no notion of a right answer)."""
    seconds: float


@dataclass
class TrainingRun:
    step: torch.nn.Module
    epochs: list[Epoch] = field(default_factory=list)


def train(program: Program, name: str, data: Dataset, *, epochs: int, batch_size: int,
          seed: int, report: Callable[[Epoch], None] | None = None,
          progress: ProgressBar | None = None) -> TrainingRun:
    """Build the training step of `name` (its parameters initialised under `seed`) and run it
    `epochs` times over `data` in shuffled batches of `batch_size` (the order drawn from
    `seed` too)."""
    import torch

    torch.manual_seed(seed)
    step = program.training_step(name)
    shuffle = torch.Generator().manual_seed(seed)
    run = TrainingRun(step)
    count = len(data)
    batches = (count + batch_size - 1) // batch_size
    for number in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(count, generator=shuffle)
        total = 0.0
        for index in range(batches):
            chosen = order[index * batch_size:(index + 1) * batch_size]
            loss = step(data.inputs[chosen], data.targets[chosen])
            total += float(loss) * len(chosen)
            if progress is not None:
                loss_so_far = total / min((index + 1) * batch_size, count)
                progress.show(index + 1, batches, before=f"epoch {number}/{epochs} ",
                              after=f"loss {loss_so_far:.4f}")
        if progress is not None:
            progress.clear()
        epoch = Epoch(number, total / count, accuracy(step, data, batch_size),
                      time.perf_counter() - started)
        run.epochs.append(epoch)
        if report is not None:
            report(epoch)
    return run


def accuracy(step: torch.nn.Module, data: Dataset, batch_size: int) -> float | None:
    """The share of right predictions over `data` (None when the loss counts none)."""
    right = 0
    chunk = max(batch_size, 1024)
    # The step module's own method (`nn.Module` types its attributes as tensors or modules).
    correct = cast("Callable[[torch.Tensor, torch.Tensor], int | None]", step.correct)
    for start in range(0, len(data), chunk):
        counted = correct(data.inputs[start:start + chunk], data.targets[start:start + chunk])
        if counted is None:
            return None
        right += counted
    return right / data.targets.numel()


def epoch_line(epoch: Epoch, epochs: int) -> str:
    """`epoch 3/50  loss 0.4123  accuracy  91.3%` (no time: the same run prints the same)."""
    width = len(str(epochs))
    shown = "" if epoch.accuracy is None else f"  accuracy {100 * epoch.accuracy:5.1f}%"
    return f"epoch {epoch.number:>{width}}/{epochs}  loss {epoch.loss:.4f}{shown}"
