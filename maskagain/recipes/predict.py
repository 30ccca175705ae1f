"""``maskagain predict``: a classifier on unlabelled videos, whole or in windows.

A video's path goes to a DataLoader worker (:class:`maskagain.data.stream.VideoClips`), which
decodes it once and returns its normalised clips: the ``clips x crops`` views ``evaluate``
tests on, or ``crops`` clips per window. The main process packs clips from several videos into
batches of ``batch_size`` for the model (PyTorch, or onnxruntime for an ``.onnx`` file), and
the softmax scores are averaged per video (or per window) by
:func:`maskagain.engine.evaluation.aggregate_views`, the function ``evaluate`` uses: with the
same preprocessing, predict's scores are ``evaluate``'s. A file that cannot be read is reported
with its reason and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from maskagain.checkpoints import CheckpointError
from maskagain.data.config import DataConfig
from maskagain.data.datasets import ClipDataset
from maskagain.data.stream import VideoClips
from maskagain.engine.evaluation import aggregate_views

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A classifier ready to run: ``run`` maps normalised clips (B, C, T, H, W) to logits
    (B, K); ``preprocessing`` holds :data:`maskagain.models.onnx.PREPROCESSING_KEYS`."""

    run: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    class_names: list[str]
    preprocessing: dict
    backend: str


@dataclass
class Row:
    """One output row: a whole video (``window`` None) or one window of it; ``labels`` and
    ``scores`` are the top-k class names and their mean softmax scores, best first."""

    path: str
    window: int | None
    start_s: float | None
    end_s: float | None
    labels: list[str]
    scores: list[float]
    views: int


@dataclass
class Prediction:
    """What a run found: rows, unreadable files ``(path, reason)`` and counts."""

    rows: list[Row] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    videos: int = 0
    clips: int = 0
    wall_s: float = 0.0
    model_s: float = 0.0


# ----------------------------------------------------------------------------- loading
def load_predictor(source: str | Path, use_ema: bool = False, device: str = "auto") -> Predictor:
    """A run directory, a weights file or a Hugging Face directory (PyTorch on ``device``;
    ``auto``: CUDA when there is one), or an ``.onnx`` export (onnxruntime on the CPU), with its
    preprocessing and class names."""
    if str(source).endswith(".onnx"):
        return _onnx_predictor(source)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from maskagain.models.export import load_checked
    from maskagain.recipes.export import resolve_export_metadata, resolve_preprocessing

    weights = _weights(Path(source), use_ema)
    model, _, info = load_checked(weights)
    if not getattr(model, "num_classes", 0):
        raise CheckpointError(
            f"{source} is an encoder without a classification head; fine-tune it first "
            "(maskagain finetune) or linear-probe it (maskagain probe)"
        )
    names = resolve_export_metadata(weights, info, model.cfg).class_names
    model = model.to(device).eval()

    @torch.no_grad()
    def run(video: torch.Tensor) -> torch.Tensor:
        return model(video.to(device)).float().cpu()

    return Predictor(
        run, model.num_classes, names or _numbers(model.num_classes),
        resolve_preprocessing(weights, info, model.cfg), f"pytorch ({device})",
    )  # fmt: skip


def _weights(source: Path, use_ema: bool) -> Path:
    """A run directory's ``model.safetensors`` (``model_ema`` with ``use_ema``), else ``source``
    (a Hugging Face directory, with its ``config.json``, is read as a whole)."""
    name = "model_ema.safetensors" if use_ema else "model.safetensors"
    hf_dir = (source / "config.json").is_file()
    if source.is_dir() and not hf_dir and (source / name).is_file():
        return source / name
    if use_ema:
        raise CheckpointError(f"--ema needs a fine-tuning run directory holding {name}")
    return source


def _onnx_predictor(source: str | Path) -> Predictor:
    from maskagain.models.onnx import PREPROCESSING_KEYS, OnnxClassifier

    if not Path(source).is_file():
        raise CheckpointError(f"{source} does not exist")
    model = OnnxClassifier(source)
    meta = model.metadata
    missing = [k for k in PREPROCESSING_KEYS if k not in meta]
    if missing:
        raise CheckpointError(
            f"{source} has no {missing} metadata; export it with maskagain export --format onnx"
        )
    names = meta.get("class_names") or _numbers(model.num_classes)
    preprocessing = {k: meta[k] for k in PREPROCESSING_KEYS}
    return Predictor(model, model.num_classes, names, preprocessing, "onnxruntime (cpu)")


def _numbers(k: int) -> list[str]:
    return [str(i) for i in range(k)]


def data_config(preprocessing: dict, num_workers: int, **changes) -> DataConfig:
    """The ``DataConfig`` clips are made with: the model's preprocessing, ``changes`` on top
    (``test_clips``, ``test_crops``, ``sampling_rate``; None keeps the model's)."""
    values = {**preprocessing, **{k: v for k, v in changes.items() if v is not None}}
    values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
    cfg = DataConfig(kind="list", num_workers=num_workers, **values)
    cfg.validate("preprocessing")
    return cfg


# ----------------------------------------------------------------------------- running
def predict(
    predictor: Predictor,
    paths: list[str],
    cfg: DataConfig,
    top_k: int = 5,
    windows: bool = False,
    stride_s: float | None = None,
    batch_size: int = 8,
    progress: bool = True,
    dataset: ClipDataset | None = None,
) -> Prediction:
    """Top-``top_k`` rows for every readable video of ``paths`` (and each window with
    ``windows``), clips made as ``cfg`` says and decoded in ``cfg.num_workers`` workers;
    ``dataset``: where video ``i`` (named ``paths[i]``) is read from (shards), else the files."""
    t0 = time.perf_counter()
    chunk = max(batch_size, cfg.views_per_video)
    stream = VideoClips(paths, cfg, windows, stride_s, chunk=chunk, dataset=dataset)
    loader = DataLoader(stream, batch_size=None, num_workers=cfg.num_workers)
    views = cfg.test_crops if windows else cfg.views_per_video
    acc = _Accumulator(predictor.run, batch_size, views)
    out = Prediction(videos=len(paths))
    for item in _progress(loader, len(paths), progress, acc):
        if item["error"] is not None:
            out.failed.append((item["path"], item["error"]))
            acc.drop(item["video"])
            log.warning("skipped %s: %s", item["path"], item["error"])
            continue
        acc.add(item)
    acc.flush()
    out.rows = acc.rows(predictor.class_names, paths, min(top_k, predictor.num_classes), windows)
    out.clips, out.model_s = acc.clips, acc.model_s
    out.wall_s = time.perf_counter() - t0
    return out


def _progress(loader: DataLoader, videos: int, active: bool, acc: _Accumulator) -> Iterable[dict]:
    """Items of ``loader``; with ``active`` behind a bar counting videos, with clips/s."""
    if not active:
        yield from loader
        return
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    with tqdm(total=videos, unit="video", desc="predict", dynamic_ncols=True) as bar:
        for item in loader:
            yield item
            if item["last"]:
                bar.update(1)
                rate = acc.clips / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{rate:.1f} clips/s", refresh=False)


class _Accumulator:
    """Packs clips of several items into model batches and keeps every clip's softmax."""

    def __init__(self, run: Callable, batch_size: int, views: int) -> None:
        self.run, self.batch_size, self.views = run, batch_size, views
        self.pending: list[tuple[torch.Tensor, int, int]] = []  # (clip, video, key)
        self.done: list[tuple[int, int, torch.Tensor]] = []  # (video, key, probs)
        self.spans: dict[tuple[int, int], tuple[float, float]] = {}  # (video, window) -> times
        self.dropped: set[int] = set()
        self.clips, self.model_s = 0, 0.0

    def add(self, item: dict) -> None:
        v = item["video"]
        self.pending += [(c, v, int(k)) for c, k in zip(item["clips"], item["keys"])]
        for w, start, end in item.get("windows") or ():
            self.spans[(v, w)] = (start, end)
        while len(self.pending) >= self.batch_size:
            self._run(self.pending[: self.batch_size])
            self.pending = self.pending[self.batch_size :]

    def drop(self, video: int) -> None:
        """Forget a video whose reading failed part-way (windows already read included)."""
        self.dropped.add(video)

    def flush(self) -> None:
        if self.pending:
            self._run(self.pending)
            self.pending = []

    def _run(self, part: list[tuple[torch.Tensor, int, int]]) -> None:
        t0 = time.perf_counter()
        logits = self.run(torch.stack([c for c, _, _ in part]))  # (B, K)
        self.model_s += time.perf_counter() - t0
        probs = logits.float().softmax(-1)
        self.done += [(v, k, p) for (_, v, k), p in zip(part, probs)]
        self.clips += len(part)

    def rows(self, names: list[str], paths: list[str], k: int, windows: bool) -> list[Row]:
        """Scores averaged per video (or per window, plus a row per video: the mean of its
        windows), top-``k`` of each."""
        kept = [(v, key, p) for v, key, p in self.done if v not in self.dropped]
        if not kept:
            return []
        groups = sorted({(v, key // self.views if windows else 0) for v, key, _ in kept})
        gid = {g: i for i, g in enumerate(groups)}
        group = torch.tensor([gid[(v, key // self.views if windows else 0)] for v, key, _ in kept])
        sample = group * self.views + torch.tensor([key % self.views for _, key, _ in kept])
        probs = torch.stack([p for _, _, p in kept])
        result = aggregate_views(sample, group, torch.zeros_like(group), probs, len(names))
        per_video: dict[int, list[tuple[int, torch.Tensor, int]]] = {}  # v -> (w, scores, n)
        for i, g in enumerate(result.video_index.tolist()):  # sorted: by video, then window
            v, w = groups[g]
            per_video.setdefault(v, []).append((w, result.scores[i], int(result.views[i])))
        out: list[Row] = []
        for v, parts in per_video.items():
            if not windows:
                out.append(_row(paths[v], None, (None, None), parts[0][1], parts[0][2], names, k))
                continue
            for w, scores, n in parts:
                out.append(_row(paths[v], w, self.spans[(v, w)], scores, n, names, k))
            mean = torch.stack([s for _, s, _ in parts]).mean(0)
            span = (self.spans[(v, parts[0][0])][0], self.spans[(v, parts[-1][0])][1])
            out.append(_row(paths[v], None, span, mean, sum(n for *_, n in parts), names, k))
        return out


def _row(path: str, window, span, scores: torch.Tensor, views: int, names, k: int) -> Row:
    """A :class:`Row` with the top-``k`` of ``scores`` (K,)."""
    top = scores.topk(k)
    labels = [names[i] for i in top.indices.tolist()]
    values = [round(float(x), 6) for x in top.values.tolist()]
    return Row(path, window, span[0], span[1], labels, values, views)


# ----------------------------------------------------------------------------- output
OUT_FORMATS = (".csv", ".jsonl")


def row_dicts(pred: Prediction) -> list[dict]:
    """Rows as plain dicts (unreadable files last, with their ``error``): ``path``, ``window``
    (None: the whole video), ``start_s``, ``end_s``, ``views``, ``labels``, ``scores``."""
    rows = [{**vars(r), "error": None} for r in pred.rows]
    empty = {"window": None, "start_s": None, "end_s": None, "views": 0, "labels": [], "scores": []}
    return rows + [{"path": p, **empty, "error": reason} for p, reason in pred.failed]


def write_predictions(pred: Prediction, out: str | Path, top_k: int) -> Path:
    """``.csv`` (``label_1, score_1, ..`` columns) or ``.jsonl`` (one object a line)."""
    import csv
    import json

    out = Path(out)
    if out.suffix.lower() not in OUT_FORMATS:
        raise ValueError(f"--out {out}: choose a .csv or .jsonl file")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = row_dicts(pred)
    with open(out, "w", newline="", encoding="utf-8") as f:
        if out.suffix.lower() == ".jsonl":
            f.writelines(json.dumps(r) + "\n" for r in rows)
            return out
        writer = csv.writer(f)
        ranks = range(1, top_k + 1)
        head = ["path", "window", "start_s", "end_s", "views"]
        writer.writerow([*head, *(f"{c}_{i}" for i in ranks for c in ("label", "score")), "error"])
        for r in rows:
            pairs = [x for pair in zip(r["labels"], r["scores"]) for x in pair]
            pairs += [""] * (2 * top_k - len(pairs))
            cells = ["" if r[c] is None else r[c] for c in head]
            writer.writerow([*cells, *pairs, r["error"] or ""])
    return out


def format_table(pred: Prediction) -> str:
    """The rows as an aligned text table (windows as ``start-end s``)."""
    lines = [("video", "window", "top-k (score)")]
    for r in pred.rows:
        where = "all" if r.window is None else str(r.window)
        if r.start_s is not None:
            where += f" {r.start_s:.2f}-{r.end_s:.2f}s"
        tops = ", ".join(f"{n} ({s:.3f})" for n, s in zip(r.labels, r.scores))
        lines.append((r.path, where, tops))
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in lines)
