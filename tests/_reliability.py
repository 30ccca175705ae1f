"""Shared by the ``test_reliability_*`` files: real ``maskagain`` processes, signals timed by
what the run directory shows, and one uninterrupted reference run per test session.

Every process runs with ``OMP_NUM_THREADS=1`` so runs compared bit for bit use the same CPU
kernels and reduction orders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/tiny/distill.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# 64 clips / batch 4 = 16 steps per epoch, 2 epochs; a checkpoint every 2 steps
RUN_ARGS = ("data.synthetic_train_clips=64", "engine.ckpt_every_steps=2")
TOTAL_STEPS = 32
STEPS_PER_EPOCH = 16

_CACHE: dict[str, Path] = {}


def teacher_path(tmp_path_factory) -> Path:
    """A tiny random 'pre-trained' teacher (wider than the student), saved once per session."""
    if "teacher" not in _CACHE:
        from maskagain.models.loading import save_encoder
        from maskagain.models.registry import create_model

        torch.manual_seed(7)
        model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
        folder = tmp_path_factory.mktemp("teacher")
        _CACHE["teacher"] = save_encoder(model, folder / "teacher.safetensors")
    return _CACHE["teacher"]


def distill_cmd(run_dir: Path, teacher: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "maskagain", "distill", "--config", CONFIG, "--out", str(run_dir),
        f"teacher.source={teacher}", *RUN_ARGS, *extra,
    ]  # fmt: skip


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT
    )


def reference_run(tmp_path_factory, *extra: str) -> Path:
    """The uninterrupted distillation run every interrupted run (with the same ``extra``
    overrides) is compared with: run once per set of overrides."""
    key = "reference" + "".join(f" {e}" for e in extra)
    if key not in _CACHE:
        run_dir = tmp_path_factory.mktemp("reference") / "run"
        proc = run(distill_cmd(run_dir, teacher_path(tmp_path_factory), *extra))
        assert proc.returncode == 0, proc.stderr[-3000:]
        _CACHE[key] = run_dir
    return _CACHE[key]


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):  # a line being written
            pass
    return steps


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> None:
    """Poll ``condition`` (every 5 ms) while ``proc`` runs; fail if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) too early:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.005)


def final_checkpoint(run_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(run_dir)[-1][1])


def assert_same_training_state(a: dict, b: dict) -> None:
    """Bit-identical weights, optimizer moments, schedule and position."""
    assert a["state"] == b["state"]
    assert a["schedule"] == b["schedule"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(sa[idx][name]), torch.as_tensor(sb[idx][name]))
