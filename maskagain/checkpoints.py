"""Reading checkpoint files safely: the one place the engine (training checkpoints) and the
model loaders (encoder weights) open ``.pth`` / ``.bin`` pickles and ``.safetensors`` files.

Pickles are opened with ``torch.load(..., weights_only=True)``: a file that would run code on
load is refused without running it, and a truncated or corrupt file fails the same way, with a
one-line :class:`CheckpointError` saying why.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not match the architecture it claims."""


def torch_load(path: Path) -> dict:
    """The dict a ``torch.save`` file holds, read on the CPU with ``weights_only=True``
    (``argparse.Namespace`` allowed, as training scripts record their arguments in one).
    Raises :class:`CheckpointError` for unsafe, corrupt or non-dict files."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(str(e))
        if reason is None:
            raise CheckpointError(
                f"cannot read {path}: it is corrupt, truncated or not a torch.save checkpoint "
                "(the safe weights-only reader rejected its bytes)"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects that could run code on load "
            f"({reason}). If you trust the file, convert it once with "
            f"`python -c \"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save({{'model': c['model']}}, 'clean.pth')\"` and load clean.pth"
        ) from None
    except Exception as e:  # zip/pickle readers raise many types on truncated input
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); the file may be truncated or not a checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _unpickling_reason(message: str) -> str | None:
    """The unsafe global a weights-only load refused, or None when the bytes were just bad."""
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported global" in line:
            return line.strip()[:200]
    return None


def safetensors_load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` file; :class:`CheckpointError` if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path} as safetensors ({e}); the file may be truncated or corrupt"
        ) from None


def unwrap_state_dict(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint and strip wrapper prefixes."""
    for key in ("model", "module", "state_dict", "model_state"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(
            f"{path} holds no tensors under 'model', 'module' or 'state_dict' "
            f"(top-level keys: {sorted(obj)[:10]}); is it an optimizer-only or metrics file?"
        )
    for prefix in ("module.", "backbone.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face ``save_pretrained`` directory (its ``*.safetensors``
    shards, else its ``pytorch_model*.bin`` files), merged into one state dict."""
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        sd: dict[str, torch.Tensor] = {}
        for s in shards:
            sd.update(safetensors_load(s)[0])
        return sd
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        sd = {}
        for b in bins:
            sd.update(unwrap_state_dict(torch_load(b), b))
        return sd
    raise CheckpointError(f"{path} has config.json but no model.safetensors or pytorch_model.bin")


def follow_umask(path: str | Path) -> Path:
    """Give ``path`` the mode a newly created file gets (0666 less the umask): writers that
    create private files (``mkstemp``, safetensors) would leave weights unreadable to others
    who share the machine."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return Path(path)
