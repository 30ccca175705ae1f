"""Data configuration: one dataclass with plain typed fields, checked by ``validate``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

from maskagain.config import ConfigError, check
from maskagain.constants import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class DataConfig:
    """Where the videos are and how clips are sampled, augmented and checked.

    ``kind``: ``list`` (VideoMAE/MVD list files ``path label``), ``folder`` (``root/<class>/<video>``
    trees, or ``root/<split>/<class>/<video>``), ``frames`` (``path num_frames label`` lists of
    frame folders), ``shards`` (the ``index.json`` of a shard set of ``maskagain prepare
    --shards`` in each split's list key; unset: ``root/<split>/index.json``) or ``synthetic``
    (generated on the fly, no files).
    ``flip=None`` means on, except for segment sampling (SSv2) and the synthetic set, whose labels
    depend on left/right.

    A ``folder`` tree without its own ``val`` / ``test`` folders is split per class, with the
    videos ordered by a hash of ``split_seed`` and their path under the tree: ``test_fraction``
    of each class goes to test, ``val_fraction`` to val, the rest to train, so every recipe and
    machine sees the same disjoint parts. ``resolve_paths(base)`` makes ``root``, the list files
    and ``class_index`` absolute against ``base`` (an empty ``root`` of list data becomes
    ``base``, which relative list entries are read against), so a saved config works from
    anywhere; the CLI resolves them against the directory it runs in.

    ``num_workers: auto`` is resolved when the config is validated: the CPU cores this process
    may use, shared by the processes of a node under torchrun. In masked pre-training and
    distillation, ``normalize: device`` batches uint8 clips, pins and copies them, and
    normalises them on the training device (``worker``: float clips leave the DataLoader
    workers); ``crop: device`` has the workers only decode (each window's uint8 frames travel
    once, with one crop box per clip) and the device crop, resize and normalise them. ``auto``:
    device on CUDA, worker elsewhere.
    """

    kind: Literal["list", "folder", "frames", "shards", "synthetic"] = "list"
    """list (path label files), folder (root/<class>/<video>), frames (frame folders), shards
    (tar shards of maskagain prepare --shards) or synthetic"""
    root: str = ""
    """folder the videos (and relative list files) are under"""
    train_list: str = ""
    """train list file (kind list/frames), relative to root"""
    val_list: str = ""
    """val list file (kind list/frames), relative to root"""
    test_list: str = ""
    """test list file (kind list/frames), relative to root; empty: test on val"""
    separator: Literal["auto", "space", "comma"] = "auto"
    """list file separator: auto, space or comma"""
    class_index: str = ""
    """class names file; for folder data unset: root/classes.txt or the folder names"""
    val_fraction: float = 0.1
    """folder data without a val folder: share of each class held out for val (0: none)"""
    test_fraction: float = 0.1
    """folder data without a test folder: share of each class held out for test (0: test on val)"""
    split_seed: int = 0
    """seed of the held-out split of folder data"""
    frame_template: str = "img_{:05d}.jpg"
    """file name of a frame image (kind frames)"""
    frame_start: int = 1
    """number of the first frame image (kind frames)"""
    shard_window: int = 4
    """kind shards: the samples of this many consecutive shards are shuffled together"""

    num_frames: int = 16
    """frames per clip (the models take it unless set)"""
    sampling_rate: int = 4
    """take every N-th frame (dense sampling)"""
    sampling: Literal["dense", "segment"] = "dense"
    """dense (consecutive frames at sampling_rate) or segment (one frame per segment, SSv2)"""
    num_sample: int = 1
    """clips per decoded video in training (repeated sampling)"""
    repeat: Literal["same_window", "new_window"] = "same_window"
    """repeated clips: one window with own crops (same_window) or own windows (new_window)"""
    test_clips: int = 5
    """clips along time per video in the multi-view test"""
    test_crops: int = 3
    """crops across space per clip in the multi-view test"""

    input_size: int = 224
    """side of the square crop the model sees"""
    short_side: int = 256
    """short side frames are resized to before cropping (test and val)"""
    pretrain_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    """multi-scale crop scales of pre-training and distillation"""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    """random resized crop area range of fine-tuning"""
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    """random resized crop aspect ratio range of fine-tuning"""
    flip: bool | None = None
    """random horizontal flip; null: on except for segment sampling and synthetic data"""
    rand_augment: str = "rand-m9-n2-mstd0.5"
    """timm RandAugment spec of fine-tuning, e.g. rand-m9-n2-mstd0.5; empty: off"""
    random_erase: float = 0.25
    """random erasing probability of fine-tuning (0: off)"""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """normalisation mean per channel"""
    std: tuple[float, float, float] = IMAGENET_STD
    """normalisation std per channel"""

    max_bad_fraction: float = 0.1
    """stop when more than this share of the videos read cannot be decoded"""
    min_samples_for_bad_check: int = 50
    """videos read before max_bad_fraction is checked"""
    max_replacements: int = 20
    """other videos tried in place of an unreadable one"""
    num_workers: int | Literal["auto"] = "auto"
    """DataLoader worker processes; auto: the CPU cores this process may use"""
    normalize: Literal["auto", "worker", "device"] = "auto"
    """where clips are normalised in pre-training/distillation: auto, worker or device"""
    crop: Literal["auto", "worker", "device"] = "auto"
    """where the multi-scale crop runs in pre-training/distillation: auto, worker or device
    (needs normalize there)"""
    decode_threads: int = 0
    """FFmpeg threads per decoder; 0: cores / workers"""
    storage_retries: int = 3
    """remote data (root a URL such as s3://bucket/k400): retries of a failed request, with
    exponential backoff from 0.2 s; past them the video counts as a bad file"""
    storage_timeout_s: float = 30.0
    """remote data: connect and read timeout of one request, in seconds"""
    read_ahead_mb: float = 4.0
    """remote data: most bytes fetched by one ranged read of a video, in MiB (a clip's packets
    are fetched in one read when they fit)"""
    listing_cache: str = ""
    """remote folder data: JSON file caching the listing of root; empty: the run directory's
    listing.json"""
    seed: int = 0
    """seed of clip sampling and augmentation"""

    synthetic_classes: int = 8
    """classes of the synthetic set (2-10)"""
    synthetic_train_clips: int = 2000
    """train videos of the synthetic set"""
    synthetic_val_clips: int = 400
    """val videos of the synthetic set"""
    synthetic_size: int = 64
    """frame size of synthetic videos"""
    synthetic_frames: int = 0
    """frames per synthetic video; 0: num_frames * sampling_rate"""
    synthetic_distractor: float = 0.2
    """strength of the distracting motion in synthetic videos"""
    synthetic_seed: int = 0
    """seed of the synthetic set"""
    fresh_every_epoch: bool = True
    """draw new synthetic train videos every epoch"""
    synthetic_store: str = ""
    """folder of prerendered synthetic clips (the demo writes it); empty: render on the fly"""

    def validate(self, path: str = "data") -> None:
        """Ranges and cross-field constraints; raises :class:`ConfigError` naming ``path.key``."""

        for key in (
            "num_frames",
            "sampling_rate",
            "num_sample",
            "test_clips",
            "test_crops",
            "input_size",
            "short_side",
            "max_replacements",
            "shard_window",
            "synthetic_train_clips",
            "synthetic_val_clips",
        ):
            check(
                int(getattr(self, key)) >= 1,
                f"config key '{path}.{key}' must be >= 1, got {getattr(self, key)!r}",
            )
        if self.num_workers == "auto":
            self.num_workers = available_workers()
        for key in (
            "num_workers",
            "decode_threads",
            "min_samples_for_bad_check",
            "storage_retries",
        ):
            check(
                int(getattr(self, key)) >= 0,
                f"config key '{path}.{key}' must be >= 0, got {getattr(self, key)!r}",
            )
        for key in ("storage_timeout_s", "read_ahead_mb"):
            check(
                float(getattr(self, key)) > 0,
                f"config key '{path}.{key}' must be > 0, got {getattr(self, key)!r}",
            )
        self._check_urls(path)
        check(
            self.synthetic_frames >= 0,
            f"config key '{path}.synthetic_frames' must be >= 0 (0: the span of one clip), "
            f"got {self.synthetic_frames!r}",
        )
        for key in ("max_bad_fraction", "random_erase", "synthetic_distractor"):
            check(
                0.0 <= float(getattr(self, key)) <= 1.0,
                f"config key '{path}.{key}' must be in [0, 1], got {getattr(self, key)!r}",
            )
        check(
            not (self.crop == "device" and self.normalize == "worker"),
            f"config key '{path}.crop' needs data.normalize=device or auto (clips cut on the "
            f"device are normalised there), got {self.crop!r}",
        )
        check(
            self.short_side >= self.input_size,
            f"config key '{path}.short_side' must be >= data.input_size={self.input_size}, "
            f"got {self.short_side!r}",
        )
        check(
            2 <= self.synthetic_classes <= 10,
            f"config key '{path}.synthetic_classes' must be in [2, 10], got {self.synthetic_classes!r}",
        )
        check(
            self.synthetic_size >= 16,
            f"config key '{path}.synthetic_size' must be >= 16, got {self.synthetic_size!r}",
        )
        check(
            not self.synthetic_store or self.kind == "synthetic",
            f"config key '{path}.synthetic_store' is read by kind=synthetic only, got kind "
            f"{self.kind!r}; leave it empty",
        )
        check(len(self.mean) == 3, f"config key '{path}.mean' needs 3 values, got {self.mean!r}")
        check(
            len(self.std) == 3 and min(self.std) > 0,
            f"config key '{path}.std' needs 3 values > 0, got {self.std!r}",
        )
        check(
            self.frame_start >= 0,
            f"config key '{path}.frame_start' must be >= 0, got {self.frame_start!r}",
        )
        lo, hi = self.crop_ratio
        check(
            0 < lo <= hi,
            f"config key '{path}.crop_ratio' must satisfy 0 < lo <= hi, got {self.crop_ratio!r}",
        )
        check(
            bool(self.pretrain_scales) and all(0 < s <= 1 for s in self.pretrain_scales),
            f"config key '{path}.pretrain_scales' must be in (0, 1], got {self.pretrain_scales!r}",
        )
        lo, hi = self.crop_scale
        check(
            0 < lo <= hi <= 1,
            f"config key '{path}.crop_scale' must satisfy 0 < lo <= hi <= 1, got {self.crop_scale!r}",
        )
        check(
            "{" in self.frame_template,
            f"config key '{path}.frame_template' must contain a format field such as {{:05d}}, "
            f"got {self.frame_template!r}",
        )
        for key in ("val_fraction", "test_fraction"):
            check(
                0.0 <= float(getattr(self, key)) < 1.0,
                f"config key '{path}.{key}' must be in [0, 1), got {getattr(self, key)!r}",
            )
        check(
            self.val_fraction + self.test_fraction < 1.0,
            f"config key '{path}.val_fraction' + data.test_fraction={self.test_fraction} must be "
            f"< 1, got {self.val_fraction!r}",
        )
        check(
            not (self.kind == "folder" and not self.root),
            f"config key '{path}.root' is empty: give the folder that holds a folder per class, "
            f"e.g. data.root=my_videos, got {self.root!r}",
        )
        if self.rand_augment:
            try:
                parse_rand_augment(self.rand_augment)
            except ValueError as e:
                raise ConfigError(f"config key '{path}.rand_augment': {e}") from None

    def _check_urls(self, path: str) -> None:
        """URLs (``s3://...``) carry no credentials (they would be saved with the run), and
        frame folders are local."""
        from maskagain.data.storage import has_credentials, is_remote

        for key in ("root", "train_list", "val_list", "test_list", "class_index"):
            value = getattr(self, key)
            check(
                not has_credentials(value),
                f"config key '{path}.{key}' holds credentials in its URL; give them "
                "through the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "GOOGLE_APPLICATION_CREDENTIALS) or the provider's credentials file",
            )
            check(
                not (value and self.kind == "frames" and is_remote(value)),
                f"config key '{path}.{key}' is a URL, but frame folders (data.kind=frames) "
                "are read from local disk: copy them locally or encode them as videos",
            )

    def resolve_paths(self, base: str | os.PathLike) -> None:
        """Make ``root``, the list files, ``class_index`` and ``listing_cache`` absolute (``~``
        expanded), relative ones read against the absolute directory ``base``; an empty
        ``root`` of list data becomes ``base`` (relative list entries are read against it).
        URLs (``s3://...``) stay as they are."""
        from maskagain.data.storage import is_remote

        base = os.fspath(base)
        if not os.path.isabs(base):
            raise ValueError(f"paths are resolved against an absolute directory, not {base!r}")
        if not self.root and self.kind in ("list", "frames"):
            self.root = base
        for key in ("root", "train_list", "val_list", "test_list", "class_index", "listing_cache"):
            value = getattr(self, key)
            if is_remote(value):
                continue
            if value and self.kind != "synthetic":
                path = os.path.join(base, os.path.expanduser(value))
                setattr(self, key, os.path.normpath(path))

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


def parse_rand_augment(spec: str) -> dict[str, float]:
    """Parse a timm-style string such as ``rand-m9-n2-mstd0.5`` into {m, n, mstd}."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec must start with 'rand', got {spec!r}")
    out = {"m": 9.0, "n": 2.0, "mstd": 0.0}
    for part in parts[1:]:
        key = next((k for k in ("mstd", "inc", "m", "n") if part.startswith(k)), None)
        if key is None:
            raise ValueError(
                f"unknown RandAugment option {part!r} in {spec!r} (know m, n, mstd, inc)"
            )
        try:
            value = float(part[len(key) :])
        except ValueError:
            raise ValueError(f"bad number in RandAugment option {part!r} of {spec!r}") from None
        if key != "inc":
            out[key] = value
    if not 0 <= out["m"] <= 10 or out["n"] < 1 or out["mstd"] < 0:
        raise ValueError(f"RandAugment needs 0 <= m <= 10, n >= 1, mstd >= 0; got {spec!r}")
    return out


def available_workers() -> int:
    """``data.num_workers: auto``: the CPU cores this process may use, divided among the
    processes of its node (``LOCAL_WORLD_SIZE`` under torchrun)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
