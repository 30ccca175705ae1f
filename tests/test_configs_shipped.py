"""Every shipped config in configs/ loads and validates (files named base*.yaml are partial
configs included through ``defaults`` and are validated through the files that include them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from maskagain.config import load_config
from maskagain.recipes import RECIPES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
COMMANDS = tuple(RECIPES)


def config_class(command: str) -> type:
    return RECIPES[command].config


def command_of(path: Path) -> str:
    """The subcommand a config is for: its folder (configs/<command>/), its name prefix, or a
    ``maskagain <command> --config`` usage line in its comments."""
    for name in (path.parent.name, path.stem.split("_")[0]):
        if name in COMMANDS:
            return name
    usage = re.search(r"maskagain (\w+) --config", path.read_text())
    if usage and usage.group(1) in COMMANDS:
        return usage.group(1)
    raise AssertionError(
        f"{path}: cannot tell which command it is for: put it in configs/<command>/, name it "
        "<command>_*.yaml or add a comment with 'maskagain <command> --config ...'"
    )


SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("base"))


def test_every_command_ships_configs():
    commands = {command_of(p) for p in SHIPPED}
    assert {"pretrain", "distill"} <= commands
    names = {p.relative_to(CONFIGS).as_posix() for p in SHIPPED}
    for required in (
        "distill/k400_vit_b.yaml",
        "distill/k400_vit_s.yaml",
        "distill/ucf101_vit_b.yaml",
        "distill/ucf101_vit_s.yaml",
        "pretrain/videomae_k400_vit_b.yaml",
        "tiny/pretrain.yaml",
        "tiny/distill.yaml",
    ):
        assert required in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_shipped_config_validates(path, tmp_path):
    # the folder configs read the user's folder: data.root is the one key they leave empty
    needs_root = path.parent.name == "folder"
    cfg = load_config(config_class(command_of(path)), path, [f"data.root={tmp_path}"] * needs_root)
    assert cfg.out_dir


def test_configs_ship_inside_the_package():
    package = Path(__file__).resolve().parent.parent / "maskagain" / "configs"
    assert (
        CONFIGS.resolve() == package.resolve() and (package / "folder" / "finetune.yaml").is_file()
    )


def test_distill_configs_mirror_the_paper():
    def load(name):
        return load_config(RECIPES["distill"].config, CONFIGS / "distill" / name)

    table = {  # file: (mask ratio, base lr, alpha, beta, gamma, lambda, drop path, batch/GPU)
        "k400_vit_b.yaml": (0.9, 1.5e-4, 3, 1, 0.2, 0.1, 0.1, 64),
        "k400_vit_s.yaml": (0.9, 1.5e-4, 0.1, 3, 0.1, 0.1, 0.1, 64),
        "ucf101_vit_b.yaml": (0.75, 3e-4, 3, 1, 0.1, 0.1, 0.0, 64),
        "ucf101_vit_s.yaml": (0.75, 3e-4, 1, 3, 0.1, 0.1, 0.1, 64),
    }
    for name, (ratio, lr, a, b, g, lam, dp, bs) in table.items():
        cfg = load(name)
        o = cfg.objective
        assert (cfg.mask.kind, cfg.mask.ratio, cfg.optim.base_lr) == ("tube", ratio, lr), name
        assert (o.alpha, o.beta, o.gamma, o.lam, o.k) == (a, b, g, lam, 10), name
        assert (cfg.student.drop_path_rate, cfg.engine.batch_size) == (dp, bs), name
        assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05
        assert (cfg.schedule.epochs, cfg.schedule.warmup_epochs, cfg.schedule.min_lr) == (
            400,
            40,
            1e-5,
        )
        assert cfg.optim.peak_lr(512) == pytest.approx(lr * 2)


@pytest.mark.parametrize("name", ["k400_vit_b", "ucf101_vit_b"])
def test_fast_distill_configs_repeat_clips_at_the_paper_budget(name):
    """The paper configs keep one clip per video; the fast variants decode a quarter as often
    for the same clips per optimizer step (same peak lr) and the same clips over the run."""
    cls = RECIPES["distill"].config
    paper = load_config(cls, CONFIGS / "distill" / f"{name}.yaml")
    fast = load_config(cls, CONFIGS / "distill" / f"{name}_fast.yaml")
    assert paper.data.num_sample == 1 and fast.data.num_sample == 4
    assert fast.data.repeat == "same_window"
    clips = (paper.engine.batch_size, fast.engine.batch_size * fast.data.num_sample)
    assert clips[0] == clips[1]
    assert fast.schedule.epochs * fast.data.num_sample == paper.schedule.epochs
    assert fast.schedule.warmup_epochs * fast.data.num_sample == paper.schedule.warmup_epochs
    assert (fast.objective, fast.student, fast.mask) == (paper.objective, paper.student, paper.mask)
