"""Intermediate block outputs of an encoder, for objectives that align several layers (AMD).

``forward_features_with_blocks(model, video, mask, blocks)`` runs ``model.forward_features``
once and also returns the output tokens of the blocks named in ``blocks`` (0-based, negative
counts from the end), captured with forward hooks that live only for that call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from maskagain.models.vit import EncoderOutput


@dataclass
class EncoderOutputWithBlocks(EncoderOutput):
    """``EncoderOutput`` plus ``blocks``: block index (0-based) -> (B, N_vis, D) output tokens
    of that block, before any final norm."""

    blocks: dict[int, torch.Tensor] = field(default_factory=dict)


def resolve_blocks(blocks: tuple[int, ...] | list[int], depth: int) -> tuple[int, ...]:
    """Block indices (negative from the end) -> 0-based indices, checked against ``depth``."""
    out = []
    for i in blocks:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise IndexError(f"block {i} out of range for a {depth}-block encoder")
        out.append(j)
    return tuple(out)


def forward_features_with_blocks(
    model: nn.Module,
    video: torch.Tensor,
    mask: torch.Tensor | None = None,
    blocks: tuple[int, ...] | list[int] = (),
    attn_layers: tuple[int, ...] | list[int] = (),
) -> EncoderOutputWithBlocks:
    """``model.forward_features(video, mask, attn_layers)`` plus the outputs of ``blocks``.

    model: a ``VideoViT``-like encoder with ``.blocks`` (an ``nn.ModuleList``).
    Returns an ``EncoderOutputWithBlocks`` whose ``blocks`` maps each 0-based index to
    (B, N_vis, D); the last block's entry is ``tokens`` itself. A block other than the last
    cannot be both in ``blocks`` and in ``attn_layers``.
    """
    depth = len(model.blocks)
    wanted = resolve_blocks(blocks, depth)
    tapped = set(resolve_blocks(attn_layers, depth)) - {depth - 1}
    if tapped & set(wanted):
        raise ValueError(
            f"blocks {sorted(tapped & set(wanted))} are asked for both their attention and their "
            "output; only the last block can be (its output is the encoder's tokens)"
        )
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for j in set(wanted) - {depth - 1}:

        def hook(_module, _inputs, output, j=j):
            captured[j] = output

        handles.append(model.blocks[j].register_forward_hook(hook))
    try:
        out = model.forward_features(video, mask, attn_layers=attn_layers)
    finally:
        for h in handles:
            h.remove()
    return EncoderOutputWithBlocks(
        tokens=out.tokens,
        frame_index=out.frame_index,
        attn=out.attn,
        mask=out.mask,
        blocks={j: out.tokens if j == depth - 1 else captured[j] for j in wanted},
    )
