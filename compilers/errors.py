"""The compiler's one exception."""


class CompileError(Exception):
    """The IR cannot be compiled (it breaks an invariant the elaborator should guarantee)."""
