"""A sampler that can start in the middle of an epoch, and per-item seeding, for exact resumption.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (the same on every process),
split across processes like ``DistributedSampler``; ``set_start(i)`` skips the first ``i``
samples of this process's share, so a resumed run never loads the clips it has already seen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[int]):
    """Epoch-seeded (optionally shuffled) indices for one process of ``world_size``.

    With ``drop_last`` every process gets ``len(dataset) // world_size`` samples; otherwise the
    order is padded by repetition to a multiple of ``world_size``. ``order(seed, epoch)``, when
    given, draws the shuffled order instead of a uniform permutation (shards: a shard-aware one).
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        order: Callable[[int, int], list[int]] | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the dataset is empty")
        self.total = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.shuffled_order = order
        if drop_last:
            self.per_rank = num_samples // world_size
        else:
            self.per_rank = math.ceil(num_samples / world_size)
        if self.per_rank < 1:
            raise ValueError(f"{num_samples} samples cannot be split over {world_size} processes")
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this process's share in the current epoch."""
        self.start = start

    def order(self) -> list[int]:
        """This process's full share of the current epoch, in order."""
        if self.shuffle and self.shuffled_order is not None:
            indices = list(self.shuffled_order(self.seed, self.epoch))
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.total, generator=g).tolist()
        else:
            indices = list(range(self.total))
        need = self.per_rank * self.world_size
        if need > len(indices):
            indices += indices[: need - len(indices)]
        return indices[:need][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


class SeededItems(Dataset):
    """Loads item ``i`` under its own RNG seed, drawn from ``(seed, epoch, i)``.

    Random augmentation (torch, NumPy and Python ``random`` global streams) then depends only on
    the item and the epoch: the same in any DataLoader worker, on any process and after a
    resume. The caller's RNG streams are restored after each item. ``set_epoch`` is passed on
    to the wrapped dataset.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def epoch_order(self) -> Callable[[int, int], list[int]] | None:
        """The wrapped dataset's own epoch order, if it has one (shards)."""
        return getattr(self.dataset, "epoch_order", None)

    def __getitem__(self, index: int):
        seeds = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(2)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeds[0]) << 32 | int(seeds[1]))
            random.seed(int(seeds[0]))
            np.random.seed(int(seeds[1]))
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
