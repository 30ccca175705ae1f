"""``maskagain distill`` end to end through the CLI entry point: run directory, finite moving
losses, what is checkpointed and exported, and exact resumption."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from maskagain.cli.main import main
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.models import load_encoder
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model

CONFIG = "configs/tiny/distill.yaml"
TERMS = ("global", "local", "hint", "relation", "loss")


@pytest.fixture
def teacher_path(tmp_path):
    """A tiny random 'pre-trained' teacher, wider than the student (projections get built)."""
    torch.manual_seed(7)
    model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    return str(save_encoder(model, tmp_path / "teacher" / "teacher.safetensors"))


def distill(run_dir, teacher, *extra) -> int:
    return main(
        ["distill", "--config", CONFIG, "--out", str(run_dir), f"teacher.source={teacher}", *extra]
    )


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_distill_cli_end_to_end(tmp_path, teacher_path):
    run_dir = tmp_path / "run"
    assert distill(run_dir, teacher_path) == 0
    for name in ("config.yaml", "log.jsonl", "train.log", "summary.json", "student.safetensors"):
        assert (run_dir / name).is_file(), name
    records = read_log(run_dir)
    assert len(records) == 8
    for term in TERMS:
        values = [r[term] for r in records]
        assert all(math.isfinite(v) for v in values), term
    losses = [r["loss"] for r in records]
    assert max(losses) - min(losses) > 1e-3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == 8 and summary["final"]["loss"] == losses[-1]

    ckpt = load_checkpoint(list_checkpoints(run_dir)[-1][1])  # weights_only=True
    keys = set(ckpt["model"])
    assert any(k.startswith("objective.student_proj.") for k in keys)  # projections train and save
    assert all(k.startswith(("student.", "objective.")) for k in keys)  # no teacher, no decoder
    student = load_encoder(run_dir)  # the run directory resolves to student.safetensors
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][f"student.{key}"], rtol=0, atol=0)
    # the frozen teacher is unchanged by training
    before = load_file(teacher_path)
    after = load_encoder(teacher_path).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_distill_resume_matches_uninterrupted_run(tmp_path, teacher_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert distill(full, teacher_path) == 0
    assert distill(cut, teacher_path, "engine.stop_after_steps=3") == 0
    # an attempt that logged past its last checkpoint: the resumed run drops those lines
    with open(cut / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    assert json.loads((cut / "summary.json").read_text())["completed"] is False
    assert not (cut / "student.safetensors").exists()
    assert distill(cut, teacher_path, "--resume", "auto") == 0

    a = load_checkpoint(list_checkpoints(full)[-1][1])
    b = load_checkpoint(list_checkpoints(cut)[-1][1])
    assert a["state"] == b["state"] == {"epoch": 2, "step": 8, "batch_in_epoch": 0}
    assert a["schedule"] == b["schedule"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    # the logged losses after the resume point are the uninterrupted run's
    assert [r["step"] for r in read_log(cut)] == list(range(1, 9))
    tail = [r["loss"] for r in read_log(full)][3:]
    assert [r["loss"] for r in read_log(cut)][3:] == tail


@pytest.mark.slow
def test_teacher_with_another_patch_runs_on_the_student_grid(tmp_path, capsys):
    """A patch-16 teacher under a patch-8 student (as a patch-14 V2-g teacher under a patch-16
    ViT-S): the teacher sees the clip resized to 64 px, the same 4x4 token grid, one mask."""
    torch.manual_seed(3)
    model = create_model("vit_micro", img_size=64, num_frames=4, patch_size=16, depth=2)
    path = save_encoder(model, tmp_path / "t16.safetensors")
    assert distill(tmp_path / "run", path, "engine.stop_after_steps=2") == 0
    losses = [r["loss"] for r in read_log(tmp_path / "run") if "loss" in r]
    assert losses and all(math.isfinite(x) for x in losses)


def test_teacher_with_another_tubelet_is_refused(tmp_path, capsys):
    model = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8, tubelet_size=4)
    path = save_encoder(model, tmp_path / "t4.safetensors")
    assert distill(tmp_path / "run", path) == 2
    err = capsys.readouterr().err.strip()
    assert "config key 'teacher.source': the teacher's tubelet is 4 frames" in err
    assert "\n" not in err


@pytest.mark.slow
def test_vjepa2_teacher_from_a_transformers_directory(tmp_path):
    """A V-JEPA 2 encoder (3D RoPE, ``VJEPA2Model.save_pretrained``; predictor dropped),
    published at 8 frames of 48 px, distils into the 4 x 32 px student: rotary positions come
    from the student's grid."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VJEPA2Config(
        patch_size=8, crop_size=48, frames_per_clip=8, tubelet_size=2, hidden_size=64,
        num_attention_heads=4, num_hidden_layers=2, pred_hidden_size=32,
        pred_num_attention_heads=2, pred_num_hidden_layers=1, num_pooler_layers=1,
    )  # fmt: skip
    torch.manual_seed(5)
    transformers.VJEPA2Model(config).save_pretrained(tmp_path / "vjepa2")
    run = tmp_path / "run"
    assert distill(run, tmp_path / "vjepa2", "engine.stop_after_steps=2") == 0
    log = read_log(run)
    assert [r["step"] for r in log if "loss" in r] and all(
        math.isfinite(r[t]) for r in log if "loss" in r for t in TERMS
    )


@pytest.mark.slow
def test_non_finite_loss_stops_with_one_line_naming_step_and_term(tmp_path, teacher_path, capsys):
    run_dir = tmp_path / "nan"
    extra = ["optim.lr=1e25", "schedule.warmup_epochs=0", "engine.ckpt_every_steps=1"]
    assert distill(run_dir, teacher_path, "engine.log_every=2", *extra) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("maskagain distill: error: non-finite loss at step 2: term '")
    # the step-1 checkpoint (finite) stays; nothing after the bad step was written
    assert [s for s, _ in list_checkpoints(run_dir)] == [1]
    assert not (run_dir / "student.safetensors").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is False and "non-finite loss at step 2" in summary["error"]
