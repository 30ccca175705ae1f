"""Layer-wise lr decay groups against a per-parameter reference."""

from __future__ import annotations

import pytest
import torch

from maskagain.engine.optim import layer_id, param_groups
from maskagain.models import create_model


def _reference(
    name: str, p: torch.Tensor, depth: int, decay: float, wd: float
) -> tuple[float, float]:
    """(lr_scale, weight_decay) for one parameter, written out case by case."""
    if name.startswith("patch_embed") or name == "pos_embed":
        layer = 0
    elif name.startswith("blocks."):
        layer = int(name.split(".")[1]) + 1
    else:  # norm, fc_norm, head
        layer = depth + 1
    scale = decay ** (depth + 1 - layer)
    no_wd = p.ndim == 1 or name.endswith(".bias") or name == "pos_embed"
    return scale, 0.0 if no_wd else wd


@pytest.mark.parametrize("name", ["vit_nano", "vit_micro"])
def test_groups_match_reference(name: str, tiny_kwargs: dict) -> None:
    model = create_model(name, num_classes=7, fc_norm=True, init_values=0.1, **tiny_kwargs)
    depth = model.depth
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
    seen = {}
    for g in groups:
        for n, p in zip(g["names"], g["params"]):
            seen[n] = (g["lr_scale"], g["weight_decay"])
            assert p is dict(model.named_parameters())[n]
    assert set(seen) == {n for n, _ in model.named_parameters()}, "every parameter exactly once"
    for n, p in model.named_parameters():
        scale, wd = _reference(n, p, depth, 0.75, 0.05)
        assert seen[n][0] == pytest.approx(scale), n
        assert seen[n][1] == wd, n
    assert seen["head.weight"][0] == 1.0
    assert seen["patch_embed.proj.weight"][0] == pytest.approx(0.75 ** (depth + 1))
    gammas = [n for n in seen if "gamma" in n]
    assert gammas and all(seen[n][1] == 0.0 for n in gammas)


def test_frozen_params_skipped_and_optimizer_accepts_groups(tiny_kwargs: dict) -> None:
    model = create_model("vit_nano", num_classes=3, **tiny_kwargs)
    model.patch_embed.requires_grad_(False)
    groups = param_groups(model, 0.05, 0.7)
    names = [n for g in groups for n in g["names"]]
    assert not any(n.startswith("patch_embed") for n in names)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    assert len(opt.param_groups) == len(groups)


def test_layer_id_and_validation() -> None:
    assert layer_id("pos_embed", 12) == 0
    assert layer_id("blocks.11.mlp.fc1.weight", 12) == 12
    assert layer_id("head.weight", 12) == 13
    with pytest.raises(ValueError):
        param_groups(create_model("vit_nano"), 0.05, 0.0)


def test_schedule_scales_each_group(tiny_kwargs: dict) -> None:
    """The shared cosine schedule multiplies every group's lr by its ``lr_scale``."""
    from maskagain.engine.optim import CosineSchedule

    model = create_model("vit_nano", num_classes=3, **tiny_kwargs)
    opt = torch.optim.AdamW(param_groups(model, 0.05, 0.5), lr=1.0)
    sched = CosineSchedule(opt, total_steps=10, peak_lr=1e-3, warmup_steps=2, warmup_lr=1e-6)
    for _ in range(3):
        sched.step()
    base = sched.lr_at(3)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(base * 0.5 ** (model.depth + 1 - g["layer"]))
