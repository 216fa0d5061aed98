"""The documents are checked: every relative link of `README.md` and `docs/*.md` resolves (a
file of the project, and an `#anchor` to a heading of it); the tutorial's commands run as
written in a fresh clone of the repository; every ```ncd block of `docs/pytorch-users.md`
checks, and its side-by-side translations compute what the PyTorch modules compute."""

from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import ncd
from ncd.diagnostics import NcdError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


# --- links -----------------------------------------------------------------------------------

FENCE_LINE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets (an image
# inside a link); the target stops at whitespace or the closing parenthesis
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
                         r"\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_TARGET = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...


@dataclass(frozen=True)
class Link:
    document: Path
    line: int
    target: str

    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}: {self.target}"


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    found, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE_LINE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            found.append((number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)))
    return found


def links(document: Path, text: str) -> list[Link]:
    found = []
    for number, line in prose_lines(text):
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        targets += [m.group(1) for m in HTML_TARGET.finditer(line)]
        reference = REFERENCE.match(line)
        if reference:
            targets.append(reference.group(1))
        found += [Link(document, number, target) for target in targets]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered (code, emphasis and link markup
    gone), lower-cased, every character that is not a letter, digit, space, hyphen or
    underscore dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", "", text)  # _emphasis_, not d_ff
    text = "".join(c for c in text.strip().lower()
                   if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated slug gets `-1`, `-2`, ... as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(text):
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken(link: Link) -> str | None:
    """Why the link does not resolve, or None when it does."""
    target = link.target
    if not target or EXTERNAL.match(target) or target.startswith("//"):
        return None if target else "empty target"
    path_part, _, anchor = target.partition("#")
    path_part = path_part.partition("?")[0]
    if path_part.startswith("/"):
        return "absolute path: link relative to the document"
    path = (link.document.parent / path_part).resolve() if path_part else link.document
    if not path.is_relative_to(ROOT):
        return "points outside the project"
    if not path.exists():
        return "no such file in the project"
    if anchor:
        if path.suffix != ".md" or path.is_dir():
            return f"anchor #{anchor} on a file that is not Markdown"
        if anchor not in anchors(path.read_text(encoding="utf-8")):
            return f"no heading with anchor #{anchor} in {path.relative_to(ROOT)}"
    return None


def test_the_documents_have_links() -> None:
    counted = {d.name: len(links(d, d.read_text(encoding="utf-8"))) for d in documents()}
    assert counted["README.md"] >= 5, counted


@pytest.mark.parametrize("document", documents(), ids=lambda d: d.name)
def test_every_relative_link_resolves(document: Path) -> None:
    problems = [f"{link.where()}: {why}"
                for link in links(document, document.read_text(encoding="utf-8"))
                if (why := broken(link)) is not None]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    """The checker itself: what it must refuse and what it must accept."""
    doc = DOCS / "language.md"
    def why(target: str) -> str | None:
        return broken(Link(doc, 1, target))

    assert why("no-such-page.md") == "no such file in the project"
    assert why("../../outside.md") == "points outside the project"
    assert why("/README.md") is not None
    assert why("language.md#no-such-heading") is not None
    assert why("#no-such-heading") is not None
    assert why("../LICENSE#x") is not None
    assert why("#diagnostics-and-exit-codes") is None
    assert why("language.md#recurrences-scan") is None
    assert why("../gallery/attention.svg") is None
    assert why("https://example.org/missing") is None
    text = "See [a](a.md) and ![b](b.svg \"t\"), `[c](c.md)` and [d]: d.md\n```\n[e](e.md)\n```\n"
    assert [link.target for link in links(doc, text)] == ["a.md", "b.svg"]
    assert [link.target for link in links(doc, "[d]: d.md")] == ["d.md"]
    assert slug("Calls and `batch` lifts") == "calls-and-batch-lifts"
    assert slug("Recurrences: scan") == "recurrences-scan"
    assert slug("The `d_ff` axis: *why*?") == "the-d_ff-axis-why"
    assert anchors("# A\n## A\n```\n# B\n```\n") == {"a", "a-1"}


# --- the tutorial ----------------------------------------------------------------------------

TUTORIAL = DOCS / "tutorial.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*(set-up|output|errors|file:\s*([\w.-]+))[^>]*-->\s*$")
EXITS = re.compile(r"#\s*exits\s+(\d+)")
EOF_MARK = "NCD_TUTORIAL_FILE_ENDS"


@dataclass(frozen=True)
class Step:
    kind: str  # "run", "file", "output" or "errors"
    text: str  # the command, the file's content or what it prints
    line: int
    name: str = ""  # the file's name

    @property
    def expected_exit(self) -> int:
        match = EXITS.search(self.text)
        return int(match.group(1)) if match else 0

    def outputs(self) -> list[str]:
        """The files the command says it writes (`-o FILE`)."""
        words = shlex.split(self.text, comments=True)
        return [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-o", "--output")]


def tutorial_steps(text: str) -> tuple[list[Step], list[Step]]:
    """The steps in the order of the page, and the set-up commands it does not run.

    Conventions of the page: a ```sh block holds commands, one a line (`# exits N` on a line
    that must fail with N); `<!-- set-up -->` on the line before marks one that installs and
    is not run; `<!-- file: NAME -->` marks a block whose text is saved as NAME in the current
    folder; `<!-- output -->` marks a block that the last command must print exactly on its
    standard output, `<!-- errors -->` one it must print exactly on its standard error."""
    steps, setup = [], []
    lines = text.splitlines()
    for match in FENCE.finditer(text):
        language, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        before = lines[line - 2] if line >= 2 else ""
        marker = MARKER.search(before)
        if marker and marker.group(2):
            steps.append(Step("file", body, line, marker.group(2)))
        elif marker and marker.group(1) in ("output", "errors"):
            steps.append(Step(marker.group(1), body, line))
        elif language == "sh":
            commands = [c for c in body.replace("\\\n", " ").splitlines()
                        if c.strip() and not c.strip().startswith("#")]
            target = setup if marker and marker.group(1) == "set-up" else steps
            target += [Step("run", command, line) for command in commands]
        else:
            pytest.fail(f"line {line}: a ```{language} block that is neither "
                        "commands, a file nor an output: mark it")
    return steps, setup


def script(steps: list[Step], log: Path) -> str:
    """One bash script: the folder a `cd` enters stays entered, as in a terminal; each
    command's output, exit status and folder are logged under its index."""
    parts = []
    for index, step in enumerate(steps):
        if step.kind == "file":
            assert EOF_MARK not in step.text
            parts.append(f"cat > {shlex.quote(step.name)} <<'{EOF_MARK}'\n{step.text}{EOF_MARK}")
        elif step.kind == "run":
            out = shlex.quote(str(log / str(index)))
            parts.append(f"{{ {step.text}\n}} > {out}.output 2> {out}.errors < /dev/null\n"
                         f"echo $? > {out}.rc\npwd > {out}.pwd")
    return "\n".join(parts) + "\n"


def test_the_tutorial_runs_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: there is nothing to clone")
    steps, setup = tutorial_steps(TUTORIAL.read_text(encoding="utf-8"))
    runs = [s for s in steps if s.kind == "run"]
    assert len(runs) >= 8 and len([s for s in steps if s.kind == "file"]) >= 4
    assert any(s.expected_exit == 1 for s in runs), "the tutorial shows an error"
    assert any("make demo" in s.text for s in setup), "the set-up is marked, not dropped"
    run_as_written(steps, tmp_path, "docs/tutorial.md")


def test_the_training_page_runs_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    """docs/training.md: the same conventions as the tutorial, from the clone's root."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: there is nothing to clone")
    steps, _ = tutorial_steps((DOCS / "training.md").read_text(encoding="utf-8"))
    runs = [s for s in steps if s.kind == "run"]
    assert any(s.text.startswith("ncd train ") for s in runs)
    assert any(s.expected_exit == 1 for s in runs), "the page shows an error"
    run_as_written(steps, tmp_path, "docs/training.md")


def run_as_written(steps: list[Step], tmp_path: Path, page: str) -> None:
    """Run a page's steps in a fresh clone; what each prints must be what the page shows."""
    runs = [s for s in steps if s.kind == "run"]
    assert not any(word in s.text for s in runs for word in ("pip ", "make ", "git clone"))
    # The page's promise ("in five minutes") is about the work its commands do: counted in the
    # CPU time of the processes they start, which a busy machine does not stretch as it does
    # the wall clock.
    started = children_cpu_seconds()
    clone = tmp_path / "ncd"
    git_env = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
               "GIT_CONFIG_VALUE_0": "*"}  # CI runs as root on a checkout owned by another
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, env=git_env,
                   capture_output=True, timeout=60)
    log = tmp_path / "log"
    log.mkdir()
    (tmp_path / "tutorial.sh").write_text(script(steps, log), encoding="utf-8")
    venv_bin = str(Path(sys.executable).parent)  # `ncd` and `python` as the reader has them
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
           "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(["bash", str(tmp_path / "tutorial.sh")], cwd=clone, env=env, check=True,
                   timeout=120)

    previous: tuple[Step, int] | None = None
    for index, step in enumerate(steps):
        if step.kind == "run":
            where = f"{page}:{step.line}: `{step.text}`"
            status = int((log / f"{index}.rc").read_text())
            printed = "".join((log / f"{index}.{stream}").read_text(encoding="utf-8")
                              for stream in ("output", "errors"))
            assert status == step.expected_exit, f"{where} exited {status}:\n{printed}"
            folder = Path((log / f"{index}.pwd").read_text().strip())
            for written in step.outputs():
                produced = folder / written
                assert produced.is_file() and produced.stat().st_size > 0, \
                    f"{where} did not write {written}"
            previous = (step, index)
        elif step.kind in ("output", "errors"):
            assert previous is not None, f"{page}:{step.line}: output of nothing"
            command, number = previous
            output = (log / f"{number}.{step.kind}").read_text(encoding="utf-8")
            shown = [line.rstrip() for line in step.text.rstrip().splitlines()]
            printed = [line.rstrip() for line in output.rstrip().splitlines()]
            assert printed == shown, (f"{page}:{step.line}: `{command.text}` "
                                      f"printed on its standard {step.kind}:\n{output}")
    elapsed = children_cpu_seconds() - started
    assert elapsed < 60, f"{page} took {elapsed:.1f} s of CPU"


def children_cpu_seconds() -> float:
    """User and system CPU time of the finished child processes of this one, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- ncd for PyTorch users -------------------------------------------------------------------

PYTORCH_USERS = DOCS / "pytorch-users.md"
NCD_FENCE = re.compile(r"^```ncd([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    source: str
    line: int
    file: str | None  # `file=NAME`: a translation the tests below compare with PyTorch


def pytorch_blocks() -> list[Block]:
    text = PYTORCH_USERS.read_text(encoding="utf-8")
    found = []
    for match in NCD_FENCE.finditer(text):
        options = match.group(1).strip()
        assert not options or options.startswith("file="), f"unknown options {options!r}"
        found.append(Block(match.group(2), text.count("\n", 0, match.start()) + 1,
                           options.removeprefix("file=") or None))
    return found


BLOCKS = pytorch_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"line{b.line}")
def test_every_ncd_block_for_pytorch_users_checks(block: Block) -> None:
    try:
        program = ncd.load(block.source)
    except NcdError as error:
        pytest.fail(f"docs/pytorch-users.md line {block.line}:\n{error.render()}")
    assert program.names, f"docs/pytorch-users.md line {block.line}: defines nothing"


def translation(file: str) -> torch.nn.Module:
    """The compiled module of the block fenced ```ncd file=FILE (its last definition)."""
    [block] = [b for b in BLOCKS if b.file == file]
    program = ncd.load(block.source)
    return program.to_torch(program.names[-1])


def copy(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Set every parameter of `module` from `weights`, which must name each exactly once."""
    parameters = dict(module.named_parameters())
    assert sorted(parameters) == sorted(weights)
    with torch.no_grad():
        for name, value in weights.items():
            assert parameters[name].shape == value.shape, name
            parameters[name].copy_(value)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


nn = torch.nn


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def test_linear_is_nn_linear() -> None:
    layer = nn.Linear(16, 8)
    module = translation("linear.ncd")
    copy(module, {"W": layer.weight.T, "bias": layer.bias})
    X = torch.randn(5, 16)
    close(module(X), layer(X))


def test_conv1d_is_nn_conv1d_with_stride_padding_and_dilation() -> None:
    conv = nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=1, dilation=2)
    module = translation("conv1d.ncd")
    copy(module, {"W": conv.weight, "bias": conv.bias})
    X = torch.randn(3, 4, 20)
    close(module(X), conv(X))


def test_conv2d_is_nn_conv2d() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3)
    module = translation("conv2d.ncd")
    copy(module, {"W": conv.weight, "bias": conv.bias})
    X = torch.randn(2, 3, 12, 12)
    close(module(X), conv(X))


def test_grouped_conv1d_is_nn_conv1d_with_groups() -> None:
    conv = nn.Conv1d(6, 8, kernel_size=3, groups=2, bias=False)
    module = translation("grouped.ncd")
    copy(module, {"W": conv.weight.view(2, 4, 3, 3)})
    X = torch.randn(2, 6, 10)
    close(module(X), conv(X))


def test_layernorm_is_nn_layernorm() -> None:
    norm = nn.LayerNorm(16)
    with torch.no_grad():  # not the initial ones and zeros, so that a swap would show
        norm.weight.normal_()
        norm.bias.normal_()
    module = translation("layernorm.ncd")
    copy(module, {"g": norm.weight, "beta": norm.bias})
    X = torch.randn(2, 7, 16) * 3 + 1
    close(module(X), norm(X))


def test_embedding_is_nn_embedding() -> None:
    embed = nn.Embedding(1000, 16)
    module = translation("embedding.ncd")
    copy(module, {"E": embed.weight})
    T = torch.randint(0, 1000, (2, 9))
    close(module(T), embed(T))


def test_attention_is_nn_multiheadattention() -> None:
    mha = nn.MultiheadAttention(16, num_heads=4, batch_first=True)
    with torch.no_grad():  # non-zero biases, so that they are checked too
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    module = translation("mha.ncd")
    w, b = mha.in_proj_weight, mha.in_proj_bias
    copy(module, {
        "W_q": w[:16].T.reshape(16, 4, 4), "b_q": b[:16].reshape(4, 4),
        "W_k": w[16:32].T.reshape(16, 4, 4), "b_k": b[16:32].reshape(4, 4),
        "W_v": w[32:].T.reshape(16, 4, 4), "b_v": b[32:].reshape(4, 4),
        "W_o": mha.out_proj.weight.T.reshape(4, 4, 16), "b_o": mha.out_proj.bias})
    X = torch.randn(3, 10, 16)
    expected, _ = mha(X, X, X, need_weights=False)
    close(module(X), expected)


@pytest.mark.parametrize("file", ["lstm.ncd", "lstm_pytorch_layout.ncd"])
def test_lstm_is_nn_lstm(file: str) -> None:
    """The page's LSTM, its weights laid out as `linear` creates them (`weight_ih_l0` seen as
    `[g, n, i]` and moved to `[i, g, n]`) or declared as PyTorch keeps them (a view)."""
    lstm = nn.LSTM(8, 12)
    module = translation(file)

    def weight(value: torch.Tensor) -> torch.Tensor:
        rows = value.view(4, 12, -1)
        return rows if file == "lstm_pytorch_layout.ncd" else rows.permute(2, 0, 1)

    copy(module, {
        "cell.W_ih": weight(lstm.weight_ih_l0), "cell.W_hh": weight(lstm.weight_hh_l0),
        "cell.b_ih": lstm.bias_ih_l0.reshape(4, 12), "cell.b_hh": lstm.bias_hh_l0.reshape(4, 12)})
    X, h0, c0 = torch.randn(6, 3, 8), torch.randn(1, 3, 12), torch.randn(1, 3, 12)
    Y, (H, C) = lstm(X, (h0, c0))
    actual = module(X, h0[0], c0[0])
    for got, want in zip(actual, (Y, H[0], C[0]), strict=True):
        close(got, want)


def test_gru_is_nn_gru() -> None:
    gru = nn.GRU(8, 12)
    module = translation("gru.ncd")
    copy(module, {
        "cell.W_ih": gru.weight_ih_l0.reshape(3, 12, 8).permute(2, 0, 1),
        "cell.W_hh": gru.weight_hh_l0.reshape(3, 12, 12).permute(2, 0, 1),
        "cell.b_ih": gru.bias_ih_l0.reshape(3, 12), "cell.b_hh": gru.bias_hh_l0.reshape(3, 12)})
    X, h0 = torch.randn(6, 3, 8), torch.randn(1, 3, 12)
    Y, H = gru(X, h0)
    actual = module(X, h0[0])
    for got, want in zip(actual, (Y, H[0]), strict=True):
        close(got, want)


# --- derivatives.md ---------------------------------------------------------------------------


def test_derivatives_python_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ```python block of docs/derivatives.md runs as written (from the repository root):
    the backward module's gradients equal autograd's."""
    text = (DOCS / "derivatives.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks, "docs/derivatives.md has no python example"
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "docs/derivatives.md", "exec"), {})


def test_derivatives_commands_run(tmp_path: Path) -> None:
    """The commands at the top of docs/derivatives.md run and write their files."""
    text = (DOCS / "derivatives.md").read_text(encoding="utf-8")
    commands = re.findall(r"^ncd (render|compile) (\S+) (\S+) --grad -o (\S+)", text, re.M)
    assert len(commands) == 2
    for command, source, name, output in commands:
        result = subprocess.run([sys.executable, "-m", "ncd", command, str(ROOT / source), name,
                                 "--grad", "-o", str(tmp_path / output)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / output).stat().st_size > 0


def test_the_figures_of_the_rules_are_current() -> None:
    """docs/derivatives/NAME.grad.svg: each definition of rules.ncd drawn as `ncd render
    --grad` draws it (`make demo` redraws them), each shown in docs/derivatives.md."""
    from ncd.gallery_job import RULES

    program = ncd.load(RULES)
    text = (DOCS / "derivatives.md").read_text(encoding="utf-8")
    assert set(RULES.parent.glob("*.svg")) == {RULES.with_name(f"{name}.grad.svg")
                                               for name in program.names}
    for name in program.names:
        figure = RULES.with_name(f"{name}.grad.svg")
        assert figure.read_text(encoding="utf-8") == program.render(name, grad=True), (
            f"{figure.name} is not what the renderer draws now: run `make demo`")
        assert f"](derivatives/{figure.name})" in text, f"{figure.name} is not in the page"
