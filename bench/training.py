"""How long `ncd train` takes on the two tasks of tests/test_training.py, as a user runs it.

    python bench/training.py            # prints one line per task; writes nothing

Each task runs `ncd train` in a fresh process (start-up, torch's import, compiling the step
and the epochs all counted), as the tests do with the same data, and reports the wall time
and the accuracy of the last epoch: the Iris perceptron (`gallery/iris.ncd` on
`data/iris.csv`, 30 epochs of 16) and the convolutional network of `tests/models/bars.ncd` on
256 synthetic 8 × 8 images of a bar (12 epochs of 32). Not a test: timings are facts of a
machine, reported, never asserted.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

ACCURACY = re.compile(r"accuracy +([0-9.]+)%")


def run(name: str, arguments: list[str]) -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ncd", "train", *arguments, "--quiet"],
                          capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    accuracy = ACCURACY.findall(done.stdout)
    print(f"{name}: {elapsed:.1f} s wall, accuracy {accuracy[-1] if accuracy else '?'}% "
          "after the last epoch")


def main() -> None:
    from test_training import bars_data

    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    run("Iris perceptron (gallery/iris.ncd, 30 epochs)",
        [str(ROOT / "gallery" / "iris.ncd"), "--data", str(ROOT / "data" / "iris.csv"),
         "--epochs", "30", "--batch-size", "16"])
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "bars.pt"
        bars_data(data)
        run("bars convolutional network (tests/models/bars.ncd, 12 epochs)",
            [str(ROOT / "tests" / "models" / "bars.ncd"), "--data", str(data),
             "--epochs", "12", "--batch-size", "32"])


if __name__ == "__main__":
    main()
