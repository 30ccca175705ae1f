"""The video ViT: shapes, taps, position tables, input checks."""

from __future__ import annotations

import pytest
import torch

from maskagain.masking import random_mask, tube_mask
from maskagain.models import ARCHITECTURES, create_model
from maskagain.models.layers import sinusoid_table


@pytest.mark.parametrize(
    "name,dim,depth,heads",
    [
        ("vit_small", 384, 12, 6),
        ("vit_base", 768, 12, 12),
        ("vit_large", 1024, 24, 16),
        ("vit_huge", 1280, 32, 16),
    ],
)
def test_named_architectures(name, dim, depth, heads):
    arch = ARCHITECTURES[name]
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"]) == (dim, depth, heads)


@pytest.mark.slow
def test_vit_small_parameter_count_matches_videomae():
    # VideoMAE ViT-S/16 classifier for K400 has 22M parameters (paper Table 9: 22)
    model = create_model("vit_small", num_classes=400, final_norm=False, fc_norm=True)
    n = sum(p.numel() for p in model.parameters())
    assert 21.5e6 < n < 22.5e6


def test_forward_shapes_and_visible_tokens(tiny_kwargs):
    model = create_model("vit_nano", num_classes=5, **tiny_kwargs).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    assert model(video).shape == (2, 5)
    mask = tube_mask(2, model.cfg.grid, 0.75)
    out = model.forward_features(video, mask)
    n_vis = int((~mask[0]).sum())
    assert out.tokens.shape == (2, n_vis, 64)
    assert out.frame_index.shape == (2, n_vis)
    # tube mask: equal visible tokens per frame, frames in order
    assert out.frame_index[0].tolist() == sorted(out.frame_index[0].tolist())
    assert torch.bincount(out.frame_index[0]).tolist() == [n_vis // 2, n_vis // 2]


def test_taps_equal_no_taps(tiny_kwargs):
    model = create_model("vit_nano", **tiny_kwargs).eval()
    video = torch.randn(3, 3, 4, 32, 32)
    mask = random_mask(3, model.cfg.grid, 0.5)
    plain = model.forward_features(video, mask)
    tapped = model.forward_features(video, mask, attn_layers=(0, -1))
    assert plain.attn == {}
    assert sorted(tapped.attn) == [0, 1]
    torch.testing.assert_close(tapped.tokens, plain.tokens, rtol=1e-5, atol=1e-5)
    tap = tapped.attn[1]
    n_vis = plain.tokens.shape[1]
    assert tap.logits.shape == (3, 2, n_vis, n_vis)
    assert tap.values.shape == (3, 2, n_vis, 32)


def test_tap_logits_are_scaled_qk_and_values_include_bias(tiny_kwargs):
    model = create_model("vit_nano", **tiny_kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    video = torch.randn(1, 3, 4, 32, 32)
    out = model.forward_features(video, attn_layers=(0,))
    x = model.patch_embed(video) + model.pos_embed
    blk = model.blocks[0]
    h = blk.norm1(x)
    w_q, w_k, w_v = blk.attn.qkv.weight.chunk(3)
    q = (h @ w_q.T + blk.attn.q_bias).reshape(1, -1, 2, 32).transpose(1, 2)
    k = (h @ w_k.T).reshape(1, -1, 2, 32).transpose(1, 2)
    v = (h @ w_v.T + blk.attn.v_bias).reshape(1, -1, 2, 32).transpose(1, 2)
    torch.testing.assert_close(
        out.attn[0].logits, q @ k.transpose(-1, -2) / 32**0.5, rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(out.attn[0].values, v, rtol=1e-5, atol=1e-5)


def test_tapped_block_gradients_match(tiny_kwargs):
    model = create_model("vit_nano", **tiny_kwargs)
    video = torch.randn(2, 3, 4, 32, 32)
    grads = []
    for layers in ((), (-1,)):
        model.zero_grad()
        model.forward_features(video, attn_layers=layers).tokens.square().mean().backward()
        grads.append(model.blocks[-1].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_sinusoid_table_matches_videomae_formula():
    table = sinusoid_table(5, 6)
    pos, j = 3, 4
    angle = pos / 10000 ** (2 * (j // 2) / 6)
    assert table[pos, j].item() == pytest.approx(torch.sin(torch.tensor(angle)).item(), abs=1e-6)
    assert table[pos, j + 1].item() == pytest.approx(
        torch.cos(torch.tensor(angle)).item(), abs=1e-6
    )


def test_position_table_interpolated_for_other_sizes(tiny_kwargs):
    model = create_model("vit_nano", **tiny_kwargs).eval()
    # 8 frames at 48 px: grid (4, 6, 6) instead of (2, 4, 4)
    out = model.forward_features(torch.randn(1, 3, 8, 48, 48))
    assert out.tokens.shape == (1, 4 * 6 * 6, 64)
    assert model.position_table((4, 6, 6)).shape == (144, 64)
    assert model.position_table(model.cfg.grid) is model.pos_embed


def test_drop_path_and_checkpointing_train(tiny_kwargs):
    model = create_model("vit_nano", drop_path_rate=0.2, **tiny_kwargs)
    model.grad_checkpointing = True
    model.train()
    loss = model.forward_features(torch.randn(2, 3, 4, 32, 32)).tokens.mean()
    loss.backward()
    assert model.patch_embed.proj.weight.grad is not None


@pytest.mark.parametrize(
    "shape,needle",
    [
        ((1, 3, 3, 32, 32), "tubelet_size=2"),
        ((1, 3, 4, 30, 32), "patch_size=8"),
        ((1, 1, 4, 32, 32), "channels"),
        ((3, 4, 32, 32), "(B, C, T, H, W)"),
    ],
)
def test_bad_input_shapes(tiny_kwargs, shape, needle):
    model = create_model("vit_nano", **tiny_kwargs)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        model.forward_features(torch.randn(*shape))


def test_bad_masks(tiny_kwargs):
    model = create_model("vit_nano", **tiny_kwargs)
    video = torch.randn(2, 3, 4, 32, 32)
    with pytest.raises(ValueError, match=r"expected \(2, 32\)"):
        model.forward_features(video, torch.zeros(2, 31, dtype=torch.bool))
    uneven = torch.zeros(2, 32, dtype=torch.bool)
    uneven[0, :3] = True
    with pytest.raises(ValueError, match="same number of visible tokens"):
        model.forward_features(video, uneven)
    with pytest.raises(TypeError, match="bool"):
        model.forward_features(video, torch.zeros(2, 32))


def test_unknown_model_name_and_option():
    with pytest.raises(ValueError, match="unknown model 'vit_gigantic'.*vit_base"):
        create_model("vit_gigantic")
    with pytest.raises(TypeError, match="unknown model option"):
        create_model("vit_nano", depthh=3)
    with pytest.raises(ValueError, match="divisible"):
        create_model("vit_nano", img_size=30, patch_size=8)


def test_masked_forward_equals_select_then_encode(tiny_kwargs):
    """Embedding only the visible tubelets equals embedding all and dropping the hidden ones."""
    model = create_model("vit_nano", **tiny_kwargs).eval()
    video = torch.randn(3, 3, 4, 32, 32)
    mask = random_mask(3, model.cfg.grid, 0.6)
    with torch.no_grad():
        out = model.forward_features(video, mask)
        x = (model.patch_embed(video) + model.pos_embed)[~mask].reshape(3, -1, 64)
        for blk in model.blocks:
            x = blk(x)
    torch.testing.assert_close(out.tokens, x, rtol=1e-4, atol=1e-5)
    expected_frames = torch.arange(32).div(16, rounding_mode="floor").expand(3, 32)[~mask]
    assert torch.equal(out.frame_index.flatten(), expected_frames)
