"""VideoMAE pre-training: an encoder on the visible tokens, a light decoder on all tokens.

Parameter names follow the official VideoMAE ``PretrainVisionTransformer`` (``encoder.*``,
``encoder_to_decoder``, ``mask_token``, ``decoder.blocks.*``, ``decoder.norm``, ``decoder.head``),
so the official layout loads key for key. The target of every hidden token is its tubelet of
pixels ``(tubelet, patch, patch, C)``, back in [0, 1] pixel units (the clip's mean/std
normalisation undone) and normalised per patch and per channel (``norm_pix_loss``).
``PixelReconstruction`` is the pixel head alone, to add pixel reconstruction to a distillation
objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from maskagain.constants import IMAGENET_MEAN, IMAGENET_STD
from maskagain.masking import split_tokens, take_tokens
from maskagain.models.layers import Block, sinusoid_table, trunc_normal_init
from maskagain.models.vit import VideoViT


class VideoMAEDecoder(nn.Module):
    """Transformer blocks, a final LayerNorm and a linear head: (B, N, D) -> (B, N_out, out_dim).

    Reusable wherever a shallow decoder over all tokens is needed (VideoMAE, MVD-style targets).
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        out_dim: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, 0.0, dpr[i], init_values, norm_eps)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        self.grad_checkpointing = False
        self.apply(trunc_normal_init)

    def forward(self, x: torch.Tensor, return_last: int | None = None) -> torch.Tensor:
        """x: (B, N, D). Returns the head output of the last ``return_last`` tokens (all if None)."""
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        if return_last is not None:
            x = x[:, -return_last:]
        return self.head(self.norm(x))


def patchify(video: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet * patch * patch, C), tokens in (t, h, w) order."""
    b, c, t, h, w = video.shape
    p, q = patch_size, tubelet_size
    x = video.reshape(b, c, t // q, q, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', q, p, p, C)
    return x.reshape(b, (t // q) * (h // p) * (w // p), q * p * p, c)


def pixel_targets(
    video: torch.Tensor,
    patch_size: int,
    tubelet_size: int,
    normalize: bool = True,
    mean: Sequence[float] | torch.Tensor | None = IMAGENET_MEAN,
    std: Sequence[float] | torch.Tensor | None = IMAGENET_STD,
) -> torch.Tensor:
    """Per-token regression targets (B, N, tubelet * patch * patch * C), in VideoMAE's order.

    video: (B, C, T, H, W) the clip as the model sees it, normalised with ``mean`` / ``std``
    (per channel); as VideoMAE does, that normalisation is undone first, back to [0, 1] pixels
    (``mean=None`` / ``std=None``: the clip is already in pixel units). With ``normalize`` every
    patch is then standardised per channel (unbiased variance, eps 1e-6 added to the std).
    The statistics are taken after subtracting the patch's first pixel (the same result, exact
    shift invariance): a flat tubelet (all black, all white, any constant colour) gives exactly
    0, where float rounding of its mean would otherwise be magnified by 1 / eps.
    """
    x = patchify(video.float(), patch_size, tubelet_size)  # (B, N, P, C)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (or neither)")
    if mean is not None:  # back to [0, 1] pixels (tensors on the clip's device: no copy)
        x = x * torch.as_tensor(std, dtype=x.dtype, device=x.device) + torch.as_tensor(
            mean, dtype=x.dtype, device=x.device
        )
    if normalize:
        x = x - x[:, :, :1]  # exact zeros for a flat patch
        mu = x.mean(dim=-2, keepdim=True)
        var = x.var(dim=-2, unbiased=True, keepdim=True)
        x = (x - mu) / (var.sqrt() + 1e-6)
    return x.flatten(2)


def _sized_for(
    cfg,
    decoder_dim: int,
    decoder_depth: int,
    decoder_heads: int,
    norm_pix_loss: bool,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> dict:
    """The arguments of :class:`PixelReconstruction` for an encoder of config ``cfg`` (its
    geometry and block settings) with this decoder, loss and clip normalisation."""
    return dict(
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_heads=decoder_heads,
        norm_pix_loss=norm_pix_loss,
        mean=mean,
        std=std,
        encoder_dim=cfg.embed_dim,
        grid=cfg.grid,
        patch_size=cfg.patch_size,
        tubelet_size=cfg.tubelet_size,
        in_chans=cfg.in_chans,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        init_values=cfg.init_values,
        norm_eps=cfg.norm_eps,
    )


class PixelReconstruction(nn.Module):
    """VideoMAE's pixel head: visible encoder tokens -> pixels of the hidden tokens -> MSE.

    ``encoder_to_decoder`` (no bias) maps the encoder's final-normed visible tokens to the
    decoder width, ``mask_token`` fills every hidden position, a fixed sine table gives each
    token its position, and a ``VideoMAEDecoder`` predicts the hidden tokens' tubelets.
    ``forward(tokens, mask, video) -> loss`` adds pixel reconstruction to any distillation
    objective (Table 4 of the MaskAgain paper: pixel loss plus a distillation loss)::

        pixel = head(student.norm(s_out.tokens), s_out.mask, video)
        losses = with_weighted_term(objective(s_out, t_out), "pixel", pixel, pixel_weight)

    grid: token grid (F, H', W') of the clip; mean / std: the normalisation of the clip
    (undone before the targets are built, as VideoMAE does).
    """

    def __init__(
        self,
        encoder_dim: int,
        grid: tuple[int, int, int],
        patch_size: int,
        tubelet_size: int,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
        norm_pix_loss: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.norm_pix_loss = norm_pix_loss
        self.pixel_mean = None if mean is None else tuple(float(m) for m in mean)
        self.pixel_std = None if std is None else tuple(float(s) for s in std)
        out_dim = in_chans * tubelet_size * patch_size**2
        self.encoder_to_decoder = nn.Linear(encoder_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        n = self.grid[0] * self.grid[1] * self.grid[2]
        self.register_buffer("pos_embed", sinusoid_table(n, decoder_dim), persistent=False)
        # the clip statistics as buffers: they move with the module, no copy per step
        for name, value in (("mean", self.pixel_mean), ("std", self.pixel_std)):
            table = None if value is None else torch.tensor(value, dtype=torch.float32)
            self.register_buffer(f"pixel_{name}_table", table, persistent=False)
        self.decoder = VideoMAEDecoder(
            decoder_dim,
            decoder_depth,
            decoder_heads,
            out_dim,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            norm_eps=norm_eps,
        )
        trunc_normal_init(self.encoder_to_decoder)
        # the official trunc_normal_ wrapper cuts at +-std
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    @classmethod
    def for_encoder(
        cls,
        encoder: VideoViT,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        norm_pix_loss: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> PixelReconstruction:
        """A head sized for ``encoder`` (its width, grid, patch and block settings)."""
        args = (decoder_dim, decoder_depth, decoder_heads, norm_pix_loss, mean, std)
        return cls(**_sized_for(encoder.cfg, *args))

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def predict_pixels(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N_vis, D) final-normed visible tokens; mask: (B, N) True = hidden
        -> (B, N_hid, out_dim) pixel predictions of the hidden tokens, in token order."""
        if mask.shape[1] != self.pos_embed.shape[0]:
            raise ValueError(
                f"pixel reconstruction runs at the configured token grid {self.grid} "
                f"({self.pos_embed.shape[0]} tokens), got a mask over {mask.shape[1]} tokens"
            )
        x = self.encoder_to_decoder(tokens)  # (B, N_vis, D_dec)
        visible, hidden = split_tokens(mask, x.shape[1])  # no host sync: counts from shapes
        pos = self.pos_embed.to(x.dtype)  # (N, D_dec)
        pos_vis, pos_hid = take_tokens(pos, visible), take_tokens(pos, hidden)
        x = torch.cat([x + pos_vis, self.mask_token.to(x.dtype) + pos_hid], dim=1)
        return self.decoder(x, return_last=hidden.shape[1])

    def targets(
        self, video: torch.Tensor, mask: torch.Tensor, num_hidden: int | None = None
    ) -> torch.Tensor:
        """(B, C, T, H, W) clip, (B, N) mask -> (B, N_hid, out_dim) fp32 targets, no grad.
        ``num_hidden``: N_hid when known (a prediction's shape), else counted (a host sync)."""
        with torch.no_grad():
            t = pixel_targets(
                video,
                self.patch_size,
                self.tubelet_size,
                self.norm_pix_loss,
                self.pixel_mean_table,
                self.pixel_std_table,
            )
            if num_hidden is None:
                num_hidden = int(mask[0].sum())
            n = mask.shape[1]
            return take_tokens(t, split_tokens(mask, n - num_hidden)[1])

    def pixel_loss(
        self, tokens: torch.Tensor, mask: torch.Tensor, video: torch.Tensor
    ) -> torch.Tensor:
        """MSE between predicted and target pixels of the hidden tokens (a scalar, fp32)."""
        pred = self.predict_pixels(tokens, mask)
        return F.mse_loss(pred.float(), self.targets(video, mask, pred.shape[1]))

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, video: torch.Tensor
    ) -> torch.Tensor:
        return self.pixel_loss(tokens, mask, video)


class VideoMAEPretrain(PixelReconstruction):
    """VideoMAE pre-training model: an encoder plus the pixel head. ``forward(video, mask)``
    returns ``{"loss": mse}``.

    encoder: a ``VideoViT`` without head; its final norm feeds ``encoder_to_decoder``.
    The decoder sees the projected visible tokens plus ``mask_token`` at every hidden position
    (each with its fixed sine-cosine position), and predicts the hidden tokens' pixels.
    mean / std: how the clips were normalised (undone for the targets, as VideoMAE does).
    """

    def __init__(
        self,
        encoder: VideoViT,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        norm_pix_loss: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        cfg = encoder.cfg
        if cfg.num_classes:
            raise ValueError("the pre-training encoder must have no head (num_classes=0)")
        args = (decoder_dim, decoder_depth, decoder_heads, norm_pix_loss, mean, std)
        super().__init__(**_sized_for(cfg, *args))
        self.encoder = encoder

    def predict(
        self, video: torch.Tensor, mask: torch.Tensor, visible: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pixel predictions of the hidden tokens: (B, N_hidden, out_dim), in token order."""
        grid = self.encoder.token_grid(video.shape)
        if grid != self.encoder.cfg.grid:
            raise ValueError(
                f"pre-training runs at the configured token grid {self.encoder.cfg.grid}, got {grid}"
            )
        enc = self.encoder.forward_features(video, mask, visible=visible)
        return self.predict_pixels(self.encoder.norm(enc.tokens), mask)

    def forward(
        self, video: torch.Tensor, mask: torch.Tensor, visible: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """video (B, C, T, H, W), mask (B, N) bool True = hidden (``visible``: the collate's
        (B, N_vis) visible indices, optional) -> {"loss": scalar}."""
        pred = self.predict(video, mask, visible)  # (B, N_hid, P*C)
        return {"loss": F.mse_loss(pred.float(), self.targets(video, mask, pred.shape[1]))}
