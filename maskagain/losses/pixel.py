"""Pixel reconstruction as an extra term of any distillation objective (Table 4 setting).

The pixel head is ``maskagain.models.pretrain.PixelReconstruction`` (VideoMAE's decoder and
per-patch normalised targets); this module adds its loss to an objective's named losses::

    pixel_head = PixelReconstruction.for_encoder(student, decoder_dim, decoder_depth, heads)
    losses = objective(s_out, t_out)
    pixel = pixel_head(student.norm(s_out.tokens), s_out.mask, video)
    losses = with_weighted_term(losses, "pixel", pixel, weight)
"""

from __future__ import annotations

import math

import torch

from maskagain.models.pretrain import PixelReconstruction


def with_weighted_term(
    losses: dict[str, torch.Tensor], name: str, value: torch.Tensor, weight: float
) -> dict[str, torch.Tensor]:
    """A copy of ``losses`` with the unweighted ``value`` under ``name`` and
    ``weight * value`` added to the total under "loss". Scalars in, scalars out.

    A weight of 0 returns the dict unchanged (the term is neither logged nor added).
    """
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    if name == "loss" or name in losses:
        raise ValueError(f"the objective already returns a term named {name!r}")
    if "loss" not in losses:
        raise ValueError("losses has no total under 'loss'")
    if weight == 0:
        return dict(losses)
    return {**losses, name: value, "loss": losses["loss"] + weight * value}


__all__ = ["PixelReconstruction", "with_weighted_term"]
