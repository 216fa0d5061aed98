"""`ncd watch`: the preview server redraws when the file or a file it imports changes, shows
diagnostics while the file is broken, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import browser
import pytest

from ncd.cli import main
from ncd.watch import Preview

MODEL = '''"""A small model."""
axis x, m = 8

def inner(X: R[x, m]) -> R[x, m] {
    return relu(X)
}

def outer(X: R[x, m]) -> R[x, m] {
    """Two steps."""
    return linear[m -> m](inner(X), W)
}
'''

# One more operation in `outer`: a different diagram.
LONGER = MODEL.replace("return linear[m -> m](inner(X), W)",
                       "return softmax[m](linear[m -> m](inner(X), W))")

# `<b>` on the broken line: the page shows it as text, escaped.
BROKEN = MODEL.replace("return relu(X)", "return relu(X) <b>oops</b>")


def get(url: str) -> tuple[str, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode("utf-8"), dict(reply.headers)


def wait_for_version(preview: Preview, above: int, timeout: float = 10) -> int:
    """The version the server reports once it exceeds `above` (fails after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = int(get(preview.url + "version")[0])
        if version > above:
            return version
        time.sleep(0.02)
    pytest.fail(f"the preview did not notice the change (still version {above})")


def write(path: Path, text: str) -> None:
    """Save as editors do: the new text whole, in place of the old file."""
    temporary = path.with_name(f".{path.name}.saving")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.ncd"
    write(path, MODEL)
    return path


@pytest.fixture
def preview(model: Path) -> Iterator[Preview]:
    with Preview(model, port=0, poll=0.02, page_poll_ms=100) as running:
        yield running


def test_the_page_follows_edits_breakage_and_repair(preview: Preview, model: Path) -> None:
    page, headers = get(preview.url)
    assert "<svg" in page and "outer" in page and 'data-version="1"' in page
    assert "nonce-" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert get(preview.url + "version")[0] == "1"
    first, headers = get(preview.url + "fragment")
    assert headers["X-Ncd-Version"] == "1" and "<svg" in first

    write(model, LONGER)
    version = wait_for_version(preview, 1)
    changed, headers = get(preview.url + "fragment")
    assert headers["X-Ncd-Version"] == str(version)
    assert "<svg" in changed and changed != first

    write(model, BROKEN)
    version = wait_for_version(preview, version)
    broken = get(preview.url + "fragment")[0]
    assert "<svg" not in broken
    assert "error[E1" in broken  # the same text as `ncd check` prints
    assert "&lt;b&gt;oops&lt;/b&gt;" in broken and "<b>oops" not in broken
    assert "error[E1" in get(preview.url)[0]  # a reload shows the diagnostics too

    write(model, MODEL)
    wait_for_version(preview, version)
    repaired = get(preview.url + "fragment")[0]
    assert "<svg" in repaired and "error[" not in repaired


def test_an_imported_file_is_watched_too(tmp_path: Path) -> None:
    write(tmp_path / "part.ncd", "axis x, m = 8\ndef part(X: R[x, m]) -> R[x, m] {\n"
          "    return relu(X)\n}\n")
    main_file = tmp_path / "main.ncd"
    write(main_file, 'import "part.ncd"\ndef top(X: R[x, m]) -> R[x, m] {\n'
          "    return part(X)\n}\n")
    with Preview(main_file, "part", port=0, poll=0.02) as preview:
        before = get(preview.url + "fragment")[0]
        write(tmp_path / "part.ncd", "axis x, m = 8\ndef part(X: R[x, m]) -> R[x, m] {\n"
              "    return softmax[m](relu(X))\n}\n")
        wait_for_version(preview, 1)
        assert get(preview.url + "fragment")[0] != before


def test_saving_the_same_text_keeps_the_version(preview: Preview, model: Path) -> None:
    write(model, MODEL + "\n")  # a different file...
    version = wait_for_version(preview, 1)
    write(model, MODEL + "\n")  # ...then the same text again: nothing to redraw
    time.sleep(0.2)
    assert preview.refresh() is False
    assert preview.version == version


def test_definitions_are_chosen_by_name_and_an_unknown_one_is_a_diagnostic(
        model: Path) -> None:
    with Preview(model, "outr", port=0, poll=0.02) as preview:
        page = get(preview.url)[0]
        assert "no definition named &#x27;outr&#x27;" in page
        assert "did you mean `outer`?" in page and "<svg" not in page
        chosen = get(preview.url + "fragment?def=inner")[0]
        assert "<svg" in chosen and "inner(X: R[x, m])" in chosen
        assert get(preview.url + "?def=inner")[0].count("/fragment") == 1
    with Preview(model, port=0) as preview:  # default: the file's last definition
        assert "outer(X: R[x, m])" in get(preview.url + "fragment")[0]


def test_other_addresses_are_not_found(preview: Preview) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        get(preview.url + "model.ncd")
    assert error.value.code == 404


def test_a_missing_file_is_a_usage_error(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", str(tmp_path / "absent.ncd"), "--port", "0"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_port_in_use_is_a_usage_error(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["watch", str(model), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_the_command_serves_until_ctrl_c(model: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ncd", "watch", str(model), "--port", "0", "--labels", "sizes"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as a terminal delivers it, even where this test runs in a background job (whose
        # children inherit SIGINT ignored, so Python would install no handler for it).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line + process.communicate(timeout=10)[1]
        url = line[line.index("http://"):].split()[0]
        assert "<svg" in get(url)[0]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, 130)
    assert "Traceback" not in err and "stopped" in err


def test_the_broken_page_in_a_browser(model: Path, tmp_path: Path) -> None:
    """The page of a broken file is drawn, its diagnostics in the colour of errors, without
    a console message (the next test runs the page of a good file)."""
    chromium = browser.require_chromium()
    with Preview(model, port=0, poll=0.02) as preview:
        write(model, BROKEN)
        wait_for_version(preview, 1)
        shot = browser.screenshot(chromium, preview.url, tmp_path / "watch-broken.png",
                                  height=900)
    assert shot.console == [], shot.log
    assert not browser.is_blank(shot.png)
    assert [c for c in browser.colours(shot.png) if c[0] > 150 and c[1] < 90 and c[2] < 90]


def test_an_internal_error_while_drawing_is_shown_not_raised(
        preview: Preview, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr("ncd.renderers.render_svg", fail)
    page = get(preview.url + "fragment?def=inner")[0]
    assert "internal error while drawing" in page and "<svg" not in page


def test_the_page_script_fetches_what_is_new(preview: Preview, tmp_path: Path) -> None:
    """A page that is behind (an older version, stale content) replaces its content with the
    server's current one at its first look, in a real browser."""
    chromium = browser.require_chromium()
    original = preview.page

    def behind(definition: str | None) -> tuple[str, str]:
        text, nonce = original(definition)
        text = text.replace('data-version="1"', 'data-version="0"')
        text = re.sub(r'(id="content">).*?(</div></main>)', r"\1STALE\2", text, flags=re.S)
        assert "STALE" in text and "<svg" not in text
        return text, nonce

    preview.page = behind  # type: ignore[method-assign]
    dom, console = browser.dump_dom(chromium, preview.url, tmp_path / "profile")
    assert console == []
    assert "STALE" not in dom and "<svg" in dom and "outer(X: R[x, m])" in dom
    assert re.search(r'id="live" class="badge ok"[^>]*>live<', dom), dom
