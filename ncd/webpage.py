"""HTML for a browser: the style sheet and the pieces of page that `ncd watch` (the live
preview) and `ncd site` (the static site) share: a document around a body, a source listing
with line numbers, a block of diagnostics, a diagram.

Everything from a user's files (source text, names, doc strings, diagnostics) goes through
`escape`; a diagram is ncd's own SVG, whose text the SVG emitter escapes. The pages load
nothing from elsewhere (no fonts, scripts or styles from the network).
"""

from __future__ import annotations

import html
import re

STYLE = """\
:root {
  color-scheme: light dark;
  --bg: #ffffff; --bg-subtle: #f6f8fa; --fg: #1f2328; --muted: #59636e;
  --border: #d1d9e0; --accent: #0969da; --code-bg: #f6f8fa;
  --ok: #1a7f37; --err: #cf222e; --err-bg: #fff5f5; --err-border: #f5c2c0;
  --mono: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono",
          "Liberation Mono", monospace;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --bg-subtle: #151b23; --fg: #e6edf3; --muted: #9198a1;
    --border: #3d444d; --accent: #4493f8; --code-bg: #151b23;
    --ok: #3fb950; --err: #f85149; --err-bg: #25171c; --err-border: #6e2b2f;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
        "Noto Sans", "DejaVu Sans", sans-serif;
}
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.wrap { max-width: 1240px; margin: 0 auto; padding: 0 28px; }
header.top { background: var(--bg-subtle); border-bottom: 1px solid var(--border); }
header.top .wrap {
  display: flex; flex-wrap: wrap; align-items: center; gap: 6px 18px;
  min-height: 56px; padding-top: 10px; padding-bottom: 10px;
}
.brand { font-weight: 650; color: var(--fg); letter-spacing: -0.01em; }
.brand .mark { color: var(--accent); }
.crumbs { color: var(--muted); font-size: 0.95rem; }
.crumbs a { color: var(--muted); }
.spacer { flex: 1; }
main { padding: 28px 0 56px; }
h1 { font-size: 2rem; line-height: 1.2; margin: 0 0 0.4rem; letter-spacing: -0.02em; }
h2 {
  font-size: 1.45rem; margin: 2.6rem 0 0.6rem; padding-bottom: 0.35rem;
  border-bottom: 1px solid var(--border); letter-spacing: -0.01em;
}
h2 code { font-size: 1.3rem; }
h3 {
  font-size: 0.78rem; font-weight: 650; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--muted); margin: 0;
}
p { margin: 0.4rem 0 0.9rem; }
.lead { font-size: 1.12rem; color: var(--muted); margin: 0 0 0.8rem; max-width: 52rem; }
.meta { color: var(--muted); font-size: 0.92rem; margin: 0 0 1.4rem; }
.meta code { font-size: 0.88rem; }
code, pre, .mono { font-family: var(--mono); }
code { font-size: 0.9em; }
.signature {
  display: inline-block; font-family: var(--mono); font-size: 0.92rem;
  background: var(--code-bg); border: 1px solid var(--border); border-radius: 6px;
  padding: 0.3rem 0.65rem; margin: 0.1rem 0 0.7rem; overflow-wrap: anywhere;
}
.doc { max-width: 52rem; }
.badge {
  display: inline-block; font-size: 0.78rem; font-weight: 600; line-height: 1.6;
  padding: 0 0.6rem; border-radius: 999px; border: 1px solid currentColor; white-space: nowrap;
}
h1 .badge { vertical-align: middle; margin-left: 0.5rem; letter-spacing: 0; }
.badge.ok { color: var(--ok); }
.badge.err { color: var(--err); }
.badge.off { color: var(--muted); }
.toc { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 0 0 1rem; padding: 0;
       list-style: none; }
.toc a, .toc span {
  display: inline-block; font-family: var(--mono); font-size: 0.88rem;
  padding: 0.15rem 0.65rem; border: 1px solid var(--border); border-radius: 6px;
  background: var(--bg);
}
.toc .current { background: var(--accent); border-color: var(--accent); color: #fff; }
figure.diagram { margin: 0.4rem 0 1.2rem; overflow-x: auto; }
figure.diagram img, figure.diagram svg {
  display: block; max-width: 100%; height: auto;
  border: 1px solid var(--border); border-radius: 8px;
}
figure.diagram figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 0.4rem; }
.panels {
  display: grid; gap: 16px; align-items: start;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 30rem), 1fr));
}
.panel {
  min-width: 0; border: 1px solid var(--border); border-radius: 8px; overflow: hidden;
  background: var(--bg);
}
.panel > header {
  display: flex; align-items: baseline; gap: 10px; padding: 7px 14px;
  background: var(--bg-subtle); border-bottom: 1px solid var(--border);
}
.panel > header .where { color: var(--muted); font-size: 0.82rem; margin-left: auto; }
.panel > p, .panel > .diagnostics { margin: 12px 14px; }
.panel > .diagnostics { white-space: pre-wrap; overflow-wrap: anywhere; }
pre.code {
  margin: 0; padding: 10px 0; overflow: auto; max-height: 40rem; background: var(--code-bg);
  font-size: 12.5px; line-height: 1.6; tab-size: 4;
}
pre.code code { font-size: inherit; }
pre.code .l { white-space: pre; padding-right: 16px; }
pre.code .l::before {
  content: attr(data-n); display: inline-block; width: 3.4em; margin-right: 1em;
  padding-right: 0.8em; text-align: right; color: var(--muted); opacity: 0.75;
  border-right: 1px solid var(--border); user-select: none;
}
pre.code .l:target { background: rgba(255, 212, 0, 0.22); }
pre.diagnostics {
  margin: 0.6rem 0 1.2rem; padding: 12px 16px; overflow: auto; white-space: pre;
  font-size: 13px; line-height: 1.55; color: var(--fg); background: var(--err-bg);
  border: 1px solid var(--err-border); border-left: 4px solid var(--err); border-radius: 6px;
}
pre.diagnostics .head { font-weight: 700; color: var(--err); }
.cards {
  display: grid; gap: 18px; margin: 1.4rem 0 0;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr));
}
.card {
  display: flex; flex-direction: column; border: 1px solid var(--border); border-radius: 10px;
  overflow: hidden; background: var(--bg);
}
.card .thumb {
  display: flex; align-items: center; justify-content: center; height: 170px; padding: 12px;
  background: var(--bg-subtle); border-bottom: 1px solid var(--border);
}
.card .thumb img { max-width: 100%; max-height: 100%; border-radius: 4px; }
.card .body { padding: 12px 16px 14px; }
.card h2 { font-size: 1.15rem; margin: 0 0 0.2rem; padding: 0; border: 0; }
.card .path { color: var(--muted); font-family: var(--mono); font-size: 0.8rem; }
.card p { font-size: 0.95rem; margin: 0.5rem 0; }
.card ul { list-style: none; margin: 0.5rem 0 0; padding: 0; }
.card li { font-family: var(--mono); font-size: 0.8rem; color: var(--muted);
           overflow-wrap: anywhere; }
.card li a { font-weight: 600; }
.note { color: var(--muted); font-size: 0.92rem; }
footer.bottom { border-top: 1px solid var(--border); color: var(--muted); font-size: 0.85rem; }
footer.bottom .wrap { padding-top: 14px; padding-bottom: 22px; }
@media print {
  header.top, footer.bottom, .toc { display: none; }
  main { padding: 0; }
  .wrap { max-width: none; padding: 0; }
  pre.code { max-height: none; overflow: visible; white-space: pre-wrap; }
  pre.code .l { white-space: pre-wrap; }
  figure.diagram, .panel { break-inside: avoid; }
  h2 { break-after: avoid; }
  a { color: inherit; }
}
"""


def escape(text: str) -> str:
    """`text` safe inside an element or a quoted attribute."""
    return html.escape(text, quote=True)


def document(title: str, body: str, *, head: str = "", stylesheet: str | None = None,
             body_attributes: str = "") -> str:
    """A complete HTML page: `body` (markup) under `title` (text), styled by the style sheet
    at `stylesheet` (a relative address) or, without one, by `STYLE` in the page itself."""
    style = (f'<link rel="stylesheet" href="{escape(stylesheet)}">' if stylesheet is not None
             else f"<style>\n{STYLE}</style>")
    return ("<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="ncd">\n<title>{escape(title)}</title>\n'
            f"{style}\n{head}</head>\n<body{body_attributes}>\n{body}\n</body>\n</html>\n")


def listing(lines: list[tuple[int, str]], *, anchors: str | None = None,
            label: str = "source") -> str:
    """Numbered lines of code (`(number, text)`, numbers as in the file); the numbers are
    drawn by the style sheet, so copying the code copies no numbers. With `anchors`, line N
    is the target `#<anchors>-N`."""
    out = []
    for number, text in lines:
        target = f' id="{escape(anchors)}-{number}"' if anchors else ""
        out.append(f'<span class="l" data-n="{number}"{target}>{escape(text)}\n</span>')
    return (f'<pre class="code" aria-label="{escape(label)}"><code>{"".join(out)}'
            "</code></pre>")


def numbered(text: str, first: int = 1) -> list[tuple[int, str]]:
    """The lines of `text`, numbered from `first`, tabs as four spaces."""
    return [(first + index, line.expandtabs(4)) for index, line in enumerate(text.splitlines())]


_HEAD = re.compile(r"^(?:\S.*?: )?(?:error|warning)\[E\d+\]: ")


def is_diagnostic_head(line: str) -> bool:
    """Whether `line` of rendered diagnostics begins one (`path:3:7: error[E300]: ...`)."""
    return _HEAD.match(line) is not None


def diagnostics(text: str) -> str:
    """Diagnostics as `ncd check` prints them (without colour), their first lines bold."""
    lines = []
    for line in text.splitlines():
        escaped = escape(line)
        head = is_diagnostic_head(line)
        lines.append(f'<span class="head">{escaped}</span>' if head else escaped)
    return '<pre class="diagnostics" role="alert">' + "\n".join(lines) + "</pre>"


DIAGRAM_SCALE = 1.5
"""How much larger than their natural size (`ncd render`'s, one unit a CSS pixel) diagrams
are shown; the style sheet narrows one that is wider than the page."""

_ROOT = re.compile(r"<svg\b[^>]*>")
_DIMENSION = re.compile(r'(?<![-\w])(width|height)="([0-9.]+)(?:px)?"')


def diagram_size(svg: str) -> tuple[int, int] | None:
    """The width and height at which the diagram `svg` is shown, in CSS pixels."""
    root = _ROOT.search(svg)
    found = dict(_DIMENSION.findall(root.group(0))) if root else {}
    if "width" not in found or "height" not in found:
        return None
    return (round(float(found["width"]) * DIAGRAM_SCALE),
            round(float(found["height"]) * DIAGRAM_SCALE))


def inline_svg(svg: str) -> str:
    """An SVG document as markup to place in a page, at the size `diagram_size` gives (its XML
    declaration dropped)."""
    svg = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", svg)
    root, size = _ROOT.search(svg), diagram_size(svg)
    if root is None or size is None:
        return svg
    shown = dict(zip(("width", "height"), size, strict=True))
    tag = _DIMENSION.sub(lambda match: f'{match.group(1)}="{shown[match.group(1)]}"',
                         root.group(0))
    return svg[:root.start()] + tag + svg[root.end():]
