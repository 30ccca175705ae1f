"""``maskagain finetune``: supervised fine-tuning of a distilled student, a VideoMAE checkpoint
or a model from scratch (layer-wise lr decay, mixup/cutmix, drop path, optional EMA)."""

from __future__ import annotations

import argparse
import json
import os

from maskagain.cli.common import add_config_arguments, config_from_args, print_config
from maskagain.engine.finetune_config import FinetuneConfig

HELP = (
    "fine-tune a video ViT classifier (from a distilled student, a VideoMAE checkpoint or scratch)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, FinetuneConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, FinetuneConfig)
    if args.dry_run:
        return print_config(cfg)
    from maskagain.engine.finetune import run_finetune

    summary = run_finetune(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        keys = ("completed", "step", "epoch")
        line = {k: summary[k] for k in keys} | {"out_dir": cfg.out_dir}
        if "test" in summary:
            line["test_top1"] = summary["test"]["top1"]
        print(json.dumps(line))
    return 0
