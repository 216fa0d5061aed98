"""Generators of `.ncd` inputs for fuzzing: valid programs, and corruptions of them.

`ProgramGenerator` writes a random *valid* program: axes with constant, symbolic and derived
sizes; definitions chaining operators of `ncd.operators.OPERATORS`; tensor equations with
affine indices (contractions, transposes, windows, strides, fixed indices, diagonals);
blocks (single, repeated, coloured, shared); calls of earlier definitions (with batch lifts);
scans; point-free definitions; and, now and then, names that are Python keywords, builtins,
dunders or attributes of `torch.nn.Module`, so that the compiler's name mapping is exercised.
It tracks every array's axes as it goes, so each operator is applied where it type-checks.

`mutate` corrupts a program the way an editor or a person does: tokens deleted, duplicated,
swapped or replaced, characters deleted, inserted or replaced (with brackets, quotes, non-ASCII
letters, control characters).

Both are driven by a `Chooser`, so the same code serves hypothesis (`programs()`,
`mutated_programs()`: shrinkable) and the long-running `bench/fuzz.py` (`RandomChooser`: a
seeded `random.Random`, fast and reproducible).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, get_args

from hypothesis import strategies as st

from ncd import ir
from ncd.operators import OPERATORS

T = TypeVar("T")

Axes = tuple[str, ...]


class Chooser(Protocol):
    def integer(self, low: int, high: int) -> int: ...

    def chance(self, probability: float) -> bool: ...


def choice(chooser: Chooser, options: Sequence[T]) -> T:
    return options[chooser.integer(0, len(options) - 1)]


def subset(chooser: Chooser, options: Sequence[T], low: int, high: int) -> list[T]:
    """Between `low` and `high` distinct elements of `options`, in a random order."""
    pool = list(options)
    count = chooser.integer(min(low, len(pool)), min(high, len(pool)))
    picked: list[T] = []
    for _ in range(count):
        picked.append(pool.pop(chooser.integer(0, len(pool) - 1)))
    return picked


class RandomChooser:
    """Choices from a seeded `random.Random`: one seed, one program, every time."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.random.randint(low, high)

    def chance(self, probability: float) -> bool:
        return self.random.random() < probability


class DataChooser:
    """Choices drawn through hypothesis, so that failures shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def chance(self, probability: float) -> bool:
        return self.data.draw(st.integers(0, 999)) < int(probability * 1000)


# ---------------------------------------------------------------------------------------
# valid programs
# ---------------------------------------------------------------------------------------

AXIS_NAMES = ("a", "b", "c", "d", "e", "g", "h", "i", "j", "k", "m", "n", "q", "s", "t", "u",
              "v", "w", "x", "y", "z")

# Valid ncd names that are awkward in Python: keywords, soft keywords, builtins, dunders,
# the generated code's own names and attributes of `torch.nn.Module`.
TRICKY_NAMES = ("lambda", "class", "None", "True", "False", "self", "torch", "nn", "F",
                "math", "match", "case", "type", "print", "eval", "exec", "compile", "open",
                "__import__", "__builtins__", "__name__", "_", "__", "forward", "training",
                "state_dict", "parameters", "cuda", "to", "reset_parameters", "_parameters",
                "_modules", "os", "sys", "subprocess", "X_1", "getattr", "super", "object")

# Python's own attribute names: the generated module must register them under safe names.
DUNDER_PARAMETER_NAMES = ("__class__", "__dict__", "__init__", "__doc__", "__module__")

UNARY: tuple[str, ...] = ir.ELEMENTWISE_FUNCTIONS
REDUCTIONS: tuple[str, ...] = get_args(ir.ReduceFunction)
COLOURS = ("purple", "blue", "#336699", "#abc", "red", "green", "orange")
TITLES = ("Layer", "Attention", "Feed forward", "Norm", "Mixer", "Block 2", "Residual",
          "A \\\"quoted\\\" title", "<b>markup</b> & more", "x6", "ünïcödé ✓", "")


@dataclass
class Array:
    name: str
    axes: Axes


@dataclass
class DefInfo:
    name: str
    inputs: list[Axes]
    outputs: list[Axes]
    stateful: bool = False
    """Uses `batchnorm` (itself or through a call): it cannot be lifted over extra axes."""
    has_params: bool = False
    """Whether it declares parameters or calls a definition that does (`f[each e]` needs it)."""


@dataclass
class Body:
    """The statements of a definition being written, and the arrays in scope."""

    lines: list[str] = field(default_factory=list)
    scope: list[Array] = field(default_factory=list)
    params: set[str] = field(default_factory=set)
    conditions: list[Array] = field(default_factory=list)
    """Boolean inputs `C: B[...]`, read by `where`."""
    indent: str = "    "
    calls_params: bool = False
    """Whether it calls a definition that has parameters."""

    def emit(self, line: str) -> None:
        self.lines.append(self.indent + line)


def union(*arrays: Array) -> Axes:
    """The axes of an entrywise operation's result: in the order first seen."""
    return tuple(dict.fromkeys(a for array in arrays for a in array.axes))


def replace(axes: Axes, old: Sequence[str], new: Sequence[str]) -> Axes:
    """`axes` with `old` removed and `new` put where the first of `old` stood (the order the
    elaborator gives the results of `linear`, `reshape`, `concat` and `split`)."""
    first = min(i for i, a in enumerate(axes) if a in old)
    kept = [a for a in axes if a not in old]
    position = sum(1 for a in axes[:first] if a not in old)
    return (*kept[:position], *new, *kept[position:])


class ProgramGenerator:
    """Writes one random valid program; `features` (see `ALL_FEATURES`) switch parts off."""

    ALL_FEATURES = frozenset({"blocks", "calls", "scan", "pointfree", "equations", "structure",
                              "tricky_names", "docstrings", "comments", "symbolic",
                              "param_data", "batchnorm", "training", "machine"})

    def __init__(self, chooser: Chooser, features: frozenset[str] = ALL_FEATURES, *,
                 max_definitions: int = 4,
                 max_statements: int = 7) -> None:
        self.c = chooser
        self.features = features
        self.max_definitions = max_definitions
        self.max_statements = max_statements
        self.sizes: dict[str, int | None] = {}  # axis name -> constant size (None: symbolic)
        self.axis_lines: list[str] = []
        self.definitions: list[DefInfo] = []
        self.def_names: set[str] = set()
        self.base_names: set[str] = set()
        self.chunks: list[str] = []
        self.counter = 0
        # Choices counted rather than drawn (`weight_layout`), so that adding them left the
        # programs of every seed as they were (the bounded corpus covers every construct)
        self.learned_maps = 0
        self.dense_maps = 0  # the same for `dense_weight`
        self.stateful = False  # whether the definition being written uses batchnorm
        self.unsized: set[str] = set()  # axes declared without a size (`axis b`)

    # ---- names and axes
    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    def array_name(self, body: Body) -> str:
        taken = {a.name for a in body.scope} | body.params
        if "tricky_names" in self.features and self.c.chance(0.15):
            name = choice(self.c, TRICKY_NAMES)
            if name not in taken and name not in self.sizes and name not in OPERATORS and \
                    name not in self.def_names:
                return name
        return self.fresh(choice(self.c, ("X", "Y", "H", "A", "Z", "Out", "h_")))

    def param_name(self, body: Body) -> str:
        taken = {a.name for a in body.scope} | body.params
        pool: tuple[str, ...] = TRICKY_NAMES if "tricky_names" in self.features else ()
        pool += DUNDER_PARAMETER_NAMES
        if pool and self.c.chance(0.15):
            name = choice(self.c, pool)
            if name not in taken and name not in self.sizes and name not in OPERATORS and \
                    name not in self.def_names:
                body.params.add(name)
                return name
        name = self.fresh(choice(self.c, ("W", "b", "g", "P", "w_")))
        body.params.add(name)
        return name

    def declare(self, name: str, size: int | None, text: str | None) -> None:
        self.sizes[name] = size
        if text is None:
            self.unsized.add(name)
        self.axis_lines.append(f"axis {name}" + (f" = {text}" if text is not None else ""))

    def derived_axis(self, size: int | None, text: str) -> str:
        """A new axis of a size computed from others (`d3 = a + b`)."""
        name = self.fresh("d")
        self.declare(name, size, text)
        return name

    def base_axes(self) -> None:
        for name in subset(self.c, AXIS_NAMES, 3, 7):
            self.base_names.add(name)
            if "symbolic" in self.features and self.c.chance(0.3):
                self.declare(name, None, None)
            else:
                size = self.c.integer(1, 6)
                self.declare(name, size, str(size))

    def input_axes(self, avoid: Sequence[str] = ()) -> list[str]:
        """Axes a definition's input may have: any declared axis, symbolic sizes made of
        others (`d * e`) included."""
        return [a for a in self.sizes if a not in avoid]

    def const_axes(self, axes: Sequence[str]) -> list[str]:
        return [a for a in axes if self.sizes[a] is not None]

    def unused_axes(self, avoid: Sequence[str]) -> list[str]:
        return [a for a in self.sizes if a not in avoid]

    # ---- the program
    def program(self) -> str:
        self.base_axes()
        for _ in range(self.c.integer(1, self.max_definitions)):
            if "pointfree" in self.features and len(self.definitions) >= 1 and \
                    self.c.chance(0.15):
                self.pointfree()
            else:
                self.definition()
        # Last, so that the definitions drawn for a seed stay what they were.
        if "training" in self.features:
            self.training()
        head = []
        if "docstrings" in self.features and self.c.chance(0.3):
            head.append('"""A generated program: <script>alert(1)</script> & \'quotes\'."""')
        comment = "    # a comment" if "comments" in self.features and self.c.chance(0.3) else ""
        # After every other choice, so that the rest of a seed's program stays what it was.
        if "machine" in self.features and self.c.chance(0.3):
            self.machine()
        head.extend(line + comment for line in self.axis_lines)
        return "\n".join([*head, "", *self.chunks, ""])

    def definition(self) -> None:
        name = self.def_name()
        body = Body()
        self.stateful = False
        inputs: list[Array] = []
        for index in range(self.c.integer(1, 2)):
            axes = tuple(subset(self.c, self.input_axes(), 1, 3))
            arg = Array(self.array_name(body) if index else
                        self.fresh(choice(self.c, ("X", "In", "x_"))), axes)
            inputs.append(arg)
            body.scope.append(arg)
        if "docstrings" in self.features and self.c.chance(0.3):
            body.emit('"""Docstring with "quotes", </svg> and \\n escapes."""')
        index_inputs: list[str] = []
        vocabularies = self.const_axes(list(self.sizes))
        if vocabularies and self.c.chance(0.15):
            # Indices N[v] read through an embedding table.
            vocabulary = choice(self.c, vocabularies)
            batch = subset(self.c, [a for a in self.sizes if a != vocabulary], 0, 2)
            rows = subset(self.c, self.unused_axes([vocabulary, *batch]), 1, 2) or \
                [self.derived_axis(3, "3")]
            tokens = self.fresh("T")
            index_inputs.append(f"{tokens}: N[{vocabulary}][{', '.join(batch)}]")
            self.bind(body, f"embedding[{vocabulary} -> {' '.join(rows)}]"
                      f"({tokens}, {self.param_name(body)})", (*batch, *rows))
        if vocabularies and self.c.chance(0.15):
            # A segment sum into the places an index array names, and a gather back.
            source = choice(self.c, inputs)
            places = [v for v in vocabularies if v not in source.axes]
            if places:
                target = choice(self.c, places)
                along = choice(self.c, source.axes)
                where = self.fresh("P")
                index_inputs.append(f"{where}: N[{target}][{along}]")
                if self.c.chance(0.4):
                    # A count: ones summed into the places (a node's degree in graph_conv).
                    self.bind_equation(body, [along], [], "1")
                    self.bind(body, f"scatter_add[{along} -> {target}]({body.scope[-1].name}, "
                              f"{where})", (target,))
                summed = self.bind(body, f"scatter_add[{along} -> {target}]({source.name}, "
                                   f"{where})", replace(source.axes, [along], [target]))
                if self.c.chance(0.5):
                    reads = [f"{where}[{along}]" if a == target else a for a in summed.axes]
                    self.bind_equation(body, source.axes, [],
                                       f"{summed.name}[{', '.join(reads)}]")
        if self.c.chance(0.35):
            # A boolean array for `where`, on some of an input's axes.
            base = choice(self.c, inputs)
            condition = Array(self.fresh("C"), tuple(subset(self.c, base.axes, 1, 3)))
            index_inputs.append(f"{condition.name}: B[{', '.join(condition.axes)}]")
            body.conditions.append(condition)
        for _ in range(self.c.integer(1, self.max_statements)):
            self.statement(body, allow_blocks=True)
        outputs = [body.scope[-1]]
        if self.c.chance(0.15) and len(body.scope) > 1:
            outputs.append(body.scope[-2])
        signature_outputs = [self.shuffled(a.axes) for a in outputs]
        text_out = ", ".join(f"R[{', '.join(axes)}]" for axes in signature_outputs)
        if len(outputs) > 1 or self.c.chance(0.1):
            text_out = f"({text_out})"
        text_in = ", ".join([*(f"{a.name}: R[{', '.join(a.axes)}]" for a in inputs),
                             *index_inputs])
        body.emit("return " + ", ".join(a.name for a in outputs))
        self.chunks.append(f"def {name}({text_in}) -> {text_out} {{\n" + "\n".join(body.lines)
                           + "\n}\n")
        if index_inputs:  # the generator calls definitions with R arrays only
            return
        self.definitions.append(DefInfo(name, [a.axes for a in inputs], signature_outputs,
                                        stateful=self.stateful,
                                        has_params=bool(body.params) or body.calls_params))

    def training(self) -> None:
        """A `train` set-up for a definition that fits a model: one real input and one real
        output, both starting with an axis declared without a size (the batch)."""
        models = [d for d in self.definitions if len(d.inputs) == len(d.outputs) == 1
                  and d.inputs[0] and d.inputs[0][0] in self.unsized
                  and d.outputs[0] and d.outputs[0][0] == d.inputs[0][0]]
        if not models or not self.c.chance(0.5):
            return
        model = choice(self.c, models)
        classes = [a for a in model.outputs[0][1:] if self.sizes[a] is not None]
        if classes and self.c.chance(0.5):
            loss = f"cross_entropy[{choice(self.c, classes)}]"
        else:
            loss = choice(self.c, ("mse", "bce_with_logits"))
        optimiser = choice(self.c, ("sgd(lr = 0.05)", "momentum(lr = 0.1, momentum = 0.9)",
                                    "nesterov(momentum = 0.9, weight_decay = 1e-4)",
                                    "adagrad()", "adam(lr = 0.01, betas = (0.9, 0.99))",
                                    "adamw(weight_decay = 1e-2)"))
        doc = '    """Trains it."""\n' if "docstrings" in self.features and \
            self.c.chance(0.3) else ""
        self.chunks.append(f"train {self.fresh('fit')} {{\n{doc}    model: {model.name}\n"
                           f"    loss: {loss}\n    optimiser: {optimiser}\n}}\n")

    def def_name(self) -> str:
        name = self.fresh(choice(self.c, ("f", "layer", "net", "Block_")))
        if "tricky_names" in self.features and self.c.chance(0.2):
            tricky = choice(self.c, TRICKY_NAMES)
            if tricky not in OPERATORS and tricky not in self.def_names and \
                    tricky not in self.sizes:
                name = tricky
        self.def_names.add(name)
        return name

    def shuffled(self, axes: Axes) -> Axes:
        return tuple(subset(self.c, axes, len(axes), len(axes)))

    def pointfree(self) -> None:
        """`def h = f ; g` where f's result fits g's input, or `f (x) g`."""
        singles = [d for d in self.definitions if len(d.inputs) == 1 and len(d.outputs) == 1]
        chains = [(f, g) for f in singles for g in singles
                  if f.outputs[0] == g.inputs[0]]
        name = self.def_name()
        if chains and self.c.chance(0.6):
            f, g = choice(self.c, chains)
            self.chunks.append(f"def {name} = {f.name} ; {g.name}\n")
            self.definitions.append(DefInfo(name, f.inputs, g.outputs,
                                            stateful=f.stateful or g.stateful,
                                            has_params=f.has_params or g.has_params))
            return
        first = choice(self.c, self.definitions)
        second = choice(self.c, self.definitions)
        doc = ' """Side by side."""' if self.c.chance(0.3) else ""
        self.chunks.append(f"def {name} = {first.name} (x) {second.name}{doc}\n")
        self.definitions.append(DefInfo(name, first.inputs + second.inputs,
                                        first.outputs + second.outputs,
                                        stateful=first.stateful or second.stateful,
                                        has_params=first.has_params or second.has_params))

    # ---- statements
    def statement(self, body: Body, *, allow_blocks: bool) -> None:
        if allow_blocks and "blocks" in self.features and self.c.chance(0.12):
            self.block(body)
            return
        makers: list[Callable[[Body], None]] = [
            self.unary, self.unary, self.softmax, self.norm, self.linear, self.linear,
            self.arithmetic, self.arithmetic, self.scaled, self.reduce, self.mask]
        if "equations" in self.features:
            makers += [self.contraction, self.transpose, self.window, self.fixed_index,
                       self.reverse, self.shift, self.flipped_window, self.alias,
                       self.diagonal, self.sized_read, self.upsample, self.cyclic,
                       self.positions, self.attention, self.convolution]
        if "structure" in self.features:
            makers += [self.concat, self.split, self.rename, self.reshape, self.pad]
        if "calls" in self.features and self.definitions:
            makers += [self.call, self.call, self.experts]
        if "scan" in self.features:
            makers += [self.scan, self.recurrent_scan]
        if "param_data" in self.features:
            makers.append(self.param_data)
        if "batchnorm" in self.features:
            makers.append(self.batchnorm)
        choice(self.c, makers)(body)

    def param_data(self, body: Body) -> None:
        """A parameter read as data: put on a wire and read by any operator, or by a tensor
        equation of parameters alone."""
        x = self.source(body)
        p_axes = subset(self.c, x.axes, 0, 2)
        param = self.param_name(body)
        if "batchnorm" in self.features and self.c.chance(0.3):  # a buffer, read the same way
            init = choice(self.c, (" = zeros", " = ones", " = constant(0.5)"))
            body.emit(f"buffer {param}: R[{', '.join(p_axes)}]{init}")
        else:
            init = choice(self.c, ("", " = normal(0, 0.5)", " = uniform(0.5, 1)", " = ones"))
            body.emit(f"param {param}: R[{', '.join(p_axes)}]{init}")
        read = f"{param}[{', '.join(p_axes)}]"
        if p_axes and self.c.chance(0.25):
            self.bind_equation(body, p_axes, [], f"{read} * 0.5")
            return
        exprs = [f"{x.name} * sigmoid({param})", f"maximum({x.name}, {param})",
                 f"{x.name} / (1 + {param} * {param})", f"{x.name} - tanh({param})"]
        self.bind(body, choice(self.c, exprs), x.axes)

    def batchnorm(self, body: Body) -> None:
        """`batchnorm` over some axes, its running statistics new or declared buffers (in
        another axis order than the channels'), with or without scale and shift."""
        x = self.source(body)
        targets = subset(self.c, x.axes, 1, 2)
        channels = [a for a in x.axes if a not in targets]
        names = [self.param_name(body) for _ in range(2 + self.c.integer(0, 2))]
        order = self.shuffled(tuple(channels))  # both statistics list the channels alike
        for name, init in zip(names[:2], ("zeros", "ones"), strict=True):
            if self.c.chance(0.3):
                body.emit(f"buffer {name}: R[{', '.join(order)}] = {init}")
        options = ""
        if self.c.chance(0.3):
            options = f", eps={choice(self.c, ('0.001', '1e-5'))}, momentum=0.2"
        self.stateful = True
        self.bind(body, f"batchnorm[{', '.join(targets)}{options}]"
                  f"({', '.join([x.name, *names])})", x.axes)

    def source(self, body: Body) -> Array:
        """Mostly the latest array, sometimes an earlier one."""
        if self.c.chance(0.7):
            return body.scope[-1]
        return choice(self.c, body.scope)

    def bind(self, body: Body, expr: str, axes: Axes, name: str | None = None) -> Array:
        target = name or self.array_name(body)
        body.emit(f"{target} = {expr}")
        body.scope = [a for a in body.scope if a.name != target]
        result = Array(target, axes)
        body.scope.append(result)
        return result

    def unary(self, body: Body) -> None:
        x = self.source(body)
        self.bind(body, f"{choice(self.c, UNARY)}({x.name})", x.axes)

    def softmax(self, body: Body) -> None:
        x = self.source(body)
        targets = subset(self.c, x.axes, 1, 2)
        kind = choice(self.c, ("softmax", "logsoftmax"))
        self.bind(body, f"{kind}[{', '.join(targets)}]({x.name})", x.axes)

    def norm(self, body: Body) -> None:
        x = self.source(body)
        targets = subset(self.c, x.axes, 1, 2)
        kind = choice(self.c, ("layernorm", "rmsnorm"))
        params = self.c.integer(0, 2 if kind == "layernorm" else 1)
        names = [self.param_name(body) for _ in range(params)]
        args = ", ".join([x.name, *names])
        self.bind(body, f"{kind}[{', '.join(targets)}]({args})", x.axes)

    def linear(self, body: Body) -> None:
        x = self.source(body)
        targets = subset(self.c, x.axes, 1, 2)
        kept = [a for a in x.axes if a not in targets]
        new = subset(self.c, self.unused_axes(kept), 1, 2)
        bias = self.c.chance(0.4)
        names = [self.param_name(body) for _ in range(2 if bias else 1)]
        options = ", bias" if bias else ""
        if not set(new) & set(targets):
            order = self.weight_layout([*targets, *new], len(targets))
            if order is not None:
                body.emit(f"param {names[0]}: R[{', '.join(order)}]")
        expr = (f"linear[{' '.join(targets)} -> {' '.join(new)}{options}]"
                f"({', '.join([x.name, *names])})")
        self.bind(body, expr, replace(x.axes, targets, new))

    def weight_layout(self, created: list[str], inputs: int) -> list[str] | None:
        """The axis order in which a linear map's weight is declared, or None to let the map
        create it (`created`: its inputs, then its outputs): every third map declares it as
        `nn.Linear` keeps it, `(out..., in...)`, which the compiler reads as it is, and every
        ninth rotated (the order it creates, or one read by an einsum). Counted, not drawn:
        see `learned_maps`."""
        self.learned_maps += 1
        if self.learned_maps % 3:
            return None
        order = [*created[inputs:], *created[:inputs]]
        if self.learned_maps % 9 == 0 and len(order) > 1:
            turn = self.learned_maps // 9 % (len(order) - 1) + 1
            order = [*order[turn:], *order[:turn]]
        return order

    def gate(self, body: Body, condition: Array) -> Array:
        """A Boolean array made from `condition` (and another Boolean input whose axes are
        among its own) by the gates `xor`, `and`, `or` and `not`, for `where` to read."""
        other = choice(self.c, [c for c in body.conditions
                                if set(c.axes) <= set(condition.axes)])
        made = Array(self.fresh("G"), condition.axes)
        body.emit(f"{made.name} = or(and({condition.name}, {other.name}), "
                  f"not(xor({other.name}, {condition.name})))")
        body.conditions.append(made)
        return made

    def arithmetic(self, body: Body) -> None:
        """Entrywise arithmetic: `y`'s axes are among `x`'s, so the result has `x`'s axes
        (broadcasting by name); divisors are kept away from zero."""
        x = self.source(body)
        others = [a for a in body.scope if set(a.axes) <= set(x.axes) and a is not x]
        conditions = [c for c in body.conditions if set(c.axes) <= set(x.axes)]
        form = self.c.integer(0, 10)
        if conditions and self.c.chance(0.3):
            form = 10
        if form == 5:
            c = choice(self.c, ("1", "0.5", "1e-5", "2.5", "sqrt(4)"))
            expr = choice(self.c, (f"{x.name} + {c}", f"{c} + {x.name}", f"{x.name} - {c}",
                                   f"{c} - {x.name}", f"{c} / (sigmoid({x.name}) + 0.5)"))
            self.bind(body, expr, x.axes)
        elif form == 6:
            exponent = choice(self.c, ("2", "3", "1"))
            self.bind(body, f"pow[{exponent}]({x.name})", x.axes)
        elif form == 10 and conditions:
            condition = choice(self.c, conditions)
            if self.c.chance(0.5):
                condition = self.gate(body, condition)
            y = choice(self.c, [*others, x])
            first, second = (x, y) if self.c.chance(0.5) else (y, x)
            self.bind(body, f"where({condition.name}, {first.name}, {second.name})",
                      union(first, second))
        elif form in (0, 5, 6, 10) or not others:
            scalar = choice(self.c, ("2", "0.5", "1e-3", "3.25", ".5"))
            op = choice(self.c, ("*", "/"))
            self.bind(body, f"{x.name} {op} {scalar}", x.axes)
        elif form == 1:
            self.bind(body, f"-{x.name}", x.axes)
        else:
            y = choice(self.c, others)
            if form == 2:
                self.bind(body, f"add({x.name}, {y.name})", x.axes)
            elif form == 3:
                self.bind(body, f"multiply({x.name}, {y.name})", x.axes)
            elif form == 7:
                divisor = choice(self.c, ("sigmoid({}) + 0.5", "abs({}) + 1"))
                numerator, denominator = (x, y) if self.c.chance(0.5) else (y, x)
                divided = divisor.format(denominator.name)
                self.bind(body, choice(self.c, (f"{numerator.name} / ({divided})",
                                                f"divide({numerator.name}, {divided})")),
                          union(numerator, denominator))
            elif form == 8:
                function = choice(self.c, ("maximum", "minimum"))
                first, second = (x, y) if self.c.chance(0.5) else (y, x)
                self.bind(body, f"{function}({first.name}, {second.name})", union(first, second))
            elif form == 9:
                self.outer_sum(body, x)
            else:
                op = choice(self.c, ("+", "-", "*"))
                self.bind(body, f"{x.name} {op} {y.name}", x.axes)

    def outer_sum(self, body: Body, x: Array) -> None:
        """`Z[..] = X[..] + Y[..]`: a tensor equation adding arrays of other axes."""
        others = [a for a in body.scope if a is not x and
                  len(set(a.axes) | set(x.axes)) <= 4]
        if not others:
            self.bind(body, f"{x.name} + 1", x.axes)
            return
        y = choice(self.c, others)
        result = self.shuffled(tuple(dict.fromkeys((*x.axes, *y.axes))))
        op = choice(self.c, (" + ", " - "))
        factor = choice(self.c, ("", " * 0.5", " * 2"))
        self.bind_equation(body, result, [], f"{x.name}[{', '.join(x.axes)}]{op}"
                           f"{y.name}[{', '.join(y.axes)}]{factor}")

    def scaled(self, body: Body) -> None:
        x = self.source(body)
        if self.c.chance(0.5):
            self.bind(body, f"scale[{choice(self.c, ('0.5', '2', '1'))}]({x.name})", x.axes)
        else:
            self.bind(body, f"dropout[p={choice(self.c, ('0.1', '0', '0.5'))}]({x.name})",
                      x.axes)

    def reduce(self, body: Body) -> None:
        x = self.source(body)
        if len(x.axes) < 2:
            self.unary(body)
            return
        targets = subset(self.c, x.axes, 1, len(x.axes) - 1)
        kind = choice(self.c, REDUCTIONS)
        self.bind(body, f"{kind}[{', '.join(targets)}]({x.name})",
                  tuple(a for a in x.axes if a not in targets))

    def mask(self, body: Body) -> None:
        x = self.source(body)
        if len(x.axes) < 2:
            self.unary(body)
            return
        first, second = subset(self.c, x.axes, 2, 2)
        if self.c.chance(0.5):
            self.bind(body, f"causal[{first}, {second}]({x.name})", x.axes)
        else:
            condition = choice(self.c, (f"{first} >= {second}", f"2*{first} < {second} + 1",
                                        f"{first} != {second}", f"{first} - {second} <= 3"))
            fill = choice(self.c, ("", ", fill=0", ", fill=-1.5"))
            self.bind(body, f"mask[{condition}{fill}]({x.name})", x.axes)

    # ---- tensor equations
    def contraction(self, body: Body) -> None:
        """`Y[..] = sum(k) X[.., k] * P[k, o]` with a parameter or another array."""
        x = self.source(body)
        summed = subset(self.c, x.axes, 0, 1)
        new = subset(self.c, self.unused_axes(x.axes), 0, 1)
        scales = ["", " * 0.5", " / 2"]
        scales += [f" / sqrt({a})" for a in self.const_axes(x.axes)]
        scale = choice(self.c, scales)
        if not summed and not new:
            self.bind_equation(body, x.axes, [], f"{x.name}[{', '.join(x.axes)}]{scale}"
                               if scale else f"{x.name}[{', '.join(x.axes)}] * 2")
            return
        p_axes = [*summed, *new]
        param = self.param_name(body)
        initialisers = ["", " = normal(0, 0.02)", " = zeros", " = kaiming", " = xavier",
                        " = uniform(-1, 1)", " = ones", " = default", " = constant(0.5)"]
        initialiser = choice(self.c, initialisers)
        third = other_line = ""  # sometimes a third operand: the compiler chooses the order
        if self.c.chance(0.3):
            other = self.param_name(body)
            o_axes = subset(self.c, p_axes, 1, len(p_axes))
            other_line = f"param {other}: R[{', '.join(o_axes)}]"
            third = f" * {other}[{', '.join(o_axes)}]"
        else:
            dense = self.dense_weight(x.axes, new)
            if dense is not None:
                summed, new, p_axes = dense
        body.emit(f"param {param}: R[{', '.join(p_axes)}]" + initialiser)
        if other_line:
            body.emit(other_line)
        result = (*(a for a in x.axes if a not in summed), *new)
        if not result:
            result = tuple(summed)
            summed = []
        self.bind_equation(body, result, summed,
                           f"{x.name}[{', '.join(x.axes)}] * {param}[{', '.join(p_axes)}]"
                           + third + scale)

    def dense_weight(self, axes: Sequence[str], new: Sequence[str]
                     ) -> tuple[list[str], list[str], list[str]] | None:
        """For the first two-operand contraction of an array with two axes or more in a
        program, and every third after it: sum the array's last two axes against a weight that
        reads them in order, before or after its new axes (one more where one is free), as a
        dense layer over several axes (`sum(c, u, v) X[b, c, u, v] * W[o, c, u, v]`), which
        the compiler runs as one matrix product. Counted, not drawn, as `weight_layout`;
        which layout and how many new axes follows from the axes' names. Returns the summed
        axes, the new ones and the weight's axes."""
        if len(axes) < 2:
            return None
        self.dense_maps += 1
        if self.dense_maps % 3 != 1:
            return None
        variant = sum(map(ord, "".join(axes)))
        summed = list(axes[-2:])
        spare = [a for a in self.unused_axes(axes) if a not in new]
        outputs = [*new, *spare[:1]] if variant % 2 or not new else list(new)
        if not outputs:
            return None
        rows_first = variant // 2 % 2 == 1
        return summed, outputs, [*outputs, *summed] if rows_first else [*summed, *outputs]

    def bind_equation(self, body: Body, result: Sequence[str], summed: Sequence[str],
                      rhs: str) -> None:
        target = self.array_name(body)
        total = f"sum({', '.join(summed)}) " if summed else ""
        body.emit(f"{target}[{', '.join(result)}] = {total}{rhs}")
        body.scope = [a for a in body.scope if a.name != target]
        body.scope.append(Array(target, tuple(result)))

    def transpose(self, body: Body) -> None:
        x = self.source(body)
        order = self.shuffled(x.axes)
        self.bind_equation(body, order, [], f"{x.name}[{', '.join(x.axes)}]")

    def window(self, body: Body) -> None:
        """`P[.., p, w] = X[.., s*p + d*w]`: a strided, dilated window of a valid convolution."""
        x = self.source(body)
        candidates = x.axes
        if not candidates:
            self.transpose(body)
            return
        along = choice(self.c, candidates)
        size = self.sizes[along]
        stride, dilation = self.c.integer(1, 3), self.c.integer(1, 2)
        width = self.c.integer(1, 3)
        span_text = f"{along} - {dilation} * ({width} - 1) - 1"
        if size is not None:
            length = (size - dilation * (width - 1) - 1) // stride + 1
            if length < 1:
                width, dilation, stride, length = 1, 1, 1, size
                span_text = f"{along} - {dilation} * ({width} - 1) - 1"
        else:
            length = None
        w = self.derived_axis(width, str(width))
        p = self.derived_axis(length, f"({span_text}) // {stride} + 1")
        others = [a for a in x.axes if a != along]
        index = f"{stride}*{p} + {dilation}*{w}" if self.c.chance(0.5) else \
            f"{dilation} * {w} + {p} * {stride}"
        reads = [index if a == along else a for a in x.axes]
        self.bind_equation(body, [*others, p, w], [], f"{x.name}[{', '.join(reads)}]")

    def fixed_index(self, body: Body) -> None:
        """`Y[..] = X[.., 0, ..]`, or a diagonal when two axes have the same size."""
        x = self.source(body)
        constant = self.const_axes(x.axes)
        pairs = [(a, b) for a in x.axes for b in x.axes
                 if a < b and self.sizes[a] is not None and self.sizes[a] == self.sizes[b]]
        if pairs and self.c.chance(0.5):
            a, b = choice(self.c, pairs)
            reads = [a if n == b else n for n in x.axes]
            self.bind_equation(body, [n for n in x.axes if n != b], [],
                               f"{x.name}[{', '.join(reads)}]")
            return
        if not constant or len(x.axes) < 2:
            self.transpose(body)
            return
        along = choice(self.c, constant)
        at = self.c.integer(0, (self.sizes[along] or 1) - 1)
        reads = [str(at) if a == along else a for a in x.axes]
        self.bind_equation(body, [a for a in x.axes if a != along], [],
                           f"{x.name}[{', '.join(reads)}]")

    def reverse(self, body: Body) -> None:
        """`Y[.., r, ..] = X[.., c - r, ..]`: a negative coefficient; with `c < |a| - 1` it
        reads only the first `c + 1` entries, backwards."""
        x = self.source(body)
        constant = self.const_axes(x.axes)
        if not constant:
            self.transpose(body)
            return
        along = choice(self.c, constant)
        size = self.sizes[along] or 1
        shift = self.c.integer(0, size - 1) if self.c.chance(0.3) else 0
        last = size - 1 - shift
        new = along if shift == 0 else self.derived_axis(last + 1, f"{along} - {shift}")
        reads = [f"{last} - {new}" if a == along else a for a in x.axes]
        self.bind_equation(body, [new if a == along else a for a in x.axes], [],
                           f"{x.name}[{', '.join(reads)}]")

    def shift(self, body: Body) -> None:
        """`Y[.., s, ..] = X[.., t*s + k, ..]`: an offset, with or without a stride."""
        x = self.source(body)
        candidates = [a for a in x.axes if self.sizes[a] is None or (self.sizes[a] or 0) >= 2]
        if not candidates:
            self.transpose(body)
            return
        along = choice(self.c, candidates)
        size = self.sizes[along]
        offset = self.c.integer(1, 2) if size is None else self.c.integer(1, min(2, size - 1))
        stride = choice(self.c, (1, 1, 2))
        length = None if size is None else (size - 1 - offset) // stride + 1
        new = self.derived_axis(length, f"({along} - 1 - {offset}) // {stride} + 1")
        index = f"{new} + {offset}" if stride == 1 else f"{stride}*{new} + {offset}"
        reads = [index if a == along else a for a in x.axes]
        self.bind_equation(body, [new if a == along else a for a in x.axes], [],
                           f"{x.name}[{', '.join(reads)}]")

    def upsample(self, body: Body) -> None:
        """`Y[.., u, ..] = X[.., u // 2, ..]`: each entry read twice along a new axis."""
        x = self.source(body)
        along = choice(self.c, x.axes)
        size = self.sizes[along]
        if size is not None and size > 16:  # sizes that double grow the later outer products
            self.transpose(body)
            return
        new = self.derived_axis(None if size is None else 2 * size, f"2 * {along}")
        reads = [f"{new} // 2" if a == along else a for a in x.axes]
        self.bind_equation(body, [new if a == along else a for a in x.axes], [],
                           f"{x.name}[{', '.join(reads)}]")

    def cyclic(self, body: Body) -> None:
        """`Y[.., r, ..] = X[.., (r + k) % a, ..]`: read cyclically, past the end."""
        x = self.source(body)
        along = choice(self.c, x.axes)
        size = self.sizes[along]
        if size is None:  # a remainder by a size known only at run time is not a number
            self.transpose(body)
            return
        new = self.derived_axis(size + 2, f"{along} + 2")
        shift = self.c.integer(0, 2)
        index = f"({new} + {shift}) % {along}" if shift else f"{new} % {along}"
        reads = [index if a == along else a for a in x.axes]
        self.bind_equation(body, [new if a == along else a for a in x.axes], [],
                           f"{x.name}[{', '.join(reads)}]")

    def positions(self, body: Body) -> None:
        """`Y[..] = X[..] * a`, an index value, or `x - y` copied along the array's axes."""
        x = self.source(body)
        along = choice(self.c, x.axes)
        axes = ", ".join(x.axes)
        if self.c.chance(0.5) or len(x.axes) < 2:
            self.bind_equation(body, x.axes, [], f"{x.name}[{axes}] * {along}")
            return
        first, second = x.axes[0], x.axes[1]
        table = self.array_name(body)
        body.emit(f"{table}[{first}, {second}] = {first} - {second} + 1")
        body.scope.append(Array(table, (first, second)))
        self.bind_equation(body, x.axes, [], f"{x.name}[{axes}] + {table}[{first}, {second}]")

    def flipped_window(self, body: Body) -> None:
        """`P[.., p, w] = X[.., p - w + W - 1]`: a window read backwards (a convolution with
        its kernel flipped), a negative coefficient beside a positive one."""
        x = self.source(body)
        along = choice(self.c, x.axes)
        size = self.sizes[along]
        width = self.c.integer(1, 3) if size is None else self.c.integer(1, min(3, size))
        w = self.derived_axis(width, str(width))
        p = self.derived_axis(None if size is None else size - width + 1,
                              f"{along} - {width} + 1")
        index = f"{p} - {w} + {width - 1}" if width > 1 else f"{p} - {w}"
        reads = [index if a == along else a for a in x.axes]
        others = [a for a in x.axes if a != along]
        self.bind_equation(body, [*others, p, w], [], f"{x.name}[{', '.join(reads)}]")

    def attention(self, body: Body) -> None:
        """Self-attention of an array with itself along one of its axes: scores over a fresh
        key index, maybe scaled, maybe masked (causal, a window, a mask that leaves the first
        query no key, a finite fill), a softmax over the keys, the weighted sum. The compiler
        fuses most of these into one `F.scaled_dot_product_attention` call."""
        x = self.source(body)
        if len(x.axes) < 2:
            self.unary(body)
            return
        position, width = subset(self.c, x.axes, 2, 2)
        key = self.fresh("y")
        scores = self.fresh("Scores")  # never in scope: only the pattern reads it
        keys = [key if a == position else a for a in x.axes]
        score_axes = [a for a in x.axes if a != width] + [key]
        scales = ["", " * 0.5", " / 2"] + [f" / sqrt({width})"] * bool(self.const_axes([width]))
        body.emit(f"{scores}[{', '.join(score_axes)}] = sum({width}) "
                  f"{x.name}[{', '.join(x.axes)}] * {x.name}[{', '.join(keys)}]"
                  f"{choice(self.c, scales)}")
        masked = choice(self.c, (
            scores, f"causal[{position}, {key}]({scores})",
            f"mask[{key} <= {position}, {position} - {key} < 3]({scores})",
            f"mask[{key} > {position}]({scores})", f"mask[{key} <= {position}, fill=-2]({scores})",
            f"causal[{position}, {key}]({scores}) * 0.5"))
        weights = self.fresh("Weights")
        body.emit(f"{weights} = softmax[{key}]({masked})")
        self.bind_equation(body, x.axes, [key], f"{weights}[{', '.join(score_axes)}] * "
                           f"{x.name}[{', '.join(keys)}]")

    def convolution(self, body: Body) -> None:
        """A convolution or a pool along one or two axes of an array: maybe padded (zeros,
        -inf or ones; mostly alike on both sides), a strided, dilated window, then a sum
        against a kernel parameter (the other axes summed as channels, kept as groups or as
        batch, maybe a new output axis and a bias) or a max, mean or scaled sum over the
        window. The compiler runs most of these as one `F.conv*d` or `F.*_pool*d` call."""
        x = self.source(body)
        if not x.axes or len(set(x.axes)) != len(x.axes):
            self.unary(body)
            return
        pool = self.c.chance(0.4)
        value = choice(self.c, ("0", "0", "-inf", "1")) if pool else choice(self.c, ("0", "0", "1"))
        spatial = subset(self.c, x.axes, 1, min(2, len(x.axes)))
        current = x
        reads: dict[str, str] = {}
        outputs: dict[str, str] = {}
        windows: list[str] = []
        for along in spatial:
            size = self.sizes[along]
            before = self.c.integer(0, 2) if self.c.chance(0.6) else 0
            after = before if self.c.chance(0.7) else self.c.integer(0, 2)
            grown = along
            if before + after:
                grown = self.derived_axis(None if size is None else size + before + after,
                                          f"{along} + {before + after}")
                options = [f"before={before}", f"after={after}"]
                if value != "0":
                    options.append(f"value={value}")
                current = self.bind(body, f"pad[{along} -> {grown}, {', '.join(options)}]"
                                    f"({current.name})", replace(current.axes, [along], [grown]))
            padded = None if size is None else size + before + after
            stride, dilation = self.c.integer(1, 3), self.c.integer(1, 2)
            width = self.c.integer(1, 3)
            if padded is not None and padded - dilation * (width - 1) - 1 < 0:
                width, dilation = 1, 1
            span = f"{grown} - {dilation * (width - 1)} - 1"
            length = None if padded is None else (padded - dilation * (width - 1) - 1) // \
                stride + 1
            w = self.derived_axis(width, str(width))
            p = self.derived_axis(length, f"({span}) // {stride} + 1")
            reads[grown] = f"{stride}*{p} + {dilation}*{w}"
            outputs[along] = p
            windows.append(w)
        others = [a for a in current.axes if a not in reads]
        kept = [outputs.get(a, a) for a in x.axes]
        index = ", ".join(reads.get(a, a) for a in current.axes)
        if pool:
            window = self.fresh("Windows")  # never in scope: only the pool reads it
            body.emit(f"{window}[{', '.join([*kept, *windows])}] = {current.name}[{index}]")
            kind = choice(self.c, ("max", "mean", "sum", "scaled"))
            if kind == "scaled":
                self.bind_equation(body, kept, windows, f"{window}[{', '.join([*kept, *windows])}]"
                                   f" / {choice(self.c, ('2', '3', '4'))}")
            else:
                self.bind(body, f"{kind}[{', '.join(windows)}]({window})", tuple(kept))
            return
        channels = subset(self.c, others, 0, len(others))
        groups = subset(self.c, [a for a in others if a not in channels], 0, 1)
        new = subset(self.c, self.unused_axes([*x.axes, *current.axes, *windows,
                                               *outputs.values()]), 0, 1)
        kernel = self.shuffled([*groups, *new, *channels, *windows])
        param = self.param_name(body)
        body.emit(f"param {param}: R[{', '.join(kernel)}]")
        result = [a for a in kept if a not in channels] + list(new)
        target = self.array_name(body)
        body.emit(f"{target}[{', '.join(result)}] = sum({', '.join([*channels, *windows])}) "
                  f"{current.name}[{index}] * {param}[{', '.join(kernel)}]")
        body.scope = [a for a in body.scope if a.name != target]
        body.scope.append(Array(target, tuple(result)))
        if (groups or new) and self.c.chance(0.5):
            bias = self.param_name(body)
            body.emit(f"param {bias}: R[{', '.join([*groups, *new])}]")
            self.bind(body, f"{target} + {bias}", tuple(result))

    def diagonal(self, body: Body) -> None:
        """`O[.., a, y] = X[.., a] * X[.., y]` then `D[.., a] = O[.., a, a]`: an outer product
        read back along its diagonal (two rows of a stride morphism read one index)."""
        x = self.source(body)
        along = choice(self.c, x.axes)
        twin = self.fresh("y")
        outer = self.fresh("Outer")  # never in scope, so no later name may take it
        reads = [twin if a == along else a for a in x.axes]
        body.emit(f"{outer}[{', '.join([*x.axes, twin])}] = {x.name}[{', '.join(x.axes)}] * "
                  f"{x.name}[{', '.join(reads)}]")
        self.bind_equation(body, x.axes, [], f"{outer}[{', '.join([*x.axes, along])}]")

    def sized_read(self, body: Body) -> None:
        """`Y[.., s, ..] = X[.., s + k, ..]` where `s` is a symbolic axis of its own: in bounds
        only when `|s| + k <= |a|`, which no checker can know, so the module checks it when it
        runs (and must refuse exactly the sizes that read out of bounds)."""
        x = self.source(body)
        free = sorted(a for a in self.base_names if self.sizes[a] is None)
        symbolic = [a for a in x.axes if a in free]
        others = [a for a in free if a not in x.axes]
        if not symbolic or not others:
            self.transpose(body)
            return
        along, index = choice(self.c, symbolic), choice(self.c, others)
        read = f"{index} + {self.c.integer(1, 2)}"
        self.bind_equation(body, [index if a == along else a for a in x.axes], [],
                           f"{x.name}[{', '.join(read if a == along else a for a in x.axes)}]")

    def alias(self, body: Body) -> None:
        """`Y = X`: a second name for the same array (a copy on the diagram)."""
        x = self.source(body)
        self.bind(body, x.name, x.axes)

    # ---- structure
    def rename(self, body: Body) -> None:
        x = self.source(body)
        old = choice(self.c, x.axes)
        new = self.derived_axis(self.sizes[old], old)
        self.bind(body, f"rename[{old} -> {new}]({x.name})",
                  tuple(new if a == old else a for a in x.axes))

    def concat(self, body: Body) -> None:
        x = self.source(body)
        along = choice(self.c, x.axes)
        twin = self.derived_axis(self.sizes[along], along)
        size = self.sizes[along]
        joined = self.derived_axis(None if size is None else 2 * size, f"{along} + {twin}")
        second = f"rename[{along} -> {twin}]({x.name})"
        self.bind(body, f"concat[{along} {twin} -> {joined}]({x.name}, {second})",
                  tuple(joined if a == along else a for a in x.axes))

    def split(self, body: Body) -> None:
        x = self.source(body)
        candidates = [a for a in x.axes if (self.sizes[a] or 0) >= 2 or self.sizes[a] is None]
        if not candidates:
            self.unary(body)
            return
        along = choice(self.c, candidates)
        size = self.sizes[along]
        first_size = 1 if size is None else self.c.integer(1, size - 1)
        first = self.derived_axis(first_size, str(first_size))
        second = self.derived_axis(None if size is None else size - first_size,
                                   f"{along} - {first}")
        names = [self.array_name(body), self.array_name(body)]
        if names[0] == names[1]:
            names[1] = self.fresh("S")
        body.emit(f"{names[0]}, {names[1]} = split[{along} -> {first} {second}]({x.name})")
        body.scope = [a for a in body.scope if a.name not in names]
        keep = self.c.integer(0, 1)
        pieces = [Array(names[0], tuple(first if a == along else a for a in x.axes)),
                  Array(names[1], tuple(second if a == along else a for a in x.axes))]
        body.scope.append(pieces[1 - keep])
        body.scope.append(pieces[keep])

    def pad(self, body: Body) -> None:
        x = self.source(body)
        along = choice(self.c, x.axes)
        before, after = self.c.integer(0, 2), self.c.integer(0, 2)
        if before + after == 0:
            after = 1
        size = self.sizes[along]
        grown = self.derived_axis(None if size is None else size + before + after,
                                  f"{along} + {before + after}")
        options = [f"before={before}"] if before or self.c.chance(0.3) else []
        options += [f"after={after}"] if after else []
        if self.c.chance(0.3):
            options.append(f"value={choice(self.c, ('0', '-1', '0.5'))}")
        self.bind(body, f"pad[{along} -> {grown}, {', '.join(options)}]({x.name})",
                  replace(x.axes, [along], [grown]))

    def reshape(self, body: Body) -> None:
        x = self.source(body)
        if len(x.axes) >= 2 and self.c.chance(0.6):
            merged = subset(self.c, x.axes, 2, 2)
            sizes = [self.sizes[a] for a in merged]
            total = None if None in sizes else (sizes[0] or 0) * (sizes[1] or 0)
            new = self.derived_axis(total, f"{merged[0]} * {merged[1]}")
            self.bind(body, f"reshape[{' '.join(merged)} -> {new}]({x.name})",
                      replace(x.axes, merged, [new]))
            return
        constant = [a for a in self.const_axes(x.axes) if (self.sizes[a] or 0) % 2 == 0]
        if not constant:
            self.unary(body)
            return
        along = choice(self.c, constant)
        size = self.sizes[along] or 2
        two = self.derived_axis(2, "2")
        rest = self.derived_axis(size // 2, f"{along} / 2")
        self.bind(body, f"reshape[{along} -> {two} {rest}]({x.name})",
                  tuple(n for a in x.axes for n in ((two, rest) if a == along else (a,))))

    # ---- calls, scans and blocks
    def call(self, body: Body, *, mixture: bool = False) -> None:
        """Call an earlier definition; arrays with extra axes lift it over a batch, sharing its
        parameters, or with `f[each e](X)` giving every index of `e` (a lifted axis of fixed
        size, or a new one that every copy reads the arguments along) its own. A `mixture`
        calls a definition with parameters and one output `f[each e]` and sums the copies'
        outputs weighted over `e` (`mix_experts`)."""
        for definition in self.shuffled_defs():
            if mixture and (not definition.has_params or definition.stateful or
                            len(definition.outputs) != 1):
                continue
            args: list[Array] = []
            extra: Axes | None = None
            for needed in definition.inputs:
                fits = [a for a in body.scope if set(needed) <= set(a.axes)]
                fits = [a for a in fits if extra is None or
                        set(a.axes) - set(needed) == set(extra)]
                if not fits:
                    break
                arg = choice(self.c, fits)
                if extra is None:  # the batch axes, in the order of the first argument
                    extra = tuple(n for n in arg.axes if n not in needed)
                args.append(arg)
            else:
                assert extra is not None
                if any(set(extra) & set(out) for out in definition.outputs):
                    continue
                if extra and definition.stateful:  # batch statistics are not lifted
                    continue
                self.stateful = self.stateful or definition.stateful
                each = owner = ""
                # `each` lifts too (over its owning axis): not for a definition with batchnorm
                if definition.has_params and not definition.stateful and (
                        mixture or self.c.chance(0.6)):
                    taken = {a for axes in (*definition.inputs, *definition.outputs)
                             for a in axes}
                    owners = [a for a in self.const_axes(list(self.sizes)) if a not in taken]
                    if owners:
                        owner = choice(self.c, owners)
                        each = f"[each {owner}]"
                        if owner not in extra:
                            extra = (*extra, owner)
                if definition.has_params:
                    body.calls_params = True
                call = f"{definition.name}{each}({', '.join(a.name for a in args)})"
                if len(definition.outputs) == 1:
                    experts = self.bind(body, call, (*extra, *definition.outputs[0]))
                    if mixture and owner and len(experts.axes) > 1:
                        self.mix_experts(body, experts, owner)
                    return
                names = [self.fresh("R") for _ in definition.outputs]
                body.emit(f"{', '.join(names)} = {call}")
                for name, out in zip(names, definition.outputs, strict=True):
                    body.scope.append(Array(name, (*extra, *out)))
                return
        self.unary(body)

    def experts(self, body: Body) -> None:
        self.call(body, mixture=True)

    def mix_experts(self, body: Body, experts: Array, axis: str) -> None:
        """`Y = sum(e) G[e] * Z[.., e, ..]`: the outputs of the copies of `f[each e]` weighted
        and summed over `e` (a mixture of experts); nothing else reads them."""
        gate = self.fresh("G")
        body.emit(f"{gate}[{axis}] = {axis} + 1")
        body.scope = [a for a in body.scope if a.name != experts.name]
        kept = [a for a in experts.axes if a != axis]
        self.bind_equation(body, kept, [axis],
                           f"{gate}[{axis}] * {experts.name}[{', '.join(experts.axes)}]")

    def shuffled_defs(self) -> list[DefInfo]:
        return subset(self.c, self.definitions, len(self.definitions), len(self.definitions))

    def machine(self) -> None:
        """`machine[a, 2, 1, 3](layer, X)`: a definition of its own whose input has an axis
        of fixed size cut into random blocks, solved with a dense layer written for it."""
        axes = [a for a in self.const_axes(list(self.sizes)) if (self.sizes[a] or 0) >= 2]
        if not axes:
            return
        along = choice(self.c, axes)
        size = self.sizes[along]
        assert size is not None
        cuts = sorted(subset(self.c, list(range(1, size)), 0, 3))
        blocks = [stop - start for start, stop in zip([0, *cuts], [*cuts, size], strict=True)]
        others = subset(self.c, [a for a in self.input_axes() if a != along], 0, 2)
        shape = others[:]
        shape.insert(self.c.integer(0, len(others)), along)
        layer, name = self.fresh("layer"), self.fresh("machined")
        weight, bias = self.fresh("Wm"), self.fresh("bm")
        function = choice(self.c, ("tanh", "sigmoid", "relu"))
        self.chunks.append(
            f"def {layer}(X: R[{along}]) -> R[{along}] {{\n"
            f"    return {function}(linear[{along} -> {along}, bias](X, {weight}, {bias}))\n}}\n")
        self.chunks.append(
            f"def {name}(Y: R[{', '.join(shape)}]) -> R[{', '.join(shape)}] {{\n"
            f"    return machine[{along}, {', '.join(map(str, blocks))}]({layer}, Y)\n}}\n")

    def scan(self, body: Body) -> None:
        """`H, Ys = scan[t](cell, H0, X)` with a cell written for it just before."""
        x = self.source(body)
        if len(x.axes) < 2:
            self.unary(body)
            return
        time = choice(self.c, x.axes)
        slice_axes = tuple(a for a in x.axes if a != time)
        state = tuple(subset(self.c, self.input_axes([time, *slice_axes]),
                             1 + self.c.chance(0.5), 2)) or \
            (self.derived_axis(2, "2"),)
        cell = self.fresh("cell")
        w_in, w_state = self.fresh("Wi"), self.fresh("Ws")
        # The step may declare its state's axes in another order: they align by name.
        cell_state = state[::-1] if len(state) > 1 and self.c.chance(0.5) else state
        out_axes = (*cell_state,)
        self.chunks.append(
            f"def {cell}(H: R[{', '.join(cell_state)}], Xt: R[{', '.join(slice_axes)}]) -> "
            f"(R[{', '.join(cell_state)}], R[{', '.join(out_axes)}]) {{\n"
            f"    Z = linear[{' '.join(slice_axes)} -> {' '.join(state)}](Xt, {w_in}) + "
            f"linear[{' '.join(state)} -> {' '.join(state)}](H, {w_state})\n"
            f"    H2 = tanh(Z)\n"
            f"    return H2, H2\n}}\n")
        self.definitions.append(DefInfo(cell, [cell_state, slice_axes], [cell_state, out_axes],
                                        has_params=True))
        weight = self.param_name(body)
        init = self.array_name(body)
        body.emit(f"{init} = linear[{' '.join(slice_axes)} -> {' '.join(state)}]"
                  f"(sum[{time}]({x.name}), {weight})")
        body.scope.append(Array(init, state))
        last, seq = self.array_name(body), self.fresh("Seq")
        if last == seq or last == init:
            last = self.fresh("Last")
        body.emit(f"{last}, {seq} = scan[{time}]({cell}, {init}, {x.name})")
        body.scope.append(Array(last, state))
        body.scope.append(Array(seq, (time, *out_axes)))

    def recurrent_scan(self, body: Body) -> None:
        """An LSTM or a GRU cell as `nn.LSTM` / `nn.GRU` compute it (which the compiler runs
        as PyTorch's fused kernel), now and then with one piece changed (which it must not),
        run by scan along an axis of an array whose last other axis is the cell's input."""
        x = self.source(body)
        if len(x.axes) < 2:
            self.unary(body)
            return
        time = x.axes[0] if self.c.chance(0.7) else choice(self.c, x.axes)
        slice_axes = tuple(a for a in x.axes if a != time)
        width = slice_axes[-1]
        size = self.c.integer(1, 4)
        hidden = self.derived_axis(size, str(size))
        lstm = self.c.chance(0.5)
        gates = self.derived_axis(4 if lstm else 3, "4" if lstm else "3")
        standard = self.c.chance(0.7)
        cell = self.fresh("cell")
        w_ih, b_ih, w_hh, b_hh = (self.fresh(n) for n in ("Wi", "bi", "Wh", "bh"))
        maps = (f"linear[{width} -> {gates} {hidden}, bias](Xt, {w_ih}, {b_ih})",
                f"linear[{hidden} -> {gates} {hidden}, bias](H, {w_hh}, {b_hh})")
        declared = ""
        self.learned_maps += 1
        if self.learned_maps % 2:  # the weights as nn.LSTM / nn.GRU keep them, (g n, in)
            self.declare(f"{hidden}_in", size, hidden)
            declared = (f"    param {w_ih}: R[{gates}, {hidden}, {width}]\n"
                        f"    param {w_hh}: R[{gates}, {hidden}, {hidden}_in]\n")
        if lstm:
            g_row, o_row = (2, 3) if standard else (3, 2)
            text = (f"def {cell}(H: R[{hidden}], C: R[{hidden}], Xt: R[{width}]) -> "
                    f"(R[{hidden}], R[{hidden}], R[{hidden}]) {{\n{declared}"
                    f"    Z = {maps[0]} + {maps[1]}\n"
                    + "".join(f"    Z{k}[{hidden}] = Z[{k}, {hidden}]\n" for k in range(4))
                    + f"    C2 = sigmoid(Z1) * C + sigmoid(Z0) * tanh(Z{g_row})\n"
                    f"    H2 = sigmoid(Z{o_row}) * tanh(C2)\n"
                    f"    return H2, C2, H2\n}}\n")
            states = [(hidden,), (hidden,)]
        else:
            kept = "(1 - U) * N + U * H" if standard else "U * N + (1 - U) * H"
            text = (f"def {cell}(H: R[{hidden}], Xt: R[{width}]) -> "
                    f"(R[{hidden}], R[{hidden}]) {{\n{declared}"
                    f"    A = {maps[0]}\n    B = {maps[1]}\n"
                    + "".join(f"    {n}{k}[{hidden}] = {n}[{k}, {hidden}]\n"
                              for n in "AB" for k in range(3))
                    + f"    R = sigmoid(A0 + B0)\n    U = sigmoid(A1 + B1)\n"
                    f"    N = tanh(A2 + R * B2)\n    H2 = {kept}\n"
                    f"    return H2, H2\n}}\n")
            states = [(hidden,)]
        self.chunks.append(text)
        self.definitions.append(DefInfo(cell, [*states, (width,)], [*states, (hidden,)],
                                        has_params=True))
        inits = []
        for _ in states:
            weight = self.param_name(body)
            init = self.array_name(body)
            body.emit(f"{init} = linear[{width} -> {hidden}](sum[{time}]({x.name}), {weight})")
            body.scope.append(Array(init, (*slice_axes[:-1], hidden)))
            inits.append(init)
        finals = [self.fresh("Last") for _ in states]
        seq = self.fresh("Seq")
        body.emit(f"{', '.join([*finals, seq])} = scan[{time}]({cell}, {', '.join(inits)}, "
                  f"{x.name})")
        for final in finals:
            body.scope.append(Array(final, (*slice_axes[:-1], hidden)))
        body.scope.append(Array(seq, (time, *slice_axes[:-1], hidden)))

    def block(self, body: Body) -> None:
        title = choice(self.c, TITLES)
        options = ""
        repeat = self.c.chance(0.5)
        count = choice(self.c, (1, 2, 3, 6, 12)) if repeat else 1
        if repeat:
            options += f" x{count}"
        if self.c.chance(0.4):
            options += f' color "{choice(self.c, COLOURS)}"'
        if self.c.chance(0.2):
            options += " shared"
        copy: Array | None = None
        if self.c.chance(0.35):
            # A copy of the block's array made before it: read inside, after, or both.
            x = body.scope[-1]
            copy = Array(self.fresh("Keep"), x.axes)
            body.emit(f"{copy.name} = {x.name}")
            body.scope.insert(len(body.scope) - 1, copy)
        body.emit(f'block "{title}"{options} {{')
        outer_indent = body.indent
        body.indent += "    "
        if repeat:
            self.repeated_body(body, copy)
        else:
            for _ in range(self.c.integer(1, 3)):
                self.statement(body, allow_blocks=self.c.chance(0.3))
        body.indent = outer_indent
        body.emit("}")
        if copy is not None and self.c.chance(0.6):
            latest = body.scope[-1]
            if set(copy.axes) <= set(latest.axes):
                self.bind(body, f"{latest.name} - {copy.name}", latest.axes)

    def repeated_body(self, body: Body, copy: Array | None = None) -> None:
        """A repeated block gives each array it reads back with the same axes, in order;
        it may also read `copy`, an array from before the block."""
        x = body.scope[-1]
        current = x.name
        local: list[str] = []
        for _ in range(self.c.integer(1, 3)):
            name = self.fresh("T")
            form = self.c.integer(0, 3)
            if form == 0:
                expr = f"{choice(self.c, UNARY)}({current})"
            elif form == 1:
                targets = subset(self.c, x.axes, 1, 2)
                expr = f"layernorm[{', '.join(targets)}]({current})"
            elif form == 2:
                expr = f"softmax[{choice(self.c, x.axes)}]({current})"
            else:
                expr = f"{current} + relu({current})"
            body.emit(f"{name} = {expr}")
            local.append(name)
            current = name
        if copy is not None and self.c.chance(0.5):
            body.emit(f"{x.name} = {current} + {copy.name}")
        else:
            body.emit(f"{x.name} = {x.name} + {current}" if self.c.chance(0.5)
                      else f"{x.name} = {current}")


# ---------------------------------------------------------------------------------------
# corrupted programs
# ---------------------------------------------------------------------------------------

# Docstrings and strings are written without nested quantifiers that could backtrack badly.
TOKEN = re.compile(r'"""[^"]*(?:"(?!"")[^"]*)*"""|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|'
                   r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|->|//|\(x\)|[<>=!]=|\s+|#[^\n]*|.",
                   re.DOTALL)

# What a corruption may put in: the language's own tokens, and characters it must reject.
INSERTS = ("{", "}", "(", ")", "[", "]", ",", ":", ";", "=", "->", "*", "/", "//", "+", "-",
           "(x)", "⊗", '"', '"""', "#", "\n", " ", "0", "-1", "10000000000000000000000",
           "1e999", "x0", "x99999999999", "def", "axis", "block", "return", "param", "sum",
           "import", "from", "R", "N", "B", "shared", "color", "é", "ａ", "\u200b", "\x00",
           "\x1b", "\t", "\r", "\ufeff", "\ud800", "𝑥", "<script>", "__import__", "__class__")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def mutate(chooser: Chooser, text: str, rounds: int | None = None) -> str:
    """`text` with 1 to 4 corruptions of tokens or characters."""
    for _ in range(rounds if rounds is not None else chooser.integer(1, 4)):
        parts = tokens(text)
        meaningful = [i for i, p in enumerate(parts) if not p.isspace()] or [0]
        kind = chooser.integer(0, 8)
        if not parts:
            text = choice(chooser, INSERTS)
            continue
        i = choice(chooser, meaningful)
        j = choice(chooser, meaningful)
        if kind == 0:  # delete a token
            del parts[i]
        elif kind == 1:  # duplicate a token
            parts.insert(i, parts[i])
        elif kind == 2:  # swap two tokens
            parts[i], parts[j] = parts[j], parts[i]
        elif kind == 3:  # replace a token by another of the program
            parts[i] = parts[j]
        elif kind == 4:  # put in a token or character from the list
            parts.insert(i, choice(chooser, INSERTS))
        elif kind == 5:  # replace a token by one from the list
            parts[i] = choice(chooser, INSERTS)
        else:  # character edits
            flat = "".join(parts)
            if not flat:
                continue
            at = chooser.integer(0, len(flat) - 1)
            if kind == 6:
                flat = flat[:at] + flat[at + 1:]
            elif kind == 7:
                flat = flat[:at] + choice(chooser, INSERTS)[:1] + flat[at:]
            else:
                flat = flat[:at] + chr(chooser.integer(1, 0x2FF)) + flat[at + 1:]
            text = flat
            continue
        text = "".join(parts)
    return text


# ---------------------------------------------------------------------------------------
# hypothesis strategies
# ---------------------------------------------------------------------------------------


@st.composite
def programs(draw: st.DrawFn, features: frozenset[str] = ProgramGenerator.ALL_FEATURES
             ) -> str:
    """A valid `.ncd` program (the checker must accept it)."""
    data = draw(st.data())
    return ProgramGenerator(DataChooser(data), features).program()


@st.composite
def mutated_programs(draw: st.DrawFn) -> str:
    """A valid program with a few corruptions: mostly invalid, never a reason to crash."""
    data = draw(st.data())
    chooser = DataChooser(data)
    return mutate(chooser, ProgramGenerator(chooser).program())


# ---------------------------------------------------------------------------------------
# the oracle: what must hold for any input
# ---------------------------------------------------------------------------------------

# Diagnostics that concern no place in the text: size overrides from the command line and a
# top-level file that cannot be read. Every other diagnostic points into the source.
WHOLE_FILE_CODES = frozenset({"E314", "E205"})

# What generated code may call or name: nothing that runs, imports or reflects.
FORBIDDEN_NAMES = frozenset({"__import__", "eval", "exec", "compile", "open", "os", "sys",
                             "subprocess", "globals", "locals", "vars", "builtins",
                             "importlib", "input", "breakpoint", "setattr", "delattr"})


class Violation(Exception):
    """A broken guarantee: a crash, a diagnostic without a location, or unsafe output."""

    def __init__(self, stage: str, message: str, details: str = "") -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message
        self.details = details


@dataclass
class Outcome:
    accepted: bool
    codes: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()


def check_diagnostics(error: Exception, stage: str) -> tuple[str, ...]:
    from ncd.diagnostics import CATALOGUE, NcdError

    assert isinstance(error, NcdError)
    if not error.diagnostics:
        raise Violation(stage, "NcdError without diagnostics")
    for diagnostic in error.diagnostics:
        if diagnostic.code not in CATALOGUE:
            raise Violation(stage, f"unknown code {diagnostic.code}")
        if diagnostic.span is None and diagnostic.code not in WHOLE_FILE_CODES:
            raise Violation(stage, f"{diagnostic.code} without a location: "
                            f"{diagnostic.message}")
    text = error.render()
    if "Traceback" in text:
        raise Violation(stage, "a traceback in a diagnostic")
    return tuple(d.code for d in error.diagnostics)


def check_python(source: str, *, functions: bool = False) -> None:
    """Generated code defines the model and nothing else: imports of torch and classes (and,
    for a training step, `functions`: its loss, update and helper functions)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise Violation("compile", f"generated code does not parse: {error}") from None
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.ClassDef) or (functions and isinstance(node, ast.FunctionDef)):
            continue
        else:
            raise Violation("compile", f"top-level {type(node).__name__} in generated code")
        if any(n.split(".")[0] != "torch" for n in names):
            raise Violation("compile", f"generated code imports {names}")
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.Lambda)):
            continue
        arguments = function.args
        bound = {a.arg for a in [*arguments.posonlyargs, *arguments.args,
                                 *arguments.kwonlyargs]}
        bound |= {n.id for n in ast.walk(function)
                  if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and \
                    node.id not in bound and (node.id in FORBIDDEN_NAMES or
                                              node.id.startswith("__")):
                raise Violation("compile", f"generated code reads the global `{node.id}`")
            if isinstance(node, ast.Attribute) and node.attr.startswith("__") and \
                    node.attr != "__init__":
                raise Violation("compile", f"generated code reads the attribute `{node.attr}`")


def check_svg(svg: str) -> None:
    """The SVG is well-formed XML with no scripts, event handlers, foreign objects or
    references to anything outside the document."""
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(svg.encode("utf-8"))
    except Exception as error:  # defusedxml raises several kinds
        raise Violation("render", f"SVG does not parse: {error}") from None
    for element in root.iter():
        tag = str(element.tag).rsplit("}", 1)[-1].lower()
        if tag in {"script", "foreignobject", "iframe", "object", "embed", "image", "use"}:
            raise Violation("render", f"SVG has a <{tag}> element")
        for key, value in element.attrib.items():
            local = key.rsplit("}", 1)[-1].lower()
            if local.startswith("on"):
                raise Violation("render", f"SVG has an event attribute {local}")
            if local == "href" or "url(" in value.lower():
                if not value.startswith("#") and not value.startswith("url(#"):
                    raise Violation("render", f"SVG refers outside itself: {value[:80]}")
        if tag == "style" and element.text and ("@import" in element.text or
                                                 "url(" in element.text):
            raise Violation("render", "SVG style imports or refers to a URL")


def build_modules(source: str) -> None:
    """Run generated code and instantiate each of its modules (this imports torch)."""
    import torch

    namespace: dict[str, object] = {"__name__": "ncd_generated"}
    exec(compile(source, "<generated>", "exec"), namespace)
    built = [value() for value in list(namespace.values())
             if isinstance(value, type) and issubclass(value, torch.nn.Module)
             and value.__module__ == "ncd_generated"]
    if not built:
        raise Violation("build", "generated code defines no module")


def exercise(text: str, *, svg: bool = True, tikz: bool = True, dot: bool = True,
             compile_code: bool = True, every_definition: bool = False,
             build: bool = False) -> Outcome:
    """Run `text` through check, render and compile; raise `Violation` when a guarantee
    breaks. Returns whether the input was accepted and the codes of its diagnostics."""
    import traceback

    from ncd.api import load
    from ncd.diagnostics import NcdError

    def crash(stage: str, error: BaseException) -> Violation:
        return Violation(stage, f"{type(error).__name__}: {error}"[:300],
                         traceback.format_exc())

    try:
        program = load(text)
    except NcdError as error:
        return Outcome(False, check_diagnostics(error, "check"))
    except RecursionError as error:
        raise crash("check", error) from None
    except Exception as error:
        raise crash("check", error) from None
    names = list(program.names) if every_definition else \
        [program.main.name] if program.names else []
    stages: list[str] = ["check"]
    try:
        program.ir.model_validate_json(program.to_json())
    except Exception as error:
        raise crash("ir", error) from None
    for name in names:
        from ncd.renderers import diagram
        from ncd.renderers import svg as svg_emitter
        from ncd.renderers import tikz as tikz_emitter
        from ncd.renderers.dot import program_to_dot

        try:
            # Laid out once: `render_svg` and `render_tikz` each lay the definition out and
            # hand the same geometry to their emitter (the label style is the emitter's).
            drawn = diagram(program.ir, name) if svg or tikz else None
            if svg:
                assert drawn is not None
                check_svg(svg_emitter.render(drawn))
                check_svg(svg_emitter.render(drawn, text="text"))
                stages.append("svg")
            if tikz:
                assert drawn is not None
                tikz_emitter.render(drawn)
                stages.append("tikz")
            if dot:
                program_to_dot(program.ir, name)
                stages.append("dot")
        except Violation:
            raise
        except Exception as error:
            raise crash("render", error) from None
    if compile_code and names:
        try:
            source = program.compile()
        except NcdError as error:
            codes = check_diagnostics(error, "compile")
            return Outcome(True, codes, tuple(stages))
        except Exception as error:
            raise crash("compile", error) from None
        check_python(source)
        stages.append("compile")
        for training in program.training_names:
            try:
                check_python(program.compile(training), functions=True)
            except NcdError as error:
                check_diagnostics(error, "compile")
                continue
            except Exception as error:
                raise crash("compile", error) from None
            stages.append("train")
        if build:
            try:
                build_modules(source)
            except Exception as error:
                raise crash("build", error) from None
            stages.append("build")
    return Outcome(True, (), tuple(stages))
