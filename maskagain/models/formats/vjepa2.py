"""V-JEPA 2 checkpoints: transformers' ``VJEPA2Model`` weights and ``config.json``, and the
original V-JEPA 2 ``.pt`` training checkpoints, converted to the keys of
:class:`~maskagain.models.vjepa2.VJEPA2Encoder` (the original code's: ``blocks.N.attn.qkv``,
``blocks.N.mlp.fc1``, ``norm``, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from maskagain.checkpoints import CheckpointError
from maskagain.models.families import LAYOUT_VJEPA2
from maskagain.models.formats.geometry import block_depth, make_config, resolve_heads
from maskagain.models.formats.keys import swap_prefix
from maskagain.models.vjepa2 import VJEPA2Config

# Our keys are the original V-JEPA 2 code's (blocks.N.attn.qkv, blocks.N.mlp.fc1, norm, ...).
_HF_LAYER = {  # transformers VJEPA2Layer sub-key -> ours
    "norm1.": "norm1.",
    "norm2.": "norm2.",
    "attention.proj.": "attn.proj.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}


# transformers VJEPA2Model / VJEPA2ForVideoClassification parts that are not the encoder
HF_NOT_ENCODER = re.compile(r"^(predictor\.|pooler\.|classifier\.)")


def is_vjepa2_hf_state(sd: dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` holds transformers ``VJEPA2Model`` (or classifier) weights."""
    return any(
        k.startswith(("encoder.embeddings.patch_embeddings.", "vjepa2.encoder.embeddings."))
        for k in sd
    )


def is_original_checkpoint(obj: dict) -> bool:
    """Whether a ``torch.load``-ed object is an original V-JEPA 2 training checkpoint: an
    ``encoder`` state dict (``module.backbone.`` prefixes) whose attention has a full qkv bias,
    next to a ``predictor``."""
    encoder = obj.get("encoder")
    if not isinstance(encoder, dict) or not isinstance(obj.get("predictor"), dict):
        return False
    keys = [k.removeprefix("module.").removeprefix("backbone.") for k in encoder]
    return "patch_embed.proj.weight" in keys and any(
        re.fullmatch(r"blocks\.\d+\.attn\.qkv\.weight", k) for k in keys
    )


def hf_to_vjepa2(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``VJEPA2Model`` weights -> this encoder's keys; predictor, pooler and
    classifier weights are dropped, anything unknown is kept for the strict load to report."""
    sd = {k.removeprefix("vjepa2."): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if HF_NOT_ENCODER.match(key):
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)$", key)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            a = re.match(r"attention\.(query|key|value)\.(weight|bias)$", rest)
            if a:
                qkv.setdefault(i, {})[f"{a.group(1)}.{a.group(2)}"] = value
                continue
            renamed = swap_prefix(rest, _HF_LAYER)
            out[key if renamed is None else f"blocks.{i}.{renamed}"] = value
        elif key.startswith("encoder.embeddings.patch_embeddings.proj."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("encoder.layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        else:
            out[key] = value
    for i, parts in qkv.items():
        for kind in ("weight", "bias"):
            names = [f"{p}.{kind}" for p in ("query", "key", "value")]
            present = [n for n in names if n in parts]
            if present and len(present) < 3:
                missing = sorted(set(names) - set(present))
                raise KeyError(f"encoder.layer.{i}.attention.{missing[0]}")
            if present:
                out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in names])
    return out


def vjepa2_config_from_hf(config: dict) -> dict:
    """VJEPA2Config fields from a transformers ``VJEPA2Config`` ``config.json`` dict."""
    patch = config.get("patch_size", 16)
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise ValueError(f"non-square patch_size {patch} is not supported")
        patch = patch[0]
    return dict(
        embed_dim=config.get("hidden_size", 1024),
        depth=config.get("num_hidden_layers", 24),
        num_heads=config.get("num_attention_heads", 16),
        mlp_ratio=float(config.get("mlp_ratio", 4.0)),
        patch_size=patch,
        tubelet_size=config.get("tubelet_size", 2),
        img_size=config.get("crop_size", 256),
        num_frames=config.get("frames_per_clip", 64),
        in_chans=config.get("in_chans", 3),
        qkv_bias=bool(config.get("qkv_bias", True)),
        norm_eps=config.get("layer_norm_eps", 1e-6),
        hidden_act=config.get("hidden_act", "gelu"),
    )


def original_encoder(encoder: dict, path: Path) -> dict[str, torch.Tensor]:
    """The ``encoder`` of an original V-JEPA 2 ``.pt`` (as its hub loader reads it)."""
    sd = {
        k.removeprefix("module.").removeprefix("backbone."): v
        for k, v in encoder.items()
        if isinstance(v, torch.Tensor)
    }
    if "pos_embed" in sd:
        raise CheckpointError(
            f"{path} is a V-JEPA encoder with a position table (V-JEPA 1, use_rope=False); only "
            "V-JEPA 2's rotary encoders are supported"
        )
    return sd


def vjepa2_weights(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    try:
        return hf_to_vjepa2(sd)
    except KeyError as e:
        raise CheckpointError(f"{path}: V-JEPA 2 weights lack {e.args[0]}") from None


def infer_vjepa2_config(sd: dict[str, torch.Tensor], **overrides) -> VJEPA2Config:
    """VJEPA2Config from V-JEPA 2 encoder weights (our keys); heads as in :func:`infer_config`."""
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.ndim != 5:
        raise CheckpointError("V-JEPA 2 weights without a 5-D patch_embed.proj.weight")
    dim, depth = w.shape[0], block_depth(sd)
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * dim
    cfg = dict(
        embed_dim=dim,
        depth=depth,
        mlp_ratio=hidden / dim,
        patch_size=w.shape[3],
        tubelet_size=w.shape[2],
        in_chans=w.shape[1],
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
    )
    if "num_heads" not in overrides:
        cfg["num_heads"] = resolve_heads(dim, depth, hidden, w.shape[3], {}, LAYOUT_VJEPA2)
    return make_config({**cfg, **overrides}, VJEPA2Config)
