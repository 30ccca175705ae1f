"""MVD-style masked feature distillation, the distillation baseline MaskAgain compares with.

MVD (Wang et al., "Masked Video Distillation", CVPR 2023): the frozen teacher encodes ALL tokens
of the clip; the student encodes the visible tokens only, a shallow decoder fills in mask tokens
and regresses the teacher's features of the hidden tokens. Targets are the teacher's last-block
output normalised per token by a LayerNorm without affine parameters.

Layout follows the official MVD student: the student tokens go through a LayerNorm (the
encoder's final norm), a Linear to the decoder width, a learned mask token is placed at every
hidden position, a fixed sine table gives every token its position, ``decoder_depth`` transformer
blocks run over all N tokens and a Linear head predicts the teacher width on the hidden tokens
only. MVD's scripts use 2 decoder blocks at the student width and a SmoothL1 loss; ``loss="mse"``
is the plain alternative. Only the video-teacher branch is built (MVD also trains an image-teacher
branch; MaskAgain has no image teacher).

The decoder is the reusable ``VideoMAEDecoder`` of ``maskagain.models.pretrain`` (blocks, final
LayerNorm, linear head on the last tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskagain.models.layers import sinusoid_table, trunc_normal_init
from maskagain.models.pretrain import VideoMAEDecoder
from maskagain.models.vit import EncoderOutput

LOSSES = ("smooth_l1", "mse")


@dataclass
class MVDConfig:
    """Decoder shape and loss of the MVD baseline. ``None`` widths follow the student."""

    decoder_depth: int = 2
    decoder_dim: int | None = None
    decoder_heads: int | None = None
    mlp_ratio: float = 4.0
    loss: str = "smooth_l1"
    norm_target: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {self.decoder_depth}")


class MVDObjective(nn.Module):
    """Student-side decoder and loss of MVD: ``forward(student_out, teacher_out) -> {"loss"}``.

    student_out: the student's ``EncoderOutput`` on the masked clip (``mask`` set, True = hidden).
    teacher_out: the teacher's ``EncoderOutput`` on the same clip WITHOUT a mask (all N tokens).
    """

    def __init__(
        self,
        cfg: MVDConfig,
        student_dim: int,
        student_heads: int,
        teacher_dim: int,
        num_tokens: int,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.decoder_dim or student_dim
        heads = cfg.decoder_heads or student_heads
        self.encoder_norm = nn.LayerNorm(student_dim, eps=norm_eps)
        self.embed = nn.Linear(student_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, dim), persistent=False)
        self.decoder = VideoMAEDecoder(
            dim, cfg.decoder_depth, heads, teacher_dim, cfg.mlp_ratio, norm_eps=norm_eps
        )
        trunc_normal_init(self.encoder_norm)
        trunc_normal_init(self.embed)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)

    def decode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predict the hidden tokens' teacher features.

        tokens: (B, N_vis, D_s) student block output; mask: (B, N) True = hidden
        -> (B, N_hid, D_t), hidden tokens in increasing token order.
        """
        b, n = mask.shape
        x = self.embed(self.encoder_norm(tokens))  # (B, N_vis, D_dec)
        d = x.shape[-1]
        pos = self.pos_embed.to(x.dtype).expand(b, n, d)
        n_hid = n - x.shape[1]
        vis = x + pos[~mask].reshape(b, -1, d)
        hid = self.mask_token.to(x.dtype) + pos[mask].reshape(b, n_hid, d)
        x = torch.cat((vis, hid), dim=1)  # (B, N, D_dec): visible first, then hidden
        return self.decoder(x, return_last=n_hid)

    def targets(self, teacher_tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, D_t) teacher features of all tokens -> (B, N_hid, D_t) targets, fp32."""
        b, n, d = teacher_tokens.shape
        t = teacher_tokens[mask].reshape(b, -1, d).float()
        return F.layer_norm(t, (d,)) if self.cfg.norm_target else t

    def forward(self, student_out: EncoderOutput, teacher_out: EncoderOutput) -> dict:
        mask = student_out.mask
        if mask is None:
            raise ValueError("the student must be run on a masked clip (student_out.mask is None)")
        if teacher_out.mask is not None or teacher_out.tokens.shape[1] != mask.shape[1]:
            raise ValueError(
                f"MVD's teacher sees all {mask.shape[1]} tokens: run it without a mask "
                f"(got tokens {tuple(teacher_out.tokens.shape)})"
            )
        pred = self.decode(student_out.tokens, mask).float()
        target = self.targets(teacher_out.tokens, mask)
        if self.cfg.loss == "mse":
            loss = F.mse_loss(pred, target)
        else:
            loss = F.smooth_l1_loss(pred, target)
        return {"loss": loss, "feature": loss.detach()}
