"""The step benchmark's rows: the paper-shaped sizes and, for every row, the workload it
times (trained and frozen models, the loss of one step, its analytic FLOPs)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks import flops as fl
from maskagain.masking import visible_count
from maskagain.models import create_model, model_config
from maskagain.models.layers import Attention, AttentionTap, PatchEmbed3d

ROW_NAMES = (
    "maskagain_b_b",
    "maskagain_b_s",
    "videomae_b",
    "videomae_s",
    "mvd_b_s",
    "mvd_coteach_b_s",
    "amd_b_s",
    "videomae_b_official",
    "maskagain_b_b_official",
    "maskagain_g_b",
)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PAPER_BATCH = 64  # clips per GPU in the paper's recipes: the GPU default
# ViT-B / ViT-S VideoMAE decoders: width and heads (VideoMAE's pre-training configs)
VIDEOMAE_DECODER = {"vit_base": (384, 6), "vit_small": (192, 3)}


@dataclass(frozen=True)
class Size:
    """Models and clip of a benchmark size."""

    base: str
    small: str
    frames: int
    img: int
    patch: int
    tubelet: int
    mask_ratio: float
    decoder: dict[str, tuple[int, int]]
    amd_teacher_ratio: float = 0.75  # AMD's teacher mask, below mask_ratio
    # MVD's image teacher (MAE ViT-B/16 at full size): ImageViTConfig fields
    image: tuple[tuple[str, int], ...] = (
        ("embed_dim", 768), ("depth", 12), ("num_heads", 12), ("patch_size", 16),
    )  # fmt: skip
    # a giant-geometry teacher (VideoMAE V2 ViT-g/14 at full size): ModelConfig fields
    giant: tuple[tuple[str, float], ...] = (
        ("embed_dim", 1408), ("depth", 40), ("num_heads", 16), ("mlp_ratio", 48 / 11),
        ("patch_size", 14),
    )  # fmt: skip

    def model_kwargs(self) -> dict:
        return dict(
            img_size=self.img,
            num_frames=self.frames,
            patch_size=self.patch,
            tubelet_size=self.tubelet,
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        g = self.img // self.patch
        return (self.frames // self.tubelet, g, g)

    @property
    def clip(self) -> fl.ClipShape:
        f, h, w = self.grid
        return fl.ClipShape(
            n_all=f * h * w,
            n_vis=visible_count("tube", self.grid, self.mask_ratio),
            frames=f,
            patch_dim=3 * self.tubelet * self.patch * self.patch,
        )


SIZES = {
    "full": Size("vit_base", "vit_small", 16, 224, 16, 2, 0.9, VIDEOMAE_DECODER),
    "tiny": Size(
        "vit_micro",
        "vit_nano",
        4,
        32,
        8,
        2,
        0.75,
        {"vit_micro": (64, 2), "vit_nano": (32, 2)},
        amd_teacher_ratio=0.5,
        image=(("embed_dim", 64), ("depth", 2), ("num_heads", 2), ("patch_size", 8)),
        giant=(
            ("embed_dim", 88),
            ("depth", 2),
            ("num_heads", 2),
            ("mlp_ratio", 48 / 11),
            ("patch_size", 4),
        ),
    ),  # fmt: skip
}


# ---------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """What one row trains: ``loss_fn(video, mask)`` -> scalar loss; ``trained`` holds the params."""

    trained: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    flops: fl.FlopCount
    official_step: bool = False  # non-fused AdamW, a grad norm and a loss .item() every step


def _spec(model: nn.Module, clip: fl.ClipShape) -> fl.EncoderSpec:
    """The FLOP count's view of ``model`` (its own patch: a giant teacher's may differ)."""
    c = model.cfg
    return fl.EncoderSpec(c.embed_dim, c.depth, c.mlp_ratio, 3 * c.tubelet_size * c.patch_size**2)


def frozen_teacher(
    name: str, size: Size, device: torch.device, precision: str = "bf16"
) -> nn.Module:
    """A frozen teacher in eval mode, weights in ``precision`` (random weights: the cost does
    not depend on them)."""
    teacher = create_model(name, **size.model_kwargs()).to(device, DTYPES[precision]).eval()
    teacher.requires_grad_(False)
    return teacher


def giant_teacher(size: Size, device: torch.device) -> nn.Module:
    """A frozen teacher of the size's giant geometry (random weights), published at the
    student's clip, put on the student's token grid as the recipe does (another patch: the clip
    it sees is resized, e.g. 224 -> 196 px for patch 14 under patch 16)."""
    from maskagain.models.teacher import align_teacher
    from maskagain.models.vit import ModelConfig, VideoViT

    cfg = ModelConfig(**{**size.model_kwargs(), **dict(size.giant)})
    teacher = VideoViT(cfg).eval().requires_grad_(False)
    return align_teacher(teacher, model_config(size.base, **size.model_kwargs())).to(device)


def distill_workload(
    student_name: str,
    size: Size,
    device,
    kind: str,
    preset: str | None = None,
    giant: bool = False,
    coteach: bool = False,
    precision: str = "bf16",
) -> Workload:
    """The shipped distillation step (``maskagain.recipes.distill``) of ``objective.kind``
    ``kind``: the recipe's trained module (student, objective, pixel head where the method has
    one; the student's final norm frozen when nothing reads it), its frozen teacher wrapper
    (bf16 autocast under ``inference_mode``, on what the objective's ``teacher_query`` asks)
    and its step function. ``preset``: MaskAgain's loss weights; ``coteach``: MVD with its
    image teacher (the size's MAE geometry, frozen) and second decoder. Frozen models hold
    their weights in ``precision`` and run under its autocast."""
    from maskagain.models.image_vit import ImageViT, ImageViTConfig
    from maskagain.recipes.distill import (
        FrozenImageTeacher,
        FrozenTeacher,
        build_distill_module,
        make_distill_step,
    )

    cfg = bench_distill_config(student_name, size, kind, preset)
    if giant:
        teacher = giant_teacher(size, device)
    else:
        teacher = frozen_teacher(size.base, size, device, precision)
    image = None
    if coteach:
        cfg.mvd.image_weight = 1.0
        image = ImageViT(ImageViTConfig(**dict(size.image))).to(device)
    trained = build_distill_module(cfg, teacher, image).to(device)
    query = trained.objective.teacher_query
    image_teacher = None
    if image is not None:
        image_teacher = FrozenImageTeacher(image, trained.student.cfg, precision)
    step = make_distill_step(FrozenTeacher(teacher, query, precision), image_teacher)
    batch_of = _batch_maker(cfg, size, query.mask_ratio, device)

    def loss_fn(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # fp32 clip in: under autocast only the visible tubelets are cast down
        return step(trained, batch_of(video, mask))["loss"]

    t, s = _spec(teacher, size.clip), _spec(trained.student, size.clip)
    if kind == "maskagain":
        count = fl.maskagain_flops(t, s, size.clip, trained.objective.cfg.k, batch=1)
    elif kind == "mvd" and image is not None:
        c = image.cfg
        spec = fl.EncoderSpec(c.embed_dim, c.depth, c.mlp_ratio, 3 * c.patch_size**2)
        frame_tokens = size.grid[1] * size.grid[2]
        depth = cfg.mvd.decoder_depth
        count = fl.mvd_coteaching_flops(t, spec, s, size.clip, frame_tokens, s.dim, depth)
    elif kind == "mvd":
        count = fl.mvd_flops(t, s, size.clip, s.dim, cfg.mvd.decoder_depth)
    else:
        dec_dim, _ = cfg.pixel_decoder.resolved(s.dim)
        n_t = visible_count("tube", size.grid, cfg.amd.teacher_ratio)
        pairs, depth = len(trained.objective.pairs), cfg.amd.generator_depth
        count = fl.amd_flops(t, s, size.clip, n_t, pairs, depth, dec_dim, cfg.pixel_decoder.depth)
    return Workload(trained, loss_fn, count)


def bench_distill_config(student_name: str, size: Size, kind: str, preset: str | None):
    """The recipe config of a distillation row: the method's published objective settings
    (MaskAgain: ``preset``; MVD: 2-block decoder; AMD: its defaults with pixel weight 1 and the
    size's teacher ratio), no drop path, the student's own initialisation."""
    from maskagain.losses.config import AMDConfig, objective_preset
    from maskagain.recipes.configs import DistillConfig
    from maskagain.recipes.sections import ScratchModelSpec

    objective = objective_preset(preset) if preset else objective_preset("maskagain_b")
    objective.kind = kind
    objective.pixel_weight = 1.0 if kind == "amd" else 0.0
    student = ScratchModelSpec(name=student_name, drop_path_rate=0.0, **size.model_kwargs())
    return DistillConfig(
        student=student, objective=objective, amd=AMDConfig(teacher_ratio=size.amd_teacher_ratio)
    )


def _batch_maker(cfg, size: Size, teacher_ratio: float | None, device):
    """``(video, mask) -> batch`` for the step function. A teacher with a mask of its own
    (AMD) gets the recipe's collate masks (student at the size's ratio, teacher inside it),
    drawn once per batch size outside the timed steps; otherwise the given mask."""
    if teacher_ratio is None:
        return lambda video, mask: {"video": video, "mask": mask}
    from maskagain.data.collate import MaskCollator

    collate = MaskCollator("tube", size.mask_ratio, size.grid, 0, teacher_ratio=teacher_ratio)
    drawn: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def batch_of(video: torch.Tensor, mask: torch.Tensor) -> dict:
        b = video.shape[0]
        if b not in drawn:
            pairs = [collate.draw(collate.generator(i)) for i in range(b)]
            student, teacher = (torch.cat(m).to(device) for m in zip(*pairs))
            drawn[b] = student, teacher
        return {"video": video, "mask": drawn[b][0], "teacher_mask": drawn[b][1]}

    return batch_of


def official_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """The official VideoMAE attention: ``softmax((q * scale) @ k^T) @ v`` with the N x N
    matrix materialised, in whatever precision autocast gives each op (the products in bf16 /
    fp16, the softmax in fp32), its output and the low-precision copy kept for backward."""
    q, k, v = attn._qkv(x)  # each (B, heads, N, d_k)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
    return attn._out(weights @ v)


def _official_tapped(attn: Attention, x: torch.Tensor):
    """A tapped block as the official code computes it: the logits returned for the losses
    are the same product, the softmax kept for backward (no fp32 upcast, no fusion)."""
    q, k, v = attn._qkv(x)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
    out = attn._out(logits.softmax(dim=-1) @ v)
    return out, AttentionTap(logits=logits.float(), values=v)


def materialise_attention(module: nn.Module) -> int:
    """Make every attention block of ``module`` compute attention as the official VideoMAE
    code does (:func:`official_attention`) instead of fused SDPA, tapped blocks included. Same
    math and FLOPs; the softmax is kept for backward. Returns how many blocks changed."""
    blocks = [m for m in module.modules() if isinstance(m, Attention)]
    for attn in blocks:
        attn.forward = functools.partial(official_attention, attn)
        attn.forward_tapped = functools.partial(_official_tapped, attn)
    return len(blocks)


def _embed_all_then_drop(embed: PatchEmbed3d, x: torch.Tensor, ids: torch.Tensor):
    """The official encoders' embedding: every tubelet embedded, the hidden ones dropped after.
    x (B, C, T, H, W), ids (B, N_vis) -> (B, N_vis, D)."""
    tokens = embed(x)  # (B, N, D): all 1568 tubelets at the paper's shapes
    return tokens.gather(1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def embed_every_tubelet(module: nn.Module) -> int:
    """Make every video encoder in ``module`` embed all tubelets before dropping the hidden
    ones, as the official code does. Returns how many embeddings changed."""
    embeds = [m for m in module.modules() if isinstance(m, PatchEmbed3d)]
    for embed in embeds:
        embed.forward_visible = functools.partial(_embed_all_then_drop, embed)
    return len(embeds)


def official_maskagain_workload(size: Size, device, precision: str = "bf16") -> Workload:
    """MaskAgain B->B at the official code's costs: the fp32 teacher under ``no_grad`` (not
    inference mode, outside autocast), the N x N softmax materialised and kept in every block
    of both encoders, every tubelet embedded and then dropped, non-fused AdamW, and a gradient
    norm and a loss ``.item()`` every step. The objective and its FLOPs are ``maskagain_b_b``'s."""
    from maskagain.recipes.distill import FrozenTeacher, build_distill_module

    class NoGradTeacher(FrozenTeacher):
        @contextlib.contextmanager
        def running(self):
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                yield

    cfg = bench_distill_config(size.base, size, "maskagain", "maskagain_b")
    teacher = frozen_teacher(size.base, size, device, "fp32")
    trained = build_distill_module(cfg, teacher).to(device)
    for model in (teacher, trained):
        materialise_attention(model)
        embed_every_tubelet(model)
    frozen = NoGradTeacher(teacher, trained.objective.teacher_query, "fp32")

    def loss_fn(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = {"video": video, "mask": mask}
        return trained(video, mask, frozen(batch))["loss"]

    t, s = _spec(teacher, size.clip), _spec(trained.student, size.clip)
    count = fl.maskagain_flops(t, s, size.clip, trained.objective.cfg.k, batch=1)
    return Workload(trained, loss_fn, count, official_step=True)


def videomae_workload(name: str, size: Size, device, official: bool = False) -> Workload:
    from maskagain.models.pretrain import VideoMAEPretrain

    dec_dim, dec_heads = size.decoder[name]
    encoder = create_model(name, **size.model_kwargs())
    model = VideoMAEPretrain(encoder, dec_dim, 4, dec_heads).to(device)
    if official:
        materialise_attention(model)

    def loss_fn(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(video, mask)["loss"]

    count = fl.videomae_flops(_spec(model.encoder, size.clip), size.clip, dec_dim, 4)
    return Workload(model, loss_fn, count)


def build_workload(
    name: str, size: Size, device: torch.device, precision: str = "bf16"
) -> Workload:
    """The workload of row ``name``; frozen teachers in ``precision`` (the official row's in
    fp32, as that code runs it)."""
    distill = functools.partial(distill_workload, size=size, device=device, precision=precision)
    if name == "maskagain_b_b":
        return distill(size.base, kind="maskagain", preset="maskagain_b")
    if name == "maskagain_b_s":
        return distill(size.small, kind="maskagain", preset="k400_vit_s")
    if name == "videomae_b":
        return videomae_workload(size.base, size, device)
    if name == "videomae_s":
        return videomae_workload(size.small, size, device)
    if name == "mvd_b_s":
        return distill(size.small, kind="mvd")
    if name == "mvd_coteach_b_s":
        return distill(size.small, kind="mvd", coteach=True)
    if name == "amd_b_s":
        return distill(size.small, kind="amd")
    if name == "videomae_b_official":
        return videomae_workload(size.base, size, device, official=True)
    if name == "maskagain_b_b_official":
        return official_maskagain_workload(size, device, precision)
    if name == "maskagain_g_b":
        return distill(size.base, kind="maskagain", preset="maskagain_b", giant=True)
    raise ValueError(f"unknown row {name!r}; choose from {ROW_NAMES}")
