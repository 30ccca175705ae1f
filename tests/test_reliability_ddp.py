"""DDP equivalence: ``torchrun --nproc_per_node=2`` (gloo, CPU) with a per-rank batch
of b gives the losses and final weights of one process with batch 2b and the same seed.

Why it can hold: the sampler splits each epoch's permutation across ranks so the two rank
batches of a step are exactly the single process's batch; clips, augmentation (distill/pretrain
load items under ``SeededItems``) and masks are seeded per sample index, not per process; DDP
starts from rank 0's weights (= the single process's, same seed) and averages gradients, and the
loss terms are per-sample means, so the mean of the two rank means is the big-batch mean.

Where exact equality cannot hold, and what the tests do about it:

- MARel (``objective.lam``) relates the selected tokens of the local batch only (no gather,
  as in the official code): its rows differ with the per-rank batch. Tested separately: at
  step 1 (identical weights) every other term matches and MARel does not.
- drop path draws from the process RNG (seed + rank): ``drop_path_rate=0`` here.
- fine-tuning augmentation draws from the process RNG too: deterministic crops (scale and
  ratio 1), no RandAugment / erasing / mixup / head dropout here.
- float sums are reordered (gloo averages the two ranks' gradients instead of one backward over
  2b clips), so the comparison is close, not bitwise: losses rtol 1e-5, weights atol 1e-6
  after 4 AdamW steps at lr 1e-3 (measured: losses ~2e-7 relative, weights ~1.5e-8).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from _reliability import ENV, ROOT, teacher_path
from _weights import mae_image_teacher
from safetensors.torch import load_file

from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.torchrun

LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-6
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def launch(prefix: list[str], args: list[str]) -> None:
    cmd = [*prefix, "-m", "maskagain", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def pair(tmp_path, args: list[str], per_rank: int) -> tuple:
    """(single process with batch 2b, torchrun 2 x b): run dirs."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    launch([sys.executable], [*args, "--out", str(single), f"engine.batch_size={2 * per_rank}"])
    launch(TORCHRUN, [*args, "--out", str(ddp), f"engine.batch_size={per_rank}"])
    return single, ddp


def log(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def assert_close_runs(single, ddp, terms, steps) -> None:
    a, b = log(single), log(ddp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b):
        for term in terms:
            assert rb[term] == pytest.approx(ra[term], rel=LOSS_RTOL), (ra["step"], term)
    ca = load_checkpoint(list_checkpoints(single)[-1][1])
    cb = load_checkpoint(list_checkpoints(ddp)[-1][1])
    assert ca["world_size"] == 1 and cb["world_size"] == 2
    assert ca["state"] == cb["state"] and ca["schedule"] == cb["schedule"]
    for key, value in ca["model"].items():
        if value.is_floating_point():
            diff = (value - cb["model"][key]).abs().max().item()
            assert diff <= WEIGHT_ATOL, (key, diff)
        else:
            assert torch.equal(value, cb["model"][key]), key


DISTILL = [
    "distill", "--config", "configs/tiny/distill.yaml", "data.synthetic_train_clips=16",
    "schedule.epochs=1", "student.drop_path_rate=0", "teacher.precision=fp32",
]  # fmt: skip


def test_distill_ddp_matches_single_process_big_batch(tmp_path, tmp_path_factory):
    """With repeated sampling (2 clips per decoded video, own crops and masks): 16 videos,
    4 per step, 8 clips per step."""
    teacher = teacher_path(tmp_path_factory)
    args = [*DISTILL, f"teacher.source={teacher}", "objective.lam=0", "data.num_sample=2"]
    single, ddp = pair(tmp_path, args, per_rank=2)  # MARel: see below
    assert_close_runs(single, ddp, ("loss", "global", "local", "hint"), steps=4)
    # the exported students agree too (rank 0 exports once)
    sa, sb = load_file(single / "student.safetensors"), load_file(ddp / "student.safetensors")
    assert all(torch.allclose(sa[k], sb[k], rtol=0, atol=WEIGHT_ATOL) for k in sa)


def test_distill_hidden_terms_only_crop_on_device_ddp_matches_single_process(
    tmp_path, tmp_path_factory
):
    """gamma = lam = 0: what comes after the tapped attention of the student's last block gets
    no gradient. DDP is told at start-up (one log line) instead of failing on step 2. The clips
    are cut on the device (``data.crop=device``, the CUDA default): equality holds there too."""
    teacher = teacher_path(tmp_path_factory)
    args = [*DISTILL, f"teacher.source={teacher}", "objective.gamma=0", "objective.lam=0"]
    args.append("data.crop=device")
    single, ddp = pair(tmp_path, args, per_rank=2)
    assert_close_runs(single, ddp, ("loss", "global", "local"), steps=4)
    lines = [x for x in (ddp / "train.log").read_text().splitlines() if "no gradient" in x]
    assert len(lines) == 1 and "find_unused_parameters on" in lines[0], lines
    assert "student.blocks.1.mlp.fc1.weight" in lines[0]  # after the tapped attention
    assert "no gradient" not in (single / "train.log").read_text()  # one process: no DDP


def test_distill_marel_is_per_rank_the_other_terms_match(tmp_path, tmp_path_factory):
    teacher = teacher_path(tmp_path_factory)
    args = [*DISTILL, f"teacher.source={teacher}", "engine.max_steps_per_epoch=1"]
    single, ddp = pair(tmp_path, args, per_rank=2)
    (a,), (b,) = log(single), log(ddp)  # step 1: both start from the same weights
    for term in ("global", "local", "hint"):
        assert b[term] == pytest.approx(a[term], rel=LOSS_RTOL), term
    # 2 x 2 clips relate 2 x (2k) tokens per rank, 4 clips relate 4k tokens: other rows
    assert abs(b["relation"] - a["relation"]) > 1e3 * LOSS_RTOL * abs(a["relation"])


def test_finetune_ddp_matches_single_process_big_batch(tmp_path):
    args = [
        "finetune", "--config", "configs/tiny/finetune.yaml", "data.synthetic_train_clips=16",
        "schedule.epochs=1", "model.drop_path_rate=0", "head.dropout=0",
        "mixup.mixup_alpha=0", "mixup.cutmix_alpha=0", "data.rand_augment=",
        "data.random_erase=0", "data.crop_scale=1,1", "data.crop_ratio=1,1",
        "val.final_test=false",
    ]  # fmt: skip
    single, ddp = pair(tmp_path, args, per_rank=2)  # 16 videos / 4 per step: 4 steps
    assert_close_runs(single, ddp, ("loss",), steps=4)


@pytest.mark.parametrize(
    "config,extra,terms",
    [
        # drop path draws from the process RNG (see above): off in MVD's decoders too; with
        # MAE co-teaching (an image teacher beside the video one)
        (
            "configs/tiny/distill_mvd.yaml",
            ["mvd.decoder_drop_path=0", "mvd.image_weight=1", "image_teacher.precision=fp32"],
            ("loss", "video", "image"),
        ),
        # AMD with clips cut on the device: windows and boxes travel, the crops happen per rank
        (
            "configs/tiny/distill_amd.yaml",
            ["data.crop=device", "data.num_sample=2"],
            ("loss", "direct", "generation", "pixel"),
        ),
    ],  # fmt: skip
    ids=["mvd_coteaching", "amd_crop_on_device"],
)
def test_peer_distillation_ddp_matches_single_process_big_batch(
    tmp_path, tmp_path_factory, config, extra, terms
):
    teacher = teacher_path(tmp_path_factory)
    args = [*DISTILL, f"teacher.source={teacher}", *extra]
    if "mvd.image_weight=1" in extra:
        args.append(f"image_teacher.source={mae_image_teacher(tmp_path / 'mae')}")
    args[2] = config
    single, ddp = pair(tmp_path, args, per_rank=2)
    assert_close_runs(single, ddp, terms, steps=4)  # 16 videos, 4 per step
