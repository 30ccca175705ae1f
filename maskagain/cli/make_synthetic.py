"""``maskagain make-synthetic``: write the embedded motion dataset as H.264 mp4 files + lists."""

from __future__ import annotations

import argparse
import sys
import time

HELP = "write the synthetic motion dataset (H.264 mp4 + VideoMAE list files) to a folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=2000, help="training clips (default 2000)")
    parser.add_argument("--val", type=int, default=400, help="validation clips (default 400)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    parser.add_argument("--frames", type=int, default=32, help="frames per video (default 32)")
    parser.add_argument(
        "--classes",
        type=int,
        default=8,
        help="motion classes, from 2 to the number of built-in motions (default 8)",
    )
    parser.add_argument(
        "--distractor", type=float, default=0.2, help="distractor strength in [0, 1] (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes (default 0: one per CPU core, max 8)"
    )


def run(args: argparse.Namespace) -> int:
    from maskagain.data.synthetic import MOTIONS, SyntheticSpec, write_synthetic_dataset

    if not 2 <= args.classes <= len(MOTIONS):
        print(
            f"maskagain make-synthetic: error: --classes must be in 2..{len(MOTIONS)} "
            f"(the built-in motions: {', '.join(MOTIONS)}), got {args.classes}",
            file=sys.stderr,
        )
        return 2
    spec = SyntheticSpec(
        size=args.size, frames=args.frames, num_classes=args.classes, distractor=args.distractor
    )
    start = time.perf_counter()
    lists = write_synthetic_dataset(
        args.out, spec, args.train, args.val, seed=args.seed, workers=args.workers
    )
    print(
        f"wrote {args.train} train + {args.val} val clips ({args.frames} frames of "
        f"{args.size}x{args.size}, {args.classes} classes) in {time.perf_counter() - start:.1f}s"
    )
    for split, path in lists.items():
        print(f"  {split}: {path}")
    print(
        f"use: data.kind=list data.root={args.out} data.train_list={lists['train']} "
        f"data.val_list={lists['val']}"
    )
    return 0
