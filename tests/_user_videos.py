"""A user's own videos: ``root/<class>/<video>.mp4`` class folders of real H.264 files at the
frame sizes phones and old cameras give (1280x720, 640x272, 176x144), written with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

SIZES = ((1280, 720), (640, 272), (176, 144))  # (width, height)
CLASSES = ("across", "still", "updown")  # how the bright square moves; sorted, as the labels


def write_clip(path: Path, size: tuple[int, int], motion: str, frames: int, seed: int) -> Path:
    """An H.264 clip of ``frames`` frames: a bright square over a blocky noise background,
    moving ``"across"`` (left or right), ``"updown"`` or ``"still"``, at a speed that scales
    with the frame size."""
    w, h = size
    rng = np.random.default_rng(seed)
    side = max(8, h // 4)
    sign = 1 if rng.random() < 0.5 else -1
    dx = sign * max(1, w // 24) if motion == "across" else 0
    dy = sign * max(1, h // 16) if motion == "updown" else 0
    x0 = int(rng.integers(0, w - side))
    y0 = int(rng.integers(0, h - side))
    base = rng.integers(30, 90, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    base = base.repeat(8, 0).repeat(8, 1)[:h, :w]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "28"}
        for t in range(frames):
            img = base.copy()
            x, y = (x0 + dx * t) % (w - side), (y0 + dy * t) % (h - side)
            img[y : y + side, x : x + side] = 230
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    return path


def write_class_folders(root: Path, per_class: int = 4, frames: int = 24) -> Path:
    """``root/<class>/v<j>.mp4`` for :data:`CLASSES`, sizes cycling over :data:`SIZES` so the
    frame size says nothing about the class."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            size = SIZES[(c + j) % len(SIZES)]
            write_clip(root / name / f"v{j}.mp4", size, name, frames, seed=1000 * c + j)
    return root


# classes a viewer tells apart at a glance, as clips cut from different sources are: the
# scene's colour and texture differ (frame sizes cycle over the classes, as above)
SCENES = {
    "beach": ((200, 170, 110), 8),  # sand: warm, fine grain
    "forest": ((40, 110, 50), 32),  # green, coarse blotches
    "sea": ((30, 80, 170), 16),  # blue, medium waves
}


def write_scene_clip(path: Path, size: tuple[int, int], scene: str, frames: int, seed: int) -> Path:
    """An H.264 clip of ``frames`` frames of a :data:`SCENES` scene: its colour and texture,
    a per-clip brightness and hue jitter, the view panning slowly and a grey object crossing."""
    w, h = size
    rng = np.random.default_rng(seed)
    colour, grain = SCENES[scene]
    tint = np.clip(np.array(colour) + rng.integers(-25, 26, 3), 0, 255)
    cells = rng.integers(-40, 41, size=(2 * h // grain + 2, 2 * w // grain + 2, 1))
    texture = np.clip(tint + cells.repeat(grain, 0).repeat(grain, 1), 0, 255).astype(np.uint8)
    side, pan = max(8, h // 5), max(1, w // 64)
    x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h - side))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "28"}
        for t in range(frames):
            img = texture[:h, t * pan % w : t * pan % w + w].copy()
            x = (x0 + t * max(1, w // 32)) % (w - side)
            img[y0 : y0 + side, x : x + side] = 128
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        c.mux(s.encode(None))
    return path


def write_scene_folders(
    root: Path, per_class: int = 8, frames: int = 24, sizes=((320, 180), (256, 144), (176, 144))
) -> Path:
    """``root/<scene>/c<j>.mp4`` for every scene of :data:`SCENES`, frame sizes cycling."""
    for c, name in enumerate(sorted(SCENES)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            size = sizes[(c + j) % len(sizes)]
            write_scene_clip(root / name / f"c{j}.mp4", size, name, frames, seed=7000 * c + j)
    return root
