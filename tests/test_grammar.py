"""The concrete syntax: every construct of `grammar/ncd.lark` parses to the syntax tree it means,
with spans that point at the text."""

from __future__ import annotations

import pytest

from ncd import syntax as s
from ncd.parser import ParseFailure, grammar_text, parse


def items(src: str) -> tuple[s.Item, ...]:
    return parse(src, "t.ncd").items


def body(src: str) -> tuple[s.Statement, ...]:
    definition = items(src)[-1]
    assert isinstance(definition, s.Definition)
    return definition.body


def stmt(line: str) -> s.Statement:
    (statement,) = body("def f(X: R[]) -> R[] { " + line + " }")
    return statement


def rhs(line: str) -> s.Expr:
    statement = stmt(line)
    assert isinstance(statement, s.Assign | s.Equation)
    return statement.value


# ---- file structure ------------------------------------------------------------------------


def test_empty_file_is_an_empty_module() -> None:
    module = parse("", "e.ncd")
    assert module == s.Module("e.ncd", None, ())


def test_module_docstring_comments_and_whitespace() -> None:
    module = parse('"""A model.\n\n    Second line."""\n# a comment\naxis m = 4  # trailing\n',
                   "m.ncd")
    assert module.doc == "A model.\n\nSecond line."
    (axis,) = module.items
    assert isinstance(axis, s.AxisDecl) and axis.name.name == "m"
    assert (axis.span.line, axis.span.column) == (5, 6)


def test_comment_may_contain_anything() -> None:
    module = parse('# def f( """ { [ -> \naxis x', "c.ncd")
    assert [i.name.name for i in module.items if isinstance(i, s.AxisDecl)] == ["x"]


# ---- axes --------------------------------------------------------------------------------


def test_axis_declarations_integer_symbolic_and_derived() -> None:
    decls = items("axis x\naxis m = 512, h = 8, k = m / h\naxis f = 4 * m, q = x // 2 - 1")
    names = [d.name.name for d in decls if isinstance(d, s.AxisDecl)]
    assert names == ["x", "m", "h", "k", "f", "q"]
    x, m, _, k, f, q = decls
    assert isinstance(x, s.AxisDecl) and x.size is None
    assert isinstance(m, s.AxisDecl) and m.size == s.Number(512, True, m.size.span)
    assert isinstance(k, s.AxisDecl) and isinstance(k.size, s.BinOp) and k.size.op == "/"
    assert isinstance(f, s.AxisDecl) and isinstance(f.size, s.BinOp) and f.size.op == "*"
    # `x // 2 - 1` is `(x // 2) - 1`: floor division binds tighter than minus
    assert isinstance(q, s.AxisDecl) and isinstance(q.size, s.BinOp) and q.size.op == "-"
    assert isinstance(q.size.left, s.BinOp) and q.size.left.op == "//"


# ---- types and definitions ------------------------------------------------------------------


def test_datatypes_real_natural_boolean() -> None:
    (definition,) = items("def f(X: R[x, m], T: N[v][x], M: B[x, y], S: R[]) -> R[x] {}")
    assert isinstance(definition, s.Definition)
    types = [i.type for i in definition.inputs]
    assert [t.dtype for t in types] == ["R", "N", "B", "R"]
    assert [[a.name for a in t.axes] for t in types] == [["x", "m"], ["x"], ["x", "y"], []]
    assert types[1].bound == s.Var("v", types[1].bound.span)  # type: ignore[union-attr]
    assert types[0].bound is None


def test_definition_with_named_and_unnamed_outputs_and_docstring() -> None:
    (definition,) = items('def f(A: R[x], B: R[y]) -> (P: R[x], R[y]) {\n"""Doc."""\n'
                          "return A, B }")
    assert isinstance(definition, s.Definition)
    assert [i.name.name for i in definition.inputs] == ["A", "B"]
    assert [o.name.name if o.name else None for o in definition.outputs] == ["P", None]
    assert definition.doc == "Doc."
    (ret,) = definition.body
    assert isinstance(ret, s.Return) and [v.name for v in ret.values] == ["A", "B"]  # type: ignore[union-attr]
    assert (definition.name.span.line, definition.name.span.column) == (1, 5)


def test_definition_without_inputs() -> None:
    (definition,) = items("def const() -> R[m] { return X }")
    assert isinstance(definition, s.Definition) and definition.inputs == ()


# ---- statements --------------------------------------------------------------------------


def test_assignment_of_several_names() -> None:
    statement = stmt("P, Q = split[c -> a b](X)")
    assert isinstance(statement, s.Assign)
    assert [t.name for t in statement.targets] == ["P", "Q"]
    assert isinstance(statement.value, s.Call) and statement.value.name.name == "split"


def test_tensor_equation_with_sum_and_affine_indices() -> None:
    statement = stmt("Y[b, o, p] = sum(c, w) X[b, c, 2*p + w] * W[o, c, w] / sqrt(k)")
    assert isinstance(statement, s.Equation)
    assert statement.target.name == "Y"
    assert [i.name for i in statement.indices] == ["b", "o", "p"]
    assert [i.name for i in statement.summed or ()] == ["c", "w"]
    product = statement.value
    assert isinstance(product, s.BinOp) and product.op == "/"
    assert isinstance(product.right, s.Call) and product.right.name.name == "sqrt"
    times = product.left
    assert isinstance(times, s.BinOp) and times.op == "*"
    x = times.left
    assert isinstance(x, s.Indexed) and x.name.name == "X"
    third = x.items[2]
    assert isinstance(third, s.BinOp) and third.op == "+"
    assert isinstance(third.left, s.BinOp) and third.left.op == "*"


@pytest.mark.parametrize(("line", "indices"), [
    ("Y[p] = X[p, p]", 2),        # diagonal
    ("Y[j] = X[3, j]", 2),        # fixed index
    ("Y[i] = X[2*i + 1]", 1),     # offset and stride
    ("Y[i] = X[-i + 4]", 1),      # reversal
])
def test_equation_index_forms(line: str, indices: int) -> None:
    statement = stmt(line)
    assert isinstance(statement, s.Equation) and statement.summed is None
    assert isinstance(statement.value, s.Indexed) and len(statement.value.items) == indices


def test_equation_without_sum_keeps_summed_none_and_sum_call_is_an_operator() -> None:
    statement = stmt("Y = sum[x](X)")
    assert isinstance(statement, s.Assign)
    assert isinstance(statement.value, s.Call) and statement.value.name.name == "sum"
    assert statement.value.items == (s.Var("x", statement.value.items[0].span),)  # type: ignore[index,union-attr]


def test_bracket_items_arrow_comparison_keyword_plain() -> None:
    value = rhs("Y = op[m -> h k, x >= y + 1, p=0.1, bias, 0.5](X, W)")
    assert isinstance(value, s.Call)
    arrow, comparison, keyword, flag, number = value.items or ()
    assert isinstance(arrow, s.Arrow)
    assert [i.name for i in arrow.left] == ["m"] and [i.name for i in arrow.right] == ["h", "k"]
    assert isinstance(comparison, s.Comparison) and comparison.op == ">="
    assert isinstance(keyword, s.Keyword) and keyword.name.name == "p"
    assert keyword.value == s.Number(0.1, False, keyword.value.span)
    assert flag == s.Var("bias", flag.span)  # type: ignore[union-attr]
    assert isinstance(number, s.Number) and number.value == 0.5
    assert [a.name for a in value.args] == ["X", "W"]  # type: ignore[union-attr]


@pytest.mark.parametrize("op", [">=", "<=", "==", "!=", ">", "<"])
def test_every_comparison(op: str) -> None:
    value = rhs(f"Y = mask[x {op} y](S)")
    assert isinstance(value, s.Call)
    (condition,) = value.items or ()
    assert isinstance(condition, s.Comparison) and condition.op == op


def test_arithmetic_precedence_and_negation() -> None:
    value = rhs("Y = -A + B * C - D / 2")
    # ((-A) + (B * C)) - (D / 2)
    assert isinstance(value, s.BinOp) and value.op == "-"
    assert isinstance(value.right, s.BinOp) and value.right.op == "/"
    left = value.left
    assert isinstance(left, s.BinOp) and left.op == "+"
    assert isinstance(left.left, s.Neg) and isinstance(left.right, s.BinOp)


@pytest.mark.parametrize(("literal", "value", "is_int"), [
    ("3", 3, True), ("0.5", 0.5, False), ("1e-5", 1e-5, False), (".25", 0.25, False),
    ("2.", 2.0, False), ("1.5E3", 1500.0, False),
])
def test_numbers(literal: str, value: float, is_int: bool) -> None:
    number = rhs(f"Y = X * {literal}")
    assert isinstance(number, s.BinOp) and isinstance(number.right, s.Number)
    assert number.right.value == value and number.right.is_int is is_int


def test_param_declarations_with_and_without_initialiser() -> None:
    statements = body("def f(X: R[m]) -> R[m] { param W: R[m, n] = normal(0, 0.02)\n"
                      "param b: R[n] = zeros\nparam c: R[n]\nreturn X }")
    w, b, c, _ = statements
    assert isinstance(w, s.ParamDecl) and w.init is not None
    assert w.init.name.name == "normal" and [a.value for a in w.init.args] == [0, 0.02]  # type: ignore[union-attr]
    assert isinstance(b, s.ParamDecl) and b.init is not None and b.init.name.name == "zeros"
    assert b.init.args == ()
    assert isinstance(c, s.ParamDecl) and c.init is None
    assert [a.name for a in w.type.axes] == ["m", "n"]


def test_block_with_title_repeat_colour_and_shared() -> None:
    (block, _) = body('def f(X: R[m]) -> R[m] { block "Layer" x6 color "#ffcc00" shared '
                      "{ X = relu(X) }\nreturn X }")
    assert isinstance(block, s.BlockStmt)
    assert (block.title, block.repeat, block.color, block.shared) == ("Layer", 6, "#ffcc00", True)
    assert len(block.body) == 1 and isinstance(block.body[0], s.Assign)
    plain = body('def f(X: R[m]) -> R[m] { block "B" { block "inner" x2 { } }\nreturn X }')[0]
    assert isinstance(plain, s.BlockStmt)
    assert (plain.repeat, plain.color, plain.shared) == (1, None, False)
    assert isinstance(plain.body[0], s.BlockStmt) and plain.body[0].repeat == 2


def test_string_escapes_in_titles() -> None:
    (block, _) = body('def f(X: R[m]) -> R[m] { block "a \\"quoted\\" title" { }\nreturn X }')
    assert isinstance(block, s.BlockStmt) and block.title == 'a "quoted" title'


def test_scan_is_an_ordinary_call() -> None:
    value = rhs("H, Y = scan[t](cell, H0, X)")
    assert isinstance(value, s.Call) and value.name.name == "scan"
    assert [a.name for a in value.args] == ["cell", "H0", "X"]  # type: ignore[union-attr]


# ---- point-free and imports ------------------------------------------------------------------


def test_pointfree_composition_binds_looser_than_product() -> None:
    (item,) = items('def h = f ; g (x) k ; l """Doc."""')
    assert isinstance(item, s.PointFree) and item.doc == "Doc."
    expr = item.expr
    assert isinstance(expr, s.PfCompose) and len(expr.terms) == 3
    f, middle, last = expr.terms
    assert isinstance(f, s.PfName) and f.name.name == "f"
    assert isinstance(middle, s.PfTensor)
    assert [t.name.name for t in middle.terms] == ["g", "k"]  # type: ignore[union-attr]
    assert isinstance(last, s.PfName) and last.name.name == "l"


def test_pointfree_parentheses_and_unicode_tensor() -> None:
    (item,) = items("def h = (f ; g) ⊗ k")
    assert isinstance(item, s.PointFree)
    assert isinstance(item.expr, s.PfTensor)
    assert isinstance(item.expr.terms[0], s.PfCompose)


def test_imports() -> None:
    whole, some = items('import "lib/x.ncd"\nfrom "y.ncd" import f, g')
    assert isinstance(whole, s.Import) and whole.path == "lib/x.ncd" and whole.names is None
    assert isinstance(some, s.Import) and some.path == "y.ncd"
    assert [n.name for n in some.names or ()] == ["f", "g"]
    assert (some.names[1].span.line, some.names[1].span.column) == (2, 24)  # type: ignore[index]


# ---- spans and failures --------------------------------------------------------------------


def test_spans_are_one_based_and_end_exclusive() -> None:
    statement = body("def f(X: R[m]) -> R[m] {\n    Y = relu(X)\n    return Y\n}")[0]
    assert isinstance(statement, s.Assign)
    span = statement.value.span
    assert (span.line, span.column, span.end_line, span.end_column) == (2, 9, 2, 16)


@pytest.mark.parametrize(("src", "code"), [
    ("axis m = 4 $", "E100"),
    ("axis = 4", "E101"),
    ("def f(X: R[m]) -> R[m] {", "E102"),
    ("axis m = " + "(" * 100 + "1" + ")" * 100, "E103"),
    ("axis m = " + " + ".join(["1"] * 300), "E103"),
    ("axis m = 1e999", "E103"),
])
def test_syntax_failures_are_diagnostics(src: str, code: str) -> None:
    with pytest.raises(ParseFailure) as caught:
        parse(src, "bad.ncd")
    assert caught.value.diagnostic.code == code
    assert caught.value.diagnostic.span is not None


def test_grammar_text_names_every_terminal() -> None:
    grammar = grammar_text()
    # Every terminal has a name so that parse errors never show anonymous tokens.
    for keyword in ("IMPORT", "AXIS", "DEF", "RETURN", "PARAM", "BLOCK", "SUM", "ARROW",
                    "TENSOR", "COMPARE"):
        assert f"\n{keyword}:" in grammar
    import re

    from ncd.parser import TERMINAL_WORDS

    declared = set(re.findall(r"^([A-Z_]+):", grammar, flags=re.MULTILINE))
    assert declared - {"COMMENT", "WS"} <= set(TERMINAL_WORDS)


def test_outputs_may_be_named_like_datatypes() -> None:
    (definition,) = items("def f(B: R[m]) -> (A: R[m], B: B[m], N: N[v][m], R: R[m], R[m]) {}")
    assert isinstance(definition, s.Definition)
    assert [o.name.name if o.name else None for o in definition.outputs] == [
        "A", "B", "N", "R", None]
    assert [o.type.dtype for o in definition.outputs] == ["R", "B", "N", "R", "R"]
