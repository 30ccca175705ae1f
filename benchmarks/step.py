"""Training-step benchmark: MaskAgain distillation against VideoMAE pre-training and MVD and AMD
distillation.

    python -m benchmarks.step --device cpu --batch 2 --json out.json [--markdown benchmarks/RESULTS.md]

Every row times a full training step (forward, backward, fused AdamW) at the paper's shapes
(16 x 224 x 224, tubelet 2, patch 16, tube mask 90%) in a fresh subprocess, so that its peak RSS
is its own. The trained model runs under bf16 autocast; a distillation teacher is frozen, cast
to bf16 and runs under ``torch.inference_mode``. In the same run the machine's matmul FLOP/s is
measured (bf16 and fp32) at the GEMM shapes of the steps' linear layers, and every row reports
its achieved FLOP/s (analytic FLOPs per clip, see ``benchmarks.flops``, over the median seconds
per clip) as a fraction of the bf16 matmul rate.

Rows: ``maskagain_b_b``, ``maskagain_b_s`` (ViT-B teacher -> ViT-B / ViT-S student, all four
losses), ``videomae_b``, ``videomae_s`` (4-block pixel decoder), ``mvd_b_s`` (ViT-B teacher on
all tokens -> ViT-S student + 2-block feature decoder), ``mvd_coteach_b_s`` (the same plus MVD's
published image teacher: an MAE ViT-B/16 on the first frame of every tubelet, random weights in
bf16, and a second feature decoder), ``amd_b_s`` (ViT-B teacher on a 75% tube
mask -> ViT-S student on a 90% one inside it, projections and 2-block generators on the middle
and last blocks, 4-block pixel decoder), and ``videomae_b_official``: VideoMAE
ViT-B with attention computed as the official VideoMAE code does (the N x N softmax materialised
and kept for backward) instead of fused SDPA, i.e. the VideoMAE step users run today. Same
FLOPs as ``videomae_b``. ``maskagain_g_b``: a teacher of VideoMAE V2 ViT-g/14's geometry (1408
wide, 40 blocks, patch 14; random weights, bf16 under ``inference_mode`` as the recipe runs it,
its clip resized to 196 px so its grid is the student's) into a ViT-B student; its FLOP parts
give the teacher's share of the step. ``--size tiny`` swaps in tiny models and clips for the
test suite.

Memory, two measures per row: ``peak_memory_mb`` is the peak RSS of the row's process on CPU
(it includes the ~0.5 GB torch runtime and what the allocator keeps after frees) or
``torch.cuda.max_memory_allocated`` on GPU; ``allocated_peak_mb`` is the peak of bytes in use,
the CPU analogue of ``max_memory_allocated`` (glibc ``mallinfo2``, sampled every 0.5 ms during
one extra, untimed step; on GPU the same as ``peak_memory_mb``), and
``allocated_between_steps_mb`` what stays in use after that step (weights, AdamW state, frozen
teacher, the batch): the peak minus it is the step's working memory.

On CPU the rows run with freed memory kept for reuse, as training does
(``maskagain.engine.allocator``; ``--malloc default`` for glibc's own settings).
On a CPU shared with other jobs, ``--threads 1 --rounds 2`` gives repeatable numbers: with
several threads an OpenMP region stalls whenever one of its threads is preempted. ``--profile
FILE --only ROW`` writes a torch.profiler table of one step instead of timing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import flops as fl
from maskagain.engine.allocator import keep_freed_memory
from maskagain.engine.precision import resolve_precision
from maskagain.masking import tube_mask, visible_count
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
ROW_FIELDS = (
    "name",
    "batch",
    "seconds_per_clip",
    "seconds_per_clip_min",
    "seconds_per_clip_max",
    "seconds_per_clip_iqr",
    "step_seconds",
    "peak_memory_mb",
    "memory_kind",
    "setup_memory_mb",
    "allocated_peak_mb",
    "allocated_kind",
    "allocated_between_steps_mb",
    "flops_per_clip",
    "flops_parts",
    "achieved_flops",
    "fraction_of_matmul",
    "trained_params",
    "loss",
    "matmul_flops_in_process",
    "precision",
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
    from maskagain.recipes.configs import DistillConfig, ScratchModelSpec

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


# ---------------------------------------------------------------------- timing
def make_optimizer(module: nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW as in the paper's recipe (betas 0.9/0.95, wd 0.05), fused kernel (or PyTorch's
    default multi-tensor one, as the official code's ``create_optimizer`` gets)."""
    params = [p for p in module.parameters() if p.requires_grad]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, **kwargs)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def train_step(
    w: Workload, opt: torch.optim.Optimizer, video, mask, device, precision: str = "bf16"
) -> torch.Tensor:
    """One step: forward under ``precision``'s autocast, backward, AdamW. Returns the detached
    loss. An official step also takes the gradient norm and the loss to the host, as the
    official loop does every step."""
    with _autocast(device, precision):
        loss = w.loss_fn(video, mask)
    loss.backward()
    if w.official_step:
        grads = [p.grad.detach() for p in w.trained.parameters() if p.grad is not None]
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        loss.item()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024, "rss"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )
    ]


def _glibc_in_use() -> Callable[[], int] | None:
    """``() -> bytes in use`` from glibc's ``mallinfo2`` (heap + mmapped chunks), or None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def in_use() -> int:
        info = fn()
        return info.uordblks + info.hblkhd

    return in_use


class AllocatedPeak:
    """Peak bytes in use while the block runs: ``torch.cuda.max_memory_allocated`` on GPU, else
    glibc's in-use bytes sampled every ``interval`` seconds by a thread (``peak_mb`` is None
    where glibc's ``mallinfo2`` is missing)."""

    def __init__(self, device: torch.device, interval: float = 5e-4) -> None:
        self.device = device
        self.interval = interval
        self.peak_mb: float | None = None
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "malloc_in_use"
        self._in_use = None if device.type == "cuda" else _glibc_in_use()
        self._stop = threading.Event()
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._in_use())
            time.sleep(self.interval)

    def __enter__(self) -> AllocatedPeak:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._in_use is not None:
            self._peak = self._in_use()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._in_use is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._peak, self._in_use()) / 2**20

    def now_mb(self) -> float | None:
        """Bytes in use right now (what is held between steps when called after one)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return None if self._in_use is None else self._in_use() / 2**20


def profile_row(
    name: str, size: Size, batch: int, warmup: int, device, path: Path, precision: str = "bf16"
) -> None:
    """Profile one step of ``name`` after ``warmup`` steps; write the top ops to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    w = build_workload(name, size, device, precision)
    opt = make_optimizer(w.trained, fused=not w.official_step)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, 3, size.frames, size.img, size.img, generator=g).to(device)
    mask = tube_mask(batch, size.grid, size.mask_ratio, g).to(device)
    for _ in range(warmup):
        train_step(w, opt, video, mask, device, precision)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        train_step(w, opt, video, mask, device, precision)
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    shapes = prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=40)
    path.write_text(f"{name} batch {batch}\n\n{table}\n\nby input shape\n\n{shapes}\n")


def run_row(
    name: str, size: Size, batch: int, steps: int, warmup: int, device, precision: str = "bf16"
) -> dict:
    """Build ``name``, run ``warmup + steps`` steps in ``precision``, return the row (without
    the matmul fraction)."""
    # the matmul limit under this process's conditions, right before its steps
    matmul = {k: v["flops"] for k, v in measure_matmul(size, batch, device).items()}
    torch.manual_seed(0)
    w = build_workload(name, size, device, precision)
    opt = make_optimizer(w.trained, fused=not w.official_step)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, 3, size.frames, size.img, size.img, generator=g).to(device)
    masks = [tube_mask(batch, size.grid, size.mask_ratio, g).to(device) for _ in range(4)]
    setup_mb, _ = _peak_memory_mb(device)  # peak so far: models, inputs (AdamW state: step 1)
    times = []
    loss = torch.zeros(())
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = train_step(w, opt, video, masks[i % len(masks)], device, precision)
        _sync(device)
        times.append(time.perf_counter() - t0)
    timed = times[warmup:]
    per_clip = [t / batch for t in timed]
    q = statistics.quantiles(per_clip, n=4) if len(per_clip) > 1 else [per_clip[0]] * 3
    median = statistics.median(per_clip)
    peak, kind = _peak_memory_mb(device)
    with AllocatedPeak(device) as allocated:  # one more step, untimed: sampling costs time
        train_step(w, opt, video, masks[(warmup + steps) % len(masks)], device, precision)
        _sync(device)
    return {
        "name": name,
        "batch": batch,
        "seconds_per_clip": median,
        "seconds_per_clip_min": min(per_clip),
        "seconds_per_clip_max": max(per_clip),
        "seconds_per_clip_iqr": q[2] - q[0],
        "step_seconds": timed,
        "peak_memory_mb": peak,
        "memory_kind": kind,
        "setup_memory_mb": setup_mb,
        "allocated_peak_mb": allocated.peak_mb,
        "allocated_kind": allocated.kind,
        "allocated_between_steps_mb": allocated.now_mb(),
        "flops_per_clip": w.flops.total,
        "flops_parts": w.flops.parts,
        "achieved_flops": w.flops.total / median,
        "trained_params": sum(p.numel() for p in w.trained.parameters() if p.requires_grad),
        "loss": float(loss),
        "matmul_flops_in_process": matmul,
        "precision": precision,
    }


# ---------------------------------------------------------------------- matmul limit
def matmul_flops(
    shapes: list[tuple[int, int, int]], dtype: torch.dtype, device, reps: int = 10
) -> dict:
    """FLOP/s of ``F.linear`` at every (m, k, n) and over the whole set (total FLOPs / time)."""
    per_shape, total_flops, total_time = [], 0.0, 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(n, k, device=device).to(dtype)
        for _ in range(2):
            F.linear(a, b)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            F.linear(a, b)
        _sync(device)
        elapsed = (time.perf_counter() - t0) / reps
        work = 2.0 * m * k * n
        per_shape.append({"m": m, "k": k, "n": n, "flops": work / elapsed})
        total_flops += work
        total_time += elapsed
    return {"flops": total_flops / total_time, "shapes": per_shape}


def measure_matmul(size: Size, batch: int, device) -> dict:
    """bf16 and fp32 matmul FLOP/s at the base encoder's linear-layer GEMM shapes."""
    arch = model_config(size.base, **size.model_kwargs())
    m = batch * size.clip.n_vis
    shapes = fl.linear_gemm_shapes(m, arch.embed_dim, int(arch.embed_dim * arch.mlp_ratio))
    out = {}
    for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        out[label] = matmul_flops(shapes, dtype, device)
    return out


# ---------------------------------------------------------------------- orchestration
def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class RowOutOfMemory(RuntimeError):
    """A row's step did not fit in the device's memory at this batch."""


def run_child(name: str, args: argparse.Namespace, batch: int) -> dict:
    """Run one row in a fresh interpreter so that its peak RSS is its own."""
    cmd = [sys.executable, "-m", "benchmarks.step", "--child", name]
    cmd += ["--size", args.size, "--batch", str(batch), "--device", args.device]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--precision", args.precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--malloc", args.malloc]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_repo_root())
    for line in proc.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    if "OutOfMemoryError" in proc.stderr or "CUDA out of memory" in proc.stderr:
        raise RowOutOfMemory(f"row {name} ran out of device memory at batch {batch}")
    raise RuntimeError(f"row {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def run_fitting(name: str, args: argparse.Namespace) -> dict:
    """The row at ``args.batch``, halved until it fits in device memory (the row's ``batch``
    says where it ran; ``batch_requested`` what was asked)."""
    size, device, batch = SIZES[args.size], torch.device(args.device), args.batch
    while True:
        try:
            if not args.in_process:
                return {**run_child(name, args, batch), "batch_requested": args.batch}
            try:
                row = run_row(name, size, batch, args.steps, args.warmup, device, args.precision)
            except torch.OutOfMemoryError:
                msg = f"row {name} ran out of device memory at batch {batch}"
                raise RowOutOfMemory(msg) from None
            return {**row, "memory_isolated": False, "batch_requested": args.batch}
        except RowOutOfMemory as err:
            if batch == 1:
                raise
            print(f"[bench] {err}; halving to {batch // 2}", file=sys.stderr, flush=True)
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


RATIOS = {
    # name: (numerator row, denominator row, quantity, target)
    "maskagain_b_b_over_videomae_b_time": ("maskagain_b_b", "videomae_b", "seconds_per_clip", 0.55),
    "maskagain_b_s_over_mvd_b_s_time": ("maskagain_b_s", "mvd_b_s", "seconds_per_clip", 0.2),
    "maskagain_b_b_over_videomae_b_memory": ("maskagain_b_b", "videomae_b", "peak_memory_mb", 0.7),
    "maskagain_b_b_over_videomae_b_official_memory": (
        "maskagain_b_b",
        "videomae_b_official",
        "peak_memory_mb",
        0.7,
    ),
    "maskagain_b_b_over_videomae_b_allocated": (
        "maskagain_b_b",
        "videomae_b",
        "allocated_peak_mb",
        0.7,
    ),
    "maskagain_b_b_over_videomae_b_official_allocated": (
        "maskagain_b_b",
        "videomae_b_official",
        "allocated_peak_mb",
        0.7,
    ),
    "maskagain_b_b_over_videomae_b_official_time": (
        "maskagain_b_b",
        "videomae_b_official",
        "seconds_per_clip",
        0.55,
    ),
    # the same objective at the official code's costs
    "maskagain_b_b_over_maskagain_b_b_official_time": (
        "maskagain_b_b",
        "maskagain_b_b_official",
        "seconds_per_clip",
        0.6,
    ),
    "maskagain_b_b_over_maskagain_b_b_official_memory": (
        "maskagain_b_b",
        "maskagain_b_b_official",
        "peak_memory_mb",
        0.7,
    ),
    "maskagain_b_b_over_maskagain_b_b_official_allocated": (
        "maskagain_b_b",
        "maskagain_b_b_official",
        "allocated_peak_mb",
        0.7,
    ),
}


def _best_round(rounds: list[dict]) -> dict:
    """The round with the lowest median time; every round's median and peak memory kept."""
    best = dict(min(rounds, key=lambda row: row["seconds_per_clip"]))
    best["rounds_seconds_per_clip"] = [row["seconds_per_clip"] for row in rounds]
    best["peak_memory_mb"] = max(row["peak_memory_mb"] for row in rounds)
    allocated = [row["allocated_peak_mb"] for row in rounds if row.get("allocated_peak_mb")]
    best["allocated_peak_mb"] = max(allocated) if allocated else None
    return best


MEMORY_TARGET_BATCH = 8


def ratios(rows: list[dict], matmul: str = "bf16") -> dict:
    """Same-run ratios against the targets (only those whose two rows ran)."""
    by_name = {r["name"]: r for r in rows}
    out = {}
    for key, (num, den, field, target) in RATIOS.items():
        if (
            num in by_name
            and den in by_name
            and by_name[num].get(field)
            and by_name[den].get(field)
        ):
            value = by_name[num][field] / by_name[den][field]
            out[key] = {"value": value, "target_at_most": target, "met": value <= target}
            if field != "seconds_per_clip":  # the memory target is set at batch 8
                out[key]["target_batch"] = MEMORY_TARGET_BATCH
    if "maskagain_b_b" in by_name:
        value = by_name["maskagain_b_b"]["fraction_of_matmul"]
        out[f"maskagain_b_b_fraction_of_{matmul}_matmul"] = {
            "value": value,
            "target_at_least": 0.6,
            "met": value >= 0.6,
        }
    return out


def run_benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    size = SIZES[args.size]
    names = args.only or list(ROW_NAMES)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.step", *sys.argv[1:]]),
        "machine": machine_info(device),
        "config": {
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "frames": size.frames,
            "img_size": size.img,
            "patch_size": size.patch,
            "tubelet_size": size.tubelet,
            "mask": f"tube {size.mask_ratio}",
            "tokens": size.clip.n_all,
            "visible_tokens": size.clip.n_vis,
            "precision": f"{args.precision} ({args.precision_reason}): autocast (student), "
            "weights + inference_mode (teacher); maskagain_b_b_official: fp32 teacher under "
            "no_grad",
            "optimizer": "AdamW fused, betas (0.9, 0.95), wd 0.05 (official rows: not fused)",
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "malloc": args.malloc,
        },
    }
    runs: dict[str, list[dict]] = {name: [] for name in names}
    matmuls = []
    for r in range(args.rounds):
        for name in names:
            print(f"[bench] round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            runs[name].append(run_fitting(name, args))
        matmuls.append(measure_matmul(size, args.batch, device))
    rows = [_best_round(runs[name]) for name in names]
    # the machine's limit: the best matmul rate seen in this run, measured in this process
    # after every round and in every row's process before its steps (a busy CPU only lowers it)
    seen = [{k: m[k]["flops"] for k in ("bf16", "fp32")} for m in matmuls]
    seen += [row["matmul_flops_in_process"] for rounds in runs.values() for row in rounds]
    result["matmul_flops"] = {k: max(m[k] for m in seen) for k in ("bf16", "fp32")}
    result["matmul_shapes"] = {
        k: max(matmuls, key=lambda m, k=k: m[k]["flops"])[k]["shapes"] for k in ("bf16", "fp32")
    }
    result["matmul_measurements"] = seen
    # the rate of the precision the rows ran in (fp32 runs are not held to an emulated bf16)
    rate = result["matmul_precision"] = "fp32" if args.precision == "fp32" else "bf16"
    for row in rows:
        row["fraction_of_matmul"] = row["achieved_flops"] / result["matmul_flops"][rate]
    result["rows"] = rows
    result["ratios"] = ratios(rows, rate)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    if args.data:
        result["data"] = _data_benchmark()
    return result


def _data_benchmark() -> dict:
    """The data-loader benchmark of ``benchmarks.data`` (decode + transform vs decord)."""
    from benchmarks import data as data_bench

    return data_bench.run_default()


# ---------------------------------------------------------------------- reports
MD_BEGIN, MD_END = "<!-- step-benchmark:begin -->", "<!-- step-benchmark:end -->"


def markdown_table(result: dict) -> str:
    m = result["machine"]
    mm = result["matmul_flops"]
    lines = [
        "## Training step",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}  ",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), device `{m['device']}`"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + "  ",
        f"Load average at start / end: {m['load_average_at_start'][0]:.2f} / "
        f"{m['load_average_at_end'][0]:.2f}  ",
        f"Matmul at the step's GEMM shapes (best of {len(result.get('matmul_measurements', [1]))} "
        f"measurements in this run): bf16 {mm['bf16'] / 1e9:.0f} GFLOP/s, "
        f"fp32 {mm['fp32'] / 1e9:.0f} GFLOP/s  ",
        f"Precision: {result.get('config', {}).get('precision', 'bf16')}",
        "",
        "| row | batch | s/clip (median) | min-max | peak MB | allocated peak MB "
        "| in use between steps MB | before step 1 MB | GFLOP/clip | GFLOP/s "
        f"| of {result.get('matmul_precision', 'bf16')} matmul |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['seconds_per_clip']:.3f} | "
            f"{r['seconds_per_clip_min']:.3f}-{r['seconds_per_clip_max']:.3f} | "
            f"{r['peak_memory_mb']:.0f} | {_mb(r.get('allocated_peak_mb'))} | "
            f"{_mb(r.get('allocated_between_steps_mb'))} | "
            f"{_mb(r.get('setup_memory_mb'))} | "
            f"{r['flops_per_clip'] / 1e9:.1f} | "
            f"{r['achieved_flops'] / 1e9:.0f} | {r['fraction_of_matmul']:.0%} |"
        )
    if result["ratios"]:
        batch = result["rows"][0]["batch"]
        lines += ["", "| ratio (same run) | value | target | met |", "|---|---|---|---|"]
        for key, r in result["ratios"].items():
            target = (
                f"<= {r['target_at_most']}"
                if "target_at_most" in r
                else f">= {r['target_at_least']}"
            )
            met = "yes" if r["met"] else "no"
            if r.get("target_batch", batch) != batch:
                met = f"({met}: the target is set at batch {r['target_batch']})"
            lines.append(f"| {key} | {r['value']:.3f} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def update_markdown(path: Path, result: dict) -> None:
    """Write the step table between markers in ``path``, leaving every other section alone."""
    block = f"{MD_BEGIN}\n{markdown_table(result)}{MD_END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if MD_BEGIN in text and MD_END in text:
        head, rest = text.split(MD_BEGIN, 1)
        tail = rest.split(MD_END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


# ---------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.step", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--batch",
        type=int,
        help=f"clips per step (default: 2 on the CPU; on CUDA the paper's {PAPER_BATCH}, halved "
        "per row until it fits; batch 2 on a GPU measures launch overhead)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp16", "fp32"),
        help="autocast of the trained models and weights of the frozen ones (default auto: "
        "bf16 where native, fp32 on CPUs without bf16 instructions)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps per row (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every row (fresh process) this many times, interleaved; keep each row's "
        "fastest round (all rounds' medians are in the JSON) (default 1)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--malloc",
        choices=("kept", "default"),
        default="kept",
        help="CPU: 'kept' applies maskagain.engine.allocator.keep_freed_memory as training "
        "does (freed memory reused, no page faults); 'default' leaves glibc's settings "
        "(default kept)",
    )
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="full or tiny models")
    p.add_argument(
        "--only", action="append", choices=ROW_NAMES, help="run only this row (repeatable)"
    )
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--markdown", type=Path, help="update the step section of this markdown file")
    p.add_argument(
        "--data", action="store_true", help="also run benchmarks.data (loader vs decord)"
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the rows in this process (faster start; peak memory is then cumulative)",
    )
    p.add_argument("--profile", type=Path, help="profile one step of the --only row to this file")
    p.add_argument("--child", choices=ROW_NAMES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.batch or 1) < 1 or args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--batch, --steps and --rounds must be >= 1, --warmup >= 0")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r} is not a device; use cpu or cuda (cuda:N)")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device {args.device!r}: this benchmark runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(
            "--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False)"
        )
    if args.batch is None:
        args.batch = PAPER_BATCH if device.type == "cuda" else 2
    args.precision, args.precision_reason = resolve_precision(args.precision, device)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "kept" and args.device == "cpu":
        keep_freed_memory()
    if args.profile:
        if not args.only or len(args.only) != 1:
            raise SystemExit("--profile needs exactly one --only ROW")
        size, device = SIZES[args.size], torch.device(args.device)
        warmup = max(args.warmup, 1)
        profile_row(args.only[0], size, args.batch, warmup, device, args.profile, args.precision)
        return 0
    if args.child:
        row = run_row(
            args.child,
            SIZES[args.size],
            args.batch,
            args.steps,
            args.warmup,
            torch.device(args.device),
            args.precision,
        )
        print("ROW " + json.dumps(row), flush=True)
        return 0
    result = run_benchmark(args)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    if args.markdown:
        update_markdown(args.markdown, result)
        if "data" in result:
            from benchmarks import data as data_bench

            data_bench.update_markdown(args.markdown, result["data"])
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
