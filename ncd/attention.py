"""The attention pattern in a term: scores (a contraction of queries and keys), scaled, maybe
masked, a softmax over the keys, and a contraction of those weights with values.

A back end that has a fused kernel for it (`F.scaled_dot_product_attention`) runs the whole
pattern as one call that never materialises the score matrix; `ncd stats` reads the same
matches to count memory as that kernel holds it. The pattern is recognised on the IR, never on
text, and only where fusing changes nothing observable: the scores and the weights flow only
from one member of the pattern to the next (a copy, an output, or any other reader of them
stops the match), every axis plays one role (batch axes read by queries and keys alike, query
axes by the queries alone, one key axis by the keys and values), and a mask keeps at least
one key of every query (the fused kernel returns zeros for a row with none, where the
softmax of `-inf` everywhere is NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ncd import ir
from ncd.term_flow import TermFlow, find_matches, plain_reads

Member = ir.Broadcasted


@dataclass(frozen=True)
class Attention:
    """One match. Axes are named by their index in the degree of `scores` (`_s`) or of
    `values` (`_v`); each role lists the same axes in both terms, in the same order."""

    scores: ir.Broadcasted
    between: tuple[ir.Broadcasted, ...]
    """The scalings and the mask between the scores and the softmax, in order."""
    softmax: ir.Broadcasted
    values: ir.Broadcasted
    query_port: int
    """Which input of `scores` holds the queries (the other holds the keys)."""
    weights_port: int
    """Which input of `values` holds the weights (the other holds the values)."""
    scale: float
    batch_s: tuple[int, ...]
    batch_v: tuple[int, ...]
    groups_s: tuple[int, ...]
    """Axes of the queries and not of the keys besides the query axis (the query heads of a
    group in grouped-query attention): the keys and values are broadcast along them."""
    groups_v: tuple[int, ...]
    query_s: int
    query_v: int
    key_s: int
    value_v: tuple[int, ...]
    """The values' own axes (the head width), in the values' degree."""
    mask: ir.Broadcasted | None = None
    causal: bool = False
    """The mask keeps exactly query >= key (what `is_causal=True` does)."""
    mask_query: str = ""
    mask_key: str = ""
    """The names the mask's conditions give the query and key axes."""

    @property
    def members(self) -> tuple[ir.Broadcasted, ...]:
        return (self.scores, *self.between, self.softmax, self.values)

    @property
    def contracted(self) -> tuple[str, ...]:
        assert isinstance(self.scores.op, ir.EinsumOp)
        return self.scores.op.contracted


def find_attention(term: ir.Term, flow: TermFlow | None = None) -> list[Attention]:
    """Every match of the pattern inside `term` (through compositions and products; the body
    of a block or a scan is a term of its own, searched when it is reached)."""
    return find_matches(term, _match, flow)


# ---- the match


def _pure(term: ir.Broadcasted, inputs: int = 1) -> bool:
    return len(term.inputs) == inputs and not term.params and len(term.outputs) == 1


def _through(term: ir.Broadcasted, axes: dict[str, int]) -> dict[str, int] | None:
    """An entrywise (or per-tile) operation carries the array's axes to its output: the
    scores' degree index of each output axis, from that of each input axis; None when the
    operation reads or writes through anything but a permutation of the axes."""
    source, target = term.inputs[0], term.outputs[0]
    if set(source.targets) != set(target.targets):
        return None
    read, written = plain_reads(source), plain_reads(target)
    if read is None or written is None or len(read) != len(term.degree.axes) or \
            len(written) != len(term.degree.axes):
        return None
    by_degree = {index: name for name, index in read.items()}
    carried: dict[str, int] = {}
    for name in target.array.names:
        previous = name if name in target.targets else by_degree.get(written[name])
        if previous is None or previous not in axes:
            return None
        carried[name] = axes[previous]
    return carried if len(carried) == len(axes) else None


def _match(flow: TermFlow, values: ir.Broadcasted) -> Attention | None:
    op = values.op
    if not (isinstance(op, ir.EinsumOp) and _pure(values, 2) and op.scale == 1.0
            and len(op.contracted) == 1 and not values.outputs[0].targets):
        return None
    for weights_port in (0, 1):
        found = _match_from(flow, values, weights_port)
        if found is not None:
            return found
    return None


def _match_from(flow: TermFlow, values: ir.Broadcasted, weights_port: int) -> Attention | None:
    softmax = flow.operation_producer(values, weights_port)
    if softmax is None or not isinstance(softmax.op, ir.SoftmaxOp) or softmax.op.log or \
            len(softmax.op.axes) != 1 or not _pure(softmax):
        return None
    chain: list[ir.Broadcasted] = []
    current = softmax
    while True:
        previous = flow.operation_producer(current, 0)
        if previous is None:
            return None
        if isinstance(previous.op, ir.EinsumOp):
            scores = previous
            break
        if not isinstance(previous.op, (ir.ScaleOp, ir.MaskOp)) or not _pure(previous):
            return None
        chain.insert(0, previous)
        current = previous
    if not (isinstance(scores.op, ir.EinsumOp) and _pure(scores, 2)
            and not scores.outputs[0].targets and scores.op.contracted):
        return None
    # the scores' axes, each by its degree index
    axes = plain_reads(scores.outputs[0])
    if axes is None or len(axes) != len(scores.degree.axes):
        return None
    masks = [t for t in chain if isinstance(t.op, ir.MaskOp)]
    if len(masks) > 1:
        return None
    scale = scores.op.scale
    after_mask = False
    history = [axes]
    for term in chain:
        carried = _through(term, history[-1])
        if carried is None:
            return None
        history.append(carried)
        if isinstance(term.op, ir.ScaleOp):
            if after_mask and term.op.factor <= 0:
                return None  # a negative factor would turn the masked -inf into +inf
            scale *= term.op.factor
        after_mask = after_mask or isinstance(term.op, ir.MaskOp)
    weights_axes = _through(softmax, history[-1])
    if weights_axes is None:
        return None
    for query_port in (0, 1):
        found = _roles(scores, values, softmax, tuple(chain), masks[0] if masks else None,
                       history, weights_axes, query_port, weights_port, scale)
        if found is not None:
            return found
    return None


def _roles(scores: ir.Broadcasted, values: ir.Broadcasted, softmax: ir.Broadcasted,
           chain: tuple[ir.Broadcasted, ...], mask: ir.Broadcasted | None,
           history: list[dict[str, int]], weights_axes: dict[str, int], query_port: int,
           weights_port: int, scale: float) -> Attention | None:
    assert isinstance(scores.op, ir.EinsumOp) and isinstance(values.op, ir.EinsumOp)
    queries, keys = scores.inputs[query_port], scores.inputs[1 - query_port]
    contracted = set(scores.op.contracted)
    if set(queries.targets) != contracted or set(keys.targets) != contracted:
        return None
    read_q, read_k = plain_reads(queries), plain_reads(keys)
    if read_q is None or read_k is None:
        return None
    q_axes, k_axes = set(read_q.values()), set(read_k.values())
    if q_axes | k_axes != set(range(len(scores.degree.axes))):
        return None
    key_only = k_axes - q_axes
    if len(key_only) != 1:
        return None
    (key_s,) = key_only
    # the softmax runs over the key axis
    (softmax_axis,) = softmax.op.axes if isinstance(softmax.op, ir.SoftmaxOp) else ("",)
    if history[-1].get(softmax_axis) != key_s:
        return None
    # the weights as the values' contraction reads them
    weights, value_port = values.inputs[weights_port], values.inputs[1 - weights_port]
    assert isinstance(values.op, ir.EinsumOp)
    (summed,) = values.op.contracted
    if weights.targets != (summed,) or value_port.targets != (summed,) or \
            weights_axes.get(summed) != key_s:
        return None
    read_w, read_v = plain_reads(weights), plain_reads(value_port)
    if read_w is None or read_v is None:
        return None
    to_values = {weights_axes[name]: index for name, index in read_w.items()}
    if set(to_values) != set(range(len(scores.degree.axes))) - {key_s}:
        return None
    value_v = tuple(i for i in range(len(values.degree.axes)) if i not in to_values.values())
    if not value_v or not set(value_v) <= set(read_v.values()):
        return None
    # query axes: the mask names the query axis; without one, any query-only axis is it
    query_only = [i for i in axes_order(scores) if i in q_axes - k_axes]
    if not query_only:
        return None
    mask_query = mask_key = ""
    causal = False
    if mask is not None:
        assert isinstance(mask.op, ir.MaskOp)
        position = chain.index(mask)
        names = {index: name for name, index in history[position].items()}
        mask_key = names[key_s]
        others = [n for n in mask.inputs[0].targets if n != mask_key]
        if mask.op.by_array or mask.op.fill != float("-inf") or len(others) != 1 or \
                mask_key not in mask.inputs[0].targets:
            return None
        mask_query = others[0]
        query = history[position][mask_query]
        if query not in query_only:
            return None
        array = mask.inputs[0].array
        if not keeps_a_key(mask.op.conditions, mask_query, mask_key,
                           array.shape.axis(mask_query).size, array.shape.axis(mask_key).size):
            return None
        causal = mask.op.causal or _is_causal(mask.op.conditions, mask_query, mask_key)
    else:
        query = query_only[-1]
    groups = tuple(i for i in query_only if i != query)
    batch = tuple(i for i in axes_order(scores) if i in q_axes & k_axes)
    # the values read no query axis
    if set(read_v.values()) & {to_values[i] for i in (query, *groups)}:
        return None
    return Attention(
        scores=scores, between=chain, softmax=softmax, values=values, query_port=query_port,
        weights_port=weights_port, scale=scale, batch_s=batch,
        batch_v=tuple(to_values[i] for i in batch), groups_s=groups,
        groups_v=tuple(to_values[i] for i in groups), query_s=query, query_v=to_values[query],
        key_s=key_s, value_v=value_v, mask=mask, causal=causal, mask_query=mask_query,
        mask_key=mask_key)


def axes_order(scores: ir.Broadcasted) -> list[int]:
    """The scores' degree indices in the memory order of the scores array."""
    rows = plain_reads(scores.outputs[0])
    assert rows is not None
    return [rows[name] for name in scores.outputs[0].array.names]


def _is_causal(conditions: Sequence[ir.Comparison], query: str, key: str) -> bool:
    """`query - key >= 0` (or an equivalent spelling) and nothing else."""
    if len(conditions) != 1:
        return False
    (condition,) = conditions
    coefficients = dict(condition.coefficients)
    if set(coefficients) - {query, key}:
        return False
    a, b, offset = coefficients.get(query, 0), coefficients.get(key, 0), condition.offset
    if condition.op in ("<=", "<"):
        a, b, offset = -a, -b, -offset
        op = ">=" if condition.op == "<=" else ">"
    else:
        op = condition.op
    if op == ">":  # integers: q - k > -1 is q - k >= 0
        op, offset = ">=", offset - 1
    return op == ">=" and a == 1 and b == -1 and offset == 0


def keeps_a_key(conditions: Sequence[ir.Comparison], query: str, key: str,
                query_size: ir.SizeExpr, key_size: ir.SizeExpr) -> bool:
    """Every query keeps at least one key, for every size: proved by a key that satisfies
    every condition at every query, the first key (`key = 0`) or the query's own position
    (`key = query`, when there are at least as many keys as queries)."""
    witnesses = [0]
    queries, keys = ir.size_value(query_size), ir.size_value(key_size)
    if query_size == key_size or (queries is not None and keys is not None and
                                  queries <= keys):
        witnesses.append(1)
    for along in witnesses:  # key = along * query
        if all(_holds_everywhere(c, query, key, along) for c in conditions):
            return True
    return False


def _holds_everywhere(condition: ir.Comparison, query: str, key: str, along: int) -> bool:
    """`a q + b k + offset OP 0` with `k = along * q` holds for every `q >= 0`."""
    coefficients = dict(condition.coefficients)
    if set(coefficients) - {query, key}:
        return False
    slope = coefficients.get(query, 0) + along * coefficients.get(key, 0)
    start = condition.offset  # the value at q = 0
    compare = {">=": start >= 0, ">": start > 0, "<=": start <= 0, "<": start < 0,
               "==": start == 0, "!=": start != 0}[condition.op]
    if slope == 0:
        return compare
    if slope > 0:  # grows without bound: holds everywhere only if it holds at 0 and rising
        return condition.op in (">=", ">") and compare
    return condition.op in ("<=", "<") and compare
