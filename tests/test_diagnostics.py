"""Every diagnostic code of the catalogue is triggered by some input, and reads as a person
should see it: `path:line:col: error[CODE]: message`, a caret excerpt, notes and a hint.

The full text of each case is compared with a golden file in `tests/golden/diagnostics/`.
`NCD_ACCEPT_GOLDENS=1 pytest tests/test_diagnostics.py` rewrites the goldens (refused when
`CI=true`); on a mismatch the actual text is written beside the golden as `NAME.actual.txt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from goldens import compare_golden

import ncd
from ncd.diagnostics import CATALOGUE, Diagnostic, NcdError, format_diagnostic
from ncd.ir import Span

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"


@dataclass(frozen=True)
class Case:
    """`case.ncd` holds `source` (text, or bytes); `files` are written beside it."""

    name: str
    code: str
    at: str | None  # "line:col" of the first diagnostic with `code`; None: no location
    source: str | bytes
    files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    data: tuple[str, str] | None = None
    """A data file (name, text) for the last training set-up of the source: read as
    `ncd train` reads it."""
    grad: str | None = None  # the definition whose backward definition is then built


AXES = "axis x\naxis m = 8, n = 4, v = 10\n"
TRAINABLE = "def net(X: R[x, m]) -> R[x, n] { return linear[m -> n](X, W) }\n"

CASES: list[Case] = [
    # ---- input and syntax
    Case("E100_unexpected_character", "E100", "2:12", "axis m = 8\naxis n = 4 $ 2\n"),
    Case("E100_unterminated_string", "E100", "1:8", 'import "lib.ncd\n'),
    Case("E101_unexpected_token", "E101", "1:6", "axis = 4\n"),
    Case("E101_missing_comma", "E101", "3:45", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return add(X X) }\n"),
    Case("E101_missing_result_type", "E101", "1:19", "def f(X: R[x, m]) { return X }\n"),
    Case("E102_unclosed_brace", "E102", "3:30", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    return relu(X)\n"),
    Case("E102_end_of_statement", "E102", "1:9", "axis m ="),
    Case("E103_nesting", "E103", "1:74", "axis m = " + "(" * 70 + "1" + ")" * 70 + "\n"),
    Case("E103_long_chain", "E103", "3:39", AXES + "def f(X: R[x, m]) -> R[x, m] { return "
         + " + ".join(["X"] * 120) + " }\n"),
    Case("E103_huge_number", "E103", "3:43", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return X * 1e999 }\n"),
    Case("E104_nul_bytes", "E104", "1:11", b"axis m = 4\x00\n"),
    Case("E104_not_utf8", "E104", "1:17", b"axis m = 4 # caf\xe9\n"),
    # ---- names
    Case("E200_unknown_variable", "E200", "4:14", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    Y = relu(Z)\n    return Y\n}\n"),
    Case("E200_did_you_mean", "E200", "5:12", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    Hidden = relu(X)\n    return Hiden\n}\n"),
    Case("E201_unknown_axis", "E201", "3:15", AXES +
         "def f(X: R[x, mm]) -> R[x, m] { return X }\n"),
    Case("E202_unknown_operator", "E202", "3:39", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return softmx[m](X) }\n"),
    Case("E203_duplicate_definition", "E203", "4:5", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return X }\n"
         "def f(X: R[x, m]) -> R[x, m] { return relu(X) }\n"),
    Case("E204_duplicate_axis", "E204", "3:6", AXES + "axis m = 16\n"),
    Case("E205_missing_import", "E205", "1:1", 'import "missing.ncd"\n'),
    Case("E205_name_not_defined", "E205", "1:26", 'from "lib.ncd" import g, nothing\n',
         files={"lib.ncd": "axis m = 4\ndef g(X: R[m]) -> R[m] { return X }\n"}),
    Case("E205_missing_std_file", "E205", "1:1", 'import "std/atention.ncd"\n'),
    Case("E205_outside_root", "E205", "1:1", 'import "../outside.ncd"\n'),
    Case("E206_import_cycle", "E206", "1:1", 'import "a.ncd"\n',
         files={"a.ncd": 'import "b.ncd"\n', "b.ncd": 'import "a.ncd"\n'}),
    Case("E207_wire_as_parameter", "E207", "5:30", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    Y = relu(X)\n    return linear[m -> m](X, Y)\n"
         "}\n"),
    Case("E207_number_alone", "E207", "3:39", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return 2 }\n"),
    # ---- types, sizes and alignment
    Case("E300_index_sizes_differ", "E300", "4:17", AXES +
         "def f(X: R[m, n]) -> R[m] {\n    D[i] = X[i, i]\n    return D\n}\n"),
    Case("E300_declared_axis_gets_other_size", "E300", "3:51", AXES +
         "def f(X: R[x, m]) -> R[x, n] { return rename[m -> n](X) }\n"),
    Case("E301_axes_do_not_align", "E301", "3:39", AXES +
         "def f(X: R[x, m]) -> R[x, n] { return relu(X) }\n"),
    Case("E301_missing_axis_for_operator", "E301", "3:47", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return softmax[n](X) }\n"),
    Case("E302_datatype_mismatch", "E302", "3:41", AXES +
         "def f(T: N[v][x]) -> R[x] { return relu(T) }\n"),
    Case("E303_wrong_number_of_arguments", "E303", "3:39", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return relu(X, X) }\n"),
    Case("E303_wrong_number_of_names", "E303", "4:5", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    A, B = relu(X)\n    return A\n}\n"),
    Case("E304_index_out_of_bounds", "E304", "3:21", "axis m = 8\n"
         "def f(X: R[m]) -> R[m] {\n    Y[m] = X[m] * X[m + 1]\n    return Y\n}\n"),
    Case("E304_window_larger_than_array", "E304", "3:7", "axis x = 2, w = 5\n"
         "def f(X: R[x]) -> R[w] {\n    P[p, w] = X[p + w]\n    return sum[p](P)\n}\n"),
    Case("E304_symbolic_window_too_long", "E304", "5:21",
         "axis x\naxis w = 3\naxis p = (x - w) // 2 + 2\n"
         "def f(X: R[x], K: R[w]) -> R[p] {\n    Y[p] = sum(w) X[2*p + w] * K[w]\n"
         "    return Y\n}\n"),
    Case("E305_index_size_unknown", "E305", "4:21", AXES +
         "def f(X: R[x]) -> R[x] {\n    Y[p] = sum(q) X[p + q]\n    return Y\n}\n"),
    Case("E306_index_not_affine", "E306", "4:17", AXES +
         "def f(X: R[m]) -> R[m] {\n    Y[p, q] = X[p * q]\n    return Y\n}\n"),
    Case("E307_missing_target_axes", "E307", "3:39", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return softmax(X) }\n"),
    Case("E307_unknown_option", "E307", "3:47", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return dropout[q=0.1](X) }\n"),
    Case("E307_eps_not_positive", "E307", "3:56", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return layernorm[m, eps=-1](X) }\n"),
    Case("E307_dropout_probability", "E307", "3:49", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return dropout[p=1.5](X) }\n"),
    Case("E308_missing_return", "E308", "3:5", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    Y = relu(X)\n}\n"),
    Case("E308_too_many_results", "E308", "4:5", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    return X, X\n}\n"),
    Case("E309_not_divisible", "E309", "1:19", "axis m = 512, k = m / 3\n"),
    Case("E309_not_positive", "E309", "1:6", "axis m = 4 - 4\n"),
    Case("E310_block_changes_type", "E310", "4:11", AXES +
         'def f(X: R[x, m]) -> R[x, m] {\n    block "Layer" x2 {\n'
         "        X = linear[m -> n](X, W)\n    }\n    return X\n}\n"),
    Case("E310_unknown_colour", "E310", "4:25", AXES +
         'def f(X: R[x, m]) -> R[x, m] {\n    block "Layer" color "purpl" {\n'
         "        X = relu(X)\n    }\n    return X\n}\n"),
    Case("E311_scan_needs_a_definition", "E311", "4:53", AXES +
         "axis t\ndef f(H: R[m], X: R[t, m]) -> R[m] { return scan[t](cel, H, X) }\n"),
    Case("E318_machine_blocks_do_not_cut_the_axis", "E318", "4:50", AXES +
         "def g(X: R[m]) -> R[m] { return tanh(X) }\n"
         "def f(X: R[x, m]) -> R[x, m] { return machine[m, 4, 2](g, X) }\n"),
    Case("E312_unknown_initialiser", "E312", "4:24", AXES +
         "def f(X: R[x, m]) -> R[x, n] {\n    param W: R[m, n] = gaussian(0, 1)\n"
         "    return linear[m -> n](X, W)\n}\n"),
    Case("E312_negative_standard_deviation", "E312", "4:31", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    param W: R[m] = normal(0, -1)\n"
         "    return X + W\n}\n"),
    Case("E312_uniform_low_above_high", "E312", "4:21", AXES +
         "def f(X: R[x, m]) -> R[x, m] {\n    param W: R[m] = uniform(5, 1)\n"
         "    return X + W\n}\n"),
    Case("E312_xavier_gain_not_positive", "E312", "4:31", AXES +
         "def f(X: R[x, m]) -> R[x, n] {\n    param W: R[m, n] = xavier(0)\n"
         "    return linear[m -> n](X, W)\n}\n"),
    Case("E313_index_twice_in_result", "E313", "4:10", AXES +
         "def f(X: R[m]) -> R[m] {\n    Y[i, i] = X[i]\n    return X\n}\n"),
    Case("E313_indexing_outside_equation", "E313", "3:39", AXES +
         "def f(X: R[x, m]) -> R[x, m] { return X[x, m] }\n"),
    Case("E314_unknown_axis_override", "E314", None, AXES, sizes={"mm": 16}),
    Case("E314_non_positive_override", "E314", None, AXES, sizes={"m": 0}),
    # ---- training set-ups and their data
    Case("E202_unknown_model", "E202", "4:18", AXES + TRAINABLE +
         "train t { model: nett  loss: cross_entropy[n]  optimiser: sgd() }\n"),
    Case("E315_class_axis_not_in_output", "E315", "4:43", AXES + TRAINABLE +
         "train t { model: net  loss: cross_entropy[m]  optimiser: sgd() }\n"),
    Case("E315_unknown_hyper_parameter", "E315", "6:21", AXES + TRAINABLE +
         "train t {\n    model: net  loss: mse\n    optimiser: adam(learning_rate = 0.1)\n}\n"),
    Case("E316_label_out_of_range", "E316", "2:17", AXES + TRAINABLE +
         "train t { model: net  loss: cross_entropy[n]  optimiser: sgd() }\n",
         data=("data.csv", "f1,f2,f3,f4,f5,f6,f7,f8,label\n1,2,3,4,5,6,7,8,4\n")),
    # ---- derivatives
    Case("E320_no_reverse_rule", "E320", "5:5", AXES + "axis e = 3\n"
         "def f(X: R[x, m], S: N[x][e], D: N[m][e]) -> R[e] {\n    Y[e] = X[S[e], D[e]]\n"
         "    return Y\n}\n", grad="f"),
]


def run_case(case: Case, folder: Path) -> tuple[tuple[Diagnostic, ...], str]:
    """Load the case from `folder` (the current directory); the diagnostics and their text."""
    for name, content in case.files.items():
        (folder / name).write_text(content, encoding="utf-8")
    path = folder / "case.ncd"
    if isinstance(case.source, bytes):
        path.write_bytes(case.source)
    else:
        path.write_text(case.source, encoding="utf-8")
    try:
        program = ncd.load(Path("case.ncd"), sizes=case.sizes or None)
        if case.data is not None:
            from ncd.datasets import layout, read_dataset

            name, text = case.data
            (folder / name).write_text(text, encoding="utf-8")
            training = program.ir.trainings[-1]
            read_dataset(Path(name), layout(program.ir, training))
        if case.grad is not None:
            program.grad(case.grad)
    except NcdError as error:
        sources = {**error.sources}
        if case.data is not None:
            sources[case.data[0]] = case.data[1]
        return error.diagnostics, NcdError(error.diagnostics, sources).render() + "\n"
    pytest.fail(f"{case.name}: the input checked without a diagnostic")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_diagnostic(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found, rendered = run_case(case, tmp_path)
    matching = [d for d in found if d.code == case.code]
    assert matching, f"expected {case.code}, got {[d.code for d in found]}"
    first = matching[0]
    if case.at is None:
        assert first.span is None or first.span.line == 1
    else:
        assert first.span is not None
        assert f"{first.span.line}:{first.span.column}" == case.at
    # one cause, one diagnostic: a case reports only its own code
    assert {d.code for d in found} == {case.code}, [d.code for d in found]
    # the form every diagnostic takes
    for diagnostic in found:
        head = f"error[{diagnostic.code}]: {diagnostic.message}"
        assert head in rendered
        if diagnostic.span is not None:
            assert f"{diagnostic.span}: {head}" in rendered
    compare_golden(GOLDEN / f"{case.name}.txt", rendered)


def test_every_code_of_the_catalogue_has_a_case() -> None:
    assert {case.code for case in CASES} == set(CATALOGUE)


def test_no_stale_goldens() -> None:
    names = {case.name for case in CASES}
    goldens = {p.name.removesuffix(".txt") for p in GOLDEN.glob("*.txt")
               if not p.name.endswith(".actual.txt")}
    assert goldens == names


def test_case_names_are_unique() -> None:
    assert len({case.name for case in CASES}) == len(CASES)


# ---- the formatter itself ---------------------------------------------------------------


def test_format_has_location_excerpt_caret_note_and_hint() -> None:
    from ncd.diagnostics import Note

    source = "axis m = 4\ndef f(X: R[m]) -> R[m] { return relu(Y) }\n"
    span = Span(file="a.ncd", line=2, column=38, end_line=2, end_column=39)
    other = Span(file="a.ncd", line=1, column=6, end_line=1, end_column=7)
    text = format_diagnostic(
        Diagnostic("E200", "unknown variable `Y`", span, hint="did you mean `X`?",
                   notes=(Note(other, "declared here"), Note(None, "free note"))),
        {"a.ncd": source})
    assert text.splitlines() == [
        "a.ncd:2:38: error[E200]: unknown variable `Y`",
        "  |",
        "2 | def f(X: R[m]) -> R[m] { return relu(Y) }",
        "  |                                      ^",
        "a.ncd:1:6: note: declared here",
        "  |",
        "1 | axis m = 4",
        "  |      -",
        "  = note: free note",
        "  = hint: did you mean `X`?",
    ]


def test_format_with_color_and_without_location() -> None:
    text = format_diagnostic(Diagnostic("E314", "bad override", None), {}, color=True)
    assert text.startswith("\x1b[1mncd: \x1b[31merror[E314]")
    assert "bad override" in text


def test_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="E999"):
        Diagnostic("E999", "no such code", None)


def test_excerpt_of_tabs_and_control_characters() -> None:
    source = "\taxis\x07 = 4\n"
    span = Span(file="t.ncd", line=1, column=2, end_line=1, end_column=6)
    text = format_diagnostic(Diagnostic("E101", "x", span), {"t.ncd": source})
    lines = text.splitlines()
    assert lines[2] == "1 |     axis? = 4"
    assert "\x07" not in text


# ---- the accept switch ------------------------------------------------------------------


def test_golden_mismatch_writes_actual_and_accept_rewrites(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "x.txt"
    monkeypatch.delenv("NCD_ACCEPT_GOLDENS", raising=False)
    golden.write_text("old\n")
    with pytest.raises(pytest.fail.Exception, match="differs"):
        compare_golden(golden, "new\n")
    assert (tmp_path / "x.actual.txt").read_text() == "new\n"
    monkeypatch.setenv("NCD_ACCEPT_GOLDENS", "1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="refused"):
        compare_golden(golden, "new\n")
    assert golden.read_text() == "old\n"
    monkeypatch.delenv("CI")
    compare_golden(golden, "new\n")
    assert golden.read_text() == "new\n"
    assert not (tmp_path / "x.actual.txt").exists()


# ---- several errors in one file --------------------------------------------------------------


FIVE_ERRORS = """\
axis x
axis m = 8, n = 4
axis m = 16

def a(X: R[x, m]) -> R[x, m] {
    return relu(Missing)
}

def b(X: R[x, m]) -> R[x, n] {
    Y = softmax[q](X)
    Z = linear[m -> n](X, W)
    return Z
}

def c(X: R[x, m]) -> R[x, n] {
    return tanh(X)
}

def d(X: R[x, m]) -> R[x, m] {
    return gelu(X, X)
}
"""


def test_five_independent_errors_are_all_reported() -> None:
    found = diagnostics_of(FIVE_ERRORS)
    where = [(d.code, d.span.line, d.span.column) for d in found if d.span is not None]
    assert where == [
        ("E204", 3, 6),    # axis declared twice
        ("E200", 6, 17),   # unknown variable
        ("E301", 10, 17),  # softmax over an axis X lacks (the next statement still checks)
        ("E301", 16, 12),  # result axes
        ("E303", 20, 12),  # wrong number of arguments
    ]
    assert len(found) == 5


def test_error_in_a_called_definition_is_reported_once() -> None:
    src = ("axis m = 4\ndef g(X: R[m]) -> R[m] { return relu(Nope) }\n"
           "def f(X: R[m]) -> R[m] { return g(X) }\n")
    found = diagnostics_of(src)
    assert [(d.code, d.span.line) for d in found if d.span] == [("E200", 2)]


def test_statement_after_error_is_still_checked() -> None:
    src = ("axis m = 4, n = 3\ndef f(X: R[m]) -> R[m] {\n  A = relu(Nope)\n  B = A + X\n"
           "  C = softmax[n](X)\n  return X\n}\n")
    found = diagnostics_of(src)
    # B depends on the failed A: no second report; C is independent: reported
    assert [(d.code, d.span.line) for d in found if d.span] == [("E200", 3), ("E301", 5)]


def diagnostics_of(src: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(NcdError) as caught:
        ncd.load(src)
    return caught.value.diagnostics
