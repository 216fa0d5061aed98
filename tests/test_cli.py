"""The command line: exit codes (0 ok, 1 diagnostics, 2 usage or I/O, 3 internal), the form
of the diagnostics, and no traceback for any input whatsoever."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ncd.cli import main

GOOD = """\
axis x
axis m = 8, n = 4
def f(X: R[x, m]) -> R[x, n] {
    return relu(linear[m -> n](X, W))
}
"""

BAD = """\
axis x
axis m = 8, n = 4
def f(X: R[x, m]) -> R[x, n] {
    return relu(Y)
}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.ncd"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.ncd"
    path.write_text(BAD)
    return path


# ---- exit codes and output -----------------------------------------------------------------


def test_check_ok(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", str(good)], capsys)
    assert code == 0 and err == ""
    assert "f(X: R[x, m]) -> R[x, n]" in out and "ok (1 definition)" in out
    code, out, _ = run(["check", "-q", str(good)], capsys)
    assert code == 0 and out == ""


def test_check_reports_diagnostics_with_exit_1(bad: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(bad.parent)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    code, out, err = run(["check", "bad.ncd"], capsys)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == "bad.ncd:4:17: error[E200]: unknown variable `Y`"
    assert lines[2] == "4 |     return relu(Y)"
    assert lines[3] == "  |                 ^"
    assert lines[-1] == "bad.ncd: 1 error"
    assert "\x1b[" not in err  # not a terminal: no colour


def test_check_several_files_exit_with_the_worst(good: Path, bad: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", str(good), str(bad)], capsys)
    assert code == 1
    assert "ok" in out and "E200" in err


def test_size_overrides(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["ir", str(good), "-D", "m=16", "-D", "x=3"], capsys)
    assert code == 0 and '"value": 16' in out
    # A size override naming no declared axis is a usage error, like a size that is not a
    # positive integer: the same exit code, with a did-you-mean.
    code, _, err = run(["check", str(good), "-D", "mm=3"], capsys)
    assert code == 2 and "E314" in err and "names no declared axis" in err
    assert "did you mean `m`?" in err
    code, _, err = run(["check", str(good), "-D", "m=0"], capsys)
    assert code == 2 and "positive integer" in err


@pytest.mark.parametrize("argv", [
    ["check", "-D", "m=abc", "GOOD"], ["check", "-D", "m=0", "GOOD"], ["check", "-D", "m", "GOOD"],
    ["check", "/no/such/file.ncd"], ["check", "EMPTY"], ["frobnicate"], [], ["ir"],
    ["render", "GOOD", "nosuch"], ["render", "GOOD", "-o", "out.bmp"],
    ["ir", "GOOD", "-o", "/no/such/folder/out.json"],
])
def test_usage_and_io_errors_exit_2(argv: list[str], good: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (good.parent / "empty").mkdir()
    argv = [str(good) if a == "GOOD" else str(good.parent / "empty") if a == "EMPTY" else a
            for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.strip() and "Traceback" not in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("ncd ")
    code, out, _ = run(["check", "--help"], capsys)
    assert code == 0 and "FILE" in out


def test_ir_to_a_file(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = good.parent / "out.json"
    code, out, _ = run(["ir", str(good), "-o", str(out_path)], capsys)
    assert code == 0 and out == ""
    assert out_path.read_text().lstrip().startswith("{")


def test_ir_of_a_bad_file_exits_1(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["ir", str(bad)], capsys)
    assert code == 1 and out == "" and "E200" in err


def test_as_a_subprocess(good: Path, bad: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    ok_run = subprocess.run([sys.executable, "-m", "ncd", "check", str(good)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert ok_run.returncode == 0
    bad_run = subprocess.run([sys.executable, "-m", "ncd", "check", str(bad)],
                             capture_output=True, text=True, env=env, timeout=60)
    assert bad_run.returncode == 1
    assert "error[E200]" in bad_run.stderr and "Traceback" not in bad_run.stderr


def test_empty_file_checks_and_defines_nothing(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.ncd"
    path.write_text("")
    code, out, _ = run(["check", str(path)], capsys)
    assert code == 0 and "ok (0 definitions)" in out


def test_render_of_an_empty_file_is_a_usage_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.ncd"
    path.write_text("")
    code, _, err = run(["render", str(path), "-o", str(tmp_path / "e.svg")], capsys)
    assert code == 2 and "defines nothing" in err


# ---- no traceback, whatever the input ---------------------------------------------------------


def check_bytes(data: bytes, folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = folder / "input.ncd"
    path.write_bytes(data)
    code, _, err = run(["check", "-q", str(path)], capsys)
    assert code in (0, 1, 2), f"exit {code}: {err}"
    assert "Traceback" not in err and "internal error" not in err
    if code == 1:
        assert "error[E" in err
    return code, err


HOSTILE = {
    "binary": bytes(range(256)) * 4,
    "nul": b"axis m = 4\x00",
    "latin1": "axis m = 4 # café".encode("latin-1"),
    "bom": b"\xef\xbb\xbfaxis m = 4\n",
    "huge": b"axis m = 4\n" + b"# padding\n" * 120_000,
    "nested_round": b"axis m = " + b"(" * 5000 + b"1" + b")" * 5000,
    "nested_mixed": b"def f(X: R[m]) -> R[m] { return " + b"relu([{" * 3000,
    "long_sum": b"axis m = 4\ndef f(X: R[m]) -> R[m] { return " + b" + ".join([b"X"] * 5000)
                + b" }",
    "long_neg": b"axis m = 4\ndef f(X: R[m]) -> R[m] { return " + b"-" * 5000 + b"X }",
    "long_product": b"axis m = 4\ndef f(X: R[m]) -> R[m] { Y[m] = "
                    + b" * ".join([b"X[m]"] * 3000) + b"\nreturn Y }",
    "many_statements": b"axis m = 4\ndef f(X: R[m]) -> R[m] {\n"
                       + b"X = relu(X)\n" * 12_000 + b"return X }",
    "long_line": b"axis m = 4 " + b" " * 200_000 + b"$",
    "unclosed_docstring": b'"""never closed\naxis m = 4',
    "unicode_names": "axis μ = 4\n".encode(),
    "control_chars": b"axis m = 4\x07\x1b[31m\n",
    "only_comment": b"# nothing else",
    "surrogate_escape": b"axis m = 4 \xed\xa0\x80",
    "huge_int": b"axis m = " + b"9" * 5000,
    "huge_repeat": b'axis m = 4\ndef f(X: R[m]) -> R[m] { block "b" x99999999999999999999 '
                   b"{ X = relu(X) }\nreturn X }",
    "self_import": b'import "input.ncd"\n',
    "huge_repeat_digits": b'axis m = 4\ndef f(X: R[m]) -> R[m] { block "b" x' + b"9" * 5000
                          + b" { X = relu(X) }\nreturn X }",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_never_crashes(name: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_bytes(HOSTILE[name], tmp_path, capsys)
    if name not in ("bom", "only_comment"):
        assert code == 1, err
    else:
        assert code == 0, err


def test_file_over_the_size_limit_is_refused(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_bytes(b"# x\n" * 300_000, tmp_path, capsys)
    assert code == 1 and "E103" in err


TOKENS = ["axis", "def", "return", "param", "block", "import", "from", "sum", "scan", "R", "N",
          "B", "X", "m", "x6", "(x)", ";", "->", "=", ",", ":", "(", ")", "[", "]", "{", "}",
          "+", "-", "*", "/", "//", ">=", "0", "1.5", '"t"', '"""d"""', "softmax", "linear",
          "relu", "\n", " ", "#c\n"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_soup_never_crashes(tokens: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    check_bytes(" ".join(tokens).encode(), tmp_path, capsys)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    check_bytes(data, tmp_path, capsys)


MODEL = """\
axis x, t
axis m = 8, h = 2, k = m / h, n = 4, v = 10, c = 3, w = 2
def attention(X: R[x, m]) -> R[x, m] {
    Q = linear[m -> h k](X, Wq)
    K = linear[m -> h k](X, Wk)
    V = linear[m -> h k](X, Wv)
    S[h, x, y] = sum(k) Q[x, h, k] * K[y, h, k] / sqrt(k)
    A = softmax[y](causal[x, y](S))
    O[x, h, k] = sum(y) A[h, x, y] * V[y, h, k]
    return linear[h k -> m](O, Wo)
}
def conv(X: R[c, x]) -> R[c] {
    P[c, p, w] = X[c, 2*p + w]
    return max[p, w](P)
}
def cell(H: R[m], X: R[n]) -> (R[m], R[m]) {
    Z = tanh(linear[m -> m](H, Wh) + linear[n -> m](X, Wx))
    return Z, Z
}
def rnn(H0: R[m], X: R[t, n]) -> (R[m], R[t, m]) { return scan[t](cell, H0, X) }
def two = attention ; attention
def emb(T: N[v][x]) -> R[x, m] {
    param E: R[v, m] = normal(0, 0.02)
    block "Layers" x2 color "#abc" { Z = layernorm[m](embedding[v -> m](T, E), g, b) }
    return Z
}
"""


def test_mutated_models_never_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Deletions, insertions and duplications of pieces of a real model."""
    rng = random.Random(20261122)
    codes = set()
    for _ in range(250):
        src = MODEL
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(src))
            choice = rng.random()
            if choice < 0.4:
                src = src[:at] + src[at + rng.randint(1, 6):]
            elif choice < 0.8:
                src = src[:at] + rng.choice(TOKENS) + src[at:]
            else:
                start = rng.randrange(len(src))
                src = src[:at] + src[start:start + rng.randint(1, 25)] + src[at:]
        code, _ = check_bytes(src.encode(), tmp_path, capsys)
        codes.add(code)
    assert codes <= {0, 1} and 1 in codes


# ---- render: formats, the overview, standalone TikZ --------------------------------------


@pytest.mark.parametrize(("suffix", "magic"), [
    ("svg", b"<svg"), ("png", b"\x89PNG\r\n\x1a\n"), ("pdf", b"%PDF-"), ("dot", b"digraph"),
])
def test_overview_as_a_picture(suffix: str, magic: bytes, good: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"overview.{suffix}"
    code, _, err = run(["render", str(good), "--overview", "-o", str(out)], capsys)
    assert code == 0 and err == ""
    data = out.read_bytes()
    assert magic in data[:400]
    if suffix == "pdf":
        import io

        import pypdf

        text = pypdf.PdfReader(io.BytesIO(data), strict=True).pages[0].extract_text()
        assert "linear m → n" in text and "relu" in text  # the nodes, as text


def test_dot_text_stays_dot_text(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, plain, _ = run(["render", str(good), "-f", "dot"], capsys)
    assert code == 0 and plain.startswith("digraph")
    code, overview, _ = run(["render", str(good), "--overview", "-f", "dot"], capsys)
    assert code == 0 and overview == plain


def test_pdf_of_the_diagram_has_its_labels_as_text(good: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import unicodedata

    import pypdf

    out = tmp_path / "f.pdf"
    for text in ("paths", "text"):
        code, _, _ = run(["render", str(good), "--text", text, "-o", str(out)], capsys)
        assert code == 0
        page = pypdf.PdfReader(io.BytesIO(out.read_bytes()), strict=True).pages[0]
        words = unicodedata.normalize("NFKC", page.extract_text()).split()
        assert {"x", "m", "n"} <= set(words)


def test_standalone_tikz_is_a_document(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, document, _ = run(["render", str(good), "-f", "tex", "--standalone"], capsys)
    assert code == 0
    assert r"\documentclass[border=0pt]{standalone}" in document
    assert document.rstrip().endswith(r"\end{document}")
    code, picture, _ = run(["render", str(good), "-f", "tex"], capsys)
    assert code == 0 and picture.startswith("% ncd diagram") and r"\documentclass" not in picture


@pytest.mark.parametrize("argv", [
    ["--overview", "-f", "tex"], ["--standalone", "-f", "svg"], ["--standalone", "-f", "pdf"],
])
def test_render_option_conflicts_are_usage_errors(argv: list[str], good: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["render", str(good), *argv], capsys)
    assert code == 2 and out == "" and err.startswith("ncd: error:")


def test_overview_without_a_layout_program_is_a_usage_error(
        good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from ncd.renderers import dot

    def missing() -> list[str]:
        raise dot.LayoutProgramMissing("no graphviz layout program found")

    monkeypatch.setattr(dot, "find_layout_program", missing)
    code, _, err = run(["render", str(good), "--overview", "-o", str(tmp_path / "o.svg")],
                       capsys)
    assert code == 2 and "graphviz" in err and not (tmp_path / "o.svg").exists()
