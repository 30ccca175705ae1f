"""Building blocks of the VideoMAE vision transformer.

Same math as the official VideoMAE modelling: Conv3d tubelet embedding, pre-norm blocks whose
attention has q and v biases but no k bias, optional layer scale and drop path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """fp32 matmuls inside run in true fp32 (TF32 off on CUDA, autocast off), whatever
    ``torch.set_float32_matmul_precision`` says outside: the top-k selection logits and the
    relation similarities must order tokens as the CPU does."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


@dataclass
class AttentionTap:
    """What a tapped attention block hands to the distillation losses.

    logits: (B, heads, N_vis, N_vis) scaled pre-softmax attention logits ``(q * d_k**-0.5) @ k^T``,
    fp32 (computed from upcast q and k, also under autocast).
    values: (B, heads, N_vis, d_k) values, v bias included, before weighting and projection.
    """

    logits: torch.Tensor
    values: torch.Tensor


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D sine-cosine position table, shape (num_positions, dim), fp32."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    idx = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(idx, 2, rounding_mode="floor") / dim)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def resize_position_table(
    table: torch.Tensor, old_grid: tuple[int, int, int], new_grid: tuple[int, int, int]
) -> torch.Tensor:
    """Trilinearly interpolate a (N_old, D) table laid out as ``old_grid`` (t, h, w) to ``new_grid``."""
    if tuple(old_grid) == tuple(new_grid):
        return table
    d = table.shape[-1]
    grid = table.reshape(1, *old_grid, d).permute(0, 4, 1, 2, 3)  # (1, D, T, H, W)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="trilinear", align_corners=False)
    return grid.permute(0, 2, 3, 4, 1).reshape(-1, d)


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        noise = x.new_empty(shape).bernoulli_(keep).div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed3d(nn.Module):
    """Tubelet embedding: (B, C, T, H, W) -> (B, N, D), tokens in (t, h, w) order."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def forward_visible(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Embed only the kept tubelets: (B, C, T, H, W), ids (B, N_kept) token indices ->
        (B, N_kept, D).

        The same product as ``forward`` restricted to the kept tokens: the kept tubelets are
        gathered straight from the clip (no host sync) and go through one matrix product with
        the flattened Conv3d kernel, so hidden tubelets cost nothing.
        """
        b, c, t, h, w = x.shape
        q, p = self.tubelet_size, self.patch_size
        gh, gw = h // p, w // p
        tubes = x.reshape(b, c, t // q, q, gh, p, gw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        sample = torch.arange(b, device=x.device)[:, None]
        frame, rest = ids.div(gh * gw, rounding_mode="floor"), ids.remainder(gh * gw)
        patches = tubes[sample, frame, rest.div(gw, rounding_mode="floor"), rest.remainder(gw)]
        weight = self.proj.weight.flatten(1)  # (D, C * q * p * p), the order of a patch
        return F.linear(patches.flatten(2), weight, self.proj.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with q and v biases and no k bias (VideoMAE).

    ``forward`` runs fused scaled-dot-product attention; ``forward_tapped`` materialises the
    logits in fp32 and returns them with the values for distillation.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # each (B, heads, N, d_k)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, h * d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        return self._out(F.scaled_dot_product_attention(q, k, v))

    def forward_tapped(self, x: torch.Tensor) -> tuple[torch.Tensor, AttentionTap]:
        """Attention whose logits (B, heads, N, N) are computed in fp32 whatever the autocast:
        q and k are upcast for this one block, because bf16 logits tie at the top-k boundary
        the distillation selects on. The output returns in the values' dtype."""
        q, k, v = self._qkv(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            with true_fp32():  # the selection orders these logits: no TF32 rounding
                logits = (q.float() * self.scale) @ k.float().transpose(-2, -1)  # (B, heads, N, N)
            out = logits.softmax(dim=-1) @ v.float()
        return self._out(out.to(v.dtype)), AttentionTap(logits=logits, values=v)


class Block(nn.Module):
    """Pre-norm transformer block with optional layer scale (``gamma_1``/``gamma_2``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def _residual(self, x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor | None):
        return x + self.drop_path(y if gamma is None else gamma * y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, self.attn(self.norm1(x)), self.gamma_1)
        return self._residual(x, self.mlp(self.norm2(x)), self.gamma_2)

    def forward_tapped(self, x: torch.Tensor) -> tuple[torch.Tensor, AttentionTap]:
        y, tap = self.attn.forward_tapped(self.norm1(x))
        x = self._residual(x, y, self.gamma_1)
        return self._residual(x, self.mlp(self.norm2(x)), self.gamma_2), tap


def init_linear_and_norm(
    module: nn.Module, linear_weight_init: Callable[[torch.Tensor], object]
) -> None:
    """Linear weights by ``linear_weight_init``, zero biases, unit LayerNorms (other modules are
    left alone)."""
    if isinstance(module, nn.Linear):
        linear_weight_init(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """VideoMAE initialisation: truncated normal Linear weights, zero biases, unit LayerNorms."""
    init_linear_and_norm(module, lambda w: nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std))
    if isinstance(module, nn.Conv3d):
        w = module.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def resolve_block(index: int, depth: int) -> int:
    """Block ``index`` of a ``depth``-block encoder as a non-negative index (negative counts from
    the end, as in Python); raises IndexError when out of range."""
    j = index + depth if index < 0 else index
    if not 0 <= j < depth:
        raise IndexError(f"block {index} out of range for a {depth}-block encoder")
    return j


def num_tokens(grid: tuple[int, int, int]) -> int:
    return math.prod(grid)
