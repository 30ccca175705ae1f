"""What an objective reads from one encoder: :class:`EncoderQuery`.

Attention taps and block outputs alike come from the encoder's own call,
``forward_features(video, mask, attn_layers=..., blocks=..., visible=...)``: every encoder
family a teacher or a student can be (:class:`~maskagain.models.vit.VideoViT`, the V-JEPA 2
encoder, an aligned teacher) takes ``blocks=`` and returns the output tokens of those blocks in
``EncoderOutput.blocks``, so the forward stays one traceable call (no hooks). An encoder
without it is refused where the run is built (:meth:`EncoderQuery.check`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from maskagain.models.vit import EncoderOutput


@dataclass(frozen=True)
class EncoderQuery:
    """What an objective reads from one encoder (its ``student_query`` / ``teacher_query``).

    mask: the batch key of the mask the encoder runs on ("mask": the student's; None: every
    token of the clip). mask_ratio: set when the encoder needs a tube mask of its own under
    ``mask`` (drawn by the collate at that ratio, its hidden tokens within the student's).
    blocks: blocks whose outputs are read (``EncoderOutput.blocks``); attn_layers: blocks whose
    attention logits and values are read (every other block keeps fused SDPA).
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

    def check(self, model: nn.Module, who: str) -> None:
        """Raise a one-line ValueError when ``model`` cannot answer this query from its own
        ``forward_features`` (``who``: "the teacher", "the student", for the message)."""
        forward = getattr(model, "forward_features", None)
        if forward is None:
            raise ValueError(
                f"{who} ({type(model).__name__}) has no forward_features(video, mask, ...): "
                "use a VideoViT, a V-JEPA 2 encoder or a model load_encoder builds"
            )
        if self.blocks and not _takes_blocks(forward):
            raise ValueError(
                f"{who} ({type(model).__name__}) cannot return block outputs: its "
                f"forward_features takes no blocks=, and the objective reads blocks "
                f"{list(self.blocks)}; use a VideoViT, a V-JEPA 2 encoder or a model "
                "load_encoder builds"
            )

    def run(
        self,
        model: nn.Module,
        video: torch.Tensor,
        mask: torch.Tensor | None,
        visible: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """``model`` on ``video`` (B, C, T, H, W) with ``mask`` (B, N) or None (``visible``: its
        (B, N_vis) visible indices, optional): an ``EncoderOutput`` with the asked attention
        taps and, in ``blocks``, the asked block outputs (B, N_vis, D) by 0-based index."""
        kwargs = {} if visible is None else {"visible": visible}
        if self.blocks:
            kwargs["blocks"] = self.blocks
        return model.forward_features(video, mask, self.attn_layers, **kwargs)


def _takes_blocks(forward) -> bool:
    """Whether ``forward`` accepts a ``blocks=`` keyword (named, or through ``**kwargs``)."""
    params = inspect.signature(forward).parameters.values()
    return any(p.name == "blocks" or p.kind is p.VAR_KEYWORD for p in params)
