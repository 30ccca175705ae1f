"""``maskagain demo``: one comparison, stage by stage, into one output directory: the teacher,
the synthetic clips rendered once (into ``OUT/clips``, which every stage's config names as
``data.synthetic_store``; removed at the end), every student row's pre-training, the probes
(and fine-tunes), then ``summary.json``, ``report.md`` and the figures."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from maskagain.data import SyntheticSpec, make_clip
from maskagain.data.synthetic_store import SyntheticStore
from maskagain.models.loading import load_encoder, save_encoder
from maskagain.recipes.demo import report
from maskagain.recipes.demo.headline import headline
from maskagain.recipes.demo.probes import (
    ProbeClips,
    probe_encoders,
    random_encoder,
    standard_error,
)
from maskagain.recipes.demo.rows import (
    demo_store,
    finetune_config,
    prerender_pretraining,
    pretrain_student,
)
from maskagain.recipes.demo.settings import (
    AMD,
    AMD_OBJECTIVE,
    DEFAULT_SIZES,
    GEOMETRY,
    HINT_OBJECTIVE,
    MASK,
    MASKAGAIN_OBJECTIVE,
    MVD,
    MVD_OBJECTIVE,
    NUM_CLASSES,
    PIXEL_DECODER,
    PROBE_NOISE_STD,
    QUICK_SIZES,
    RENDER_WORKERS,
    STUDENT,
    STUDENT_INIT,
    STUDENT_ROWS,
    TEACHER_ARCH,
    TRAINED_ROWS,
    DemoSizes,
    metrics,
    select_rows,
)
from maskagain.recipes.demo.stages import Stages, stage_plan
from maskagain.recipes.demo.teacher import card_summary, resolve_teacher
from maskagain.recipes.finetune import run as run_finetune
from maskagain.visualize import visualize


@dataclass(frozen=True)
class DemoRun:
    """One demo's settings, as its stages read them."""

    out: Path
    quick: bool
    seed: int
    rows: tuple[str, ...]  # the student rows, in the table's order
    student_init: str
    finetune: bool
    clips: SyntheticStore  # the synthetic clips every stage reads, rendered once

    @property
    def store(self) -> str:
        """The clips' folder, as the stages' configs name it (``data.synthetic_store``)."""
        return str(self.clips.folder)

    @property
    def sizes(self) -> DemoSizes:
        return QUICK_SIZES if self.quick else DEFAULT_SIZES


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    teacher: str | Path | None = None,
    retrain: bool = False,
    seed: int = 0,
    rows: list[str] | tuple[str, ...] | None = None,
    student_init: str = STUDENT_INIT,
    finetune: bool = False,
    clips: str | Path | None = None,
) -> dict:
    """Run the comparison (the student ``rows``, default :data:`DEFAULT_ROWS`, every student
    drawn with ``student_init``; fine-tunes only with ``finetune``); returns (and writes)
    ``summary.json``'s content. ``clips``: the folder of the rendered synthetic clips, kept for
    the next call (the synthetic set is the same for every training seed); None: ``out/clips``,
    removed at the end."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    store = demo_store(sizes, Path(clips or out / "clips").resolve())
    run = DemoRun(out, quick, seed, select_rows(rows), student_init, finetune, store)
    stages = Stages(stage_plan(run.rows, finetune, retrain, encoders=len(run.rows) + 3))
    if retrain:
        stages.start("re-training the teacher (configs/demo/teacher.yaml; ~40 min on a 2-core CPU)")
    weights, card = resolve_teacher(teacher, run.out / "teacher" if retrain else None, run.sizes)
    teacher = str(weights)
    try:
        runs, probes, finetunes = _train_and_probe(run, teacher, stages)
    finally:
        if clips is None:
            store.delete()
    stages.start("figures and report")
    table = result_rows(run, card, runs, probes, finetunes)
    figures = draw_figures(out, table, teacher, finetune)
    summary = _summary(run, teacher, card, table)
    summary.update(probes=probes, figures={k: str(v) for k, v in figures.items()})
    summary["profile"] = stages.finish()
    summary["elapsed_seconds"] = round(time.time() - stages.t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report.write_report(out, summary)
    print(report.table(summary), flush=True)
    print("\n".join(headline(summary)), flush=True)
    print(f"wrote {out / 'summary.json'}, {out / 'report.md'} and figures in {out}", flush=True)
    return summary


def _train_and_probe(
    run: DemoRun, teacher: str, stages: Stages
) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict]]:
    """Render the training clips once, pre-train every row, probe (and fine-tune) every encoder:
    ({row: run summary}, {encoder: probes}, {encoder: fine-tune summary})."""
    stages.start(f"rendering the training clips once for every row ({RENDER_WORKERS} processes)")
    prerender_pretraining(run.sizes, run.finetune, run.clips)
    runs, students = _pretrain_students(run, teacher, stages)
    students.update(_untrained_encoders(run))
    probes = _probe_all(run, teacher, students, stages)
    finetunes = _finetune_all(run, teacher, students, stages) if run.finetune else {}
    return runs, probes, finetunes


def _pretrain_students(
    run: DemoRun, teacher: str, stages: Stages
) -> tuple[dict[str, dict], dict[str, Path]]:
    """Pre-train the student of every trained row: ({row: run summary}, {row: weights})."""
    runs: dict[str, dict] = {}
    students: dict[str, Path] = {}
    for name in (name for name in run.rows if name in TRAINED_ROWS):
        stages.start(f"student + {STUDENT_ROWS[name][1]}")
        runs[name], students[name] = pretrain_student(
            name,
            run.sizes,
            run.out,
            teacher,
            run.seed,
            student_init=run.student_init,
            store=run.store,
        )
    return runs, students


def _untrained_encoders(run: DemoRun) -> dict:
    """The untrained student (row ``scratch``, drawn with the run's init) and the teacher-size
    random-init reference, saved under ``out``: {run name: weights path}."""
    encoders = {}
    if "scratch" in run.rows:
        encoders["scratch"] = run.out / "scratch" / "student_init.safetensors"
        scratch = random_encoder({**STUDENT, "init": run.student_init}, run.seed)
        save_encoder(scratch, encoders["scratch"], {"recipe": f"random init ({run.student_init})"})
    encoders["random_init"] = run.out / "random_init" / "encoder.safetensors"
    save_encoder(random_encoder(TEACHER_ARCH, run.seed), encoders["random_init"],
                 {"recipe": "random init"})  # fmt: skip
    return encoders


def _probe_all(
    run: DemoRun, teacher: str, students: dict[str, Path], stages: Stages
) -> dict[str, dict]:
    """Both probes of the teacher (on its clips and on single-frame clips) and every student
    encoder, on one shared set of rendered clips."""
    sizes = run.sizes
    stages.start(f"rendering the probe's clips ({sizes.probe_train_clips} train, "
                 f"{sizes.probe_val_clips} val)")  # fmt: skip
    clips = ProbeClips(sizes, store=run.clips)
    stages.start(f"linear probes of {len(students) + 2} encoders (features, then two probes each)")
    encoders = {"teacher": load_encoder(teacher)}
    encoders.update({k: load_encoder(v) for k, v in students.items()})
    encoders["teacher_single_frame"] = encoders["teacher"]
    return probe_encoders(encoders, sizes, clips, run.seed)


def _finetune_all(
    run: DemoRun, teacher: str, students: dict[str, Path], stages: Stages
) -> dict[str, dict]:
    """Fine-tune the teacher and every student row, each followed by its multi-view test."""
    plan = [("teacher", TEACHER_ARCH, teacher)]
    plan += [(n, STUDENT, "" if n == "scratch" else str(students[n])) for n in run.rows]
    finetunes = {}
    for name, arch, init in plan:
        stages.start(f"fine-tune + {run.sizes.test_crops}-view test: {name}")
        ft = finetune_config(
            run.sizes, run.out / "finetune" / name, arch, init, run.seed, run.store
        )
        finetunes[name] = run_finetune(ft)
    return finetunes


def _summary(run: DemoRun, teacher: str, card: dict, table: list[_Row]) -> dict:
    """``summary.json``'s settings and results (the probes, figures and profile added after)."""
    return {
        "results": [asdict(r) for r in table],
        "quick": run.quick,
        "seed": run.seed,
        "rows": list(run.rows),
        "student_init": run.student_init,
        "finetune": run.finetune,
        "metrics": list(metrics(run.finetune)),
        "probe_noise_std": PROBE_NOISE_STD,
        "sizes": asdict(run.sizes),
        "dataset": {
            "kind": "synthetic",
            "classes": NUM_CLASSES,
            "frames": GEOMETRY["num_frames"],
            "size": GEOMETRY["img_size"],
            "seed": 0,
            "probe_split": "val",
            "finetune_test_split": "test",
            "chance_top1": round(100 / NUM_CLASSES, 2),
        },
        "models": {
            "teacher": {**TEACHER_ARCH, "embed_dim": 128, "depth": 4, "num_heads": 4, **GEOMETRY},
            "student": {**STUDENT, **GEOMETRY, "init": run.student_init},
            "mask": MASK,
            "maskagain_objective": MASKAGAIN_OBJECTIVE,
            "hint_objective": HINT_OBJECTIVE,
            "mvd_objective": {**MVD_OBJECTIVE, "mvd": MVD},
            "amd_objective": {**AMD_OBJECTIVE, "amd": AMD, "pixel_decoder": PIXEL_DECODER},
        },
        "teacher": {"source": teacher, "card": card_summary(card)},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


@dataclass
class _Row:
    """One row of the table (an entry of ``summary.json``'s ``results``)."""

    model: str
    objective: str
    pretrain_epochs: int
    pretrain_seconds: float
    time_probe_top1: float | None = None
    time_probe_se: float | None = None
    probe_top1: float | None = None
    probe_se: float | None = None
    finetune_top1: float | None = None
    finetune_se: float | None = None
    finetune_seconds: float | None = None
    run: str = ""


def result_rows(
    run: DemoRun,
    card: dict,
    runs: dict[str, dict],
    probes: dict[str, dict],
    finetunes: dict[str, dict],
) -> list[_Row]:
    """The table: the teacher (clips, single-frame clips), the random-init reference, then the
    student rows, each with its pre-training cost (epochs, wall seconds), probe (per time
    step and mean-pooled) and fine-tune top-1 with standard errors."""
    teacher_epochs = int(card.get("epochs") or 0)
    teacher_seconds = float(card.get("wall_seconds") or 0.0)
    student = f"student {STUDENT['embed_dim']}x{STUDENT['depth']}"
    table = [
        _Row("teacher vit_micro 128x4", "VideoMAE (shipped)", teacher_epochs, teacher_seconds),
        _Row("teacher, single-frame clips", "VideoMAE (shipped)", teacher_epochs, teacher_seconds),
        _Row("random init vit_micro 128x4", "none (probe reference)", 0, 0.0),
    ]
    for name in run.rows:
        epochs = run.sizes.pretrain_epochs if name in runs else 0
        seconds = runs[name]["wall_s"] if name in runs else 0.0
        table.append(_Row(student, STUDENT_ROWS[name][0], epochs, seconds))
    keys = ["teacher", "teacher_single_frame", "random_init", *run.rows]
    for row, key in zip(table, keys):
        row.run = key
        row.probe_top1 = probes[key]["val_top1"]
        row.probe_se = probes[key]["val_se"]
        row.time_probe_top1 = probes[key].get("time_val_top1")
        row.time_probe_se = probes[key].get("time_val_se")
        if key in finetunes:
            test = finetunes[key].get("test", {})
            row.finetune_top1 = round(float(test["top1"]), 2) if "top1" in test else None
            n = int(test.get("num_videos", 0))
            if row.finetune_top1 is not None:
                row.finetune_se = round(standard_error(row.finetune_top1, n), 2)
            row.finetune_seconds = finetunes[key].get("wall_s")
    return table


def draw_figures(out: Path, rows: list, teacher: str, finetune: bool) -> dict[str, Path]:
    """curves.png, accuracy.png and selections.png (the teacher's selections on a test clip)."""
    accuracy = out / "accuracy.png"
    shown = metrics(finetune)
    figures = {
        "curves": report.draw_curves(out, out / "curves.png"),
        "accuracy": report.draw_accuracy(rows, accuracy, 100 / NUM_CLASSES, shown),
    }
    spec = SyntheticSpec(GEOMETRY["img_size"], GEOMETRY["num_frames"], NUM_CLASSES)
    frames, label = make_clip(spec, seed=0, split="test", index=0)
    seed = report.moving_mask_seed(frames, GEOMETRY["patch_size"], GEOMETRY["tubelet_size"])
    figures["selections"] = visualize(
        teacher,
        frames,
        out / "selections.png",
        title=f"teacher on a test clip ({spec.class_names[label]}), tube mask seed {seed}: "
        "cyan = query token, red = selected",
        seed=seed,
        k_global=MASKAGAIN_OBJECTIVE["k"],  # the demo objective's top-k
        k_local=MASKAGAIN_OBJECTIVE["k_local"],
        k_hint=MASKAGAIN_OBJECTIVE["k"],
    )
    return figures
