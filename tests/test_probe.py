"""Linear probe: frozen feature extraction and the classifier, against plain references."""

from __future__ import annotations

import pytest
import torch

from maskagain.engine.probe import (
    FeatureSet,
    extract_features,
    standardisation,
    topk_accuracy,
    train_linear_probe,
)
from maskagain.models import create_model


def test_extract_features_is_eval_mode_pooled_and_gradient_free(tiny_kwargs: dict) -> None:
    model = create_model("vit_nano", drop_path_rate=0.5, drop_rate=0.3, **tiny_kwargs)
    model.train()
    videos = torch.randn(5, 3, 4, 32, 32)
    labels = torch.tensor([0, 1, 2, 1, 0])
    batches = [
        (videos[:3], labels[:3], torch.arange(3)),
        (videos[3:], labels[3:], torch.arange(3, 5)),
    ]
    fs = extract_features(model, batches)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert fs.features.shape == (5, model.embed_dim) and not fs.features.requires_grad
    with torch.no_grad():  # reference: final norm, mean over tokens, one clip at a time
        for i in range(5):
            tokens = model.forward_features(videos[i : i + 1]).tokens[0]
            ref = model.norm(tokens).mean(0)
            assert torch.allclose(fs.features[i], ref, atol=1e-5)
    assert fs.labels.tolist() == labels.tolist()


def test_features_pooled_per_time_step_keep_the_order_of_events(tiny_kwargs: dict) -> None:
    model = create_model("vit_nano", **tiny_kwargs)
    videos = torch.randn(3, 3, 4, 32, 32)
    fs = extract_features(model, [(videos, torch.zeros(3), torch.arange(3))], pooling="time")
    steps = 4 // model.cfg.tubelet_size
    assert fs.features.shape == (3, steps * model.embed_dim)
    with torch.no_grad():  # reference: final norm, then the mean over space at each step
        for i in range(3):
            x = model.norm(model.forward_features(videos[i : i + 1]).tokens[0])  # (N, D)
            per_step = x.view(steps, -1, model.embed_dim).mean(1)  # tokens are time-major
            assert torch.allclose(fs.features[i], per_step.flatten(), atol=1e-5)
    # the same clip played backwards: the mean over all tokens cannot tell, per step can
    reverse = videos.flip(2)
    batch = [(torch.cat([videos, reverse]), torch.zeros(6), torch.arange(6))]
    fs_mean = extract_features(model, batch)
    fs_time = extract_features(model, batch, pooling="time")
    assert not torch.allclose(fs_time.features[:3], fs_time.features[3:], atol=1e-3)
    assert fs_mean.features.shape == (6, model.embed_dim)
    with pytest.raises(ValueError, match="pooling"):
        extract_features(model, batch, pooling="max")


def _blobs(n: int, dim: int, k: int, seed: int) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=torch.Generator().manual_seed(99)) * 4 + 10
    labels = torch.randint(0, k, (n,), generator=g)
    feats = centres[labels] + torch.randn(n, dim, generator=g) * 2.0
    return FeatureSet(feats, labels, torch.arange(n))


@pytest.mark.slow
def test_probe_learns_separable_features_and_loss_falls() -> None:
    train, val = _blobs(300, 16, 4, 0), _blobs(100, 16, 4, 1)
    res = train_linear_probe(train, val, num_classes=4, epochs=20, lr=1e-2, batch_size=64)
    assert res.val_top1 > 90 and res.train_top1 > 90
    assert res.val_top5 is None  # 4 classes: top-5 would always be 100
    assert res.losses[-1] < 0.5 * res.losses[0]
    # the probe standardises with the training statistics
    mean = train.features.sum(0) / 300
    std = ((train.features - mean) ** 2).mean(0).sqrt()
    assert torch.allclose(res.probe.mean[0], mean, atol=1e-4)
    assert torch.allclose(res.probe.std[0], std, atol=1e-4)
    again = train_linear_probe(train, val, num_classes=4, epochs=20, lr=1e-2, batch_size=64)
    assert torch.equal(again.probe.linear.weight, res.probe.linear.weight), "seeded, deterministic"


def test_probe_at_chance_on_random_labels() -> None:
    train, val = _blobs(200, 8, 4, 0), _blobs(400, 8, 4, 1)
    val.labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(5))
    res = train_linear_probe(train, val, num_classes=4, epochs=5)
    assert res.val_top1 < 40


def test_topk_accuracy_reference() -> None:
    logits = torch.randn(20, 7)
    labels = torch.randint(0, 7, (20,))
    for k in (1, 3):
        ref = sum(
            labels[i].item() in sorted(range(7), key=lambda c, i=i: -logits[i, c].item())[:k]
            for i in range(20)
        )
        assert topk_accuracy(logits, labels, k) == pytest.approx(100 * ref / 20)
    mean, std = standardisation(torch.ones(4, 3))
    assert torch.all(std > 0)
