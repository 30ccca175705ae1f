"""Opening a recipe's dataset: a source that cannot give one fails fast, in one line naming
the data key to fix; videos whose resolution calls for an action are said once a run."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import Dataset

from maskagain.config import ConfigError
from maskagain.data import ClipDataset, DataConfig
from maskagain.data.datasets import OnDevice
from maskagain.data.prepare import EncodeOptions
from maskagain.engine.feed import work_on_device

log = logging.getLogger(__name__)

# what each data kind's key must point at (the fix named by open_dataset's errors)
_EXPECTED_SOURCE = {
    "list": "a list file of 'path label' lines, one per video",
    "frames": "a list file of 'path num_frames label' lines, one per video",
    "folder": "a folder of <class>/<video> (or <split>/<class>/<video>) subfolders",
    "shards": "the index.json of a shard set written by 'maskagain prepare --shards'",
}


def open_dataset(
    data: DataConfig, split: str, purpose: str, on_device: OnDevice = None
) -> ClipDataset:
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
        dataset = build_dataset(data, split, purpose, on_device)
    except ConfigError:
        raise  # already names its key and fix (e.g. data.val_fraction)
    except (ValueError, OSError) as err:  # ListFormatError, no class folders, no such file
        message = " ".join(str(err).split())
        raise ConfigError(
            f"config key '{key}': no usable {split} dataset: {message}{fix}"
        ) from None
    if len(dataset) == 0:
        raise ConfigError(f"config key '{key}': the {split} dataset is empty{fix}")
    return dataset


def open_masked_train_set(data: DataConfig, device: torch.device) -> ClipDataset:
    """The train set of masked pre-training and distillation (:func:`open_dataset`: fails fast),
    built to leave to ``device`` what ``data.crop`` / ``data.normalize`` put there
    (:func:`~maskagain.engine.feed.work_on_device`); its resolution warning said for the run."""
    dataset = open_dataset(data, "train", "pretrain", work_on_device(data, device))
    warn_resolution(dataset, data)
    return dataset


# ----------------------------------------------------------------------------- input size
RESOLUTION_RATIO = 4.0  # decoded short side vs data.short_side, either way, that is "far"
PREPARED_SHORT_SIDE = EncodeOptions.short_side  # `maskagain prepare`'s default short side


def warn_resolution(dataset: Dataset, data: DataConfig, probes: int = 16) -> None:
    """A warning when the videos of ``dataset`` call for an action: short sides above
    :data:`PREPARED_SHORT_SIDE` and far (> 4x) above the clips' (``data.short_side``):
    ``maskagain prepare`` makes decoding cheaper; or far below it: a smaller model sees what
    the videos show. Videos already prepared are not warned about. Reads the headers of up to
    ``probes`` videos. A run calls it once, on the first dataset it opens (the other splits
    come from the same source)."""
    if data.kind not in ("list", "folder"):
        return
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
