"""`ncd train FILE [TRAINDEF] --data DATA`: run a training set-up of a file on a data file,
printing the loss and accuracy of each epoch (a progress bar on standard error when it is a
terminal). Declared here, apart from `ncd.cli`, so that building the CLI's parser imports
nothing heavy; torch is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, cast


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Declare `ncd train` and its arguments on the CLI's subcommand parser."""
    from ncd.cli import include_option

    sub = commands.add_parser(
        "train", parents=parents, help="train a model with a `train` set-up on a data file",
        description="Run the training step of a `train` set-up (by default the last of the "
        "file) over the examples of a .csv or .pt file for some epochs, in shuffled batches; "
        "print the mean loss and the training accuracy of each epoch (docs/training.md).")
    sub.add_argument("file", metavar="FILE", help="a .ncd file with a `train` set-up")
    sub.add_argument("training", nargs="?", metavar="TRAINDEF",
                     help="the training set-up to run (default: the last of the file)")
    sub.add_argument("--data", required=True, metavar="DATA",
                     help="the examples: a .csv file (feature columns, then the target "
                     "columns; a header row is optional) or a .pt file of "
                     "{'inputs': ..., 'targets': ...}")
    sub.add_argument("--epochs", type=_positive, default=10, metavar="N",
                     help="passes over the data (default 10)")
    sub.add_argument("--batch-size", type=_positive, default=32, metavar="B",
                     help="examples per step (default 32)")
    sub.add_argument("--seed", type=int, default=0, metavar="S",
                     help="seeds the initial parameters and the shuffling (default 0)")
    sub.add_argument("-o", "--output", metavar="OUT",
                     help="save the trained model's state_dict to OUT (torch.save)")
    sub.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no line per epoch: only the last epoch's line")
    sub.add_argument("-D", "--define", action="append", metavar="AXIS=SIZE",
                     help="override the size of a declared axis (repeatable)")
    include_option(sub)
    sub.set_defaults(run=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from ncd import ir
    from ncd.api import load
    from ncd.cli import (
        EXIT_OK,
        UsageError,
        _check_input,
        include_folders,
        parse_size_overrides,
        write_atomically,
    )
    from ncd.datasets import layout, read_dataset
    from ncd.diagnostics import did_you_mean
    from ncd.progress import ProgressBar
    from ncd.trainer import Epoch, epoch_line, train

    # PyTorch warns at import when NumPy is missing; ncd train needs no NumPy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    sizes = parse_size_overrides(args.define or [])
    loaded = load(_check_input(args.file), sizes=sizes, include=include_folders(args))
    program = loaded.ir
    names = list(loaded.training_names)
    if not names:
        raise UsageError(f"{args.file} has no training set-up; add one: `train fit {{ model: "
                         "mlp  loss: cross_entropy[n]  optimiser: adam(lr = 0.01) }`")
    name = args.training or names[-1]
    if name not in names:
        hint = did_you_mean(name, names)
        raise UsageError(f"no training set-up named {name!r} in {args.file}; "
                         + (hint or f"it has {', '.join(names)}"))
    training = program.training(name)
    batch = training.input.array.shape.axes[0]
    if not isinstance(batch.size, ir.SizeSym):
        raise UsageError(f"the batch axis `{batch.name}` has a fixed size here (-D "
                         f"{batch.name}=...); ncd train feeds batches of --batch-size: leave "
                         "it free")
    try:
        data_layout = layout(program, training)
    except ValueError as error:
        raise UsageError(str(error)) from None
    data_path = Path(args.data)
    if not data_path.is_file():
        raise UsageError(f"cannot find the data file `{args.data}`")
    data = read_dataset(data_path, data_layout)
    progress = None
    if not args.quiet and sys.stderr is not None and sys.stderr.isatty():
        progress = ProgressBar(sys.stderr)

    def report(epoch: Epoch) -> None:
        if not args.quiet or epoch.number == args.epochs:
            print(epoch_line(epoch, args.epochs), flush=True)

    if not args.quiet:
        print(f"training {training.model} with {training.loss.name} and "
              f"{training.optimiser.name} on {len(data)} examples of {args.data}", flush=True)
    result = train(loaded, name, data, epochs=args.epochs, batch_size=args.batch_size,
                   seed=args.seed, report=report, progress=progress)
    if not args.quiet:
        seconds = sum(epoch.seconds for epoch in result.epochs)
        print(f"ncd train: {args.epochs} epoch{'s' if args.epochs != 1 else ''} in "
              f"{seconds:.2f} s", file=sys.stderr)
    if args.output:
        import io

        import torch

        buffer = io.BytesIO()
        model = cast(torch.nn.Module, result.step.model)
        torch.save(model.state_dict(), buffer)
        write_atomically(Path(args.output), buffer.getvalue())
    return EXIT_OK
