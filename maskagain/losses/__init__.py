"""The MaskAgain objective: selection functions, MAGlobal, MALocal, MAHint, MARel, baselines."""

from maskagain.losses.baselines import attention_transfer_loss
from maskagain.losses.hidden import (
    aggregate_full,
    aggregate_global,
    aggregate_local,
    feature_mse,
    local_weights,
    merge_heads,
)
from maskagain.losses.mvd import MVDConfig, MVDObjective
from maskagain.losses.objective import (
    BASELINES,
    PRESETS,
    MaskAgainObjective,
    ObjectiveConfig,
    objective_preset,
)
from maskagain.losses.output import gather_tokens, hint_loss, relation_loss
from maskagain.losses.projection import hint_projection, linear_or_identity
from maskagain.losses.selection import (
    FrameGroups,
    activation_topk,
    frame_groups,
    gather_frame_logits,
    select_global,
    select_local,
    stable_topk_indices,
)

__all__ = [
    "BASELINES",
    "PRESETS",
    "FrameGroups",
    "MVDConfig",
    "MVDObjective",
    "MaskAgainObjective",
    "ObjectiveConfig",
    "activation_topk",
    "aggregate_full",
    "aggregate_global",
    "aggregate_local",
    "attention_transfer_loss",
    "feature_mse",
    "frame_groups",
    "gather_frame_logits",
    "gather_tokens",
    "hint_loss",
    "hint_projection",
    "linear_or_identity",
    "local_weights",
    "merge_heads",
    "objective_preset",
    "relation_loss",
    "select_global",
    "select_local",
    "stable_topk_indices",
]
