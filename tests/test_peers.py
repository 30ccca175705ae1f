"""The peer methods in the distillation harness: ``maskagain distill`` with ``objective.kind``
mvd and amd (and a pixel term on any kind) end to end through the CLI, exact resumption, what
each teacher sees, the AMD masks of the real collate, init and learning-rate parity options."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from maskagain.cli.main import main
from maskagain.config import ConfigError, load_config
from maskagain.data.collate import MaskCollator
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.engine.config import OptimConfig, ScheduleConfig
from maskagain.engine.run import build_optimization
from maskagain.models import load_encoder
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model
from maskagain.models.vit import VideoViT
from maskagain.recipes.configs import DistillConfig, PretrainConfig

CONFIGS = {
    "maskagain": "configs/tiny/distill.yaml",
    "mvd": "configs/tiny/distill_mvd.yaml",
    "amd": "configs/tiny/distill_amd.yaml",
}
TERMS = {"mvd": {"video", "loss"}, "amd": {"direct", "generation", "pixel", "loss"}}
TEACHER_WIDTH, STUDENT_WIDTH = 128, 64


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A tiny random 'pre-trained' teacher, wider and deeper than the nano student."""
    torch.manual_seed(7)
    model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    return str(save_encoder(model, path))


def distill(kind: str, run_dir, teacher, *extra) -> int:
    args = ["--out", str(run_dir), f"teacher.source={teacher}", *extra]
    return main(["distill", "--config", CONFIGS[kind], *args])


def read_log(run_dir) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mvd", "amd"])
def test_peer_runs_resume_bit_exactly_and_export_the_student(tmp_path, teacher_path, kind):
    """8 steps uninterrupted vs 3 steps (mid-epoch) then ``--resume auto``: same weights,
    optimizer state and losses; the logs name the method's terms; the export is the student."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert distill(kind, full, teacher_path) == 0
    assert distill(kind, cut, teacher_path, "engine.stop_after_steps=3") == 0
    assert not (cut / "student.safetensors").exists()
    assert distill(kind, cut, teacher_path, "--resume", "auto") == 0

    log_full, log_cut = read_log(full), read_log(cut)
    assert [r["step"] for r in log_cut] == list(range(1, 9))
    assert all(TERMS[kind] <= set(r) for r in log_full)
    assert all(math.isfinite(r[t]) for r in log_full for t in TERMS[kind])
    assert [r["loss"] for r in log_cut] == [r["loss"] for r in log_full]
    losses = [r["loss"] for r in log_full]
    assert max(losses) - min(losses) > 1e-4

    a = load_checkpoint(list_checkpoints(full)[-1][1])
    b = load_checkpoint(list_checkpoints(cut)[-1][1])
    assert a["state"] == b["state"] == {"epoch": 2, "step": 8, "batch_in_epoch": 0}
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(a["optimizer"], b["optimizer"], rtol=0, atol=0)
    assert any(k.startswith("objective.") for k in a["model"])  # decoders / generators save
    student = load_encoder(full)  # the run directory resolves to student.safetensors
    assert student.cfg.embed_dim == STUDENT_WIDTH
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, a["model"][f"student.{key}"], rtol=0, atol=0)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["completed"] and summary["objective"] == kind


@pytest.mark.slow
def test_pixel_weight_adds_a_checkpointed_pixel_term(tmp_path, teacher_path):
    run_dir = tmp_path / "run"
    extra = ("objective.pixel_weight=0.5", "engine.stop_after_steps=2")
    assert distill("maskagain", run_dir, teacher_path, *extra) == 0
    records = read_log(run_dir)
    assert records and all({"pixel", "global", "hint", "loss"} <= set(r) for r in records)
    ckpt = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert any(k.startswith("pixel_head.decoder.") for k in ckpt["model"])
    assert "pixel_head.mask_token" in ckpt["model"]
    # without the weight: no pixel term, no pixel head
    plain = tmp_path / "plain"
    assert distill("maskagain", plain, teacher_path, "engine.stop_after_steps=1") == 0
    assert all("pixel" not in r for r in read_log(plain))
    ckpt = load_checkpoint(list_checkpoints(plain)[-1][1])
    assert not any(k.startswith("pixel_head.") for k in ckpt["model"])


@pytest.fixture
def encoder_calls(monkeypatch):
    """Every ``VideoViT.forward_features`` call: width, mask, attention taps, inference mode,
    grad mode."""
    calls = []
    real = VideoViT.forward_features

    def spy(self, video, mask=None, attn_layers=(), **kwargs):
        calls.append(
            dict(
                width=self.cfg.embed_dim,
                mask=None if mask is None else mask.clone(),
                attn_layers=tuple(attn_layers),
                inference=torch.is_inference_mode_enabled(),
                grad=torch.is_grad_enabled(),
                tokens=real(self, video, mask, attn_layers, **kwargs),
            )
        )
        return calls[-1]["tokens"]

    monkeypatch.setattr(VideoViT, "forward_features", spy)
    return calls


@pytest.mark.slow
def test_mvd_teacher_sees_the_full_clip(tmp_path, teacher_path, encoder_calls):
    assert distill("mvd", tmp_path / "run", teacher_path, "engine.stop_after_steps=2") == 0
    teacher = [c for c in encoder_calls if c["width"] == TEACHER_WIDTH]
    student = [c for c in encoder_calls if c["width"] == STUDENT_WIDTH]
    assert len(teacher) == len(student) == 2
    for t, s in zip(teacher, student):
        assert t["mask"] is None and t["tokens"].tokens.shape[1] == 2 * 4 * 4  # every token
        assert t["inference"] and not t["attn_layers"] and not t["tokens"].attn
        assert s["mask"] is not None and s["grad"] and not s["inference"]
        assert s["tokens"].tokens.shape[1] == int((~s["mask"][0]).sum()) == 16
        assert not s["attn_layers"]  # no attention map where no loss reads one


@pytest.mark.slow
def test_amd_teacher_runs_on_its_own_lighter_mask(tmp_path, teacher_path, encoder_calls):
    assert distill("amd", tmp_path / "run", teacher_path, "engine.stop_after_steps=2") == 0
    teacher = [c for c in encoder_calls if c["width"] == TEACHER_WIDTH]
    student = [c for c in encoder_calls if c["width"] == STUDENT_WIDTH]
    assert len(teacher) == len(student) == 2
    for t, s in zip(teacher, student):
        assert t["inference"] and not t["attn_layers"] and not s["attn_layers"]
        t_hidden, s_hidden = t["mask"], s["mask"]
        assert (t_hidden.sum(1) == 2 * 4).all() and (s_hidden.sum(1) == 2 * 8).all()
        assert not (t_hidden & ~s_hidden).any()  # student's visible tokens within the teacher's


def test_amd_collate_masks_are_nested_tubes_and_seeded_per_clip():
    grid = (2, 4, 4)
    items = [{"video": torch.zeros(3, 4, 32, 32), "label": 0, "index": i} for i in range(6)]
    collate = MaskCollator("tube", 0.5, grid, seed=3, teacher_ratio=0.25)
    batch = collate(items)
    student, teacher = batch["mask"], batch["teacher_mask"]
    assert student.shape == teacher.shape == (6, 32)
    assert (student.sum(1) == 16).all() and (teacher.sum(1) == 8).all()
    assert not (teacher & ~student).any()
    frames = student.view(6, 2, 16)
    assert torch.equal(frames[:, 0], frames[:, 1])  # the same pattern in every frame (tube)
    assert torch.equal(teacher.view(6, 2, 16)[:, 0], teacher.view(6, 2, 16)[:, 1])
    # a clip's masks depend on (seed, epoch, index) only: any batch, any order
    again = collate(items[::-1])
    assert torch.equal(again["mask"].flip(0), student)
    assert torch.equal(again["teacher_mask"].flip(0), teacher)
    collate.set_epoch(1)
    assert not torch.equal(collate(items)["mask"], student)
    with pytest.raises(ValueError, match="tube"):
        MaskCollator("random", 0.5, grid, teacher_ratio=0.25)


def test_amd_and_mvd_config_checks():
    tiny = CONFIGS["amd"]
    with pytest.raises(ConfigError, match="'mask.kind' must be 'tube'"):
        load_config(DistillConfig, tiny, ["mask.kind=random"])
    with pytest.raises(ConfigError, match="'amd.teacher_ratio'=0.5 must be below"):
        load_config(DistillConfig, tiny, ["amd.teacher_ratio=0.5"])
    with pytest.raises(ConfigError, match="amd.loss"):
        load_config(DistillConfig, tiny, ["amd.loss=l2"])
    with pytest.raises(ConfigError, match="mvd.image_weight"):
        load_config(DistillConfig, CONFIGS["mvd"], ["mvd.image_weight=1"])
    with pytest.raises(ConfigError, match="objective.kind"):
        load_config(DistillConfig, tiny, ["objective.kind=dmae"])
    with pytest.raises(ConfigError, match="student.init"):
        load_config(DistillConfig, tiny, ["student.init=xavier"])


def _linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def _xavier_std(w: torch.Tensor) -> float:
    fan_out, fan_in = w.shape
    return math.sqrt(2.0 / (fan_in + fan_out))  # std of U(+-sqrt(6 / (fan_in + fan_out)))


@pytest.mark.parametrize("recipe", ["distill", "pretrain"])
def test_official_init_through_the_recipe(recipe):
    """``init: official``: every encoder Linear has the spread of the official code's
    xavier_uniform_ (bounded by its limit), zero biases; ``trunc_normal`` keeps std 0.02."""
    from maskagain.recipes.distill import build_distill_module
    from maskagain.recipes.pretrain import build_pretrain_model

    def encoder(init: str) -> VideoViT:
        torch.manual_seed(0)
        if recipe == "pretrain":
            cfg = load_config(PretrainConfig, "configs/tiny/pretrain.yaml", [f"model.init={init}"])
            return build_pretrain_model(cfg).encoder
        cfg = load_config(DistillConfig, CONFIGS["mvd"], [f"student.init={init}"])
        teacher = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
        return build_distill_module(cfg, teacher).student

    official, default = encoder("official"), encoder("trunc_normal")
    for w in _linear_weights(official):
        bound = math.sqrt(3) * _xavier_std(w)
        assert w.abs().max() <= bound + 1e-7
        assert abs(w.std().item() / _xavier_std(w) - 1) < 0.1, tuple(w.shape)
    for m in official.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert not m.bias.any()
    cut = 0.02 * 0.8796  # std of a normal(0, 0.02) truncated at +-2 std
    for w in _linear_weights(default):
        assert abs(w.std().item() / cut - 1) < 0.1 and w.abs().max() <= 0.04 + 1e-7
    conv = official.patch_embed.proj.weight  # PyTorch's default: U(+-1/sqrt(fan_in))
    assert conv.abs().max() <= 1 / math.sqrt(conv[0].numel()) + 1e-7


def _lrs(optim: OptimConfig, total_batch: int) -> list[float]:
    """The lr of each of the 40 steps of a 4-epoch run (10 steps per epoch, 1 warm-up epoch)."""
    schedule = ScheduleConfig(epochs=4, warmup_epochs=1, warmup_lr=1e-6, min_lr=1e-5)
    _, sched = build_optimization(
        nn.Linear(2, 2), optim, schedule, 10, total_batch, torch.device("cpu")
    )
    return [sched.lr_at(step) for step in range(40)] + [sched.lr_at(40)]


def test_scale_min_lr_scales_the_floor_and_warm_up_start_like_the_peak():
    off = _lrs(OptimConfig(base_lr=1.5e-4), 512)
    on = _lrs(OptimConfig(base_lr=1.5e-4, scale_min_lr=True), 512)
    assert off[0] == pytest.approx(1e-6) and on[0] == pytest.approx(2e-6)
    assert max(off) == max(on) == pytest.approx(3e-4)
    assert off[-1] == pytest.approx(1e-5) and on[-1] == pytest.approx(2e-5)
    assert OptimConfig().scale_min_lr is False  # the default keeps absolute floors
