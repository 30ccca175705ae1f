"""Recipe: MaskAgain distillation (``maskagain distill``).

The teacher (any checkpoint ``maskagain.models.load_encoder`` reads) is frozen where it is
built: eval mode, ``requires_grad=False``, run under ``torch.inference_mode()`` and its own
autocast, never wrapped in DDP and never checkpointed. What trains is one module,
:class:`DistillModule` (the student and the objective's projections); it is what the engine
wraps in DDP, checkpoints and finally exports as ``student.safetensors``. No decoder.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from maskagain.config import ConfigError, DistillConfig, check_teacher
from maskagain.engine.run import (
    build_masked_trainer,
    finish_run,
    fit_and_summarize,
    open_dataset,
    resolve_resume,
    start_run,
)
from maskagain.engine.trainer import DTYPES
from maskagain.losses import MaskAgainObjective
from maskagain.models.loading import CheckpointError, load_encoder, save_encoder
from maskagain.models.vit import EncoderOutput, VideoViT

log = logging.getLogger(__name__)


class FrozenTeacher:
    """A frozen encoder called as ``teacher(video, mask) -> EncoderOutput`` (inference tensors).

    Deliberately not an ``nn.Module`` attribute of anything that trains, so DDP, the optimizer
    and the checkpoints never see it.
    """

    def __init__(
        self,
        encoder: VideoViT,
        attn_layers: tuple[int, ...],
        precision: str,
        compile: bool = False,
    ) -> None:
        self.encoder = encoder.eval().requires_grad_(False)
        self.attn_layers = attn_layers
        self.dtype = DTYPES[precision]
        self.device_type = next(encoder.parameters()).device.type
        forward = encoder.forward_features
        self._forward = torch.compile(forward) if compile else forward

    def __call__(self, video: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        amp = torch.autocast(
            self.device_type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with torch.inference_mode(), amp:
            return self._forward(video, mask, self.attn_layers)


class DistillModule(nn.Module):
    """Everything that trains: ``student`` and ``objective`` (its projections).

    ``forward(video, mask, teacher_out)`` runs the student on the visible tokens and returns
    the objective's dict of named terms with the weighted total under ``"loss"``.
    """

    def __init__(self, student: VideoViT, objective: MaskAgainObjective) -> None:
        super().__init__()
        self.student = student
        self.objective = objective
        # Distillation compares block outputs before the final norm: the norm gets no gradient
        # here. Freezing it keeps DDP's reducer consistent and leaves it at its initial values.
        student.norm.requires_grad_(False)

    def forward(
        self, video: torch.Tensor, mask: torch.Tensor, teacher_out: EncoderOutput
    ) -> dict[str, torch.Tensor]:
        out = self.student.forward_features(video, mask, self.objective.attn_layers_student)
        return self.objective(out, teacher_out)


def build_teacher(cfg: DistillConfig, device: torch.device) -> VideoViT:
    """Load the teacher encoder and check it against the student's geometry."""
    if not cfg.teacher.source:
        raise ConfigError(
            "config key 'teacher.source' is empty; give a teacher checkpoint or run dir"
        )
    try:
        teacher = load_encoder(cfg.teacher.source, **cfg.teacher.overrides)
    except CheckpointError as err:
        raise CheckpointError(f"config key 'teacher.source': {err}") from None
    check_teacher(cfg.student.model_config("student"), teacher.cfg)
    return teacher.to(device)


def build_distill_module(cfg: DistillConfig, teacher: VideoViT) -> DistillModule:
    """Fresh student (``cfg.student``) and objective sized for this student/teacher pair."""
    student = VideoViT(cfg.student.model_config("student"))
    objective = MaskAgainObjective.from_models(cfg.objective, student, teacher)
    return DistillModule(student, objective)


def make_distill_step(teacher: FrozenTeacher):
    """The step function: teacher forward (inference mode), then student + objective."""

    def distill_step(module: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        video, mask = batch["video"], batch["mask"]
        return module(video, mask, teacher(video, mask))

    return distill_step


def run_distill(cfg: DistillConfig, resume: str | None = None) -> dict:
    """Distil, checkpoint and export; returns the summary written to ``summary.json``."""
    t0 = time.time()
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.engine.device)
    try:
        dataset = open_dataset(cfg.data, "train", "pretrain")  # list files only: fails fast
        teacher_model = build_teacher(cfg, dist.device)
        module = build_distill_module(cfg, teacher_model).to(dist.device)
        teacher = FrozenTeacher(
            teacher_model,
            module.objective.attn_layers_teacher,
            cfg.teacher.precision,
            compile=cfg.engine.compile,
        )
        trainer, bad_files = build_masked_trainer(
            cfg,
            dist,
            run_dir,
            module,
            make_distill_step(teacher),
            dataset,
            module.student.cfg.grid,
            "distill",
        )
        ckpt = resolve_resume(resume, run_dir)
        if ckpt is not None:
            trainer.resume(ckpt)
        extra = {"teacher": cfg.teacher.source, "data": bad_files.summary}
        summary = fit_and_summarize(trainer, "distill", extra, t0)
        if dist.is_main and summary["completed"]:
            meta = {"recipe": "distill", "step": trainer.state.step, "teacher": cfg.teacher.source}
            save_encoder(module.student, run_dir / "student.safetensors", meta)
        return summary
    finally:
        finish_run()
