"""The teacher loader against transformers and the official VideoMAE layout."""

from __future__ import annotations

import argparse
import json
import os
import pickle

import pytest
import torch
from _weights import randomize
from safetensors.torch import load_file, save_file

from maskagain.masking import tube_mask
from maskagain.models import (
    CheckpointError,
    create_model,
    load_encoder,
    read_checkpoint,
    save_encoder,
)

transformers = pytest.importorskip("transformers")

TINY_HF = dict(
    image_size=32,
    patch_size=8,
    num_channels=3,
    num_frames=4,
    tubelet_size=2,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    layer_norm_eps=1e-12,
)


def _hf_model(cls_name: str = "VideoMAEModel", **kw):
    config = transformers.VideoMAEConfig(**{**TINY_HF, **kw})
    model = getattr(transformers, cls_name)(config).eval()
    randomize(model)
    return model


def _hf_last_hidden(model, video, mask=None):
    hf = model if isinstance(model, transformers.VideoMAEModel) else model.videomae
    with torch.no_grad():
        out = hf(video.transpose(1, 2), bool_masked_pos=mask, output_hidden_states=True)
    return out.hidden_states[-1]


@pytest.fixture
def video():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("use_mask", [False, True])
def test_hf_directory_matches_transformers(tmp_path, video, use_mask):
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    model = load_encoder(tmp_path).eval()
    mask = tube_mask(2, model.cfg.grid, 0.5) if use_mask else None
    with torch.no_grad():
        ours = model.forward_features(video, mask).tokens
    torch.testing.assert_close(ours, _hf_last_hidden(hf, video, mask), rtol=1e-4, atol=1e-4)
    assert model.cfg.norm_eps == 1e-12


def test_hf_old_bias_spelling(tmp_path, video):
    """Hub checkpoints saved by older transformers spell the biases q_bias / v_bias."""
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    old = {
        k.replace("attention.attention.query.bias", "attention.attention.q_bias").replace(
            "attention.attention.value.bias", "attention.attention.v_bias"
        ): v
        for k, v in sd.items()
    }
    assert any("q_bias" in k for k in old)
    os.remove(tmp_path / "model.safetensors")
    torch.save(old, tmp_path / "pytorch_model.bin")
    model = load_encoder(tmp_path).eval()
    with torch.no_grad():
        ours = model.forward_features(video).tokens
    torch.testing.assert_close(ours, _hf_last_hidden(hf, video), rtol=1e-4, atol=1e-4)


def test_hf_final_layernorm_and_classifier(tmp_path, video):
    hf = _hf_model("VideoMAEForVideoClassification", num_labels=5, use_mean_pooling=True)
    hf.save_pretrained(tmp_path)
    model = load_encoder(tmp_path).eval()
    assert model.cfg.num_classes == 5
    with torch.no_grad():
        ours = model(video)
        ref = hf(video.transpose(1, 2)).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_hf_model_without_mean_pooling_has_final_norm(tmp_path, video):
    hf = _hf_model(use_mean_pooling=False)
    hf.save_pretrained(tmp_path)
    model = load_encoder(tmp_path).eval()
    assert model.cfg.final_norm
    with torch.no_grad():
        normed = model.norm(model.forward_features(video).tokens)
        ref = hf(video.transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(normed, ref, rtol=1e-4, atol=1e-4)


def test_hf_pretraining_directory_drops_decoder(tmp_path, video):
    hf = _hf_model(
        "VideoMAEForPreTraining",
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    hf.save_pretrained(tmp_path)
    model = load_encoder(tmp_path).eval()
    with torch.no_grad():
        ours = model.forward_features(video).tokens
    torch.testing.assert_close(ours, _hf_last_hidden(hf, video), rtol=1e-4, atol=1e-4)


def _official_from_hf(hf) -> dict[str, torch.Tensor]:
    """Write transformers weights in the official VideoMAE key layout (independent of the loader)."""
    sd = hf.state_dict()
    out = {
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
    }
    for i in range(TINY_HF["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        a = p + "attention.attention."
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]]
        )
        out[f"blocks.{i}.attn.q_bias"] = sd[a + "query.bias"]
        out[f"blocks.{i}.attn.v_bias"] = sd[a + "value.bias"]
        out[f"blocks.{i}.attn.proj.weight"] = sd[p + "attention.output.dense.weight"]
        out[f"blocks.{i}.attn.proj.bias"] = sd[p + "attention.output.dense.bias"]
        for ours, theirs in [
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]:
            out[f"blocks.{i}.{ours}.weight"] = sd[p + theirs + ".weight"]
            out[f"blocks.{i}.{ours}.bias"] = sd[p + theirs + ".bias"]
    return out


def test_official_pretrain_pth_matches_transformers(tmp_path, video):
    hf = _hf_model(layer_norm_eps=1e-6)
    enc = _official_from_hf(hf)
    ckpt = {f"encoder.{k}": v for k, v in enc.items()}
    ckpt["encoder.norm.weight"] = torch.ones(64)
    ckpt["encoder.norm.bias"] = torch.zeros(64)
    ckpt["decoder.blocks.0.norm1.weight"] = torch.ones(32)
    ckpt["encoder_to_decoder.weight"] = torch.zeros(32, 64)
    ckpt["mask_token"] = torch.zeros(1, 1, 32)
    path = tmp_path / "checkpoint-1599.pth"
    # the official training script also stores its argparse namespace
    args = argparse.Namespace(model="pretrain_videomae_base_patch16_224", mask_ratio=0.9)
    torch.save({"model": ckpt, "epoch": 1599, "args": args}, path)
    model = load_encoder(path, num_heads=2, img_size=32, num_frames=4).eval()
    mask = tube_mask(2, model.cfg.grid, 0.75)
    with torch.no_grad():
        ours = model.forward_features(video, mask).tokens
    torch.testing.assert_close(ours, _hf_last_hidden(hf, video, mask), rtol=1e-4, atol=1e-4)
    assert read_checkpoint(path)[2] == "official-pretrain"


def test_official_finetune_pth_with_module_key(tmp_path, video):
    hf = _hf_model("VideoMAEForVideoClassification", num_labels=3, layer_norm_eps=1e-6)
    enc = _official_from_hf(hf.videomae)
    sd = hf.state_dict()
    enc["fc_norm.weight"], enc["fc_norm.bias"] = sd["fc_norm.weight"], sd["fc_norm.bias"]
    enc["head.weight"], enc["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    path = tmp_path / "finetuned.pth"
    torch.save({"module": enc}, path)
    model = load_encoder(path, num_heads=2, img_size=32, num_frames=4, fc_norm_eps=1e-5).eval()
    assert model.cfg.num_classes == 3 and not model.cfg.final_norm
    with torch.no_grad():
        torch.testing.assert_close(
            model(video), hf(video.transpose(1, 2)).logits, rtol=1e-4, atol=1e-4
        )


def test_own_format_round_trip(tmp_path, video, tiny_kwargs):
    model = create_model("vit_nano", init_values=0.1, **tiny_kwargs).eval()
    path = save_encoder(model, tmp_path / "student.safetensors", extra={"metrics": {"loss": 1.5}})
    _, _, fmt, info = read_checkpoint(path)
    assert fmt == "maskagain" and info["metrics"] == {"loss": 1.5}
    for source in (path, tmp_path):  # the file and its run directory
        loaded = load_encoder(source).eval()
        assert loaded.cfg == model.cfg
        with torch.no_grad():
            torch.testing.assert_close(
                loaded.forward_features(video).tokens, model.forward_features(video).tokens
            )


def test_missing_key_is_named(tmp_path, tiny_kwargs):
    model = create_model("vit_nano", **tiny_kwargs)
    sd = {k: v for k, v in model.state_dict().items() if k != "blocks.1.mlp.fc2.weight"}
    path = tmp_path / "broken.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(
        CheckpointError, match=r"official-finetune.*missing keys \['blocks.1.mlp.fc2.weight'\]"
    ):
        load_encoder(path, num_heads=2)


def test_unexpected_key_is_named(tmp_path, tiny_kwargs):
    sd = dict(create_model("vit_nano", **tiny_kwargs).state_dict())
    sd["blocks.0.attn.extra_proj.weight"] = torch.zeros(2, 2)
    path = tmp_path / "extra.pth"
    torch.save(sd, path)
    with pytest.raises(
        CheckpointError, match=r"unexpected keys \['blocks.0.attn.extra_proj.weight'\]"
    ):
        load_encoder(path, num_heads=2)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_unsafe_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(
        CheckpointError, match="refused.*could run code.*GLOBAL.*weights_only=False"
    ):
        load_encoder(path)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "raw.pkl.pth"
    with open(raw, "wb") as f:
        pickle.dump({"model": _Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_encoder(raw)
    assert not (tmp_path / "PWNED").exists()


def test_corrupt_pickle_is_not_called_unsafe(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x80\x02" + bytes(range(256)) * 2)
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_encoder(path)


def test_shape_mismatch_is_a_checkpoint_error(tmp_path, tiny_kwargs):
    sd = dict(create_model("vit_nano", **tiny_kwargs).state_dict())
    sd["blocks.0.mlp.fc2.weight"] = torch.zeros(64, 100)
    path = tmp_path / "mismatch.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_encoder(path, num_heads=2)


def test_pooling_conventions(tmp_path, tiny_kwargs):
    encoder = create_model("vit_nano", **tiny_kwargs)
    torch.save(encoder.state_dict(), tmp_path / "enc.pth")
    assert load_encoder(tmp_path / "enc.pth", num_heads=2).cfg.pooling == "mean"
    classifier = create_model("vit_nano", num_classes=3, **tiny_kwargs)  # final norm, no fc_norm
    torch.save(classifier.state_dict(), tmp_path / "cls.pth")
    assert load_encoder(tmp_path / "cls.pth", num_heads=2).cfg.pooling == "first"
    hf = _hf_model(use_mean_pooling=False)
    hf.save_pretrained(tmp_path / "hf")
    assert load_encoder(tmp_path / "hf").cfg.pooling == "mean"


def test_truncated_and_garbage_files(tmp_path, tiny_kwargs):
    good = tmp_path / "good.pth"
    torch.save({"model": create_model("vit_nano", **tiny_kwargs).state_dict()}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_encoder(cut)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_encoder(text)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="0 bytes"):
        load_encoder(empty)
    st = tmp_path / "cut.safetensors"
    save_file({"a": torch.zeros(100)}, str(st))
    st.write_bytes(st.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_encoder(st)


def test_unrecognised_checkpoints(tmp_path):
    opt = tmp_path / "optimizer.pth"
    torch.save({"optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, opt)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_encoder(opt)
    image_vit = tmp_path / "image_vit.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(64, 3, 16, 16)}, image_vit)
    with pytest.raises(CheckpointError, match="5-D Conv3d"):
        load_encoder(image_vit)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, other)
    with pytest.raises(CheckpointError, match="not a VideoMAE-style"):
        load_encoder(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "nope.pth")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CheckpointError, match="without config.json"):
        load_encoder(tmp_path / "emptydir")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bert" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model_type='bert'"):
        load_encoder(tmp_path / "bert")


def test_hub_id_without_network_gives_clear_error():
    with pytest.raises(CheckpointError, match="MCG-NJU/videomae-base"):
        load_encoder("MCG-NJU/videomae-base")
