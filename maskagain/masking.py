"""Mask generators, called from the data pipeline's collate function (not inside the model).

Convention, written once: a mask is a bool tensor ``(B, N)`` with **True = hidden**; tokens are
in ``(t, h, w)`` order for a token grid ``(F, H', W')``. Every generator keeps the same number of
visible tokens in every sample so that visible tokens can be batched as ``(B, N_vis, D)``.
"""

from __future__ import annotations

import math

import torch

Grid = tuple[int, int, int]


def _check(grid: Grid, ratio: float) -> None:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be (frames, height, width) token counts >= 1, got {grid}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")


def num_hidden(count: int, ratio: float) -> int:
    """How many of ``count`` positions a ``ratio`` hides (VideoMAE: int(ratio * count))."""
    return min(int(ratio * count), count - 1)


def _random_rows(batch: int, count: int, hidden: int, generator: torch.Generator | None):
    """(batch, count) bool, exactly ``hidden`` True per row, uniformly at random."""
    scores = torch.rand(batch, count, generator=generator)
    order = scores.argsort(dim=1)
    mask = torch.zeros(batch, count, dtype=torch.bool)
    mask.scatter_(1, order[:, :hidden], True)
    return mask


def tube_mask(
    batch_size: int, grid: Grid, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """VideoMAE tube masking: the same spatial positions are hidden in every frame. (B, N) bool."""
    _check(grid, ratio)
    f, h, w = grid
    spatial = _random_rows(batch_size, h * w, num_hidden(h * w, ratio), generator)
    return spatial[:, None, :].expand(batch_size, f, h * w).reshape(batch_size, f * h * w)


def random_mask(
    batch_size: int, grid: Grid, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Independent random masking over all tokens, the same count in every sample. (B, N) bool."""
    _check(grid, ratio)
    n = math.prod(grid)
    return _random_rows(batch_size, n, num_hidden(n, ratio), generator)


def frame_mask(
    batch_size: int, grid: Grid, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hide whole frames (token time steps) at random; at least one frame stays. (B, N) bool."""
    _check(grid, ratio)
    f, h, w = grid
    frames = _random_rows(batch_size, f, num_hidden(f, ratio), generator)
    return frames[:, :, None].expand(batch_size, f, h * w).reshape(batch_size, f * h * w)


MASKS = {"tube": tube_mask, "random": random_mask, "frame": frame_mask}


def make_mask(
    kind: str,
    batch_size: int,
    grid: Grid,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dispatch to a generator by name: ``tube``, ``random`` or ``frame``."""
    if kind not in MASKS:
        raise ValueError(f"unknown mask type {kind!r}; choose one of {sorted(MASKS)}")
    return MASKS[kind](batch_size, grid, ratio, generator)


def visible_count(kind: str, grid: Grid, ratio: float) -> int:
    """Visible tokens per sample that ``make_mask(kind, ...)`` keeps."""
    f, h, w = grid
    if kind == "tube":
        return f * (h * w - num_hidden(h * w, ratio))
    if kind == "frame":
        return (f - num_hidden(f, ratio)) * h * w
    if kind == "random":
        n = f * h * w
        return n - num_hidden(n, ratio)
    raise ValueError(f"unknown mask type {kind!r}; choose one of {sorted(MASKS)}")


def visible_per_frame(kind: str, grid: Grid, ratio: float) -> int | None:
    """Visible tokens in every frame for tube masks; None when it varies by frame."""
    f, h, w = grid
    if kind == "tube":
        return h * w - num_hidden(h * w, ratio)
    return None
