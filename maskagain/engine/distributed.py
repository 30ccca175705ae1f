"""Process-group helpers: one code path for a single process and for ``torchrun``.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, any number of
nodes through its rendezvous) :func:`init_distributed` joins the process group, NCCL on CUDA and
gloo on CPU; without those variables it returns a single-process :class:`DistInfo`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    joined: bool = False  # a process group was joined (every torchrun launch, one process too)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.joined or self.world_size > 1


def select_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's CUDA device if there is one, else the CPU."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("engine.device=cuda but no CUDA device is available; use device=auto")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(preference: str = "auto") -> DistInfo:
    """Join the torchrun process group if launched by torchrun; otherwise run single-process.

    A torchrun launch joins even with one process (NCCL on CUDA, gloo on the CPU), so a
    one-GPU ``torchrun`` run takes the same DDP path as a multi-GPU one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(preference, local_rank)
    launched = world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if launched and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
        log.info("joined process group: rank %d/%d (%s, %s)", rank, world_size, backend, device)
    joined = dist.is_available() and dist.is_initialized()
    return DistInfo(rank, world_size, local_rank, device, joined=joined)


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes (in place, returned); a no-op single-process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` from rank ``src`` on every process (single-process: returned unchanged)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
