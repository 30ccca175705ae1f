"""What several recipes share: reading a dataset that fails fast, and the masked-training setup
of pre-training and distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from maskagain.config import ConfigError, to_dict
from maskagain.data import BadFileTracker, DataConfig, MaskCollator
from maskagain.data.transforms import normalize_video
from maskagain.engine.distributed import DistInfo
from maskagain.engine.run import build_optimization, build_train_loader
from maskagain.engine.sampler import SeededItems
from maskagain.engine.trainer import Trainer, steps_per_epoch

# what each data kind's key must point at (the fix named by open_dataset's errors)
_EXPECTED_SOURCE = {
    "list": "a list file of 'path label' lines, one per video",
    "frames": "a list file of 'path num_frames label' lines, one per video",
    "folder": "a folder of <class>/<video> (or <split>/<class>/<video>) subfolders",
}


def open_dataset(data: DataConfig, split: str, purpose: str) -> Dataset:
    """``maskagain.data.build_dataset``, with a source that cannot give a dataset (a missing or
    empty list file, a root without videos, an unset list) reported as a one-line
    :class:`ConfigError` naming the data key to fix and what it must point at. Reads list files
    only, no video: call it before building any model so a bad source fails fast."""
    from maskagain.data import build_dataset

    key = "data.root" if data.kind == "folder" else f"data.{split}_list"
    if key == "data.test_list" and not data.test_list and data.val_list:
        key = "data.val_list"  # build_dataset tests on val_list when test_list is unset
    expected = _EXPECTED_SOURCE.get(data.kind)
    fix = f"; set it to {expected}" if expected else ""
    try:
        dataset = build_dataset(data, split, purpose)
    except (ValueError, OSError) as err:  # ListFormatError, no class folders, no such file
        message = " ".join(str(err).split())
        raise ConfigError(
            f"config key '{key}': no usable {split} dataset: {message}{fix}"
        ) from None
    if len(dataset) == 0:
        raise ConfigError(f"config key '{key}': the {split} dataset is empty{fix}")
    return dataset


def build_masked_trainer(
    cfg: Any,
    dist: DistInfo,
    run_dir: Path,
    module: nn.Module,
    step_fn: Any,
    dataset: Dataset,
    grid: tuple[int, int, int],
    name: str,
) -> tuple[Trainer, BadFileTracker]:
    """What masked pre-training and distillation share: items and per-clip masks seeded from
    ``(seed, epoch, index)``, the loader, AdamW with its schedule, bad-file accounting and the
    :class:`Trainer`. ``cfg`` has ``seed``, ``data``, ``mask``, ``optim``, ``schedule`` and
    ``engine`` sections; returns the trainer and the :class:`~maskagain.data.BadFileTracker`
    whose ``summary`` goes into ``summary.json``."""
    if normalize_on_device(cfg.data.normalize, dist.device):
        mean, std = dataset.defer_normalize()
        step_fn = NormalizeOnDevice(step_fn, mean, std)
    collate = MaskCollator(cfg.mask.kind, cfg.mask.ratio, grid, cfg.seed)
    loader, sampler = build_train_loader(
        SeededItems(dataset, cfg.seed), collate, cfg.engine, cfg.data.num_workers, dist, cfg.seed
    )
    steps = steps_per_epoch(len(sampler.order()), cfg.engine)
    # clips per optimizer step (the lr scaling rule counts clips): repeated sampling included
    clips_per_item = getattr(dataset, "num_sample", 1)
    total_batch = cfg.engine.batch_size * cfg.engine.accum_steps * dist.world_size
    total_batch *= clips_per_item
    optimizer, schedule = build_optimization(
        module, cfg.optim, cfg.schedule, steps, total_batch, dist.device
    )
    bad_files = BadFileTracker(cfg.data.max_bad_fraction, cfg.data.min_samples_for_bad_check)
    trainer = Trainer(
        engine=cfg.engine,
        dist=dist,
        run_dir=run_dir,
        model=module,
        step_fn=step_fn,
        optimizer=optimizer,
        schedule=schedule,
        loader=loader,
        sampler=sampler,
        epochs=cfg.schedule.epochs,
        clip_grad=cfg.optim.clip_grad,
        config=to_dict(cfg),
        batch_hook=bad_files.update,
        name=name,
        clips_per_item=clips_per_item,
    )
    return trainer, bad_files


def normalize_on_device(choice: str, device: torch.device) -> bool:
    """``data.normalize``: "device", or "auto" on CUDA, normalises uint8 batches on the device."""
    return choice == "device" or (choice == "auto" and device.type == "cuda")


class NormalizeOnDevice:
    """A step function whose batch arrives as uint8 clips ``(B, C, T, H, W)``: they are
    normalised on the device (:func:`maskagain.data.transforms.normalize_video`) first."""

    def __init__(self, step_fn: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.step_fn, self.mean, self.std = step_fn, mean, std

    def __call__(self, module: nn.Module, batch: dict) -> dict:
        video = normalize_video(batch["video"], self.mean, self.std)
        return self.step_fn(module, {**batch, "video": video})
