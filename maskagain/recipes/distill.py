"""Recipe: masked video distillation (``maskagain distill``): MaskAgain, MVD or AMD.

``objective.kind`` picks the objective (:data:`OBJECTIVES`); each says what it needs from the
two encoders through its ``student_query`` / ``teacher_query``
(:class:`~maskagain.losses.query.EncoderQuery`): MaskAgain runs the teacher on the
student's mask with attention taps on one block, MVD on the whole clip, AMD on a lighter mask
of its own with the outputs of its aligned blocks. ``objective.pixel_weight > 0`` adds
VideoMAE's pixel reconstruction as a ``pixel`` term. MVD with ``mvd.image_weight > 0`` also
co-teaches from an image teacher (``image_teacher``, an MAE encoder), frozen like the video one.

The teacher (any checkpoint ``maskagain.models.load_encoder`` reads) is frozen where it is
built: eval mode, ``requires_grad=False``, run under ``torch.inference_mode()`` and its own
autocast, never wrapped in DDP and never checkpointed. What trains is one module,
:class:`DistillModule` (the student, the objective's projections / decoders / generators and
the pixel head); it is what the engine wraps in DDP, checkpoints and finally exports as
``student.safetensors`` (the student alone).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from maskagain.checkpoints import CheckpointError
from maskagain.config import ConfigError
from maskagain.engine.compiling import maybe_compile
from maskagain.engine.precision import resolve_precision
from maskagain.engine.run import finish_run, fit_and_summarize, resolve_resume, start_run
from maskagain.engine.trainer import DTYPES
from maskagain.losses.amd import AMDObjective
from maskagain.losses.mvd import MVDObjective, frame_tokens_to_clip, image_teacher_frames
from maskagain.losses.objective import MaskAgainObjective
from maskagain.losses.pixel import with_weighted_term
from maskagain.losses.query import EncoderQuery
from maskagain.models.image_vit import ImageViT, load_image_encoder
from maskagain.models.loading import load_encoder, save_encoder
from maskagain.models.pretrain import PixelReconstruction
from maskagain.models.teacher import TeacherAlignmentError, align_teacher, check_teacher_alignment
from maskagain.models.vit import EncoderOutput, ModelConfig, VideoViT
from maskagain.recipes.configs import DistillConfig
from maskagain.recipes.sources import open_masked_train_set
from maskagain.recipes.training import build_masked_trainer

log = logging.getLogger(__name__)


def check_teacher(student: ModelConfig, teacher: Any) -> None:
    """The teacher must run on the student's token grid, so that one mask means the same tubelets
    to both: same tubelet and channels (a different patch is aligned by resizing the teacher's
    input, see :func:`maskagain.models.teacher.align_teacher`). Raises a one-line ConfigError."""
    try:
        check_teacher_alignment(student, teacher)
    except TeacherAlignmentError as err:
        raise ConfigError(f"config key 'teacher.source': {err}") from None


class _Frozen:
    """An encoder frozen where it is built: eval mode, no gradients, weights stored in
    ``precision`` (a bf16 teacher needs no fp32 copy in memory: half the bytes, and autocast
    would round them to bf16 for every matmul); :meth:`running` is inference mode under that
    autocast."""

    def __init__(self, encoder: nn.Module, precision: str) -> None:
        device = next(encoder.parameters()).device
        self.dtype = DTYPES[resolve_precision(precision, device)[0]]
        self.encoder = encoder.eval().requires_grad_(False).to(self.dtype)
        self.device_type = next(encoder.parameters()).device.type

    @contextlib.contextmanager
    def running(self):
        amp = torch.autocast(
            self.device_type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with torch.inference_mode(), amp:
            yield


class FrozenTeacher(_Frozen):
    """A frozen encoder called as ``teacher(batch) -> EncoderOutput`` (inference tensors): it
    runs on what the objective's ``teacher_query`` asks (the student's mask, no mask, or its own
    mask from the batch; block outputs and attention taps only where a loss reads them), with
    weights cast to ``precision`` and run under that autocast.

    Deliberately not an ``nn.Module`` attribute of anything that trains, so DDP, the optimizer
    and the checkpoints never see it.
    """

    def __init__(
        self,
        encoder: VideoViT,
        query: EncoderQuery,
        precision: str,
        compile: bool = False,
    ) -> None:
        query.check(encoder, "the teacher")
        super().__init__(encoder, precision)
        self.query = query
        forward = functools.partial(query.run, self.encoder)
        if compile:
            device = next(self.encoder.parameters()).device
            forward = maybe_compile(forward, device, "the teacher")
        self._forward = forward

    def __call__(self, batch: dict) -> EncoderOutput:
        """batch: ``"video"`` (B, C, T, H, W) and the masks (B, N) the query names."""
        with self.running():
            return self._forward(
                batch["video"], self.query.mask_of(batch), self.query.visible_of(batch)
            )


class FrozenImageTeacher(_Frozen):
    """MVD's frozen image teacher: ``teacher(batch) -> (B, N, D_img)``, its last-block tokens of
    the first frame of every tubelet (``image_teacher_frames``), laid out as the clip's tokens
    (``frame_tokens_to_clip``); frames are resized first when its patch is not the student's, so
    that both see the same patch grid. Inference tensors, weights in ``precision``; like
    :class:`FrozenTeacher`, never part of what trains."""

    def __init__(self, encoder: ImageViT, student: ModelConfig, precision: str) -> None:
        super().__init__(encoder, precision)
        self.tubelet = student.tubelet_size
        _, gh, gw = student.grid
        p = encoder.cfg.patch_size
        self.size = None if p == student.patch_size else (gh * p, gw * p)

    def __call__(self, batch: dict) -> torch.Tensor:
        video = batch["video"]
        frames = image_teacher_frames(video, self.tubelet)  # (B * F, C, H, W)
        with self.running():
            if self.size is not None:
                frames = nn.functional.interpolate(
                    frames, size=self.size, mode="bilinear", antialias=True, align_corners=False
                )
            return frame_tokens_to_clip(self.encoder(frames), video.shape[0])


class DistillModule(nn.Module):
    """Everything that trains: ``student``, ``objective`` (its projections, decoders,
    generators) and, with a pixel weight, ``pixel_head`` (VideoMAE's pixel decoder).

    ``forward(video, mask, teacher_out[, image_tokens])`` runs the student on the visible tokens
    of ``mask`` as the objective's ``student_query`` asks and returns the objective's dict of
    named terms (plus ``"pixel"``) with the weighted total under ``"loss"``; ``image_tokens``:
    MVD's image-teacher features (B, N, D_img) when it co-teaches.
    """

    def __init__(
        self,
        student: VideoViT,
        objective: nn.Module,
        pixel_head: PixelReconstruction | None = None,
        pixel_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if (pixel_head is None) != (pixel_weight == 0):
            raise ValueError("give a pixel head together with a pixel weight > 0 (or neither)")
        self.student = student
        self.objective = objective
        self.pixel_head = pixel_head
        self.pixel_weight = pixel_weight
        self.student_query: EncoderQuery = objective.student_query
        self.student_query.check(student, "the student")
        if pixel_head is None:
            # Distillation compares block outputs before the final norm: the norm gets no
            # gradient. Freezing it keeps DDP's reducer consistent and leaves it at its initial
            # values. The pixel head reads the normed tokens, so then it trains.
            student.norm.requires_grad_(False)

    def forward(
        self,
        video: torch.Tensor,
        mask: torch.Tensor,
        teacher_out: EncoderOutput,
        image_tokens: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """video (B, C, T, H, W), mask (B, N) True = hidden (``visible``: its (B, N_vis)
        visible indices, optional) -> named scalar losses."""
        out = self.student_query.run(self.student, video, mask, visible)
        extra = () if image_tokens is None else (image_tokens,)
        losses = self.objective(out, teacher_out, *extra)
        if self.pixel_head is not None:
            pixel = self.pixel_head(self.student.norm(out.tokens), mask, video)
            losses = with_weighted_term(losses, "pixel", pixel, self.pixel_weight)
        return losses


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
    num_classes = getattr(teacher, "num_classes", 0)
    if num_classes:
        log.warning(
            "teacher.source %s is a fine-tuned classifier (%d classes): its head goes unused and "
            "its encoder teaches; a pre-trained (not fine-tuned) checkpoint is the usual teacher",
            cfg.teacher.source, num_classes,
        )  # fmt: skip
    student = cfg.student.model_config("student")
    check_teacher(student, teacher.cfg)
    t = teacher.cfg
    if (t.num_frames, t.img_size // t.patch_size) != (student.num_frames, student.grid[1]):
        log.warning(
            "the teacher was built for %d frames at %dpx (patch %d) and runs on the student's "
            "%d x %d x %d token grid (a position table is resampled; rotary positions follow the grid)",
            t.num_frames, t.img_size, t.patch_size, *student.grid,
        )  # fmt: skip
    return to_device_in(align_teacher(teacher, student), cfg.teacher.precision, device)


def build_image_teacher(cfg: DistillConfig, device: torch.device) -> ImageViT | None:
    """MVD's image teacher (``image_teacher.source``), or None when the run has none."""
    if not cfg.image_teacher.source:
        return None
    try:
        encoder = load_image_encoder(cfg.image_teacher.source, **cfg.image_teacher.overrides)
    except CheckpointError as err:
        raise CheckpointError(f"config key 'image_teacher.source': {err}") from None
    channels = cfg.student.model_config("student").in_chans
    if encoder.cfg.in_chans != channels:
        raise ConfigError(
            f"config key 'image_teacher.source': the image teacher takes {encoder.cfg.in_chans} "
            f"input channels, the student's clips have {channels}"
        )
    return to_device_in(encoder, cfg.image_teacher.precision, device)


def to_device_in(encoder: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``encoder`` cast to its teacher ``precision`` first, then moved to ``device`` (a bf16
    ViT-g never holds its fp32 copy on the GPU: 4 GB less at the peak)."""
    dtype = DTYPES[resolve_precision(precision, device)[0]]
    return encoder.to(dtype).to(device)


# objective.kind -> the objective sized for a (config, student, teacher, image-teacher width)
OBJECTIVES: dict[str, Callable[[DistillConfig, VideoViT, VideoViT, int | None], nn.Module]] = {
    "maskagain": lambda cfg, s, t, _: MaskAgainObjective.from_models(cfg.objective, s, t),
    "mvd": lambda cfg, s, t, image_dim: MVDObjective.from_models(cfg.mvd, s, t, image_dim),
    "amd": lambda cfg, s, t, _: AMDObjective.from_models(cfg.amd, s, t),
}


def build_distill_module(
    cfg: DistillConfig, teacher: VideoViT, image_teacher: ImageViT | None = None
) -> DistillModule:
    """Fresh student (``cfg.student``, initialised by ``student.init``), the objective of
    ``objective.kind`` sized for this student/teacher pair (and MVD's image teacher), and the
    pixel head when ``objective.pixel_weight > 0``."""
    student = cfg.student.build("student")
    image_dim = image_teacher.cfg.embed_dim if image_teacher is not None else None
    objective = OBJECTIVES[cfg.objective.kind](cfg, student, teacher, image_dim)
    if hasattr(objective, "tube_masks"):  # frame layout known from the mask kind
        objective.tube_masks = cfg.mask.kind == "tube"
    head, weight = None, cfg.objective.pixel_weight
    if weight > 0:
        dim, heads = cfg.pixel_decoder.resolved(student.cfg.embed_dim)
        head = PixelReconstruction.for_encoder(
            student,
            dim,
            cfg.pixel_decoder.depth,
            heads,
            cfg.pixel_decoder.norm_pix_loss,
            mean=cfg.data.mean,
            std=cfg.data.std,
        )
    return DistillModule(student, objective, head, weight)


def make_distill_step(teacher: FrozenTeacher, image_teacher: FrozenImageTeacher | None = None):
    """The step function: teacher forward(s) (inference mode), then student + objective."""

    def distill_step(module: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        image = image_teacher(batch) if image_teacher is not None else None
        visible = batch.get("visible")
        return module(batch["video"], batch["mask"], teacher(batch), image, visible=visible)

    return distill_step


def run(cfg: DistillConfig, resume: str | None = None) -> dict:
    """Distil, checkpoint and export; returns the summary written to ``summary.json``."""
    t0 = time.time()
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.engine.device)
    try:
        dataset = open_masked_train_set(cfg.data, dist.device)  # list files only: fails fast
        teacher_model = build_teacher(cfg, dist.device)
        image_model = build_image_teacher(cfg, dist.device)
        module = build_distill_module(cfg, teacher_model, image_model).to(dist.device)
        query = module.objective.teacher_query
        teacher = FrozenTeacher(
            teacher_model, query, cfg.teacher.precision, compile=cfg.engine.compile
        )
        image_teacher = None
        if image_model is not None:
            image_teacher = FrozenImageTeacher(
                image_model, module.student.cfg, cfg.image_teacher.precision
            )
        grid = module.student.cfg.grid
        # an objective whose teacher has a mask of its own (AMD) gets it drawn with the student's
        trainer, bad_files = build_masked_trainer(
            cfg, dist, run_dir, module, make_distill_step(teacher, image_teacher), dataset, grid, "distill",
            teacher_mask_ratio=query.mask_ratio,
        )  # fmt: skip
        ckpt = resolve_resume(resume, run_dir)
        if ckpt is not None:
            trainer.resume(ckpt)
        extra = {
            "teacher": cfg.teacher.source,
            "image_teacher": cfg.image_teacher.source or None,
            "objective": cfg.objective.kind,
            "data": bad_files.summary,
        }
        summary = fit_and_summarize(trainer, "distill", extra, t0)
        if dist.is_main and summary["completed"]:
            meta = {
                "recipe": "distill",
                "objective": cfg.objective.kind,
                "step": trainer.state.step,
                "teacher": cfg.teacher.source,
            }
            save_encoder(module.student, run_dir / "student.safetensors", meta)
        return summary
    finally:
        finish_run()
