"""Hostile files around the input and the output: an output written onto an input, onto a
FIFO, a device, a socket, a folder or through a symbolic link; an interrupted write; an input
that is a FIFO, a device, endless or huge; whole-file diagnostics and their locations; deep
and looping imports; bad option values. None may end in exit 3, a hang, or a damaged file."""

from __future__ import annotations

import io
import os
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import ncd
from ncd import loader
from ncd.cli import main
from ncd.diagnostics import NcdError
from ncd.formatter import format_source
from ncd.parser import MAX_SOURCE_BYTES

GOOD = "axis m = 3\ndef f(X: R[m]) -> R[m] {\n    return relu(X)\n}\n"
MESSY = "axis m=3\ndef f(X: R[m]) -> R[m] {\n  return relu(X)\n}\n"
LIBRARY = "axis n = 2\ndef g(X: R[n]) -> R[n] {\n    return relu(X)\n}\n"
HUGE = 1_500_000_000  # bytes of a sparse file: far more than the memory a child may use
MEMORY = 512 << 20  # the address space of a child ncd: reading HUGE bytes cannot fit


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or
                  p.suffix == ".tmp")


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def ncd_process(args: list[str], cwd: Path, stdin: int | io.BufferedReader = subprocess.DEVNULL,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m ncd ARGS` in a child limited to MEMORY bytes of address space, so that reading
    an endless or huge file fails fast instead of exhausting the machine; a hang raises
    `TimeoutExpired` after `timeout` seconds instead of blocking the test run."""
    return subprocess.run([sys.executable, "-m", "ncd", "--no-color", *args], cwd=cwd,
                          stdin=stdin, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit_memory)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "m.ncd"
    path.write_text(GOOD)
    return path


def output_argv(command: str, file: Path, output: Path | str) -> list[str]:
    extra = ["-f", "svg"] if command == "render" else []
    return [command, str(file), *extra, "-o", str(output)]


# ---- 1. the output is never an input of the command ---------------------------------------


@pytest.mark.parametrize("command", ["compile", "render", "ir"])
def test_output_onto_the_input_file_is_refused(command: str, source: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(output_argv(command, source, source), capsys)
    assert code == 2 and out == "", err
    assert f"{source}" in err and "is an input of the command" in err
    assert source.read_text() == GOOD
    assert leftovers(source.parent) == []


@pytest.mark.parametrize("command", ["compile", "render", "ir"])
def test_output_onto_an_imported_file_is_refused(command: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sub").mkdir()
    library = tmp_path / "sub" / "lib.ncd"
    library.write_text(LIBRARY)
    top = tmp_path / "main.ncd"
    top.write_text('import "sub/lib.ncd"\n' + GOOD)
    code, _, err = run(output_argv(command, top, library), capsys)
    assert code == 2, err
    assert "lib.ncd" in err and "is an input of the command" in err
    assert library.read_text() == LIBRARY and top.read_text().endswith(GOOD)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []


@pytest.mark.parametrize("alias", ["hard link", "symbolic link", "dotted path"])
def test_output_onto_another_name_of_the_input_is_refused(
        alias: str, source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = source.parent / "other.py"
    if alias == "hard link":
        os.link(source, other)
    elif alias == "symbolic link":
        other.symlink_to(source.name)
    else:
        other = source.parent / "." / source.name
    code, _, err = run(["compile", str(source), "-o", str(other)], capsys)
    assert code == 2 and "is an input of the command" in err
    assert source.read_text() == GOOD
    assert alias != "symbolic link" or other.is_symlink()


# ---- 2. special outputs and symbolic links -------------------------------------------------


def test_output_through_a_symbolic_link_replaces_the_file_it_names(
        source: Path, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    real = tmp_path / "real" / "out.py"
    real.write_text("previous contents")
    link = tmp_path / "links" / "out.py"
    link.symlink_to(Path("..") / "real" / "out.py")
    assert main(["ir", str(source), "-o", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(Path("..") / "real" / "out.py")
    assert '"definitions"' in real.read_text() and "previous" not in real.read_text()
    assert leftovers(tmp_path / "real") == [] and leftovers(tmp_path / "links") == []


def test_output_through_a_dangling_symbolic_link_creates_its_target(
        source: Path, tmp_path: Path) -> None:
    link = tmp_path / "out.py"
    link.symlink_to("new.py")
    assert main(["ir", str(source), "-o", str(link)]) == 0
    assert link.is_symlink() and '"definitions"' in (tmp_path / "new.py").read_text()


def test_fmt_through_a_symbolic_link_formats_the_target_and_keeps_the_link(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real.ncd"
    real.write_text(MESSY)
    link = tmp_path / "link.ncd"
    link.symlink_to("real.ncd")
    code, out, _ = run(["fmt", str(link)], capsys)
    assert code == 0 and out == f"reformatted {link}\n"
    assert link.is_symlink() and os.readlink(link) == "real.ncd"
    assert real.read_text() == format_source(MESSY) != MESSY
    assert leftovers(tmp_path) == []


def make_special(kind: str, folder: Path) -> Path:
    """A FIFO, socket, folder or character device (or a symbolic link to a FIFO) to write to."""
    path = folder / "special"
    if kind in ("fifo", "link to a fifo"):
        os.mkfifo(folder / "fifo")
        if kind == "fifo":
            return folder / "fifo"
        path.symlink_to("fifo")
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
    elif kind == "folder":
        path.mkdir()
    elif os.geteuid() == 0:  # a copy of /dev/null: a failure of the test cannot harm the real one
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError:
            pytest.skip("cannot create a device here")
    else:
        return Path("/dev/null")  # not root: nothing could replace it
    return path


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "socket", "device", "folder"])
@pytest.mark.parametrize("command", ["compile", "render", "ir"])
def test_output_onto_a_special_file_is_refused(command: str, kind: str, source: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = make_special(kind, tmp_path)
    before = os.lstat(target)
    code, out, err = run(output_argv(command, source, target), capsys)
    assert code == 2 and out == "", err
    assert str(target) in err
    assert ("is a folder" if kind == "folder" else "is not a regular file") in err
    after = os.lstat(target)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
    assert (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev)
    assert leftovers(tmp_path) == []


def test_output_dash_is_standard_output(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["ir", str(source), "-o", "-"], capsys)
    assert code == 0 and '"definitions"' in out
    assert not (source.parent / "-").exists()


def test_replacing_a_file_keeps_its_permissions(source: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.py"
    output.write_text("previous contents")
    output.chmod(0o640)
    assert main(["ir", str(source), "-o", str(output)]) == 0
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
    messy = tmp_path / "messy.ncd"
    messy.write_text(MESSY)
    messy.chmod(0o664)
    assert main(["fmt", str(messy)]) == 0
    assert stat.S_IMODE(messy.stat().st_mode) == 0o664 and messy.read_text() != MESSY
    mask = os.umask(0o022)
    os.umask(mask)
    assert main(["ir", str(source), "-o", str(tmp_path / "new.py")]) == 0
    assert stat.S_IMODE((tmp_path / "new.py").stat().st_mode) == 0o666 & ~mask


# ---- 3. interrupted writes -----------------------------------------------------------------

# A child ncd that stops for good just before the rename of its finished temporary file.
STALLED_WRITER = """
import os, sys, time
import ncd.cli

def stall(source, target):
    print("writing", flush=True)
    time.sleep(120)

os.replace = stall
sys.exit(ncd.cli.main(sys.argv[1:]))
"""


def start_stalled_write(source: Path, output: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", STALLED_WRITER, "ir", str(source),
                              "-o", str(output)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 60)
    if not ready or child.stdout.readline() != "writing\n":
        child.kill()
        pytest.fail(f"the child did not reach the write: {child.communicate()}")
    return child


def test_a_killed_write_leaves_a_temporary_file_that_the_next_write_removes(
        source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.py"
    output.write_text("previous contents")
    child = start_stalled_write(source, output)
    child.kill()
    child.communicate(timeout=30)
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(f".out.py.ncd-{child.pid}-")
    assert output.read_text() == "previous contents"
    # A temporary file of a writer still running, and one of another output, are kept.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            running = tmp_path / f".out.py.ncd-{alive.pid}-abcd1234.tmp"
            running.write_text("being written")
            other = tmp_path / f".other.py.ncd-{child.pid}-abcd1234.tmp"
            other.write_text("stale, of another output")
            assert main(["ir", str(source), "-o", str(output)]) == 0
            assert leftovers(tmp_path) == sorted([running.name, other.name])
        finally:
            alive.kill()
    assert '"definitions"' in output.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_write_removes_its_temporary_file(signum: int, source: Path,
                                                       tmp_path: Path) -> None:
    output = tmp_path / "out.py"
    output.write_text("previous contents")
    child = start_stalled_write(source, output)
    assert len(leftovers(tmp_path)) == 1
    child.send_signal(signum)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert leftovers(tmp_path) == []
    assert output.read_text() == "previous contents"


# ---- 4. special, endless and huge inputs ---------------------------------------------------


@pytest.mark.parametrize("argv", [["check", "pipe.ncd"], ["fmt", "pipe.ncd"],
                                  ["compile", "pipe.ncd"], ["ir", "pipe.ncd"],
                                  ["render", "pipe.ncd", "-o", "out.svg"],
                                  ["check", "main.ncd"]])
def test_a_fifo_is_refused_without_waiting_for_it(argv: list[str], tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.ncd")
    (tmp_path / "main.ncd").write_text('import "pipe.ncd"\n' + GOOD)
    result = ncd_process(argv, tmp_path, timeout=30)
    assert result.returncode == 1, result.stderr
    where = "main.ncd:1:1" if argv[1] == "main.ncd" else "pipe.ncd:1:1"
    assert f"{where}: error[E205]: `pipe.ncd` is not a regular file" in result.stderr
    assert not (tmp_path / "out.svg").exists()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
@pytest.mark.parametrize("command", ["check", "fmt", "compile"])
def test_a_device_is_refused_without_reading_it(command: str, device: str,
                                                tmp_path: Path) -> None:
    result = ncd_process([command, device], tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"{device}:1:1: error[E205]: `{device}` is not a regular file" in result.stderr


@pytest.mark.parametrize("argv", [["check", "big.ncd"], ["fmt", "big.ncd"],
                                  ["check", "main.ncd"]])
def test_a_huge_file_is_refused_without_reading_it(argv: list[str], tmp_path: Path) -> None:
    with open(tmp_path / "big.ncd", "wb") as big:
        big.truncate(HUGE)  # sparse: takes no room on the disk
    (tmp_path / "main.ncd").write_text('import "big.ncd"\n' + GOOD)
    result = ncd_process(argv, tmp_path, timeout=30)
    assert result.returncode == 1, result.stderr
    where = "main.ncd:1:1" if argv[1] == "main.ncd" else "big.ncd:1:1"
    assert f"{where}: error[E103]: `big.ncd` is larger than 1,000,000 bytes" in result.stderr


@pytest.mark.parametrize("stream", ["/dev/zero", "big"])
def test_fmt_reads_at_most_the_limit_from_standard_input(stream: str, tmp_path: Path) -> None:
    path = Path(stream) if stream.startswith("/") else tmp_path / "big"
    if not stream.startswith("/"):
        with open(path, "wb") as big:
            big.truncate(HUGE)
    with open(path, "rb") as stdin:
        result = ncd_process(["fmt", "-"], tmp_path, stdin=stdin, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "<stdin>:1:1: error[E103]: the standard input is larger than 1,000,000 bytes" \
        in result.stderr
    assert result.stdout == ""


def test_standard_input_at_the_limit_is_read(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    text = "# " + "x" * (MAX_SOURCE_BYTES - 3) + "\n"
    assert len(text.encode()) == MAX_SOURCE_BYTES
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert run(["fmt", "-"], capsys) == (0, text, "")


# ---- 5. whole-file diagnostics are located -------------------------------------------------


def test_an_oversized_file_is_located_at_its_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.ncd").write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    code, _, err = run(["--no-color", "check", "big.ncd"], capsys)
    assert code == 1
    assert err.startswith("big.ncd:1:1: error[E103]: `big.ncd` is larger than 1,000,000 bytes")
    with pytest.raises(NcdError) as caught:
        ncd.load(Path("big.ncd"))
    assert [str(d.span) for d in caught.value.diagnostics] == ["big.ncd:1:1"]


def test_non_utf8_standard_input_is_located_at_the_byte(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"axis m = 4\n# caf\xe9\n")))
    code, out, err = run(["--no-color", "fmt", "-"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("<stdin>:2:6: error[E104]: `<stdin>` is not UTF-8 text")


def test_a_special_file_is_located_through_the_api() -> None:
    with pytest.raises(NcdError) as caught:
        ncd.load(Path("/dev/null"))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E205" and str(diagnostic.span) == "/dev/null:1:1"
    assert "is not a regular file" in diagnostic.message


# ---- 6. deep and looping imports -----------------------------------------------------------


def import_chain(folder: Path, files: int) -> Path:
    for i in range(files):
        text = f'import "f{i + 1}.ncd"\n' if i < files - 1 else GOOD
        (folder / f"f{i}.ncd").write_text(text)
    return folder / "f0.ncd"


def test_an_import_chain_deeper_than_the_limit_is_refused_at_the_import(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    depth = getattr(loader, "MAX_IMPORT_DEPTH", 64)
    top = import_chain(tmp_path, 400)
    code, _, err = run(["--no-color", "check", str(top)], capsys)
    assert code == 1, err
    assert f"f{depth}.ncd:1:1: error[E103]: " in err and "= hint: " in err
    with pytest.raises(NcdError) as caught:
        ncd.load(top)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E103" and diagnostic.span is not None
    assert Path(diagnostic.span.file).name == f"f{depth}.ncd" and diagnostic.span.line == 1
    assert str(depth) in diagnostic.message


def test_an_import_chain_at_the_limit_loads(tmp_path: Path) -> None:
    depth = getattr(loader, "MAX_IMPORT_DEPTH", 64)
    program = ncd.load(import_chain(tmp_path, depth + 1))
    assert program.names == ("f",)


def test_importing_a_symbolic_link_loop_is_located_at_the_import(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "loop.ncd").symlink_to("loop.ncd")
    top = tmp_path / "main.ncd"
    top.write_text('import "loop.ncd"\n' + GOOD)
    code, _, err = run(["--no-color", "check", str(top)], capsys)
    assert code == 1, err
    assert f"{top}:1:1: error[E205]: " in err and "loop.ncd" in err


def test_a_symbolic_link_loop_as_the_file_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = tmp_path / "loop.ncd"
    loop.symlink_to("loop.ncd")
    code, _, err = run(["check", str(loop)], capsys)
    assert code == 2 and str(loop) in err and "symbolic links" in err
    with pytest.raises(NcdError) as caught:
        ncd.load(loop)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E205" and str(diagnostic.span) == f"{loop}:1:1"


def test_importing_a_symbolic_link_to_itself_is_a_cycle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top = tmp_path / "a.ncd"
    top.write_text('import "link.ncd"\n' + GOOD)
    (tmp_path / "link.ncd").symlink_to("a.ncd")
    code, _, err = run(["--no-color", "check", str(top)], capsys)
    assert code == 1, err
    assert f"{top}:1:1: error[E206]: import cycle" in err


# ---- 7. option values ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "-100000000000000000000", "abc", "1.5", ""])
def test_collapse_must_be_a_non_negative_integer(value: str, source: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.svg"
    code, _, err = run(["render", "--collapse", value, str(source), "-o", str(output)], capsys)
    assert code == 2, err
    assert "--collapse" in err and "a non-negative integer" in err and "Traceback" not in err
    assert not output.exists()


@pytest.mark.parametrize("value", ["0", "3"])
def test_collapse_accepts_zero_and_more(value: str, source: Path, tmp_path: Path) -> None:
    assert main(["render", "--collapse", value, str(source), "-o", str(tmp_path / "o.svg")]) == 0
    assert (tmp_path / "o.svg").read_text().startswith("<svg")
