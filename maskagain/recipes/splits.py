"""Which videos each split holds: counts, reuse and overlap for ``summary.json``, every path in
``splits.json``, and how much of an evaluated split a training run has seen."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from torch.utils.data import Dataset

from maskagain.engine.evaluation import video_paths

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"


def describe_splits(datasets: dict[str, Dataset | None], root: str = "") -> tuple[dict, dict]:
    """What each split used, for ``summary.json``, and the full listing for ``splits.json``.

    The summary gives the video count per split, ``same_as`` when a split is another one's
    videos (a test split that is the val split), and ``disjoint``: no video in two different
    splits (``overlap`` counts them otherwise). The listing holds every path per split.
    """
    listing = {name: video_paths(d) for name, d in datasets.items() if d is not None}
    summary: dict = {"file": SPLITS_FILE}
    overlap = {}
    names = list(listing)
    for k, name in enumerate(names):
        entry: dict = {"videos": len(listing[name])}
        for other in names[:k]:
            if listing[other] == listing[name]:
                entry["same_as"] = other
        summary[name] = entry
    distinct = [n for n in names if "same_as" not in summary[n]]
    for k, a in enumerate(distinct):
        for b in distinct[k + 1 :]:
            shared = len(set(listing[a]) & set(listing[b]))
            if shared:
                overlap[f"{a}/{b}"] = shared
    summary["disjoint"] = not overlap
    if overlap:
        summary["overlap"] = overlap
        log.warning("splits share videos: %s", overlap)
    for name, entry in summary.items():
        if isinstance(entry, dict) and "same_as" in entry:
            log.warning(
                "the %s split is the %s split (%d videos): %s accuracy is not a separate "
                "held-out measurement", name, entry["same_as"], entry["videos"], name,
            )  # fmt: skip
    return summary, {"root": root, **listing}


def write_splits(run_dir: Path, listing: dict) -> Path:
    """``run_dir/splits.json``: the paths of every split (call on rank 0)."""
    path = Path(run_dir) / SPLITS_FILE
    path.write_text(json.dumps(listing, indent=1) + "\n")
    return path


def overlap_with_run(paths: list[str], root: str, run_dir: Path) -> dict | None:
    """How many of ``paths`` a training run (its ``splits.json``) trained or validated on,
    comparing paths relative to each data root (a copy of the data on another machine
    matches); None when the run has no ``splits.json``."""
    file = Path(run_dir) / SPLITS_FILE
    if not file.is_file():
        return None
    try:
        listing = json.loads(file.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s", file)
        return None
    mine = {_relative(p, root) for p in paths}
    out = {}
    for split in ("train", "val"):
        theirs = {_relative(p, listing.get("root", "")) for p in listing.get(split) or []}
        out[f"in_{split}"] = len(mine & theirs)
    return out


def report_eval_split(
    dataset: Dataset, split: str, root: str, checkpoint: str, out_dir: Path, write: bool = True
) -> dict:
    """What an evaluation tested on, for its ``summary.json``: the split, its video count, the
    ``splits.json`` (written to ``out_dir`` when ``write``) listing them, and, for a checkpoint
    in a run directory with a ``splits.json``, how many of them that run trained or validated
    on (``in_train`` 0 means held out)."""
    summary, listing = describe_splits({split: dataset}, root)
    if write:
        write_splits(out_dir, listing)
    path = Path(checkpoint).expanduser()
    seen = overlap_with_run(listing[split], root, path if path.is_dir() else path.parent)
    out = {"split": split, "videos": summary[split]["videos"], "file": SPLITS_FILE}
    if seen is not None:
        out["training_run"] = seen
        if seen["in_train"]:
            log.warning(
                "%d of the %d %s videos were used to train %s: this is not a held-out score",
                seen["in_train"], out["videos"], split, checkpoint,
            )  # fmt: skip
    return out


def _relative(path: str, root: str) -> str:
    if root and not path.startswith("synthetic:"):
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return path
