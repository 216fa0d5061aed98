"""`ncd site DIR... -o OUT`: a static web site of the models in some folders and files.

    OUT/index.html          every model: its main diagram, doc string and definitions
    OUT/<model>.html        a model: each definition's diagram, its source (numbered as in the
                            file) and the PyTorch module it compiles to, or why it does not
    OUT/<model>.<def>.svg   the diagrams, as `ncd render` draws them
    OUT/style.css           one style sheet (light and dark, and for print)

A folder stands for every `*.ncd` file below it (hidden ones skipped). The pages are plain
HTML and CSS: no scripts, nothing fetched from the network, readable from `file://`. A file
with errors gets a page showing its diagnostics and source; they are also printed, and the
exit status is 1, but every other file is built. Files are written whole (a temporary file
renamed over the old one); files that an earlier build left and this one does not write are
left alone.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncd import webpage
from ncd.webpage import escape

DEFAULT_OUTPUT = "site"


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Declare `ncd site` and its arguments on the CLI's subcommand parser."""
    from ncd import render_args

    sub = commands.add_parser(
        "site", help="build a static gallery site from .ncd files", parents=parents,
        description="Build a static web site (HTML and CSS, no scripts) of the .ncd files in "
        "the folders and files given: an index, and a page per file with each definition's "
        "diagram, source and generated PyTorch module. A file with errors is reported (exit "
        "status 1) and the others are still built.")
    sub.add_argument("inputs", nargs="+", metavar="DIR",
                     help="a folder (every *.ncd file below it) or a .ncd file")
    sub.add_argument("-o", "--output", metavar="OUT", default=DEFAULT_OUTPUT,
                     help=f"the folder to write the site to (made if needed; default: "
                     f"{DEFAULT_OUTPUT}/)")
    sub.add_argument("--title", default="ncd models",
                     help="the site's title (default: ncd models)")
    render_args.add_arguments(sub, parents)
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ncd import render_args
    from ncd.cli import color_enabled

    return build_site([Path(name) for name in args.inputs], Path(args.output),
                      title=args.title, sizes=render_args.sizes(args),
                      include=render_args.include(args),
                      options=render_args.render_options(args), color=color_enabled(args))


# ---- the models -------------------------------------------------------------------------


@dataclass
class Entry:
    """One definition of a model, as its section shows it."""

    name: str
    signature: str
    doc: str | None
    diagram: str | None  # the .svg file's name, or None when it could not be drawn
    svg: str | None  # its text
    problem: str | None  # why it could not be drawn
    lines: tuple[int, int] | None  # its first and last line in the file
    code: str | None  # the generated PyTorch module
    not_compiled: str | None  # why there is none


@dataclass
class Model:
    """One .ncd file: checked, drawn and compiled, or the diagnostics that stopped it."""

    path: Path
    shown: str  # the path as the pages show it
    slug: str  # its pages' and diagrams' names
    text: str
    doc: str | None = None
    problem: str | None = None
    error: Any | None = None  # ncd.diagnostics.NcdError, when the problem is diagnostics
    entries: list[Entry] = field(default_factory=list)
    imports: list[Path] = field(default_factory=list)

    @property
    def page(self) -> str:
        return f"{self.slug}.html"


def find_models(inputs: Sequence[Path]) -> list[tuple[Path, str]]:
    """Each .ncd file that `inputs` name, with the name it is shown and filed under (its path
    below the folder given, or its file name); a usage error for an input that is neither."""
    from ncd.cli import UsageError

    found: dict[str, tuple[Path, str]] = {}
    for given in inputs:
        if given.is_dir():
            files = sorted(path for path in given.rglob("*.ncd") if path.is_file() and not any(
                part.startswith(".") for part in path.relative_to(given).parts))
            if not files:
                raise UsageError(f"{given}: no .ncd files in this folder")
            for path in files:
                found.setdefault(os.path.realpath(path),
                                 (path, path.relative_to(given).with_suffix("").as_posix()))
        elif given.is_file():
            found.setdefault(os.path.realpath(given), (given, given.stem))
        else:
            raise UsageError(f"{given}: no such file or folder")
    return list(found.values())


def _slugs(names: Sequence[str]) -> list[str]:
    taken: set[str] = {"index", "style"}
    slugs = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", name.replace("/", "--")).strip("-") or "model"
        slug, number = base, 2
        while slug.lower() in taken:
            slug, number = f"{base}-{number}", number + 1
        taken.add(slug.lower())
        slugs.append(slug)
    return slugs


def build_site(inputs: Sequence[Path], out: Path, *, title: str = "ncd models",
               sizes: Mapping[str, int] | None = None, options: Any = None,
               report: Callable[[str], None] | None = None, color: bool = False,
               include: Sequence[str] = ()) -> int:
    """Build the site of `inputs` in the folder `out`: 0, or 1 when a file has errors (2 when
    a size override names no axis of any file). `report` gets the diagnostics and a line per
    file (default: standard error), the diagnostics in colour with `color`."""
    from ncd.cli import UsageError, write_atomically

    say = report or (lambda text: print(text, file=sys.stderr))
    found = find_models(inputs)
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot write the site to {out}: it is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(sizes or {})
    used: set[str] = set()
    models = [_model(path, slug, sizes, used, options, include)
              for (path, _), slug in zip(found, _slugs([name for _, name in found]), strict=True)]

    def write(name: str, data: str | bytes) -> None:
        write_atomically(out / name, data.encode("utf-8") if isinstance(data, str) else data)

    status = 0
    by_file = {os.path.realpath(model.path): model for model in models}
    write("style.css", webpage.STYLE)
    for model in models:
        for entry in model.entries:
            if entry.diagram is not None and entry.svg is not None:
                write(entry.diagram, entry.svg)
        write(model.page, _model_page(model, by_file, title))
        if model.problem is not None:
            say(model.error.render(color=color) if model.error is not None else model.problem)
            count = sum(1 for line in model.problem.splitlines()
                        if webpage.is_diagnostic_head(line))
            say(f"{model.shown}: {count or 1} error{'s' if count != 1 else ''}")
            status = 1
    write("index.html", _index_page(models, title))
    for name in sorted(set(sizes) - used):
        say(f"ncd site: -D {name}={sizes[name]}: no file declares an axis `{name}`")
        status = max(status, 2)
    built = sum(1 for model in models if model.problem is None)
    say(f"ncd site: {built} of {len(models)} file{'s' if len(models) != 1 else ''} built; "
        f"open {out / 'index.html'}")
    return status


def _model(path: Path, slug: str, sizes: Mapping[str, int], used: set[str],
           options: Any, include: Sequence[str] = ()) -> Model:
    """Check, draw and compile one file."""
    from ncd.diagnostics import NcdError
    from ncd.renderers import render_svg

    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        return Model(path, path.as_posix(), slug, "",
                     problem=f"ncd: {path}: {error.strerror or error}")
    model = Model(path, path.as_posix(), slug, text)
    try:
        program = _load(path, sizes, include)
    except NcdError as error:
        model.problem, model.error = error.render(color=False), error
        return model
    used.update(name for name in sizes if name in program.axes)
    model.doc = program.ir.doc
    here = os.path.realpath(path)
    model.imports = [Path(source) for source in program.sources
                     if os.path.realpath(source) != here]
    spans = _definition_lines(text, str(path))
    for definition in program.definitions:
        span = definition.ir.span
        if span is not None and os.path.realpath(span.file) != here:
            continue  # an imported definition: on its own file's page
        svg: str | None = None
        problem: str | None = None
        try:
            svg = render_svg(program.ir, definition.name, options)
        except NcdError as error:
            problem = error.render(color=False)
        code, not_compiled = _compiled(program, definition.name)
        model.entries.append(Entry(
            name=definition.name, signature=definition.signature, doc=definition.ir.doc,
            diagram=f"{slug}.{_file_name(definition.name)}.svg" if svg is not None else None,
            svg=svg, problem=problem, lines=spans.get(definition.name), code=code,
            not_compiled=not_compiled))
    return model


def _load(path: Path, sizes: Mapping[str, int], include: Sequence[str] = ()) -> Any:
    """The checked program of `path` (its imports looked for also in `include`), with the
    overrides among `sizes` that name its axes (a site's overrides are for the files that
    declare them)."""
    from ncd.api import load
    from ncd.diagnostics import NcdError

    try:
        return load(path, sizes=sizes, include=include)
    except NcdError as error:
        if not sizes or not any(d.code == "E314" for d in error.diagnostics):
            raise
    program = load(path, include=include)
    own = {name: value for name, value in sizes.items() if name in program.axes}
    return load(path, sizes=own, include=include) if own else program


def _compiled(program: Any, name: str) -> tuple[str | None, str | None]:
    """The PyTorch module of `name`, or why it has none."""
    from ncd.compilers.errors import CompileError
    from ncd.diagnostics import NcdError

    try:
        return program.compile(name), None
    except NcdError as error:
        return None, error.render(color=False)
    except CompileError as error:
        return None, f"ncd: {name} cannot be compiled: {error}"


def _definition_lines(text: str, name: str) -> dict[str, tuple[int, int]]:
    """The first and last line of each definition of the source `text`."""
    from ncd import syntax
    from ncd.parser import ParseFailure, parse

    try:
        module = parse(text, name)
    except ParseFailure:
        return {}
    return {item.name.name: (item.span.line, item.span.end_line) for item in module.items
            if isinstance(item, syntax.Definition | syntax.PointFree)}


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---- the pages --------------------------------------------------------------------------


def _top(title: str, *crumbs: tuple[str | None, str]) -> str:
    trail = "".join(
        f' <span aria-hidden="true">/</span> <a href="{escape(href)}">{escape(text)}</a>'
        if href else f' <span aria-hidden="true">/</span> <span>{escape(text)}</span>'
        for href, text in crumbs)
    return ('<header class="top"><div class="wrap">'
            f'<a class="brand" href="index.html">{escape(title)}</a>'
            f'<nav class="crumbs">{trail}</nav></div></header>\n')


_FOOTER = ('<footer class="bottom"><div class="wrap">Built by <code>ncd site</code> from the '
           ".ncd sources; diagrams drawn and modules generated by ncd.</div></footer>")


def _index_page(models: Sequence[Model], title: str) -> str:
    cards = []
    for model in models:
        main = model.entries[-1] if model.entries else None
        if main is not None and main.diagram is not None:
            thumb = (f'<a class="thumb" href="{escape(model.page)}">'
                     f'<img src="{escape(main.diagram)}" alt="diagram of {escape(main.name)}">'
                     "</a>")
        elif model.problem is not None:
            thumb = '<div class="thumb"><span class="badge err">does not check</span></div>'
        else:
            thumb = '<div class="thumb"><span class="note">nothing to draw</span></div>'
        items = "".join(
            f'<li><a href="{escape(model.page)}#def-{escape(_file_name(entry.name))}">'
            f"{escape(entry.name)}</a>{escape(entry.signature[len(entry.name):])}</li>"
            for entry in model.entries)
        doc = f"<p>{escape(model.doc)}</p>" if model.doc else ""
        if model.problem is not None:
            doc = '<p class="note">This file has errors; its page shows them.</p>'
        cards.append(
            f'<article class="card">{thumb}<div class="body">'
            f'<h2><a href="{escape(model.page)}">{escape(_title(model))}</a></h2>'
            f'<div class="path">{escape(model.shown)}</div>{doc}'
            f"{f'<ul>{items}</ul>' if items else ''}</div></article>")
    count = len(models)
    body = (_top(title) + '<main><div class="wrap">'
            f"<h1>{escape(title)}</h1>"
            f'<p class="lead">{count} model{"s" if count != 1 else ""}, each drawn as a neural '
            "circuit diagram, with its source and the PyTorch module it compiles to.</p>"
            f'<div class="cards">{"".join(cards)}</div></div></main>\n' + _FOOTER)
    return webpage.document(title, body, stylesheet="style.css")


def _title(model: Model) -> str:
    return model.path.stem


def _model_page(model: Model, by_file: Mapping[str, Model], title: str) -> str:
    lines = model.text.splitlines()
    parts = [f"<h1>{escape(_title(model))}</h1>"]
    if model.doc:
        parts.append(f'<p class="lead">{escape(model.doc)}</p>')
    meta = [f"<code>{escape(model.shown)}</code>"]
    if model.problem is None:
        count = len(model.entries)
        meta.append(f"{count} definition{'s' if count != 1 else ''}")
    links = []
    for imported in model.imports:
        other = by_file.get(os.path.realpath(imported))
        name = escape(imported.name)
        links.append(f'<a href="{escape(other.page)}">{name}</a>' if other else name)
    if links:
        meta.append("imports " + ", ".join(links))
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if model.problem is not None:
        parts.append('<p><span class="badge err">does not check</span></p>')
        parts.append(webpage.diagnostics(model.problem))
        parts.append(_panel("Source", model.shown, webpage.listing(
            webpage.numbered(model.text), anchors="L")))
    else:
        if len(model.entries) > 1:
            parts.append('<ul class="toc">' + "".join(
                f'<li><a href="#def-{escape(_file_name(e.name))}">{escape(e.name)}</a></li>'
                for e in model.entries) + "</ul>")
        covered = {n for e in model.entries if e.lines for n in range(e.lines[0], e.lines[1] + 1)}
        rest = _trim([(n, lines[n - 1].expandtabs(4)) for n in range(1, len(lines) + 1)
                      if n not in covered])
        if rest and len(rest) < len(lines):
            parts.append('<div class="panels declarations">' + _panel(
                "Declarations", model.path.name,
                webpage.listing(rest)) + "</div>")
        parts.extend(_section(model, entry, lines) for entry in model.entries)
    body = (_top(title, (None, _title(model))) + '<main><div class="wrap">'
            + "\n".join(parts) + "</div></main>\n" + _FOOTER)
    return webpage.document(f"{_title(model)} · {title}", body, stylesheet="style.css")


def _trim(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Numbered lines without blank ones at either end or two blank ones in a row."""
    kept: list[tuple[int, str]] = []
    for number, text in lines:
        if text.strip() or (kept and kept[-1][1].strip()):
            kept.append((number, text))
    while kept and not kept[-1][1].strip():
        kept.pop()
    return kept


def _section(model: Model, entry: Entry, lines: list[str]) -> str:
    anchor = f"def-{_file_name(entry.name)}"
    parts = [f'<section class="definition" id="{escape(anchor)}">',
             f"<h2><code>{escape(entry.name)}</code></h2>",
             f'<div class="signature">{escape(entry.signature)}</div>']
    if entry.doc:
        parts.append(f'<p class="doc">{escape(entry.doc)}</p>')
    if entry.diagram is not None:
        size = webpage.diagram_size(entry.svg or "")
        dimensions = f' width="{size[0]}" height="{size[1]}"' if size else ""
        parts.append(f'<figure class="diagram"><a href="{escape(entry.diagram)}">'
                     f'<img src="{escape(entry.diagram)}"{dimensions} alt="neural circuit '
                     f'diagram of {escape(entry.name)}"></a></figure>')
    elif entry.problem is not None:
        parts.append(webpage.diagnostics(entry.problem))
    panels = []
    if entry.lines is not None:
        first, last = entry.lines
        numbered = [(n, lines[n - 1].expandtabs(4)) for n in range(first, last + 1)
                    if n <= len(lines)]
        where = f"line {first}" if first == last else f"lines {first}–{last}"
        panels.append(_panel("Source", f"{model.shown}, {where}",
                             webpage.listing(numbered, label=f"source of {entry.name}")))
    if entry.code is not None:
        panels.append(_panel("PyTorch", f"ncd compile {model.path.name} {entry.name}",
                             webpage.listing(webpage.numbered(entry.code),
                                             label=f"PyTorch module of {entry.name}")))
    else:
        reason = entry.not_compiled or "it was not compiled"
        panels.append(_panel("PyTorch", "not compiled",
                             "<p>This definition does not compile to a PyTorch module:</p>"
                             + webpage.diagnostics(reason)))
    parts.append(f'<div class="panels">{"".join(panels)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _panel(heading: str, where: str, content: str) -> str:
    return (f'<section class="panel"><header><h3>{escape(heading)}</h3>'
            f'<span class="where">{escape(where)}</span></header>{content}</section>')
