"""Interrupts: SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption) during training
finishes the current step, writes a resumable checkpoint, and exits non-zero (128 + signal
number) with one clear line; resuming from it ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _reliability import (
    ENV,
    ROOT,
    TOTAL_STEPS,
    assert_same_training_state,
    distill_cmd,
    final_checkpoint,
    logged_steps,
    reference_run,
    run,
    start,
    teacher_path,
    wait_until,
)

from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory)


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_exits_clearly(tmp_path, tmp_path_factory, signum):
    teacher = teacher_path(tmp_path_factory)
    run_dir = tmp_path / "run"
    # no periodic step checkpoints: any mid-epoch checkpoint comes from the signal
    proc = start(distill_cmd(run_dir, teacher, "engine.ckpt_every_steps=0"))
    wait_until(proc, lambda: max(logged_steps(run_dir), default=0) >= 3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]

    step = logged_steps(run_dir)[-1]
    assert 3 <= step < TOTAL_STEPS
    last = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"maskagain distill: error: interrupted by {name} at step {step} ")
    assert last.endswith("continue with --resume auto")
    ckpts = list_checkpoints(run_dir)
    assert ckpts[-1][0] == step and str(ckpts[-1][1]) in last
    state = load_checkpoint(ckpts[-1][1])["state"]  # weights_only, complete
    assert state["step"] == step and state["batch_in_epoch"] == step % 16
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is False and f"interrupted by {name}" in summary["error"]
    assert not (run_dir / "student.safetensors").exists()
    if signum == signal.SIGTERM:  # nothing is lost: the resumed run ends where the full one does
        reference = reference_run(tmp_path_factory)
        proc = run(distill_cmd(run_dir, teacher, "engine.ckpt_every_steps=0", "--resume", "auto"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert_same_training_state(final_checkpoint(run_dir), final_checkpoint(reference))


@pytest.mark.torchrun
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(
    tmp_path, tmp_path_factory
):
    """A scheduler pre-empting a ``torchrun`` job signals the launcher, which forwards SIGTERM
    to the workers; the ranks agree on the step (at a log step), rank 0 writes the checkpoint
    and every rank stops; ``--resume auto`` then finishes the run."""
    teacher = teacher_path(tmp_path_factory)
    run_dir = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = [
        *torchrun,
        *distill_cmd(run_dir, teacher, "engine.batch_size=2", "engine.ckpt_every_steps=0")[1:],
    ]
    proc = start(cmd)
    wait_until(proc, lambda: max(logged_steps(run_dir), default=0) >= 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "interrupted by SIGTERM at step" in err
    step = logged_steps(run_dir)[-1]
    ckpts = list_checkpoints(run_dir)
    assert ckpts[-1][0] == step < TOTAL_STEPS
    ckpt = load_checkpoint(ckpts[-1][1])
    assert ckpt["world_size"] == 2 and ckpt["state"]["step"] == step
    proc = run(
        [*torchrun, *distill_cmd(run_dir, teacher, "engine.batch_size=2", "--resume", "auto")[1:]]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == TOTAL_STEPS


@pytest.mark.subprocess
def test_sigterm_to_the_process_group_with_loader_workers(tmp_path, tmp_path_factory):
    """Slurm's scancel and a terminal's Ctrl-C signal every process of the job, DataLoader
    workers included; the workers ignore it, the main process saves and stops them, and no
    process of the group is left behind."""
    teacher = teacher_path(tmp_path_factory)
    run_dir = tmp_path / "run"
    cmd = distill_cmd(run_dir, teacher, "data.num_workers=2", "engine.ckpt_every_steps=0")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    wait_until(proc, lambda: max(logged_steps(run_dir), default=0) >= 3)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "killed by signal" not in err
    step = logged_steps(run_dir)[-1]
    assert list_checkpoints(run_dir)[-1][0] == step
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the workers exit with their parent
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("DataLoader workers outlived the stopped run")


@pytest.mark.subprocess
def test_sigterm_during_finetune_saves_and_resumes(tmp_path):
    """The same engine path for fine-tuning (its own recipe around the shared trainer)."""
    run_dir = tmp_path / "ft"
    base = [sys.executable, "-m", "maskagain", "finetune", "--config"]
    cmd = [*base, str(ROOT / "configs/tiny/finetune.yaml"), "--out", str(run_dir)]
    cmd += ["data.synthetic_train_clips=64", "schedule.epochs=1", "val.final_test=false"]
    proc = start(cmd)
    wait_until(proc, lambda: max(logged_steps(run_dir), default=0) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "maskagain finetune: error: interrupted by SIGTERM at step" in err
    step = max(logged_steps(run_dir))
    assert list_checkpoints(run_dir)[-1][0] == step < 16  # 64 videos / 4 per step
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is False and summary["step"] == step
    assert "interrupted by SIGTERM" in summary["error"]
    assert not (run_dir / "model.safetensors").exists()
    proc = run([*cmd, "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["completed"]


# what summary.json holds after a stopped run, in every recipe (fit_and_summarize); no "final":
# fit() raised before returning its metrics
STOPPED_SUMMARY_KEYS = {
    "recipe", "completed", "error", "step", "epoch", "total_steps", "world_size",
    "total_batch", "peak_lr", "parameters", "wall_s", "data",
}  # fmt: skip


@pytest.mark.subprocess
def test_sigint_during_finetune_writes_summary(tmp_path):
    """Ctrl-C during fine-tuning leaves ``summary.json`` with ``completed: false`` and the
    error, in the schema distillation and pre-training write (plus fine-tuning's facts)."""
    run_dir = tmp_path / "ft"
    cmd = [
        sys.executable, "-m", "maskagain", "finetune",
        "--config", str(ROOT / "configs/tiny/finetune.yaml"), "--out", str(run_dir),
        "data.synthetic_train_clips=64", "schedule.epochs=1", "val.every_epochs=0",
        "val.final_test=false", "engine.ckpt_every_steps=0",
    ]  # fmt: skip
    proc = start(cmd)
    wait_until(proc, lambda: max(logged_steps(run_dir), default=0) >= 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    step = logged_steps(run_dir)[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert STOPPED_SUMMARY_KEYS <= summary.keys(), STOPPED_SUMMARY_KEYS - summary.keys()
    assert summary["recipe"] == "finetune" and summary["completed"] is False
    assert summary["step"] == step < summary["total_steps"] == 16
    assert summary["error"].startswith(f"interrupted by SIGINT at step {step} ")
    assert summary["total_batch"] == 4 * 2, "4 videos x 2 repeated clips, as when completed"
    assert summary["num_classes"] == 4 and summary["init"] == "scratch"
    assert summary["data"]["bad_files"] == 0
    assert not (run_dir / "model.safetensors").exists()
