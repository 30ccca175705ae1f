"""Hidden-level baselines of Table 4: Attention Transfer (value and weighted value transfer are
``feature_mse`` over ``merge_heads(values)`` / ``aggregate_full``)."""

from __future__ import annotations

import torch


def attention_transfer_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    tau: float = 1.0,
    mode: str = "kl",
) -> torch.Tensor:
    """Align attention maps ``softmax(logits / tau)`` head by head (Table 4, Attention Transfer).

    student_logits, teacher_logits: (B, heads, N, N), same head count.
    mode="kl": KL(A_t || A_s) per query row, mean over (B, heads, N) rows.
    mode="mse": mean squared error between the two maps, mean over all entries.
    No tau**2 factor is applied. Computed in fp32.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"attention transfer needs equal shapes (same head count), got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
        )
    if mode not in ("kl", "mse"):
        raise ValueError(f"mode must be 'kl' or 'mse', got {mode!r}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    log_s = torch.log_softmax(student_logits.float() / tau, dim=-1)
    log_t = torch.log_softmax(teacher_logits.detach().float() / tau, dim=-1)
    if mode == "mse":
        return (log_s.exp() - log_t.exp()).pow(2).mean()
    rows = log_s.shape[:-1].numel()
    return (log_t.exp() * (log_t - log_s)).sum() / max(rows, 1)
