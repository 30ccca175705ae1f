"""Export a video ViT to Hugging Face ``transformers`` and to the official VideoMAE layout.

The inverse of :mod:`maskagain.models.loading`: the loader maps every format users have onto the
official VideoMAE key layout, this module maps that layout back out.

- :func:`export_hf` writes a ``save_pretrained``-style directory: ``config.json``
  (``VideoMAEModel`` for an encoder, ``VideoMAEForVideoClassification`` with ``id2label`` for a
  classifier), ``model.safetensors`` and the ``VideoMAEImageProcessor`` /
  ``VideoMAEVideoProcessor`` configs with the normalisation the model was trained with. It needs
  no ``transformers`` install; the files are what ``transformers`` 5 writes itself (including its
  on-disk ``q_bias``/``v_bias`` spelling, which 4.x reads too).
- :func:`export_videomae` writes a ``.pth`` the official fine-tuning code reads: ``{"model":
  {"encoder.*"}}`` for an encoder (the pre-training layout), the fine-tuning layout
  (``blocks.*``, ``fc_norm``, ``head``) for a classifier.

Not every model has a ``transformers`` twin: :func:`hf_layout` names the one that fits or says why
none does (layer scale, or a pooling/norm combination ``VideoMAEModel`` cannot express). An
encoder with a final norm is written with ``use_mean_pooling=False`` (so ``VideoMAEModel`` keeps
its ``layernorm``), as transformers' own conversion does for the MCG-NJU pre-trained checkpoints;
to fine-tune it in transformers with VideoMAE's mean pooling + ``fc_norm``, pass
``use_mean_pooling=True`` to ``VideoMAEForVideoClassification.from_pretrained`` (the final norm is
then unused and ``fc_norm`` starts fresh, exactly as with ``MCG-NJU/videomae-base``).

Tolerances: tokens (``hidden_states[-1]``) are bit-identical to ours; logits agree to ~2e-6 when
our ``fc_norm_eps`` is transformers' 1e-5. A classifier trained with VideoMAE's 1e-6 drifts by a
relative ~4.5e-6 / var(pooled feature) (1e-4 absolute on logits of magnitude 20 in the tests).

What a run directory adds (normalisation, class names) is resolved by
:mod:`maskagain.recipes.export`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from maskagain.checkpoints import CheckpointError, follow_umask
from maskagain.constants import IMAGENET_MEAN, IMAGENET_STD
from maskagain.models.formats.keys import swap_prefix
from maskagain.models.loading import build_from_checkpoint
from maskagain.models.vit import ModelConfig, VideoViT

log = logging.getLogger(__name__)

HF_FC_NORM_EPS = 1e-5  # transformers builds VideoMAEForVideoClassification.fc_norm with the default
HF_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)
TRAINING_CHECKPOINT = r"ckpt_step\d+\.pt$"  # the engine's resumable checkpoints
_HF_LAYER = {  # official block sub-key -> transformers layer sub-key
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.proj.": "attention.output.dense.",
    "attn.q_bias": "attention.attention.q_bias",
    "attn.v_bias": "attention.attention.v_bias",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
}


@dataclass
class HFLayout:
    """The ``transformers`` class and pooling flag that express a model exactly."""

    architecture: str  # "VideoMAEModel" | "VideoMAEForVideoClassification"
    use_mean_pooling: bool


# ----------------------------------------------------------------------------- key mapping
def official_to_hf(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename official-layout encoder keys to transformers' VideoMAE keys (qkv split into
    query/key/value). ``prefix`` (``"videomae."`` for the classifier) goes before encoder keys;
    ``fc_norm``/``head`` become the classifier's top-level ``fc_norm``/``classifier``.

    Raises :class:`CheckpointError` for keys that have no transformers equivalent.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            if rest == "attn.qkv.weight":
                q, key, val = v.chunk(3, dim=0)  # each (D, D)
                base = f"{prefix}encoder.layer.{i}.attention.attention."
                out[base + "query.weight"] = q
                out[base + "key.weight"] = key
                out[base + "value.weight"] = val
                continue
            renamed = swap_prefix(rest, _HF_LAYER)
            if renamed is None:
                unknown.append(k)
            else:
                out[f"{prefix}encoder.layer.{i}.{renamed}"] = v
        elif k.startswith("patch_embed.proj."):
            out[f"{prefix}embeddings.patch_embeddings.projection.{k.split('.')[-1]}"] = v
        elif k.startswith("norm."):
            out[f"{prefix}layernorm.{k.split('.')[-1]}"] = v
        elif k.startswith("fc_norm."):
            out[k] = v
        elif k.startswith("head."):
            out[f"classifier.{k.split('.')[-1]}"] = v
        elif k != "pos_embed":  # fixed sinusoid table: transformers rebuilds it
            unknown.append(k)
    if unknown:
        raise CheckpointError(
            f"no transformers VideoMAE equivalent for {sorted(unknown)[:8]}"
            + (" (layer scale)" if any("gamma_" in k for k in unknown) else "")
        )
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def hf_layout(cfg: ModelConfig) -> HFLayout:
    """Pick the transformers class whose forward equals ours, or raise :class:`CheckpointError`.

    ``VideoMAEModel`` has a final ``layernorm`` only when ``use_mean_pooling=False``; its
    classifier then takes the first token, and with ``use_mean_pooling=True`` it mean-pools and
    applies ``fc_norm`` (no final layernorm).
    """
    if cfg.init_values > 0:
        raise CheckpointError(
            "the model uses layer scale (gamma_1/gamma_2, init_values="
            f"{cfg.init_values}); transformers' VideoMAE has no layer scale, so it cannot be "
            "exported to Hugging Face (use --format videomae or maskagain's own format)"
        )
    if cfg.final_norm and cfg.fc_norm:
        raise CheckpointError(
            "the model has both a final norm and fc_norm; transformers' VideoMAE has one or the "
            "other (use_mean_pooling), so it cannot be exported to Hugging Face"
        )
    if not cfg.num_classes:
        if cfg.fc_norm:
            raise CheckpointError(
                "the model has fc_norm but no head; transformers' VideoMAEModel has no fc_norm. "
                "Export it with its classification head, or as --format videomae"
            )
        return HFLayout("VideoMAEModel", use_mean_pooling=not cfg.final_norm)
    if cfg.fc_norm and cfg.pooling == "mean":
        return HFLayout("VideoMAEForVideoClassification", use_mean_pooling=True)
    if cfg.final_norm and not cfg.fc_norm and cfg.pooling == "first":
        return HFLayout("VideoMAEForVideoClassification", use_mean_pooling=False)
    raise CheckpointError(
        f"the classifier pools with final_norm={cfg.final_norm}, fc_norm={cfg.fc_norm}, "
        f"pooling={cfg.pooling!r}; transformers' VideoMAEForVideoClassification only does mean "
        "pooling + fc_norm (no final norm) or final norm + first token, so it cannot be "
        "exported to Hugging Face (use --format videomae)"
    )


def hf_config(cfg: ModelConfig, layout: HFLayout, class_names: Sequence[str] | None) -> dict:
    """``config.json`` contents for ``cfg`` (what ``VideoMAEConfig.save_pretrained`` writes)."""
    config = {
        "architectures": [layout.architecture],
        "model_type": "videomae",
        "image_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "num_frames": cfg.num_frames,
        "tubelet_size": cfg.tubelet_size,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps,
        "qv_bias": cfg.qkv_bias,
        "use_mean_pooling": layout.use_mean_pooling,
        "dtype": "float32",
    }
    if cfg.num_classes:
        names = list(class_names) if class_names else [f"class_{i}" for i in range(cfg.num_classes)]
        config["id2label"] = {str(i): n for i, n in enumerate(names)}
        config["label2id"] = {n: i for i, n in enumerate(names)}
    return config


def processor_configs(
    cfg: ModelConfig, mean: Sequence[float], std: Sequence[float]
) -> dict[str, dict]:
    """``preprocessor_config.json`` (VideoMAEImageProcessor) and ``video_preprocessor_config.json``
    (VideoMAEVideoProcessor): resize the short side to the input size, centre-crop it, scale to
    [0, 1] and normalise with the training ``mean``/``std`` (not transformers' 0.5 defaults)."""
    common = {
        "do_resize": True,
        "size": {"shortest_edge": cfg.img_size},
        "resample": 2,  # bilinear
        "do_center_crop": True,
        "crop_size": {"height": cfg.img_size, "width": cfg.img_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) for m in mean],
        "image_std": [float(s) for s in std],
    }
    image = {**common, "image_processor_type": "VideoMAEImageProcessor"}
    video = {
        **common,
        "video_processor_type": "VideoMAEVideoProcessor",
        "do_convert_rgb": True,
        "do_sample_frames": False,
        "num_frames": cfg.num_frames,
    }
    return {"preprocessor_config.json": image, "video_preprocessor_config.json": video}


# ----------------------------------------------------------------------------- writers
def export_hf(
    model: VideoViT,
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Path:
    """Write ``model`` as a Hugging Face directory that ``from_pretrained`` loads with no
    missing or unexpected keys. Raises :class:`CheckpointError` if transformers cannot express
    the model (see :func:`hf_layout`)."""
    cfg = model.cfg
    layout = hf_layout(cfg)
    check_class_names(cfg, class_names)
    _check_norm(cfg, mean, std)
    if cfg.fc_norm and _fc_eps(cfg) != HF_FC_NORM_EPS:
        log.info(
            "fc_norm eps is %g but transformers' classifier uses %g: its logits will differ "
            "slightly (relative error about |eps difference| / (2 * variance of the pooled "
            "feature), e.g. 2e-6 at unit variance); the tokens are unaffected",
            _fc_eps(cfg),
            HF_FC_NORM_EPS,
        )
    prefix = "videomae." if cfg.num_classes else ""
    tensors = official_to_hf(model.state_dict(), prefix)
    config = hf_config(cfg, layout, class_names)
    config["dtype"] = str(model.patch_embed.proj.weight.dtype).removeprefix("torch.")
    out = _hf_out_dir(out_dir)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    follow_umask(out / "model.safetensors")
    _write_json(out / "config.json", config)
    for name, content in processor_configs(cfg, mean, std).items():
        _write_json(out / name, content)
    log.info(
        "wrote %s (%s, %d tensors) to %s",
        layout.architecture,
        describe_dims(cfg),
        len(tensors),
        out,
    )
    return out


def _hf_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir``, refusing to write into a directory that holds anything but a previous
    export (a run directory's own ``model.safetensors`` would be overwritten, and stray weight
    files would be read together with ours)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; Hugging Face export writes a directory")
    if out.is_dir():
        stray = sorted(p.name for p in out.iterdir() if p.name not in HF_FILES)
        if stray or (any(out.iterdir()) and not (out / "config.json").is_file()):
            raise CheckpointError(
                f"--out {out} already holds {stray[:5] or 'files'} that are not a previous "
                "Hugging Face export; choose a new or empty directory"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_videomae(model: VideoViT, out_path: str | Path) -> Path:
    """Write ``model`` as an official VideoMAE ``.pth``: ``{"model": {"encoder.*": ...}}`` (the
    pre-training layout) without a head, the fine-tuning layout with one.

    The official layout records no input size or head count: load it back with
    ``load_encoder(path, img_size=..., num_frames=...)`` (and ``num_heads=`` for widths outside
    the VideoMAE family).
    """
    cfg = model.cfg
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    sd.pop("pos_embed", None)  # official models rebuild the fixed table themselves
    if not cfg.num_classes:
        sd = {f"encoder.{k}": v for k, v in sd.items()}
    elif not official_pooling_matches(cfg):
        log.warning(
            "official VideoMAE classifiers either mean-pool + fc_norm or take the final-normed "
            "first token; this one (final_norm=%s, fc_norm=%s, pooling=%s) will pool differently "
            "in the official code",
            cfg.final_norm,
            cfg.fc_norm,
            cfg.pooling,
        )
    out = Path(out_path)
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a directory; give the .pth file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"model": sd}, tmp)
    follow_umask(tmp)
    tmp.replace(out)
    kind = "classifier (fine-tuning layout)" if cfg.num_classes else "encoder (pre-training layout)"
    log.info("wrote official VideoMAE %s, %s, to %s", kind, describe_dims(cfg), out)
    return out


def load_checked(source: str | Path, **overrides) -> tuple[VideoViT, str, dict]:
    """:func:`build_from_checkpoint`, with a tensor whose shape does not fit the architecture the
    checkpoint implies reported as a one-line :class:`CheckpointError` (torch raises a multi-line
    ``RuntimeError`` for those)."""
    try:
        return build_from_checkpoint(source, **overrides)
    except CheckpointError as e:
        if re.match(TRAINING_CHECKPOINT, Path(source).name):
            raise CheckpointError(
                f"{e}. {Path(source).name} is a training checkpoint (model, optimizer, ...); "
                "export the run directory instead: its student.safetensors / model.safetensors "
                "is written when training ends"
            ) from None
        raise
    except RuntimeError as e:
        if "Error(s) in loading state_dict" not in str(e):
            raise
        details = "; ".join(line.strip() for line in str(e).splitlines()[1:4])
        raise CheckpointError(
            f"{source}: the weights do not fit the architecture they imply: {details}"
        ) from None


def official_pooling_matches(cfg: ModelConfig) -> bool:
    """Whether the official VideoMAE classifier pools like ``cfg``: with ``use_mean_pooling`` it
    mean-pools into ``fc_norm`` (no final norm), otherwise it takes the final-normed first token."""
    mean_fc = cfg.fc_norm and not cfg.final_norm and cfg.pooling == "mean"
    first = cfg.final_norm and not cfg.fc_norm and cfg.pooling == "first"
    return mean_fc or first


def check_class_names(cfg: ModelConfig, names, origin: str | None = "arguments") -> None:
    """Raise :class:`CheckpointError` unless ``names`` (None: nothing to check) are one unique
    name per class of ``cfg``'s head; ``origin`` says where they came from."""
    if names is None or not cfg.num_classes:
        return
    if len(names) != cfg.num_classes:
        raise CheckpointError(
            f"{len(names)} class names from {origin} but the head has {cfg.num_classes} classes"
        )
    if len(set(names)) != len(names):
        raise CheckpointError(f"class names from {origin} are not unique")


def _check_norm(cfg: ModelConfig, mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != cfg.in_chans or len(std) != cfg.in_chans:
        raise CheckpointError(
            f"mean/std need {cfg.in_chans} values (one per channel), got {len(mean)}/{len(std)}"
        )
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise CheckpointError(f"std must be positive, got {list(std)}")


def _fc_eps(cfg: ModelConfig) -> float:
    return cfg.fc_norm_eps if cfg.fc_norm_eps is not None else cfg.norm_eps


def describe_dims(cfg: ModelConfig) -> str:
    """One line describing ``cfg``'s width, depth, heads, input size and head."""
    head = f", {cfg.num_classes} classes" if cfg.num_classes else ", no head"
    return (
        f"width {cfg.embed_dim}, {cfg.depth} blocks, {cfg.num_heads} heads, "
        f"{cfg.num_frames}x{cfg.img_size}x{cfg.img_size} input{head}"
    )


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")
