"""Recipe: VideoMAE pre-training of a teacher (``maskagain pretrain``).

Encoder on the visible tokens of a tube-masked clip, decoder on all tokens, MSE to per-patch
normalised pixels of the hidden tokens. The run ends with ``teacher.safetensors`` (the encoder
alone, loadable by ``maskagain.models.load_encoder``) next to the training checkpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from torch import nn

from maskagain.config import check
from maskagain.data import DataConfig
from maskagain.engine.config import EngineConfig, OptimConfig, ScheduleConfig
from maskagain.engine.run import finish_run, fit_and_summarize, resolve_resume, start_run
from maskagain.models.loading import save_encoder
from maskagain.models.pretrain import VideoMAEPretrain
from maskagain.models.vit import VideoViT
from maskagain.recipes.common import (
    MaskSpec,
    ModelSpec,
    build_masked_trainer,
    check_data_matches_model,
    open_dataset,
)

log = logging.getLogger(__name__)


@dataclass
class DecoderSpec:
    """VideoMAE pre-training decoder; null width/heads follow VideoMAE (encoder width / 2, /64)."""

    depth: int = 4
    embed_dim: int | None = None
    num_heads: int | None = None
    norm_pix_loss: bool = True

    def resolved(self, encoder_dim: int) -> tuple[int, int]:
        """(decoder width, decoder heads) for an encoder of width ``encoder_dim``."""
        dim = self.embed_dim or encoder_dim // 2
        heads = self.num_heads or max(1, dim // 64)
        return dim, heads

    def validate(self, encoder_dim: int, path: str = "decoder") -> None:
        check(self.depth >= 1, f"config key '{path}.depth' must be >= 1, got {self.depth}")
        for key in ("embed_dim", "num_heads"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"config key '{path}.{key}' must be >= 1 or null")
        dim, heads = self.resolved(encoder_dim)
        check(
            dim % heads == 0,
            f"config key '{path}.embed_dim'={dim} is not divisible by '{path}.num_heads'={heads}",
        )


@dataclass
class PretrainConfig:
    """``maskagain pretrain``: VideoMAE pre-training of a teacher."""

    out_dir: str = "runs/pretrain"
    seed: int = 0
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name="vit_base"))
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskSpec = field(default_factory=MaskSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=800))
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> None:
        self.data.validate()
        mcfg = self.model.model_config("model")
        check_data_matches_model(self.data, mcfg, "model")
        self.decoder.validate(mcfg.embed_dim)
        self.mask.validate()
        self.optim.validate()
        self.schedule.validate()
        self.engine.validate()


def build_pretrain_model(cfg: PretrainConfig) -> VideoMAEPretrain:
    """Encoder (``cfg.model``) + VideoMAE decoder (``cfg.decoder``), freshly initialised."""
    mcfg = cfg.model.model_config("model")
    dim, heads = cfg.decoder.resolved(mcfg.embed_dim)
    return VideoMAEPretrain(
        VideoViT(mcfg), dim, cfg.decoder.depth, heads, cfg.decoder.norm_pix_loss
    )


def pretrain_step(module: nn.Module, batch: dict) -> dict:
    """One micro-batch: ``{"loss": pixel MSE on the hidden tokens}``."""
    return module(batch["video"], batch["mask"])


def run(cfg: PretrainConfig, resume: str | None = None) -> dict:
    """Train, checkpoint and export; returns the summary written to ``summary.json``."""
    t0 = time.time()
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.engine.device)
    try:
        dataset = open_dataset(cfg.data, "train", "pretrain")  # list files only: fails fast
        model = build_pretrain_model(cfg).to(dist.device)
        trainer, bad_files = build_masked_trainer(
            cfg, dist, run_dir, model, pretrain_step, dataset, model.encoder.cfg.grid, "pretrain"
        )
        ckpt = resolve_resume(resume, run_dir)
        if ckpt is not None:
            trainer.resume(ckpt)
        extra = {"data": bad_files.summary}  # counted when the run ends
        summary = fit_and_summarize(trainer, "pretrain", extra, t0)
        if dist.is_main and summary["completed"]:
            meta = {"recipe": "pretrain", "step": trainer.state.step}
            save_encoder(model.encoder, run_dir / "teacher.safetensors", meta)
        return summary
    finally:
        finish_run()


Config = PretrainConfig
