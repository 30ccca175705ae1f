"""The MaskAgain objective: selection functions, MAGlobal, MALocal, MAHint, MARel, baselines.

Typical use (the teacher frozen, both encoders on the same mask)::

    objective = MaskAgainObjective.from_models(objective_preset("maskagain_b"), student, teacher)
    with torch.no_grad():
        t_out = teacher.forward_features(video, mask, attn_layers=objective.attn_layers_teacher)
    s_out = student.forward_features(video, mask, attn_layers=objective.attn_layers_student)
    losses = objective(s_out, t_out)  # {"global", "local", "hint", "relation", "loss"}
    losses["loss"].backward()  # optimise student.parameters() and objective.parameters()
"""

from maskagain._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "amd": ["AMDConfig", "AMDObjective"],
        "baselines": ["attention_transfer_loss"],
        "hidden": [
            "aggregate_full",
            "aggregate_global",
            "aggregate_local",
            "feature_mse",
            "local_weights",
            "merge_heads",
        ],
        "mvd": [
            "MVDConfig",
            "MVDObjective",
            "feature_regression_loss",
            "frame_tokens_to_clip",
            "image_teacher_frames",
        ],
        "objective": ["MaskAgainObjective"],
        "output": ["hint_loss", "relation_loss"],
        "pixel": ["with_weighted_term"],
        "query": ["EncoderQuery"],
        "projection": ["hint_projection", "linear_or_identity"],
        "selection": [
            "FrameGroups",
            "activation_topk",
            "frame_groups",
            "gather_frame_logits",
            "select_global",
            "select_local",
            "stable_topk_indices",
        ],
        "config": ["BASELINES", "PRESETS", "ObjectiveConfig", "objective_preset"],
    },
)

__all__ = [
    "AMDConfig",
    "AMDObjective",
    "BASELINES",
    "EncoderQuery",
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
    "feature_regression_loss",
    "frame_groups",
    "frame_tokens_to_clip",
    "gather_frame_logits",
    "hint_loss",
    "hint_projection",
    "image_teacher_frames",
    "linear_or_identity",
    "local_weights",
    "merge_heads",
    "objective_preset",
    "relation_loss",
    "select_global",
    "select_local",
    "stable_topk_indices",
    "with_weighted_term",
]
