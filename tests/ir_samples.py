"""Hand-built IR terms for the renderer tests: every term kind and every operator kind.

They do not go through the parser, so the renderer is tested on exactly the IR the docs
describe (and on corner cases the gallery does not reach: datatype wires, fixed indices,
three-way contractions, nested blocks, scans, calls with batch axes).
"""

from __future__ import annotations

from collections.abc import Sequence

from ncd import ir


def axis(name: str, size: int | str | None = None) -> ir.Axis:
    if size is None:
        return ir.Axis(name=name, size=ir.SizeSym(name=name))
    if isinstance(size, str):
        return ir.Axis(name=name, size=ir.SizeSym(name=size))
    return ir.Axis(name=name, size=ir.SizeConst(value=size))


X, Y = axis("x"), axis("y")
M, H, K = axis("m", 512), axis("h", 8), axis("k", 64)
F, V, P, W = axis("d_ff", 2048), axis("v", 50257), axis("p", 62), axis("w", 3)
B = axis("b")
AXES = (X, Y, M, H, K, F, V, P, W, B)


def arr(*axes: ir.Axis, dtype: str = "R", bound: ir.Axis | None = None) -> ir.ArrayType:
    datatype = ir.Datatype(kind=dtype, bound=bound.size if bound is not None else None)
    return ir.ArrayType(dtype=datatype, shape=ir.Shape(axes=tuple(axes)))


def read_map(domain: Sequence[ir.Axis], codomain: Sequence[ir.Axis],
             renames: dict[str, str] | None = None) -> ir.StrideMorphism:
    """Each codomain axis read from the domain axis of its name (or of `renames[name]`)."""
    renames = renames or {}
    names = [a.name for a in domain]
    matrix = tuple(tuple(1 if n == renames.get(c.name, c.name) else 0 for n in names)
                   for c in codomain)
    return ir.StrideMorphism(domain=ir.Shape(axes=tuple(domain)),
                             codomain=ir.Shape(axes=tuple(codomain)), matrix=matrix,
                             offset=(0,) * len(codomain))


def port(array: ir.ArrayType, targets: Sequence[str], degree: Sequence[ir.Axis],
         name: str | None = None, renames: dict[str, str] | None = None) -> ir.Port:
    tiling = [a for a in array.shape.axes if a.name not in targets]
    return ir.Port(array=array, targets=tuple(targets),
                   reindexing=read_map(degree, tiling, renames), name=name)


def op(operator: ir.Operator, inputs: Sequence[tuple[ir.ArrayType, Sequence[str]]],
       outputs: Sequence[tuple[ir.ArrayType, Sequence[str]]], degree: Sequence[ir.Axis],
       params: Sequence[tuple[str, ir.ArrayType, Sequence[str]]] = (),
       out_names: Sequence[str | None] = (), renames: Sequence[dict[str, str]] = ()
       ) -> ir.Broadcasted:
    in_ports = tuple(port(a, t, degree, renames=renames[i] if i < len(renames) else None)
                     for i, (a, t) in enumerate(inputs))
    out_ports = tuple(port(a, t, degree, out_names[i] if i < len(out_names) else None)
                      for i, (a, t) in enumerate(outputs))
    param_ports = tuple(port(a, t, degree, name) for name, a, t in params)
    return ir.Broadcasted(op=operator, degree=ir.Shape(axes=tuple(degree)), inputs=in_ports,
                          params=param_ports, outputs=out_ports,
                          dom=tuple(a for a, _ in inputs), cod=tuple(a for a, _ in outputs))


def composed(*terms: ir.Term) -> ir.Composed:
    return ir.Composed(terms=terms, dom=terms[0].dom, cod=terms[-1].cod)


def product(*terms: ir.Term) -> ir.Product:
    return ir.Product(terms=terms, dom=tuple(a for t in terms for a in t.dom),
                      cod=tuple(a for t in terms for a in t.cod))


def identity(*arrays: ir.ArrayType) -> ir.Identity:
    return ir.Identity(dom=arrays, cod=arrays)


def rearrange(dom: Sequence[ir.ArrayType], mapping: Sequence[int]) -> ir.Rearrangement:
    return ir.Rearrangement(dom=tuple(dom), cod=tuple(dom[i] for i in mapping),
                            mapping=tuple(mapping))


def definition(name: str, body: ir.Term, params: Sequence[ir.Parameter] = ()) -> ir.Definition:
    return ir.Definition(
        name=name,
        inputs=tuple(ir.Variable(name=f"I{i}", array=a) for i, a in enumerate(body.dom)),
        outputs=tuple(ir.Variable(name=f"O{i}", array=a) for i, a in enumerate(body.cod)),
        params=tuple(params), body=body,
    )


# --------------------------------------------------------------------------------------
# The terms
# --------------------------------------------------------------------------------------

XM, XHK, HXY = arr(X, M), arr(X, H, K), arr(H, X, Y)


def linear(sub: str = "q") -> ir.Broadcasted:
    return op(ir.LinearOp(inputs=("m",), outputs=("h", "k")), [(XM, ["m"])],
              [(XHK, ["h", "k"])], [X], params=[(f"W_{sub}", arr(M, H, K), ["m", "h", "k"])],
              out_names=[sub.upper()])


def attention_scores() -> ir.Term:
    """copy3 ; (L_q x L_k x L_v) ; (QK x id) ; (mask x id) ; (softmax x id) ; SV ; L_o"""
    yhk = arr(Y, H, K)
    rename = ir.Reindexing(dom=(XHK,), cod=(yhk,), eta=read_map([Y, H, K], [X, H, K],
                                                                {"x": "y"}))
    qk = op(ir.EinsumOp(contracted=("k",), scale_text="1/sqrt(k)"),
            [(XHK, ["k"]), (yhk, ["k"])], [(HXY, [])], [H, X, Y])
    mask = op(ir.MaskOp(axes=("x", "y"), causal=True), [(HXY, ["x", "y"])], [(HXY, ["x", "y"])],
              [H])
    soft = op(ir.SoftmaxOp(axes=("y",)), [(HXY, ["y"])], [(HXY, ["y"])], [H, X])
    sv = op(ir.EinsumOp(contracted=("y",)), [(HXY, ["y"]), (yhk, ["y"])], [(XHK, [])],
            [X, H, K])
    out = op(ir.LinearOp(inputs=("h", "k"), outputs=("m",)), [(XHK, ["h", "k"])], [(XM, ["m"])],
             [X], params=[("W_o", arr(H, K, M), ["h", "k", "m"])])
    return composed(
        rearrange([XM], [0, 0, 0]),
        product(linear("q"), linear("k"), linear("v")),
        product(identity(XHK), rename, rename),
        product(qk, identity(yhk)),
        product(mask, identity(yhk)),
        product(soft, identity(yhk)),
        sv, out,
    )


def norm() -> ir.Broadcasted:
    return op(ir.NormOp(norm="layernorm", axes=("m",), affine=True, bias=True),
              [(XM, ["m"])], [(XM, ["m"])], [X],
              params=[("g", arr(M), ["m"]), ("b", arr(M), ["m"])])


def add_residual(term: ir.Term) -> ir.Term:
    """copy2 ; (f x id) ; swap ; add: the residual of a pre-norm layer."""
    add = op(ir.AddOp(), [(XM, []), (XM, [])], [(XM, [])], [X, M], out_names=["X"])
    add = add.model_copy(update={"inputs": (add.inputs[0].model_copy(update={"name": "X"}),
                                            add.inputs[1])})
    return composed(rearrange([XM], [0, 0]), product(term, identity(XM)),
                    rearrange([XM, XM], [1, 0]), add)


def feedforward() -> ir.Term:
    xf = arr(X, F)
    lin_in = op(ir.LinearOp(inputs=("m",), outputs=("d_ff",), bias=True), [(XM, ["m"])],
                [(xf, ["d_ff"])], [X], params=[("W_in", arr(M, F), ["m", "d_ff"]),
                                               ("b_in", arr(F), ["d_ff"])])
    act = op(ir.ElementwiseOp(function="gelu"), [(xf, [])], [(xf, [])], [X, F])
    lin_out = op(ir.LinearOp(inputs=("d_ff",), outputs=("m",)), [(xf, ["d_ff"])],
                 [(XM, ["m"])], [X], params=[("W_out", arr(F, M), ["d_ff", "m"])])
    return composed(lin_in, act, lin_out)


def layer_block(repeat: int = 6) -> ir.Block:
    attention = ir.Block(dom=(XM,), cod=(XM,), title="Attention", color="purple",
                         body=add_residual(composed(norm(), attention_scores())))
    ff = ir.Block(dom=(XM,), cod=(XM,), title="Feed forward", color="#3377bb",
                  body=add_residual(composed(norm(), feedforward())))
    return ir.Block(dom=(XM,), cod=(XM,), title="Transformer layer", repeat=repeat,
                    body=composed(attention, ff))


def call(definition_name: str, batch: bool = False) -> ir.Broadcasted:
    """A call of a definition [x, m] -> [x, m]; with `batch`, lifted over an axis b."""
    if batch:
        bxm = arr(B, X, M)
        return op(ir.CallOp(definition=definition_name, instance=definition_name),
                  [(bxm, ["x", "m"])], [(bxm, ["x", "m"])], [B])
    return op(ir.CallOp(definition=definition_name, instance=definition_name),
              [(XM, ["x", "m"])], [(XM, ["x", "m"])], [])


def embedding() -> ir.Broadcasted:
    tokens = arr(X, dtype="N", bound=V)
    return op(ir.EmbeddingOp(outputs=("m",)), [(tokens, [])], [(XM, ["m"])], [X],
              params=[("E", arr(V, M), ["v", "m"])])


def small_ops() -> ir.Term:
    """Elementwise, scale, dropout, reduce, multiply, rename, reshape, split, concat."""
    xh, xk = arr(X, H), arr(X, K)
    x_hk = arr(X, axis("hk", 512))
    terms = [
        op(ir.ElementwiseOp(function="sigmoid"), [(XM, [])], [(XM, [])], [X, M]),
        op(ir.ScaleOp(factor=0.5, text="0.5"), [(XM, [])], [(XM, [])], [X, M]),
        op(ir.DropoutOp(p=0.1), [(XM, [])], [(XM, [])], [X, M]),
        rearrange([XM], [0, 0]),
        op(ir.MultiplyOp(), [(XM, []), (XM, [])], [(XM, [])], [X, M]),
        op(ir.RenameOp(mapping=(("m", "d_ff"),)), [(XM, ["m"])], [(arr(X, F), ["d_ff"])], [X]),
        op(ir.RenameOp(mapping=(("d_ff", "m"),)), [(arr(X, F), ["d_ff"])], [(XM, ["m"])], [X]),
        op(ir.SplitOp(input="m", outputs=("h", "k")), [(XM, ["m"])], [(xh, ["h"]), (xk, ["k"])],
           [X]),
        op(ir.ConcatOp(inputs=("h", "k"), output="m"), [(xh, ["h"]), (xk, ["k"])],
           [(XM, ["m"])], [X]),
        op(ir.ReshapeOp(inputs=("m",), outputs=("h", "k")), [(XM, ["m"])], [(XHK, ["h", "k"])],
           [X]),
        op(ir.ReshapeOp(inputs=("h", "k"), outputs=("hk",)), [(XHK, ["h", "k"])],
           [(x_hk, ["hk"])], [X]),
        op(ir.ReduceOp(function="sum", axes=("hk",)), [(x_hk, ["hk"])], [(arr(X), [])], [X]),
    ]
    return composed(*terms)


def reindexings() -> ir.Term:
    """A strided window (hexagon), a transpose, a diagonal, a fixed index, a new axis."""
    bx = arr(B, axis("xs", 128))
    bpw = arr(B, P, W)
    window = ir.StrideMorphism(domain=ir.Shape(axes=(B, P, W)),
                               codomain=ir.Shape(axes=(B, axis("xs", 128))),
                               matrix=((1, 0, 0), (0, 2, 1)), offset=(0, 0))
    transpose = read_map([W, P, B], [B, P, W])
    diagonal = read_map([W, B], [W, B, W])  # Y[w, b] = X[w, b, w]
    element = ir.StrideMorphism(domain=ir.Shape(axes=(B,)), codomain=ir.Shape(axes=(W, B)),
                                matrix=((0,), (1,)), offset=(2, 0))
    broadcast = read_map([B, Y], [B])  # a new axis y: the input is copied along it
    wpb, wbw, wb = arr(W, P, B), arr(W, B, W), arr(W, B)
    return composed(
        ir.Reindexing(dom=(bx,), cod=(bpw,), eta=window),
        ir.Reindexing(dom=(bpw,), cod=(wpb,), eta=transpose),
        op(ir.ReduceOp(function="max", axes=("p",)), [(wpb, ["p"])], [(wb, [])], [W, B]),
        ir.Reindexing(dom=(wb,), cod=(arr(B),), eta=element),
        ir.Reindexing(dom=(arr(B),), cod=(arr(B, Y),), eta=broadcast),
    ), ir.Reindexing(dom=(wbw,), cod=(wb,), eta=diagonal)


def contractions() -> ir.Term:
    """Three operands sharing a contracted axis; an axis summed out alone; a learned operand."""
    xk, yk, k_ = arr(X, K), arr(Y, K), arr(K)
    three = op(ir.EinsumOp(contracted=("k",)), [(xk, ["k"]), (yk, ["k"]), (k_, ["k"])],
               [(arr(X, Y), [])], [X, Y])
    alone = op(ir.EinsumOp(contracted=("y",)), [(arr(X, Y), ["y"])], [(arr(X), [])], [X])
    learned = op(ir.EinsumOp(contracted=("x",)), [(arr(X), ["x"])], [(arr(M), [])], [M],
                 params=[("W", arr(M, X), ["x"])])
    return composed(three, alone, learned)


def scan() -> ir.Scan:
    """A recurrence over t: carry [b, m], sequence [t, b, m] -> final carry, outputs."""
    t = axis("t")
    bm, tbm = arr(B, M), arr(t, B, M)
    step_add = op(ir.AddOp(), [(bm, []), (bm, [])], [(bm, [])], [B, M])
    step = composed(step_add, rearrange([bm], [0, 0]))
    return ir.Scan(dom=(bm, tbm), cod=(bm, tbm), axis=t, carries=1, step=step, step_name="step")


def masks_by_array() -> ir.Term:
    flags = arr(X, Y, dtype="B")
    xy = arr(X, Y)
    return op(ir.MaskOp(axes=("x", "y"), by_array=True), [(xy, ["x", "y"]), (flags, ["x", "y"])],
              [(xy, ["x", "y"])], [])


def program() -> ir.Program:
    """Every sample as a definition of one program."""
    inner = definition("inner", composed(norm(), feedforward()))
    reindex_chain, diagonal = reindexings()
    definitions = [
        inner,
        definition("linear", linear()),
        definition("attention", attention_scores()),
        definition("layer", composed(layer_block(6), norm())),
        definition("nested", ir.Block(dom=(XM,), cod=(XM,), title="Outer", body=composed(
            ir.Block(dom=(XM,), cod=(XM,), title="Middle", repeat=2, body=ir.Block(
                dom=(XM,), cod=(XM,), title="Inner", body=norm())), norm()))),
        definition("calls", composed(call("inner"), norm())),
        definition("batched_call", call("inner", batch=True)),
        definition("embedding", composed(embedding(), norm())),
        definition("small_ops", small_ops()),
        definition("reindexings", reindex_chain),
        definition("diagonal", diagonal),
        definition("contractions", contractions()),
        definition("scan", scan()),
        definition("mask_by_array", masks_by_array()),
        definition("delete", rearrange([XM, XHK], [1])),
        definition("permute", rearrange([XM, XHK, arr(X)], [2, 0, 1])),
    ]
    return ir.Program(source="<samples>", axes=AXES, definitions=tuple(definitions))


SAMPLES = tuple(d.name for d in program().definitions)
