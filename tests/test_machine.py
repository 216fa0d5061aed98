"""Machines of finite depth (`machine[n, b1, ..., bk](f, Y)`, `ir.Machine`): the output
satisfies its defining fixed-point equation (reference interpreter and compiled module), the
compiled module is a hand-written PyTorch loop over the blocks, the backward definition's
gradients are torch.autograd's, and that backward pass is itself a machine on the reversed
blocks (found in its IR). A bad split of the axis is a diagnostic, not a traceback."""

from __future__ import annotations

import pytest
import torch
from differential import module_parameters

import ncd
from ncd import ir
from ncd.diagnostics import NcdError
from ncd.semantics import Interpreter

DTYPE = torch.float64


def source(n: int, blocks: tuple[int, ...], context: bool = False) -> str:
    """A dense tanh layer as the body, lifted over the batch axis b; with `context`, the
    body also reads an array C (whole, at every block)."""
    sizes = ", ".join(str(size) for size in blocks)
    if context:
        return (f"axis b, n = {n}, k = 2\n"
                "def f(C: R[k], X: R[n]) -> R[n] {\n"
                "    return tanh(linear[n -> n, bias](X, W, c) + linear[k -> n](C, V))\n}\n"
                "def g(C: R[b, k], Y: R[b, n]) -> R[b, n] {\n"
                f"    return machine[n, {sizes}](f, C, Y)\n}}\n")
    return (f"axis b, n = {n}\n"
            "def f(X: R[n]) -> R[n] { return tanh(linear[n -> n, bias](X, W, c)) }\n"
            "def g(Y: R[b, n]) -> R[b, n] {\n"
            f"    return machine[n, {sizes}](f, Y)\n}}\n")


def ranges(blocks: tuple[int, ...]) -> list[tuple[int, int]]:
    starts = [sum(blocks[:i]) for i in range(len(blocks))]
    return [(start, start + size) for start, size in zip(starts, blocks, strict=True)]


def body(module: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
    """The body `f` written with torch: tanh(X W + c)."""
    return torch.tanh(X @ module.f.W + module.f.c)


def built(n: int, blocks: tuple[int, ...], context: bool = False, seed: int = 0
          ) -> tuple[ncd.Program, torch.nn.Module]:
    program = ncd.load(source(n, blocks, context))
    torch.manual_seed(seed)
    return program, program["g"].to_torch(dtype=DTYPE)


@pytest.mark.parametrize(("n", "blocks"), [(6, (2, 1, 3)), (8, (4, 4))])
def test_output_solves_the_fixed_point_equation(n: int, blocks: tuple[int, ...]) -> None:
    """x = y + g(x), g_i(x) = f(x masked to the blocks before i)_i: from the interpreter and
    from the compiled module, each checked with f written in torch."""
    program, module = built(n, blocks)
    Y = torch.randn(3, n, dtype=DTYPE)
    interpreter = Interpreter(program.ir, {"b": 3}, module_parameters(module))
    with torch.no_grad():
        (interpreted,) = interpreter.run("g", [Y])
        compiled = module(Y)
    torch.testing.assert_close(compiled, interpreted, rtol=0, atol=1e-12)
    for X in (interpreted, compiled):
        for start, stop in ranges(blocks):
            before = torch.cat([X[:, :start], torch.zeros_like(X[:, start:])], dim=-1)
            with torch.no_grad():
                expected = Y[:, start:stop] + body(module, before)[:, start:stop]
            torch.testing.assert_close(X[:, start:stop], expected, rtol=0, atol=1e-10)
        # f reads every block, so X is not a fixed point of y + f itself.
        with torch.no_grad():
            assert (X - Y - body(module, X)).abs().max() > 1e-3


def test_a_block_triangular_body_gives_a_fixed_point_of_f_itself() -> None:
    """With W strictly block-lower-triangular (output block i reads input blocks < i), f is of
    finite depth already, and x = y + f(x) exactly."""
    n, blocks = 7, (3, 2, 2)
    program, module = built(n, blocks, seed=1)
    owner = torch.zeros(n, dtype=torch.long)
    for index, (start, stop) in enumerate(ranges(blocks)):
        owner[start:stop] = index
    with torch.no_grad():
        module.f.W.mul_((owner[:, None] < owner[None, :]).to(DTYPE))  # W[in, out]
    Y = torch.randn(2, n, dtype=DTYPE)
    interpreter = Interpreter(program.ir, {"b": 2}, module_parameters(module))
    with torch.no_grad():
        (interpreted,) = interpreter.run("g", [Y])
        compiled = module(Y)
        for X in (interpreted, compiled):
            torch.testing.assert_close(X, Y + body(module, X), rtol=0, atol=1e-10)


def test_compiled_module_is_a_loop_over_the_blocks() -> None:
    """The compiled module equals a hand-written loop, its body reading the context too."""
    n, blocks = 6, (1, 2, 3)
    _, module = built(n, blocks, context=True)
    C, Y = torch.randn(4, 2, dtype=DTYPE), torch.randn(4, n, dtype=DTYPE)
    with torch.no_grad():
        state = torch.zeros_like(Y)
        for start, stop in ranges(blocks):
            update = Y + torch.tanh(state @ module.f.W + module.f.c + C @ module.f.V)
            state = torch.cat([state[:, :start], update[:, start:stop], state[:, stop:]], -1)
        torch.testing.assert_close(module(C, Y), state, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "blocks", "context"), [(6, (2, 1, 3), False),
                                                      (9, (4, 5), True)])
def test_backward_gradients_equal_autograd(n: int, blocks: tuple[int, ...],
                                           context: bool) -> None:
    """The compiled backward definition against torch.autograd of the compiled forward
    module, and the reference interpreter run on the backward definition, to 1e-5."""
    program, module = built(n, blocks, context)
    back = program["g"].grad()
    backward = program.to_torch_grad("g", module, dtype=DTYPE)
    inputs = ([torch.randn(3, 2, dtype=DTYPE)] if context else []) + \
        [torch.randn(3, n, dtype=DTYPE)]
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    output = module(*leaves)
    seed = torch.randn_like(output)
    parameters = dict(module.named_parameters())
    names = [name for name in ("f.W", "f.c", "f.V") if name in parameters]
    expected = torch.autograd.grad(output, [*leaves, *(parameters[k] for k in names)], seed)
    with torch.no_grad():
        found = backward(*inputs, seed)
        interpreter = Interpreter(back.program.ir, {"b": 3}, module_parameters(backward))
        reference = interpreter.run(back.name, [*inputs, seed])
    assert len(found) == len(reference) == len(expected) == len(inputs) + len(names)
    for want, got, judged in zip(expected, found, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(judged, want, rtol=1e-5, atol=1e-5)


def test_backward_pass_is_a_machine_on_the_reversed_blocks() -> None:
    program = ncd.load(source(6, (2, 1, 3)))
    back = program["g"].grad()
    machines = [t for t in ir.walk(back.ir.body) if isinstance(t, ir.Machine)]
    forward = [t for t in machines if not t.backward]
    reverse = [t for t in machines if t.backward]
    assert len(forward) == len(reverse) == 1  # the forward recomputed, then the reverse
    (machine,) = reverse
    assert machine.axis == forward[0].axis and machine.axis.name == "n"
    assert machine.blocks == (3, 1, 2)
    assert machine.ranges(6) == ((3, 6), (2, 3), (0, 2))  # from the end of the axis
    assert isinstance(machine.body, ir.Broadcasted) and isinstance(machine.body.op, ir.CallOp)
    assert machine.body.op.definition == machine.body_name == "f_grad"
    assert machine.body.op.instance == "f"  # the forward call site: the same parameters
    # The body is f's own backward definition, of the same family: the IR of f's reverse.
    assert program.ir.definition("f").name == "f"
    assert back.program.ir.definition("f_grad").outputs[0].array == \
        program.ir.definition("f").inputs[0].array


@pytest.mark.parametrize(("bracket", "message"), [
    ("n, 2, 2", "the blocks 2 + 2 = 4 do not cut `n`, which has 6 entries"),
    ("n, 2, 0, 4", "a block of a machine has a whole positive number of entries, not 0"),
    ("b, 3, 3", "the blocks of a machine need a fixed size of `b`"),
])
def test_a_bad_split_is_a_diagnostic(bracket: str, message: str) -> None:
    text = source(6, (6,)).replace("machine[n, 6]", f"machine[{bracket}]")
    with pytest.raises(NcdError) as caught:
        ncd.load(text)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E318" and message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 4
    assert diagnostic.hint


def test_a_body_that_changes_the_type_is_a_diagnostic() -> None:
    text = ("axis b, n = 4, m = 3\n"
            "def f(X: R[n]) -> R[m] { return linear[n -> m](X, W) }\n"
            "def g(Y: R[b, n]) -> R[b, n] { return machine[n, 2, 2](f, Y) }\n")
    with pytest.raises(NcdError) as caught:
        ncd.load(text)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E318" and "maps R[n] to R[m]" in diagnostic.message
    assert diagnostic.span is not None and (diagnostic.span.line, diagnostic.span.column) == \
        (3, 56)  # the definition named


def test_a_machine_inside_a_block_on_an_array_of_another_axis_order() -> None:
    """Y: R[n, b] where the lifted body gives R[b, n], the machine inside a block: compiled,
    interpreted, differentiated and drawn alike."""
    from ncd.renderers import RenderOptions, diagram

    program = ncd.load("axis b, n = 5\n"
                       "def f(X: R[n]) -> R[n] { return sigmoid(linear[n -> n](X, W)) }\n"
                       "def g(Y: R[n, b]) -> R[n, b] {\n"
                       '    block "B" { Z = machine[n, 2, 3](f, Y) + Y }\n    return Z\n}\n')
    torch.manual_seed(0)
    module = program["g"].to_torch(dtype=DTYPE)
    Y = torch.randn(5, 4, dtype=DTYPE)
    leaf = Y.clone().requires_grad_(True)
    output = module(leaf)
    with torch.no_grad():
        (interpreted,) = Interpreter(program.ir, {"b": 4}, module_parameters(module)).run(
            "g", [Y])
    torch.testing.assert_close(output.detach(), interpreted, rtol=0, atol=1e-12)
    seed = torch.randn_like(output)
    expected = torch.autograd.grad(output, [leaf, module.f.W], seed)
    with torch.no_grad():
        found = program.to_torch_grad("g", module, dtype=DTYPE)(Y, seed)
    for want, got in zip(expected, found, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    back = program["g"].grad()
    assert diagram(program.ir, "g", RenderOptions()).validate() == []
    assert diagram(back.program.ir, back.name, RenderOptions()).validate() == []
