"""The demo's headline in words, from its numbers: which student rows are told apart on the
ranking column (against the probe's noise with one seed, by seed ranges with several), what
each cost, and where they stand against the teacher."""

from __future__ import annotations

import math

import numpy as np

from maskagain.recipes.demo.settings import METRICS, RANK_METRIC, REFERENCES

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
