"""A graphviz overview of a definition: one node per operation, blocks as clusters.

The neural circuit diagram shows every axis as a wire; for a large model an overview with
one node per operation is easier to take in. `program_to_dot` walks the IR term (every kind:
identity, rearrangement, reindexing, broadcasted, composed, product, block, scan), tracking
which node produced each array, and writes DOT source: operations are nodes, blocks are
`cluster_` subgraphs with their titles, and every edge is labelled with the array it
carries (`R[x, m]`). Blocks nested deeper than `collapse_depth` become a single node.

Names and titles in labels are bounded as in the diagrams (`renderers.text.elide`): a name
beyond `MAX_NAME_CHARS` characters keeps its ends around an ellipsis, a title or formula beyond
`MAX_TITLE_CHARS` is cut, so the source stays small whatever the names' length.

`render_dot` lays the graph out with the `dot` program (Debian's graphviz) or, where that is
absent, with `graphviz-pure` (a pip-installable port of the same program), run with a time
limit. PNG and PDF are drawn from its SVG by `renderers.export` (resvg; fpdf2, with the text
real text in the embedded font), so the three formats agree on every machine. The `graphviz`
Python package is not used: it only ever runs a program named `dot` from PATH (so
`graphviz-pure` would need a process-wide patch of its module), and its `pipe` has no time
limit; the twenty lines below do what it would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, assert_never

from ncd import ir
from ncd.elision import formula, listed
from ncd.operators import declaration

from .export import svg_to_pdf, svg_to_png
from .style import hex_colour, rgb
from .text import MAX_TITLE_CHARS, elide

Format = Literal["svg", "png", "pdf"]

FONT = "Times"
"""The font graphviz measures labels with; SVG readers and our exporters draw a serif."""


# --------------------------------------------------------------------------------------
# DOT source text
# --------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def dot_string(text: str) -> str:
    """A DOT double-quoted string showing `text` literally: quotes and backslashes escaped,
    newlines as graphviz's centred line breaks, control characters and the two that XML
    cannot carry (U+FFFE, U+FFFF) replaced; `<` and `>` are ordinary characters in a quoted
    string (graphviz escapes them in its SVG)."""
    text = _CONTROL.sub("\ufffd", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _attributes(attributes: dict[str, str]) -> str:
    if not attributes:
        return ""
    return " [" + ", ".join(f"{k}={dot_string(v)}" for k, v in attributes.items()) + "]"


@dataclass(frozen=True)
class _Source:
    """Where an array comes from: the node that produced it, and the array itself."""

    node: str
    array: ir.ArrayType


@dataclass
class _Cluster:
    name: str
    attributes: dict[str, str]
    items: list[str | _Cluster] = field(default_factory=list)


@dataclass
class _Graph:
    """The DOT graph being built: nodes and clusters in a tree, edges at the top level."""

    root: _Cluster
    stack: list[_Cluster]
    edges: list[str] = field(default_factory=list)
    counter: int = 0
    cluster_counter: int = 0

    def node(self, attributes: dict[str, str]) -> str:
        self.counter += 1
        name = f"n{self.counter}"
        self.stack[-1].items.append(f"{name}{_attributes(attributes)};")
        return name

    def edge(self, source: _Source, target: str, attributes: dict[str, str] | None = None
             ) -> None:
        label = {"label": _array_text(source.array)}
        self.edges.append(f"{source.node} -> {target}{_attributes(label | (attributes or {}))};")

    def open_cluster(self, attributes: dict[str, str]) -> None:
        self.cluster_counter += 1
        cluster = _Cluster(f"cluster_{self.cluster_counter}", attributes)
        self.stack[-1].items.append(cluster)
        self.stack.append(cluster)

    def close_cluster(self) -> None:
        self.stack.pop()


def _write_cluster(cluster: _Cluster, indent: str, lines: list[str]) -> None:
    for item in cluster.items:
        if isinstance(item, str):
            lines.append(indent + item)
        else:
            lines.append(f"{indent}subgraph {item.name} {{")
            for key, value in item.attributes.items():
                lines.append(f"{indent}  {key}={dot_string(value)};")
            _write_cluster(item, indent + "  ", lines)
            lines.append(indent + "}")


# --------------------------------------------------------------------------------------
# Labels and shapes of operations
# --------------------------------------------------------------------------------------


def _array_text(array: ir.ArrayType) -> str:
    """`R[x, m]`, `N[v][x]`, each name and size bounded in length."""
    dtype: str = array.dtype.kind
    if array.dtype.kind == "N" and array.dtype.bound is not None:
        dtype = f"N[{formula(ir.size_text(array.dtype.bound))}]"
    return f"{dtype}[{listed(array.shape.names)}]"


def _operator_label(op: ir.Operator) -> tuple[str, str]:
    """The label and node shape of a base operation, as its declaration (`ncd.ops`) gives
    them."""
    return declaration(op).overview(op)


def _is_permutation(eta: ir.StrideMorphism) -> bool:
    """A reindexing that only renames or reorders axes (no copy, delete, stride or offset)."""
    if not eta.is_rearrangement or len(eta.domain.axes) != len(eta.codomain.axes):
        return False
    columns = [sum(row[j] for row in eta.matrix) for j in range(len(eta.domain.axes))]
    return all(count == 1 for count in columns)


# --------------------------------------------------------------------------------------
# Walking the term
# --------------------------------------------------------------------------------------


class _Walker:
    def __init__(self, graph: _Graph, collapse_depth: int | None):
        self.graph = graph
        self.collapse_depth = collapse_depth

    def operation(self, label: str, shape: str, inputs: list[_Source],
                  outputs: tuple[ir.ArrayType, ...], extra: dict[str, str] | None = None
                  ) -> list[_Source]:
        node = self.graph.node({"label": label, "shape": shape} | (extra or {}))
        for source in inputs:
            self.graph.edge(source, node)
        return [_Source(node, array) for array in outputs]

    def walk(self, term: ir.Term, inputs: list[_Source], depth: int) -> list[_Source]:
        if len(inputs) != len(term.dom):
            raise ValueError(f"{term.kind} term expects {len(term.dom)} arrays, "
                             f"got {len(inputs)}")
        match term:
            case ir.Identity():
                return [_Source(s.node, a) for s, a in zip(inputs, term.cod, strict=True)]
            case ir.Rearrangement():
                return [_Source(inputs[j].node, a)
                        for j, a in zip(term.mapping, term.cod, strict=True)]
            case ir.Reindexing():
                if _is_permutation(term.eta):
                    return [_Source(inputs[0].node, term.cod[0])]
                label = formula(term.eta.text().replace(" -> ", " → "))
                if term.name:
                    label = f"{elide(term.name)}\n{label}"
                return self.operation(label, "hexagon", inputs, term.cod)
            case ir.Broadcasted():
                label, shape = _operator_label(term.op)
                params = [elide(p.name) for p in term.params if p.name]
                if params:
                    label += "\n" + ", ".join(params)
                return self.operation(label, shape, inputs, term.cod)
            case ir.Composed():
                sources = inputs
                for child in term.terms:
                    sources = self.walk(child, sources, depth)
                return sources
            case ir.Product():
                outputs: list[_Source] = []
                start = 0
                for child in term.terms:
                    end = start + len(child.dom)
                    outputs.extend(self.walk(child, inputs[start:end], depth))
                    start = end
                return outputs
            case ir.Block():
                return self.block(term, inputs, depth + 1)
            case ir.Scan():
                return self.scan(term, inputs, depth)
            case ir.Machine():
                return self.machine(term, inputs, depth)
            case _:
                assert_never(term)

    def block(self, term: ir.Block, inputs: list[_Source], depth: int) -> list[_Source]:
        title = elide(term.title, MAX_TITLE_CHARS, "end")
        if term.repeat > 1:
            title += f"  ×{term.repeat}" + (" (shared)" if term.shared else "")
        fill = _tint(term.color) or BLOCK_FILL
        if self.collapse_depth is not None and depth > self.collapse_depth:
            return self.operation(title, "box", inputs, term.cod,
                                  {"style": "rounded,filled,bold", "fillcolor": fill})
        self.graph.open_cluster({"label": title, "style": "rounded,filled", "fillcolor": fill,
                                 "labeljust": "l"})
        outputs = self.walk(term.body, inputs, depth)
        self.graph.close_cluster()
        return outputs

    def scan(self, term: ir.Scan, inputs: list[_Source], depth: int) -> list[_Source]:
        label = f"{'reverse scan' if term.reverse else 'scan'} over {elide(term.axis.name)}"
        if term.step_name:
            label = f"{elide(term.step_name)}: {label}"
        self.graph.open_cluster({"label": label, "style": "dashed", "labeljust": "l"})
        states: list[str] = []
        step_inputs: list[_Source] = []
        for i, (source, array) in enumerate(zip(inputs, term.step.dom, strict=False)):
            if i < term.carries:
                state = self.graph.node({"label": f"state {i + 1}", "shape": "circle",
                                         "style": "dashed"})
                self.graph.edge(source, state)
                states.append(state)
                step_inputs.append(_Source(state, array))
            else:
                step_inputs.append(_Source(source.node, array))
        step_outputs = self.walk(term.step, step_inputs, depth)
        for state, source in zip(states, step_outputs, strict=False):
            self.graph.edge(source, state, {"style": "dashed", "constraint": "false"})
        self.graph.close_cluster()
        return [_Source(s.node, a) for s, a in zip(step_outputs, term.cod, strict=True)]

    def machine(self, term: ir.Machine, inputs: list[_Source], depth: int) -> list[_Source]:
        """The body in a dashed cluster titled with the axis and the blocks; the state it
        reads is a node fed back from the body's result, as a scan's state."""
        label = machine_title(term)
        if term.body_name:
            label = f"{elide(term.body_name)}: {label}"
        self.graph.open_cluster({"label": label, "style": "dashed", "labeljust": "l"})
        state = self.graph.node({"label": "state", "shape": "circle", "style": "dashed"})
        self.graph.edge(inputs[-1], state)
        body_inputs = [_Source(s.node, a) for s, a in zip(inputs[:-1], term.body.dom,
                                                          strict=False)]
        body_inputs.append(_Source(state, term.body.dom[-1]))
        outputs = self.walk(term.body, body_inputs, depth)
        self.graph.edge(outputs[term.state_output], state,
                        {"style": "dashed", "constraint": "false"})
        self.graph.close_cluster()
        return [_Source(s.node, a) for s, a in zip(outputs, term.cod, strict=True)]


def machine_title(term: ir.Machine) -> str:
    """`machine n: 4|4|8` (`backward machine n: 8|4|4` for the reverse pass)."""
    blocks = "|".join(str(n) for n in term.blocks)
    return f"{'backward ' if term.backward else ''}machine {term.axis.name}: {blocks}"


BLOCK_FILL = "#f4f4dc"
"""The fill of a block without a colour of its own (the light yellow of the diagrams)."""


def _tint(color: str | None) -> str | None:
    """A light tint of a block's colour (so black titles stay readable), or None when the
    colour is missing or not one the diagrams read (`style.parse_colour`: the same `purple`
    as in the diagram)."""
    channels = rgb(color) if color else None
    if channels is None:
        return None
    r, g, b = (255 * (0.25 * (c / 255) + 0.75) for c in channels)
    return hex_colour((r, g, b))


def program_to_dot(program: ir.Program, definition: str, *,
                   collapse_depth: int | None = None) -> str:
    """DOT source of an overview of `definition`: its inputs, one node per operation,
    blocks as clusters (collapsed to one node beyond `collapse_depth` levels of nesting:
    0 collapses every block), its outputs; edges labelled with the arrays' shapes."""
    if collapse_depth is not None and collapse_depth < 0:
        raise ValueError(f"collapse_depth must be 0 or more, got {collapse_depth}")
    target = program.definition(definition)
    root = _Cluster("root", {})
    graph = _Graph(root, [root])
    inputs = [
        _Source(graph.node({"label": f"{elide(v.name)}: {_array_text(v.array)}",
                            "shape": "plaintext"}),
                v.array)
        for v in target.inputs
    ]
    outputs = _Walker(graph, collapse_depth).walk(target.body, inputs, 0)
    for variable, source in zip(target.outputs, outputs, strict=True):
        node = graph.node({"label": f"{elide(variable.name)}: {_array_text(variable.array)}",
                           "shape": "plaintext"})
        graph.edge(source, node)
    lines = [
        f"digraph {dot_string(elide(target.name))} {{",
        "  graph [rankdir=LR, labelloc=t, fontname=" + dot_string(FONT)
        + ", label=" + dot_string(_signature(target)) + ", nodesep=0.25, ranksep=0.35];",
        "  node [fontname=" + dot_string(FONT) + ", fontsize=12, style=filled, "
        'fillcolor="white", margin="0.08,0.04", height=0.3];',
        "  edge [fontname=" + dot_string(FONT) + ", fontsize=10, arrowsize=0.6];",
    ]
    _write_cluster(root, "  ", lines)
    lines.extend("  " + edge for edge in graph.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _signature(definition: ir.Definition) -> str:
    inputs = ", ".join(f"{elide(v.name)}: {_array_text(v.array)}" for v in definition.inputs)
    outputs = ", ".join(_array_text(v.array) for v in definition.outputs)
    if len(definition.outputs) != 1:
        outputs = f"({outputs})"
    return f"{elide(definition.name)}({inputs}) → {outputs}"


# --------------------------------------------------------------------------------------
# Running the layout program
# --------------------------------------------------------------------------------------


class LayoutProgramMissing(RuntimeError):
    """Neither `dot` nor `graphviz-pure` can be found."""


def find_layout_program() -> list[str]:
    """The command that lays out DOT: `dot` on PATH, else `graphviz-pure` (on PATH or beside
    the running Python, where pip installs it in a virtual environment)."""
    dot = shutil.which("dot")
    if dot:
        return [dot]
    pure = shutil.which("graphviz-pure")
    if pure:
        return [pure]
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / "graphviz-pure"
        if candidate.is_file():
            return [str(candidate)]
    raise LayoutProgramMissing(
        "no graphviz layout program found: install the Debian package `graphviz` "
        "(which gives `dot`) or `pip install graphviz-pure`"
    )


def render_dot(dot_source: str, fmt: Format, *, timeout: float = 120.0) -> bytes:
    """Lay out DOT source and return SVG, PNG or PDF bytes. PNG and PDF are drawn from
    graphviz's SVG by `renderers.export` (deterministic, no system libraries)."""
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"unknown format {fmt!r}; expected svg, png or pdf")
    command = [*find_layout_program(), "-Tsvg"]
    try:
        result = subprocess.run(command, input=dot_source.encode("utf-8"), capture_output=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"graphviz took longer than {timeout:g} s") from error
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"graphviz failed ({Path(command[0]).name}): {message}")
    svg = result.stdout
    if fmt == "svg":
        return svg
    text = svg.decode("utf-8")
    if fmt == "png":
        return svg_to_png(text, scale=2.0, background="white")
    return svg_to_pdf(text)
