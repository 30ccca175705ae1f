"""MaskAgainObjective and ObjectiveConfig: terms, projections, gradients, presets, validation."""

from __future__ import annotations

import math

import pytest
import torch
from test_losses import (
    close,
    random_frame_index,
    ref_activation_topk,
    ref_global,
    ref_hint,
    ref_local,
    ref_relation,
)
from torch import nn

from maskagain.losses import (
    PRESETS,
    MaskAgainObjective,
    ObjectiveConfig,
    merge_heads,
    objective_preset,
)
from maskagain.masking import frame_mask, random_mask, tube_mask
from maskagain.models.layers import AttentionTap
from maskagain.models.registry import create_model
from maskagain.models.vit import EncoderOutput

ALL_BASELINES = {
    "hint_all": 0.5,
    "value_transfer": 0.3,
    "weighted_value_transfer": 0.2,
    "attention_transfer": 0.1,
}


def fake_output(b, n, dim, heads, frame_index, layer=1, grad=False) -> EncoderOutput:
    """An EncoderOutput of random tensors; ``grad`` makes them leaves that require grad."""
    d = dim // heads
    t = [torch.randn(b, n, dim), torch.randn(b, heads, n, n) * 2, torch.randn(b, heads, n, d)]
    if grad:
        t = [x.requires_grad_() for x in t]
    tap = AttentionTap(logits=t[1], values=t[2])
    return EncoderOutput(tokens=t[0], frame_index=frame_index, attn={layer: tap})


def pair(cfg, s_dim=384, s_heads=6, t_dim=768, t_heads=12, b=2, grad=False, frames=4):
    """Objective and (student, teacher) outputs on a random (uneven) mask, ViT-S -> ViT-B widths."""
    fi = random_frame_index(b=b, grid=(frames, 2, 3), ratio=0.5)
    n = fi.shape[1]
    obj = MaskAgainObjective(
        cfg, s_dim, s_heads, t_dim, t_heads, num_frames=frames, student_depth=2, teacher_depth=2
    )
    s = fake_output(b, n, s_dim, s_heads, fi, grad=grad)
    t = fake_output(b, n, t_dim, t_heads, fi, grad=grad)
    return obj, s, t


def apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x.float()).double()


def reference_terms(
    obj: MaskAgainObjective, s: EncoderOutput, t: EncoderOutput
) -> dict[str, float]:
    """The four MaskAgain terms from the slow references and the objective's own projections."""
    cfg = obj.cfg
    st, tt = s.attn[1], t.attn[1]
    out = {}
    z_s = ref_global(st.logits.detach(), st.values.detach(), cfg.k_for("global"), cfg.tau_att)
    z_t = ref_global(tt.logits, tt.values, cfg.k_for("global"), cfg.tau_att)
    p_s = apply(obj.student_proj["global"], merge_heads(z_s))
    out["global"] = float((p_s - merge_heads(z_t)).pow(2).mean())
    f = obj.num_frames
    kl = cfg.k_for("local")
    z_s = ref_local(st.logits.detach(), st.values.detach(), s.frame_index, f, kl, cfg.tau_att)
    z_t = ref_local(tt.logits, tt.values, t.frame_index, f, kl, cfg.tau_att)
    p_s, p_t = apply(obj.student_proj["local"], merge_heads(z_s)), merge_heads(z_t)
    nonempty = [
        [bool((s.frame_index[b] == i).any()) for i in range(f)] for b in range(p_s.shape[0])
    ]
    rows = [
        (b, q, i)
        for b in range(p_s.shape[0])
        for q in range(p_s.shape[1])
        for i in range(f)
        if nonempty[b][i]
    ]
    out["local"] = sum(float((p_s[r] - p_t[r]).pow(2).sum()) for r in rows) / (
        len(rows) * p_s.shape[-1]
    )
    index = ref_activation_topk(t.tokens, cfg.k_for("hint"))
    proj_s = apply(obj.student_proj["hint"], s.tokens.detach())
    out["hint"] = ref_hint(proj_s, t.tokens, index)
    s_sel = torch.cat([s.tokens.detach()[b, idx] for b, idx in enumerate(index)])
    t_sel = torch.cat([t.tokens[b, idx] for b, idx in enumerate(index)])
    out["relation"] = ref_relation(s_sel, t_sel, cfg.tau_s, cfg.tau_t, cfg.relation_softmax)
    return out


# ---------------------------------------------------------------------- configuration


def test_defaults_are_maskagain_b():
    cfg = ObjectiveConfig()
    assert (cfg.alpha, cfg.beta, cfg.lam, cfg.gamma, cfg.k, cfg.tau_att) == (3, 1, 0.1, 0.2, 10, 1)
    assert (cfg.tau_s, cfg.tau_t, cfg.renormalize, cfg.relation_softmax) == (0.1, 0.05, True, "row")
    assert (cfg.selection, cfg.layer, cfg.projection) == ("separate", -1, "student")
    assert cfg == objective_preset("maskagain_b")
    assert cfg.weights() == {"global": 3.0, "local": 1.0, "hint": 0.2, "relation": 0.1}


@pytest.mark.parametrize(
    "name, weights",
    [
        ("maskagain_s", (3.0, 0.1, 0.1, 0.1)),
        ("k400_vit_b", (3.0, 1.0, 0.2, 0.1)),
        ("k400_vit_s", (0.1, 3.0, 0.1, 0.1)),
        ("ucf101_vit_b", (3.0, 1.0, 0.1, 0.1)),
        ("ucf101_vit_s", (1.0, 3.0, 0.1, 0.1)),
    ],
)
def test_presets(name, weights):
    cfg = objective_preset(name)
    assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.lam) == weights
    assert (cfg.k, cfg.tau_att, cfg.tau_s, cfg.tau_t) == (10, 1.0, 0.1, 0.05)
    assert objective_preset(name, k=5).k == 5
    assert set(PRESETS) >= {"maskagain_b", "maskagain_s"}


def test_preset_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown objective preset"):
        objective_preset("maskagain_x")
    with pytest.raises(ValueError, match="alhpa"):
        objective_preset("maskagain_b", alhpa=1.0)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("alpha", -1.0, "alpha"),
        ("gamma", float("nan"), "gamma"),
        ("lam", "0.1", "lam"),
        ("k", 0, "k' must be >= 1"),
        ("k", 2.5, "k' must be an integer"),
        ("k_local", 0, "k_local"),
        ("tau_att", 0.0, "tau_att"),
        ("tau_t", -0.05, "tau_t"),
        ("renormalize", "False", "renormalize"),
        ("relation_softmax", "column", r"relation_softmax' must be one of \['row', 'matrix'\]"),
        ("selection", "student", "selection"),
        ("projection", "teacher", "projection"),
        ("hint_projection", "conv", "hint_projection"),
        ("at_mode", "l1", "at_mode"),
        ("layer", 1.5, "layer"),
        ("baselines", {"hint": 1.0}, "baselines': unknown term 'hint'"),
        ("baselines", {"value_transfer": -1.0}, "baselines.value_transfer"),
    ],
)
def test_config_validation_names_field_and_valid_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        ObjectiveConfig(**{field: value}).validate()


def test_config_all_terms_off_is_an_error_and_k_for_falls_back():
    with pytest.raises(ValueError, match="every loss weight is 0"):
        ObjectiveConfig(alpha=0, beta=0, gamma=0, lam=0).validate()
    cfg = ObjectiveConfig(k=7, k_local=3)
    assert (cfg.k_for("global"), cfg.k_for("local"), cfg.k_for("hint")) == (7, 3, 7)
    ObjectiveConfig(alpha=0, beta=0, gamma=0, lam=0, baselines={"hint_all": 1.0}).validate()


# ---------------------------------------------------------------------- construction


def test_projections_per_width_and_term():
    narrow = MaskAgainObjective(ObjectiveConfig(), 384, 6, 768, 12)
    assert isinstance(narrow.student_proj["global"], nn.Linear)
    assert narrow.student_proj["global"].in_features == 384
    assert isinstance(narrow.student_proj["local"], nn.Linear)
    assert narrow.student_proj["global"] is not narrow.student_proj["local"]
    hint = narrow.student_proj["hint"]
    assert isinstance(hint, nn.Sequential) and [type(m) for m in hint] == [
        nn.Linear,
        nn.ReLU,
        nn.Linear,
    ]
    assert len(narrow.teacher_proj) == 0
    same = MaskAgainObjective(ObjectiveConfig(), 768, 12, 768, 12)
    assert all(isinstance(m, nn.Identity) for m in same.student_proj.values())
    assert len(list(same.parameters())) == 0
    both = MaskAgainObjective(ObjectiveConfig(projection="both"), 768, 12, 768, 12)
    assert set(both.teacher_proj) == {"global", "local"}
    assert isinstance(both.student_proj["global"], nn.Linear)
    lin = MaskAgainObjective(ObjectiveConfig(hint_projection="linear"), 384, 6, 768, 12)
    assert isinstance(lin.student_proj["hint"], nn.Linear)


def test_switched_off_terms_build_nothing_and_need_no_taps():
    out_only = MaskAgainObjective(ObjectiveConfig(alpha=0, beta=0), 384, 6, 768, 12)
    assert out_only.attn_layers_student == () and out_only.attn_layers_teacher == ()
    assert set(out_only.student_proj) == {"hint"}
    full = MaskAgainObjective(ObjectiveConfig(layer=-2), 384, 6, 768, 12)
    assert full.attn_layers_student == (-2,) and full.attn_layers_teacher == (-2,)


def test_construction_errors():
    with pytest.raises(ValueError, match="identity"):
        MaskAgainObjective(ObjectiveConfig(hint_projection="identity"), 384, 6, 768, 12)
    with pytest.raises(ValueError, match="selection='teacher'"):
        MaskAgainObjective(ObjectiveConfig(selection="teacher"), 384, 6, 768, 12)
    with pytest.raises(ValueError, match="attention_transfer"):
        MaskAgainObjective(ObjectiveConfig(baselines={"attention_transfer": 1.0}), 384, 6, 768, 12)


# ---------------------------------------------------------------------- values


@pytest.mark.parametrize("softmax", ["row", "matrix"])
def test_terms_match_references_narrow_student(softmax):
    cfg = ObjectiveConfig(k=3, k_local=2, relation_softmax=softmax)
    obj, s, t = pair(cfg)
    out = obj(s, t)
    assert set(out) == {"global", "local", "hint", "relation", "loss"}
    want = reference_terms(obj, s, t)
    for name, value in want.items():
        assert out[name].item() == pytest.approx(value, rel=1e-4), name
    total = sum(w * want[name] for name, w in cfg.weights().items())
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)


def test_terms_under_bf16_autocast():
    obj, s, t = pair(ObjectiveConfig(k=3, k_local=2), s_dim=64, s_heads=2, t_dim=128, t_heads=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj(s, t)
    want = reference_terms(obj, s, t)
    for name, value in want.items():
        assert out[name].dtype == torch.float32
        assert out[name].item() == pytest.approx(value, rel=5e-2, abs=1e-3), name


def test_local_ignores_empty_frames_under_frame_mask():
    grid = (4, 2, 2)
    mask = frame_mask(2, grid, 0.5, generator=torch.Generator().manual_seed(0))
    fi = torch.arange(16).div(4, rounding_mode="floor").expand(2, 16)[~mask].reshape(2, -1)
    obj = MaskAgainObjective(
        ObjectiveConfig(alpha=0, gamma=0, lam=0, k=2), 32, 2, 32, 2, num_frames=4
    )
    s = fake_output(2, fi.shape[1], 32, 2, fi, layer=0)
    t = fake_output(2, fi.shape[1], 32, 2, fi, layer=0)
    z_s = ref_local(s.attn[0].logits, s.attn[0].values, fi, 4, 2)
    z_t = ref_local(t.attn[0].logits, t.attn[0].values, fi, 4, 2)
    diff = (merge_heads(z_s) - merge_heads(z_t)).pow(2)  # (B, N, F, D)
    keep = [[bool((fi[b] == f).any()) for f in range(4)] for b in range(2)]
    assert sum(map(sum, keep)) == 4, "half the frames of every sample are hidden"
    rows = [diff[b, :, f] for b in range(2) for f in range(4) if keep[b][f]]
    want = float(torch.stack(rows).mean())
    assert obj(s, t)["local"].item() == pytest.approx(want, rel=1e-5)
    inferred = MaskAgainObjective(obj.cfg, 32, 2, 32, 2, num_frames=None)
    assert inferred(s, t)["local"].item() == pytest.approx(want, rel=1e-5)


def test_selection_by_the_teacher():
    cfg = ObjectiveConfig(k=3, k_local=2, gamma=0, lam=0, selection="teacher")
    obj, s, t = pair(cfg, s_dim=64, s_heads=4, t_dim=128, t_heads=4)
    out = obj(s, t)
    st, tt = s.attn[1], t.attn[1]
    z_s = ref_global(st.logits.detach(), st.values.detach(), 3, index_from=tt.logits)
    z_t = ref_global(tt.logits, tt.values, 3)
    p_s = apply(obj.student_proj["global"], merge_heads(z_s))
    assert out["global"].item() == pytest.approx(
        float((p_s - merge_heads(z_t)).pow(2).mean()), rel=1e-4
    )
    z_s = ref_local(st.logits, st.values, s.frame_index, 4, 2, select_from=tt.logits)
    z_t = ref_local(tt.logits, tt.values, t.frame_index, 4, 2)
    p_s = apply(obj.student_proj["local"], merge_heads(z_s))
    assert out["local"].item() == pytest.approx(
        float((p_s - merge_heads(z_t)).pow(2).mean()), rel=1e-4
    )
    separate = MaskAgainObjective(ObjectiveConfig(k=3, k_local=2, gamma=0, lam=0), 64, 4, 128, 4, 4)
    separate.load_state_dict(obj.state_dict())
    assert separate(s, t)["global"].item() != pytest.approx(out["global"].item(), rel=1e-4)


def test_baselines_match_references():
    cfg = ObjectiveConfig(
        alpha=0, beta=0, gamma=0, lam=0, tau_att=0.5, baselines=ALL_BASELINES, at_mode="mse"
    )
    obj, s, t = pair(cfg, s_dim=32, s_heads=2, t_dim=64, t_heads=2)
    out = obj(s, t)
    assert set(out) == set(ALL_BASELINES) | {"loss"}
    st, tt = s.attn[1], t.attn[1]
    n = st.logits.shape[-1]
    want = {}
    p_s = apply(obj.student_proj["hint_all"], s.tokens)
    want["hint_all"] = float((p_s - t.tokens.double()).pow(2).mean())
    p_s = apply(obj.student_proj["value_transfer"], merge_heads(st.values))
    want["value_transfer"] = float((p_s - merge_heads(tt.values).double()).pow(2).mean())
    z_s = ref_global(st.logits.detach(), st.values.detach(), n, 0.5)
    p_s = apply(obj.student_proj["weighted_value_transfer"], merge_heads(z_s))
    z_t = merge_heads(ref_global(tt.logits, tt.values, n, 0.5))
    want["weighted_value_transfer"] = float((p_s - z_t).pow(2).mean())
    a_s = torch.softmax(st.logits.detach().double() / 0.5, -1)
    a_t = torch.softmax(tt.logits.double() / 0.5, -1)
    want["attention_transfer"] = float((a_s - a_t).pow(2).mean())
    for name, value in want.items():
        assert out[name].item() == pytest.approx(value, rel=1e-4), name
    total = sum(ALL_BASELINES[name] * value for name, value in want.items())
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)


def test_hint_all_is_not_mahint():
    cfg = ObjectiveConfig(alpha=0, beta=0, lam=0, gamma=1.0, k=2, baselines={"hint_all": 1.0})
    obj, s, t = pair(cfg, s_dim=32, s_heads=2, t_dim=32, t_heads=2)
    out = obj(s, t)
    index = ref_activation_topk(t.tokens, 2)
    assert out["hint"].item() == pytest.approx(
        ref_hint(s.tokens.detach(), t.tokens, index), rel=1e-5
    )
    every = [list(range(t.tokens.shape[1]))] * 2
    assert out["hint_all"].item() == pytest.approx(
        ref_hint(s.tokens.detach(), t.tokens, every), rel=1e-5
    )


def test_layer_choice_and_tap_errors():
    fi = random_frame_index()
    n = fi.shape[1]
    s = fake_output(2, n, 32, 2, fi, layer=0)
    t = fake_output(2, n, 32, 2, fi, layer=0)
    s.attn[1] = fake_output(2, n, 32, 2, fi).attn[1]
    t.attn[1] = fake_output(2, n, 32, 2, fi).attn[1]
    cfg = ObjectiveConfig(beta=0, gamma=0, lam=0, k=3)
    first = MaskAgainObjective(
        ObjectiveConfig(beta=0, gamma=0, lam=0, k=3, layer=0), 32, 2, 32, 2, 4
    )
    last = MaskAgainObjective(cfg, 32, 2, 32, 2, 4, student_depth=2, teacher_depth=2)
    z_s = ref_global(s.attn[0].logits, s.attn[0].values, 3)
    z_t = ref_global(t.attn[0].logits, t.attn[0].values, 3)
    assert first(s, t)["global"].item() == pytest.approx(float((z_s - z_t).pow(2).mean()), rel=1e-5)
    z_s = ref_global(s.attn[1].logits, s.attn[1].values, 3)
    z_t = ref_global(t.attn[1].logits, t.attn[1].values, 3)
    assert last(s, t)["global"].item() == pytest.approx(float((z_s - z_t).pow(2).mean()), rel=1e-5)
    ambiguous = MaskAgainObjective(cfg, 32, 2, 32, 2, 4)  # no depth given, two taps
    with pytest.raises(KeyError, match="attn_layers"):
        ambiguous(s, t)
    only_first = [EncoderOutput(x.tokens, fi, attn={0: x.attn[0]}) for x in (s, t)]
    assert ambiguous(*only_first)["global"].item() == first(s, t)["global"].item()
    assert last.attn_layers_student == last.attn_layers_teacher == (1,)  # resolved once, here
    with pytest.raises(KeyError, match=r"block 1 \(objective.layer=-1\)"):  # block 1 missing
        last(*only_first)
    with pytest.raises(ValueError, match="same mask"):
        last(s, fake_output(2, n - 1, 32, 2, fi[:, :-1], layer=0))


def test_all_equal_logits_and_large_k_give_finite_losses():
    cfg = ObjectiveConfig(k=1000, baselines={"weighted_value_transfer": 1.0})
    obj, s, t = pair(cfg, s_dim=32, s_heads=2, t_dim=64, t_heads=4, b=1)
    for out in (s, t):
        out.attn[1].logits.zero_()
    res = obj(s, t)
    assert all(torch.isfinite(v) for v in res.values())
    # k >= N: MAGlobal keeps every key, i.e. weighted value transfer with its own projection
    obj.student_proj["weighted_value_transfer"].load_state_dict(
        obj.student_proj["global"].state_dict()
    )
    assert obj(s, t)["global"].item() == pytest.approx(obj(s, t)["weighted_value_transfer"].item())


# ---------------------------------------------------------------------- gradients


@pytest.mark.parametrize("projection", ["student", "both"])
def test_gradients_reach_student_and_projections_only(projection):
    cfg = ObjectiveConfig(
        k=3,
        projection=projection,
        hint_projection="mlp",
        baselines={"hint_all": 1.0, "value_transfer": 1.0, "weighted_value_transfer": 1.0},
    )
    obj, s, t = pair(cfg, s_dim=32, s_heads=2, t_dim=64, t_heads=4, grad=True)
    obj(s, t)["loss"].backward()
    for x in (t.tokens, t.attn[1].logits, t.attn[1].values):
        assert x.grad is None
    for x in (s.tokens, s.attn[1].logits, s.attn[1].values):
        assert x.grad is not None and x.grad.abs().sum() > 0
    params = dict(obj.named_parameters())
    assert any(name.startswith("teacher_proj.") for name in params) == (projection == "both")
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_end_to_end_with_models_teacher_frozen(tiny_kwargs):
    student = create_model("vit_nano", **tiny_kwargs)
    teacher = create_model("vit_micro", **tiny_kwargs).eval().requires_grad_(False)
    cfg = ObjectiveConfig(k=4, baselines={"hint_all": 0.1, "value_transfer": 0.1})
    obj = MaskAgainObjective.from_models(cfg, student, teacher)
    assert obj.num_frames == 2 and obj.student_depth == 2
    video = torch.randn(2, 3, 4, 32, 32)
    for make in (tube_mask, random_mask):
        mask = make(2, student.cfg.grid, 0.5, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            t_out = teacher.forward_features(video, mask, attn_layers=obj.attn_layers_teacher)
        assert t_out.tokens.is_inference()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s_out = student.forward_features(video, mask, attn_layers=obj.attn_layers_student)
            out = obj(s_out, t_out)
        assert set(out) == {
            "global",
            "local",
            "hint",
            "relation",
            "hint_all",
            "value_transfer",
            "loss",
        }
        assert all(torch.isfinite(v) for v in out.values())
        student.zero_grad(), obj.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        for name, p in obj.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_projections_save_and_restore():
    cfg = ObjectiveConfig(k=3, projection="both", baselines={"hint_all": 1.0})
    obj, s, t = pair(cfg, s_dim=32, s_heads=2, t_dim=64, t_heads=4)
    state = obj.state_dict()
    prefixes = {k.rsplit(".", 2)[0] for k in state}
    assert {
        "student_proj.global",
        "student_proj.local",
        "teacher_proj.global",
        "teacher_proj.local",
    } <= {".".join(k.split(".")[:2]) for k in state}
    assert any(p.startswith("student_proj.hint") for p in prefixes)
    fresh = MaskAgainObjective(cfg, 32, 2, 64, 4, num_frames=4, student_depth=2, teacher_depth=2)
    assert fresh(s, t)["loss"].item() != pytest.approx(obj(s, t)["loss"].item())
    fresh.load_state_dict(state)  # strict: every projection is in the state dict
    assert fresh(s, t)["loss"].item() == pytest.approx(obj(s, t)["loss"].item(), rel=1e-6)
    assert math.isfinite(obj(s, t)["loss"].item())
    close(fresh(s, t)["hint"], obj(s, t)["hint"])
