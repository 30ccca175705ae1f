"""Data benchmark: clips/s for VideoMAE 16x4 clips, PyAV (``maskagain.data``) next to decord.

    python -m benchmarks.data --clips 24 [--probe] [--synthetic-speed 3000]
                              [--json out.json] [--markdown benchmarks/RESULTS.md]
    python -m benchmarks.data --pipeline [--quick] [--rounds 6] [--markdown benchmarks/RESULTS.md]

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

``--pipeline``: the whole training loader in clips/s per core (one process, one decoder thread:
decode + sampling + augmentation + batching with masks) on K400-like H.264 sources (10 s, 30 fps,
340x256, 568x320 and 1280x720, x264 defaults) and an SSv2-like VP9 webm (240p, 12 fps, 4 s):
VideoMAE's and VideoMAE V2's loader logic (decord) next to ``maskagain.data`` on the originals
(r = 1 and 4 clips per decode) and on ``maskagain prepare``d copies, rows round-robin; ratios,
an estimate of CPU cores per GPU for B->B and B->S, and a profile of where a video's time goes.
``--quick``: the same on two short sources, one round (a smoke test).

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
from maskagain.data.sampling import dense_indices, sample_indices
from maskagain.data.synthetic import SyntheticSpec, make_clip, write_synthetic_dataset

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


# ------------------------------------------------------------------ training loader (--pipeline)
# name -> (height, width, fps, seconds, codec, sampling); K400-like H.264 with x264 defaults,
# SSv2-like VP9 webm
PIPE_SOURCES = {
    "k400_320p": (320, 568, 30, 10.0, "libx264", "dense"),
    "k400_256p": (256, 340, 30, 10.0, "libx264", "dense"),
    "k400_720p": (720, 1280, 30, 10.0, "libx264", "dense"),
    "ssv2_240p": (240, 426, 12, 4.0, "libvpx-vp9", "segment"),
}
QUICK_SOURCES = {
    "k400_320p": (320, 568, 30, 3.0, "libx264", "dense"),
    "ssv2_240p": (240, 426, 12, 3.0, "libvpx-vp9", "segment"),
}
PIPE_ROWS = (
    "videomae",
    "videomae_v2",
    "ours_r1",
    "ours_r4",
    "ours_prepared_r4",
    "ours_prepared_cabac_r4",
    "ours_prepared_uint8_r4",
    "ours_prepared_devcrop_r4",
)
# GPU step rate estimate: 40% of 790 TFLOP/s (bf16 dense) over the training FLOPs of one clip
GPU_FLOPS = 0.4 * 790e12


def source_path(work: Path, name: str, spec: tuple) -> Path:
    """The benchmark's copy of source ``name`` (written once)."""
    h, w, fps, seconds, codec, _ = spec
    ext = "webm" if codec == "libvpx-vp9" else "mp4"
    path = work / f"pipe_{name}_{int(seconds)}s.{ext}"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        tmp = path.with_name(f".tmp_{path.name}")
        write_test_video(tmp, h, w, fps, seconds, codec)
        tmp.rename(path)
    return path


def clip_flops() -> dict[str, float]:
    """Training FLOPs per 16x224x224 clip (tube mask 0.9) of B->B and B->S (benchmarks.flops)."""
    from benchmarks import flops as fl
    from maskagain.masking import visible_count

    grid = (8, 14, 14)
    clip = fl.ClipShape(8 * 14 * 14, visible_count("tube", grid, 0.9), 8, 3 * 2 * 16 * 16)
    base, small = fl.EncoderSpec(768, 12), fl.EncoderSpec(384, 12)
    return {
        "B->B": fl.maskagain_flops(base, base, clip, 16, 1).total,
        "B->S": fl.maskagain_flops(base, small, clip, 16, 1).total,
    }


_OFFSETS = ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2))
_SCALES = (1.0, 0.875, 0.75, 0.66)


class VideoMAELoader:
    """VideoMAE's training loader logic, for comparison: decord ``VideoReader`` (1 thread, full
    size) per video, ``get_batch``, PIL images, ``GroupMultiScaleCrop`` (PIL crop + bilinear
    resize to 224) once per sample, stack + ToTensor + normalise, a numpy tube mask per sample.
    ``num_sample=4`` is VideoMAE V2's repeated sampling (one decode, 4 transforms)."""

    def __init__(self, paths: list[str], sampling: str, num_sample: int, seed: int = 0) -> None:
        self.paths, self.sampling, self.num_sample = paths, sampling, num_sample
        self.rng = np.random.default_rng(seed)
        self.mean = np.array(DataConfig().mean, np.float32)[:, None, None, None]
        self.std = np.array(DataConfig().std, np.float32)[:, None, None, None]

    def _transform(self, images: list) -> tuple[torch.Tensor, np.ndarray]:
        from PIL import Image

        w, h = images[0].size
        base = min(w, h)
        ci, cj = self.rng.integers(len(_SCALES), size=2)
        cj = min(max(cj, ci - 1), ci + 1)
        cw, ch = int(base * _SCALES[ci]), int(base * _SCALES[cj])
        qr, qc = _OFFSETS[self.rng.integers(len(_OFFSETS))]
        top, left = (h - ch) * qr // 4, (w - cw) * qc // 4
        crops = [
            im.crop((left, top, left + cw, top + ch)).resize((224, 224), Image.BILINEAR)
            for im in images
        ]
        x = np.stack([np.asarray(c) for c in crops]).astype(np.float32) / 255  # (T, H, W, C)
        x = (x.transpose(3, 0, 1, 2) - self.mean) / self.std  # (C, T, H, W)
        n = 8 * 14 * 14 // 8
        mask = np.hstack([np.zeros(n - int(0.9 * n)), np.ones(int(0.9 * n))])
        self.rng.shuffle(mask)
        return torch.from_numpy(x), np.tile(mask, (8, 1)).flatten()

    def batch(self, videos: list[int]) -> dict:
        import decord
        from PIL import Image

        clips, masks = [], []
        for v in videos:
            vr = decord.VideoReader(self.paths[v], num_threads=1, ctx=decord.cpu(0))
            idx = sample_indices(len(vr), self.sampling, 16, 4, train=True)
            frames = vr.get_batch(idx).asnumpy()
            images = [Image.fromarray(f).convert("RGB") for f in frames]
            for _ in range(self.num_sample):
                clip, mask = self._transform(images)
                clips.append(clip)
                masks.append(torch.from_numpy(mask))
        return {"video": torch.stack(clips), "mask": torch.stack(masks).bool()}


class OurLoader:
    """``maskagain.data``'s training loader in-process: ``build_dataset``-style dataset with
    1 decoder thread, pre-training transform, ``MaskCollator`` (tube masks). With ``uint8``
    the clips leave as uint8 and are normalised on the training device (``data.normalize``),
    which is not counted here: on a GPU it is a few elementwise kernels per batch. With
    ``crop_on_device`` (``data.crop=device``) the workers only decode: each window's uint8
    frames and one crop box per clip leave, and the crop, resize and normalisation (one
    interpolation per clip on the device) are not counted either."""

    def __init__(
        self,
        paths: list[str],
        sampling: str,
        num_sample: int,
        repeat: str,
        uint8: bool = False,
        crop_on_device: bool = False,
    ) -> None:
        from maskagain.data import MaskCollator, VideoListDataset, VideoRecord

        cfg = DataConfig(
            sampling=sampling,
            num_sample=num_sample,
            repeat=repeat,
            decode_threads=1,
            num_workers=0,
        )
        records = [VideoRecord(p, 0) for p in paths]
        on_device = "crop" if crop_on_device else "normalize" if uint8 else None
        self.ds = VideoListDataset(records, cfg, "train", "pretrain", ["x"], on_device)
        self.collate = MaskCollator("tube", 0.9, (8, 14, 14))

    def batch(self, videos: list[int]) -> dict:
        return self.collate([self.ds[v] for v in videos])


def build_rows(original: Path, prepared: dict[str, Path], sampling: str, copies: int) -> dict:
    orig = [str(original)] * copies
    prep = {k: [str(p)] * copies for k, p in prepared.items()}
    return {
        "videomae": VideoMAELoader(orig, sampling, 1),
        "videomae_v2": VideoMAELoader(orig, sampling, 4),
        "ours_r1": OurLoader(orig, sampling, 1, "same_window"),
        "ours_r4": OurLoader(orig, sampling, 4, "same_window"),
        "ours_prepared_r4": OurLoader(prep["fast"], sampling, 4, "same_window"),
        "ours_prepared_cabac_r4": OurLoader(prep["cabac"], sampling, 4, "same_window"),
        "ours_prepared_uint8_r4": OurLoader(prep["fast"], sampling, 4, "same_window", True),
        "ours_prepared_devcrop_r4": OurLoader(
            prep["fast"], sampling, 4, "same_window", crop_on_device=True
        ),
    }


def prepared_psnr(original: Path, prepared: Path, step: int = 5) -> float:
    """PSNR (dB, RGB, every ``step``-th frame) of a prepared video against its source resized to
    the same size by swscale in 4:2:0 (area), i.e. what the codec lost."""

    def frames(path: Path, size: tuple[int, int] | None) -> np.ndarray:
        out = []
        with av.open(str(path)) as c:
            for k, f in enumerate(c.decode(video=0)):
                if k % step == 0:
                    if size and (f.height, f.width) != size:
                        f = f.reformat(size[1], size[0], "yuv420p", interpolation="AREA")
                    out.append(f.to_ndarray(format="rgb24").astype(np.float64))
        return np.stack(out)

    got = frames(prepared, None)
    mse = float(((got - frames(original, got.shape[1:3])) ** 2).mean())
    return 10 * float(np.log10(255**2 / max(mse, 1e-10)))


def bench_pipeline(rows: dict, clips_per_batch: int, rounds: int) -> dict:
    """Seconds per clip of each row, round-robin over rows (order rotated every round), one
    batch of ``clips_per_batch`` clips per row per round; median over rounds after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for k in range(rounds + 1):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            r = 4 if name.endswith("r4") or name == "videomae_v2" else 1
            videos = list(range(clips_per_batch // r))
            start = time.perf_counter()
            batch = rows[name].batch(videos)
            elapsed = time.perf_counter() - start
            clips = len(batch["video"]) if "video" in batch else len(batch["boxes"])
            assert clips == clips_per_batch and batch["mask"].shape[0] == clips
            if k > 0:  # the first round warms up caches and libraries
                times[name].append(elapsed / clips_per_batch)
    return {
        name: {
            "clips_per_s_per_core": 1.0 / statistics.median(t),
            "seconds_per_clip_median": statistics.median(t),
            "seconds_per_clip_min": min(t),
            "seconds_per_clip_max": max(t),
        }
        for name, t in times.items()
    }


def profile_clip(
    path: str,
    short_side: int,
    num_sample: int,
    sampling: str,
    clips: int,
    crop_on_device: bool = False,
) -> dict:
    """Where one training clip's time goes in ``maskagain.data``, summed over ``clips`` clips:
    open + index (demux), decoding up to the first wanted frame, decoding between wanted frames,
    RGB conversion + resize, augmentation (``num_sample`` crops; with ``crop_on_device`` only
    their boxes), collate + masks. Also counts decoded and skipped frames. Uses the decoder's
    own steps (private methods) with timers."""
    from maskagain.data import MaskCollator, build_transform
    from maskagain.data.decode import VideoFile

    cfg = DataConfig(sampling=sampling, num_sample=num_sample)
    transform = build_transform(cfg, "train", "pretrain")
    collate = MaskCollator("tube", 0.9, (8, 14, 14))
    parts = dict.fromkeys(("open_index", "to_first", "between", "convert_resize", "augment"), 0.0)
    parts["collate_masks"] = 0.0
    counts = {"decoded_to_first": 0, "decoded_between": 0, "wanted": 0, "frames": 0}
    for k in range(clips):
        t0 = time.perf_counter()
        video = VideoFile(path, threads=1)
        t1 = time.perf_counter()
        idx = sample_indices(video.num_frames, sampling, 16, 4, train=True)
        wanted = sorted(set(idx))
        pts = video._index.pts
        by_pts = {pts[i]: i for i in wanted}
        key = max(t for t in video._index.keys if t <= pts[wanted[0]])
        video._container.seek(key, stream=video._stream, backward=True)
        frames, first_at = {}, None
        for frame in video._decode_skipping(by_pts):
            counts["decoded_between" if first_at else "decoded_to_first"] += 1
            if frame.pts in by_pts:
                frames[by_pts[frame.pts]] = frame
                if first_at is None:
                    first_at = time.perf_counter()
                    counts["decoded_to_first"] -= 1
                    counts["decoded_between"] += 1
            if frame.pts >= pts[wanted[-1]]:
                break
        t2 = time.perf_counter()
        arrays = video._to_arrays(frames, wanted, short_side)
        clip = torch.from_numpy(np.stack([arrays[i] for i in idx]))
        video.close()
        t3 = time.perf_counter()
        if crop_on_device:
            boxes = [transform.draw_box(clip) for _ in range(num_sample)]
            item = {"video": clip[None], "boxes": boxes, "window": [0] * num_sample}
        else:
            item = {"video": torch.stack([transform(clip) for _ in range(num_sample)])}
        t4 = time.perf_counter()
        collate([{**item, "label": 0, "index": k}])
        t5 = time.perf_counter()
        parts["open_index"] += t1 - t0
        parts["to_first"] += (first_at or t2) - t1
        parts["between"] += t2 - (first_at or t2)
        parts["convert_resize"] += t3 - t2
        parts["augment"] += t4 - t3
        parts["collate_masks"] += t5 - t4
        counts["wanted"] += len(wanted)
        counts["frames"] = video.num_frames
    total = sum(parts.values())
    return {
        "ms_per_video": {k: 1000 * v / clips for k, v in parts.items()},
        "share": {k: v / total for k, v in parts.items()},
        "frames_decoded_per_video": {
            k: v / clips for k, v in counts.items() if k.startswith("decoded")
        },
        "wanted_frames_per_video": counts["wanted"] / clips,
        "video_frames": counts["frames"],
        "clips_per_video": num_sample,
    }


def pipeline_report(
    work: Path, quick: bool, rounds: int, clips_per_batch: int, profile_clips: int
) -> dict:
    """Write the sources, prepare them with ``maskagain prepare``'s library, bench every row and
    profile ours; returns the ``pipeline`` part of the report."""
    from maskagain.data.prepare import EncodeOptions, Job, run_jobs

    sources = QUICK_SOURCES if quick else PIPE_SOURCES
    flops = clip_flops()
    out: dict = {"rounds": rounds, "clips_per_batch": clips_per_batch, "sources": {}}
    out["gflop_per_clip"] = {k: v / 1e9 for k, v in flops.items()}
    out["gpu_clips_per_s_estimate"] = {k: GPU_FLOPS / v for k, v in flops.items()}
    variants = {"fast": EncodeOptions(), "cabac": EncodeOptions(fast_decode=False)}
    for variant in variants:  # always prepared with today's options
        shutil.rmtree(work / f"prepared_{variant}", ignore_errors=True)
    for name, spec in sources.items():
        original = source_path(work, name, spec)
        prepared, prepare_seconds = {}, 0.0
        for variant, opts in variants.items():
            prepared[variant] = work / f"prepared_{variant}" / f"{original.stem}.mp4"
            report = run_jobs([Job(str(original), str(prepared[variant]))], opts, 1, False)
            if report.failed:
                raise RuntimeError(f"prepare failed: {report.failed}")
            prepare_seconds = prepare_seconds or report.seconds
        rows = build_rows(original, prepared, spec[5], copies=clips_per_batch)
        result = bench_pipeline(rows, clips_per_batch, rounds)
        a, b = result["videomae"], result["videomae_v2"]
        for row in result.values():
            row["x_videomae"] = row["clips_per_s_per_core"] / a["clips_per_s_per_core"]
            row["x_videomae_v2"] = row["clips_per_s_per_core"] / b["clips_per_s_per_core"]
            row["cores_per_gpu"] = {
                k: rate / row["clips_per_s_per_core"]
                for k, rate in out["gpu_clips_per_s_estimate"].items()
            }
        entry = {
            "size": f"{spec[1]}x{spec[0]}",
            "fps": spec[2],
            "seconds": spec[3],
            "codec": spec[4],
            "bytes_original": original.stat().st_size,
            "bytes_prepared": prepared["fast"].stat().st_size,
            "bytes_prepared_cabac": prepared["cabac"].stat().st_size,
            "psnr_db": prepared_psnr(original, prepared["fast"]),
            "psnr_db_cabac": prepared_psnr(original, prepared["cabac"]),
            "prepare_seconds": prepare_seconds,
            "rows": result,
            "profile": {},
        }
        profiles = (
            ("original", original, False),
            ("prepared", prepared["fast"], False),
            ("prepared, crop on device", prepared["fast"], True),
        )
        for label, path, on_device in profiles if profile_clips else ():
            entry["profile"][label] = profile_clip(
                str(path), 256, 4, spec[5], profile_clips, on_device
            )
        out["sources"][name] = entry
        print(
            f"{name}: "
            + ", ".join(f"{k} {v['clips_per_s_per_core']:.1f}" for k, v in result.items())
            + " clips/s/core",
            flush=True,
        )
    return out


def pipeline_markdown(report: dict) -> str:
    p = report["pipeline"]
    gpu = p["gpu_clips_per_s_estimate"]
    lines = [
        "",
        "## Training data loader (`--pipeline`)",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date']}; 1-minute load average "
        f"{report['load_average_start']:.1f} at the start, {report['load_average_end']:.1f} at "
        "the end. One process, one decoder thread, `torch` 1 thread: decode + sampling + "
        f"augmentation (multi-scale crop to 224, normalise) + batching with tube masks, "
        f"{p['clips_per_batch']} clips per batch; rows round-robin (order rotated each round), "
        f"median over {p['rounds']} rounds. Rows: `videomae` = VideoMAE's loader logic (decord, "
        "PIL multi-scale crop, num_sample 1); `videomae_v2` = the same with VideoMAE V2's "
        "num_sample 4 (one decode, 4 crops); `ours_r1`/`ours_r4` = `maskagain.data` "
        "(repeat=same_window) on the originals; `ours_prepared_r4` = on `maskagain prepare`d "
        "files (short side 320, key frame every 16, non-reference B-frames, CRF 18, x264 "
        "tune=fastdecode); `ours_prepared_cabac_r4` = prepared without tune=fastdecode; "
        "`ours_prepared_uint8_r4` = prepared, uint8 batches normalised on the training device "
        "(`data.normalize=device`, the default on CUDA; that normalisation is not counted); "
        "`ours_prepared_devcrop_r4` = prepared, the workers only decode and draw crop boxes, "
        "the multi-scale crop, resize and normalisation run on the training device "
        "(`data.crop=device`, the default on CUDA; not counted).",
        "",
        "Cores per GPU (**estimate**) = GPU step rate / clips per second per core, GPU step rate "
        f"= 40% of 790 TFLOP/s over the training FLOPs per clip (B->B "
        f"{p['gflop_per_clip']['B->B']:.0f} GFLOP, B->S {p['gflop_per_clip']['B->S']:.0f} GFLOP:"
        f" {gpu['B->B']:.0f} and {gpu['B->S']:.0f} clips/s).",
        "",
        "| source | row | clips/s/core | x VideoMAE | x VideoMAE V2 | cores/GPU B->B "
        "| cores/GPU B->S |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in p["sources"].items():
        for row, r in s["rows"].items():
            lines.append(
                f"| {name} ({s['size']}, {s['codec']}) | {row} | {r['clips_per_s_per_core']:.2f} "
                f"| {r['x_videomae']:.2f} | {r['x_videomae_v2']:.2f} "
                f"| {r['cores_per_gpu']['B->B']:.0f} | {r['cores_per_gpu']['B->S']:.0f} |"
            )
    lines += [
        "",
        "Prepared files: size, PSNR against the source resized to the same size (4:2:0, area; "
        "every 5th frame), time to prepare (one process). `cabac` = the same without "
        "`tune=fastdecode` (`maskagain prepare --no-fast-decode`).",
        "",
        "| source | original MB | prepared MB | PSNR dB | cabac MB | cabac PSNR dB | prepare s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, s in p["sources"].items():
        lines.append(
            f"| {n} | {s['bytes_original'] / 1e6:.2f} | {s['bytes_prepared'] / 1e6:.2f} "
            f"| {s['psnr_db']:.1f} | {s['bytes_prepared_cabac'] / 1e6:.2f} "
            f"| {s['psnr_db_cabac']:.1f} | {s['prepare_seconds']:.1f} |"
        )
    profiled = [(n, s) for n, s in p["sources"].items() if s["profile"]]
    if profiled:
        lines += [
            "",
            "Profile of `maskagain.data` per video (4 clips, same window; ms, share of the "
            "total; frames decoded before the first wanted frame / from it to the last one):",
            "",
            "| source | files | open + index | to first | between | RGB + resize | augment "
            "| collate + masks | decoded to first / between |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in profiled:
            for label, pr in s["profile"].items():
                ms, sh, fr = pr["ms_per_video"], pr["share"], pr["frames_decoded_per_video"]
                cells = " | ".join(
                    f"{ms[k]:.1f} ({100 * sh[k]:.0f}%)"
                    for k in (
                        "open_index",
                        "to_first",
                        "between",
                        "convert_resize",
                        "augment",
                        "collate_masks",
                    )
                )
                lines.append(
                    f"| {name} | {label} | {cells} "
                    f"| {fr['decoded_to_first']:.0f} / {fr['decoded_between']:.0f} |"
                )
    return "\n".join(lines) + "\n"


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
    pipeline: dict | None = None,
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
        "pipeline": None,
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
    if pipeline is not None:
        report["pipeline"] = pipeline_report(work, **pipeline)
    report["load_average_end"] = os.getloadavg()[0]
    return report


def run_default() -> dict:
    """The decode benchmark with its defaults (used by ``benchmarks.step --data``)."""
    return collect()


MD_BEGIN, MD_END = "<!-- data-benchmark:begin -->", "<!-- data-benchmark:end -->"
PIPE_BEGIN, PIPE_END = "<!-- data-pipeline:begin -->", "<!-- data-pipeline:end -->"


def update_markdown(path: Path, report: dict) -> None:
    """Write the data section (and the loader section of a ``--pipeline`` run) between their
    markers in ``path``, leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if report["rows"] or report["probes"] or report["cnn"] or report["synthetic_speed"]:
        text = _replace_block(text, MD_BEGIN, MD_END, markdown(report), after=None)
    if report.get("pipeline"):
        text = _replace_block(text, PIPE_BEGIN, PIPE_END, pipeline_markdown(report), MD_END)
    path.write_text(text)


def _replace_block(text: str, begin: str, end: str, body: str, after: str | None) -> str:
    """``text`` with the block between ``begin`` and ``end`` replaced by ``body``; a missing
    block goes after the line holding ``after`` (or at the end)."""
    block = f"{begin}{body}{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1].lstrip("\n")
    if after and after in text:
        head, rest = text.split(after, 1)
        return head + after + "\n" + block + rest.lstrip("\n")
    return text.rstrip("\n") + "\n\n" + block


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
    parser.add_argument(
        "--pipeline", action="store_true", help="full training loader rows (clips/s per core)"
    )
    parser.add_argument("--quick", action="store_true", help="--pipeline smoke test (seconds)")
    parser.add_argument("--rounds", type=int, default=6, help="--pipeline rounds (default 6)")
    parser.add_argument("--batch-clips", type=int, default=8, help="--pipeline clips per batch")
    parser.add_argument(
        "--profile", type=int, default=12, metavar="VIDEOS", help="--pipeline profile (0: off)"
    )
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--markdown", type=Path, help="update the data section of this file")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    pipeline = None
    if args.pipeline:
        quick = dict(rounds=1, clips_per_batch=4, profile_clips=2) if args.quick else {}
        pipeline = dict(
            quick=args.quick,
            rounds=args.rounds,
            clips_per_batch=args.batch_clips,
            profile_clips=args.profile,
        )
        pipeline.update(quick)
        if not any(a.startswith("--clips") for a in argv):
            args.clips = 0  # --pipeline alone: no decode table
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
        pipeline,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        update_markdown(args.markdown, report)
    if report["rows"] or report["probes"] or report["cnn"] or report["synthetic_speed"]:
        print(markdown(report))
    if report["pipeline"]:
        print(pipeline_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
