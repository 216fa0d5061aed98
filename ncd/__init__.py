"""ncd: neural circuit diagrams as a language, checked, drawn and compiled to PyTorch."""

from ncd.api import Definition, Program, load
from ncd.diagnostics import Diagnostic, NcdError

__all__ = ["Definition", "Diagnostic", "NcdError", "Program", "load"]
__version__ = "0.1.0"
