"""How large a drawing with its calls expanded would be (expanded calls, deepest nesting of
frames), computed from the call tree without drawing, and the refusal (E103) of a drawing
past `MAX_EXPANDED_CALLS` or `MAX_EXPANDED_DEPTH`."""

from __future__ import annotations

from typing import assert_never

from ncd import ir
from ncd.diagnostics import Diagnostic, NcdError

from ..text import elide
from .options import MAX_EXPANDED_CALLS, MAX_EXPANDED_DEPTH, RenderOptions


def expansion_extent(program: ir.Program, name: str,
                     collapse_depth: int | None = None) -> tuple[int, int]:
    """What drawing definition `name` with its calls expanded would draw, computed from the
    call tree without drawing: the number of expanded calls (at most `MAX_EXPANDED_CALLS + 1`:
    the count stops there) and the deepest nesting of frames (blocks, scans, expanded calls).

    It follows the layout's rules: a call is expanded unless its definition is unknown or is
    already being expanded around it, and blocks and scans beyond `collapse_depth` are boxes
    whose contents are not drawn. Each (definition, nesting) is looked at once, without
    recursion, so a long chain of calls or a call tree of exponential size costs time linear
    in the program."""
    definitions = {d.name: d for d in program.definitions}
    cap = MAX_EXPANDED_CALLS + 1

    def key(definition: str, level: int) -> tuple[str, int]:
        # Beyond the collapse depth every block is a box: deeper levels all draw alike.
        return definition, (0 if collapse_depth is None else min(level, collapse_depth + 1))

    def sites(definition: str, level: int) -> tuple[list[tuple[str, int]], int]:
        """The calls in a definition's body (callee, level of its frame) and the deepest
        frame of its own blocks and scans; the body lies at nesting `level`."""
        found: list[tuple[str, int]] = []
        deepest = level
        stack: list[tuple[ir.Term, int]] = [(definitions[definition].body, level)]
        while stack:
            term, at = stack.pop()
            match term:
                case ir.Broadcasted():
                    if isinstance(term.op, ir.CallOp) and term.op.definition in definitions:
                        found.append((term.op.definition, at + 1))
                case ir.Block() | ir.Scan() | ir.Machine():
                    deeper = at + 1
                    deepest = max(deepest, deeper)
                    if collapse_depth is None or deeper <= collapse_depth:
                        stack.append((ir.children(term)[0], deeper))
                case ir.Composed() | ir.Product():
                    stack.extend((child, at) for child in reversed(term.terms))
                case ir.Identity() | ir.Rearrangement() | ir.Reindexing():
                    pass
                case _:
                    assert_never(term)
        return found, deepest

    # Per (definition, nesting): (expanded calls, deepest frame relative to the nesting).
    done: dict[tuple[str, int], tuple[int, int]] = {}
    expanding: set[str] = {name}  # the definitions being expanded around the current one
    root_calls, root_deepest = sites(name, 0)
    # Each entry: a definition, its nesting, its calls and deepest own frame, the next call.
    stack: list[tuple[str, int, list[tuple[str, int]], int, int]] = [
        (name, 0, root_calls, root_deepest, 0)]
    while stack:
        current, level, calls, deepest, index = stack[-1]
        if index < len(calls):
            stack[-1] = (current, level, calls, deepest, index + 1)
            callee, at = calls[index]
            if callee not in expanding and key(callee, at) not in done:
                expanding.add(callee)
                stack.append((callee, at, *sites(callee, at), 0))
            continue
        count = 0
        for callee, at in calls:
            if callee in expanding:
                continue  # drawn as a box: the layout never expands a call inside itself
            inner_count, inner_depth = done[key(callee, at)]
            count = min(cap, count + 1 + inner_count)
            deepest = max(deepest, at + inner_depth)
        done[key(current, level)] = (count, deepest - level)
        stack.pop()
        expanding.discard(current)
    count, depth = done[key(name, 0)]
    return count, depth


def check_expansion(program: ir.Program, name: str, options: RenderOptions) -> None:
    """Refuse (E103 at the definition) to draw `name` with its calls expanded when the
    drawing would hold more than `MAX_EXPANDED_CALLS` expanded calls or nest its frames more
    than `MAX_EXPANDED_DEPTH` deep."""
    count, depth = expansion_extent(program, name, options.collapse_depth)
    if count <= MAX_EXPANDED_CALLS and depth <= MAX_EXPANDED_DEPTH:
        return
    definition = program.definition(name)
    callees = [term.op.definition for term in ir.walk(definition.body)
               if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp)]
    shown = f"`{elide(name)}`"
    if count > MAX_EXPANDED_CALLS:
        message = (f"drawn with its calls expanded, {shown} would draw more than "
                   f"{MAX_EXPANDED_CALLS:,} calls (its calls call others, which call others)")
    else:
        message = (f"drawn with its calls expanded, {shown} would nest {depth} frames of calls "
                   f"and blocks inside one another, more than {MAX_EXPANDED_DEPTH}")
    hint = "draw it without expanding calls (leave out `--expand`)"
    if callees:
        hint += f", or draw a definition it calls, such as `{elide(callees[0])}`, on its own"
    raise NcdError([Diagnostic("E103", message, definition.span, hint=hint)])
