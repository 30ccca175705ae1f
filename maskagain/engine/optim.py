"""AdamW with VideoMAE's parameter groups and a per-step cosine schedule with warm-up."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full names that a module (or any submodule) lists in ``no_weight_decay()``."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        fn = getattr(sub, "no_weight_decay", None)
        if callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


_EMBEDDING_PREFIXES = ("patch_embed", "pos_embed", "cls_token", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """Layer of parameter ``name`` in a ``depth``-block ViT for layer-wise lr decay (BEiT, MAE,
    VideoMAE fine-tuning): the patch embedding and position table are layer 0, block ``i`` is
    layer ``i + 1``, everything after the blocks (final norm, ``fc_norm``, head) ``depth + 1``."""
    if name.startswith(_EMBEDDING_PREFIXES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(
    module: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    extra_no_decay: Iterable[str] = (),
) -> list[dict]:
    """Trainable parameters in AdamW groups, each carrying ``lr_scale`` for :class:`CosineSchedule`.

    No weight decay on 1-D tensors (biases, norms, layer-scale gammas), on ``*.bias`` and on the
    names any submodule lists in ``no_weight_decay()`` (position tables), nor on
    ``extra_no_decay``. With ``layer_decay`` (a ViT with ``blocks``), a parameter in layer ``l``
    (:func:`layer_id`) gets ``lr_scale = layer_decay ** (depth + 1 - l)`` and groups are
    ordered by layer; without it every group has ``lr_scale = 1``.
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    skip = no_weight_decay_names(module) | set(extra_no_decay)
    depth = len(module.blocks) if layer_decay is not None else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or name.endswith(".bias") or name in skip)
        layer = layer_id(name, depth) if layer_decay is not None else 0
        key = (layer, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - layer) if layer_decay else 1.0,
                "layer": layer,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)] if layer_decay is not None else list(groups.values())


def build_adamw(
    groups: list[dict],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    device: torch.device,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA (or when asked), foreach elsewhere. Group ``names`` are dropped."""
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if fused is None:
        fused = device.type == "cuda"
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(clean, lr=lr, betas=tuple(betas), eps=eps, **kwargs)


def cosine_lr(
    step: int, total_steps: int, peak_lr: float, min_lr: float, warmup_steps: int, warmup_lr: float
) -> float:
    """lr at optimizer step ``step`` (0-based): linear warm-up, then cosine to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (peak_lr - warmup_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class CosineSchedule:
    """Sets every group's lr to ``cosine_lr(step) * group["lr_scale"]`` before each step.

    ``state_dict`` holds the step position, so a resumed run continues the same curve.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        peak_lr: float,
        min_lr: float = 0.0,
        warmup_steps: int = 0,
        warmup_lr: float = 0.0,
    ) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.peak_lr = peak_lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.warmup_lr = warmup_lr
        self.step_count = 0
        self.apply()

    def lr_at(self, step: int) -> float:
        return cosine_lr(
            step, self.total_steps, self.peak_lr, self.min_lr, self.warmup_steps, self.warmup_lr
        )

    @property
    def lr(self) -> float:
        """The unscaled lr of the next optimizer step."""
        return self.lr_at(self.step_count)

    def apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        """Advance one optimizer step and set the lr for the next one."""
        self.step_count += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.apply()
