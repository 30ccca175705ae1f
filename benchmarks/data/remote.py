"""Training-loader rows over data kept elsewhere, beside the local prepared-file row that only
decodes (``ours_prepared_devcrop_r4`` of :mod:`benchmarks.data.pipeline`, the CUDA default
``data.crop=device``: there reading is the largest share of a clip's cost):

* ``ours_prepared_s3_devcrop_r4``: the same prepared file read from a local S3 server (moto, in
  its own process) through ``maskagain.data``'s storage: ranged GETs of ``data.read_ahead_mb``;
* ``ours_shards_devcrop_r4``: the prepared file's bytes as members of tar shards on local disk
  (``data.kind=shards``: one seek + read per sample);
* ``ours_shards_s3_devcrop_r4``: those shards in the local S3 server (one ranged GET per
  sample).

Each row also counts what it cost: requests and bytes read per decoded video (4 clips of one
window), next to the window's share of the file (the bytes of the frames the window spans). The S3 server runs on the same machine, so its
CPU is not the loader's and the network is a loopback: the rows measure the client's cost.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.data.pipeline import REMOTE_ROWS, OurLoader
from maskagain.data import DataConfig, MaskCollator

SHARD_SAMPLES = 4  # samples per shard: the rows read across several shards
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3 server in a child process on a free localhost port, this process's AWS
    variables pointing at it while the block runs; yields a new bucket's ``s3://`` URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_end_with_parent,
    )
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # filesystems made earlier keep their endpoint
    try:
        _wait_for(port)
        s3fs.S3FileSystem().mkdir("bench")
        yield "s3://bench"
    finally:
        server.kill()
        server.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()


def _end_with_parent() -> None:
    """In the server's process (Linux): a SIGTERM when the benchmark's process dies, so a killed
    benchmark leaves no server behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the local S3 server did not start on port {port}")


def write_shards(folder: str, video: Path, copies: int) -> str:
    """A shard set holding ``copies`` copies of the prepared ``video``, ``SHARD_SAMPLES`` per
    shard, written by ``prepare --shards``'s writer; returns its index path."""
    from maskagain.data.shard_writer import ShardSetWriter
    from maskagain.data.storage import Storage

    data = video.read_bytes()
    writer = ShardSetWriter(folder, SHARD_SAMPLES * len(data), Storage())
    for k in range(copies):
        writer.add(f"{k:08d}", data, 0, str(video))
    writer.flush()
    return writer.write_index([], [])


class ShardLoader(OurLoader):
    """:class:`OurLoader` over a shard set (``data.kind=shards``)."""

    def __init__(self, index: str, sampling: str, num_sample: int, repeat: str) -> None:
        from maskagain.data.shard_dataset import ShardDataset
        from maskagain.data.shards import ShardIndex

        cfg = DataConfig(kind="shards", sampling=sampling, num_sample=num_sample, repeat=repeat,
                         decode_threads=1, num_workers=0)  # fmt: skip
        # decode only, as the local row compared with
        self.ds = ShardDataset(ShardIndex.load(index), cfg, "train", "pretrain", on_device="crop")
        self.collate = MaskCollator("tube", 0.9, (8, 14, 14))


def remote_rows(prepared: Path, bucket: str, work: Path, sampling: str, copies: int) -> dict:
    """The rows of this module for one prepared video (uploaded to ``bucket``)."""
    from maskagain.data.storage import Storage

    name = prepared.stem
    url = f"{bucket}/files/{name}.mp4"
    Storage().write_bytes(url, prepared.read_bytes())
    local = write_shards(str(work / "shards" / name), prepared, copies)
    remote = write_shards(f"{bucket}/shards/{name}", prepared, copies)
    files = OurLoader([url] * copies, sampling, 4, "same_window", crop_on_device=True)
    return {
        "ours_prepared_s3_devcrop_r4": files,
        "ours_shards_devcrop_r4": ShardLoader(local, sampling, 4, "same_window"),
        "ours_shards_s3_devcrop_r4": ShardLoader(remote, sampling, 4, "same_window"),
    }


def io_costs(rows: dict, clips: int, window_share: float, clips_per_video: int = 4) -> dict:
    """Requests and bytes read per clip and per decoded video (``clips_per_video`` clips of one
    window) of the rows that read object storage, after ``clips`` clips each, and the window's
    share of the file in bytes (the bytes of the frames the window spans; local reads are not
    counted). Bytes read per video compare with the window's share: per clip they are split
    over the clips of one decode, the share is not."""
    out = {}
    for name in (r for r in REMOTE_ROWS if r in rows):
        stats = rows[name].ds.storage.stats
        remote = stats.requests > 0
        videos = clips / clips_per_video
        out[name] = {
            "requests_per_clip": stats.requests / clips if remote else None,
            "bytes_read_per_clip": stats.bytes_read / clips if remote else None,
            "requests_per_video": stats.requests / videos if remote else None,
            "bytes_read_per_video": stats.bytes_read / videos if remote else None,
            "window_share_bytes": window_share,
            "clips_per_video": clips_per_video,
            "failures": stats.failures,
        }
    return out
