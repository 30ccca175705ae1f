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

This module resolves the source (a path, a shipped name or a hub id), tells its format and loads
strictly; the per-family converters are :mod:`maskagain.models.formats`, the safe file readers
:mod:`maskagain.checkpoints`. Loading is strict: a missing or unexpected key raises
:class:`CheckpointError` naming the keys and the detected format. Pickles are opened with
``torch.load(..., weights_only=True)``.

Head counts are not in the weights. They come from ``num_heads=``, else the checkpoint's recorded
training arguments (``args.num_heads``, or a model name such as
``pretrain_videomae_giant_patch14_224``), else the table of known families
(:mod:`maskagain.models.families`, which also holds this project's own sizes). A geometry none of
these determines is refused with a :class:`CheckpointError` asking for ``num_heads=``: a wrong
head count would load without error and give wrong features.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from maskagain.checkpoints import (
    CheckpointError,
    follow_umask,
    hf_weights,
    safetensors_load,
    torch_load,
    unwrap_state_dict,
)
from maskagain.models.families import recorded_args
from maskagain.models.formats.geometry import make_config
from maskagain.models.formats.videomae import (
    PRETRAIN_ONLY,
    hf_to_official,
    infer_config,
    is_videomae_v2,
    read_videomae2_hub,
    strip_pretrain,
    videomae_config_from_hf,
)
from maskagain.models.formats.vjepa2 import (
    infer_vjepa2_config,
    is_original_checkpoint,
    is_vjepa2_hf_state,
    original_encoder,
    vjepa2_config_from_hf,
    vjepa2_weights,
)
from maskagain.models.vit import ModelConfig, VideoViT
from maskagain.models.vjepa2 import VJEPA2Config, VJEPA2Encoder

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
    path = resolve_source(source)
    if path.is_dir():
        return _read_dir(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        sd, meta = safetensors_load(path)
        if meta.get("format") == MASKAGAIN_FORMAT and "model_config" in meta:
            info = {k: _maybe_json(v) for k, v in meta.items()}
            values = json.loads(meta["model_config"])
            if meta.get("architecture") == VJEPA2_ARCHITECTURE:
                return sd, make_config(values, VJEPA2Config), "maskagain", info
            return sd, make_config(values), "maskagain", info
        return _classify(sd, path, {})
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file or directory")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy did not finish")
    obj = torch_load(path)
    if is_original_checkpoint(obj):
        return original_encoder(obj["encoder"], path), None, "vjepa2-official", {}
    args = recorded_args(obj.get("args"))
    return _classify(unwrap_state_dict(obj, path), path, {"args": args} if args else {})


def _classify(sd: dict[str, torch.Tensor], path: Path, info: dict):
    if is_vjepa2_hf_state(sd):
        return vjepa2_weights(sd, path), None, "vjepa2-weights", info
    if any(k.startswith(("videomae.", "embeddings.", "encoder.layer.")) for k in sd):
        return hf_to_official(sd), None, "hf-weights", info
    sd, pretrain = strip_pretrain(sd)
    cosine = sorted(k for k in sd if re.fullmatch(r"blocks\.\d+\.attn\.scale", k))
    if cosine:
        raise CheckpointError(
            f"{path} uses cosine attention (VideoMAE V2 cos_attn=True: {cosine[0]} is a learned "
            "logit scale), which this loader does not implement"
        )
    family = "videomae2" if is_videomae_v2(sd, info.get("args", {})) else "official"
    return sd, None, f"{family}-{'pretrain' if pretrain else 'finetune'}", info


def _read_dir(path: Path):
    config_file = path / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        weights = hf_weights(path)
        if isinstance(config.get("model_config"), dict):
            return read_videomae2_hub(path, config, weights)
        if config.get("model_type") == "vjepa2":
            sd = vjepa2_weights(weights, path)
            return (
                sd,
                make_config(vjepa2_config_from_hf(config), VJEPA2Config),
                "vjepa2-hf",
                {"hf_config": config},
            )
        sd = hf_to_official(weights)
        sd = {k: v for k, v in sd.items() if not PRETRAIN_ONLY.match(k)}  # ForPreTraining
        head = sd.get("head.weight")
        cfg = videomae_config_from_hf(config, num_classes=0 if head is None else head.shape[0])
        return sd, cfg, "hf", {"hf_config": config}
    for name in RUN_DIR_WEIGHTS:
        if (path / name).is_file():
            return read_checkpoint(path / name)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise CheckpointError(
        f"{path} is a directory without config.json (Hugging Face) or any of {list(RUN_DIR_WEIGHTS)} "
        f"(a maskagain run); it holds {found}"
    )


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


def resolve_source(source: str | Path) -> Path:
    """The local path of ``source``: a local file or directory, a shipped weights name, or a
    hub id fetched with ``huggingface_hub``; :class:`CheckpointError` saying why not."""
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
            cfg = make_config({**cfg.to_dict(), **overrides}, VJEPA2Config)
        model = VJEPA2Encoder(cfg)
    else:
        if cfg is None:
            cfg = infer_config(sd, args=info.get("args"), **overrides)
        elif overrides:
            cfg = make_config({**cfg.to_dict(), **overrides})
        model = VideoViT(cfg)
        pos = sd.pop("pos_embed", None)
        if pos is not None:
            _load_position_table(model, pos, source)
    load_strict(model, sd, source, fmt)
    return model, fmt, info


def load_strict(
    model: nn.Module, sd: dict[str, torch.Tensor], source, fmt: str, kind: str = ""
) -> None:
    """Load ``sd`` into ``model`` strictly: a missing, unexpected or misshapen key raises one
    :class:`CheckpointError` naming ``source``, its detected ``fmt`` and the model (``kind``)."""
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
