"""VideoMAE pixel targets (normalisation undone, per-patch normalised) and the pixel head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskagain.losses.pixel import with_weighted_term
from maskagain.masking import tube_mask
from maskagain.models import create_model
from maskagain.models.pretrain import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelReconstruction,
    VideoMAEPretrain,
    pixel_targets,
)

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None, None]


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) in [0, 1] -> as the data pipeline hands it to the model."""
    return (pixels - MEAN) / STD


@pytest.mark.parametrize("value", [0.0, 1.0, 0.3, 0.737])
def test_flat_tubelets_give_zero_targets(value):
    pixels = torch.full((2, 3, 4, 16, 16), value)
    pixels[:, 1] = 1.0 - value  # flat per channel, channels differ
    target = pixel_targets(_normalised(pixels), 8, 2)
    assert target.abs().max().item() == 0.0


def test_flat_and_textured_tubelets_in_one_clip():
    pixels = torch.rand(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    pixels[..., :8, :8] = 0.0  # token 0 of each frame pair: black
    target = pixel_targets(_normalised(pixels), 8, 2).reshape(1, 2, 2, 2, -1)
    assert target[:, :, 0, 0].abs().max().item() == 0.0
    assert target[:, :, 1, 1].std().item() > 0.5


def test_targets_match_a_slow_reference_in_pixel_units():
    """Undo mean/std, then per patch and channel: (x - mean) / (unbiased std + 1e-6)."""
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(2, 3, 4, 16, 16, generator=g)
    target = pixel_targets(_normalised(pixels), 8, 2)  # (B, N, 2*8*8*3)
    for b in range(2):
        for t in range(2):
            for i in range(2):
                for j in range(2):
                    patch = pixels[b, :, 2 * t : 2 * t + 2, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
                    rows = patch.permute(1, 2, 3, 0).reshape(-1, 3).double()  # (t, y, x) x C
                    ref = (rows - rows.mean(0)) / (rows.std(0) + 1e-6)
                    got = target[b, t * 4 + i * 2 + j].reshape(-1, 3)
                    torch.testing.assert_close(got, ref.float(), rtol=1e-4, atol=1e-4)
    raw = pixel_targets(_normalised(pixels), 8, 2, normalize=False).reshape(2, 8, 128, 3)
    assert raw.min().item() >= -1e-6 and raw.max().item() <= 1 + 1e-6  # [0, 1] pixel units
    as_is = pixel_targets(pixels, 8, 2, normalize=False, mean=None, std=None)
    torch.testing.assert_close(as_is, raw.flatten(2), rtol=1e-5, atol=1e-5)


def test_pretrain_model_loss_uses_unnormalised_targets():
    encoder = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8)
    model = VideoMAEPretrain(encoder, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    video = _normalised(torch.rand(2, 3, 4, 32, 32))
    mask = tube_mask(2, (2, 4, 4), 0.75, torch.Generator().manual_seed(0))
    pred = model.predict(video, mask)
    target = pixel_targets(video, 8, 2)[mask].reshape(pred.shape)
    torch.testing.assert_close(model(video, mask)["loss"], F.mse_loss(pred, target))
    other = VideoMAEPretrain(encoder, 32, 1, 2, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert (other.pixel_mean, model.pixel_mean) == ((0.5,) * 3, IMAGENET_MEAN)


def test_pixel_head_adds_to_a_distillation_objective():
    student = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8)
    head = PixelReconstruction.for_encoder(student, 32, 1, 2)
    video = _normalised(torch.rand(2, 3, 4, 32, 32))
    mask = tube_mask(2, (2, 4, 4), 0.9, torch.Generator().manual_seed(0))
    s_out = student.forward_features(video, mask)
    pixel = head(student.norm(s_out.tokens), mask, video)
    kd = s_out.tokens.pow(2).mean()
    losses = with_weighted_term({"hint": kd, "loss": 2.0 * kd}, "pixel", pixel, 0.5)
    assert set(losses) == {"hint", "pixel", "loss"}
    torch.testing.assert_close(losses["loss"], 2.0 * kd + 0.5 * pixel)
    losses["loss"].backward()
    assert head.mask_token.grad.abs().sum() > 0 and student.norm.weight.grad is not None
    assert with_weighted_term({"loss": kd}, "pixel", pixel, 0.0).keys() == {"loss"}
    with pytest.raises(ValueError, match="already"):
        with_weighted_term(losses, "pixel", pixel, 1.0)
    with pytest.raises(ValueError, match="grid"):
        head.predict_pixels(s_out.tokens, torch.zeros(2, 8, dtype=torch.bool))
