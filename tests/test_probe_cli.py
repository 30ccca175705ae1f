"""``maskagain probe`` end to end through the real CLI entry point on a nano encoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from maskagain.cli.main import main
from maskagain.models import create_model
from maskagain.models.loading import save_encoder

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def test_probe_cli_run_dir_and_loss(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8)
        save_encoder(encoder, tmp_path / "distill" / "student.safetensors")
        out = tmp_path / "probe"
        args = [
            "probe",
            "--config",
            str(TINY / "probe.yaml"),
            "--encoder",
            str(tmp_path / "distill"),
        ]
        code = main([*args, "--out", str(out), "probe.epochs=10"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    for name in ("config.yaml", "log.jsonl", "summary.json", "probe.pt", "train.log"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train"] == 64 and summary["num_val"] == 32
    assert summary["feature_dim"] == 64 and summary["num_classes"] == 4
    assert 0 <= summary["val_top1"] <= 100 and 0 <= summary["train_top1"] <= 100
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 10 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], f"probe loss did not fall: {losses}"
    state = torch.load(out / "probe.pt", weights_only=True)
    assert state["probe"]["linear.weight"].shape == (4, 64)


@pytest.mark.slow
def test_probe_cli_per_time_step_pooling(tmp_path: Path) -> None:
    encoder = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8)
    save_encoder(encoder, tmp_path / "student.safetensors")
    out = tmp_path / "probe"
    args = ["probe", "--config", str(TINY / "probe.yaml"), "--encoder"]
    args += [str(tmp_path / "student.safetensors"), "--out", str(out)]
    assert main([*args, "probe.epochs=2", "probe.pooling=time"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = 4 // encoder.cfg.tubelet_size
    assert summary["pooling"] == "time" and summary["feature_dim"] == steps * 64
