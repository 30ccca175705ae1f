"""Video mixup / cutmix against slow per-element references."""

from __future__ import annotations

import math

import pytest
import torch

from maskagain.engine.mixup import (
    MixParams,
    VideoMixup,
    smooth_one_hot,
    soft_target_cross_entropy,
)


def _ref_smooth(target: list[int], k: int, eps: float) -> torch.Tensor:
    out = torch.zeros(len(target), k)
    for i, t in enumerate(target):
        for c in range(k):
            out[i, c] = (1 - eps + eps / k) if c == t else eps / k
    return out


def _clips(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, 3, 4, 8, 10), torch.tensor([0, 2, 1, 4, 3][:b])


def test_smooth_one_hot_matches_reference() -> None:
    t = torch.tensor([0, 3, 1])
    got = smooth_one_hot(t, 5, 0.1)
    assert torch.allclose(got, _ref_smooth([0, 3, 1], 5, 0.1))
    assert torch.allclose(got.sum(1), torch.ones(3))


def test_soft_target_ce_equals_hard_ce_for_one_hot() -> None:
    logits = torch.randn(6, 5)
    t = torch.randint(0, 5, (6,))
    got = soft_target_cross_entropy(logits, smooth_one_hot(t, 5, 0.0))
    assert torch.allclose(got, torch.nn.functional.cross_entropy(logits, t), atol=1e-6)
    got_s = soft_target_cross_entropy(logits, smooth_one_hot(t, 5, 0.1))
    ref_s = torch.nn.functional.cross_entropy(logits, t, label_smoothing=0.1)
    assert torch.allclose(got_s, ref_s, atol=1e-6)


def test_cutmix_pastes_same_box_in_every_frame() -> None:
    video, target = _clips()
    mix = VideoMixup(num_classes=5, label_smoothing=0.1)
    params = MixParams(lam=1 - (5 - 2) * (7 - 3) / 80, box=(2, 5, 3, 7))
    mixed, soft = mix.apply(video, target, params)
    b, c, t, h, w = video.shape
    ref = torch.empty_like(video)
    for i in range(b):
        for ch in range(c):
            for f in range(t):
                for y in range(h):
                    for x in range(w):
                        inside = 2 <= y < 5 and 3 <= x < 7
                        src = b - 1 - i if inside else i
                        ref[i, ch, f, y, x] = video[src, ch, f, y, x]
    assert torch.equal(mixed, ref)
    y1 = _ref_smooth(target.tolist(), 5, 0.1)
    lam = params.lam
    ref_soft = torch.stack([lam * y1[i] + (1 - lam) * y1[b - 1 - i] for i in range(b)])
    assert torch.allclose(soft, ref_soft)
    assert torch.allclose(soft.sum(1), torch.ones(b))


def test_mixup_is_convex_combination_with_flipped_batch() -> None:
    video, target = _clips()
    mix = VideoMixup(num_classes=5, label_smoothing=0.0)
    orig = video.clone()
    mixed, soft = mix.apply(video, target, MixParams(lam=0.3))
    assert torch.equal(video, orig), "input must not be modified"
    for i in range(4):
        assert torch.allclose(mixed[i], 0.3 * video[i] + 0.7 * video[3 - i], atol=1e-6)
        assert math.isclose(
            soft[i, target[i]].item(),
            0.3 + (0.7 if target[i] == target[3 - i] else 0),
            rel_tol=1e-6,
        )


@pytest.mark.parametrize("switch_prob", [0.0, 1.0])
def test_sample_respects_switch_prob_and_box_area(switch_prob: float) -> None:
    mix = VideoMixup(num_classes=5, switch_prob=switch_prob, seed=1)
    for _ in range(50):
        p = mix.sample(16, 20)
        if switch_prob == 1.0:
            assert p.box is not None
            y0, y1, x0, x1 = p.box
            assert 0 <= y0 <= y1 <= 16 and 0 <= x0 <= x1 <= 20
            assert math.isclose(p.lam, 1 - (y1 - y0) * (x1 - x0) / 320)
        else:
            assert p.box is None and 0 <= p.lam <= 1


def test_cutmix_changes_exactly_the_box_fraction() -> None:
    video, target = _clips()
    mix = VideoMixup(num_classes=5, switch_prob=1.0, seed=3)
    for _ in range(10):
        params = mix.sample(8, 10)
        mixed, _ = mix.apply(video, target, params)
        changed = (mixed[0] != video[0]).any(0)  # (T, H, W), over channels
        assert all(torch.equal(changed[0], changed[f]) for f in range(4)), "box differs per frame"
        assert math.isclose(1 - changed[0].float().mean().item(), params.lam, abs_tol=1e-6)


def test_prob_zero_only_smooths() -> None:
    video, target = _clips()
    mix = VideoMixup(num_classes=5, prob=0.0)
    mixed, soft = mix(video, target)
    assert torch.equal(mixed, video)
    assert torch.allclose(soft, _ref_smooth(target.tolist(), 5, 0.1))


def test_rejects_image_batches() -> None:
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        VideoMixup(num_classes=5).apply(torch.zeros(2, 3, 8, 8), torch.zeros(2), MixParams(0.5))


def test_state_round_trip_continues_the_stream() -> None:
    a = VideoMixup(num_classes=5, seed=7)
    a.sample(8, 8)
    b = VideoMixup(num_classes=5, seed=0)
    b.load_state_dict(a.state_dict())
    assert [a.sample(8, 8) for _ in range(5)] == [b.sample(8, 8) for _ in range(5)]
