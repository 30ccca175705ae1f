"""``maskagain prepare``: re-encoded videos keep the frames (within codec noise), the labels and
the frame count; finished outputs are skipped, interrupted runs resume, broken inputs are listed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from _media import write_audio_only

from maskagain.cli.main import main
from maskagain.data import VideoFile, read_list
from maskagain.data.prepare import EncodeOptions, Job, prepare_one

ROOT = Path(__file__).resolve().parents[1]


def frames_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8: a texture of random waves (12-48 px) panning right, like a camera."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((n, h, w, 3), np.float32)
    for _ in range(6):
        ky, kx = 2 * np.pi / rng.uniform(12, 48, 2) * rng.choice([-1, 1], 2)
        phase, colour = rng.uniform(0, 2 * np.pi), rng.uniform(10, 35, 3)
        for t in range(n):
            out[t] += np.sin(ky * yy + kx * (xx + 2 * t) + phase)[..., None] * colour
    return (out + 128).clip(0, 255).astype(np.uint8)


def write_source(path: Path, n: int = 40, h: int = 96, w: int = 144, codec: str = "libx264",
                 audio: bool = False) -> Path:  # fmt: skip
    """A test source: x264 defaults (B-frames, long GOP) or VP9, optionally with an audio track."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=12 if codec == "libvpx-vp9" else 30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18"} if codec == "libx264" else {"crf": "20", "b": "0"}
        a = c.add_stream("aac", rate=16000) if audio else None
        for t, img in enumerate(frames_of(n, h, w)):
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            if a is not None and t % 2 == 0:
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 16000, t // 2 * 1024
                c.mux(a.encode(frame))
        c.mux(s.encode(None))
        if a is not None:
            c.mux(a.encode(None))
    return path


def decoded(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames as RGB ``(T, H, W, 3)``; with ``size`` resized by swscale in 4:2:0 first (the
    source at the prepared size, without a codec in between)."""
    with av.open(str(path)) as c:
        frames = []
        for f in c.decode(video=0):
            if size is not None and (f.height, f.width) != size:
                f = f.reformat(
                    width=size[1], height=size[0], format="yuv420p", interpolation="AREA"
                )
            frames.append(f.to_ndarray(format="rgb24"))
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def run_cli(*argv: str) -> int:
    """``maskagain prepare ARGV`` in-process, through the console script's parser."""
    return main(["prepare", *argv])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """root/ with a list of good, broken and missing videos."""
    root = tmp_path_factory.mktemp("src")
    (root / "a").mkdir()
    write_source(root / "a" / "big.mp4", h=96, w=144, audio=True)
    write_source(root / "a" / "small.mp4", n=24, h=48, w=64)  # below --short-side: kept
    write_source(root / "ssv2.webm", n=30, h=64, w=96, codec="libvpx-vp9")
    write_source(root / "ssv2.mp4", n=16, h=48, w=64)  # would overwrite ssv2.webm's output
    (root / "corrupt.mp4").write_bytes(os.urandom(3000))
    write_audio_only(root / "audio.mp4")
    (root / "train.txt").write_text(
        "a/big.mp4 3\na/small.mp4 1\nssv2.webm 2\ncorrupt.mp4 0\naudio.mp4 4\nmissing.mp4 5\n"
        "ssv2.mp4 6\n"
    )
    return root


@pytest.mark.subprocess
def test_prepare_list_keeps_frames_labels_and_lists_broken_inputs(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--list", str(dataset / "train.txt"), "--root", str(dataset), "--out", str(out)]
    assert run_cli(*argv, "--short-side", "64", "--keyint", "8", "--workers", "2") == 0
    printed = capsys.readouterr().out
    assert "3 written" in printed and "4 failed" in printed and "before" in printed

    records = read_list(out / "train.txt", str(out))
    assert [(Path(r.path).relative_to(out).as_posix(), r.label) for r in records] == [
        ("a/big.mp4", 3),
        ("a/small.mp4", 1),
        ("ssv2.mp4", 2),
    ]
    failed = (out / "failed.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in failed) == sorted(
        str(dataset / n) for n in ("corrupt.mp4", "audio.mp4", "missing.mp4", "ssv2.mp4")
    )
    sizes = {"a/big.mp4": (64, 96), "a/small.mp4": (48, 64), "ssv2.mp4": (64, 96)}
    sources = {"a/big.mp4": "a/big.mp4", "a/small.mp4": "a/small.mp4", "ssv2.mp4": "ssv2.webm"}
    for name, size in sizes.items():
        with av.open(str(out / name)) as c:
            assert not c.streams.audio
            packets = [p for p in c.demux(video=0) if p.size]
            keys = [p for p in packets if p.is_keyframe]
        with VideoFile(out / name, threads=1) as prep, VideoFile(dataset / sources[name]) as src:
            assert prep.size == size and prep.num_frames == src.num_frames
            assert len(keys) == -(-src.num_frames // 8)  # a key frame every 8
            middle = prep.read([src.num_frames // 2]).numpy()  # the loader's seek path
        got, want = decoded(out / name), decoded(dataset / sources[name], size)
        assert got.shape == want.shape
        assert psnr(got, want) >= 35, name  # codec noise only: no frame is shifted
        assert psnr(middle[0], want[len(want) // 2]) >= 35


def test_finished_outputs_are_skipped_and_temp_files_replaced(dataset, tmp_path):
    out = tmp_path / "out"
    opts = EncodeOptions(short_side=64, keyint=8)
    job = Job(str(dataset / "a" / "big.mp4"), str(out / "a" / "big.mp4"))
    assert prepare_one(job, opts)[1] == "written"
    stamp = os.stat(job.dst).st_mtime_ns
    assert prepare_one(job, opts)[1] == "skipped"
    assert os.stat(job.dst).st_mtime_ns == stamp

    # a run killed while writing leaves only a temporary file: it is never taken as finished
    os.remove(job.dst)
    stale = out / "a" / ".big.mp4.99999.tmp"
    stale.write_bytes(b"half an mp4")
    assert prepare_one(job, opts)[1] == "written"
    assert not stale.exists()
    with VideoFile(job.dst) as v:
        assert v.num_frames == 40


@pytest.mark.subprocess
def test_sigkilled_run_resumes(dataset, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines = []
    for k in range(4):
        write_source(src / f"v{k}.mp4", n=90, h=128, w=192)
        lines.append(f"v{k}.mp4 {k}\n")
    (src / "list.txt").write_text("".join(lines))
    out = tmp_path / "out"
    argv = ["--list", str(src / "list.txt"), "--root", str(src), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maskagain",
            "prepare",
            *argv,
            "--workers",
            "1",
            "--short-side",
            "96",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob(".v*.tmp")) and time.monotonic() < deadline:
        assert proc.poll() is None, "finished before it could be interrupted"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".v*.tmp")), "killed while writing: its temporary file is left"
    finished = sorted(out.glob("v*.mp4"))
    assert len(finished) < 4
    for f in finished:  # whatever looks finished is complete
        with VideoFile(f) as v:
            assert v.num_frames == 90

    assert run_cli(*argv, "--workers", "1", "--short-side", "96") == 0
    assert not list(out.glob(".v*.tmp"))
    records = read_list(out / "list.txt", str(out))
    assert [r.label for r in records] == [0, 1, 2, 3]
    for r in records:
        with VideoFile(r.path) as v:
            assert v.num_frames == 90 and v.size == (96, 144)


def test_folder_tree_keeps_classes(tmp_path):
    root = tmp_path / "root"
    for split, cls in (("train", "jump"), ("train", "run"), ("val", "run")):
        (root / split / cls).mkdir(parents=True)
        write_source(root / split / cls / "v.mp4", n=16, h=48, w=64)
    out = tmp_path / "out"
    assert run_cli("--folder", str(root), "--out", str(out), "--workers", "1") == 0
    assert (out / "classes.txt").read_text().split() == ["jump", "run"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
        "train/jump/v.mp4",
        "train/run/v.mp4",
        "val/run/v.mp4",
    ]
    assert (out / "train.txt").read_text() == "train/jump/v.mp4 0\ntrain/run/v.mp4 1\n"
    assert (out / "failed.txt").read_text() == ""


def test_prepare_is_a_subcommand():
    from maskagain.cli.main import SUBCOMMANDS

    assert SUBCOMMANDS["prepare"] == "prepare"


@pytest.mark.subprocess
def test_pipeline_benchmark_quick(tmp_path):
    pytest.importorskip("decord")
    from benchmarks import data as bench

    out = tmp_path / "pipe.json"
    argv = ["--pipeline", "--quick", "--workdir", str(tmp_path), "--json", str(out)]
    assert bench.main([*argv, "--markdown", str(tmp_path / "R.md")]) == 0
    import json

    report = json.loads(out.read_text())["pipeline"]
    rows = report["sources"]["k400_320p"]["rows"]
    assert set(rows) == set(bench.PIPE_ROWS)
    assert all(r["clips_per_s_per_core"] > 0 for r in rows.values())
    assert rows["videomae"]["x_videomae"] == pytest.approx(1.0)
    assert "Training data loader" in (tmp_path / "R.md").read_text()


def test_missing_list_is_a_usage_error(tmp_path, capsys):
    assert run_cli("--list", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")) == 2
    assert "list file not found" in capsys.readouterr().err
