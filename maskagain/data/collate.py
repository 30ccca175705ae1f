"""Batching: stack clips, flatten repeated samples, draw each clip's mask (True = hidden).

Masks are seeded from ``(seed, epoch, sample index, repeat)``, never from a counter: a clip gets
the same mask in any worker, on any process, in any batch (so ``torchrun`` with per-rank batch
b draws the masks of one process with batch 2b) and after a resume in the middle of an epoch.
``repeat`` counts earlier clips of the same video in the batch (repeated sampling), so those
differ.
"""

from __future__ import annotations

import numpy as np
import torch

from maskagain.masking import Grid, make_mask


class MaskCollator:
    """Collate dataset items into a batch and, with ``mask_kind``, draw one mask per clip.

    Returns ``{"video": (B, C, T, H, W), "label": (B,), "index": (B,), "skipped": [...],
    "mask": (B, N) bool}`` (``"mask"`` only with ``mask_kind``; ``"view"`` (B,) when items have
    one). Items with a stacked ``(S, C, T, H, W)`` video contribute S rows with the same label
    and index. The trainer calls :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        mask_kind: str | None = None,
        mask_ratio: float = 0.9,
        grid: Grid | None = None,
        seed: int = 0,
    ) -> None:
        if mask_kind is not None and grid is None:
            raise ValueError("MaskCollator needs the token grid (F, H', W') to draw masks")
        self.mask_kind, self.mask_ratio, self.grid, self.seed = mask_kind, mask_ratio, grid, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Masks of epoch ``epoch`` (called before each epoch's loader iterator is created)."""
        self.epoch = int(epoch)

    def generator(self, index: int, repeat: int = 0) -> torch.Generator:
        """The generator of one clip's mask, seeded from ``(seed, epoch, index, repeat)``."""
        entropy = [self.seed, self.epoch, int(index), int(repeat)]
        state = np.random.SeedSequence(entropy).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, items: list[dict]) -> dict:
        batch = collate_clips(items)
        if self.mask_kind is not None:
            seen: dict[int, int] = {}
            masks = []
            for index in batch["index"].tolist():
                repeat = seen[index] = seen.get(index, -1) + 1
                gen = self.generator(index, repeat)
                masks.append(make_mask(self.mask_kind, 1, self.grid, self.mask_ratio, gen))
            batch["mask"] = torch.cat(masks)
        return batch


def collate_clips(items: list[dict]) -> dict:
    """Stack items into a batch (no masks); a stacked ``(S, C, T, H, W)`` video gives S rows."""
    videos, labels, index, views, skipped = [], [], [], [], []
    for item in items:
        v = item["video"]
        clips = v if v.dim() == 5 else v.unsqueeze(0)  # (S, C, T, H, W)
        videos.extend(clips)
        labels += [item["label"]] * len(clips)
        index += [item["index"]] * len(clips)
        views += [item.get("view", 0)] * len(clips)
        skipped.extend(item.get("skipped", []))
    batch = {
        "video": torch.stack(videos),
        "label": torch.tensor(labels, dtype=torch.long),
        "index": torch.tensor(index, dtype=torch.long),
        "skipped": skipped,
    }
    if any("view" in item for item in items):
        batch["view"] = torch.tensor(views, dtype=torch.long)
    return batch
