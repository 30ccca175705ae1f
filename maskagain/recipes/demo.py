"""``maskagain demo``: what MaskAgain buys over the alternatives, on a CPU in minutes.

On the embedded synthetic motion set (classes defined only by motion, clips generated on the
fly), with the VideoMAE-pre-trained teacher shipped in ``maskagain/assets``:

1. the teacher (loaded, or re-trained with ``retrain_teacher``: ``configs/demo/teacher.yaml``);
2. under one student budget (same architecture, epochs and freshly generated clips), the
   student pre-trained five ways: MaskAgain distillation, VideoMAE, plain Hint distillation
   (every visible token, no selection), MVD distillation (the teacher on the whole clip, a
   2-block decoder regressing its features of the hidden tokens) and no pre-training at all;
   ``rows`` (``maskagain demo --rows``) runs a subset of these student rows;
3. every model, teacher included (and a randomly initialised teacher-size encoder, the
   learnability reference), evaluated with two linear probes on frozen features (pooled per
   time step, which the report ranks by, and mean-pooled) and with a fine-tune followed by a
   multi-view test;
4. ``summary.json``, ``report.md`` and figures (training curves, accuracy bars, the teacher's
   selections as in the paper's Figures 1 and 4) in the output directory.

Every training stage runs a recipe (``maskagain.recipes.pretrain``, ``distill``, ``finetune``)
on a config built here; the probes use ``maskagain.engine.probe`` on one shared set of clips.
Splits: the synthetic set's seed 0 is reported (probe: ``val``, fine-tune: ``test``); settings
were chosen on seed 1, which this module never reads.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from maskagain.config import load_config, load_yaml, to_dict
from maskagain.data import DataConfig, SyntheticSpec, build_dataset, make_clip
from maskagain.data.synthetic import clear_prerendered, prerender
from maskagain.engine.metrics import read_log
from maskagain.engine.probe import extract_pooled_features, train_linear_probe
from maskagain.models.loading import load_encoder, save_encoder
from maskagain.models.vit import VideoViT
from maskagain.recipes import demo_report
from maskagain.recipes.configs import (
    DistillConfig,
    FinetuneConfig,
    PretrainConfig,
    ScratchModelSpec,
)
from maskagain.recipes.distill import run as run_distill
from maskagain.recipes.finetune import run as run_finetune
from maskagain.recipes.pretrain import run as run_pretrain
from maskagain.visualize import visualize

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parents[1] / "assets"
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
DEFAULT_SIZES = DemoSizes(
    pretrain_epochs=5,
    pretrain_clips=1280,
    finetune_epochs=10,
    finetune_clips=640,
    probe_train_clips=4000,
    probe_val_clips=2000,
    test_videos=800,
    test_crops=3,
)
QUICK_SIZES = DemoSizes(
    pretrain_epochs=1,
    pretrain_clips=32,
    finetune_epochs=1,
    finetune_clips=32,
    probe_train_clips=32,
    probe_val_clips=16,
    test_videos=16,
    test_crops=1,
    batch_size=16,
)


# ------------------------------------------------------------------------------------ configs
def data_section(sizes: DemoSizes, train_clips: int, **extra) -> dict:
    """The synthetic set as every demo stage reads it (seed 0: the reported splits)."""
    return {
        "kind": "synthetic",
        "num_frames": GEOMETRY["num_frames"],
        "sampling_rate": 1,
        "input_size": GEOMETRY["img_size"],
        "short_side": GEOMETRY["img_size"],
        "synthetic_size": GEOMETRY["img_size"],
        "synthetic_frames": GEOMETRY["num_frames"],
        "synthetic_classes": NUM_CLASSES,
        "synthetic_train_clips": train_clips,
        "synthetic_val_clips": sizes.test_videos,
        "synthetic_seed": 0,
        "fresh_every_epoch": True,
        "num_workers": 0,
        **extra,
    }


def engine_section(sizes: DemoSizes, log_every: int = 10) -> dict:
    return {
        "device": "auto",
        "batch_size": sizes.batch_size,
        "precision": "fp32",
        "log_every": log_every,
        "ckpt_every_epochs": 1,
        "keep_checkpoints": 1,
        "tensorboard": False,
        "progress": False,
    }


def _pretrain_common(sizes: DemoSizes, out_dir: Path, seed: int) -> dict:
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "data": data_section(sizes, sizes.pretrain_clips),
        "mask": dict(MASK),
        "optim": {"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.95]},
        "schedule": {
            "epochs": sizes.pretrain_epochs,
            "warmup_epochs": min(1, sizes.pretrain_epochs),
            "min_lr": 1e-5,
        },
        "engine": engine_section(sizes),
    }


def videomae_student_config(
    sizes: DemoSizes,
    out_dir: Path,
    seed: int = 0,
    init: str = STUDENT_INIT,
    overrides: Sequence[str] = (),
) -> PretrainConfig:
    """The VideoMAE row's config (student drawn with ``init``; dotted ``overrides`` last)."""
    tree = _pretrain_common(sizes, out_dir, seed)
    tree["model"] = {**STUDENT, **GEOMETRY, "init": init}
    tree["decoder"] = dict(PIXEL_DECODER)
    return _build(PretrainConfig, tree, overrides)


def distill_config(
    sizes: DemoSizes,
    out_dir: Path,
    teacher: str,
    objective: dict,
    seed: int = 0,
    sections: dict | None = None,
    init: str = STUDENT_INIT,
    overrides: Sequence[str] = (),
) -> DistillConfig:
    """A distillation row's config; ``sections``: extra config sections (e.g. ``mvd``); the
    student drawn with ``init``; dotted ``overrides`` applied last."""
    tree = _pretrain_common(sizes, out_dir, seed)
    tree["student"] = {**STUDENT, **GEOMETRY, "drop_path_rate": 0.1, "init": init}
    tree["teacher"] = {"source": teacher, "precision": "fp32"}
    tree["objective"] = copy.deepcopy(objective)
    tree.update(copy.deepcopy(sections or {}))
    return _build(DistillConfig, tree, overrides)


def finetune_config(
    sizes: DemoSizes, out_dir: Path, arch: dict, init: str = "", seed: int = 0
) -> FinetuneConfig:
    tree = {
        "out_dir": str(out_dir),
        "seed": seed,
        "model": {**arch, **GEOMETRY, "drop_path_rate": 0.1},
        "init": {"source": init},
        "head": {"dropout": 0.0},
        "layer_decay": 0.75,
        "mixup": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.1},
        "data": data_section(
            sizes,
            sizes.finetune_clips,
            short_side=GEOMETRY["img_size"] + 4,  # so the test crops differ
            crop_scale=[0.5, 1.0],
            rand_augment="",
            random_erase=0.0,
            test_clips=1,  # the 8-frame videos hold exactly one 8-frame clip
            test_crops=sizes.test_crops,
        ),
        "optim": {"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.999]},
        "schedule": {
            "epochs": sizes.finetune_epochs,
            "warmup_epochs": min(1, sizes.finetune_epochs),
            "warmup_lr": 1e-6,
            "min_lr": 1e-5,
        },
        "engine": engine_section(sizes),
        "val": {"every_epochs": 0, "final_test": True},
    }
    return _build(FinetuneConfig, tree)


def teacher_config(out_dir: Path | None = None) -> PretrainConfig:
    """The shipped teacher's training config (``configs/demo/teacher.yaml``, as recorded in the
    teacher's card, so an installed package can re-train it without the repository)."""
    card = json.loads(TEACHER_CARD.read_text()) if TEACHER_CARD.is_file() else {}
    tree = card.get("config")
    if tree is None:
        repo_cfg = Path(__file__).resolve().parents[2] / "configs" / "demo" / "teacher.yaml"
        tree = load_yaml(repo_cfg)
    tree = copy.deepcopy(tree)
    if out_dir is not None:
        tree["out_dir"] = str(out_dir)
    return _build(PretrainConfig, tree)


def _build(cls: type, tree: dict, overrides: Sequence[str] = ()):
    return load_config(cls, base=tree, overrides=overrides)


# ------------------------------------------------------------------------------------ teacher
def retrain_teacher(
    out_dir: Path, resume: str | None = "auto", probe_sizes: DemoSizes | None = None
) -> dict:
    """Re-run the teacher's pre-training (``configs/demo/teacher.yaml``), probe it against a
    random-init encoder of the same size and write ``demo_teacher.safetensors`` (fp16) and
    ``demo_teacher.json`` (config, wall time, probe numbers) into ``out_dir``. Copy both into
    ``maskagain/assets/`` to ship them. Resumable (``resume="auto"``). Returns the card."""
    cfg = teacher_config(out_dir / "run")
    summary = run_pretrain(cfg, resume=resume)
    if not summary.get("completed"):
        raise RuntimeError(f"teacher pre-training did not complete: {summary.get('error')}")
    facts = {
        "completed": True,
        "epochs": summary.get("epoch"),
        "steps": summary.get("step"),
        "clips_seen": summary.get("step", 0) * summary.get("total_batch", 0),
        "wall_seconds": summary.get("wall_s"),
        "final_loss": (summary.get("final") or {}).get("loss"),
    }
    weights = Path(cfg.out_dir) / "teacher.safetensors"
    return write_teacher_card(weights, out_dir, cfg, facts, probe_sizes)


def run_facts(run_dir: Path, step: int, batch: int) -> dict:
    """Epoch, wall time and loss of a (possibly unfinished) pre-training run at ``step``, from
    its ``log.jsonl`` (wall time: first to last logged line up to ``step``, plus one logging
    interval for the steps before the first line)."""
    records = [r for r in read_log(Path(run_dir) / "log.jsonl") if r.get("step", 0) <= step]
    if not records:
        return {"steps": step}
    first, last = records[0], records[-1]
    per_step = (last["time"] - first["time"]) / max(last["step"] - first["step"], 1)
    return {
        "steps": step,
        "epochs": last.get("epoch", 0) + 1 if step == last["step"] else last.get("epoch"),
        "clips_seen": step * batch,
        "wall_seconds": round(last["time"] - first["time"] + per_step * first["step"], 1),
        "final_loss": last.get("loss"),
    }


def write_teacher_card(
    weights: str | Path,
    out_dir: Path,
    cfg: PretrainConfig,
    facts: dict,
    probe_sizes: DemoSizes | None = None,
) -> dict:
    """Half-precision teacher + card (config, epochs, wall time, probe vs random init)."""
    sizes = probe_sizes or DEFAULT_SIZES
    geometry = {"img_size": cfg.model.img_size, "num_frames": cfg.model.num_frames}
    teacher = load_encoder(weights, **geometry)
    encoders = {
        "teacher": teacher,
        "random_init": random_encoder(TEACHER_ARCH, seed=cfg.seed),
        "teacher_single_frame": teacher,
    }
    probes = probe_encoders(encoders, sizes)
    card = {
        "description": "VideoMAE-pre-trained vit_micro (width 128, depth 4) on the synthetic "
        "motion set, 8 frames of 32x32; trained by `maskagain pretrain --config "
        "configs/demo/teacher.yaml`",
        "command": "maskagain pretrain --config configs/demo/teacher.yaml --resume auto",
        "planned_epochs": cfg.schedule.epochs,
        **facts,
        "probe": probes,
        "probe_settings": asdict(sizes),
        "config": to_dict(cfg),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_encoder(teacher.half(), out_dir / "demo_teacher.safetensors", {"card": card})
    (out_dir / "demo_teacher.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


# ------------------------------------------------------------------------------------ probes
def random_encoder(arch: dict, seed: int = 0) -> VideoViT:
    """A randomly initialised encoder of architecture ``arch`` (seeded; ``arch["init"]``, if
    given, names the scheme, as a pre-training config's ``model.init``)."""
    spec = ScratchModelSpec(**{**arch, **GEOMETRY})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return spec.build()


class ProbeClips:
    """The probe's clips, generated once (in ``workers`` processes) and shared by every encoder
    (seed 0 train / val)."""

    def __init__(self, sizes: DemoSizes, workers: int = RENDER_WORKERS) -> None:
        val = {"synthetic_val_clips": sizes.probe_val_clips}
        cfg = DataConfig(**data_section(sizes, sizes.probe_train_clips, **val))
        cfg.validate()
        self.splits = {}
        for split in ("train", "val"):
            ds = build_dataset(cfg, split, "eval")
            prerender(ds.spec, ds.seed, split, [(0, i) for i in range(len(ds))], workers)
            items = [ds[i] for i in range(len(ds))]
            video = torch.stack([it["video"] for it in items]).half()
            label = torch.tensor([it["label"] for it in items])
            self.splits[split] = (video, label, torch.arange(len(items)))

    def batches(self, split: str, batch_size: int = 64, single_frame: bool = False):
        """(video, label, index) batches; ``single_frame``: every frame replaced by the middle
        one (a static clip: the appearance is there, the motion is not)."""
        video, label, index = self.splits[split]
        for i in range(0, len(label), batch_size):
            s = slice(i, i + batch_size)
            clip = video[s].float()
            if single_frame:
                t = clip.shape[2]
                clip = clip[:, :, t // 2 : t // 2 + 1].expand_as(clip).contiguous()
            yield clip, label[s], index[s]


def probe_encoders(
    encoders: dict, sizes: DemoSizes, clips: ProbeClips | None = None, seed: int = 0
) -> dict[str, dict]:
    """Linear probes (frozen features, standardised; AdamW 50 epochs) of every encoder, on
    mean-pooled features and on features pooled per time step (``pooling="time"``):
    {name: {train_top1, val_top1, val_se, time_train_top1, time_val_top1, time_val_se,
    num_train, num_val}}. Names ending in ``_single_frame`` see static clips (the middle frame
    repeated)."""
    clips = clips or ProbeClips(sizes)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for name, encoder in encoders.items():
        encoder = encoder.float().to(device)
        static = name.endswith("_single_frame")
        out[name] = {}
        train, val = (
            extract_pooled_features(encoder, clips.batches(split, single_frame=static), device)
            for split in ("train", "val")
        )  # one forward pass per clip for both poolings
        for pooling, prefix in (("mean", ""), ("time", "time_")):
            tr, va = train[pooling], val[pooling]
            res = train_linear_probe(tr, va, NUM_CLASSES, **PROBE, seed=seed)
            out[name].update({
                f"{prefix}train_top1": round(res.train_top1, 2),
                f"{prefix}val_top1": round(res.val_top1, 2),
                f"{prefix}val_se": round(standard_error(res.val_top1, len(va)), 2),
                "num_train": len(tr),
                "num_val": len(va),
            })  # fmt: skip
            log.info("probe %s (%s pooling): val top-1 %.1f (train %.1f)",
                     name, pooling, res.val_top1, res.train_top1)  # fmt: skip
    return out


def standard_error(top1: float, n: int) -> float:
    """Binomial standard error (percentage points) of an accuracy ``top1`` (%) over ``n``."""
    if n <= 0:
        return float("nan")
    p = top1 / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / n)


def draw_figures(out: Path, rows: list, teacher: str, finetune: bool) -> dict[str, Path]:
    """curves.png, accuracy.png and selections.png (the teacher's selections on a test clip)."""
    accuracy = out / "accuracy.png"
    shown = demo_report.metrics(finetune)
    figures = {
        "curves": demo_report.draw_curves(out, out / "curves.png"),
        "accuracy": demo_report.draw_accuracy(rows, accuracy, 100 / NUM_CLASSES, shown),
    }
    spec = SyntheticSpec(GEOMETRY["img_size"], GEOMETRY["num_frames"], NUM_CLASSES)
    frames, label = make_clip(spec, seed=0, split="test", index=0)
    seed = demo_report.moving_mask_seed(frames, GEOMETRY["patch_size"], GEOMETRY["tubelet_size"])
    figures["selections"] = visualize(
        teacher,
        frames,
        out / "selections.png",
        title=f"teacher on a test clip ({spec.class_names[label]}), tube mask seed {seed}: "
        "cyan = query token, red = selected",
        seed=seed,
        k_global=MASKAGAIN_OBJECTIVE["k"],  # the demo objective's top-k
        k_local=MASKAGAIN_OBJECTIVE["k_local"],
        k_hint=MASKAGAIN_OBJECTIVE["k"],
    )
    return figures


# ------------------------------------------------------------------------------------ the demo
@dataclass
class _Row:
    model: str
    objective: str
    pretrain_epochs: int
    pretrain_seconds: float
    time_probe_top1: float | None = None
    time_probe_se: float | None = None
    probe_top1: float | None = None
    probe_se: float | None = None
    finetune_top1: float | None = None
    finetune_se: float | None = None
    finetune_seconds: float | None = None
    run: str = ""


# Expected seconds of each stage on a quiet 2-core CPU (one thread): the ETA's weights, scaled
# by how fast the stages so far ran against them. The CPU seconds of a default demo's stages
# (its summary.json profile); MVD's as AMD's (both took ~56 s before the clips were shared); a
# fine-tune with its test took ~48 s
STAGE_SECONDS = {
    "clips": 13.0,
    "maskagain": 25.0,
    "videomae": 37.0,
    "hint": 26.0,
    "mvd": 71.0,
    "amd": 71.0,
    "probe_clips": 16.0,
    "probe": 13.0,  # per encoder
    "finetune": 48.0,  # per model
    "report": 7.0,
}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Stages:
    """Numbered stage banners with elapsed time and an ETA for the whole run (printed: progress
    stays visible on the console), and the per-stage profile (wall and CPU seconds)."""

    def __init__(self, plan: list[tuple[str, float]]) -> None:
        self.plan, self.done, self.t0 = plan, 0, time.time()
        self.profile: list[dict] = []
        self._open: tuple[str, float, float] | None = None

    def start(self, what: str) -> None:
        """Close the running stage and announce the next one of the plan as ``what``."""
        self._close()
        elapsed = time.time() - self.t0
        expected_done = sum(sec for _, sec in self.plan[: self.done])
        pace = elapsed / expected_done if expected_done > 0 else 1.0
        left = pace * sum(sec for _, sec in self.plan[self.done :])
        self.done += 1
        line = (
            f"[demo {self.done}/{len(self.plan)} | {elapsed:4.0f}s elapsed, ETA "
            f"{elapsed + left:4.0f}s total] {what}"
        )
        print(line, flush=True)
        log.debug(line)
        self._open = (self.plan[self.done - 1][0], time.time(), _cpu_seconds())

    def finish(self) -> list[dict]:
        """Close the last stage; the profile: [{stage, wall_s, cpu_s}] in run order."""
        self._close()
        return self.profile

    def _close(self) -> None:
        if self._open is not None:
            name, t, cpu = self._open
            self.profile.append({
                "stage": name,
                "wall_s": round(time.time() - t, 1),
                "cpu_s": round(_cpu_seconds() - cpu, 1),
            })  # fmt: skip
            self._open = None


def stage_plan(
    rows: tuple[str, ...], finetune: bool, retrain: bool, encoders: int
) -> list[tuple[str, float]]:
    """The demo's stages in run order, each with its expected seconds (:data:`STAGE_SECONDS`)."""
    plan = [("teacher", 2400.0)] if retrain else []
    plan.append(("clips", STAGE_SECONDS["clips"]))
    plan += [(name, STAGE_SECONDS[name]) for name in rows if name in TRAINED_ROWS]
    plan.append(("probe_clips", STAGE_SECONDS["probe_clips"]))
    plan.append(("probes", STAGE_SECONDS["probe"] * encoders))
    if finetune:
        plan += [(f"finetune_{n}", STAGE_SECONDS["finetune"]) for n in ("teacher", *rows)]
    plan.append(("report", STAGE_SECONDS["report"]))
    return plan


def prerender_pretraining(sizes: DemoSizes, finetune: bool, workers: int = RENDER_WORKERS) -> int:
    """Render every training clip the rows (and fine-tunes) will read, once for all of them:
    ``pretrain_epochs`` x ``pretrain_clips`` (and ``finetune_epochs`` x ``finetune_clips``)
    clips of the train split. Returns how many were rendered."""
    cfg = DataConfig(**data_section(sizes, sizes.pretrain_clips))
    ds = build_dataset(cfg, "train", "pretrain")
    clips = {(e, i) for e in range(sizes.pretrain_epochs) for i in range(sizes.pretrain_clips)}
    if finetune:
        clips |= {(e, i) for e in range(sizes.finetune_epochs) for i in range(sizes.finetune_clips)}
    return prerender(ds.spec, ds.seed, "train", sorted(clips), workers)


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


def pretrain_student(
    name: str,
    sizes: DemoSizes,
    out: Path,
    teacher: str,
    seed: int,
    overrides: Sequence[str] = (),
    student_init: str = STUDENT_INIT,
) -> tuple[dict, Path]:
    """Pre-train the student of row ``name`` into ``out/name`` from init ``student_init``, with
    the dotted config ``overrides`` (e.g. ``schedule.epochs=10``) applied after it: (run
    summary, encoder weights)."""
    if name == "videomae":
        cfg = videomae_student_config(sizes, out / name, seed, student_init, overrides)
        return run_pretrain(cfg), out / name / "teacher.safetensors"
    objective, sections = DISTILL_ROWS[name]
    cfg = distill_config(
        sizes, out / name, teacher, objective, seed, sections, student_init, overrides
    )
    return run_distill(cfg, resume=None), out / name / "student.safetensors"


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    teacher: str | Path | None = None,
    retrain: bool = False,
    seed: int = 0,
    rows: list[str] | tuple[str, ...] | None = None,
    student_init: str = STUDENT_INIT,
    finetune: bool = False,
    keep_clips: bool = False,
) -> dict:
    """Run the comparison (the student ``rows``, default :data:`DEFAULT_ROWS`, every student
    drawn with ``student_init``; fine-tunes only with ``finetune``); returns (and writes)
    ``summary.json``'s content. ``keep_clips``: keep the rendered clips for the next call (the
    synthetic set is the same for every training seed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    rows = select_rows(rows)
    trained = [name for name in rows if name in TRAINED_ROWS]
    stages = _Stages(stage_plan(rows, finetune, retrain, encoders=len(rows) + 3))
    teacher, card = _demo_teacher(out, teacher, retrain, sizes, stages)
    stages.start(f"rendering the training clips once for every row ({RENDER_WORKERS} processes)")
    prerender_pretraining(sizes, finetune)
    runs: dict[str, dict] = {}
    students: dict[str, Path] = {}
    for name in trained:
        stages.start(f"student + {STUDENT_ROWS[name][1]}")
        runs[name], students[name] = pretrain_student(
            name, sizes, out, teacher, seed, student_init=student_init
        )
    students.update(_untrained_encoders(out, rows, seed, student_init))
    stages.start(f"rendering the probe's clips ({sizes.probe_train_clips} train, "
                 f"{sizes.probe_val_clips} val)")  # fmt: skip
    clips = ProbeClips(sizes)
    stages.start(f"linear probes of {len(students) + 2} encoders (features, then two probes each)")
    encoders = {"teacher": load_encoder(teacher)}
    encoders.update({k: load_encoder(v) for k, v in students.items()})
    encoders["teacher_single_frame"] = encoders["teacher"]
    probes = probe_encoders(encoders, sizes, clips, seed)
    del clips
    finetunes = _finetune_all(out, sizes, rows, teacher, students, seed, stages) if finetune else {}
    if not keep_clips:
        clear_prerendered()
    stages.start("figures and report")
    table = result_rows(card, sizes, rows, runs, probes, finetunes)
    figures = draw_figures(out, table, teacher, finetune)
    summary = _summary(quick, seed, rows, student_init, finetune, sizes, teacher, card, table)
    summary.update(probes=probes, figures={k: str(v) for k, v in figures.items()})
    summary["profile"] = stages.finish()
    summary["elapsed_seconds"] = round(time.time() - stages.t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    demo_report.write_report(out, summary)
    print(demo_report.table(summary), flush=True)
    print("\n".join(demo_report.headline(summary)), flush=True)
    print(f"wrote {out / 'summary.json'}, {out / 'report.md'} and figures in {out}", flush=True)
    return summary


def _demo_teacher(
    out: Path, teacher: str | Path | None, retrain: bool, sizes: DemoSizes, stages: _Stages
) -> tuple[str, dict]:
    """The teacher's weights (re-trained into ``out/teacher`` with ``retrain``) and card."""
    if retrain:
        stages.start("re-training the teacher (configs/demo/teacher.yaml; ~40 min on a 2-core CPU)")
        card = retrain_teacher(out / "teacher", probe_sizes=sizes)
        teacher = out / "teacher" / "demo_teacher.safetensors"
    else:
        teacher = Path(teacher) if teacher else TEACHER_WEIGHTS
        card = _read_card(teacher)
    if not Path(teacher).is_file():
        raise FileNotFoundError(
            f"no teacher at {teacher}; run `maskagain demo --retrain-teacher` to train one"
        )
    return str(teacher), card


def _untrained_encoders(out: Path, rows: tuple[str, ...], seed: int, init: str) -> dict:
    """The untrained student (row ``scratch``, drawn with ``init``) and the teacher-size
    random-init reference, saved under ``out``: {run name: weights path}."""
    encoders = {}
    if "scratch" in rows:
        encoders["scratch"] = out / "scratch" / "student_init.safetensors"
        scratch = random_encoder({**STUDENT, "init": init}, seed)
        save_encoder(scratch, encoders["scratch"], {"recipe": f"random init ({init})"})
    encoders["random_init"] = out / "random_init" / "encoder.safetensors"
    save_encoder(random_encoder(TEACHER_ARCH, seed), encoders["random_init"],
                 {"recipe": "random init"})  # fmt: skip
    return encoders


def _finetune_all(
    out: Path,
    sizes: DemoSizes,
    rows: tuple[str, ...],
    teacher: str,
    students: dict[str, Path],
    seed: int,
    stages: _Stages,
) -> dict[str, dict]:
    """Fine-tune the teacher and every student row, each followed by its multi-view test."""
    plan = [("teacher", TEACHER_ARCH, teacher)]
    plan += [(n, STUDENT, "" if n == "scratch" else str(students[n])) for n in rows]
    finetunes = {}
    for name, arch, init in plan:
        stages.start(f"fine-tune + {sizes.test_crops}-view test: {name}")
        ft = finetune_config(sizes, out / "finetune" / name, arch, init, seed)
        finetunes[name] = run_finetune(ft)
    return finetunes


def _summary(
    quick: bool,
    seed: int,
    rows: tuple[str, ...],
    student_init: str,
    finetune: bool,
    sizes: DemoSizes,
    teacher: str,
    card: dict,
    table: list[_Row],
) -> dict:
    """``summary.json``'s settings and results (the probes, figures and profile added after)."""
    return {
        "results": [asdict(r) for r in table],
        "quick": quick,
        "seed": seed,
        "rows": list(rows),
        "student_init": student_init,
        "finetune": finetune,
        "metrics": list(demo_report.metrics(finetune)),
        "probe_noise_std": PROBE_NOISE_STD,
        "sizes": asdict(sizes),
        "dataset": {
            "kind": "synthetic",
            "classes": NUM_CLASSES,
            "frames": GEOMETRY["num_frames"],
            "size": GEOMETRY["img_size"],
            "seed": 0,
            "probe_split": "val",
            "finetune_test_split": "test",
            "chance_top1": round(100 / NUM_CLASSES, 2),
        },
        "models": {
            "teacher": {**TEACHER_ARCH, "embed_dim": 128, "depth": 4, "num_heads": 4, **GEOMETRY},
            "student": {**STUDENT, **GEOMETRY, "init": student_init},
            "mask": MASK,
            "maskagain_objective": MASKAGAIN_OBJECTIVE,
            "hint_objective": HINT_OBJECTIVE,
            "mvd_objective": {**MVD_OBJECTIVE, "mvd": MVD},
            "amd_objective": {**AMD_OBJECTIVE, "amd": AMD, "pixel_decoder": PIXEL_DECODER},
        },
        "teacher": {"source": teacher, "card": _card_summary(card)},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def result_rows(
    card: dict,
    sizes: DemoSizes,
    rows: tuple[str, ...],
    runs: dict[str, dict],
    probes: dict[str, dict],
    finetunes: dict[str, dict],
) -> list[_Row]:
    """The table: the teacher (clips, single-frame clips), the random-init reference, then the
    student ``rows``, each with its pre-training cost (epochs, wall seconds), probe (per time
    step and mean-pooled) and fine-tune top-1 with standard errors."""
    teacher_epochs = int(card.get("epochs") or 0)
    teacher_seconds = float(card.get("wall_seconds") or 0.0)
    student = f"student {STUDENT['embed_dim']}x{STUDENT['depth']}"
    table = [
        _Row("teacher vit_micro 128x4", "VideoMAE (shipped)", teacher_epochs, teacher_seconds),
        _Row("teacher, single-frame clips", "VideoMAE (shipped)", teacher_epochs, teacher_seconds),
        _Row("random init vit_micro 128x4", "none (probe reference)", 0, 0.0),
    ]
    for name in rows:
        epochs = sizes.pretrain_epochs if name in runs else 0
        seconds = runs[name]["wall_s"] if name in runs else 0.0
        table.append(_Row(student, STUDENT_ROWS[name][0], epochs, seconds))
    keys = ["teacher", "teacher_single_frame", "random_init", *rows]
    for row, key in zip(table, keys):
        row.run = key
        row.probe_top1 = probes[key]["val_top1"]
        row.probe_se = probes[key]["val_se"]
        row.time_probe_top1 = probes[key].get("time_val_top1")
        row.time_probe_se = probes[key].get("time_val_se")
        if key in finetunes:
            test = finetunes[key].get("test", {})
            row.finetune_top1 = round(float(test["top1"]), 2) if "top1" in test else None
            n = int(test.get("num_videos", 0))
            if row.finetune_top1 is not None:
                row.finetune_se = round(standard_error(row.finetune_top1, n), 2)
            row.finetune_seconds = finetunes[key].get("wall_s")
    return table


def _read_card(weights: Path) -> dict:
    card_file = weights.with_suffix(".json")
    if card_file.is_file():
        return json.loads(card_file.read_text())
    try:  # a card stored in the safetensors metadata
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("card", "{}"))
    except Exception:  # noqa: BLE001  any other weights file: no card
        return {}


def _card_summary(card: dict) -> dict:
    return {k: v for k, v in card.items() if k not in ("config",)}


# ------------------------------------------------------------------------------ over seeds
def seed_settings(
    quick: bool,
    seed: int,
    teacher: Path,
    rows: list[str] | tuple[str, ...] | None = None,
    student_init: str = STUDENT_INIT,
    finetune: bool = False,
) -> dict:
    """What a seed's finished ``summary.json`` must match to be reused: sizes, seed, rows,
    init, evaluations and teacher (its path and training steps; not the whole card, whose wall time a resumed
    ``--retrain-teacher`` rewrites)."""
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    return {
        "quick": quick,
        "seed": seed,
        "rows": list(select_rows(rows)),
        "student_init": student_init,
        "metrics": list(demo_report.metrics(finetune)),
        "sizes": asdict(sizes),
        "teacher": str(teacher),
        "teacher_steps": _read_card(teacher).get("steps"),
    }


def _settings_of(summary: dict) -> dict:
    """:func:`seed_settings` as recorded in a demo's ``summary.json``."""
    teacher = summary.get("teacher") or {}
    return {
        "quick": summary.get("quick"),
        "seed": summary.get("seed"),
        "rows": summary.get("rows"),
        "student_init": summary.get("student_init", "trunc_normal"),  # the only init before
        "metrics": summary.get("metrics"),
        "sizes": summary.get("sizes"),
        "teacher": teacher.get("source"),
        "teacher_steps": (teacher.get("card") or {}).get("steps"),
    }


def reusable_summary(path: Path, settings: dict) -> dict | None:
    """The finished demo in ``path`` (its ``summary.json``) if it ran with ``settings``."""
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): running that seed again", path, err)
        return None
    found = _settings_of(summary)
    if found != settings or not summary.get("results"):
        changed = sorted(k for k in settings if found.get(k) != settings[k]) or ["no results"]
        log.warning("%s ran with other settings (%s): running that seed again", path, changed)
        return None
    return summary


def run_seeds(
    out: str | Path = "runs/demo",
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    quick: bool = False,
    teacher: str | Path | None = None,
    retrain: bool = False,
    rows: list[str] | tuple[str, ...] | None = None,
    student_init: str = STUDENT_INIT,
    finetune: bool = False,
) -> dict:
    """The demo once per seed into ``out/seed<N>/``, then ``seeds.json``, ``seeds.md`` and
    ``seeds.png`` (per-seed top-1 of every row and evaluation, mean, min, max; the ranking;
    MaskAgain minus every other row per seed).
    A seed whose ``summary.json`` exists with the same settings is reused, not recomputed; the
    teacher is loaded (or re-trained, once, into ``out/teacher``) and shared by every seed.
    Returns ``seeds.json``'s content."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if retrain:
        log.info("re-training the teacher once for every seed (configs/demo/teacher.yaml)")
        retrain_teacher(out / "teacher", probe_sizes=QUICK_SIZES if quick else DEFAULT_SIZES)
        teacher = out / "teacher" / "demo_teacher.safetensors"
    teacher = Path(teacher) if teacher else TEACHER_WEIGHTS
    if not teacher.is_file():
        raise FileNotFoundError(
            f"no teacher at {teacher}; run `maskagain demo --retrain-teacher` to train one"
        )
    summaries: dict[int, dict] = {}
    reused: list[int] = []
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        settings = seed_settings(quick, seed, teacher, rows, student_init, finetune)
        done = reusable_summary(seed_dir / "summary.json", settings)
        if done is not None:
            log.info("seed %d: reusing %s (same settings; delete it to recompute)",
                     seed, seed_dir / "summary.json")  # fmt: skip
            summaries[seed] = done
            reused.append(seed)
            continue
        log.info("seed %d: running the demo into %s", seed, seed_dir)
        summaries[seed] = run_demo(
            seed_dir,
            quick,
            teacher,
            seed=seed,
            rows=rows,
            student_init=student_init,
            finetune=finetune,
            keep_clips=True,  # every seed trains and probes on the same synthetic clips
        )
    clear_prerendered()
    result = demo_report.seeds_summary(summaries)
    result.update(
        runs={str(s): str(out / f"seed{s}" / "summary.json") for s in seeds},
        reused=reused,
        teacher=str(teacher),
        elapsed_seconds=round(time.time() - t0, 1),
        seed_seconds={str(s): summaries[s].get("elapsed_seconds") for s in seeds},
        figure=str(demo_report.draw_seeds(result, out / "seeds.png")),
    )
    (out / "seeds.json").write_text(json.dumps(result, indent=2) + "\n")
    demo_report.write_seeds_report(out, result)
    return result
