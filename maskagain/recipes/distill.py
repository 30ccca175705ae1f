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
from typing import Any

import torch
from torch import nn

from maskagain.config import ConfigError
from maskagain.engine.run import finish_run, fit_and_summarize, resolve_resume, start_run
from maskagain.engine.trainer import DTYPES
from maskagain.losses import MaskAgainObjective
from maskagain.models.loading import CheckpointError, load_encoder, save_encoder
from maskagain.models.teacher import TeacherAlignmentError, align_teacher, check_teacher_alignment
from maskagain.models.vit import EncoderOutput, ModelConfig, VideoViT
from maskagain.recipes.common import (
    build_masked_trainer,
    open_dataset,
)
from maskagain.recipes.configs import DistillConfig

log = logging.getLogger(__name__)


def check_teacher(student: ModelConfig, teacher: Any) -> None:
    """The teacher must run on the student's token grid, so that one mask means the same tubelets
    to both: same tubelet and channels (a different patch is aligned by resizing the teacher's
    input, see :func:`maskagain.models.teacher.align_teacher`). Raises a one-line ConfigError."""
    try:
        check_teacher_alignment(student, teacher)
    except TeacherAlignmentError as err:
        raise ConfigError(f"config key 'teacher.source': {err}") from None


class FrozenTeacher:
    """A frozen encoder called as ``teacher(video, mask) -> EncoderOutput`` (inference tensors),
    with weights cast to ``precision`` and run under that autocast.

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
        self.dtype = DTYPES[precision]
        # frozen weights are stored in the teacher's precision: a bf16 teacher needs no fp32
        # copy in memory (half the bytes; autocast would round them to bf16 for every matmul)
        self.encoder = encoder.eval().requires_grad_(False).to(self.dtype)
        self.attn_layers = attn_layers
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


def build_teacher(cfg: DistillConfig, device: torch.device) -> nn.Module:
    """Load the teacher encoder (any family ``load_encoder`` reads) and put it on the student's
    token grid: a teacher with another patch sees the clip resized (``align_teacher``), one
    pre-trained at another clip size runs with its positions resampled (said in the log)."""
    if not cfg.teacher.source:
        raise ConfigError(
            "config key 'teacher.source' is empty; give a teacher checkpoint or run dir"
        )
    try:
        teacher = load_encoder(cfg.teacher.source, **cfg.teacher.overrides)
    except CheckpointError as err:
        raise CheckpointError(f"config key 'teacher.source': {err}") from None
    student = cfg.student.model_config("student")
    check_teacher(student, teacher.cfg)
    t = teacher.cfg
    if (t.num_frames, t.img_size // t.patch_size) != (student.num_frames, student.grid[1]):
        log.warning(
            "the teacher was built for %d frames at %dpx (patch %d) and runs on the student's "
            "%d x %d x %d token grid (a position table is resampled; rotary positions follow the grid)",
            t.num_frames, t.img_size, t.patch_size, *student.grid,
        )  # fmt: skip
    return align_teacher(teacher, student).to(device)


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


def run(cfg: DistillConfig, resume: str | None = None) -> dict:
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


Config = DistillConfig
