"""``maskagain demo``: the whole comparison on the embedded synthetic set with the shipped teacher."""

from __future__ import annotations

import argparse

HELP = (
    "compare MaskAgain with VideoMAE, Hint and no pre-training on the synthetic set "
    "(shipped teacher; minutes on a CPU)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output directory (default runs/demo)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (under 2 minutes): a smoke test, the numbers mean nothing",
    )
    parser.add_argument(
        "--teacher",
        metavar="FILE",
        help="teacher weights to distil from (default: the shipped maskagain/assets teacher)",
    )
    parser.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="first re-train the teacher with configs/demo/teacher.yaml (4000 steps: 39 minutes "
        "on a busy 2-core CPU with OMP_NUM_THREADS=1; resumable: run again to continue) and "
        "use it",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the demo's models are too small to gain from more, "
        "and on a busy 2-core machine 2 threads made distillation ~10x slower)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from maskagain.demo import run_demo

    previous = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run_demo(
            out=args.out,
            quick=args.quick,
            teacher=args.teacher,
            retrain=args.retrain_teacher,
            seed=args.seed,
        )
    finally:
        torch.set_num_threads(previous)
    return 0
