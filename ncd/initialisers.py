"""The initialisers a `param` declaration may name (`param W: R[m, n] = normal(0, 0.02)`) and
the arguments each takes, checked where they are written."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ncd import syntax as s
from ncd.context import Context

INITIALISER_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()), "zeros": ((), ()), "ones": ((), ()), "kaiming": ((), ()),
    "normal": (("mean", "std"), ()), "uniform": (("low", "high"), ()),
    "constant": (("value",), ()), "xavier": ((), ("gain",)),
    "bernoulli": (("p",), ()),
}
"""Each initialiser's arguments: the names of the required ones, then of the optional ones."""

BOOLEAN_ONLY: tuple[str, ...] = ("bernoulli",)
"""The initialisers of Boolean parameters alone."""

INITIALISERS: dict[str, int] = {name: len(required)
                                for name, (required, _) in INITIALISER_ARGUMENTS.items()
                                if name not in BOOLEAN_ONLY}
"""Each initialiser of a parameter of reals, with its number of required arguments."""

BUFFER_INITIALISERS: tuple[str, ...] = ("constant", "ones", "zeros")
"""The initialisers of a buffer: fixed values (a buffer is state, not a random draw)."""

BOOLEAN_INITIALISERS: tuple[str, ...] = ("bernoulli", "ones", "zeros")
"""The initialisers of a Boolean parameter: each entry true with probability p, or all false
or all true."""


def check_initialiser(ctx: Context, init: s.Call, args: Sequence[float]) -> None:
    """The initialiser `init` (a known name) can initialise a parameter with `args`: the right
    number of finite numbers, a standard deviation >= 0, low <= high, a positive gain."""
    name = init.name.name
    required, optional = INITIALISER_ARGUMENTS[name]
    if not len(required) <= len(args) <= len(required) + len(optional):
        wanted = ", ".join((*required, *(f"[{o}]" for o in optional)))
        count = str(len(required)) if not optional else \
            f"{len(required)} to {len(required) + len(optional)}"
        noun = "number" if count == "1" else "numbers"
        raise ctx.error("E312", f"`{name}` takes {count} {noun}, not {len(args)}", init.span,
                        hint=f"write `{name}({wanted})`" if wanted else f"write `{name}`")
    named = dict(zip((*required, *optional), args, strict=False))
    spans = dict(zip((*required, *optional), (a.span for a in init.args), strict=False))
    for argument, value in named.items():
        if not math.isfinite(value):
            raise ctx.error("E312", f"the {argument} of `{name}` must be a finite number, not "
                            f"{value}", spans[argument])
    if name == "normal" and named["std"] < 0:
        raise ctx.error("E312", f"the standard deviation of `normal` must be >= 0, not "
                        f"{named['std']:g}", spans["std"],
                        hint="`normal(mean, std)`, for example `normal(0, 0.02)`")
    if name == "uniform" and named["low"] > named["high"]:
        raise ctx.error("E312", f"`uniform(low, high)` needs low <= high, but {named['low']:g} > "
                        f"{named['high']:g}", init.span,
                        hint=f"swap them: `uniform({named['high']:g}, {named['low']:g})`")
    if name == "bernoulli" and not 0 <= named["p"] <= 1:
        raise ctx.error("E312", f"the probability of `bernoulli` is in [0, 1], not "
                        f"{named['p']:g}", spans["p"], hint="`bernoulli(0.5)`: a fair coin")
    if name == "xavier" and "gain" in named and named["gain"] <= 0:
        raise ctx.error("E312", f"the gain of `xavier` must be positive, not {named['gain']:g}",
                        spans["gain"], hint="`xavier(gain)`, for example `xavier(1.0)`")
