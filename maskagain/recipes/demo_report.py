"""The demo's outputs: the table, ``report.md`` and the PNG figures (matplotlib, Agg)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from maskagain.engine.metrics import read_log

# run directory (under the demo's --out) -> label; runs a demo did not do are left out
PRETRAIN_CURVES = {
    "maskagain": "MaskAgain distillation (student)",
    "videomae": "VideoMAE (student)",
    "hint": "Hint distillation (student)",
    "mvd": "MVD distillation (student)",
    "amd": "AMD distillation (student)",
}
FINETUNE_CURVES = {
    "finetune/teacher": "fine-tune: teacher",
    "finetune/maskagain": "fine-tune: MaskAgain student",
    "finetune/videomae": "fine-tune: VideoMAE student",
    "finetune/hint": "fine-tune: Hint student",
    "finetune/mvd": "fine-tune: MVD student",
    "finetune/amd": "fine-tune: AMD student",
    "finetune/scratch": "fine-tune: scratch student",
}
# rows pre-trained by the demo (their pre-training is a stage of the profile)
TRAINED = tuple(PRETRAIN_CURVES)
# rows that are references, not methods: left out of the comparisons and the ranking
REFERENCES = ("teacher", "teacher_single_frame", "random_init")
COLUMNS = (
    "model",
    "objective",
    "pretrain_epochs",
    "pretrain_seconds",
    "time_probe_top1",
    "probe_top1",
    "finetune_top1",
)
# the evaluations of every row, each a top-1 column with a ``_se`` twin: name -> label
METRICS = {
    "time_probe_top1": "probe per time step",
    "probe_top1": "probe mean-pooled",
    "finetune_top1": "fine-tune",
}
# the column the reports rank methods by: the linear probe on features pooled per time step,
# for its stability: its own noise on one encoder is small (``summary["probe_noise_std"]``,
# `python -m benchmarks.demo_noise`), while the fine-tune column swings by tens of points with
# the training seed (a few hundred steps from five-epoch students; ``maskagain demo --finetune``)
RANK_METRIC = "time_probe_top1"


def metrics(finetune: bool) -> dict[str, str]:
    """The evaluations a demo ran (:data:`METRICS`, the fine-tune only with ``finetune``)."""
    return {k: v for k, v in METRICS.items() if finetune or k != "finetune_top1"}


def _metrics_of(summary: dict) -> dict[str, str]:
    """The evaluations recorded in a ``summary.json`` (or a seeds result)."""
    return {k: METRICS[k] for k in summary.get("metrics", METRICS)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_curves(out: Path, path: Path) -> Path:
    """Training loss against step for every objective (one panel per pre-training; then the
    fine-tunes, and the pre-training losses against wall time)."""
    plt = _plt()
    fig, axes = plt.subplots(3, 3, figsize=(12, 9.5))
    axes = axes.flatten()
    pretrain = [(r, label) for r, label in PRETRAIN_CURVES.items() if (out / r).is_dir()]
    slots = [*axes[:3], *axes[5:]]  # axes[3]: fine-tunes, axes[4]: loss against wall time
    panels = slots[: len(pretrain)]
    for ax in slots[len(pretrain) :]:
        ax.axis("off")
    for ax, (run, label) in zip(panels, pretrain):
        records = [r for r in read_log(out / run / "log.jsonl") if "loss" in r]
        keys = (
            [k for k in records[0] if k not in ("time", "step", "epoch", "lr")] if records else []
        )
        for key in keys:
            if key.endswith("clips_per_s") or key in ("loss", "data_wait"):
                continue
            if all(isinstance(r.get(key), (int, float)) for r in records):
                steps = [r["step"] for r in records]
                ax.plot(steps, [r[key] for r in records], lw=1, marker=".", label=key)
        if records:
            steps = [r["step"] for r in records]
            ax.plot(steps, [r["loss"] for r in records], lw=2, color="black", label="total loss")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    ax = axes[3]
    for run, label in FINETUNE_CURVES.items():
        records = [r for r in read_log(out / run / "log.jsonl") if "loss" in r]
        if records:
            ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label[11:])
    ax.set_title("fine-tuning loss (cross-entropy, label smoothing 0.1)", fontsize=9)
    ax.set_xlabel("step")
    if ax.lines:
        ax.legend(fontsize=7)
    else:  # no fine-tune ran (``maskagain demo --finetune`` adds them)
        ax.axis("off")
    ax = axes[4]
    for run, label in pretrain:
        records = [r for r in read_log(out / run / "log.jsonl") if "loss" in r]
        if records:
            ax.plot([r["time"] - records[0]["time"] for r in records], [r["loss"] for r in records],
                    label=label)  # fmt: skip
    ax.set_title("pre-training loss against wall time", fontsize=9)
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def row_label(model: str, objective: str) -> str:
    """A model row's x-axis label in the accuracy figures."""
    return textwrap.fill(f"{model}: {objective}", 20)


def draw_accuracy(
    rows: list, path: Path, chance: float, shown: dict[str, str] | None = None
) -> Path:
    """Top-1 of every evaluation (``shown``, default :data:`METRICS`) per model, with
    one-standard-error bars."""
    plt = _plt()
    shown = shown or METRICS
    labels = [row_label(r.model, r.objective) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(shown)
    for k, (metric, name) in enumerate(shown.items()):
        offset = (k - (len(shown) - 1) / 2) * width
        vals = [getattr(r, metric) for r in rows]
        errs = [getattr(r, metric.replace("top1", "se")) or 0.0 for r in rows]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar(x + offset, heights, width, yerr=errs, capsize=3, label=name)
        for bar, v in zip(bars, vals):
            text = "n/a" if v is None else f"{v:.1f}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, text,
                    ha="center", fontsize=7)  # fmt: skip
    ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.1f}%)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    tuned = " and fine-tune multi-view (test)" if "finetune_top1" in shown else ""
    ax.set_title(f"synthetic motion classes: linear probes (val){tuned}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def moving_mask_seed(
    frames: np.ndarray, patch: int, tubelet: int, ratio: float = 0.75, tries: int = 20
) -> int:
    """The tube-mask seed (of ``tries``) leaving the most frame-to-frame change visible, so the
    figure shows the moving object rather than a background the mask happened to keep."""
    import torch

    from maskagain.masking import tube_mask

    t, h, w, _ = frames.shape
    diff = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(0, 3))  # (H, W)
    energy = diff.reshape(h // patch, patch, w // patch, patch).mean(axis=(1, 3)).flatten()
    grid = (t // tubelet, h // patch, w // patch)
    best, best_energy = 0, -1.0
    for seed in range(tries):
        mask = tube_mask(1, grid, ratio, generator=torch.Generator().manual_seed(seed))
        visible = ~mask[0, : grid[1] * grid[2]].numpy()
        if energy[visible].sum() > best_energy:
            best, best_energy = seed, float(energy[visible].sum())
    return best


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(summary: dict) -> str:
    """The results as a Markdown table (also printed on the console)."""
    head = ["model", "objective", "pre-train epochs", "pre-train wall (s)"]
    head += [f"{name} top-1 (%)" for name in _metrics_of(summary).values()]
    body = []
    for r in summary["results"]:
        cells = [r["model"], r["objective"], str(r["pretrain_epochs"]),
                 _fmt(float(r["pretrain_seconds"]), 0)]  # fmt: skip
        for metric in _metrics_of(summary):
            value, se = r.get(metric), r.get(metric.replace("top1", "se"))
            cells.append("-" if value is None else f"{_fmt(value)} ± {_fmt(se)}")
        body.append(cells)
    return markdown_table(head, body)


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table: a header row, the separator, then one line per row of cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _card_probe_sizes(card: dict) -> str:
    """The probe set a teacher card's numbers were measured on, in words (cards written before
    the probe's val set got its own size name it ``eval_clips``)."""
    sizes = card.get("probe_settings") or {}
    val = sizes.get("probe_val_clips", sizes.get("eval_clips", "?"))
    return f"{sizes.get('probe_train_clips', '?')} training clips, top-1 on {val} val clips"


def write_report(out: Path, summary: dict) -> Path:
    sizes, data = summary["sizes"], summary["dataset"]
    card = summary["teacher"]["card"]
    rows = {r["run"]: r for r in summary["results"]}
    lines = [
        "# MaskAgain demo",
        "",
        f"Synthetic motion set: {data['classes']} classes defined only by motion, "
        f"{data['frames']} frames of {data['size']}x{data['size']}, clips generated on the fly "
        f"(seed {data['seed']}; chance {data['chance_top1']}%). Probes: a linear classifier on "
        "frozen features, pooled per time step (the mean over space at each tubelet step, "
        "steps concatenated: the order of events survives; the column the demo ranks by) or "
        f"mean-pooled over all tokens; {sizes['probe_train_clips']}"
        f" training clips, top-1 on {sizes['probe_val_clips']} val clips. "
        + _finetune_words(summary)
        + "± is one binomial standard error: evaluation noise only. Every training run uses one "
        f"seed ({summary.get('seed', 0)}); `maskagain demo --seeds 0 1 2` repeats the comparison "
        "over three to see the training-seed spread.",
        "",
        f"Student budget: {sizes['pretrain_epochs']} epochs x {sizes['pretrain_clips']} fresh clips "
        f"per objective, same student ({summary['models']['student']['embed_dim']} wide, "
        f"{summary['models']['student']['depth']} blocks, drawn with the "
        f"`{summary['models']['student'].get('init', 'trunc_normal')}` init) and tube mask (75%).",
        "",
        table(summary),
        "",
        f"Total wall time: {summary['elapsed_seconds']:.0f} s"
        f"{' (--quick: too small to mean anything)' if summary['quick'] else ''}.",
        "",
        "## Teacher",
        "",
        f"Shipped teacher: `{summary['teacher']['source']}`, VideoMAE pre-training for "
        f"{card.get('epochs', '?')} epochs ({card.get('steps', '?')} steps, "
        f"{card.get('clips_seen', '?')} clips) in {_fmt(card.get('wall_seconds'), 0)} s. "
        f"Its card's probe ({_card_probe_sizes(card)}): "
        + ", ".join(
            f"{k} {v.get('val_top1')}% (train {v.get('train_top1')}%)"
            for k, v in (card.get("probe") or {}).items()
        ),
        "",
        "## Reading the numbers",
        "",
    ]
    t, r0, sf = rows.get("teacher"), rows.get("random_init"), rows.get("teacher_single_frame")
    if t and r0:
        gap = t["probe_top1"] - r0["probe_top1"]
        lines.append(
            f"- learnability: the teacher's probe is {gap:+.1f} points over a randomly initialised "
            f"encoder of the same size ({t['probe_top1']:.1f} vs {r0['probe_top1']:.1f}; a teacher "
            f"worth shipping clears +15){'' if gap >= 15 else ': below that bar'}."
        )
    if sf:
        lines.append(
            f"- motion needed: on single-frame clips (middle frame repeated) the teacher's probe "
            f"gets {sf['probe_top1']:.1f}% (chance {data['chance_top1']}%)."
        )
    lines += ["", "## Headline", "", *headline(summary)]
    lines += [
        "",
        "## Figures",
        "",
        "- `curves.png`: training losses of every objective and of every fine-tune",
        "- `accuracy.png`: probe and fine-tune top-1 with standard errors",
        "- `selections.png`: the teacher's MAGlobal / MALocal / MAHint selections on a test clip",
        "",
        "![accuracy](accuracy.png)",
        "",
        "![curves](curves.png)",
        "",
        "![selections](selections.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _finetune_words(summary: dict) -> str:
    sizes = summary["sizes"]
    if "finetune_top1" not in _metrics_of(summary):
        return (
            "No fine-tune (`maskagain demo --finetune` adds one: its column swings by tens of "
            "points with the training seed, so it cannot rank). "
        )
    return (
        f"Fine-tune: {sizes['finetune_epochs']} epochs x {sizes['finetune_clips']} fresh clips, "
        f"then a {sizes['test_crops']}-crop test on {sizes['test_videos']} test videos. "
    )


# ------------------------------------------------------------------------------ over seeds


def spread(per_seed: dict[str, float | None]) -> dict | None:
    """``{"per_seed", "mean", "min", "max", "range"}`` of one number over seeds (None if any is
    missing)."""
    values = list(per_seed.values())
    if not values or any(v is None for v in values):
        return None
    return {
        "per_seed": dict(per_seed),
        "mean": round(float(np.mean(values)), 2),
        "min": min(values),
        "max": max(values),
        "range": round(max(values) - min(values), 2),
    }


def seeds_summary(summaries: dict[int, dict]) -> dict:
    """Per-seed top-1 of every demo row and evaluation (:data:`METRICS`: mean, min, max,
    range), the student rows ranked by :data:`RANK_METRIC` (mean over seeds) with the largest
    range among them, and MaskAgain minus every other student row in every seed, from each
    seed's ``summary.json`` content."""
    seeds = list(summaries)
    by_run = {s: {r["run"]: r for r in summaries[s]["results"]} for s in seeds}
    rows = []
    for first in summaries[seeds[0]]["results"]:
        key = first["run"]
        row = {"run": key, "model": first["model"], "objective": first["objective"]}
        for metric in METRICS:
            row[metric] = spread({str(s): by_run[s][key].get(metric) for s in seeds})
        row["pretrain_seconds"] = spread(
            {str(s): float(by_run[s][key]["pretrain_seconds"]) for s in seeds}
        )
        cpu = {str(s): _stage_cpu(summaries[s], key) for s in seeds}
        row["pretrain_cpu_seconds"] = spread(cpu) if key in TRAINED else None
        row["same_every_seed"] = all(
            by_run[s][key].get(m) == first.get(m) for s in seeds for m in METRICS
        )
        rows.append(row)
    students = [r for r in rows if r["run"] not in REFERENCES and r[RANK_METRIC]]
    ranked = sorted(students, key=lambda r: -r[RANK_METRIC]["mean"])
    ranking = {
        "metric": RANK_METRIC,
        "order": [r["run"] for r in ranked],
        "mean": {r["run"]: r[RANK_METRIC]["mean"] for r in ranked},
        "max_range": max((r[RANK_METRIC]["range"] for r in ranked), default=None),
    }
    versus = {
        other: _margins(by_run, seeds, other)
        for other in (r["run"] for r in rows)
        if other not in (*REFERENCES, "maskagain") and "maskagain" in by_run[seeds[0]]
    }  # empty when the MaskAgain row did not run (``--rows``)
    return {
        "seeds": seeds,
        "metrics": list(_metrics_of(summaries[seeds[0]])),
        "probe_noise_std": summaries[seeds[0]].get("probe_noise_std"),
        "student_init": summaries[seeds[0]].get("student_init", "trunc_normal"),
        "quick": all(summaries[s]["quick"] for s in seeds),
        "chance_top1": summaries[seeds[0]]["dataset"]["chance_top1"],
        "rows": rows,
        "ranking": ranking,
        "maskagain_minus": versus,
    }


def _stage_cpu(summary: dict, stage: str) -> float | None:
    """CPU seconds of one stage of a demo's profile (None: not profiled)."""
    return next((p["cpu_s"] for p in summary.get("profile", []) if p["stage"] == stage), None)


def _margins(by_run: dict, seeds: list, other: str) -> dict:
    """MaskAgain minus row ``other`` on every metric in every seed, with their spread and
    whether MaskAgain is ahead in every seed."""
    per_seed: dict[str, dict[str, float | None]] = {}
    for s in seeds:
        ma, o = by_run[s].get("maskagain"), by_run[s].get(other)
        per_seed[str(s)] = {
            metric: (
                None
                if not ma or not o or ma.get(metric) is None or o.get(metric) is None
                else round(ma[metric] - o[metric], 2)
            )
            for metric in METRICS
        }
    out: dict = {"per_seed": per_seed}
    for metric in METRICS:
        stats = spread({s: m[metric] for s, m in per_seed.items()})
        out[metric] = stats
        out[f"{metric}_ahead_every_seed"] = None if stats is None else stats["min"] > 0
    return out


def _per_seed(stats: dict | None, same: bool) -> str:
    if stats is None:
        return "-"
    values = list(stats["per_seed"].values())
    if same:
        return f"{_fmt(values[0])} (every seed)"
    return " / ".join(_fmt(v) for v in values)


def _mean_range(stats: dict | None) -> str:
    if stats is None:
        return "-"
    return f"{_fmt(stats['mean'])} [{_fmt(stats['min'])}, {_fmt(stats['max'])}]"


def seeds_table(result: dict) -> str:
    """Every demo row's top-1 per seed with mean [min, max], one pair of columns per
    evaluation (the ranking one first), as a Markdown table."""
    seeds = "/".join(str(s) for s in result["seeds"])
    head = ["model", "objective"]
    for name in _metrics_of(result).values():
        head += [f"{name}, seeds {seeds}", "mean [min, max]"]
    body = []
    for r in result["rows"]:
        cells = [r["model"], r["objective"]]
        for metric in _metrics_of(result):
            cells += [_per_seed(r[metric], r["same_every_seed"]), _mean_range(r[metric])]
        body.append(cells)
    return markdown_table(head, body)


def margins_table(result: dict, metric: str = RANK_METRIC) -> str:
    """MaskAgain minus every other student row on ``metric`` in every seed, as a Markdown
    table (one column per seed, then the mean); "" without a MaskAgain row."""
    if not result["maskagain_minus"]:
        return ""
    seeds = [str(s) for s in result["seeds"]]
    objective = {r["run"]: r["objective"] for r in result["rows"]}
    head = [f"MaskAgain minus ({METRICS[metric]})", *(f"seed {s}" for s in seeds), "mean"]
    body = []
    for other, m in result["maskagain_minus"].items():
        values = [m["per_seed"][s][metric] for s in seeds]
        mean = "-" if m[metric] is None else f"{m[metric]['mean']:+.1f}"
        body.append([objective[other], *("-" if v is None else f"{v:+.1f}" for v in values), mean])
    return markdown_table(head, body)


def draw_seeds(result: dict, path: Path) -> Path:
    """Top-1 of every model for each evaluation (one panel per :data:`METRICS` entry): one
    point per seed, the mean as a black bar."""
    plt = _plt()
    rows, seeds = result["rows"], [str(s) for s in result["seeds"]]
    x = np.arange(len(rows))
    offsets = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    shown = _metrics_of(result)
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 3.4 * len(shown)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (metric, name) in zip(axes, shown.items()):
        for seed, offset in zip(seeds, offsets):
            points = [(i, r[metric]["per_seed"][seed]) for i, r in enumerate(rows) if r[metric]]
            if points:
                xs, ys = zip(*points)
                ax.scatter(np.array(xs) + offset, ys, s=20, label=f"seed {seed}", zorder=3)
        means = [(i, r[metric]["mean"]) for i, r in enumerate(rows) if r[metric]]
        if means:
            xs, ys = zip(*means)
            ax.scatter(xs, ys, marker="_", s=600, color="black", label="mean", zorder=2)
        ax.axhline(result["chance_top1"], color="grey", ls="--", lw=1, label="chance")
        ax.set_ylabel("top-1 (%)")
        ax.set_ylim(0, 100)
        ranked = " (the ranking column)" if metric == RANK_METRIC else ""
        ax.set_title(f"{name}{ranked}, seeds {', '.join(seeds)}", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    axes[-1].set_xticks(x, [row_label(r["model"], r["objective"]) for r in rows], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ranking_lines(result: dict) -> list[str]:
    """The ranking by :data:`RANK_METRIC` in words: the order with means, the largest
    training-seed range among the student rows, and where MaskAgain stands against each row."""
    rank = result["ranking"]
    if not rank["order"]:
        return []
    objective = {r["run"]: r["objective"] for r in result["rows"]}
    name, seeds = METRICS[rank["metric"]], len(result["seeds"])
    order = ", ".join(
        f"{k + 1}. {objective[run]} {rank['mean'][run]:.1f}" for k, run in enumerate(rank["order"])
    )
    rows = {r["run"]: r[rank["metric"]] for r in result["rows"]}
    chain = objective[rank["order"][0]]
    for upper, lower in zip(rank["order"], rank["order"][1:]):
        apart = rows[upper]["min"] > rows[lower]["max"]
        chain += f" {'>' if apart else '~'} {objective[lower]}"
    ranges = ", ".join(f"{objective[run]} {rows[run]['range']:.1f}" for run in rank["order"])
    lines = [
        f"- ranking by the {name} (mean over {seeds} seeds): {order}.",
        f"- told apart: {chain} (`>`: the worst seed of the row above beats the best seed of "
        "the row below; `~`: their seed ranges overlap, the order between them is not "
        "established).",
        f"- training-seed spread (max - min) on the {name}: {ranges}; largest "
        f"{rank['max_range']:.1f} points.",
    ]
    for other, m in result["maskagain_minus"].items():
        stats = m[rank["metric"]]
        if stats is None:
            continue
        ahead = sum(v > 0 for v in stats["per_seed"].values())
        lines.append(
            f"- MaskAgain against {objective[other]}: ahead in {ahead} of {seeds} seeds on the "
            f"{name} (difference {stats['min']:+.1f} to {stats['max']:+.1f}, mean "
            f"{stats['mean']:+.1f})."
        )
    return lines


def seeds_wall_time(result: dict) -> str:
    """The seeds' own demo runs (a reused seed keeps the time it took when it ran) and this
    command's."""
    per_seed = result.get("seed_seconds") or {}
    parts = [f"seed {s} {v:.0f} s" for s, v in per_seed.items() if v is not None]
    reused = result.get("reused") or []
    line = f"Wall time: {', '.join(parts)}" if parts else "Wall time:"
    line += f"; this command {result['elapsed_seconds']:.0f} s"
    if reused:
        line += f" (seeds {', '.join(map(str, reused))} reused)"
    quick = " (--quick: too small to mean anything)" if result["quick"] else ""
    return line + quick + "."


def write_seeds_report(out: Path, result: dict) -> Path:
    """``seeds.md``: the spread table, the ranking, MaskAgain minus every other row per seed
    and the seeds figure."""
    seeds = result["seeds"]
    lines = [
        "# MaskAgain demo over training seeds",
        "",
        f"`maskagain demo --seeds {' '.join(str(s) for s in seeds)}`: the whole demo once per "
        "training seed, each in `seed<N>/` (its `report.md` has the standard errors, which "
        "measure evaluation noise only; the spread below is the training-seed noise). Rows the "
        f"same in every seed are marked so. Methods are ranked by the {METRICS[RANK_METRIC]} "
        "(a linear probe on frozen features averaged over space at each tubelet step): the "
        "evaluation that moves least with the training seed.",
        "",
        seeds_table(result),
        "",
        "## Headline",
        "",
        *seeds_headline(result),
        "",
        "## Ranking",
        "",
        *ranking_lines(result),
        "",
        margins_table(result),
        "",
        seeds_wall_time(result),
        "",
        "![seeds](seeds.png)",
        "",
    ]
    path = out / "seeds.md"
    path.write_text("\n".join(lines))
    return path


# ------------------------------------------------------------------------------ the headline
# With one seed, a row is told apart from the next on the ranking column when their gap exceeds
# this many standard deviations of the difference of two probes' own noise (sqrt(2) times the
# one-encoder std over probe seeds); with several seeds, when the worst seed of the upper row
# beats the best seed of the lower one
NOISE_SIGMAS = 2.0


def told_apart(upper: list[float], lower: list[float], noise_std: float | None) -> bool | None:
    """Whether ``upper`` (top-1 per seed) is told apart from ``lower`` on the ranking column:
    with several seeds each, min(upper) > max(lower); with one, the gap of the means against
    the probe's noise (None when that noise is unknown)."""
    if len(upper) > 1 and len(lower) > 1:
        return min(upper) > max(lower)
    if noise_std is None:
        return None
    return float(np.mean(upper) - np.mean(lower)) > NOISE_SIGMAS * math.sqrt(2) * noise_std


def headline_lines(
    rows: list[dict], teacher: float | None, noise_std: float | None, name: str
) -> list[str]:
    """The headline from the numbers of student ``rows`` ({"run", "objective", "values": top-1
    per seed on the ranking column ``name``, "seconds": pre-training wall seconds or None}):
    which rows are told apart, what each cost, where they stand against the ``teacher``."""
    if not rows:
        return []
    ranked = sorted(rows, key=lambda r: -float(np.mean(r["values"])))
    seeds = min(len(r["values"]) for r in ranked)
    mean = {r["run"]: float(np.mean(r["values"])) for r in ranked}
    return [
        _separation_line(ranked, mean, noise_std, name, seeds),
        *_groups_lines(ranked, noise_std),
        *_cost_lines(ranked, seeds),
        *_teacher_lines(ranked, mean, teacher, name),
    ]


def _separation_line(ranked: list[dict], mean: dict, noise: float | None, name: str, seeds: int):
    chain = f"{ranked[0]['objective']} {mean[ranked[0]['run']]:.1f}"
    for upper, lower in zip(ranked, ranked[1:]):
        apart = told_apart(upper["values"], lower["values"], noise)
        sign = {True: ">", False: "~", None: "?"}[apart]
        chain += f" {sign} {lower['objective']} {mean[lower['run']]:.1f}"
    if seeds > 1:
        rule = (
            f"over {seeds} training seeds (means); `>`: the worst seed of the row above beats "
            "the best seed of the row below, `~`: their seeds overlap"
        )
    elif noise is None:
        rule = "one training seed; the probe's noise is not known, so `?`: not established"
    else:
        rule = (
            f"one training seed; `>`: a gap above {NOISE_SIGMAS:.0f} x sqrt(2) x the probe's own "
            f"noise ({noise:.2f} std) = {NOISE_SIGMAS * math.sqrt(2) * noise:.2f} points, `~`: "
            "within it. The training seed moves a row more than the probe does: "
            "`maskagain demo --seeds 0 1 2` tells rows apart by their seed ranges"
        )
    return f"- told apart on the {name}: {chain} ({rule})."


def _groups_lines(ranked: list[dict], noise: float | None) -> list[str]:
    """The rows not told apart from their neighbours, group by group, and MaskAgain's selection
    against plain Hint when both ran."""
    lines, group = [], [ranked[0]]
    for upper, lower in zip(ranked, [*ranked[1:], None]):
        if lower is not None and told_apart(upper["values"], lower["values"], noise) is False:
            group.append(lower)
            continue
        if len(group) > 1:
            names = [r["objective"] for r in group]
            lines.append(f"- not told apart: {', '.join(names[:-1])} and {names[-1]}.")
        group = [lower]
    by_run = {r["run"]: r for r in ranked}
    if "maskagain" in by_run and "hint" in by_run:
        apart = told_apart(by_run["maskagain"]["values"], by_run["hint"]["values"], noise)
        behind = told_apart(by_run["hint"]["values"], by_run["maskagain"]["values"], noise)
        verdict = "is ahead of" if apart else "is behind" if behind else "is not told apart from"
        if apart is None:
            verdict = "cannot be told from (the probe's noise is unknown)"
        one_seed = min(len(r["values"]) for r in ranked) == 1
        caveat = " (one training seed: against the probe's own noise only)" if one_seed else ""
        lines.append(f"- selection (MaskAgain) {verdict} plain Hint at this scale{caveat}.")
    return lines


def _cost_lines(ranked: list[dict], seeds: int) -> list[str]:
    """Each trained row's pre-training cost: CPU seconds where the profile has them (steadier
    than wall time on a shared machine), else wall seconds."""
    trained = [r for r in ranked if r.get("seconds")]
    if not trained:
        return []
    cpu = all(r.get("cpu_seconds") for r in trained)
    key, unit = ("cpu_seconds", "CPU seconds") if cpu else ("seconds", "wall seconds")
    cheapest = min(trained, key=lambda r: r[key])
    parts = [f"{r['objective']} {r[key]:.0f} s ({r[key] / cheapest[key]:.1f}x)" for r in trained]
    over = f", mean over {seeds} seeds" if seeds > 1 else ""
    walls = ", ".join(f"{r['seconds']:.0f}" for r in trained)
    wall = f"; wall seconds {walls}" if cpu else ""
    return [
        f"- pre-training cost ({unit}{over}; x: against the cheapest, "
        f"{cheapest['objective']}): {', '.join(parts)}{wall}."
    ]


def _teacher_lines(ranked: list[dict], mean: dict, teacher: float | None, name: str) -> list[str]:
    if teacher is None:
        return []
    parts = ", ".join(f"{r['objective']} {mean[r['run']] - teacher:+.1f}" for r in ranked)
    above = sum(mean[r["run"]] > teacher for r in ranked)
    return [
        f"- against the teacher ({teacher:.1f} on the {name}): {parts}; {above} of "
        f"{len(ranked)} student rows above it."
    ]


def headline(summary: dict) -> list[str]:
    """:func:`headline_lines` of one demo's ``summary.json`` content (one training seed)."""
    by_run = {r["run"]: r for r in summary["results"]}
    cpu = {p["stage"]: p["cpu_s"] for p in summary.get("profile", [])}
    rows = [
        {
            "run": run,
            "objective": r["objective"],
            "values": [r[RANK_METRIC]],
            "seconds": r["pretrain_seconds"] if r["pretrain_epochs"] else None,
            "cpu_seconds": cpu.get(run) if r["pretrain_epochs"] else None,
        }
        for run, r in by_run.items()
        if run not in REFERENCES and r.get(RANK_METRIC) is not None
    ]
    teacher = (by_run.get("teacher") or {}).get(RANK_METRIC)
    return headline_lines(rows, teacher, summary.get("probe_noise_std"), METRICS[RANK_METRIC])


def seeds_headline(result: dict) -> list[str]:
    """:func:`headline_lines` of ``maskagain demo --seeds`` (every seed's numbers)."""
    rows = [
        {
            "run": r["run"],
            "objective": r["objective"],
            "values": list(r[RANK_METRIC]["per_seed"].values()),
            "seconds": (r.get("pretrain_seconds") or {}).get("mean") or None,
            "cpu_seconds": (r.get("pretrain_cpu_seconds") or {}).get("mean") or None,
        }
        for r in result["rows"]
        if r["run"] not in REFERENCES and r[RANK_METRIC]
    ]
    teacher = next((r[RANK_METRIC] for r in result["rows"] if r["run"] == "teacher"), None)
    mean = teacher["mean"] if teacher else None
    return headline_lines(rows, mean, result.get("probe_noise_std"), METRICS[RANK_METRIC])
