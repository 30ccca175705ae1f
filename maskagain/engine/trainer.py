"""The training loop shared by every recipe.

A recipe supplies:

- ``model``: one ``nn.Module`` holding everything that trains (e.g. student + the objective's
  projections). The trainer wraps it in DDP (when distributed) and ``torch.compile`` (when
  asked), checkpoints it, and can keep an EMA of it. Frozen parts (a teacher) stay outside.
- ``step_fn(module, batch) -> dict[str, Tensor]``: the forward pass of one micro-batch, called
  with the wrapped module under autocast; it returns scalar tensors, ``"loss"`` being the one
  to minimise (the others are logged as they are). Batches arrive on the device, finished by
  ``device_transform`` (:mod:`maskagain.engine.feed`: the one boundary from data to device).
- the optimizer, the :class:`~maskagain.engine.optim.CosineSchedule`, a DataLoader over a
  :class:`~maskagain.engine.sampler.ResumableSampler`, and optional ``extra_state`` objects
  (anything with ``state_dict``/``load_state_dict``) to checkpoint with the run;
  ``on_epoch_end(trainer) -> metrics`` (validation) and ``batch_hook(batch)`` (called on every
  CPU batch before it moves to the device, e.g. bad-file accounting);
- the run's length, counted once where the optimizer's schedule is built:
  ``steps_per_epoch`` and ``clips_per_step`` (:func:`maskagain.engine.run.steps_per_epoch`,
  :func:`maskagain.engine.run.clips_per_step`).

The hot loop does no host synchronisation between log lines: loss terms stay on the device
until every ``log_every`` steps, when they are averaged across processes, checked for
non-finite values (naming the step and the term) and written out in one transfer.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader

from maskagain.engine.checkpoint import (
    atomic_torch_save,
    capture_rng,
    checkpoint_path,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
)
from maskagain.engine.compiling import maybe_compile
from maskagain.engine.config import EngineConfig
from maskagain.engine.distributed import DistInfo, all_reduce_mean, barrier, unwrap
from maskagain.engine.ema import ModelEma
from maskagain.engine.feed import to_device
from maskagain.engine.metrics import MetricWriter, Progress, peak_memory
from maskagain.engine.optim import CosineSchedule
from maskagain.engine.precision import resolve_precision
from maskagain.engine.sampler import ResumableSampler

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, dict], dict[str, torch.Tensor]]
EpochHook = Callable[["Trainer"], dict[str, float] | None]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHECKPOINT_FORMAT = "maskagain-train-v1"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after a checkpoint was written (``signum`` says which;
    the CLI exits with ``128 + signum``)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainState:
    """Position of a run. ``batch_in_epoch`` counts micro-batches done in the current epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch}


def enable_grad_checkpointing(module: nn.Module) -> int:
    """Switch on activation checkpointing in every submodule that supports it; returns how many."""
    count = 0
    for m in module.modules():
        if hasattr(m, "grad_checkpointing"):
            m.grad_checkpointing = True
            count += 1
    return count


class Trainer:
    """Epochs of optimizer steps with accumulation, precision, DDP, logs and checkpoints."""

    def __init__(
        self,
        *,
        engine: EngineConfig,
        dist: DistInfo,
        run_dir: str | Path,
        model: nn.Module,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer,
        schedule: CosineSchedule,
        loader: DataLoader,
        sampler: ResumableSampler,
        epochs: int,
        steps_per_epoch: int,
        clips_per_step: int,
        clip_grad: float | None = None,
        config: dict | None = None,
        extra_state: dict[str, Any] | None = None,
        on_epoch_end: EpochHook | None = None,
        batch_hook: Callable[[dict], None] | None = None,
        device_transform: Callable[[dict], dict] | None = None,
        name: str = "train",
    ) -> None:
        self.engine = engine
        self.dist = dist
        self.run_dir = Path(run_dir)
        self.model = model
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.schedule = schedule
        self.loader = loader
        self.sampler = sampler
        self.epochs = epochs
        self.clip_grad = clip_grad
        self.config = config or {}
        self.extra_state = extra_state or {}
        self.on_epoch_end = on_epoch_end
        self.batch_hook = batch_hook
        self.device_transform = device_transform
        self.name = name
        self.state = TrainState()
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.clips_per_step = clips_per_step
        self._data_wait = 0.0  # seconds spent waiting for batches since the last log line
        self._warned_data_bound = -1  # epoch of the last "data-bound" warning
        self._started = False  # past the first log interval (which holds the workers' start)
        self.dtype = DTYPES[resolve_precision(engine.precision, dist.device)[0]]
        self.scaler = self._make_scaler()
        self.ema = ModelEma(model, engine.ema_decay) if engine.ema_decay > 0 else None
        # DDP must know whether some parameters get no gradient: found on the first batch
        self._probe_unused = self.dist.distributed and not engine.find_unused_parameters
        self.wrapped = model if self._probe_unused else self._wrap(model)
        self.last_metrics: dict[str, float] = {}
        self.epoch_metrics: dict[str, float] = {}
        self._window: list[torch.Tensor] = []
        self._window_steps: list[int] = []
        self._keys: list[str] | None = None
        self._pending_rng: Any = None
        self._resumed = False
        self._t_last = time.perf_counter()
        self._signal: int | None = None  # SIGINT/SIGTERM received during fit()
        self._signal_time = 0.0
        self._saved_step: int | None = None

    # ------------------------------------------------------------------ construction
    def _make_scaler(self) -> torch.amp.GradScaler | None:
        if self.dtype != torch.float16:
            return None
        return torch.amp.GradScaler(self.dist.device.type)

    def _wrap(self, model: nn.Module, find_unused: bool | None = None) -> nn.Module:
        """``model`` in DDP (when distributed) and ``torch.compile`` (when asked)."""
        if find_unused is None:
            find_unused = self.engine.find_unused_parameters
        if self.engine.grad_checkpointing:
            n = enable_grad_checkpointing(model)
            log.info("activation checkpointing on in %d module(s)", n)
        wrapped = model
        if self.dist.distributed:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            # buffers here are fixed tables (position embeddings), nothing to re-broadcast
            wrapped = nn.parallel.DistributedDataParallel(
                model,
                device_ids=ids,
                find_unused_parameters=find_unused,
                broadcast_buffers=False,
                gradient_as_bucket_view=True,
            )
        if self.engine.compile:
            wrapped = maybe_compile(wrapped, self.dist.device, "the training step")
        return wrapped

    def _wrap_after_probe(self, batch: dict) -> None:
        """Wrap the model in DDP once the first batch showed whether every trainable parameter
        gets a gradient (``find_unused_parameters`` on, with one log line, when some do not:
        e.g. an objective that reads no output-level term leaves the student's last norm
        unused). Agreed by every process."""
        unused = unused_parameters(self.model, self.step_fn, batch, self.autocast())
        flag = torch.tensor([float(len(unused))], device=self.dist.device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        find_unused = bool(flag.item())
        if unused:
            shown = ", ".join(unused[:6]) + (", ..." if len(unused) > 6 else "")
            log.info(
                "%d trainable parameter(s) get no gradient from the loss (%s): "
                "find_unused_parameters on",
                len(unused),
                shown,
            )
        self.wrapped = self._wrap(self.model, find_unused)
        self._probe_unused = False

    def autocast(self):
        """Autocast context for the configured precision (a no-op for fp32)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.dtype)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        """Everything needed to continue the run exactly (weights_only-loadable)."""
        rng = capture_rng()
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            torch_dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        return {
            "format": CHECKPOINT_FORMAT,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "ema": self.ema.state_dict() if self.ema else {},
            "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
            "state": self.state.as_dict(),
            "metrics": {**self.last_metrics, **self.epoch_metrics},
            "world_size": self.dist.world_size,
            "rng": rng_all,
            "config": self.config,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/ckpt_stepN.pt`` atomically on rank 0 (all ranks must call)."""
        self.flush_logs()  # never checkpoint weights that came after a non-finite loss
        state = self.checkpoint_state()
        path = None
        if self.dist.is_main:
            path = atomic_torch_save(state, checkpoint_path(self.run_dir, self.state.step))
            prune_checkpoints(self.run_dir, self.engine.keep_checkpoints)
            log.info("saved %s", path)
        barrier()
        self._saved_step = self.state.step
        return path

    def resume(self, path: str | Path) -> None:
        """Restore model, optimizer, schedule, scaler, EMA, extras, position and RNG states."""
        from maskagain.checkpoints import CheckpointError

        ckpt = load_checkpoint(path)  # weights_only; unsafe or corrupt files: CheckpointError
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"--resume {path} is not a maskagain training checkpoint (no format "
                f"{CHECKPOINT_FORMAT!r}); to start from weights, use the recipe's source option"
            )
        try:
            unwrap(self.model).load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"--resume {path} does not match this run's model: {str(err).splitlines()[0]}"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        if self.scaler and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema and ckpt["ema"]:
            self.ema.load_state_dict(ckpt["ema"])
        for key, obj in self.extra_state.items():
            if key in ckpt["extra"]:
                obj.load_state_dict(ckpt["extra"][key])
        self.state = TrainState(**ckpt["state"])
        self.last_metrics = dict(ckpt.get("metrics", {}))
        self._resumed = True
        if ckpt["world_size"] == self.dist.world_size:
            self._pending_rng = ckpt["rng"][self.dist.rank]
        else:
            log.warning(
                "checkpoint written by %d processes; RNG streams re-seeded", ckpt["world_size"]
            )
        log.info("resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.step)

    # ------------------------------------------------------------------ one step
    def move_batch(self, batch: dict) -> dict:
        """A worker batch on the training device (:func:`~maskagain.engine.feed.to_device`),
        finished by ``device_transform``."""
        batch = to_device(batch, self.dist.device)
        return batch if self.device_transform is None else self.device_transform(batch)

    def micro_step(self, batch: dict, sync: bool) -> dict[str, torch.Tensor]:
        """Forward + backward of one micro-batch; gradients are all-reduced only when ``sync``."""
        batch = self.move_batch(batch)
        if self._probe_unused:
            self._wrap_after_probe(batch)
        no_sync = self.dist.distributed and not sync
        with self.wrapped.no_sync() if no_sync else nullcontext():
            with self.autocast():
                losses = self.step_fn(self.wrapped, batch)
            loss = losses["loss"] / self.engine.accum_steps
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return losses

    def optimizer_step(self) -> torch.Tensor | None:
        """Clip (optionally), step, zero grads, advance the schedule and the EMA; returns the
        gradient norm as a device tensor when clipping."""
        grad_norm = None
        if self.clip_grad is not None:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(unwrap(self.model))
        return grad_norm

    def _record(self, terms: list[dict[str, torch.Tensor]], grad_norm: torch.Tensor | None) -> None:
        """Keep this step's loss terms (mean over micro-batches) on the device for the next log."""
        if self._keys is None:
            self._keys = list(terms[0]) + (["grad_norm"] if grad_norm is not None else [])
        values = [sum(t[k].detach().float() for t in terms) / len(terms) for k in terms[0]]
        if grad_norm is not None:
            values.append(grad_norm.detach().float())
        self._window.append(torch.stack(values))
        self._window_steps.append(self.state.step)

    # ------------------------------------------------------------------ logging
    def flush_logs(self) -> dict[str, float]:
        """Average the pending steps over processes, check them, log them (one host sync)."""
        if not self._window:
            return self.last_metrics
        window = all_reduce_mean(torch.stack(self._window))  # (steps, terms)
        rows = window.tolist()
        steps, self._window, self._window_steps = self._window_steps, [], []
        for step, row in zip(steps, rows):
            for key, value in zip(self._keys, row):
                # an overflowing fp16 gradient norm is expected: GradScaler skips that step
                if not math.isfinite(value) and key != "grad_norm":
                    raise NonFiniteLossError(
                        f"non-finite loss at step {step}: term '{key}' = {value}; stopped, "
                        f"the last checkpoint in {self.run_dir / 'checkpoints'} is untouched"
                    )
        now = time.perf_counter()
        elapsed, self._t_last = now - self._t_last, now
        means = [sum(col) / len(col) for col in zip(*rows)]
        metrics = dict(zip(self._keys, means))
        record = {"step": self.state.step, "epoch": self.state.epoch, "lr": self.current_lr()}
        record.update(metrics)
        record["clips_per_s"] = len(rows) * self.clips_per_step / max(elapsed, 1e-9)
        record["data_wait"] = round(self._data_wait_share(elapsed), 3)
        record.update(peak_memory(self.dist.device))  # CUDA: the process's peak, in GiB
        self.last_metrics = record
        self.writer.write(record, self.state.step)
        self.progress.show({k: v for k, v in record.items() if k not in ("step", "epoch")})
        return record

    def current_lr(self) -> float:
        """lr of the most recent optimizer step (unscaled)."""
        return self.schedule.lr_at(max(0, self.schedule.step_count - 1))

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        """Train until the last epoch (or ``engine.stop_after_steps``); returns final metrics."""
        main = self.dist.is_main
        resumed = self.state.step if self._resumed else None
        self.writer = MetricWriter(self.run_dir, main, self.engine.tensorboard, resumed)
        self.progress = Progress(
            self.total_steps, self.state.step, main and self.engine.progress, self.name
        )
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None
        self.wrapped.train()
        self._t_last = time.perf_counter()
        self._data_wait = 0.0
        previous = self._catch_signals()
        try:
            while self.state.epoch < self.epochs and not self._stop_requested():
                self.run_epoch()
            self.flush_logs()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.progress.close()
            self.writer.close()
        return {**self.last_metrics, **self.epoch_metrics}

    # ------------------------------------------------------------------ interrupts
    def _catch_signals(self) -> dict:
        """SIGINT/SIGTERM during ``fit`` only set a flag: the run stops after the current step
        with a checkpoint (:class:`TrainingInterrupted`). A repeat more than 2 s later (not
        the copy torchrun forwards) stops at once, without a checkpoint."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if self._signal is None:
                self._signal, self._signal_time = signum, now
                log.warning(
                    "%s received: stopping after this step with a checkpoint (repeat to stop "
                    "at once, without one)",
                    signal.Signals(signum).name,
                )
            elif now - self._signal_time > 2.0:
                raise KeyboardInterrupt

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _interrupted(self) -> int | None:
        """The signal that stops the run, agreed by every process (checked every step alone,
        at log steps under DDP, where the processes already synchronise)."""
        if not self.dist.distributed:
            return self._signal
        if self.state.step % self.engine.log_every != 0:
            return None
        flag = torch.tensor([float(self._signal or 0)], device=self.dist.device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop_on_signal(self) -> None:
        signum = self._interrupted()
        if signum is None:
            return
        if self._saved_step != self.state.step:
            self.save_checkpoint()
        name = signal.Signals(signum).name
        path = checkpoint_path(self.run_dir, self.state.step)
        raise TrainingInterrupted(
            f"interrupted by {name} at step {self.state.step} (epoch {self.state.epoch}); "
            f"saved {path}; continue with --resume auto",
            signum,
        )

    def _stop_requested(self) -> bool:
        stop = self.engine.stop_after_steps
        return stop is not None and self.state.step >= stop

    def run_epoch(self) -> None:
        """The rest of the current epoch, from the saved data position."""
        accum = self.engine.accum_steps
        budget = self.steps_per_epoch * accum
        self.sampler.set_epoch(self.state.epoch)
        self.sampler.set_start(self.state.batch_in_epoch * self.engine.batch_size)
        for obj in (self.loader.dataset, self.loader.collate_fn):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.state.epoch)
        generator = getattr(self.loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.sampler.seed * 1000 + self.state.epoch)
        terms: list[dict[str, torch.Tensor]] = []
        if self.state.batch_in_epoch < budget:
            for batch in self._timed(self.loader):
                self.state.batch_in_epoch += 1
                if self.batch_hook is not None:
                    self.batch_hook(batch)
                terms.append(self.micro_step(batch, sync=len(terms) + 1 == accum))
                if len(terms) < accum:
                    continue
                grad_norm = self.optimizer_step()
                self.state.step += 1
                self._record(terms, grad_norm)
                terms = []
                self.progress.update()
                if self._after_step():
                    return
                if self.state.batch_in_epoch >= budget:
                    break
        if terms:  # the loader ran out inside an accumulation group: drop its gradients
            log.warning("epoch %d ended inside an accumulation group", self.state.epoch)
            self.optimizer.zero_grad(set_to_none=True)
        self._end_epoch()

    def _timed(self, loader: Iterable[dict]) -> Iterator[dict]:
        """``loader``'s batches, adding the time spent waiting for each to ``_data_wait``."""
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            self._data_wait += time.perf_counter() - t0
            if batch is None:
                return
            yield batch

    def _data_wait_share(self, elapsed: float) -> float:
        """Share of the last log interval spent waiting for data; warns once a run when it
        dominates after the first interval (which holds the workers' start), naming the levers
        not pulled yet."""
        share, self._data_wait = min(1.0, self._data_wait / max(elapsed, 1e-9)), 0.0
        started, self._started = self._started, True
        if share > 0.5 and started and self._warned_data_bound < 0:
            from maskagain.data.config import available_workers

            self._warned_data_bound = self.state.epoch
            loader = getattr(self, "loader", None)
            workers, cores = getattr(loader, "num_workers", 0), available_workers()
            more = (
                f"raise data.num_workers (now {workers}, {cores} cores), "
                if workers < cores
                else ""
            )
            # re-encoding helps only clips decoded from files, not generated ones
            files = hasattr(getattr(loader, "dataset", None), "records")
            prepare = " or re-encode the videos with `maskagain prepare`" if files else ""
            log.warning(
                "data-bound: %.0f%% of the time went to waiting for batches; %suse repeated "
                "sampling (data.num_sample)%s",
                100 * share, more, prepare,
            )  # fmt: skip
        return share

    def _after_step(self) -> bool:
        """Logging and step checkpoints; True when the run must stop now."""
        step = self.state.step
        if step % self.engine.log_every == 0:
            self.flush_logs()
        if self._stop_requested():
            self.save_checkpoint()
            log.info("stopping after step %d (engine.stop_after_steps)", step)
            return True
        every = self.engine.ckpt_every_steps
        if every and step % every == 0 and step < self.total_steps:
            self.save_checkpoint()
        self._stop_on_signal()
        return False

    def _end_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        self.flush_logs()
        if self.on_epoch_end is not None:
            metrics = self.on_epoch_end(self) or {}
            if metrics:
                self.epoch_metrics = dict(metrics)
                self.writer.write(
                    {"step": self.state.step, "epoch": self.state.epoch, **metrics},
                    self.state.step,
                    prefix="val",
                )
        every = self.engine.ckpt_every_epochs
        last = self.state.epoch >= self.epochs
        if last or (every and self.state.epoch % every == 0):
            self.save_checkpoint()


def unused_parameters(model: nn.Module, step_fn: StepFn, batch: dict, autocast: Any) -> list[str]:
    """Names of the trainable parameters of ``model`` that the loss of one forward on ``batch``
    does not reach (its autograd graph is walked, no backward). The RNG states are restored,
    so the training step that follows draws what it would have drawn."""
    rng = capture_rng()
    try:
        with autocast:
            loss = step_fn(model, batch)["loss"]
        reached = _graph_leaves(loss)
    finally:
        restore_rng(rng)
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in reached]


def _graph_leaves(loss: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) that ``loss``'s autograd graph accumulates into."""
    leaves: set[int] = set()
    seen: set[Any] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf itself
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(fn for fn, _ in node.next_functions)
    return leaves
