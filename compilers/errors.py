"""The compiler's exceptions."""


class CompileError(Exception):
    """The IR cannot be compiled (it breaks an invariant the elaborator should guarantee)."""


class UnknownSize(CompileError):
    """A symbolic size that the module needs cannot be read from the shapes of its inputs
    (an axis only an output has): an error in the input, which the API reports as E305."""

    def __init__(self, definition: str, symbol: str) -> None:
        super().__init__(f"the size {symbol!r} used by {definition!r} cannot be read from the "
                         f"shapes of its inputs")
        self.definition = definition
        self.symbol = symbol
