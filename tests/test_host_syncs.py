"""Host synchronisations per training step: every place where a step would wait for the device
(``.item()``, ``.tolist()``, ``int()`` / ``bool()`` of a tensor, ``nonzero``, boolean-mask
indexing) is counted on the CPU by a ``TorchFunctionMode``, and each kind stays under a stated
bound (docs/cuda.md). On CUDA the CPU-only checks (mask layouts, AMD's nested masks) become
asynchronous device assertions, so a GPU step syncs at most this often."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch
from test_compile import distill_setup, pretrain_setup
from torch.overrides import TorchFunctionMode

SYNCING = {
    "item", "tolist", "__int__", "__bool__", "__float__", "__index__", "nonzero", "argwhere",
    "masked_select", "numpy", "cpu",
}  # fmt: skip
# the most syncs the forward and backward of one training step may make, per kind (the
# optimizer step makes none on CUDA: fused AdamW keeps its step counts on the device):
# MaskAgain: the top-k fast path of MAGlobal and MALocal (student and teacher) and of F_act
# checks for ties at the k-th entry, one sync each; the others none
MAX_SYNCS = {"maskagain": 5, "mvd": 0, "amd": 0, "pretrain": 0}


class SyncCounter(TorchFunctionMode):
    """Counts the calls that make the host wait for the device, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if sys._getframe(1).f_code.co_name == "device_check":
            pass  # a CPU-only check: an asynchronous assertion on an accelerator
        elif name in SYNCING:
            self.calls[name] += 1
        elif name == "__getitem__" and _bool_index(args[1] if len(args) > 1 else None):
            self.calls["bool_index"] += 1
        return func(*args, **(kwargs or {}))


def _bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def syncs_per_step(module, step, data) -> list[Counter]:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, foreach=True)
    counts = []
    for batch in data:
        with SyncCounter() as counter:
            losses = step(module, batch)
            losses["loss"].backward()
        counts.append(counter.calls)
        optimizer.step()  # AdamW reads its step counts with .item() on CPU tensors: no sync
        optimizer.zero_grad(set_to_none=True)
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["maskagain", "mvd", "amd", "pretrain"])
def test_syncs_per_step_stay_under_the_stated_bound(kind):
    module, step, data = pretrain_setup(2) if kind == "pretrain" else distill_setup(kind, 2)
    for calls in syncs_per_step(module, step, data):
        assert sum(calls.values()) <= MAX_SYNCS[kind], (kind, dict(calls))
