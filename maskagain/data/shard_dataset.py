"""``data.kind=shards``: clips of the samples of a shard set (:mod:`maskagain.data.shards`).

:class:`ShardDataset` is a map-style :class:`~maskagain.data.datasets.ClipDataset`: sampling,
repeated sampling, masks, bad-sample replacement, exact resume and DDP equivalence are the file
loader's, because a sample is addressed by its index and read with one ranged read of its shard.
Only its shuffled epoch order differs (:meth:`ShardDataset.epoch_order`, used by
:class:`~maskagain.engine.sampler.ResumableSampler`): shards in a seeded order per epoch, the
samples of ``data.shard_window`` consecutive shards shuffled together.

    ds = open_shards(cfg, "train", "pretrain")  # cfg.train_list: .../train/index.json
"""

from __future__ import annotations

import numpy as np

from maskagain.data.config import DataConfig
from maskagain.data.datasets import ClipDataset, ClipSource, OnDevice, decode_threads
from maskagain.data.decode import VideoDecodeError, VideoFile
from maskagain.data.shards import INDEX_NAME, ShardIndex, join, shard_order
from maskagain.data.storage import Storage


class ShardDataset(ClipDataset):
    """Clips of the samples of a shard set (see the module docstring)."""

    def __init__(
        self,
        index: ShardIndex,
        cfg: DataConfig,
        split: str,
        purpose: str,
        on_device: OnDevice = None,
    ) -> None:
        classes = index.classes or [str(i) for i in range(max(s.label for s in index.samples) + 1)]
        super().__init__(cfg, split, purpose, len(index.samples), classes, on_device)
        self.index = index
        self.storage = Storage.from_config(cfg)  # .stats: requests and bytes of shards read here
        self.window = cfg.shard_window
        self._shard_of = np.array([s.shard for s in index.samples])

    def open(self, video_id: int) -> ClipSource:
        sample = self.index.samples[video_id]
        try:
            data = self.index.read(sample, self.storage)
        except OSError as e:  # StorageError past its retries, a missing local shard
            raise VideoDecodeError(self.path(video_id), f"cannot read: {e}") from None
        if len(data) != sample.size:
            raise VideoDecodeError(
                self.path(video_id), f"shard ends early ({len(data)} of {sample.size} bytes)"
            )
        threads = self.cfg.decode_threads or decode_threads()
        return VideoFile(self.path(video_id), threads, data=data)

    def label(self, video_id: int) -> int:
        return self.index.samples[video_id].label

    def path(self, video_id: int) -> str:
        sample = self.index.samples[video_id]
        return f"{self.index.shard_path(sample.shard)}#{sample.key}"

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        """Item order of a shuffled epoch (see :func:`shard_order`), each video's views
        consecutive."""
        videos = shard_order(self._shard_of, seed, epoch, self.window)
        return [v * self.views + k for v in videos for k in range(self.views)]


def open_shards(
    cfg: DataConfig, split: str, purpose: str, on_device: OnDevice = None
) -> ShardDataset:
    """The :class:`ShardDataset` of ``split``: the index named by ``cfg.<split>_list`` (test
    falls back to val), else ``root/<split>/index.json``."""
    path = {"train": cfg.train_list, "val": cfg.val_list, "test": cfg.test_list}[split]
    if not path and split == "test" and cfg.val_list:
        path = cfg.val_list
    if not path:
        if not cfg.root:
            raise ValueError(f"DataConfig.{split}_list is not set (kind='shards')")
        path = join(cfg.root, f"{split}/{INDEX_NAME}")
    index = ShardIndex.load(path, Storage.from_config(cfg))
    return ShardDataset(index, cfg, split, purpose, on_device)
