"""Timing one row of the step benchmark: the training step, its seconds per clip, its memory
(peak RSS or device peak, allocated bytes sampled during one step) and the machine's matmul
FLOP/s at the step's GEMM shapes; ``--profile``'s op table."""

from __future__ import annotations

import contextlib
import ctypes
import resource
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import flops as fl
from benchmarks._step_rows import DTYPES, Size, Workload, build_workload
from maskagain.masking import tube_mask
from maskagain.models import model_config

# the fields of every row of a result (``fraction_of_matmul`` added once every row ran)
ROW_FIELDS = (
    "name",
    "batch",
    "seconds_per_clip",
    "seconds_per_clip_min",
    "seconds_per_clip_max",
    "seconds_per_clip_iqr",
    "step_seconds",
    "peak_memory_mb",
    "memory_kind",
    "setup_memory_mb",
    "allocated_peak_mb",
    "allocated_kind",
    "allocated_between_steps_mb",
    "flops_per_clip",
    "flops_parts",
    "achieved_flops",
    "fraction_of_matmul",
    "trained_params",
    "loss",
    "matmul_flops_in_process",
    "precision",
)


# ---------------------------------------------------------------------- timing
def make_optimizer(module: nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW as in the paper's recipe (betas 0.9/0.95, wd 0.05), fused kernel (or PyTorch's
    default multi-tensor one, as the official code's ``create_optimizer`` gets)."""
    params = [p for p in module.parameters() if p.requires_grad]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, **kwargs)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def train_step(
    w: Workload, opt: torch.optim.Optimizer, video, mask, device, precision: str = "bf16"
) -> torch.Tensor:
    """One step: forward under ``precision``'s autocast, backward, AdamW. Returns the detached
    loss. An official step also takes the gradient norm and the loss to the host, as the
    official loop does every step."""
    with _autocast(device, precision):
        loss = w.loss_fn(video, mask)
    loss.backward()
    if w.official_step:
        grads = [p.grad.detach() for p in w.trained.parameters() if p.grad is not None]
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        loss.item()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024, "rss"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )
    ]


def _glibc_in_use() -> Callable[[], int] | None:
    """``() -> bytes in use`` from glibc's ``mallinfo2`` (heap + mmapped chunks), or None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def in_use() -> int:
        info = fn()
        return info.uordblks + info.hblkhd

    return in_use


class AllocatedPeak:
    """Peak bytes in use while the block runs: ``torch.cuda.max_memory_allocated`` on GPU, else
    glibc's in-use bytes sampled every ``interval`` seconds by a thread (``peak_mb`` is None
    where glibc's ``mallinfo2`` is missing)."""

    def __init__(self, device: torch.device, interval: float = 5e-4) -> None:
        self.device = device
        self.interval = interval
        self.peak_mb: float | None = None
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "malloc_in_use"
        self._in_use = None if device.type == "cuda" else _glibc_in_use()
        self._stop = threading.Event()
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._in_use())
            time.sleep(self.interval)

    def __enter__(self) -> AllocatedPeak:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._in_use is not None:
            self._peak = self._in_use()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._in_use is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._peak, self._in_use()) / 2**20

    def now_mb(self) -> float | None:
        """Bytes in use right now (what is held between steps when called after one)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return None if self._in_use is None else self._in_use() / 2**20


def profile_row(
    name: str, size: Size, batch: int, warmup: int, device, path: Path, precision: str = "bf16"
) -> None:
    """Profile one step of ``name`` after ``warmup`` steps; write the top ops to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    w = build_workload(name, size, device, precision)
    opt = make_optimizer(w.trained, fused=not w.official_step)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, 3, size.frames, size.img, size.img, generator=g).to(device)
    mask = tube_mask(batch, size.grid, size.mask_ratio, g).to(device)
    for _ in range(warmup):
        train_step(w, opt, video, mask, device, precision)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        train_step(w, opt, video, mask, device, precision)
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    shapes = prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=40)
    path.write_text(f"{name} batch {batch}\n\n{table}\n\nby input shape\n\n{shapes}\n")


def run_row(
    name: str, size: Size, batch: int, steps: int, warmup: int, device, precision: str = "bf16"
) -> dict:
    """Build ``name``, run ``warmup + steps`` steps in ``precision``, return the row (without
    the matmul fraction)."""
    # the matmul limit under this process's conditions, right before its steps
    matmul = {k: v["flops"] for k, v in measure_matmul(size, batch, device).items()}
    torch.manual_seed(0)
    w = build_workload(name, size, device, precision)
    opt = make_optimizer(w.trained, fused=not w.official_step)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, 3, size.frames, size.img, size.img, generator=g).to(device)
    masks = [tube_mask(batch, size.grid, size.mask_ratio, g).to(device) for _ in range(4)]
    setup_mb, _ = _peak_memory_mb(device)  # peak so far: models, inputs (AdamW state: step 1)
    times = []
    loss = torch.zeros(())
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = train_step(w, opt, video, masks[i % len(masks)], device, precision)
        _sync(device)
        times.append(time.perf_counter() - t0)
    timed = times[warmup:]
    per_clip = [t / batch for t in timed]
    q = statistics.quantiles(per_clip, n=4) if len(per_clip) > 1 else [per_clip[0]] * 3
    median = statistics.median(per_clip)
    peak, kind = _peak_memory_mb(device)
    with AllocatedPeak(device) as allocated:  # one more step, untimed: sampling costs time
        train_step(w, opt, video, masks[(warmup + steps) % len(masks)], device, precision)
        _sync(device)
    return {
        "name": name,
        "batch": batch,
        "seconds_per_clip": median,
        "seconds_per_clip_min": min(per_clip),
        "seconds_per_clip_max": max(per_clip),
        "seconds_per_clip_iqr": q[2] - q[0],
        "step_seconds": timed,
        "peak_memory_mb": peak,
        "memory_kind": kind,
        "setup_memory_mb": setup_mb,
        "allocated_peak_mb": allocated.peak_mb,
        "allocated_kind": allocated.kind,
        "allocated_between_steps_mb": allocated.now_mb(),
        "flops_per_clip": w.flops.total,
        "flops_parts": w.flops.parts,
        "achieved_flops": w.flops.total / median,
        "trained_params": sum(p.numel() for p in w.trained.parameters() if p.requires_grad),
        "loss": float(loss),
        "matmul_flops_in_process": matmul,
        "precision": precision,
    }


# ---------------------------------------------------------------------- matmul limit
def matmul_flops(
    shapes: list[tuple[int, int, int]], dtype: torch.dtype, device, reps: int = 10
) -> dict:
    """FLOP/s of ``F.linear`` at every (m, k, n) and over the whole set (total FLOPs / time)."""
    per_shape, total_flops, total_time = [], 0.0, 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(n, k, device=device).to(dtype)
        for _ in range(2):
            F.linear(a, b)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            F.linear(a, b)
        _sync(device)
        elapsed = (time.perf_counter() - t0) / reps
        work = 2.0 * m * k * n
        per_shape.append({"m": m, "k": k, "n": n, "flops": work / elapsed})
        total_flops += work
        total_time += elapsed
    return {"flops": total_flops / total_time, "shapes": per_shape}


def measure_matmul(size: Size, batch: int, device) -> dict:
    """bf16 and fp32 matmul FLOP/s at the base encoder's linear-layer GEMM shapes."""
    arch = model_config(size.base, **size.model_kwargs())
    m = batch * size.clip.n_vis
    shapes = fl.linear_gemm_shapes(m, arch.embed_dim, int(arch.embed_dim * arch.mlp_ratio))
    out = {}
    for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        out[label] = matmul_flops(shapes, dtype, device)
    return out
