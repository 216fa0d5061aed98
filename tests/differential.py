"""Differential testing: a compiled module against the reference interpreter (`ncd.semantics`).

`compare_definition` builds the module of one definition, gives every parameter random values,
picks sizes for the program's symbolic axes (several sets of them), makes random inputs, and
holds the module's outputs to the interpreter's, entry by entry, in float64:

- on positive inputs and on normal inputs (positive ones keep `log` and `sqrt` finite);
- with a leading batch dim of two (the batch-lift law: slicing commutes with the module);
- with a hook on every submodule, so that each call and scan step the module writes in place
  runs as the submodule call it stands for (the code a hooked or replaced submodule runs);
- where the interpreter finds a read outside an array (`BoundsError`), the module must refuse
  the sizes with a `ValueError` too, never return numbers.

Each disagreement is a `Finding`; `tests/test_semantics_fuzz.py` runs a bounded number of
generated programs through it, `bench/fuzz.py --semantic N` a long run.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from ncd.compilers.einsum import matrix_form_of, reduction_of
from ncd.compilers.naming import sanitize, snake_case
from ncd.compilers.pytorch import CompileError, build_module

import ncd
from ncd import ir
from ncd.convolution import find_windows
from ncd.counts import find_counts
from ncd.dataflow import inlinable_call, inlinable_step
from ncd.expert_sums import find_expert_sums
from ncd.muladd import find_muladds
from ncd.ops.contraction import (
    linear_as_addmm,
    linear_fuses,
    linear_is_pointwise,
    weight_rows_first,
)
from ncd.recurrent_cells import recognise
from ncd.semantics import (
    BlockCopy,
    BoundsError,
    CallSite,
    EachIndex,
    Interpreter,
    InterpreterError,
    MalformedTerm,
    ParameterPath,
    SizeError,
    resolve_sizes,
)
from ncd.sizes import ProgramSizes

SYMBOL_VALUES = (1, 2, 3, 4, 5, 6)
SEMANTIC_SEED_OFFSET = 20_000_000  # the differential corpus has seeds of its own
RTOL, ATOL = 1e-7, 1e-9
HUGE = 1e6  # an intermediate this large makes a disagreement ill-conditioned (see semantics)


@dataclass(frozen=True)
class Finding:
    """A disagreement between a compiled module and the interpreter."""

    kind: str  # mismatch, module-error, silent-out-of-bounds, malformed, parameters,
    # batch, hooked
    definition: str
    sizes: dict[str, int]
    message: str

    def __str__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(self.sizes.items())) or "no symbols"
        return f"{self.kind} in {self.definition} ({sizes}): {self.message}"


@dataclass
class Report:
    """What `compare_definition` did: how many runs were compared, and what disagreed."""

    compared: int = 0
    refused: int = 0  # size choices that both sides refused (an out-of-bounds read)
    ill_conditioned: int = 0  # outputs whose disagreement is below the module's own wobble
    skipped: str | None = None  # why the definition could not be compared at all
    findings: list[Finding] = field(default_factory=list)


def free_symbols(program: ir.Program) -> list[str]:
    return [a.name for a in program.axes if a.size == ir.SizeSym(name=a.name)]


def size_choices(program: ir.Program, rng: random.Random, count: int,
                 limit: int = 40) -> list[dict[str, int]]:
    """Up to `count` distinct assignments of the free symbols under which every axis has a
    positive size of at most `limit` (so the slow interpreter stays fast)."""
    symbols = free_symbols(program)
    if not symbols:
        return [{}]
    found: list[dict[str, int]] = []
    for _ in range(60 * count):
        choice = {s: rng.choice(SYMBOL_VALUES) for s in symbols}
        if choice in found:
            continue
        try:
            env = resolve_sizes(program, choice)
        except SizeError:
            continue
        if max(env.values()) <= limit:
            found.append(choice)
            if len(found) == count:
                break
    return found


def module_parameters(module: torch.nn.Module) -> Callable[[ParameterPath, ir.Parameter],
                                                          torch.Tensor]:
    """The interpreter's view of a module's parameters, found by the naming rules of
    docs/compiling.md: a call site is the submodule named after its instance, a block of
    copies an `nn.ModuleList` named after its title, and a Python-unsafe name gets a `p`
    prefix (dunders) or trailing underscores (clashes)."""

    def child(owner: torch.nn.Module, base: str) -> torch.nn.Module:
        for underscores in range(8):
            found = owner._modules.get(base + "_" * underscores)
            if found is not None:
                return found
        raise KeyError(f"no submodule {base!r} in {type(owner).__name__}")

    def source(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        owner = module
        for step in path:
            match step:
                case CallSite(instance=instance):
                    owner = child(owner, sanitize(instance, "module"))
                case BlockCopy(title=title, index=index):
                    copies = child(owner, snake_case(title))
                    assert isinstance(copies, torch.nn.ModuleList)
                    owner = copies[index]
                case EachIndex(index=index):
                    assert isinstance(owner, torch.nn.ModuleList)
                    owner = owner[index]
        base = parameter.name
        if base.startswith("__") and base.endswith("__"):
            base = f"p{base}"
        for underscores in range(8):
            found = owner._parameters.get(base + "_" * underscores)
            if found is None:
                found = owner._buffers.get(base + "_" * underscores)
            if found is not None:
                return found
        raise KeyError(f"no parameter {parameter.name!r} in {type(owner).__name__}")

    return source


def random_input(array: ir.ArrayType, env: dict[str, int], generator: torch.Generator,
                 positive: bool, lead: Sequence[int] = ()) -> torch.Tensor:
    shape = [*lead, *(env_size(a.size, env) for a in array.shape.axes)]
    match array.dtype.kind:
        case "R":
            if positive:
                return torch.rand(shape, generator=generator, dtype=torch.float64) * 1.5 + 0.5
            return torch.randn(shape, generator=generator, dtype=torch.float64)
        case "N":
            bound = env_size(array.dtype.bound, env) if array.dtype.bound is not None else 4
            return torch.randint(0, max(bound, 1), shape, generator=generator)
        case "B":
            return torch.rand(shape, generator=generator) < 0.5
    raise AssertionError(array.dtype.kind)


def env_size(size: ir.SizeExpr, env: dict[str, int]) -> int:
    value = ir.size_value(size, env)
    assert value is not None, size
    return value


def as_tuple(result: object) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    assert isinstance(result, tuple)
    return result


def agree(expected: torch.Tensor, actual: torch.Tensor,
          after_special: bool = False) -> str | None:
    """None when the two tensors agree, else what differs.

    Integers and booleans must be equal. Reals must have their NaNs and infinities at the
    same places, and the finite entries must agree to `RTOL` of the largest finite entry
    (plus `ATOL`): rounding differences that a long recurrence amplifies stay far below that,
    a wrong result does not. `after_special`: an intermediate of the interpreter held a NaN
    or an infinity, which follow no algebraic identity (`0 * NaN` is NaN, where a fused
    kernel skips a masked entry): only the entries finite in both are compared.
    """
    if tuple(expected.shape) != tuple(actual.shape):
        return f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if expected.dtype == torch.bool or not expected.is_floating_point():
        if not torch.equal(expected.to(torch.int64), actual.to(torch.int64)):
            return "different integer entries"
        return None
    actual = actual.to(expected.dtype)
    finite = torch.isfinite(expected)
    if after_special:
        finite &= torch.isfinite(actual)
    elif not torch.equal(finite, torch.isfinite(actual)):
        return "NaNs or infinities at different places"
    special = ~finite
    if not after_special and not torch.equal(expected[special].nan_to_num(0.0, 1.0, -1.0),
                                             actual[special].nan_to_num(0.0, 1.0, -1.0)):
        return "different infinities"
    if not finite.any():
        return None
    gap = (actual[finite] - expected[finite]).abs().max().item()
    scale = expected[finite].abs().max().item()
    if gap > ATOL + RTOL * scale:
        return f"values differ by up to {gap:.3g} (largest entry {scale:.3g})"
    return None


def compare_definition(program: ir.Program, name: str, *, seed: int = 0,
                       sizes: int = 2) -> Report:
    """Hold the compiled module of definition `name` to the interpreter (see the module doc)."""
    report = Report()
    rng = random.Random(seed)
    definition = program.definition(name)
    try:
        module = build_module(program, name, dtype=torch.float64)
    except CompileError as error:
        report.skipped = f"not compilable as a module: {error}"
        return report
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dtype == torch.bool:  # a Boolean parameter: a fair coin per entry
                parameter.copy_(torch.rand(parameter.shape, generator=generator) < 0.5)
                continue
            parameter.copy_(torch.randn(parameter.shape, generator=generator,
                                        dtype=parameter.dtype))
        for buffer in module.buffers():  # positive: a running variance is one
            buffer.copy_(torch.rand(buffer.shape, generator=generator, dtype=buffer.dtype) + 0.5)
    parameters = module_parameters(module)
    seen: dict[int, tuple[torch.Tensor, ParameterPath, str]] = {}

    def recording(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        tensor = parameters(path, parameter)
        _, *owner = seen.setdefault(id(tensor), (tensor, path, parameter.name))
        if owner != [path, parameter.name]:
            raise SharedParameter(f"{parameter.name} at {path} and {owner[1]} at {owner[0]} "
                                  f"are one tensor in the module")
        return tensor.detach()

    choices = size_choices(program, rng, sizes)
    if not choices:
        report.skipped = "no sizes of the symbols within the limits"
        return report
    for symbols in choices:
        env = resolve_sizes(program, symbols)

        def finding(kind: str, message: str, symbols: dict[str, int] = symbols) -> None:
            report.findings.append(Finding(kind, name, dict(symbols), message))

        interpreter = Interpreter(program, symbols, recording)
        trials = [[random_input(v.array, env, generator, positive) for v in definition.inputs]
                  for positive in (True, False)]
        expected: list[tuple[torch.Tensor, ...]] = []
        huge: list[bool] = []  # per trial: whether an intermediate reached HUGE
        special: list[bool] = []  # per trial: whether an intermediate held a NaN or infinity
        try:
            with torch.no_grad():
                for inputs in trials:
                    expected.append(interpreter.run(name, inputs))
                    huge.append(interpreter.largest >= HUGE)
                    special.append(interpreter.nonfinite)
                    interpreter.largest = 0.0
                    interpreter.nonfinite = False
        except BoundsError as error:
            try:
                module(*trials[0])
            except ValueError:
                report.refused += 1
                continue
            except Exception as failure:
                finding("module-error", f"{type(failure).__name__}: {failure} (the interpreter "
                        f"reads out of bounds: {error})")
                continue
            finding("silent-out-of-bounds", f"the module returns numbers; {error}")
            continue
        except SharedParameter as error:
            finding("parameters", str(error))
            continue
        except (MalformedTerm, KeyError) as error:
            finding("malformed", f"{type(error).__name__}: {error}")
            continue
        except InterpreterError as error:
            finding("malformed", f"{type(error).__name__}: {error}")
            continue
        try:
            actual = [as_tuple(module(*inputs)) for inputs in trials]
            # With a hook on every submodule, each call and scan step written in place runs
            # as the submodule call it stands for (`compilers/inline_calls.py`, `scans.py`):
            # that code is held to the interpreter too.
            hooks = [child.register_forward_pre_hook(lambda *_: None)
                     for child in module.modules() if child is not module]
            try:
                called = as_tuple(module(*trials[0])) if hooks else None
            finally:
                for hook in hooks:
                    hook.remove()
            batched = None
            if definition.inputs:
                # Without autograd: a sum of a product runs as one call then (compilers/
                # muladd.py), the two operations above, and both are held to the interpreter.
                with torch.no_grad():
                    batched = as_tuple(module(*(torch.stack([a, b])
                                                for a, b in zip(*trials, strict=True))))
        except Exception as failure:
            finding("module-error", f"{type(failure).__name__}: {failure}"[:400])
            continue
        for index, (want_all, got_all) in enumerate(zip(expected, actual, strict=True)):
            if len(want_all) != len(got_all):
                finding("mismatch", f"{len(got_all)} outputs, expected {len(want_all)}")
                break
            for position, (w, g) in enumerate(zip(want_all, got_all, strict=True)):
                problem = agree(w, g, special[index])
                if problem and (huge[index] or rounding_sensitive(
                        module, trials[index], position, w, g, generator)):
                    report.ill_conditioned += 1
                elif problem:
                    kind = "positive" if index == 0 else "normal"
                    finding("mismatch", f"output {position} on {kind} inputs: {problem}")
        for position, got in enumerate(called or ()):
            problem = agree(expected[0][position], got, special[0])
            if problem and not (huge[0] or rounding_sensitive(
                    module, trials[0], position, expected[0][position], got, generator)):
                finding("hooked", f"output {position} with every submodule hooked (called, "
                        f"none written in place): {problem}")
        if batched is not None:
            for position, tensor in enumerate(batched):
                for index in (0, 1):
                    want = expected[index][position]
                    got = tensor[index] if tensor.dim() == want.dim() + 1 else tensor
                    problem = agree(want, got, special[index])
                    if problem and (huge[index] or rounding_sensitive(
                            module, trials[index], position, want, got, generator)):
                        report.ill_conditioned += 1
                    elif problem:
                        finding("batch", f"output {position}, batch element {index}: {problem}")
        report.compared += 1
    return report


def rounding_sensitive(module: torch.nn.Module, inputs: list[torch.Tensor], position: int,
                       want: torch.Tensor, got: torch.Tensor,
                       generator: torch.Generator) -> bool:
    """Whether a disagreement between the interpreter (`want`) and the module (`got`) on
    output `position` says nothing: the module disagrees with itself (by `agree`) when its real
    inputs and its parameters are scaled by `1 + 1e-12 * noise`, by at least a ten-thousandth
    of the gap (so a wrong result, far larger than the module's own wobble, still counts).
    That is what cancellation does, a log of rounding noise, or a normalisation of an array
    whose entries differ by rounding only."""
    if not got.is_floating_point():
        return False
    with torch.no_grad():
        baseline = as_tuple(module(*inputs))[position]
    finite = torch.isfinite(want) & torch.isfinite(got)
    gap = (want - got.to(want.dtype))[finite].abs().max().item() if finite.any() else 0.0
    def nudged(x: torch.Tensor) -> torch.Tensor:
        return x * (1 + 1e-12 * torch.randn(x.shape, generator=generator, dtype=x.dtype))

    saved = {name: p.detach().clone() for name, p in module.named_parameters()}
    for _ in range(3):
        moved = [nudged(x) if x.is_floating_point() else x for x in inputs]
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.copy_(nudged(parameter))
            wobbled = as_tuple(module(*moved))[position]
            for name, parameter in module.named_parameters():
                parameter.copy_(saved[name])
        if agree(baseline, wobbled) is None:
            continue
        both = torch.isfinite(baseline) & torch.isfinite(wobbled)
        wobble = (baseline - wobbled)[both].abs().max().item() if both.any() else 0.0
        if not torch.equal(torch.isfinite(baseline), torch.isfinite(wobbled)) or \
                gap <= 1e4 * wobble:
            return True
    # Rounding noise that an operation contracts (softmax after softmax) and a later one
    # blows up (a normalisation of entries that differ by rounding only) does not move with
    # the inputs; it moves with the precision: the same module in float32 is far off.
    single = copy.deepcopy(module).to(torch.float32)
    with torch.no_grad():
        rounded = as_tuple(single(*(x.to(torch.float32) if x.is_floating_point() else x
                                     for x in inputs)))[position].to(baseline.dtype)
    if not torch.equal(torch.isfinite(baseline), torch.isfinite(rounded)):
        return True
    both = torch.isfinite(baseline)
    if not both.any():
        return False
    drift = (baseline - rounded)[both].abs().max().item()
    return drift > 1e-3 * (1 + baseline[both].abs().max().item())


class SharedParameter(InterpreterError):
    """Two parameters that the term keeps apart are one tensor in the module."""


def reads_out_of_bounds(program: ir.Program, symbols: dict[str, int], seed: int) -> bool:
    """Whether the interpreter reads out of bounds running some definition of the program with
    these sizes (random parameters and inputs: where a term reads does not depend on them)."""
    generator = torch.Generator().manual_seed(seed)
    env = resolve_sizes(program, symbols)

    def parameters(path: ParameterPath, parameter: ir.Parameter) -> torch.Tensor:
        shape = [env_size(a.size, env) for a in parameter.array.shape.axes]
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    interpreter = Interpreter(program, symbols, parameters)
    for definition in program.definitions:
        inputs = [random_input(v.array, env, generator, True) for v in definition.inputs]
        try:
            with torch.no_grad():
                interpreter.run(definition.name, inputs)
        except BoundsError:
            return True
    return False


def semantic_program(seed: int) -> str:
    """Program `seed` of the differential corpus (the bounded test runs the first ones)."""
    from fuzz_strategies import ProgramGenerator, RandomChooser

    return ProgramGenerator(RandomChooser(SEMANTIC_SEED_OFFSET + seed)).program()


STRUCTURAL_CONSTRUCTS = (
    "symbolic sizes", "negative coefficient", "stride or dilation", "offset", "window",
    "diagonal", "broadcast (zero coefficients)", "call with a batch lift", "repeated block",
    "repeated block, shared", "copy before a repeated block", "scan",
    "scan with permuted state axes", "scan, step inlined", "scan, fused LSTM or GRU cell",
    "call with parameters for each index", "convolution as a kernel call",
    "pool as a kernel call", "padding inside a kernel call", "machine",
    "count of the places of an index array", "call written in place",
    "sum of a product as one call", "linear map with a bias, one addmm of its rows",
    "linear map of a weight declared (out, in), read as stored",
    "contraction of several trailing axes, or into several axes, as one matrix product",
    "one fixed index, as a select", "sum of one array, as a reduction",
)
"""Besides one per operator kind (`op einsum`, ...): what the differential corpus must cover."""


def compare_text(text: str, *, seed: int = 0, sizes: int = 2, every_definition: bool = True,
                 program: ir.Program | None = None) -> dict[str, Report]:
    """`compare_definition` for the definitions of a program's text (the last one, or all);
    `program` is the text's checked program where the caller has loaded it already.

    A definition whose parameters have symbolic axes cannot be built as a module with those
    sizes left open; it is compared with its symbols fixed on the command line's way
    (`sizes=` of `ncd.load`, like `-D`), once per choice of them.
    """
    from ncd.api import load
    from ncd.diagnostics import NcdError

    if program is None:
        program = load(text).ir
    names = [d.name for d in program.definitions]
    if not every_definition:
        names = names[-1:]
    reports: dict[str, Report] = {}
    rng = random.Random(seed)
    for index, name in enumerate(names):
        report = compare_definition(program, name, seed=seed + index, sizes=sizes)
        if report.skipped is not None and "symbolic" in report.skipped:
            fixed = Report()
            for choice in size_choices(program, rng, sizes):
                try:
                    fixed_program = load(text, sizes=choice).ir
                except NcdError as error:
                    # With these sizes the checker sees a read out of bounds: some definition
                    # must read out of bounds too.
                    if reads_out_of_bounds(program, choice, seed):
                        fixed.refused += 1
                    else:
                        fixed.findings.append(Finding(
                            "refused-valid-sizes", name, dict(choice),
                            f"fixing the sizes at load gives {str(error).splitlines()[0]}, "
                            "but every definition reads inside its arrays"))
                    continue
                again = compare_definition(fixed_program, name, seed=seed + index, sizes=1)
                if again.skipped is not None:
                    fixed.skipped = again.skipped
                    continue
                fixed.compared += again.compared
                fixed.refused += again.refused
                fixed.ill_conditioned += again.ill_conditioned
                fixed.findings.extend(
                    Finding(f.kind, f.definition, {**choice, **f.sizes}, f.message + " (sizes "
                            "fixed at load)") for f in again.findings)
            if fixed.compared or fixed.findings:
                fixed.skipped = None
            elif fixed.skipped is None:
                fixed.skipped = report.skipped
            report = fixed
        reports[name] = report
    return reports


def constructs(program: ir.Program) -> set[str]:
    """The constructs a program uses, as named in docs/reliability.md (for coverage counts)."""
    found: set[str] = set()
    sizes = ProgramSizes(program.axes)
    if free_symbols(program):
        found.add("symbolic sizes")
    for definition in program.definitions:
        # As the compiler finds them (compilers/counts.py, compilers/expert_sums.py).
        if find_counts(definition.body):
            found.add("count of the places of an index array")
        if find_muladds(definition.body):  # compilers/muladd.py (in a scan's step, fewer)
            found.add("sum of a product as one call")
        if find_expert_sums(definition.body):
            found.add("weighted sum of experts")
        if _shares_tables(definition, program):
            found.add("callee written in place twice, its tables written once")
        for term in ir.walk(definition.body):
            match term:
                case ir.Reindexing(eta=eta):
                    found |= _map_constructs(eta)
                case ir.Broadcasted(op=op):
                    found.add(f"op {op.kind}")
                    for port in (*term.inputs, *term.params):
                        found |= _map_constructs(port.reindexing)
                        if len(port.reindexing.codomain.axes) < len(term.degree.axes):
                            found.add("broadcast (zero coefficients)")
                    if isinstance(op, ir.CallOp) and term.degree.axes:
                        found.add("call with a batch lift")
                    if isinstance(op, ir.CallOp) and op.each is not None:
                        found.add("call with parameters for each index")
                    if isinstance(op, ir.CallOp) and inlinable_call(term, program) is not None:
                        found.add("call written in place")  # as compilers/inline_calls.py
                    # As ncd/ops/contraction.py, where the output sizes are fixed (a symbolic
                    # one may be fixed narrow later, to compare a definition with parameters
                    # over it)
                    if isinstance(op, ir.LinearOp) and linear_fuses(op, term) and all(
                            sizes.value(term.outputs[0].array.shape.axis(n).size) is not None
                            for n in op.outputs) and linear_as_addmm(op, term, sizes.value):
                        found.add("linear map with a bias, one addmm of its rows")
                    if isinstance(op, ir.LinearOp) and weight_rows_first(op, term) and (
                            linear_fuses(op, term) or linear_is_pointwise(op, term)):
                        found.add("linear map of a weight declared (out, in), read as stored")
                    if isinstance(op, ir.EinsumOp) and (form := matrix_form_of(term)) and (
                            form.count > 1 or len(form.outputs) > 1):
                        found.add("contraction of several trailing axes, or into several axes, "
                                  "as one matrix product")  # as compilers/einsum.py
                    if isinstance(op, ir.EinsumOp) and reduction_of(term):
                        found.add("sum of one array, as a reduction")
                case ir.Block(repeat=repeat, shared=shared):
                    if repeat > 1:
                        found.add("repeated block, shared" if shared else "repeated block")
                case ir.Scan(step=step, carries=carries):
                    found.add("scan")
                    inlined = inlinable_step(term, program, sizes)
                    if inlined is not None:  # as the compiler lowers it (compilers/scans.py)
                        found.add("scan, step inlined")
                        if recognise(inlined[2], carries, sizes) is not None and \
                                len(term.dom) == carries + 1:
                            found.add("scan, fused LSTM or GRU cell")
                    declared = step.dom
                    if isinstance(step, ir.Broadcasted) and isinstance(step.op, ir.CallOp):
                        declared = program.definition(step.op.definition).domain
                    if any(a.names != b.names for a, b in zip(term.dom[:carries], declared,
                                                              strict=False)):
                        found.add("scan with permuted state axes")
                case ir.Machine(backward=backward):
                    found.add("backward machine" if backward else "machine")
                case ir.Composed(terms=terms):
                    for window in find_windows(term, sizes):  # as compilers/convolution.py
                        found.add("convolution as a kernel call" if window.kind == "conv"
                                  else "pool as a kernel call")
                        if window.pads:
                            found.add("padding inside a kernel call")
                    for before, after in itertools.pairwise(terms):
                        if isinstance(after, ir.Product) and isinstance(before, ir.Rearrangement) \
                                and len(set(before.mapping)) < len(before.mapping) and any(
                                    isinstance(t, ir.Block) and t.repeat > 1
                                    for t in after.terms):
                            found.add("copy before a repeated block")
                case ir.Identity() | ir.Rearrangement() | ir.Product():
                    pass
    return found


def _shares_tables(definition: ir.Definition, program: ir.Program) -> bool:
    """Whether a callee written in place twice or more in `definition` makes arrays from sizes
    alone (a term without inputs or parameters), which the compiler writes once for its calls
    (compilers/inline_calls.py)."""
    calls = Counter(callee.name for term in ir.walk(definition.body)
                    if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp)
                    and (callee := inlinable_call(term, program)) is not None)
    return any(count > 1 and any(isinstance(part, ir.Broadcasted) and not part.dom and
                                 not part.params for part in ir.walk(program.definition(name).body))
               for name, count in calls.items())


def _map_constructs(eta: ir.StrideMorphism) -> set[str]:
    found = set()
    for row, offset in zip(eta.matrix, eta.offset, strict=True):
        if any(c < 0 for c in row):
            found.add("negative coefficient")
        if any(c > 1 for c in row):
            found.add("stride or dilation")
        if offset:
            found.add("offset")
        if sum(1 for c in row if c) > 1:
            found.add("window")
    columns = [sum(1 for row in eta.matrix if row[i]) for i in range(len(eta.domain.axes))]
    if any(count > 1 for count in columns):
        found.add("diagonal")
    # `X.select(d, i)` (compilers/views.py): one row is a fixed index, every other reads a whole
    # axis of the same size as it is
    fixed = [j for j, row in enumerate(eta.matrix) if not any(row)]
    whole = [j for j, (row, offset) in enumerate(zip(eta.matrix, eta.offset, strict=True))
             if offset == 0 and sorted(row) == [0] * (len(row) - 1) + [1] and
             eta.domain.axes[row.index(1)].size == eta.codomain.axes[j].size]
    if len(fixed) == 1 and len(fixed) + len(whole) == len(eta.matrix):
        found.add("one fixed index, as a select")
    return found


@dataclass
class GradientRun:
    """One run of a forward module under autograd beside the compiled backward module of the
    same definition, on the same random inputs and output gradients (float64)."""

    inputs: list[torch.Tensor]
    seeds: list[torch.Tensor]  # the output gradients
    expected: tuple[torch.Tensor | None, ...]  # autograd's, for `gradient_of`
    found: tuple[torch.Tensor, ...]  # the backward module's
    forward: torch.nn.Module
    backward: torch.nn.Module


def autograd_beside_backward(program: ncd.Program, back: ncd.Definition, name: str,
                             gradient_of: Sequence[str], seed: int = 0,
                             lead: Sequence[int] = ()) -> GradientRun:
    """`name`'s gradients by `torch.autograd` and by its compiled backward definition `back`,
    with respect to its real inputs and then the parameters named in `gradient_of` (the
    backward definition's own order), the inputs given the leading dims `lead`."""
    definition = program.ir.definition(name)
    torch.manual_seed(seed)
    forward = program[name].to_torch(dtype=torch.float64)
    backward = back.program.to_torch_grad(name, forward, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    env = resolve_sizes(program.ir, {})
    inputs = [random_input(v.array, env, generator, False, lead) for v in definition.inputs]
    leaves = [x.clone().requires_grad_(True) if x.is_floating_point() else x for x in inputs]
    result = forward(*leaves)
    outputs = result if isinstance(result, tuple) else (result,)
    seeds = [torch.randn(o.shape, dtype=torch.float64, generator=generator) for o in outputs]
    real = [x for x in leaves if x.is_floating_point()]
    parameters = dict(forward.named_parameters())
    wrt = real + [parameters[key] for key in gradient_of[len(real):]]
    expected = torch.autograd.grad(outputs, wrt, seeds, allow_unused=True)
    with torch.no_grad():
        found = backward(*inputs, *seeds)
    return GradientRun(inputs, seeds, expected, found if isinstance(found, tuple) else (found,),
                       forward, backward)
