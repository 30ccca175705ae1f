"""Multi-view testing: per-view softmax scores averaged per video, then metrics and reports.

A test set of V videos seen as ``clips x crops`` views is a dataset of ``V * views`` samples;
every sample carries its dataset index (unique per view) and its video index. Under DDP a
``DistributedSampler`` pads the last shard by repeating samples, so after gathering the
``(sample index, video index, label, scores)`` rows of every rank the rows are de-duplicated by
sample index: each view, hence each video, is counted exactly once.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-video outcome of multi-view testing over V videos and K classes.

    video_index: (V,) long, sorted; labels: (V,) long; scores: (V, K) mean softmax over views;
    views: (V,) long, how many views were averaged; confusion: (K, K) long, rows = true class.
    ``top5`` is None for 5 classes or fewer, where it would always be 100.
    """

    video_index: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    views: torch.Tensor
    confusion: torch.Tensor
    top1: float
    top5: float | None

    @property
    def num_videos(self) -> int:
        return int(self.video_index.numel())

    @property
    def predictions(self) -> torch.Tensor:
        """(V,) argmax class of the averaged scores."""
        return self.scores.argmax(1)

    def per_class_accuracy(self) -> torch.Tensor:
        """(K,) recall of every class; NaN for classes without test videos."""
        support = self.confusion.sum(1).double()
        correct = self.confusion.diagonal().double()
        return torch.where(support > 0, correct / support.clamp(min=1), torch.nan)

    def metrics(self) -> dict[str, float]:
        """Scalars for ``summary.json``: top-1/top-5 in percent (top-5 None for <= 5 classes),
        mean class accuracy, counts."""
        per_class = self.per_class_accuracy()
        return {
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_acc": float(torch.nanmean(per_class) * 100) if self.num_videos else 0.0,
            "num_videos": self.num_videos,
            "num_views": int(self.views.sum()),
        }


class MultiViewAccumulator:
    """Collects per-view softmax scores on one rank; ``compute`` gathers, de-duplicates, averages."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._rows: list[tuple[torch.Tensor, ...]] = []

    @torch.no_grad()
    def add(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        video_index: torch.Tensor,
        sample_index: torch.Tensor,
    ) -> None:
        """Record one batch: logits (B, K), labels (B,), video_index (B,), sample_index (B,)."""
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} logits per view, got {logits.shape[-1]}")
        probs = logits.float().softmax(-1).cpu()
        self._rows.append(
            (sample_index.long().cpu(), video_index.long().cpu(), labels.long().cpu(), probs)
        )

    def local(self) -> tuple[torch.Tensor, ...]:
        """This rank's rows: sample_index (n,), video_index (n,), labels (n,), probs (n, K)."""
        if not self._rows:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty, empty, torch.empty(0, self.num_classes)
        return tuple(torch.cat(cols) for cols in zip(*self._rows))

    def gather(self) -> tuple[torch.Tensor, ...]:
        """Rows of every rank (all ranks get the same result); just ``local()`` without DDP."""
        rows = self.local()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return rows
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows)
        return tuple(torch.cat(cols) for cols in zip(*parts))

    def compute(self) -> EvalResult:
        """Gather, de-duplicate by sample index, average per video, score."""
        return aggregate_views(*self.gather(), num_classes=self.num_classes)


def aggregate_views(
    sample_index: torch.Tensor,
    video_index: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    num_classes: int,
) -> EvalResult:
    """Average per-view probabilities (n, K) into per-video scores, counting each sample once."""
    order = torch.argsort(sample_index, stable=True)
    s = sample_index[order]
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[1:] = s[1:] != s[:-1]  # DistributedSampler padding repeats sample indices
    idx = order[keep]
    if int((~keep).sum()):
        log.debug("dropped %d duplicate views (sampler padding)", int((~keep).sum()))
    vid, lab, p = video_index[idx], labels[idx], probs[idx].double()
    videos, inverse = torch.unique(vid, sorted=True, return_inverse=True)
    n_videos = videos.numel()
    views = torch.zeros(n_videos, dtype=torch.long).index_add_(0, inverse, torch.ones_like(inverse))
    sums = torch.zeros(n_videos, num_classes, dtype=torch.float64).index_add_(0, inverse, p)
    scores = sums / views.clamp(min=1).unsqueeze(1)
    video_labels = torch.full((n_videos,), -1, dtype=torch.long).scatter_(0, inverse, lab)
    if not torch.equal(video_labels[inverse], lab):
        raise ValueError("views of the same video carry different labels")
    return _score(videos, video_labels, scores.float(), views, num_classes)


def _score(
    videos: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    views: torch.Tensor,
    num_classes: int,
) -> EvalResult:
    n = videos.numel()
    k = min(5, num_classes)
    top = scores.topk(k, dim=1).indices if n else torch.empty(0, k, dtype=torch.long)
    hits = top == labels.unsqueeze(1)  # (V, k)
    top1 = float(hits[:, 0].float().mean() * 100) if n else 0.0
    top5 = (float(hits.any(1).float().mean() * 100) if n else 0.0) if num_classes > 5 else None
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long)
    if n:
        confusion.index_add_(0, labels * num_classes + top[:, 0], torch.ones_like(labels))
    confusion = confusion.view(num_classes, num_classes)
    return EvalResult(videos, labels, scores, views, confusion, top1, top5)


def save_report(
    result: EvalResult,
    out_dir: str | Path,
    class_names: list[str] | None = None,
    video_paths: list[str] | None = None,
) -> list[Path]:
    """Write the confusion matrix (CSV, NPY, PNG), per-class accuracy and predictions to ``out_dir``.

    ``predictions.csv`` has one row per video: its index, path (``video_paths[index]``, empty
    without them), label and prediction (numbers and names), the predicted class's score, the
    number of views and the score of every class. Returns the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = result.confusion.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    conf = result.confusion.numpy()
    np.save(out / "confusion_matrix.npy", conf)
    with open(out / "confusion_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *names])
        for name, row in zip(names, conf.tolist()):
            w.writerow([name, *row])
    acc = result.per_class_accuracy().tolist()
    with open(out / "per_class_accuracy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "support", "correct", "accuracy"])
        for c in range(k):
            accuracy = acc[c] if conf[c].sum() else "no videos"
            w.writerow([c, names[c], int(conf[c].sum()), int(conf[c, c]), accuracy])
    write_predictions(result, out / "predictions.csv", names, video_paths)
    np.save(out / "scores.npy", result.scores.numpy())
    paths = [
        out / n
        for n in (
            "confusion_matrix.npy",
            "confusion_matrix.csv",
            "per_class_accuracy.csv",
            "predictions.csv",
            "scores.npy",
        )
    ]
    paths.append(plot_confusion(conf, names, out / "confusion_matrix.png"))
    return paths


def write_predictions(
    result: EvalResult, path: Path, names: list[str], video_paths: list[str] | None
) -> Path:
    """``predictions.csv`` (columns in :func:`save_report`)."""
    header = ["video_index", "path", "label", "label_name", "prediction", "prediction_name"]
    header += ["score", "views", *(f"score_{n}" for n in names)]
    preds = result.predictions
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(result.num_videos):
            v, y, p = int(result.video_index[i]), int(result.labels[i]), int(preds[i])
            scores = [f"{s:.6f}" for s in result.scores[i].tolist()]
            where = video_paths[v] if video_paths is not None else ""
            w.writerow(
                [v, where, y, names[y], p, names[p], scores[p], int(result.views[i]), *scores]
            )
    return path


def plot_confusion(confusion: np.ndarray, names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix as a PNG (class labels shown up to 40 classes)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas

    k = confusion.shape[0]
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    size = min(4 + 0.25 * k, 24)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
