"""Output-level terms of MaskAgain: MAHint (eqs. 10-14) and MARel (eqs. 15-17)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from maskagain.losses.hidden import feature_mse
from maskagain.masking import take_tokens
from maskagain.models.layers import true_fp32


def hint_loss(
    student_tokens: torch.Tensor,
    teacher_tokens: torch.Tensor,
    index: torch.Tensor | None,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """MAHint: MSE between the student and teacher features of the selected tokens (eq. 14).

    student_tokens: (B, N, D_s); teacher_tokens: (B, N, D_t); index: (B, k) from
    ``activation_topk`` on the teacher, or None for every given token (rows selected already,
    or the Hint baseline over all tokens).
    projection: phi'' applied to the selected student rows only (never to unselected, zeroed
    rows), mapping D_s -> D_t. Mean over the selected tokens and channels.
    """
    if index is not None:
        student_tokens = take_tokens(student_tokens, index)
        teacher_tokens = take_tokens(teacher_tokens, index)
    if projection is not None:
        student_tokens = projection(student_tokens)
    return feature_mse(student_tokens, teacher_tokens)


def _off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """(K, K) -> (K, K - 1), dropping the diagonal."""
    k = x.shape[0]
    return x.flatten()[1:].reshape(k - 1, k + 1)[:, :-1].reshape(k, k - 1)


def _log_relation(rows: torch.Tensor, tau: float, softmax: str) -> torch.Tensor:
    """Log-probabilities of the cosine similarities of ``rows`` (K, D) -> (K, K - 1), fp32."""
    z = F.normalize(rows.float(), dim=-1)
    sim = _off_diagonal(z @ z.t()) / tau  # self-pairs excluded
    if softmax == "row":
        return torch.log_softmax(sim, dim=-1)
    return torch.log_softmax(sim.flatten(), dim=0).reshape(sim.shape)


def relation_loss(
    student_selected: torch.Tensor,
    teacher_selected: torch.Tensor,
    tau_s: float = 0.1,
    tau_t: float = 0.05,
    softmax: str = "row",
) -> torch.Tensor:
    """MARel: KL(P_t || P_s) between token-relation distributions (eqs. 15-17).

    student_selected: (K, D_s), teacher_selected: (K, D_t), the selected tokens of the whole
    mini-batch (K = B * k, any widths). Cosine similarities, self-pairs excluded (the official
    -1000 on the diagonal, made exact), softmax with temperatures tau_s / tau_t.
    softmax="row" (official): one distribution per row, KL summed over rows and divided by K
    (mean KL per row). softmax="matrix" (eq. 15 literally): one distribution over all K (K - 1)
    pairs, and the loss is its KL (no division by K).
    Computed in true fp32 (autocast and TF32 off): tau_t = 0.05 magnifies low-precision similarities.
    Under DDP the rows are the local batch's only (no gather across ranks), as in the official
    code: relations are between tokens of the samples on one device.
    A batch of one gives K = k rows: relations between the tokens of that one sample only.
    K = 1 has no pair to compare: the loss is 0 (still connected to the graph).
    """
    if student_selected.ndim != 2 or teacher_selected.ndim != 2:
        raise ValueError(
            f"expected (K, D) rows, got {tuple(student_selected.shape)} and "
            f"{tuple(teacher_selected.shape)}; flatten (B, k, D) with .flatten(0, 1)"
        )
    if student_selected.shape[0] != teacher_selected.shape[0]:
        raise ValueError(
            f"student has {student_selected.shape[0]} rows, teacher {teacher_selected.shape[0]}"
        )
    if softmax not in ("row", "matrix"):
        raise ValueError(f"softmax must be 'row' or 'matrix', got {softmax!r}")
    if not (tau_s > 0 and tau_t > 0):
        raise ValueError(f"tau_s and tau_t must be > 0, got {tau_s}, {tau_t}")
    k = student_selected.shape[0]
    if k < 2:
        return student_selected.float().sum() * 0.0
    with torch.autocast(student_selected.device.type, enabled=False), true_fp32():
        log_s = _log_relation(student_selected, tau_s, softmax)
        log_t = _log_relation(teacher_selected.detach(), tau_t, softmax)
        kl = (log_t.exp() * (log_t - log_s)).sum()
    return kl / k if softmax == "row" else kl
