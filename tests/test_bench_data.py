"""The data benchmark's storage rows (``python -m benchmarks.data --pipeline``): prepared files in
a local S3 server, shards on disk and in S3 load the batches of the local prepared-file row, and
their I/O is counted. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.data import PIPE_ROWS
from benchmarks.data.decode import write_test_video
from benchmarks.data.pipeline import LOCAL_ROW, REMOTE_ROWS, OurLoader, bench_pipeline
from benchmarks.data.remote import SHARD_SAMPLES, io_costs, local_s3, remote_rows
from maskagain.data.prepare import EncodeOptions, Job, run_jobs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bench")
    write_test_video(work / "src.mp4", 128, 192, fps=30, seconds=2.5)
    out = work / "prepared" / "src.mp4"
    assert not run_jobs([Job(str(work / "src.mp4"), str(out))], EncodeOptions(), 1, False).failed
    return out


@pytest.mark.subprocess
def test_storage_rows_load_the_local_batches_and_count_their_requests(prepared, tmp_path):
    pytest.importorskip("moto.server")
    assert set(REMOTE_ROWS) <= set(PIPE_ROWS)
    copies = 8
    with local_s3() as bucket:
        rows = remote_rows(prepared, bucket, tmp_path, "dense", copies)
        local = OurLoader([str(prepared)] * copies, "dense", 4, "same_window", crop_on_device=True)
        rows[LOCAL_ROW] = local
        result = bench_pipeline(rows, clips_per_batch=4, rounds=1)  # 2 batches of 1 video
        costs = io_costs(rows, clips=8, window_share=1.0)
        frames = {name: _frames(rows[name].ds) for name in rows}
    assert all(r["clips_per_s_per_core"] > 0 for r in result.values())
    size = prepared.stat().st_size
    shards_s3 = costs["ours_shards_s3_devcrop_r4"]
    assert shards_s3["requests_per_clip"] == 1 / 4  # one ranged GET per video, 4 clips each
    assert shards_s3["bytes_read_per_clip"] == size / 4 and shards_s3["failures"] == 0
    assert shards_s3["requests_per_video"] == 1 and shards_s3["bytes_read_per_video"] == size
    assert costs["ours_shards_devcrop_r4"]["requests_per_clip"] is None  # local: not requests
    files_s3 = costs["ours_prepared_s3_devcrop_r4"]
    assert size < 64 * 2**10  # shorter than the first block: opening it reads it whole
    assert files_s3["requests_per_video"] == 1 and files_s3["bytes_read_per_video"] == size
    assert len(rows["ours_shards_devcrop_r4"].ds.index.shards) == copies // SHARD_SAMPLES
    for name in REMOTE_ROWS:  # the same prepared video everywhere: the same frames
        assert torch.equal(frames[name], frames[LOCAL_ROW]), name


def _frames(dataset) -> torch.Tensor:
    """Frames 0, 30 and 60 of video 3 of a benchmark row's dataset."""
    video = dataset.open(3)
    try:
        return video.read([0, 30, 60])
    finally:
        video.close()
