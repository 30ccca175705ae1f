"""MVD's image teacher: MAE image encoders read from Hugging Face directories and official
``.pth`` files, checked against transformers' ViTMAE, and refused when they are something else."""

from __future__ import annotations

import pytest
import torch
from _weights import mae_image_teacher

from maskagain.checkpoints import CheckpointError
from maskagain.models.image_vit import load_image_encoder, mae_position_table

transformers = pytest.importorskip("transformers")


def hf_mae(folder):
    """The tiny transformers ViTMAE of ``mae_image_teacher`` (64 wide, patch 8), saved into
    ``folder`` and read back; also its weights as written (the hub's key names)."""
    from safetensors.torch import load_file

    mae_image_teacher(folder, width=64, depth=2)
    model = transformers.ViTMAEModel.from_pretrained(folder).eval()
    return model, load_file(str(folder / "model.safetensors"))


def hf_tokens(model, images: torch.Tensor, block: int = -1) -> torch.Tensor:
    """Block ``block``'s patch tokens before the final norm, patches in order (no shuffle)."""
    n = (images.shape[-1] // model.config.patch_size) ** 2
    noise = torch.arange(n, dtype=torch.float32).expand(images.shape[0], n)
    with torch.no_grad():
        out = model(pixel_values=images, noise=noise, output_hidden_states=True)
    return out.hidden_states[block][:, 1:]


def official_state_dict(
    written: dict[str, torch.Tensor], layers: int = 2
) -> dict[str, torch.Tensor]:
    """Hugging Face ViTMAE weights under MAE's own key names (``models_mae.py``), with a
    decoder and mask token as full pre-training checkpoints hold them."""
    sd = {k.removeprefix("vit."): v for k, v in written.items()}
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
        "mask_token": torch.zeros(1, 1, 32),
        "decoder_embed.weight": torch.zeros(32, 64),
        "decoder_pred.weight": torch.zeros(192, 32),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[q + f"attn.qkv.{kind}"] = torch.cat(
                [sd[p + f"attention.attention.{n}.{kind}"] for n in ("query", "key", "value")]
            )
            out[q + f"attn.proj.{kind}"] = sd[p + f"attention.output.dense.{kind}"]
            out[q + f"norm1.{kind}"] = sd[p + f"layernorm_before.{kind}"]
            out[q + f"norm2.{kind}"] = sd[p + f"layernorm_after.{kind}"]
            out[q + f"mlp.fc1.{kind}"] = sd[p + f"intermediate.dense.{kind}"]
            out[q + f"mlp.fc2.{kind}"] = sd[p + f"output.dense.{kind}"]
    return out


def test_position_table_is_maes(tmp_path):
    """transformers' ViTMAE builds its fixed table in MAE's layout: ours matches it."""
    model, _ = hf_mae(tmp_path / "mae")
    stored = model.embeddings.position_embeddings[0]
    assert stored[0].abs().max() == 0  # the class token's row
    assert torch.allclose(mae_position_table(4, 4, 64), stored[1:], atol=1e-6)


def test_hugging_face_directory_matches_transformers(tmp_path):
    model, _ = hf_mae(tmp_path / "mae")
    ours = load_image_encoder(tmp_path / "mae").eval()
    assert ours.cfg.num_heads == 4 and ours.cfg.depth == 2 and ours.cfg.patch_size == 8
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got = ours(images)
    assert got.shape == (3, 16, 64)
    assert torch.allclose(got, hf_tokens(model, images), atol=1e-5)
    with torch.no_grad():
        first = ours.forward_features(images, blocks=(0,)).blocks  # from the model's own call
    assert set(first) == {0} and torch.allclose(first[0], hf_tokens(model, images, 1), atol=1e-5)


def test_official_pth_matches_transformers(tmp_path):
    """An MAE ``.pth`` ({"model": ...}, decoder and mask token included, as the full pre-training
    checkpoints are): the decoder is ignored, the encoder computes what transformers computes."""
    model, written = hf_mae(tmp_path / "hf")
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": official_state_dict(written), "epoch": 1}, path)
    ours = load_image_encoder(path, num_heads=4).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(images), hf_tokens(model, images), atol=1e-5)


def test_unpublished_geometry_needs_a_head_count(tmp_path):
    """Weights do not show a head count: outside the published MAE sizes a file that does not
    record one is refused, naming the override (a Hugging Face config records it)."""
    sd = official_state_dict(hf_mae(tmp_path / "hf")[1])
    path = tmp_path / "tiny.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="overrides.num_heads"):
        load_image_encoder(path)


def test_learned_positions_are_refused(tmp_path):
    sd = official_state_dict(hf_mae(tmp_path / "hf")[1])
    sd["pos_embed"] = torch.randn_like(sd["pos_embed"]) * 0.02
    path = tmp_path / "vit_supervised.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="learned positions"):
        load_image_encoder(path, num_heads=4)


@pytest.mark.slow
def test_video_encoders_are_refused(tmp_path, tiny_kwargs):
    """The video teacher given as the image teacher fails naming the mix-up."""
    from maskagain.models.loading import save_encoder
    from maskagain.models.vit import ModelConfig, VideoViT

    video = VideoViT(ModelConfig(**tiny_kwargs))
    save_encoder(video, tmp_path / "video.safetensors")
    with pytest.raises(CheckpointError, match="video encoder"):
        load_image_encoder(tmp_path / "video.safetensors", num_heads=2)
    hf_video = transformers.VideoMAEModel(
        transformers.VideoMAEConfig(
            image_size=32,
            patch_size=8,
            num_frames=4,
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=128,
        )  # fmt: skip
    )
    hf_video.save_pretrained(tmp_path / "videomae")
    with pytest.raises(CheckpointError, match="teacher.source"):
        load_image_encoder(tmp_path / "videomae")


def test_an_image_encoder_given_as_the_video_teacher_says_where_it_goes(tmp_path):
    from maskagain.models import load_encoder

    mae_image_teacher(tmp_path / "mae", width=64)
    with pytest.raises(CheckpointError, match="image_teacher.source"):
        load_encoder(tmp_path / "mae")
