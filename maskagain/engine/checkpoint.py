"""Training checkpoints (atomic, ``weights_only``-loadable) and exported weights.

A training checkpoint is a ``torch.save`` dict holding only tensors, dicts, lists, numbers and
strings (RNG states are stored as tensors), so ``torch.load(path, weights_only=True)`` opens it.
It is written to a temporary file in the same directory and renamed into place, so a crash never
leaves a half-written ``ckpt_*.pt``: every file matching the name is complete.

Exported weights (``student.safetensors``, ``teacher.safetensors``) are written by
``maskagain.models.loading.save_encoder`` and read back by ``maskagain.models.load_encoder``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from maskagain.checkpoints import CheckpointError, follow_umask, torch_load

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt_step(\d+)\.pt$")


# ----------------------------------------------------------------------------- atomic writes
def atomic_torch_save(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"ckpt_step{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, as (step, path), oldest first."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints, and the temporary files of writes a
    killed process left behind (called by the only writer, after its write completed)."""
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)
    for stale in (Path(run_dir) / CKPT_DIR).glob(".ckpt_step*.pt.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint onto the CPU with ``weights_only=True``.

    Goes through :func:`maskagain.checkpoints.torch_load`, so a file that would run code on load is refused
    without running it and a truncated or corrupt one fails the same way: a one-line
    :class:`~maskagain.checkpoints.CheckpointError` saying why (and how to convert a trusted
    file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    return torch_load(path)


# ----------------------------------------------------------------------------- RNG states
def capture_rng() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and numbers."""
    version, py_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    py_state = tuple(int(v) for v in state["python"].tolist())
    random.setstate((state["python_version"], py_state, state["python_gauss"]))
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("CUDA RNG state saved for %d devices; not restored", len(cuda))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
