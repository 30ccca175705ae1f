"""VideoMAE frame samplers: dense, segment, test views, padding of short videos."""

from __future__ import annotations

import pytest
import torch

from maskagain.data.sampling import (
    dense_indices,
    dense_test_starts,
    sample_indices,
    segment_indices,
    segment_test_offsets,
)


def test_dense_train_stride_and_random_start():
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(200):
        idx = dense_indices(100, 16, 4, generator=g)
        assert len(idx) == 16 and all(b - a == 4 for a, b in zip(idx, idx[1:]))
        assert 0 <= idx[0] and idx[-1] <= 99
        starts.add(idx[0])
    assert min(starts) == 0 and max(starts) == 100 - 61  # every start in range is reachable
    assert len(starts) > 20


def test_dense_short_video_repeats_last_frame():
    assert dense_indices(10, 8, 4) == [0, 4, 8, 8, 8, 8, 8, 8]
    assert dense_indices(1, 4, 2) == [0, 0, 0, 0]
    assert dense_indices(61, 16, 4, start=7) == list(range(0, 61, 4))  # exactly fits


def test_dense_test_clips_evenly_spaced_cover_the_video():
    starts = dense_test_starts(101, 16, 4, clips=5)
    assert starts == [0, 10, 20, 30, 40]
    last = dense_indices(101, 16, 4, start=starts[-1])
    assert last[-1] == 100
    assert dense_test_starts(101, 16, 4, clips=1) == [20]
    assert dense_test_starts(20, 16, 4, clips=3) == [0, 0, 0]  # short: all clips padded


def test_segment_train_one_frame_per_segment():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = segment_indices(64, 16, generator=g)
        assert [i // 4 for i in idx] == list(range(16))


def test_segment_test_offsets_and_short_videos():
    offsets = segment_test_offsets(2)
    assert offsets == [0.25, 0.75]
    assert segment_indices(32, 16, offset=0.25) == list(range(0, 32, 2))
    assert segment_indices(32, 16, offset=0.75) == list(range(1, 32, 2))
    short = segment_indices(5, 16, offset=0.5)
    assert len(short) == 16 and sorted(short) == short and set(short) == set(range(5))


def test_sample_indices_dispatch():
    g = torch.Generator().manual_seed(1)
    assert sample_indices(100, "dense", 4, 2, train=False, clip=1, clips=3) == [46, 48, 50, 52]
    assert len(sample_indices(100, "segment", 8, 1, train=True, generator=g)) == 8
    with pytest.raises(ValueError, match="unknown sampling"):
        sample_indices(10, "sparse", 4, 1, train=True)
