"""PyAV clip decoding: frame-exact reads against a full sequential decode, seeking, bad files."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from _media import write_audio_only

from maskagain.data import VideoDecodeError, VideoFile, count_frames, read_clip


def pattern(i: int, h: int, w: int) -> np.ndarray:
    """A frame whose content depends on its index (so swapped frames are caught)."""
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = (xx * 4 + i * 7) % 256
    frame[..., 1] = (yy * 4 + i * 13) % 256
    frame[..., 2] = (i * 29) % 256
    return frame


def write_video(
    path: Path,
    codec: str = "libx264",
    n: int = 40,
    size: tuple[int, int] = (48, 64),
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    options: dict | None = None,
    pts: list[int] | None = None,
) -> Path:
    """Write ``n`` pattern frames; ``pts`` (in 1/1000 s) makes a variable-frame-rate file."""
    h, w = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if gop:
            s.codec_context.gop_size = gop
        if pts is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        s.options = dict(options or {})
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, h, w), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def full_decode(path: Path) -> np.ndarray:
    """Reference: every frame, decoded sequentially. (N, H, W, 3) uint8."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


VIDEOS = {
    "h264_bframes.mp4": dict(codec="libx264", gop=12, options={"bframes": "3"}),
    "h264.mkv": dict(codec="libx264", gop=10),
    "h264_annexb.ts": dict(codec="libx264", gop=12, options={"bframes": "3"}),
    "vp9.webm": dict(codec="libvpx-vp9", gop=15),
    "vp8.webm": dict(codec="libvpx", gop=15),
    "mpeg4.avi": dict(codec="mpeg4", gop=12),
    "vp9.mp4": dict(codec="libvpx-vp9", gop=15),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {name: write_video(root / name, **kw) for name, kw in VIDEOS.items()}


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_frame_exact_random_index_sets(videos, name):
    ref = full_decode(videos[name])
    rng = random.Random(0)
    with VideoFile(videos[name]) as video:
        assert video.num_frames == len(ref) == 40
        for _ in range(8):
            idx = rng.sample(range(40), 6) + [0, 39]
            rng.shuffle(idx)
            got = video.read(idx)
            assert got.dtype == torch.uint8 and got.shape == (8, 48, 64, 3)
            np.testing.assert_array_equal(got.numpy(), ref[idx])


def test_repeated_and_unsorted_indices(videos):
    ref = full_decode(videos["h264_bframes.mp4"])
    idx = [30, 5, 5, 39, 0, 30]
    np.testing.assert_array_equal(read_clip(videos["h264_bframes.mp4"], idx).numpy(), ref[idx])


def test_short_side_resize(videos):
    clip = read_clip(videos["vp9.webm"], [0, 1], short_side=24)
    assert clip.shape == (2, 24, 32, 3)
    tall = write_video(videos["vp9.webm"].parent / "tall.mp4", size=(64, 32), n=4)
    assert read_clip(tall, [0], short_side=16).shape == (1, 32, 16, 3)


def _count_decoded(video: VideoFile) -> list[int]:
    """Make ``video`` count the frames its seeking reader decodes; returns the counter."""
    counter = [0]
    decode = video._decode_skipping

    def counting(*args, **kwargs):
        for frame in decode(*args, **kwargs):
            counter[0] += 1
            yield frame

    video._decode_skipping = counting
    return counter


def test_sparse_key_frames_seek_and_stop_early(tmp_path):
    x264 = {"bframes": "2", "x264-params": "keyint=25:min-keyint=25:scenecut=0"}
    path = write_video(tmp_path / "sparse.mp4", n=80, gop=25, options=x264)
    ref = full_decode(path)
    with VideoFile(path) as video:
        keys = [video._index.pts.index(k) for k in video._index.keys]
        assert keys == [0, 25, 50, 75]  # sparse key frames
        counter = _count_decoded(video)
        for idx in ([40, 44, 48], [26], [79], [24, 25], [0, 1], [3, 77], [60, 30, 49]):
            counter[0] = 0
            np.testing.assert_array_equal(video.read(idx).numpy(), ref[idx])
            key = max(k for k in keys if k <= min(idx))
            # decoded from the key frame before the first index to (about) the last one only
            assert len(set(idx)) <= counter[0] <= max(idx) - key + 1 + 4, (idx, counter[0])


def test_unreferenced_h264_frames_are_skipped(tmp_path):
    x264 = {"bframes": "3", "x264-params": "keyint=40:min-keyint=40:scenecut=0:b-pyramid=none"}
    path = write_video(tmp_path / "b.mp4", n=40, options=x264)
    ref = full_decode(path)
    with VideoFile(path) as video:
        counter = _count_decoded(video)
        idx = list(range(0, 40, 4))
        np.testing.assert_array_equal(video.read(idx).numpy(), ref[idx])
        assert counter[0] < 30  # of 37+ frames up to 36, the unwanted plain B-frames were left out


def test_webm_without_frame_count_is_counted(videos):
    with av.open(str(videos["vp9.webm"])) as c:
        assert c.streams.video[0].frames == 0  # the container does not store it
    assert count_frames(videos["vp9.webm"]) == 40


def test_variable_frame_rate(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.integers(10, 90, 30)).tolist()
    path = write_video(tmp_path / "vfr.mkv", n=30, pts=pts)
    ref = full_decode(path)
    assert len(ref) == 30
    idx = [0, 3, 4, 17, 18, 28, 29]
    with VideoFile(path) as video:
        assert video.num_frames == 30
        np.testing.assert_array_equal(video.read(idx).numpy(), ref[idx])


def test_odd_sized_and_grayscale(tmp_path):
    odd = write_video(tmp_path / "odd.mp4", n=6, size=(33, 47), pix_fmt="yuv444p")
    assert read_clip(odd, [0, 5]).shape == (2, 33, 47, 3)
    gray = write_video(tmp_path / "gray.mkv", codec="ffv1", n=6, pix_fmt="gray")
    with av.open(str(gray)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "gray"
    clip = read_clip(gray, [1, 4])
    assert clip.shape == (2, 48, 64, 3)
    assert torch.equal(clip[..., 0], clip[..., 1]) and torch.equal(clip[..., 1], clip[..., 2])


def bad_files(root: Path, good: Path) -> dict[str, Path]:
    """Every bad-file case of the reliability suite (the missing one is not created)."""
    data = good.read_bytes()
    files = {
        "missing": root / "missing.mp4",
        "empty": root / "empty.mp4",
        "truncated": root / "truncated.mp4",
        "random": root / "random.mp4",
        "text": root / "text.mp4",
        "audio_only": write_audio_only(root / "audio.mp4", frames=5),
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    files["text"].write_text("this is not a video\n" * 20)
    return files


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "random", "text", "audio_only"])
def test_bad_files_raise_decode_error(tmp_path, videos, case):
    path = bad_files(tmp_path, videos["h264_bframes.mp4"])[case]
    with pytest.raises(VideoDecodeError) as err:
        read_clip(path, [0, 1])
    assert err.value.path == str(path) and str(path) in str(err.value) and err.value.reason


def test_truncated_webm_reads_what_is_there(tmp_path, videos):
    """A cut-off stream without an index at the end still opens; frames are counted."""
    data = videos["vp9.webm"].read_bytes()
    path = tmp_path / "cut.webm"
    path.write_bytes(data[: len(data) * 2 // 3])
    try:
        with VideoFile(path) as video:
            n = video.num_frames
            clip = video.read([0, n - 1])
    except VideoDecodeError:
        return  # also acceptable: refused with a reason
    assert 0 < n < 40 and clip.shape == (2, 48, 64, 3)


def test_out_of_range_index_is_a_caller_error(videos):
    with pytest.raises(IndexError):
        read_clip(videos["h264.mkv"], [0, 40])
