"""The toolchain on programs too large for quadratic steps or deep recursion (no timings here:
`bench/toolchain.py` measures; these tests hold what the fast paths must keep)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from ncd.compilers.naming import Namespace

import ncd


def test_a_call_chain_deeper_than_the_recursion_limit_compiles() -> None:
    depth = sys.getrecursionlimit() + 200
    parts = ["axis b, m = 4\n", "def f0(X: R[b, m]) -> R[b, m] { return gelu(X) }\n"]
    parts += [f"def f{i}(X: R[b, m]) -> R[b, m] {{ return f{i - 1}(X) }}\n"
              for i in range(1, depth)]
    program = ncd.load("".join(parts))
    source = program.compile(f"f{depth - 1}")
    classes = [line.split("(")[0].removeprefix("class ") for line in source.splitlines()
               if line.startswith("class ")]
    assert classes == [f"F{i}" for i in range(depth)]  # callees first


def test_a_namespace_hands_out_the_smallest_free_suffix() -> None:
    names = Namespace()
    given = [names.fresh(hint) for hint in ("X", "X", "X_2", "X", "X", "Y", "X_1", "X")]
    # `X_2` taken as a name of its own is skipped by later `X`s; `X_1` asked for again is
    # `X_1_1`, not a clash.
    assert given == ["X", "X_1", "X_2", "X_3", "X_4", "Y", "X_1_1", "X_5"]
    reserved = Namespace({"Z", "Z_1", "Z_3"})
    assert [reserved.fresh("Z") for _ in range(3)] == ["Z_2", "Z_4", "Z_5"]


def test_definition_look_ups_follow_copies_of_a_program() -> None:
    program = ncd.load("axis m = 2\ndef f(X: R[m]) -> R[m] { return relu(X) }\n"
                       "def g(X: R[m]) -> R[m] { return f(X) }\n").ir
    assert program.definition("g").name == "g"
    fewer = program.model_copy(update={"definitions": program.definitions[:1]})
    assert fewer.definition("f").name == "f"
    assert "g" not in {d.name for d in fewer.definitions}
    try:
        fewer.definition("g")
    except KeyError:
        pass
    else:
        raise AssertionError("a copy without `g` still finds it")
    renamed = program.model_copy(update={"definitions": (
        program.definitions[0].model_copy(update={"name": "h"}), program.definitions[1])})
    assert renamed.definition("h").name == "h"
    # The index is not part of the model: equal programs stay equal, and the JSON is the same.
    again = ncd.load("axis m = 2\ndef f(X: R[m]) -> R[m] { return relu(X) }\n"
                     "def g(X: R[m]) -> R[m] { return f(X) }\n").ir
    assert program == again and hash(program) == hash(again)
    assert program.model_dump_json() == again.model_dump_json()


def test_many_blocks_export_what_later_statements_read() -> None:
    blocks = "".join(f'    block "B{i}" {{\n        Y{i} = relu(X)\n        X = X + Y{i}\n    }}\n'
                     for i in range(60))
    text = f"axis m = 2\ndef f(X: R[m]) -> R[m] {{\n{blocks}    return X + Y0\n}}\n"
    program = ncd.load(text)
    source = program.compile()
    assert source.count("F.relu(") == 60
    assert program.render(collapse_depth=0).startswith("<svg")


def test_import_ncd_loads_neither_the_ir_nor_the_parser() -> None:
    probe = ("import sys, ncd\n"
             "print(sorted(m for m in sys.modules if m.startswith(('ncd.', 'pydantic', 'lark'))))\n"
             "ncd.load\n"
             "print('ncd.api' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    loaded, api = done.stdout.splitlines()
    assert loaded == "[]"
    assert api == "True"


def _nodes(value: object) -> list[Any]:
    """Every IR node in `value`, itself included, parents first."""
    from ncd.ir import Node

    if isinstance(value, tuple):
        return [node for item in value for node in _nodes(item)]
    if not isinstance(value, Node):
        return []
    return [value, *(node for name in type(value).model_fields
                     for node in _nodes(getattr(value, name)))]


def test_checking_a_gallery_file_builds_no_validator() -> None:
    """The checker makes its nodes from checked parts without validating them again, so a
    check of attention.ncd builds no pydantic validator: pydantic's plugins (a scan of the
    installed packages' entry points) are not loaded at start-up."""
    probe = ("import sys, ncd\n"
             "ncd.load(sys.argv[1])\n"
             "print('pydantic.plugin._loader' in sys.modules)\n")
    attention = str(Path(__file__).resolve().parent.parent / "gallery" / "attention.ncd")
    done = subprocess.run([sys.executable, "-c", probe, attention], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "False"


def _spans(value: object) -> list[object]:
    """Every `Span` in a syntax tree (dataclasses, tuples)."""
    import dataclasses

    from ncd.ir import Span

    if isinstance(value, Span):
        return [value]
    if isinstance(value, tuple):
        return [span for item in value for span in _spans(item)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [span for f in dataclasses.fields(value)
                for span in _spans(getattr(value, f.name))]
    return []


def test_nodes_made_without_validation_are_the_validated_ones() -> None:

    from ncd import ir
    from ncd.context import array, port, rearrangement_map, shape
    from ncd.parser import parse

    b = ir.Axis(name="b", size=ir.SizeConst(value=4))
    m = ir.Axis(name="m", size=ir.SizeSym(name="m"))
    made: list[ir.Node] = [
        shape([b, m]), shape([]), array(ir.REALS, [b, m]),
        rearrangement_map(shape([b, m]), shape([m, b])),
        port(array(ir.REALS, [b, m]), ["m"], shape([b]), "X"),
        port(array(ir.Datatype(kind="B"), [m]), [], shape([m]), None),
    ]
    gallery = Path(__file__).resolve().parent.parent / "gallery"
    text = (gallery / "attention.ncd").read_text()
    terms = [term for program in (ncd.load(text), ncd.load(gallery / "transformer.ncd"))
             for definition in program.ir.definitions for term in ir.walk(definition.body)
             if isinstance(term, (ir.Broadcasted, ir.Identity, ir.Rearrangement, ir.Composed,
                                  ir.Product))]
    assert len(terms) > 5 and any(isinstance(term, ir.Broadcasted) and
                                  isinstance(term.op, ir.CallOp) for term in terms)
    assert {type(term) for term in terms} == {ir.Broadcasted, ir.Identity, ir.Rearrangement,
                                              ir.Composed, ir.Product}
    made.extend(terms)
    # every node of the checked programs: definitions, variables, parameters, operators, axes,
    # sizes, each made by the checker, most without validation
    every = {id(node): node for program in (ncd.load(text), ncd.load(gallery / "moe.ncd"))
             for node in _nodes(program.ir)}
    kinds = {type(node) for node in every.values()}
    assert {ir.Program, ir.Definition, ir.Variable, ir.Parameter, ir.CallOp, ir.Axis,
            ir.SizeConst, ir.LinearOp, ir.EinsumOp, ir.Reindexing, ir.MaskOp, ir.Comparison,
            ir.SoftmaxOp, ir.ElementwiseOp, ir.Datatype} <= kinds, kinds
    spans = _spans(parse(text, "attention.ncd"))
    assert len(spans) > 50
    made.extend(spans)  # type: ignore[arg-type]  # spans are nodes too
    for node in made:
        assert node.model_fields_set == _same_when_validated(node).model_fields_set
    for node in every.values():
        # (the JSON of a program or a call leaves out some defaults, whose fields are then not
        # set in a node read from it: the sets of fields set are not compared)
        _same_when_validated(node)


def _same_when_validated(node: Any) -> Any:
    """The node validation makes from `node`'s JSON, checked to be the same as `node`."""
    again = type(node).model_validate(node.model_dump())
    assert node == again and hash(node) == hash(again)
    assert repr(node) == repr(again)
    assert node.model_dump_json() == again.model_dump_json()
    assert list(node.__dict__) == list(type(node).model_fields)
    return again


def test_the_precomputed_parser_tables_are_those_of_the_grammar() -> None:
    """`ncd/parser_tables.py` is made by `python -m ncd.parser`; a changed grammar (or lark)
    needs them made again (until then the parser computes its tables at start-up)."""
    from pathlib import Path

    from ncd import parser, parser_tables

    assert parser_tables.KEY == parser.tables_key(parser.grammar_text()), \
        "the grammar changed: run `python -m ncd.parser` to write ncd/parser_tables.py again"
    built = parser.build_parser(parser.grammar_text())
    for path in sorted((Path(__file__).resolve().parent.parent / "gallery").glob("*.ncd")):
        text = path.read_text()
        assert parser._parser().parse(text) == built.parse(text), path.name


def test_a_check_leaves_the_collector_on_and_frozen_objects_frozen() -> None:
    import gc

    text = "axis m = 2\ndef f(X: R[m]) -> R[m] { return relu(X) }\n"
    assert gc.isenabled()
    ncd.load(text)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    marker = [text]  # a container the collector tracks, frozen with the rest
    gc.freeze()  # as a server might before it forks: the check must not unfreeze them
    try:
        ncd.load(text)
        # Still in the permanent generation, which no generation's list holds. (The number
        # of frozen objects may fall: a frozen object that a bounded cache lets go is freed
        # by its reference count, as any object is.)
        assert gc.isenabled() and gc.get_freeze_count() > 0
        assert not any(tracked is marker for tracked in gc.get_objects())
    finally:
        gc.unfreeze()


def _same_tree(fast: object, slow: object) -> bool:
    """Equal trees, and equal tokens down to their types and every position."""
    from lark import Token, Tree

    if isinstance(slow, Token):
        return isinstance(fast, Token) and str(fast) == str(slow) and all(
            getattr(fast, slot) == getattr(slow, slot) for slot in Token.__slots__)
    if isinstance(slow, Tree):
        return isinstance(fast, Tree) and type(fast) is type(slow) and \
            fast.data == slow.data and len(fast.children) == len(slow.children) and \
            all(_same_tree(a, b) for a, b in zip(fast.children, slow.children, strict=True))
    return fast is slow is None


def test_the_parse_loop_builds_lark_s_tree_and_leaves_errors_to_lark() -> None:
    """`ncd.lalr_driver` parses with lark's tables in a loop of its own: the same tree, token
    for token, as lark's parse; on a text lark refuses it gives up, so that lark's error
    makes the diagnostic."""
    from pathlib import Path

    from ncd import lalr_driver, parser

    root = Path(__file__).resolve().parent.parent
    texts = [path.read_text() for path in sorted([*(root / "gallery").glob("*.ncd"),
                                                  *(root / "ncd" / "std").glob("*.ncd")])]
    texts.append('"""Doc\n\n  more."""\r\naxis b, m = 4  # c\n\ndef f(X: R[b, m]) -> R[b, m] {\n'
                 '    block "T\\u00e9" x2 color "#fff" {\n        X = X + -1.5e3 * X // 2\n'
                 "    }\n    return X\n}\n")
    lark_parser = parser._parser()
    for text in texts:
        assert _same_tree(lalr_driver.parse(lark_parser, text), lark_parser.parse(text))
    # The loop runs every reduction of the grammar itself (lark's child filters, `?rule`
    # expansion, the tree class), and passes single values up without a node: the trees
    # above come from those paths, not from lark's callbacks.
    tables = lalr_driver._prepare(lark_parser)
    assert tables is not None
    actions = [action for row in tables.actions.values() for action in row.values()]
    reductions = [a for a in actions if isinstance(a, lalr_driver._Reduction)]
    assert reductions and all(a.build is None for a in reductions)
    assert any(a.include is not None for a in reductions)
    assert any(isinstance(a, str) for a in actions)
    for wrong in ("axis m = 4 $", "axis = 4", "def f(X: R[m]) -> R[m] {", "axis m = 4\n)"):
        assert lalr_driver.parse(lark_parser, wrong) is None
