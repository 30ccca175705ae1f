"""``maskagain finetune`` / ``evaluate`` end to end through the real CLI entry point: a nano ViT
initialised from a (tiny) distilled student, the synthetic dataset, a few steps on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maskagain.cli.main import main
from maskagain.config import load_config
from maskagain.models import create_model
from maskagain.models.loading import save_encoder
from maskagain.recipes.configs import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one intra-op thread (no thread hand-offs on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for a ``distill`` run directory: ``student.safetensors`` of a nano encoder."""
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("distill")
    student = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8, tubelet_size=2)
    save_encoder(student, d / "student.safetensors", {"recipe": "distill"})
    return d


def _finetune(out: Path, source: Path, *extra: str) -> int:
    return main(
        [
            "finetune",
            "--config",
            str(TINY / "finetune.yaml"),
            "--out",
            str(out),
            f"init.source={source}",
            "engine.tensorboard=true",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, student_dir: Path, one_thread) -> Path:
    out = tmp_path_factory.mktemp("ft") / "run"
    assert _finetune(out, student_dir) == 0
    return out


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_finetune_run_dir_and_loss(run_dir: Path, student_dir: Path) -> None:
    for name in (
        "config.yaml",
        "log.jsonl",
        "summary.json",
        "train.log",
        "model.safetensors",
        "model_ema.safetensors",
        "test/confusion_matrix.csv",
        "test/confusion_matrix.npy",
        "test/confusion_matrix.png",
        "test/per_class_accuracy.csv",
        "test/predictions.csv",
        "test_ema/confusion_matrix.png",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir()), "no TensorBoard events"
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_step*.pt"))
    assert [p.name for p in ckpts] == ["ckpt_step00000004.pt", "ckpt_step00000008.pt"]
    assert not list((run_dir / "checkpoints").glob("*.tmp")), "leftover temporary checkpoint"

    records = _log(run_dir / "log.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert max(losses) - min(losses) > 1e-3, f"loss did not move: {losses}"
    vals = [r for r in records if "val_top1" in r]
    assert len(vals) == 2 and all("ema_val_top1" in r for r in vals)
    lrs = [r["lr"] for r in records if "loss" in r]
    assert lrs[0] < lrs[3] and lrs[-1] < lrs[4], "warm-up then cosine decay"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == 8
    assert summary["init"] == str(student_dir)
    assert summary["num_classes"] == 4
    assert summary["total_batch"] == 4 * 2, "batch of 4 videos x 2 repeated clips"
    assert summary["test"]["num_videos"] == 8 and summary["test"]["num_views"] == 8 * 6
    conf = np.load(run_dir / "test" / "confusion_matrix.npy")
    assert conf.shape == (4, 4) and conf.sum() == 8
    assert conf.trace() / 8 * 100 == pytest.approx(summary["test"]["top1"])

    cfg = load_config(FinetuneConfig, run_dir / "config.yaml")  # the resolved config loads back
    assert cfg.init.source == str(student_dir) and cfg.engine.ema_decay == 0.9
    weights = load_file(run_dir / "model.safetensors")
    assert weights["head.weight"].shape == (4, 64)


@pytest.mark.slow
def test_finetune_resume_auto_matches_uninterrupted(
    tmp_path: Path, run_dir: Path, student_dir: Path, one_thread
) -> None:
    out = tmp_path / "run"
    assert _finetune(out, student_dir, "engine.stop_after_steps=3") == 0
    partial = json.loads((out / "summary.json").read_text())
    assert not partial["completed"] and partial["step"] == 3
    assert not (out / "model.safetensors").exists()
    assert _finetune(out, student_dir, "--resume", "auto") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == 8
    for name in ("model.safetensors", "model_ema.safetensors"):
        resumed = load_file(out / name)
        straight = load_file(run_dir / name)
        for key, value in straight.items():
            assert torch.allclose(resumed[key], value, atol=1e-6), f"{name}: {key}"
    resumed_losses = [r["loss"] for r in _log(out / "log.jsonl") if "loss" in r]
    straight_losses = [r["loss"] for r in _log(run_dir / "log.jsonl") if "loss" in r]
    assert resumed_losses == pytest.approx(straight_losses, abs=1e-6)


def test_finetune_failing_mid_run_writes_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread
) -> None:
    """An error in the third step: ``summary.json`` says where the run stopped and why, as for
    distillation and pre-training, and the error still propagates."""
    from maskagain.recipes.finetune import FinetuneStep

    step_fn, calls = FinetuneStep.__call__, []

    def failing(self, module, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in step 3")
        return step_fn(self, module, batch)

    monkeypatch.setattr(FinetuneStep, "__call__", failing)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom in step 3"):
        main(
            [
                "finetune", "--config", str(TINY / "finetune.yaml"), "--out", str(out),
                "val.every_epochs=0", "val.final_test=false", "engine.ckpt_every_steps=0",
            ]
        )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "finetune" and summary["completed"] is False
    assert summary["step"] == 2 and summary["total_steps"] == 8
    assert summary["error"] == "boom in step 3"
    assert summary["total_batch"] == 4 * 2 and summary["init"] == "scratch"
    assert summary["data"]["bad_files"] == 0 and "final" not in summary
    assert not (out / "model.safetensors").exists()


def test_finetune_failing_final_test_writes_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread
) -> None:
    """Training finished but the final test failed: summary.json is not left saying
    ``completed: true`` with no test results; it names the error (a rerun with ``--resume
    auto`` starts from the last checkpoint and only redoes the export and test)."""
    import maskagain.recipes.finetune as finetune_mod

    def failing(*args, **kwargs):
        raise RuntimeError("test views broke")

    monkeypatch.setattr(finetune_mod, "run_test", failing)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="test views broke"):
        main(
            [
                "finetune", "--config", str(TINY / "finetune.yaml"), "--out", str(out),
                "val.every_epochs=0", "engine.ckpt_every_steps=0",
            ]
        )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] is False and summary["step"] == summary["total_steps"] == 8
    assert summary["error"] == "after training: test views broke"
    assert (out / "model.safetensors").exists()  # the export before the test was kept


@pytest.mark.slow
def test_evaluate_reproduces_the_final_test(tmp_path: Path, run_dir: Path, one_thread) -> None:
    ft = json.loads((run_dir / "summary.json").read_text())
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["views"] == "2x3" and summary["num_views"] == 48
    assert summary["top1"] == pytest.approx(ft["test"]["top1"])
    assert summary["top5"] == pytest.approx(ft["test"]["top5"])
    for name in (
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "per_class_accuracy.csv",
        "predictions.csv",
        "log.jsonl",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    assert np.array_equal(
        np.load(out / "confusion_matrix.npy"), np.load(run_dir / "test" / "confusion_matrix.npy")
    )
    # the same weights as an official VideoMAE fine-tuning .pth (heads given as an override)
    pth = tmp_path / "videomae_finetuned.pth"
    torch.save({"module": load_file(run_dir / "model.safetensors")}, pth)
    out_pth = tmp_path / "eval_pth"
    args = ["evaluate", "--checkpoint", str(pth), "--out", str(out_pth), "overrides.num_heads=2"]
    assert main([*args, "--config", str(TINY / "evaluate.yaml")]) == 0
    from_pth = json.loads((out_pth / "summary.json").read_text())
    assert from_pth["top1"] == pytest.approx(ft["test"]["top1"])
    # the EMA weights, from a training checkpoint file
    ckpt = run_dir / "checkpoints" / "ckpt_step00000008.pt"
    out_ema = tmp_path / "eval_ema"
    assert (
        main(
            [
                "evaluate",
                "--config",
                str(TINY / "evaluate.yaml"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out_ema),
                "use_ema=true",
            ]
        )
        == 0
    )
    ema = json.loads((out_ema / "summary.json").read_text())
    assert ema["top1"] == pytest.approx(ft["test_ema"]["top1"])


def test_evaluate_rejects_an_encoder_without_head(
    tmp_path: Path, student_dir: Path, capsys
) -> None:
    code = main(
        [
            "evaluate",
            "--config",
            str(TINY / "evaluate.yaml"),
            "--checkpoint",
            str(student_dir),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 1
    assert "without a classification head" in capsys.readouterr().err


@pytest.mark.torchrun
def test_evaluate_under_torchrun_counts_each_view_once(
    tmp_path: Path, run_dir: Path, one_thread
) -> None:
    """2 gloo processes over 7 videos x 3 views = 21 views: the sampler pads one view, which
    must not be counted twice; the result equals the single-process one."""
    args = [
        "evaluate", "--config", str(TINY / "evaluate.yaml"), "--checkpoint", str(run_dir),
        "data.synthetic_val_clips=7", "data.test_clips=3", "data.test_crops=1", "batch_size=4",
    ]  # fmt: skip
    single = tmp_path / "single"
    assert main([*args, "--out", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "maskagain.cli.main", *args, "--out", str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    ref = json.loads((single / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["num_views"] == ref["num_views"] == 21
    assert ddp["num_videos"] == 7
    assert ddp["top1"] == pytest.approx(ref["top1"]) and ddp["top5"] == pytest.approx(ref["top5"])
    scores_ddp = np.load(tmp_path / "ddp" / "scores.npy")
    assert np.allclose(scores_ddp, np.load(single / "scores.npy"), atol=1e-5)


@pytest.mark.torchrun
def test_finetune_under_torchrun(tmp_path: Path, student_dir: Path) -> None:
    """2 gloo processes: DDP training, per-epoch validation and the final test gathered once."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "maskagain.cli.main", "finetune", "--config", str(TINY / "finetune.yaml"),
           "--out", str(out), f"init.source={student_dir}", "data.synthetic_train_clips=8"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["world_size"] == 2
    assert (
        summary["total_batch"] == 4 * 2 * 2 and summary["step"] == 2
    )  # 8 videos / 8 per step, 2 epochs
    assert summary["test"]["num_videos"] == 8 and summary["test"]["num_views"] == 48
    losses = [r["loss"] for r in _log(out / "log.jsonl") if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert (out / "model.safetensors").is_file() and (
        out / "test" / "confusion_matrix.png"
    ).is_file()
