"""What the teacher selects: the paper's Figures 1 and 4 for any encoder and any clip.

:func:`selections` runs an encoder on the visible tokens of a tube-masked clip, tapping the
attention of one block, and applies the objective's own selection functions
(``maskagain.losses``): MAGlobal's top-k keys of a query token over all visible tokens
(``select_global``), MALocal's top-k keys of that query within every frame (``frame_groups`` +
``select_local``) and MAHint's top-k tokens by activation (``activation_topk``).
:func:`draw_selections` draws the sampled frames, the tube mask and the three selections over
the frames (matplotlib, Agg backend).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maskagain.constants import IMAGENET_MEAN, IMAGENET_STD
from maskagain.losses import activation_topk, frame_groups, select_global, select_local
from maskagain.losses.selection import gather_frame_logits
from maskagain.masking import tube_mask
from maskagain.models.vit import VideoViT

log = logging.getLogger(__name__)


@dataclass
class Selections:
    """Selections of one clip, all as token-grid arrays of shape (F, H, W) (token frames).

    frames: uint8 (T, H_px, W_px, 3) sampled frames; mask: bool (F, H, W), True = hidden;
    query: (f, h, w) of the query token; global_heads: float, fraction of heads whose MAGlobal
    top-k of the query holds the token; local_heads: same for MALocal (per frame);
    hint: bool, MAHint's top-k tokens by activation; activation: float, sum(|z|) per token
    (0 on hidden tokens); k_global, k_local, k_hint, layer: the settings used.
    """

    frames: np.ndarray
    mask: np.ndarray
    query: tuple[int, int, int]
    global_heads: np.ndarray
    local_heads: np.ndarray
    hint: np.ndarray
    activation: np.ndarray
    k_global: int
    k_local: int
    k_hint: int
    layer: int
    tubelet: int
    patch: int


def clip_tensor(frames: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> normalised float (3, T, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255)
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(3, 0, 1, 2).contiguous()


@dataclass
class VideoClip:
    """Frames read from a video: uint8 ``frames`` (T, S, S, 3), the video frame number each one
    is (``indices``; the last repeats when the video is short) and the video's frame count."""

    frames: np.ndarray
    indices: list[int]
    total: int

    @property
    def padded(self) -> bool:
        return len(set(self.indices)) < len(self.indices)

    def labels(self) -> list[str]:
        """One label per frame: ``frame N`` (the video's numbering), ``frame N (repeat)`` for
        padding."""
        seen: set[int] = set()
        out = []
        for i in self.indices:
            out.append(f"frame {i}" + (" (repeat)" if i in seen else ""))
            seen.add(i)
        return out


def read_video_clip(
    path: str | Path, num_frames: int, size: int, sampling_rate: int = 1
) -> VideoClip:
    """``num_frames`` frames of a video file (every ``sampling_rate``-th, centred in the video),
    short side resized to ``size`` and centre-cropped to ``size x size``. A video too short for
    that is padded by repeating its last frame, with a warning."""
    from maskagain.data import count_frames, read_clip

    total = max(count_frames(path), 1)
    span = (num_frames - 1) * sampling_rate + 1
    start = max((total - span) // 2, 0)
    indices = [min(start + i * sampling_rate, total - 1) for i in range(num_frames)]
    frames = read_clip(path, indices, short_side=size).numpy()  # (T, H, W, 3)
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    clip = VideoClip(frames[:, top : top + size, left : left + size], indices, total)
    if clip.padded:
        log.warning(
            "%s has %d frames, fewer than the %d (every %d-th) the encoder takes: padded by "
            "repeating frame %d %d times (labelled 'repeat' in the figure)",
            path, total, num_frames, sampling_rate, indices[-1],
            len(indices) - len(set(indices)),
        )  # fmt: skip
    return clip


def read_video_frames(
    path: str | Path, num_frames: int, size: int, sampling_rate: int = 1
) -> np.ndarray:
    """The frames of :func:`read_video_clip`: uint8 (T, S, S, 3)."""
    return read_video_clip(path, num_frames, size, sampling_rate).frames


@torch.no_grad()
def selections(
    encoder: VideoViT,
    frames: np.ndarray,
    mask_ratio: float = 0.75,
    k_global: int = 8,
    k_local: int = 2,
    k_hint: int = 8,
    layer: int = -1,
    query: int | None = None,
    seed: int = 0,
) -> Selections:
    """Run ``encoder`` on the tube-masked clip ``frames`` (uint8 (T, S, S, 3)) and select.

    ``query``: index of the query token among the visible ones; None picks the visible token of
    largest activation (MAHint's first pick, usually on the moving object).
    """
    cfg = encoder.cfg
    encoder.eval()
    video = clip_tensor(frames)[None]  # (1, 3, T, H, W)
    grid = encoder.token_grid(video.shape)
    gen = torch.Generator().manual_seed(seed)
    mask = tube_mask(1, grid, mask_ratio, generator=gen)  # (1, N) True = hidden
    out = encoder.forward_features(video, mask, (layer,))
    tap = next(iter(out.attn.values()))
    logits = tap.logits.float()  # (1, heads, n, n)
    heads, n = logits.shape[1], logits.shape[-1]
    visible = torch.nonzero(~mask[0]).flatten()  # (n,) grid positions of the visible tokens
    acts = out.tokens[0].float().abs().sum(-1)  # (n,)
    k_g, k_h = min(k_global, n), min(k_hint, n)
    hint_idx = activation_topk(out.tokens, k_h)[0]
    q = int(hint_idx[0]) if query is None else int(query)
    if not 0 <= q < n:
        raise ValueError(f"query must index one of the {n} visible tokens, got {q}")
    total = int(np.prod(grid))

    def to_grid(values: torch.Tensor) -> np.ndarray:
        full = torch.zeros(total, dtype=values.dtype)
        full[visible] = values
        return full.reshape(grid).numpy()

    glob = select_global(logits, k_g)[0, :, q]  # (heads, k)
    g_count = torch.zeros(n).index_add_(0, glob.flatten(), torch.ones(glob.numel())) / heads
    groups = frame_groups(out.frame_index, grid[0])
    frame_logits = gather_frame_logits(logits, groups)
    keep = select_local(frame_logits, groups, k_local)[0, :, q]  # (heads, F, C) bool
    keys = groups.key[0].unsqueeze(0).expand_as(keep)  # (heads, F, C)
    l_count = torch.zeros(n).index_add_(0, keys[keep], torch.ones(int(keep.sum()))) / heads
    hint = torch.zeros(n, dtype=torch.bool)
    hint[hint_idx] = True
    qpos = np.unravel_index(int(visible[q]), grid)
    return Selections(
        frames=np.asarray(frames),
        mask=mask[0].reshape(grid).numpy(),
        query=tuple(int(i) for i in qpos),
        global_heads=to_grid(g_count),
        local_heads=to_grid(l_count),
        hint=to_grid(hint),
        activation=to_grid(acts),
        k_global=k_g,
        k_local=k_local,
        k_hint=k_h,
        layer=layer if layer >= 0 else encoder.depth + layer,
        tubelet=cfg.tubelet_size,
        patch=cfg.patch_size,
    )


def draw_selections(
    sel: Selections, path: str | Path, title: str = "", frame_labels: list[str] | None = None
) -> Path:
    """One figure: rows = frames, tube mask, MAGlobal, MALocal, MAHint; one column per frame,
    titled by ``frame_labels`` (default ``frame 0``, ``frame 1``, ...).

    Selected tokens are outlined and tinted by the fraction of attention heads selecting them
    (MAGlobal / MALocal); the query token is outlined in cyan; hidden tokens are greyed out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    frames = sel.frames
    t = frames.shape[0]
    p, tub = sel.patch, sel.tubelet
    rows = [
        ("frames", None),
        ("tube mask (grey: hidden)", None),
        (
            f"MAGlobal: top-{sel.k_global} keys of the query\n(tint: share of heads)",
            sel.global_heads,
        ),
        (f"MALocal: top-{sel.k_local} keys per frame\n(tint: share of heads)", sel.local_heads),
        (f"MAHint: top-{sel.k_hint} tokens by activation", sel.hint.astype(float)),
    ]
    fig, axes = plt.subplots(len(rows), t, figsize=(1.5 * t, 1.6 * len(rows)), squeeze=False)
    qf, qh, qw = sel.query
    for r, (label, values) in enumerate(rows):
        for c in range(t):
            ax = axes[r, c]
            f = c // tub
            img = frames[c].astype(np.float32) / 255
            if r >= 1:
                hidden = np.kron(sel.mask[f], np.ones((p, p)))[..., None].astype(bool)
                img = np.where(hidden, 0.35 + 0.3 * img.mean(-1, keepdims=True), img)
            ax.imshow(img, interpolation="nearest")
            if values is not None:
                for h in range(values.shape[1]):
                    for w in range(values.shape[2]):
                        v = float(values[f, h, w])
                        if v > 0:
                            rect = (w * p - 0.5, h * p - 0.5)
                            ax.add_patch(Rectangle(rect, p, p, color="red", alpha=0.25 + 0.45 * v))
                            ax.add_patch(Rectangle(rect, p, p, fill=False, ec="red", lw=1.2))
                if r in (2, 3) and f == qf:
                    rect = (qw * p - 0.5, qh * p - 0.5)
                    ax.add_patch(Rectangle(rect, p, p, fill=False, ec="cyan", lw=2.0))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(frame_labels[c] if frame_labels else f"frame {c}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(
        title or f"teacher selections (block {sel.layer}; cyan: query token, red: selected)",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def visualize(
    encoder: VideoViT | str | Path,
    frames: np.ndarray,
    out: str | Path,
    title: str = "",
    frame_labels: list[str] | None = None,
    **kwargs,
) -> Path:
    """Load ``encoder`` if it is a source, select (:func:`selections`) and draw
    (:func:`draw_selections`)."""
    if not isinstance(encoder, VideoViT):
        from maskagain.models.loading import load_encoder

        encoder = load_encoder(encoder)
    encoder = encoder.float()
    return draw_selections(selections(encoder, frames, **kwargs), out, title, frame_labels)
