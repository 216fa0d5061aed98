"""The IR as JSON: every program survives `model_dump_json` / `model_validate_json` unchanged,
`ncd ir FILE` prints a program that loads back, and the JSON Schema (`ncd ir --schema`) is
standard JSON that accepts every dumped program."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import ok
from hypothesis import given, settings
from hypothesis import strategies as st

from ncd import ir
from ncd.cli import main

# ---- random programs -----------------------------------------------------------------------

AXIS_NAMES = ["a", "b", "c", "d"]


@st.composite
def programs(draw: st.DrawFn) -> str:
    """A definition that applies a random chain of operators to an array of random axes."""
    count = draw(st.integers(1, 4))
    names = AXIS_NAMES[:count]
    sizes = [draw(st.one_of(st.none(), st.integers(1, 64))) for _ in names]
    decls = ", ".join(n if s is None else f"{n} = {s}" for n, s in zip(names, sizes, strict=True))
    axes = ", ".join(names)
    known = [n for n, s in zip(names, sizes, strict=True) if s is not None]
    lines = []
    current = "X"
    for step in range(draw(st.integers(1, 8))):
        target = draw(st.sampled_from(names))
        choices = [
            f"relu({current})", f"tanh({current})", f"softmax[{target}]({current})",
            f"logsoftmax[{target}]({current})", f"{current} * 0.5", f"{current} + X",
            f"{current} - X", f"multiply({current}, X)", f"dropout[p=0.3]({current})",
            f"mask[{target} >= 1, fill=0]({current})", f"exp({current}) / 4",
            f"-{current}",
        ]
        if known:
            k = draw(st.sampled_from(known))
            choices += [f"layernorm[{k}]({current}, g{step}, b{step})",
                        f"rmsnorm[{k}]({current}, g{step})",
                        f"linear[{k} -> {k}]({current}, W{step})",
                        f"{current} / sqrt({k})"]
        if len(names) >= 2:
            choices.append(f"causal[{names[0]}, {names[1]}]({current})")
        lines.append(f"  T{step} = {draw(st.sampled_from(choices))}")
        current = f"T{step}"
    if draw(st.booleans()):
        lines.append(f'  block "Repeat" x{draw(st.integers(1, 3))} {{\n'
                     f"    {current} = relu({current}) + {current}\n  }}")
    if draw(st.booleans()) and count >= 1:
        lines.append(f"  E[{axes}] = {current}[{axes}] * X[{axes}] * 2")
        current = "E"
    body = "\n".join(lines)
    return (f'"""Generated."""\naxis {decls}\n'
            f"def f(X: R[{axes}]) -> R[{axes}] {{\n{body}\n  return {current}\n}}\n"
            f"def g = f ; f\n"
            f"def h(X: R[{axes}]) -> R[{axes}] {{ return f(f(X)) }}\n")


@settings(max_examples=40, deadline=None)
@given(programs())
def test_generated_programs_round_trip(src: str) -> None:
    program = ok(src)
    text = program.model_dump_json()
    again = ir.Program.model_validate_json(text)
    assert again == program
    assert again.model_dump_json() == text
    json.loads(text, parse_constant=_reject_constant)  # standard JSON
    # the point-free composition and the nested let-style calls are the same term
    g, h = program.definition("g"), program.definition("h")
    assert ir.strip_spans(g.body) == ir.strip_spans(h.body)


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name}")


# ---- random IR values ------------------------------------------------------------------------

names = st.sampled_from(["x", "y", "m", "k", "p"])
size_exprs: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.builds(ir.SizeConst, value=st.integers(-(2**40), 2**40)),
              st.builds(ir.SizeSym, name=names)),
    lambda inner: st.one_of(
        st.builds(ir.SizeAdd, terms=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(ir.SizeMul, factors=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(ir.SizeDiv, numerator=inner, denominator=inner),
        st.builds(ir.SizeFloorDiv, numerator=inner, denominator=inner)),
    max_leaves=5)
axes = st.builds(ir.Axis, name=names, size=size_exprs)
shapes = st.lists(axes, max_size=3).map(lambda a: ir.Shape(axes=tuple(a)))
datatypes = st.one_of(st.just(ir.REALS), st.just(ir.Datatype(kind="B")),
                      st.builds(ir.Datatype, kind=st.just("N"), bound=size_exprs))
arrays = st.builds(ir.ArrayType, dtype=datatypes, shape=shapes)
floats = st.floats(allow_nan=False)  # infinities included
spans = st.one_of(st.none(), st.builds(
    ir.Span, file=st.text(max_size=10), line=st.integers(1, 10**6),
    column=st.integers(1, 1000), end_line=st.integers(1, 10**6), end_column=st.integers(1, 1000)))
morphisms = st.builds(
    ir.StrideMorphism, domain=shapes, codomain=shapes,
    matrix=st.lists(st.lists(st.integers(-3, 3), max_size=3).map(tuple), max_size=3).map(tuple),
    offset=st.lists(st.integers(-5, 5), max_size=3).map(tuple))
ports = st.builds(ir.Port, array=arrays, targets=st.lists(names, max_size=2).map(tuple),
                  reindexing=morphisms, name=st.one_of(st.none(), names))
comparisons = st.builds(ir.Comparison, coefficients=st.lists(st.tuples(names, st.integers(-3, 3)),
                                                             max_size=2).map(tuple),
                        offset=st.integers(-5, 5),
                        op=st.sampled_from([">=", ">", "<=", "<", "==", "!="]), text=st.text())
operators = st.one_of(
    st.builds(ir.EinsumOp, contracted=st.lists(names, max_size=2).map(tuple), scale=floats,
              scale_text=st.one_of(st.none(), st.text(max_size=5))),
    st.builds(ir.LinearOp, inputs=st.just(("m",)), outputs=st.just(("k",)), bias=st.booleans(),
              weight_inputs=st.sampled_from([("m",), ("m_in",)])),
    st.builds(ir.SoftmaxOp, axes=st.just(("y",)), log=st.booleans()),
    st.builds(ir.NormOp, norm=st.sampled_from(["layernorm", "rmsnorm"]), axes=st.just(("m",)),
              eps=floats),
    st.builds(ir.ElementwiseOp, function=st.sampled_from(ir.ELEMENTWISE_FUNCTIONS)),
    st.builds(ir.ScaleOp, factor=floats, text=st.text(max_size=5)),
    st.builds(ir.MaskOp, axes=st.just(("x", "y")), conditions=st.lists(comparisons, max_size=2)
              .map(tuple), fill=floats, causal=st.booleans(), by_array=st.booleans()),
    st.builds(ir.ReduceOp, function=st.sampled_from(["sum", "mean", "max", "min", "logsumexp"]),
              axes=st.just(("x",))),
    st.builds(ir.CallOp, definition=names, instance=names, each=st.none() | names),
    st.just(ir.AddOp()), st.just(ir.DropoutOp(p=0.1)),
    st.builds(ir.ConstantOp, op=st.sampled_from(["+", "-", "/", "^"]), constant=floats,
              text=st.text(max_size=5), constant_first=st.booleans()),
    st.builds(ir.BinaryOp, function=st.sampled_from(["divide", "maximum", "minimum"])),
    st.just(ir.WhereOp()),
)
leaf_terms = st.one_of(
    st.builds(ir.Identity, dom=st.lists(arrays, max_size=2).map(tuple),
              cod=st.lists(arrays, max_size=2).map(tuple), span=spans),
    st.builds(ir.Rearrangement, dom=st.lists(arrays, max_size=2).map(tuple),
              cod=st.lists(arrays, max_size=2).map(tuple),
              mapping=st.lists(st.integers(0, 3), max_size=3).map(tuple)),
    st.builds(ir.Reindexing, dom=st.lists(arrays, max_size=1).map(tuple),
              cod=st.lists(arrays, max_size=1).map(tuple), eta=morphisms, span=spans),
    st.builds(ir.Broadcasted, dom=st.lists(arrays, max_size=2).map(tuple),
              cod=st.lists(arrays, max_size=1).map(tuple), op=operators, degree=shapes,
              inputs=st.lists(ports, max_size=2).map(tuple),
              params=st.lists(ports, max_size=1).map(tuple),
              outputs=st.lists(ports, max_size=1).map(tuple), span=spans),
)
terms: st.SearchStrategy[Any] = st.recursive(
    leaf_terms,
    lambda inner: st.one_of(
        st.builds(ir.Composed, dom=st.just(()), cod=st.just(()),
                  terms=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(ir.Product, dom=st.just(()), cod=st.just(()),
                  terms=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(ir.Block, dom=st.just(()), cod=st.just(()), title=st.text(max_size=8),
                  color=st.one_of(st.none(), st.text(max_size=7)), repeat=st.integers(1, 12),
                  shared=st.booleans(), body=inner),
        st.builds(ir.Scan, dom=st.just(()), cod=st.just(()), axis=axes,
                  carries=st.integers(0, 2), step=inner, step_name=st.one_of(st.none(), names)),
        st.builds(ir.Machine, dom=st.just(()), cod=st.just(()), axis=axes,
                  blocks=st.lists(st.integers(1, 8), min_size=1, max_size=4).map(tuple),
                  backward=st.booleans(), body=inner,
                  body_name=st.one_of(st.none(), names)),
    ),
    max_leaves=6)
definitions = st.builds(
    ir.Definition, name=names, doc=st.one_of(st.none(), st.text(max_size=20)),
    inputs=st.lists(st.builds(ir.Variable, name=names, array=arrays), max_size=2).map(tuple),
    outputs=st.lists(st.builds(ir.Variable, name=names, array=arrays), max_size=2).map(tuple),
    params=st.lists(st.builds(ir.Parameter, name=names, array=arrays,
                              init=st.sampled_from(["default", "normal", "zeros"]),
                              init_args=st.lists(floats, max_size=2).map(tuple), span=spans),
                    max_size=2).map(tuple),
    body=terms, span=spans)
ir_programs = st.builds(ir.Program, source=st.text(max_size=10),
                        doc=st.one_of(st.none(), st.text(max_size=20)),
                        axes=st.lists(axes, max_size=3).map(tuple),
                        definitions=st.lists(definitions, max_size=2).map(tuple))


@settings(max_examples=60, deadline=None)
@given(ir_programs)
def test_random_ir_values_round_trip(program: ir.Program) -> None:
    text = program.model_dump_json()
    assert ir.Program.model_validate_json(text) == program
    json.loads(text, parse_constant=_reject_constant)
    validate(json.loads(text), SCHEMA, SCHEMA)


def test_infinite_fill_round_trips_as_standard_json() -> None:
    program = ok("axis x, y = x\ndef f(S: R[x, y]) -> R[x, y] { return causal[x, y](S) }")
    text = program.model_dump_json()
    assert '"fill":"-Infinity"' in text
    again = ir.Program.model_validate_json(text)
    mask = next(t for t in ir.walk(again.definition("f").body) if isinstance(t, ir.Broadcasted))
    assert isinstance(mask.op, ir.MaskOp) and mask.op.fill == -math.inf
    assert again == program


# ---- the JSON Schema and a structural validator ---------------------------------------------

SCHEMA: dict[str, Any] = ir.Program.model_json_schema()


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> None:
    """A validator for the JSON Schema subset pydantic emits (jsonschema is not a dependency)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        validate(value, root["$defs"][name], root, where)
        return
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        if "discriminator" in schema:
            field = schema["discriminator"]["propertyName"]
            assert isinstance(value, dict) and field in value, f"{where}: no `{field}`"
            mapping = schema["discriminator"]["mapping"]
            assert value[field] in mapping, f"{where}: unknown {field} {value[field]!r}"
            target = mapping[value[field]]
            validate(value, {"$ref": target}, root, where)
            return
        failures = []
        for option in options:
            try:
                validate(value, option, root, where)
                return
            except AssertionError as error:
                failures.append(str(error))
        raise AssertionError(f"{where}: no option matches: {failures}")
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: not an integer"
    elif kind == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool), \
            f"{where}: not a number"
    elif kind is not None:
        assert isinstance(value, checks[kind]), f"{where}: {value!r} is not {kind}"
    if kind == "object":
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{where}: missing {name}"
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(properties)
            assert not extra, f"{where}: unexpected {extra}"
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], root, f"{where}.{name}")
    if kind == "array":
        prefix = schema.get("prefixItems")
        if prefix is not None:
            assert len(value) >= schema.get("minItems", 0)
            assert len(value) <= schema.get("maxItems", len(value))
            for index, (item, sub) in enumerate(zip(value, prefix, strict=False)):
                validate(item, sub, root, f"{where}[{index}]")
        elif "items" in schema:
            for index, item in enumerate(value):
                validate(item, schema["items"], root, f"{where}[{index}]")


def test_validator_rejects_what_the_schema_forbids() -> None:
    good = json.loads(ok("axis m = 2\ndef f(X: R[m]) -> R[m] { return relu(X) }").model_dump_json())
    validate(good, SCHEMA, SCHEMA)
    missing = dict(good)
    del missing["axes"]
    with pytest.raises(AssertionError, match="missing axes"):
        validate(missing, SCHEMA, SCHEMA)
    extra = {**good, "surprise": 1}
    with pytest.raises(AssertionError, match="unexpected"):
        validate(extra, SCHEMA, SCHEMA)
    wrong_kind = json.loads(json.dumps(good).replace('"elementwise"', '"elementwize"'))
    with pytest.raises(AssertionError, match="unknown kind"):
        validate(wrong_kind, SCHEMA, SCHEMA)


# ---- through the command line ---------------------------------------------------------------

GALLERY_LIKE = """\
\"\"\"Attention.\"\"\"
axis x
axis m = 32, h = 4, k = m / h
def attention(X: R[x, m]) -> R[x, m] {
    Q = linear[m -> h k](X, Wq)
    K = linear[m -> h k](X, Wk)
    V = linear[m -> h k](X, Wv)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)
    A = softmax[y](causal[x, y](S))
    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]
    return linear[h k -> m](O, Wo)
}
def layer(X: R[x, m]) -> R[x, m] {
    block "Layer" x2 { X = layernorm[m](X + attention(X), g, b) }
    return X
}
"""


def test_cli_ir_output_loads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "attention.ncd"
    source.write_text(GALLERY_LIKE)
    assert main(["ir", str(source)]) == 0
    out = capsys.readouterr().out
    program = ir.Program.model_validate_json(out)
    assert [d.name for d in program.definitions] == ["attention", "layer"]
    assert program == ir.Program.model_validate_json(program.model_dump_json())
    json.loads(out, parse_constant=_reject_constant)
    validate(json.loads(out), SCHEMA, SCHEMA)
    assert main(["ir", str(source), "attention", "-D", "m=64"]) == 0
    definition = ir.Definition.model_validate_json(capsys.readouterr().out)
    assert definition.name == "attention"
    assert ir.size_value(definition.inputs[0].array.shape.axis("m").size) == 64


def test_cli_schema_is_standard_json_and_validates(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ir", "--schema"]) == 0
    text = capsys.readouterr().out
    schema = json.loads(text, parse_constant=_reject_constant)
    assert schema["title"] == "Program" and "$defs" in schema
    assert set(schema["$defs"]) >= {"Broadcasted", "Scan", "Block", "StrideMorphism", "MaskOp"}
    program = ok(GALLERY_LIKE)
    validate(json.loads(program.model_dump_json()), schema, schema)
