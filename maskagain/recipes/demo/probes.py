"""The demo's probes: one shared set of rendered clips, and two linear probes (mean-pooled and
pooled per time step) on the frozen features of every encoder."""

from __future__ import annotations

import logging
import math
import tempfile

import torch

from maskagain.data import DataConfig, build_dataset
from maskagain.data.datasets import synthetic_spec
from maskagain.data.synthetic_store import SyntheticStore
from maskagain.engine.probe import extract_pooled_features, train_linear_probe
from maskagain.models.vit import VideoViT
from maskagain.recipes.demo.rows import data_section
from maskagain.recipes.demo.settings import (
    GEOMETRY,
    NUM_CLASSES,
    PROBE,
    RENDER_WORKERS,
    DemoSizes,
)
from maskagain.recipes.sections import ScratchModelSpec

log = logging.getLogger(__name__)


def random_encoder(arch: dict, seed: int = 0) -> VideoViT:
    """A randomly initialised encoder of architecture ``arch`` (seeded; ``arch["init"]``, if
    given, names the scheme, as a pre-training config's ``model.init``)."""
    spec = ScratchModelSpec(**{**arch, **GEOMETRY})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return spec.build()


class ProbeClips:
    """The probe's clips, generated once (in ``workers`` processes, into ``store``; None: a
    temporary folder) and shared by every encoder (seed 0 train / val)."""

    def __init__(
        self, sizes: DemoSizes, workers: int = RENDER_WORKERS, store: SyntheticStore | None = None
    ) -> None:
        val = {"synthetic_val_clips": sizes.probe_val_clips}
        cfg = DataConfig(**data_section(sizes, sizes.probe_train_clips, **val))
        cfg.validate()
        self.splits = {}
        if store is not None:
            self._load(cfg, store, workers)
            return
        with tempfile.TemporaryDirectory(prefix="maskagain-probe-clips-") as folder:
            self._load(
                cfg, SyntheticStore(folder, synthetic_spec(cfg), cfg.synthetic_seed), workers
            )

    def _load(self, cfg: DataConfig, store: SyntheticStore, workers: int) -> None:
        """Render the clips into ``store`` and read them, transformed, into ``splits``."""
        cfg.synthetic_store = str(store.folder)
        counts = {"train": cfg.synthetic_train_clips, "val": cfg.synthetic_val_clips}
        for split, count in counts.items():
            store.render(split, [(0, i) for i in range(count)], workers)
            ds = build_dataset(cfg, split, "eval")
            items = [ds[i] for i in range(len(ds))]
            video = torch.stack([it["video"] for it in items]).half()
            label = torch.tensor([it["label"] for it in items])
            self.splits[split] = (video, label, torch.arange(len(items)))

    def batches(self, split: str, batch_size: int = 64, single_frame: bool = False):
        """(video, label, index) batches; ``single_frame``: every frame replaced by the middle
        one (a static clip: the appearance is there, the motion is not)."""
        video, label, index = self.splits[split]
        for i in range(0, len(label), batch_size):
            s = slice(i, i + batch_size)
            clip = video[s].float()
            if single_frame:
                t = clip.shape[2]
                clip = clip[:, :, t // 2 : t // 2 + 1].expand_as(clip).contiguous()
            yield clip, label[s], index[s]


def probe_encoders(
    encoders: dict, sizes: DemoSizes, clips: ProbeClips | None = None, seed: int = 0
) -> dict[str, dict]:
    """Linear probes (frozen features, standardised; AdamW 50 epochs) of every encoder, on
    mean-pooled features and on features pooled per time step (``pooling="time"``):
    {name: {train_top1, val_top1, val_se, time_train_top1, time_val_top1, time_val_se,
    num_train, num_val}}. Names ending in ``_single_frame`` see static clips (the middle frame
    repeated)."""
    clips = clips or ProbeClips(sizes)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for name, encoder in encoders.items():
        encoder = encoder.float().to(device)
        static = name.endswith("_single_frame")
        out[name] = {}
        train, val = (
            extract_pooled_features(encoder, clips.batches(split, single_frame=static), device)
            for split in ("train", "val")
        )  # one forward pass per clip for both poolings
        for pooling, prefix in (("mean", ""), ("time", "time_")):
            tr, va = train[pooling], val[pooling]
            res = train_linear_probe(tr, va, NUM_CLASSES, **PROBE, seed=seed)
            out[name].update({
                f"{prefix}train_top1": round(res.train_top1, 2),
                f"{prefix}val_top1": round(res.val_top1, 2),
                f"{prefix}val_se": round(standard_error(res.val_top1, len(va)), 2),
                "num_train": len(tr),
                "num_val": len(va),
            })  # fmt: skip
            log.info("probe %s (%s pooling): val top-1 %.1f (train %.1f)",
                     name, pooling, res.val_top1, res.train_top1)  # fmt: skip
    return out


def standard_error(top1: float, n: int) -> float:
    """Binomial standard error (percentage points) of an accuracy ``top1`` (%) over ``n``."""
    if n <= 0:
        return float("nan")
    p = top1 / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / n)
