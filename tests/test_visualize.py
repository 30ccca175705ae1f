"""``maskagain visualize``: the selections it draws are the objective's, on any encoder/video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskagain.cli.main import main
from maskagain.data import SyntheticSpec, make_clip
from maskagain.data.synthetic import write_video
from maskagain.models import create_model
from maskagain.models.loading import save_encoder
from maskagain.visualize import selections


def _encoder():
    return create_model("vit_nano", img_size=32, num_frames=8, patch_size=8, tubelet_size=2)


def test_selections_counts_and_mask() -> None:
    frames, _ = make_clip(SyntheticSpec(32, 8, 8), 0, "test", 3)
    sel = selections(_encoder(), frames, mask_ratio=0.75, k_global=5, k_local=2, k_hint=6)
    grid = (4, 4, 4)
    assert sel.mask.shape == grid and sel.global_heads.shape == grid
    # tube mask: the same 12 of 16 positions hidden in every frame
    assert (sel.mask == sel.mask[:1]).all() and int(sel.mask[0].sum()) == 12
    visible = ~sel.mask
    assert not sel.mask[sel.query]
    assert int(sel.hint.sum()) == 6 and not (sel.hint & sel.mask).any()
    # every head picks exactly k_global keys: the per-token fractions sum to k_global
    assert np.isclose(sel.global_heads.sum(), 5) and not (sel.global_heads[~visible] > 0).any()
    # MALocal: k_local keys per frame and head
    assert np.allclose(sel.local_heads.sum(axis=(1, 2)), 2)
    assert (sel.activation[sel.mask] == 0).all()


def test_default_query_is_most_active_token() -> None:
    frames, _ = make_clip(SyntheticSpec(32, 8, 8), 0, "test", 1)
    sel = selections(_encoder(), frames, k_hint=3)
    assert sel.activation[sel.query] == sel.activation.max()


@pytest.mark.slow
def test_visualize_cli_on_a_video_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = save_encoder(_encoder(), tmp_path / "enc.safetensors")
    frames, _ = make_clip(SyntheticSpec(48, 12, 8), 0, "val", 2)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    out = tmp_path / "fig.png"
    args = ["visualize", "--encoder", str(weights), "--video", str(video), "--out", str(out)]
    assert main([*args, "--k-global", "4", "--k-local", "1", "--k-hint", "4"]) == 0
    with Image.open(out) as img:
        img.load()
        assert img.size[0] > 200 and img.size[1] > 200
