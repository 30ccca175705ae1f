"""Weight initialisation schemes for video ViT encoders.

"official": the encoder of the official VideoMAE pre-training code (``modeling_pretrain.py``,
``PretrainVisionTransformerEncoder._init_weights``), also used by the MVD and AMD students:
every ``nn.Linear`` weight xavier-uniform, every Linear bias 0, every LayerNorm weight 1 and
bias 0; the Conv3d tubelet embedding is not touched there, so it keeps PyTorch's default
(kaiming-uniform with ``a=sqrt(5)``, i.e. uniform in +-1/sqrt(fan_in)).

"trunc_normal": what ``VideoViT`` does when it is built: Linear weights truncated normal with
std 0.02 cut at +-2 std, zero biases, unit LayerNorms, xavier-uniform on the flattened Conv3d.

Both schemes zero the attention q/v biases (zeros in both code bases at construction) and leave
layer-scale factors alone. A classification head (``VideoViT`` with ``num_classes > 0``) is
initialised as the fine-tuning code does, truncated normal 0.02 times ``cfg.init_scale``, under
either scheme: the schemes differ only for the encoder.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from maskagain.models.layers import Attention, init_linear_and_norm, trunc_normal_init

InitScheme = Literal["official", "trunc_normal"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


def official_init(module: nn.Module) -> None:
    """Official VideoMAE pre-training init of one module (use with ``model.apply``)."""
    init_linear_and_norm(module, nn.init.xavier_uniform_)
    if isinstance(module, nn.Conv3d):
        module.reset_parameters()  # PyTorch's default: the official code leaves it there


def init_weights(model: nn.Module, scheme: InitScheme) -> nn.Module:
    """Re-initialise every parameter ``model`` builds with ``scheme``; returns ``model``.

    scheme: "official" (xavier-uniform Linear, PyTorch-default Conv3d) or "trunc_normal"
    (truncated normal 0.02, the default of ``VideoViT``).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {list(INIT_SCHEMES)}, got {scheme!r}")
    model.apply(official_init if scheme == "official" else trunc_normal_init)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Attention) and module.q_bias is not None:
                module.q_bias.zero_()
                module.v_bias.zero_()
        head, cfg = getattr(model, "head", None), getattr(model, "cfg", None)
        if isinstance(head, nn.Linear) and hasattr(cfg, "init_scale"):
            trunc_normal_init(head)
            head.weight.mul_(cfg.init_scale)
    return model
