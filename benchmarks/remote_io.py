"""What reading videos from object storage costs per clip: requests, bytes read against the
clip's share of the file, and clips/s beside the same files on local disk.

    python -m benchmarks.remote_io [--videos 6] [--clips 24] [--seconds 10]

K400-like sources (320x568, 30 fps, x264 defaults) are written, prepared as ``maskagain
prepare`` does (short side 320, key frame every 16 frames, faststart) and served by moto's S3
server on localhost (no network latency: the rows measure the requests and bytes, not a
datacenter's round trips). One process, one decoder thread, the real ``ClipDataset``;
:func:`clip_io_cost` is what other benchmarks call on any dataset. The row "index by
demuxing" reads the same local clips with the frame index built by demuxing every packet (as
for containers without a sample table) instead of from the MP4's sample table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from maskagain.data import DataConfig, build_dataset
from maskagain.data.datasets import ClipDataset
from maskagain.data.decode import VideoFile
from maskagain.data.prepare import EncodeOptions, encode_video
from maskagain.data.storage import Storage


def clip_io_cost(dataset: ClipDataset, items: list[int]) -> dict[str, float]:
    """Load ``items`` of a video dataset one by one; per clip: remote requests, bytes read,
    the file's size and the clip's share of it (the file's bytes times the clip's span over
    the video's frames), and clips/s. ``dataset.storage.stats`` counts the requests."""
    stats, sizes = dataset.storage.stats, Storage()
    requests, read, share, size = [], [], [], []
    cfg = dataset.cfg
    span = (cfg.num_frames - 1) * cfg.sampling_rate + 1
    start = time.perf_counter()
    for i in items:
        video_id = i // dataset.views
        before = (stats.requests, stats.bytes_read)
        dataset[i]
        requests.append(stats.requests - before[0])
        read.append(stats.bytes_read - before[1])
        with VideoFile(dataset.path(video_id), storage=sizes) as video:  # not counted
            frames = video.num_frames
        size.append(sizes.size(dataset.path(video_id)))
        share.append(size[-1] * min(1.0, span / frames))
    seconds = time.perf_counter() - start
    return {
        "clips": len(items),
        "requests_per_clip": statistics.mean(requests),
        "bytes_read_per_clip": statistics.mean(read),
        "file_bytes": statistics.mean(size),
        "clip_share_bytes": statistics.mean(share),
        "read_over_share": sum(read) / sum(share),
        "clips_per_s_with_probe": len(items) / seconds,
    }


def clips_per_second(dataset: ClipDataset, items: list[int], rounds: int = 3) -> float:
    """Median clips/s of loading ``items`` (one process)."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in items:
            dataset[i]
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def open_ms(dataset: ClipDataset, items: list[int], rounds: int = 3) -> float:
    """Median milliseconds to open a video of ``items`` and index its frames."""
    times = []
    for _ in range(rounds):
        for i in items:
            start = time.perf_counter()
            dataset.open(i // dataset.views).close()
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def index_builders(dataset: ClipDataset, items: list[int], rounds: int = 5) -> dict[str, dict]:
    """Clips/s and ms to open and index a video with the frame index from the MP4's sample table
    (``"table"``) and by demuxing every packet (``"demux"``), interleaved round by round
    (medians), so a machine's changing load weighs on both alike."""
    runs: dict[str, tuple[list[float], list[float]]] = {"table": ([], []), "demux": ([], [])}
    for _ in range(rounds):
        for name in runs:
            with contextlib.ExitStack() as stack:
                if name == "demux":
                    stack.enter_context(
                        mock.patch.object(VideoFile, "_table_index", lambda self: None)
                    )
                runs[name][0].append(clips_per_second(dataset, items, rounds=1))
                runs[name][1].append(open_ms(dataset, items, rounds=1))
    return {
        name: {"clips_per_s": statistics.median(c), "open_and_index_ms": statistics.median(o)}
        for name, (c, o) in runs.items()
    }


@contextlib.contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3 server on a free localhost port, this process's AWS variables pointing at it;
    yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def prepared_videos(work: Path, count: int, seconds: float) -> list[Path]:
    from benchmarks.data import write_test_video

    out = []
    for i in range(count):
        src, dst = work / f"src{i}.mp4", work / "videos" / f"v{i}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_test_video(src, 320, 568, 30, seconds)
        encode_video(str(src), str(dst), EncodeOptions())
        out.append(dst)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--read-ahead-mb", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="remote_io-") as tmp, local_s3():
        work = Path(tmp)
        files = prepared_videos(work, args.videos, args.seconds)
        (work / "train.txt").write_text("".join(f"videos/{f.name} 0\n" for f in files))
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket="bench")
        for f in [*files, work / "train.txt"]:
            client.upload_file(str(f), "bench", f"k400/{f.relative_to(work).as_posix()}")
        base = dict(num_workers=0, decode_threads=1, read_ahead_mb=args.read_ahead_mb)
        report = {}
        for name, root in (("local disk", str(work)), ("local S3 server", "s3://bench/k400")):
            cfg = DataConfig(root=root, train_list=f"{root}/train.txt", **base)
            cfg.validate()
            ds = build_dataset(cfg, "train", "pretrain")
            items = [i % len(ds) for i in range(args.clips)]
            row = clip_io_cost(ds, items)
            if name == "local disk":  # the same clips, frames indexed by demuxing every packet
                speed = index_builders(ds, items)
                report[name] = {**row, **speed["table"]}
                report["local disk, index by demuxing"] = speed["demux"]
            else:
                row["clips_per_s"] = clips_per_second(ds, items)
                row["open_and_index_ms"] = open_ms(ds, items)
                report[name] = row
    report["settings"] = {**vars(args), "load": os.getloadavg()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
