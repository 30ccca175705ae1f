"""Initialisation schemes: weight statistics against the official code's distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskagain.models import create_model
from maskagain.models.init import init_weights


def _xavier_std(weight: torch.Tensor) -> float:
    """std of xavier_uniform: bound sqrt(6 / (fan_in + fan_out)), std = bound / sqrt(3)."""
    fan_out, fan_in = weight.shape
    return math.sqrt(6.0 / (fan_in + fan_out)) / math.sqrt(3.0)


def _trunc_normal_std(std: float = 0.02, cut: float = 2.0) -> float:
    """std of N(0, std) truncated at +-cut * std."""
    phi = math.exp(-cut * cut / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cut / math.sqrt(2))
    return std * math.sqrt(1 - 2 * cut * phi / mass)


@pytest.fixture
def model():
    # vit_small width keeps the std estimates within ~1% (147k weights per qkv matrix)
    return create_model("vit_small", depth=2, img_size=32, num_frames=4, patch_size=8)


def _linears(model):
    blk = model.blocks[0]
    return {
        "qkv": blk.attn.qkv.weight,
        "proj": blk.attn.proj.weight,
        "fc1": blk.mlp.fc1.weight,
        "fc2": blk.mlp.fc2.weight,
    }


def test_official_scheme_matches_xavier_uniform(model):
    init_weights(model, "official")
    for name, w in _linears(model).items():
        expected = _xavier_std(w)
        assert abs(w.std().item() / expected - 1) < 0.05, name
        bound = math.sqrt(3) * expected
        assert w.abs().max().item() <= bound + 1e-7, name
    blk = model.blocks[0]
    assert torch.all(blk.attn.proj.bias == 0) and torch.all(blk.mlp.fc1.bias == 0)
    assert torch.all(blk.norm1.weight == 1) and torch.all(blk.norm1.bias == 0)
    assert torch.all(blk.attn.q_bias == 0) and torch.all(blk.attn.v_bias == 0)
    conv = model.patch_embed.proj.weight  # PyTorch default: uniform(+-1/sqrt(fan_in))
    fan_in = conv[0].numel()
    assert abs(conv.std().item() / (1 / math.sqrt(3 * fan_in)) - 1) < 0.05


@pytest.mark.slow
def test_trunc_normal_scheme_is_the_default_init(model):
    init_weights(model, "official")
    init_weights(model, "trunc_normal")
    expected = _trunc_normal_std()
    for name, w in _linears(model).items():
        assert abs(w.std().item() / expected - 1) < 0.05, name
        assert w.abs().max().item() <= 0.04 + 1e-7, name
    conv = model.patch_embed.proj.weight.flatten(1)  # xavier on the flattened kernel
    assert abs(conv.std().item() / _xavier_std(conv) - 1) < 0.05


@pytest.mark.slow
def test_the_two_schemes_differ_where_they_should(model):
    init_weights(model, "official")
    official = _linears(model)["qkv"].std().item()
    init_weights(model, "trunc_normal")
    assert abs(official - _linears(model)["qkv"].std().item()) > 0.005  # 0.036 vs 0.0176


def test_head_uses_init_scale_and_bad_scheme_fails():
    model = create_model("vit_nano", num_classes=5, img_size=32, num_frames=4, patch_size=8)
    nn.init.ones_(model.head.weight)
    init_weights(model, "official")
    assert model.head.weight.abs().max().item() <= 0.04 * model.cfg.init_scale + 1e-9
    with pytest.raises(ValueError, match="official"):
        init_weights(model, "xavier")
