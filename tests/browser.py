"""Headless Chromium for the tests of the pages ncd makes: find it, take a screenshot of a
page, read what the page wrote to its console, and tell a blank screenshot from a drawn one.

    chromium = require_chromium()                 # or the test is skipped (fails under CI)
    shot = screenshot(chromium, url, tmp_path / "page.png")
    assert shot.console == []                     # no errors, no messages at all
    assert not is_blank(shot.png)

The console is read from Chromium's own log (`--enable-logging=stderr --v=0`), where each
console message, an uncaught exception included, is a line
`[...:INFO:CONSOLE:12] "Uncaught ReferenceError: f is not defined", source: URL (12)`;
a resource that fails to load is reported there too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome",
              "google-chrome-stable")

_CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\]\s*(.*)$")


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) to run, or None."""
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


def require_chromium() -> str:
    """Chromium's path. Where there is none the test is skipped, except under CI
    (`CI=true`), where the browser tests must run (`make test` installs Chromium): there it
    fails, unless `NCD_BROWSER_TESTS=skip` says the machine cannot have one."""
    found = find_chromium()
    if found is not None:
        return found
    reason = ("no Chromium found (looked for " + ", ".join(CANDIDATES) + "); `make test` "
              "installs it where apt-get can")
    if os.environ.get("CI") and os.environ.get("NCD_BROWSER_TESTS") != "skip":
        pytest.fail(reason + "; under CI the browser tests must run (NCD_BROWSER_TESTS=skip "
                    "skips them)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Shot:
    png: Path
    console: list[str]  # every console message of the page, as Chromium logs them
    log: str  # Chromium's whole standard error, to show when something is wrong


def screenshot(chromium: str, url: str, png: Path, *, width: int = 1280, height: int = 2000,
               timeout: float = 90) -> Shot:
    """Load `url` in a headless Chromium of its own (a fresh profile beside `png`), save a
    screenshot of the window to `png` and collect the page's console messages."""
    profile = png.parent / f".{png.stem}-profile"
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={png}", f"--window-size={width},{height}", url,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"Chromium took more than {timeout} s on {url}:\n{expired.stderr}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if done.returncode != 0 or not png.is_file():
        pytest.fail(f"Chromium failed on {url} (exit {done.returncode}):\n{done.stderr}")
    return Shot(png, console_messages(done.stderr), done.stderr)


def dump_dom(chromium: str, url: str, profile: Path, *, budget_ms: int = 3000,
             timeout: float = 90) -> tuple[str, list[str]]:
    """The page's markup after its scripts have run for `budget_ms` of (virtual) time, and
    its console messages."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}",
        "--dump-dom", url,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"Chromium took more than {timeout} s on {url}:\n{expired.stderr}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if done.returncode != 0:
        pytest.fail(f"Chromium failed on {url} (exit {done.returncode}):\n{done.stderr}")
    return done.stdout, console_messages(done.stderr)


def console_messages(log: str) -> list[str]:
    """The console messages in a Chromium log (its standard error)."""
    return [match.group(1) for line in log.splitlines()
            if (match := _CONSOLE.search(line)) is not None]


def colours(png: Path) -> dict[tuple[int, int, int], int]:
    """How many pixels of the screenshot have each colour."""
    from PIL import Image  # a dependency of fpdf2, which ncd depends on

    with Image.open(png) as image:
        counts = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert counts is not None
    return {colour: count for count, colour in counts}


def is_blank(png: Path) -> bool:
    """Whether the screenshot shows (next to) nothing: fewer than 16 colours, or all but
    0.5% of its pixels the background's colour."""
    counts = colours(png)
    total = sum(counts.values())
    return len(counts) < 16 or max(counts.values()) > 0.995 * total
