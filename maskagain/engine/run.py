"""What every training run does around the loop: run directory, seeds, run length, optimizer,
summary.

A recipe (``maskagain.recipes.pretrain``, ``maskagain.recipes.distill``, ...) is:

    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.engine.device)
    ... build model(s) and dataset ...
    trainer, bad_files = build_trainer(...)  # maskagain.recipes.training: loader, steps_per_epoch,
                                             # clips_per_step, build_optimization, Trainer
    trainer.resume(path) if resuming; summary = fit_and_summarize(trainer, ...)
    finish_run()

How a video file becomes a batch on the device: :mod:`maskagain.engine.feed`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskagain.config import save_config, to_dict
from maskagain.data.storage import is_remote
from maskagain.engine.allocator import keep_freed_memory
from maskagain.engine.checkpoint import latest_checkpoint, seed_everything
from maskagain.engine.config import EngineConfig, OptimConfig, ScheduleConfig
from maskagain.engine.distributed import DistInfo, barrier, cleanup, init_distributed
from maskagain.engine.optim import CosineSchedule, build_adamw, param_groups
from maskagain.engine.precision import describe as describe_precision
from maskagain.engine.precision import resolve_config_precision
from maskagain.engine.trainer import Trainer

log = logging.getLogger(__name__)


def start_run(
    cfg: Any, out_dir: str | Path, seed: int, device: str = "auto"
) -> tuple[DistInfo, Path]:
    """Join torchrun's process group (if any), create the run directory, save the resolved
    config as ``config.yaml`` (rank 0), log to ``train.log`` and seed this process
    (``seed + rank``, so dropout and drop path differ across processes)."""
    dist = init_distributed(device)
    chosen = resolve_config_precision(cfg, dist.device)  # before saving: the run records it
    run_dir = Path(out_dir)
    data = getattr(cfg, "data", None)
    if data is not None and is_remote(data.root) and not data.listing_cache:
        data.listing_cache = str(run_dir.resolve() / "listing.json")  # a bucket is listed once
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _warn_config_change(run_dir / "config.yaml", to_dict(cfg))
        save_config(cfg, run_dir / "config.yaml")
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("maskagain").addHandler(handler)
    else:  # one console voice: other processes report warnings and errors only
        logging.getLogger("maskagain").setLevel(logging.WARNING)
    barrier()
    if dist.device.type == "cuda":
        set_matmul_precision(cfg)
    else:  # no caching allocator on CPU: keep freed tensors' memory for the next step
        keep_freed_memory()
    seed_everything(seed + dist.rank)
    group = (
        f"process group {torch.distributed.get_backend()}" if dist.joined else "no process group"
    )
    log.info(
        "run directory %s, %d process(es), %s, device %s",
        run_dir, dist.world_size, group, dist.device,
    )  # fmt: skip
    if chosen:
        log.info(describe_precision(chosen))
    return dist, run_dir


def set_matmul_precision(cfg: Any) -> None:
    """TF32 for the fp32 matmuls of an fp32 training run (``engine.precision`` fp32) on CUDA;
    other runs keep PyTorch's default (true fp32 outside autocast). The top-k selection always
    computes in true fp32 (:func:`maskagain.models.layers.true_fp32`)."""
    engine = getattr(cfg, "engine", None)
    if getattr(engine, "precision", None) == "fp32":
        torch.set_float32_matmul_precision("high")
        log.info("fp32 training on CUDA: TF32 matmuls (the top-k selection stays true fp32)")


def finish_run() -> None:
    """Leave the process group and close the run's log file."""
    cleanup()
    logger = logging.getLogger("maskagain")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()


def _warn_config_change(path: Path, new: dict) -> None:
    """Log which keys differ from the config an earlier attempt saved in this run directory."""
    if not path.is_file():
        return
    import yaml

    old_flat, new_flat = _flatten(yaml.safe_load(path.read_text()) or {}), _flatten(new)
    changed = [
        f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}"
        for k in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(k) != new_flat.get(k)
    ]
    if changed:
        log.warning("config differs from the one saved in %s: %s", path.parent, "; ".join(changed))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``None``/``"none"``: fresh start; ``"auto"``: the newest complete checkpoint of the run
    directory (fresh start when there is none); anything else: that checkpoint file."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        path = latest_checkpoint(run_dir)
        log.info("resume auto: %s", path or "no checkpoint yet, starting fresh")
        return path
    path = Path(resume)
    if not path.is_file():
        from maskagain.checkpoints import CheckpointError

        raise CheckpointError(f"--resume {resume}: checkpoint does not exist (no such file)")
    return path


def build_optimization(
    module: nn.Module,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    steps_per_epoch: int,
    total_batch: int,
    device: torch.device,
    layer_decay: float | None = None,
) -> tuple[torch.optim.AdamW, CosineSchedule]:
    """AdamW over ``module``'s trainable parameters (with layer-wise lr decay when
    ``layer_decay`` is given) and the per-step cosine schedule for the whole run."""
    peak = optim.peak_lr(total_batch)
    groups = param_groups(module, optim.weight_decay, layer_decay)
    optimizer = build_adamw(groups, peak, optim.betas, optim.eps, device, optim.fused)
    total = steps_per_epoch * schedule.epochs
    warmup = math.floor(schedule.warmup_epochs * steps_per_epoch)
    scale = optim.schedule_scale(total_batch)  # official scripts: min/warm-up lr per 256 clips
    min_lr, warmup_lr = schedule.min_lr * scale, schedule.warmup_lr * scale
    sched = CosineSchedule(optimizer, total, peak, min_lr, warmup, warmup_lr)
    log.info(
        "lr %.3g (base %.3g x %d / 256), min %.3g, warm-up from %.3g, %d steps (%d warm-up), "
        "%d steps/epoch",
        peak,
        optim.base_lr,
        total_batch,
        min_lr,
        warmup_lr,
        total,
        warmup,
        steps_per_epoch,
    )
    return optimizer, sched


def clips_per_step(engine: EngineConfig, world_size: int, clips_per_item: int = 1) -> int:
    """Clips in one optimizer step over all processes (what the lr scaling rule counts):
    batch size x accumulation x processes x clips per dataset item (repeated sampling)."""
    return engine.batch_size * engine.accum_steps * world_size * clips_per_item


def steps_per_epoch(samples_per_process: int, engine: EngineConfig) -> int:
    """Optimizer steps in one epoch (VideoMAE: ``len(dataset) // total_batch``), capped by
    ``engine.max_steps_per_epoch``."""
    steps = samples_per_process // (engine.batch_size * engine.accum_steps)
    if steps < 1:
        raise ValueError(
            f"{samples_per_process} clips per process are fewer than one optimizer step of "
            f"engine.batch_size * engine.accum_steps = {engine.batch_size * engine.accum_steps}"
        )
    if engine.max_steps_per_epoch is not None:
        steps = min(steps, engine.max_steps_per_epoch)
    return steps


def write_summary(run_dir: Path, summary: dict) -> Path:
    """``run_dir/summary.json``: final metrics and run facts (call on rank 0)."""
    path = Path(run_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return path


def fit_and_summarize(
    trainer: Trainer, recipe: str, extra: dict | None = None, t0: float | None = None
) -> dict:
    """Run ``trainer.fit()`` and write ``summary.json`` (rank 0), also when the run fails
    (``"error"`` holds the message, then the exception propagates). Returns the summary:
    recipe, completed, step, epoch, total_steps, world_size, total_batch, peak_lr,
    parameters, wall_s, final (last logged metrics) and ``extra``, added last so it may replace
    one of these (fine-tuning's total_batch counts repeated clips); a callable value is called
    when the run ends, e.g. ``{"data": bad_files.summary}`` for the counts at the end."""
    t0 = time.time() if t0 is None else t0
    summary: dict = {"recipe": recipe}
    try:
        summary["final"] = trainer.fit()
    except Exception as err:
        summary["error"] = " ".join(str(err).split())
        raise
    finally:
        summary.update(
            completed=trainer.state.step >= trainer.total_steps and "error" not in summary,
            step=trainer.state.step,
            epoch=trainer.state.epoch,
            total_steps=trainer.total_steps,
            world_size=trainer.dist.world_size,
            total_batch=trainer.clips_per_step,
            peak_lr=trainer.schedule.peak_lr,
            parameters=count_parameters(trainer.model),
            wall_s=round(time.time() - t0, 2),
        )
        summary.update({k: v() if callable(v) else v for k, v in (extra or {}).items()})
        if trainer.dist.is_main:
            write_summary(trainer.run_dir, summary)
    return summary


def count_parameters(module: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
