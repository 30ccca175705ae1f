"""Feeding the device: uint8 clips normalised on the device, repeated sampling counted as clips
(lr scaling, logs, summary), exact resume with repeated sampling, data-bound runs reported."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from maskagain.config import load_config
from maskagain.data import DataConfig, build_dataset
from maskagain.data.transforms import normalize_video
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model
from maskagain.recipes import RECIPES

CONFIG = "configs/tiny/distill.yaml"


def synthetic(**kw) -> DataConfig:
    base = dict(
        kind="synthetic", num_frames=4, sampling_rate=1, input_size=32, short_side=40,
        synthetic_size=48, synthetic_frames=8, synthetic_classes=4, synthetic_train_clips=8,
    )  # fmt: skip
    return DataConfig(**{**base, **kw})


@pytest.mark.parametrize("num_sample", [1, 3])
def test_uint8_clips_normalised_on_the_device_equal_worker_normalisation(num_sample):
    cfg = synthetic(num_sample=num_sample)
    worker = build_dataset(cfg, "train", "pretrain")
    deferred = build_dataset(cfg, "train", "pretrain")
    mean, std = deferred.defer_normalize()
    for i in range(3):
        torch.manual_seed(i)  # the random crop of one item
        a = worker[i]["video"]
        torch.manual_seed(i)
        b = deferred[i]["video"]
        assert b.dtype == torch.uint8 and a.dtype == torch.float32
        b = b if b.dim() == 5 else b.unsqueeze(0)
        a = a if a.dim() == 5 else a.unsqueeze(0)
        assert torch.equal(normalize_video(b, mean, std), a)  # bit for bit


def test_transforms_with_random_erasing_keep_worker_normalisation():
    cfg = synthetic(random_erase=0.25)
    with pytest.raises(ValueError, match="random erasing"):
        build_dataset(cfg, "train", "finetune").defer_normalize()


@pytest.fixture
def teacher_path(tmp_path):
    torch.manual_seed(7)
    model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    return str(save_encoder(model, tmp_path / "teacher" / "teacher.safetensors"))


def distill(run_dir, teacher, *overrides, resume: str | None = None) -> dict:
    recipe = RECIPES["distill"]
    keys = [f"out_dir={run_dir}", f"teacher.source={teacher}", *overrides]
    return recipe.run(load_config(recipe.config, CONFIG, keys), resume)


def losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_device_normalisation_trains_exactly_as_worker_normalisation(tmp_path, teacher_path):
    distill(tmp_path / "worker", teacher_path, "data.normalize=worker")
    distill(tmp_path / "device", teacher_path, "data.normalize=device")
    assert losses(tmp_path / "worker") == losses(tmp_path / "device")


def test_repeated_sampling_counts_clips_and_resumes_exactly(tmp_path, teacher_path):
    extra = ["data.num_sample=2", "optim.lr=null", "optim.base_lr=0.256"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    summary = distill(full, teacher_path, *extra)
    assert summary["total_batch"] == 4 * 2  # 4 videos x 2 clips per step
    assert summary["peak_lr"] == pytest.approx(0.256 * 8 / 256)  # the lr rule counts clips
    rows = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["data_wait"] <= 1.0 for r in rows if "loss" in r)

    assert not distill(cut, teacher_path, *extra, "engine.stop_after_steps=3")["completed"]
    assert distill(cut, teacher_path, *extra, resume="auto")["completed"]
    a = load_checkpoint(list_checkpoints(full)[-1][1])
    b = load_checkpoint(list_checkpoints(cut)[-1][1])
    assert a["state"] == b["state"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert losses(cut) == losses(full)


def test_a_data_bound_interval_is_logged_once_an_epoch_with_the_levers(caplog):
    from maskagain.engine.trainer import Trainer

    trainer = Trainer.__new__(Trainer)  # only the bookkeeping of the data-wait share
    trainer._data_wait, trainer._warned_data_bound = 0.0, -1
    trainer.state = type("S", (), {"epoch": 0})()
    with caplog.at_level(logging.WARNING, logger="maskagain.engine.trainer"):
        trainer._data_wait = 0.2
        assert trainer._data_wait_share(1.0) == pytest.approx(0.2)
        assert not caplog.records  # compute-bound: quiet
        trainer._data_wait = 0.9
        assert trainer._data_wait_share(1.0) == pytest.approx(0.9)
        trainer._data_wait = 0.8
        trainer._data_wait_share(1.0)  # same epoch: not repeated
        trainer.state.epoch = 1
        trainer._data_wait = 0.7
        trainer._data_wait_share(1.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "90% of the time went to waiting for batches" in lines[0]
    assert all("data.num_workers" in m and "maskagain prepare" in m for m in lines)
