"""``maskagain evaluate``: multi-view testing (clips x crops, softmax averaged per video) with
top-1/top-5, per-class accuracy, a confusion matrix and per-video predictions saved as files."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from maskagain.cli.common import add_config_arguments, print_config
from maskagain.config import apply_overrides, check_seeds, deep_merge, from_dict, load_yaml
from maskagain.engine.finetune_config import EvaluateConfig

HELP = (
    "multi-view test of a fine-tuned classifier: top-1/top-5, per-class accuracy, confusion matrix"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, EvaluateConfig, resume=False)
    parser.add_argument(
        "--checkpoint",
        metavar="RUN_OR_FILE",
        help="a finetune run directory (its data config is used unless --config is given), an "
        "exported weights file or a training checkpoint (sets 'checkpoint')",
    )


def load_evaluate_config(args: argparse.Namespace) -> EvaluateConfig:
    """``--config`` (or, without it, the ``data`` section of the run being tested), then the
    overrides, ``--checkpoint`` and ``--out``; validated."""
    tree = load_yaml(args.config) if args.config else {}
    overrides = list(args.overrides or [])
    if args.checkpoint:
        overrides.append(f"checkpoint={args.checkpoint}")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    tree = apply_overrides(tree, overrides)
    run_config = Path(str(tree.get("checkpoint", ""))) / "config.yaml"
    if not args.config and run_config.is_file():
        run_data = (load_yaml(run_config) or {}).get("data") or {}
        tree = deep_merge({"data": run_data}, tree)
    cfg = from_dict(EvaluateConfig, tree)
    cfg.validate()
    check_seeds(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = load_evaluate_config(args)
    if args.dry_run:
        return print_config(cfg)
    from maskagain.engine.finetune_eval import run_evaluate

    summary = run_evaluate(cfg)
    if os.environ.get("RANK", "0") == "0":
        keys = ("top1", "top5", "mean_class_acc", "num_videos", "views")
        print(json.dumps({k: summary[k] for k in keys} | {"out_dir": cfg.out_dir}))
    return 0
