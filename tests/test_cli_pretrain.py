"""``maskagain pretrain`` end to end on the tiny synthetic config, through the CLI entry point."""

from __future__ import annotations

import json
import math

import pytest
import torch

from maskagain.cli.main import main
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.models import load_encoder
from maskagain.models.pretrain import VideoMAEPretrain, patchify, pixel_targets
from maskagain.models.registry import create_model

CONFIG = "configs/tiny/pretrain.yaml"


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pretrain_cli_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "pre"
    visible = ["engine.tensorboard=true", "engine.progress=true"]
    assert main(["pretrain", "--config", CONFIG, "--out", str(run_dir), *visible]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["completed"] is True
    for name in ("config.yaml", "log.jsonl", "train.log", "summary.json", "teacher.safetensors"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    records = read_log(run_dir)
    losses = [r["loss"] for r in records]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert max(losses) - min(losses) > 1e-3  # the loss moves
    assert all(r["lr"] >= 0 and r["clips_per_s"] > 0 for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == summary["total_steps"] == 8 and summary["epoch"] == 2
    assert summary["data"]["bad_files"] == 0
    # the exported teacher is the trained encoder, readable by the foundation loader
    ckpt = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    teacher = load_encoder(run_dir / "teacher.safetensors")
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][f"encoder.{key}"], rtol=0, atol=0)
    assert {"encoder_to_decoder.weight", "mask_token", "decoder.head.weight"} <= set(ckpt["model"])


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_steps(tmp_path):
    args = ["pretrain", "--config", CONFIG, "engine.stop_after_steps=2"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "ckpt"), "engine.grad_checkpointing=true"]) == 0
    plain, ckpt = read_log(tmp_path / "plain"), read_log(tmp_path / "ckpt")
    assert [r["loss"] for r in plain] == pytest.approx([r["loss"] for r in ckpt], rel=1e-5)
    a = load_checkpoint(list_checkpoints(tmp_path / "plain")[-1][1])["model"]
    b = load_checkpoint(list_checkpoints(tmp_path / "ckpt")[-1][1])["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


def test_pixel_targets_match_videomae_layout():
    video = torch.randn(2, 3, 4, 16, 16)
    patches = patchify(video, 8, 2)  # (B, N, 2*8*8, C)
    assert patches.shape == (2, 2 * 2 * 2, 128, 3)
    # token 1 = frame-pair 0, row 0, column 1; its first pixel is video[:, :, 0, 0, 8]
    torch.testing.assert_close(patches[:, 1, 0, :], video[:, :, 0, 0, 8])
    # pixel index (t, y, x) = (1, 2, 3) sits at t*64 + y*8 + x
    torch.testing.assert_close(patches[:, 0, 64 + 16 + 3, :], video[:, :, 1, 2, 3])
    target = pixel_targets(video, 8, 2).reshape(2, 8, 128, 3)
    torch.testing.assert_close(target.mean(2), torch.zeros(2, 8, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(2), torch.ones(2, 8, 3), atol=1e-4, rtol=0)


def test_pretrain_model_predicts_hidden_tokens_only():
    encoder = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8)
    model = VideoMAEPretrain(encoder, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, ::4] = True
    pred = model.predict(video, mask)
    assert pred.shape == (2, 8, 3 * 2 * 8 * 8)
    loss = model(video, mask)["loss"]
    loss.backward()
    assert (
        model.mask_token.grad is not None
        and model.encoder.blocks[0].attn.qkv.weight.grad is not None
    )
