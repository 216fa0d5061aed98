"""A one-line progress bar on a terminal, redrawn in place with `\\r` (what `ncd check` shows
over many files and `ncd train` over the batches of an epoch)."""

from __future__ import annotations

import shutil
from typing import TextIO


class ProgressBar:
    """`before[#####.....] done/total after`, cut to the terminal's width; `clear` wipes it so
    that the next line (a diagnostic, an epoch's figures) starts clean."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = 0  # the length of the line on the screen

    def show(self, done: int, total: int, *, before: str = "", after: str = "") -> None:
        filled = self.WIDTH * done // max(total, 1)
        line = f"{before}[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        if after:
            line += f" {after}"
        line = line[:max(shutil.get_terminal_size().columns - 1, 20)]
        self.stream.write("\r" + line.ljust(self.shown))
        self.shown = len(line)
        self.stream.flush()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.shown = 0
            self.stream.flush()
