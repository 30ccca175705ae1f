"""Stronger teachers: VideoMAE V2 layouts, head counts from the family table, patch alignment,
fp32 attention taps, and the objective across teacher widths."""

from __future__ import annotations

import argparse
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from _weights import randomize

from maskagain.losses.objective import MaskAgainObjective, ObjectiveConfig
from maskagain.masking import tube_mask
from maskagain.models import (
    AlignedTeacher,
    CheckpointError,
    ModelConfig,
    TeacherAlignmentError,
    VideoViT,
    VJEPA2Config,
    VJEPA2Encoder,
    align_teacher,
    check_teacher_alignment,
    create_model,
    load_encoder,
    read_checkpoint,
)
from maskagain.models.diagnostics import attention_tie_rates, topk_tie_rate
from maskagain.models.families import family_from_model_name, heads_from_args, heads_from_table
from maskagain.models.formats.videomae import infer_config
from maskagain.recipes.inspect import inspect_checkpoint

transformers = pytest.importorskip("transformers")

# a tiny ViT-g/14-like geometry: patch 14, 2 frames per tubelet, 28x28 frames -> grid (2, 2, 2)
TINY_V2 = dict(
    image_size=28,
    patch_size=14,
    num_channels=3,
    num_frames=4,
    tubelet_size=2,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=96,
    layer_norm_eps=1e-6,
)


def _hf(cls_name: str = "VideoMAEModel", **kw):
    model = getattr(transformers, cls_name)(transformers.VideoMAEConfig(**{**TINY_V2, **kw}))
    randomize(model.eval())
    return model


def _official_encoder(hf) -> dict[str, torch.Tensor]:
    """transformers VideoMAE weights written in the official (v1 and V2) key layout."""
    sd = hf.state_dict()
    out = {
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
    }
    for i in range(hf.config.num_hidden_layers):
        p, a = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention.attention."
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]]
        )
        out[f"blocks.{i}.attn.q_bias"] = sd[a + "query.bias"]
        out[f"blocks.{i}.attn.v_bias"] = sd[a + "value.bias"]
        for ours, theirs in [
            ("attn.proj", "attention.output.dense"),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]:
            out[f"blocks.{i}.{ours}.weight"] = sd[p + theirs + ".weight"]
            out[f"blocks.{i}.{ours}.bias"] = sd[p + theirs + ".bias"]
    return out


def _v2_pretrain_file(hf, path, args) -> None:
    """The VideoMAE V2 pre-training checkpoint: encoder, dual-masking decoder, recorded args."""
    model = {f"encoder.{k}": v for k, v in _official_encoder(hf).items()}
    width = hf.config.hidden_size
    model["encoder.norm.weight"], model["encoder.norm.bias"] = torch.ones(width), torch.zeros(width)
    model["decoder.blocks.0.attn.qkv.weight"] = torch.zeros(96, 32)
    model["decoder.norm.weight"] = torch.ones(32)
    model["decoder.head.weight"] = torch.zeros(3 * 2 * 14 * 14, 32)
    model["encoder_to_decoder.weight"] = torch.zeros(32, width)
    model["mask_token"] = torch.zeros(1, 1, 32)
    torch.save({"model": model, "epoch": 1199, "args": args}, path)


def _v2_args(**kw) -> argparse.Namespace:
    base = dict(
        model="pretrain_videomae_giant_patch14_224",
        decoder_mask_type="run_cell",
        decoder_mask_ratio=0.5,
        mask_ratio=0.9,
    )
    return argparse.Namespace(**{**base, **kw})


def _hf_tokens(hf, video, mask=None):
    with torch.no_grad():
        out = hf(video.transpose(1, 2), bool_masked_pos=mask, output_hidden_states=True)
    return out.hidden_states[-1]


@pytest.fixture
def clip():
    return torch.randn(2, 3, 4, 28, 28, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- VideoMAE V2
@pytest.mark.parametrize("masked", [False, True])
def test_v2_pretrain_layout_matches_transformers(tmp_path, clip, masked):
    hf = _hf()
    path = tmp_path / "vit_g_hybrid_pt_1200e.pth"
    _v2_pretrain_file(hf, path, _v2_args(num_heads=4))
    model = load_encoder(path, img_size=28, num_frames=4).eval()
    assert (model.cfg.num_heads, model.cfg.patch_size, model.cfg.final_norm) == (4, 14, True)
    assert read_checkpoint(path)[2] == "videomae2-pretrain"
    mask = tube_mask(2, model.cfg.grid, 0.5) if masked else None
    with torch.no_grad():
        ours = model.forward_features(clip, mask).tokens
    torch.testing.assert_close(ours, _hf_tokens(hf, clip, mask), rtol=1e-4, atol=1e-4)


def test_v2_distilled_finetune_layout_matches_transformers(tmp_path, clip):
    """vit_s/b_k710_dl_from_giant.pth: v1's fine-tuning layout with a Kinetics-710 head, saved
    by DeepSpeed under "module"."""
    hf = _hf("VideoMAEForVideoClassification", num_labels=710)
    sd = hf.state_dict()
    enc = _official_encoder(hf.videomae)
    enc["fc_norm.weight"], enc["fc_norm.bias"] = sd["fc_norm.weight"], sd["fc_norm.bias"]
    enc["head.weight"], enc["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    path = tmp_path / "vit_s_k710_dl_from_giant.pth"
    torch.save({"module": enc}, path)
    model = load_encoder(path, num_heads=4, img_size=28, num_frames=4, fc_norm_eps=1e-5).eval()
    assert read_checkpoint(path)[2] == "videomae2-finetune"
    assert model.cfg.num_classes == 710 and model.cfg.fc_norm and not model.cfg.final_norm
    with torch.no_grad():
        ref = hf(clip.transpose(1, 2)).logits
        torch.testing.assert_close(model(clip), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            model.forward_features(clip).tokens, _hf_tokens(hf.videomae, clip), rtol=1e-4, atol=1e-4
        )
    report = inspect_checkpoint(path, num_heads=4, img_size=28, num_frames=4)
    assert report["family"]["family"] == "VideoMAE V2"


def test_v2_hub_directory_layout(tmp_path, clip):
    """OpenGVLab's hub layout: config.json with model_config, weights under model."""
    import json

    from safetensors.torch import save_file

    hf = _hf()
    enc = _official_encoder(hf)
    enc["fc_norm.weight"], enc["fc_norm.bias"] = torch.ones(48), torch.zeros(48)
    save_file(
        {f"model.{k}": v.contiguous() for k, v in enc.items()}, str(tmp_path / "model.safetensors")
    )
    model_config = dict(
        img_size=28, patch_size=14, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2,
        layer_norm_eps=1e-6, tubelet_size=2, num_frames=4, use_mean_pooling=True, cos_attn=False,
    )  # fmt: skip
    config = {"model_type": "VideoMAEv2_Base", "model_config": model_config}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_encoder(tmp_path).eval()
    assert read_checkpoint(tmp_path)[2] == "videomae2-hf"
    assert (model.cfg.num_heads, model.cfg.img_size, model.cfg.fc_norm) == (4, 28, True)
    mask = tube_mask(2, model.cfg.grid, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(clip, mask).tokens,
            _hf_tokens(hf, clip, mask),
            rtol=1e-4,
            atol=1e-4,
        )
    config["model_config"]["cos_attn"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cosine attention"):
        load_encoder(tmp_path)


def test_v1_layout_without_v2_evidence_keeps_official_name(tmp_path):
    hf = _hf()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": _official_encoder(hf)}, path)
    assert read_checkpoint(path)[2] == "official-finetune"


def test_v2_strict_load_reports_extra_decoder_like_keys(tmp_path):
    hf = _hf()
    path = tmp_path / "odd.pth"
    model = {f"encoder.{k}": v for k, v in _official_encoder(hf).items()}
    model["encoder.norm.weight"], model["encoder.norm.bias"] = torch.ones(48), torch.zeros(48)
    model["encoder.extra_token"] = torch.zeros(1, 1, 48)
    torch.save({"model": model, "args": _v2_args()}, path)
    with pytest.raises(
        CheckpointError, match=r"videomae2-pretrain.*unexpected keys \['extra_token'\]"
    ):
        load_encoder(path, num_heads=4)


def test_cosine_attention_is_refused(tmp_path):
    hf = _hf()
    enc = _official_encoder(hf)
    enc["blocks.0.attn.scale"] = torch.zeros(4, 1, 1)
    path = tmp_path / "cos.pth"
    torch.save({"model": enc}, path)
    with pytest.raises(CheckpointError, match="cosine attention"):
        load_encoder(path, num_heads=4)


# ----------------------------------------------------------------------------- head counts
def _shapes(width: int, depth: int, hidden: int, patch: int) -> dict[str, torch.Tensor]:
    sd = {"patch_embed.proj.weight": torch.empty(width, 3, 2, patch, patch, device="meta")}
    for i in range(depth):
        sd[f"blocks.{i}.mlp.fc1.weight"] = torch.empty(hidden, width, device="meta")
        sd[f"blocks.{i}.attn.q_bias"] = torch.empty(width, device="meta")
    return sd


def test_giant_geometry_picks_16_heads_and_infers_mlp_and_patch():
    cfg = infer_config(_shapes(1408, 40, 6144, 14))
    assert (cfg.num_heads, cfg.patch_size, cfg.depth) == (16, 14, 40)
    assert int(cfg.embed_dim * cfg.mlp_ratio) == 6144
    # a one-block cut of the giant: the width alone names one VideoMAE family
    assert infer_config(_shapes(1408, 1, 6144, 14)).num_heads == 16
    assert heads_from_table(1408, 40, 6144, 16, layout="vjepa2") == 22


def test_unknown_width_is_refused_in_one_line_and_loads_with_num_heads(tmp_path, clip):
    hf = _hf()  # width 48: no known family
    path = tmp_path / "custom.pth"
    torch.save({"model": _official_encoder(hf)}, path)
    with pytest.raises(CheckpointError, match=r"48-wide.*num_heads=") as err:
        load_encoder(path)
    assert "\n" not in str(err.value) and "teacher.overrides.num_heads" in str(err.value)
    model = load_encoder(path, num_heads=4, img_size=28, num_frames=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(clip).tokens, _hf_tokens(hf, clip), rtol=1e-4, atol=1e-4
        )


def test_heads_from_recorded_args(tmp_path):
    hf = _hf()
    path = tmp_path / "with_args.pth"
    torch.save({"model": _official_encoder(hf), "args": {"num_heads": 4}}, path)
    assert load_encoder(path).cfg.num_heads == 4
    assert heads_from_args(vars(_v2_args()), 1408) == (
        16,
        "args.model='pretrain_videomae_giant_patch14_224'",
    )
    assert heads_from_args(vars(_v2_args()), 48) == (None, "")  # the name's width is not 48
    assert family_from_model_name("vit_base_patch16_224").num_heads == 12


# ----------------------------------------------------------------------------- alignment
def _student(**kw) -> VideoViT:
    return create_model("vit_nano", img_size=64, num_frames=4, patch_size=16, **kw).eval()


def _resize(video: torch.Tensor, size: int) -> torch.Tensor:
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, size, size).transpose(1, 2)


def test_patch14_teacher_runs_on_the_patch16_student_grid():
    student = _student()
    cfg = ModelConfig(embed_dim=96, depth=2, num_heads=4, patch_size=14, img_size=70, num_frames=4)
    teacher = VideoViT(cfg).eval()
    aligned = align_teacher(teacher, student.cfg)
    assert isinstance(aligned, AlignedTeacher) and aligned.cfg.img_size == 56
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    grid = student.token_grid(video.shape)
    assert aligned.token_grid(video.shape) == grid == (2, 4, 4)
    mask = tube_mask(2, grid, 0.5)
    # reference: the teacher built at 56x56 (its own sine-cosine table) on the resized clip
    at_56 = VideoViT(dataclasses.replace(cfg, img_size=56)).eval()
    at_56.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        out = aligned.forward_features(video, mask, attn_layers=(-1,))
        ref = at_56.forward_features(_resize(video, 56), mask, attn_layers=(-1,))
        s_out = student.forward_features(video, mask)
    torch.testing.assert_close(out.tokens, ref.tokens)
    torch.testing.assert_close(out.attn[1].logits, ref.attn[1].logits)
    assert out.tokens.shape[:2] == s_out.tokens.shape[:2]
    assert torch.equal(out.frame_index, s_out.frame_index)
    assert teacher.cfg.img_size == 70 and teacher.pos_embed.shape[0] == 2 * 5 * 5  # untouched


def test_patch14_vjepa2_teacher_aligned_and_same_patch_is_identity():
    student = _student()
    cfg = VJEPA2Config(embed_dim=96, depth=2, num_heads=4, patch_size=14, img_size=70, num_frames=4)
    teacher = VJEPA2Encoder(cfg).eval()
    aligned = align_teacher(teacher, student.cfg)
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(4))
    mask = tube_mask(2, (2, 4, 4), 0.5)
    with torch.no_grad():
        out = aligned.forward_features(video, mask)
        ref = teacher.forward_features(_resize(video, 56), mask)
    torch.testing.assert_close(out.tokens, ref.tokens)
    same = VJEPA2Encoder(dataclasses.replace(cfg, patch_size=16, img_size=64))
    assert align_teacher(same, student.cfg) is same


def test_unalignable_teachers_are_refused_in_one_line():
    student = _student()
    other_tubelet = ModelConfig(embed_dim=64, depth=1, num_heads=2, tubelet_size=4, num_frames=16)
    with pytest.raises(TeacherAlignmentError, match="tubelet") as err:
        check_teacher_alignment(student.cfg, other_tubelet)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
    odd = SimpleNamespace(patch_size=16, tubelet_size=2, num_frames=5, in_chans=3, img_size=64)
    with pytest.raises(TeacherAlignmentError, match="5-frame"):
        check_teacher_alignment(odd, student.cfg)
    with pytest.raises(TeacherAlignmentError, match="tubelet"):
        align_teacher(VideoViT(other_tubelet), student.cfg)


# ----------------------------------------------------------------------------- objective
@pytest.mark.parametrize("kind", ["videomae2_g_like", "vjepa2_like"])
def test_objective_with_a_wider_teacher(kind):
    student = _student()
    if kind == "videomae2_g_like":
        cfg = ModelConfig(
            embed_dim=88, depth=2, num_heads=4, patch_size=14, img_size=56, num_frames=4
        )
        teacher = align_teacher(VideoViT(cfg).eval(), student.cfg)
    else:
        cfg = VJEPA2Config(
            embed_dim=96, depth=2, num_heads=4, patch_size=16, img_size=64, num_frames=4
        )
        teacher = align_teacher(VJEPA2Encoder(cfg).eval(), student.cfg)
    objective = MaskAgainObjective.from_models(ObjectiveConfig(k=3), student, teacher)
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(5))
    mask = tube_mask(2, (2, 4, 4), 0.5)
    with torch.no_grad():
        t_out = teacher.forward_features(video, mask, objective.attn_layers_teacher)
    s_out = student.forward_features(video, mask, objective.attn_layers_student)
    losses = objective(s_out, t_out)
    assert {"global", "local", "hint", "relation", "loss"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert student.patch_embed.proj.weight.grad is not None


# ----------------------------------------------------------------------------- fp32 taps
def test_topk_tie_rate_counts_equal_boundaries():
    rows = torch.tensor([[5.0, 4.0, 3.0, 3.0], [5.0, 4.0, 3.0, 2.0]])
    assert topk_tie_rate(rows, 3) == 0.5
    assert topk_tie_rate(rows, 1) == 0.0


def test_fp32_logits_remove_bf16_ties():
    rates = attention_tie_rates(n_tokens=160, k=10, batch=2)
    assert rates["bf16"] > 0.02  # ~8% of rows
    assert rates["fp32"] < rates["bf16"] / 10


def test_tapped_block_keeps_fp32_logits_under_autocast():
    """Under bf16 autocast the tap's logits are the fp32 product of the block's bf16 q and k,
    and the block output keeps the autocast dtype."""
    model = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    seen = {}
    hook = model.blocks[1].register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.forward_features(video)  # the fused path, to capture the last block's input
        out = model.forward_features(video, attn_layers=(-1,))
        attn = model.blocks[1].attn
        q, k, _ = attn._qkv(model.blocks[1].norm1(seen["x"]))
    hook.remove()
    assert q.dtype == torch.bfloat16
    assert out.attn[1].logits.dtype == torch.float32 and out.tokens.dtype == torch.bfloat16
    ref = (q.float() * attn.scale) @ k.float().transpose(-2, -1)
    torch.testing.assert_close(out.attn[1].logits, ref, rtol=1e-6, atol=1e-6)
