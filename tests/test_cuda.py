"""The product on every device there is: each test runs once on the CPU and once on CUDA when a
GPU is visible (that half is skipped otherwise), so the code of the CUDA checks runs on every
machine. ``pytest -m cuda`` selects them all; ``benchmarks.gpu_check`` runs them on a GPU.

Covered: every recipe for a few steps, attention taps against the fused path, the fused SDPA
kernel on untapped blocks, a one-process torchrun run stopped and resumed bit for bit,
checkpoints and exported weights moved between devices, and clips cut on the device against the
workers' crops.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from maskagain.config import load_config
from maskagain.data import DataConfig, MaskCollator, build_dataset
from maskagain.data.transforms import crop_on_device
from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
from maskagain.masking import tube_mask
from maskagain.models import load_encoder
from maskagain.models.loading import save_encoder
from maskagain.models.registry import create_model
from maskagain.recipes import RECIPES

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
NO_CUDA = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device visible")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]
# (written on, resumed on): every pair of the devices there are
PAIRS = [
    pytest.param(a, b, marks=[NO_CUDA] if "cuda" in (a, b) else [], id=f"{a}-to-{b}")
    for a, b in itertools.product(("cpu", "cuda"), repeat=2)
]
TINY = dict(img_size=32, num_frames=4, patch_size=8, tubelet_size=2)
# 12 synthetic clips, batch 4, one epoch: three optimizer steps
THREE_STEPS = (
    "data.synthetic_train_clips=12",
    "schedule.epochs=1",
    "schedule.warmup_epochs=0",
)

# 8 synthetic clips, batch 4, two epochs: four optimizer steps, a checkpoint every two
SHORT = ("data.synthetic_train_clips=8", "engine.ckpt_every_steps=2")


def _precision(dev: str) -> str:
    """What a run uses on ``dev``: bf16 autocast on CUDA (the product's default there), fp32 on
    the CPU (many CPUs here lack bf16 instructions)."""
    return "bf16" if dev == "cuda" else "fp32"


def _run(name: str, config: str, *keys: str, resume: str | None = None) -> dict:
    recipe = RECIPES[name]
    return recipe.run(load_config(recipe.config, str(ROOT / config), list(keys)), resume)


def _train(name: str, config: str, out: Path, dev: str, *keys: str, **kw) -> dict:
    keys = (f"out_dir={out}", f"engine.device={dev}", f"engine.precision={_precision(dev)}", *keys)
    return _run(name, config, *keys, **kw)


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _ran_on(run_dir: Path, dev: str) -> bool:
    """The run's log names the device it trained on (``cuda`` logs as ``cuda:0``; in-process
    runs log at INFO through the ``info_logs`` fixture)."""
    return f"device {dev}" in (run_dir / "train.log").read_text()


@pytest.fixture
def info_logs(caplog):
    """The library's INFO lines reach the run's ``train.log``, as they do under the CLI."""
    caplog.set_level("INFO", logger="maskagain")


@pytest.fixture
def full_fp32():
    """fp32 matmuls in full precision for exact comparisons (a CUDA run switches on TF32)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny random 'pre-trained' teacher, wider than the student."""
    torch.manual_seed(7)
    model = create_model("vit_micro", **TINY, depth=2)
    return save_encoder(model, tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


# ---------------------------------------------------------------------- every recipe
@pytest.mark.slow
@pytest.mark.parametrize("dev", DEVICES)
def test_every_recipe_runs_three_steps_on_the_device(dev, tmp_path, info_logs):
    pre = tmp_path / "pretrain"
    summary = _train("pretrain", "configs/tiny/pretrain.yaml", pre, dev, *THREE_STEPS)
    assert summary["completed"] and summary["step"] == 3 and _ran_on(pre, dev)
    students = {}
    for kind, config in (("maskagain", "distill"), ("mvd", "distill_mvd"), ("amd", "distill_amd")):
        out = tmp_path / config
        keys = (f"teacher.source={pre}", *THREE_STEPS)
        summary = _train("distill", f"configs/tiny/{config}.yaml", out, dev, *keys)
        assert summary["completed"] and summary["step"] == 3, kind
        assert _ran_on(out, dev) and all(map(torch.isfinite, torch.tensor(_losses(out)))), kind
        students[kind] = out
    fine = tmp_path / "finetune"
    keys = (f"init.source={students['maskagain']}", *THREE_STEPS)  # 12 videos, 2 clips each
    summary = _train("finetune", "configs/tiny/finetune.yaml", fine, dev, *keys)
    assert summary["completed"] and summary["step"] == 3 and _ran_on(fine, dev)
    keys = (f"device={dev}", f"precision={_precision(dev)}")
    ev = _run("evaluate", "configs/tiny/evaluate.yaml", f"out_dir={tmp_path / 'ev'}",
              f"checkpoint={fine}", *keys)  # fmt: skip
    assert ev["num_videos"] == 8 and 0.0 <= ev["top1"] <= 100.0
    probe = _run("probe", "configs/tiny/probe.yaml", f"out_dir={tmp_path / 'probe'}",
                 f"encoder={students['maskagain']}", "probe.epochs=3", *keys)  # fmt: skip
    assert probe["num_train"] == 64 and 0.0 <= probe["val_top1"] <= 100.0


@pytest.mark.parametrize("dev", DEVICES)
def test_predict_runs_on_the_device_as_on_the_cpu(dev, tmp_path):
    """``predict`` on real H.264 files gives the same top classes on the device as on the CPU."""
    from maskagain.data.inputs import collect_videos
    from maskagain.recipes.predict import data_config, load_predictor, predict
    from tests._classifier_run import DATA, make_run, write_videos

    (tmp_path / "videos").mkdir()
    videos = write_videos(tmp_path / "videos")
    run = make_run(tmp_path / "run", DATA)
    paths = collect_videos([str(videos)])
    results = {}
    for where in ("cpu", dev):
        predictor = load_predictor(run, device=where)
        cfg = data_config(predictor.preprocessing, 0)
        results[where] = predict(predictor, paths, cfg, 2, False, None, 4, False)
        assert predictor.backend == f"pytorch ({where})"
    cpu, other = results["cpu"].rows, results[dev].rows
    assert len(cpu) == len(paths) == 6 and not results[dev].failed
    for a, b in zip(cpu, other):
        assert a.labels == b.labels, (a.path, a.labels, b.labels)
        assert torch.allclose(torch.tensor(a.scores), torch.tensor(b.scores), atol=1e-3)


@pytest.mark.parametrize(
    "dev",
    [
        pytest.param("cpu", marks=pytest.mark.skip(reason="the CPU demo runs in test_demo.py")),
        pytest.param("cuda", marks=NO_CUDA),
    ],
)
def test_demo_quick_runs_on_the_device(dev, tmp_path):
    """``maskagain demo --quick --finetune`` trains, probes and fine-tunes every default row on
    the device it finds (``auto``)."""
    from maskagain.cli.main import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--finetune", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == dev and summary["finetune"] is True
    assert all(r["time_probe_top1"] is not None for r in summary["results"])


# ---------------------------------------------------------------------- attention
@pytest.mark.parametrize("dev", DEVICES)
def test_attention_taps_give_the_fused_paths_block_outputs(dev, full_fp32):
    model = create_model("vit_micro", **TINY, depth=3).to(dev).eval()
    video = torch.randn(2, 3, 4, 32, 32, device=dev)
    mask = tube_mask(2, model.cfg.grid, 0.5).to(dev)
    with torch.no_grad():
        plain = model.forward_features(video, mask)
        every = model.forward_features(video, mask, attn_layers=(0, 1, 2))
        torch.testing.assert_close(every.tokens, plain.tokens, rtol=1e-4, atol=1e-4)
        assert sorted(every.attn) == [0, 1, 2]
        # block by block: the tapped block's output is the fused block's output
        x = torch.randn(2, 16, model.cfg.embed_dim, device=dev)
        for blk in model.blocks:
            fused, (tapped, tap) = blk(x), blk.forward_tapped(x)
            torch.testing.assert_close(tapped, fused, rtol=1e-4, atol=1e-4)
            assert tap.logits.dtype == torch.float32 and tap.logits.shape == (2, 4, 16, 16)
            x = fused


@pytest.mark.parametrize("dev", DEVICES)
def test_untapped_blocks_take_the_fused_sdpa_kernel(dev, monkeypatch):
    """Under a backend list without the math kernel a fallback raises: every block that is not
    tapped runs a fused kernel (flash or memory-efficient on CUDA, the CPU flash kernel on the
    CPU), and exactly those blocks call SDPA."""
    model = create_model("vit_micro", **TINY, depth=3).to(dev)
    video = torch.randn(2, 3, 4, 32, 32, device=dev)
    mask = tube_mask(2, model.cfg.grid, 0.5).to(dev)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(args[0].dtype)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        with torch.autocast(dev, dtype=dtype, enabled=dev == "cuda"):
            out = model.forward_features(video, mask, attn_layers=(-1,))
            out.tokens.float().square().mean().backward()  # the fused backward too
    assert calls == [dtype, dtype]  # blocks 0 and 1 fused, block 2 tapped
    assert sorted(out.attn) == [2]
    # the guard bites: a kernel list the device cannot serve raises instead of falling back
    # (no memory-efficient kernel on the CPU, no fp32 flash kernel on CUDA)
    missing = SDPBackend.EFFICIENT_ATTENTION if dev == "cpu" else SDPBackend.FLASH_ATTENTION
    with sdpa_kernel([missing]), pytest.raises(RuntimeError):
        model.forward_features(video, mask)


# ---------------------------------------------------------------------- torchrun + resume
def _torchrun_distill(run_dir: Path, teacher: Path, dev: str, *extra: str) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "maskagain", "distill", "--config", "configs/tiny/distill.yaml",
        "--out", str(run_dir), f"teacher.source={teacher}", f"engine.device={dev}",
        f"engine.precision={_precision(dev)}", *SHORT, *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the in-process reference runs
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.torchrun
@pytest.mark.parametrize("dev", DEVICES)
def test_torchrun_run_stopped_then_resumed_is_bit_identical(dev, tmp_path, teacher, full_fp32):
    """A one-process torchrun run (it joins a process group: NCCL on CUDA, gloo on the CPU, and
    trains under DDP) stopped mid-epoch and resumed ends bit for bit where the uninterrupted
    run (in this process, one thread as the runs have) ends."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        keys = (f"teacher.source={teacher}", *SHORT)
        _train("distill", "configs/tiny/distill.yaml", full, dev, *keys)
    finally:
        torch.set_num_threads(threads)
    _torchrun_distill(cut, teacher, dev, "engine.stop_after_steps=3")
    assert [s for s, _ in list_checkpoints(cut)][-1] == 3
    _torchrun_distill(cut, teacher, dev, "--resume", "auto")
    assert _ran_on(cut, dev)
    backend = "nccl" if dev == "cuda" else "gloo"
    assert f"1 process(es), process group {backend}" in (cut / "train.log").read_text()
    a = load_checkpoint(list_checkpoints(full)[-1][1])
    b = load_checkpoint(list_checkpoints(cut)[-1][1])
    assert a["state"] == b["state"] and a["state"]["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for idx, moments in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(moments[name], b["optimizer"]["state"][idx][name]), (idx, name)
    assert _losses(cut) == _losses(full)


# ---------------------------------------------------------------------- across devices
@pytest.mark.slow
@pytest.mark.parametrize("src,dst", PAIRS)
def test_checkpoint_written_on_one_device_resumes_on_the_other(
    src, dst, tmp_path, teacher, info_logs
):
    """Written on ``src``, resumed on ``dst``; the exported student then loads on every device."""
    run = tmp_path / "run"
    keys = (f"teacher.source={teacher}", *SHORT)
    first = _train(
        "distill", "configs/tiny/distill.yaml", run, src, *keys, "engine.stop_after_steps=2"
    )
    assert not first["completed"] and _ran_on(run, src)
    ckpt = load_checkpoint(list_checkpoints(run)[-1][1])  # always opened onto the CPU
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    done = _train("distill", "configs/tiny/distill.yaml", run, dst, *keys, resume="auto")
    assert done["completed"] and done["step"] == 4 and _ran_on(run, dst)
    losses = torch.tensor(_losses(run))
    assert len(losses) == 4 and torch.isfinite(losses).all()
    _same_features_everywhere(run / "student.safetensors", {"cpu", src, dst})


def _same_features_everywhere(path: Path, devices: set[str]) -> None:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # the resumed run may have switched on TF32
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, (2, 4, 4), 0.5)
    outs = []
    for dev in sorted(devices):
        model = load_encoder(path).to(dev).eval()
        with torch.no_grad():
            outs.append(model.forward_features(video.to(dev), mask.to(dev)).tokens.cpu())
    torch.set_float32_matmul_precision(before)
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- data on the device
@pytest.mark.parametrize("dev", DEVICES)
def test_clips_cut_on_the_device_equal_the_workers_within_one_grey_level(dev):
    base = dict(
        kind="synthetic", num_frames=4, sampling_rate=1, input_size=32, short_side=40,
        synthetic_size=48, synthetic_frames=8, synthetic_classes=4, synthetic_train_clips=8,
        num_sample=2,
    )  # fmt: skip
    # uint8 clips: compare in grey levels
    worker = build_dataset(DataConfig(**base), "train", "pretrain", on_device="normalize")
    deferred = build_dataset(DataConfig(**base), "train", "pretrain", on_device="crop")
    collate = MaskCollator()
    for i in range(3):
        torch.manual_seed(i)  # the same draws: sampling, then one box per clip
        want = collate([worker[i]])["video"]  # (S, C, T, 32, 32) uint8
        torch.manual_seed(i)
        batch = collate([deferred[i]])
        frames = batch["video"].to(dev)
        assert frames.dtype == torch.uint8
        got = crop_on_device(frames, batch["boxes"], batch["source"], 32, (0,) * 3, (1,) * 3)
        assert got.device.type == dev and got.shape == want.shape
        diff = (got.float().cpu() * 255 - want.float()).abs()
        assert diff.max() <= 1.01 and diff.mean() <= 0.3
