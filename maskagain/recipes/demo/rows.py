"""The demo's rows as recipe configs: the synthetic data and engine sections every stage shares,
each student row's pre-training config (VideoMAE or a distillation objective), the fine-tune's,
and the row's pre-training itself."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from maskagain.config import load_config
from maskagain.data import DataConfig
from maskagain.data.datasets import synthetic_spec
from maskagain.data.synthetic_store import SyntheticStore
from maskagain.recipes.configs import DistillConfig, FinetuneConfig, PretrainConfig
from maskagain.recipes.demo.settings import (
    DISTILL_ROWS,
    GEOMETRY,
    MASK,
    NUM_CLASSES,
    PIXEL_DECODER,
    RENDER_WORKERS,
    STUDENT,
    STUDENT_INIT,
    DemoSizes,
)
from maskagain.recipes.distill import run as run_distill
from maskagain.recipes.pretrain import run as run_pretrain


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


def _pretrain_common(sizes: DemoSizes, out_dir: Path, seed: int, store: str) -> dict:
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "data": data_section(sizes, sizes.pretrain_clips, synthetic_store=store),
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
    store: str = "",
) -> PretrainConfig:
    """The VideoMAE row's config (student drawn with ``init``; dotted ``overrides`` last;
    ``store``: the folder of prerendered clips, empty: rendered on the fly)."""
    tree = _pretrain_common(sizes, out_dir, seed, store)
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
    store: str = "",
) -> DistillConfig:
    """A distillation row's config; ``sections``: extra config sections (e.g. ``mvd``); the
    student drawn with ``init``; dotted ``overrides`` applied last; ``store``: the folder of
    prerendered clips (empty: rendered on the fly)."""
    tree = _pretrain_common(sizes, out_dir, seed, store)
    tree["student"] = {**STUDENT, **GEOMETRY, "drop_path_rate": 0.1, "init": init}
    tree["teacher"] = {"source": teacher, "precision": "fp32"}
    tree["objective"] = copy.deepcopy(objective)
    tree.update(copy.deepcopy(sections or {}))
    return _build(DistillConfig, tree, overrides)


def finetune_config(
    sizes: DemoSizes, out_dir: Path, arch: dict, init: str = "", seed: int = 0, store: str = ""
) -> FinetuneConfig:
    """A fine-tune's config (``store``: the folder of prerendered clips, empty: on the fly)."""
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
            synthetic_store=store,
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


def _build(cls: type, tree: dict, overrides: Sequence[str] = ()):
    return load_config(cls, base=tree, overrides=overrides)


def demo_store(sizes: DemoSizes, folder: str | Path) -> SyntheticStore:
    """The store of the demo's synthetic clips in ``folder`` (those already there are kept)."""
    cfg = DataConfig(**data_section(sizes, sizes.pretrain_clips))
    return SyntheticStore(folder, synthetic_spec(cfg), cfg.synthetic_seed)


def prerender_pretraining(
    sizes: DemoSizes, finetune: bool, store: SyntheticStore, workers: int = RENDER_WORKERS
) -> int:
    """Render into ``store`` every training clip the rows (and fine-tunes) will read, once for
    all of them: ``pretrain_epochs`` x ``pretrain_clips`` (and ``finetune_epochs`` x
    ``finetune_clips``) clips of the train split. Returns how many were rendered."""
    clips = {(e, i) for e in range(sizes.pretrain_epochs) for i in range(sizes.pretrain_clips)}
    if finetune:
        clips |= {(e, i) for e in range(sizes.finetune_epochs) for i in range(sizes.finetune_clips)}
    return store.render("train", sorted(clips), workers)


def pretrain_student(
    name: str,
    sizes: DemoSizes,
    out: Path,
    teacher: str,
    seed: int,
    overrides: Sequence[str] = (),
    student_init: str = STUDENT_INIT,
    store: str = "",
) -> tuple[dict, Path]:
    """Pre-train the student of row ``name`` into ``out/name`` from init ``student_init``, with
    the dotted config ``overrides`` (e.g. ``schedule.epochs=10``) applied after it, reading the
    clips ``store`` holds (a folder; empty: rendered on the fly): (run summary, encoder
    weights)."""
    if name == "videomae":
        cfg = videomae_student_config(sizes, out / name, seed, student_init, overrides, store)
        return run_pretrain(cfg), out / name / "teacher.safetensors"
    objective, sections = DISTILL_ROWS[name]
    cfg = distill_config(
        sizes, out / name, teacher, objective, seed, sections, student_init, overrides, store
    )
    return run_distill(cfg, resume=None), out / name / "student.safetensors"
