"""The elementwise functions of the language, each declared once.

An entry gives what the function computes (for the language reference), the caption of its box
in the diagram, and the PyTorch function it compiles to (in `torch`, or in
`torch.nn.functional`, which the generated file then imports as `F`).
`ElementwiseFunction` is the closed set of names: the IR's `ElementwiseOp.function` is one of
them, and `ncd.ir.ELEMENTWISE_FUNCTIONS` lists them. The elementwise operator's declaration
(`ncd.ops.elementwise`) reads this table for its surface names, caption, overview label and
lowering, so a new function is one name in the `Literal` and one entry in `FUNCTIONS`.

This module imports nothing of ncd: the IR reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ElementwiseFunction = Literal["relu", "gelu", "silu", "sigmoid", "tanh", "exp", "log", "neg",
                              "sqrt", "abs", "square", "softplus", "reciprocal", "rsqrt", "sin",
                              "cos", "erf", "gelu_tanh", "sign"]


@dataclass(frozen=True)
class Function:
    """One elementwise function."""

    meaning: str
    """What it computes, as the language reference states it."""
    caption: str
    """The text in its box in the diagram."""
    torch: str
    """The name of the PyTorch function it compiles to (`sigmoid` for `torch.sigmoid`)."""
    italic: bool = False
    """The caption is a mathematical letter (`σ`), set in italic."""
    functional: bool = False
    """The function is in `torch.nn.functional` (`relu` for `F.relu`), not in `torch`."""
    options: str = ""
    """Keyword arguments of the PyTorch call, as source (`approximate="tanh"`)."""


FUNCTIONS: dict[ElementwiseFunction, Function] = {
    "relu": Function("max(x, 0)", "ReLU", "relu", functional=True),
    "gelu": Function("x Φ(x), Φ the standard normal distribution function", "GELU",
                     "gelu", functional=True),
    "silu": Function("x σ(x)", "SiLU", "silu", functional=True),
    "sigmoid": Function("σ(x) = 1 / (1 + exp(-x))", "\u03c3", "sigmoid", italic=True),
    "tanh": Function("tanh(x)", "tanh", "tanh"),
    "exp": Function("exp(x)", "exp", "exp"),
    "log": Function("log(x)", "log", "log"),
    "neg": Function("-x", "\u2212", "neg"),
    "sqrt": Function("√x", "\u221a", "sqrt"),
    "abs": Function("|x|", "|\u00b7|", "abs"),
    "square": Function("x²", "(\u00b7)\u00b2", "square"),
    "softplus": Function("log(1 + exp(x))", "softplus", "softplus", functional=True),
    "reciprocal": Function("1 / x", "1/\u00b7", "reciprocal"),
    "rsqrt": Function("1 / √x", "1/\u221a", "rsqrt"),
    "sin": Function("sin(x)", "sin", "sin"),
    "cos": Function("cos(x)", "cos", "cos"),
    "erf": Function("the error function, 2/√π ∫₀ˣ exp(-t²) dt", "erf", "erf"),
    "gelu_tanh": Function("GELU's tanh approximation, x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))",
                          "GELU (tanh)", "gelu", functional=True, options='approximate="tanh"'),
    # The step functions of the reverse derivative (`relu`, `abs`, `maximum`, `max`) are
    # made from it: `relu(sign(x))` is 1 where x > 0, else 0.
    "sign": Function("the sign of x: -1, 0 or 1 (0 where x is NaN)", "sgn", "sign"),
}

if set(FUNCTIONS) != set(get_args(ElementwiseFunction)):  # loud at import, not when drawn
    raise ImportError("every elementwise function needs one entry in FUNCTIONS; check "
                      f"{sorted(set(FUNCTIONS) ^ set(get_args(ElementwiseFunction)))}")
