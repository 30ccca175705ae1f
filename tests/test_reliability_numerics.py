"""Numerical faults: a non-finite loss stops the run with one line naming the step and
the loss term, nothing computed after the bad step is checkpointed or exported, and the last good
checkpoint stays loadable and resumable. (``tests/test_cli_distill.py`` checks the same for a
run diverging under a huge learning rate; ``tests/test_engine.py`` the engine's log window.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
from _reliability import CONFIG, teacher_path

import maskagain.recipes.distill as distill_mod
from maskagain.cli.main import main
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model


def distill(run_dir, teacher, *extra) -> int:
    args = ["distill", "--config", CONFIG, "--out", str(run_dir), f"teacher.source={teacher}"]
    return main([*args, "schedule.epochs=1", *extra])


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.slow
def test_nan_mid_run_keeps_a_loadable_resumable_checkpoint(
    tmp_path, tmp_path_factory, capsys, monkeypatch
):
    """A transient fault (the MALocal term is NaN in the third step, injected in-process around
    the recipe's step function) stops the run; the step-2 checkpoint is intact and resuming
    from it finishes the run."""
    teacher = teacher_path(tmp_path_factory)
    run_dir = tmp_path / "run"
    real_step, calls = distill_mod.make_distill_step, []

    def faulty_step(*teachers):
        step = real_step(*teachers)

        def run_step(module, batch):
            out = step(module, batch)
            calls.append(1)
            if len(calls) == 3:
                nan = torch.tensor(float("nan"))
                out = {**out, "local": out["local"] * nan, "loss": out["loss"] * nan}
            return out

        return run_step

    monkeypatch.setattr(distill_mod, "make_distill_step", faulty_step)
    assert distill(run_dir, teacher, "engine.ckpt_every_steps=2") == 1
    line = last_error(capsys)
    assert line.startswith("maskagain distill: error: non-finite loss at step 3: term 'local'")
    assert str(run_dir / "checkpoints") in line
    ((step, path),) = list_checkpoints(run_dir)  # step 2; nothing from step 3 on
    assert step == 2
    good = load_checkpoint(path)  # weights_only, complete, finite
    assert good["state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is False and "non-finite loss at step 3" in summary["error"]
    assert not (run_dir / "student.safetensors").exists()

    monkeypatch.setattr(distill_mod, "make_distill_step", real_step)  # the fault is gone
    assert distill(run_dir, teacher, "engine.ckpt_every_steps=2", "--resume", "auto") == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == 4
    assert math.isfinite(summary["final"]["loss"])
    assert (run_dir / "student.safetensors").is_file()


@pytest.mark.slow
def test_nan_teacher_stops_at_step_one_before_any_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight[0, 0] = float("nan")
    teacher = save_encoder(model, tmp_path / "nan_teacher.safetensors")
    run_dir = tmp_path / "run"
    assert distill(run_dir, teacher, "engine.ckpt_every_steps=1") == 1
    line = last_error(capsys)
    assert line.startswith("maskagain distill: error: non-finite loss at step 1: term '")
    term = line.split("term '")[1].split("'")[0]
    assert term in ("global", "local", "hint", "relation", "loss")
    assert not list_checkpoints(run_dir)  # nothing after (or at) the bad step was saved
    assert not (run_dir / "student.safetensors").exists()
