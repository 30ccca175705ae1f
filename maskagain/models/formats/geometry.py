"""What encoder weights tell of the architecture, and what they do not (the head count)."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from typing import Any

import torch

from maskagain.checkpoints import CheckpointError
from maskagain.models.families import heads_from_args, heads_from_table
from maskagain.models.vit import ModelConfig
from maskagain.models.vjepa2 import VJEPA2Config

log = logging.getLogger(__name__)


def block_depth(sd: dict[str, torch.Tensor]) -> int:
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(blocks) + 1 if blocks else 0


def resolve_heads(dim: int, depth: int, hidden: int, patch: int, args: dict, layout: str) -> int:
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


def make_config(values: dict, cls: type = ModelConfig) -> Any:
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
