"""Decode cost of one 16x4 training clip: ``maskagain.data``'s PyAV reader against torchcodec.

    python -m benchmarks.torchcodec VIDEO [VIDEO ...] [--full-size]

One decoder thread each, ``torch`` one thread, the same 12 clips (dense sampling, seeded) per
file, alternating which reader goes first; median milliseconds per clip. Without
``--full-size`` both deliver frames at short side 256, as training reads them: PyAV resizes in
swscale while decoding, torchcodec's frames are resized with ``torch`` (antialiased bilinear).
With ``--full-size`` neither resizes (the decoders alone). Needs ``torchcodec`` and the system
FFmpeg libraries.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import av
import torch

from maskagain.data import read_clip
from maskagain.data.decode import short_side_size
from maskagain.data.sampling import dense_indices


def read_torchcodec(path: str, indices: list[int], size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 (T, H, W, C) frames at ``indices``, resized to ``size`` (H, W) when given."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(
        path, seek_mode="approximate", num_ffmpeg_threads=1, dimension_order="NHWC"
    )
    frames = decoder.get_frames_at(indices=indices).data
    if size is None or tuple(frames.shape[1:3]) == size:
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def read_pyav(path: str, indices: list[int], size: tuple[int, int] | None) -> torch.Tensor:
    return read_clip(path, indices, short_side=min(size) if size else None, threads=1)


def bench(path: str, full_size: bool, clips: int = 12) -> dict[str, float]:
    """Median milliseconds per clip of each reader on ``path``."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        n = sum(1 for p in c.demux(video=0) if p.size)
        size = None if full_size else short_side_size(stream.height, stream.width, 256)
    g = torch.Generator().manual_seed(0)
    index_sets = [dense_indices(n, 16, 4, generator=g) for _ in range(clips + 1)]
    readers = {"pyav": read_pyav, "torchcodec": read_torchcodec}
    times: dict[str, list[float]] = {name: [] for name in readers}
    for k, indices in enumerate(index_sets):
        for name in list(readers)[:: 1 if k % 2 else -1]:
            start = time.perf_counter()
            frames = readers[name](path, indices, size)
            elapsed = time.perf_counter() - start
            assert frames.shape[0] == 16
            if k:  # the first clip warms up caches and libraries
                times[name].append(elapsed)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--full-size", action="store_true", help="no resize (decoders alone)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for path in args.videos:
        ms = bench(path, args.full_size)
        print(
            f"{path}: pyav {ms['pyav']:.1f} ms/clip, torchcodec {ms['torchcodec']:.1f} ms/clip, "
            f"torchcodec / pyav time {ms['torchcodec'] / ms['pyav']:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
