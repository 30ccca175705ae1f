"""The step benchmark's verdicts and report: same-run ratios against their targets and the
Markdown section written into ``benchmarks/RESULTS.md``."""

from __future__ import annotations

from pathlib import Path

from benchmarks._results import write_section

RATIOS = {
    # name: (numerator row, denominator row, quantity, target)
    "maskagain_b_b_over_videomae_b_time": ("maskagain_b_b", "videomae_b", "seconds_per_clip", 0.55),
    "maskagain_b_s_over_mvd_b_s_time": ("maskagain_b_s", "mvd_b_s", "seconds_per_clip", 0.2),
    "maskagain_b_b_over_videomae_b_memory": ("maskagain_b_b", "videomae_b", "peak_memory_mb", 0.7),
    "maskagain_b_b_over_videomae_b_official_memory": (
        "maskagain_b_b",
        "videomae_b_official",
        "peak_memory_mb",
        0.7,
    ),
    "maskagain_b_b_over_videomae_b_allocated": (
        "maskagain_b_b",
        "videomae_b",
        "allocated_peak_mb",
        0.7,
    ),
    "maskagain_b_b_over_videomae_b_official_allocated": (
        "maskagain_b_b",
        "videomae_b_official",
        "allocated_peak_mb",
        0.7,
    ),
    "maskagain_b_b_over_videomae_b_official_time": (
        "maskagain_b_b",
        "videomae_b_official",
        "seconds_per_clip",
        0.55,
    ),
    # the same objective at the official code's costs
    "maskagain_b_b_over_maskagain_b_b_official_time": (
        "maskagain_b_b",
        "maskagain_b_b_official",
        "seconds_per_clip",
        0.6,
    ),
    "maskagain_b_b_over_maskagain_b_b_official_memory": (
        "maskagain_b_b",
        "maskagain_b_b_official",
        "peak_memory_mb",
        0.7,
    ),
    "maskagain_b_b_over_maskagain_b_b_official_allocated": (
        "maskagain_b_b",
        "maskagain_b_b_official",
        "allocated_peak_mb",
        0.7,
    ),
}


MEMORY_TARGET_BATCH = 8


def ratios(rows: list[dict], matmul: str = "bf16") -> dict:
    """Same-run ratios against the targets (only those whose two rows ran)."""
    by_name = {r["name"]: r for r in rows}
    out = {}
    for key, (num, den, field, target) in RATIOS.items():
        if (
            num in by_name
            and den in by_name
            and by_name[num].get(field)
            and by_name[den].get(field)
        ):
            value = by_name[num][field] / by_name[den][field]
            out[key] = {"value": value, "target_at_most": target, "met": value <= target}
            if field != "seconds_per_clip":  # the memory target is set at batch 8
                out[key]["target_batch"] = MEMORY_TARGET_BATCH
    if "maskagain_b_b" in by_name:
        value = by_name["maskagain_b_b"]["fraction_of_matmul"]
        out[f"maskagain_b_b_fraction_of_{matmul}_matmul"] = {
            "value": value,
            "target_at_least": 0.6,
            "met": value >= 0.6,
        }
    return out


# ---------------------------------------------------------------------- reports
MD_BEGIN, MD_END = "<!-- step-benchmark:begin -->", "<!-- step-benchmark:end -->"


def markdown_table(result: dict) -> str:
    m = result["machine"]
    mm = result["matmul_flops"]
    lines = [
        "## Training step",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}  ",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), device `{m['device']}`"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + "  ",
        f"Load average at start / end: {m['load_average_at_start'][0]:.2f} / "
        f"{m['load_average_at_end'][0]:.2f}  ",
        f"Matmul at the step's GEMM shapes (best of {len(result.get('matmul_measurements', [1]))} "
        f"measurements in this run): bf16 {mm['bf16'] / 1e9:.0f} GFLOP/s, "
        f"fp32 {mm['fp32'] / 1e9:.0f} GFLOP/s  ",
        f"Precision: {result.get('config', {}).get('precision', 'bf16')}",
        "",
        "| row | batch | s/clip (median) | min-max | peak MB | allocated peak MB "
        "| in use between steps MB | before step 1 MB | GFLOP/clip | GFLOP/s "
        f"| of {result.get('matmul_precision', 'bf16')} matmul |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['seconds_per_clip']:.3f} | "
            f"{r['seconds_per_clip_min']:.3f}-{r['seconds_per_clip_max']:.3f} | "
            f"{r['peak_memory_mb']:.0f} | {_mb(r.get('allocated_peak_mb'))} | "
            f"{_mb(r.get('allocated_between_steps_mb'))} | "
            f"{_mb(r.get('setup_memory_mb'))} | "
            f"{r['flops_per_clip'] / 1e9:.1f} | "
            f"{r['achieved_flops'] / 1e9:.0f} | {r['fraction_of_matmul']:.0%} |"
        )
    if result["ratios"]:
        batch = result["rows"][0]["batch"]
        lines += ["", "| ratio (same run) | value | target | met |", "|---|---|---|---|"]
        for key, r in result["ratios"].items():
            target = (
                f"<= {r['target_at_most']}"
                if "target_at_most" in r
                else f">= {r['target_at_least']}"
            )
            met = "yes" if r["met"] else "no"
            if r.get("target_batch", batch) != batch:
                met = f"({met}: the target is set at batch {r['target_batch']})"
            lines.append(f"| {key} | {r['value']:.3f} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def update_markdown(path: Path, result: dict) -> None:
    """Write the step table between its markers in ``path``, leaving every other section alone."""
    write_section(path, MD_BEGIN, MD_END, markdown_table(result))
