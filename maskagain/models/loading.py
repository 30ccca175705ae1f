"""Load an encoder (a teacher, a student, a classifier) from whatever users have.

Supported sources, detected automatically:

- ``official``: the official VideoMAE / MaskAgain ``.pth`` files. Pre-training checkpoints hold a
  ``model`` dict with ``encoder.*`` keys (``decoder.*``, ``encoder_to_decoder`` and ``mask_token``
  are dropped); fine-tuning checkpoints hold ``model`` or ``module`` with ``blocks.*``,
  ``fc_norm`` and ``head``. Formats ``official-pretrain`` / ``official-finetune``.
- ``videomae2``: VideoMAE V2 files (``videomae2-pretrain`` / ``videomae2-finetune``). V2 keeps
  v1's key layout (the pre-training file adds ``decoder.*`` with V2's dual-masking decoder; the
  fine-tuned and distilled ViT-S/B/g files are v1's fine-tuning layout), so V2 is told apart by
  its recorded ``args`` (``decoder_mask_type``, a ``giant`` model name), the ViT-g/14 geometry or
  a 710-class (Kinetics-710) head. OpenGVLab's hub directories (``config.json`` with a
  ``model_config``, weights under ``model.``) load as ``videomae2-hf``. Cosine attention
  (``cos_attn``, ``blocks.N.attn.scale``) is refused: no released V2 model uses it.
- ``vjepa2``: a ``transformers`` ``save_pretrained`` directory (or hub id) of ``VJEPA2Model`` or
  ``VJEPA2ForVideoClassification`` (format ``vjepa2-hf``; the predictor, pooler and classifier
  are dropped), its bare weights file (``vjepa2-weights``), or an original V-JEPA 2 ``.pt``
  (``vjepa2-official``: its ``encoder``, as the official hub loader reads it; ``predictor``,
  ``target_encoder`` and the optimizer state are ignored); loads as a
  :class:`~maskagain.models.vjepa2.VJEPA2Encoder`.
- ``hf``: a Hugging Face ``save_pretrained`` directory of ``VideoMAEModel``,
  ``VideoMAEForPreTraining`` or ``VideoMAEForVideoClassification`` (config.json + safetensors or
  bin), with either bias spelling (``q_bias``/``v_bias`` or ``query.bias``/``value.bias``); a hub
  id goes through ``huggingface_hub`` when it is installed.
- ``maskagain``: this project's own safetensors files (architecture in the file's metadata), or a
  run directory holding one.

Loading is strict: a missing or unexpected key raises :class:`CheckpointError` naming the keys
and the detected format. Pickles are opened with ``torch.load(..., weights_only=True)``.

Head counts are not in the weights. They come from ``num_heads=``, else the checkpoint's recorded
training arguments (``args.num_heads``, or a model name such as
``pretrain_videomae_giant_patch14_224``), else the table of known families
(:mod:`maskagain.models.families`, which also holds this project's own sizes). A geometry none of
these determines is refused with a :class:`CheckpointError` asking for ``num_heads=``: a wrong
head count would load without error and give wrong features.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import pickle
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from maskagain.models.families import (
    LAYOUT_VIDEOMAE,
    LAYOUT_VJEPA2,
    heads_from_args,
    heads_from_table,
    is_videomae_v2_args,
    recorded_args,
)
from maskagain.models.vit import ModelConfig, VideoViT
from maskagain.models.vjepa2 import (
    VJEPA2Config,
    VJEPA2Encoder,
    config_from_hf,
    hf_to_vjepa2,
    is_original_checkpoint,
    is_vjepa2_hf_state,
)

log = logging.getLogger(__name__)

MASKAGAIN_FORMAT = "maskagain"
VJEPA2_ARCHITECTURE = "vjepa2"  # our file's metadata "architecture" for a V-JEPA 2 encoder
# weights file names looked for in a run directory, in order of preference
RUN_DIR_WEIGHTS = (
    "student.safetensors",
    "model.safetensors",
    "encoder.safetensors",
    "teacher.safetensors",
)
# keys of a VideoMAE pre-training checkpoint that are not part of the encoder
_PRETRAIN_ONLY = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$|decoder_pos_embed$)")
# VideoMAE V2's Kinetics-710 label space (its fine-tuned and distilled heads)
_K710_CLASSES = 710


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not match the architecture it claims."""


# ----------------------------------------------------------------------------- reading files
def _torch_load(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(str(e))
        if reason is None:
            raise CheckpointError(
                f"cannot read {path}: it is corrupt, truncated or not a torch.save checkpoint "
                "(the safe weights-only reader rejected its bytes)"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects that could run code on load "
            f"({reason}). If you trust the file, convert it once with "
            f"`python -c \"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save({{'model': c['model']}}, 'clean.pth')\"` and load clean.pth"
        ) from None
    except Exception as e:  # zip/pickle readers raise many types on truncated input
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); the file may be truncated or not a checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _unpickling_reason(message: str) -> str | None:
    """The unsafe global a weights-only load refused, or None when the bytes were just bad."""
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported global" in line:
            return line.strip()[:200]
    return None


def _safetensors_load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path} as safetensors ({e}); the file may be truncated or corrupt"
        ) from None


def _unwrap(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint and strip wrapper prefixes."""
    for key in ("model", "module", "state_dict", "model_state"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(
            f"{path} holds no tensors under 'model', 'module' or 'state_dict' "
            f"(top-level keys: {sorted(obj)[:10]}); is it an optimizer-only or metrics file?"
        )
    for prefix in ("module.", "backbone.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


# ----------------------------------------------------------------------------- key conversion
def _hf_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
            for src, dst in layer_map.items():
                if rest.startswith(src):
                    out[f"blocks.{i}.{dst}{rest[len(src) :]}"] = v
                    break
            else:
                out[k] = v  # unknown: reported by the strict load
            continue
        for src, dst in simple.items():
            if k.startswith(src):
                out[dst + k[len(src) :]] = v
                break
        else:
            out[k] = v
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


def _strip_pretrain(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Official pre-training layout (``encoder.*``) -> encoder keys; says whether it was one."""
    if not any(k.startswith("encoder.") for k in sd):
        return sd, False
    out = {}
    for k, v in sd.items():
        if k.startswith("encoder."):
            out[k[len("encoder.") :]] = v
        elif not _PRETRAIN_ONLY.match(k):
            out[k] = v  # unexpected: reported by the strict load
    return out, True


# ----------------------------------------------------------------------------- architecture
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
    depth = _depth(sd)
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
        cfg["num_heads"] = _resolve_heads(dim, depth, hidden, patch, args or {}, LAYOUT_VIDEOMAE)
    cfg.update(overrides)
    return _make_config(cfg)


def _depth(sd: dict[str, torch.Tensor]) -> int:
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(blocks) + 1 if blocks else 0


def _resolve_heads(dim: int, depth: int, hidden: int, patch: int, args: dict, layout: str) -> int:
    """Head count from recorded training ``args``, else the family table; never a guess."""
    heads, origin = heads_from_args(args, dim)
    if heads is not None:
        log.info("%d heads from the checkpoint's recorded %s", heads, origin)
        return heads
    heads = heads_from_table(dim, depth, hidden, patch, layout)
    if heads is None:
        raise CheckpointError(
            f"cannot tell the head count of this {dim}-wide, {depth}-block encoder (MLP {hidden}, "
            f"patch {patch}): it is not a known family and the checkpoint records no training "
            "arguments; pass num_heads= (e.g. load_encoder(path, num_heads=16), or "
            "teacher.overrides.num_heads=16 in a config)"
        )
    return heads


def _make_config(values: dict, cls: type = ModelConfig) -> Any:
    """``cls(**values)`` (a ``ModelConfig`` or ``VJEPA2Config``): an unknown field is a
    TypeError naming the valid ones, an inconsistent architecture a :class:`CheckpointError`."""
    what = "V-JEPA 2 " if cls is VJEPA2Config else ""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(values) - names)
    if bad:
        raise TypeError(f"unknown {what}model option(s) {bad}; valid options: {sorted(names)}")
    try:
        return cls(**values)
    except ValueError as e:
        raise CheckpointError(f"inconsistent {what}architecture: {e}") from None


def _hf_config(config: dict, num_classes: int, **overrides) -> ModelConfig:
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
    return _make_config(cfg)


# ----------------------------------------------------------------------------- public
def read_checkpoint(
    source: str | Path,
) -> tuple[dict[str, torch.Tensor], ModelConfig | VJEPA2Config | None, str, dict]:
    """Read ``source`` into encoder weights in this package's layout.

    Returns ``(state_dict, config_or_None, format_name, info)``; ``config`` is known for HF and
    maskagain sources, None when it must be inferred from the weights. ``info`` carries the
    source's extra metadata (HF config, our training config and metrics, the training ``args``
    an official ``.pth`` recorded, ...).
    """
    path = _resolve(source)
    if path.is_dir():
        return _read_dir(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        sd, meta = _safetensors_load(path)
        if meta.get("format") == MASKAGAIN_FORMAT and "model_config" in meta:
            info = {k: _maybe_json(v) for k, v in meta.items()}
            values = json.loads(meta["model_config"])
            if meta.get("architecture") == VJEPA2_ARCHITECTURE:
                return sd, _make_config(values, VJEPA2Config), "maskagain", info
            return sd, _make_config(values), "maskagain", info
        return _classify(sd, path, {})
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file or directory")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy did not finish")
    obj = _torch_load(path)
    if is_original_checkpoint(obj):
        return _vjepa2_original(obj["encoder"], path), None, "vjepa2-official", {}
    args = recorded_args(obj.get("args"))
    return _classify(_unwrap(obj, path), path, {"args": args} if args else {})


def _vjepa2_original(encoder: dict, path: Path) -> dict[str, torch.Tensor]:
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


def _classify(sd: dict[str, torch.Tensor], path: Path, info: dict):
    if is_vjepa2_hf_state(sd):
        return _vjepa2_weights(sd, path), None, "vjepa2-weights", info
    if any(k.startswith(("videomae.", "embeddings.", "encoder.layer.")) for k in sd):
        return _hf_to_official(sd), None, "hf-weights", info
    sd, pretrain = _strip_pretrain(sd)
    cosine = sorted(k for k in sd if re.fullmatch(r"blocks\.\d+\.attn\.scale", k))
    if cosine:
        raise CheckpointError(
            f"{path} uses cosine attention (VideoMAE V2 cos_attn=True: {cosine[0]} is a learned "
            "logit scale), which this loader does not implement"
        )
    family = "videomae2" if _is_videomae_v2(sd, info.get("args", {})) else "official"
    return sd, None, f"{family}-{'pretrain' if pretrain else 'finetune'}", info


def _is_videomae_v2(sd: dict[str, torch.Tensor], args: dict) -> bool:
    """VideoMAE V2 shares v1's keys: tell it by its arguments, the ViT-g/14 geometry or K710."""
    if is_videomae_v2_args(args):
        return True
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 5 and (w.shape[0], w.shape[-1]) == (1408, 14):
        return True
    head = sd.get("head.weight")
    return head is not None and head.shape[0] == _K710_CLASSES


def _vjepa2_weights(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    try:
        return hf_to_vjepa2(sd)
    except KeyError as e:
        raise CheckpointError(f"{path}: V-JEPA 2 weights lack {e.args[0]}") from None


def _read_dir(path: Path):
    config_file = path / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        weights = _hf_weights(path)
        if isinstance(config.get("model_config"), dict):
            return _read_videomae2_hub(path, config, weights)
        if config.get("model_type") == "vjepa2":
            sd = _vjepa2_weights(weights, path)
            return (
                sd,
                _make_config(config_from_hf(config), VJEPA2Config),
                "vjepa2-hf",
                {"hf_config": config},
            )
        sd = _hf_to_official(weights)
        sd = {k: v for k, v in sd.items() if not _PRETRAIN_ONLY.match(k)}  # ForPreTraining
        head = sd.get("head.weight")
        cfg = _hf_config(config, num_classes=0 if head is None else head.shape[0])
        return sd, cfg, "hf", {"hf_config": config}
    for name in RUN_DIR_WEIGHTS:
        if (path / name).is_file():
            return read_checkpoint(path / name)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise CheckpointError(
        f"{path} is a directory without config.json (Hugging Face) or any of {list(RUN_DIR_WEIGHTS)} "
        f"(a maskagain run); it holds {found}"
    )


def _read_videomae2_hub(path: Path, config: dict, weights: dict[str, torch.Tensor]):
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


def infer_vjepa2_config(sd: dict[str, torch.Tensor], **overrides) -> VJEPA2Config:
    """VJEPA2Config from V-JEPA 2 encoder weights (our keys); heads as in :func:`infer_config`."""
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.ndim != 5:
        raise CheckpointError("V-JEPA 2 weights without a 5-D patch_embed.proj.weight")
    dim, depth = w.shape[0], _depth(sd)
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
        cfg["num_heads"] = _resolve_heads(dim, depth, hidden, w.shape[3], {}, LAYOUT_VJEPA2)
    return _make_config({**cfg, **overrides}, VJEPA2Config)


def _hf_weights(path: Path) -> dict[str, torch.Tensor]:
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        sd: dict[str, torch.Tensor] = {}
        for s in shards:
            sd.update(_safetensors_load(s)[0])
        return sd
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        sd = {}
        for b in bins:
            sd.update(_unwrap(_torch_load(b), b))
        return sd
    raise CheckpointError(f"{path} has config.json but no model.safetensors or pytorch_model.bin")


# a file extension (``.pth``, ``.safetensors``, ``.yaml``), not a version such as ``v1.5``
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,11}$")


# weights shipped inside the package, by the name a config's source key takes
SHIPPED_WEIGHTS: dict[str, Path] = {
    # the demo's VideoMAE teacher: a 128-wide, 4-block ViT on 8 frames of 32 px (synthetic motion)
    "maskagain:demo-teacher": Path(__file__).resolve().parents[1]
    / "assets"
    / "demo_teacher.safetensors",
}


def is_hub_id(source: str | Path) -> bool:
    """Whether ``source`` reads as a Hugging Face hub id (``owner/name``) rather than a path:
    two plain parts, no leading ``.``, ``/`` or ``~``, no file extension, and no local folder
    named like its owner part (``runs/distil`` is a path when ``runs/`` exists)."""
    text = str(source)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or text.startswith((".", "/", "~")):
        return False
    return not _EXTENSION.search(text) and not Path(text).parent.exists()


def locate_source(source: str | Path, key: str = "") -> Path | None:
    """The local path of ``source``, or None for a hub id to fetch (:func:`is_hub_id`).

    A local path that does not exist raises :class:`CheckpointError` saying so, with the
    closest names next to the first missing part of the path (``runs/distil``: did you mean
    ``runs/distill``?); hub ids are never tried for it. ``key``: the config key that named
    ``source``, put first in the message.
    """
    if str(source) in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[str(source)]
    path = Path(source).expanduser()
    if path.exists():
        return path
    if is_hub_id(source):
        return None
    where = f"config key '{key}': " if key else ""
    raise CheckpointError(
        f"{where}{source} does not exist (file or directory not found){did_you_mean(path)}"
    )


def did_you_mean(path: Path) -> str:
    """``"; did you mean 'X'?"`` for the sibling names closest to the first missing part of
    ``path``, or ``""`` when none is close."""
    parts = path.parts
    for i, part in enumerate(parts):
        folder = Path(*parts[:i]) if i else Path(".")
        if (folder / part).exists():
            continue
        try:
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        except OSError:
            names = []
        close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
        rest = parts[i + 1 :]
        found = [str(Path(*parts[:i], name, *rest)) for name in close]
        return f"; did you mean {' or '.join(repr(f) for f in found)}?" if found else ""
    return ""


def _resolve(source: str | Path) -> Path:
    path = locate_source(source)
    if path is not None:
        return path
    text = str(source)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{text!r} is not a local path; to fetch it from the Hugging Face hub install "
            "huggingface_hub (pip install 'maskagain[hub]') or pass a local directory"
        ) from None
    try:
        local = snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.bin"])
    except Exception as e:  # network errors, unknown repos, offline mode
        message = " ".join(str(e).split())
        raise CheckpointError(
            f"{text!r} is not a local path and cannot be fetched from the Hugging Face hub: "
            f"{message}"
        ) from None
    return Path(local)


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def build_from_checkpoint(
    source: str | Path, **overrides
) -> tuple[VideoViT | VJEPA2Encoder, str, dict]:
    """Build and strictly load a model from ``source``; returns ``(model, format, info)``."""
    sd, cfg, fmt, info = read_checkpoint(source)
    if fmt.startswith("vjepa2") or isinstance(cfg, VJEPA2Config):
        if cfg is None:
            cfg = infer_vjepa2_config(sd, **overrides)
        elif overrides:
            cfg = _make_config({**cfg.to_dict(), **overrides}, VJEPA2Config)
        model = VJEPA2Encoder(cfg)
    else:
        if cfg is None:
            cfg = infer_config(sd, args=info.get("args"), **overrides)
        elif overrides:
            cfg = _make_config({**cfg.to_dict(), **overrides})
        model = VideoViT(cfg)
        pos = sd.pop("pos_embed", None)
        if pos is not None:
            _load_position_table(model, pos, source)
    _load_strict(model, sd, source, fmt)
    return model, fmt, info


def _load_strict(
    model: nn.Module, sd: dict[str, torch.Tensor], source, fmt: str, kind: str = ""
) -> None:
    cfg = model.cfg
    kind = kind or ("V-JEPA 2 encoder" if isinstance(model, VJEPA2Encoder) else "video ViT")
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        raise CheckpointError(
            f"{source} (detected format: {fmt}) has weights whose shapes do not fit a "
            f"{cfg.embed_dim}-wide, {cfg.depth}-block {kind}: {'; '.join(lines[:4]) or e}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{source} (detected format: {fmt}) does not match a {cfg.embed_dim}-wide, "
            f"{cfg.depth}-block {kind}: missing keys {_short(missing)}, unexpected keys "
            f"{_short(unexpected)}"
        )


def _load_position_table(model: VideoViT, pos: torch.Tensor, source) -> None:
    pos = pos.reshape(-1, pos.shape[-1]).float()
    if pos.shape != model.pos_embed.shape:
        raise CheckpointError(
            f"{source}: stored pos_embed has {pos.shape[0]} positions but the model's grid "
            f"{model.cfg.grid} has {model.pos_embed.shape[0]}; pass img_size=/num_frames= to match"
        )
    model.pos_embed.copy_(pos)


def _short(keys: list[str], n: int = 12) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{keys[:n]}{more}" if keys else "[]"


def load_encoder(source: str | Path, **overrides) -> VideoViT | VJEPA2Encoder:
    """Load a video encoder from an official VideoMAE / VideoMAE V2 ``.pth``, a Hugging Face
    directory or hub id (VideoMAE or V-JEPA 2), or a maskagain checkpoint/run directory.
    ``overrides`` set config fields the weights cannot tell (``num_heads``, ``img_size``,
    ``num_frames``, ``norm_eps``, ...). A V-JEPA 2 source gives a
    :class:`~maskagain.models.vjepa2.VJEPA2Encoder`, every other a :class:`VideoViT`; both have
    the same ``forward_features``.

    Raises :class:`CheckpointError` for unreadable, unsafe or mismatched checkpoints.
    """
    model, fmt, _ = build_from_checkpoint(source, **overrides)
    log.info("loaded %s checkpoint %s: %s", fmt, source, _describe(model.cfg))
    return model


def _describe(cfg: ModelConfig) -> str:
    head = f", head with {cfg.num_classes} classes" if cfg.num_classes else ""
    return (
        f"width {cfg.embed_dim}, {cfg.depth} blocks, {cfg.num_heads} heads, patch {cfg.patch_size}, "
        f"tubelet {cfg.tubelet_size}{head}"
    )


def save_encoder(
    model: VideoViT | VJEPA2Encoder, path: str | Path, extra: dict | None = None
) -> Path:
    """Write ``model`` as this project's format: safetensors weights (official-layout keys) with
    the architecture and ``extra`` (JSON-able: training config, metrics) in the metadata.
    The write is atomic (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": MASKAGAIN_FORMAT, "model_config": json.dumps(model.cfg.to_dict())}
    if isinstance(model, VJEPA2Encoder):
        meta["architecture"] = VJEPA2_ARCHITECTURE
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    follow_umask(tmp)
    tmp.replace(path)
    return path


def follow_umask(path: str | Path) -> Path:
    """Give ``path`` the mode a newly created file gets (0666 less the umask): writers that
    create private files (``mkstemp``, safetensors) would leave weights unreadable to others
    who share the machine."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return Path(path)
