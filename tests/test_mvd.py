"""MVD: positions, decoder inputs, targets and losses against slow references."""

from __future__ import annotations

import math

import pytest
import torch

from maskagain.losses.mvd import (
    MVDConfig,
    MVDObjective,
    frame_tokens_to_clip,
    image_teacher_frames,
    sincos_3d_table,
)
from maskagain.masking import tube_mask
from maskagain.models import create_model

GRID = (2, 4, 4)


@pytest.fixture
def setup(tiny_kwargs):
    student = create_model("vit_nano", **tiny_kwargs)
    teacher = create_model("vit_micro", **tiny_kwargs).eval().requires_grad_(False)
    objective = MVDObjective.from_models(MVDConfig(), student, teacher).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, GRID, 0.75, torch.Generator().manual_seed(1))
    return student, teacher, objective, video, mask


def _slow_position(t: int, h: int, w: int, dim: int) -> list[float]:
    """MVD's 3-D table for one token: [time (dim/4) | column (3dim/8) | row (3dim/8)],
    each part sin(p * omega_k) for k < part/2 then cos(p * omega_k), omega_k = 10000^(-2k/part)."""
    row = []
    for part, p in ((dim // 4, t), (dim * 3 // 8, w), (dim * 3 // 8, h)):
        omegas = [1.0 / 10000 ** (k / (part / 2)) for k in range(part // 2)]
        row += [math.sin(p * o) for o in omegas] + [math.cos(p * o) for o in omegas]
    return row


def _slow_table(grid, dim):
    f, h, w = grid
    rows = [_slow_position(t, i, j, dim) for t in range(f) for i in range(h) for j in range(w)]
    return torch.tensor(rows, dtype=torch.float32)


def _smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def _reference_loss(branch, norm, s_tokens, t_tokens, mask, kind="smooth_l1", norm_target=False):
    """Per sample: [visible + pos, mask token + pos] through the blocks, head on the hidden rows,
    elementwise loss against the teacher's (optionally LayerNormed) features of hidden tokens."""
    table = _slow_table(GRID, branch.mask_token.shape[-1])
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        x = branch.embed(norm(s_tokens[b]))
        vis_pos = [i for i in range(mask.shape[1]) if not mask[b, i]]
        hid_pos = [i for i in range(mask.shape[1]) if mask[b, i]]
        rows = [x[j] + table[i] for j, i in enumerate(vis_pos)]
        rows += [branch.mask_token[0, 0] + table[i] for i in hid_pos]
        h = torch.stack(rows)[None]
        for blk in branch.decoder.blocks:
            h = blk(h)
        pred = branch.decoder.head(branch.decoder.norm(h[0, len(vis_pos) :]))
        for r, i in enumerate(hid_pos):
            target = t_tokens[b, i].double()
            if norm_target:
                target = (target - target.mean()) / torch.sqrt(target.var(unbiased=False) + 1e-6)
            for p, t in zip(pred[r].tolist(), target.tolist()):
                diff = p - t
                total += _smooth_l1(diff) if kind == "smooth_l1" else diff * diff
                count += 1
    return total / count


def test_position_table_matches_the_formula():
    for dim in (16, 64):
        torch.testing.assert_close(sincos_3d_table(GRID, dim), _slow_table(GRID, dim))
    with pytest.raises(ValueError, match="16"):
        sincos_3d_table(GRID, 40)


def test_loss_matches_reference_and_trains_student(setup):
    student, teacher, objective, video, mask = setup
    with torch.inference_mode():
        t_out = teacher.forward_features(video, objective.teacher_mask(mask))
    s_out = student.forward_features(video, mask)
    out = objective(s_out, t_out)
    assert set(out) == {"video", "loss"}
    ref = _reference_loss(
        objective.branches["video"], objective.encoder_norm, s_out.tokens, t_out.tokens, mask
    )
    assert out["loss"].item() == pytest.approx(ref, rel=1e-5, abs=1e-7)
    out["loss"].backward()
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert objective.branches["video"].mask_token.grad.abs().sum() > 0


@pytest.mark.slow
def test_mse_with_normalised_targets(setup):
    student, teacher, _, video, mask = setup
    cfg = MVDConfig(loss="mse", norm_target=True, decoder_depth=1)
    objective = MVDObjective.from_models(cfg, student, teacher).eval()
    with torch.no_grad():
        t_out = teacher.forward_features(video)
        s_out = student.forward_features(video, mask)
        loss = objective(s_out, t_out)["loss"]
        branch = objective.branches["video"]
        ref = _reference_loss(
            branch, objective.encoder_norm, s_out.tokens, t_out.tokens, mask, "mse", True
        )
    assert loss.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.slow
def test_hidden_pixels_do_not_reach_the_decoder(setup):
    """Repainting the student's hidden tubelets changes neither the student tokens nor the loss."""
    student, teacher, objective, video, mask = setup
    with torch.no_grad():
        t_out = teacher.forward_features(video)
        repainted = video.clone()
        hidden_tokens = mask.reshape(2, 2, 4, 4)  # (B, F, H', W')
        pixel_hidden = hidden_tokens.repeat_interleave(2, 1).repeat_interleave(8, 2)
        pixel_hidden = pixel_hidden.repeat_interleave(8, 3)[:, None].expand_as(video)
        repainted[pixel_hidden] = 100.0
        assert not torch.equal(repainted, video)
        a = objective(student.forward_features(video, mask), t_out)["loss"]
        b = objective(student.forward_features(repainted, mask), t_out)["loss"]
    assert torch.equal(a, b)


def test_loss_depends_on_teacher_features_at_hidden_tokens_only(setup):
    student, teacher, objective, video, mask = setup
    with torch.no_grad():
        t_tokens = teacher.forward_features(video).tokens
        s_out = student.forward_features(video, mask)
        base = objective(s_out, _output(t_tokens))["loss"]
        visible = t_tokens.clone()
        visible[~mask] += 5.0
        hidden = t_tokens.clone()
        hidden[0, mask[0].nonzero()[0, 0]] += 5.0
        assert torch.equal(objective(s_out, _output(visible))["loss"], base)
        assert objective(s_out, _output(hidden))["loss"] != base


def _output(tokens):
    from maskagain.models.vit import EncoderOutput

    return EncoderOutput(tokens=tokens, frame_index=torch.zeros(tokens.shape[:2]), mask=None)


def test_co_teaching_two_decoders(setup):
    student, teacher, _, video, mask = setup
    cfg = MVDConfig(image_weight=1.0, video_weight=0.5)
    objective = MVDObjective.from_models(cfg, student, teacher, image_teacher_dim=48).eval()
    assert set(objective.branches) == {"video", "image"}
    image_tokens = torch.randn(2, 32, 48)
    with torch.no_grad():
        t_out = teacher.forward_features(video)
        s_out = student.forward_features(video, mask)
        out = objective(s_out, t_out, image_tokens)
        norm = objective.encoder_norm
        ref_img = _reference_loss(
            objective.branches["image"], norm, s_out.tokens, image_tokens, mask
        )
        ref_vid = _reference_loss(
            objective.branches["video"], norm, s_out.tokens, t_out.tokens, mask
        )
    assert out["image"].item() == pytest.approx(ref_img, rel=1e-5)
    assert out["video"].item() == pytest.approx(ref_vid, rel=1e-5)
    assert out["loss"].item() == pytest.approx(ref_img + 0.5 * ref_vid, rel=1e-5)
    with pytest.raises(ValueError, match="image teacher"):
        objective(s_out, t_out)


def test_image_teacher_layout():
    video = torch.arange(2 * 3 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 3, 4, 2, 2)
    frames = image_teacher_frames(video, 2)  # (B * F, C, H, W)
    assert frames.shape == (4, 3, 2, 2)
    torch.testing.assert_close(frames[1], video[0, :, 2])  # sample 0, tubelet 1, its first frame
    torch.testing.assert_close(frames[2], video[1, :, 0])
    tokens = torch.randn(4, 5, 7)  # (B * F, L, D)
    clip = frame_tokens_to_clip(tokens, 2)
    torch.testing.assert_close(clip[1, 5 + 3], tokens[3, 3])  # sample 1, frame 1, token 3


def test_rejects_masked_teacher_and_unmasked_student(setup):
    student, teacher, objective, video, mask = setup
    with torch.no_grad():
        masked_teacher = teacher.forward_features(video, mask)
        full_teacher = teacher.forward_features(video)
        s_out = student.forward_features(video, mask)
        with pytest.raises(ValueError, match="all 32 tokens"):
            objective(s_out, masked_teacher)
        with pytest.raises(ValueError, match="masked clip"):
            objective(student.forward_features(video), full_teacher)


def test_official_init_and_config_validation(setup):
    branch = setup[2].branches["video"]
    w = branch.decoder.blocks[0].mlp.fc1.weight  # xavier-uniform: bound sqrt(6 / (in + out))
    assert w.abs().max().item() <= math.sqrt(6 / sum(w.shape)) + 1e-7
    assert w.std().item() > 0.05  # trunc_normal(0.02) would give ~0.018
    assert branch.mask_token.abs().max().item() <= 0.02
    with pytest.raises(ValueError, match="loss"):
        MVDConfig(loss="huber")
    with pytest.raises(ValueError, match="decoder_depth"):
        MVDConfig(decoder_depth=0)
    with pytest.raises(ValueError, match="nothing to train"):
        MVDConfig(video_weight=0.0)
    with pytest.raises(ValueError, match="image_teacher_dim"):
        MVDObjective(MVDConfig(image_weight=1.0), 64, 2, 128, GRID)
    with pytest.raises(ValueError, match="token grid"):
        MVDObjective(MVDConfig(), 64, 2, 128, 32)
