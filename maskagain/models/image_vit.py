"""Image encoders for MVD's co-teaching: MAE-pre-trained ViTs on single frames.

MVD (``modeling_teacher.py`` of github.com/ruiwang2021/mvd) distils from an image teacher beside
the video one: an MAE encoder (patch embedding, a class token, MAE's fixed 2-D sine-cosine
positions, pre-norm blocks with q, k and v biases) run on frames, whose features are the LAST
block's patch tokens WITHOUT the final LayerNorm, the class token dropped. Its loader throws the
checkpoint's ``pos_embed`` away and keeps the table computed for the run's grid; so does
:func:`load_image_encoder`, after checking that the stored table is MAE's (a ViT trained with
learned positions is refused: it would run with positions it never saw).

The checkpoints' k bias is dropped: it adds one number to all of a query's logits, which the
softmax cancels, so the blocks are :class:`maskagain.models.layers.Block` (q and v biases) and
compute the same function.

Sources: an official MAE ``.pth`` (``mae_pretrain_vit_base.pth``: ``{"model": ...}``, also full
pre-training checkpoints with a decoder), a ``.safetensors`` file with those keys, or a Hugging
Face ``ViTMAEModel`` / ``ViTMAEForPreTraining`` directory or hub id (``facebook/vit-mae-base``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from maskagain.checkpoints import (
    CheckpointError,
    hf_weights,
    safetensors_load,
    torch_load,
    unwrap_state_dict,
)
from maskagain.models.formats.geometry import block_depth
from maskagain.models.formats.videomae import hf_to_official
from maskagain.models.layers import Block, resolve_block
from maskagain.models.loading import load_strict, resolve_source

log = logging.getLogger(__name__)

# published MAE encoders: (width, depth, patch) -> heads (ViT-B/16, ViT-L/16, ViT-H/14)
MAE_HEADS = {(768, 12, 16): 12, (1024, 24, 16): 16, (1280, 32, 14): 16}
# weights an image teacher does not use: MAE's decoder and mask token, a classifier head, the
# final norm (MVD's teacher returns the tokens before it)
_UNUSED = re.compile(r"^(decoder|mask_token$|head\.|fc_norm\.|norm\.)")


@dataclass(frozen=True)
class ImageViTConfig:
    """Geometry of an image ViT; the input size is free (positions follow the patch grid)."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    mlp_ratio: float = 4.0
    in_chans: int = 3
    qkv_bias: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(
                f"width {self.embed_dim} must divide by num_heads={self.num_heads} and by 4 "
                "(MAE's 2-D sine-cosine positions)"
            )


def mae_position_table(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine positions for a (grid_h, grid_w) patch grid: (grid_h * grid_w,
    dim) fp32, patches in row-major order; the first dim/2 channels encode the column, the rest
    the row (``get_2d_sincos_pos_embed``: its "h" half is fed the w coordinates)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    halves = []
    for coord in (cols.flatten(), rows.flatten()):
        angle = coord[:, None] * omega[None]  # (N, dim/4)
        halves += [angle.sin(), angle.cos()]
    return torch.cat(halves, dim=1).float()


@dataclass
class ImageOutput:
    """What ``ImageViT.forward_features`` returns.

    tokens: (B, N, D) the last block's patch tokens (class token dropped, no final norm).
    blocks: block index (0-based) -> (B, N, D) patch tokens of that block, only those asked for.
    """

    tokens: torch.Tensor
    blocks: dict[int, torch.Tensor] = field(default_factory=dict)


class ImageViT(nn.Module):
    """An MAE-style image encoder as MVD's image teacher runs it.

    ``forward(images (B, C, H, W)) -> (B, H/p * W/p, D)``: the last block's patch tokens (class
    token dropped, no final norm), patches in row-major order; ``forward_features(images,
    blocks=...)`` also returns the patch tokens of the blocks asked for.
    """

    def __init__(self, cfg: ImageViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.embed_dim, cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_chans, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth)
        )
        self._positions: dict[tuple, torch.Tensor] = {}

    def positions(self, grid_h: int, grid_w: int, like: torch.Tensor) -> torch.Tensor:
        """(grid_h * grid_w, D) position table on ``like``'s device and dtype (cached per grid,
        device and dtype: no copy per call)."""
        key = (grid_h, grid_w, like.device, like.dtype)
        if key not in self._positions:
            table = mae_position_table(grid_h, grid_w, self.cfg.embed_dim)
            self._positions[key] = table.to(like.device, like.dtype)
        return self._positions[key]

    def forward_features(
        self, images: torch.Tensor, blocks: tuple[int, ...] | list[int] = ()
    ) -> ImageOutput:
        """Encode ``images`` (B, C, H, W); ``blocks`` names the blocks (negative indices count
        from the end) whose patch tokens are returned too (``ImageOutput.blocks``)."""
        x = self.patch_embed(images)  # (B, D, H', W')
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.positions(gh, gw, x)
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)  # its position is 0
        x = torch.cat((cls, x), dim=1)
        wanted = {resolve_block(i, len(self.blocks)) for i in blocks}
        outputs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                outputs[i] = x[:, 1:]
        return ImageOutput(tokens=x[:, 1:], blocks=outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) the last block's patch tokens."""
        return self.forward_features(images).tokens


# ------------------------------------------------------------------------------------- loading
def _hf_vit_to_mae(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ViT / ViTMAE encoder keys -> MAE's. Their blocks are named as VideoMAE's in
    transformers, so its renaming serves (q and v biases kept apart, the k bias dropped)."""
    sd = hf_to_official({k.removeprefix("vit."): v for k, v in sd.items()})
    renames = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed"}
    return {renames.get(k, k): v for k, v in sd.items()}


def _to_blocks(sd: dict[str, torch.Tensor], dim: int) -> dict[str, torch.Tensor]:
    """MAE keys -> :class:`ImageViT` keys: ``patch_embed.proj`` -> ``patch_embed``, a fused qkv
    bias split into q and v biases (the k bias is dropped: the softmax cancels it)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("patch_embed.proj."):
            out[key.replace("patch_embed.proj.", "patch_embed.")] = value
        elif key.endswith(".attn.qkv.bias"):
            stem = key.removesuffix("qkv.bias")
            out[stem + "q_bias"], out[stem + "v_bias"] = value[:dim], value[2 * dim :]
        else:
            out[key] = value
    return out


def _check_positions(pos: torch.Tensor, source) -> None:
    """A stored table must be MAE's fixed sine-cosine one (class token row 0)."""
    table = pos.reshape(-1, pos.shape[-1]).float()
    side = math.isqrt(table.shape[0] - 1)
    if side * side != table.shape[0] - 1:
        raise CheckpointError(
            f"{source}: pos_embed has {table.shape[0]} rows, not a class token plus a square "
            "patch grid; an MAE image encoder was expected"
        )
    expected = torch.cat(
        (torch.zeros(1, table.shape[1]), mae_position_table(side, side, table.shape[1]))
    )
    if not torch.allclose(table, expected, atol=1e-3):
        raise CheckpointError(
            f"{source}: its position table is not MAE's fixed sine-cosine one (largest "
            f"difference {float((table - expected).abs().max()):.3g}): this image ViT was trained "
            "with learned positions. MVD's image teacher is an MAE encoder, whose positions the "
            "loader recomputes for the clip's grid; give an MAE-pre-trained ViT (e.g. "
            "mae_pretrain_vit_base.pth or facebook/vit-mae-base)"
        )


def _read(source: str | Path) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(MAE-layout state dict, Hugging Face config or {}, format name) of ``source``."""
    path = resolve_source(source)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(
                f"{path} is a directory without config.json: give an MAE .pth file or a Hugging "
                "Face ViTMAE directory as the image teacher"
            )
        config = json.loads(config_file.read_text())
        model_type = config.get("model_type")
        if model_type not in ("vit_mae", "vit"):
            raise CheckpointError(
                f"{path} holds a Hugging Face {model_type!r} model; the image teacher must be an "
                "image ViT ('vit_mae', e.g. facebook/vit-mae-base). A video encoder goes in "
                "teacher.source"
            )
        return _hf_vit_to_mae(hf_weights(path)), config, f"Hugging Face {model_type}"
    if path.suffix == ".safetensors":
        sd = safetensors_load(path)[0]
    else:
        sd = unwrap_state_dict(torch_load(path), path)
    if any(k.startswith(("vit.embeddings.", "embeddings.")) for k in sd):
        return _hf_vit_to_mae(sd), {}, "Hugging Face ViT weights"
    return sd, {}, "MAE"


def _config(sd: dict[str, torch.Tensor], hf: dict, source, overrides: dict) -> ImageViTConfig:
    proj = sd.get("patch_embed.proj.weight")
    if proj is not None and proj.ndim == 5:
        raise CheckpointError(
            f"{source} is a video encoder (its patch embedding is 3-D, over tubelets): the image "
            "teacher must be an image ViT (MAE); video teachers go in teacher.source"
        )
    if proj is None or "cls_token" not in sd or "blocks.0.attn.qkv.weight" not in sd:
        raise CheckpointError(
            f"{source} does not look like an MAE image encoder (it needs cls_token, "
            f"patch_embed.proj.weight and blocks.N.attn.qkv.*; found {sorted(sd)[:8]})"
        )
    dim, depth, patch = proj.shape[0], block_depth(sd), proj.shape[-1]
    heads = overrides.get("num_heads") or hf.get("num_attention_heads")
    heads = heads or MAE_HEADS.get((dim, depth, patch))
    if not heads:
        raise CheckpointError(
            f"{source}: cannot tell the head count of a {dim}-wide, {depth}-block image ViT "
            f"with {patch}px patches (not a published MAE size); set image_teacher.overrides."
            "num_heads"
        )
    values = {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": int(heads),
        "patch_size": patch,
        "mlp_ratio": sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        "in_chans": proj.shape[1],
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd or "blocks.0.attn.q_bias" in sd,
        "norm_eps": float(hf.get("layer_norm_eps", 1e-6)),
    }
    values.update({k: v for k, v in overrides.items() if k != "num_heads"})
    try:
        return ImageViTConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: {err}") from None


def load_image_encoder(source: str | Path, **overrides) -> ImageViT:
    """An MAE image encoder from an official ``.pth`` / ``.safetensors`` file or a Hugging Face
    ViTMAE directory or hub id. ``overrides``: ``num_heads`` (needed outside the published MAE
    sizes when the file does not say), ``norm_eps``. Raises ``CheckpointError`` for a file that
    is not an MAE image encoder (a video encoder, learned positions, missing weights)."""
    unknown = set(overrides) - {"num_heads", "norm_eps"}
    if unknown:
        raise CheckpointError(
            f"image encoder overrides can be num_heads and norm_eps, not {sorted(unknown)}"
        )
    sd, hf, fmt = _read(source)
    cfg = _config(sd, hf, source, overrides)
    pos = sd.pop("pos_embed", None)
    if pos is not None:
        _check_positions(pos, source)
    sd = _to_blocks({k: v for k, v in sd.items() if not _UNUSED.match(k)}, cfg.embed_dim)
    model = ImageViT(cfg)
    load_strict(model, sd, source, fmt, kind="image ViT")
    log.info(
        "loaded %s image encoder %s: width %d, %d blocks, %d heads, patch %d",
        fmt, source, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size,
    )  # fmt: skip
    return model
