"""Repeated sampling (``DataConfig.repeat``): r clips per decode, and reading several windows of a
video with one seek per run of frames."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from maskagain.data import DataConfig, VideoFile, VideoListDataset, VideoRecord
from maskagain.data import decode as decode_mod


def write_h264(path: Path, frames: int, keyint: int, size: tuple[int, int] = (32, 48)) -> Path:
    """Frame t is grey at ``4 * t`` with a white square moving right (crops differ)."""
    h, w = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "10", "x264-params": f"keyint={keyint}:min-keyint={keyint}"}
        for t in range(frames):
            img = np.full((h, w, 3), 4 * t, np.uint8)
            img[4:12, t % (w - 8) : t % (w - 8) + 8] = 255
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_h264(tmp_path_factory.mktemp("repeat") / "v.mp4", 48, keyint=250)


def dataset(path: Path, repeat: str, num_sample: int = 4) -> VideoListDataset:
    cfg = DataConfig(
        input_size=16,
        short_side=24,
        num_frames=4,
        sampling_rate=2,
        num_sample=num_sample,
        repeat=repeat,
        num_workers=0,
    )
    return VideoListDataset([VideoRecord(str(path), 0)], cfg, "train", "pretrain", ["a"])


class Counting:
    """Counts VideoFile opens and reads (with the frames each read asked for)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens, self.reads = 0, []
        init, read = VideoFile.__init__, VideoFile.read

        def counted_init(video, *a, **k):
            self.opens += 1
            init(video, *a, **k)

        def counted_read(video, indices, short_side=None):
            self.reads.append(list(indices))
            return read(video, indices, short_side)

        monkeypatch.setattr(VideoFile, "__init__", counted_init)
        monkeypatch.setattr(VideoFile, "read", counted_read)


def test_same_window_decodes_once_with_distinct_crops(video, monkeypatch):
    torch.manual_seed(0)
    count = Counting(monkeypatch)
    item = dataset(video, "same_window")[0]
    clips = item["video"]
    assert clips.shape == (4, 3, 4, 16, 16)
    assert count.opens == 1 and len(count.reads) == 1
    assert len(count.reads[0]) == 4  # the 4 clips' frames are one window of 4, decoded once
    crops = {tuple(c.flatten()[::97].tolist()) for c in clips}
    assert len(crops) > 1  # each clip its own crop


def test_new_window_reads_the_union_once(video, monkeypatch):
    torch.manual_seed(1)
    count = Counting(monkeypatch)
    clips = dataset(video, "new_window")[0]["video"]
    assert clips.shape == (4, 3, 4, 16, 16)
    assert count.opens == 1 and len(count.reads) == 1
    assert len(count.reads[0]) > 4  # the union of different windows, decoded once


def test_repeat_is_validated():
    from maskagain.config import from_dict

    with pytest.raises(ValueError, match="repeat"):
        from_dict(DataConfig, {"repeat": "same"}, "data")
    assert from_dict(DataConfig, {"repeat": "new_window"}, "data").repeat == "new_window"
    assert DataConfig().repeat == "same_window"


def test_far_apart_frames_are_read_with_one_seek_per_run(tmp_path, monkeypatch):
    path = write_h264(tmp_path / "gop4.mp4", 40, keyint=4)
    with av.open(str(path)) as c:
        reference = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    decoded = []
    original = decode_mod.VideoFile._decode_skipping

    def counting(video, wanted_pts):
        for frame in original(video, wanted_pts):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode_mod.VideoFile, "_decode_skipping", counting)
    wanted = [1, 2, 21, 37, 38]
    with VideoFile(path, threads=1) as v:
        assert len(v._runs(wanted)) == 3
        frames = v.read(wanted).numpy()
    for k, i in enumerate(wanted):
        np.testing.assert_array_equal(frames[k], reference[i])
    assert len(decoded) < 15  # not the 38 frames from 0 to 38


def test_decoder_threads_share_the_cores_among_workers(monkeypatch):
    from types import SimpleNamespace

    from maskagain.data import datasets

    monkeypatch.setattr(datasets, "get_worker_info", lambda: None)
    assert datasets.decode_threads() == 0  # in-process: FFmpeg's choice
    monkeypatch.setattr(datasets.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    for workers, threads in ((1, 16), (4, 4), (6, 2), (16, 1), (32, 1)):
        monkeypatch.setattr(
            datasets, "get_worker_info", lambda w=workers: SimpleNamespace(num_workers=w)
        )
        assert datasets.decode_threads() == threads
        assert workers * threads <= 16 or threads == 1
