"""VideoMAE pre-training: an encoder on the visible tokens, a light decoder on all tokens.

Parameter names follow the official VideoMAE ``PretrainVisionTransformer`` (``encoder.*``,
``encoder_to_decoder``, ``mask_token``, ``decoder.blocks.*``, ``decoder.norm``, ``decoder.head``),
so the official layout loads key for key. The target of every hidden token is its tubelet of
pixels ``(tubelet, patch, patch, C)`` normalised per patch and per channel (``norm_pix_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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
    video: torch.Tensor, patch_size: int, tubelet_size: int, normalize: bool = True
) -> torch.Tensor:
    """Per-token regression targets (B, N, tubelet * patch * patch * C), in VideoMAE's order.

    With ``normalize`` every patch is standardised per channel (unbiased variance, eps 1e-6).
    The input is the clip as the model sees it; per-patch normalisation makes the target the
    same as VideoMAE's (which first undoes the mean/std normalisation) up to that eps.
    """
    x = patchify(video.float(), patch_size, tubelet_size)  # (B, N, P, C)
    if normalize:
        mean = x.mean(dim=-2, keepdim=True)
        var = x.var(dim=-2, unbiased=True, keepdim=True)
        x = (x - mean) / (var.sqrt() + 1e-6)
    return x.flatten(2)


class VideoMAEPretrain(nn.Module):
    """VideoMAE pre-training model. ``forward(video, mask)`` returns ``{"loss": mse}``.

    encoder: a ``VideoViT`` without head; its final norm feeds ``encoder_to_decoder``.
    The decoder sees the projected visible tokens plus ``mask_token`` at every hidden position
    (each with its fixed sine-cosine position), and predicts the hidden tokens' pixels.
    """

    def __init__(
        self,
        encoder: VideoViT,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        cfg = encoder.cfg
        if cfg.num_classes:
            raise ValueError("the pre-training encoder must have no head (num_classes=0)")
        self.encoder = encoder
        self.norm_pix_loss = norm_pix_loss
        out_dim = cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2
        self.encoder_to_decoder = nn.Linear(cfg.embed_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        n = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
        self.register_buffer("pos_embed", sinusoid_table(n, decoder_dim), persistent=False)
        self.decoder = VideoMAEDecoder(
            decoder_dim,
            decoder_depth,
            decoder_heads,
            out_dim,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            init_values=cfg.init_values,
            norm_eps=cfg.norm_eps,
        )
        trunc_normal_init(self.encoder_to_decoder)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def predict(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pixel predictions of the hidden tokens: (B, N_hidden, out_dim), in token order."""
        enc = self.encoder.forward_features(video, mask)
        x = self.encoder_to_decoder(self.encoder.norm(enc.tokens))  # (B, N_vis, D_dec)
        b, n_vis, d = x.shape
        grid = self.encoder.token_grid(video.shape)
        pos = self._decoder_positions(grid).to(x.dtype).expand(b, -1, -1)  # (B, N, D_dec)
        pos_vis = pos[~mask].reshape(b, n_vis, d)
        pos_hid = pos[mask].reshape(b, -1, d)
        n_hid = pos_hid.shape[1]
        x = torch.cat([x + pos_vis, self.mask_token.to(x.dtype) + pos_hid], dim=1)
        return self.decoder(x, return_last=n_hid)

    def _decoder_positions(self, grid: tuple[int, int, int]) -> torch.Tensor:
        if grid != self.encoder.cfg.grid:
            raise ValueError(
                f"pre-training runs at the configured token grid {self.encoder.cfg.grid}, got {grid}"
            )
        return self.pos_embed

    def forward(self, video: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """video (B, C, T, H, W), mask (B, N) bool True = hidden -> {"loss": scalar}."""
        pred = self.predict(video, mask)  # (B, N_hid, P*C)
        cfg = self.encoder.cfg
        with torch.no_grad():
            target = pixel_targets(video, cfg.patch_size, cfg.tubelet_size, self.norm_pix_loss)
            target = target[mask].reshape(pred.shape)
        return {"loss": F.mse_loss(pred.float(), target)}
