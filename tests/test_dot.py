"""The graphviz overview: graph structure from the IR, escaping, and rendering."""

from __future__ import annotations

import io
import re
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pypdf
import pytest
from ncd.renderers import dot as dot_module
from ncd.renderers.dot import (
    LayoutProgramMissing,
    _operator_label,
    dot_string,
    find_layout_program,
    program_to_dot,
    render_dot,
)

import ncd
from ncd import ir

GALLERY = Path(__file__).resolve().parent.parent / "gallery"

# ----------------------------------------------------------------------------- building IR


def axis(name: str, size: int | None = None) -> ir.Axis:
    return ir.Axis(name=name,
                   size=ir.SizeConst(value=size) if size else ir.SizeSym(name=name))


def arr(*names: str, dtype: str = "R") -> ir.ArrayType:
    return ir.ArrayType(dtype=ir.Datatype(kind=dtype),  # type: ignore[arg-type]
                        shape=ir.Shape(axes=tuple(axis(n) for n in names)))


EMPTY = ir.StrideMorphism(domain=ir.Shape(), codomain=ir.Shape(), matrix=(), offset=())


def port(array: ir.ArrayType, name: str | None = None) -> ir.Port:
    return ir.Port(array=array, targets=array.names, reindexing=EMPTY, name=name)


def op(operator: ir.Operator, ins: list[ir.ArrayType], outs: list[ir.ArrayType],
       params: tuple[str, ...] = ()) -> ir.Broadcasted:
    return ir.Broadcasted(
        dom=tuple(ins), cod=tuple(outs), op=operator, degree=ir.Shape(),
        inputs=tuple(port(a) for a in ins),
        params=tuple(port(arr("m"), name) for name in params),
        outputs=tuple(port(a) for a in outs),
    )


def composed(*terms: ir.Term) -> ir.Composed:
    return ir.Composed(dom=terms[0].dom, cod=terms[-1].cod, terms=terms)


def product(*terms: ir.Term) -> ir.Product:
    return ir.Product(dom=tuple(a for t in terms for a in t.dom),
                      cod=tuple(a for t in terms for a in t.cod), terms=terms)


def program(body: ir.Term, name: str = "f") -> ir.Program:
    definition = ir.Definition(
        name=name,
        inputs=tuple(ir.Variable(name=f"X{i}", array=a) for i, a in enumerate(body.dom)),
        outputs=tuple(ir.Variable(name=f"Y{i}", array=a) for i, a in enumerate(body.cod)),
        body=body,
    )
    return ir.Program(source="test.ncd", axes=(), definitions=(definition,))


RELU = ir.ElementwiseOp(function="relu")
XM = arr("x", "m")


def stride_reindexing() -> ir.Reindexing:
    """Y[c, p, w] = X[c, 2p + w]: a convolution window, drawn as a hexagon."""
    eta = ir.StrideMorphism(
        domain=ir.Shape(axes=(axis("c"), axis("p"), axis("w"))),
        codomain=ir.Shape(axes=(axis("c"), axis("q"))),
        matrix=((1, 0, 0), (0, 2, 1)), offset=(0, 0),
    )
    return ir.Reindexing(dom=(arr("c", "q"),), cod=(arr("c", "p", "w"),), eta=eta)


def renaming() -> ir.Reindexing:
    """Y[y, m] = X[y, m] read from an array whose axis is called x: only a new name."""
    eta = ir.StrideMorphism(domain=ir.Shape(axes=(axis("y"), axis("m"))),
                            codomain=ir.Shape(axes=(axis("x"), axis("m"))),
                            matrix=((1, 0), (0, 1)), offset=(0, 0))
    return ir.Reindexing(dom=(XM,), cod=(arr("y", "m"),), eta=eta)


# ----------------------------------------------------------------------------- reading DOT

NODE = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)", shape="(\w+)"', re.MULTILINE)
EDGE = re.compile(r'^\s*(n\d+) -> (n\d+) \[label="((?:[^"\\]|\\.)*)"([^\]]*)\];', re.MULTILINE)


def graph(source: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str]]]:
    """Nodes {id: (label, shape)} and edges [(from label, to label, edge label)]."""
    nodes = {m.group(1): (m.group(2), m.group(3)) for m in NODE.finditer(source)}
    edges = [(nodes[m.group(1)][0], nodes[m.group(2)][0], m.group(3))
             for m in EDGE.finditer(source)]
    return nodes, edges


# ----------------------------------------------------------------------------- structure


def test_composition_chains_nodes_with_shape_labels() -> None:
    body = composed(op(RELU, [XM], [XM]),
                    op(ir.SoftmaxOp(axes=("m",)), [XM], [XM]))
    nodes, edges = graph(program_to_dot(program(body), "f"))
    assert sorted(label for label, _ in nodes.values()) == [
        "X0: R[x, m]", "Y0: R[x, m]", "relu", "softmax[m]"]
    assert edges == [("X0: R[x, m]", "relu", "R[x, m]"), ("relu", "softmax[m]", "R[x, m]"),
                     ("softmax[m]", "Y0: R[x, m]", "R[x, m]")]


def test_copy_delete_and_product_route_wires() -> None:
    # X is copied; one copy goes through relu, the other through a linear map; the second
    # input is deleted; the outputs come back swapped
    body = composed(
        ir.Rearrangement(dom=(XM, arr("z")), cod=(XM, XM), mapping=(0, 0)),
        product(op(RELU, [XM], [XM]),
                op(ir.LinearOp(inputs=("m",), outputs=("k",)), [XM], [arr("x", "k")],
                   params=("W",))),
        ir.Rearrangement(dom=(XM, arr("x", "k")), cod=(arr("x", "k"), XM), mapping=(1, 0)),
    )
    nodes, edges = graph(program_to_dot(program(body), "f"))
    assert ("linear m → k\\nW", "note") in nodes.values()
    assert ("X0: R[x, m]", "relu", "R[x, m]") in edges
    assert ("X0: R[x, m]", "linear m → k\\nW", "R[x, m]") in edges
    assert ("linear m → k\\nW", "Y0: R[x, k]", "R[x, k]") in edges
    assert ("relu", "Y1: R[x, m]", "R[x, m]") in edges
    assert not any(source == "X1: R[z]" for source, _, _ in edges)  # deleted
    assert len(edges) == 4


def test_identity_and_renaming_pass_through() -> None:
    body = composed(ir.Identity(dom=(XM,), cod=(XM,)), renaming(), op(RELU, [arr("y", "m")],
                                                                          [arr("y", "m")]))
    nodes, edges = graph(program_to_dot(program(body), "f"))
    assert len(nodes) == 3  # input, relu, output: no node for the identity or the renaming
    assert ("X0: R[x, m]", "relu", "R[y, m]") in edges  # the edge shows the renamed array


def test_non_trivial_reindexing_is_a_hexagon() -> None:
    nodes, edges = graph(program_to_dot(program(stride_reindexing()), "f"))
    assert ("(c, p, w) → (c, 2*p + w)", "hexagon") in nodes.values()
    assert ("(c, p, w) → (c, 2*p + w)", "Y0: R[c, p, w]", "R[c, p, w]") in edges


def block(body: ir.Term, title: str, repeat: int = 1, color: str | None = None) -> ir.Block:
    return ir.Block(dom=body.dom, cod=body.cod, title=title, repeat=repeat, body=body,
                    color=color)


def nested_blocks() -> ir.Term:
    inner = block(op(RELU, [XM], [XM]), "Feed forward")
    return block(composed(op(ir.NormOp(norm="layernorm", axes=("m",)), [XM], [XM]), inner),
                 "Layer", repeat=12, color="#c8e6f0")


def test_blocks_are_clusters_with_titles() -> None:
    source = program_to_dot(program(nested_blocks()), "f")
    assert source.count("subgraph cluster_") == 2
    assert 'label="Layer  ×12";' in source
    assert 'fillcolor="#f1f9fb";' in source  # a light tint of the block's #c8e6f0
    assert 'label="Feed forward";' in source
    # the relu node sits inside the inner cluster, which sits inside the outer one
    outer = source.index("subgraph cluster_1")
    inner = source.index("subgraph cluster_2")
    relu = source.index('label="relu"')
    assert outer < inner < relu


@pytest.mark.parametrize(("depth", "clusters", "boxes"),
                         [(None, 2, []), (1, 1, ["Feed forward"]), (0, 0, ["Layer  ×12"])])
def test_collapse_depth(depth: int | None, clusters: int, boxes: list[str]) -> None:
    source = program_to_dot(program(nested_blocks()), "f", collapse_depth=depth)
    assert source.count("subgraph cluster_") == clusters
    nodes, edges = graph(source)
    collapsed = [label for label, shape in nodes.values()
                 if shape == "box" and label not in ("relu",)]
    assert collapsed == boxes
    assert edges[-1][2] == "R[x, m]"


def test_collapse_depth_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="collapse_depth"):
        program_to_dot(program(nested_blocks()), "f", collapse_depth=-1)


def scan_term() -> ir.Scan:
    """h, xs[t] -> h', ys[t] with step (h, x) -> (h + x, h + x)."""
    m = arr("m")
    step = composed(op(ir.AddOp(), [m, m], [m]),
                    ir.Rearrangement(dom=(m,), cod=(m, m), mapping=(0, 0)))
    return ir.Scan(dom=(m, arr("t", "m")), cod=(m, arr("t", "m")), axis=axis("t"),
                   carries=1, step=step, step_name="cell")


def machine_term() -> ir.Machine:
    """x = y + tanh(x) along n, solved in blocks of 1 and 2."""
    n = ir.ArrayType(dtype=ir.REALS, shape=ir.Shape(axes=(axis("n", 3),)))
    return ir.Machine(dom=(n,), cod=(n,), axis=axis("n", 3), blocks=(1, 2),
                      body=op(ir.ElementwiseOp(function="tanh"), [n], [n]), body_name="f")


def test_machine_is_a_cluster_with_a_state_loop() -> None:
    source = program_to_dot(program(machine_term()), "f")
    assert 'label="f: machine n: 1|2";' in source
    _, edges = graph(source)
    assert ("X0: R[n]", "state", "R[n]") in edges
    assert ("state", "tanh", "R[n]") in edges


def test_scan_is_a_cluster_with_a_state_loop() -> None:
    source = program_to_dot(program(scan_term()), "f")
    assert 'label="cell: scan over t";' in source
    nodes, edges = graph(source)
    assert ("X0: R[m]", "state 1", "R[m]") in edges
    assert ("state 1", "+", "R[m]") in edges
    assert ("X1: R[t, m]", "+", "R[m]") in edges  # one slice of the sequence per step
    loop = [m for m in EDGE.finditer(source) if "constraint" in m.group(4)]
    assert len(loop) == 1 and nodes[loop[0].group(1)][0] == "+"
    assert ("+", "Y1: R[t, m]", "R[t, m]") in edges


def test_every_term_kind_is_walked() -> None:
    body = composed(
        ir.Identity(dom=(XM,), cod=(XM,)),
        block(composed(renaming(), op(RELU, [arr("y", "m")], [arr("y", "m")])), "B"),
        ir.Rearrangement(dom=(arr("y", "m"),), cod=(), mapping=()),
    )
    whole = product(body, stride_reindexing(), scan_term(), machine_term())
    kinds = {term.kind for term in ir.walk(whole)}
    assert kinds == set(ir.TERM_KINDS)
    nodes, _ = graph(program_to_dot(program(whole), "f"))
    # 5 inputs; relu, hexagon, state, +, state, tanh; 4 outputs (one deleted)
    assert len(nodes) == 15


def every_operator() -> list[ir.Operator]:
    return [
        ir.EinsumOp(contracted=("k",), scale_text="1/√k"), ir.LinearOp(inputs=("m",),
                                                                      outputs=("k",)),
        ir.EmbeddingOp(outputs=("m",)), ir.SoftmaxOp(axes=("y",), log=True),
        ir.NormOp(norm="rmsnorm", axes=("m",)), RELU, ir.ScaleOp(factor=0.5, text="1/2"),
        ir.DropoutOp(p=0.1), ir.AddOp(), ir.MultiplyOp(),
        ir.MaskOp(axes=("x", "y"), conditions=(ir.Comparison(
            coefficients=(("x", 1), ("y", -1)), offset=0, op=">=", text="x >= y"),)),
        ir.ReduceOp(function="mean", axes=("y",)), ir.ConcatOp(inputs=("a", "b"), output="c"),
        ir.SplitOp(input="c", outputs=("a", "b")), ir.RenameOp(mapping=(("a", "b"),)),
        ir.PadOp(input="x", output="xp", before=1, after=2),
        ir.ReshapeOp(inputs=("h", "k"), outputs=("m",)),
        ir.CallOp(definition="attention", instance="attention"),
        ir.ConstantOp(op="-", constant=1.0, text="1", constant_first=True),
        ir.BinaryOp(function="divide"), ir.WhereOp(), ir.ParameterOp(), ir.BufferOp(),
        ir.BatchNormOp(axes=("b", "x")),
        ir.IndexValueOp(coefficients=(("x", 1), ("y", -1)), text="x - y"),
        ir.GatherOp(indices=(ir.IndexTerm(coefficients=(("y", 1),), divisor=2, text="y // 2"),)),
        ir.ScatterAddOp(input="e", output="v"), ir.GateOp(gate="xor", axes=("i",)),
    ]


def test_every_operator_has_a_label_and_shape() -> None:
    operators = every_operator()
    assert {o.kind for o in operators} == set(ir.OPERATOR_KINDS)
    labels = {}
    for operator in operators:
        label, shape = _operator_label(operator)
        assert label and shape
        labels[operator.kind] = label
    assert labels["mask"] == "mask[x, y]\nx >= y"
    assert labels["softmax"] == "log_softmax[y]"
    assert labels["call"] == "attention"
    assert labels["gate"] == "xor[i]"


def test_unknown_definition_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        program_to_dot(program(op(RELU, [XM], [XM])), "missing")


# ----------------------------------------------------------------------------- escaping


HOSTILE = 'say "hi" \\n <script>alert(1)</script>\nline two\x00 & done'


def test_dot_string_escapes() -> None:
    assert dot_string('a"b') == '"a\\"b"'
    assert dot_string("a\\b") == '"a\\\\b"'
    assert dot_string("a\nb") == '"a\\nb"'
    assert dot_string("a\x00b") == '"a\ufffdb"'
    assert dot_string("<b>") == '"<b>"'


def test_hostile_titles_survive_graphviz() -> None:
    body = block(op(RELU, [XM], [XM]), HOSTILE)
    source = program_to_dot(program(body, name="f"), "f")
    svg = render_dot(source, "svg")
    root = SafeET.fromstring(svg)
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert 'say "hi" \\n <script>alert(1)</script>' in texts
    assert "line two\ufffd & done" in texts
    assert b"<script" not in svg


# ----------------------------------------------------------------------------- rendering


def test_layout_program_is_found() -> None:
    command = find_layout_program()
    assert Path(command[0]).name in ("dot", "graphviz-pure")


def test_graphviz_pure_is_used_without_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = dot_module.shutil.which
    monkeypatch.setattr(dot_module.shutil, "which",
                        lambda name: None if name == "dot" else real_which(name))
    command = find_layout_program()
    assert Path(command[0]).name == "graphviz-pure"
    assert render_dot("digraph { a -> b }", "svg").lstrip().startswith(b"<?xml")


def test_missing_layout_program_is_explained(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(dot_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(dot_module.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(dot_module.sysconfig, "get_path", lambda name: str(tmp_path))
    with pytest.raises(LayoutProgramMissing, match="graphviz-pure"):
        render_dot("digraph { a -> b }", "svg")


def test_graphviz_errors_are_reported() -> None:
    with pytest.raises(RuntimeError, match="graphviz failed"):
        render_dot("digraph { a -> ", "svg")
    with pytest.raises(ValueError, match="format"):
        render_dot("digraph { a }", "gif")  # type: ignore[arg-type]


SOURCE = """
axis x
axis m = 64, h = 4, k = m / h

def attention(X: R[x, m]) -> R[x, m] {
    param W_q: R[m, h, k]
    param W_k: R[m, h, k]
    param W_v: R[m, h, k]
    param W_o: R[h, k, m]
    Q = linear[m -> h k](X, W_q)
    K = linear[m -> h k](X, W_k)
    V = linear[m -> h k](X, W_v)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)
    A = softmax[y](causal[x, y](S))
    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]
    return linear[h k -> m](O, W_o)
}

def layer(X: R[x, m]) -> R[x, m] {
    block "Transformer layer" x6 {
        X = layernorm[m](X + attention(X))
    }
    return X
}
"""


@pytest.fixture(scope="module")
def loaded() -> ir.Program:
    return ncd.load(SOURCE).ir


def test_attention_overview(loaded: ir.Program) -> None:
    nodes, edges = graph(program_to_dot(loaded, "attention"))
    labels = [label for label, _ in nodes.values()]
    assert labels.count("linear m → h k\\nW_q") == 1
    assert "softmax[y]" in labels and "causal[x, y]" in labels
    assert ("softmax[y]", "contract y", "R[h, x, y]") in edges
    assert any(e[1] == "contract y" and e[2] == "R[y, h, k]" for e in edges)


def test_block_overview_and_collapse(loaded: ir.Program) -> None:
    source = program_to_dot(loaded, "layer")
    assert 'label="Transformer layer  ×6";' in source
    assert "attention" in [label for label, _ in graph(source)[0].values()]
    collapsed = program_to_dot(loaded, "layer", collapse_depth=0)
    assert "subgraph" not in collapsed
    assert ("Transformer layer  ×6", "box") in graph(collapsed)[0].values()


def test_render_formats_are_valid_and_deterministic(loaded: ir.Program) -> None:
    source = program_to_dot(loaded, "layer")
    svg = render_dot(source, "svg")
    assert SafeET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    png = render_dot(source, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pdf = render_dot(source, "pdf")
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    assert len(reader.pages) == 1
    assert (svg, png, pdf) == (render_dot(source, "svg"), render_dot(source, "png"),
                               render_dot(source, "pdf"))


@pytest.mark.parametrize("path", sorted(GALLERY.glob("*.ncd")), ids=lambda p: p.name)
def test_gallery_overviews(path: Path) -> None:
    loaded = ncd.load(path).ir
    assert loaded.definitions
    for definition in loaded.definitions:
        for depth in (None, 0):
            source = program_to_dot(loaded, definition.name, collapse_depth=depth)
            svg = render_dot(source, "svg")
            assert SafeET.fromstring(svg).tag.endswith("svg")
