"""Test helper: random weights for models built only to compare layouts."""

from __future__ import annotations

import torch


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with seeded N(0, ``scale``) noise (so a swapped or dropped tensor
    shows in the outputs); returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def mae_image_teacher(
    folder, width: int = 96, patch: int = 8, depth: int = 1, seed: int = 3
) -> str:
    """A tiny transformers ``ViTMAEModel`` (``depth`` blocks, 4 heads, 32px images) saved into
    ``folder``, with MAE's fixed position table as published weights hold it (transformers 5
    leaves a freshly built model's table at zero) and random non-zero biases, k bias included.
    Returns the folder."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.ViTMAEConfig(
        hidden_size=width, num_hidden_layers=depth, num_attention_heads=4,
        intermediate_size=2 * width, image_size=32, patch_size=patch, mask_ratio=0.0,
    )  # fmt: skip
    model = transformers.ViTMAEModel(config).eval()
    model.embeddings.patch_embeddings.projection._is_hf_initialized = False
    model.embeddings.initialize_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.1)
    model.save_pretrained(folder)
    return str(folder)
