"""Feeding the device: uint8 clips normalised on the device, repeated sampling counted as clips
(lr scaling, logs, summary), exact resume with repeated sampling, data-bound runs reported."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from maskagain.config import ConfigError, load_config
from maskagain.data import DataConfig, MaskCollator, build_dataset
from maskagain.data.transforms import crop_on_device, normalize_video
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.engine.feed import DeviceTransform, work_on_device
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
    deferred = build_dataset(cfg, "train", "pretrain", on_device="normalize")
    device_transform = DeviceTransform.of(cfg, deferred.on_device)
    for i in range(3):
        torch.manual_seed(i)  # the random crop of one item
        a = worker[i]["video"]
        torch.manual_seed(i)
        b = deferred[i]["video"]
        assert b.dtype == torch.uint8 and a.dtype == torch.float32
        b = b if b.dim() == 5 else b.unsqueeze(0)
        a = a if a.dim() == 5 else a.unsqueeze(0)
        assert torch.equal(device_transform({"video": b})["video"], a)  # bit for bit


def test_where_the_crop_and_normalisation_run_is_decided_once_from_the_config_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert work_on_device(synthetic(), cpu) is None  # auto: the workers, off CUDA
    assert work_on_device(synthetic(), cuda) == "crop"
    assert work_on_device(synthetic(crop="worker"), cuda) == "normalize"
    assert work_on_device(synthetic(crop="worker", normalize="worker"), cuda) is None
    assert work_on_device(synthetic(crop="device"), cpu) == "crop"
    assert work_on_device(synthetic(crop="worker", normalize="device"), cpu) == "normalize"
    assert DeviceTransform.of(synthetic(), None) is None  # nothing left: no step at all
    dataset = build_dataset(synthetic(), "train", "pretrain", on_device="crop")
    assert dataset.on_device == "crop" and DeviceTransform.of(dataset.cfg, "crop").size == 32


@pytest.mark.parametrize("num_sample,repeat", [(1, "same_window"), (3, "same_window"),
                                               (3, "new_window")])  # fmt: skip
def test_clips_cut_on_the_device_match_the_workers_crops(num_sample, repeat):
    cfg = synthetic(num_sample=num_sample, repeat=repeat)
    # uint8 clips: compare before normalising, in grey levels
    worker = build_dataset(cfg, "train", "pretrain", on_device="normalize")
    deferred = build_dataset(cfg, "train", "pretrain", on_device="crop")
    mean, std = cfg.mean, cfg.std
    collate = MaskCollator()
    for i in range(3):
        torch.manual_seed(i)  # the same draws: sampling, then one box per clip
        a = collate([worker[i]])["video"]  # (S, C, T, 32, 32) uint8
        torch.manual_seed(i)
        item = deferred[i]
        windows = 1 if repeat == "same_window" or num_sample == 1 else None
        assert item["video"].dtype == torch.uint8 and item["video"].shape[-1] == 3
        assert item["video"].shape[2:4] == (40, 40)  # decoded at the short side, uncropped
        if windows is not None:  # one window travels once for all its clips
            assert len(item["video"]) == 1 and item["window"] == [0] * num_sample
        assert len(item["boxes"]) == num_sample
        batch = collate([item])
        assert batch["label"].shape == (num_sample,) and len(batch["source"]) == num_sample
        b = crop_on_device(batch["video"], batch["boxes"], batch["source"], 32, (0,) * 3, (1,) * 3)
        assert b.shape == a.shape and b.dtype == torch.float32
        # the workers resize in fixed point and round to grey levels; the device does neither
        diff = (b * 255 - a.float()).abs()
        assert diff.max() <= 1.01 and diff.mean() <= 0.3
        finished = DeviceTransform("crop", mean, std, 32)(batch)
        assert "boxes" not in finished and "source" not in finished
        normed = finished["video"]
        torch.testing.assert_close(normed, normalize_video(a, mean, std), atol=1.01 / 255 / 0.2,
                                   rtol=0)  # fmt: skip


def test_windows_of_different_sizes_are_padded_and_cropped_where_they_are():
    torch.manual_seed(0)
    small = torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8)
    large = torch.randint(0, 256, (4, 36, 48, 3), dtype=torch.uint8)
    items = [
        {"video": small[None], "boxes": [(2, 5, 24, 30)], "window": [0], "label": 0, "index": 0},
        {"video": large[None], "boxes": [(6, 10, 30, 30), (0, 0, 36, 36)], "window": [0, 0],
         "label": 1, "index": 1},
    ]  # fmt: skip
    batch = MaskCollator("tube", 0.5, (2, 4, 4))(items)
    assert batch["video"].shape == (2, 4, 36, 48, 3)
    assert batch["source"] == [0, 1, 1] and batch["mask"].shape == (3, 32)
    assert batch["label"].tolist() == [0, 1, 1]
    assert not batch["mask"][1].equal(batch["mask"][2])  # each clip its own mask
    got = crop_on_device(batch["video"], batch["boxes"], batch["source"], 16, (0,) * 3, (1,) * 3)
    for k, (frames, (t, x, h, w)) in enumerate(
        [(small, (2, 5, 24, 30)), (large, (6, 10, 30, 30)), (large, (0, 0, 36, 36))]
    ):
        crop = frames[:, t : t + h, x : x + w].permute(0, 3, 1, 2).float()
        want = (
            torch.nn.functional.interpolate(
                crop, size=(16, 16), mode="bilinear", antialias=True, align_corners=False
            ).transpose(0, 1)
            / 255
        )
        torch.testing.assert_close(got[k], want)


def test_cropping_on_the_device_needs_normalising_there_and_a_multiscale_crop():
    with pytest.raises(ConfigError, match="data.crop"):
        synthetic(crop="device", normalize="worker").validate()
    with pytest.raises(ValueError, match="data.crop=worker"):
        build_dataset(synthetic(), "train", "finetune", on_device="crop")


@pytest.mark.slow
def test_cropping_on_the_device_trains_like_the_workers_and_resumes_exactly(tmp_path, teacher_path):
    extra = ["data.num_sample=2", "data.crop=device"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert distill(full, teacher_path, *extra)["completed"]
    distill(tmp_path / "worker", teacher_path, "data.num_sample=2", "data.normalize=device")
    # the same clips up to the workers' rounding to grey levels
    torch.testing.assert_close(losses(full), losses(tmp_path / "worker"), rtol=0.02, atol=0)
    assert not distill(cut, teacher_path, *extra, "engine.stop_after_steps=3")["completed"]
    assert distill(cut, teacher_path, *extra, resume="auto")["completed"]
    assert losses(cut) == losses(full)


def test_transforms_with_random_erasing_keep_worker_normalisation():
    cfg = synthetic(random_erase=0.25)
    with pytest.raises(ValueError, match="random erasing"):
        build_dataset(cfg, "train", "finetune", on_device="normalize")


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


@pytest.mark.slow
def test_device_normalisation_trains_exactly_as_worker_normalisation(tmp_path, teacher_path):
    distill(tmp_path / "worker", teacher_path, "data.normalize=worker")
    distill(tmp_path / "device", teacher_path, "data.normalize=device")
    assert losses(tmp_path / "worker") == losses(tmp_path / "device")


@pytest.mark.slow
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


def test_a_data_bound_interval_is_logged_once_a_run_with_the_levers_left(caplog):
    from maskagain.engine.trainer import Trainer

    trainer = Trainer.__new__(Trainer)  # only the bookkeeping of the data-wait share
    trainer._data_wait, trainer._warned_data_bound, trainer._started = 0.0, -1, False
    trainer.state = type("S", (), {"epoch": 0})()
    files = type("D", (), {"records": []})()  # clips decoded from video files
    trainer.loader = type("L", (), {"num_workers": 0, "dataset": files})()
    with caplog.at_level(logging.WARNING, logger="maskagain.engine.trainer"):
        trainer._data_wait = 0.95
        trainer._data_wait_share(1.0)  # the first interval holds the workers' start: quiet
        trainer._data_wait = 0.2
        assert trainer._data_wait_share(1.0) == pytest.approx(0.2)
        assert not caplog.records  # compute-bound: quiet
        trainer._data_wait = 0.9
        assert trainer._data_wait_share(1.0) == pytest.approx(0.9)
        trainer.state.epoch = 1
        trainer._data_wait = 0.7
        trainer._data_wait_share(1.0)  # once a run
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "90% of the time went to waiting for batches" in lines[0]
    assert "raise data.num_workers (now 0," in lines[0] and "maskagain prepare" in lines[0]
    trainer._warned_data_bound = -1
    generated = type("D", (), {})()  # generated clips (the synthetic set): no files to re-encode
    trainer.loader = type("L", (), {"num_workers": 64, "dataset": generated})()  # every core reads
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="maskagain.engine.trainer"):
        trainer._data_wait = 0.9
        trainer._data_wait_share(1.0)
    assert "data.num_workers" not in caplog.text and "data.num_sample" in caplog.text
    assert "maskagain prepare" not in caplog.text
