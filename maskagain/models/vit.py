"""The VideoMAE family of video vision transformers.

Input ``(B, C, T, H, W)``; an optional boolean mask ``(B, N)`` with True = hidden, tokens in
``(t, h, w)`` order; only visible tokens enter the blocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from maskagain.masking import split_tokens
from maskagain.models.layers import (
    AttentionTap,
    Block,
    PatchEmbed3d,
    resize_position_table,
    resolve_block,
    sinusoid_table,
    trunc_normal_init,
)


@dataclass
class EncoderGeometry:
    """The fields every video encoder config has (VideoViT's ``ModelConfig``, V-JEPA 2's
    ``VJEPA2Config``), in their saved order, and the token grid they give."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    tubelet_size: int = 2
    img_size: int = 224
    num_frames: int = 16
    in_chans: int = 3
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (frames F, height, width) at the configured input size."""
        g = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size, g, g)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ModelConfig(EncoderGeometry):
    """Architecture of a video ViT. ``num_classes=0`` means no head (an encoder)."""

    init_values: float = 0.0
    norm_eps: float = 1e-6
    fc_norm_eps: float | None = None  # None -> norm_eps (transformers' classifier uses 1e-5)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    num_classes: int = 0
    final_norm: bool = True
    fc_norm: bool = False
    pooling: str = "mean"
    init_scale: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size={self.img_size} must be divisible by patch_size={self.patch_size}"
            )
        if self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames={self.num_frames} must be divisible by tubelet_size={self.tubelet_size}"
            )
        if self.pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {self.pooling!r}")


@dataclass
class EncoderOutput:
    """What ``forward_features`` returns.

    tokens: (B, N_vis, D) last block's output before the final norm.
    attn: block index -> AttentionTap, only for the blocks asked for.
    frame_index: (B, N_vis) long, temporal (frame) index of every visible token.
    mask: (B, N) bool or None, the mask that was applied (True = hidden).
    blocks: block index (0-based) -> (B, N_vis, D) output tokens, only for the blocks asked for.
    """

    tokens: torch.Tensor
    frame_index: torch.Tensor
    attn: dict[int, AttentionTap] = field(default_factory=dict)
    mask: torch.Tensor | None = None
    blocks: dict[int, torch.Tensor] = field(default_factory=dict)


class VideoViT(nn.Module):
    """VideoMAE-compatible video ViT: ``forward_features`` -> ``forward_head``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed3d(
            cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.tubelet_size
        )
        self.register_buffer(
            "pos_embed", sinusoid_table(_prod(cfg.grid), cfg.embed_dim), persistent=False
        )
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.qkv_bias,
                cfg.drop_rate,
                dpr[i],
                cfg.init_values,
                cfg.norm_eps,
            )
            for i in range(cfg.depth)
        )
        eps = cfg.norm_eps
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=eps) if cfg.final_norm else nn.Identity()
        fc_eps = cfg.fc_norm_eps if cfg.fc_norm_eps is not None else eps
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=fc_eps) if cfg.fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.grad_checkpointing = False
        self._pos_cache: dict[tuple[int, int, int], torch.Tensor] = {}
        self.apply(trunc_normal_init)
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(cfg.init_scale)
                self.head.bias.mul_(cfg.init_scale)

    # ------------------------------------------------------------------ helpers
    @property
    def depth(self) -> int:
        return len(self.blocks)

    def token_grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (F, H', W') for an input of shape (B, C, T, H, W); checks divisibility."""
        if len(video_shape) != 5:
            raise ValueError(
                f"expected a video batch (B, C, T, H, W), got shape {tuple(video_shape)}; "
                "add a batch dimension or permute (B, T, C, H, W) inputs with .transpose(1, 2)"
            )
        _, c, t, h, w = video_shape
        cfg = self.cfg
        if c != cfg.in_chans:
            raise ValueError(
                f"expected {cfg.in_chans} channels in dim 1, got {c} (shape {tuple(video_shape)})"
            )
        if t % cfg.tubelet_size:
            raise ValueError(
                f"T={t} frames is not divisible by tubelet_size={cfg.tubelet_size}; "
                f"sample a multiple of {cfg.tubelet_size} frames"
            )
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(
                f"H={h}, W={w} are not divisible by patch_size={cfg.patch_size}; "
                f"crop or resize to a multiple of {cfg.patch_size}"
            )
        return (t // cfg.tubelet_size, h // cfg.patch_size, w // cfg.patch_size)

    def position_table(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(N, D) position table for ``grid``, interpolated from the configured grid if needed."""
        if grid == self.cfg.grid:
            return self.pos_embed
        key = tuple(grid)
        cached = self._pos_cache.get(key)
        if cached is None or cached.device != self.pos_embed.device:
            cached = resize_position_table(self.pos_embed, self.cfg.grid, grid)
            self._pos_cache[key] = cached
        return cached

    def _check_mask(self, mask: torch.Tensor, batch: int, n: int) -> int:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = hidden), got {mask.dtype}")
        if mask.shape != (batch, n):
            raise ValueError(
                f"mask has shape {tuple(mask.shape)} but the clip has {n} tokens: expected ({batch}, {n}); "
                "build it with maskagain.masking for this clip's token grid"
            )
        visible = (n - mask.sum(1)).tolist()  # the one host sync of a masked forward
        if len(set(visible)) > 1:
            raise ValueError(
                f"every sample must keep the same number of visible tokens, got {visible}; "
                "use tube_mask / random_mask / frame_mask, which keep counts equal"
            )
        n_vis = visible[0] if batch else 0
        if n_vis == 0:
            raise ValueError("the mask hides every token; lower the mask ratio")
        return n_vis

    def _visible_ids(
        self, mask: torch.Tensor, batch: int, n: int, visible: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, N_vis) ascending indices of the visible tokens of ``mask``: ``visible`` when
        given (checked by shape only), else counted from the mask (one host sync)."""
        if visible is None:
            return split_tokens(mask, self._check_mask(mask, batch, n))[0]
        if mask.dtype != torch.bool or mask.shape != (batch, n):
            self._check_mask(mask, batch, n)  # raises the one-line error
        if visible.ndim != 2 or visible.shape[0] != batch or not 0 < visible.shape[1] <= n:
            raise ValueError(
                f"visible must be (B={batch}, N_vis) token indices of the mask, got shape "
                f"{tuple(visible.shape)}; build it with maskagain.masking.visible_indices"
            )
        return visible

    # ------------------------------------------------------------------ forward
    def forward_features(
        self,
        video: torch.Tensor,
        mask: torch.Tensor | None = None,
        attn_layers: tuple[int, ...] | list[int] = (),
        visible: torch.Tensor | None = None,
        blocks: tuple[int, ...] | list[int] = (),
    ) -> EncoderOutput:
        """Encode the visible tokens of ``video`` (B, C, T, H, W).

        ``attn_layers`` names the blocks (negative indices count from the end) whose attention
        logits and values are returned; the other blocks run fused SDPA. ``blocks`` names the
        blocks whose output tokens are returned too (``EncoderOutput.blocks``). ``visible``: the
        mask's (B, N_vis) ascending visible token indices (the collate's ``"visible"``): with
        them the forward needs no host sync to count the visible tokens.
        """
        grid = self.token_grid(video.shape)
        b, n = video.shape[0], _prod(grid)
        pos = self.position_table(grid)  # (N, D)
        if mask is None:
            frame_index = torch.arange(n, device=video.device).div_(
                grid[1] * grid[2], rounding_mode="floor"
            )
            frame_index = frame_index.expand(b, n)
            x = self.patch_embed(video)  # (B, N, D)
            x = x + pos.to(dtype=x.dtype)
        else:
            # only the visible tubelets are embedded: hidden ones would be dropped anyway
            ids = self._visible_ids(mask, b, n, visible)  # (B, N_vis) ascending
            x = self.patch_embed.forward_visible(video, ids)  # (B, N_vis, D)
            x = x + pos[ids].to(dtype=x.dtype)
            frame_index = ids.div(grid[1] * grid[2], rounding_mode="floor")
        x = self.pos_drop(x)
        taps = {self._block_index(i) for i in attn_layers}
        wanted = {self._block_index(i) for i in blocks}
        attn: dict[int, AttentionTap] = {}
        outputs: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            if i in taps:
                x, attn[i] = blk.forward_tapped(x)
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in wanted:
                outputs[i] = x
        return EncoderOutput(
            tokens=x, frame_index=frame_index, attn=attn, mask=mask, blocks=outputs
        )

    def _block_index(self, i: int) -> int:
        return resolve_block(i, self.depth)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) block output -> (B, D) pooled, normalised feature."""
        x = self.norm(tokens)
        x = x.mean(1) if self.cfg.pooling == "mean" else x[:, 0]
        return self.fc_norm(x)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) block output -> (B, num_classes) logits (or (B, D) without a head)."""
        return self.head(self.head_drop(self.pool(tokens)))

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(video, mask).tokens)

    def reset_head(self, num_classes: int, fc_norm: bool | None = None) -> None:
        """Replace the classification head (and optionally switch to mean pooling + fc_norm)."""
        cfg = self.cfg
        if fc_norm is not None and fc_norm != cfg.fc_norm:
            cfg.fc_norm = fc_norm
            eps = cfg.fc_norm_eps if cfg.fc_norm_eps is not None else cfg.norm_eps
            self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=eps) if fc_norm else nn.Identity()
            if fc_norm:
                cfg.final_norm = False
                self.norm = nn.Identity()
        cfg.num_classes = num_classes
        self.num_classes = num_classes
        self.head = nn.Linear(cfg.embed_dim, num_classes) if num_classes else nn.Identity()
        if num_classes:
            trunc_normal_init(self.head)
            with torch.no_grad():
                self.head.weight.mul_(cfg.init_scale)
        device = self.patch_embed.proj.weight.device
        self.fc_norm.to(device)
        self.head.to(device)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def _prod(grid: tuple[int, int, int]) -> int:
    return grid[0] * grid[1] * grid[2]
