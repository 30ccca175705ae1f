"""Mask generators, called from the data pipeline's collate function (not inside the model).

Convention, written once: a mask is a bool tensor ``(B, N)`` with **True = hidden**; tokens are
in ``(t, h, w)`` order for a token grid ``(F, H', W')``. Every generator keeps the same number of
visible tokens in every sample so that visible tokens can be batched as ``(B, N_vis, D)``.
"""

from __future__ import annotations

import math

import torch

Grid = tuple[int, int, int]


def _check(grid: Grid, ratio: float, name: str = "mask ratio") -> None:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be (frames, height, width) token counts >= 1, got {grid}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {ratio}")


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
    return _tube(_random_rows(batch_size, h * w, num_hidden(h * w, ratio), generator), f)


def _tube(spatial: torch.Tensor, frames: int) -> torch.Tensor:
    """A (B, H'W') spatial pattern repeated in each of ``frames`` frames: (B, F * H'W')."""
    b, hw = spatial.shape
    return spatial[:, None, :].expand(b, frames, hw).reshape(b, frames * hw)


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


def asymmetric_masks(
    batch_size: int,
    grid: Grid,
    student_ratio: float = 0.9,
    teacher_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tube masks for AMD: ``(teacher_mask, student_mask)``, each (B, N) bool, True = hidden.

    One random spatial pattern per sample, the same in every frame: ``num_hidden(HW,
    teacher_ratio)`` positions are hidden from both models, ``num_hidden(HW, student_ratio)``
    from the student, so the teacher's hidden tokens are a subset of the student's (the
    student's visible tokens a subset of the teacher's).
    """
    _check(grid, student_ratio, "student_ratio")
    _check(grid, teacher_ratio, "teacher_ratio")
    if student_ratio < teacher_ratio:
        raise ValueError(
            f"the student must be masked at least as much as the teacher, got student_ratio="
            f"{student_ratio} < teacher_ratio={teacher_ratio}"
        )
    f, h, w = grid
    hw = h * w
    n_student, n_teacher = num_hidden(hw, student_ratio), num_hidden(hw, teacher_ratio)
    # a random rank per position: the n_teacher lowest are hidden from both, the next ones from
    # the student only
    order = torch.rand(batch_size, hw, generator=generator).argsort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(hw).expand(batch_size, hw))
    return _tube(rank < n_teacher, f), _tube(rank < n_student, f)


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


def device_check(ok: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the bool tensor ``ok`` holds True: at once for a CPU
    tensor; on an accelerator and in compiled code as an asynchronous device assertion (no
    host sync: a failure surfaces at the next sync, with ``message``)."""
    if ok.device.type != "cpu" or torch.compiler.is_compiling():
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise ValueError(message)


def split_tokens(mask: torch.Tensor, num_visible: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices of a mask with ``num_visible`` visible tokens per sample, each ascending:
    mask (B, N) bool True = hidden -> visible (B, num_visible), hidden (B, N - num_visible) long.

    No host synchronisation and static shapes (a stable sort puts False first): callers take
    ``num_visible`` from a shape (the visible tokens' ``(B, N_vis, D)``) or from the collate."""
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices  # (B, N)
    return order[:, :num_visible], order[:, num_visible:]


def visible_indices(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool mask -> (B, N_vis) ascending visible token indices, computed where the mask
    is (the collate: on the CPU, so the training step needs no host sync to count them).
    Raises ValueError when samples keep different numbers of visible tokens."""
    counts = (~mask).sum(1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise ValueError(
            f"every sample must keep the same number of visible tokens, got {counts.tolist()}"
        )
    return split_tokens(mask, int(counts[0]) if counts.numel() else 0)[0]


def take_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``tokens`` per sample: (B, N, D) or a shared (N, D) table, index (B, K) long ->
    (B, K, D). The static-shape replacement for ``tokens[mask].reshape(B, -1, D)``."""
    if tokens.ndim == 2:
        return tokens[index]
    b, k = index.shape
    return tokens.gather(1, index[:, :, None].expand(b, k, tokens.shape[-1]))


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
