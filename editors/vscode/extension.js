// The ncd extension: starts `ncd lsp` (diagnostics, hover, go to definition, completion) and
// shows a definition's diagram beside the editor ("ncd: Preview diagram"), drawn by the
// server's `ncd.preview` command and drawn again each time the file is saved.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind, ExecuteCommandRequest } =
  require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("ncd")
    .get("server.command", ["ncd", "lsp"]);
  client = new LanguageClient(
    "ncd",
    "ncd language server",
    { command, args, transport: TransportKind.stdio },
    {
      documentSelector: [
        { scheme: "file", language: "ncd" },
        { scheme: "untitled", language: "ncd" },
      ],
    },
  );
  client.start().catch((error) => {
    vscode.window.showErrorMessage(
      `ncd: cannot start the language server with \`${[command, ...args].join(" ")}\` ` +
        `(${error.message}). Install it with \`pip install 'ncd[lsp]'\` or set ` +
        "`ncd.server.command`.",
    );
  });
  context.subscriptions.push({ dispose: () => client && client.stop() });
  context.subscriptions.push(
    vscode.commands.registerCommand("ncd.showPreview", () => showPreview(context)),
  );
}

// One preview panel per document; each keeps the definition it shows.
const previews = new Map();

async function showPreview(context) {
  const editor = vscode.window.activeTextEditor;
  if (!editor || editor.document.languageId !== "ncd") {
    vscode.window.showInformationMessage("ncd: open a .ncd file to preview its diagram");
    return;
  }
  const uri = editor.document.uri.toString();
  let preview = previews.get(uri);
  if (!preview) {
    const panel = vscode.window.createWebviewPanel(
      "ncd.preview",
      `Diagram: ${editor.document.fileName.split(/[\\/]/).pop()}`,
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: false },
    );
    preview = { panel, uri, position: editor.selection.active };
    previews.set(uri, preview);
    const onSave = vscode.workspace.onDidSaveTextDocument((document) => {
      if (document.uri.toString() === uri) {
        refresh(preview);
      }
    });
    panel.onDidDispose(() => {
      onSave.dispose();
      previews.delete(uri);
    });
    context.subscriptions.push(onSave);
  } else {
    preview.position = editor.selection.active;
    preview.panel.reveal(vscode.ViewColumn.Beside, true);
  }
  await refresh(preview);
}

// Ask the server for the SVG of the definition around the cursor (or the last one).
async function refresh(preview) {
  const position = { line: preview.position.line, character: preview.position.character };
  try {
    const svg = await client.sendRequest(ExecuteCommandRequest.type, {
      command: "ncd.preview",
      arguments: [preview.uri, null, position],
    });
    preview.panel.webview.html = page(
      `<img alt="diagram" src="data:image/svg+xml;base64,${Buffer.from(svg).toString("base64")}">`,
    );
  } catch (error) {
    preview.panel.webview.html = page(`<p class="error">${escape(error.message)}</p>`);
  }
}

function page(body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline';">
<style>
  body { background: #fff; margin: 1em; }
  img { max-width: 100%; }
  .error { color: #b00; font-family: sans-serif; }
</style></head>
<body>${body}</body></html>`;
}

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
