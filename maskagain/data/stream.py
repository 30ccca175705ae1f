"""Clips of unlabelled videos for inference, decoded in DataLoader workers.

:class:`VideoClips` is an iterable dataset over video paths; worker ``w`` of ``W`` takes videos
``w, w + W, ...``. Each item it yields holds clips of one video, already normalised:

* whole videos: all ``test_clips x test_crops`` views of a video from one decode, exactly the
  clips ``evaluate`` tests it on (:meth:`ClipDataset.load_views`), keys ``0..V-1``;
* ``windows``: the video cut into windows of one clip span (``num_frames x sampling_rate``
  frames) every ``stride`` seconds, ``test_crops`` crops of each, a few windows per item so an
  hour of footage never sits in memory at once; keys ``window * crops + crop``.

An item is ``{"video": int, "path": str, "clips": (n, C, T, H, W) float32, "keys": (n,) long,
"windows": [(window, start_s, end_s), ...] (windows only), "last": bool, "error": str | None}``;
a video that cannot be read yields one item with ``error`` set and no clips.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import IterableDataset, get_worker_info

from maskagain.data.config import DataConfig
from maskagain.data.datasets import ClipDataset, VideoListDataset
from maskagain.data.decode import VideoFile
from maskagain.data.lists import VideoRecord
from maskagain.data.sampling import dense_indices

log = logging.getLogger(__name__)

READ_ERRORS = (RuntimeError, OSError, ValueError, IndexError)  # VideoDecodeError is a RuntimeError


def window_starts(num_frames: int, span: int, stride: int) -> list[int]:
    """First frames of windows of ``span`` frames every ``stride`` frames over a video of
    ``num_frames``; a last window ends at the video's end when the stride leaves a tail
    uncovered, and a video shorter than one span gets one window (padded when sampled)."""
    if num_frames <= span:
        return [0]
    starts = list(range(0, num_frames - span + 1, max(1, stride)))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    return starts


class VideoClips(IterableDataset):
    """Normalised clips of ``paths`` as the module docstring describes; ``stride_s`` (seconds)
    only with ``windows`` (None: one clip span); ``chunk``: at most this many clips per item.
    ``dataset``: a test/eval dataset whose video ``i`` is ``paths[i]`` (shards), instead of the
    files at ``paths``."""

    def __init__(
        self,
        paths: list[str],
        cfg: DataConfig,
        windows: bool = False,
        stride_s: float | None = None,
        chunk: int = 32,
        dataset: ClipDataset | None = None,
    ) -> None:
        if cfg.sampling != "dense" and windows:
            raise ValueError("windows need dense sampling (data.sampling=dense)")
        if stride_s is not None and stride_s <= 0:
            raise ValueError(f"the stride must be > 0 seconds, got {stride_s}")
        records = [VideoRecord(p, 0) for p in paths]
        self.views = dataset or VideoListDataset(records, cfg, "test", "eval", ["unknown"])
        self.paths, self.cfg = paths, cfg
        self.windows, self.stride_s, self.chunk = windows, stride_s, max(1, chunk)

    @property
    def span(self) -> int:
        """Frames one clip spans."""
        return (self.cfg.num_frames - 1) * self.cfg.sampling_rate + 1

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for video in range(worker, len(self.paths), workers):
            yield from self._items(video)

    def _items(self, video: int):
        base = {"video": video, "path": self.paths[video], "error": None}
        try:
            if not self.windows:
                clips = self.views.load_views(video)  # (V, C, T, H, W)
                yield {**base, "clips": clips, "keys": torch.arange(len(clips)), "last": True}
                return
            yield from self._window_items(video, base)
        except READ_ERRORS as e:
            reason = getattr(e, "reason", None) or str(e)
            yield {**base, "error": reason, "last": True, "clips": None, "keys": None}

    def _window_items(self, video: int, base: dict):
        source = self.views.open(video)
        try:
            fps = source.fps if isinstance(source, VideoFile) else 0.0
            if not fps:
                raise ValueError("the frame rate is unknown, so windows have no times")
            stride = self.span if self.stride_s is None else max(1, round(self.stride_s * fps))
            starts = window_starts(source.num_frames, self.span, stride)
            per_item = max(1, self.chunk // self.cfg.test_crops)
            for first in range(0, len(starts), per_item):
                chunk = list(enumerate(starts))[first : first + per_item]
                clips, keys, spans = self._window_clips(source, chunk, fps)
                last = first + per_item >= len(starts)
                yield {**base, "clips": clips, "keys": keys, "windows": spans, "last": last}
        finally:
            source.close()

    def _window_clips(self, source, chunk: list[tuple[int, int]], fps: float):
        """Clips ``(len(chunk) * crops, C, T, H, W)`` of windows ``(index, start frame)``."""
        cfg, crops = self.cfg, self.cfg.test_crops
        index_sets = [
            dense_indices(source.num_frames, cfg.num_frames, cfg.sampling_rate, start=s)
            for _, s in chunk
        ]
        union = sorted({i for s in index_sets for i in s})
        frames = source.read(union, cfg.short_side)  # (U, H, W, C) uint8
        pos = {f: k for k, f in enumerate(union)}
        clips, keys, spans = [], [], []
        for (w, start), idx in zip(chunk, index_sets):
            window = frames[[pos[i] for i in idx]]
            clips += [self.views.transform(window, c) for c in range(crops)]
            keys += [w * crops + c for c in range(crops)]
            end = min(start + self.span, source.num_frames)
            spans.append((w, start / fps, end / fps))
        return torch.stack(clips), torch.tensor(keys), spans
