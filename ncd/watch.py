"""`ncd watch FILE [DEF]`: a live preview in the browser that redraws on save.

A `Preview` serves one page on a local HTTP server (the standard library's, in a thread). A
second thread polls the file and every file it imports (size, modification time, inode) a few
times a second; when one changes, the program is checked again. The page asks the server for
the current version (`/version`) every half second and, when it has changed, fetches its new
content (`/fragment`) and puts it in place, keeping its scroll position. A file with errors
shows the diagnostics that `ncd check` prints instead of the diagram, until it is fixed.

    preview = Preview(Path("model.ncd"), port=0)   # port 0: a free one
    preview.start()
    print(preview.url)
    ...
    preview.stop()

The server answers only these addresses (`/`, `/fragment`, `/version`, with `?def=NAME` to
show another definition) and never serves files.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ncd import webpage

if TYPE_CHECKING:
    import http.server

POLL_SECONDS = 0.2
"""How often the files are looked at."""
PAGE_POLL_MS = 500
"""How often the page asks whether there is something new."""

Stamp = tuple[int, int, int] | None
"""What a file's change shows in: (modification time in ns, size, inode); None when absent."""


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Declare `ncd watch` and its arguments on the CLI's subcommand parser."""
    from ncd import render_args

    sub = commands.add_parser(
        "watch", help="serve a live preview that redraws on save", parents=parents,
        description="Serve a page that shows the diagram of DEF (default: the file's last "
        "definition) and redraws it whenever FILE or a file it imports is saved; a file with "
        "errors shows its diagnostics instead. Ctrl-C stops.")
    sub.add_argument("file", metavar="FILE", help="the .ncd file to show")
    sub.add_argument("definition", nargs="?", metavar="DEF",
                     help="the definition shown (default: the file's last)")
    sub.add_argument("--host", default="127.0.0.1",
                     help="the address to listen on (default: 127.0.0.1, this machine only)")
    sub.add_argument("--port", type=_port, default=8000,
                     help="the port to listen on (default: 8000; 0 picks a free one)")
    render_args.add_arguments(sub, parents)
    sub.set_defaults(run=run)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from ncd import render_args
    from ncd.cli import _check_input, color_enabled

    path = _check_input(args.file)
    preview = Preview(path, args.definition, sizes=render_args.sizes(args),
                      include=render_args.include(args),
                      options=render_args.render_options(args), host=args.host,
                      port=args.port, log=_print, color=color_enabled(args))
    preview.start()
    try:
        print(f"ncd watch: showing {args.file} at {preview.url}  (Ctrl-C stops)", flush=True)
        preview.wait()
    except KeyboardInterrupt:
        print("\nncd watch: stopped", file=sys.stderr)
    finally:
        preview.stop()
    return 0


def _print(line: str, detail: str | None) -> None:
    """Report a new state of the files on standard error: any diagnostics, then a line."""
    if detail:
        print(detail, file=sys.stderr)
    print(line, file=sys.stderr, flush=True)


@dataclass
class _State:
    """What the files said when they were last read."""

    version: int
    digest: str
    program: Any | None  # ncd.api.Program when the files check
    problem: str | None  # the diagnostics (plain text) when they do not
    error: Any | None  # ncd.diagnostics.NcdError, when they are diagnostics
    stamps: dict[str, Stamp]
    pages: dict[str | None, str] = field(default_factory=dict)  # drawn content, by DEF


class Preview:
    """A preview server for one file. `start` serves it (on `url`) and watches the files;
    `stop` ends both. `refresh` reads the files again now if they changed (the watching
    thread calls it every `poll` seconds)."""

    def __init__(self, path: Path | str, definition: str | None = None, *,
                 sizes: Mapping[str, int] | None = None, options: Any = None,
                 include: Sequence[str] = (),
                 host: str = "127.0.0.1", port: int = 0, poll: float = POLL_SECONDS,
                 page_poll_ms: int = PAGE_POLL_MS,
                 log: Callable[[str, str | None], None] | None = None,
                 color: bool = False) -> None:
        self.path = Path(path)
        self.definition = definition
        self.sizes = dict(sizes or {})
        self.include = list(include)  # the folders searched for imports (`-I`)
        self.options = options
        self.host = host
        self.port = port
        self.poll = poll
        self.page_poll_ms = page_poll_ms
        self.log = log
        self.color = color
        self._lock = threading.Lock()
        self._state: _State | None = None
        self._stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ---- life -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the preview is not started")
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._server.server_address[1]}/"

    def start(self) -> None:
        """Read the files, listen (a usage error when the address cannot be had), and serve
        and watch on threads of their own."""
        from ncd.cli import UsageError

        # The HTTP server's module (and what it imports) loads only here: every `ncd`
        # command builds the parser that declares `ncd watch`.
        from ncd.watch_http import PreviewHandler, PreviewServer

        self.refresh(force=True)
        handler = type("Handler", (PreviewHandler,), {"preview": self})
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("Server", (PreviewServer,), {"address_family": family})
        try:
            self._server = server_class((self.host, self.port), handler)
        except OSError as error:
            reason = error.strerror or str(error)
            hint = "; choose another with --port (0 picks a free one)" \
                if error.errno in (98, 48, 10048) else ""
            raise UsageError(f"cannot listen on {self.host}:{self.port}: {reason}{hint}") \
                from None
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="ncd-watch-server", daemon=True),
            threading.Thread(target=self._watch, name="ncd-watch-files", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving and watching (and wait for both threads)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def wait(self) -> None:
        """Block until `stop` is called (Ctrl-C interrupts)."""
        while not self._stopping.wait(0.5):
            pass

    def __enter__(self) -> Preview:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        """Refresh once the files have changed and then stayed the same for one more look
        (an editor that writes a file in pieces is not caught halfway)."""
        seen: dict[str, Stamp] | None = None
        while not self._stopping.wait(self.poll):
            try:
                now = {name: _stamp(name) for name in self._current().stamps}
                if now == self._current().stamps:
                    seen = None
                elif now != seen:
                    seen = now
                else:
                    seen = None
                    self.refresh()
            except Exception:  # a bug in ncd: say so, and keep watching
                if self.log is not None:
                    self.log("ncd watch: internal error while reading the files (a bug in ncd; "
                             "please report it)", traceback.format_exc())

    # ---- the files ----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """A number that grows each time what the files say changes."""
        return self._current().version

    def _current(self) -> _State:
        with self._lock:
            if self._state is None:
                raise RuntimeError("the preview has not read its file yet")
            return self._state

    def refresh(self, force: bool = False) -> bool:
        """Check the files again if one of them changed (or `force`); whether the version
        changed."""
        state = self._state
        if not force and state is not None and \
                all(_stamp(name) == stamp for name, stamp in state.stamps.items()):
            return False
        names = [str(self.path), *(state.stamps if state is not None else ())]
        before = {name: _stamp(name) for name in dict.fromkeys(names)}
        program, problem, error, sources = self._load()
        watched = {os.path.abspath(name) for name in sources if os.path.isfile(name)}
        watched.add(os.path.abspath(self.path))
        stamps = {name: before.get(name, _stamp(name)) for name in sorted(watched)}
        digest = hashlib.sha256(repr((problem, sorted(sources.items()))).encode()).hexdigest()
        with self._lock:
            if self._state is not None and self._state.digest == digest:
                self._state.stamps = stamps
                return False
            version = self._state.version + 1 if self._state is not None else 1
            self._state = _State(version, digest, program, problem, error, stamps)
        if self.log is not None:
            if problem is None:
                self.log(f"{self.path}: ok, redrawn (version {version})", None)
            else:
                self.log(f"{self.path}: errors (version {version})",
                         error.render(color=self.color) if error is not None else problem)
        return True

    def _load(self) -> tuple[Any | None, str | None, Any | None, dict[str, str]]:
        """The program, or the diagnostics that stop it (as text, and the `NcdError` when they
        are one), and the texts of the files read."""
        from ncd.api import load
        from ncd.diagnostics import NcdError

        if not self.path.is_file():
            return None, f"ncd: {self.path}: no such file (waiting for it to be saved)", None, {}
        try:
            program = load(self.path, sizes=self.sizes, include=self.include)
        except NcdError as error:
            return None, error.render(color=False), error, dict(error.sources)
        except OSError as failure:
            return None, f"ncd: {self.path}: {failure.strerror or failure}", None, {}
        return program, None, None, dict(program.sources)

    # ---- the page -----------------------------------------------------------------------

    def content(self, definition: str | None = None) -> tuple[int, str]:
        """The version and the page's changing part (markup) for `definition` (by default
        the one asked for on the command line, else the file's last)."""
        state = self._current()
        name = definition or self.definition
        with self._lock:
            cached = state.pages.get(name)
        if cached is None:
            try:
                cached = self._draw(state, name)
            except Exception:  # a bug in ncd: the page and the terminal say so
                if self.log is not None:
                    self.log("ncd watch: internal error while drawing (a bug in ncd; please "
                             "report it with the file)", traceback.format_exc())
                return state.version, webpage.diagnostics(
                    "ncd: internal error while drawing this definition. This is a bug in ncd, "
                    "not in your file; please report it (the terminal shows the traceback).")
            with self._lock:
                if len(state.pages) > 64:  # names asked for in the address: keep a few
                    state.pages.clear()
                state.pages[name] = cached
        return state.version, cached

    def _draw(self, state: _State, name: str | None) -> str:
        from ncd.diagnostics import NcdError, did_you_mean

        escape = webpage.escape
        if state.problem is not None:
            count = sum(1 for line in state.problem.splitlines()
                        if webpage.is_diagnostic_head(line))
            return (f"<h1>{escape(self.path.name)} "
                    + _status("err", f"{count or 1} error{'s' if count > 1 else ''}") + "</h1>\n"
                    + '<p class="lead">The file does not check. The diagram comes back when '
                    "the errors are fixed and the file is saved.</p>\n"
                    + webpage.diagnostics(state.problem))
        program = state.program
        assert program is not None
        names: tuple[str, ...] = program.names
        local = [d.name for d in program.definitions
                 if d.ir.span is None or os.path.abspath(d.ir.span.file)
                 == os.path.abspath(self.path)] or list(names)
        if not names:
            return (f"<h1>{escape(self.path.name)} {_status('err', 'nothing to draw')}</h1>\n"
                    + webpage.diagnostics(f"ncd: {self.path} defines nothing; add a `def`"))
        shown = name or program.main.name
        toc = _toc(local, shown)
        if shown not in program:
            hint = did_you_mean(shown, names)
            message = (f"ncd: no definition named {shown!r} in {self.path}; "
                       + (hint or f"it defines {', '.join(names)}"))
            return (toc + f"<h1>{escape(shown)} {_status('err', 'unknown definition')}</h1>\n"
                    + webpage.diagnostics(message))
        from ncd.renderers import render_svg

        definition = program[shown]
        try:
            svg = render_svg(program.ir, shown, self.options)
        except NcdError as error:
            figure = webpage.diagnostics(error.render(color=False))
        else:
            figure = f'<figure class="diagram">{webpage.inline_svg(svg)}</figure>'
        doc = definition.ir.doc
        return (toc + f"<h1>{escape(shown)} {_status('ok', 'checks')}</h1>\n"
                + f'<div class="signature">{escape(definition.signature)}</div>\n'
                + (f'<p class="doc">{escape(doc)}</p>\n' if doc else "")
                + figure)

    def page(self, definition: str | None = None) -> tuple[str, str]:
        """The whole page for `definition` (its current content and the script that keeps it
        current) and the nonce that lets its script run."""
        version, content = self.content(definition)
        nonce = secrets.token_urlsafe(16)
        query = f"?def={quote(definition)}" if definition else ""
        script = _SCRIPT.replace("INTERVAL", str(int(self.page_poll_ms))).replace(
            "QUERY", query.replace("\\", "\\\\").replace('"', '\\"'))
        body = (
            '<header class="top"><div class="wrap">'
            '<span class="brand"><span class="mark">ncd</span> watch</span>'
            f'<span class="crumbs mono">{webpage.escape(str(self.path))}</span>'
            '<span class="spacer"></span>'
            '<span id="live" class="badge off" title="whether the page follows the file">'
            "connecting</span></div></header>\n"
            f'<main><div class="wrap" id="content">{content}</div></main>\n'
            '<footer class="bottom"><div class="wrap">The page redraws when the file or a file '
            "it imports is saved. Stop the preview with Ctrl-C in its terminal.</div></footer>\n"
            f'<script nonce="{nonce}">{script}</script>')
        return webpage.document(f"{definition or self.path.name} · ncd watch", body,
                                body_attributes=f' data-version="{version}"'), nonce


def _status(kind: str, text: str) -> str:
    return f'<span class="badge {kind}">{webpage.escape(text)}</span>'


def _toc(names: list[str], shown: str) -> str:
    if len(names) < 2:
        return ""
    items = []
    for name in names:
        label = webpage.escape(name)
        if name == shown:
            items.append(f'<li><span class="current" aria-current="page">{label}</span></li>')
        else:
            items.append(f'<li><a href="/?def={webpage.escape(quote(name))}">{label}</a></li>')
    return f'<ul class="toc">{"".join(items)}</ul>\n'


def _stamp(name: str) -> Stamp:
    try:
        info = os.stat(name)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


_SCRIPT = """
(function () {
  "use strict";
  var live = document.getElementById("live");
  var content = document.getElementById("content");
  var version = document.body.getAttribute("data-version");
  function show(state, text) { live.className = "badge " + state; live.textContent = text; }
  function again() { window.setTimeout(poll, INTERVAL); }
  function poll() {
    fetch("/version", {cache: "no-store"}).then(function (reply) {
      return reply.text();
    }).then(function (current) {
      show("ok", "live");
      if (current.trim() === version) { return null; }
      return fetch("/fragment" + "QUERY", {cache: "no-store"}).then(function (reply) {
        var next = reply.headers.get("X-Ncd-Version");
        return reply.text().then(function (markup) {
          content.innerHTML = markup;
          version = next;
        });
      });
    }).catch(function () {
      show("off", "disconnected");
    }).then(again);
  }
  show("ok", "live");
  again();
})();
"""
