"""Recipe: VideoMAE pre-training of a teacher (``maskagain pretrain``).

Encoder on the visible tokens of a tube-masked clip, decoder on all tokens, MSE to per-patch
normalised pixels of the hidden tokens. The run ends with ``teacher.safetensors`` (the encoder
alone, loadable by ``maskagain.models.load_encoder``) next to the training checkpoints.
"""

from __future__ import annotations

import logging
import time

from torch import nn

from maskagain.engine.run import finish_run, fit_and_summarize, resolve_resume, start_run
from maskagain.models.loading import save_encoder
from maskagain.models.pretrain import VideoMAEPretrain
from maskagain.recipes.configs import PretrainConfig
from maskagain.recipes.sources import open_masked_train_set
from maskagain.recipes.training import build_masked_trainer

log = logging.getLogger(__name__)


def build_pretrain_model(cfg: PretrainConfig) -> VideoMAEPretrain:
    """Encoder (``cfg.model``, initialised by ``model.init``) + VideoMAE decoder
    (``cfg.decoder``), freshly initialised; the pixel targets undo the clip's normalisation
    (``data.mean`` / ``data.std``) before the per-patch normalisation, as VideoMAE does."""
    encoder = cfg.model.build("model")
    dim, heads = cfg.decoder.resolved(encoder.cfg.embed_dim)
    return VideoMAEPretrain(
        encoder,
        dim,
        cfg.decoder.depth,
        heads,
        cfg.decoder.norm_pix_loss,
        mean=cfg.data.mean,
        std=cfg.data.std,
    )


def pretrain_step(module: nn.Module, batch: dict) -> dict:
    """One micro-batch: ``{"loss": pixel MSE on the hidden tokens}``."""
    return module(batch["video"], batch["mask"], visible=batch.get("visible"))


def run(cfg: PretrainConfig, resume: str | None = None) -> dict:
    """Train, checkpoint and export; returns the summary written to ``summary.json``."""
    t0 = time.time()
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.engine.device)
    try:
        dataset = open_masked_train_set(cfg.data, dist.device)  # list files only: fails fast
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
