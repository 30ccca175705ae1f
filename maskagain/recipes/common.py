"""What several recipes share: reading a dataset that fails fast, and the masked-training setup
of pre-training and distillation."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from maskagain.config import ConfigError, to_dict
from maskagain.data import BadFileTracker, DataConfig, MaskCollator
from maskagain.data.prepare import EncodeOptions
from maskagain.data.storage import is_remote
from maskagain.data.transforms import crop_on_device, normalize_video
from maskagain.engine.distributed import DistInfo
from maskagain.engine.run import build_optimization, build_train_loader
from maskagain.engine.sampler import SeededItems
from maskagain.engine.trainer import Trainer, clips_per_step, steps_per_epoch

log = logging.getLogger(__name__)

# what each data kind's key must point at (the fix named by open_dataset's errors)
_EXPECTED_SOURCE = {
    "list": "a list file of 'path label' lines, one per video",
    "frames": "a list file of 'path num_frames label' lines, one per video",
    "folder": "a folder of <class>/<video> (or <split>/<class>/<video>) subfolders",
    "shards": "the index.json of a shard set written by 'maskagain prepare --shards'",
}


def open_dataset(data: DataConfig, split: str, purpose: str) -> Dataset:
    """``maskagain.data.build_dataset``, with a source that cannot give a dataset (a missing or
    empty list file, a root without videos, an unset list) reported as a one-line
    :class:`ConfigError` naming the data key to fix and what it must point at. Reads list files
    only, no video: call it before building any model so a bad source fails fast."""
    from maskagain.data import build_dataset

    key = "data.root" if data.kind == "folder" else f"data.{split}_list"
    if key == "data.test_list" and not data.test_list and data.val_list:
        key = "data.val_list"  # build_dataset tests on val_list when test_list is unset
    expected = _EXPECTED_SOURCE.get(data.kind)
    fix = f"; set it to {expected}" if expected else ""
    try:
        dataset = build_dataset(data, split, purpose)
    except ConfigError:
        raise  # already names its key and fix (e.g. data.val_fraction)
    except (ValueError, OSError) as err:  # ListFormatError, no class folders, no such file
        message = " ".join(str(err).split())
        raise ConfigError(
            f"config key '{key}': no usable {split} dataset: {message}{fix}"
        ) from None
    if len(dataset) == 0:
        raise ConfigError(f"config key '{key}': the {split} dataset is empty{fix}")
    warn_resolution(dataset, data)
    return dataset


# ----------------------------------------------------------------------------- split reports
SPLITS_FILE = "splits.json"


def video_paths(dataset: Dataset) -> list[str]:
    """Where each video of a :class:`~maskagain.data.ClipDataset` comes from (absolute paths)."""
    paths = [dataset.path(i) for i in range(dataset.num_videos)]
    return [p if p.startswith("synthetic:") or is_remote(p) else os.path.abspath(p) for p in paths]


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


# ----------------------------------------------------------------------------- input size
RESOLUTION_RATIO = 4.0  # decoded short side vs data.short_side, either way, that is "far"
PREPARED_SHORT_SIDE = EncodeOptions.short_side  # `maskagain prepare`'s default short side
_RESOLUTION_WARNED: set[tuple] = set()


def warn_resolution(dataset: Dataset, data: DataConfig, probes: int = 16) -> None:
    """One warning per data source when its videos call for an action: short sides above
    :data:`PREPARED_SHORT_SIDE` and far (> 4x) above the clips' (``data.short_side``):
    ``maskagain prepare`` makes decoding cheaper; or far below it: a smaller model sees what
    the videos show. Videos already prepared are not warned about. Reads the headers of up to
    ``probes`` videos."""
    key = (data.kind, data.root, data.train_list, data.short_side, data.input_size)
    if data.kind not in ("list", "folder") or key in _RESOLUTION_WARNED:
        return
    _RESOLUTION_WARNED.add(key)
    sizes = video_sizes(dataset, probes)
    if not sizes:
        return
    short = sorted(min(w, h) for w, h in sizes)
    lo, hi = short[0], short[-1]
    frames = sorted({f"{w}x{h}" for w, h in sizes}, key=lambda s: -int(s.split("x")[1]))
    seen = f"videos are {', '.join(frames[:4])} (short side {lo}-{hi} px, {len(sizes)} probed)"
    if hi > max(data.short_side * RESOLUTION_RATIO, PREPARED_SHORT_SIDE):
        log.warning(
            "%s, decoded and resized to a short side of %d px for a %d-px model: re-encode them "
            "once with `maskagain prepare --folder %s --out %s_%d` (short side %d) and train on "
            "the copy, so decoding is cheaper",
            seen, data.short_side, data.input_size, data.root or "ROOT",
            (data.root or "ROOT").rstrip("/"), PREPARED_SHORT_SIDE, PREPARED_SHORT_SIDE,
        )  # fmt: skip
    elif lo * RESOLUTION_RATIO < data.short_side:
        log.warning(
            "%s but clips are resized up to a short side of %d px for a %d-px model (%.0fx "
            "larger): a model with a smaller img_size (and data.input_size / data.short_side) "
            "sees what the videos show",
            seen, data.short_side, data.input_size, data.short_side / lo,
        )  # fmt: skip


def video_sizes(dataset: Dataset, probes: int) -> list[tuple[int, int]]:
    """(width, height) of up to ``probes`` videos spread over ``dataset`` (headers only)."""
    import av

    n = dataset.num_videos
    count = min(probes, n)
    picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
    sizes = []
    for i in picks:
        try:
            with av.open(dataset.path(i)) as container:
                stream = container.streams.video[0]
                sizes.append((int(stream.width), int(stream.height)))
        except (OSError, IndexError, av.error.FFmpegError):
            continue  # unreadable here: the loader's bad-file accounting reports it
    return sizes


def build_masked_trainer(
    cfg: Any,
    dist: DistInfo,
    run_dir: Path,
    module: nn.Module,
    step_fn: Any,
    dataset: Dataset,
    grid: tuple[int, int, int],
    name: str,
    teacher_mask_ratio: float | None = None,
) -> tuple[Trainer, BadFileTracker]:
    """What masked pre-training and distillation share: items and per-clip masks seeded from
    ``(seed, epoch, index)``, the loader, AdamW with its schedule, bad-file accounting and the
    :class:`Trainer`. ``cfg`` has ``seed``, ``data``, ``mask``, ``optim``, ``schedule`` and
    ``engine`` sections; ``teacher_mask_ratio`` adds a ``teacher_mask`` per clip (AMD: the
    teacher's lighter mask, its visible tokens a superset of the student's); returns the trainer and the :class:`~maskagain.data.BadFileTracker`
    whose ``summary`` goes into ``summary.json``."""
    if on_device(cfg.data.crop, dist.device):
        mean, std = dataset.defer_crop()
        step_fn = NormalizeOnDevice(step_fn, mean, std, cfg.data.input_size)
    elif on_device(cfg.data.normalize, dist.device):
        mean, std = dataset.defer_normalize()
        step_fn = NormalizeOnDevice(step_fn, mean, std)
    collate = MaskCollator(
        cfg.mask.kind, cfg.mask.ratio, grid, cfg.seed, teacher_ratio=teacher_mask_ratio
    )
    loader, sampler = build_train_loader(
        SeededItems(dataset, cfg.seed), collate, cfg.engine, cfg.data.num_workers, dist, cfg.seed
    )
    steps = steps_per_epoch(len(sampler.order()), cfg.engine)
    # clips per optimizer step (the lr scaling rule counts clips): repeated sampling included
    clips_per_item = getattr(dataset, "num_sample", 1)
    total_batch = clips_per_step(cfg.engine, dist.world_size, clips_per_item)
    optimizer, schedule = build_optimization(
        module, cfg.optim, cfg.schedule, steps, total_batch, dist.device
    )
    bad_files = BadFileTracker(cfg.data.max_bad_fraction, cfg.data.min_samples_for_bad_check)
    trainer = Trainer(
        engine=cfg.engine,
        dist=dist,
        run_dir=run_dir,
        model=module,
        step_fn=step_fn,
        optimizer=optimizer,
        schedule=schedule,
        loader=loader,
        sampler=sampler,
        epochs=cfg.schedule.epochs,
        clip_grad=cfg.optim.clip_grad,
        config=to_dict(cfg),
        batch_hook=bad_files.update,
        name=name,
        clips_per_item=clips_per_item,
    )
    return trainer, bad_files


def on_device(choice: str, device: torch.device) -> bool:
    """``data.normalize`` / ``data.crop``: "device", or "auto" on CUDA, means on the device."""
    return choice == "device" or (choice == "auto" and device.type == "cuda")


class NormalizeOnDevice:
    """A step function whose batch arrives as uint8 clips ``(B, C, T, H, W)``: they are
    normalised on the device (:func:`maskagain.data.transforms.normalize_video`) first. With
    ``crop_size`` the batch holds decoded windows and crop boxes instead (``"frames"``,
    ``"boxes"``, ``"source"``: ``ClipDataset.defer_crop``), cut, resized to ``crop_size`` and
    normalised on the device (:func:`maskagain.data.transforms.crop_on_device`)."""

    def __init__(
        self,
        step_fn: Any,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_size: int | None = None,
    ) -> None:
        self.step_fn, self.mean, self.std, self.crop_size = step_fn, mean, std, crop_size

    def __call__(self, module: nn.Module, batch: dict) -> dict:
        return self.step_fn(module, self.clips(batch))

    def clips(self, batch: dict) -> dict:
        """The batch with float, normalised ``"video"`` (B, C, T, H, W) on the batch's device."""
        if self.crop_size is None:
            return {**batch, "video": normalize_video(batch["video"], self.mean, self.std)}
        rest = {k: v for k, v in batch.items() if k not in ("frames", "boxes", "source")}
        video = crop_on_device(
            batch["frames"], batch["boxes"], batch["source"], self.crop_size, self.mean, self.std
        )
        return {**rest, "video": video}


# ----------------------------------------------------------------------------- test results
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
