"""Attention as one `F.scaled_dot_product_attention` call.

`ncd.attention.find_attention` finds the pattern (scores, scale, mask, softmax, values) in a
composition; this module lowers each match: the scores, the mask and the softmax write no
code (their arrays are read by nothing else), and the values' contraction becomes one call
that takes the queries, the keys and the values (batch axes leading, then the query or key
axis, then the head width, several contracted axes flattened into one), the scale, and the
mask as `is_causal=True` or a boolean `attn_mask`. The fused kernel never holds the score
matrix, which is what makes it faster and smaller than the term written out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd import ir
from ncd.attention import Attention, find_attention
from ncd.ops.lowering import Label, TensorCode, degree_label, float_literal, target_label
from ncd.term_flow import TermFlow

if TYPE_CHECKING:
    from .forward import ForwardEmitter


class AttentionLowering:
    """The matches of the terms an emitter writes, and the operands each has read so far."""

    def __init__(self, emitter: ForwardEmitter) -> None:
        self.emitter = emitter
        self.roles: dict[int, Attention] = {}  # id of a member term -> its match
        self.operands: dict[int, list[TensorCode]] = {}  # id of a match's scores -> inputs

    def plan(self, term: ir.Composed, flow: TermFlow) -> None:
        """Find the matches in a composition about to be written, whose flow is `flow` (the
        terms are the IR's own objects, alive while it is written, so their ids name them)."""
        for match in find_attention(term, flow):
            for member in match.members:
                self.roles.setdefault(id(member), match)

    def lower(self, term: ir.Broadcasted, inputs: list[TensorCode]) -> list[TensorCode] | None:
        """The outputs of a member of a match, or None for any other term."""
        match = self.roles.get(id(term))
        if match is None:
            return None
        if term is match.scores:
            self.operands[id(match.scores)] = list(inputs)
        if term is not match.values:
            # read by the next member alone, which writes no code either: a name never used
            return [TensorCode("_fused_attention", term.cod[0], inputs[0].batched)]
        return [self._call(match, self.operands.pop(id(match.scores)), inputs)]

    def _call(self, match: Attention, scored: list[TensorCode],
              inputs: list[TensorCode]) -> TensorCode:
        emit = self.emitter
        scores, values = match.scores, match.values
        value_port = 1 - match.weights_port
        query_value, key_value = scored[match.query_port], scored[1 - match.query_port]
        value_value = inputs[value_port]
        operands = (query_value, key_value, value_value)
        # Four dims (batch, heads, positions, width) whatever the leading dims: the CPU's
        # fused kernel takes no other rank (it falls back to the written-out product). With
        # leading dims on some operands only, the call broadcasts them as they are.
        four = len({v.batched for v in operands}) == 1
        grouped = four and bool(match.groups_s)
        contracted = [target_label(name) for name in match.contracted]
        batch_s = [degree_label(i) for i in match.batch_s]
        groups_s = [degree_label(i) for i in match.groups_s]
        key_heads = batch_s if grouped else [*batch_s, *groups_s]
        s_sizes = emit.sizes_of(scores, scores.inputs)
        queries = emit.normalized(scores, query_value, scores.inputs[match.query_port],
                                  [*batch_s, *groups_s, degree_label(match.query_s),
                                   *contracted], "expand")
        keys = emit.normalized(scores, key_value, scores.inputs[1 - match.query_port],
                               [*key_heads, degree_label(match.key_s), *contracted], "expand")
        (summed,) = values.inputs[value_port].targets
        batch_v = [degree_label(i) for i in match.batch_v]
        groups_v = [degree_label(i) for i in match.groups_v]
        value_labels: list[Label] = [degree_label(i) for i in match.value_v]
        v_sizes = emit.sizes_of(values, values.inputs)
        read = emit.normalized(values, value_value, values.inputs[value_port],
                               [*(batch_v if grouped else [*batch_v, *groups_v]),
                                target_label(summed), *value_labels], "expand")
        # With one label per role, an operand with one leading dim is four-dim already: the
        # call runs on the views as they are, and its result needs no reshape either.
        direct = four and all(value.batched for value in operands) and not grouped and \
            len([*batch_s, *groups_s]) == len(contracted) == len(value_labels) == 1 and \
            len([*batch_v, *groups_v]) == 1
        views = (queries, keys, read)
        if four:
            width = self.emitter.size_product([s_sizes[label] for label in contracted])
            keys_size = self.emitter.size_product([s_sizes[degree_label(match.key_s)]])
            batch_size = self.emitter.size_product(
                [s_sizes[label] for label in [*batch_s, *groups_s]])
            queries = f"{queries}.reshape(-1, {batch_size}, " \
                f"{self.emitter.size_product([s_sizes[degree_label(match.query_s)]])}, {width})"
            heads = self.emitter.size_product([s_sizes[label] for label in key_heads])
            keys = f"{keys}.reshape(-1, {heads}, {keys_size}, {width})"
            read = f"{read}.reshape(-1, {heads}, {keys_size}, " \
                f"{self.emitter.size_product([v_sizes[label] for label in value_labels])})"
        elif len(contracted) > 1 or len(value_labels) > 1:
            queries = f"{queries}.flatten(-{len(contracted)})"
            keys = f"{keys}.flatten(-{len(contracted)})"
            read = f"{read}.flatten(-{len(value_labels)})"
        # A window view transposed can give its last two dims both stride 1, which the CPU
        # kernel misreads (garbage results): such an operand is copied first.
        arguments = [f"{code}.contiguous()" if value.code in emit.overlapping else code
                     for code, value in zip((queries, keys, read), operands, strict=True)]
        options: list[str] = []
        described = "no mask"
        if match.mask is not None:
            assert isinstance(match.mask.op, ir.MaskOp)
            described = "causal" if match.causal else "masked"
            if match.causal:
                options.append("is_causal=True")
            else:
                options.append(f"attn_mask={self._keep(match, query_value)}")
        assert isinstance(scores.op, ir.EinsumOp)
        options.append(f"scale={float_literal(match.scale)}")
        if grouped:
            options.append("enable_gqa=True")  # the key heads serve groups of query heads
        softmax_axis = match.softmax.op.axes[0] if isinstance(match.softmax.op, ir.SoftmaxOp) \
            else ""
        scale_text = scores.op.scale_text or float_literal(match.scale)
        comment = f"attention in one call: scores times {scale_text}, {described}, softmax " \
            f"over {softmax_axis}, values"
        call = emit.functional_call('scaled_dot_product_attention')
        labels = [*batch_v, *groups_v, degree_label(match.query_v), *value_labels]
        batched = any(v.batched for v in operands)
        if direct:
            shape = emit.tuple_text([emit.size(v_sizes[label]) for label in labels])
            shape = f"{emit.leading_shape(query_value)} + {shape}"
            return self._either(match, operands, views, arguments, options, call, labels,
                                shape, comment)
        # its own line, so that a formatter wraps the call's arguments, not a permute after it
        expr = emit.assign("attended", f"{call}({', '.join([*arguments, *options])})",
                           comment + emit.source_note(values.span))
        if four:
            shape = emit.tuple_text([emit.size(v_sizes[label]) for label in labels])
            if query_value.batched:
                shape = f"{emit.leading_shape(query_value)} + {shape}"
            expr = f"{expr}.reshape({shape})"
        elif len(value_labels) > 1:
            shape = emit.tuple_text([emit.size(v_sizes[label]) for label in value_labels])
            expr = f"{expr}.unflatten(-1, {shape})"
        return emit.finish(values, expr, labels, index=0, comment="heads back in place",
                           batched=batched)

    def _either(self, match: Attention, operands: tuple[TensorCode, ...],
                views: tuple[str, ...], arguments: list[str], options: list[str], call: str,
                labels: list[Label], shape: str, comment: str) -> TensorCode:
        """The call on the operands' views as they are when each has one leading dim (four
        dims: batch, heads, positions, width), else on the views reshaped to four dims (any
        number of leading dims), its result shaped back. Not while `torch.fx` traces: a
        proxy's number of dims is no number (the graph holds the reshaping branch)."""
        emit, values = self.emitter, match.values
        tests = dict.fromkeys(f"{v.code}.dim() == {v.rank + 1}" for v in operands)
        test = " and ".join(["not torch.fx._symbolic_trace.is_fx_symbolic_tracing()", *tests])
        port = values.outputs[0]
        name = emit.names.fresh(port.name, "value")
        attended = emit.names.fresh("attended")
        order = emit.output_labels(port)
        emit.comment(f"{comment}{emit.source_note(values.span)}")
        emit.emit(f"if {test}:", "one leading dim: the operands are four-dim as they are")
        fast = [f"{view}.contiguous()" if value.code in emit.overlapping else view
                for view, value in zip(views, operands, strict=True)]
        for number, (passed, result) in enumerate(
                ((fast, attended), (arguments, f"{attended}.reshape({shape})"))):
            if number:
                emit.emit("else:")
            with emit.branch():
                emit.emit(f"{attended} = {call}({', '.join([*passed, *options])})")
                emit.emit(f"{name} = {emit.permute(result, labels, order)}",
                          "heads back in place" + emit.source_note(values.span))
        return TensorCode(name, values.cod[0], any(v.batched for v in operands))

    def _keep(self, match: Attention, queries: TensorCode) -> str:
        """The boolean (query, key) matrix of the entries the mask keeps."""
        emit = self.emitter
        mask = match.mask
        assert mask is not None and isinstance(mask.op, ir.MaskOp)
        array = mask.inputs[0].array
        indices = {}
        for role, name in (("query", match.mask_query), ("key", match.mask_key)):
            size = emit.size(array.shape.axis(name).size)
            indices[name] = emit.assign(
                f"{name}_index", f"torch.arange({size}, device={queries.code}.device)",
                fallback="index")
            if role == "query":
                indices[name] += "[:, None]"
        clauses = []
        for condition in mask.op.conditions:
            sides: tuple[list[str], list[str]] = ([], [])
            for name, coefficient in condition.coefficients:
                side = sides[0] if coefficient > 0 else sides[1]
                magnitude = abs(coefficient)
                side.append(indices[name] if magnitude == 1 else
                            f"{magnitude} * {indices[name]}")
            if condition.offset > 0:
                sides[0].append(str(condition.offset))
            elif condition.offset < 0:
                sides[1].append(str(-condition.offset))
            clauses.append(f"{' + '.join(sides[0]) or '0'} {condition.op} "
                           f"{' + '.join(sides[1]) or '0'}")
        expr = " & ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]
        if not any(match.mask_query in dict(c.coefficients) for c in mask.op.conditions):
            expr = f"({expr}).expand({emit.size(array.shape.axis(match.mask_query).size)}, -1)"
        return emit.assign("keep", expr, "; ".join(c.text for c in mask.op.conditions))
