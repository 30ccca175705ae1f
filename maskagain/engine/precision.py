"""Which precision a run uses: ``precision: auto`` resolved for the device at hand.

``auto`` means bf16 where bf16 is native (a CUDA device with bf16, a CPU with AMX or
AVX512-BF16) and fp32 elsewhere: on other CPUs bf16 matmuls are emulated and run 8-90x
slower than fp32. Explicit ``bf16`` / ``fp16`` / ``fp32`` are kept as they are.

:func:`resolve_config_precision` resolves every ``precision`` key of a config tree in place
(the run saves the concrete value, and ``precision_reason`` says it came from ``auto``), so a
resumed or re-validated run reads a plain value.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is needed: the flags alone need none
    import torch

log = logging.getLogger(__name__)

CONCRETE = ("bf16", "fp16", "fp32")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpuinfo_flags(path: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags of the first ``flags`` line of ``path`` (empty when unreadable)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (AMX or AVX512-BF16).

    Reads ``/proc/cpuinfo``; where it has no flags (not Linux), falls back to PyTorch's CPU
    capability (``AVX512_BF16`` or an AMX level)."""
    flags = cpuinfo_flags()
    if flags:
        return any(flag in flags for flag in _CPU_BF16_FLAGS)
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "BF16" in capability or "AMX" in capability


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """``(precision, reason)``: the concrete precision ("bf16"/"fp16"/"fp32") for
    ``requested`` ("auto" or one of them) on ``device``, and a short human reason."""
    if requested in CONCRETE:
        if requested == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            _warn_slow_bf16()
        return requested, "set explicitly"
    if requested != "auto":
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {requested!r}")
    if device.type == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the CUDA device supports bf16"
        return "fp32", "auto: the CUDA device has no bf16"
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return "bf16", "auto: the CPU has native bf16 (AMX or AVX512-BF16)"
        return "fp32", "auto: the CPU has no native bf16 (bf16 matmuls would be emulated, slower)"
    return "fp32", f"auto: no bf16 rule for device type {device.type!r}"


@functools.cache
def _warn_slow_bf16() -> None:
    log.warning(
        "precision bf16 on a CPU without native bf16 (AMX or AVX512-BF16): matmuls are "
        "emulated and run many times slower than fp32; precision=auto picks fp32 here"
    )


def resolve_config_precision(cfg: Any, device: torch.device) -> dict[str, str]:
    """Resolve every ``precision: auto`` in the dataclass tree ``cfg`` in place: the concrete
    value goes into ``precision`` and the reason into the section's ``precision_reason``.
    Returns ``{dotted key: "fp32 (reason)"}`` for each precision key (see :func:`describe`)."""
    chosen: dict[str, str] = {}
    if dataclasses.is_dataclass(cfg):
        _resolve_tree(cfg, device, "", chosen)
    return chosen


def describe(chosen: dict[str, str]) -> str:
    """One log line: ``precision: engine.precision fp32 (auto: ...), teacher.precision ...``."""
    return "precision: " + ", ".join(f"{k} {v}" for k, v in chosen.items())


def _resolve_tree(node: Any, device: torch.device, path: str, chosen: dict[str, str]) -> None:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            _resolve_tree(value, device, key, chosen)
        elif f.name == "precision" and isinstance(value, str):
            if value == "auto":
                value, reason = resolve_precision(value, device)
                node.precision = value
                if hasattr(node, "precision_reason"):
                    node.precision_reason = reason
            else:
                resolve_precision(value, device)  # the slow-bf16 warning, nothing else
            reason = getattr(node, "precision_reason", "") or "set explicitly"
            chosen[key] = f"{value} ({reason})"
