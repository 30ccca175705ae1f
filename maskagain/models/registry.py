"""Model names -> architectures. A plain dict keeps names greppable."""

from __future__ import annotations

import dataclasses

from maskagain.models.vit import ModelConfig, VideoViT

# name -> (embed_dim, depth, num_heads)
ARCHITECTURES: dict[str, dict] = {
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    # small sizes for CPU work: the demo and the test suite
    "vit_mini": dict(embed_dim=192, depth=6, num_heads=3),
    "vit_micro": dict(embed_dim=128, depth=4, num_heads=4),
    "vit_nano": dict(embed_dim=64, depth=2, num_heads=2),
}


def model_config(name: str, **overrides) -> ModelConfig:
    """ModelConfig for a registered ``name`` with field ``overrides`` applied."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise TypeError(f"unknown model option(s) {bad}; valid options: {sorted(fields)}")
    return ModelConfig(**{**ARCHITECTURES[name], **overrides})


def create_model(name: str, **overrides) -> VideoViT:
    """Build a registered video ViT, e.g. ``create_model("vit_small", num_classes=400)``."""
    return VideoViT(model_config(name, **overrides))
