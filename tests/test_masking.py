"""Mask generators: counts, patterns, determinism."""

from __future__ import annotations

import pytest
import torch

from maskagain.masking import frame_mask, make_mask, random_mask, tube_mask, visible_count

GRID = (8, 14, 14)


def test_tube_mask_counts_and_pattern():
    mask = tube_mask(4, GRID, 0.9, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 8 * 196) and mask.dtype == torch.bool
    per_frame = mask.reshape(4, 8, 196)
    # the same spatial positions are hidden in every frame
    assert (per_frame == per_frame[:, :1]).all()
    assert (per_frame[:, 0].sum(1) == int(0.9 * 196)).all()
    assert ((~mask).sum(1) == visible_count("tube", GRID, 0.9)).all()
    assert visible_count("tube", GRID, 0.9) == 8 * 20
    # different samples get different masks
    assert not (per_frame[0, 0] == per_frame[1, 0]).all()


def test_random_mask_counts_and_unequal_frames():
    mask = random_mask(3, GRID, 0.75, torch.Generator().manual_seed(1))
    n = 8 * 196
    assert ((~mask).sum(1) == n - int(0.75 * n)).all()
    per_frame_visible = (~mask).reshape(3, 8, 196).sum(-1)
    assert per_frame_visible.min() != per_frame_visible.max()


def test_frame_mask_hides_whole_frames():
    mask = frame_mask(2, GRID, 0.5, torch.Generator().manual_seed(2)).reshape(2, 8, 196)
    assert ((mask.all(-1)) | (~mask).all(-1)).all()
    assert (mask.all(-1).sum(1) == 4).all()


def test_seeded_generators_are_deterministic():
    a = make_mask("tube", 2, GRID, 0.9, torch.Generator().manual_seed(5))
    b = make_mask("tube", 2, GRID, 0.9, torch.Generator().manual_seed(5))
    c = make_mask("tube", 2, GRID, 0.9, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_at_least_one_token_stays_visible():
    mask = tube_mask(2, (2, 1, 2), 0.99)
    assert ((~mask).sum(1) >= 1).all()


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match="mask ratio"):
        tube_mask(1, GRID, ratio)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown mask type 'blocky'"):
        make_mask("blocky", 1, GRID, 0.5)
