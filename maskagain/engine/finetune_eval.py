"""Recipes ``evaluate`` (multi-view testing of a classifier) and ``probe`` (linear probe on
frozen features), plus :func:`load_classifier`, which opens whatever a fine-tuning run left."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from maskagain.config import ConfigError, from_dict
from maskagain.data import ClipDataset
from maskagain.data.lists import read_class_index
from maskagain.engine.checkpoint import atomic_torch_save, latest_checkpoint, load_checkpoint
from maskagain.engine.distributed import DistInfo
from maskagain.engine.finetune import (
    build_classifier,
    build_eval_loader,
    progress_batches,
    run_test,
)
from maskagain.engine.finetune_config import (
    EvaluateConfig,
    FinetuneConfig,
    ProbeConfig,
    loader_overrides,
)
from maskagain.engine.metrics import MetricWriter
from maskagain.engine.probe import FeatureSet, extract_features, train_linear_probe
from maskagain.engine.run import finish_run, open_dataset, start_run, write_summary
from maskagain.engine.trainer import CHECKPOINT_FORMAT, DTYPES
from maskagain.models.loading import CheckpointError, load_encoder
from maskagain.models.vit import ModelConfig, VideoViT

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- checkpoints
def load_classifier(
    checkpoint: str | Path, use_ema: bool = False, overrides: dict | None = None
) -> VideoViT:
    """A classifier from a ``finetune`` run directory, an exported weights file (any format
    ``load_encoder`` reads) or a fine-tuning training checkpoint ``ckpt_step*.pt``.

    A run directory gives ``model.safetensors`` (``model_ema.safetensors`` with ``use_ema``),
    or, for a run that has not finished, its newest training checkpoint, or else whatever
    weights ``load_encoder`` finds in it. ``overrides`` go to ``load_encoder`` (weights files).
    """
    overrides = overrides or {}
    path = Path(checkpoint)
    if path.is_dir():
        name = "model_ema.safetensors" if use_ema else "model.safetensors"
        if (path / name).is_file():
            return load_encoder(path / name, **overrides)
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            log.info("%s has no %s yet; using the training checkpoint %s", path, name, ckpt)
            return _from_training_checkpoint(ckpt, use_ema)
        if use_ema:
            raise CheckpointError(f"{path} holds neither {name} nor checkpoints/ckpt_step*.pt")
        return load_encoder(path, **overrides)  # any weights file a run directory holds
    if path.suffix == ".pt" and path.is_file():
        state = load_checkpoint(path)
        if state.get("format") == CHECKPOINT_FORMAT:
            return _from_training_checkpoint(path, use_ema, state)
    if use_ema:
        raise CheckpointError(f"use_ema needs a run directory or a training checkpoint, not {path}")
    return load_encoder(path, **overrides)


def _from_training_checkpoint(path: Path, use_ema: bool, state: dict | None = None) -> VideoViT:
    state = state if state is not None else load_checkpoint(path)
    try:
        cfg = from_dict(FinetuneConfig, state.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{path} is not a fine-tuning checkpoint ({err})") from None
    weights = state["model"]
    if use_ema:
        ema = state.get("ema") or {}
        if not ema:
            raise CheckpointError(f"{path} has no EMA weights (engine.ema_decay was 0)")
        weights = ema["module"] if "module" in ema else _strip(ema, "module.")
    num_classes = int(weights["head.weight"].shape[0])
    spec = cfg.model.model_config("model").to_dict()
    spec.update(loader_overrides(cfg.init.overrides, "init.overrides"))  # e.g. norm_eps of a .pth
    model = build_classifier(ModelConfig(**spec), num_classes, fc_norm=cfg.head.fc_norm)
    model.load_state_dict(weights, strict=True)
    return model


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _class_names(path: str, dataset: ClipDataset, num_classes: int) -> list[str] | None:
    if path:
        names = read_class_index(path)
        if len(names) != num_classes:
            raise ConfigError(
                f"config key 'class_names': {path} has {len(names)} names for {num_classes} classes"
            )
        return names
    return dataset.class_names if dataset.num_classes == num_classes else None


# ----------------------------------------------------------------------------- evaluate
def run_evaluate(cfg: EvaluateConfig) -> dict:
    """Multi-view test of ``cfg.checkpoint``; reports and ``summary.json`` in ``cfg.out_dir``."""
    t0 = time.time()
    dist, run_dir = start_run(cfg, cfg.out_dir, 0, cfg.device)
    try:
        dataset = open_dataset(cfg.data, cfg.split, "eval")  # list files only: fails fast
        model = load_classifier(cfg.checkpoint, cfg.use_ema, cfg.overrides).to(dist.device)
        if not model.num_classes:
            raise CheckpointError(
                f"{cfg.checkpoint} is an encoder without a classification head; fine-tune it "
                "first (maskagain finetune) or linear-probe it (maskagain probe)"
            )
        _warn_geometry(cfg, model)
        if dataset.num_classes > model.num_classes:
            raise ConfigError(
                f"the {cfg.split} data has {dataset.num_classes} classes but the checkpoint's "
                f"head has {model.num_classes}"
            )
        names = _class_names(cfg.class_names, dataset, model.num_classes)
        metrics = run_test(
            model, dataset, cfg.batch_size, cfg.data.num_workers, dist, DTYPES[cfg.precision],
            run_dir, cfg.progress, names,
        )  # fmt: skip
        summary = {
            "recipe": "evaluate",
            "checkpoint": str(cfg.checkpoint),
            "use_ema": cfg.use_ema,
            "split": cfg.split,
            "views": f"{cfg.data.test_clips}x{cfg.data.test_crops}" if dataset.views > 1 else "1",
            "world_size": dist.world_size,
            **metrics,
            "wall_s": round(time.time() - t0, 2),
        }
        if dist.is_main:
            writer = MetricWriter(run_dir, True, tensorboard=True)
            writer.write({"step": 0, **metrics}, 0, prefix="test")
            writer.close()
            write_summary(run_dir, summary)
        return summary
    finally:
        finish_run()


def _warn_geometry(cfg: EvaluateConfig, model: VideoViT) -> None:
    if (cfg.data.num_frames, cfg.data.input_size) != (model.cfg.num_frames, model.cfg.img_size):
        log.warning(
            "testing %d frames at %dpx on a model fine-tuned on %d frames at %dpx "
            "(position table interpolated)",
            cfg.data.num_frames, cfg.data.input_size, model.cfg.num_frames, model.cfg.img_size,
        )  # fmt: skip


# ----------------------------------------------------------------------------- probe
def _triples(batches: Iterable[dict]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(video, label, sample index) from data-pipeline batches (one view per video)."""
    for batch in batches:
        yield batch["video"], batch["label"], batch["index"]


def _features(
    encoder: VideoViT, cfg: ProbeConfig, dataset: ClipDataset, split: str, dist: DistInfo
) -> FeatureSet:
    loader = build_eval_loader(dataset, cfg.batch_size, cfg.data.num_workers, dist)
    batches = progress_batches(loader, dist.is_main and cfg.progress, f"features {split}")
    dtype = DTYPES[cfg.precision]
    feats = extract_features(
        encoder, _triples(batches), dist.device, None if dtype == torch.float32 else dtype
    )
    log.info("%s features: %s", split, tuple(feats.features.shape))
    return feats


def run_probe(cfg: ProbeConfig) -> dict:
    """Linear probe of ``cfg.encoder``: frozen mean-pooled features, a linear classifier,
    train and val top-1 in ``summary.json``, the probe in ``probe.pt``."""
    t0 = time.time()
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.device)
    try:
        # list files only, before the encoder is loaded: an empty or missing source fails fast
        train_set = open_dataset(cfg.data, "train", "eval")
        val_set = open_dataset(cfg.data, "val", "eval")
        encoder = load_encoder(cfg.encoder, **cfg.overrides).to(dist.device)
        encoder.requires_grad_(False)
        train = _features(encoder, cfg, train_set, "train", dist)
        val = _features(encoder, cfg, val_set, "val", dist)
        num_classes = max(train_set.num_classes, int(train.labels.max()) + 1)
        p = cfg.probe
        res = train_linear_probe(
            train, val, num_classes, p.epochs, p.lr, p.weight_decay, p.batch_size, cfg.seed
        )
        metrics = res.metrics()
        summary = {
            "recipe": "probe",
            "encoder": cfg.encoder,
            "feature_dim": int(train.features.shape[1]),
            "num_train": len(train),
            "num_val": len(val),
            "num_classes": num_classes,
            **metrics,
            "wall_s": round(time.time() - t0, 2),
        }
        log.info("probe: train top-1 %.2f, val top-1 %.2f", res.train_top1, res.val_top1)
        if dist.is_main:
            writer = MetricWriter(run_dir, True, tensorboard=True)
            for epoch, loss in enumerate(res.losses, 1):
                writer.write({"epoch": epoch, "loss": loss}, epoch, prefix="probe")
            writer.write({"epoch": p.epochs, **metrics}, p.epochs, prefix="probe")
            writer.close()
            atomic_torch_save(
                {
                    "probe": res.probe.state_dict(),
                    "num_classes": num_classes,
                    "encoder": cfg.encoder,
                },
                run_dir / "probe.pt",
            )
            write_summary(run_dir, summary)
        return summary
    finally:
        finish_run()
