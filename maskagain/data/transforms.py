"""Clip augmentation with ``torchvision.transforms.v2`` on video tensors.

Every transform sees the whole clip as one ``tv_tensors.Video`` ``(T, C, H, W)``, so all frames
get the same crop, flip, RandAugment ops and erased box. Input: uint8 ``(T, H, W, C)`` as decoded;
output: float ``(C, T, H, W)`` normalised.

* pre-training: VideoMAE's multi-scale crop (scales 1, .875, .75, .66 of the short side, fixed
  offsets) resized to ``input_size``;
* fine-tuning: random resized crop, horizontal flip (off for SSv2), RandAugment with a
  magnitude drawn per clip from N(m, mstd), random erasing;
* evaluation: short-side resize and a centre crop, or the k-th of N crops along the long side.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from maskagain.data.config import DataConfig, parse_rand_augment

# (row, col) offsets of VideoMAE's (TSN's) multi-scale crop, in quarters of the free space
_FIXED_OFFSETS = (
    (0, 0), (0, 4), (4, 0), (4, 4), (2, 2),
    (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3),
)  # fmt: skip


class RandAugmentMstd(nn.Module):
    """torchvision RandAugment whose magnitude (timm scale 0..10) is drawn per clip from
    N(m, mstd), as timm's ``rand-m9-mstd0.5``. One draw and one op choice per clip."""

    def __init__(self, m: float = 9.0, n: int = 2, mstd: float = 0.5) -> None:
        super().__init__()
        self.m, self.mstd = m, mstd
        self.ra = v2.RandAugment(num_ops=int(n), magnitude=round(m * 10), num_magnitude_bins=101)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        m = self.m
        if self.mstd > 0:
            m = float(torch.normal(torch.tensor(self.m), torch.tensor(self.mstd)))
        self.ra.magnitude = int(round(min(max(m, 0.0), 10.0) * 10))
        return self.ra(video)


class MultiScaleCrop(nn.Module):
    """VideoMAE's ``GroupMultiScaleCrop``: a crop of side pair (scale_i, scale_j) x short side,
    |i - j| <= 1, at one of 13 fixed offsets, resized to ``size`` x ``size``."""

    def __init__(self, size: int, scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)) -> None:
        super().__init__()
        self.size, self.scales = size, tuple(scales)
        self.pairs = [
            (i, j) for i in range(len(scales)) for j in range(len(scales)) if abs(i - j) <= 1
        ]

    def draw(self, h: int, w: int) -> tuple[int, int, int, int]:
        """One crop box ``(top, left, height, width)`` for ``h`` x ``w`` frames (torch's RNG)."""
        base = min(h, w)
        i, j = self.pairs[int(torch.randint(len(self.pairs), (1,)))]
        ch, cw = max(1, int(base * self.scales[i])), max(1, int(base * self.scales[j]))
        qr, qc = _FIXED_OFFSETS[int(torch.randint(len(_FIXED_OFFSETS), (1,)))]
        return (h - ch) * qr // 4, (w - cw) * qc // 4, ch, cw

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        top, left, ch, cw = self.draw(*video.shape[-2:])
        return F.resized_crop(video, top, left, ch, cw, [self.size, self.size], antialias=True)


def crop_box(h: int, w: int, size: int, k: int, n: int) -> tuple[int, int]:
    """(top, left) of the k-th of n square crops spread along the long side (centred if n=1)."""
    pos = 0.5 if n == 1 else k / (n - 1)
    if h >= w:
        return round((h - size) * pos), (w - size) // 2
    return (h - size) // 2, round((w - size) * pos)


class ClipTransform:
    """uint8 ``(T, H, W, C)`` -> float ``(C, T, H, W)``: spatial transform, then normalise.

    ``crop`` selects the spatial test view (0..test_crops-1) for evaluation transforms. With
    ``normalize`` off the clip stays uint8 ``(C, T, H, W)`` (a quarter of the bytes to batch, pin
    and copy) and :func:`normalize_video` finishes it on the training device; only transforms
    without a post-normalisation step (pre-training, evaluation) can defer it.
    """

    def __init__(
        self,
        spatial: v2.Transform | None,
        post: v2.Transform,
        cfg: DataConfig,
        test_crops: int,
        normalize: bool = True,
    ) -> None:
        self.spatial, self.post = spatial, post
        self.size, self.short_side, self.test_crops = cfg.input_size, cfg.short_side, test_crops
        self.mean, self.std = tuple(cfg.mean), tuple(cfg.std)
        self.normalize = normalize

    @property
    def can_defer_normalize(self) -> bool:
        """True when nothing but the uint8 -> float normalisation follows the spatial transform."""
        return len(self.post.transforms) == 2

    @property
    def can_defer_crop(self) -> bool:
        """True for pre-training's multi-scale crop followed only by the normalisation: the
        device can do both (:func:`crop_on_device`) from a box drawn here (:meth:`draw_box`)."""
        return isinstance(self.spatial, MultiScaleCrop) and self.can_defer_normalize

    def draw_box(self, frames: torch.Tensor) -> tuple[int, int, int, int]:
        """The crop box ``(top, left, height, width)`` this transform would cut from uint8
        ``(T, H, W, C)`` frames (the same random draws as :meth:`__call__`)."""
        if not isinstance(self.spatial, MultiScaleCrop):
            raise ValueError("only the pre-training multi-scale crop draws boxes")
        return self.spatial.draw(frames.shape[1], frames.shape[2])

    def __call__(self, frames: torch.Tensor, crop: int = 0) -> torch.Tensor:
        video = tv_tensors.Video(frames.permute(0, 3, 1, 2))  # (T, C, H, W)
        if self.spatial is not None:
            video = self.spatial(video)
        else:
            video = self._eval_crop(video, crop)
        if self.normalize:
            video = self.post(video)
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)

    def _eval_crop(self, video: torch.Tensor, crop: int) -> torch.Tensor:
        if min(video.shape[-2:]) != self.short_side:
            video = F.resize(video, [self.short_side], antialias=True)
        h, w = video.shape[-2:]
        top, left = crop_box(h, w, self.size, crop, self.test_crops)
        return F.crop(video, top, left, self.size, self.size)


def crop_on_device(
    frames: torch.Tensor,
    boxes: Sequence[Sequence[int]],
    source: Sequence[int],
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> torch.Tensor:
    """Clips cut from decoded windows on the frames' device: :class:`MultiScaleCrop`'s resize
    (bilinear, antialiased) and the normalisation, done where the batch already is.

    frames: uint8 ``(V, T, H, W, C)`` windows (zero-padded to one size); boxes: B boxes
    ``(top, left, height, width)`` in pixels; source: B ints, the window of each clip (plain
    Python values: they stay on the host, reading them never waits for the device).
    Returns float32 ``(B, C, T, size, size)``, normalised. The workers' path rounds the resized
    clip to uint8 first; this one does not, so the two differ by at most about half a grey level.
    """
    clips = []
    for (top, left, h, w), v in zip(boxes, source):
        crop = frames[v, :, top : top + h, left : left + w].permute(0, 3, 1, 2)  # (T, C, h, w)
        crop = torch.nn.functional.interpolate(
            crop.to(torch.float32), size=(size, size), mode="bilinear", antialias=True,
            align_corners=False,
        )  # fmt: skip
        clips.append(crop.transpose(0, 1))  # (C, T, size, size), grey levels 0..255
    return normalize_video(torch.stack(clips), mean, std)


def normalize_video(
    video: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 clips ``(B, C, T, H, W)`` -> float32 normalised, on the clips' device: the same
    arithmetic as the workers' ``ToDtype(scale=True)`` + ``Normalize``, so the values agree."""
    m, s = _channel_stats(tuple(mean), tuple(std), video.device, video.dim())
    return video.to(torch.float32).mul_(1.0 / 255).sub_(m).div_(s)


@functools.lru_cache(maxsize=8)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, ...) mean and std on ``device``, made once (no host-to-device copy per batch)."""
    shape = (1, -1) + (1,) * (dims - 2)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return m, s


def build_transform(
    cfg: DataConfig, split: str, purpose: str, normalize: bool = True
) -> ClipTransform:
    """The clip transform for a split and purpose (random augmentation only for training);
    without ``normalize`` clips stay uint8 (see :class:`ClipTransform`)."""
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    train = split == "train" and purpose in ("pretrain", "finetune")
    if not train:
        crops = cfg.test_crops if split == "test" else 1
        return ClipTransform(None, v2.Compose(to_float), cfg, crops, normalize)
    if purpose == "pretrain":
        crop = MultiScaleCrop(cfg.input_size, cfg.pretrain_scales)
        return ClipTransform(crop, v2.Compose(to_float), cfg, 1, normalize)
    spatial: list[nn.Module] = [
        v2.RandomResizedCrop(
            cfg.input_size,
            scale=cfg.crop_scale,
            ratio=tuple(cfg.crop_ratio),
            antialias=True,
        )
    ]
    if cfg.use_flip:
        spatial.append(v2.RandomHorizontalFlip())
    if cfg.rand_augment:
        p = parse_rand_augment(cfg.rand_augment)
        spatial.append(RandAugmentMstd(p["m"], int(p["n"]), p["mstd"]))
    post = list(to_float)
    if cfg.random_erase > 0:
        post.append(v2.RandomErasing(p=cfg.random_erase, value=0.0))
    return ClipTransform(v2.Compose(spatial), v2.Compose(post), cfg, 1, normalize)
