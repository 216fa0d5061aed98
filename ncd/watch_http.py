"""The HTTP side of `ncd watch`: the server and the request handler of the live preview (the
page, the fragment it polls for, the version it compares). Imported only when a preview
starts, so that building the CLI's parser does not load `http.server`."""

from __future__ import annotations

import contextlib
import http.server
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from ncd.watch import Preview


class PreviewServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the browser went away mid-answer
        super().handle_error(request, client_address)


class PreviewHandler(http.server.BaseHTTPRequestHandler):
    preview: Preview
    server_version = "ncd-watch"

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def do_GET(self, body: bool = True) -> None:
        self.body = body
        address = urlsplit(self.path)
        query = parse_qs(address.query)
        definition = query.get("def", [""])[0] or None
        if address.path == "/version":
            self._send(200, "text/plain", str(self.preview.version))
        elif address.path == "/fragment":
            version, content = self.preview.content(definition)
            self._send(200, "text/html", content, {"X-Ncd-Version": str(version)})
        elif address.path in ("/", "/index.html"):
            text, nonce = self.preview.page(definition)
            policy = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                      f"connect-src 'self'; script-src 'nonce-{nonce}'; base-uri 'none'; "
                      "form-action 'none'")
            self._send(200, "text/html", text, {"Content-Security-Policy": policy})
        else:
            self._send(404, "text/plain", "not found: this server shows one ncd file at /\n")

    def _send(self, status: int, kind: str, text: str,
              headers: Mapping[str, str] | None = None) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if getattr(self, "body", True):
            with contextlib.suppress(ConnectionError):
                self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the terminal shows the file's state, not each request
