"""Counting bad video files in the main process and stopping a run when there are too many."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


class TooManyBadFiles(RuntimeError):
    """More bad (unreadable) videos than the configured fraction allows."""


class BadFileTracker:
    """Accumulates the ``"skipped"`` entries of collated batches.

    The bad fraction is ``bad / (samples + bad)``: files that failed over all load attempts
    (``samples`` counts the clips delivered, so repeated sampling counts each clip). Once at
    least ``min_samples`` attempts were seen, ``update`` raises ``TooManyBadFiles`` when the
    fraction is above ``max_fraction`` with 95% confidence (one-sided Wilson lower bound), so
    an unlucky early sample of a dataset at the limit does not stop a run (at 50 attempts a
    10%-bad set shows 10.3% or more half the time) while a 30%-bad one stops after ~50.
    """

    def __init__(self, max_fraction: float = 0.1, min_samples: int = 50, keep: int = 10) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction, self.min_samples, self.keep = max_fraction, min_samples, keep
        self.samples = 0
        self.bad = 0
        self.first: list[tuple[str, str]] = []
        self._paths: set[str] = set()

    @property
    def paths(self) -> set[str]:
        """The distinct files that failed to load."""
        return set(self._paths)

    @property
    def fraction(self) -> float:
        total = self.samples + self.bad
        return self.bad / total if total else 0.0

    def update(self, batch: dict) -> None:
        """Count one collated batch (``"label"`` gives the clips, ``"skipped"`` the bad files)."""
        skipped = batch.get("skipped", [])
        self.samples += len(batch["label"])
        self.bad += len(skipped)
        for path, reason in skipped:
            if path not in self._paths:
                self._paths.add(path)
                if len(self.first) < self.keep:
                    self.first.append((path, reason))
                    log.warning("skipped bad video %s: %s", path, reason)
        total = self.samples + self.bad
        if total >= self.min_samples and self.lower_bound() > self.max_fraction:
            raise TooManyBadFiles(self._message())

    def lower_bound(self, z: float = 1.645) -> float:
        """One-sided 95% (Wilson score) lower bound of the bad fraction."""
        n = self.samples + self.bad
        if n == 0:
            return 0.0
        p = self.bad / n
        margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return max(0.0, (p + z * z / (2 * n) - margin) / (1 + z * z / n))

    def _message(self) -> str:
        listed = "\n".join(f"  {p}: {r}" for p, r in self.first)
        return (
            f"{self.bad} of {self.samples + self.bad} video loads failed ({self.fraction:.1%}, "
            f"at least {self.lower_bound():.1%} with 95% confidence, > max_bad_fraction "
            f"{self.max_fraction:.1%}); first bad files:\n"
            f"{listed}\nCheck DataConfig.root and the list files, re-encode or remove these videos, "
            "or raise data.max_bad_fraction."
        )

    def summary(self) -> dict:
        """For the run summary: counts, fraction and the first offending paths."""
        return {
            "bad_files": self.bad,
            "unique_bad_files": len(self._paths),
            "samples": self.samples,
            "bad_fraction": self.fraction,
            "max_bad_fraction": self.max_fraction,
            "first_bad": [{"path": p, "reason": r} for p, r in self.first],
        }
