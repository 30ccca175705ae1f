"""One demo's outputs: the table, ``report.md`` and the PNG figures (matplotlib, Agg)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from maskagain.engine.metrics import read_log
from maskagain.recipes.demo.headline import headline
from maskagain.recipes.demo.settings import METRICS

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


def metrics_of(summary: dict) -> dict[str, str]:
    """The evaluations recorded in a ``summary.json`` (or a seeds result)."""
    return {k: METRICS[k] for k in summary.get("metrics", METRICS)}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_curves(out: Path, path: Path) -> Path:
    """Training loss against step for every objective (one panel per pre-training; then the
    fine-tunes, and the pre-training losses against wall time)."""
    plt = pyplot()
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
    plt = pyplot()
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


def fmt_value(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(summary: dict) -> str:
    """The results as a Markdown table (also printed on the console)."""
    head = ["model", "objective", "pre-train epochs", "pre-train wall (s)"]
    head += [f"{name} top-1 (%)" for name in metrics_of(summary).values()]
    body = []
    for r in summary["results"]:
        cells = [r["model"], r["objective"], str(r["pretrain_epochs"]),
                 fmt_value(float(r["pretrain_seconds"]), 0)]  # fmt: skip
        for metric in metrics_of(summary):
            value, se = r.get(metric), r.get(metric.replace("top1", "se"))
            cells.append("-" if value is None else f"{fmt_value(value)} ± {fmt_value(se)}")
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
        f"{card.get('clips_seen', '?')} clips) in {fmt_value(card.get('wall_seconds'), 0)} s. "
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
    if "finetune_top1" not in metrics_of(summary):
        return (
            "No fine-tune (`maskagain demo --finetune` adds one: its column swings by tens of "
            "points with the training seed, so it cannot rank). "
        )
    return (
        f"Fine-tune: {sizes['finetune_epochs']} epochs x {sizes['finetune_clips']} fresh clips, "
        f"then a {sizes['test_crops']}-crop test on {sizes['test_videos']} test videos. "
    )
