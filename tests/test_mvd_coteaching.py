"""MVD co-teaching through ``maskagain distill``: the video teacher and an MAE image teacher (a
Hugging Face ViTMAE directory), an ``image`` term in the logs, exact resumption, what the image
teacher sees, and the config checks that keep it from being loaded for nothing or missing."""

from __future__ import annotations

import json

import pytest
import torch
from _weights import mae_image_teacher

from maskagain.cli.main import main
from maskagain.config import ConfigError, load_config
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.losses.mvd import image_teacher_frames
from maskagain.models.image_vit import ImageViT, load_image_encoder
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model
from maskagain.models.vit import ModelConfig, VideoViT
from maskagain.recipes.configs import DistillConfig
from maskagain.recipes.distill import FrozenImageTeacher

transformers = pytest.importorskip("transformers")

MVD = "configs/tiny/distill_mvd.yaml"
IMAGE_WIDTH = 96


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(7)
    video = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    return str(save_encoder(video, root / "video.safetensors")), mae_image_teacher(
        root / "mae", IMAGE_WIDTH
    )


def coteach(run_dir, teachers, *extra) -> int:
    video, image = teachers
    args = [
        "distill", "--config", MVD, "--out", str(run_dir), f"teacher.source={video}",
        "mvd.image_weight=1", f"image_teacher.source={image}", "image_teacher.precision=fp32",
        *extra,
    ]  # fmt: skip
    return main(args)


def read_log(run_dir) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.slow
def test_coteaching_logs_both_terms_and_resumes_bit_exactly(tmp_path, teachers):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert coteach(full, teachers) == 0
    assert coteach(cut, teachers, "engine.stop_after_steps=3") == 0
    assert coteach(cut, teachers, "--resume", "auto") == 0
    log_full, log_cut = read_log(full), read_log(cut)
    assert all({"video", "image", "loss"} <= set(r) for r in log_full)
    for r in log_full:  # both weights are 1
        assert r["loss"] == pytest.approx(r["video"] + r["image"], rel=1e-5)
    assert [r["loss"] for r in log_cut] == [r["loss"] for r in log_full]
    a = load_checkpoint(list_checkpoints(full)[-1][1])
    b = load_checkpoint(list_checkpoints(cut)[-1][1])
    assert any(k.startswith("objective.branches.image.") for k in a["model"])
    assert not any("cls_token" in k for k in a["model"])  # the frozen image teacher is not saved
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["completed"] and summary["image_teacher"] == teachers[1]


@pytest.mark.slow
def test_image_teacher_sees_the_first_frame_of_every_tubelet(tmp_path, teachers, monkeypatch):
    """The image teacher runs frozen, in inference mode, on frames 0 and 2 of the 4-frame clip
    the video teacher sees whole."""
    videos, images = [], []
    real_video, real_image = VideoViT.forward_features, ImageViT.forward

    def video_spy(self, video, mask=None, attn_layers=(), **kwargs):
        if mask is None:
            videos.append(video.clone())
        return real_video(self, video, mask, attn_layers, **kwargs)

    def image_spy(self, frames):
        images.append((frames.clone(), torch.is_inference_mode_enabled()))
        return real_image(self, frames)

    monkeypatch.setattr(VideoViT, "forward_features", video_spy)
    monkeypatch.setattr(ImageViT, "forward", image_spy)
    assert coteach(tmp_path / "run", teachers, "engine.stop_after_steps=2") == 0
    assert len(videos) == len(images) == 2
    for video, (frames, inference) in zip(videos, images):
        assert inference
        assert frames.shape == (video.shape[0] * 2, 3, 32, 32)
        torch.testing.assert_close(frames, image_teacher_frames(video, 2), rtol=0, atol=0)


def test_an_image_teacher_with_another_patch_sees_resized_frames(tmp_path):
    """Patch 4 on the student's 4x4 grid of 8px patches: frames are resized to 16px so the
    teacher's tokens line up with the student's."""
    teacher = load_image_encoder(mae_image_teacher(tmp_path / "p4", IMAGE_WIDTH, patch=4))
    student = ModelConfig(img_size=32, num_frames=4, patch_size=8, tubelet_size=2)
    frozen = FrozenImageTeacher(teacher, student, "fp32")
    tokens = frozen({"video": torch.randn(2, 3, 4, 32, 32)})
    assert tokens.shape == (2, 2 * 4 * 4, IMAGE_WIDTH)


def test_image_teacher_config_checks(teachers):
    video, image = teachers
    base = [f"teacher.source={video}"]
    with pytest.raises(ConfigError, match="'image_teacher.source' is empty"):
        load_config(DistillConfig, MVD, [*base, "mvd.image_weight=1"])
    with pytest.raises(ConfigError, match="never be used"):
        load_config(DistillConfig, MVD, [*base, f"image_teacher.source={image}"])
    with pytest.raises(ConfigError, match="only mvd co-teaches"):
        load_config(DistillConfig, "configs/tiny/distill.yaml", [f"image_teacher.source={image}"])
    with pytest.raises(ConfigError, match="image_teacher.overrides"):
        load_config(
            DistillConfig,
            MVD,
            [*base, "mvd.image_weight=1", f"image_teacher.source={image}",
             "image_teacher.overrides.img_size=64"],
        )  # fmt: skip


def test_a_video_teacher_given_as_image_teacher_fails_before_training(tmp_path, teachers, capsys):
    video, _ = teachers
    code = coteach(tmp_path / "run", (video, video))
    assert code != 0
    err = capsys.readouterr().err
    assert "image_teacher.source" in err and "video encoder" in err
    assert not list_checkpoints(tmp_path / "run")


@pytest.mark.parametrize("name", ["k400_vit_s_mvd", "k400_vit_b_mvd"])
def test_published_mvd_configs_co_teach_with_mae(name):
    """MVD's K400 scripts distil from the MAE ViT-B image teacher beside the video teacher."""
    cfg = load_config(DistillConfig, f"configs/distill/{name}.yaml")
    assert cfg.objective.kind == "mvd"
    assert cfg.mvd.image_weight == cfg.mvd.video_weight == 1.0
    assert cfg.image_teacher.source.endswith("mae_pretrain_vit_base.pth")
    alone = load_config(
        DistillConfig,
        f"configs/distill/{name}.yaml",
        ["mvd.image_weight=0", "image_teacher.source="],
    )
    assert alone.mvd.weights() == {"video": 1.0}
