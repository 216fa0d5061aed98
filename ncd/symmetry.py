"""Symmetry certificates read off a definition: for each axis of its inputs, whether the
definition is equivariant or invariant under permutations of that axis, and under shifts along
it, or neither and why (the source line that breaks it).

The analysis follows the tracked axis through the term, as the set of axes that carry it (an
axis renamed, `K[y] = K[x]`, carries it on under its new name):

- a broadcasted operation commutes with any reindexing of its degree axes when every port
  reads them with identity reindexing (the construction of Br, theory.md section 2); a
  parameter indexed by a carrying degree axis (a positional embedding) breaks that;
- on its target axes, the operator's declaration decides (`Declaration.symmetry`): softmax,
  a parameter-free normalisation, a sum over all of the axis commute with the permutation (a
  sum makes the result invariant); a weight per position, a condition on positions (a causal
  mask), a reshape, a concat or a pad break it;
- a reindexing that is not a renaming breaks permutations; for shifts, a window
  (`X[2*p + w]`) carries the shift on along `p` with the stride (`2`), up to the boundary:
  after a window only entrywise operations keep it;
- a scan runs along its axis in order: it breaks both along that axis; so does a machine along
  the axis it cuts into blocks;
- an array built from nothing (`One[e] = 1`, index values) that does not depend on an axis is
  constant along it: transformed and not transformed at once, it agrees with whatever the
  other operands of an operation do (a `constant` carrier).

Shifts are cyclic (`torch.roll`): a definition that commutes with every permutation of an axis
commutes with its cyclic shifts exactly; through a window, shifts by multiples of the stride
shift the output, at every position whose window stays inside the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, assert_never

from ncd import ir
from ncd.operators import declaration
from ncd.ops.facts import Break, Carried, Carry
from ncd.sizes import ProgramSizes

Transformation = Literal["permutation", "translation"]
ClaimKind = Literal["equivariant", "invariant", "neither"]


@dataclass(frozen=True)
class Carrier:
    """An axis that carries the tracked one: one step along it is `stride` steps of the
    tracked axis; `windowed` once a window or an offset read it (exact only away from the
    boundary)."""

    stride: int = 1
    windowed: bool = False
    constant: bool = False
    """The array is constant along the axis: unchanged by any transformation of it."""


CONSTANT = Carrier(constant=True)

State = dict[str, Carrier]
"""The axes of one array that carry the tracked axis."""


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    detail: str
    span: ir.Span | None = None
    carriers: tuple[tuple[int, str, int], ...] = ()
    """For an equivariant claim: (output index, axis, stride) of each output axis that carries
    the transformation."""
    windowed: bool = False

    def text(self) -> str:
        where = f" ({self.span})" if self.span is not None else ""
        return f"{self.kind}: {self.detail}{where}" if self.detail else self.kind


@dataclass(frozen=True)
class AxisSymmetry:
    axis: str
    permutation: Claim
    translation: Claim


class _Broken(Exception):
    def __init__(self, reason: str, span: ir.Span | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.span = span


def symmetries(program: ir.Program, name: str) -> list[AxisSymmetry]:
    """The certificate of each axis of the inputs of definition `name`, in order."""
    definition = program.definition(name)
    axes: list[str] = []
    for variable in definition.inputs:
        for axis_name in variable.array.names:
            if axis_name not in axes:
                axes.append(axis_name)
    analysis = _Analysis(program)
    return [AxisSymmetry(axis, analysis.claim(definition, axis, "permutation"),
                         analysis.claim(definition, axis, "translation")) for axis in axes]


class _Analysis:
    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.sizes = ProgramSizes(program.axes)
        self.mode: Transformation = "permutation"

    def claim(self, definition: ir.Definition, axis: str, mode: Transformation) -> Claim:
        self.mode = mode
        states: list[State] = [{axis: Carrier()} if axis in v.array.names else {}
                               for v in definition.inputs]
        try:
            outputs = self.propagate(definition.body, states)
        except _Broken as broken:
            return Claim("neither", broken.reason, broken.span)
        outputs = [_varying(state) for state in outputs]
        carriers = tuple((index, name, carrier.stride)
                         for index, state in enumerate(outputs)
                         for name, carrier in state.items())
        windowed = any(c.windowed for state in outputs for c in state.values())
        if not carriers:
            what = "permuting" if mode == "permutation" else "cyclically shifting"
            return Claim("invariant", f"{what} {axis} leaves every output unchanged")
        described = ", ".join(
            f"{definition.outputs[i].name or f'output {i + 1}'} along {name}"
            + (f" (stride {stride})" if stride != 1 else "") for i, name, stride in carriers)
        if mode == "permutation":
            detail = f"permuting {axis} permutes {described} alike"
        elif windowed:
            step = max(stride for _, _, stride in carriers)
            by = f" by a multiple of {step}" if step != 1 else ""
            detail = f"shifting {axis}{by} shifts {described}, up to the boundary"
        else:
            detail = f"cyclically shifting {axis} shifts {described} alike"
        return Claim("equivariant", detail, None, carriers, windowed)

    # ---- the SymmetryCalls protocol of the declarations
    def call(self, definition: str, carried: Sequence[frozenset[int]]
             ) -> tuple[frozenset[int], ...] | Break:
        callee = self.program.definition(definition)
        states: list[State] = []
        for variable, positions in zip(callee.inputs, carried, strict=True):
            states.append({variable.array.names[j]: Carrier() for j in positions})
        try:
            outputs = self.propagate(callee.body, states)
        except _Broken as broken:
            where = f" ({broken.span})" if broken.span is not None else ""
            return Break(broken.reason + where)
        return tuple(frozenset(j for j, n in enumerate(v.array.names) if n in _varying(state))
                     for v, state in zip(callee.outputs, outputs, strict=True))

    # ---- propagation
    def propagate(self, term: ir.Term, states: list[State]) -> list[State]:
        match term:
            case ir.Identity():
                return states
            case ir.Rearrangement(mapping=mapping):
                return [dict(states[i]) for i in mapping]
            case ir.Reindexing():
                return [self.reindexing(term, states[0])]
            case ir.Broadcasted():
                return self.broadcasted(term, states)
            case ir.Composed(terms=terms):
                for child in terms:
                    states = self.propagate(child, states)
                return states
            case ir.Product(terms=terms):
                out: list[State] = []
                start = 0
                for child in terms:
                    out.extend(self.propagate(child, states[start:start + len(child.dom)]))
                    start += len(child.dom)
                return out
            case ir.Block():
                seen: list[list[State]] = []
                for _ in range(term.repeat):
                    states = self.propagate(term.body, states)
                    if states in seen:
                        break
                    seen.append(states)
                return states
            case ir.Scan():
                return self.scan(term, states)
            case ir.Machine():
                return self.machine(term, states)
            case _:
                assert_never(term)

    def reindexing(self, term: ir.Reindexing, state: State) -> State:
        eta = term.eta
        source = term.source or "the array"
        out: State = {}
        claimed: dict[str, str] = {}
        for row, axis in enumerate(eta.codomain.axes):
            coefficients = [(eta.domain.axes[i], c) for i, c in enumerate(eta.matrix[row]) if c]
            carrier = state.get(axis.name)
            if carrier is not None and carrier.constant:
                continue  # read anywhere, a constant stays what it is (and is not tracked on)
            if carrier is None:
                for domain_axis, _ in coefficients:
                    claimed.setdefault(domain_axis.name, "")
                continue
            text = f"{source}[{eta.text()}]"
            plain = len(coefficients) == 1 and coefficients[0][1] == 1 and not eta.offset[row]
            if self.mode == "permutation" and not plain:
                raise _Broken(f"{text} reads {axis.name} by position", term.span)
            if not coefficients:
                raise _Broken(f"{text} reads one position of {axis.name}", term.span)
            if any(c < 0 for _, c in coefficients):
                raise _Broken(f"{text} reverses {axis.name}", term.span)
            main, coefficient = max(coefficients, key=lambda item: self._extent(item[0]))
            windowed = carrier.windowed or not plain
            out[main.name] = Carrier(carrier.stride * coefficient, windowed)
            claimed[main.name] = axis.name
        for row, axis in enumerate(eta.codomain.axes):
            if axis.name in state:
                continue
            for i, c in enumerate(eta.matrix[row]):
                if c and eta.domain.axes[i].name in out:
                    raise _Broken(f"{source}[{eta.text()}] reads {axis.name} at the positions "
                                  f"of {eta.domain.axes[i].name}", term.span)
        return out

    def _extent(self, axis: ir.Axis) -> int:
        value = self.sizes.value(axis.size)
        return value if value is not None else 1 << 30  # a run-time size: the long one

    def broadcasted(self, term: ir.Broadcasted, states: list[State]) -> list[State]:
        if isinstance(term.op, ir.IndexValueOp):  # built from nothing: constant along the rest
            used = {name for name, _ in term.op.coefficients}
            return [{n: CONSTANT for n in port.array.names if n not in used}
                    for port in term.outputs]
        constants = [{n for n, c in state.items() if c.constant} for state in states]
        states = [_varying(state) for state in states]
        degree: dict[str, Carrier] = {}
        owner: dict[str, str] = {}
        for port, state in zip(term.inputs, states, strict=True):
            for name, source in self._tiling_sources(port).items():
                carrier = state.get(name)
                if carrier is None:
                    continue
                if source is None:
                    raise _Broken(f"{port.name or 'an input'} is read at positions of "
                                  f"{name}", term.span)
                if source in degree and degree[source] != carrier:
                    raise _Broken(f"{port.name or 'an input'} meets arrays transformed "
                                  f"differently along {source}", term.span)
                degree[source] = carrier
                owner[source] = port.name or "an input"
        # Every operand that tiles a carrying degree axis must itself be transformed (or be
        # constant along it).
        for port, state, constant in zip(term.inputs, states, constants, strict=True):
            for name, source in self._tiling_sources(port).items():
                if source in degree and name not in state and name not in constant:
                    raise _Broken(f"{owner[source]} is transformed along {source} but "
                                  f"{port.name or 'another operand'} is not", term.span)
        for port in term.params:
            for source in self._tiling_sources(port).values():
                if source in degree:
                    raise _Broken(f"the parameter {port.name} has an entry per position of "
                                  f"{source}", term.span)
        if isinstance(term.op, ir.CallOp) and term.op.each in degree:
            raise _Broken(f"each index of {term.op.each} has its own parameters of "
                          f"{term.op.definition}", term.span)
        varying = {n for port, state in zip(term.inputs, states, strict=True)
                   for n in port.targets if n in state}
        # A constant target axis counts as transformed where another operand's is.
        targets = tuple(frozenset(n for n in port.targets if n in state or
                                  (n in constant and n in varying))
                        for port, state, constant in zip(term.inputs, states, constants,
                                                         strict=True))
        target_carriers = {state[n] for port, state in zip(term.inputs, states, strict=True)
                           for n in port.targets if n in state}
        if len(target_carriers) > 1:
            raise _Broken("the operation meets axes transformed with different strides",
                          term.span)
        common = next(iter(target_carriers), Carrier())
        if self.mode == "translation" and common.windowed and any(targets):
            raise _Broken(f"after a window, the {term.op.kind} over "
                          f"{', '.join(sorted(set().union(*targets)))} reaches the boundary",
                          term.span)
        constant_degree = self._constant_degree(term, constants)
        rule = declaration(term.op).symmetry
        if rule is None:
            raise _Broken(f"the operator {term.op.kind} states no symmetry rule", term.span)
        verdict = rule(term.op, term, Carried(targets), self)
        if isinstance(verdict, Break):
            raise _Broken(verdict.reason, term.span)
        assert isinstance(verdict, Carry)
        out: list[State] = []
        for index, port in enumerate(term.outputs):
            made: State = {}
            for name, source in self._tiling_sources(port).items():
                if source is not None and source in degree:
                    made[name] = degree[source]
            carried = verdict.outputs[index] if index < len(verdict.outputs) else frozenset()
            for name in carried:
                made[name] = common
            for name, source in self._tiling_sources(port).items():
                if source in constant_degree and name not in made:
                    made[name] = CONSTANT
            out.append(made)
        return out

    def _constant_degree(self, term: ir.Broadcasted, constants: list[set[str]]
                         ) -> dict[str, Carrier]:
        """The degree axes along which the result is constant: every operand that tiles one
        is constant along it, and no parameter has an entry per position of it."""
        tiled: dict[str, list[bool]] = {}
        for port, constant in zip(term.inputs, constants, strict=True):
            for name, source in self._tiling_sources(port).items():
                if source is not None:
                    tiled.setdefault(source, []).append(name in constant)
        for port in term.params:
            for source in self._tiling_sources(port).values():
                if source is not None:
                    tiled.setdefault(source, []).append(False)
        return {name: CONSTANT for name, flags in tiled.items() if flags and all(flags)}

    @staticmethod
    def _tiling_sources(port: ir.Port) -> dict[str, str | None]:
        """For each tiling axis of a port, the degree axis it is read at with identity
        reindexing, or None when it is read otherwise (an offset, a stride, a sum)."""
        eta = port.reindexing
        sources: dict[str, str | None] = {}
        for row, axis in enumerate(eta.codomain.axes):
            coefficients = [(eta.domain.axes[i].name, c) for i, c in enumerate(eta.matrix[row])
                            if c]
            if len(coefficients) == 1 and coefficients[0][1] == 1 and not eta.offset[row]:
                sources[axis.name] = coefficients[0][0]
            else:
                sources[axis.name] = None
        return sources

    def scan(self, term: ir.Scan, states: list[State]) -> list[State]:
        axis = term.axis.name
        states = [_varying(state) for state in states]
        for state in states[term.carries:]:
            if axis in state:
                raise _Broken(f"the scan runs along {axis} in order", term.span)
        carries = [dict(s) for s in states[:term.carries]]
        sequences = [dict(s) for s in states[term.carries:]]
        outputs: list[State] = []
        for _ in range(4):
            outputs = self.propagate(term.step, [*carries, *sequences])
            joined = [{**c, **o} for c, o in zip(carries, outputs[:term.carries], strict=True)]
            if joined == carries:
                break
            carries = joined
        return [*outputs[:term.carries], *(dict(s) for s in outputs[term.carries:])]


    def machine(self, term: ir.Machine, states: list[State]) -> list[State]:
        """The blocks are solved in order along the machine's axis: that breaks both there;
        along other axes, the state joins what the body gives it, until that settles."""
        axis = term.axis.name
        states = [_varying(state) for state in states]
        for state in states[-2 if term.backward else -1:]:
            if axis in state:
                raise _Broken(f"the machine solves the blocks of {axis} in order", term.span)
        outputs = [dict(s) for s in states[-1:]]
        for _ in range(4):
            found = self.propagate(term.body, [*states[:-1], *outputs])
            if term.backward:
                return found
            joined = [{**outputs[0], **found[0]}]
            if joined == outputs:
                break
            outputs = joined
        return outputs


def _varying(state: State) -> State:
    """The carriers of a state without its constant axes."""
    return {name: carrier for name, carrier in state.items() if not carrier.constant}


def report(program: ir.Program, name: str) -> str:
    """The certificates as text, one axis after another."""
    definition = program.definition(name)
    signature = ", ".join(f"{v.name}: {v.array.text()}" for v in definition.inputs)
    lines = [f"{name}({signature})"]
    for result in symmetries(program, name):
        lines.append(f"  {result.axis}")
        lines.append(f"    permutation  {result.permutation.text()}")
        lines.append(f"    translation  {result.translation.text()}")
    return "\n".join(lines) + "\n"


def claim_json(claim: Claim) -> dict[str, object]:
    return {"kind": claim.kind, "detail": claim.detail,
            "location": str(claim.span) if claim.span else None,
            "carriers": [{"output": i, "axis": a, "stride": s} for i, a, s in claim.carriers],
            "up_to_boundary": claim.windowed}


__all__ = ["AxisSymmetry", "Carrier", "Claim", "claim_json", "report", "symmetries"]
