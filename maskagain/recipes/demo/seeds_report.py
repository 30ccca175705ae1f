"""The demo over training seeds: the spread of every row and evaluation, the ranking,
MaskAgain minus every other row per seed, ``seeds.md`` and ``seeds.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskagain.recipes.demo.headline import seeds_headline
from maskagain.recipes.demo.report import fmt_value, markdown_table, metrics_of, pyplot, row_label
from maskagain.recipes.demo.settings import METRICS, RANK_METRIC, REFERENCES, TRAINED_ROWS


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
        row["pretrain_cpu_seconds"] = spread(cpu) if key in TRAINED_ROWS else None
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
        "metrics": list(metrics_of(summaries[seeds[0]])),
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
        return f"{fmt_value(values[0])} (every seed)"
    return " / ".join(fmt_value(v) for v in values)


def _mean_range(stats: dict | None) -> str:
    if stats is None:
        return "-"
    return f"{fmt_value(stats['mean'])} [{fmt_value(stats['min'])}, {fmt_value(stats['max'])}]"


def seeds_table(result: dict) -> str:
    """Every demo row's top-1 per seed with mean [min, max], one pair of columns per
    evaluation (the ranking one first), as a Markdown table."""
    seeds = "/".join(str(s) for s in result["seeds"])
    head = ["model", "objective"]
    for name in metrics_of(result).values():
        head += [f"{name}, seeds {seeds}", "mean [min, max]"]
    body = []
    for r in result["rows"]:
        cells = [r["model"], r["objective"]]
        for metric in metrics_of(result):
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
    plt = pyplot()
    rows, seeds = result["rows"], [str(s) for s in result["seeds"]]
    x = np.arange(len(rows))
    offsets = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    shown = metrics_of(result)
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
