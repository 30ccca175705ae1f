"""DDP under torchrun: ``torchrun --nproc_per_node=2`` with gloo on CPU runs ``distill``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.models import load_encoder
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model


@pytest.mark.torchrun
def test_torchrun_two_processes_gloo_distill(tmp_path):
    torch.manual_seed(3)
    teacher = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8)
    teacher_path = save_encoder(teacher, tmp_path / "teacher.safetensors")
    run_dir = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "maskagain", "distill", "--config", "configs/tiny/distill.yaml",
        "--out", str(run_dir), f"teacher.source={teacher_path}",
        "engine.batch_size=2", "engine.accum_steps=2",  # accumulation: DDP no_sync path
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    # 16 clips over 2 processes, 2 x 2 per process and step: 2 steps per epoch, 2 epochs
    assert summary["world_size"] == 2 and summary["total_batch"] == 8
    assert summary["step"] == summary["total_steps"] == 4 and summary["completed"]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # one writer (rank 0), one line per step
    ckpt = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2  # every rank's RNG streams
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    student = load_encoder(run_dir / "student.safetensors")
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][f"student.{key}"], rtol=0, atol=0)
