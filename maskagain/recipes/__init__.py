"""Recipes: one module per command with ``run(cfg, resume)``; their ``Config`` dataclasses live
together in :mod:`maskagain.recipes.configs`, which imports neither torch nor PyAV.

A recipe builds what it needs from the library (``maskagain.models``, ``losses``, ``data``,
``engine``), runs it and writes a run directory; the library never imports a recipe. The
configurable ones are listed in :data:`RECIPES`, which drives the CLI's subcommands and the test
that validates every shipped config. Modules are imported on first use, so listing them (or
``maskagain --help``) loads nothing heavy. Beside the commands: ``training`` (the one trainer
assembly), ``sources`` (opening a dataset), ``splits`` (split reports) and ``classifier``
(building and loading the classifier).

    recipe = RECIPES["distill"]
    cfg = load_config(
        recipe.config, "configs/distill/k400_vit_s.yaml", ["engine.batch_size=32"],
        relative_to=os.getcwd(),  # the data paths are read against this directory
    )
    summary = recipe.run(cfg, resume="auto")
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A command backed by a config, and what the CLI needs to know about it.

    ``prints``: the summary keys printed when it ends (``a.b`` as ``a_b``, when present).
    ``trains``: it trains, so it checkpoints and can ``--resume``. ``source``: the config key
    naming the checkpoint it reads, if any, and ``shortcut`` the option that sets that key;
    ``more_sources``: keys of other checkpoints it may read (checked like ``source`` by
    ``maskagain validate``). ``example``: an override its config takes, shown in ``--help``.
    """

    name: str
    module: str
    config_name: str
    help: str
    prints: tuple[str, ...]
    trains: bool
    example: str
    source: str | None = None
    shortcut: tuple[str, str] | None = None  # (option, help)
    more_sources: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def config(self) -> type:
        """The recipe's config dataclass (importing it loads no model code)."""
        return getattr(importlib.import_module("maskagain.recipes.configs"), self.config_name)

    def run(self, cfg: Any, resume: str | None = None) -> dict:
        """Run the recipe; returns the summary it wrote to ``summary.json``."""
        return self.load().run(cfg, resume)


_TRAINED = ("completed", "step", "epoch", "final.loss")
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "pretrain",
            "maskagain.recipes.pretrain",
            "PretrainConfig",
            "VideoMAE pre-training of a teacher (encoder on visible tokens, pixel-regression "
            "decoder)",
            _TRAINED,
            trains=True,
            example="optim.base_lr=3e-4",
        ),
        Recipe(
            "distill",
            "maskagain.recipes.distill",
            "DistillConfig",
            "MaskAgain: distil a frozen VideoMAE teacher into a student trained on visible tokens",
            _TRAINED,
            trains=True,
            example="engine.batch_size=32",
            source="teacher.source",
            more_sources=("image_teacher.source",),
        ),
        Recipe(
            "finetune",
            "maskagain.recipes.finetune",
            "FinetuneConfig",
            "fine-tune a video ViT classifier (from a distilled student, a VideoMAE checkpoint "
            "or scratch)",
            (*_TRAINED, "result"),
            trains=True,
            example="optim.base_lr=5e-4",
            source="init.source",
        ),
        Recipe(
            "evaluate",
            "maskagain.recipes.evaluate",
            "EvaluateConfig",
            "multi-view test of a fine-tuned classifier: top-1/top-5, per-class accuracy, "
            "confusion matrix",
            (
                "result",
                "top1",
                "top5",
                "mean_class_acc",
                "num_videos",
                "videos_in_split",
                "bad_files",
                "bad_views",
                "views",
            ),  # fmt: skip
            trains=False,
            example="batch_size=8",
            source="checkpoint",
            shortcut=(
                "--checkpoint",
                "a finetune run directory (its data config is used unless --config is given), "
                "an exported weights file or a training checkpoint (sets 'checkpoint')",
            ),
        ),
        Recipe(
            "probe",
            "maskagain.recipes.probe",
            "ProbeConfig",
            "linear probe on frozen pooled features of an encoder (train/val top-1)",
            ("train_top1", "val_top1", "num_train", "num_val"),
            trains=False,
            example="probe.epochs=20",
            source="encoder",
            shortcut=(
                "--encoder",
                "encoder to probe: a distill/pretrain run directory or weights file "
                "(sets 'encoder')",
            ),
        ),
    )
}
