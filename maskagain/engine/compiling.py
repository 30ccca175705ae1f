"""``engine.compile``: where ``torch.compile`` can apply, and one line saying why where not.

The student step (the trainer) and the frozen teacher ask :func:`compile_refusal` first; a
refusal is logged as one warning naming the reason, and that part runs eagerly.
"""

from __future__ import annotations

import logging
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)

_CPU_COMPILERS = ("g++", "c++", "clang++")
MIN_CUDA_CAPABILITY = (7, 0)  # Triton's oldest GPU generation (Volta)


def compile_refusal(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` (None when it can): Triton needs a CUDA
    device of compute capability 7.0 or newer, the CPU backend a C++ compiler."""
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if tuple(capability) < MIN_CUDA_CAPABILITY:
            return (
                f"the CUDA device has compute capability {capability[0]}.{capability[1]}; "
                "torch.compile's Triton kernels need 7.0 or newer"
            )
        return None
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in _CPU_COMPILERS):
            return "no C++ compiler (g++, c++ or clang++) on PATH for torch.compile's CPU kernels"
        return None
    return f"torch.compile is not set up for device type {device.type!r} here"


def maybe_compile(module: nn.Module | object, device: torch.device, what: str):
    """``torch.compile(module)``, or ``module`` itself after one warning line naming the reason
    :func:`compile_refusal` gives."""
    reason = compile_refusal(device)
    if reason is not None:
        log.warning("engine.compile: %s runs uncompiled: %s", what, reason)
        return module
    return torch.compile(module)
