"""The demo's stages: the plan in run order with expected seconds, the numbered banners with an
ETA printed as they start, and the per-stage profile (wall and CPU seconds)."""

from __future__ import annotations

import logging
import os
import time

from maskagain.recipes.demo.settings import TRAINED_ROWS

log = logging.getLogger(__name__)

# Expected seconds of each stage on a quiet 2-core CPU (one thread): the ETA's weights, scaled
# by how fast the stages so far ran against them. The CPU seconds of a default demo's stages
# (its summary.json profile); MVD's as AMD's (both took ~56 s before the clips were shared); a
# fine-tune with its test took ~48 s
STAGE_SECONDS = {
    "clips": 13.0,
    "maskagain": 25.0,
    "videomae": 37.0,
    "hint": 26.0,
    "mvd": 71.0,
    "amd": 71.0,
    "probe_clips": 16.0,
    "probe": 13.0,  # per encoder
    "finetune": 48.0,  # per model
    "report": 7.0,
}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Stages:
    """Numbered stage banners with elapsed time and an ETA for the whole run (printed: progress
    stays visible on the console), and the per-stage profile (wall and CPU seconds)."""

    def __init__(self, plan: list[tuple[str, float]]) -> None:
        self.plan, self.done, self.t0 = plan, 0, time.time()
        self.profile: list[dict] = []
        self._open: tuple[str, float, float] | None = None

    def start(self, what: str) -> None:
        """Close the running stage and announce the next one of the plan as ``what``."""
        self._close()
        elapsed = time.time() - self.t0
        expected_done = sum(sec for _, sec in self.plan[: self.done])
        pace = elapsed / expected_done if expected_done > 0 else 1.0
        left = pace * sum(sec for _, sec in self.plan[self.done :])
        self.done += 1
        line = (
            f"[demo {self.done}/{len(self.plan)} | {elapsed:4.0f}s elapsed, ETA "
            f"{elapsed + left:4.0f}s total] {what}"
        )
        print(line, flush=True)
        log.debug(line)
        self._open = (self.plan[self.done - 1][0], time.time(), _cpu_seconds())

    def finish(self) -> list[dict]:
        """Close the last stage; the profile: [{stage, wall_s, cpu_s}] in run order."""
        self._close()
        return self.profile

    def _close(self) -> None:
        if self._open is not None:
            name, t, cpu = self._open
            self.profile.append({
                "stage": name,
                "wall_s": round(time.time() - t, 1),
                "cpu_s": round(_cpu_seconds() - cpu, 1),
            })  # fmt: skip
            self._open = None


def stage_plan(
    rows: tuple[str, ...], finetune: bool, retrain: bool, encoders: int
) -> list[tuple[str, float]]:
    """The demo's stages in run order, each with its expected seconds (:data:`STAGE_SECONDS`)."""
    plan = [("teacher", 2400.0)] if retrain else []
    plan.append(("clips", STAGE_SECONDS["clips"]))
    plan += [(name, STAGE_SECONDS[name]) for name in rows if name in TRAINED_ROWS]
    plan.append(("probe_clips", STAGE_SECONDS["probe_clips"]))
    plan.append(("probes", STAGE_SECONDS["probe"] * encoders))
    if finetune:
        plan += [(f"finetune_{n}", STAGE_SECONDS["finetune"]) for n in ("teacher", *rows)]
    plan.append(("report", STAGE_SECONDS["report"]))
    return plan
