"""Shared fixtures: tiny models and deterministic settings for CPU tests."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def tiny_kwargs() -> dict:
    """Overrides that make a registered model tiny: 4 frames of 32x32, patch 8 -> grid (2, 4, 4)."""
    return dict(img_size=32, num_frames=4, patch_size=8, tubelet_size=2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


from _s3 import s3_server  # noqa: E402,F401  (a real S3 API on localhost, session-wide)
