"""Intermediate block outputs of an encoder, for objectives that align several layers (AMD),
and :class:`EncoderQuery`, what an objective needs from one encoder.

``forward_features_with_blocks(model, video, mask, blocks)`` runs ``model.forward_features``
once and also returns the output tokens of the blocks named in ``blocks`` (0-based, negative
counts from the end): from the model's own call (``forward_features(..., blocks=...)``), or,
for an encoder that cannot return them, captured with forward hooks that live only for that
call (such an encoder runs uncompiled).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from maskagain.losses.config import resolve_blocks
from maskagain.models.vit import EncoderOutput


@dataclass
class EncoderOutputWithBlocks(EncoderOutput):
    """``EncoderOutput`` plus ``blocks``: block index (0-based) -> (B, N_vis, D) output tokens
    of that block, before any final norm."""

    blocks: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderQuery:
    """What an objective reads from one encoder (its ``student_query`` / ``teacher_query``).

    mask: the batch key of the mask the encoder runs on ("mask": the student's; None: every
    token of the clip). mask_ratio: set when the encoder needs a tube mask of its own under
    ``mask`` (drawn by the collate at that ratio, its hidden tokens within the student's).
    blocks: blocks whose outputs are read (``forward_features_with_blocks``); attn_layers:
    blocks whose attention logits and values are read (every other block keeps fused SDPA).
    """

    mask: str | None = "mask"
    mask_ratio: float | None = None
    blocks: tuple[int, ...] = ()
    attn_layers: tuple[int, ...] = ()

    def mask_of(self, batch: dict) -> torch.Tensor | None:
        """The (B, N) bool mask of ``batch`` this encoder runs on (None: the whole clip)."""
        return None if self.mask is None else batch[self.mask]

    def visible_of(self, batch: dict) -> torch.Tensor | None:
        """The collate's (B, N_vis) visible token indices of that mask ("visible" for "mask",
        "teacher_visible" for "teacher_mask"), None when the batch has none."""
        return None if self.mask is None else batch.get(self.mask.replace("mask", "visible"))

    def run(
        self,
        model: nn.Module,
        video: torch.Tensor,
        mask: torch.Tensor | None,
        visible: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """``model`` on ``video`` (B, C, T, H, W) with ``mask`` (B, N) or None (``visible``: its
        (B, N_vis) visible indices, optional): an ``EncoderOutput`` with the asked attention
        taps, plus ``blocks`` when any is asked."""
        if self.blocks:
            return forward_features_with_blocks(
                model, video, mask, self.blocks, self.attn_layers, visible
            )
        if visible is None:
            return model.forward_features(video, mask, self.attn_layers)
        return model.forward_features(video, mask, self.attn_layers, visible=visible)


def forward_features_with_blocks(
    model: nn.Module,
    video: torch.Tensor,
    mask: torch.Tensor | None = None,
    blocks: tuple[int, ...] | list[int] = (),
    attn_layers: tuple[int, ...] | list[int] = (),
    visible: torch.Tensor | None = None,
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
    if uses_hooks(model):
        return _with_hooks(model, video, mask, wanted, attn_layers, visible)
    kwargs = {} if visible is None else {"visible": visible}
    inner = [j for j in wanted if j != depth - 1]
    out = model.forward_features(video, mask, attn_layers=attn_layers, blocks=inner, **kwargs)
    return EncoderOutputWithBlocks(
        tokens=out.tokens,
        frame_index=out.frame_index,
        attn=out.attn,
        mask=out.mask,
        blocks={j: out.tokens if j == depth - 1 else out.blocks[j] for j in wanted},
    )


def uses_hooks(model: nn.Module) -> bool:
    """True for an encoder whose ``forward_features`` cannot return block outputs itself: they
    are then captured with forward hooks (which ``torch.compile`` cannot trace)."""
    return not getattr(model, "block_outputs", False)


def _with_hooks(
    model: nn.Module,
    video: torch.Tensor,
    mask: torch.Tensor | None,
    wanted: list[int],
    attn_layers: tuple[int, ...] | list[int],
    visible: torch.Tensor | None,
) -> EncoderOutputWithBlocks:
    """Block outputs captured by forward hooks that live only for this call."""
    depth = len(model.blocks)
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for j in set(wanted) - {depth - 1}:

        def hook(_module, _inputs, output, j=j):
            captured[j] = output

        handles.append(model.blocks[j].register_forward_hook(hook))
    try:
        kwargs = {} if visible is None else {"visible": visible}
        out = model.forward_features(video, mask, attn_layers=attn_layers, **kwargs)
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
