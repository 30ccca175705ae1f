"""Top-k selection functions of MaskAgain: F_global, F_local and F_act.

Every selection keeps exactly ``min(k, available)`` entries. Ties are broken deterministically in
favour of the lower token index, unlike the official ``>= k-th value`` test, which keeps every
tied entry and so can keep more than k.

Selection is done on the logits, not on ``softmax(logits / tau)``: softmax is monotonic, so the
order is the same, and logits do not collapse to equal values where probabilities underflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskagain.masking import device_check


def _tie_broken_key(scores: torch.Tensor) -> torch.Tensor:
    """(..., n) float -> (..., n) int64 keys in the same order, all distinct, ties to lower index.

    The fp32 bit pattern mapped to a monotonic integer, times n, plus ``n - 1 - index``: a
    single ``topk`` on these keys is exact and deterministic on any device (a stable sort of
    the whole row costs several times more).
    """
    n = scores.shape[-1]
    x = scores.float() + 0.0  # exact for fp16/bf16; -0.0 becomes +0.0 so that they tie
    bits = x.view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)  # monotonic in x
    rank = torch.arange(n - 1, -1, -1, device=scores.device)
    return bits * n + rank


def stable_topk_indices(
    scores: torch.Tensor, k: int, *, ignore_padding_ties: bool = False
) -> torch.Tensor:
    """Indices of the ``min(k, n)`` largest entries along the last dim, ties to the lower index.

    scores: (..., n) -> (..., min(k, n)) long, in descending order of score. The kept set is
    exact; inside it, equal scores may come in any order.
    Fast path: one float ``topk`` of k + 1 entries; only where an entry equal to the k-th is
    left out (a tie across the boundary, one host sync to find out) does the exact
    integer-key ``topk`` run. Under ``torch.compile`` the exact path runs on every row (the
    same indices, no sync, no graph break). ignore_padding_ties: ties at -inf do not count
    (padding slots that the caller drops).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = scores.detach()
    n = scores.shape[-1]
    if k >= n or torch.compiler.is_compiling():  # compiled: the exact path, no sync, one graph
        return _tie_broken_key(scores).topk(min(k, n), dim=-1).indices
    values, index = scores.topk(k + 1, dim=-1)
    boundary = values[..., k - 1]
    straddle = boundary == values[..., k]
    if ignore_padding_ties:
        straddle &= boundary > float("-inf")
    rows = straddle.flatten().nonzero().squeeze(1)  # the one host sync
    index = index[..., :k]
    if rows.numel() == 0:
        return index
    # only the rows with a tie across the boundary take the exact path (common in bf16)
    exact = _tie_broken_key(scores.reshape(-1, n)[rows]).topk(k, dim=-1).indices
    return index.reshape(-1, k).index_copy(0, rows, exact).reshape(index.shape)


def select_global(logits: torch.Tensor, k: int) -> torch.Tensor:
    """F_global: the top-k keys of every query over all visible tokens.

    logits: (B, heads, N, N) -> index (B, heads, N, min(k, N)) long.
    """
    return stable_topk_indices(logits.detach(), k)


def activation_topk(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """F_act: the top-k tokens of every sample by the activation map ``sum(|z|, -1)`` (eq. 10).

    tokens: (B, N, D) -> index (B, min(k, N)) long. With k >= N every token is kept.
    """
    activation = tokens.detach().float().abs().sum(-1)  # (B, N)
    return stable_topk_indices(activation, k)


@dataclass
class FrameGroups:
    """Visible tokens grouped by frame, padded to the largest per-frame count C.

    key: (B, F, C) long, token index (into the N visible tokens) of slot c of frame f; padding
        slots repeat a valid index and must be ignored through ``valid``.
    valid: (B, F, C) bool, True where the slot holds a visible token of that frame.
    counts: (B, F) long, number of visible tokens of every frame (0 for a fully hidden frame).
    in_order: every frame holds C tokens and the tokens come frame by frame (tube masking), so
        ``key`` is ``arange(N).view(F, C)``: per-frame views need no gather and no padding mask.
    """

    key: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor
    in_order: bool = False

    @property
    def num_frames(self) -> int:
        return self.key.shape[1]

    @property
    def nonempty(self) -> torch.Tensor:
        """(B, F) bool, frames holding at least one visible token."""
        return self.counts > 0


def frame_groups(
    frame_index: torch.Tensor, num_frames: int | None = None, tube: bool = False
) -> FrameGroups:
    """Group the visible tokens of every sample by their true frame index.

    frame_index: (B, N) long, the frame of every visible token (``EncoderOutput.frame_index``).
    num_frames: token frames F; None infers ``max(frame_index) + 1``. Frames past the last visible
        one are then missing, which changes no loss value (empty frames are left out of them).
    Works for any mask (tube, random, frame): frames may hold different numbers of tokens, or none.
    Costs one host synchronisation with ``num_frames`` given, two without (the padded width C
    is a shape, so a compiled step breaks its graph here). ``tube``: the tokens come from a
    tube mask (``num_frames`` given): frame by frame, N / F each; the layout is then known
    without a sync and checked on the device (asynchronously off the CPU).
    """
    if frame_index.ndim != 2:
        raise ValueError(f"frame_index must be (B, N), got shape {tuple(frame_index.shape)}")
    b, n = frame_index.shape
    frame_index = frame_index.long()
    if tube and num_frames:
        return _tube_groups(frame_index, num_frames)
    if num_frames is None:  # the frame count is a shape: one more sync
        num_frames = int(frame_index.max()) + 1 if frame_index.numel() else 1
    counts = torch.zeros(b, num_frames, dtype=torch.long, device=frame_index.device)
    counts.scatter_add_(1, frame_index.clamp(0, num_frames - 1), torch.ones_like(frame_index))
    unsorted = (frame_index[:, 1:] < frame_index[:, :-1]).any()
    span = torch.aminmax(frame_index) if frame_index.numel() else (counts.new_tensor(0),) * 2
    # one transfer: the layout (a shape) and the range check together
    stats = torch.stack([*torch.aminmax(counts), unsorted, *span]).tolist()
    low_count, width, unsorted, low, top = stats
    if low < 0 or top >= num_frames:
        raise ValueError(
            f"frame_index holds frames {low}..{top} but num_frames={num_frames}; pass the token "
            "frame count (num_frames // tubelet_size) of the clip"
        )
    width = max(width, 1)
    slot = torch.arange(width, device=frame_index.device)
    if low_count == width and not unsorted:
        key = (
            torch.arange(n, device=frame_index.device)
            .reshape(1, num_frames, width)
            .expand(b, -1, -1)
        )
        valid = torch.ones(b, num_frames, width, dtype=torch.bool, device=frame_index.device)
        return FrameGroups(key=key, valid=valid, counts=counts, in_order=True)
    order = torch.sort(frame_index, dim=1, stable=True).indices  # (B, N) tokens grouped by frame
    starts = counts.cumsum(1) - counts  # (B, F)
    valid = slot < counts[:, :, None]  # (B, F, C)
    pos = (starts[:, :, None] + slot).clamp_(max=max(n - 1, 0))
    key = order.gather(1, pos.reshape(b, -1)).reshape(b, num_frames, width)
    return FrameGroups(key=key, valid=valid, counts=counts)


def _tube_groups(frame_index: torch.Tensor, num_frames: int) -> FrameGroups:
    """Frame groups of a tube mask's tokens: frame f holds tokens f * C .. (f + 1) * C - 1."""
    b, n = frame_index.shape
    if n % num_frames:
        raise ValueError(
            f"{n} visible tokens cannot be a tube mask's over {num_frames} frames (not a "
            "multiple); drop the tube layout (frame_groups(..., tube=False))"
        )
    width, device = n // num_frames, frame_index.device
    token = torch.arange(n, device=device)
    key = token.reshape(1, num_frames, width).expand(b, -1, -1)
    layout = frame_index == token.div(width, rounding_mode="floor")  # (B, N)
    device_check(
        layout.all(),
        "frame_groups(tube=True) got tokens that are not a tube mask's, frame by frame",
    )
    counts = torch.full((b, num_frames), width, dtype=torch.long, device=device)
    valid = torch.ones(b, num_frames, width, dtype=torch.bool, device=device)
    return FrameGroups(key=key, valid=valid, counts=counts, in_order=True)


def gather_frame_logits(logits: torch.Tensor, groups: FrameGroups) -> torch.Tensor:
    """Split every query's attention row into per-frame groups.

    logits: (B, heads, N, N) -> (B, heads, N, F, C), padding slots hold arbitrary values
    (mask them with ``groups.valid``).
    """
    b, h, n, _ = logits.shape
    _, f, c = groups.key.shape
    if groups.in_order:
        return logits.reshape(b, h, n, f, c)
    index = groups.key.reshape(b, 1, 1, f * c).expand(b, h, n, f * c)
    return logits.gather(-1, index).reshape(b, h, n, f, c)


def select_local(frame_logits: torch.Tensor, groups: FrameGroups, k: int) -> torch.Tensor:
    """F_local: the top-k keys of every query within every frame.

    frame_logits: (B, heads, N, F, C) from ``gather_frame_logits`` -> keep (B, heads, N, F, C)
    bool, True on exactly ``min(k, count of that frame)`` slots of every (query, frame).
    """
    valid = groups.valid[:, None, None]  # (B, 1, 1, F, C)
    if k >= frame_logits.shape[-1]:  # every visible token of every frame
        return valid.expand(frame_logits.shape)
    scores = frame_logits.detach()
    if not groups.in_order:
        scores = scores.masked_fill(~valid, float("-inf"))
    index = stable_topk_indices(scores, k, ignore_padding_ties=True)
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    keep.scatter_(-1, index, True)
    return keep & valid
