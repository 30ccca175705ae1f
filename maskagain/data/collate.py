"""Batching: stack clips, flatten repeated samples, draw masks (True = hidden)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import get_worker_info

from maskagain.masking import Grid, make_mask


class MaskCollator:
    """Collate a list of dataset items into a batch and, for masked pre-training, draw masks.

    Returns ``{"video": (B, C, T, H, W), "label": (B,), "index": (B,), "skipped": [...],
    "mask": (B, N) bool}`` (``"mask"`` only with ``mask_kind``; ``"view"`` (B,) when items have
    one). Items with a stacked ``(S, C, T, H, W)`` video contribute S rows with the same label
    and index. Masks come from a ``torch.Generator`` seeded from ``(seed, worker seed, batch
    counter)``: reproducible given ``torch.manual_seed`` in the main process, different in every
    worker and (with non-persistent workers) every epoch.
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
        self._count = 0

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        worker_seed = info.seed if info is not None else 0
        state = np.random.SeedSequence([self.seed, worker_seed, self._count]).generate_state(2)
        self._count += 1
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, items: list[dict]) -> dict:
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
        if self.mask_kind is not None:
            gen = self._generator()
            batch["mask"] = make_mask(self.mask_kind, len(videos), self.grid, self.mask_ratio, gen)
        return batch
