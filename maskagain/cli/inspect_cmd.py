"""``maskagain inspect``: say what a checkpoint is (format, architecture, head, provenance)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "print what a checkpoint is: format, architecture, input size, parameters, head, training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="run directory, .safetensors, official .pth or Hugging Face directory/id"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--num-heads", type=int, help="attention heads, if the format omits them")
    parser.add_argument("--img-size", type=int, help="input size, if the format omits it")
    parser.add_argument("--num-frames", type=int, help="clip length, if the format omits it")


def run(args: argparse.Namespace) -> int:
    from maskagain.checkpoints import CheckpointError
    from maskagain.recipes.inspect import format_report, inspect_checkpoint

    overrides = {
        k: v
        for k, v in (
            ("num_heads", args.num_heads),
            ("img_size", args.img_size),
            ("num_frames", args.num_frames),
        )
        if v is not None
    }
    try:
        report = inspect_checkpoint(args.source, **overrides)
    except (CheckpointError, OSError, TypeError, ValueError) as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: cannot inspect {args.source}: {message}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
