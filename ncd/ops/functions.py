"""The elementwise functions of the language, each declared once.

An entry gives what the function computes (for the language reference), the caption of its box
in the diagram, and the PyTorch expression it compiles to (`{}` stands for the argument).
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
                              "sqrt", "abs", "square", "softplus"]


@dataclass(frozen=True)
class Function:
    """One elementwise function."""

    meaning: str
    """What it computes, as the language reference states it."""
    caption: str
    """The text in its box in the diagram."""
    torch: str
    """The PyTorch expression it compiles to; `{}` is the argument."""
    italic: bool = False
    """The caption is a mathematical letter (`σ`), set in italic."""


FUNCTIONS: dict[ElementwiseFunction, Function] = {
    "relu": Function("max(x, 0)", "ReLU", "F.relu({})"),
    "gelu": Function("x Φ(x), Φ the standard normal distribution function", "GELU",
                     "F.gelu({})"),
    "silu": Function("x σ(x)", "SiLU", "F.silu({})"),
    "sigmoid": Function("σ(x) = 1 / (1 + exp(-x))", "\u03c3", "torch.sigmoid({})", italic=True),
    "tanh": Function("tanh(x)", "tanh", "torch.tanh({})"),
    "exp": Function("exp(x)", "exp", "torch.exp({})"),
    "log": Function("log(x)", "log", "torch.log({})"),
    "neg": Function("-x", "\u2212", "torch.neg({})"),
    "sqrt": Function("√x", "\u221a", "torch.sqrt({})"),
    "abs": Function("|x|", "|\u00b7|", "torch.abs({})"),
    "square": Function("x²", "(\u00b7)\u00b2", "torch.square({})"),
    "softplus": Function("log(1 + exp(x))", "softplus", "F.softplus({})"),
}

if set(FUNCTIONS) != set(get_args(ElementwiseFunction)):  # loud at import, not when drawn
    raise ImportError("every elementwise function needs one entry in FUNCTIONS; check "
                      f"{sorted(set(FUNCTIONS) ^ set(get_args(ElementwiseFunction)))}")
