"""``precision: auto``: bf16 where bf16 is native, fp32 elsewhere; explicit values kept; the
choice and its reason saved with the run and read back by ``--resume`` and ``validate``."""

from __future__ import annotations

import functools
import logging

import pytest
import torch
import yaml

from maskagain.cli.main import main
from maskagain.engine import precision as prec
from maskagain.engine.config import EngineConfig
from maskagain.engine.precision import (
    cpu_has_native_bf16,
    cpuinfo_flags,
    resolve_config_precision,
    resolve_precision,
)
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model
from maskagain.recipes.configs import (
    DistillConfig,
    EvaluateConfig,
    ProbeConfig,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether 'this CPU' has native bf16."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)

    return set_native


def test_cpuinfo_flags_read_native_bf16(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16 amx_tile\n")
    assert {"avx2", "amx_bf16"} <= cpuinfo_flags(info)
    assert cpuinfo_flags(tmp_path / "missing") == set()
    monkeypatch.setattr(prec, "cpuinfo_flags", functools.partial(cpuinfo_flags, info))
    for flags, native in [("avx avx2 fma", False), ("avx2 avx512f avx512_bf16", True)]:
        info.write_text(f"flags\t\t: {flags}\n")
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is native
    cpu_has_native_bf16.cache_clear()


def test_cpu_without_flags_falls_back_to_torch_capability(monkeypatch):
    monkeypatch.setattr(prec, "cpuinfo_flags", lambda path=None: set())
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_BF16")
    cpu_has_native_bf16.cache_clear()
    assert cpu_has_native_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cpu_has_native_bf16.cache_clear()
    assert not cpu_has_native_bf16()
    cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    value, reason = resolve_precision("auto", CUDA)
    assert value == expected and reason.startswith("auto:") and "CUDA" in reason


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_native_bf16(cpu_bf16, native, expected):
    cpu_bf16(native)
    value, reason = resolve_precision("auto", CPU)
    assert value == expected and reason.startswith("auto:") and "CPU" in reason


def test_explicit_values_are_kept_and_slow_bf16_warns_once(cpu_bf16, caplog):
    cpu_bf16(False)
    prec._warn_slow_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="maskagain"):
        for _ in range(3):
            for value in ("bf16", "fp16", "fp32"):
                assert resolve_precision(value, CPU) == (value, "set explicitly")
                assert resolve_precision(value, CUDA) == (value, "set explicitly")
    slow = [r for r in caplog.records if "emulated" in r.getMessage()]
    assert len(slow) == 1 and "\n" not in slow[0].getMessage()
    with pytest.raises(ValueError, match="auto, bf16, fp16 or fp32"):
        resolve_precision("fp64", CPU)


def test_auto_is_the_default_of_every_precision_key():
    assert EngineConfig().precision == "auto"
    cfg = DistillConfig()
    assert (cfg.engine.precision, cfg.teacher.precision, cfg.image_teacher.precision) == (
        "auto",
        "auto",
        "auto",
    )
    assert EvaluateConfig().precision == ProbeConfig().precision == "auto"


def test_config_tree_resolved_in_place_with_reasons(cpu_bf16):
    cpu_bf16(False)
    cfg = DistillConfig()
    cfg.image_teacher.precision = "bf16"  # explicit: kept
    chosen = resolve_config_precision(cfg, CPU)
    assert cfg.engine.precision == cfg.teacher.precision == "fp32"
    assert cfg.engine.precision_reason.startswith("auto: the CPU has no native bf16")
    assert cfg.image_teacher.precision == "bf16" and cfg.image_teacher.precision_reason == ""
    assert set(chosen) == {"engine.precision", "teacher.precision", "image_teacher.precision"}
    assert chosen["image_teacher.precision"] == "bf16 (set explicitly)"


@pytest.fixture
def teacher_path(tmp_path):
    torch.manual_seed(7)
    model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    return str(save_encoder(model, tmp_path / "teacher" / "teacher.safetensors"))


def test_distill_with_auto_runs_fp32_here_and_saves_the_choice(
    tmp_path, teacher_path, cpu_bf16, capsys, caplog
):
    """On a CPU without native bf16 a run with auto precision trains and teaches in fp32; the
    saved config says so and why, and ``--resume`` and ``validate`` read it back unchanged."""
    cpu_bf16(False)
    run_dir = tmp_path / "run"
    args = ["distill", "--config", "configs/tiny/distill.yaml", "--out", str(run_dir)]
    auto = [f"teacher.source={teacher_path}", "engine.precision=auto", "teacher.precision=auto"]
    with caplog.at_level(logging.INFO, logger="maskagain"):
        assert main([*args, *auto, "engine.stop_after_steps=2"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for section in ("engine", "teacher"):
        assert saved[section]["precision"] == "fp32"
        assert saved[section]["precision_reason"].startswith("auto: the CPU has no native bf16")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision:")]
    assert "engine.precision fp32 (auto:" in line and "teacher.precision fp32 (auto:" in line
    assert line in (run_dir / "train.log").read_text()
    # the saved config resumes as it is: no precision key differs
    resume = ["distill", "--config", str(run_dir / "config.yaml"), "--resume", "auto"]
    caplog.clear()
    assert main(resume) == 0
    assert not [r for r in caplog.records if "config differs" in r.getMessage()]
    capsys.readouterr()
    assert main(["validate", "--recipe", "distill", str(run_dir / "config.yaml")]) == 0
    assert "precision_reason: 'auto: the CPU" in capsys.readouterr().out


# ----------------------------------------------------------------------------- TF32
class MatmulFlags(torch.overrides.TorchFunctionMode):
    """Records ``allow_tf32`` at every matmul (``@``, ``matmul``, ``bmm``) called inside."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[int, ...], bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm):
            self.seen.append((tuple(out.shape), torch.backends.cuda.matmul.allow_tf32))
        return out


@pytest.fixture
def tf32_on():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def test_selection_logits_and_relations_run_without_tf32(tf32_on):
    from maskagain.losses.output import relation_loss
    from maskagain.models.layers import Attention

    attn = Attention(16, 2)
    x = torch.randn(2, 5, 16)
    with MatmulFlags() as flags:
        _, tap = attn.forward_tapped(x)
    logits = [tf32 for shape, tf32 in flags.seen if shape == tuple(tap.logits.shape)]
    assert logits == [False]  # the selection's logits: true fp32
    assert flags.seen[-1][1] is True  # the attention output after them may use TF32
    with MatmulFlags() as flags:
        relation_loss(torch.randn(6, 8), torch.randn(6, 4))
    assert flags.seen and not any(tf32 for _, tf32 in flags.seen)
    assert torch.backends.cuda.matmul.allow_tf32 is True  # restored outside


@pytest.mark.parametrize("precision, expected", [("fp32", "high"), ("bf16", "highest")])
def test_tf32_only_for_fp32_training(monkeypatch, precision, expected):
    from maskagain.engine.run import set_matmul_precision

    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    cfg = DistillConfig()
    cfg.engine.precision = precision
    set_matmul_precision(cfg)
    assert (calls or ["highest"]) == [expected]


# ----------------------------------------------------------------------------- trainer
def test_trainer_resolves_auto_and_fp16_scaler_is_checkpointed(tmp_path, cpu_bf16):
    from test_engine import make_trainer

    cpu_bf16(False)
    assert make_trainer(tmp_path / "auto", precision="auto").dtype == torch.float32
    trainer = make_trainer(tmp_path / "fp16", precision="fp16", epochs=1, max_steps_per_epoch=2)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    trainer.fit()
    assert trainer.checkpoint_state()["scaler"]["scale"] == trainer.scaler.get_scale()


def test_peak_memory_is_logged_on_cuda_only(monkeypatch):
    from maskagain.engine.metrics import peak_memory

    assert peak_memory(CPU) == {}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    assert peak_memory(CUDA) == {"max_mem_gb": 3.0}


def test_teacher_is_cast_before_it_moves():
    from maskagain.recipes.distill import to_device_in

    calls = []

    class Spy(torch.nn.Linear):
        def to(self, *args, **kwargs):
            calls.append(args)
            return super().to(*args, **kwargs)

    teacher = to_device_in(Spy(2, 2), "bf16", CPU)
    assert calls == [(torch.bfloat16,), (CPU,)]  # the cast first: no fp32 copy on the device
    assert teacher.weight.dtype == torch.bfloat16
