"""Data configuration: one dataclass with plain typed fields, validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

KINDS = ("list", "folder", "frames", "synthetic")
SAMPLINGS = ("dense", "segment")
SEPARATORS = ("auto", "space", "comma")
REPEATS = ("same_window", "new_window")


@dataclass
class DataConfig:
    """Where the videos are and how clips are sampled, augmented and checked.

    ``kind``: ``list`` (VideoMAE/MVD list files ``path label``), ``folder`` (``root/<class>/<video>``
    trees, or ``root/<split>/<class>/<video>``), ``frames`` (``path num_frames label`` lists of
    frame folders) or ``synthetic`` (generated on the fly, no files).
    ``flip=None`` means on, except for segment sampling (SSv2) and the synthetic set, whose labels
    depend on left/right.
    """

    kind: str = "list"
    root: str = ""
    train_list: str = ""
    val_list: str = ""
    test_list: str = ""
    separator: str = "auto"
    class_index: str = ""  # class names file; for ``folder`` generated (root/classes.txt) if unset
    frame_template: str = "img_{:05d}.jpg"
    frame_start: int = 1  # number of the first frame image (rawframes start at 1)

    num_frames: int = 16
    sampling_rate: int = 4
    sampling: str = "dense"
    num_sample: int = 1  # repeated sampling: clips per decoded video (train split only)
    repeat: str = "same_window"  # num_sample clips: one window, own crops | own windows each
    test_clips: int = 5
    test_crops: int = 3

    input_size: int = 224
    short_side: int = 256
    pretrain_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    flip: bool | None = None
    rand_augment: str = "rand-m9-n2-mstd0.5"  # timm-style; "" disables
    random_erase: float = 0.25
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    max_bad_fraction: float = 0.1
    min_samples_for_bad_check: int = 50
    max_replacements: int = 20
    num_workers: int = 2
    decode_threads: int = 0  # FFmpeg threads per decoder; 0 = cores / DataLoader workers, else auto
    seed: int = 0

    synthetic_classes: int = 8
    synthetic_train_clips: int = 2000
    synthetic_val_clips: int = 400
    synthetic_size: int = 64
    synthetic_frames: int = 0  # frames per generated video; 0 = num_frames * sampling_rate
    synthetic_distractor: float = 0.2
    synthetic_seed: int = 0
    fresh_every_epoch: bool = True

    def __post_init__(self) -> None:
        self._check_choice("kind", KINDS)
        self._check_choice("sampling", SAMPLINGS)
        self._check_choice("separator", SEPARATORS)
        self._check_choice("repeat", REPEATS)
        for name in (
            "num_frames",
            "sampling_rate",
            "num_sample",
            "test_clips",
            "test_crops",
            "input_size",
            "short_side",
            "max_replacements",
            "synthetic_train_clips",
            "synthetic_val_clips",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "num_workers",
            "decode_threads",
            "min_samples_for_bad_check",
            "synthetic_frames",
        ):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"DataConfig.{name} must be >= 0, got {getattr(self, name)}")
        self._check_range("max_bad_fraction", 0.0, 1.0)
        self._check_range("random_erase", 0.0, 1.0)
        self._check_range("synthetic_distractor", 0.0, 1.0)
        if self.short_side < self.input_size:
            raise ValueError(
                f"DataConfig.short_side={self.short_side} must be >= input_size={self.input_size}"
            )
        if not 2 <= self.synthetic_classes <= 10:
            raise ValueError(
                f"DataConfig.synthetic_classes must be in [2, 10], got {self.synthetic_classes}"
            )
        if self.synthetic_size < 16:
            raise ValueError(f"DataConfig.synthetic_size must be >= 16, got {self.synthetic_size}")
        if len(self.mean) != 3:
            raise ValueError(f"DataConfig.mean needs 3 values, got {self.mean}")
        if len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"DataConfig.std needs 3 values > 0, got {self.std}")
        if self.frame_start < 0:
            raise ValueError(f"DataConfig.frame_start must be >= 0, got {self.frame_start}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(
                f"DataConfig.crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}"
            )
        if not self.pretrain_scales or not all(0 < s <= 1 for s in self.pretrain_scales):
            raise ValueError(
                f"DataConfig.pretrain_scales must be in (0, 1], got {self.pretrain_scales}"
            )
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"DataConfig.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}"
            )
        if "{" not in self.frame_template:
            raise ValueError(
                f"DataConfig.frame_template must contain a format field, got {self.frame_template!r}"
            )
        if self.rand_augment:
            from maskagain.data.transforms import parse_rand_augment

            try:
                parse_rand_augment(self.rand_augment)
            except ValueError as e:
                raise ValueError(f"DataConfig.rand_augment: {e}") from e

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ValueError(
                f"DataConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
            )

    def _check_range(self, name: str, lo: float, hi: float) -> None:
        if not lo <= float(getattr(self, name)) <= hi:
            raise ValueError(
                f"DataConfig.{name} must be in [{lo}, {hi}], got {getattr(self, name)}"
            )

    @property
    def use_flip(self) -> bool:
        """Resolved horizontal flip: off for SSv2-style segment sampling and the synthetic set."""
        if self.flip is not None:
            return self.flip
        return self.sampling != "segment" and self.kind != "synthetic"

    @property
    def synthetic_video_frames(self) -> int:
        """Frames per generated synthetic video (the span of one clip when left at 0)."""
        return self.synthetic_frames or self.num_frames * self.sampling_rate

    @property
    def views_per_video(self) -> int:
        """Test-time views per video: temporal clips x spatial crops."""
        return self.test_clips * self.test_crops

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
