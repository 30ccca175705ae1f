"""Layer-wise learning-rate decay (BEiT / MAE / VideoMAE fine-tuning) for ``VideoViT``.

Layer ids: the patch embedding and position table are layer 0, block ``i`` is layer ``i + 1``,
everything after the blocks (final norm, ``fc_norm``, head) is layer ``depth + 1``. A parameter in
layer ``l`` gets ``lr_scale = decay ** (depth + 1 - l)``; the scheduler multiplies each group's
learning rate by its ``lr_scale``. Biases, norm weights, layer-scale gammas (every parameter with
fewer than 2 dims) and names the model lists in ``no_weight_decay()`` get no weight decay.
"""

from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger(__name__)

_EMBEDDING_PREFIXES = ("patch_embed", "pos_embed", "cls_token", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """Layer id of parameter ``name`` in a ``depth``-block ViT (see the module docstring)."""
    if name.startswith(_EMBEDDING_PREFIXES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups_lrd(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float,
    no_weight_decay: set[str] | None = None,
) -> list[dict]:
    """AdamW parameter groups with layer-wise lr decay.

    Args:
        model: a ViT with ``blocks`` (an ``nn.ModuleList``); frozen parameters are skipped.
        weight_decay: decay applied to matrices (>= 2-D parameters).
        layer_decay: per-layer factor in (0, 1]; 1 gives every group ``lr_scale = 1``.
        no_weight_decay: extra parameter names without weight decay (default: the model's
            ``no_weight_decay()`` if it has one).

    Returns:
        One dict per (layer, decay/no-decay) pair with ``params``, ``weight_decay``,
        ``lr_scale``, ``layer`` and ``param_names`` (the last three are ignored by the optimiser).
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if no_weight_decay is None:
        getter = getattr(model, "no_weight_decay", None)
        no_weight_decay = set(getter()) if callable(getter) else set()
    depth = len(model.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        decay = p.ndim >= 2 and name not in no_weight_decay
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - layer),
                "layer": layer,
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    out = [groups[k] for k in sorted(groups)]
    log.debug("layer-wise lr decay %.3f: %d parameter groups", layer_decay, len(out))
    return out
