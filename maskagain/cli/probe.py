"""``maskagain probe``: a linear probe on frozen, mean-pooled encoder features, the fast quality
signal of a pre-trained or distilled encoder (train and val top-1)."""

from __future__ import annotations

import argparse
import json
import os

from maskagain.cli.common import add_config_arguments, config_from_args, print_config
from maskagain.engine.finetune_config import ProbeConfig

HELP = "linear probe on frozen mean-pooled features of an encoder (train/val top-1)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ProbeConfig, resume=False)
    parser.add_argument(
        "--encoder",
        metavar="RUN_OR_FILE",
        help="encoder to probe: a distill/pretrain run directory or weights file (sets 'encoder')",
    )


def run(args: argparse.Namespace) -> int:
    if args.encoder:
        args.overrides = [*(args.overrides or []), f"encoder={args.encoder}"]
    cfg = config_from_args(args, ProbeConfig)
    if args.dry_run:
        return print_config(cfg)
    from maskagain.engine.finetune_eval import run_probe

    summary = run_probe(cfg)
    if os.environ.get("RANK", "0") == "0":
        keys = ("train_top1", "val_top1", "num_train", "num_val")
        print(json.dumps({k: summary[k] for k in keys} | {"out_dir": cfg.out_dir}))
    return 0
