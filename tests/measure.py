"""Measurements of a compiled module to hold `ncd stats` to: the FLOPs PyTorch counts and the
peak bytes of the arrays a forward pass allocates.

Memory is measured with a `TorchDispatchMode` that sees every tensor each ATen operation
returns (the copies an einsum makes inside included) and tracks the storages they live in:
a storage counts from the operation that allocates it until Python frees it (a finalizer on
the storage object, which PyTorch keeps alive exactly as long as the storage). Storages that
exist before the forward pass (inputs, parameters, and views of them) are not counted. This is
what `torch.cuda.max_memory_allocated` reports on a GPU, measured on the CPU (where
`tracemalloc` sees nothing of torch's allocator)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode


class LiveStorage(TorchDispatchMode):
    """Bytes of the storages allocated under the mode and still alive: now, and at most."""

    def __init__(self, existing: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if not isinstance(value, torch.Tensor):
                continue
            storage = value.untyped_storage()
            key = storage.data_ptr()
            if not key or key in self.live or key in self.existing:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key)
        return out


def peak_forward_bytes(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """The most bytes the forward pass holds at once (under `torch.no_grad`), its outputs
    included, inputs and parameters not."""
    existing = [*inputs, *module.parameters(), *module.buffers()]
    with torch.no_grad():
        mode = LiveStorage(existing)
        with mode:
            outputs = module(*inputs)
        del outputs
    return mode.peak


def _cpu_attention_flops(query_shape: Sequence[int], key_shape: Sequence[int],
                         value_shape: Sequence[int], *args: Any, **kwargs: Any) -> int:
    """The two matrix products of attention (scores, then values), as PyTorch counts them for
    its GPU kernels (`sdpa_flop_count`), for any number of leading dims: FlopCounterMode has
    no formula for the CPU kernel, `_scaled_dot_product_flash_attention_for_cpu`."""
    batch = torch.Size(query_shape[:-2]).numel()  # grouped-query: the keys' heads are fewer
    queries, width = query_shape[-2:]
    keys, value_width = value_shape[-2:]
    return 2 * batch * queries * keys * (width + value_width)


def counted_flops(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """The FLOPs `torch.utils.flop_counter.FlopCounterMode` counts for one forward pass (it
    counts matrix products, convolutions and attention kernels; nothing entrywise). A scan
    lowered to a fused LSTM or GRU kernel is counted on its loop (the branch `torch.compile`
    runs): the counter does not see inside the fused kernel."""
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                     _cpu_attention_flops}
    # Dynamo maps torch's functions to its rules once per process, reading them from their
    # modules: were the map made while `is_compiling` is patched, the real function would
    # be untraceable in every later `torch.compile` of the process. Made here first.
    torch._dynamo.trace_rules.get_torch_obj_rule_map()
    with torch.no_grad(), FlopCounterMode(display=False,
                                          custom_mapping=cpu_attention) as counter, \
            patch("torch.compiler.is_compiling", return_value=True):
        module(*inputs)
    return int(counter.get_total_flops())
