"""Assembling a trainer: where a recipe's model, step function and dataset meet the config.

:func:`build_trainer` is the one assembly of every training recipe (pre-training, distillation,
fine-tuning): the loader, the run's length (steps per epoch, clips per optimizer step: counted
here once), AdamW with its schedule, bad-file accounting, the device's half of the data
pipeline and the :class:`~maskagain.engine.trainer.Trainer`. :func:`build_masked_trainer` adds
what masked training draws per clip (seeded items, masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from maskagain.config import to_dict
from maskagain.data import BadFileTracker, ClipDataset, MaskCollator
from maskagain.engine.distributed import DistInfo
from maskagain.engine.feed import DeviceTransform, SeededItems, build_train_loader
from maskagain.engine.run import build_optimization, clips_per_step, steps_per_epoch
from maskagain.engine.trainer import EpochHook, StepFn, Trainer


def build_trainer(
    cfg: Any,
    dist: DistInfo,
    run_dir: Path,
    *,
    model: nn.Module,
    step_fn: StepFn,
    dataset: ClipDataset,
    collate: MaskCollator,
    name: str,
    items: Dataset | None = None,
    layer_decay: float | None = None,
    extra_state: dict[str, Any] | None = None,
    on_epoch_end: EpochHook | None = None,
) -> tuple[Trainer, BadFileTracker]:
    """The :class:`Trainer` of ``model`` on ``dataset`` (read as ``items``, e.g. seeded, when
    given), batched by ``collate``; what ``dataset`` left to the device (``on_device``) is done
    there. ``cfg`` has ``seed``, ``data``, ``optim``, ``schedule`` and ``engine`` sections;
    ``layer_decay`` gives AdamW layer-wise lr decay. Returns the trainer and the
    :class:`~maskagain.data.BadFileTracker` whose ``summary`` goes into ``summary.json``."""
    loader, sampler = build_train_loader(
        dataset if items is None else items,
        collate,
        cfg.engine,
        cfg.data.num_workers,
        dist,
        cfg.seed,
    )
    steps = steps_per_epoch(len(sampler.order()), cfg.engine)
    # clips per optimizer step (the lr scaling rule counts clips): repeated sampling included
    total_batch = clips_per_step(cfg.engine, dist.world_size, dataset.num_sample)
    optimizer, schedule = build_optimization(
        model, cfg.optim, cfg.schedule, steps, total_batch, dist.device, layer_decay
    )
    bad_files = BadFileTracker(cfg.data.max_bad_fraction, cfg.data.min_samples_for_bad_check)
    trainer = Trainer(
        engine=cfg.engine,
        dist=dist,
        run_dir=run_dir,
        model=model,
        step_fn=step_fn,
        optimizer=optimizer,
        schedule=schedule,
        loader=loader,
        sampler=sampler,
        epochs=cfg.schedule.epochs,
        steps_per_epoch=steps,
        clips_per_step=total_batch,
        clip_grad=cfg.optim.clip_grad,
        config=to_dict(cfg),
        extra_state=extra_state,
        on_epoch_end=on_epoch_end,
        batch_hook=bad_files.update,
        device_transform=DeviceTransform.of(cfg.data, dataset.on_device),
        name=name,
    )
    return trainer, bad_files


def build_masked_trainer(
    cfg: Any,
    dist: DistInfo,
    run_dir: Path,
    module: nn.Module,
    step_fn: StepFn,
    dataset: ClipDataset,
    grid: tuple[int, int, int],
    name: str,
    teacher_mask_ratio: float | None = None,
) -> tuple[Trainer, BadFileTracker]:
    """:func:`build_trainer` for masked pre-training and distillation: items and per-clip masks
    (``cfg.mask``) seeded from ``(seed, epoch, index)``; ``teacher_mask_ratio`` adds a
    ``teacher_mask`` per clip (AMD: the teacher's lighter mask, its visible tokens a superset
    of the student's)."""
    collate = MaskCollator(
        cfg.mask.kind, cfg.mask.ratio, grid, cfg.seed, teacher_ratio=teacher_mask_ratio
    )
    return build_trainer(
        cfg, dist, run_dir, model=module, step_fn=step_fn, dataset=dataset, collate=collate,
        name=name, items=SeededItems(dataset, cfg.seed),
    )  # fmt: skip
