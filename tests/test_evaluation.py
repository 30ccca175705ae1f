"""Multi-view aggregation and metrics against slow references; DDP de-duplication on gloo."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from maskagain.engine.evaluation import MultiViewAccumulator, aggregate_views, save_report

K = 6


def _view_logits(sample_index: torch.Tensor) -> torch.Tensor:
    """Deterministic (n, K) logits per sample index, the same on every rank."""
    g = torch.Generator().manual_seed(123)
    table = torch.randn(64, K, generator=g) * 3
    return table[sample_index]


def _reference(sample_index, video_index, labels, logits):
    """Per-video mean softmax, each sample index once, loops and dicts only."""
    seen, per_video, label_of = set(), {}, {}
    for s, v, y, z in zip(sample_index.tolist(), video_index.tolist(), labels.tolist(), logits):
        if s in seen:
            continue
        seen.add(s)
        per_video.setdefault(v, []).append(torch.softmax(z.double(), 0))
        label_of[v] = y
    vids = sorted(per_video)
    scores = torch.stack([sum(per_video[v]) / len(per_video[v]) for v in vids])
    top1 = top5 = 0
    conf = np.zeros((K, K), dtype=np.int64)
    for i, v in enumerate(vids):
        ranked = sorted(range(K), key=lambda c, i=i: -scores[i, c].item())
        top1 += ranked[0] == label_of[v]
        top5 += label_of[v] in ranked[:5]
        conf[label_of[v], ranked[0]] += 1
    n = len(vids)
    return vids, scores, 100 * top1 / n, 100 * top5 / n, conf, [len(per_video[v]) for v in vids]


def _dataset(videos: int = 7, views: int = 3) -> tuple[torch.Tensor, ...]:
    sample = torch.arange(videos * views)
    video = sample // views
    labels = (video * 5 + 1) % K
    return sample, video, labels


def test_aggregate_matches_reference_with_duplicates_and_shuffle() -> None:
    sample, video, labels = _dataset()
    perm = torch.randperm(sample.numel())
    dup = torch.tensor([0, 4, 4])  # repeated rows, as sampler padding makes them
    s = torch.cat([sample[perm], sample[dup]])
    v = torch.cat([video[perm], video[dup]])
    y = torch.cat([labels[perm], labels[dup]])
    logits = _view_logits(s)
    result = aggregate_views(s, v, y, logits.softmax(-1), K)
    vids, scores, top1, top5, conf, views = _reference(s, v, y, logits)
    assert result.video_index.tolist() == vids
    assert torch.allclose(result.scores.double(), scores, atol=1e-6)
    assert result.views.tolist() == views == [3] * 7
    assert result.top1 == pytest.approx(top1)
    assert result.top5 == pytest.approx(top5)
    assert np.array_equal(result.confusion.numpy(), conf)
    pc = result.per_class_accuracy()
    for c in range(K):
        support = conf[c].sum()
        if support:
            assert pc[c].item() == pytest.approx(conf[c, c] / support)
        else:
            assert torch.isnan(pc[c])


def test_inconsistent_labels_rejected() -> None:
    s = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="different labels"):
        aggregate_views(s, torch.tensor([0, 0]), torch.tensor([1, 2]), torch.rand(2, K), K)


def test_save_report_writes_files(tmp_path: Path) -> None:
    sample, video, labels = _dataset()
    acc = MultiViewAccumulator(K)
    for chunk in torch.arange(sample.numel()).split(4):
        acc.add(_view_logits(sample[chunk]), labels[chunk], video[chunk], sample[chunk])
    result = acc.compute()
    names = [f"class_{c}" for c in range(K)]
    paths = save_report(result, tmp_path, names)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    conf = np.load(tmp_path / "confusion_matrix.npy")
    assert np.array_equal(conf, result.confusion.numpy())
    rows = list(csv.reader(open(tmp_path / "confusion_matrix.csv")))
    assert rows[0][1:] == names and int(rows[1][1]) == conf[0, 0]
    preds = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert len(preds) == 7 and all(int(r["views"]) == 3 for r in preds)
    m = result.metrics()
    assert m["num_videos"] == 7 and m["num_views"] == 21


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sample, video, labels = _dataset(videos=5, views=3)  # 15 views -> sampler pads to 16
        sampler = DistributedSampler(range(15), num_replicas=world, rank=rank, shuffle=False)
        idx = torch.tensor(list(sampler))
        acc = MultiViewAccumulator(K)
        for chunk in idx.split(3):
            acc.add(_view_logits(sample[chunk]), labels[chunk], video[chunk], sample[chunk])
        result = acc.compute()
        torch.save(
            {"scores": result.scores, "views": result.views, "top1": result.top1},
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_each_view_counted_once(tmp_path: Path) -> None:
    out = str(tmp_path / "res")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    sample, video, labels = _dataset(videos=5, views=3)
    ref = aggregate_views(sample, video, labels, _view_logits(sample).softmax(-1), K)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got["views"].tolist() == [3] * 5, "a padded view was counted twice"
        assert torch.allclose(got["scores"], ref.scores, atol=1e-6)
        assert got["top1"] == pytest.approx(ref.top1)
