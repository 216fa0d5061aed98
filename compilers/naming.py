"""Safe names and text for generated Python: nothing from the input reaches code unvalidated.

A `Namespace` hands out identifiers that are legal, unique within it, and never a keyword, a
builtin, a dunder name or a name the generated code itself relies on (`torch`, `nn`, `F`,
`self`). `comment_text` makes any string safe to put after a `#`.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re
import textwrap

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Names the generated files use themselves; a user's variable must never shadow them.
_GENERATED_CODE_NAMES = frozenset({"torch", "nn", "F", "self", "math", "nn_module"})

# Attributes of `torch.nn.Module` (dir(nn.Module()) in torch 2.13): a parameter or submodule
# registered under one of these names would clash with the module's own machinery.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers",
    "_call_impl", "_compiled_call_impl", "_forward_hooks", "_forward_hooks_always_called",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_get_backward_hooks", "_get_backward_pre_hooks", "_get_name", "_is_full_backward_hook",
    "_load_from_state_dict", "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks",
    "_maybe_warn_non_full_backward_hook", "_modules", "_named_members",
    "_non_persistent_buffers_set", "_parameters", "_register_load_state_dict_pre_hook",
    "_register_state_dict_hook", "_replicate_for_data_parallel", "_save_to_state_dict",
    "_slow_forward", "_state_dict_hooks", "_state_dict_pre_hooks", "_version",
    "_wrapped_call_impl", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "reset_parameters", "set_extra_state",
    "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "training",
    "type", "xpu", "zero_grad",
})


def is_plain_identifier(name: str) -> bool:
    """A name that can be written as `owner.name` in generated code without surprises."""
    return (
        _IDENTIFIER.match(name) is not None
        and not keyword.iskeyword(name)
        and not keyword.issoftkeyword(name)
        and not name.startswith("__")
    )


_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_]")
_UNDERSCORES = re.compile(r"_+")
_NOT_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]+")


@functools.lru_cache(maxsize=4096)  # the same few hints, asked for at every statement
def sanitize(text: str, fallback: str = "value") -> str:
    """A legal identifier that resembles `text`: invalid characters become underscores."""
    cleaned = _NOT_IN_NAMES.sub("_", text.strip())
    cleaned = _UNDERSCORES.sub("_", cleaned).strip("_") if cleaned.strip("_") else ""
    if not cleaned:
        cleaned = fallback
    if cleaned[0].isdigit():
        cleaned = f"{fallback}_{cleaned}"
    return cleaned


def snake_case(text: str, fallback: str = "block") -> str:
    """`"Transformer layer"` -> `transformer_layer`."""
    return sanitize(text.lower(), fallback)


def camel_case(text: str, fallback: str = "Module") -> str:
    """`"transformer layer"` or `attention_head` -> `TransformerLayer`, `AttentionHead`."""
    words = [w for w in _NOT_ALPHANUMERIC.split(text) if w]
    joined = "".join(w[:1].upper() + w[1:] for w in words)
    return sanitize(joined, fallback)


class Namespace:
    """Hands out unique, legal identifiers; a clash gets a numeric suffix (`X`, `X_1`, ...)."""

    def __init__(self, reserved: frozenset[str] | set[str] = frozenset()) -> None:
        self._taken: set[str] = set(reserved)
        # The suffix to try first for a base name: every smaller one is taken already (names
        # are never given back), so a name rebound n times costs O(1), not O(n), each time.
        self._next_suffix: dict[str, int] = {}

    def _is_free(self, name: str) -> bool:
        return (
            name not in self._taken
            and name not in _GENERATED_CODE_NAMES
            and not keyword.iskeyword(name)
            and not keyword.issoftkeyword(name)
            and name not in vars(builtins)  # as `hasattr`, without raising for a miss
            and not name.startswith("__")
        )

    def fresh(self, hint: str | None, fallback: str = "value") -> str:
        base = sanitize(hint or fallback, fallback)
        if self._is_free(base):
            self._taken.add(base)
            return base
        counter = self._next_suffix.get(base, 1)
        while not self._is_free(f"{base}_{counter}"):
            counter += 1
        name = f"{base}_{counter}"
        self._taken.add(name)
        self._next_suffix[base] = counter + 1
        return name


def comment_text(text: str) -> str:
    """`text` on one line of printable characters, safe after a `#` in generated code."""
    flattened = " ".join(str(text).split())
    if flattened.isprintable():
        return flattened
    return "".join(ch if ch.isprintable() else "?" for ch in flattened)


def comment_lines(text: str, width: int) -> list[str]:
    """`text` wrapped at `width` as `textwrap.wrap` wraps it (words never broken). A text that
    fits on one line, with no whitespace but spaces and none at its ends, is that line: what
    `textwrap.wrap` returns for it, without splitting it into words (most signatures and
    comments fit)."""
    if text and len(text) <= width and text.strip() == text \
            and not _OTHER_WHITESPACE.intersection(text):
        return [text]
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


_OTHER_WHITESPACE = frozenset("\t\n\x0b\x0c\r")  # what `textwrap.wrap` turns into spaces


def string_literal(text: str) -> str:
    """A Python string literal for `text`: `repr` escapes every quote and control character;
    double quotes are used when the text has none (the formatter's preference)."""
    literal = repr(str(text))
    if literal.startswith("'") and '"' not in text:
        literal = '"' + literal[1:-1] + '"'
    return literal


def base_name(code: str) -> str:
    """`X_3` -> `X`, `self.W` -> `W`: a hint for a new name of the same value."""
    name = code.rsplit(".", 1)[-1]
    head, underscore, number = name.rpartition("_")
    return head if underscore and number.isdecimal() else name
