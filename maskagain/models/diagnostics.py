"""Numerical checks of the attention taps the distillation selects on.

MaskAgain keeps the top-k attention logits of every row. When the k-th and (k+1)-th largest
logits are equal, which key is kept depends on the kernel, not on the model: in bf16 (8 bits of
mantissa) such ties are common. :func:`topk_tie_rate` counts them; :func:`attention_tie_rates`
measures them for bf16 logits (the fused autocast path) against the fp32 logits that
:meth:`maskagain.models.layers.Attention.forward_tapped` returns.
"""

from __future__ import annotations

import torch

from maskagain.models.layers import Attention, trunc_normal_init


def topk_tie_rate(logits: torch.Tensor, k: int) -> float:
    """Fraction of rows of ``logits`` (..., N) whose k-th and (k+1)-th largest values are equal."""
    if not 0 < k < logits.shape[-1]:
        raise ValueError(f"k must be in [1, {logits.shape[-1] - 1}] for rows of {logits.shape[-1]}")
    top = logits.topk(k + 1, dim=-1).values  # (..., k + 1), descending
    return (top[..., k - 1] == top[..., k]).float().mean().item()


def attention_tie_rates(
    n_tokens: int = 160,
    k: int = 10,
    dim: int = 768,
    num_heads: int = 12,
    batch: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Top-k tie rates of one random-init attention block (ViT-B-like by default) under bf16
    autocast: ``{"bf16": ..., "fp32": ...}``.

    "bf16": logits ``(q * d_k**-0.5) @ k^T`` of the bf16 q and k autocast produces (what a tap
    computed before the fp32 path); "fp32": the tap's logits from ``forward_tapped``. Tokens are
    standard normal (B, N, D), the scale of a LayerNorm output.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    attn = Attention(dim, num_heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attn.apply(trunc_normal_init)
    attn = attn.to(device).eval()
    x = torch.randn(batch, n_tokens, dim, generator=gen).to(device)
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        q, key, _ = attn._qkv(x)  # bf16 under autocast
        bf16 = (q * attn.scale) @ key.transpose(-2, -1)
        _, tap = attn.forward_tapped(x)
    return {"bf16": topk_tie_rate(bf16, k), "fp32": topk_tie_rate(tap.logits, k)}
