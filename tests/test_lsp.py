"""`ncd lsp`: the language server, driven over stdio by a small JSON-RPC client.

One server process serves the whole module (it starts in about a second); each test opens
its own documents. The client frames messages with Content-Length headers, reads the
server's output on a thread, answers the server's own requests with null and waits for each
reply with a timeout, so a server that hangs fails the test instead of the run.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ncd import cli, lsp, lsp_analysis

pytest.importorskip("pygls")

TIMEOUT = 30.0

LIB = '''axis b
axis m = 16

def mix(X: R[b, m]) -> R[b, m] {
    """A learned mix of the width."""
    return linear[m -> m](X, W)
}
'''

MAIN = '''from "lib.ncd" import mix
axis h = 4

def block(X: R[b, m]) -> R[b, m] {
    H = mix(X)
    G = relu(H)
    return G
}
'''


class Client:
    """The editor's side of the protocol, enough for the tests."""

    def __init__(self, process: subprocess.Popen[bytes]):
        self.process = process
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    self.messages.put(None)  # the server is gone
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            assert length is not None, "a message without Content-Length"
            self.messages.put(json.loads(stream.read(length)))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def _next(self) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the language server said nothing for {TIMEOUT} s")
        if message is None:
            stderr = self.process.stderr.read().decode() if self.process.stderr else ""
            pytest.fail(f"the language server exited: {stderr[-2000:]}")
        if "method" in message and "id" in message:  # a request of the server: agree
            self.send({"id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)
        return message

    def request(self, method: str, params: Any) -> dict[str, Any]:
        """The server's reply (with `result` or `error`)."""
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self._next()
            if message.get("id") == self.next_id and "method" not in message:
                return message

    def result(self, method: str, params: Any) -> Any:
        reply = self.request(method, params)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def notification(self, method: str, test: Callable[[dict[str, Any]], bool]) -> Any:
        """The params of the first notification so far or to come that passes `test`; it is
        taken off the list."""
        while True:
            for note in self.notifications:
                if note["method"] == method and test(note["params"]):
                    self.notifications.remove(note)
                    return note["params"]
            self._next()

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        params = self.notification("textDocument/publishDiagnostics",
                                   lambda p: p["uri"] == uri)
        return params["diagnostics"]

    def open(self, uri: str, text: str, version: int = 1) -> list[dict[str, Any]]:
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "ncd", "version": version, "text": text}})
        return self.diagnostics(uri)

    def change(self, uri: str, text: str, version: int) -> list[dict[str, Any]]:
        self.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"text": text}]})
        return self.diagnostics(uri)


def at(text: str, needle: str, offset: int = 0) -> dict[str, int]:
    """The protocol position of `needle` (plus `offset` characters) in `text`."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return {"line": line, "character": index - (text.rfind("\n", 0, index) + 1)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "lib.ncd").write_text(LIB, encoding="utf-8")
    # The file on disk does not parse: the server must read the editor's text instead.
    (root / "main.ncd").write_text("def {", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def client(project: Path) -> Iterator[Client]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ncd", "lsp"], cwd=project, env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    client = Client(process)
    try:
        reply = client.result("initialize", {"processId": os.getpid(), "rootUri":
                                             project.as_uri(), "capabilities": {}})
        capabilities = reply["capabilities"]
        assert capabilities["hoverProvider"] and capabilities["definitionProvider"]
        assert "ncd.preview" in capabilities["executeCommandProvider"]["commands"]
        client.notify("initialized", {})
        yield client
        assert client.request("shutdown", None).get("result") is None
        client.notify("exit", None)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def main_uri(client: Client, project: Path) -> str:
    uri = (project / "main.ncd").as_uri()
    assert client.open(uri, MAIN) == []
    return uri


def hover_text(client: Client, uri: str, position: dict[str, int]) -> str | None:
    result = client.result("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": position})
    return None if result is None else result["contents"]["value"]


def test_diagnostics_have_the_range_code_and_hint_of_the_checker(client: Client,
                                                                 project: Path) -> None:
    uri = (project / "broken.ncd").as_uri()
    text = "axis x = 8\n\ndef f(X: R[x, q]) -> R[x] {\n    return X\n}\n"
    [diagnostic] = client.open(uri, text)
    assert diagnostic["code"] == "E201"
    assert diagnostic["source"] == "ncd"
    assert diagnostic["range"] == {"start": at(text, "q]"), "end": at(text, "q]", 1)}
    assert "unknown axis `q`" in diagnostic["message"]
    assert "hint: declare it" in diagnostic["message"]

    # As the text changes: fixed, then not parsing at all (still published, located).
    assert client.change(uri, text.replace("q", "x").replace("R[x, x]", "R[x]"), 2) == []
    broken = "axis x = 8\ndef f(X: R[x]) -> R[x] {\n    return X +\n}\n"
    [syntax] = client.change(uri, broken, 3)
    assert syntax["code"] in ("E101", "E102")
    assert syntax["range"]["start"]["line"] == 3
    # Hover falls back on the last text that parsed, for the word under the cursor.
    assert "axis x = 8" in (hover_text(client, uri, at(broken, "x]")) or "")
    assert hover_text(client, uri, at(broken, "return")) is None
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert client.diagnostics(uri) == []


def test_an_unsaved_document_is_checked(client: Client) -> None:
    uri = "untitled:Untitled-1"
    diagnostics = client.open(uri, "def f(X: R[x]) -> R[x] {\n    return X\n}\n")
    assert [d["code"] for d in diagnostics] == ["E201", "E201"]
    assert diagnostics[0]["range"]["start"] == {"line": 0, "character": 11}
    assert client.change(uri, "axis x\ndef f(X: R[x]) -> R[x] {\n    return X\n}\n", 2) == []


def test_an_error_in_an_imported_file_shows_at_the_import(client: Client,
                                                          project: Path) -> None:
    (project / "bad_lib.ncd").write_text("def g(X: R[z]) -> R[z] {\n    return X\n}\n",
                                         encoding="utf-8")
    uri = (project / "uses_bad.ncd").as_uri()
    text = 'axis y\nimport "bad_lib.ncd"\n'
    diagnostic = client.open(uri, text)[0]
    assert diagnostic["code"] == "E201"
    assert diagnostic["message"].startswith("in bad_lib.ncd:1:12: unknown axis `z`")
    assert diagnostic["range"]["start"] == at(text, "import")


def test_hover_tells_sizes_types_signatures_and_operators(client: Client,
                                                         main_uri: str) -> None:
    assert "axis h = 4" in (hover_text(client, main_uri, at(MAIN, "h = 4")) or "")
    assert "axis m = 16" in (hover_text(client, main_uri, at(MAIN, "m]")) or "")
    assert "axis b" in (hover_text(client, main_uri, at(MAIN, "b, m]")) or "")
    array = hover_text(client, main_uri, at(MAIN, "H)"))
    assert array is not None and "H: R[b, m]" in array and "shape b × 16" in array
    call = hover_text(client, main_uri, at(MAIN, "mix(X)"))
    assert call is not None and "def mix(X: R[b, m]) -> R[b, m]" in call
    assert "A learned mix of the width." in call
    operator = hover_text(client, main_uri, at(MAIN, "relu"))
    assert operator is not None and operator.startswith("**relu** (operator)")
    assert hover_text(client, main_uri, at(MAIN, "return")) is None


def test_definition_finds_bindings_axes_and_imported_definitions(client: Client,
                                                                 main_uri: str,
                                                                 project: Path) -> None:
    def definition(needle: str) -> dict[str, Any]:
        result = client.result("textDocument/definition", {
            "textDocument": {"uri": main_uri}, "position": at(MAIN, needle)})
        assert result is not None
        return result

    array = definition("H)")
    assert array["uri"] == main_uri
    assert array["range"] == {"start": at(MAIN, "H ="), "end": at(MAIN, "H =", 1)}
    axis = definition("h = 4")
    assert axis["range"]["start"] == at(MAIN, "h = 4")
    imported = definition("mix(X)")
    assert Path(imported["uri"].removeprefix("file://")).name == "lib.ncd"
    assert imported["range"]["start"] == at(LIB, "mix(")
    in_lib = definition("m]")
    assert in_lib["uri"] == imported["uri"] and in_lib["range"]["start"] == at(LIB, "m = 16")


def test_completion_offers_arrays_axes_operators_definitions_and_keywords(
        client: Client, main_uri: str) -> None:
    result = client.result("textDocument/completion", {
        "textDocument": {"uri": main_uri}, "position": at(MAIN, "return G")})
    labels = {item["label"]: item for item in result["items"]}
    for label in ("H", "m", "h", "softmax", "layernorm", "mix", "block", "def", "return", "R"):
        assert label in labels, label
    assert labels["H"]["detail"] == "R[b, m]"


def test_preview_returns_the_svg_of_a_definition(client: Client, main_uri: str) -> None:
    svg = client.result("workspace/executeCommand", {"command": "ncd.preview",
                                                     "arguments": [main_uri, None]})
    assert isinstance(svg, str) and svg.lstrip().startswith("<") and "<svg" in svg
    named = client.result("workspace/executeCommand", {"command": "ncd.preview",
                                                       "arguments": [main_uri, "mix"]})
    assert "<svg" in named and named != svg
    reply = client.request("workspace/executeCommand", {"command": "ncd.preview",
                                                        "arguments": [main_uri, "nope"]})
    assert "no definition named `nope`" in reply["error"]["message"]


def test_ncd_lsp_without_pygls_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    real = lsp.importlib.util.find_spec
    monkeypatch.setattr(lsp.importlib.util, "find_spec",
                        lambda name, *args: None if name == "pygls" else real(name, *args))
    assert cli.main(["lsp"]) == 2
    assert "pip install 'ncd[lsp]'" in capsys.readouterr().err


def test_the_analysis_follows_aliases_equations_and_local_axes() -> None:
    text = ("axis x, m = 8\n"
            "def f(X: R[x, m]) -> R[x, m] {\n"
            "    H = linear[m -> m](X, W)\n"
            "    Z = H\n"
            "    S[x, y] = sum(m) Z[x, m] * H[y, m]\n"
            "    A = softmax[y](S)\n"
            "    O[x, m] = sum(y) A[x, y] * H[y, m]\n"
            "    return O\n"
            "}\n")
    result = lsp_analysis.analyse(text, None)
    assert result.diagnostics == [] and result.program is not None

    def where(needle: str, offset: int = 0) -> tuple[int, int]:
        position = at(text, needle, offset)
        return position["line"] + 1, position["character"] + 1

    # `Z = H` binds Z where the statement is; Z read in an equation is that binding.
    target = lsp_analysis.definition(result, *where("Z[x"))
    assert target is not None and target.path is None
    assert (target.span.line, target.span.column) == where("Z = H")
    assert "Z: R[x, m]" in (lsp_analysis.hover(result, *where("Z[x")) or "")
    # A parameter read: its type, and its first use.
    assert "param W: R[m_in, m]" in (lsp_analysis.hover(result, *where("W)")) or "")
    # An axis a tensor equation makes: its size, local to the definition.
    assert "axis y = x  (local to `f`)" in (lsp_analysis.hover(result, *where("y](S)")) or "")
    local = lsp_analysis.definition(result, *where("y](S)"))
    assert local is not None and (local.span.line, local.span.column) == where("y] =")
    # Past the end of a line, or on a keyword: nothing.
    assert lsp_analysis.hover(result, 40, 1) is None
    assert lsp_analysis.hover(result, *where("return")) is None
