"""Batching: stack clips, flatten repeated samples, draw each clip's mask (True = hidden).

Masks are seeded from ``(seed, epoch, sample index, repeat)``, never from a counter: a clip gets
the same mask in any worker, on any process, in any batch (so ``torchrun`` with per-rank batch
b draws the masks of one process with batch 2b) and after a resume in the middle of an epoch.
``repeat`` counts earlier clips of the same video in the batch (repeated sampling), so those
differ. With ``teacher_ratio`` (asymmetric distillation, AMD) each clip gets two tube masks
from that one generator: ``"mask"`` for the student and ``"teacher_mask"`` for the teacher,
whose visible tokens include all the student's.
"""

from __future__ import annotations

import numpy as np
import torch

from maskagain.masking import Grid, asymmetric_masks, make_mask, visible_indices


class MaskCollator:
    """Collate dataset items into a batch and, with ``mask_kind``, draw one mask per clip.

    Returns :func:`collate_clips`'s batch (``"video"``, ``"label"``, ``"index"``, ...) plus,
    with ``mask_kind``, ``"mask"`` (B, N) bool and its ascending visible token indices
    ``"visible"`` (B, N_vis) long, counted here so the step needs no host sync. With
    ``teacher_ratio`` (``mask_kind`` "tube" only) the batch also holds ``"teacher_mask"``
    (B, N) and ``"teacher_visible"``, drawn by ``maskagain.masking.asymmetric_masks`` with
    the same per-clip generator: the student's hidden tokens include every teacher-hidden one.
    The trainer calls :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        mask_kind: str | None = None,
        mask_ratio: float = 0.9,
        grid: Grid | None = None,
        seed: int = 0,
        teacher_ratio: float | None = None,
    ) -> None:
        if mask_kind is not None and grid is None:
            raise ValueError("MaskCollator needs the token grid (F, H', W') to draw masks")
        if teacher_ratio is not None and mask_kind != "tube":
            raise ValueError(
                f"a teacher mask (teacher_ratio) is drawn with tube masks only, got {mask_kind!r}"
            )
        self.mask_kind, self.mask_ratio, self.grid, self.seed = mask_kind, mask_ratio, grid, seed
        self.teacher_ratio = teacher_ratio
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
                masks.append(self.draw(self.generator(index, repeat)))
            batch["mask"] = torch.cat([m[0] for m in masks])
            batch["visible"] = visible_indices(batch["mask"])
            if self.teacher_ratio is not None:
                batch["teacher_mask"] = torch.cat([m[1] for m in masks])
                batch["teacher_visible"] = visible_indices(batch["teacher_mask"])
        return batch

    def draw(self, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """One clip's masks from its generator: ``(mask,)`` or ``(mask, teacher_mask)``, each
        (1, N) bool."""
        if self.teacher_ratio is None:
            return (make_mask(self.mask_kind, 1, self.grid, self.mask_ratio, gen),)

        teacher, student = asymmetric_masks(
            1, self.grid, self.mask_ratio, self.teacher_ratio, generator=gen
        )
        return student, teacher


def collate_clips(items: list[dict]) -> dict:
    """Stack items into a batch (no masks): one layout whatever the workers left to the device.

    ``"video"``: the items' clips stacked, a stacked ``(S, C, T, H, W)`` item giving S rows; or,
    from items that carry decoded windows (``on_device="crop"``: ``"video"`` (W, T, H, W, C)
    uint8 with ``"boxes"`` and ``"window"``), every window of the batch (V, T, H, W, C),
    zero-padded at the bottom and right to the largest, with ``"boxes"`` (B crop boxes) and
    ``"source"`` (B window numbers into ``"video"``). ``"label"``, ``"index"`` (B,),
    ``"skipped"`` and, when items have one, ``"view"`` (B,) count one row per clip."""
    videos, labels, index, views, skipped = [], [], [], [], []
    boxes, source = [], []
    windowed = "boxes" in items[0]
    for item in items:
        if ("boxes" in item) != windowed:
            raise ValueError("a batch mixes cropped clips and decoded windows")
        if windowed:
            source += [len(videos) + w for w in item["window"]]
            boxes += [tuple(b) for b in item["boxes"]]
            videos.extend(item["video"])
            count = len(item["boxes"])
        else:
            v = item["video"]
            clips = v if v.dim() == 5 else v.unsqueeze(0)  # (S, C, T, H, W)
            videos.extend(clips)
            count = len(clips)
        labels += [item["label"]] * count
        index += [item["index"]] * count
        views += [item.get("view", 0)] * count
        skipped.extend(item.get("skipped", []))
    batch = {
        "video": _pad_stack(videos) if windowed else torch.stack(videos),
        "label": torch.tensor(labels, dtype=torch.long),
        "index": torch.tensor(index, dtype=torch.long),
        "skipped": skipped,
    }
    if windowed:
        batch.update(boxes=boxes, source=source)
    if any("view" in item for item in items):
        batch["view"] = torch.tensor(views, dtype=torch.long)
    return batch


def _pad_stack(windows: list[torch.Tensor]) -> torch.Tensor:
    """(T, H_i, W_i, C) uint8 windows -> (V, T, max H, max W, C), zero-padded bottom and right."""
    t, _, _, c = windows[0].shape
    h = max(w.shape[1] for w in windows)
    w_ = max(w.shape[2] for w in windows)
    if all(w.shape[1] == h and w.shape[2] == w_ for w in windows):
        return torch.stack(windows)
    out = torch.zeros((len(windows), t, h, w_, c), dtype=windows[0].dtype)
    for k, win in enumerate(windows):
        out[k, :, : win.shape[1], : win.shape[2]] = win
    return out
