"""The V-JEPA 2 encoder against transformers' own VJEPA2 modules run as a masked context encoder."""

from __future__ import annotations

import pytest
import torch
from _weights import randomize
from safetensors.torch import load_file, save_file

from maskagain.masking import random_mask, tube_mask
from maskagain.models import (
    CheckpointError,
    VJEPA2Encoder,
    load_encoder,
    read_checkpoint,
    save_encoder,
)
from maskagain.recipes.inspect import format_report, inspect_checkpoint

transformers = pytest.importorskip("transformers")

TINY = dict(
    patch_size=8,
    crop_size=32,
    frames_per_clip=4,
    tubelet_size=2,
    hidden_size=64,
    num_attention_heads=4,  # head dim 16: 3 x 4 rotated dims per axis + 4 unrotated
    num_hidden_layers=2,
    mlp_ratio=4.0,
    pred_hidden_size=32,
    pred_num_attention_heads=2,
    pred_num_hidden_layers=1,
    pred_num_mask_tokens=2,
    num_pooler_layers=1,
)


def _hf_model(cls_name: str = "VJEPA2Model", **kw):
    config = transformers.VJEPA2Config(**{**TINY, **kw})
    model = getattr(transformers, cls_name)(config).eval()
    randomize(model)
    return model


def _visible_ids(mask: torch.Tensor | None, b: int, n: int) -> torch.Tensor:
    if mask is None:
        return torch.arange(n).expand(b, n)
    return torch.stack([torch.nonzero(~row).squeeze(1) for row in mask])


def _hf_context(hf, video: torch.Tensor, mask: torch.Tensor | None, tap: int | None = None):
    """transformers' embeddings, the visible tokens kept, its layers given their position ids:
    block outputs before the final norm (B, N_vis, D), and the tapped layer's logits/values."""
    enc = hf.encoder
    with torch.no_grad():
        x = enc.embeddings(video.transpose(1, 2))  # transformers takes (B, T, C, H, W)
        ids = _visible_ids(mask, x.shape[0], x.shape[1])
        x = torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))
        taps = None
        for i, layer in enumerate(enc.layer):
            if i == tap:
                taps = _hf_logits(layer, x, ids)
            x = layer(x, position_mask=ids)[0]
    return x, taps


def _hf_logits(layer, x: torch.Tensor, ids: torch.Tensor):
    att = layer.attention
    h = layer.norm1(x)
    b, n, _ = h.shape

    def heads(t):
        return t.view(b, n, -1, att.attention_head_size).transpose(1, 2)

    pos = att.get_position_ids(h, masks=ids)
    q = att.apply_rotary_embeddings(heads(att.query(h)), pos)
    k = att.apply_rotary_embeddings(heads(att.key(h)), pos)
    return (q @ k.transpose(-2, -1)) * att.scaling, heads(att.value(h))


@pytest.fixture
def video():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vjepa2")
    hf = _hf_model()
    hf.save_pretrained(path)
    return path, hf


@pytest.mark.parametrize("mask_kind", [None, "tube", "random"])
def test_features_match_transformers_context_encoder(hf_dir, video, mask_kind):
    path, hf = hf_dir
    model = load_encoder(path).eval()
    assert isinstance(model, VJEPA2Encoder)
    assert (model.cfg.embed_dim, model.cfg.num_heads, model.depth) == (64, 4, 2)
    grid = model.token_grid(video.shape)
    assert grid == (2, 4, 4)
    masks = {"tube": tube_mask, "random": random_mask}
    mask = None if mask_kind is None else masks[mask_kind](2, grid, 0.5)
    with torch.no_grad():
        out = model.forward_features(video, mask, attn_layers=(-1,))
    ref, (logits, values) = _hf_context(hf, video, mask, tap=1)
    torch.testing.assert_close(out.tokens, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.attn[1].logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.attn[1].values, values, rtol=1e-4, atol=1e-4)
    assert out.attn[1].logits.dtype == torch.float32
    ids = _visible_ids(mask, 2, 32)
    assert torch.equal(out.frame_index, ids // 16)


def test_unmasked_output_matches_vjepa2model(hf_dir, video):
    path, hf = hf_dir
    model = load_encoder(path).eval()
    with torch.no_grad():
        ours = model.norm(model.forward_features(video).tokens)
        ref = hf(video.transpose(1, 2), skip_predictor=True).last_hidden_state
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_other_grid_uses_true_positions(hf_dir):
    """A clip smaller and longer than the published one: positions come from its own grid, as
    transformers computes them when configured for that crop."""
    path, hf = hf_dir
    model = load_encoder(path).eval()
    other = _hf_model(crop_size=24, frames_per_clip=6)
    other.load_state_dict(hf.state_dict())
    clip = torch.randn(2, 3, 6, 24, 24, generator=torch.Generator().manual_seed(2))
    grid = model.token_grid(clip.shape)
    assert grid == (3, 3, 3)
    mask = tube_mask(2, grid, 0.4)
    with torch.no_grad():
        ours = model.forward_features(clip, mask).tokens
    torch.testing.assert_close(ours, _hf_context(other, clip, mask)[0], rtol=1e-4, atol=1e-4)


def test_format_and_dropped_parts(hf_dir, tmp_path, video):
    path, hf = hf_dir
    sd, cfg, fmt, _ = read_checkpoint(path)
    assert fmt == "vjepa2-hf" and cfg.img_size == 32 and cfg.num_frames == 4
    assert not any(k.startswith(("predictor", "pooler")) for k in sd)
    cls = _hf_model("VJEPA2ForVideoClassification", num_labels=3)
    cls.vjepa2.load_state_dict(hf.state_dict())
    cls.save_pretrained(tmp_path / "cls")
    model = load_encoder(tmp_path / "cls").eval()
    with torch.no_grad():
        ref = load_encoder(path).eval().forward_features(video).tokens
        torch.testing.assert_close(model.forward_features(video).tokens, ref)


def test_strict_load_names_unexpected_and_missing_keys(hf_dir, tmp_path):
    path, _ = hf_dir
    sd = load_file(str(path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    extra = dict(sd, **{"encoder.layer.0.attention.extra.weight": torch.zeros(2)})
    save_file(extra, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"vjepa2-hf.*unexpected keys.*attention.extra"):
        load_encoder(tmp_path)
    fewer = {k: v for k, v in sd.items() if k != "encoder.layer.1.mlp.fc2.bias"}
    save_file(fewer, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.mlp.fc2.bias'\]"):
        load_encoder(tmp_path)


def test_bare_weights_need_heads_outside_the_table(hf_dir, tmp_path, video):
    path, _ = hf_dir
    bare = tmp_path / "vjepa2_tiny.safetensors"
    save_file(load_file(str(path / "model.safetensors")), str(bare))
    with pytest.raises(CheckpointError, match=r"num_heads=") as err:
        load_encoder(bare)
    assert "\n" not in str(err.value)
    model = load_encoder(bare, num_heads=4).eval()
    ref = load_encoder(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(video).tokens, ref.forward_features(video).tokens
        )


def test_giant_geometry_gets_22_heads_from_the_table(tmp_path):
    """V-JEPA 2 ViT-g shares VideoMAE V2 ViT-g's width but has 22 heads (shapes only, 1 block)."""
    from maskagain.models.formats.vjepa2 import infer_vjepa2_config

    sd = {
        "patch_embed.proj.weight": torch.empty(1408, 3, 2, 16, 16, device="meta"),
        "blocks.0.mlp.fc1.weight": torch.empty(6144, 1408, device="meta"),
        "blocks.0.attn.qkv.bias": torch.empty(3 * 1408, device="meta"),
    }
    cfg = infer_vjepa2_config(sd)
    assert (cfg.num_heads, cfg.mlp_ratio * cfg.embed_dim, cfg.patch_size) == (22, 6144, 16)


def test_own_format_round_trip_and_inspection(hf_dir, tmp_path, video):
    path, _ = hf_dir
    model = load_encoder(path).eval()
    saved = save_encoder(model, tmp_path / "teacher.safetensors")
    back = load_encoder(saved).eval()
    assert isinstance(back, VJEPA2Encoder) and back.cfg == model.cfg
    with torch.no_grad():
        torch.testing.assert_close(
            back.forward_features(video).tokens, model.forward_features(video).tokens
        )
    report = inspect_checkpoint(path)
    assert report["family"] == {"family": "V-JEPA 2", "name": "custom"}
    assert report["architecture"]["positions"] == "rotary"
    assert report["input"]["img_size"] == 32 and report["input"]["recorded"]
    text = format_report(report)
    assert "V-JEPA 2" in text and "rotary" in text


def test_grad_checkpointing_and_bf16_tap(hf_dir, video):
    path, _ = hf_dir
    model = load_encoder(path)
    model.grad_checkpointing = True
    out = model.forward_features(video, tube_mask(2, (2, 4, 4), 0.5), attn_layers=(0,))
    out.tokens.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        tapped = model.forward_features(video, attn_layers=(0,))
    assert tapped.attn[0].logits.dtype == torch.float32
    assert tapped.tokens.dtype == torch.bfloat16


def _original_from_hf(hf) -> dict[str, torch.Tensor]:
    """transformers VJEPA2 encoder weights in the original V-JEPA 2 code's layout."""
    sd = hf.state_dict()
    emb, out = "encoder.embeddings.patch_embeddings.proj.", {}
    for kind in ("weight", "bias"):
        out[f"patch_embed.proj.{kind}"] = sd[emb + kind]
        out[f"norm.{kind}"] = sd[f"encoder.layernorm.{kind}"]
        for i in range(TINY["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [sd[f"{p}attention.{n}.{kind}"] for n in ("query", "key", "value")]
            )
            for name, theirs in [
                ("attn.proj", "attention.proj"),
                ("norm1", "norm1"),
                ("norm2", "norm2"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp.fc2", "mlp.fc2"),
            ]:
                out[f"blocks.{i}.{name}.{kind}"] = sd[f"{p}{theirs}.{kind}"]
    return {f"module.backbone.{k}": v for k, v in out.items()}


def test_original_checkpoint_matches_transformers(hf_dir, tmp_path, video):
    _, hf = hf_dir
    enc = _original_from_hf(hf)
    path = tmp_path / "vitl.pt"
    predictor = {"module.backbone.mask_tokens.0": torch.zeros(1, 1, 32)}
    torch.save({"encoder": enc, "predictor": predictor, "target_encoder": enc, "epoch": 3}, path)
    assert read_checkpoint(path)[2] == "vjepa2-official"
    with pytest.raises(CheckpointError, match="num_heads="):
        load_encoder(path)  # width 64 is no V-JEPA 2 size, and the file records no heads
    model = load_encoder(path, num_heads=4, img_size=32, num_frames=4).eval()
    mask = tube_mask(2, (2, 4, 4), 0.75)
    with torch.no_grad():
        ours = model.forward_features(video, mask).tokens
    torch.testing.assert_close(ours, _hf_context(hf, video, mask)[0], rtol=1e-4, atol=1e-4)
    enc["module.backbone.pos_embed"] = torch.zeros(1, 32, 64)
    torch.save({"encoder": enc, "predictor": predictor}, path)
    with pytest.raises(CheckpointError, match="V-JEPA 1"):
        load_encoder(path, num_heads=4)


def test_hub_id_goes_through_the_hub_path(hf_dir, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    path, hf = hf_dir
    asked = []

    def fake_download(repo_id, allow_patterns=None):
        asked.append(repo_id)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = load_encoder("facebook/vjepa2-vitl-fpc64-256")
    assert asked == ["facebook/vjepa2-vitl-fpc64-256"] and isinstance(model, VJEPA2Encoder)
