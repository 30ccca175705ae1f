"""Exponential moving average of a model's weights (timm ``ModelEmaV3`` semantics, no warm-up).

``ema = decay * ema + (1 - decay) * model`` for floating-point parameters and buffers after every
optimiser step; integer buffers are copied. The averaged copy is frozen, in eval mode, and its
state (weights and update count) goes into every checkpoint through ``state_dict``.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class ModelEma:
    """Averaged copy of ``model`` (pass the unwrapped module, not the DDP wrapper).

    Args:
        model: the model being trained.
        decay: EMA decay in [0, 1).
        device: where to keep the copy (default: the model's device).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: str | None = None) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.decay = decay
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current weights of ``model``."""
        ema_t = list(self.module.state_dict().values())
        cur_t = [t.to(ema_t[0].device) for t in model.state_dict().values()]
        if len(ema_t) != len(cur_t):
            raise ValueError("model and EMA copy have different state (did the head change?)")
        floats = [(e, c) for e, c in zip(ema_t, cur_t) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - self.decay)
        for e, c in zip(ema_t, cur_t):
            if not e.is_floating_point():
                e.copy_(c)
        self.num_updates += 1

    def state_dict(self) -> dict:
        """Weights of the averaged model plus the update count."""
        return {
            "module": self.module.state_dict(),
            "decay": self.decay,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (strict)."""
        self.module.load_state_dict(state["module"], strict=True)
        self.num_updates = int(state["num_updates"])
        if float(state.get("decay", self.decay)) != self.decay:
            log.warning("EMA decay changed on resume: %s -> %s", state["decay"], self.decay)
