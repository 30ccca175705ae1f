"""Test helper: random weights for models built only to compare layouts."""

from __future__ import annotations

import torch


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with seeded N(0, ``scale``) noise (so a swapped or dropped tensor
    shows in the outputs); returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model
