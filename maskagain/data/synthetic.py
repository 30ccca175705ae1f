"""An embedded synthetic video dataset whose classes are defined only by motion.

Each clip shows one large, high-contrast object (ellipse, rectangle, triangle or plus, coloured
with a bright-to-dark gradient along its own axis so that rotation is visible) over a smooth,
low-frequency background (a colour gradient and soft blobs). The class is the object's motion:

    move_right, move_left, move_down, move_up, rotate_cw, rotate_ccw, grow, shrink
    (+ orbit_cw, orbit_ccw with ``num_classes=10``)

Shape, colours, background, start position, orientation, size and speed are random nuisances.
Positions wrap around the frame (a torus), and the size of non-scaling objects is drawn from the
same distribution as the per-frame size of growing/shrinking ones, so a single frame carries
(almost) no information about the class: only the motion across frames does.

Distractors scale with ``distractor`` in [0, 1]: static shapes, a sinusoidal background texture,
per-frame brightness flicker and pixel noise. Defaults are mild so a tiny ViT can learn the set.

Everything is deterministic from ``(seed, split, epoch, index)``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

log = logging.getLogger(__name__)

MOTIONS = (
    "move_right",
    "move_left",
    "move_down",
    "move_up",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
    "orbit_cw",
    "orbit_ccw",
)
SHAPES = ("ellipse", "rectangle", "triangle", "plus")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

_LOG_SIZE = (math.log(0.17), math.log(0.24))  # object radius / frame size, log-uniform
_LOG_GROWTH = (math.log(1.8), math.log(2.4))  # total size factor of grow/shrink


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: frame size (pixels), frames per video, classes, distractor strength."""

    size: int = 64
    frames: int = 16
    num_classes: int = 8
    distractor: float = 0.2

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(MOTIONS):
            raise ValueError(f"num_classes must be in [2, {len(MOTIONS)}], got {self.num_classes}")
        if self.size < 16 or self.frames < 2:
            raise ValueError(f"need size >= 16 and frames >= 2, got {self.size}, {self.frames}")
        if not 0.0 <= self.distractor <= 1.0:
            raise ValueError(f"distractor must be in [0, 1], got {self.distractor}")

    @property
    def class_names(self) -> list[str]:
        return list(MOTIONS[: self.num_classes])


def clip_rng(seed: int, split: str, index: int, epoch: int = 0) -> np.random.Generator:
    """The random generator of one clip."""
    return np.random.default_rng([seed, SPLIT_IDS[split], epoch, index])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _sdf(shape: str, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Approximate signed distance (in object radii) to a shape of radius 1 along ``u``."""
    au, av_ = np.abs(u), np.abs(v) / aspect
    if shape == "ellipse":
        return np.sqrt(u * u + av_ * av_) - 1.0
    if shape == "rectangle":
        return np.maximum(au, av_) - 1.0
    if shape == "triangle":  # pointing along +u
        return np.maximum(-u - 0.6, 1.2 * (av_ - (1.0 - u) / 1.6))
    return np.minimum(np.maximum(au, 2.2 * av_), np.maximum(2.2 * au, av_)) - 1.0  # plus


@dataclass
class _Object:
    shape: str
    aspect: float
    colours: np.ndarray  # (2, 3): bright end, dark end
    centre: np.ndarray  # (T, 2) pixels
    angle: np.ndarray  # (T,) radians
    radius: np.ndarray  # (T,) pixels
    opacity: float = 1.0


def _motion(label: int, rng: np.random.Generator, tau: np.ndarray, size: int):
    """(centre (T, 2), angle (T,), radius (T,)) of the moving object for class ``label``."""
    c0 = rng.uniform(0, size, 2)
    a0 = rng.uniform(0, 2 * math.pi)
    log_r = rng.uniform(*_LOG_SIZE)
    growth = rng.uniform(*_LOG_GROWTH)
    ones = np.ones_like(tau)
    name = MOTIONS[label]
    if name in ("grow", "shrink"):
        sign = 1.0 if name == "grow" else -1.0
        radius = np.exp(log_r + sign * growth * tau) * size
        return c0 * ones[:, None], a0 * ones, radius
    # other classes: size drawn like a random frame of a growing object (same marginal)
    radius = math.exp(log_r + growth * rng.uniform(-0.5, 0.5)) * size * ones
    if name.startswith("move"):
        direction = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}[name[5:]]
        travel = rng.uniform(0.35, 0.6) * size
        centre = c0 + np.outer(tau * travel, direction)
        return centre, a0 * ones, radius
    sign = 1.0 if name.endswith("_cw") else -1.0  # image y points down: +angle is clockwise
    if name.startswith("rotate"):
        return c0 * ones[:, None], a0 + sign * math.radians(rng.uniform(100, 180)) * tau, radius
    phase = rng.uniform(0, 2 * math.pi) + sign * math.radians(rng.uniform(200, 300)) * tau
    orbit = rng.uniform(0.15, 0.22) * size
    centre = c0 + orbit * np.stack([np.cos(phase), np.sin(phase)], axis=1)
    return centre, a0 * ones, radius


def _random_colours(rng: np.random.Generator) -> np.ndarray:
    bright = _hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.85, 1.0))
    return np.stack([bright, bright * rng.uniform(0.05, 0.2)])


def _background(rng: np.random.Generator, size: int, distractor: float) -> np.ndarray:
    """Smooth background (S, S, 3) in [0, 1]: colour gradient + soft blobs (+ texture)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phi = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - 0.5) * math.cos(phi) + (yy - 0.5) * math.sin(phi)) / math.sqrt(2) + 0.5
    c1, c2 = rng.uniform(0.25, 0.75, (2, 3)).astype(np.float32)
    bg = (c1 + (c2 - c1) * ramp[..., None]).astype(np.float32)
    for _ in range(2):
        cy, cx = rng.uniform(0, 1, 2)
        sigma = rng.uniform(0.15, 0.3)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        bg += (blob[..., None] * rng.uniform(-0.2, 0.2, 3)).astype(np.float32)
    if distractor > 0:
        freq = rng.uniform(3, 8)
        theta = rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)))
        bg += (0.15 * distractor * wave)[..., None].astype(np.float32)
    return bg


def _draw(canvas: np.ndarray, obj: _Object, size: int) -> np.ndarray:
    """Alpha-blend ``obj`` onto ``canvas`` (T, S, S, 3), positions wrapping around the frame."""
    f32 = np.float32
    pix = np.arange(size, dtype=f32) + f32(0.5)
    half = f32(size / 2)
    centre = obj.centre.astype(f32)
    dx = (pix[None, None, :] - centre[:, 0, None, None] + half) % size - half  # (T, 1, S)
    dy = (pix[None, :, None] - centre[:, 1, None, None] + half) % size - half  # (T, S, 1)
    cos = np.cos(obj.angle).astype(f32)[:, None, None]
    sin = np.sin(obj.angle).astype(f32)[:, None, None]
    inv_r = (1.0 / obj.radius).astype(f32)[:, None, None]
    u, v = (cos * dx + sin * dy) * inv_r, (cos * dy - sin * dx) * inv_r  # (T, S, S) object frame
    d = _sdf(obj.shape, u, v, f32(obj.aspect)) / inv_r  # ~pixels from the edge
    alpha = f32(obj.opacity) / (1 + np.exp(np.clip(d * f32(1 / 0.6), -30, 30)))
    g = np.clip((u + 1) * f32(0.5), 0, 1)[..., None]
    colours = obj.colours.astype(f32)
    colour = colours[0] + (colours[1] - colours[0]) * g  # (T, S, S, 3)
    alpha = alpha[..., None]
    return canvas + (colour - canvas) * alpha


def render_clip(
    spec: SyntheticSpec, label: int, rng: np.random.Generator, times: np.ndarray | None = None
) -> np.ndarray:
    """One clip as uint8 ``(T, S, S, 3)``, frames ``times`` of a ``spec.frames``-frame video."""
    times = np.arange(spec.frames) if times is None else np.asarray(times)
    tau = (times.astype(np.float32) / max(spec.frames - 1, 1) - 0.5).astype(np.float32)
    size, strength = spec.size, spec.distractor
    bg = _background(rng, size, strength)
    canvas = np.broadcast_to(bg, (len(times), size, size, 3)).astype(np.float32)
    for _ in range(int(round(3 * strength))):  # static distractor shapes
        still = _Object(
            shape=str(rng.choice(SHAPES)),
            aspect=float(rng.uniform(0.5, 1.0)),
            colours=_random_colours(rng),
            centre=np.broadcast_to(rng.uniform(0, size, 2), (len(times), 2)),
            angle=np.full(len(times), rng.uniform(0, 2 * math.pi)),
            radius=np.full(len(times), rng.uniform(0.06, 0.11) * size),
            opacity=min(1.0, 0.3 + strength),
        )
        canvas = _draw(canvas, still, size)
    centre, angle, radius = _motion(label, rng, tau, size)
    obj = _Object(
        shape=str(rng.choice(SHAPES)),
        aspect=float(rng.uniform(0.45, 0.75)),
        colours=_random_colours(rng),
        centre=centre,
        angle=angle,
        radius=radius,
    )
    canvas = _draw(canvas, obj, size)
    if strength > 0:
        flicker = rng.normal(0, 0.05 * strength, (len(times), 1, 1, 1)).astype(np.float32)
        noise = rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(0.06 * strength)
        canvas = canvas + flicker + noise
    return (np.clip(canvas, 0, 1) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def make_clip(
    spec: SyntheticSpec,
    seed: int,
    split: str,
    index: int,
    epoch: int = 0,
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Clip ``index`` of a split: (uint8 ``(T, S, S, 3)``, label). Labels cycle over classes."""
    label = index % spec.num_classes
    return render_clip(spec, label, clip_rng(seed, split, index, epoch), times), label


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, crf: int = 18) -> None:
    """Encode uint8 ``(T, H, W, 3)`` frames as H.264 (yuv420p) into an mp4 file."""
    t, h, w, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_one(job: tuple[str, SyntheticSpec, int, str, int]) -> str:
    """Render and encode clip ``index`` of ``split``; returns its list line."""
    out, spec, seed, split, index = job
    frames, label = make_clip(spec, seed, split, index)
    rel = Path("videos") / split / MOTIONS[label] / f"{index:06d}.mp4"
    write_video(Path(out) / rel, frames)
    return f"{rel.as_posix()} {label}\n"


def write_synthetic_dataset(
    out: str | os.PathLike,
    spec: SyntheticSpec,
    train_clips: int = 2000,
    val_clips: int = 400,
    seed: int = 0,
    workers: int = 0,
) -> dict[str, str]:
    """Write H.264 mp4 files ``out/videos/<split>/<class>/<index>.mp4``, list files
    ``out/train.txt`` / ``out/val.txt`` (``path label``, relative to ``out``) and
    ``out/classes.txt``. ``workers=0``: one process per CPU core (at most 8). Returns
    {split: list file}. Clip ``i`` of ``train`` equals the on-the-fly clip ``i`` at epoch 0."""
    out = Path(out)
    workers = workers or min(8, os.cpu_count() or 1)
    lists = {}
    start = time.perf_counter()
    for split, count in (("train", train_clips), ("val", val_clips)):
        for name in spec.class_names:
            (out / "videos" / split / name).mkdir(parents=True, exist_ok=True)
        jobs = [(str(out), spec, seed, split, i) for i in range(count)]
        if workers > 1 and count > 1:
            with ProcessPoolExecutor(workers) as pool:
                lines = list(pool.map(_write_one, jobs, chunksize=max(1, count // (4 * workers))))
        else:
            lines = [_write_one(job) for job in jobs]
        lists[split] = str(out / f"{split}.txt")
        Path(lists[split]).write_text("".join(lines), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in spec.class_names), encoding="utf-8")
    log.info(
        "wrote %d + %d synthetic clips to %s in %.1fs",
        train_clips,
        val_clips,
        out,
        time.perf_counter() - start,
    )
    return lists


def clip_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 numpy ``(T, H, W, C)`` -> uint8 tensor of the same shape."""
    return torch.from_numpy(np.ascontiguousarray(frames))
