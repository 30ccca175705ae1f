"""The engine's own config sections: optimizer, schedule, and how the training loop runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from maskagain.config import check

Precision = Literal["auto", "bf16", "fp16", "fp32"]  # auto: bf16 where native, else fp32


def check_precision_reason(reason: str, path: str) -> None:
    """``precision_reason`` is written by the run when it resolves ``precision: auto``: empty,
    or the saved ``auto: ...`` line (a saved config read back)."""
    check(
        reason == "" or reason.startswith("auto: "),
        f"config key '{path}' is written by the run (why precision=auto chose its value): "
        f"leave it empty or as saved ('auto: ...'), got {reason!r}",
    )


@dataclass
class OptimConfig:
    """AdamW. The peak lr is ``lr`` if set, else ``base_lr * total_batch / 256``.

    ``scale_min_lr``: also scale the schedule's ``min_lr`` and ``warmup_lr`` by
    ``total_batch / 256``, as the official VideoMAE, MVD and AMD pre-training scripts do (their
    ``--min_lr`` and ``--warmup_lr`` are per 256 clips); off, both are absolute learning rates.
    """

    base_lr: float = 1.5e-4
    """learning rate per 256 clips; the peak lr is base_lr * total batch / 256"""
    lr: float | None = None
    """peak learning rate as is (overrides base_lr); null: from base_lr"""
    weight_decay: float = 0.05
    """AdamW weight decay (not on norms and biases)"""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas"""
    eps: float = 1e-8
    """AdamW epsilon"""
    clip_grad: float | None = None
    """clip the gradient norm to this value; null: no clipping"""
    fused: bool | None = None
    """fused AdamW kernel; null: fused on CUDA, foreach elsewhere"""
    scale_min_lr: bool = False
    """also scale schedule.min_lr and warmup_lr by total batch / 256 (official scripts)"""

    def schedule_scale(self, total_batch: int) -> float:
        """Factor applied to the schedule's ``min_lr`` and ``warmup_lr``: ``total_batch / 256``
        with ``scale_min_lr``, else 1."""
        return total_batch / 256 if self.scale_min_lr else 1.0

    def peak_lr(self, total_batch: int) -> float:
        """Peak learning rate for ``total_batch`` clips per optimizer step (linear scaling rule)."""
        return self.lr if self.lr is not None else self.base_lr * total_batch / 256

    def validate(self, path: str = "optim") -> None:
        check(self.base_lr > 0, f"config key '{path}.base_lr' must be > 0, got {self.base_lr}")
        check(
            self.lr is None or self.lr > 0,
            f"config key '{path}.lr' must be > 0 or null, got {self.lr}",
        )
        check(self.weight_decay >= 0, f"config key '{path}.weight_decay' must be >= 0")
        check(self.eps > 0, f"config key '{path}.eps' must be > 0, got {self.eps}")
        check(
            all(0.0 <= b < 1.0 for b in self.betas),
            f"config key '{path}.betas' must be two values in [0, 1), got {list(self.betas)}",
        )
        check(
            self.clip_grad is None or self.clip_grad > 0,
            f"config key '{path}.clip_grad' must be > 0 or null (no clipping), got {self.clip_grad}",
        )


@dataclass
class ScheduleConfig:
    """Per-step cosine schedule with linear warm-up from ``warmup_lr`` to the peak lr."""

    epochs: int = 400
    """training epochs (passes over the train split)"""
    warmup_epochs: float = 40
    """epochs of linear warm-up from warmup_lr to the peak lr"""
    warmup_lr: float = 0.0
    """learning rate at the first step"""
    min_lr: float = 1e-5
    """learning rate at the end of the cosine decay"""

    def validate(self, path: str = "schedule") -> None:
        check(self.epochs >= 1, f"config key '{path}.epochs' must be >= 1, got {self.epochs}")
        check(
            0 <= self.warmup_epochs <= self.epochs,
            f"config key '{path}.warmup_epochs' must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        check(self.min_lr >= 0, f"config key '{path}.min_lr' must be >= 0")
        check(self.warmup_lr >= 0, f"config key '{path}.warmup_lr' must be >= 0")


@dataclass
class EngineConfig:
    """How the shared training engine runs (device, precision, batching, logs, checkpoints)."""

    batch_size: int = 64
    """clips per process and micro-step"""
    accum_steps: int = 1
    """micro-batches per optimizer step (gradient accumulation)"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto (CUDA when there is one), cuda or cpu"""
    precision: Precision = "auto"
    """autocast dtype of training: auto (bf16 where native: a CUDA device with bf16, an AMX or
    AVX512-BF16 CPU; else fp32), bf16, fp16 (with loss scaling) or fp32"""
    precision_reason: str = ""
    """written by the run: why precision holds its value (what auto chose, and why)"""
    grad_checkpointing: bool = False
    """recompute activations in the backward pass: less memory, more time"""
    compile: bool = False
    """torch.compile the model"""
    find_unused_parameters: bool = False
    """DDP's find_unused_parameters (for parameters without gradient)"""
    ema_decay: float = 0.0
    """decay of an exponential moving average of the weights (0: none)"""
    log_every: int = 20
    """optimizer steps between log lines (log.jsonl, console and TensorBoard)"""
    ckpt_every_epochs: int = 1
    """save a checkpoint every N epochs (0: only the last)"""
    ckpt_every_steps: int = 0
    """also save one every N optimizer steps (0: only at epoch ends)"""
    keep_checkpoints: int = 2
    """newest checkpoints kept in checkpoints/"""
    stop_after_steps: int | None = None
    """stop after N steps, schedule unchanged, resumable with --resume auto"""
    max_steps_per_epoch: int | None = None
    """cap the steps of an epoch (smoke runs); null: the whole split"""
    tensorboard: bool = True
    """write TensorBoard events to tensorboard/"""
    progress: bool = True
    """show the losses while training: a progress bar on a terminal, else a line every log_every
    steps"""

    def validate(self, path: str = "engine") -> None:
        check_precision_reason(self.precision_reason, f"{path}.precision_reason")
        for key in ("batch_size", "accum_steps", "log_every", "keep_checkpoints"):
            value = getattr(self, key)
            check(value >= 1, f"config key '{path}.{key}' must be >= 1, got {value}")
        for key in ("ckpt_every_epochs", "ckpt_every_steps"):
            value = getattr(self, key)
            check(value >= 0, f"config key '{path}.{key}' must be >= 0, got {value}")
        check(
            0.0 <= self.ema_decay < 1.0,
            f"config key '{path}.ema_decay' must be in [0, 1) (0 disables), got {self.ema_decay}",
        )
        for key in ("stop_after_steps", "max_steps_per_epoch"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"config key '{path}.{key}' must be >= 1 or null")
