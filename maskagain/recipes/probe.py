"""Recipe ``maskagain probe``: a linear probe on frozen, mean-pooled encoder features, the fast
quality signal of a pre-trained or distilled encoder (train and val top-1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from maskagain.config import check
from maskagain.data import ClipDataset, DataConfig
from maskagain.engine.checkpoint import atomic_torch_save
from maskagain.engine.config import Precision
from maskagain.engine.distributed import DistInfo
from maskagain.engine.metrics import MetricWriter
from maskagain.engine.probe import FeatureSet, extract_features, train_linear_probe
from maskagain.engine.run import finish_run, start_run, write_summary
from maskagain.engine.trainer import DTYPES
from maskagain.models.loading import load_encoder
from maskagain.models.vit import VideoViT
from maskagain.recipes.common import model_overrides, open_dataset
from maskagain.recipes.finetune import build_eval_loader, progress_batches

log = logging.getLogger(__name__)


@dataclass
class ProbeSpec:
    """The linear classifier trained on frozen features."""

    epochs: int = 50
    lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int = 256

    def validate(self, path: str = "probe") -> None:
        check(self.epochs >= 1, f"config key '{path}.epochs' must be >= 1, got {self.epochs}")
        check(self.lr > 0, f"config key '{path}.lr' must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"config key '{path}.weight_decay' must be >= 0")
        check(self.batch_size >= 1, f"config key '{path}.batch_size' must be >= 1")


@dataclass
class ProbeConfig:
    """``maskagain probe``: linear probe on frozen, mean-pooled features of an encoder.

    ``encoder``: anything ``load_encoder`` reads (distill run dir, safetensors, official ``.pth``,
    Hugging Face directory); ``overrides`` go to the loader.
    """

    out_dir: str = "runs/probe"
    seed: int = 0
    encoder: str = ""
    overrides: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)  # read without augmentation
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    batch_size: int = 16  # clips per forward pass of the encoder
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Precision = "bf16"
    progress: bool = True

    def validate(self) -> None:
        check(bool(self.encoder), "config key 'encoder' is required (a run dir or weights file)")
        self.data.validate()
        self.overrides = model_overrides(self.overrides, "overrides")
        check(self.batch_size >= 1, f"config key 'batch_size' must be >= 1, got {self.batch_size}")
        self.probe.validate()


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


def run(cfg: ProbeConfig, resume: str | None = None) -> dict:
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


Config = ProbeConfig
