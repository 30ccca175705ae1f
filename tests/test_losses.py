"""Every loss of maskagain.losses against a plain, slow reference written with Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from maskagain.losses import (
    activation_topk,
    aggregate_full,
    aggregate_global,
    aggregate_local,
    attention_transfer_loss,
    feature_mse,
    frame_groups,
    gather_frame_logits,
    hint_loss,
    relation_loss,
    select_global,
    select_local,
    stable_topk_indices,
)
from maskagain.losses.hidden import _global_dense, _global_gather
from maskagain.masking import random_mask, tube_mask

# ---------------------------------------------------------------------- slow references


def ref_topk(row: list[float], candidates: list[int], k: int) -> list[int]:
    """The k largest of ``row`` among ``candidates``, ties to the lower index."""
    return sorted(candidates, key=lambda j: (-row[j], j))[:k]


def ref_weights(row: list[float], kept: list[int], pool: list[int], tau: float, renorm: bool):
    """Softmax weights of the kept keys: over the kept logits, or over the whole ``pool``."""
    base = kept if renorm else pool
    top = max(row[j] for j in base)
    z = sum(math.exp((row[j] - top) / tau) for j in base)
    return [math.exp((row[j] - top) / tau) / z for j in kept]


def ref_global(logits, values, k, tau=1.0, renorm=True, index_from=None):
    """(B, h, N, d) with loops over batch, head and query; ``index_from`` selects the keys."""
    b_, h_, n, d = values.shape
    out = torch.zeros(b_, h_, n, d, dtype=torch.float64)
    sel = logits if index_from is None else index_from
    for b in range(b_):
        for h in range(h_):
            for q in range(n):
                row = logits[b, h, q].double().tolist()
                kept = ref_topk(sel[b, h, q].double().tolist(), list(range(n)), k)
                w = ref_weights(row, kept, list(range(n)), tau, renorm)
                for wj, j in zip(w, kept):
                    out[b, h, q] += wj * values[b, h, j].double()
    return out


def ref_local(logits, values, frame_index, num_frames, k, tau=1.0, renorm=True, select_from=None):
    """(B, h, N, F, d) with loops over batch, head, query and frame, keys by true frame index."""
    b_, h_, n, d = values.shape
    out = torch.zeros(b_, h_, n, num_frames, d, dtype=torch.float64)
    sel = logits if select_from is None else select_from
    for b in range(b_):
        for f in range(num_frames):
            keys = [j for j in range(n) if int(frame_index[b, j]) == f]
            if not keys:
                continue
            for h in range(h_):
                for q in range(n):
                    row = logits[b, h, q].double().tolist()
                    kept = ref_topk(sel[b, h, q].double().tolist(), keys, k)
                    w = ref_weights(row, kept, keys, tau, renorm)
                    for wj, j in zip(w, kept):
                        out[b, h, q, f] += wj * values[b, h, j].double()
    return out


def ref_activation_topk(tokens, k):
    return [
        ref_topk(tokens[b].double().abs().sum(-1).tolist(), list(range(tokens.shape[1])), k)
        for b in range(tokens.shape[0])
    ]


def ref_hint(student, teacher, index):
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for j in index[b]:
            for c in range(student.shape[-1]):
                total += (float(student[b, j, c]) - float(teacher[b, j, c])) ** 2
                count += 1
    return total / count


def ref_relation(s, t, tau_s, tau_t, softmax="row"):
    """KL(P_t || P_s) over cosine similarities, self-pairs excluded, with loops."""
    k = s.shape[0]

    def cos(x, i, j):
        xi, xj = x[i].double(), x[j].double()
        return float(xi @ xj / (xi.norm() * xj.norm()))

    def logp(x, tau):
        sims = {(i, j): cos(x, i, j) / tau for i in range(k) for j in range(k) if i != j}
        out = {}
        groups = (
            [[(i, j) for j in range(k) if j != i] for i in range(k)]
            if softmax == "row"
            else [list(sims)]
        )
        for group in groups:
            top = max(sims[p] for p in group)
            lse = top + math.log(sum(math.exp(sims[p] - top) for p in group))
            for p in group:
                out[p] = sims[p] - lse
        return out

    ls, lt = logp(s, tau_s), logp(t, tau_t)
    kl = sum(math.exp(lt[p]) * (lt[p] - ls[p]) for p in lt)
    return kl / k if softmax == "row" else kl


def ref_attention_transfer(s, t, tau, mode):
    b_, h_, n, _ = s.shape
    total, rows = 0.0, 0
    for b in range(b_):
        for h in range(h_):
            for q in range(n):
                ps = torch.softmax(s[b, h, q].double() / tau, -1)
                pt = torch.softmax(t[b, h, q].double() / tau, -1)
                if mode == "kl":
                    total += float((pt * (pt.log() - ps.log())).sum())
                    rows += 1
                else:
                    total += float(((ps - pt) ** 2).sum())
                    rows += n
    return total / rows


# ---------------------------------------------------------------------- fixtures / helpers


def taps(b=2, h=3, n=12, d=5, scale=2.0):
    return torch.randn(b, h, n, n) * scale, torch.randn(b, h, n, d)


def random_frame_index(b=2, grid=(4, 2, 3), ratio=0.5) -> torch.Tensor:
    """Frame index of the visible tokens of a random (non-tube) mask: uneven frame counts."""
    g = torch.Generator().manual_seed(3)
    mask = random_mask(b, grid, ratio, generator=g)
    n = math.prod(grid)
    fi = torch.arange(n).div(grid[1] * grid[2], rounding_mode="floor").expand(b, n)
    return fi[~mask].reshape(b, -1)


def tube_frame_index(b=2, grid=(4, 2, 3), ratio=0.5) -> torch.Tensor:
    mask = tube_mask(b, grid, ratio, generator=torch.Generator().manual_seed(1))
    n = math.prod(grid)
    fi = torch.arange(n).div(grid[1] * grid[2], rounding_mode="floor").expand(b, n)
    return fi[~mask].reshape(b, -1)


FP32 = dict(atol=1e-5, rtol=1e-5)


def shuffled_frame_index(b=2, grid=(4, 2, 3), ratio=0.5) -> torch.Tensor:
    """Equal frame counts, tokens not in frame order (a layout the encoder does not make)."""
    fi = tube_frame_index(b, grid, ratio)
    return fi[:, torch.randperm(fi.shape[1], generator=torch.Generator().manual_seed(5))]


BF16 = dict(atol=5e-2, rtol=5e-2)


def close(got: torch.Tensor, want: torch.Tensor, **tol) -> None:
    """``got`` (any float dtype) against an fp64 reference, fp32 tolerance unless given."""
    torch.testing.assert_close(got.double(), want.double(), **(tol or FP32))


# ---------------------------------------------------------------------- selection


def test_stable_topk_breaks_ties_to_lower_index_and_keeps_exactly_k():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 3.0]])
    idx = stable_topk_indices(scores, 3)
    assert idx.tolist() == [[1, 2, 4]]
    # no tie across the boundary: the set is exact whichever path runs
    assert sorted(stable_topk_indices(scores, 4)[0].tolist()) == [1, 2, 4, 5]
    assert sorted(stable_topk_indices(-scores, 2)[0].tolist()) == [0, 3]
    # the official ">= k-th value" keeps every tie: four entries here
    kth = scores.topk(3).values[:, -1:]
    assert int((scores >= kth).sum()) == 4
    assert stable_topk_indices(scores, 100).shape == (1, 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stable_topk_orders_signed_zeros_infinities_and_denormals(dtype):
    row = [float("-inf"), -2.0, -1.0, -0.0, 0.0, 1e-40, -1e-40, 3.0, float("inf"), 3.0, -2.0]
    scores = torch.tensor([row]).to(dtype)
    vals = scores.float()[0].tolist()
    want = sorted(range(len(row)), key=lambda j: (-vals[j], j))
    assert stable_topk_indices(scores, len(row)).tolist() == [want]
    for k in (4, 5, 6):  # 5: +0.0 and -0.0 tie across the boundary
        got = stable_topk_indices(scores, k)[0].tolist()
        assert sorted(got) == sorted(want[:k])
        assert [vals[j] for j in got] == [vals[j] for j in want[:k]]  # descending scores


@pytest.mark.parametrize("tied", [True, False])
def test_select_global_matches_reference_and_is_deterministic(tied):
    logits = torch.randint(0, 3, (2, 2, 7, 7)).float() if tied else torch.randn(2, 2, 7, 7)
    idx = select_global(logits, 3)
    assert torch.equal(idx, select_global(logits.clone(), 3))
    for b in range(2):
        for h in range(2):
            for q in range(7):
                want = ref_topk(logits[b, h, q].tolist(), list(range(7)), 3)
                assert sorted(idx[b, h, q].tolist()) == sorted(want)


def test_topk_fixes_only_the_rows_with_a_boundary_tie():
    scores = torch.randn(3, 4, 9)
    scores[1, 2] = torch.tensor([0.0, 5.0, 1.0, 1.0, -1.0, 1.0, 2.0, 1.0, 0.5])  # 1.0 x4
    scores[2, 0, 4:] = 7.0  # five-way tie at the top
    idx = stable_topk_indices(scores, 3)
    for r in range(3):
        for q in range(4):
            want = ref_topk(scores[r, q].tolist(), list(range(9)), 3)
            assert sorted(idx[r, q].tolist()) == sorted(want)
    assert sorted(idx[1, 2].tolist()) == [1, 2, 6]
    assert sorted(idx[2, 0].tolist()) == [4, 5, 6]


def test_activation_topk_matches_reference_and_clamps_k():
    tokens = torch.randn(3, 9, 4)
    got = activation_topk(tokens, 4).tolist()
    assert [sorted(row) for row in got] == [sorted(row) for row in ref_activation_topk(tokens, 4)]
    everything = activation_topk(tokens, 50)
    assert everything.shape == (3, 9)
    assert sorted(everything[0].tolist()) == list(range(9))


def test_frame_groups_cover_every_visible_token_once():
    fi = random_frame_index()
    groups = frame_groups(fi, 4)
    counts = [[int((fi[b] == f).sum()) for f in range(4)] for b in range(fi.shape[0])]
    assert groups.counts.tolist() == counts
    assert len({c for row in counts for c in row}) > 1, "the mask should give uneven frames"
    for b in range(fi.shape[0]):
        keys = groups.key[b][groups.valid[b]].tolist()
        assert sorted(keys) == list(range(fi.shape[1]))
        for f in range(4):
            assert all(int(fi[b, j]) == f for j in groups.key[b, f][groups.valid[b, f]].tolist())


def test_frame_groups_in_order_only_for_equal_counts_in_frame_order():
    assert frame_groups(tube_frame_index(), 4).in_order
    assert not frame_groups(random_frame_index(), 4).in_order
    shuffled = shuffled_frame_index()
    groups = frame_groups(shuffled, 4)
    assert not groups.in_order and bool(groups.valid.all())
    for b in range(2):
        for f in range(4):
            assert all(int(shuffled[b, j]) == f for j in groups.key[b, f].tolist())


def test_frame_groups_rejects_out_of_range_frames_and_infers_count():
    fi = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="num_frames"):
        frame_groups(fi, 2)
    assert frame_groups(fi).num_frames == 3


# ---------------------------------------------------------------------- MAGlobal


# (k, d_k): N = 12 <= k * d_k runs the masked dense product, N > k * d_k the gather
PATHS = pytest.mark.parametrize("k, d", [(4, 5), (3, 2)], ids=["dense", "gather"])


@PATHS
@pytest.mark.parametrize("renorm", [True, False])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_aggregate_global_matches_reference(renorm, tau, k, d):
    logits, values = taps(d=d)
    got = aggregate_global(logits, values, k=k, tau=tau, renormalize=renorm)
    assert got.shape == values.shape
    close(got, ref_global(logits, values, k, tau, renorm))


@PATHS
def test_aggregate_global_under_bf16_autocast(k, d):
    logits, values = taps(d=d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = aggregate_global(logits, values, k=k)
    close(got, ref_global(logits, values, k), **BF16)


@PATHS
def test_aggregate_global_with_teacher_index(k, d):
    logits, values = taps(d=d)
    teacher_logits = torch.randn_like(logits)
    got = aggregate_global(logits, values, k, index=select_global(teacher_logits, k))
    close(got, ref_global(logits, values, k, index_from=teacher_logits))


@pytest.mark.parametrize("renorm", [True, False])
def test_global_dense_and_gather_agree_with_gradients(renorm):
    logits, values = taps(d=4)
    logits.requires_grad_(), values.requires_grad_()
    index = select_global(logits, 5)
    grads = []
    for fn in (_global_dense, _global_gather):
        out = fn(logits, values, index, 0.7, renorm)
        grads.append((out, *torch.autograd.grad(out.pow(2).sum(), (logits, values))))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_aggregate_global_k_at_least_n_is_full_attention():
    logits, values = taps(n=6)
    full = aggregate_full(logits, values)
    torch.testing.assert_close(aggregate_global(logits, values, k=6), full)
    torch.testing.assert_close(aggregate_global(logits, values, k=60, renormalize=False), full)
    close(full, ref_global(logits, values, 6))


def test_aggregate_global_all_equal_logits_is_uniform_over_first_k():
    logits = torch.zeros(1, 2, 8, 8)
    values = torch.randn(1, 2, 8, 3)
    got = aggregate_global(logits, values, k=3)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, values[:, :, :3].mean(2, keepdim=True).expand_as(got))


# ---------------------------------------------------------------------- MALocal


@pytest.mark.parametrize("renorm", [True, False])
@pytest.mark.parametrize("make_index", [tube_frame_index, random_frame_index, shuffled_frame_index])
def test_aggregate_local_matches_reference(renorm, make_index):
    fi = make_index()
    logits, values = taps(n=fi.shape[1])
    got = aggregate_local(logits, values, fi, 4, k=2, tau=0.7, renormalize=renorm)
    assert got.shape == (2, 3, fi.shape[1], 4, 5)
    close(got, ref_local(logits, values, fi, 4, 2, 0.7, renorm))


def test_aggregate_local_under_bf16_autocast():
    fi = random_frame_index()
    logits, values = taps(n=fi.shape[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = aggregate_local(logits, values, fi, 4, k=2)
    close(got, ref_local(logits, values, fi, 4, 2), **BF16)


def test_aggregate_local_with_teacher_selection():
    fi = random_frame_index()
    logits, values = taps(n=fi.shape[1])
    teacher_logits = torch.randn_like(logits)
    groups = frame_groups(fi, 4)
    keep = select_local(gather_frame_logits(teacher_logits, groups), groups, 2)
    got = aggregate_local(logits, values, fi, 4, 2, groups=groups, keep=keep)
    want = ref_local(logits, values, fi, 4, 2, select_from=teacher_logits)
    close(got, want)


def pairing_ok(out, logits, frame_index, k) -> bool:
    """With one-hot values (value of token j = e_j), output channel j is the weight of key j.

    True iff every (query, frame) puts weight only on that frame's own top-k keys, with the
    renormalised softmax weights of exactly those keys.
    """
    b_, h_, n, num_frames, _ = out.shape
    for b in range(b_):
        for f in range(num_frames):
            keys = [j for j in range(n) if int(frame_index[b, j]) == f]
            for h in range(h_):
                for q in range(n):
                    row = logits[b, h, q].double().tolist()
                    kept = ref_topk(row, keys, k)
                    want = torch.zeros(n, dtype=torch.float64)
                    if kept:
                        want[kept] = torch.tensor(
                            ref_weights(row, kept, keys, 1.0, True), dtype=torch.float64
                        )
                    if not torch.allclose(out[b, h, q, f].double(), want, atol=1e-5):
                        return False
    return True


def official_local_scrambled(logits, values, num_frames, k):
    """The official MALocal (KNOWN BUG): contiguous per-frame attention chunks (key t * N_img + j)
    paired with values reshaped as if the token index were j * F + t."""
    b_, h_, n, d = values.shape
    n_img = n // num_frames
    att = logits.reshape(b_, h_, n, num_frames, n_img)
    idx = stable_topk_indices(att, k)
    w = torch.softmax(att.gather(-1, idx), -1)
    w = torch.zeros_like(att).scatter(-1, idx, w)
    v = values.reshape(b_, h_, n_img, num_frames, d).transpose(2, 3)  # token j * F + t
    return torch.einsum("bhnfc,bhfcd->bhnfd", w, v)


def test_local_pairs_each_weight_with_its_own_token_under_random_mask():
    fi = random_frame_index(b=2, grid=(3, 2, 3), ratio=0.45)
    n = fi.shape[1]
    counts = torch.stack([(fi == f).sum(1) for f in range(3)], 1)
    assert (counts != counts[:, :1]).any(), "frames must hold different numbers of tokens"
    logits = torch.randn(2, 2, n, n) * 3
    values = torch.eye(n).expand(2, 2, n, n)  # value of token j = e_j
    out = aggregate_local(logits, values, fi, 3, k=2)
    assert pairing_ok(out, logits, fi, 2)


def test_pairing_check_fails_on_the_official_scramble():
    fi = tube_frame_index(b=1, grid=(4, 2, 3), ratio=0.5)  # 3 visible tokens per frame
    assert fi[0].tolist() == sorted(fi[0].tolist())
    n = fi.shape[1]
    logits = torch.randn(1, 2, n, n) * 3
    values = torch.eye(n).expand(1, 2, n, n)
    assert pairing_ok(aggregate_local(logits, values, fi, 4, k=2), logits, fi, 2)
    assert not pairing_ok(official_local_scrambled(logits, values, 4, 2), logits, fi, 2)


def test_local_edge_cases_single_token_frame_empty_frame_and_large_k():
    # sample 0: frame 0 has one token, frame 2 none; sample 1: frame 1 has five tokens
    fi = torch.tensor([[0, 1, 1, 1, 3, 3], [0, 1, 1, 1, 1, 1]])
    logits, values = taps(b=2, h=2, n=6, d=4)
    for renorm in (True, False):
        out = aggregate_local(logits, values, fi, 4, k=10, renormalize=renorm)
        assert torch.isfinite(out).all()
        # single visible token in frame 0: its value, weight 1
        torch.testing.assert_close(out[0, :, :, 0], values[0, :, :1].expand(2, 6, 4))
        # empty frames give zeros
        assert (out[0, :, :, 2] == 0).all() and (out[1, :, :, 2:] == 0).all()
        # k larger than the frame: every token of the frame, full per-frame softmax
        close(out, ref_local(logits, values, fi, 4, 10, 1.0, renorm))
    assert frame_groups(fi, 4).nonempty.tolist() == [
        [True, True, False, True],
        [True, True, False, False],
    ]


def test_local_all_equal_logits_has_no_nan():
    fi = random_frame_index()
    n = fi.shape[1]
    logits, values = torch.zeros(2, 2, n, n), torch.randn(2, 2, n, 3)
    out = aggregate_local(logits, values, fi, 4, k=2)
    assert torch.isfinite(out).all()
    close(out, ref_local(logits, values, fi, 4, 2))


# ---------------------------------------------------------------------- MAHint


def test_hint_loss_matches_reference_selected_rows_only():
    s, t = torch.randn(3, 10, 6), torch.randn(3, 10, 6)
    index = activation_topk(t, 4)
    assert hint_loss(s, t, index).item() == pytest.approx(
        ref_hint(s, t, ref_activation_topk(t, 4)), rel=1e-5
    )
    all_rows = ref_hint(s, t, [list(range(10))] * 3)
    assert hint_loss(s, t, None).item() == pytest.approx(all_rows, rel=1e-5)


def test_hint_projection_sees_selected_rows_only():
    s, t = torch.randn(2, 10, 4), torch.randn(2, 10, 8)
    index = activation_topk(t, 3)
    seen = []

    def proj(x):
        seen.append(x.shape)
        return torch.cat([x, x], -1)

    got = hint_loss(s, t, index, projection=proj)
    assert seen == [(2, 3, 4)]
    sel = [[int(j) for j in row] for row in index]
    assert got.item() == pytest.approx(ref_hint(torch.cat([s, s], -1), t, sel), rel=1e-5)


def test_hint_loss_under_bf16_autocast():
    s, t = torch.randn(2, 10, 6), torch.randn(2, 10, 6)
    index = activation_topk(t, 4)
    lin = torch.nn.Linear(6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = hint_loss(s, t, index, projection=lin)
    with torch.no_grad():
        want = ref_hint(lin(s), t, index.tolist())
    assert got.item() == pytest.approx(want, rel=5e-2)


# ---------------------------------------------------------------------- MARel


@pytest.mark.parametrize("softmax", ["row", "matrix"])
def test_relation_loss_matches_reference(softmax):
    s, t = torch.randn(8, 5), torch.randn(8, 7)
    got = relation_loss(s, t, 0.1, 0.05, softmax=softmax)
    assert got.item() == pytest.approx(ref_relation(s, t, 0.1, 0.05, softmax), rel=1e-4)


def test_relation_loss_ignores_autocast():
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = relation_loss(s, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_relation(s, t, 0.1, 0.05), rel=1e-4)


def test_relation_loss_zero_when_identical_and_single_row():
    z = torch.randn(6, 4)
    assert relation_loss(z, z, 0.1, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    one = torch.randn(1, 4, requires_grad=True)
    loss = relation_loss(one, torch.randn(1, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert one.grad is not None


def test_relation_loss_batch_of_one_uses_its_k_rows():
    tokens_s, tokens_t = torch.randn(1, 12, 4), torch.randn(1, 12, 4)
    index = activation_topk(tokens_t, 5)
    s = tokens_s[0, index[0]]
    t = tokens_t[0, index[0]]
    assert relation_loss(s, t).item() == pytest.approx(ref_relation(s, t, 0.1, 0.05), rel=1e-4)


# ---------------------------------------------------------------------- baselines and MSE


@pytest.mark.parametrize("mode", ["kl", "mse"])
@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_attention_transfer_matches_reference(mode, tau):
    s, _ = taps(n=7)
    t, _ = taps(n=7)
    got = attention_transfer_loss(s, t, tau, mode)
    want = ref_attention_transfer(s, t, tau, mode)
    assert got.item() == pytest.approx(want, rel=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention_transfer_loss(s, t, tau, mode).item() == pytest.approx(want, rel=5e-2)


def test_aggregate_full_matches_reference():
    logits, values = taps()
    n = logits.shape[-1]
    close(aggregate_full(logits, values, 0.5), ref_global(logits, values, n, 0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = aggregate_full(logits, values, 0.5)
    close(got, ref_global(logits, values, n, 0.5), **BF16)


def test_feature_mse_over_valid_rows():
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    valid = torch.tensor([[True, False, True, True], [False, False, False, True]])[:, None, :]
    got = feature_mse(s, t, valid)
    rows = [(b, q, f) for b in range(2) for q in range(3) for f in range(4) if valid[b, 0, f]]
    want = sum(float(((s[r] - t[r]) ** 2).sum()) for r in rows) / (len(rows) * 5)
    assert got.item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="projection"):
        feature_mse(s, t[..., :3])
