"""The MVD-style baseline objective: targets, decoder order, loss against a slow reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskagain.losses.mvd import MVDConfig, MVDObjective
from maskagain.masking import tube_mask
from maskagain.models import create_model


@pytest.fixture
def setup(tiny_kwargs):
    student = create_model("vit_nano", **tiny_kwargs)
    teacher = create_model("vit_micro", **tiny_kwargs).eval().requires_grad_(False)
    n = 2 * 4 * 4
    objective = MVDObjective(MVDConfig(loss="mse"), 64, 2, 128, n)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, (2, 4, 4), 0.75, torch.Generator().manual_seed(1))
    return student, teacher, objective, video, mask


def _reference_loss(objective, s_tokens, t_tokens, mask):
    """Loop over samples and tokens: decode in [visible, hidden] order, MSE on hidden tokens."""
    losses = []
    for b in range(mask.shape[0]):
        x = objective.embed(objective.encoder_norm(s_tokens[b]))
        vis_pos = [i for i in range(mask.shape[1]) if not mask[b, i]]
        hid_pos = [i for i in range(mask.shape[1]) if mask[b, i]]
        rows = [x[j] + objective.pos_embed[i] for j, i in enumerate(vis_pos)]
        rows += [objective.mask_token[0, 0] + objective.pos_embed[i] for i in hid_pos]
        h = torch.stack(rows)[None]
        for blk in objective.decoder.blocks:
            h = blk(h)
        pred = objective.decoder.head(objective.decoder.norm(h[0, len(vis_pos) :]))
        target = torch.stack([F.layer_norm(t_tokens[b, i], (t_tokens.shape[-1],)) for i in hid_pos])
        losses.append(((pred - target) ** 2).mean())
    return torch.stack(losses).mean()


def test_loss_matches_reference_and_trains_student(setup):
    student, teacher, objective, video, mask = setup
    with torch.inference_mode():
        t_out = teacher.forward_features(video)
    s_out = student.forward_features(video, mask)
    out = objective(s_out, t_out)
    ref = _reference_loss(objective, s_out.tokens, t_out.tokens.clone(), mask)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    out["loss"].backward()
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert objective.mask_token.grad.abs().sum() > 0


def test_smooth_l1_and_unnormalised_targets(setup):
    student, teacher, _, video, mask = setup
    objective = MVDObjective(MVDConfig(norm_target=False), 64, 2, 128, 32)
    with torch.no_grad():
        t_out = teacher.forward_features(video)
        s_out = student.forward_features(video, mask)
        pred = objective.decode(s_out.tokens, mask)
        target = t_out.tokens[mask].reshape(2, -1, 128)
        loss = objective(s_out, t_out)["loss"]
    torch.testing.assert_close(loss, F.smooth_l1_loss(pred, target))


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


def test_config_validation():
    with pytest.raises(ValueError, match="loss"):
        MVDConfig(loss="l1")
    with pytest.raises(ValueError, match="decoder_depth"):
        MVDConfig(decoder_depth=0)
