"""Clip decoding + transform: ``maskagain.data`` (PyAV) next to decord on 16x4 clips.

Two H.264 test videos (10 s at 30 fps, ~320p and ~720p, x264 defaults: B-frames, key frame
every <= 250 frames) are written once to ``--workdir``. For each video the same random 16x4
clips (16 frames, stride 4, random start) are read by

* ``pyav``: ``maskagain.data.read_clip(path, indices, short_side=256)`` (seek to the key frame
  before the first frame, decode to the last one, swscale resize + RGB of the 16 frames only);
* ``decord``: ``decord.VideoReader(path, width, height)`` (resizing while decoding, as
  VideoMAE's loader does with ``new_width/new_height``) and ``get_batch(indices)``;

each with 1 decoder thread (what one DataLoader worker uses) and with the library's automatic
thread count, opening the file per clip as a dataset does. Every clip then goes through the
same pre-training transform (multi-scale crop to 224, normalise), so "decode + transform" is
compared per clip. The libraries alternate clip by clip so that machine load hits both alike.
decord is only needed here (``pip install decord``), not by maskagain.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch

from maskagain.data import read_clip
from maskagain.data.decode import short_side_size
from maskagain.data.sampling import dense_indices

VIDEOS = {"320p": (320, 568), "720p": (720, 1280)}
FPS, SECONDS = 30, 10


def write_test_video(
    path: Path,
    height: int,
    width: int,
    fps: int = FPS,
    seconds: float = SECONDS,
    codec: str = "libx264",
) -> None:
    """A video with camera-pan-like motion and texture (not trivially compressible): H.264 with
    x264 defaults (B-frames, key frame every <= 250 frames), or VP9 (``codec="libvpx-vp9"``)."""
    rng = np.random.default_rng(0)
    count = int(fps * seconds)
    big_h, big_w = height + 64, width + 2 * count
    base = rng.integers(0, 256, (big_h // 8, big_w // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks of texture
    yy, xx = np.mgrid[0:big_h, 0 : base.shape[1]]
    shade = 100 * (np.sin(xx / 37.0) + np.cos(yy / 23.0) + 2) / 4
    base = (base * 0.6 + shade[..., None]).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        else:
            stream.options = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for t in range(count):
            x, y = 2 * t, int(20 + 20 * np.sin(t / 15))
            frame = np.ascontiguousarray(base[y : y + height, x : x + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_pyav(path: str, indices: list[int], size: tuple[int, int] | None, threads: int):
    """``size`` is the (height, width) after the short-side resize; PyAV takes the short side."""
    return read_clip(path, indices, short_side=min(size) if size else None, threads=threads)


def read_decord(path: str, indices: list[int], size: tuple[int, int] | None, threads: int):
    import decord

    h, w = size if size else (-1, -1)
    vr = decord.VideoReader(path, width=w, height=h, num_threads=threads)
    return torch.from_numpy(vr.get_batch(indices).asnumpy())


READERS = {"pyav": read_pyav, "decord": read_decord}


def bench_video(path: Path, clips: int, threads: int, transform, short_side: int) -> dict:
    """Seconds per clip (decode only and decode + transform) for every reader, same clips."""
    with av.open(str(path)) as c:
        n = sum(1 for p in c.demux(video=0) if p.size)
        size = short_side_size(c.streams.video[0].height, c.streams.video[0].width, short_side)
    g = torch.Generator().manual_seed(0)
    index_sets = [dense_indices(n, 16, 4, generator=g) for _ in range(clips + 1)]
    times: dict[str, dict[str, list[float]]] = {r: {"decode": [], "total": []} for r in READERS}
    for k, indices in enumerate(index_sets):
        order = list(READERS) if k % 2 == 0 else list(READERS)[::-1]
        for name in order:
            start = time.perf_counter()
            frames = READERS[name](str(path), indices, size, threads)
            mid = time.perf_counter()
            out = transform(frames)
            end = time.perf_counter()
            assert frames.shape[0] == 16 and out.shape[-2:] == (224, 224)
            if k > 0:  # the first clip warms up file caches and libraries
                times[name]["decode"].append(mid - start)
                times[name]["total"].append(end - start)
    result = {}
    for name, t in times.items():
        med_total, med_decode = statistics.median(t["total"]), statistics.median(t["decode"])
        result[name] = {
            "clips_per_s": 1.0 / med_total,
            "decode_clips_per_s": 1.0 / med_decode,
            "seconds_per_clip_median": med_total,
            "seconds_per_clip_iqr": _iqr(t["total"]),
        }
    result["ratio_pyav_over_decord"] = (
        result["pyav"]["clips_per_s"] / result["decord"]["clips_per_s"]
    )
    return result


def _iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def check_same_frames(path: Path) -> float:
    """Mean absolute difference between the two readers' frames at full size (sanity)."""
    idx = [0, 37, 151, 299]
    a = read_pyav(str(path), idx, None, 0).float()
    b = read_decord(str(path), idx, None, 0).float()
    return float((a - b).abs().mean())
