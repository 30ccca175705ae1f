"""Run a teacher whose patch differs from the student's on the student's token grid.

MaskAgain compares student and teacher token for token: both encode the same masked clip, and
the mask (B, N) must mean the same tubelets to both. A VideoMAE V2 ViT-g/14 teacher cuts a
224x224 frame into 16x16 patches of 14 pixels, a ViT-S/16 student into 14x14 patches of 16.

Choice: :func:`align_teacher` resizes the clip the teacher sees so that its token grid equals the
student's: every frame is resampled bilinearly (``align_corners=False``, no antialiasing) to
``student_grid * teacher_patch`` pixels (224 -> 196 for a patch-14 teacher under a patch-16
student), in the clip's own dtype. Token ``i`` then covers the same region of the scene for both
models, so one mask serves both, and frame indices agree. A VideoMAE-style teacher gets its fixed
sine-cosine position table recomputed for the new grid, exactly what the official code builds for
a model created at that input size (a table loaded from the checkpoint, e.g. a learned one, is
trilinearly interpolated instead); a V-JEPA 2 teacher needs nothing, its rotary positions come
from the grid.

Cost: the teacher sees (196/224)^2 = 77% of the pixels, bilinearly resampled, so fine detail at
its patch scale is softened, and it runs at an input size it was not pre-trained at (with an
unchanged temporal grid). In exchange the teacher's compute falls with its token count (1568
instead of 2048 tokens for 16x224x224), and no token-level interpolation or pooling of teacher
features or attention maps is needed: attention logits stay (N_vis, N_vis) over the same visible
tokens. The alternatives, resampling the student's input or mapping teacher tokens onto the
student grid, either change the student's training input or break the one-to-one pairing of
attention rows that the hidden-level losses rely on.

What cannot be aligned is refused by :func:`check_teacher_alignment` with a
:class:`TeacherAlignmentError`: a different tubelet (the temporal grids and frame indices would
differ), a clip length the teacher's tubelet does not divide, or a different channel count.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from maskagain.models.layers import sinusoid_table
from maskagain.models.vit import EncoderOutput, VideoViT

log = logging.getLogger(__name__)


class TeacherAlignmentError(ValueError):
    """A teacher's geometry cannot be put on the student's token grid."""


def check_teacher_alignment(student_cfg, teacher_cfg) -> None:
    """Raise :class:`TeacherAlignmentError` (one line) when the teacher cannot run on the student's
    token grid. Configs need ``patch_size``, ``tubelet_size``, ``num_frames``, ``in_chans``."""
    s, t = student_cfg, teacher_cfg
    if s.tubelet_size != t.tubelet_size:
        raise TeacherAlignmentError(
            f"the teacher's tubelet is {t.tubelet_size} frames and the student's {s.tubelet_size}: "
            "their temporal token grids differ, so one mask cannot serve both; use a teacher "
            f"with tubelet_size={s.tubelet_size}"
        )
    if s.num_frames % t.tubelet_size:
        raise TeacherAlignmentError(
            f"the student's {s.num_frames}-frame clips do not split into the teacher's "
            f"{t.tubelet_size}-frame tubelets; sample a multiple of {t.tubelet_size} frames"
        )
    if s.in_chans != t.in_chans:
        raise TeacherAlignmentError(
            f"the teacher reads {t.in_chans} channels and the student {s.in_chans}"
        )


def teacher_frame_size(frame_size: int, student_patch: int, teacher_patch: int) -> int:
    """Pixels per frame side the teacher sees so that its grid equals the student's
    (224, 16, 14 -> 196). ``frame_size`` must be a multiple of ``student_patch``."""
    if frame_size % student_patch:
        raise TeacherAlignmentError(
            f"frame size {frame_size} is not a multiple of the student's patch {student_patch}"
        )
    return frame_size // student_patch * teacher_patch


def resize_frames(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, T, height, width): bilinear per frame, in the clip's dtype."""
    b, c, t, h, w = video.shape
    if (h, w) == (height, width):
        return video
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    frames = frames.to(video.dtype).reshape(b, t, c, height, width)
    return frames.permute(0, 2, 1, 3, 4)


class AlignedTeacher(nn.Module):
    """A teacher run on the student's token grid: ``forward_features(video, mask, attn_layers)``
    takes the student's clip and mask and returns the teacher's
    :class:`~maskagain.models.vit.EncoderOutput` over the same tokens.

    ``cfg`` is the teacher's config at the aligned input size; ``depth`` its block count. The
    wrapper shares the teacher's parameters; to save or export the teacher, pass the original
    module (or ``.encoder``), not the wrapper, whose keys carry an ``encoder.`` prefix.
    """

    def __init__(self, teacher: nn.Module, student_cfg) -> None:
        super().__init__()
        check_teacher_alignment(student_cfg, teacher.cfg)
        self.student_patch = student_cfg.patch_size
        self.teacher_patch = teacher.cfg.patch_size
        size = teacher_frame_size(student_cfg.img_size, self.student_patch, self.teacher_patch)
        self.encoder = _on_input_size(teacher, size, student_cfg.num_frames)
        self.cfg = self.encoder.cfg
        log.info(
            "teacher (patch %d) runs on %dx%d frames: the student's %dx%d token grid (patch %d)",
            self.teacher_patch,
            size,
            size,
            size // self.teacher_patch,
            size // self.teacher_patch,
            self.student_patch,
        )

    @property
    def depth(self) -> int:
        return self.encoder.depth

    def token_grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid of a student-sized clip (B, C, T, H, W), the same for both models."""
        *lead, h, w = video_shape
        if h % self.student_patch or w % self.student_patch:
            raise ValueError(
                f"H={h}, W={w} are not divisible by the student's patch {self.student_patch}"
            )
        return self.encoder.token_grid((*lead, *self._teacher_hw(h, w)))

    def _teacher_hw(self, h: int, w: int) -> tuple[int, int]:
        return (
            h // self.student_patch * self.teacher_patch,
            w // self.student_patch * self.teacher_patch,
        )

    def forward_features(
        self,
        video: torch.Tensor,
        mask: torch.Tensor | None = None,
        attn_layers: tuple[int, ...] | list[int] = (),
        visible: torch.Tensor | None = None,
        blocks: tuple[int, ...] | list[int] = (),
    ) -> EncoderOutput:
        """The teacher's features of the student-sized clip ``video`` (B, C, T, H, W) under the
        student's ``mask`` (B, N), True = hidden; ``attn_layers``, ``visible`` and ``blocks``
        mean what they mean to the teacher's own ``forward_features``."""
        self.token_grid(video.shape)  # checks the student-side divisibility
        video = resize_frames(video, *self._teacher_hw(*video.shape[-2:]))
        return self.encoder.forward_features(
            video, mask, attn_layers, visible=visible, blocks=blocks
        )

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.forward_head(self.forward_features(video, mask).tokens)


def _on_input_size(teacher: nn.Module, size: int, num_frames: int) -> nn.Module:
    """A view of ``teacher`` configured for ``size`` x ``size`` frames: the same parameter
    objects, its own config and (for a VideoViT) its own position table."""
    cfg = dataclasses.replace(teacher.cfg, img_size=size, num_frames=num_frames)
    if not isinstance(teacher, VideoViT):
        view = copy.copy(teacher)  # rotary positions: nothing to recompute
        view.cfg = cfg
        return view
    view = copy.copy(teacher)
    view._buffers = dict(teacher._buffers)
    view._pos_cache = {}
    view.cfg = cfg
    n = math.prod(cfg.grid)
    fixed = sinusoid_table(math.prod(teacher.cfg.grid), cfg.embed_dim)
    if torch.equal(teacher.pos_embed.cpu(), fixed):
        table = sinusoid_table(n, cfg.embed_dim)  # what the official model builds at this size
    else:
        table = teacher.position_table(cfg.grid).detach().cpu()  # a stored table: interpolate
    view.pos_embed = table.to(teacher.pos_embed.device)
    return view


def align_teacher(teacher: nn.Module, student_cfg) -> nn.Module:
    """``teacher`` ready to run on the student's token grid (module docstring: choice and cost).

    Returns ``teacher`` itself when the patches already match, else an :class:`AlignedTeacher`
    sharing the teacher's parameters. Raises :class:`TeacherAlignmentError` for what cannot be
    aligned (tubelet, frame count, channels).
    """
    check_teacher_alignment(student_cfg, teacher.cfg)
    if teacher.cfg.patch_size == student_cfg.patch_size:
        return teacher
    aligned = AlignedTeacher(teacher, student_cfg)
    aligned.train(teacher.training)
    return aligned
