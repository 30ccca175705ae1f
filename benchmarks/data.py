"""Data benchmark: clips/s for VideoMAE 16x4 clips, PyAV (``maskagain.data``) next to decord.

    python -m benchmarks.data --clips 24 [--probe] [--synthetic-speed 3000]
                              [--json out.json] [--markdown benchmarks/RESULTS.md]

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

``--probe``: linear probes on the synthetic set, one frame's pixels vs four global-motion
numbers per clip (the test suite runs the same probes, smaller). ``--cnn N``: a small 3D CNN
trained on N synthetic clips vs the same CNN on appearance-only (one frame repeated) clips. ``--synthetic-speed N``: time to
write N clips with ``make-synthetic`` defaults.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

from maskagain.data import DataConfig, build_dataset, build_transform, read_clip
from maskagain.data.decode import short_side_size
from maskagain.data.sampling import dense_indices
from maskagain.data.synthetic import SyntheticSpec, make_clip, write_synthetic_dataset

VIDEOS = {"320p": (320, 568), "720p": (720, 1280)}
FPS, SECONDS = 30, 10


def write_test_video(path: Path, height: int, width: int) -> None:
    """A 10 s H.264 video with camera-pan-like motion and texture (not trivially compressible)."""
    rng = np.random.default_rng(0)
    big_h, big_w = height + 64, width + 8 * FPS * SECONDS // 4
    base = rng.integers(0, 256, (big_h // 8, big_w // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks of texture
    yy, xx = np.mgrid[0:big_h, 0 : base.shape[1]]
    shade = 100 * (np.sin(xx / 37.0) + np.cos(yy / 23.0) + 2) / 4
    base = (base * 0.6 + shade[..., None]).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for t in range(FPS * SECONDS):
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


def motion_features(clips: np.ndarray) -> np.ndarray:
    """Global motion of each clip by least squares on brightness constancy (no learning):
    translation x/y, rotation and divergence about the motion centroid. (N, 4)."""
    v = clips.mean(-1)  # (N, T, S, S) luminance
    s = v.shape[-1]
    it = v[:, 1:] - v[:, :-1]
    m = 0.5 * (v[:, 1:] + v[:, :-1])
    ix = (np.roll(m, -1, -1) - np.roll(m, 1, -1)) / 2
    iy = (np.roll(m, -1, -2) - np.roll(m, 1, -2)) / 2
    phase = np.exp(2j * np.pi * (np.arange(s) + 0.5) / s)
    w = np.abs(it)
    cx = np.angle((w * phase[None, None, None, :]).sum((-1, -2))) * s / (2 * np.pi)
    cy = np.angle((w * phase[None, None, :, None]).sum((-1, -2))) * s / (2 * np.pi)
    pos = np.arange(s) + 0.5
    rx = (pos[None, None, None, :] - cx[..., None, None] + s / 2) % s - s / 2
    ry = (pos[None, None, :, None] - cy[..., None, None] + s / 2) % s - s / 2
    basis = [ix, iy, rx * iy - ry * ix, rx * ix + ry * iy]
    return np.stack([-(it * b).sum((1, 2, 3)) / ((b * b).sum((1, 2, 3)) + 1e-6) for b in basis], 1)


def linear_probe(xtr, ytr, xte, yte, classes, steps=300, lr=0.5, wd=1e-3) -> float:
    """Softmax regression by full-batch gradient descent; returns test accuracy."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    xtr, xte = xtr.astype(np.float32), xte.astype(np.float32)
    w = np.zeros((xtr.shape[1], classes), np.float32)
    b = np.zeros(classes, np.float32)
    onehot = np.eye(classes, dtype=np.float32)[ytr]
    for _ in range(steps):
        z = xtr @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(xtr)
        w -= lr * (xtr.T @ g + wd * w)
        b -= lr * g.sum(0)
    return float(((xte @ w + b).argmax(1) == yte).mean())


def probe_synthetic(train: int, val: int, size: int, frames: int, distractor: float) -> dict:
    """Linear probes on the synthetic set: one frame (random / first / middle) vs motion."""
    spec = SyntheticSpec(size=size, frames=frames, distractor=distractor)

    def split(name: str, n: int):
        clips, labels = zip(*(make_clip(spec, 0, name, i) for i in range(n)))
        return np.stack(clips).astype(np.float32) / 255, np.array(labels)

    (xtr, ytr), (xte, yte) = split("train", train), split("val", val)
    rng = np.random.default_rng(0)

    def frame(x, which):
        t = rng.integers(0, frames, len(x)) if which == "random" else np.full(len(x), which)
        return x[np.arange(len(x)), t].reshape(len(x), -1)

    out = {"chance": 1 / spec.num_classes, "distractor": distractor}
    for name, which in (("random", "random"), ("first", 0), ("middle", frames // 2)):
        out[f"single_frame_{name}"] = linear_probe(
            frame(xtr, which), ytr, frame(xte, which), yte, spec.num_classes
        )
    out["motion"] = linear_probe(
        motion_features(xtr), ytr, motion_features(xte), yte, spec.num_classes
    )
    return out


def cnn_probe_synthetic(train: int, val: int, epochs: int = 8) -> dict:
    """A small 3D CNN trained on synthetic clips (16-frame videos, 8 frames at stride 2, 32x32)
    through the real dataset + eval transform, and the same CNN on clips whose 8 frames are all
    one random frame of the clip (appearance without motion). Returns val accuracies."""
    from torch import nn

    cfg = DataConfig(
        kind="synthetic",
        num_frames=8,
        sampling_rate=2,
        input_size=32,
        short_side=32,
        synthetic_size=32,
        synthetic_train_clips=train,
        synthetic_val_clips=val,
    )

    def tensors(split: str):
        ds = build_dataset(cfg, split, "eval")
        items = [ds[i] for i in range(len(ds))]
        return torch.stack([i["video"] for i in items]), torch.tensor([i["label"] for i in items])

    def still(x: torch.Tensor) -> torch.Tensor:  # (N, C, T, H, W): one frame repeated
        t = torch.randint(0, x.shape[2], (len(x),), generator=torch.Generator().manual_seed(0))
        return x[torch.arange(len(x)), :, t].unsqueeze(2).expand_as(x).contiguous()

    def fit(xt, yt, xv, yv) -> float:
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv3d(3, 32, (3, 5, 5), padding=(1, 2, 2), stride=(1, 2, 2)),
            nn.GELU(),
            nn.Conv3d(32, 64, 3, padding=1, stride=(1, 2, 2)),
            nn.GELU(),
            nn.Conv3d(64, 64, 3, padding=1, stride=2),
            nn.GELU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(64, cfg.synthetic_classes),
        )
        opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.01)
        for _ in range(epochs):
            perm = torch.randperm(len(xt))
            for k in range(0, len(xt), 64):
                idx = perm[k : k + 64]
                loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return float((net(xv).argmax(1) == yv).float().mean())

    (xt, yt), (xv, yv) = tensors("train"), tensors("val")
    return {
        "train_clips": train,
        "epochs": epochs,
        "clip": fit(xt, yt, xv, yv),
        "single_frame": fit(still(xt), yt, still(xv), yv),
    }


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


def synthetic_speed(clips: int, workdir: Path) -> dict:
    """Wall and CPU seconds to write ``clips`` clips with ``make-synthetic`` defaults."""
    out = workdir / "synthetic_speed"
    shutil.rmtree(out, ignore_errors=True)
    spec = SyntheticSpec(size=64, frames=32)
    wall, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    write_synthetic_dataset(out, spec, train_clips=clips, val_clips=0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu + child_cpu
    shutil.rmtree(out, ignore_errors=True)
    return {"clips": clips, "wall_s": wall, "cpu_s": cpu, "size": 64, "frames": 32}


def markdown(report: dict) -> str:
    lines = [
        "",
        "## Data pipeline",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date']}; 1-minute load average "
        f"{report['load_average_start']:.1f} at the start, {report['load_average_end']:.1f} at "
        "the end (other jobs on the machine lower absolute rates; ratios come from alternating "
        "clips).",
    ]
    if report["rows"]:
        lines += [
            "",
            "### Clip decoding + transform (16x4 clips, PyAV vs decord)",
            "",
            f"Median over {report['clips']} clips; same clips for both, alternating; file opened "
            "per clip; pre-training transform (multi-scale crop to 224, normalise) included.",
            "",
            "| video | threads | PyAV clips/s | decord clips/s | PyAV / decord "
            "| PyAV decode-only | decord decode-only |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in report["rows"]:
            p, d = row["pyav"], row["decord"]
            lines.append(
                f"| {row['video']} | {row['threads']} | {p['clips_per_s']:.2f} "
                f"| {d['clips_per_s']:.2f} | {row['ratio_pyav_over_decord']:.2f} "
                f"| {p['decode_clips_per_s']:.2f} | {d['decode_clips_per_s']:.2f} |"
            )
        diffs = ", ".join(f"{k}: {v:.2f}" for k, v in report["frame_difference"].items())
        lines += [
            "",
            "Threads 0 = the library's automatic choice. Mean |PyAV - decord| pixel difference "
            f"at full size ({diffs}): both decode the same frames.",
        ]
    if report["probes"]:
        lines += [
            "",
            "### Synthetic set: is the label in the motion?",
            "",
            "Linear probes (softmax regression, `benchmarks.data.linear_probe`) on "
            f"{report['probe_setup']}: pixels of one frame vs 4 global-motion numbers per clip "
            "(least squares on brightness constancy: translation x/y, rotation, divergence).",
            "",
            "| distractor | chance | random frame | first frame | middle frame | motion |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["probes"]:
            lines.append(
                f"| {r['distractor']} | {r['chance']:.3f} | {r['single_frame_random']:.3f} "
                f"| {r['single_frame_first']:.3f} | {r['single_frame_middle']:.3f} "
                f"| {r['motion']:.3f} |"
            )
    if report["cnn"]:
        c = report["cnn"]
        lines += [
            "",
            f"A small 3D CNN (3 conv layers, {c['epochs']} epochs on {c['train_clips']} clips of "
            "8 frames, 32x32, through `build_dataset`): val accuracy "
            f"**{c['clip']:.3f}** on clips, **{c['single_frame']:.3f}** on the same clips with "
            "every frame replaced by one of their frames (appearance only).",
        ]
    if report["synthetic_speed"]:
        g = report["synthetic_speed"]
        lines += [
            "",
            f"Writing {g['clips']} synthetic clips ({g['frames']} frames of {g['size']}x{g['size']}, "
            f"H.264): {g['wall_s']:.1f} s wall, {g['cpu_s']:.1f} CPU-s "
            f"({g['clips'] / g['cpu_s']:.0f} clips per CPU-second).",
        ]
    return "\n".join(lines) + "\n"


def collect(
    clips: int = 24,
    threads: tuple[int, ...] = (1, 0),
    videos: tuple[str, ...] = tuple(VIDEOS),
    workdir: str | os.PathLike | None = None,
    probe: bool = False,
    probe_clips: tuple[int, int] = (2000, 800),
    synthetic_clips: int = 0,
    command: str = "python -m benchmarks.data",
    cnn_clips: int = 0,
) -> dict:
    """Run the selected parts and return the report (see ``markdown`` for its tables)."""
    torch.set_num_threads(1)
    work = Path(workdir or os.path.join(os.environ.get("TMPDIR", "/tmp"), "maskagain_bench"))
    work.mkdir(parents=True, exist_ok=True)
    report = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "load_average_start": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "clips": clips,
        "rows": [],
        "frame_difference": {},
        "probes": [],
        "probe_setup": f"{probe_clips[0]} train / {probe_clips[1]} val clips of 16 frames, 32x32",
        "synthetic_speed": None,
        "cnn": None,
    }
    transform = build_transform(DataConfig(), "train", "pretrain")
    for name in videos if clips else ():
        path = work / f"test_{name}.mp4"
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            write_test_video(path, *VIDEOS[name])
        report["frame_difference"][name] = check_same_frames(path)
        for n_threads in threads:
            row = {"video": name, "threads": n_threads}
            row.update(bench_video(path, clips, n_threads, transform, 256))
            report["rows"].append(row)
            print(
                f"{name} threads={n_threads}: pyav {row['pyav']['clips_per_s']:.2f} clips/s, "
                f"decord {row['decord']['clips_per_s']:.2f} clips/s, "
                f"ratio {row['ratio_pyav_over_decord']:.2f}",
                flush=True,
            )
    if probe:
        for distractor in (0.0, 0.2, 0.5):
            report["probes"].append(probe_synthetic(*probe_clips, 32, 16, distractor))
            print(report["probes"][-1], flush=True)
    if cnn_clips:
        torch.set_num_threads(os.cpu_count() or 1)
        report["cnn"] = cnn_probe_synthetic(cnn_clips, 400)
        torch.set_num_threads(1)
        print(report["cnn"], flush=True)
    if synthetic_clips:
        report["synthetic_speed"] = synthetic_speed(synthetic_clips, work)
        print(report["synthetic_speed"], flush=True)
    report["load_average_end"] = os.getloadavg()[0]
    return report


def run_default() -> dict:
    """The decode benchmark with its defaults (used by ``benchmarks.step --data``)."""
    return collect()


MD_BEGIN, MD_END = "<!-- data-benchmark:begin -->", "<!-- data-benchmark:end -->"


def update_markdown(path: Path, report: dict) -> None:
    """Write the data section between its markers in ``path``, leaving other sections alone."""
    block = f"{MD_BEGIN}{markdown(report)}{MD_END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if MD_BEGIN in text and MD_END in text:
        head, rest = text.split(MD_BEGIN, 1)
        text = head + block + rest.split(MD_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="clips per decode row (0: skip)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--workdir", help="where the test videos are kept (default $TMPDIR)")
    parser.add_argument("--probe", action="store_true", help="synthetic-set linear probes")
    parser.add_argument(
        "--probe-clips", type=int, nargs=2, default=[2000, 800], metavar=("TRAIN", "VAL")
    )
    parser.add_argument("--synthetic-speed", type=int, default=0, metavar="CLIPS")
    parser.add_argument("--cnn", type=int, default=0, metavar="CLIPS", help="3D-CNN probe")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--markdown", type=Path, help="update the data section of this file")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    report = collect(
        args.clips,
        tuple(args.threads),
        tuple(args.videos),
        args.workdir,
        args.probe,
        tuple(args.probe_clips),
        args.synthetic_speed,
        " ".join(["python -m benchmarks.data", *argv]),
        args.cnn,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        update_markdown(args.markdown, report)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
