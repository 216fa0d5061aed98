"""`del` after the last use of each local of a generated `forward` (`compilers.lifetimes`):
where the statements go, and that the code still runs (and frees) as it should."""

from __future__ import annotations

from pathlib import Path

import pytest
from ncd.compilers.lifetimes import free_after_last_use

import ncd

torch = pytest.importorskip("torch")

from measure import peak_forward_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def body(*lines: str) -> list[str]:
    return [f"        {line}" for line in lines]


def test_each_local_is_deleted_after_its_last_read() -> None:
    lines = body("size_x = X.shape[-2]  # |x|",
                 "A = torch.relu(X)",
                 "B = A * size_x",
                 "C = A + B",
                 "return C")
    assert free_after_last_use(lines, ["X"], {"size_x"}) == body(
        "size_x = X.shape[-2]  # |x|",
        "A = torch.relu(X)",
        "del X",
        "B = A * size_x",
        "C = A + B",
        "del A, B",
        "return C")


def test_a_loop_keeps_what_it_reads_from_before_and_what_it_carries() -> None:
    lines = body("H = H0",
                 "outputs = []",
                 "for t_index in range(size_t):",
                 "    X_step = X.select(-2, t_index)",
                 "    Z = torch.tanh(X_step + H @ W)",
                 "    H = Z",
                 "    outputs.append(H)",
                 "Y = torch.stack(outputs, dim=-2)",
                 "return Y, H")
    assert free_after_last_use(lines, ["X", "H0", "W"], {"size_t"}) == body(
        "H = H0",
        "del H0",
        "outputs = []",
        "for t_index in range(size_t):",
        "    X_step = X.select(-2, t_index)",
        "    Z = torch.tanh(X_step + H @ W)",
        "    del X_step, H",  # H is rebound before the next iteration reads it
        "    H = Z",
        "    del Z",
        "    outputs.append(H)",
        "del X, W",  # read by every iteration: freed after the loop, not in it
        "Y = torch.stack(outputs, dim=-2)",
        "del outputs",
        "return Y, H")


def test_a_rebound_carried_value_is_freed_before_its_next_value_is_made() -> None:
    """The block's carried name is read, then rebound at the end of the body: the old value
    is not needed once read, so it goes before the rest of the iteration runs."""
    lines = body("X_1 = X",
                 "for layer in self.layers:",
                 "    N = layer.norm(X_1)",
                 "    X_2 = N + X_1",
                 "    F = layer.ff(X_2)",
                 "    X_1 = F + X_2",
                 "return X_1")
    assert free_after_last_use(lines, ["X"], set()) == body(
        "X_1 = X",
        "del X",
        "for layer in self.layers:",
        "    N = layer.norm(X_1)",
        "    X_2 = N + X_1",
        "    del N, X_1",
        "    F = layer.ff(X_2)",
        "    X_1 = F + X_2",
        "    del F, X_2",
        "return X_1")


def test_each_branch_of_an_if_deletes_what_it_makes() -> None:
    """A name that one branch makes is unbound after the `if` on the other path: it is
    deleted in its branch, never after the `if` (a scan with a fused kernel has two)."""
    lines = body("fast = not torch.compiler.is_compiling()",
                 "if fast:",
                 "    batch = X.shape[:-1]",
                 "    Y = torch.tanh(X).reshape(batch + (4,))",
                 "else:",
                 "    Z = torch.relu(X)",
                 "    Y = Z * W",
                 "return Y")
    freed = free_after_last_use(lines, ["X", "W"], set())
    assert freed == body("fast = not torch.compiler.is_compiling()",
                         "if fast:",
                         "    batch = X.shape[:-1]",
                         "    Y = torch.tanh(X).reshape(batch + (4,))",
                         "    del X, batch",
                         "else:",
                         "    Z = torch.relu(X)",
                         "    del X",
                         "    Y = Z * W",
                         "    del Z, W",
                         "return Y")
    for fast in (True, False):  # both paths run
        namespace = {"torch": torch, "X": torch.ones(2, 4), "W": torch.ones(2, 4)}
        code = "\n".join(line.removeprefix("        ") for line in freed)
        code = code.replace("not torch.compiler.is_compiling()", str(fast))
        exec("def forward(X, W):\n" + "\n".join("    " + line for line in code.splitlines())
             + "\nresult = forward(X, W)", namespace)
        assert namespace["result"].shape == (2, 4)


def test_names_a_comprehension_reads_are_left_alone() -> None:
    """A name a comprehension reads is a closure cell; torch.compile cannot trace its
    `del` (DELETE_DEREF)."""
    lines = body("Z = [copy(X) for copy in self.expert]",
                 "Y = torch.stack(Z, dim=-2)",
                 "return Y")
    assert free_after_last_use(lines, ["X"], set()) == body(
        "Z = [copy(X) for copy in self.expert]",
        "Y = torch.stack(Z, dim=-2)",
        "del Z",
        "return Y")


def test_a_long_list_of_names_is_split_within_the_line_length() -> None:
    names = [f"a_rather_long_intermediate_name_{i}" for i in range(8)]
    lines = body(*(f"{n} = torch.relu(X)" for n in names),
                 f"Y = {' + '.join(names)}", "return Y")
    out = free_after_last_use(lines, ["X"], set())
    deletes = [line for line in out if line.lstrip().startswith("del a_")]
    assert len(deletes) > 1 and all(len(line) <= 100 for line in deletes)
    assert sorted(n for line in deletes for n in line.split("del ")[1].split(", ")) == \
        sorted(names)


def test_the_compiled_attention_frees_its_intermediates() -> None:
    """An attention whose weights are a log-softmax is written out statement by statement (not
    one fused call); it holds at most two score-sized arrays at once (S and the unscaled
    product, or S and A), not all of them to the end."""
    text = (ROOT / "gallery" / "attention.ncd").read_text()
    text = text.replace("A = softmax[y](causal[x, y](S))", "A = logsoftmax[y](S)")
    program = ncd.load(text, sizes={"x": 128})
    source = program.compile()
    assert "scaled_dot_product_attention" not in source
    assert "        del Q, K\n" in source
    module = program.to_torch("attention").eval()
    X = torch.randn(128, 512)
    scores = 4 * 8 * 128 * 128
    peak = peak_forward_bytes(module, [X])
    assert peak < 3 * scores + 5 * 128 * 512 * 4
    with torch.no_grad():
        assert torch.isfinite(module(X)).all()


# Statements the scanner reads (`_straight_line`) and ones it must leave to `ast`: each body
# is freed by both ways where the scanner reads it, and must come out the same.
SCANNED = [
    "A = torch.relu(X)  # relu (line 3)",
    "A, B = torch.chunk(X, 2, dim=-1)",
    "A = B = X.reshape(size_x, -1)",
    "A = X if size_x == 1 else torch.zeros(size_x, 2, dtype=X.dtype)",
    "A = F.gelu(X) @ W.t() + 1e-5 * X.sum(-1, keepdim=True)",
    "A = self.call2(X)  # call2 (line 21)",
    "A = (X != 0) & (size_x <= 3) | ~(X is None) and not X",
    "A = torch.stack([X, X], 0)",
    "A = {X}, (X,), [X.mean(0)], X ** 2 // 3 % 4",
    "pass",
    "A = X  # a comment, (not code",
]
UNSCANNED = [
    "A = X[:, 0]",  # a slice
    "A = X[..., None]",
    "A = torch.einsum('ab->ba', X)",  # a string
    "A = X; B = A",
    "A = [x for x in X]",
    "A = (lambda x: x)(X)",
    "A += X",
    "A: int = 1",
    "self.a = X",
    "X[0] = 1",
    "(A := X)",
    "del X",
    "if X:",
    "A = f(\\",
    "A = f(",
    "    X)",
]


@pytest.mark.parametrize("statement", SCANNED + UNSCANNED)
def test_the_scanner_frees_as_the_parser_does(statement: str) -> None:
    from ncd.compilers.lifetimes import _free_parsed, _straight_line

    lines = body("size_x = X.shape[-2]", "W = self.W", statement, "C = A * X", "return C")
    scanned = _straight_line(lines)
    if statement in UNSCANNED:
        assert scanned is None
        return
    assert scanned is not None
    try:
        expected = _free_parsed(lines, ["X"], {"size_x"})
    except SyntaxError:
        pytest.fail(f"the scanner read a statement Python does not: {statement}")
    assert free_after_last_use(lines, ["X"], {"size_x"}) == expected


# Statements wrapped inside their brackets, as the emitter writes a long one: the scanner
# reads each as one statement ending at its last line.
WRAPPED = [
    ("A = (", "    torch.addmm(B, X, W)",
     "    if not torch.fx._symbolic_trace.is_fx_symbolic_tracing()", "    and X.dim() == 2",
     "    else F.linear(X, W.T, B)", ")"),
    ("A = F.linear(X, W.T, B).unflatten(", "    -1, (2, size_x)", ")"),
    ("A = torch.stack(", "    [", "        X,", "        B,", "    ],", "    0,", ")"),
]


@pytest.mark.parametrize("statement", WRAPPED)
def test_the_scanner_reads_a_wrapped_statement_as_the_parser_does(
        statement: tuple[str, ...]) -> None:
    from ncd.compilers.lifetimes import _free_parsed, _straight_line

    lines = body("size_x = X.shape[-2]", "W = self.W", "B = X * 2", *statement, "C = A * X",
                 "return C")
    scanned = _straight_line(lines)
    assert scanned is not None
    assert scanned[3][0] == 3 + len(statement) - 1  # the statement, at its last line
    expected = _free_parsed(lines, ["X"], {"size_x"})
    assert free_after_last_use(lines, ["X"], {"size_x"}) == expected
    # a statement still open at the end of the body is left to the parser
    assert _straight_line(lines[:3 + len(statement) - 1]) is None
