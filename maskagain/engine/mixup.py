"""Mixup and CutMix for video clips ``(B, C, T, H, W)``, with label smoothing.

timm's ``Mixup`` indexes the last two dims of a 4-D image batch; this module is written for 5-D
clips: the CutMix box covers H and W only and is the same for every frame of a clip, so a pasted
region moves through time like a real object would. Mixing is done in "batch" mode (as in the
VideoMAE fine-tuning recipe): one ``lam`` per batch, every clip mixed with the clip at the mirrored
position of the batch (``video.flip(0)``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open


@dataclass(frozen=True)
class MixParams:
    """One batch's draw.

    lam: weight of the original clip in the soft target (after CutMix's box-area correction).
    box: ``(y0, y1, x0, x1)`` pixel box pasted from the partner clip (CutMix), None for Mixup.
    """

    lam: float
    box: Box | None = None


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) int labels -> (B, num_classes) float targets with label smoothing.

    The true class gets ``1 - smoothing + smoothing / num_classes``, every other class
    ``smoothing / num_classes`` (timm's convention), so each row sums to 1.
    """
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets: logits (B, K), target (B, K) rows summing to 1 -> scalar."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> Box:
    """A box covering about ``1 - lam`` of an ``height x width`` frame, centre uniform, clipped.

    Same rule as CutMix / timm ``rand_bbox``: side ratio ``sqrt(1 - lam)``.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class VideoMixup:
    """Mixup / CutMix on ``(B, C, T, H, W)`` clips, returning smoothed soft targets.

    Args:
        num_classes: number of classes K of the soft targets.
        mixup_alpha: Beta(alpha, alpha) for Mixup's ``lam``; 0 disables Mixup.
        cutmix_alpha: Beta(alpha, alpha) for CutMix's ``lam``; 0 disables CutMix.
        prob: probability that a batch is mixed at all.
        switch_prob: probability of CutMix rather than Mixup when both are enabled.
        label_smoothing: smoothing applied to both one-hot targets before mixing.
        seed: seed of this instance's random draws (give each DDP rank its own).
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1 and 0 <= label_smoothing < 1):
            raise ValueError("prob, switch_prob must be in [0, 1] and label_smoothing in [0, 1)")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.rng = np.random.default_rng(seed)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def sample(self, height: int, width: int) -> MixParams:
        """Draw this batch's ``lam`` and (for CutMix) the box for ``height x width`` frames."""
        if not self.enabled or self.rng.random() >= self.prob:
            return MixParams(lam=1.0)
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or self.rng.random() < self.switch_prob
        )
        if not use_cutmix:
            return MixParams(lam=float(self.rng.beta(self.mixup_alpha, self.mixup_alpha)))
        lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        box = cutmix_box(lam, height, width, self.rng)
        y0, y1, x0, x1 = box
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)  # the area really pasted
        return MixParams(lam=lam, box=box)

    def apply(
        self, video: torch.Tensor, target: torch.Tensor, params: MixParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``video`` (B, C, T, H, W) and int ``target`` (B,) with ``params``.

        Returns the mixed clips (a new tensor; the input is untouched) and soft targets (B, K).
        """
        if video.dim() != 5:
            raise ValueError(f"expected clips (B, C, T, H, W), got shape {tuple(video.shape)}")
        y = smooth_one_hot(target, self.num_classes, self.label_smoothing)
        if params.lam == 1.0 and params.box is None:
            return video, y
        partner = video.flip(0)
        if params.box is None:
            mixed = video.lerp(partner, 1.0 - params.lam)
        else:
            y0, y1, x0, x1 = params.box
            mixed = video.clone()
            mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]  # every frame, same box
        soft = y.mul(params.lam).add_(y.flip(0), alpha=1.0 - params.lam)
        return mixed, soft

    def state_dict(self) -> dict:
        """The generator's position (big integers as strings: ``weights_only``-loadable)."""
        st = self.rng.bit_generator.state
        return {
            "bit_generator": st["bit_generator"],
            "state": str(st["state"]["state"]),
            "inc": str(st["state"]["inc"]),
            "has_uint32": int(st["has_uint32"]),
            "uinteger": int(st["uinteger"]),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the random stream saved by :meth:`state_dict`."""
        self.rng.bit_generator.state = {
            "bit_generator": state["bit_generator"],
            "state": {"state": int(state["state"]), "inc": int(state["inc"])},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }

    def __call__(
        self, video: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw and apply: (B, C, T, H, W), (B,) -> mixed (B, C, T, H, W), soft targets (B, K)."""
        return self.apply(video, target, self.sample(video.shape[-2], video.shape[-1]))
