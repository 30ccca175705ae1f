"""Linear probe on frozen, mean-pooled encoder features: a fast quality signal for an encoder.

1. ``extract_features``: the encoder in eval mode, no gradients; every clip -> ``model.pool`` of
   its tokens (final norm, mean over tokens, ``fc_norm``) -> one (D,) feature; or, with
   ``pooling="time"``, the final-normed tokens averaged over space at each of the F tubelet
   steps and concatenated -> one (F * D,) feature, which keeps the order of events that a mean
   over all tokens throws away (what motion classes need from a linear probe).
2. ``train_linear_probe``: features standardised with the training set's mean and std (MAE uses a
   BatchNorm without affine for the same purpose; fixed statistics make the probe deterministic),
   then one ``nn.Linear`` trained with AdamW and a cosine schedule on the in-memory features.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """features (N, D) float32 on CPU, labels (N,) long, sample_index (N,) long (unique per clip)."""

    features: torch.Tensor
    labels: torch.Tensor
    sample_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


POOLINGS = ("mean", "time")


def pool_per_time_step(
    model: nn.Module, tokens: torch.Tensor, frame_index: torch.Tensor
) -> torch.Tensor:
    """(B, N, D) tokens with their (B, N) tubelet-step index -> (B, F * D): the final norm, then
    the mean over the tokens of each step, steps concatenated in order."""
    x = model.norm(tokens).float()
    steps = int(frame_index.max()) + 1
    onehot = F.one_hot(frame_index.long(), steps).to(x.dtype)  # (B, N, F)
    sums = torch.einsum("bnd,bnf->bfd", x, onehot)
    return (sums / onehot.sum(1).clamp(min=1).unsqueeze(-1)).flatten(1)


def extract_features(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    pooling: str = "mean",
) -> FeatureSet:
    """Pooled features of a frozen encoder for ``(video (B, C, T, H, W), labels (B,), index (B,))``:
    (N, D) with ``pooling="mean"`` (``model.pool``), (N, F * D) with ``"time"``
    (:func:`pool_per_time_step`, F tubelet steps).

    The model is put in eval mode (no dropout / drop path) and nothing is tracked for autograd.
    Under DDP, rows of all ranks are gathered and de-duplicated by sample index.
    """
    return extract_pooled_features(model, batches, device, autocast_dtype, (pooling,))[pooling]


@torch.no_grad()
def extract_pooled_features(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    poolings: Sequence[str] = POOLINGS,
) -> dict[str, FeatureSet]:
    """:func:`extract_features` for several ``poolings`` from one forward pass per batch:
    {pooling: FeatureSet}."""
    if not poolings or any(p not in POOLINGS for p in poolings):
        raise ValueError(f"pooling must be one of {POOLINGS}, got {list(poolings)}")
    model.eval()
    device = torch.device(device)
    feats: dict[str, list[torch.Tensor]] = {p: [] for p in poolings}
    labels, index = [], []
    for video, label, idx in batches:
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            out = model.forward_features(video.to(device, non_blocking=True))  # (B, N, D)
            for pooling in poolings:
                if pooling == "mean":
                    pooled = model.pool(out.tokens)  # (B, D)
                else:
                    pooled = pool_per_time_step(model, out.tokens, out.frame_index)  # (B, F * D)
                feats[pooling].append(pooled.float().cpu())
        labels.append(label.long().cpu())
        index.append(idx.long().cpu())
    if not labels:
        raise ValueError("no batches to extract features from")
    label, sample = torch.cat(labels), torch.cat(index)
    return {p: _gather(FeatureSet(torch.cat(f), label, sample)) for p, f in feats.items()}


def _gather(local: FeatureSet) -> FeatureSet:
    """All ranks' rows, each sample index once (DistributedSampler pads by repeating samples)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        rows = local
    else:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (local.features, local.labels, local.sample_index))
        rows = FeatureSet(*(torch.cat(cols) for cols in zip(*parts)))
    order = torch.argsort(rows.sample_index, stable=True)
    s = rows.sample_index[order]
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[1:] = s[1:] != s[:-1]
    idx = order[keep]
    return FeatureSet(rows.features[idx], rows.labels[idx], rows.sample_index[idx])


class LinearProbe(nn.Module):
    """Fixed standardisation followed by a linear classifier: (B, D) -> (B, K)."""

    def __init__(self, dim: int, num_classes: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().view(1, dim))
        self.register_buffer("std", std.detach().clone().view(1, dim))
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


@dataclass
class ProbeResult:
    """The trained probe, its accuracies (percent) and the mean training loss of every epoch;
    ``val_top5`` is None for 5 classes or fewer, where it would always be 100."""

    probe: LinearProbe
    train_top1: float
    val_top1: float
    val_top5: float | None
    losses: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        return {
            "train_top1": self.train_top1,
            "val_top1": self.val_top1,
            "val_top5": self.val_top5,
            "final_loss": self.losses[-1] if self.losses else math.nan,
        }


def standardisation(features: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean (D,) and std (D,) of (N, D) features; std floored at ``eps``."""
    mean = features.mean(0)
    std = features.std(0, unbiased=False).clamp(min=eps)
    return mean, std


@torch.no_grad()
def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percent of rows whose label is among the ``k`` largest logits: (N, K), (N,) -> float."""
    if labels.numel() == 0:
        return 0.0
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.unsqueeze(1)).any(1).float().mean() * 100)


def train_linear_probe(
    train: FeatureSet,
    val: FeatureSet,
    num_classes: int,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> ProbeResult:
    """Train a linear classifier on fixed features; returns the probe and train/val accuracy.

    AdamW, cosine lr decay to 0 over ``epochs``, shuffled mini-batches from a seeded generator
    (same seed -> same probe on every rank).
    """
    if len(train) == 0:
        raise ValueError("the probe needs training features")
    if int(train.labels.max()) >= num_classes or int(train.labels.min()) < 0:
        raise ValueError(f"labels outside [0, {num_classes})")
    dim = train.features.shape[1]
    probe = LinearProbe(dim, num_classes, *standardisation(train.features))
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            loss = F.cross_entropy(probe(train.features[idx]), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        losses.append(total / n)
        log.debug("probe epoch %d: loss %.4f", epoch, losses[-1])
    probe.eval()
    with torch.no_grad():
        train_logits = probe(train.features)
        val_logits = probe(val.features) if len(val) else torch.empty(0, num_classes)
    return ProbeResult(
        probe=probe,
        train_top1=topk_accuracy(train_logits, train.labels),
        val_top1=topk_accuracy(val_logits, val.labels),
        val_top5=topk_accuracy(val_logits, val.labels, 5) if num_classes > 5 else None,
        losses=losses,
    )
