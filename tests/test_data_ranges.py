"""The frame index from an MP4's sample table equals the one from demuxing every packet, and a
remote clip reads its own packets (about its share of the file), not the whole file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from test_data_decode import VIDEOS, write_video

from maskagain.data import VideoFile
from maskagain.data.mp4_table import h264_max_ref_frames
from maskagain.data.prepare import EncodeOptions, encode_video
from maskagain.data.storage import Storage, StoragePolicy
from maskagain.data.synthetic import write_video as write_noise


def both_indexes(path: Path, monkeypatch) -> tuple[VideoFile, VideoFile]:
    """The same file opened twice: index as built (table where usable), and by demuxing."""
    with VideoFile(path) as table:
        pass
    with monkeypatch.context() as m:
        m.setattr(VideoFile, "_table_index", lambda self: None)
        with VideoFile(path) as demux:
            pass
    return table, demux


def write_cut(path: Path, options: dict, pix_fmt: str = "yuv420p") -> Path:
    """60 frames of moving noise with a scene cut at frame 30 (x264 makes it an I-frame)."""
    a, b = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, pix_fmt
        s.options = {"preset": "veryfast", **options}
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.roll(a if i < 30 else b, i, 1), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The decode tests' videos, a variable-frame-rate one, one of I-frames only (x264
    ``zerolatency``), and ``maskagain prepare``d copies (faststart mp4, B-frames, an edit list),
    one of them cut short."""
    root = tmp_path_factory.mktemp("index")
    out = {name: write_video(root / name, **kw) for name, kw in VIDEOS.items()}
    pts = np.cumsum(np.random.default_rng(0).integers(10, 90, 30)).tolist()
    out["vfr.mkv"] = write_video(root / "vfr.mkv", n=30, pts=pts)
    sparse = {"bframes": "2", "x264-params": "keyint=25:min-keyint=25:scenecut=0"}
    out["sparse.mp4"] = write_video(root / "sparse.mp4", n=80, gop=25, options=sparse)
    for name in ("h264_bframes.mp4", "vp9.webm", "vfr.mkv", "h264_annexb.ts"):
        dst = root / f"prepared_{Path(name).stem}.mp4"
        encode_video(str(out[name]), str(dst), EncodeOptions(short_side=32))
        out[dst.name] = dst
    flat = np.zeros((12, 24, 24, 3), np.uint8) + np.arange(12)[:, None, None, None].astype(np.uint8)
    write_noise(root / "intra.mp4", flat * 3)  # I-frames the parser flags as key, the table not
    out["intra.mp4"] = root / "intra.mp4"
    one_ref = {"x264-params": "keyint=100:min-keyint=100:scenecut=40:bframes=0:ref=1"}
    out["one_ref_cut.mp4"] = write_cut(root / "one_ref_cut.mp4", one_ref)
    data = out["prepared_h264_bframes.mp4"].read_bytes()
    (root / "prepared_cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    out["prepared_cut.mp4"] = root / "prepared_cut.mp4"
    return out


USES_TABLE = {"h264_bframes.mp4", "vp9.mp4", "sparse.mp4"}


@pytest.mark.parametrize(
    "name",
    sorted(VIDEOS)
    + ["vfr.mkv", "sparse.mp4", "prepared_cut.mp4", "intra.mp4", "one_ref_cut.mp4"]
    + [f"prepared_{n}.mp4" for n in ("h264_bframes", "vp9", "vfr", "h264_annexb")],
)
def test_table_index_equals_demux_index(files, name, monkeypatch):
    table, demux = both_indexes(files[name], monkeypatch)
    assert not demux.index_from_table
    expected = name in USES_TABLE or (name.startswith("prepared_") and name != "prepared_cut.mp4")
    # a cut file's table points past its end; in intra.mp4 and one_ref_cut.mp4 (a single
    # reference frame) libavformat's parser flags I-frames as key frames that the table does not
    assert table.index_from_table == expected
    assert table._index == demux._index and table._index.pts is not None
    assert table._packets == demux._packets


def test_a_table_that_disagrees_with_the_packets_is_demuxed_from_the_start(files, monkeypatch):
    path = files["prepared_h264_bframes.mp4"]
    _, demux = both_indexes(path, monkeypatch)
    monkeypatch.setattr(VideoFile, "_first_packets_agree", lambda self, packets, keys: False)
    with VideoFile(path) as video:  # the check demuxed packets: indexing restarts at the first
        assert not video.index_from_table and video._index == demux._index


@pytest.mark.parametrize(
    "refs, options, pix_fmt",
    [
        (1, "bframes=0:ref=1", "yuv420p"),
        (3, "bframes=0:ref=3", "yuv420p"),
        (4, "bframes=2:ref=1", "yuv420p"),  # x264 adds references for B-frames
        (5, "bframes=0:ref=5", "yuv444p"),  # High 4:4:4 profile
    ],
)
def test_h264_max_ref_frames_of_the_sps(tmp_path, refs, options, pix_fmt):
    path = write_cut(tmp_path / "v.mp4", {"x264-params": options}, pix_fmt)
    with av.open(str(path)) as c:
        assert h264_max_ref_frames(c.streams.video[0].codec_context.extradata) == refs
    assert h264_max_ref_frames(b"") is None and h264_max_ref_frames(b"\x01" + b"\x00" * 12) is None


def test_prepared_b_frames_need_the_composition_offsets(files, monkeypatch):
    """Presentation order differs from decode order: the table's timestamps alone are wrong."""
    video, _ = both_indexes(files["prepared_h264_bframes.mp4"], monkeypatch)
    decode_order = [p.pts for p in video._packets]
    assert decode_order != sorted(decode_order) and video._index.pts == sorted(decode_order)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, s3_server) -> tuple[Path, str]:
    """A prepared 240-frame video of noise (about 1 MB, key frame every 16 frames), on disk
    and in a bucket."""
    root = tmp_path_factory.mktemp("long")
    noise = np.random.default_rng(1).integers(0, 256, (240, 64, 96, 3), dtype=np.uint8)
    write_noise(root / "src.mp4", noise)
    folder = root / "up"
    folder.mkdir()
    encode_video(str(root / "src.mp4"), str(folder / "v.mp4"), EncodeOptions(short_side=64))
    url = s3_server.upload(folder, s3_server.bucket("ranges"), "k")
    return folder / "v.mp4", f"{url}/v.mp4"


@pytest.mark.parametrize("first", [0, 120, 180])
def test_remote_clip_reads_its_packets_not_the_file(long_video, first):
    """15 frames over a quarter of the video, seeking to four key frames (one GOP each); at 0
    the clip starts inside the header's block."""
    local, url = long_video
    size = local.stat().st_size
    storage = Storage(StoragePolicy(retries=0))
    clip = list(range(first, first + 60, 4))
    with VideoFile(local, threads=1) as video:
        expected = video.read(clip).numpy()
    with VideoFile(url, threads=1, storage=storage, block_size=4 * 2**20) as video:
        assert video.index_from_table
        got = video.read(clip).numpy()
    np.testing.assert_array_equal(got, expected)
    # one for the header (which carries the size), one for the clip's packets
    assert storage.stats.requests == 2
    share = size * (clip[-1] - clip[0] + 1) / 240
    header = 64 * 2**10
    gop = size * 16 / 240
    assert storage.stats.bytes_read <= header + share + 2 * gop + 32 * 2**10
    assert storage.stats.bytes_read < size * 0.6


def test_reading_a_remote_file_through_takes_growing_ranges(long_video):
    """What demuxing a container without a sample table does: 64 KiB, then twice as much per
    request up to the read-ahead size."""
    local, url = long_video
    data = local.read_bytes()
    storage = Storage(StoragePolicy(retries=0))
    with storage.open_binary(url, block_size=256 * 2**10) as f:
        chunks = iter(lambda: f.read(32 * 2**10), b"")
        assert b"".join(chunks) == data
    grown = [64, 128, 256]  # KiB, then 256 KiB each
    fetched, n = sum(grown) * 2**10, len(grown)
    while fetched < len(data):
        fetched, n = fetched + 256 * 2**10, n + 1
    assert storage.stats.requests == n and storage.stats.bytes_read == len(data)
