"""The demo's outputs: the table, ``report.md`` and the PNG figures (matplotlib, Agg)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

CURVES = {  # run directory (under the demo's --out) -> label
    "maskagain": "MaskAgain distillation (student)",
    "videomae": "VideoMAE (student)",
    "hint": "Hint distillation (student)",
    "finetune/teacher": "fine-tune: teacher",
    "finetune/maskagain": "fine-tune: MaskAgain student",
    "finetune/videomae": "fine-tune: VideoMAE student",
    "finetune/hint": "fine-tune: Hint student",
    "finetune/scratch": "fine-tune: scratch student",
}
COLUMNS = (
    "model",
    "objective",
    "pretrain_epochs",
    "pretrain_seconds",
    "probe_top1",
    "finetune_top1",
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw_curves(out: Path, path: Path) -> Path:
    """Training loss against step for every objective (pre-training top, fine-tuning bottom)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    axes = axes.flatten()
    for ax, (run, label) in zip(axes[:3], list(CURVES.items())[:3]):
        records = [r for r in read_log(out / run / "log.jsonl") if "loss" in r]
        keys = (
            [k for k in records[0] if k not in ("time", "step", "epoch", "lr")] if records else []
        )
        for key in keys:
            if key.endswith("clips_per_s") or key == "loss":
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
    for run, label in list(CURVES.items())[3:]:
        records = [r for r in read_log(out / run / "log.jsonl") if "loss" in r]
        if records:
            ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label[11:])
    ax.set_title("fine-tuning loss (cross-entropy, label smoothing 0.1)", fontsize=9)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax = axes[4]
    for run, label in list(CURVES.items())[:3]:
        records = [r for r in read_log(out / run / "log.jsonl") if "loss" in r]
        if records:
            ax.plot([r["time"] - records[0]["time"] for r in records], [r["loss"] for r in records],
                    label=label)  # fmt: skip
    ax.set_title("pre-training loss against wall time", fontsize=9)
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7)
    axes[5].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_accuracy(rows: list, path: Path, chance: float) -> Path:
    """Probe and fine-tune top-1 per model, with one-standard-error bars."""
    plt = _plt()
    labels = [textwrap.fill(f"{r.model}: {r.objective}", 20) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for offset, attr, name in ((-0.2, "probe", "linear probe"), (0.2, "finetune", "fine-tune")):
        vals = [getattr(r, f"{attr}_top1") for r in rows]
        errs = [getattr(r, f"{attr}_se") or 0.0 for r in rows]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar(x + offset, heights, 0.4, yerr=errs, capsize=3, label=name)
        for bar, v in zip(bars, vals):
            text = "n/a" if v is None else f"{v:.1f}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, text,
                    ha="center", fontsize=7)  # fmt: skip
    ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.1f}%)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("synthetic motion classes: linear probe (val) and fine-tune multi-view (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_figures(out: Path, rows: list, teacher: str) -> dict[str, Path]:
    """curves.png, accuracy.png and selections.png (the teacher's selections on a test clip)."""
    from maskagain.data import SyntheticSpec, make_clip
    from maskagain.demo import GEOMETRY, MASKAGAIN_OBJECTIVE, NUM_CLASSES
    from maskagain.visualize import visualize

    figures = {
        "curves": draw_curves(out, out / "curves.png"),
        "accuracy": draw_accuracy(rows, out / "accuracy.png", 100 / NUM_CLASSES),
    }
    spec = SyntheticSpec(GEOMETRY["img_size"], GEOMETRY["num_frames"], NUM_CLASSES)
    frames, label = make_clip(spec, seed=0, split="test", index=0)
    seed = moving_mask_seed(frames, GEOMETRY["patch_size"], GEOMETRY["tubelet_size"])
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
    head = [
        "model",
        "objective",
        "pre-train epochs",
        "pre-train wall (s)",
        "probe top-1 (%)",
        "fine-tune top-1 (%)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["results"]:
        probe = f"{_fmt(r['probe_top1'])} ± {_fmt(r['probe_se'])}"
        ft = "-" if r["finetune_top1"] is None else (
            f"{_fmt(r['finetune_top1'])} ± {_fmt(r['finetune_se'])}"
        )  # fmt: skip
        lines.append(
            f"| {r['model']} | {r['objective']} | {r['pretrain_epochs']} | "
            f"{_fmt(float(r['pretrain_seconds']), 0)} | {probe} | {ft} |"
        )
    return "\n".join(lines)


def write_report(out: Path, summary: dict) -> Path:
    sizes, data = summary["sizes"], summary["dataset"]
    card = summary["teacher"]["card"]
    rows = {r["run"]: r for r in summary["results"]}
    lines = [
        "# MaskAgain demo",
        "",
        f"Synthetic motion set: {data['classes']} classes defined only by motion, "
        f"{data['frames']} frames of {data['size']}x{data['size']}, clips generated on the fly "
        f"(seed {data['seed']}; chance {data['chance_top1']}%). Probe: {sizes['probe_train_clips']}"
        f" training clips, top-1 on {sizes['eval_clips']} val clips. Fine-tune: "
        f"{sizes['finetune_epochs']} epochs x {sizes['finetune_clips']} fresh clips, then a "
        f"{sizes['test_crops']}-crop test on {sizes['eval_clips']} test videos. ± is one "
        "binomial standard error: evaluation noise only. Every training run uses one seed "
        f"({summary.get('seed', 0)}); `maskagain demo --seed N` repeats the comparison with "
        "another to see the training-seed spread.",
        "",
        f"Student budget: {sizes['pretrain_epochs']} epochs x {sizes['pretrain_clips']} fresh clips "
        f"per objective, same student ({summary['models']['student']['embed_dim']} wide, "
        f"{summary['models']['student']['depth']} blocks) and tube mask (75%).",
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
        "Its card's probe (same settings as above): "
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
            f"encoder of the same size ({t['probe_top1']:.1f} vs {r0['probe_top1']:.1f}; the issue "
            f"asks for +15){'' if gap >= 15 else ': below that bar'}."
        )
    if sf:
        lines.append(
            f"- motion needed: on single-frame clips (middle frame repeated) the teacher's probe "
            f"gets {sf['probe_top1']:.1f}% (chance {data['chance_top1']}%)."
        )
    ma, others = (
        rows.get("maskagain"),
        [rows[k] for k in ("videomae", "hint", "scratch") if k in rows],
    )
    if ma is not None:
        for metric in ("probe_top1", "finetune_top1"):
            for o in others:
                a, b = ma.get(metric), o.get(metric)
                if a is None or b is None:
                    continue
                se = math_hypot(
                    ma.get(metric.replace("top1", "se")), o.get(metric.replace("top1", "se"))
                )
                verdict = (
                    "beats" if a - b > 2 * se else ("loses to" if b - a > 2 * se else "ties with")
                )
                lines.append(
                    f"- {metric.replace('_top1', '')}: MaskAgain {a:.1f} vs {o['objective']} "
                    f"{b:.1f}: {verdict} it (difference {a - b:+.1f}, 2 SE = {2 * se:.1f})."
                )
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


def math_hypot(a, b) -> float:
    return float(np.hypot(a or 0.0, b or 0.0))
