"""AMD: asymmetric masks, block outputs, direct and generation alignment against slow references."""

from __future__ import annotations

import math

import pytest
import torch

from maskagain.losses.amd import AMDConfig, AMDObjective
from maskagain.masking import asymmetric_masks, num_hidden
from maskagain.models import create_model
from maskagain.models.vit import EncoderOutput

GRID = (2, 4, 4)
N = 32


# ---------------------------------------------------------------------------- masks
def test_masks_subset_counts_and_tubes():
    g = torch.Generator().manual_seed(0)
    grid = (4, 7, 7)
    teacher, student = asymmetric_masks(64, grid, 0.9, 0.75, g)
    assert teacher.dtype == student.dtype == torch.bool
    assert teacher.shape == student.shape == (64, 4 * 49)
    assert not (teacher & ~student).any()  # hidden from the teacher -> hidden from the student
    assert torch.all(teacher.sum(1) == 4 * num_hidden(49, 0.75))  # 4 * 36
    assert torch.all(student.sum(1) == 4 * num_hidden(49, 0.9))  # 4 * 44
    for m in (teacher, student):  # tube: one spatial pattern for every frame
        frames = m.reshape(64, 4, 49)
        assert torch.equal(frames, frames[:, :1].expand_as(frames))
    assert len({tuple(row.tolist()) for row in student}) > 60  # patterns differ across samples
    # the student-only hidden positions are spread over the grid, not a fixed block
    only_student = (student & ~teacher).reshape(64, 4, 49)[:, 0].float().mean(0)
    assert only_student.min() > 0


def test_masks_follow_the_generator_and_validate():
    a = asymmetric_masks(3, GRID, 0.9, 0.75, torch.Generator().manual_seed(5))
    b = asymmetric_masks(3, GRID, 0.9, 0.75, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="at least as much"):
        asymmetric_masks(2, GRID, 0.5, 0.75)
    with pytest.raises(ValueError, match="teacher_ratio"):
        asymmetric_masks(2, GRID, 0.9, 1.0)
    same_t, same_s = asymmetric_masks(2, GRID, 0.75, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(same_t, same_s)


# ---------------------------------------------------------------------------- block outputs
@pytest.mark.slow
def test_block_outputs_match_a_manual_run(tiny_kwargs):
    model = create_model("vit_micro", **tiny_kwargs).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        out = model.forward_features(video, None, blocks=(0, -1))
        x = model.patch_embed(video) + model.pos_embed
        x = model.blocks[0](x)
        y, tap = model.blocks[1].forward_tapped(x)
        both = model.forward_features(video, None, attn_layers=(1,), blocks=(1,))
    torch.testing.assert_close(out.blocks[0], x)
    assert out.blocks[3] is out.tokens and set(out.blocks) == {0, 3}
    # a block can give its attention and its output in one call
    torch.testing.assert_close(both.blocks[1], y)
    torch.testing.assert_close(both.attn[1].logits, tap.logits)
    with pytest.raises(IndexError):
        model.forward_features(video, None, blocks=(4,))


# ---------------------------------------------------------------------------- objective
@pytest.fixture
def setup(tiny_kwargs):
    student = create_model("vit_nano", **tiny_kwargs)  # 64 wide, 2 blocks
    teacher = create_model("vit_micro", **tiny_kwargs).eval().requires_grad_(False)  # 128, 4
    objective = AMDObjective.from_models(AMDConfig(), student, teacher)
    video = torch.randn(2, 3, 4, 32, 32)
    t_mask, s_mask = asymmetric_masks(2, GRID, 0.9, 0.75, torch.Generator().manual_seed(2))
    return student, teacher, objective, video, t_mask, s_mask


def _slow_sinusoid(pos: int, dim: int) -> list[float]:
    """VideoMAE's 1-D table: angle_j = pos / 10000^(2 floor(j/2) / dim), sin on even j, cos on odd."""
    angles = [pos / 10000 ** (2 * (j // 2) / dim) for j in range(dim)]
    return [math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(angles)]


def _reference(objective, s_blocks, t_blocks, s_mask, t_mask):
    """Per layer pair and sample, by token position: direct MSE on the student's visible tokens,
    generator on [P z_s + pos at student-visible, mask token + pos at teacher-only tokens],
    MSE against the teacher's features there. Means over layer pairs."""
    dim = objective.pos_embed.shape[-1]
    table = torch.tensor([_slow_sinusoid(k, dim) for k in range(N)], dtype=torch.float32)
    direct, generation = [], []
    for i, (ls, lt) in enumerate(objective.pairs):
        sq_d, n_d, sq_g, n_g = 0.0, 0, 0.0, 0
        for b in range(s_mask.shape[0]):
            s_pos = [k for k in range(N) if not s_mask[b, k]]
            t_pos = [k for k in range(N) if not t_mask[b, k]]
            t_row = {k: r for r, k in enumerate(t_pos)}
            only_teacher = [k for k in t_pos if s_mask[b, k]]
            weight = objective.projections[i].weight
            proj = [weight @ s_blocks[ls][b, r] for r in range(len(s_pos))]
            for r, k in enumerate(s_pos):
                diff = proj[r] - t_blocks[lt][b, t_row[k]]
                sq_d, n_d = sq_d + diff.pow(2).sum().item(), n_d + diff.numel()
            seq = [proj[r] + table[k] for r, k in enumerate(s_pos)]
            seq += [objective.mask_tokens[i][0, 0] + table[k] for k in only_teacher]
            h = torch.stack(seq)[None]
            for blk in objective.generators[i].blocks:
                h = blk(h)
            for r, k in enumerate(only_teacher):
                diff = h[0, len(s_pos) + r] - t_blocks[lt][b, t_row[k]]
                sq_g, n_g = sq_g + diff.pow(2).sum().item(), n_g + diff.numel()
        direct.append(sq_d / n_d)
        generation.append(sq_g / n_g)
    return sum(direct) / len(direct), sum(generation) / len(generation)


def _run(setup, objective=None):
    student, teacher, default, video, t_mask, s_mask = setup
    objective = objective or default
    with torch.inference_mode():
        t_out = teacher.forward_features(video, t_mask, blocks=objective.teacher_blocks)
    s_out = student.forward_features(video, s_mask, blocks=objective.student_blocks)
    return objective, s_out, t_out


def test_default_layers_are_middle_and_last(setup):
    objective = setup[2]
    assert objective.pairs == [(0, 1), (1, 3)]  # blocks 1, 2 of 2 and 2, 4 of 4, counted from 1
    assert AMDConfig().layer_pairs(12, 24) == [(5, 11), (11, 23)]  # official 6 12 / 12 24
    assert len(objective.generators) == 2 and objective.generators[0].blocks[0].attn.num_heads == 2


@pytest.mark.slow
def test_loss_matches_reference_and_trains(setup):
    objective, s_out, t_out = _run(setup)
    out = objective(s_out, t_out)
    assert set(out) == {"direct", "generation", "loss"}
    t_blocks = {k: v.clone() for k, v in t_out.blocks.items()}
    ref_d, ref_g = _reference(objective, s_out.blocks, t_blocks, s_out.mask, t_out.mask)
    assert out["direct"].item() == pytest.approx(ref_d, rel=1e-5)
    assert out["generation"].item() == pytest.approx(ref_g, rel=1e-5)
    assert out["loss"].item() == pytest.approx(ref_d + ref_g, rel=1e-5)
    out["loss"].backward()
    student = setup[0]
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert objective.projections[0].weight.grad.abs().sum() > 0
    assert objective.mask_tokens[1].grad.abs().sum() > 0
    assert "mask_tokens.0" in objective.state_dict()  # saved, unlike the official list


def test_weights_loss_kind_and_explicit_layers(setup):
    cfg = AMDConfig(
        student_layers=(-1,), teacher_layers=(2,), loss="l1", direct_weight=0.5, generation_weight=0
    )
    objective = AMDObjective.from_models(cfg, setup[0], setup[1])
    assert not objective.generators and objective.pairs == [(1, 2)]
    objective, s_out, t_out = _run(setup, objective)
    with torch.no_grad():
        out = objective(s_out, t_out)
        s_mask, t_mask = s_out.mask, t_out.mask
        total, count = 0.0, 0
        for b in range(2):
            t_pos = [k for k in range(N) if not t_mask[b, k]]
            s_pos = [k for k in range(N) if not s_mask[b, k]]
            for r, k in enumerate(s_pos):
                diff = (
                    objective.projections[0].weight @ s_out.tokens[b, r]
                    - t_out.blocks[2][b, t_pos.index(k)]
                )
                total, count = total + float(diff.abs().sum()), count + diff.numel()
    assert set(out) == {"direct", "loss"}
    assert out["direct"].item() == pytest.approx(total / count, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * total / count, rel=1e-5)


def _with_blocks(out, blocks):
    return EncoderOutput(
        tokens=blocks[max(blocks)], frame_index=out.frame_index, mask=out.mask, blocks=blocks
    )


@pytest.mark.slow
def test_each_branch_reads_its_own_teacher_tokens(setup):
    """Direct alignment reads the teacher at the student's visible tokens only; generation at
    the teacher-visible, student-hidden tokens only."""
    objective, s_out, t_out = _run(setup)
    objective.eval()
    blocks = {k: v.clone() for k, v in t_out.blocks.items()}
    t_vis = ~t_out.mask
    student_visible = (~s_out.mask)[t_vis].reshape(2, -1)  # rows of the teacher's tokens
    with torch.no_grad():
        base = objective(s_out, _with_blocks(t_out, blocks))
        moved_vis = {k: v.clone() for k, v in blocks.items()}
        moved_gen = {k: v.clone() for k, v in blocks.items()}
        for k in blocks:
            moved_vis[k][student_visible] += 3.0
            moved_gen[k][~student_visible] += 3.0
        a = objective(s_out, _with_blocks(t_out, moved_vis))
        g = objective(s_out, _with_blocks(t_out, moved_gen))
    assert torch.equal(a["generation"], base["generation"]) and a["direct"] != base["direct"]
    assert torch.equal(g["direct"], base["direct"]) and g["generation"] != base["generation"]


def test_student_hidden_pixels_do_not_matter(setup):
    student, _, objective, video, t_mask, s_mask = setup
    objective.eval()
    _, s_out, t_out = _run(setup)
    repainted = video.clone()
    hidden = s_mask.reshape(2, 2, 4, 4).repeat_interleave(2, 1).repeat_interleave(8, 2)
    repainted[hidden.repeat_interleave(8, 3)[:, None].expand_as(video)] = -50.0
    with torch.no_grad():
        s_new = student.forward_features(repainted, s_mask, blocks=objective.student_blocks)
        a, b = objective(s_out, t_out)["loss"], objective(s_new, t_out)["loss"]
    assert torch.equal(a, b)


def test_rejects_wrong_masks_and_missing_blocks(setup):
    student, teacher, objective, video, t_mask, s_mask = setup
    with torch.no_grad():
        s_out = student.forward_features(video, s_mask, blocks=objective.student_blocks)
        swapped = teacher.forward_features(video, s_mask, blocks=objective.teacher_blocks)
        s_swapped = student.forward_features(video, t_mask, blocks=objective.student_blocks)
        with pytest.raises(ValueError, match="subset"):
            objective(s_swapped, swapped)
        with pytest.raises(ValueError, match="nothing to generate"):
            objective(s_out, swapped)
        plain = teacher.forward_features(video, t_mask)
        with pytest.raises(KeyError, match="blocks=objective.teacher_blocks"):
            objective(s_out, plain)
    with pytest.raises(ValueError, match="pair up"):
        AMDConfig(student_layers=(1, 2), teacher_layers=(3,))
    with pytest.raises(ValueError, match="nothing to train"):
        AMDConfig(direct_weight=0, generation_weight=0)
    with pytest.raises(ValueError, match="divisible"):
        AMDObjective(AMDConfig(), 64, 96, N, 2, 4)
