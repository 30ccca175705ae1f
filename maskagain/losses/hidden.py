"""Hidden-level aggregation of MaskAgain: MAGlobal (eqs. 1-4) and MALocal (eqs. 5-8).

Both take one block's scaled, pre-softmax attention logits and its values (``AttentionTap``),
keep the top-k keys of every query (over all visible tokens, or within every frame), weight
them by ``softmax(logits / tau)`` and sum the kept values.

``renormalize=True`` (official behaviour) divides the kept weights by their sum, which is a
softmax over the kept logits only; ``renormalize=False`` keeps the full-row softmax weights as
eq. 3 literally reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskagain.losses.selection import (
    FrameGroups,
    frame_groups,
    gather_frame_logits,
    select_global,
    select_local,
)


def teacher_target(x: torch.Tensor) -> torch.Tensor:
    """A teacher tensor as an fp32, autograd-safe target: always a fresh copy (a teacher's
    inference tensors cannot be saved for backward; branching on ``is_inference()`` would break
    a compiled graph, and the teacher's outputs are inference tensors anyway)."""
    return x.detach().to(torch.float32, copy=True)


def _check_tap(logits: torch.Tensor, values: torch.Tensor, tau: float) -> None:
    if logits.ndim != 4 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"logits must be (B, heads, N, N), got {tuple(logits.shape)}")
    if values.ndim != 4 or values.shape[:3] != logits.shape[:3]:
        raise ValueError(
            f"values must be (B, heads, N, d_k) matching logits {tuple(logits.shape)}, "
            f"got {tuple(values.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def aggregate_full(logits: torch.Tensor, values: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Attention-weighted values with no selection (Weighted Value Transfer, Table 4).

    logits: (B, heads, N, N), values: (B, heads, N, d_k) -> (B, heads, N, d_k).
    """
    _check_tap(logits, values, tau)
    weights = torch.softmax(logits / tau, dim=-1)  # (B, heads, N, N)
    return weights.to(values.dtype) @ values


def aggregate_global(
    logits: torch.Tensor,
    values: torch.Tensor,
    k: int,
    tau: float = 1.0,
    renormalize: bool = True,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """MAGlobal aggregation: every query sums the values of its top-k keys (eq. 3).

    logits: (B, heads, N, N) scaled pre-softmax; values: (B, heads, N, d_k) -> (B, heads, N, d_k).
    index: optional (B, heads, N, k') keys chosen elsewhere ("selected by the teacher",
        Table 5); by default each side selects its own (``select_global``).
    Two exact formulations, the one that materialises less is used: the masked N x N weights
    times the values (when N <= k * d_k, the usual case: N ~ 160, k * d_k = 640) or a gather of
    the k kept values per query (N x k x d_k). Neither builds an N x N x d_k tensor. With
    k >= N every key is kept: plain attention. All-equal logits keep the k lowest key indices
    with equal weights (no NaN).
    """
    _check_tap(logits, values, tau)
    n, d = values.shape[-2:]
    if index is None:
        if k >= n:
            return aggregate_full(logits, values, tau)
        index = select_global(logits, k)
    elif index.shape[:3] != logits.shape[:3]:
        raise ValueError(
            f"index {tuple(index.shape)} does not match logits {tuple(logits.shape)}; "
            "'selected by the teacher' needs the same head count on both sides"
        )
    if n <= index.shape[-1] * d:
        return _global_dense(logits, values, index, tau, renormalize)
    return _global_gather(logits, values, index, tau, renormalize)


def _global_dense(logits, values, index, tau: float, renormalize: bool) -> torch.Tensor:
    """Kept weights as a masked (B, heads, N, N) matrix times the values."""
    keep = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    keep.scatter_(-1, index, True)
    x = logits / tau
    if renormalize:  # softmax over the kept logits only; every row keeps >= 1 key
        weights = torch.softmax(x.masked_fill(~keep, float("-inf")), dim=-1)
    else:
        weights = torch.softmax(x, dim=-1) * keep
    return weights.to(values.dtype) @ values


def _global_gather(logits, values, index, tau: float, renormalize: bool) -> torch.Tensor:
    """Softmax over the k kept logits times the k gathered values (B, heads, N, k, d_k)."""
    b, h, n, d = values.shape
    kept = index.shape[-1]
    if renormalize:
        weights = torch.softmax(logits.gather(-1, index) / tau, dim=-1)  # (B, heads, N, k)
    else:
        weights = torch.softmax(logits / tau, dim=-1).gather(-1, index)
    flat = index.reshape(b, h, n * kept, 1).expand(b, h, n * kept, d)
    gathered = values.gather(2, flat).reshape(b, h, n, kept, d)
    # a broadcast product, not a batched (1 x k) @ (k x d_k) matmul: that one loops on CPU
    return (weights.to(values.dtype).unsqueeze(-1) * gathered).sum(-2)


def local_weights(
    frame_logits: torch.Tensor,
    keep: torch.Tensor,
    valid: torch.Tensor | None,
    tau: float = 1.0,
    renormalize: bool = True,
) -> torch.Tensor:
    """Per-frame attention weights, zero outside ``keep``.

    frame_logits, keep: (B, heads, N, F, C); valid: (B, F, C), None when every slot is a token
    -> (B, heads, N, F, C).
    A frame with no visible token gets all-zero weights (no NaN).
    """
    x = frame_logits / tau
    if renormalize and valid is None:  # every frame keeps >= 1 slot: a plain masked softmax
        return torch.softmax(x.masked_fill(~keep, float("-inf")), dim=-1)
    low = torch.finfo(x.dtype).min  # finite: a frame with no token gives zeros, not NaN
    if renormalize:
        return torch.softmax(x.masked_fill(~keep, low), dim=-1) * keep
    if valid is not None:
        x = x.masked_fill(~valid[:, None, None], low)
    return torch.softmax(x, dim=-1) * keep


def aggregate_local(
    logits: torch.Tensor,
    values: torch.Tensor,
    frame_index: torch.Tensor,
    num_frames: int | None,
    k: int,
    tau: float = 1.0,
    renormalize: bool = True,
    *,
    groups: FrameGroups | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """MALocal aggregation: every query sums, frame by frame, the values of its top-k keys.

    logits: (B, heads, N, N); values: (B, heads, N, d_k); frame_index: (B, N) true frame of every
    visible token -> (B, heads, N, F, d_k). Each attention weight multiplies the value of the
    same key token, for any mask. A frame holding fewer than k visible tokens keeps all of them
    (a single visible token: its value, weight 1); a frame holding none gives a zero vector
    (``groups.nonempty`` is False there, and the objective leaves it out of the mean).
    groups: precomputed ``frame_groups(frame_index, num_frames)`` to share between student and
        teacher; keep: (B, heads, N, F, C) slots chosen elsewhere (selected by the teacher).
    Computed as F dense (N x C) @ (C x d_k) products over the per-frame weights: C (tokens per
    frame) is of the order of k, so gathering F * k values per query would cost more.
    """
    _check_tap(logits, values, tau)
    if groups is None:
        groups = frame_groups(frame_index, num_frames)
    b, h, n, d = values.shape
    _, f, c = groups.key.shape
    frame_logits = gather_frame_logits(logits, groups)  # (B, heads, N, F, C)
    if keep is None:
        keep = select_local(frame_logits, groups, k)
    elif keep.shape != frame_logits.shape:
        raise ValueError(
            f"keep {tuple(keep.shape)} does not match the per-frame logits "
            f"{tuple(frame_logits.shape)}; 'selected by the teacher' needs equal head counts"
        )
    valid = None if groups.in_order else groups.valid
    weights = local_weights(frame_logits, keep, valid, tau, renormalize)
    if groups.in_order:
        grouped = values.reshape(b, h, f, c, d)  # (B, heads, F, C, d_k)
    else:
        index = groups.key.reshape(b, 1, f * c, 1).expand(b, h, f * c, d)
        grouped = values.gather(2, index).reshape(b, h, f, c, d)
    return torch.einsum("bhnfc,bhfcd->bhnfd", weights.to(values.dtype), grouped)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Concatenate heads: (B, heads, N, [F,] d_k) -> (B, N, [F,] heads * d_k)."""
    if x.ndim == 4:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)
    if x.ndim == 5:
        b, h, n, f, d = x.shape
        return x.permute(0, 2, 3, 1, 4).reshape(b, n, f, h * d)
    raise ValueError(f"expected (B, heads, N, d_k) or (B, heads, N, F, d_k), got {tuple(x.shape)}")


def feature_mse(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error in fp32, optionally over the ``valid`` rows only (eqs. 4, 8, 14).

    student, teacher: (..., D); valid: bool broadcastable to ``student.shape[:-1]`` or None.
    The mean runs over valid rows and channels; no valid row gives 0 (graph kept).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ; "
            "a projection must map the student to the teacher width"
        )
    if valid is None:
        return F.mse_loss(student.float(), teacher.float())
    diff = (student.float() - teacher.float()).pow(2)
    mask = valid.expand(student.shape[:-1]).unsqueeze(-1)
    denom = mask.sum().clamp(min=1) * student.shape[-1]
    return (diff * mask).sum() / denom
