"""``maskagain distill``: MaskAgain distillation of a student from a frozen teacher."""

from __future__ import annotations

import argparse
import json
import os

from maskagain.cli.common import add_config_arguments, config_from_args, print_config
from maskagain.config import DistillConfig

HELP = "MaskAgain: distil a frozen VideoMAE teacher into a student trained on visible tokens"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DistillConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, DistillConfig)
    if args.dry_run:
        return print_config(cfg)
    from maskagain.engine.distill import run_distill

    summary = run_distill(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        keys = ("completed", "step", "epoch")
        print(json.dumps({k: summary[k] for k in keys} | {"out_dir": cfg.out_dir}))
    return 0
