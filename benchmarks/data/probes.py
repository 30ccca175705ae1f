"""What the synthetic set asks of a model: linear probes of one frame's pixels vs four
global-motion numbers per clip (``--probe``; the test suite runs the same probes, smaller), a
small 3D CNN on clips vs appearance-only clips (``--cnn N``), and the time to write the set
(``--synthetic-speed N``)."""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from maskagain.data import DataConfig, build_dataset
from maskagain.data.synthetic import SyntheticSpec, make_clip, write_synthetic_dataset


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
