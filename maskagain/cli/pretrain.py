"""``maskagain pretrain``: VideoMAE pre-training of a teacher encoder."""

from __future__ import annotations

import argparse
import json
import os

from maskagain.cli.common import add_config_arguments, config_from_args, print_config
from maskagain.config import PretrainConfig

HELP = "VideoMAE pre-training of a teacher (encoder on visible tokens, pixel-regression decoder)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, PretrainConfig)
    if args.dry_run:
        return print_config(cfg)
    from maskagain.engine.pretrain import run_pretrain

    summary = run_pretrain(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        keys = ("completed", "step", "epoch")
        print(json.dumps({k: summary[k] for k in keys} | {"out_dir": cfg.out_dir}))
    return 0
