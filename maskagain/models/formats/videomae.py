"""VideoMAE checkpoints: the official VideoMAE / MaskAgain and VideoMAE V2 ``.pth`` layouts,
OpenGVLab's VideoMAE V2 hub directories and transformers' ``VideoMAE*`` weights, converted to the
official key layout :class:`~maskagain.models.vit.VideoViT` loads."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from maskagain.checkpoints import CheckpointError
from maskagain.models.families import LAYOUT_VIDEOMAE, is_videomae_v2_args
from maskagain.models.formats.geometry import block_depth, make_config, resolve_heads
from maskagain.models.formats.keys import swap_prefix
from maskagain.models.vit import ModelConfig

# keys of a VideoMAE pre-training checkpoint that are not part of the encoder
PRETRAIN_ONLY = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$|decoder_pos_embed$)")


# VideoMAE V2's Kinetics-710 label space (its fine-tuned and distilled heads)
_K710_CLASSES = 710


def hf_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename transformers' VideoMAE keys to the official layout (q, k, v fused into qkv)."""
    sd = {k[len("videomae.") :] if k.startswith("videomae.") else k: v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    simple = {
        "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
        "layernorm.": "norm.",
        "fc_norm.": "fc_norm.",
        "classifier.": "head.",
    }
    layer_map = {
        "attention.output.dense.": "attn.proj.",
        "intermediate.dense.": "mlp.fc1.",
        "output.dense.": "mlp.fc2.",
        "layernorm_before.": "norm1.",
        "layernorm_after.": "norm2.",
    }
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)$", k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            a = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            b = re.match(r"attention\.attention\.(q_bias|v_bias)$", rest)
            if a:
                qkv.setdefault(i, {})[f"{a.group(1)}.{a.group(2)}"] = v
                continue
            if b:
                out[f"blocks.{i}.attn.{b.group(1)}"] = v
                continue
            renamed = swap_prefix(rest, layer_map)
            # unknown: kept as it is, reported by the strict load
            out[k if renamed is None else f"blocks.{i}.{renamed}"] = v
            continue
        out[swap_prefix(k, simple) or k] = v
    for i, parts in qkv.items():
        try:
            out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
                [parts["query.weight"], parts["key.weight"], parts["value.weight"]]
            )
        except KeyError as e:
            raise CheckpointError(
                f"transformers checkpoint lacks encoder.layer.{i}.attention.attention.{e.args[0]}"
            ) from None
        if "query.bias" in parts:
            out[f"blocks.{i}.attn.q_bias"] = parts["query.bias"]
        if "value.bias" in parts:
            out[f"blocks.{i}.attn.v_bias"] = parts["value.bias"]
    return out


def strip_pretrain(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Official pre-training layout (``encoder.*``) -> encoder keys; says whether it was one."""
    if not any(k.startswith("encoder.") for k in sd):
        return sd, False
    out = {}
    for k, v in sd.items():
        if k.startswith("encoder."):
            out[k[len("encoder.") :]] = v
        elif not PRETRAIN_ONLY.match(k):
            out[k] = v  # unexpected: reported by the strict load
    return out, True


def infer_config(sd: dict[str, torch.Tensor], args: dict | None = None, **overrides) -> ModelConfig:
    """Infer a ModelConfig from official-layout encoder weights; ``overrides`` win.

    Width, depth, MLP width (``mlp_ratio``), patch and tubelet come from the weight shapes. The
    head count comes from ``num_heads=``, else the recorded training ``args``, else the table of
    known families; otherwise :class:`CheckpointError` asks for ``num_heads=``.
    """
    if "patch_embed.proj.weight" not in sd:
        raise CheckpointError(
            "no patch_embed.proj.weight: this is not a VideoMAE-style video ViT "
            f"(first keys: {sorted(sd)[:8]})"
        )
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 5:
        raise CheckpointError(
            f"patch_embed.proj.weight has shape {tuple(w.shape)}; a video ViT has a 5-D Conv3d "
            "kernel (an image ViT checkpoint cannot be loaded as a video encoder; an MAE image "
            "encoder can be MVD's image teacher: image_teacher.source)"
        )
    dim, in_chans, tubelet, patch = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    depth = block_depth(sd)
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * dim
    cfg = dict(
        embed_dim=dim,
        depth=depth,
        mlp_ratio=hidden / dim,
        patch_size=patch,
        tubelet_size=tubelet,
        in_chans=in_chans,
        qkv_bias="blocks.0.attn.q_bias" in sd,
        init_values=0.1 if "blocks.0.gamma_1" in sd else 0.0,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        final_norm="norm.weight" in sd,
        fc_norm="fc_norm.weight" in sd,
        # the official classifier without fc_norm returns norm(x)[:, 0]
        pooling="first" if "head.weight" in sd and "fc_norm.weight" not in sd else "mean",
    )
    if "num_heads" not in overrides:
        cfg["num_heads"] = resolve_heads(dim, depth, hidden, patch, args or {}, LAYOUT_VIDEOMAE)
    cfg.update(overrides)
    return make_config(cfg)


def videomae_config_from_hf(config: dict, num_classes: int, **overrides) -> ModelConfig:
    if config.get("model_type") in ("vit_mae", "vit"):
        raise CheckpointError(
            f"config.json says model_type={config['model_type']!r}: an image ViT, not a video "
            "encoder; an MAE image encoder can be MVD's image teacher (image_teacher.source)"
        )
    if config.get("model_type") not in (None, "videomae"):
        raise CheckpointError(
            f"config.json says model_type={config.get('model_type')!r}; only 'videomae' and "
            "'vjepa2' are supported"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act={config['hidden_act']!r} is not supported (only 'gelu')")
    use_mean = bool(config.get("use_mean_pooling", True))
    cfg = dict(
        embed_dim=config.get("hidden_size", 768),
        depth=config.get("num_hidden_layers", 12),
        num_heads=config.get("num_attention_heads", 12),
        mlp_ratio=config.get("intermediate_size", 3072) / config.get("hidden_size", 768),
        patch_size=config.get("patch_size", 16),
        tubelet_size=config.get("tubelet_size", 2),
        img_size=config.get("image_size", 224),
        num_frames=config.get("num_frames", 16),
        in_chans=config.get("num_channels", 3),
        qkv_bias=bool(config.get("qv_bias", config.get("qkv_bias", True))),
        norm_eps=config.get("layer_norm_eps", 1e-12),
        num_classes=num_classes,
        final_norm=not use_mean,
        fc_norm=use_mean and num_classes > 0,
        fc_norm_eps=1e-5,  # transformers builds the classifier's fc_norm with the default eps
        # transformers pools the first token only in its classifier; an encoder is mean-pooled
        pooling="first" if num_classes and not use_mean else "mean",
    )
    cfg.update(overrides)
    return make_config(cfg)


def is_videomae_v2(sd: dict[str, torch.Tensor], args: dict) -> bool:
    """VideoMAE V2 shares v1's keys: tell it by its arguments, the ViT-g/14 geometry or K710."""
    if is_videomae_v2_args(args):
        return True
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 5 and (w.shape[0], w.shape[-1]) == (1408, 14):
        return True
    head = sd.get("head.weight")
    return head is not None and head.shape[0] == _K710_CLASSES


def read_videomae2_hub(path: Path, config: dict, weights: dict[str, torch.Tensor]):
    """OpenGVLab's hub layout (``OpenGVLab/VideoMAEv2-Base``, ...): ``config.json`` with a
    ``model_config`` dict (the V2 fine-tuning model's arguments) and its weights under
    ``model.``."""
    mc = config["model_config"]
    if mc.get("cos_attn"):
        raise CheckpointError(
            f"{path}: model_config says cos_attn=true (cosine attention), which this loader "
            "does not implement"
        )
    if all(k.startswith("model.") for k in weights):
        weights = {k[len("model.") :]: v for k, v in weights.items()}
    sizes = {"num_heads": "num_heads", "img_size": "img_size", "num_frames": "num_frames"}
    given = {ours: mc[theirs] for ours, theirs in sizes.items() if theirs in mc}
    if "layer_norm_eps" in mc:
        given["norm_eps"] = mc["layer_norm_eps"]
    cfg = infer_config(weights, **given)
    return weights, cfg, "videomae2-hf", {"hf_config": config}
