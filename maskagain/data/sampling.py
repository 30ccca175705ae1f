"""Frame index samplers, as in VideoMAE.

* dense (K400/UCF101/HMDB51): ``num_frames`` frames ``rate`` apart; random start for training,
  evenly spaced starts for test clips. Short videos are padded by repeating the last frame.
* segment (SSv2): the video is cut into ``num_frames`` equal segments and one frame is taken from
  each (random for training, at an offset per test clip otherwise); short videos repeat frames.

All samplers return a list of ``num_frames`` indices in ``[0, n)``.
"""

from __future__ import annotations

import torch


def _pad(indices: list[int], num_frames: int) -> list[int]:
    """Repeat the last index until there are ``num_frames`` (VideoMAE's padding)."""
    return indices[:num_frames] + [indices[-1]] * max(0, num_frames - len(indices))


def dense_indices(
    n: int,
    num_frames: int,
    rate: int,
    start: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """``num_frames`` indices ``rate`` apart from ``start`` (random when None)."""
    if n < 1:
        raise ValueError(f"video has no frames (n={n})")
    span = (num_frames - 1) * rate + 1
    if n < span:  # too short: every rate-th frame from 0, then repeat the last one
        return _pad(list(range(0, n, rate)), num_frames)
    if start is None:
        start = int(torch.randint(0, n - span + 1, (1,), generator=generator))
    start = min(max(start, 0), n - span)
    return [start + i * rate for i in range(num_frames)]


def dense_test_starts(n: int, num_frames: int, rate: int, clips: int) -> list[int]:
    """Start frames of ``clips`` evenly spaced dense test clips (first and last clip at the ends)."""
    room = max(n - ((num_frames - 1) * rate + 1), 0)
    if clips == 1:
        return [room // 2]
    return [round(k * room / (clips - 1)) for k in range(clips)]


def segment_indices(
    n: int,
    num_frames: int,
    offset: float | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """One index per segment of ``n / num_frames`` frames, at ``offset`` in [0, 1) of each
    segment, or a random position per segment when ``offset`` is None (training)."""
    if n < 1:
        raise ValueError(f"video has no frames (n={n})")
    seg = n / num_frames
    if offset is None:
        pos = torch.rand(num_frames, generator=generator).tolist()
    else:
        pos = [offset] * num_frames
    return [min(int(seg * i + seg * p), n - 1) for i, p in enumerate(pos)]


def segment_test_offsets(clips: int) -> list[float]:
    """Offsets within each segment for ``clips`` test clips: centred, evenly spread."""
    return [(k + 0.5) / clips for k in range(clips)]


def sample_indices(
    n: int,
    sampling: str,
    num_frames: int,
    rate: int,
    train: bool,
    clip: int = 0,
    clips: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices of one clip: random for training, else the ``clip``-th of ``clips`` test clips."""
    if sampling == "dense":
        if train:
            return dense_indices(n, num_frames, rate, generator=generator)
        start = dense_test_starts(n, num_frames, rate, clips)[clip]
        return dense_indices(n, num_frames, rate, start=start)
    if sampling == "segment":
        if train:
            return segment_indices(n, num_frames, generator=generator)
        return segment_indices(n, num_frames, offset=segment_test_offsets(clips)[clip])
    raise ValueError(f"unknown sampling {sampling!r}; choose 'dense' or 'segment'")
