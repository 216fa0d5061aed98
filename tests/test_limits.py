"""Resource limits: input that is too big, too deep or too large in size gets a located E103,
E309 or E310 quickly, never a hang, a RecursionError or a memory blow-up."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import ncd
from ncd.cli import main
from ncd.diagnostics import Diagnostic, NcdError
from ncd.loader import MAX_IMPORT_DEPTH
from ncd.parser import MAX_EXPRESSION_DEPTH, MAX_NESTING, MAX_SOURCE_BYTES
from ncd.statements import MAX_REPEAT, MAX_STATEMENTS

HEAD = "axis m = 3\n"


@contextmanager
def bounded(seconds: float, megabytes: float) -> Iterator[None]:
    """The block finishes within `seconds` and allocates at most `megabytes` at its peak."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    assert peak < megabytes, f"allocated {peak:.0f} MB"


def rejected(src: str, code: str) -> Diagnostic:
    with pytest.raises(NcdError) as caught:
        ncd.load(src)
    found = [d for d in caught.value.diagnostics if d.code == code]
    assert found, caught.value.render()
    assert all(d.span is not None for d in caught.value.diagnostics)
    return found[0]


def definition(body: str) -> str:
    return HEAD + "def f(X: R[m]) -> R[m] {\n" + body + "\n}\n"


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 100_000])
def test_bracket_nesting(depth: int) -> None:
    with bounded(5, 50):
        diagnostic = rejected(definition("return " + "(" * depth + "X" + ")" * depth), "E103")
    assert diagnostic.span is not None and diagnostic.span.line == 3


def test_nested_blocks() -> None:
    body = 'block "b" {' * (MAX_NESTING + 5) + "Y = relu(X)" + "}" * (MAX_NESTING + 5)
    with bounded(5, 50):
        rejected(definition(body + "\nreturn Y"), "E103")


@pytest.mark.parametrize("operator", [" + ", " * ", " - "])
def test_long_expression_chains(operator: str) -> None:
    with bounded(10, 200):
        diagnostic = rejected(definition("return " + operator.join(["X"] * 3000)), "E103")
    assert str(MAX_EXPRESSION_DEPTH) in diagnostic.message


def test_long_negation_chain() -> None:
    with bounded(5, 100):
        rejected(definition("return " + "-" * 5000 + "X"), "E103")


def test_number_of_statements() -> None:
    body = "".join(f"  Y{i} = relu(X)\n" for i in range(MAX_STATEMENTS + 1)) + "  return X"
    with bounded(30, 400):
        diagnostic = rejected(definition(body), "E103")
    assert f"the limit is {MAX_STATEMENTS}" in diagnostic.message


def test_repetition_beyond_the_limit_is_refused_where_written() -> None:
    with bounded(5, 50):
        diagnostic = rejected(definition('block "b" x1000000000 { X = relu(X) }\nreturn X'),
                              "E310")
    assert diagnostic.span is not None and (diagnostic.span.line, diagnostic.span.column) == (3, 1)
    rejected(definition('block "b" x' + "9" * 5000 + " { X = relu(X) }\nreturn X"), "E103")


def test_many_repetitions_are_neither_drawn_nor_compiled_one_by_one() -> None:
    """x10000 (the limit) is drawn as one box and compiled as a loop over a module list."""
    def outputs(repeat: int) -> tuple[str, str]:
        program = ncd.load(definition(f'block "Layer" x{repeat} {{ X = layernorm[m](X, g) }}\n'
                                      "return X"))
        return program.render(), program.compile()

    with bounded(20, 300):
        svg_small, code_small = outputs(2)
        svg_large, code_large = outputs(MAX_REPEAT)
    assert abs(len(svg_large) - len(svg_small)) < 2000
    assert abs(len(code_large) - len(code_small)) < 20
    assert f"range({MAX_REPEAT})" in code_large


def test_huge_axis_sizes_allocate_nothing_proportional() -> None:
    src = ("axis m = 999999999999999999, n = 100000000000000000\n"
           "def f(X: R[m, n]) -> R[n, m] {\n"
           "    Y = softmax[m](X)\n    Z[n, m] = Y[m, n]\n    return layernorm[n](Z, g)\n}\n")
    with bounded(10, 100):
        program = ncd.load(src)
        svg = program.render()
        code = program.compile()
        program.to_json()
    assert "(100000000000000000,)" in code  # the size is written, not allocated
    assert len(svg) < 200_000


def test_integer_literals_are_bounded() -> None:
    rejected("axis m = " + "9" * 100_000, "E103")


@pytest.mark.parametrize("src", [
    "axis a = 1000000000\n" + "".join(f"axis s{i} = {'a' if i == 0 else f's{i - 1}'} * "
                                     f"{'a' if i == 0 else f's{i - 1}'}\n" for i in range(30)),
    "axis a\n" + "".join(f"axis s{i} = ({'a' if i == 0 else f's{i - 1}'} + 1) * "
                         f"({'a' if i == 0 else f's{i - 1}'} + 1)\n" for i in range(30)),
])
def test_sizes_that_grow_by_squaring_are_refused(src: str) -> None:
    """Each line squares the last size: unchecked, 25 lines take minutes and gigabytes."""
    with bounded(5, 50):
        rejected(src, "E309")


def test_squaring_sizes_inside_a_definition_is_refused() -> None:
    body = "".join(f"    B{i} = rename[m{i} -> n{i}](A{i})\n"
                   f"    C{i}[m{i}, n{i}] = A{i}[m{i}] * B{i}[n{i}]\n"
                   f"    A{i + 1} = reshape[m{i} n{i} -> m{i + 1}](C{i})\n" for i in range(25))
    src = "axis m0 = 1000000000\ndef f(A0: R[m0]) -> R[m0] {\n" + body + "    return A0\n}\n"
    with bounded(10, 100):
        diagnostic = rejected(src, "E309")
    assert diagnostic.span is not None


def test_size_override_too_large(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "a.ncd"
    source.write_text(HEAD)
    assert main(["check", "-D", f"m={10 ** 100}", str(source)]) == 2  # a usage error
    assert "E314" in capsys.readouterr().err


def test_input_above_the_size_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = HEAD + "#" * MAX_SOURCE_BYTES + "\n"
    rejected(big, "E103")
    source = tmp_path / "big.ncd"
    source.write_text(big)
    with bounded(5, 50):
        assert main(["check", str(source)]) == 1
    err = capsys.readouterr().err
    assert "error[E103]" in err and "larger than 1,000,000 bytes" in err


def test_imported_file_above_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.ncd").write_text("#" * (MAX_SOURCE_BYTES + 1))
    (tmp_path / "main.ncd").write_text('import "big.ncd"\n' + HEAD)
    diagnostic = rejected_file(tmp_path / "main.ncd", "E103")
    assert diagnostic.span is not None and diagnostic.span.line == 1


def rejected_file(path: Path, code: str) -> Diagnostic:
    with pytest.raises(NcdError) as caught:
        ncd.load(path)
    found = [d for d in caught.value.diagnostics if d.code == code]
    assert found, caught.value.render()
    return found[0]


def test_import_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.ncd").write_text('import "b.ncd"\naxis m = 3\n')
    (tmp_path / "b.ncd").write_text('import "a.ncd"\naxis n = 3\n')
    with bounded(5, 50):
        diagnostic = rejected_file(tmp_path / "a.ncd", "E206")
    assert "a.ncd -> b.ncd -> a.ncd" in diagnostic.message.replace(str(tmp_path) + os.sep, "")
    assert diagnostic.span is not None and diagnostic.span.line == 1


def test_self_import(tmp_path: Path) -> None:
    (tmp_path / "a.ncd").write_text('import "a.ncd"\naxis m = 3\n')
    rejected_file(tmp_path / "a.ncd", "E206")


def import_chain(folder: Path, files: int) -> Path:
    """`f0.ncd` imports `f1.ncd`, which imports `f2.ncd`, ...; the last declares an axis."""
    for i in range(files):
        last = i == files - 1
        (folder / f"f{i}.ncd").write_text(HEAD if last else f'import "f{i + 1}.ncd"\n')
    return folder / "f0.ncd"


def test_long_import_chain_is_a_located_limit_not_a_recursion_error(tmp_path: Path) -> None:
    """300 files, each importing the next: refused at the first import deeper than
    MAX_IMPORT_DEPTH, with one located E103, quickly and without recursion."""
    with bounded(30, 300), pytest.raises(NcdError) as caught:
        ncd.load(import_chain(tmp_path, 300))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E103" and diagnostic.span is not None
    assert (Path(diagnostic.span.file).name, diagnostic.span.line, diagnostic.span.column) == (
        f"f{MAX_IMPORT_DEPTH}.ncd", 1, 1)
    assert f"more than {MAX_IMPORT_DEPTH} deep" in diagnostic.message


def test_import_chain_at_the_depth_limit_loads(tmp_path: Path) -> None:
    program = ncd.load(import_chain(tmp_path, MAX_IMPORT_DEPTH + 1))
    assert [axis.name for axis in program.ir.axes] == ["m"]


@pytest.mark.parametrize("target", ["../outside.ncd", "/etc/passwd", "sub/../../outside.ncd"])
def test_imports_stay_inside_the_project_root(tmp_path: Path, target: str) -> None:
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (tmp_path / "outside.ncd").write_text(HEAD)
    (project / "main.ncd").write_text(f'import "{target}"\naxis n = 2\n')
    diagnostic = rejected_file(project / "main.ncd", "E205")
    assert diagnostic.span is not None and diagnostic.span.line == 1


def test_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret.ncd").write_text(HEAD)
    (project / "link.ncd").symlink_to(tmp_path / "secret.ncd")
    (project / "main.ncd").write_text('import "link.ncd"\naxis n = 2\n')
    assert "outside the project root" in rejected_file(project / "main.ncd", "E205").message


@pytest.mark.parametrize("target", ["sub", "/dev/zero", "missing.ncd"])
def test_imports_of_what_is_not_a_file(tmp_path: Path, target: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.ncd").write_text(f'import "{target}"\naxis n = 2\n')
    with bounded(5, 50):
        rejected_file(tmp_path / "main.ncd", "E205")
