"""ncd: neural circuit diagrams as a language, checked, drawn and compiled to PyTorch."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ncd.api import Definition, Program, load
    from ncd.diagnostics import Diagnostic, NcdError

__all__ = ["Definition", "Diagnostic", "NcdError", "Program", "load"]
__version__ = "0.1.0"

# `import ncd` stays cheap: the API (the IR's pydantic models, the parser, the checker) is
# imported at the first use of one of its names, e.g. `ncd.load`.
_LAZY = {"Definition": "ncd.api", "Program": "ncd.api", "load": "ncd.api",
         "Diagnostic": "ncd.diagnostics", "NcdError": "ncd.diagnostics"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ncd' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
