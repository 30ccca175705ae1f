"""Mask drawing that a resumed run reproduces exactly.

``maskagain.data.MaskCollator`` seeds its masks from a per-process batch counter, which restarts
at zero when a run resumes mid-epoch (and depends on which worker collates a batch). The
training recipes therefore batch with ``MaskCollator(mask_kind=None)`` and draw each clip's
mask here, from ``(seed, epoch, sample index, repeat)``: a clip gets the same mask in any worker,
on any process, in any batch (so ``torchrun`` with per-rank batch b draws the masks of one process
with batch 2b) and after any resume. ``repeat`` counts earlier clips of the same video in the
batch (repeated sampling), so those differ.
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

    def generator(self, index: int, repeat: int = 0) -> torch.Generator:
        """The generator of one clip's mask, seeded from ``(seed, epoch, index, repeat)``."""
        entropy = [self.seed, self.epoch, int(index), int(repeat)]
        state = np.random.SeedSequence(entropy).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, items: list[dict]) -> dict:
        batch = self.batcher(items)
        seen: dict[int, int] = {}
        masks = []
        for index in batch["index"].tolist():
            repeat = seen[index] = seen.get(index, -1) + 1
            gen = self.generator(index, repeat)
            masks.append(make_mask(self.mask_kind, 1, self.grid, self.mask_ratio, gen))
        batch["mask"] = torch.cat(masks)
        return batch
