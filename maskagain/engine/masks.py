"""Mask drawing that a resumed run reproduces exactly.

``maskagain.data.MaskCollator`` seeds its masks from a per-process batch counter, which restarts
at zero when a run resumes mid-epoch (and depends on which worker collates a batch). The
training recipes therefore batch with ``MaskCollator(mask_kind=None)`` and draw the mask here,
from ``(seed, epoch, sample indices of the batch)``: the same batch gets the same mask in any
worker, on any process and after any resume.
"""

from __future__ import annotations

import numpy as np
import torch

from maskagain.data import MaskCollator
from maskagain.masking import Grid, make_mask


class IndexSeededMaskCollate:
    """Collate function: ``MaskCollator`` batching plus a ``"mask"`` (B, N) bool, True = hidden."""

    def __init__(self, mask_kind: str, mask_ratio: float, grid: Grid, seed: int = 0) -> None:
        self.batcher = MaskCollator(None)
        self.mask_kind, self.mask_ratio, self.grid, self.seed = mask_kind, mask_ratio, grid, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch's loader iterator is created."""
        self.epoch = int(epoch)

    def generator(self, index: torch.Tensor) -> torch.Generator:
        """A generator seeded from ``(seed, epoch, index)``; index: (B,) sample ids."""
        entropy = [self.seed, self.epoch, *(int(i) for i in index.tolist())]
        state = np.random.SeedSequence(entropy).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, items: list[dict]) -> dict:
        batch = self.batcher(items)
        gen = self.generator(batch["index"])
        b = batch["video"].shape[0]
        batch["mask"] = make_mask(self.mask_kind, b, self.grid, self.mask_ratio, gen)
        return batch
