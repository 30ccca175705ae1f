"""Media files the tests write with PyAV (shared by the data and reliability tests)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_audio_only(path: Path, frames: int = 4) -> Path:
    """An .mp4 holding one AAC audio stream (``frames`` x 1024 silent samples) and no video."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for k in range(frames):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, k * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
