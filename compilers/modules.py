"""The generated classes: what each `nn.Module` owns (parameters with their initial values,
submodules, block copies) and the text of its class, around the `forward` the emitter writes."""

from __future__ import annotations

import itertools
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import assert_never

from ncd import ir
from ncd.ops.lowering import Role, float_literal
from ncd.sizes import ProgramSizes

from .errors import CompileError
from .naming import MODULE_ATTRIBUTES, comment_text, is_plain_identifier, sanitize, string_literal

LINE_LENGTH = 100


@dataclass
class ParamEntry:
    """A parameter the class registers: under which attribute, and with which default role."""

    parameter: ir.Parameter
    attribute: str
    role: Role


@dataclass
class ChildEntry:
    """A submodule the class registers (a called definition, or a block's copies)."""

    attribute: str
    class_name: str
    repeat: int | None  # None: a single submodule; N: an nn.ModuleList of N copies
    comment: str
    copies_path: str | None = None
    """For a block's copies: the step of their parameters' paths in the IR (the block's title
    in snake case, `transformer_layer` as in `transformer_layer.3.W`; docs/compiling.md)."""


@dataclass
class ModuleSpec:
    """One generated class: the parameters and submodules it registers."""

    class_name: str
    doc: str | None
    declared: dict[str, ir.Parameter]
    params: dict[str, ParamEntry] = field(default_factory=dict)
    children: list[ChildEntry] = field(default_factory=list)
    child_by_instance: dict[str, str] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)
    blocks: list[ModuleSpec] = field(default_factory=list)
    copies_of: dict[tuple[str, int], tuple[str, ModuleSpec]] = field(default_factory=dict)
    """The copies of a repeated block that blocks run one by one (`ir.CopyOf`), by the
    block's title and number of copies: the attribute of their `nn.ModuleList`, their class."""
    signature: str | None = None  # `X: R[x, m] -> R[x, n]`, shown by `print(module)`

    def new_attribute(self, wanted: str) -> str:
        """A fresh attribute name of the class made from `wanted`."""
        # A dunder name (`__init__`, `__class__`) is Python's own on every object: prefix it.
        name = f"p{wanted}" if wanted.startswith("__") and wanted.endswith("__") else wanted
        while name in self.attributes or name in MODULE_ATTRIBUTES:
            name += "_"
        self.attributes.add(name)
        return name

    def param(self, name: str, array: ir.ArrayType, role: Role) -> ParamEntry:
        entry = self.params.get(name)
        if entry is None:
            parameter = self.declared.get(name) or ir.Parameter(name=name, array=array)
            entry = ParamEntry(parameter, self.new_attribute(name), role)
            self.params[name] = entry
        return entry

    def child(self, instance: str, class_name: str, comment: str,
              repeat: int | None = None) -> str:
        attribute = self.child_by_instance.get(instance)
        if attribute is None:
            attribute = self.new_attribute(sanitize(instance, "module"))
            self.child_by_instance[instance] = attribute
            self.children.append(ChildEntry(attribute, class_name, repeat, comment))
        return attribute


def attribute_code(owner: str, attribute: str) -> str:
    """`self.W`, or `getattr(self, "...")` for a name that is not a plain identifier."""
    if is_plain_identifier(attribute):
        return f"{owner}.{attribute}"
    return f"getattr({owner}, {string_literal(attribute)})"


def submodule_code(owner: str, attribute: str) -> str:
    """`self._modules["head"]`: a submodule read from the registry that `nn.Module` keeps it
    in. `self.head` is the same module, found by `nn.Module.__getattr__` after the ordinary
    look-up fails, which costs as much as a small operation."""
    return f"{owner}._modules[{string_literal(attribute)}]"


def registered_counts(spec: ModuleSpec) -> tuple[int, int]:
    """How many parameters and buffers a module of the class registers."""
    buffers = sum(1 for entry in spec.params.values() if entry.parameter.buffer)
    return len(spec.params) - buffers, buffers


@dataclass(frozen=True)
class Scope:
    """Where parameters live while a term is emitted: `self`, a block copy's loop name, or a
    submodule whose body is written in place. `registered`: its parameters may be read from
    the module's registries (`_parameters`, `_buffers`), which the test that guards a body
    written in place has checked hold the class's entries (`compilers.inline_calls`).
    `bind`: the local that holds a parameter of `self`, bound once at the top of `forward`
    (`own_parameter_lines`)."""

    spec: ModuleSpec
    owner: str
    registered: bool = False
    bind: Callable[[ParamEntry], str] | None = None

    def read(self, entry: ParamEntry) -> str:
        """The code that reads a parameter or buffer of the module."""
        if self.bind is not None and not entry.parameter.buffer:
            return self.bind(entry)
        if not self.registered:
            return attribute_code(self.owner, entry.attribute)
        registry = "_buffers" if entry.parameter.buffer else "_parameters"
        return f"{self.owner}.{registry}[{string_literal(entry.attribute)}]"


def own_parameter_lines(spec: ModuleSpec, bound: Sequence[tuple[str, ParamEntry]]
                        ) -> list[str]:
    """The top of a `forward` that binds the parameters it reads (local, entry) to locals:
    read from `self._parameters` where the module is its class as generated and holds as
    many as the class registers, else as attributes, which a parametrized module (a property
    of its class), a `DataParallel` replica or a parameter set again as a plain tensor
    needs. `self.W` is found by `nn.Module.__getattr__` after Python's own look-up fails,
    about 0.45 µs, as much as a small operation."""
    if not bound:
        return []
    count = registered_counts(spec)[0]
    inner = " " * 12
    lines = [f"        if type(self) is {spec.class_name} and len(self._parameters) == {count}:",
             f"{inner}# the parameters read from their registry, once"]
    lines += [f"{inner}{local} = self._parameters[{string_literal(entry.attribute)}]"
              for local, entry in bound]
    lines.append("        else:")
    lines += [f"{inner}{local} = {attribute_code('self', entry.attribute)}"
              for local, entry in bound]
    return lines


@dataclass(frozen=True)
class DefinitionInfo:
    """What a caller needs of a compiled definition: its class, and which outputs may carry
    batch dims (False: computed from parameters alone)."""

    class_name: str
    outputs_batched: tuple[bool, ...]



def all_specs(spec: ModuleSpec) -> Iterator[ModuleSpec]:
    yield spec
    for block in spec.blocks:
        yield from all_specs(block)


def state_keys(spec: ModuleSpec, classes: dict[str, ModuleSpec]
               ) -> list[tuple[str, str, bool]] | None:
    """What a module of the class holds: for each parameter and buffer its path in the IR
    (`W`, `instance.W` in a called definition), its state-dict key (the attributes: a name may
    be renamed, `to_`) and whether it is a buffer, in the order `named_parameters` and
    `named_buffers` list them. `classes`: every class of the file by its name. Copies (an
    `nn.ModuleList`) have the index of the copy in both (`expert.0.W`, `transformer_layer.3.W`).
    None for a class that holds a submodule whose keys have no path of the IR."""
    keys = [(e.parameter.name, e.attribute, e.parameter.buffer) for e in spec.params.values()]
    instances = {attribute: instance for instance, attribute in spec.child_by_instance.items()}
    for child in spec.children:
        site = instances.get(child.attribute, child.copies_path)
        inner = classes.get(child.class_name)
        if site is None or inner is None:
            return None
        held = state_keys(inner, classes)
        if held is None:
            return None
        steps = [("", "")] if child.repeat is None else \
            [(f".{index}", f".{index}") for index in range(child.repeat)]
        keys += [(f"{site}{path_index}.{path}", f"{child.attribute}{key_index}.{key}", buffer)
                 for path_index, key_index in steps for path, key, buffer in held]
    return keys


def nested_blocks(spec: ModuleSpec) -> list[ModuleSpec]:
    """Block classes in the order they must be defined (inner before outer)."""
    ordered: list[ModuleSpec] = []
    for block in spec.blocks:
        ordered.extend(nested_blocks(block))
        ordered.append(block)
    return ordered


def docstring_literal(text: str, indent: str = "    ", width: int = 100) -> str:
    """A docstring in triple quotes when that is safe, else an escaped literal. A docstring too
    long for one line of `width` characters (at `indent`) is wrapped, its closing quotes on a
    line of their own, as a formatter lays it out."""
    line = " ".join(text.split())
    if line and line.isprintable() and "\\" not in line and '"' not in line:
        if len(indent) + len(line) + 6 <= width:
            return f'"""{line}"""'
        wrapped = textwrap.wrap(line, width - len(indent) - 3, break_long_words=False,
                                break_on_hyphens=False)
        if len(wrapped) == 1:
            # The formatter puts the closing quotes back on a docstring of one line: the line
            # must break where the quotes still fit.
            wrapped = textwrap.wrap(line, width - len(indent) - 6, break_long_words=False,
                                    break_on_hyphens=False)
        return '"""' + f"\n{indent}".join(wrapped) + f'\n{indent}"""'
    return string_literal(line)


def initialiser_code(entry: ParamEntry, owner: str, sizes: ProgramSizes) -> str:
    """The `nn.init` call that gives a parameter its declared (or default) initial values."""
    parameter = entry.parameter
    target = attribute_code(owner, entry.attribute)
    args = list(parameter.init_args)
    shape_values = [sizes.value(axis.size) or 1 for axis in parameter.array.shape.axes]
    role = entry.role
    fan_in = role.fan_in or (shape_values[0] if shape_values else 1)
    fan_out = role.fan_out or (shape_values[-1] if shape_values else 1)
    init = parameter.init
    if parameter.array.dtype.kind == "B":
        return _boolean_initialiser(target, init, args)
    if init == "normal":
        mean, std = (args + [0.0, 1.0][len(args):])[:2]
        return f"nn.init.normal_({target}, mean={float_literal(mean)}, std={float_literal(std)})"
    if init == "uniform":
        low, high = (args + [0.0, 1.0][len(args):])[:2]
        return f"nn.init.uniform_({target}, {float_literal(low)}, {float_literal(high)})"
    if init in ("zeros", "ones"):
        return f"nn.init.{init}_({target})"
    if init == "constant":
        return f"nn.init.constant_({target}, {float_literal(args[0] if args else 0.0)})"
    if init == "xavier":
        gain = args[0] if args else 1.0
        bound = f"{float_literal(gain)} * (6 / ({fan_in} + {fan_out})) ** 0.5"
        return f"nn.init.uniform_({target}, -{bound}, {bound})  # xavier (glorot) uniform"
    if init == "kaiming":
        return (f"nn.init.normal_({target}, mean=0.0, std=(2 / {fan_in}) ** 0.5)"
                f"  # kaiming (he) normal, fan_in {fan_in}")
    if init != "default":
        raise CompileError(f"unknown initialiser {init!r} of parameter {parameter.name!r}")
    like = f"  # as {role.like}" if role.like else ""
    match role.init:
        case "fan_in_uniform":
            return (f"nn.init.uniform_({target}, -({fan_in}**-0.5), {fan_in}**-0.5)"
                    + (f"{like}: fan_in {fan_in}" if like else ""))
        case "normal":
            return f"nn.init.normal_({target}){like}"
        case "ones":
            return f"nn.init.ones_({target}){like}"
        case "zeros":
            return f"nn.init.zeros_({target}){like}"
    assert_never(role.init)


def commented(indent: str, line: str, comment: str | None) -> list[str]:
    """A line with its comment trailing when that fits in 100 columns, else above it; a line
    of code too long for 100 columns is wrapped (`wrapped`)."""
    if not comment:
        return wrapped(indent, line)
    note = f"# {comment_text(comment)}"
    if len(indent) + len(line) + 2 + len(note) <= LINE_LENGTH:
        return [f"{indent}{line}  {note}"]
    return [indent + note, *wrapped(indent, line)]


_CLOSING = {")": "(", "]": "["}


def _brackets(text: str) -> list[int] | None:
    """For each character of `text`, the bracket depth before it (-1 inside a string); None
    when the brackets do not balance. Strings hold no quote of their own kind here."""
    depths: list[int] = []
    depth = 0
    quote: str | None = None
    last = 0  # the characters from `last` on have the depth of the last bracket or quote
    for match in _BRACKET_OR_QUOTE.finditer(text):
        index, char = match.start(), match.group()
        depths.extend([depth if quote is None else -1] * (index + 1 - last))
        last = index + 1
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return None
    depths.extend([depth if quote is None else -1] * (len(text) - last))
    return depths if depth == 0 and quote is None else None


_BRACKET_OR_QUOTE = re.compile(r"[()\[\]{}\"']")


def _items(body: str, depths: list[int], base: int = 0) -> list[str]:
    """`body` split at its commas of depth `base` (its top level)."""
    items, start = [], 0
    index = body.find(",")
    while index >= 0:
        if depths[index] == base:
            items.append(body[start:index].strip())
            start = index + 1
        index = body.find(",", index + 1)
    last = body[start:].strip()
    if last:
        items.append(last)
    return items


def _comprehension(body: str, depths: list[int], base: int = 0) -> list[str]:
    """A comprehension's element and its `for` and `if` clauses, or a conditional
    expression's value, `if` and `else` parts, a chain of them too (`a if p else b if q else
    c`), each on a line of its own when the whole does not fit on one; `[body]` when it is
    neither. `base`: the depth of `body`'s top level."""
    fors, ifs = _top_level(body, depths, " for ", base), _top_level(body, depths, " if ", base)
    if fors:
        cuts = fors + ifs
    else:
        otherwise = _top_level(body, depths, " else ", base)
        cuts = sorted(ifs + otherwise)
        # `if` and `else` alternate, an `if` first and an `else` last
        if not ifs or len(ifs) != len(otherwise) or cuts[::2] != ifs:
            return [body]
    bounds = [0, *sorted(cuts), len(body)]
    return [body[a:b].strip() for a, b in itertools.pairwise(bounds) if a < b]


def _condition(indent: str, clause: str) -> list[str]:
    """A conditional expression's `if` clause at `indent`: as the formatter writes it when it
    does not fit on a line, a line for each operand of its top-level `and` (or `or`)."""
    if len(indent) + len(clause) <= LINE_LENGTH:
        return [indent + clause]
    depths = _brackets(clause)
    if depths is None:
        return wrapped(indent, clause)
    for joiner in (" or ", " and "):
        cuts = _top_level(clause, depths, joiner)
        if cuts:
            bounds = [0, *cuts, len(clause)]
            return [line for a, b in itertools.pairwise(bounds)
                    for line in wrapped(indent, clause[a:b].strip())]
    return wrapped(indent, clause)


def _top_level(body: str, depths: list[int], keyword: str, base: int = 0) -> list[int]:
    """Where `keyword` starts in `body` outside every bracket and string (at depth `base`,
    the depth of `body`'s top level)."""
    found = []
    index = body.find(keyword)
    while index >= 0:
        if depths[index] == base:
            found.append(index)
        index = body.find(keyword, index + 1)
    return found


def wrapped(indent: str, line: str, suffix: str = "") -> list[str]:
    """`line` (then `suffix`) at `indent`, wrapped as a formatter (ruff, black) wraps it when
    it is longer than 100 columns: split inside its last pair of brackets, the contents on
    one line when they fit, else one item per line with a trailing comma (items wrapped in
    turn). A line this cannot shorten is left whole."""
    stripped = line.lstrip(" ")
    indent, line = indent + " " * (len(line) - len(stripped)), stripped
    if len(indent) + len(line) + len(suffix) <= LINE_LENGTH or not line:
        return [indent + line + suffix]
    if line.startswith("raise ") and line.endswith(" from None"):  # the call split, as `f(...)`
        return wrapped(indent, line.removesuffix(" from None"), " from None" + suffix)
    if line.startswith(") = "):  # after targets one per line: `) = f(...)`, wrapped as `_ = `
        first, *rest = wrapped(indent, "_" + line[1:], suffix)
        return [f"{indent}){first[len(indent) + 1:]}", *rest]
    if line[-1] not in _CLOSING:
        return _parenthesized(indent, line, suffix)
    depths = _brackets(line)
    if depths is None:
        return [indent + line + suffix]
    pair = _split_pair(indent, line, suffix, depths)
    if pair is None:
        return [indent + line + suffix]
    opening, close = pair
    head, body = line[:opening + 1], line[opening + 1:close]
    inner = indent + "    "
    # the body's depths as they are, its top level at `base` (-1, in a string, is never it)
    body_depths, base = depths[opening + 1:close], depths[opening] + 1
    items = _items(body, body_depths, base)
    end = indent + line[close:] + suffix
    if len(inner) + len(body) <= LINE_LENGTH and not body.rstrip().endswith(","):
        return [indent + head, inner + body, end]
    clauses = _comprehension(body, body_depths, base)
    if len(clauses) > 1:  # `[f(x) for x in xs]`: the element and each clause on a line
        conditional = any(clause.startswith("else ") for clause in clauses)
        return [indent + head, *(line for clause in clauses for line in (
            _condition(inner, clause) if conditional and clause.startswith("if ")
            else wrapped(inner, clause))), end]
    if len(items) == 1:  # nothing to split at: the one item on its own lines, no comma added
        return [indent + head, *wrapped(inner, items[0]), end]
    lines = [indent + head]
    for item in items:
        lines.extend(wrapped(inner, item, ","))
    return [*lines, end]


def choice_lines(indent: str, target: str, choices: Sequence[tuple[str, str]],
                 otherwise: str) -> list[str]:
    """`target = (a if p else b if q else c)`, the values and tests given apart, laid out as
    `wrapped` lays the whole line out (a line for each value and each test when it does not
    fit on one), without measuring the brackets of the whole: a lowering that writes such a
    chain knows where its parts are."""
    body = "".join(f"{value} if {test} else " for value, test in choices) + otherwise
    line = f"{target} = ({body})"
    if len(indent) + len(line) <= LINE_LENGTH:
        return [indent + line]
    inner = indent + "    "
    if len(inner) + len(body) <= LINE_LENGTH:
        return [f"{indent}{target} = (", inner + body, f"{indent})"]
    lines = [f"{indent}{target} = ("]
    for number, (value, test) in enumerate(choices):
        lines.extend(wrapped(inner, f"else {value}" if number else value))
        lines.extend(_condition(inner, f"if {test}"))
    return [*lines, *wrapped(inner, f"else {otherwise}"), f"{indent})"]


def _split_pair(indent: str, line: str, suffix: str, depths: list[int]
                ) -> tuple[int, int] | None:
    """The brackets to split `line` inside: its last pair when what comes before it fits on
    the first line; else, as the formatter omits trailers (`f(...).g(...)`), the latest
    earlier pair whose rest (`).g(...)`) fits on the closing line. None when none does."""
    close = len(line) - 1
    while close > 0:
        # the last opening bracket of its kind before `close` one level out is its pair
        opener, level = _CLOSING[line[close]], depths[close] - 1
        opening = line.rfind(opener, 0, close)
        while opening >= 0 and depths[opening] != level:
            opening = line.rfind(opener, 0, opening)
        if opening < 0:
            return None  # brackets of different kinds paired: not code the compiler writes
        rest = line[close:]
        if depths[close] == 1 and line[opening + 1:close].strip() \
                and len(indent) + opening + 1 <= LINE_LENGTH \
                and (close == len(line) - 1
                     or len(indent) + len(rest) + len(suffix) <= LINE_LENGTH):
            return opening, close
        # the trailer before: the closing bracket just before the last trailer's opening
        close = opening - 1
        while close > 0 and line[close] not in _CLOSING:
            if not (line[close].isalnum() or line[close] in "._"):
                return None  # not a chain of trailers (an operator, a space)
            close -= 1
        if line[close] not in _CLOSING or depths[close] != 1:
            return None
    return None


_OPERATORS = (" + ", " - ", " * ", " / ", " @ ")


def _parenthesized(indent: str, line: str, suffix: str) -> list[str]:
    """`name = a(...) + b`, too long and not ending in a bracket: as a formatter writes it,
    the right-hand side (a sum, a product) inside parentheses on a line of its own, when it
    fits there. A line this cannot shorten is left whole."""
    depths = _brackets(line)
    equals = line.find(" = ")
    if suffix or depths is None or equals < 0 or depths[equals + 1] != 0 or \
            not line[:equals].isidentifier() or not any(
                line.startswith(operator, i) and depths[i] == 0
                for i in range(equals + 3, len(line)) for operator in _OPERATORS):
        return [indent + line + suffix]
    target, value = line[:equals], line[equals + 3:]
    inner = indent + "    "
    if len(inner) + len(value) > LINE_LENGTH:
        return [indent + line + suffix]
    return [f"{indent}{target} = (", inner + value, f"{indent})"]


def signature_lines(arguments: Sequence[str], returns: str) -> list[str]:
    """`def forward(...)`, wrapped the way a formatter wraps it when it is too long."""
    one_line = f"    def forward({', '.join(arguments)}) -> {returns}:"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    closing = [f"    ) -> {returns}:"]
    if len(closing[0]) > LINE_LENGTH and returns.startswith("tuple[") and returns.endswith("]"):
        # many outputs (a backward definition's): one type a line, as the formatter does
        closing = ["    ) -> tuple[", *(f"        {t.strip()}," for t in returns[6:-1].split(",")),
                   "    ]:"]
    middle = "        " + ", ".join(arguments)
    if len(middle) <= LINE_LENGTH:
        return ["    def forward(", middle, *closing]
    return ["    def forward(", *(f"        {a}," for a in arguments), *closing]


def buffer_value(parameter: ir.Parameter, dims: list[str]) -> str:
    """The fixed initial value of a buffer: `torch.zeros(4)`, `torch.full((4,), 0.5)`."""
    shape = ", ".join(dims) if dims else "()"
    match parameter.init:
        case "zeros" | "ones":
            return f"torch.{parameter.init}({shape})"
        case "constant":
            value = parameter.init_args[0] if parameter.init_args else 0.0
            return f"torch.full(({shape}{',' if len(dims) == 1 else ''}), {float_literal(value)})"
    raise CompileError(f"the buffer {parameter.name!r} has the initialiser {parameter.init!r}; "
                       "a buffer starts at zeros, ones or a constant")


def repr_entries(spec: ModuleSpec, sizes: ProgramSizes) -> list[str]:
    """What `print(module)` shows of a class besides its submodules: the signature of its
    forward, then each parameter with its type and shape (`(W): Parameter R[m, n] (8, 4)`)."""
    entries = [spec.signature] if spec.signature else []
    for entry in spec.params.values():
        array = entry.parameter.array
        dims = tuple(sizes.value(axis.size) for axis in array.shape.axes)
        kind = "Buffer" if entry.parameter.buffer else "Parameter"
        entries.append(f"({entry.attribute}): {kind} {array.text()} {dims}")
    return entries


def extra_repr_lines(spec: ModuleSpec, sizes: ProgramSizes) -> list[str]:
    """`extra_repr`, the method `nn.Module.__repr__` calls for a class's own lines, returning
    `repr_entries` as a string literal, or a tuple of them joined by newlines. An entry too long
    for one line is split at its commas into adjacent literals."""
    entries = repr_entries(spec, sizes)
    if not entries:
        return []
    lines = ["", "    def extra_repr(self) -> str:"]
    if len(entries) == 1 and len(entries[0]) + 20 <= LINE_LENGTH:
        lines.append(f"        return {string_literal(entries[0])}")
        return lines
    lines.append("        lines = (")
    for entry in entries:
        # whole when it fits with its comma at this indent: the formatter joins adjacent
        # literals that fit
        fits = len(string_literal(entry)) + 13 <= LINE_LENGTH
        parts = [entry] if fits else split_text(entry, LINE_LENGTH - 16)
        for index, part in enumerate(parts):
            comma = "," if index == len(parts) - 1 else ""
            lines.append(f"            {string_literal(part)}{comma}")
    lines.append("        )")
    lines.append('        return "\\n".join(lines)')
    return lines


def split_text(text: str, width: int) -> list[str]:
    """`text` cut after its `, ` separators into pieces of at most about `width` characters
    (a piece without a comma to cut at stays whole)."""
    pieces: list[str] = []
    current = ""
    for word in text.split(", "):
        candidate = f"{current}, {word}" if current else word
        if current and len(string_literal(candidate + ", ")) > width:
            pieces.append(current + ", ")
            current = word
        else:
            current = candidate
    pieces.append(current)
    return pieces


def _boolean_initialiser(target: str, init: str, args: list[float]) -> str:
    """A Boolean parameter's first values: each entry true with probability p (drawn from
    torch's generator, as every initialiser is), or all false or all true."""
    if init == "bernoulli":
        p = args[0] if args else 0.5
        return f"{target}.bernoulli_({float_literal(p)})"
    if init in ("zeros", "ones"):
        return f"{target}.fill_({init == 'ones'})"
    raise CompileError(f"unknown initialiser {init!r} of a Boolean parameter")


def class_lines(spec: ModuleSpec, sizes: ProgramSizes,
                forward: tuple[list[str], list[str], str] | None) -> list[str]:
    """The class of one module: parameters, submodules, initialisation and `forward`
    (given as its argument list, body lines and return annotation)."""
    inner = "        "
    lines = [f"class {spec.class_name}(nn.Module):"]
    if spec.doc:
        lines.append(f"    {docstring_literal(spec.doc)}")
        lines.append("")
    lines.append("    def __init__(self) -> None:")
    lines.append(f"{inner}super().__init__()")
    for entry in spec.params.values():
        parameter = entry.parameter
        dims = []
        for axis in parameter.array.shape.axes:
            value = sizes.value(axis.size)
            if value is None:
                raise CompileError(f"parameter {parameter.name!r} has the symbolic axis "
                                   f"{axis.name!r}; parameters need fixed sizes")
            dims.append(str(value))
        empty = f"torch.empty({', '.join(dims) if dims else '()'})"
        note = parameter.array.text()
        if parameter.array.dtype.kind == "B":
            # Learned, but flipped rather than moved by a gradient: a bool tensor cannot
            # require grad, so it is a parameter that autograd never sees.
            sized = ", ".join(dims) if dims else "()"
            empty = f"torch.empty({sized}, dtype=torch.bool), requires_grad=False"
        if entry.attribute != parameter.name:
            note += f", renamed from {parameter.name}"
        if parameter.buffer:
            line = (f"self.register_buffer({string_literal(entry.attribute)}, "
                    f"{buffer_value(parameter, dims)})")
            lines.extend(commented(inner, line, "buffer " + note))
            continue
        if is_plain_identifier(entry.attribute):
            line = f"self.{entry.attribute} = nn.Parameter({empty})"
        else:
            line = (f"self.register_parameter({string_literal(entry.attribute)}, "
                    f"nn.Parameter({empty}))")
        lines.extend(commented(inner, line, note))
    for child in spec.children:
        if child.repeat is None:
            construct = f"{child.class_name}()"
        else:
            construct = f"nn.ModuleList({child.class_name}() for _ in range({child.repeat}))"
        if is_plain_identifier(child.attribute):
            line = f"self.{child.attribute} = {construct}"
        else:
            line = f"self.add_module({string_literal(child.attribute)}, {construct})"
        lines.extend(commented(inner, line, child.comment))
    learned = [entry for entry in spec.params.values() if not entry.parameter.buffer]
    if learned:
        lines.append(f"{inner}self.reset_parameters()")
        lines.append("")
        lines.append("    def reset_parameters(self) -> None:")
        lines.append(f"{inner}with torch.no_grad():")
        for entry in learned:
            call, _, note = initialiser_code(entry, "self", sizes).partition("  # ")
            lines.extend(commented(inner + "    ", call, note or None))
    lines.extend(extra_repr_lines(spec, sizes))
    if forward is not None:
        arguments, body, returns = forward
        lines.append("")
        lines.extend(signature_lines(arguments, returns))
        lines.extend(body)
    return lines
