"""MVD: masked feature distillation, the distillation baseline MaskAgain compares with.

MVD (Wang et al., "Masked Video Distillation", CVPR 2023; code: github.com/ruiwang2021/mvd).
The frozen teacher encodes ALL tokens of the clip; the student encodes the visible tokens only;
a shallow decoder fills in mask tokens and regresses the teacher's features of the hidden
tokens, with the loss on the hidden tokens only (paper, Algorithm 1).

Every choice below follows the public code (file names are of that repository):

- Target: the teacher's LAST block output before its final LayerNorm
  (``modeling_video_teacher.py`` ``forward_features`` skips ``self.norm``; the MAE image
  teacher of ``modeling_teacher.py`` returns the block output without norm, class token
  dropped). Optionally normalised per token by a LayerNorm without affine parameters, eps 1e-6
  (``engine_for_pretraining.py``, ``--norm_feature``), which no published script turns on:
  ``norm_target=False`` by default.
- Loss: SmoothL1 (``torch`` default beta 1, mean over hidden tokens and channels) in every
  script (``--distill_loss_func SmoothL1``); "mse" and "l1" are the code's other choices.
- Student side (``modeling_student.py``): the encoder's final LayerNorm (eps 1e-6) once, then
  per teacher a Linear with bias to the decoder width (``down_vid`` / ``down_img``), a learned
  mask token at every hidden position, a fixed 3-D sine-cosine position table (a quarter of the
  channels for time, the rest for the 2-D (w, h) grid, ``get_3d_sincos_pos_embed``) added to
  every token, then the decoder: ``decoder_depth`` blocks (2 in every script) at the student's
  width and head count, drop path = the student's (0.1 in every script), a final LayerNorm and
  a Linear head to the teacher width on the hidden tokens only.
- Init: xavier-uniform Linear weights, zero biases, unit LayerNorms (``_init_weights``); mask
  tokens truncated normal std 0.02 cut at +-0.02.
- Co-teaching: an image teacher and a video teacher, each with its own projection, mask token
  and decoder; ``loss = image_weight * L_img + video_weight * L_vid`` (both 1 in the scripts).
  The image teacher sees the first frame of every tubelet (``time_stride_loss``); its tokens are
  laid out frame after frame (``image_teacher_frames`` / ``frame_tokens_to_clip``).
  ``image_weight=0`` (the default here) builds the video branch only.

The objective's own LayerNorm plays the role of the student encoder's final norm; the decoders
are ``maskagain.models.pretrain.VideoMAEDecoder``.
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import nn

from maskagain.losses.config import FeatureLoss, MVDConfig
from maskagain.losses.hidden import teacher_target
from maskagain.losses.query import EncoderQuery
from maskagain.masking import split_tokens, take_tokens
from maskagain.models.init import official_init
from maskagain.models.pretrain import VideoMAEDecoder
from maskagain.models.vit import EncoderOutput

LOSSES = typing.get_args(FeatureLoss)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim): sines of dim/2 frequencies, then their cosines."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_3d_table(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """MVD's fixed 3-D sine-cosine positions: (F * H' * W', dim) fp32, tokens in (t, h, w) order.

    The first dim/4 channels encode the frame index; the other 3*dim/4 encode the spatial grid,
    half for the column (w) and half for the row (h), in that order. dim must divide by 16.
    """
    if dim % 16:
        raise ValueError(f"a 3-D sine-cosine table needs a width divisible by 16, got {dim}")
    f, h, w = grid
    t_dim, s_dim = dim // 4, dim // 4 * 3
    tt, hh, ww = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.cat(
        [
            _sincos_1d(t_dim, tt.flatten()),
            _sincos_1d(s_dim // 2, ww.flatten()),
            _sincos_1d(s_dim // 2, hh.flatten()),
        ],
        dim=1,
    )
    return table.float()


def feature_regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean "smooth_l1" (beta 1), "mse" or "l1" over tokens and channels, in fp32.

    pred, target: (B, N_hid, D) -> scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    pred, target = pred.float(), target.float()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def image_teacher_frames(video: torch.Tensor, tubelet_size: int) -> torch.Tensor:
    """The frames an image teacher sees: the first frame of every tubelet.

    (B, C, T, H, W) -> (B * T / tubelet, C, H, W), frame-major within each sample.
    """
    frames = video[:, :, ::tubelet_size]  # (B, C, F, H, W)
    return frames.transpose(1, 2).flatten(0, 1)


def frame_tokens_to_clip(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Image-teacher tokens per frame (B * F, L, D) -> (B, F * L, D), the clip's (t, h, w) order."""
    bf, n, d = tokens.shape
    if bf % batch_size:
        raise ValueError(f"{bf} frames do not split into {batch_size} samples")
    return tokens.reshape(batch_size, bf // batch_size * n, d)


class MVDDecoderBranch(nn.Module):
    """One teacher's feature decoder: projection, mask token, 3-D positions, decoder blocks.

    forward(tokens (B, N_vis, D_s) normed student tokens, mask (B, N)) -> (B, N_hid, D_t).
    """

    def __init__(
        self,
        student_dim: int,
        target_dim: int,
        grid: tuple[int, int, int],
        cfg: MVDConfig,
        heads: int,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        dim = cfg.decoder_dim or student_dim
        self.embed = nn.Linear(student_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_3d_table(grid, dim), persistent=False)
        self.decoder = VideoMAEDecoder(
            dim,
            cfg.decoder_depth,
            heads,
            target_dim,
            cfg.mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path_rate=cfg.decoder_drop_path,
            norm_eps=norm_eps,
        )
        self.apply(official_init)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n = mask.shape
        if n != self.pos_embed.shape[0]:
            raise ValueError(
                f"the decoder was built for {self.pos_embed.shape[0]} tokens, got a mask over {n}"
            )
        x = self.embed(tokens)  # (B, N_vis, D_dec)
        visible, hidden = split_tokens(mask, x.shape[1])  # no host sync: counts from shapes
        pos = self.pos_embed.to(x.dtype)  # (N, D_dec)
        vis = x + take_tokens(pos, visible)
        hid = self.mask_token.to(x.dtype) + take_tokens(pos, hidden)
        x = torch.cat((vis, hid), dim=1)  # (B, N, D_dec): visible first, then hidden
        return self.decoder(x, return_last=hid.shape[1])


class MVDObjective(nn.Module):
    """MVD's student-side decoders and losses:
    ``forward(student_out, teacher_out[, image_teacher_tokens]) -> {"video", "image", "loss"}``
    (active terms unweighted, their weighted sum under "loss").

    student_out: the student's ``EncoderOutput`` on the masked clip (``mask`` set, True = hidden).
    teacher_out: the video teacher's ``EncoderOutput`` on the same clip WITHOUT a mask.
    image_teacher_tokens: (B, N, D_img) the image teacher's last-block tokens laid out as the
    clip (``frame_tokens_to_clip``), needed when ``cfg.image_weight > 0``.
    grid: the clip's token grid (F, H', W'). Run the teacher with ``teacher_mask(mask)`` (None),
    as ``teacher_query`` says.
    """

    attn_layers_student: tuple[int, ...] = ()
    attn_layers_teacher: tuple[int, ...] = ()
    student_query = EncoderQuery()  # the student's visible tokens, last block
    teacher_query = EncoderQuery(mask=None)  # every token of the clip, last block

    def __init__(
        self,
        cfg: MVDConfig,
        student_dim: int,
        student_heads: int,
        teacher_dim: int,
        grid: tuple[int, int, int],
        image_teacher_dim: int | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if isinstance(grid, int) or len(grid) != 3:
            raise ValueError(
                "MVD's decoder positions are 3-D: pass the token grid (F, H', W'), e.g. "
                f"student.cfg.grid, not {grid!r}"
            )
        self.cfg = cfg
        self.term_weights = cfg.weights()
        self.grid = tuple(grid)
        self.encoder_norm = nn.LayerNorm(student_dim, eps=norm_eps)
        heads = cfg.decoder_heads or student_heads
        dims = {"video": teacher_dim, "image": image_teacher_dim}
        if "image" in self.term_weights and image_teacher_dim is None:
            raise ValueError("image_weight > 0 needs image_teacher_dim (the image teacher's width)")
        self.branches = nn.ModuleDict(
            {
                name: MVDDecoderBranch(
                    student_dim, dims[name], self.grid, cfg, heads, True, norm_eps
                )
                for name in self.term_weights
            }
        )

    @classmethod
    def from_models(
        cls,
        cfg: MVDConfig,
        student: nn.Module,
        teacher: nn.Module,
        image_teacher_dim: int | None = None,
    ) -> MVDObjective:
        """Build from two ``VideoViT``-like models (``.cfg.embed_dim``, ``.cfg.grid``, ...)."""
        s = student.cfg
        return cls(
            cfg,
            s.embed_dim,
            s.num_heads,
            teacher.cfg.embed_dim,
            s.grid,
            image_teacher_dim,
            s.norm_eps,
        )

    @staticmethod
    def teacher_mask(student_mask: torch.Tensor) -> None:
        """MVD's teacher sees every token: run it without a mask."""
        return None

    def no_weight_decay(self) -> set[str]:
        return {f"branches.{name}.mask_token" for name in self.branches}

    def decode(self, tokens: torch.Tensor, mask: torch.Tensor, teacher: str = "video"):
        """Predict the hidden tokens' features of one teacher ("video" or "image").

        tokens: (B, N_vis, D_s) student block output; mask: (B, N) True = hidden
        -> (B, N_hid, D_t), hidden tokens in increasing token order.
        """
        return self.branches[teacher](self.encoder_norm(tokens), mask)

    def targets(
        self, teacher_tokens: torch.Tensor, mask: torch.Tensor, num_visible: int | None = None
    ) -> torch.Tensor:
        """(B, N, D_t) teacher features of all tokens -> (B, N_hid, D_t) targets, fp32.
        ``num_visible``: N_vis when known (the student's tokens), else counted (a host sync)."""
        d = teacher_tokens.shape[-1]
        if num_visible is None:
            num_visible = int((~mask[0]).sum())
        t = take_tokens(teacher_target(teacher_tokens), split_tokens(mask, num_visible)[1])
        return F.layer_norm(t, (d,), eps=1e-6) if self.cfg.norm_target else t

    def forward(
        self,
        student_out: EncoderOutput,
        teacher_out: EncoderOutput,
        image_teacher_tokens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        mask = student_out.mask
        if mask is None:
            raise ValueError("the student must be run on a masked clip (student_out.mask is None)")
        full = {"video": teacher_out.tokens, "image": image_teacher_tokens}
        if teacher_out.mask is not None:
            full["video"] = None
        normed = self.encoder_norm(student_out.tokens)
        out: dict[str, torch.Tensor] = {}
        for name in self.term_weights:
            tokens = full[name]
            if tokens is None or tokens.shape[:2] != mask.shape:
                raise ValueError(
                    f"MVD's {name} teacher sees all {mask.shape[1]} tokens: give its features of "
                    f"every token, (B, N, D), from a run without a mask (got "
                    f"{None if tokens is None else tuple(tokens.shape)})"
                )
            pred = self.branches[name](normed, mask)
            target = self.targets(tokens, mask, normed.shape[1])
            out[name] = feature_regression_loss(pred, target, self.cfg.loss)
        out["loss"] = sum(self.term_weights[name] * out[name] for name in self.term_weights)
        return out
