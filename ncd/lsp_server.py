"""The language server of `ncd lsp`, built on pygls: the protocol side of `ncd.lsp_analysis`.

Each open document is checked again when it opens, changes or is saved (the whole text is
sent each time), and its diagnostics are published. Requests are answered from the latest
analysis; while the text does not parse, hover and go-to-definition fall back on the last
analysis that did (by the word under the cursor), and the preview on the last that checked.
Positions convert between the protocol's (0-based, in the client's code units) and ncd's
spans (1-based, in characters) through the document's position codec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import TextDocument

from ncd import ir
from ncd import lsp_analysis as analysis_
from ncd import syntax as s
from ncd.diagnostics import Diagnostic
from ncd.lsp_analysis import Analysis, PreviewError

PREVIEW_COMMAND = "ncd.preview"
SOURCE = "ncd"
REQUEST_FAILED = -32803  # LSP's RequestFailed: the request was valid but could not be met

_KINDS: dict[analysis_.CompletionKind, types.CompletionItemKind] = {
    "variable": types.CompletionItemKind.Variable,
    "axis": types.CompletionItemKind.TypeParameter,
    "definition": types.CompletionItemKind.Function,
    "operator": types.CompletionItemKind.Operator,
    "keyword": types.CompletionItemKind.Keyword,
    "type": types.CompletionItemKind.Class,
}

log = logging.getLogger(__name__)


@dataclass
class _State:
    """What the server keeps per document: the latest analysis, the latest whose text parsed
    and the latest that checked."""

    current: Analysis
    parsed: Analysis | None
    checked: Analysis | None


class NcdLanguageServer(LanguageServer):
    def __init__(self) -> None:
        try:
            version = metadata.version("ncd")
        except metadata.PackageNotFoundError:
            version = "unknown"
        super().__init__("ncd", version,
                         text_document_sync_kind=types.TextDocumentSyncKind.Full)
        self.documents: dict[str, _State] = {}

    def refresh(self, uri: str) -> None:
        """Check the document again and publish its diagnostics."""
        document = self.workspace.get_text_document(uri)
        try:
            result = analysis_.analyse(document.source, _path_of(uri))
        except Exception:  # a bug in ncd: keep serving with what was known before
            log.exception("ncd could not check %s", uri)
            self.window_log_message(types.LogMessageParams(
                type=types.MessageType.Error,
                message=f"ncd: internal error while checking {uri}; this is a bug in ncd, "
                "please report it with the file"))
            return
        previous = self.documents.get(uri)
        self.documents[uri] = _State(
            result,
            result if result.parsed else previous.parsed if previous else None,
            result if result.program is not None else previous.checked if previous else None)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=document.version,
            diagnostics=[_diagnostic(d, result, document) for d in result.diagnostics]))

    def forget(self, uri: str) -> None:
        self.documents.pop(uri, None)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri,
                                                                              diagnostics=[]))


def _path_of(uri: str) -> Path | None:
    """The file of a `file:` URI; None for a document not saved yet (`untitled:`)."""
    if urlparse(uri).scheme != "file":
        return None
    path = to_fs_path(uri)
    return Path(path) if path else None


def _uri_of(path: Path) -> str:
    return from_fs_path(str(path)) or path.as_uri()


def _range(span: ir.Span | None, document: TextDocument | None) -> types.Range:
    """The protocol's range of an ncd span (1-based, in characters, end exclusive)."""
    if span is None:
        return types.Range(start=types.Position(line=0, character=0),
                           end=types.Position(line=0, character=0))
    start = types.Position(line=max(span.line - 1, 0), character=max(span.column - 1, 0))
    end = types.Position(line=max(span.end_line - 1, 0), character=max(span.end_column - 1, 0))
    if (end.line, end.character) < (start.line, start.character):
        end = start
    server_range = types.Range(start=start, end=end)
    if document is None:
        return server_range
    return document.position_codec.range_to_client_units(document.lines, server_range)


def _position(document: TextDocument, position: types.Position) -> tuple[int, int]:
    """ncd's 1-based line and column of a protocol position."""
    server = document.position_codec.position_from_client_units(document.lines, position)
    return server.line + 1, server.character + 1


def _diagnostic(diagnostic: Diagnostic, result: Analysis,
                document: TextDocument) -> types.Diagnostic:
    span = diagnostic.span
    message = diagnostic.message
    if span is not None and span.file != result.name:
        # A problem inside an imported file: shown at the import that brings the file in.
        message = f"in {span}: {message}"
        span = _import_span(result, span.file)
    if diagnostic.hint:
        message += f"\nhint: {diagnostic.hint}"
    related = [types.DiagnosticRelatedInformation(
        location=types.Location(uri=_location_uri(note.span, result, document.uri),
                                range=_range(note.span, document if note.span.file
                                             == result.name else None)),
        message=note.message) for note in diagnostic.notes if note.span is not None]
    message += "".join(f"\nnote: {note.message}" for note in diagnostic.notes
                       if note.span is None)
    return types.Diagnostic(
        range=_range(span, document), message=message, code=diagnostic.code, source=SOURCE,
        severity=types.DiagnosticSeverity.Error if diagnostic.severity == "error"
        else types.DiagnosticSeverity.Warning,
        related_information=related or None)


def _location_uri(span: ir.Span, result: Analysis, uri: str) -> str:
    if span.file == result.name:
        return uri
    path = result.paths.get(span.file)
    return _uri_of(path) if path is not None else uri


def _import_span(result: Analysis, file: str) -> ir.Span | None:
    """The import of the document that names `file`, else its first import."""
    imports = [item for item in result.module.items if isinstance(item, s.Import)] \
        if result.module is not None else []
    target = result.paths.get(file)
    for item in imports:
        if result.path is not None and target is not None and \
                (result.path.resolve().parent / item.path).resolve() == target:
            return item.span
    return imports[0].span if imports else None


def build_server() -> NcdLanguageServer:
    server = NcdLanguageServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NcdLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NcdLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: NcdLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NcdLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: NcdLanguageServer, params: types.HoverParams) -> types.Hover | None:
        found = _lookup(ls, params.text_document.uri, params.position)
        if found is None:
            return None
        result, line, column, word = found
        text = analysis_.hover(result, line, column) if word is None else \
            analysis_.hover_word(result, word)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                        value=text))

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: NcdLanguageServer,
                   params: types.DefinitionParams) -> types.Location | None:
        uri = params.text_document.uri
        found = _lookup(ls, uri, params.position)
        if found is None:
            return None
        result, line, column, word = found
        target = analysis_.definition(result, line, column) if word is None else \
            analysis_.definition_word(result, word)
        if target is None:
            return None
        if target.path is None:
            return types.Location(uri=uri, range=_range(target.span,
                                                        ls.workspace.get_text_document(uri)))
        target_uri = _uri_of(target.path)
        open_document = ls.workspace.text_documents.get(target_uri)
        return types.Location(uri=target_uri, range=_range(target.span, open_document))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION)
    def completion(ls: NcdLanguageServer,
                   params: types.CompletionParams) -> types.CompletionList:
        state = ls.documents.get(params.text_document.uri)
        result = state.parsed or state.current if state is not None else None
        if result is None:
            return types.CompletionList(is_incomplete=False, items=[])
        items = [types.CompletionItem(label=c.label, kind=_KINDS[c.kind], detail=c.detail)
                 for c in analysis_.completions(result, params.position.line + 1)]
        return types.CompletionList(is_incomplete=False, items=items)

    @server.command(PREVIEW_COMMAND)
    def preview(ls: NcdLanguageServer, *arguments: Any) -> str:
        """`[uri, definition or null, position or absent]`: the definition's SVG (the named
        one, else the one around the position, else the document's last)."""
        if not arguments or not isinstance(arguments[0], str):
            raise JsonRpcException(f"{PREVIEW_COMMAND} takes [uri, definition name or null]",
                                   code=-32602)
        uri = arguments[0]
        name = arguments[1] if len(arguments) > 1 and isinstance(arguments[1], str) else None
        position = arguments[2] if len(arguments) > 2 and isinstance(arguments[2], dict) else {}
        line = position.get("line")
        state = ls.documents.get(uri)
        if state is None:
            raise JsonRpcException(f"{uri} is not open", code=REQUEST_FAILED)
        result = state.checked or state.current
        try:
            return analysis_.preview(result, name, line + 1 if isinstance(line, int) else None)
        except (PreviewError, ValueError) as error:
            raise JsonRpcException(str(error), code=REQUEST_FAILED) from None

    return server


def _lookup(ls: NcdLanguageServer, uri: str,
            position: types.Position) -> tuple[Analysis, int, int, str | None] | None:
    """The analysis to answer a request at `position` from, ncd's line and column there, and
    the word under the cursor when only the word may be asked about.

    While the text does not parse, the last analysis that did answers for the word under the
    cursor, read in the current text (the positions of that analysis may have moved)."""
    state = ls.documents.get(uri)
    if state is None:
        return None
    document = ls.workspace.get_text_document(uri)
    line, column = _position(document, position)
    if state.current.parsed or state.parsed is None:
        return state.current, line, column, None
    word = analysis_.word_at(document.source, line, column)
    if word is None:
        return None
    return state.parsed, line, column, word
