"""``maskagain demo --seeds``: the demo once per training seed, a seed's finished run reused
when its settings match, then the spread over seeds (``seeds.json``, ``seeds.md``,
``seeds.png``)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from maskagain.recipes.demo import seeds_report
from maskagain.recipes.demo.run import run_demo
from maskagain.recipes.demo.settings import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    STUDENT_INIT,
    metrics,
    select_rows,
)
from maskagain.recipes.demo.teacher import read_card, resolve_teacher

log = logging.getLogger(__name__)


def seed_settings(
    quick: bool,
    seed: int,
    teacher: Path,
    rows: list[str] | tuple[str, ...] | None = None,
    student_init: str = STUDENT_INIT,
    finetune: bool = False,
) -> dict:
    """What a seed's finished ``summary.json`` must match to be reused: sizes, seed, rows,
    init, evaluations and teacher (its path and training steps; not the whole card, whose wall
    time a resumed ``--retrain-teacher`` rewrites)."""
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    return {
        "quick": quick,
        "seed": seed,
        "rows": list(select_rows(rows)),
        "student_init": student_init,
        "metrics": list(metrics(finetune)),
        "sizes": asdict(sizes),
        "teacher": str(teacher),
        "teacher_steps": read_card(teacher).get("steps"),
    }


def settings_of(summary: dict) -> dict:
    """:func:`seed_settings` as recorded in a demo's ``summary.json``."""
    teacher = summary.get("teacher") or {}
    return {
        "quick": summary.get("quick"),
        "seed": summary.get("seed"),
        "rows": summary.get("rows"),
        "student_init": summary.get("student_init", "trunc_normal"),  # the only init before
        "metrics": summary.get("metrics"),
        "sizes": summary.get("sizes"),
        "teacher": teacher.get("source"),
        "teacher_steps": (teacher.get("card") or {}).get("steps"),
    }


def reusable_summary(path: Path, settings: dict) -> dict | None:
    """The finished demo in ``path`` (its ``summary.json``) if it ran with ``settings``."""
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): running that seed again", path, err)
        return None
    found = settings_of(summary)
    if found != settings or not summary.get("results"):
        changed = sorted(k for k in settings if found.get(k) != settings[k]) or ["no results"]
        log.warning("%s ran with other settings (%s): running that seed again", path, changed)
        return None
    return summary


def run_seeds(
    out: str | Path = "runs/demo",
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    quick: bool = False,
    teacher: str | Path | None = None,
    retrain: bool = False,
    rows: list[str] | tuple[str, ...] | None = None,
    student_init: str = STUDENT_INIT,
    finetune: bool = False,
) -> dict:
    """The demo once per seed into ``out/seed<N>/``, then ``seeds.json``, ``seeds.md`` and
    ``seeds.png`` (per-seed top-1 of every row and evaluation, mean, min, max; the ranking;
    MaskAgain minus every other row per seed).
    A seed whose ``summary.json`` exists with the same settings is reused, not recomputed; the
    teacher is loaded (or re-trained, once, into ``out/teacher``) and shared by every seed.
    Returns ``seeds.json``'s content."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if retrain:
        log.info("re-training the teacher once for every seed (configs/demo/teacher.yaml)")
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    teacher, _ = resolve_teacher(teacher, out / "teacher" if retrain else None, sizes)
    summaries: dict[int, dict] = {}
    reused: list[int] = []
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        settings = seed_settings(quick, seed, teacher, rows, student_init, finetune)
        done = reusable_summary(seed_dir / "summary.json", settings)
        if done is not None:
            log.info("seed %d: reusing %s (same settings; delete it to recompute)",
                     seed, seed_dir / "summary.json")  # fmt: skip
            summaries[seed] = done
            reused.append(seed)
            continue
        log.info("seed %d: running the demo into %s", seed, seed_dir)
        summaries[seed] = run_demo(
            seed_dir,
            quick,
            teacher,
            seed=seed,
            rows=rows,
            student_init=student_init,
            finetune=finetune,
            clips=out / "clips",  # every seed trains and probes on the same synthetic clips
        )
    shutil.rmtree(out / "clips", ignore_errors=True)
    result = seeds_report.seeds_summary(summaries)
    result.update(
        runs={str(s): str(out / f"seed{s}" / "summary.json") for s in seeds},
        reused=reused,
        teacher=str(teacher),
        elapsed_seconds=round(time.time() - t0, 1),
        seed_seconds={str(s): summaries[s].get("elapsed_seconds") for s in seeds},
        figure=str(seeds_report.draw_seeds(result, out / "seeds.png")),
    )
    (out / "seeds.json").write_text(json.dumps(result, indent=2) + "\n")
    seeds_report.write_seeds_report(out, result)
    return result
