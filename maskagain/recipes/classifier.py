"""The classifier of fine-tuning, evaluation and prediction: built from scratch or from a
checkpoint's encoder (:func:`build_classifier`), its architecture taken from that checkpoint
(:func:`resolve_init_architecture`), and loaded back from what a run wrote
(:func:`load_classifier`)."""

from __future__ import annotations

import logging
from pathlib import Path

from maskagain.checkpoints import CheckpointError
from maskagain.config import ConfigError, from_dict
from maskagain.engine.checkpoint import latest_checkpoint, load_checkpoint
from maskagain.engine.trainer import CHECKPOINT_FORMAT
from maskagain.models.loading import load_encoder
from maskagain.models.vit import ModelConfig, VideoViT
from maskagain.recipes.configs import FinetuneConfig
from maskagain.recipes.sections import model_overrides

log = logging.getLogger(__name__)


# architecture fields a checkpoint must share with the configured model
ARCH_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size", "tubelet_size")


class ArchitectureMismatch(ConfigError):
    """The checkpoint's architecture is not the configured one."""


def build_classifier(
    spec: ModelConfig,
    num_classes: int,
    source: str = "",
    head_dropout: float = 0.0,
    fc_norm: bool = True,
    loader_overrides: dict | None = None,
) -> VideoViT:
    """A video ViT classifier with ``num_classes`` outputs.

    Args:
        spec: the configured architecture (drop path, clip size); from scratch it is built as is.
        num_classes: size of the new head.
        source: "" for scratch, else a checkpoint for ``load_encoder``; its architecture must
            match ``spec`` in :data:`ARCH_FIELDS`, its head (if any) is replaced.
        head_dropout: dropout before the head.
        fc_norm: mean pooling + LayerNorm before the head (VideoMAE fine-tuning).
        loader_overrides: extra ``ModelConfig`` fields for the loader.
    """
    common = dict(
        drop_path_rate=spec.drop_path_rate,
        head_drop_rate=head_dropout,
        img_size=spec.img_size,
        num_frames=spec.num_frames,
    )
    if source:
        model = load_encoder(source, **{**common, **(loader_overrides or {})})
        bad = [
            f"{k}={getattr(model.cfg, k)} (configured {getattr(spec, k)})"
            for k in ARCH_FIELDS
            if getattr(model.cfg, k) != getattr(spec, k)
        ]
        if bad:
            raise ArchitectureMismatch(
                f"checkpoint {source} has {', '.join(bad)}; leave model.embed_dim/depth/"
                "num_heads null and set model.patch_size/tubelet_size to the checkpoint's"
            )
        log.info("initialised from %s", source)
    else:
        cfg = ModelConfig(**{**spec.to_dict(), **common})
        model = VideoViT(cfg)
        log.info("initialised from scratch")
    model.reset_head(num_classes, fc_norm=fc_norm)
    return model


def resolve_init_architecture(cfg: FinetuneConfig) -> ModelConfig | None:
    """Take the architecture of ``cfg.init.source`` into ``cfg.model``, so the run builds, and
    saves in its config, what the checkpoint holds.

    Width, depth, heads, patch, tubelet and layer scale come from the checkpoint (``model.name``
    becomes the matching registered name). ``model.embed_dim`` / ``depth`` / ``num_heads`` set
    to a value are the user's and must match it (else a one-line :class:`ArchitectureMismatch`).
    The clip (frames, image size) stays the data's: when it differs from the checkpoint's a
    warning names both. A local ``init.source`` is made absolute. Returns the checkpoint's
    config, None from scratch.
    """
    from maskagain.models.registry import ARCHITECTURES

    source = cfg.init.source
    if not source:
        return None
    if Path(source).expanduser().exists():
        source = cfg.init.source = str(Path(source).expanduser().resolve())
    ckpt = load_encoder(source, **cfg.init.overrides).cfg
    spec = cfg.model
    for key in ("embed_dim", "depth", "num_heads"):
        mine, theirs = getattr(spec, key), getattr(ckpt, key)
        if mine is not None and mine != theirs:
            raise ArchitectureMismatch(
                f"config key 'model.{key}'={mine} but the checkpoint {source} has {key}={theirs}; "
                f"drop model.{key} to take the checkpoint's"
            )
    dims = (ckpt.embed_dim, ckpt.depth, ckpt.num_heads)
    names = [
        n for n, a in ARCHITECTURES.items() if (a["embed_dim"], a["depth"], a["num_heads"]) == dims
    ]
    spec.name = names[0] if names else spec.name
    spec.embed_dim, spec.depth, spec.num_heads = dims
    spec.patch_size, spec.tubelet_size = ckpt.patch_size, ckpt.tubelet_size
    spec.init_values = getattr(ckpt, "init_values", spec.init_values)
    log.info(
        "architecture from %s: %s (width %d, %d blocks, %d heads, patch %d, tubelet %d)",
        source, spec.name, *dims, spec.patch_size, spec.tubelet_size,
    )  # fmt: skip
    if (ckpt.num_frames, ckpt.img_size) != (spec.num_frames, spec.img_size):
        log.warning(
            "fine-tuning on %d frames of %d px a checkpoint trained on %d frames of %d px "
            "(positions recomputed); to keep its clip set data.num_frames=%d model.num_frames=%d "
            "data.input_size=%d model.img_size=%d",
            spec.num_frames, spec.img_size, ckpt.num_frames, ckpt.img_size,
            ckpt.num_frames, ckpt.num_frames, ckpt.img_size, ckpt.img_size,
        )  # fmt: skip
    spec.validate("model")
    return ckpt


def load_classifier(
    checkpoint: str | Path, use_ema: bool = False, overrides: dict | None = None
) -> VideoViT:
    """A classifier from a ``finetune`` run directory, an exported weights file (any format
    ``load_encoder`` reads) or a fine-tuning training checkpoint ``ckpt_step*.pt``.

    A run directory gives ``model.safetensors`` (``model_ema.safetensors`` with ``use_ema``),
    or, for a run that has not finished, its newest training checkpoint, or else whatever
    weights ``load_encoder`` finds in it. ``overrides`` go to ``load_encoder`` (weights files).
    """
    overrides = overrides or {}
    path = Path(checkpoint)
    if path.is_dir():
        name = "model_ema.safetensors" if use_ema else "model.safetensors"
        if (path / name).is_file():
            return load_encoder(path / name, **overrides)
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            log.info("%s has no %s yet; using the training checkpoint %s", path, name, ckpt)
            return _from_training_checkpoint(ckpt, use_ema)
        if use_ema:
            raise CheckpointError(f"{path} holds neither {name} nor checkpoints/ckpt_step*.pt")
        return load_encoder(path, **overrides)  # any weights file a run directory holds
    if path.suffix == ".pt" and path.is_file():
        state = load_checkpoint(path)
        if state.get("format") == CHECKPOINT_FORMAT:
            return _from_training_checkpoint(path, use_ema, state)
    if use_ema:
        raise CheckpointError(f"use_ema needs a run directory or a training checkpoint, not {path}")
    return load_encoder(path, **overrides)


def _from_training_checkpoint(path: Path, use_ema: bool, state: dict | None = None) -> VideoViT:
    state = state if state is not None else load_checkpoint(path)
    try:
        cfg = from_dict(FinetuneConfig, state.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{path} is not a fine-tuning checkpoint ({err})") from None
    weights = state["model"]
    if use_ema:
        ema = state.get("ema") or {}
        if not ema:
            raise CheckpointError(f"{path} has no EMA weights (engine.ema_decay was 0)")
        weights = ema["module"] if "module" in ema else _strip(ema, "module.")
    num_classes = int(weights["head.weight"].shape[0])
    spec = cfg.model.model_config("model").to_dict()
    spec.update(model_overrides(cfg.init.overrides, "init.overrides"))  # e.g. norm_eps of a .pth
    model = build_classifier(ModelConfig(**spec), num_classes, fc_norm=cfg.head.fc_norm)
    model.load_state_dict(weights, strict=True)
    return model


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
