"""Unsafe checkpoints through the CLI: a pickle that would run code on load is refused
without running anything, whether it comes in as ``--resume PATH``, as the newest checkpoint that
``--resume auto`` picks, or as ``teacher.source``; truncated or foreign checkpoints give one clear
line. (The loader itself is covered file format by file format in ``tests/test_loading.py``.)"""

from __future__ import annotations

import os

import pytest
import torch
from _reliability import CONFIG, teacher_path

from maskagain.cli.main import main
from maskagain.engine.checkpoint import checkpoint_path, list_checkpoints


class Payload:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def distill(run_dir, teacher, *extra) -> int:
    args = ["distill", "--config", CONFIG, "--out", str(run_dir), f"teacher.source={teacher}"]
    return main([*args, "schedule.epochs=1", "engine.max_steps_per_epoch=2", *extra])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]
    assert line.startswith("maskagain distill: error: "), err[-2000:]
    return line


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return teacher_path(tmp_path_factory)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, teacher):
    """A finished 2-step run: a real training checkpoint to corrupt."""
    run_dir = tmp_path_factory.mktemp("good") / "run"
    assert distill(run_dir, teacher) == 0
    return run_dir


@pytest.mark.slow
def test_code_running_pickle_is_refused_as_resume_path_and_as_auto(tmp_path, teacher, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "maskagain-train-v1", "model": Payload(marker)}, evil)

    assert distill(tmp_path / "a", teacher, "--resume", str(evil)) == 1
    line = error_line(capsys)
    assert "refused to load" in line and "could run code on load" in line
    assert "weights_only=False" in line  # how to convert a file one trusts
    assert not marker.exists()

    # the same bytes planted as the newest checkpoint of a run directory
    run_dir = tmp_path / "b"
    planted = checkpoint_path(run_dir, 99)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(evil.read_bytes())
    assert distill(run_dir, teacher, "--resume", "auto") == 1
    line = error_line(capsys)
    assert "refused to load" in line and str(planted) in line
    assert not marker.exists()


def test_code_running_pickle_is_refused_as_teacher(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "teacher.pth"
    torch.save({"model": Payload(marker)}, evil)
    assert distill(tmp_path / "run", evil) == 1
    line = error_line(capsys)
    assert "refused to load" in line and "could run code on load" in line
    assert not marker.exists()
    assert not list_checkpoints(tmp_path / "run")


@pytest.mark.slow
def test_truncated_resume_checkpoint_is_a_clear_error(tmp_path, teacher, good_run, capsys):
    ckpt = list_checkpoints(good_run)[-1][1]
    run_dir = tmp_path / "run"
    cut = checkpoint_path(run_dir, 5)
    cut.parent.mkdir(parents=True)
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert distill(run_dir, teacher, "--resume", "auto") == 1
    line = error_line(capsys)
    assert f"cannot read {cut}" in line and "truncated" in line

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert distill(tmp_path / "run2", teacher, "--resume", str(empty)) == 1
    assert "0 bytes" in error_line(capsys)


@pytest.mark.slow
def test_foreign_or_mismatched_resume_checkpoint_is_a_clear_error(
    tmp_path, teacher, good_run, capsys
):
    weights = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, weights)
    assert distill(tmp_path / "a", teacher, "--resume", str(weights)) == 1
    assert "is not a maskagain training checkpoint" in error_line(capsys)

    ckpt = list_checkpoints(good_run)[-1][1]  # a vit_nano student's checkpoint
    assert distill(tmp_path / "b", teacher, "student.depth=3", "--resume", str(ckpt)) == 1
    assert "does not match this run's model" in error_line(capsys)

    assert distill(tmp_path / "c", teacher, "--resume", str(tmp_path / "nope.pt")) == 1
    assert "does not exist" in error_line(capsys)
