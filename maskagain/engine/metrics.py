"""Where training metrics go: ``log.jsonl``, TensorBoard and a tqdm progress bar (rank 0 only)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class MetricWriter:
    """Appends one JSON object per log line to ``run_dir/log.jsonl`` and mirrors scalars to
    TensorBoard (``run_dir/tensorboard``). Inactive (all no-ops) on non-main processes."""

    def __init__(
        self,
        run_dir: str | Path,
        active: bool,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        """``resume_step``: a resumed run drops what an earlier attempt logged after it. Lines
        an earlier attempt left unreadable (a write cut short by a crash) are dropped with a
        warning, so the next line starts on a line of its own."""
        self.active = active
        self.path = Path(run_dir) / "log.jsonl"
        if active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._truncate(resume_step)
        self._file = open(self.path, "a") if active else None  # noqa: SIM115
        self._tb = None
        if active and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge)

    def _truncate(self, step: int | None) -> None:
        """Rewrite ``log.jsonl`` without its unreadable lines and, when ``step`` is given, the
        lines logged after ``step``; leave it as it is when nothing is dropped."""
        if not self.path.is_file():
            return
        text = self.path.read_text()
        lines = text.splitlines()
        kept, torn = [], 0
        for line in lines:
            record = _record(line)
            if record is None:
                torn += bool(line.strip())
            elif step is None or record.get("step", 0) <= step:
                kept.append(line)
        if torn:
            log.warning(
                "dropping %d unreadable line(s) of %s (a write cut short, e.g. by a crash)",
                torn,
                self.path,
            )
        if len(kept) < len(lines) - torn:
            log.info("dropping %d log lines after step %d", len(lines) - torn - len(kept), step)
        if len(kept) < len(lines) or (text and not text.endswith("\n")):
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict, step: int, prefix: str = "train") -> None:
        """``record``: flat dict of numbers (and strings, which TensorBoard skips)."""
        if not self.active:
            return
        record = {"time": round(time.time(), 3), **record}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("time", "step", "epoch"):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_log(path: str | Path) -> list[dict]:
    """The records of a ``log.jsonl`` (none when it does not exist); blank, torn (a writer that
    died mid-line) and foreign lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = (_record(line) for line in path.read_text().splitlines())
    return [r for r in records if r is not None]


def _record(line: str) -> dict | None:
    """The JSON object on a log line; None for a blank, torn or foreign line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class Progress:
    """Training progress over optimizer steps: on a terminal a tqdm bar with the loss terms,
    lr and clips/s (ETA from tqdm); elsewhere (a log file, a pipe, CI) one plain log line per
    :meth:`show` (every ``engine.log_every`` steps) with the step, the same values and the ETA."""

    def __init__(
        self, total: int, initial: int, active: bool, desc: str, terminal: bool | None = None
    ) -> None:
        import sys

        self._bar = None
        self.total, self.step, self.desc, self.active = total, initial, desc, active
        self._t0, self._step0 = time.perf_counter(), initial
        terminal = sys.stderr.isatty() if terminal is None else terminal
        if active and terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.step += n
        if self._bar is not None:
            self._bar.update(n)

    def show(self, values: dict) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=False)
        elif self.active:
            shown = " ".join(f"{k} {_short(v)}" for k, v in values.items())
            log.info(
                "%s step %d/%d: %s, ETA %s", self.desc, self.step, self.total, shown, self.eta()
            )

    def eta(self) -> str:
        """Time left at the mean pace since this bar started, as ``m:ss``."""
        done = self.step - self._step0
        if done <= 0:
            return "?"
        left = (time.perf_counter() - self._t0) / done * max(self.total - self.step, 0)
        return f"{int(left // 60)}:{int(left % 60):02d}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"
    return str(value)


def peak_memory(device: torch.device) -> dict[str, float]:
    """``{"max_mem_gb": ...}``: the most memory this process has held on a CUDA ``device``
    since it started (``torch.cuda.max_memory_allocated``), for the log lines; ``{}`` elsewhere."""
    if device.type != "cuda":
        return {}
    import torch

    return {"max_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
