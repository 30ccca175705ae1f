"""Clip datasets: video files, frame folders and the on-the-fly synthetic set share one item shape.

Each item is a dict:

* ``"video"``: float ``(C, T, H, W)``, normalised (uint8 with ``on_device``: see
  :class:`ClipDataset`); with ``num_sample > 1`` (repeated sampling,
  training only) a stacked ``(S, C, T, H, W)`` of S clips from one decode, each with its own
  random crop (``MaskCollator`` flattens them into the batch). ``repeat="same_window"``: the S
  clips share one temporal window (VideoMAE V2); ``"new_window"``: S windows, their union
  decoded once;
* ``"label"``: int; ``"index"``: int, the video id; ``"view"``: int, the test view
  (``clip * test_crops + crop``) for test splits only;
* ``"skipped"``: list of ``(path, reason)`` of bad files replaced to produce this item.

A bad file is replaced by another video chosen deterministically from ``(seed, item, attempt)``.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info
from torchvision.transforms.v2 import functional as F

from maskagain.data.bad_files import TooManyBadFiles
from maskagain.data.config import DataConfig
from maskagain.data.decode import VideoDecodeError, VideoFile, short_side_size
from maskagain.data.listing import FileTree, file_tree
from maskagain.data.lists import (
    VideoRecord,
    folder_split_records,
    read_class_index,
    read_list,
)
from maskagain.data.sampling import sample_indices
from maskagain.data.storage import Storage
from maskagain.data.synthetic import SyntheticSpec, clip_rng, render_clip
from maskagain.data.synthetic_store import SyntheticStore
from maskagain.data.transforms import build_transform

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PURPOSES = ("pretrain", "finetune", "eval")
# what the training device does instead of the workers (see ClipDataset)
OnDevice = Literal["normalize", "crop"] | None


class ClipSource(Protocol):
    """Something with ``num_frames`` that reads frames as uint8 ``(T, H, W, C)``."""

    num_frames: int

    def read(self, indices: Sequence[int], short_side: int | None = None) -> torch.Tensor: ...

    def close(self) -> None: ...


def resize_short_side(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` resized (antialiased) so the short side is ``short_side``."""
    h, w = frames.shape[1:3]
    size = short_side_size(h, w, short_side)
    if size == (h, w):
        return frames
    out = F.resize(frames.permute(0, 3, 1, 2), list(size), antialias=True)
    return out.permute(0, 2, 3, 1).contiguous()


class FrameFolder:
    """A folder of frame images ``template.format(i + start)`` (rawframes / SSv2 frames)."""

    def __init__(self, path: str, num_frames: int, template: str, start: int = 1) -> None:
        if not os.path.isdir(path):
            raise VideoDecodeError(path, "frame folder not found")
        self.path, self.num_frames, self.template, self.start = path, num_frames, template, start

    def read(self, indices: Sequence[int], short_side: int | None = None) -> torch.Tensor:
        images = {}
        for i in sorted(set(indices)):
            file = os.path.join(self.path, self.template.format(i + self.start))
            try:
                with Image.open(file) as image:
                    images[i] = np.asarray(image.convert("RGB"))  # (H, W, 3)
            except (OSError, ValueError) as e:
                raise VideoDecodeError(self.path, f"frame {file}: {e}") from e
        sizes = {im.shape for im in images.values()}
        if len(sizes) > 1:
            raise VideoDecodeError(self.path, f"frames of different sizes {sorted(sizes)[:2]}")
        frames = torch.from_numpy(np.stack([images[i] for i in indices]))
        return resize_short_side(frames, short_side)

    def close(self) -> None:
        pass


class SyntheticSource:
    """One synthetic video: renders only the frames asked for (the whole clip is read from
    ``store`` when it holds it)."""

    def __init__(
        self,
        spec: SyntheticSpec,
        label: int,
        rng_args: tuple[int, str, int, int],
        store: SyntheticStore | None = None,
    ) -> None:
        self.spec, self.label, self.rng_args, self.store = spec, label, rng_args, store
        self.num_frames = spec.frames

    def read(self, indices: Sequence[int], short_side: int | None = None) -> torch.Tensor:
        _, split, index, epoch = self.rng_args
        whole = self.store is not None and np.array_equal(indices, np.arange(self.num_frames))
        stored = self.store.clip(split, epoch, index) if whole else None
        if stored is not None:
            frames = np.array(stored)  # a copy: readers may change their frames
        else:
            frames = render_clip(
                self.spec, self.label, clip_rng(*self.rng_args), np.asarray(indices)
            )
        return resize_short_side(torch.from_numpy(frames), short_side)

    def close(self) -> None:
        pass


class ClipDataset(Dataset, ABC):
    """Sampling, views, repeated sampling, transforms and bad-file replacement over videos
    ``0..num_videos-1``; subclasses say how to open a video and what its label is.

    ``on_device`` names what the training device does instead of the workers, fixed when the
    dataset is built: None (the workers deliver float, normalised clips), ``"normalize"``
    (uint8 clips ``(C, T, H, W)``: a quarter of the bytes to batch, pin and copy; transforms
    that end with the normalisation only) or ``"crop"`` (each decoded window once as uint8
    frames with one crop box per clip; pre-training's multi-scale crop only). The device's
    half is :class:`maskagain.engine.feed.DeviceTransform`."""

    def __init__(
        self,
        cfg: DataConfig,
        split: str,
        purpose: str,
        num_videos: int,
        class_names: list[str],
        on_device: OnDevice = None,
    ) -> None:
        if split not in SPLITS or purpose not in PURPOSES:
            raise ValueError(f"split must be in {SPLITS} and purpose in {PURPOSES}")
        if num_videos < 1:
            raise ValueError("dataset has no videos")
        self.cfg, self.split, self.purpose = cfg, split, purpose
        self.num_videos = num_videos
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.train = split == "train" and purpose != "eval"
        self.views = cfg.views_per_video if split == "test" and not self.train else 1
        self.num_sample = cfg.num_sample if self.train else 1
        self.on_device = on_device
        self.transform = build_transform(cfg, split, purpose, normalize=on_device is None)
        if on_device == "normalize" and not self.transform.can_defer_normalize:
            raise ValueError(
                f"the {split}/{purpose} transform does more after normalising (random erasing); "
                "keep data.normalize=worker"
            )
        if on_device == "crop" and not self.transform.can_defer_crop:
            raise ValueError(
                f"the {split}/{purpose} transform is not pre-training's multi-scale crop; keep "
                "data.crop=worker"
            )

    @abstractmethod
    def open(self, video_id: int) -> ClipSource:
        """An opened video (closed by the caller)."""

    @abstractmethod
    def label(self, video_id: int) -> int:
        """The class of a video."""

    @abstractmethod
    def path(self, video_id: int) -> str:
        """Where a video comes from (for reports)."""

    def __len__(self) -> int:
        return self.num_videos * self.views

    def __getitem__(self, item: int) -> dict:
        video_id, view = divmod(int(item), self.views)
        skipped: list[tuple[str, str]] = []
        for attempt in range(self.cfg.max_replacements + 1):
            try:
                clips = self._load(video_id, view)
                break
            except VideoDecodeError as e:
                log.debug("bad video %s (%s); replacing it", e.path, e.reason)
                skipped.append((e.path, e.reason))
                video_id = self._replacement(item, attempt)
        else:
            raise TooManyBadFiles(
                f"{len(skipped)} bad videos in a row while loading item {item}, e.g. "
                f"{skipped[:3]}; check DataConfig.root and the list files"
            )
        out = {**clips, "label": self.label(video_id), "index": video_id, "skipped": skipped}
        if self.views > 1:
            out["view"] = view
        return out

    def _replacement(self, item: int, attempt: int) -> int:
        """A deterministic substitute video for ``item`` after ``attempt`` failures."""
        rng = np.random.default_rng([self.cfg.seed, int(item), attempt])
        return int(rng.integers(self.num_videos))

    def _clip_indices(self, n: int, view: int) -> list[list[int]]:
        """Frame indices of each clip of one item: ``num_sample`` lists when training (one window
        repeated for ``repeat="same_window"``, a window each for ``"new_window"``), else one."""
        cfg = self.cfg
        if self.train:
            windows = 1 if cfg.repeat == "same_window" else self.num_sample
            drawn = [
                sample_indices(n, cfg.sampling, cfg.num_frames, cfg.sampling_rate, train=True)
                for _ in range(windows)
            ]
            return drawn * self.num_sample if windows == 1 else drawn
        clip, clips = (view // cfg.test_crops, cfg.test_clips) if self.views > 1 else (0, 1)
        return [
            sample_indices(n, cfg.sampling, cfg.num_frames, cfg.sampling_rate, False, clip, clips)
        ]

    def _read(
        self, video_id: int, index_sets_of: Callable[[int], list[list[int]]]
    ) -> tuple[list[list[int]], torch.Tensor, dict[int, int]]:
        """One decode of every frame the clips of ``video_id`` need: ``index_sets_of(num_frames)``
        names the clips' frames; returns them, the frames (U, H, W, C) uint8 in ascending order
        and each frame number's row in that tensor."""
        source = self.open(video_id)
        try:
            index_sets = index_sets_of(source.num_frames)
            union = sorted({i for s in index_sets for i in s})
            frames = source.read(union, self.cfg.short_side)  # (U, H, W, C) uint8
        finally:
            source.close()
        return index_sets, frames, {f: k for k, f in enumerate(union)}

    def _load(self, video_id: int, view: int) -> dict[str, Any]:
        """``{"video": (C, T, H, W) | (S, C, T, H, W)}``, or with ``on_device="crop"``
        ``{"video": (W, T, H, W, C) uint8 windows, "boxes": S boxes, "window": S window
        numbers}``."""
        index_sets, frames, pos = self._read(video_id, lambda n: self._clip_indices(n, view))
        crop = view % self.cfg.test_crops if self.views > 1 else 0
        picked: dict[tuple[int, ...], torch.Tensor] = {}  # same window: gathered once
        for s in index_sets:
            if tuple(s) not in picked:
                picked[tuple(s)] = frames[[pos[i] for i in s]]  # (T, H, W, C)
        if self.on_device == "crop":
            windows = list(picked)
            return {
                "video": torch.stack([picked[w] for w in windows]),  # (W, T, H, W, C)
                "boxes": [self.transform.draw_box(picked[tuple(s)]) for s in index_sets],
                "window": [windows.index(tuple(s)) for s in index_sets],
            }
        clips = [self.transform(picked[tuple(s)], crop) for s in index_sets]
        return {"video": clips[0] if len(clips) == 1 else torch.stack(clips)}

    def load_views(self, video_id: int) -> torch.Tensor:
        """All ``views`` test clips of one video from one decode: ``(V, C, T, H, W)``, clip ``v``
        equal to the ``"video"`` of item ``video_id * views + v`` (same frames, same crop)."""
        index_sets, frames, pos = self._read(
            video_id, lambda n: [self._clip_indices(n, v)[0] for v in range(self.views)]
        )
        crops = self.cfg.test_crops if self.views > 1 else 1
        clips = [
            self.transform(frames[[pos[i] for i in s]], v % crops) for v, s in enumerate(index_sets)
        ]
        return torch.stack(clips)


def decode_threads() -> int:
    """Decoder threads of a video opened here: in a DataLoader worker the worker's share of the
    CPU cores (workers x threads <= cores), else 0 (FFmpeg's choice)."""
    info = get_worker_info()
    if info is None:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(info.num_workers, 1))


class VideoListDataset(ClipDataset):
    """Videos (or frame folders, when records carry ``num_frames``) from a list of records."""

    def __init__(
        self,
        records: list[VideoRecord],
        cfg: DataConfig,
        split: str,
        purpose: str,
        class_names: list[str] | None = None,
        on_device: OnDevice = None,
    ) -> None:
        if class_names is None:
            class_names = [str(i) for i in range(max(r.label for r in records) + 1)]
        super().__init__(cfg, split, purpose, len(records), class_names, on_device)
        self.records = records
        self.storage = Storage.from_config(cfg)  # .stats: requests and bytes of remote videos

    def open(self, video_id: int) -> ClipSource:
        r = self.records[video_id]
        if r.num_frames is not None:
            return FrameFolder(r.path, r.num_frames, self.cfg.frame_template, self.cfg.frame_start)
        threads = self.cfg.decode_threads or decode_threads()
        block = int(self.cfg.read_ahead_mb * 2**20)
        return VideoFile(r.path, threads=threads, storage=self.storage, block_size=block)

    def label(self, video_id: int) -> int:
        return self.records[video_id].label

    def path(self, video_id: int) -> str:
        return self.records[video_id].path


class SyntheticVideoDataset(ClipDataset):
    """The motion-defined synthetic set, generated on the fly (no files) or read from ``store``
    where it holds the clip.

    Clip ``i`` is deterministic from ``(seed, split, epoch, i)``; ``set_epoch`` changes the
    clips when ``fresh_every_epoch`` (call it before creating the DataLoader iterator, i.e.
    without persistent workers). Labels cycle over the classes: ``label = i % num_classes``.
    """

    def __init__(
        self,
        num_clips: int,
        seed: int = 0,
        *,
        spec: SyntheticSpec | None = None,
        cfg: DataConfig | None = None,
        split: str = "train",
        purpose: str = "pretrain",
        fresh_every_epoch: bool = False,
        on_device: OnDevice = None,
        store: SyntheticStore | None = None,
    ) -> None:
        spec = spec or SyntheticSpec()
        if cfg is None:
            cfg = DataConfig(
                kind="synthetic",
                num_frames=spec.frames,
                sampling_rate=1,
                input_size=spec.size,
                short_side=spec.size,
                synthetic_frames=spec.frames,
            )
        super().__init__(cfg, split, purpose, num_clips, spec.class_names, on_device)
        self.spec, self.seed, self.store = spec, seed, store
        self.fresh_every_epoch = fresh_every_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def open(self, video_id: int) -> ClipSource:
        epoch = self.epoch if self.fresh_every_epoch else 0
        return SyntheticSource(
            self.spec, self.label(video_id), (self.seed, self.split, video_id, epoch), self.store
        )

    def label(self, video_id: int) -> int:
        return video_id % self.spec.num_classes

    def path(self, video_id: int) -> str:
        return f"synthetic:{self.split}:{video_id}"


def _list_file(cfg: DataConfig, split: str) -> str:
    path = {"train": cfg.train_list, "val": cfg.val_list, "test": cfg.test_list}[split]
    if not path and split == "test" and cfg.val_list:
        log.info("no test_list given; testing on val_list %s", cfg.val_list)
        path = cfg.val_list
    if not path:
        raise ValueError(f"DataConfig.{split}_list is not set (kind={cfg.kind!r})")
    return path


def folder_class_index(cfg: DataConfig, tree: FileTree | None = None) -> list[str]:
    """Class names of a folder dataset: read from ``class_index`` (default ``root/classes.txt``
    when one is there) or the class folders of all splits under ``root``, sorted. Nothing is
    written into the data (a run keeps its class names in its own directory)."""
    tree = tree or file_tree(cfg.root)
    root = cfg.root.rstrip("/")
    path = cfg.class_index or f"{root}/classes.txt"
    if tree.is_file(path) or (cfg.class_index and os.path.isfile(path)):
        return read_class_index(path)
    dirs = [f"{root}/{s}" for s in SPLITS if tree.is_dir(f"{root}/{s}")]
    names: set[str] = set()
    for d in dirs or [root]:
        names.update(tree.dirs(d))
    if not names:
        raise ValueError(f"{cfg.root}: no class folders")
    return sorted(names)


def synthetic_spec(cfg: DataConfig) -> SyntheticSpec:
    """What the synthetic set of ``cfg`` generates."""
    return SyntheticSpec(
        size=cfg.synthetic_size,
        frames=cfg.synthetic_video_frames,
        num_classes=cfg.synthetic_classes,
        distractor=cfg.synthetic_distractor,
    )


def build_dataset(
    cfg: DataConfig, split: str, purpose: str, on_device: OnDevice = None
) -> ClipDataset:
    """The dataset of ``split`` ("train" | "val" | "test") for ``purpose``
    ("pretrain" | "finetune" | "eval"), leaving ``on_device`` to the training device (see
    :class:`ClipDataset`); see the module docstring for the item dict."""
    if split not in SPLITS or purpose not in PURPOSES:
        raise ValueError(
            f"split must be in {SPLITS} and purpose in {PURPOSES}, got {split!r}, {purpose!r}"
        )
    if cfg.kind == "synthetic":
        spec = synthetic_spec(cfg)
        store = cfg.synthetic_store
        count = cfg.synthetic_train_clips if split == "train" else cfg.synthetic_val_clips
        return SyntheticVideoDataset(
            count,
            cfg.synthetic_seed,
            spec=spec,
            cfg=cfg,
            split=split,
            purpose=purpose,
            fresh_every_epoch=cfg.fresh_every_epoch and split == "train",
            on_device=on_device,
            store=SyntheticStore.open(store, spec, cfg.synthetic_seed) if store else None,
        )
    if cfg.kind == "shards":
        from maskagain.data.shard_dataset import open_shards

        return open_shards(cfg, split, purpose, on_device)
    names = read_class_index(cfg.class_index) if cfg.class_index and cfg.kind != "folder" else None
    if cfg.kind == "folder":
        if not cfg.root:
            raise ValueError("DataConfig.root must be set for kind='folder'")
        tree = file_tree(cfg.root, cfg.listing_cache)  # a remote root: listed once, cached
        names = folder_class_index(cfg, tree)
        records = folder_split_records(
            cfg.root, split, names, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, tree
        )
    else:
        records = read_list(
            _list_file(cfg, split), cfg.root, cfg.separator, frames=cfg.kind == "frames"
        )
    if names is not None and max(r.label for r in records) >= len(names):
        raise ValueError(
            f"labels go up to {max(r.label for r in records)} but the class index has {len(names)} names"
        )
    return VideoListDataset(records, cfg, split, purpose, names, on_device)
