"""What the demo compares and how much work it does: the models, objectives, student rows,
stage sizes and evaluations (no torch: the CLI and the reports read them without loading
models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parents[2] / "assets"
TEACHER_WEIGHTS = ASSETS / "demo_teacher.safetensors"
TEACHER_CARD = ASSETS / "demo_teacher.json"
NUM_CLASSES = 8
GEOMETRY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2)
# The student: the teacher's width, half its depth (~half its weights). Chosen on the settings
# split (synthetic seed 1): a MaskAgain-distilled 128x2 student fine-tuned to 32% there, while
# 64x4 and 96x4 students stayed at chance (12-15%) under the same fine-tuning budget.
STUDENT = dict(name="vit_micro", embed_dim=128, depth=2, num_heads=4)
TEACHER_ARCH = dict(name="vit_micro")  # width 128, depth 4, 4 heads
# The students' init: what the official pre-training code of VideoMAE, MaskAgain, MVD and AMD
# draws (xavier-uniform Linear weights), as the paper configs; "trunc_normal" (VideoMAE's
# fine-tuning init, truncated normal 0.02) is ``maskagain demo --student-init trunc_normal``
STUDENT_INIT = "official"
MASK = dict(kind="tube", ratio=0.75)  # 4 of 16 positions visible per frame, 16 of 64 tokens
# MaskAgain-B weights (paper section 4.1); top-k scaled to 16 visible tokens (4 per frame)
MASKAGAIN_OBJECTIVE = dict(alpha=3.0, beta=1.0, gamma=0.2, lam=0.1, k=4, k_local=2)
HINT_OBJECTIVE = dict(alpha=0.0, beta=0.0, gamma=0.0, lam=0.0, baselines={"hint_all": 1.0})
# MVD's published settings (2 decoder blocks at the student's width and heads, SmoothL1 on the
# teacher's last-block features of the hidden tokens); same student, mask and schedule as above
MVD_OBJECTIVE = dict(kind="mvd")
MVD = dict(decoder_depth=2, loss="smooth_l1")
# AMD's published settings scaled to the demo: the teacher sees twice the student's tokens (mask
# 0.5 against the student's 0.75, 32 of 64 tokens against 16, as AMD's 75% against 90%), the
# student's middle and last block aligned with the teacher's blocks 2 and 4 directly and through
# 2-block generators (MSE), plus VideoMAE's pixel loss (weight 1) through the VideoMAE row's
# decoder (2 blocks, 64 wide)
AMD_OBJECTIVE = dict(kind="amd", pixel_weight=1.0)
AMD = dict(teacher_ratio=0.5, generator_depth=2, loss="mse")
PIXEL_DECODER = {"depth": 2, "embed_dim": 64, "num_heads": 2, "norm_pix_loss": True}
# the student rows: run name -> (objective in the table, stage banner of its pre-training);
# every row is optional (``run_demo(rows=...)``), the teacher and random-init rows always run
STUDENT_ROWS = {
    "maskagain": ("MaskAgain", "MaskAgain distillation (MAGlobal, MALocal, MAHint, MARel)"),
    "videomae": ("VideoMAE", "VideoMAE pre-training (pixel reconstruction)"),
    "hint": ("Hint (no selection)", "plain Hint distillation (every visible token, no selection)"),
    "mvd": ("MVD", "MVD distillation (teacher on the whole clip, 2-block feature decoder)"),
    "amd": ("AMD", "AMD distillation (teacher on 32 tokens, student on 16 of them)"),
    "scratch": ("none (from scratch)", None),
}
ROW_NAMES = tuple(STUDENT_ROWS)
# the rows ``maskagain demo`` runs unless told (``--rows all``: every row). MVD is left out: with
# AMD the dearest row to pre-train, and its score moves 5-8 points with the training seed (its
# target is 86% token position: ``python -m benchmarks.demo_noise --target-share``), so one
# seed of it says little
DEFAULT_ROWS = ("maskagain", "videomae", "hint", "amd", "scratch")
TRAINED_ROWS = tuple(name for name, (_, stage) in STUDENT_ROWS.items() if stage is not None)
# distillation rows: objective section and extra config sections
DISTILL_ROWS = {
    "maskagain": (MASKAGAIN_OBJECTIVE, {}),
    "hint": (HINT_OBJECTIVE, {}),
    "mvd": (MVD_OBJECTIVE, {"mvd": MVD}),
    "amd": (AMD_OBJECTIVE, {"amd": AMD, "pixel_decoder": PIXEL_DECODER}),
}


@dataclass(frozen=True)
class DemoSizes:
    """How much work every stage does (clips per epoch are freshly generated every epoch)."""

    pretrain_epochs: int
    pretrain_clips: int
    finetune_epochs: int
    finetune_clips: int
    probe_train_clips: int
    probe_val_clips: int
    test_videos: int  # the fine-tune's test set
    test_crops: int
    batch_size: int = 32


# processes rendering the synthetic clips ahead of the training and probe stages
RENDER_WORKERS = 2
# std (top-1 points) of the ranking column on one encoder (the shipped teacher) over 10 probe
# seeds at the default probe set: 48.6 to 49.1, std 0.18 (`python -m benchmarks.demo_noise
# --sizes 4000:2000 --probe-seeds 10 --init official`)
PROBE_NOISE_STD = 0.18
# the linear probes' training (features standardised, AdamW, cosine schedule)
PROBE = dict(epochs=50, lr=1e-2)
# The probes fit 4000 clips and test on 2000: one encoder (the shipped teacher) over 10 probe
# seeds spreads PROBE_NOISE_STD std on the ranking column (`python -m benchmarks.demo_noise
# --sizes 4000:2000`); feature extraction is most of the probes' cost, so the set's size is
# most of their time (8000:4000: 0.13 std, twice the time)
# Every size of the default demo and of ``--quick`` (tiny: a smoke test), side by side:
_SIZES = {
    "pretrain_epochs": (5, 1),
    "pretrain_clips": (1280, 32),
    "finetune_epochs": (10, 1),
    "finetune_clips": (640, 32),
    "probe_train_clips": (4000, 32),
    "probe_val_clips": (2000, 16),
    "test_videos": (800, 16),
    "test_crops": (3, 1),
    "batch_size": (32, 16),
}
DEFAULT_SIZES = DemoSizes(**{name: default for name, (default, _) in _SIZES.items()})
QUICK_SIZES = DemoSizes(**{name: quick for name, (_, quick) in _SIZES.items()})


# rows that are references, not methods: left out of the comparisons and the ranking
REFERENCES = ("teacher", "teacher_single_frame", "random_init")
# the evaluations of every row, each a top-1 column with a ``_se`` twin: name -> label
METRICS = {
    "time_probe_top1": "probe per time step",
    "probe_top1": "probe mean-pooled",
    "finetune_top1": "fine-tune",
}
# the column the reports rank methods by: the linear probe on features pooled per time step,
# for its stability: its own noise on one encoder is small (``summary["probe_noise_std"]``,
# `python -m benchmarks.demo_noise`), while the fine-tune column swings by tens of points with
# the training seed (a few hundred steps from five-epoch students; ``maskagain demo --finetune``)
RANK_METRIC = "time_probe_top1"


def metrics(finetune: bool) -> dict[str, str]:
    """The evaluations a demo ran (:data:`METRICS`, the fine-tune only with ``finetune``)."""
    return {k: v for k, v in METRICS.items() if finetune or k != "finetune_top1"}


def select_rows(rows: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The student rows to run, in the table's order (None: :data:`DEFAULT_ROWS`; ``["all"]``:
    every row of ``STUDENT_ROWS``)."""
    if rows is None:
        return DEFAULT_ROWS
    if list(rows) == ["all"]:
        return ROW_NAMES
    unknown = sorted(set(rows) - set(ROW_NAMES))
    if unknown or not rows:
        raise ValueError(f"demo rows must be among {list(ROW_NAMES)}, got {list(rows)}")
    return tuple(name for name in ROW_NAMES if name in rows)
