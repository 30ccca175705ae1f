"""V-JEPA 2 video encoder (3D rotary positions) as a teacher.

The same computation as ``transformers``' ``VJEPA2Model`` encoder and the original V-JEPA 2
``VisionTransformer`` with ``use_rope=True``: a Conv3d tubelet embedding without a position table,
pre-norm blocks whose attention rotates q and k by each token's (t, h, w) position, exact-GELU
MLPs, and a final LayerNorm. Each head's dimension ``d`` is split into three equal even parts
``2 * ((d // 3) // 2)`` for t, h and w (in that order); the last ``d - 3 * part`` dimensions are
not rotated. Within a part of size ``p``, pairs ``(x[2i], x[2i+1])`` are rotated by the angles
``pos * 10000 ** -(j / (p / 2))`` with ``j = i mod p/2`` (the published models' frequency layout,
which repeats the ``p/2`` frequencies over the part rather than interleaving them).

Like V-JEPA's context encoder, a masked forward runs only the visible tokens, and every visible
token is rotated by its true (t, h, w) in the clip's own token grid, so any clip whose frame
count and size the tubelet and patch divide works (e.g. 16x224x224 for a model published at
256). transformers' ``VJEPA2Model`` derives positions from its configured ``crop_size`` and
agrees with this encoder at that size only.

Input ``(B, C, T, H, W)``; an optional boolean mask ``(B, N)`` with True = hidden, tokens in
``(t, h, w)`` order, the convention of :class:`~maskagain.models.vit.VideoViT`, whose teacher
interface (``forward_features`` -> :class:`~maskagain.models.vit.EncoderOutput`) this module
presents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from maskagain.models.layers import AttentionTap, DropPath, Mlp, PatchEmbed3d, trunc_normal_init
from maskagain.models.vit import EncoderGeometry, EncoderOutput, VideoViT

ROPE_THETA = 10000.0


@dataclass
class VJEPA2Config(EncoderGeometry):
    """Architecture of a V-JEPA 2 encoder.

    ``img_size`` / ``num_frames`` are the published input (``crop_size`` / ``frames_per_clip``);
    rotary positions make the encoder accept other sizes. The fields after ``hidden_act`` are
    fixed: they let code written for :class:`~maskagain.models.vit.ModelConfig` read this one
    (no head, a final norm, mean pooling, no layer scale).
    """

    # the published ViT-L at 64 x 256 x 256 (the other geometry fields keep their defaults)
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    img_size: int = 256
    num_frames: int = 64
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    hidden_act: str = "gelu"
    num_classes: int = 0
    final_norm: bool = True
    fc_norm: bool = False
    pooling: str = "mean"
    init_values: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if rope_part(self.embed_dim // self.num_heads) == 0:
            raise ValueError(
                f"head dimension {self.embed_dim // self.num_heads} is too small for 3D rotary "
                "positions (needs at least 6)"
            )
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported (only 'gelu')")
        fixed = dict(num_classes=0, final_norm=True, fc_norm=False, pooling="mean", init_values=0.0)
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(f"a V-JEPA 2 encoder has {name}={value!r}")


def rope_part(head_dim: int) -> int:
    """Dimensions of a head rotated per axis (t, h, w): the even number ``2 * ((d // 3) // 2)``."""
    return 2 * ((head_dim // 3) // 2)


def token_positions(ids: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Flat token indices (B, N) in a ``grid`` (F, H', W') -> (B, N, 3) long (t, h, w)."""
    per_frame = grid[1] * grid[2]
    t = ids.div(per_frame, rounding_mode="floor")
    rest = ids.remainder(per_frame)
    h, w = rest.div(grid[2], rounding_mode="floor"), rest.remainder(grid[2])
    return torch.stack((t, h, w), dim=-1)


def rope_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (B, 1, N, 3 * part) fp32, for (B, N, 3) positions."""
    part = rope_part(head_dim)
    half = part // 2
    omega = torch.arange(half, dtype=torch.float32, device=positions.device) / (part / 2.0)
    omega = 1.0 / ROPE_THETA**omega  # (part/2,)
    angles = positions.to(torch.float32)[..., None] * omega  # (B, N, 3, part/2)
    angles = torch.cat((angles, angles), dim=-1).flatten(-2)  # (B, N, 3 * part)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of x (B, heads, N, d_k) pairwise; keep the rest."""
    r = cos.shape[-1]
    xr, tail = x[..., :r], x[..., r:]
    pairs = xr.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    rotated = xr * cos.to(x.dtype) + turned * sin.to(x.dtype)
    return torch.cat((rotated, tail), dim=-1)


class RopeAttention(nn.Module):
    """Multi-head self-attention with fused q/k/v (biases optional) and 3D rotary q and k.

    ``forward`` runs fused SDPA; ``forward_tapped`` computes the logits in fp32 (q and k upcast,
    autocast off) and returns them with the values, as
    :meth:`maskagain.models.layers.Attention.forward_tapped` does.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # each (B, heads, N, d_k)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return self.proj(x.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = self._qkv(x)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self._out(F.scaled_dot_product_attention(q, k, v))

    def forward_tapped(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, AttentionTap]:
        q, k, v = self._qkv(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            q, k = apply_rope(q.float(), *rope), apply_rope(k.float(), *rope)
            logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N) fp32
            out = logits.softmax(dim=-1) @ v.float()
        return self._out(out.to(v.dtype)), AttentionTap(logits=logits, values=v)


class RopeBlock(nn.Module):
    """Pre-norm transformer block with rotary attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = RopeAttention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio, 6)))  # exact for ratios like 48 / 11

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_tapped(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, AttentionTap]:
        y, tap = self.attn.forward_tapped(self.norm1(x), rope)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x))), tap


class VJEPA2Encoder(nn.Module):
    """V-JEPA 2 encoder with the teacher interface of :class:`~maskagain.models.vit.VideoViT`."""

    def __init__(self, cfg: VJEPA2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = 0
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed3d(
            cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.tubelet_size
        )
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            RopeBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, p, cfg.norm_eps)
            for p in dpr
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.grad_checkpointing = False
        self.apply(trunc_normal_init)

    # the input and mask checks are VideoViT's, so both encoders accept and refuse the same clips
    token_grid = VideoViT.token_grid
    _check_mask = VideoViT._check_mask
    _visible_ids = VideoViT._visible_ids
    _block_index = VideoViT._block_index

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward_features(
        self,
        video: torch.Tensor,
        mask: torch.Tensor | None = None,
        attn_layers: tuple[int, ...] | list[int] = (),
        visible: torch.Tensor | None = None,
        blocks: tuple[int, ...] | list[int] = (),
    ) -> EncoderOutput:
        """Encode the visible tokens of ``video`` (B, C, T, H, W); ``tokens`` are (B, N_vis, D)
        before the final norm.

        ``attn_layers`` names the blocks (negative indices count from the end) whose attention
        logits (fp32) and values are returned; the other blocks run fused SDPA. ``blocks`` names the blocks whose output tokens
        are returned too (``EncoderOutput.blocks``). ``visible``:
        the mask's (B, N_vis) visible token indices (the collate's), saving a host sync.
        """
        grid = self.token_grid(video.shape)
        b, n = video.shape[0], math.prod(grid)
        if mask is None:
            ids = torch.arange(n, device=video.device).expand(b, n)
            x = self.patch_embed(video)  # (B, N, D)
        else:
            ids = self._visible_ids(mask, b, n, visible)  # (B, N_vis) ascending
            x = self.patch_embed.forward_visible(video, ids)  # (B, N_vis, D)
        rope = rope_tables(token_positions(ids, grid), self.cfg.embed_dim // self.cfg.num_heads)
        taps = {self._block_index(i) for i in attn_layers}
        wanted = {self._block_index(i) for i in blocks}
        attn: dict[int, AttentionTap] = {}
        outputs: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            if i in taps:
                x, attn[i] = blk.forward_tapped(x, rope)
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, rope, use_reentrant=False)
            else:
                x = blk(x, rope)
            if i in wanted:
                outputs[i] = x
        frame_index = ids.div(grid[1] * grid[2], rounding_mode="floor")
        return EncoderOutput(
            tokens=x, frame_index=frame_index, attn=attn, mask=mask, blocks=outputs
        )

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) block output -> (B, D): final norm, then the mean over tokens."""
        return self.norm(tokens).mean(1)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) block output -> (B, D) pooled feature (the encoder has no head)."""
        return self.pool(tokens)

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(video, mask).tokens)

    def no_weight_decay(self) -> set[str]:
        return set()
