"""A sampler that can start in the middle of an epoch, for exact resumption.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (the same on every process),
split across processes like ``DistributedSampler``; ``set_start(i)`` skips the first ``i``
samples of this process's share, so a resumed run never loads the clips it has already seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


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
