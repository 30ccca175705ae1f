"""Sequential shards: prepared videos packed into WebDataset tar files, their index, and the
shard-aware, seeded epoch order.

A shard set (one split, written by ``maskagain prepare --shards``) is a folder, local or in
object storage::

    shard-000000.tar    members <key>.mp4 (prepared H.264) and <key>.json (key, label, source)
    shard-000000.json   that shard's samples, written after the tar: a shard is complete when
                        both exist
    index.json          {"format", "classes", "shards": [names], "failed": [[source, reason]],
                         "samples": [{"key", "label", "source", "shard", "offset", "size"}]}

``offset`` and ``size`` locate a sample's mp4 member inside its tar, so the dataset reads one
sample with one ranged read (a seek and a read locally, one ranged GET remotely) and PyAV
decodes it from memory (:class:`maskagain.data.shard_dataset.ShardDataset`). The epoch order
(:func:`shard_order`) shuffles the shards per epoch and the samples of ``window`` consecutive
shards together (the shuffle buffer), so each process reads a few shards at a time, mostly
sequentially. This module is torch-free (``prepare --shards`` workers import it).

    index = ShardIndex.load("/data/k400_shards/train/index.json")
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from maskagain.data.storage import Storage, is_remote

INDEX_NAME = "index.json"
FORMAT = "maskagain-shards-1"


@dataclass(frozen=True)
class ShardSample:
    """One video in a shard: its key, label, source path, shard number and the byte range of its
    mp4 member inside the shard's tar."""

    key: str
    label: int
    source: str
    shard: int
    offset: int
    size: int


def join(folder: str, name: str) -> str:
    """``folder/name`` for a local folder or an object-storage URL."""
    return f"{folder.rstrip('/')}/{name}" if is_remote(folder) else os.path.join(folder, name)


def parent(path: str) -> str:
    """The folder of a local path or an object-storage URL."""
    return path.rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(path)


@dataclass
class ShardIndex:
    """The index of one shard set: class names, shard file names (relative to ``folder``) and the
    samples in shard order."""

    folder: str
    classes: list[str]
    shards: list[str]
    samples: list[ShardSample]
    failed: list[tuple[str, str]]

    @classmethod
    def load(cls, path: str, storage: Storage | None = None) -> ShardIndex:
        """Read ``index.json`` (or the folder holding it); ValueError names a malformed one."""
        if not path.endswith(".json"):
            path = join(path, INDEX_NAME)
        try:
            raw = json.loads((storage or Storage()).read_bytes(path))
        except OSError as e:  # StorageError included
            raise ValueError(
                f"cannot read the shard index {path}: {e}; write it with "
                "'maskagain prepare --shards SIZE --out DIR'"
            ) from None
        if raw.get("format") != FORMAT:
            raise ValueError(f"{path}: not a shard index (format {raw.get('format')!r})")
        samples = [ShardSample(**s) for s in raw["samples"]]
        if not samples:
            raise ValueError(f"{path}: the shard index lists no samples")
        failed = [(str(a), str(b)) for a, b in raw.get("failed", [])]
        return cls(parent(path), list(raw["classes"]), list(raw["shards"]), samples, failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "classes": self.classes,
            "shards": self.shards,
            "failed": [list(f) for f in self.failed],
            "samples": [asdict(s) for s in self.samples],
        }

    def shard_path(self, shard: int) -> str:
        return join(self.folder, self.shards[shard])

    def read(self, sample: ShardSample, storage: Storage | None = None) -> bytes:
        """The mp4 bytes of ``sample``: one ranged read of its shard (a ranged GET remotely)."""
        storage = storage or Storage()
        return storage.read_range(self.shard_path(sample.shard), sample.offset, sample.size)


def shard_order(shard_of: np.ndarray, seed: int, epoch: int, window: int) -> list[int]:
    """A seeded epoch order of samples ``0..len(shard_of)-1`` that keeps shards together: the
    shards in an order drawn from ``(seed, epoch)``, the samples of each ``window`` consecutive
    shards of that order shuffled together."""
    rng = np.random.default_rng([seed, epoch])
    count = np.bincount(shard_of)
    shards = rng.permutation(len(count))
    members = np.split(np.argsort(shard_of, kind="stable"), np.cumsum(count)[:-1])
    order: list[int] = []
    for start in range(0, len(shards), window):
        block = np.concatenate([members[s] for s in shards[start : start + window]])
        order += rng.permutation(block).tolist()
    return order
