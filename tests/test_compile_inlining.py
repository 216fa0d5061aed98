"""A call of a small definition written into its caller's `forward` (`compilers/inline_calls.py`,
`ncd.dataflow.inlinable_call`): where it fires (a call that permutes its arguments too) and
where it must not, that the state dict keeps its keys, that the module computes what
hand-written torch computes (any leading dims), and that the caller's intermediates are freed
inside it (the layer norm's output of `x + mlp(ln(x))`, which a submodule call's argument tuple
keeps alive)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from differential import compare_text
from measure import peak_forward_bytes
from torch import nn

import ncd

BLOCK = """
axis x, m = 8, f = 32

def mlp(X: R[m]) -> R[m] {
    H = linear[m -> f, bias](X, W_in, b_in)
    return linear[f -> m, bias](gelu(H), W_out, b_out)
}

def block(X: R[x, m]) -> R[x, m] {
    return X + mlp(layernorm[m](X, g, b))
}
"""


def forward_of(source: str, class_name: str) -> str:
    start = source.index(f"class {class_name}(nn.Module)")
    end = source.find("\nclass ", start + 1)
    body = source[start:end if end >= 0 else len(source)]
    return body[body.index("def forward"):]


class HandWritten(nn.Module):
    """`x + mlp(ln(x))` as one writes it with `nn.LayerNorm` and `nn.Linear`, the generated
    module's weights copied in."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc_in, self.fc_out = nn.Linear(8, 32), nn.Linear(32, 8)
        with torch.no_grad():
            self.norm.weight.copy_(source.g)
            self.norm.bias.copy_(source.b)
            for layer, weight, bias in ((self.fc_in, source.mlp.W_in, source.mlp.b_in),
                                        (self.fc_out, source.mlp.W_out, source.mlp.b_out)):
                layer.weight.copy_(weight.T)
                layer.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc_out(F.gelu(self.fc_in(self.norm(x))))


def scale(factor: float, *layers: nn.Module) -> None:
    """Every parameter of the hand-written layers times `factor`, in place: the reference for
    a module whose parameters were scaled."""
    with torch.no_grad():
        for layer in layers:
            for parameter in layer.parameters():
                parameter.mul_(factor)


def test_a_small_lifted_callee_is_written_into_its_caller() -> None:
    forward = forward_of(ncd.load(textwrap.dedent(BLOCK)).compile("block"), "Block")
    assert "# mlp, inlined" in forward and 'mlp = self._modules["mlp"]' in forward
    # read from the registries, not found by `nn.Module.__getattr__` at every read
    assert 'mlp._parameters["W_in"]' in forward and 'mlp._parameters["b_out"]' in forward
    assert "mlp.W_in" not in forward
    # the call remains for a submodule that is not the generated class as it is, or whose
    # registries do not hold the class's four parameters
    assert "type(mlp) is not Mlp" in forward and "mlp._forward_pre_hooks" in forward
    assert "len(mlp._parameters) != 4" in forward


def test_a_hooked_or_replaced_submodule_is_called() -> None:
    """A hook on the callee's submodule runs (FSDP shards through such hooks), and a
    replaced submodule is the one that runs: the body in place is only for the generated class
    as it is."""
    torch.manual_seed(0)
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    x = torch.randn(5, 8, dtype=torch.float64)
    expected = module(x)
    seen: list[torch.Tensor] = []
    handle = module.mlp.register_forward_hook(lambda _, args, out: seen.append(out))
    torch.testing.assert_close(module(x), expected)
    assert len(seen) == 1
    handle.remove()
    module.mlp = nn.Identity()  # type: ignore[assignment]
    torch.testing.assert_close(module(x), x + F.layer_norm(x, (8,), module.g, module.b))


def test_hooks_registered_for_every_module_see_every_submodule() -> None:
    """A hook registered for every module at once (a profiler's, a flop counter's) sees the
    callee's submodule, as `nn.Module.__call__` runs it: while one is registered the
    submodule is called; once it is removed the body runs in place again. The scan's step
    likewise."""
    torch.manual_seed(0)
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    expected = module(x)
    seen: list[str] = []
    for register in (nn.modules.module.register_module_forward_pre_hook,
                     nn.modules.module.register_module_forward_hook,
                     nn.modules.module.register_module_full_backward_pre_hook,
                     nn.modules.module.register_module_full_backward_hook):
        seen.clear()
        handle = register(lambda child, *_: seen.append(type(child).__name__))
        try:
            output = module(x)
            output.sum().backward()
        finally:
            handle.remove()
        torch.testing.assert_close(output, expected)
        assert "Mlp" in seen, (register.__name__, seen)
        seen.clear()
        module(x).sum().backward()
        assert not seen
    forward = forward_of(ncd.load(textwrap.dedent(BLOCK)).compile("block"), "Block")
    assert "nn_module._global_forward_hooks" in forward
    lstm = ncd.load(Path(__file__).resolve().parent.parent / "gallery" / "lstm.ncd",
                    sizes={"i": 3, "n": 4}).to_torch("lstm")
    steps: list[str] = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda child, *_: steps.append(type(child).__name__))
    try:
        lstm(torch.randn(6, 2, 3), torch.zeros(2, 4), torch.zeros(2, 4))
    finally:
        handle.remove()
    assert steps == ["LstmCell"] * 6 + ["Lstm"]


def test_parameters_kept_outside_the_registry_are_read_by_the_submodules_forward() -> None:
    """A submodule whose parameters are not in its `_parameters` runs its own `forward`, which
    reads them as attributes: a `DataParallel` replica keeps its copies as plain attributes,
    and a parameter can be deleted and set again as a plain tensor. The body in place, which
    reads the registry, would raise a `KeyError` on either."""
    torch.manual_seed(0)
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    x = torch.randn(5, 8, dtype=torch.float64)
    hand = HandWritten(module).double()
    torch.testing.assert_close(module(x), hand(x))
    # as `torch.nn.parallel.replicate` makes a replica, on the CPU
    replica = module.mlp._replicate_for_data_parallel()
    for name, parameter in module.mlp.named_parameters():
        setattr(replica, name, parameter * 2)
    assert not replica._parameters
    module.mlp = replica
    scale(2, hand.fc_in, hand.fc_out)
    torch.testing.assert_close(module(x), hand(x))
    # a fresh module, one parameter swapped for a plain tensor that a gradient reaches
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    hand = HandWritten(module).double()
    bias = module.mlp.b_out.detach().clone().requires_grad_()
    del module.mlp.b_out
    module.mlp.b_out = bias
    assert "b_out" not in module.mlp._parameters
    module(x).sum().backward()
    torch.testing.assert_close(bias.grad, torch.full((8,), 5.0, dtype=torch.float64))


def test_a_modules_own_parameters_are_bound_once_and_follow_what_holds_them() -> None:
    """The forward binds its own parameters to locals at its top: from `_parameters` for the
    class as generated, else as attributes, so that a parametrized module (its parameter a
    property of a new class), a replica that holds plain tensors, and `functional_call`
    compute with the tensors they hold."""
    torch.manual_seed(0)
    source = ncd.load(textwrap.dedent(BLOCK)).compile("block")
    forward = forward_of(source, "Block")
    assert "if type(self) is Block and len(self._parameters) == 2:" in forward
    assert 'g = self._parameters["g"]' in forward and "g = self.g" in forward
    body = forward.split("            b = self.b\n", 1)[1]  # after the bindings
    assert "F.layer_norm(X, (8,), g, b, eps=1e-05)" in body and "self.g" not in body
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    x = torch.randn(5, 8, dtype=torch.float64)
    hand = HandWritten(module).double()
    torch.testing.assert_close(module(x), hand(x))
    # parametrized: g is twice what the registry holds
    torch.nn.utils.parametrize.register_parametrization(module, "g", Doubled())
    with torch.no_grad():
        hand.norm.weight.mul_(2)
    torch.testing.assert_close(module(x), hand(x))
    # a replica that holds its parameters as plain attributes
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    replica = module._replicate_for_data_parallel()
    for name in ("g", "b"):
        setattr(replica, name, getattr(module, name) * 3)
    assert not replica._parameters
    hand = HandWritten(module).double()
    scale(3, hand.norm)
    torch.testing.assert_close(replica(x), hand(x))


class Doubled(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


def test_functional_call_reaches_the_parameters_read_in_place() -> None:
    """`torch.func.functional_call` swaps tensors into the registries, where the body in
    place reads them: the values and gradients are those of the tensors passed in."""
    torch.manual_seed(0)
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    x = torch.randn(5, 8, dtype=torch.float64)
    swapped = {name: (2 * parameter).detach().requires_grad_()
               for name, parameter in module.named_parameters()}
    out = torch.func.functional_call(module, swapped, (x,))
    hand = HandWritten(module).double()
    scale(2, hand.fc_in, hand.fc_out, hand.norm)
    torch.testing.assert_close(out, hand(x))
    out.sum().backward()
    hand(x).sum().backward()
    torch.testing.assert_close(swapped["mlp.W_in"].grad, hand.fc_in.weight.grad.T)
    torch.testing.assert_close(swapped["mlp.b_out"].grad, hand.fc_out.bias.grad)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_the_inlined_module_computes_what_hand_written_torch_computes(
        batch: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block").double()
    # the state dict keeps the callee's parameters under its call site
    assert set(module.state_dict()) == {"g", "b", "mlp.W_in", "mlp.b_in", "mlp.W_out",
                                        "mlp.b_out"}
    reference = HandWritten(module).double()
    x = torch.randn(*batch, 5, 8, dtype=torch.float64, requires_grad=True)
    y = module(x)
    torch.testing.assert_close(y, reference(x))
    (gradient,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad(reference(x).sum(), x)
    torch.testing.assert_close(gradient, expected)
    # the callee's class still runs on its own
    rows = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(module.mlp(rows), reference.fc_out(F.gelu(reference.fc_in(rows))))


def test_the_callers_intermediate_is_freed_inside_the_inlined_callee() -> None:
    """The layer norm's output dies at the first projection, as in the hand-written module:
    no more memory at the peak than that module holds."""
    torch.manual_seed(0)
    module = ncd.load(textwrap.dedent(BLOCK)).to_torch("block")
    x = torch.randn(4, 64, 8)
    assert peak_forward_bytes(module, [x]) <= peak_forward_bytes(HandWritten(module), [x])


def test_inlined_calls_agree_with_the_interpreter() -> None:
    """Lifted and plain calls, a callee with two outputs, one of them its input as it is, and
    a callee that calls another, with and without a leading batch dim."""
    text = textwrap.dedent("""
    axis x, m = 3, f = 4

    def scaled(X: R[m]) -> R[m] { return linear[m -> m](X, W) * 2 }
    def both(X: R[x, m]) -> (R[x, m], R[x, m]) { return scaled(X) + X, X }
    def outer(X: R[x, m]) -> R[x, m] {
        A, B = both(relu(X))
        return A * B + scaled(A)
    }
    """)
    source = ncd.load(text).compile("outer")
    # a callee that calls nothing is written in place; one that calls another is called
    outer = forward_of(source, "Outer")
    assert "# scaled, inlined" in outer and "# both, inlined" not in outer
    assert "# scaled, inlined" in forward_of(source, "Both")
    report = compare_text(text, sizes=3)["outer"]
    assert report.skipped is None and report.compared > 0
    assert not report.findings, report.findings


@pytest.mark.parametrize(("callee", "reason"), [
    ("def inner(X: R[m]) -> R[m] { return dropout[0.5](linear[m -> m](X, W)) }",
     "dropout reads the training flag of its own module"),
    ("def inner(X: R[m]) -> R[m] { return linear[m -> m](X, W) + linear[m -> m](X, V) * 0 "
     + "".join(f" + X * {k}" for k in range(40)) + " }", "more terms than the limit"),
])
def test_a_call_stays_a_submodule_call(callee: str, reason: str) -> None:
    text = f"axis x, m = 3\n{callee}\ndef outer(X: R[x, m]) -> R[x, m] {{ return inner(X) }}\n"
    forward = forward_of(ncd.load(text).compile("outer"), "Outer")
    assert "self.inner(" in forward and "inlined" not in forward, reason


def test_a_call_that_permutes_its_arguments_is_written_in_place() -> None:
    """The argument is moved into the callee's frame (the lifted axes first, then the callee's
    in its declared order: a view, as the submodule call passes it) and the output moved back;
    the module agrees with the interpreter (with and without a leading dim) and with torch."""
    text = textwrap.dedent("""
    axis x, y, m = 3, g = 2, p = 2

    def inner(X: R[m, x]) -> R[m, x] { return X * 2 }
    def turn(Z: R[x, p]) -> R[x, p] {
        Angle[x] = x
        return Z * cos(Angle)
    }
    def outer(X: R[x, y, m], Z: R[x, g, p]) -> (R[x, y, m], R[x, g, p]) {
        return inner(X), turn(Z)
    }
    """)
    program = ncd.load(text)
    outer = forward_of(program.compile("outer"), "Outer")
    assert "self.inner(" in outer and "self.turn(" in outer  # the hooked or replaced path
    assert "# inner, inlined" in outer and "# turn, inlined" in outer
    assert "x y m -> y m x, the callee's frame" in outer
    assert "x g p -> g x p, the callee's frame" in outer
    report = compare_text(text, sizes=3)["outer"]
    assert report.skipped is None and report.compared > 0
    assert not report.findings, report.findings
    module = program.to_torch("outer")
    x, z = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 2, 2)
    doubled, turned = module(x, z)
    torch.testing.assert_close(doubled, x * 2)
    angle = torch.arange(4.0)
    torch.testing.assert_close(turned, z * torch.cos(angle)[:, None, None])


ROTATIONS = """
axis x, g = 2, p = 2, q = p

def turn(Z: R[x, p]) -> R[x, p] {
    Angle[x] = x
    Swap[p, q] = p - q
    Zt[x, p] = sum(q) Swap[p, q] * Z[x, q]
    return Z * cos(Angle) + Zt * sin(Angle)
}
def both(A: R[x, g, p], B: R[x, p]) -> (R[x, g, p], R[x, p]) {
    return turn(A), turn(B)
}
def looped(A: R[x, g, p], B: R[x, p], D: R[x, p]) -> (R[x, g, p], R[x, p], R[x, p]) {
    C = turn(B)
    block "thrice" x3 shared {
        T = turn(A)
        A[x, g, p] = T[g, x, p] * 2
        B = turn(B) + D
    }
    return A, turn(B), C
}
"""


def test_tables_of_a_callee_inlined_twice_are_written_once() -> None:
    """What the callee computes from sizes alone (rotary's angles, cosines, sines) is written
    before its first call and read by the second, computed again only when the second call's
    argument has another device or dtype."""
    source = ncd.load(textwrap.dedent(ROTATIONS)).compile("both")
    forward = forward_of(source, "Both")
    first = forward.index("# turn, inlined")
    tables = forward[:forward.index("type(turn) is not Turn")]
    assert "torch.cos(" in tables and "torch.arange(" in tables
    assert "torch.cos(" not in forward[first:forward.index("turn's tables again")]
    assert forward.count("# turn, inlined") == 2 and forward.count("torch.cos(") == 2


ARGUMENTS = {  # the shapes of the arguments, and their dtypes: one for all, or several
    "both": ([(3, 5, 2, 2), (3, 5, 2)], [(torch.float64,) * 2,
                                         (torch.float64, torch.float32)]),
    # B turns float64 after one pass of the loop (D is): the third pass's first call must
    # not take the tables the second pass's last call made for B
    "looped": ([(3, 5, 2, 2), (3, 5, 2), (3, 5, 2)], [(torch.float64,) * 3,
                                                     (torch.float32,) * 2 + (torch.float64,)]),
}


@pytest.mark.parametrize("name", ["both", "looped"])
def test_tables_written_once_are_those_a_submodule_call_computes(name: str) -> None:
    """The inlined calls and the submodule calls (hooked) give the same arrays, bit for bit,
    when the arguments have one dtype and when they do not (a call's tables are then made
    again, in its dtype); in a loop, the tables are its own (written in each pass), and
    those before the loop are not read after it."""
    module = ncd.load(textwrap.dedent(ROTATIONS)).to_torch(name)
    shapes, choices = ARGUMENTS[name]
    for dtypes in choices:
        arguments = [torch.randn(shape, dtype=dtype)
                     for shape, dtype in zip(shapes, dtypes, strict=True)]
        inlined = module(*arguments)
        handles = [child.register_forward_hook(lambda *_: None)
                   for child in module.children()]
        called = module(*arguments)
        for handle in handles:
            handle.remove()
        for mine, theirs in zip(inlined, called, strict=True):
            assert mine.dtype == theirs.dtype
            assert torch.equal(mine, theirs)
    report = compare_text(textwrap.dedent(ROTATIONS), sizes=3)[name]
    assert report.skipped is None and report.compared > 0
    assert not report.findings, report.findings
    if name == "both":
        # torch.fx cannot test the arguments' dtypes: the traced graph makes the tables again
        traced = torch.fx.symbolic_trace(module)
        for mine, theirs in zip(traced(*arguments), module(*arguments), strict=True):
            assert torch.equal(mine, theirs)
