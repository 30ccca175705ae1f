"""``maskagain demo``: the whole comparison on the embedded synthetic set with the shipped teacher."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskagain.recipes.demo.settings import DEFAULT_ROWS, ROW_NAMES

HELP = (
    "compare MaskAgain with VideoMAE, Hint, AMD (MVD with --rows all) and no pre-training on "
    "the synthetic set (shipped teacher; about 5 minutes on a 2-core CPU)"
)
# the students' init schemes (maskagain.models.init.INIT_SCHEMES, which imports torch; listed
# here so --help stays light)
INITS = ("official", "trunc_normal")


class _DistinctSeeds(argparse.Action):
    """``--seeds``: a usage error when a seed is repeated."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: list[int],
        option_string: str | None = None,
    ) -> None:
        if len(set(values)) != len(values):
            parser.error(f"argument {option_string}: a seed is repeated ({values})")
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output directory (default runs/demo)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (about 10 s on a CPU): a smoke test, the numbers mean nothing",
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
    seeds = parser.add_mutually_exclusive_group()
    # default None, not 0: argparse only sees a conflict when a value differs from the default
    seeds.add_argument(
        "--seed", type=int, default=None, help="seed of every training run (default 0)"
    )
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        action=_DistinctSeeds,
        metavar="N",
        help="run the demo once per seed into OUT/seed<N>/, then write OUT/seeds.json, seeds.md "
        "and seeds.png (per-seed top-1, mean, min, max; the ranking; MaskAgain minus every "
        "other row per seed); a seed "
        "whose summary.json already exists with the same settings is reused",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=(*ROW_NAMES, "all"),
        metavar="NAME",
        help=f"student rows to run, among {', '.join(ROW_NAMES)}, or all (default: "
        f"{' '.join(DEFAULT_ROWS)}); the teacher and random-init reference rows always run. "
        "Each row adds its pre-training and probe (and fine-tune): e.g. --rows maskagain hint "
        "for a shorter comparison",
    )
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="also fine-tune every model and test it on 3 views (about 50 s a model on a 2-core "
        "CPU); off by default: over training seeds that column swings by tens of points, so it "
        "cannot rank",
    )
    parser.add_argument(
        "--student-init",
        choices=INITS,
        default="official",
        help="how every student (and the untrained student row) is drawn: official (default; "
        "xavier-uniform, the official pre-training code of VideoMAE, MaskAgain, MVD and AMD) or "
        "trunc_normal (truncated normal 0.02, VideoMAE's fine-tuning init)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the demo's models are too small to gain from more, "
        "and on a busy 2-core machine 2 threads made distillation ~10x slower)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from maskagain.recipes.demo.run import run_demo

    previous = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        if args.seeds:
            _run_seeds(args)
        else:
            run_demo(
                out=args.out,
                quick=args.quick,
                teacher=args.teacher,
                retrain=args.retrain_teacher,
                seed=0 if args.seed is None else args.seed,
                rows=_rows(args.rows),
                student_init=args.student_init,
                finetune=args.finetune,
            )
    finally:
        torch.set_num_threads(previous)
    return 0


def _rows(rows: list[str] | None) -> list[str] | None:
    """``--rows``: "all" alone or row names, not both."""
    if rows and "all" in rows and len(rows) > 1:
        raise SystemExit(f"maskagain demo: --rows takes 'all' alone or row names, got {rows}")
    return rows


def _run_seeds(args: argparse.Namespace) -> None:
    from maskagain.recipes.demo.headline import seeds_headline
    from maskagain.recipes.demo.seeds import run_seeds
    from maskagain.recipes.demo.seeds_report import (
        margins_table,
        ranking_lines,
        seeds_table,
        seeds_wall_time,
    )

    result = run_seeds(
        out=args.out,
        seeds=args.seeds,
        quick=args.quick,
        teacher=args.teacher,
        retrain=args.retrain_teacher,
        rows=_rows(args.rows),
        student_init=args.student_init,
        finetune=args.finetune,
    )
    for seed in result["reused"]:
        print(f"seed {seed}: reused {result['runs'][str(seed)]} (same settings, not recomputed)")
    print(seeds_table(result), flush=True)
    print("\n".join(seeds_headline(result)), flush=True)
    print("\n".join(ranking_lines(result)), flush=True)
    print(margins_table(result), flush=True)
    print(seeds_wall_time(result), flush=True)
    out = Path(args.out)
    print(f"wrote {out / 'seeds.json'}, {out / 'seeds.md'} and {out / 'seeds.png'}", flush=True)
