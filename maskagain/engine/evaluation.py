"""Multi-view testing: per-view softmax scores averaged per video, then metrics and reports.

:func:`run_test` runs a classifier over a test set (:func:`build_eval_loader`,
:func:`predict_views`) and writes the reports (:func:`save_report`); :class:`Validator` is the
fine-tuning trainer's epoch-end check on the val split; :func:`describe_test_result` says what
a score means next to chance.

A test set of V videos seen as ``clips x crops`` views is a dataset of ``V * views`` samples;
every sample carries its dataset index (unique per view) and its video index. Under DDP a
``DistributedSampler`` pads the last shard by repeating samples, so after gathering the
``(sample index, video index, label, scores)`` rows of every rank the rows are de-duplicated by
sample index: each view, hence each video, is counted exactly once.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from maskagain.data import BadFileTracker, MaskCollator
from maskagain.data.storage import is_remote
from maskagain.engine.distributed import DistInfo
from maskagain.engine.feed import ignore_stop_signals

if TYPE_CHECKING:
    from maskagain.data import ClipDataset
    from maskagain.engine.trainer import Trainer

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
        if not torch_dist.is_available() or not torch_dist.is_initialized():
            return rows
        if torch_dist.get_world_size() == 1:
            return rows
        parts: list = [None] * torch_dist.get_world_size()
        torch_dist.all_gather_object(parts, rows)
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


# ----------------------------------------------------------------------------- running a test
@torch.no_grad()
def predict_views(
    model: nn.Module,
    batches: Iterable[dict],
    num_classes: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    views_per_video: int = 1,
) -> EvalResult:
    """Multi-view testing of ``model`` over data-pipeline batches: ``video`` (B, C, T, H, W),
    ``label`` (B,), ``index`` (B,) the video id and ``view`` (B,) the view id (absent: 0).
    A view's unique key is ``index * views_per_video + view``.

    The model runs in eval mode (its previous mode is restored); scores of every process are
    gathered and each view counted once.
    """
    was_training = model.training
    model.eval()
    acc = MultiViewAccumulator(num_classes)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    try:
        for batch in batches:
            with autocast:
                logits = model(batch["video"].to(device, non_blocking=True))
            video_index = batch["index"]
            view = batch.get("view")
            sample_index = video_index * views_per_video + (0 if view is None else view)
            acc.add(logits, batch["label"], video_index, sample_index)
    finally:
        model.train(was_training)
    return acc.compute()


def build_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int, dist: DistInfo
) -> DataLoader:
    """In-order loader over this process's share (``DistributedSampler`` pads the last shard;
    :func:`predict_views` de-duplicates)."""
    sampler = None
    if dist.distributed:
        sampler = DistributedSampler(
            dataset, dist.world_size, dist.rank, shuffle=False, drop_last=False
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=MaskCollator(),
        pin_memory=dist.device.type == "cuda",
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,  # the trainer stops
    )


def progress_batches(loader: DataLoader, active: bool, desc: str) -> Iterable[dict]:
    """Batches of ``loader`` behind a tqdm bar (rank 0 only, on a terminal: a log file gets
    the result line, not the bar's redraws)."""
    if not active or not sys.stderr.isatty():
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, dynamic_ncols=True, leave=False)


def video_paths(dataset: ClipDataset) -> list[str]:
    """Where each video of a :class:`~maskagain.data.ClipDataset` comes from (absolute paths)."""
    paths = [dataset.path(i) for i in range(dataset.num_videos)]
    return [p if p.startswith("synthetic:") or is_remote(p) else os.path.abspath(p) for p in paths]


def run_test(
    model: nn.Module,
    dataset: ClipDataset,
    batch_size: int,
    num_workers: int,
    dist: DistInfo,
    dtype: torch.dtype,
    out_dir: Path,
    progress: bool = True,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """Multi-view test of the classifier ``model`` on ``dataset``; rank 0 writes the reports to
    ``out_dir``. ``class_names`` default to the dataset's when it has as many classes as the
    head."""
    loader = build_eval_loader(dataset, batch_size, num_workers, dist)
    bad_files = BadFileTracker(dataset.cfg.max_bad_fraction, dataset.cfg.min_samples_for_bad_check)
    batches = _tracked(
        progress_batches(loader, dist.is_main and progress, f"test {out_dir.name}"), bad_files
    )
    result = predict_views(model, batches, model.num_classes, dist.device, dtype, dataset.views)
    if class_names is None and dataset.num_classes == model.num_classes:
        class_names = dataset.class_names
    if dist.is_main:
        save_report(result, out_dir, class_names, video_paths(dataset))
    metrics = result.metrics()
    metrics["views_per_video"] = dataset.views
    metrics["bad_files"] = len(bad_files.paths)  # unreadable files (this process)
    metrics["bad_views"] = bad_files.bad  # their views, replaced by other videos' clips
    metrics["videos_in_split"] = dataset.num_videos
    names = class_names or [str(c) for c in range(model.num_classes)]
    support = result.confusion.sum(1).tolist()
    metrics["classes_without_videos"] = [n for n, s in zip(names, support) if s == 0]
    shown = {k: v for k, v in metrics.items() if v is not None}
    log.info("test (%s): %s", out_dir.name, format_metrics(shown))
    if result.num_videos < dataset.num_videos:
        log.warning(
            "tested %d of the %d videos of the split: %d could not be read (listed above)",
            result.num_videos, dataset.num_videos, dataset.num_videos - result.num_videos,
        )  # fmt: skip
    return metrics


def _tracked(batches: Iterable[dict], bad_files: BadFileTracker) -> Iterable[dict]:
    """``batches`` with every batch counted by ``bad_files`` (raises past its limit)."""
    for batch in batches:
        bad_files.update(batch)
        yield batch


def format_metrics(metrics: dict) -> str:
    """``top1 75.00, num_videos 12, classes_without_videos none``: counts as integers."""

    def value(v) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        if isinstance(v, list):
            return ", ".join(map(str, v)) or "none"
        return str(v)

    return ", ".join(f"{k} {value(v)}" for k, v in metrics.items())


class Validator:
    """Epoch-end hook of a classifier's trainer: single-view top-1/top-5 on the validation
    split (model and EMA) every ``every`` epochs."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        dist: DistInfo,
        dataset: Dataset,
        batch_size: int,
        num_workers: int,
        every: int,
        progress: bool,
    ) -> None:
        self.model, self.num_classes, self.dist = model, num_classes, dist
        self.every, self.progress = every, progress
        self.loader = build_eval_loader(dataset, batch_size, num_workers, dist)

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        if not self.every or trainer.state.epoch % self.every:
            return {}
        models = {"": self.model}
        if trainer.ema is not None:
            models["ema_"] = trainer.ema.module
        out = {}
        for prefix, model in models.items():
            batches = progress_batches(self.loader, self.dist.is_main and self.progress, "val")
            res = predict_views(model, batches, self.num_classes, self.dist.device, trainer.dtype)
            out[f"{prefix}val_top1"] = res.top1
            if res.top5 is not None:
                out[f"{prefix}val_top5"] = res.top5
        log.info("epoch %d: %s", trainer.state.epoch, format_metrics(out))
        return out


# ----------------------------------------------------------------------------- what a score says
def describe_test_result(metrics: dict, split: str, num_classes: int) -> dict:
    """What a test says, for ``summary.json``, the console and ``inspect``: the split, its
    number of videos, top-1, chance (100 / classes) and whether top-1 is within noise of
    chance (below chance + 2 standard errors of a chance-level classifier on that many
    videos). ``fewer_videos``: the test scored fewer videos than the split holds
    (``videos_in_split``), the others being unreadable."""
    n = int(metrics.get("num_videos") or 0)
    in_split = int(metrics.get("videos_in_split") or n)
    chance = 100.0 / max(num_classes, 1)
    noise = 2 * 100 * math.sqrt(chance / 100 * (1 - chance / 100) / max(n, 1))
    top1 = metrics.get("top1")
    return {
        "split": split,
        "num_videos": n,
        "videos_in_split": in_split,
        "fewer_videos": n < in_split,
        "top1": None if top1 is None else round(float(top1), 2),
        "chance": round(chance, 2),
        "at_chance": top1 is not None and float(top1) < chance + noise,
        "headline": headline(split, n, top1, chance, in_split),
    }


def headline(
    split: str, num_videos: int, top1: float | None, chance: float, in_split: int | None = None
) -> str:
    """``"top-1 75.0% on the test split (12 videos; chance 33.3%)"``, or ``(11 of the 12
    videos, 1 unreadable; ...)`` when fewer than the split's ``in_split`` were tested."""
    score = "n/a" if top1 is None else f"{float(top1):.1f}%"
    videos = f"{num_videos} videos"
    if in_split is not None and num_videos < in_split:
        videos = f"{num_videos} of the {in_split} videos, {in_split - num_videos} unreadable"
    return f"top-1 {score} on the {split} split ({videos}; chance {chance:.1f}%)"


def chance_warning(result: dict) -> str | None:
    """One line when a test score is within noise of chance, else None."""
    if not result.get("at_chance"):
        return None
    return (
        f"{result['headline']} is within noise of chance: the model does not tell the classes "
        "apart; on a small folder fine-tune with --config folder/finetune, or add videos"
    )
