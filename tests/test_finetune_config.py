"""Shipped fine-tuning configs validate and match Table 8; initialisation paths of the classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskagain.checkpoints import CheckpointError
from maskagain.config import ConfigError, load_config
from maskagain.models import create_model, model_config
from maskagain.models.loading import save_encoder
from maskagain.recipes.classifier import ArchitectureMismatch, build_classifier
from maskagain.recipes.configs import EvaluateConfig, FinetuneConfig, ProbeConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FINETUNE_CONFIGS = sorted((CONFIGS / "finetune").glob("*.yaml")) + sorted(
    (CONFIGS / "tiny").glob("finetune*.yaml")
)

# Table 8: (base lr, layer decay, drop path, head dropout, epochs, short edge, views, flip, warmup lr)
TABLE8 = {
    "k400_vit_b": (1e-3, 0.75, 0.1, 0.0, 75, 256, 15, True, 1e-6),
    "k400_vit_s": (1e-3, 0.75, 0.1, 0.0, 150, 256, 15, True, 1e-6),
    "ucf101": (5e-4, 0.7, 0.2, 0.5, 100, 240, 15, True, 1e-8),
    "hmdb51": (1e-3, 0.7, 0.2, 0.5, 50, 320, 15, True, 1e-6),
    "ssv2_vit_b": (5e-4, 0.75, 0.1, 0.5, 40, 240, 6, False, 1e-8),
    "ssv2_vit_s": (1e-3, 0.7, 0.1, 0.5, 40, 240, 6, False, 1e-8),
}


@pytest.mark.parametrize("path", FINETUNE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_finetune_configs_validate(path: Path) -> None:
    cfg = load_config(FinetuneConfig, path)
    assert cfg.model.model_config().num_frames == cfg.data.num_frames


@pytest.mark.parametrize("name", sorted(TABLE8))
def test_shipped_configs_follow_table8(name: str) -> None:
    cfg = load_config(FinetuneConfig, CONFIGS / "finetune" / f"{name}.yaml")
    lr, lrd, dpr, drop, epochs, short, views, flip, warm = TABLE8[name]
    got = (
        cfg.optim.base_lr, cfg.layer_decay, cfg.model.drop_path_rate, cfg.head.dropout,
        cfg.schedule.epochs, cfg.data.short_side, cfg.data.views_per_video, cfg.data.use_flip,
        cfg.schedule.warmup_lr,
    )  # fmt: skip
    assert got == (lr, lrd, dpr, drop, epochs, short, views, flip, warm)
    assert cfg.optim.weight_decay == 0.05 and tuple(cfg.optim.betas) == (0.9, 0.999)
    assert cfg.schedule.warmup_epochs == 5 and cfg.schedule.min_lr == 1e-5
    assert (cfg.mixup.mixup_alpha, cfg.mixup.cutmix_alpha, cfg.mixup.label_smoothing) == (
        0.8,
        1.0,
        0.1,
    )
    assert cfg.data.num_sample == 2 and cfg.data.sampling_rate == 4
    total = cfg.engine.batch_size * 8 * cfg.data.num_sample  # 8 GPUs, as the comments say
    assert total == (128 if name in ("ucf101", "hmdb51", "ssv2_vit_b") else 256)


@pytest.mark.parametrize(
    "override, key",
    [
        ("layer_decay=1.5", "layer_decay"),
        ("mixup.label_smoothing=1.0", "mixup.label_smoothing"),
        ("head.dropuot=0.1", "head.dropuot"),
        ("model.num_frames=8", "data.num_frames"),  # data.num_frames alone drives the model
        ("head.num_classes=0", "head.num_classes"),
    ],
)
def test_bad_finetune_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(FinetuneConfig, CONFIGS / "tiny" / "finetune.yaml", [override])


def test_evaluate_and_probe_configs_require_their_input() -> None:
    with pytest.raises(ConfigError, match="checkpoint"):
        load_config(EvaluateConfig)
    with pytest.raises(ConfigError, match="encoder"):
        load_config(ProbeConfig)
    assert load_config(EvaluateConfig, overrides=["checkpoint=x"]).data.views_per_video == 15


def test_build_classifier_from_student_keeps_weights_and_replaces_head(
    tmp_path: Path, tiny_kwargs: dict
) -> None:
    student = create_model("vit_nano", **tiny_kwargs)
    path = save_encoder(student, tmp_path / "student.safetensors")
    spec = model_config("vit_nano", drop_path_rate=0.2, **tiny_kwargs)
    model = build_classifier(spec, num_classes=5, source=str(tmp_path), head_dropout=0.3)
    assert model.num_classes == 5 and model.head.out_features == 5
    assert model.cfg.drop_path_rate == 0.2 and model.head_drop.p == 0.3
    assert isinstance(model.norm, torch.nn.Identity) and model.cfg.fc_norm
    for (name, a), b in zip(
        student.blocks.state_dict().items(), model.blocks.state_dict().values()
    ):
        assert torch.equal(a, b), name
    scratch = build_classifier(spec, num_classes=5)
    assert not torch.equal(scratch.blocks[0].attn.qkv.weight, student.blocks[0].attn.qkv.weight)
    with pytest.raises(ArchitectureMismatch, match="vit_small|embed_dim"):
        build_classifier(model_config("vit_micro", **tiny_kwargs), 5, source=str(path))
    with pytest.raises(CheckpointError):
        build_classifier(spec, 5, source=str(tmp_path / "missing.safetensors"))


def test_partial_sections_keep_the_finetuning_defaults() -> None:
    cfg = load_config(
        FinetuneConfig, overrides=["optim.base_lr=5e-4", "schedule.epochs=10", "model.depth=4"]
    )
    assert tuple(cfg.optim.betas) == (0.9, 0.999) and cfg.optim.base_lr == 5e-4
    assert (cfg.schedule.warmup_epochs, cfg.schedule.warmup_lr) == (5, 1e-6)
    assert cfg.model.name == "vit_base" and cfg.model.drop_path_rate == 0.1


def test_loader_overrides_are_typed_and_checked() -> None:
    cfg = load_config(EvaluateConfig, overrides=["checkpoint=x", "overrides.num_heads=2"])
    assert cfg.overrides == {"num_heads": 2}
    with pytest.raises(ConfigError, match=r"did you mean 'overrides\.num_heads'"):
        load_config(EvaluateConfig, overrides=["checkpoint=x", "overrides.num_head=2"])
    with pytest.raises(ConfigError, match=r"init\.overrides\.norm_eps"):
        load_config(FinetuneConfig, overrides=["init.overrides.norm_eps=small"])


def test_build_classifier_from_videomae_pretraining_pth(tmp_path: Path, tiny_kwargs: dict) -> None:
    """An official VideoMAE pre-training checkpoint: ``model`` with ``encoder.*`` keys and a
    decoder that is dropped; the heads are given as a loader override."""
    encoder = create_model("vit_nano", **tiny_kwargs)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["decoder.head.weight"] = torch.zeros(4, 4)
    state["mask_token"] = torch.zeros(1, 1, 32)
    torch.save({"model": state}, tmp_path / "videomae_pretrain.pth")
    spec = model_config("vit_nano", **tiny_kwargs)
    model = build_classifier(
        spec, 7, source=str(tmp_path / "videomae_pretrain.pth"), loader_overrides={"num_heads": 2}
    )
    assert model.num_classes == 7
    for (name, a), b in zip(
        encoder.blocks.state_dict().items(), model.blocks.state_dict().values()
    ):
        assert torch.equal(a, b), name
