"""Clip transforms: one spatial transform per clip, shapes, normalisation, test crops, config."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from maskagain.config import ConfigError, load_config
from maskagain.data import DataConfig, build_transform
from maskagain.data.config import parse_rand_augment
from maskagain.data.transforms import MultiScaleCrop, crop_box


def textured_clip(t: int = 6, h: int = 40, w: int = 56) -> torch.Tensor:
    """uint8 (T, H, W, C): the same asymmetric image in every frame."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
    image[: h // 2, : w // 3] = 255  # asymmetric block so flips and crops show
    return image.expand(t, h, w, 3).clone()


def cfg(**kw) -> DataConfig:
    base = dict(input_size=32, short_side=36, num_frames=6, random_erase=0.5)
    return DataConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "purpose,kw",
    [
        ("pretrain", {}),
        ("finetune", {}),
        ("finetune", {"flip": True, "rand_augment": "rand-m9-n2-mstd0.5", "random_erase": 1.0}),
        ("finetune", {"sampling": "segment"}),
    ],
)
def test_every_frame_gets_the_same_transform(purpose, kw):
    clip = textured_clip()
    transform = build_transform(cfg(**kw), "train", purpose)
    outputs = []
    for seed in range(12):
        torch.manual_seed(seed)
        out = transform(clip)
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
        for t in range(1, 6):  # identical input frames stay identical
            torch.testing.assert_close(out[:, t], out[:, 0], rtol=0, atol=0)
        outputs.append(out[:, 0])
    assert len({o.sum().item() for o in outputs}) > 6  # yet the transform is random per clip


def test_eval_transform_is_deterministic_centre_crop_and_normalised():
    c = cfg()
    frames = torch.full((4, 36, 48, 3), 128, dtype=torch.uint8)
    frames[:, :, :6] = 0  # left border, cut away by a centre crop of 32 from 48
    out = build_transform(c, "val", "eval")(frames)
    assert out.shape == (3, 4, 32, 32)
    expected = (128 / 255 - torch.tensor(c.mean)) / torch.tensor(c.std)
    torch.testing.assert_close(out[:, 0, 0, 0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(build_transform(c, "val", "eval")(frames), out)


def test_eval_transform_resizes_to_short_side():
    frames = torch.zeros((2, 72, 96, 3), dtype=torch.uint8)
    assert build_transform(cfg(), "val", "finetune")(frames).shape == (3, 2, 32, 32)


def test_three_crops_span_the_long_side():
    assert [crop_box(36, 48, 32, k, 3) for k in range(3)] == [(2, 0), (2, 8), (2, 16)]
    assert [crop_box(48, 36, 32, k, 3) for k in range(3)] == [(0, 2), (8, 2), (16, 2)]
    assert crop_box(36, 48, 32, 0, 1) == (2, 8)
    frames = torch.zeros((2, 36, 48, 3), dtype=torch.uint8)
    frames[..., :8, :] = 255  # left strip: only in the first crop
    transform = build_transform(cfg(test_crops=3), "test", "eval")
    crops = [transform(frames, crop=k) for k in range(3)]
    assert crops[0][0, 0, 0, 0] > 2 and crops[1][0, 0, 0, 0] < 0 and crops[2][0, 0, 0, 0] < 0


def test_multiscale_crop_uses_videomae_scales():
    crop = MultiScaleCrop(16, (1.0, 0.875, 0.75, 0.66))
    assert all(abs(i - j) <= 1 for i, j in crop.pairs) and len(crop.pairs) == 10
    video = torch.rand(3, 3, 40, 60)
    assert crop(video).shape == (3, 3, 16, 16)


def test_flip_auto_off_for_ssv2_and_synthetic():
    assert DataConfig().use_flip
    assert not DataConfig(sampling="segment").use_flip
    assert not DataConfig(kind="synthetic").use_flip
    assert DataConfig(kind="synthetic", flip=True).use_flip


def test_flip_off_never_mirrors():
    clip = textured_clip()
    transform = build_transform(
        cfg(
            flip=False,
            rand_augment="",
            random_erase=0.0,
            crop_scale=(1.0, 1.0),
            crop_ratio=(1.4, 1.4),
        ),
        "train",
        "finetune",
    )
    torch.manual_seed(0)
    out = transform(clip)
    assert out[0, 0, 0, 0] > out[0, 0, 0, -1]  # the white block stays on the left


def test_rand_augment_parsing():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == {"m": 9.0, "n": 2.0, "mstd": 0.5}
    assert parse_rand_augment("rand-m7-n3") == {"m": 7.0, "n": 3.0, "mstd": 0.0}
    for bad in ("augmix-m9", "rand-x3", "rand-m11", "rand-mfoo"):
        with pytest.raises(ValueError):
            parse_rand_augment(bad)


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"kind": "csv"}, "kind"),
        ({"sampling": "sparse"}, "sampling"),
        ({"num_frames": 0}, "num_frames"),
        ({"max_bad_fraction": 1.5}, "max_bad_fraction"),
        ({"short_side": 100, "input_size": 224}, "short_side"),
        ({"rand_augment": "rand-q1"}, "rand_augment"),
        ({"separator": "tab"}, "separator"),
        ({"synthetic_classes": 11}, "synthetic_classes"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=rf"^config key 'data\.{field}'"):
        load_config(_Run, overrides=[f"data.{k}={_raw(v)}" for k, v in kw.items()])


@dataclass
class _Run:
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> None:
        self.data.validate()


def _raw(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
