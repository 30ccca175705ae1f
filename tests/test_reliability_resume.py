"""Kill and resume without loss: a ``distill`` process killed with SIGKILL in the
middle of an epoch, restarted with ``--resume auto``, ends bit-identical to an uninterrupted run
(CPU, one thread, same seed); a SIGKILL while a checkpoint is being written leaves the previous
checkpoint loadable, and resuming from it also ends bit-identical.

The kill during the write uses a test-only hook in the child process (no hook in the library):
``os.replace`` is wrapped so that, for one checkpoint, the child writes a marker and sleeps after
the temporary file is complete and before the rename. The test kills it there.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch
from _reliability import (
    STEPS_PER_EPOCH,
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
from safetensors.torch import load_file

from maskagain.engine.checkpoint import CKPT_DIR, list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return teacher_path(tmp_path_factory)


def resume_and_compare(run_dir, teacher, reference, *extra: str) -> None:
    proc = run(distill_cmd(run_dir, teacher, *extra, "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_training_state(final_checkpoint(run_dir), final_checkpoint(reference))
    a, b = load_file(run_dir / "student.safetensors"), load_file(reference / "student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.subprocess
@pytest.mark.parametrize("extra", [(), ("data.crop=device",)], ids=["crop_worker", "crop_device"])
def test_sigkill_mid_epoch_then_resume_auto_is_bit_identical(
    tmp_path, tmp_path_factory, teacher, extra
):
    """Also with clips cut on the training device (``data.crop=device``, the CUDA default):
    windows and crop boxes come from the seeded items, the crop runs in the step."""
    reference = reference_run(tmp_path_factory, *extra)
    run_dir = tmp_path / "killed"
    proc = start(distill_cmd(run_dir, teacher, *extra))
    # kill once the run is past its step-4 checkpoint, inside the first epoch
    wait_until(proc, lambda: max(logged_steps(run_dir), default=0) >= 5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    steps = [s for s, _ in list_checkpoints(run_dir)]
    latest = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert 4 <= steps[-1] < STEPS_PER_EPOCH, steps  # the kill landed in the middle of epoch 0
    assert latest["state"]["epoch"] == 0 and latest["state"]["batch_in_epoch"] == steps[-1]
    # work after the last checkpoint is lost and redone: the resumed run ends exactly where the
    # uninterrupted one does (same weights, optimizer moments, schedule and export)
    resume_and_compare(run_dir, teacher, reference, *extra)
    assert logged_steps(run_dir)[-1] == TOTAL_STEPS


PAUSING_CHILD = """
import os, pathlib, sys, time
real_replace = os.replace
def replace(src, dst):
    if pathlib.Path(dst).name == sys.argv[1]:
        pathlib.Path(sys.argv[2]).write_text(str(src))
        time.sleep(300)  # killed here: the temporary file is complete, the rename not done
    return real_replace(src, dst)
os.replace = replace  # test-only: maskagain.engine.checkpoint calls os.replace(tmp, final)
from maskagain.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.subprocess
def test_sigkill_during_checkpoint_write_keeps_the_previous_one(tmp_path, teacher, reference):
    run_dir, marker = tmp_path / "killed_writing", tmp_path / "writing"
    cmd = distill_cmd(run_dir, teacher)
    child = [sys.executable, "-c", PAUSING_CHILD, "ckpt_step00000006.pt", str(marker), *cmd[3:]]
    proc = start(child)
    # the marker is created before its text is written: wait for the text
    wait_until(proc, lambda: marker.exists() and bool(marker.read_text()))
    tmp_file = marker.read_text()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # the half-done write is a hidden temporary file, never a ckpt_*.pt
    folder = run_dir / CKPT_DIR
    assert tmp_file.startswith(str(folder / ".ckpt_step00000006.pt."))
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4]
    previous = load_checkpoint(folder / "ckpt_step00000004.pt")  # weights_only, complete
    assert previous["state"] == {"epoch": 0, "step": 4, "batch_in_epoch": 4}
    assert Path(tmp_file).is_file()
    resume_and_compare(run_dir, teacher, reference)
    assert not Path(tmp_file).exists()  # the next checkpoint write cleared the leftover
