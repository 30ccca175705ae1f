"""The one boundary from data to device: a video file becomes a batch on the training device.

    video file ── maskagain.data.datasets.ClipDataset[i]     (a DataLoader worker)
                    decode the clip's frames once (maskagain.data.decode), then the transform:
                    crop, augment, normalise -- or less, as ``on_device`` left to the device
               ── SeededItems                                 (same worker)
                    item i drawn under its own seed (seed, epoch, i): any worker, any rank
               ── maskagain.data.collate.MaskCollator         (same worker)
                    one batch layout: "video", "label", "index", ... and the masks
               ── Trainer.move_batch                           (main process)
                    to_device(batch), then device_transform(batch): DeviceTransform crops,
                    resizes and normalises what the workers left ("video" (B, C, T, H, W))
               ── step_fn(model, batch)

Where the crop and the normalisation run is decided once, from ``data.crop`` /
``data.normalize`` and the device (:func:`work_on_device`), and the dataset is built that way
(``build_dataset(..., on_device=...)``); :class:`DeviceTransform` does the device's half.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from maskagain.data.config import DataConfig
from maskagain.data.transforms import crop_on_device, normalize_video
from maskagain.engine.config import EngineConfig
from maskagain.engine.distributed import DistInfo
from maskagain.engine.sampler import ResumableSampler

if TYPE_CHECKING:
    from maskagain.data.datasets import OnDevice


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


def build_train_loader(
    dataset: Dataset,
    collate_fn: Any,
    engine: EngineConfig,
    num_workers: int,
    dist: DistInfo,
    seed: int,
    shuffle: bool = True,
) -> tuple[DataLoader, ResumableSampler]:
    """A drop-last loader over this process's share of ``dataset`` in epoch-seeded order.

    The loader carries its own ``generator`` (re-seeded per epoch by the trainer), so worker
    seeds never draw from the global RNG and a resumed run sees the same streams. Workers
    ignore SIGINT/SIGTERM (:func:`ignore_stop_signals`).
    """
    sampler = ResumableSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        order=getattr(dataset, "epoch_order", None),  # shards: a shard-aware order
    )
    loader = DataLoader(
        dataset,
        batch_size=engine.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=dist.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator(),
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )
    return loader, sampler


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: SIGINT/SIGTERM sent to the whole process group (Ctrl-C,
    Slurm's scancel) must not kill the workers, or the main process dies with "DataLoader
    worker ... is killed by signal" before it can save its checkpoint. The main process stops
    them when it exits; a worker whose parent died exits by itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a batch dict moved to ``device`` (non-blocking); other values kept."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def work_on_device(data: DataConfig, device: torch.device) -> OnDevice:
    """What the training device does instead of the workers: ``"crop"`` (crop, resize and
    normalise) for ``data.crop`` device, or auto on CUDA; else ``"normalize"`` for
    ``data.normalize`` likewise; else None."""
    if _chosen(data.crop, device):
        return "crop"
    if _chosen(data.normalize, device):
        return "normalize"
    return None


def _chosen(choice: str, device: torch.device) -> bool:
    """``"device"``, or ``"auto"`` on CUDA, means on the device."""
    return choice == "device" or (choice == "auto" and device.type == "cuda")


class DeviceTransform:
    """The device's half of the data pipeline, applied to a batch already on the device.

    ``"normalize"``: uint8 ``"video"`` (B, C, T, H, W) -> float32, normalised
    (:func:`~maskagain.data.transforms.normalize_video`). ``"crop"``: decoded windows
    ``"video"`` (V, T, H, W, C) uint8 with ``"boxes"`` and ``"source"`` -> clips (B, C, T,
    size, size), cut, resized and normalised (:func:`~maskagain.data.transforms.crop_on_device`);
    ``"boxes"`` and ``"source"`` are dropped. Either way the step sees float ``"video"``.
    """

    def __init__(
        self, work: OnDevice, mean: tuple[float, ...], std: tuple[float, ...], size: int
    ) -> None:
        if work not in ("normalize", "crop"):
            raise ValueError(f"nothing to do on the device for {work!r}")
        self.work, self.mean, self.std, self.size = work, tuple(mean), tuple(std), size

    @classmethod
    def of(cls, data: DataConfig, work: OnDevice) -> DeviceTransform | None:
        """The transform for ``work`` with ``data``'s statistics and size; None for no work."""
        return None if work is None else cls(work, data.mean, data.std, data.input_size)

    def __call__(self, batch: dict) -> dict:
        if self.work == "normalize":
            return {**batch, "video": normalize_video(batch["video"], self.mean, self.std)}
        rest = {k: v for k, v in batch.items() if k not in ("boxes", "source")}
        video = crop_on_device(
            batch["video"], batch["boxes"], batch["source"], self.size, self.mean, self.std
        )
        return {**rest, "video": video}
