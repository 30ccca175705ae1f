"""Recipe ``maskagain probe``: a linear probe on frozen, mean-pooled encoder features, the fast
quality signal of a pre-trained or distilled encoder (train and val top-1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from maskagain.data import ClipDataset
from maskagain.engine.checkpoint import atomic_torch_save
from maskagain.engine.distributed import DistInfo
from maskagain.engine.evaluation import build_eval_loader, progress_batches
from maskagain.engine.metrics import MetricWriter
from maskagain.engine.precision import resolve_precision
from maskagain.engine.probe import FeatureSet, extract_features, train_linear_probe
from maskagain.engine.run import finish_run, start_run, write_summary
from maskagain.engine.trainer import DTYPES
from maskagain.models.loading import load_encoder, locate_source
from maskagain.models.vit import VideoViT
from maskagain.recipes.configs import ProbeConfig
from maskagain.recipes.sources import open_dataset, warn_resolution

log = logging.getLogger(__name__)


def _triples(batches: Iterable[dict]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(video, label, sample index) from data-pipeline batches (one view per video)."""
    for batch in batches:
        yield batch["video"], batch["label"], batch["index"]


def _features(
    encoder: VideoViT, cfg: ProbeConfig, dataset: ClipDataset, split: str, dist: DistInfo
) -> FeatureSet:
    loader = build_eval_loader(dataset, cfg.batch_size, cfg.data.num_workers, dist)
    batches = progress_batches(loader, dist.is_main and cfg.progress, f"features {split}")
    dtype = DTYPES[resolve_precision(cfg.precision, dist.device)[0]]
    feats = extract_features(
        encoder,
        _triples(batches),
        dist.device,
        None if dtype == torch.float32 else dtype,
        cfg.probe.pooling,
    )
    log.info("%s features: %s", split, tuple(feats.features.shape))
    return feats


def run(cfg: ProbeConfig, resume: str | None = None) -> dict:
    """Linear probe of ``cfg.encoder``: frozen pooled features (``probe.pooling``), a linear classifier,
    train and val top-1 in ``summary.json``, the probe in ``probe.pt``.

    The encoder and the data are checked before the run directory is written, so a command
    that fails on them leaves an earlier run there untouched."""
    t0 = time.time()
    locate_source(cfg.encoder, "encoder")
    # list files only, before the encoder is loaded: an empty or missing source fails fast
    train_set = open_dataset(cfg.data, "train", "eval")
    warn_resolution(train_set, cfg.data)  # once a run: the val split shares the source
    val_set = open_dataset(cfg.data, "val", "eval")
    encoder = load_encoder(cfg.encoder, **cfg.overrides)
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.device)
    try:
        encoder = encoder.to(dist.device).requires_grad_(False)
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
            "pooling": cfg.probe.pooling,
            "num_train": len(train),
            "num_val": len(val),
            "num_classes": num_classes,
            **metrics,
            "wall_s": round(time.time() - t0, 2),
        }
        log.info("probe: train top-1 %.2f, val top-1 %.2f", res.train_top1, res.val_top1)
        if dist.is_main:
            _write_outputs(run_dir, cfg, res, metrics, num_classes)
            write_summary(run_dir, summary)
        return summary
    finally:
        finish_run()


def _write_outputs(run_dir: Path, cfg: ProbeConfig, res, metrics: dict, num_classes: int) -> None:
    """``log.jsonl`` (one line per probe epoch, then the metrics) and ``probe.pt``."""
    writer = MetricWriter(run_dir, True, tensorboard=True)
    for epoch, loss in enumerate(res.losses, 1):
        writer.write({"epoch": epoch, "loss": loss}, epoch, prefix="probe")
    writer.write({"epoch": cfg.probe.epochs, **metrics}, cfg.probe.epochs, prefix="probe")
    writer.close()
    state = {"probe": res.probe.state_dict(), "num_classes": num_classes, "encoder": cfg.encoder}
    atomic_torch_save(state, run_dir / "probe.pt")
