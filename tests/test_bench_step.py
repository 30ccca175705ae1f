"""The training-step benchmark: runs at the tiny size and writes JSON with every field.

No timing is asserted: this only checks the command, the schema and the FLOP bookkeeping.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import flops as fl
from benchmarks._step_report import update_markdown
from benchmarks._step_rows import (
    ROW_NAMES,
    SIZES,
    build_workload,
    distill_workload,
    official_maskagain_workload,
    videomae_workload,
)
from benchmarks._step_timing import ROW_FIELDS, AllocatedPeak, make_optimizer, train_step
from benchmarks.step import main
from maskagain.masking import tube_mask

ROOT = Path(__file__).resolve().parent.parent


def _check_result(result: dict, names: list[str], steps: int) -> None:
    for key in ("machine", "matmul_flops", "rows", "ratios", "config", "date", "command"):
        assert key in result
    assert set(result["matmul_flops"]) == {"bf16", "fp32"}
    assert all(v > 0 for v in result["matmul_flops"].values())
    assert [r["name"] for r in result["rows"]] == names
    for row in result["rows"]:
        assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
        assert row["batch"] == 2 and len(row["step_seconds"]) == steps
        for key in ("seconds_per_clip", "peak_memory_mb", "flops_per_clip", "achieved_flops"):
            assert row[key] > 0 and math.isfinite(row[key])
        # bytes in use never exceed what the process holds (glibc here, so it is measured)
        assert row["allocated_kind"] == "malloc_in_use"
        assert 0 < row["allocated_peak_mb"] <= row["peak_memory_mb"]
        assert math.isfinite(row["loss"])
        assert math.isclose(sum(row["flops_parts"].values()), row["flops_per_clip"])


@pytest.mark.slow
def test_tiny_benchmark_every_row_in_process(tmp_path):
    out, md = tmp_path / "out.json", tmp_path / "RESULTS.md"
    md.write_text("# Benchmarks\n\n## Data loader\n\nkept as is\n")
    args = ["--size", "tiny", "--batch", "2", "--steps", "2", "--warmup", "0", "--in-process"]
    assert main([*args, "--json", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    _check_result(result, list(ROW_NAMES), steps=2)
    assert set(result["ratios"]) == {
        "maskagain_b_b_over_videomae_b_time",
        "maskagain_b_s_over_mvd_b_s_time",
        "maskagain_b_b_over_videomae_b_memory",
        "maskagain_b_b_over_videomae_b_official_memory",
        "maskagain_b_b_over_videomae_b_allocated",
        "maskagain_b_b_over_videomae_b_official_allocated",
        "maskagain_b_b_over_videomae_b_official_time",
        "maskagain_b_b_over_maskagain_b_b_official_time",
        "maskagain_b_b_over_maskagain_b_b_official_memory",
        "maskagain_b_b_over_maskagain_b_b_official_allocated",
        f"maskagain_b_b_fraction_of_{result['matmul_precision']}_matmul",
    }
    rows = {r["name"]: r for r in result["rows"]}
    # the official modelling is the same step with the same FLOPs, attention materialised
    assert rows["videomae_b_official"]["flops_per_clip"] == rows["videomae_b"]["flops_per_clip"]
    text = md.read_text()
    assert "kept as is" in text and "| maskagain_b_b | 2 |" in text


@pytest.mark.subprocess
def test_tiny_row_in_a_fresh_process(tmp_path):
    """The default mode: every row in its own interpreter, so peak RSS is per row."""
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "benchmarks.step", "--size", "tiny", "--only", "maskagain_b_s"]
    cmd += ["--steps", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    _check_result(result, ["maskagain_b_s"], steps=1)
    assert result["rows"][0]["memory_kind"] == "rss"
    assert "memory_isolated" not in result["rows"][0]


def test_official_attention_is_the_same_math_with_the_matrix_kept():
    """``videomae_b_official`` differs from ``videomae_b`` only in how attention is computed."""
    torch.manual_seed(0)
    size = SIZES["tiny"]
    lean = videomae_workload(size.base, size, torch.device("cpu"))
    official = videomae_workload(size.base, size, torch.device("cpu"), official=True)
    official.trained.load_state_dict(lean.trained.state_dict())
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, size.frames, size.img, size.img, generator=g)
    mask = tube_mask(2, size.grid, size.mask_ratio, g)
    a, b = lean.loss_fn(video, mask), official.loss_fn(video, mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.shape) or t, lambda t: t
    ):
        official.loss_fn(video, mask)
    n = size.clip.n_all  # the decoder's softmax over every token pair is kept for backward
    assert any(tuple(s[-2:]) == (n, n) for s in saved)


def test_allocated_peak_sees_a_large_tensor():
    with AllocatedPeak(torch.device("cpu")) as before:
        pass
    with AllocatedPeak(torch.device("cpu")) as big:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        time.sleep(0.05)
        del x
    assert big.peak_mb - before.peak_mb > 60


def test_markdown_update_replaces_only_its_section(tmp_path):
    md = tmp_path / "RESULTS.md"
    row = dict(
        name="videomae_b",
        batch=1,
        seconds_per_clip=1.0,
        seconds_per_clip_min=1.0,
        seconds_per_clip_max=1.0,
        peak_memory_mb=1.0,
        flops_per_clip=1e9,
        achieved_flops=1e9,
        fraction_of_matmul=0.5,
    )
    machine = dict(
        cpu_model="x",
        cpu_count=1,
        torch="t",
        torch_threads=1,
        device="cpu",
        load_average_at_start=[0.0],
        load_average_at_end=[0.0],
    )
    result = dict(
        command="c", date="d", machine=machine, matmul_flops=dict(bf16=2e9, fp32=1e9), ratios={}
    )
    md.write_text("# B\n\nabove\n")
    update_markdown(md, {**result, "rows": [row]})
    md.write_text(md.read_text() + "\nbelow\n")
    update_markdown(md, {**result, "rows": [{**row, "seconds_per_clip": 2.0}]})
    text = md.read_text()
    assert text.count("## Training step") == 1
    assert "| videomae_b | 1 | 2.000 |" in text and "| videomae_b | 1 | 1.000 |" not in text
    assert text.index("above") < text.index("## Training step") < text.index("below")


def test_flops_of_one_block_by_hand():
    # 4 tokens, width 8, MLP 32: qkv 4*8*24 + proj 4*8*8 + mlp 2*4*8*32 + attention 2*4*4*8
    assert fl.block_macs(4, 8, 32) == 4 * 8 * 24 + 4 * 8 * 8 + 2 * 4 * 8 * 32 + 2 * 4 * 4 * 8
    spec = fl.EncoderSpec(dim=8, depth=2, patch_dim=6)
    clip = fl.ClipShape(n_all=10, n_vis=4, frames=2, patch_dim=6)
    count = fl.maskagain_flops(spec, spec, clip, k=2, batch=1)
    block = fl.block_macs(4, 8, 32)
    assert count.parts["teacher.blocks"] == 2 * 2 * block  # forward only
    assert count.parts["student.blocks"] == 2 * 3 * 2 * block  # forward + backward
    assert count.parts["student.patch_embed"] == 2 * 2 * 4 * 6 * 8  # visible only, weight grad
    assert "loss.projections" not in count.parts  # equal widths: no projection


def test_mvd_teacher_sees_all_tokens():
    spec = fl.EncoderSpec(dim=8, depth=1, patch_dim=6)
    clip = fl.ClipShape(n_all=10, n_vis=4, frames=2, patch_dim=6)
    mvd = fl.mvd_flops(spec, spec, clip, decoder_dim=8, decoder_depth=1)
    assert mvd.parts["teacher.blocks"] == 2 * fl.block_macs(10, 8, 32)
    assert mvd.parts["decoder.head"] == 2 * 3 * 6 * 8 * 8  # 6 hidden tokens, 8 -> 8


def test_mvd_coteaching_adds_a_per_frame_image_teacher_and_a_decoder():
    spec = fl.EncoderSpec(dim=8, depth=1, patch_dim=6)
    image = fl.EncoderSpec(dim=12, depth=1, patch_dim=3)
    clip = fl.ClipShape(n_all=10, n_vis=4, frames=2, patch_dim=6)
    mvd = fl.mvd_flops(spec, spec, clip, decoder_dim=8, decoder_depth=1)
    both = fl.mvd_coteaching_flops(spec, image, spec, clip, 5, decoder_dim=8, decoder_depth=1)
    # 2 frames of 5 patches + a class token, attention within each frame, forward only
    assert both.parts["image_teacher.blocks"] == 2 * 2 * fl.block_macs(6, 12, 48)
    assert both.parts["image_teacher.patch_embed"] == 2 * 2 * 5 * 3 * 12
    assert both.parts["image_decoder.head"] == 2 * 3 * 6 * 8 * 12  # 6 hidden tokens, 8 -> 12
    assert {k: v for k, v in both.parts.items() if not k.startswith("image")} == mvd.parts


def test_bad_device_is_a_one_line_usage_error(capsys):
    import pytest

    for device, words in (("mps", "runs on cpu or cuda"), ("tpu", "is not a device")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--size", "tiny", "--device", device])
        assert exit_info.value.code == 2
        assert words in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--size", "tiny", "--device", "cuda"])
        assert "no CUDA device is visible" in capsys.readouterr().err


def test_amd_teacher_sees_its_own_visible_tokens():
    clip = fl.ClipShape(n_all=10, n_vis=2, frames=2, patch_dim=12)
    t, s = fl.EncoderSpec(16, 2, 4.0, 12), fl.EncoderSpec(8, 2, 4.0, 12)
    amd = fl.amd_flops(t, s, clip, n_teacher_vis=4, pairs=2, generator_depth=1, decoder_dim=8)
    assert amd.parts["teacher.blocks"] == 2 * 2 * fl.block_macs(4, 16, 64)  # depth 2, forward
    assert amd.parts["projections"] == 2 * 3 * 2 * 2 * 8 * 16  # 2 pairs, 2 tokens, 8 -> 16
    assert amd.parts["generators"] == 2 * 3 * 2 * fl.block_macs(4, 16, 64)
    assert amd.parts["pixel_decoder.head"] == 2 * 3 * 8 * 8 * 12  # 8 hidden tokens, 8 -> 12


@pytest.mark.slow
def test_peer_rows_are_the_recipe_step():
    """mvd_b_s, mvd_coteach_b_s and amd_b_s time the recipe's DistillModule and step function:
    the method's objective (MVD's image decoder when it co-teaches), AMD's pixel head, AMD's
    nested teacher mask from the recipe's collate."""
    from maskagain.losses.amd import AMDObjective
    from maskagain.losses.mvd import MVDObjective
    from maskagain.recipes.distill import DistillModule

    size, device = SIZES["tiny"], torch.device("cpu")
    video = torch.randn(2, 3, size.frames, size.img, size.img)
    mask = tube_mask(2, size.grid, size.mask_ratio)
    rows = (("mvd_b_s", MVDObjective), ("mvd_coteach_b_s", MVDObjective), ("amd_b_s", AMDObjective))
    for name, objective in rows:
        w = build_workload(name, size, device)
        assert isinstance(w.trained, DistillModule) and isinstance(w.trained.objective, objective)
        assert (w.trained.pixel_head is not None) == (name == "amd_b_s")
        if objective is MVDObjective:  # the image decoder exactly when co-teaching
            branches = set(w.trained.objective.branches)
            assert branches == ({"video", "image"} if "coteach" in name else {"video"})
        loss = w.loss_fn(video, mask)
        assert math.isfinite(loss.item()) and loss.requires_grad


@pytest.mark.slow
def test_official_maskagain_row_is_the_same_objective_at_the_official_costs():
    """``maskagain_b_b_official`` computes ``maskagain_b_b``'s loss (same weights, fp32), but
    embeds every tubelet, keeps each block's N x N softmax, and runs its fp32 teacher under
    ``no_grad`` rather than inference mode."""
    size, cpu = SIZES["tiny"], torch.device("cpu")
    torch.manual_seed(0)
    lean = distill_workload(size.base, size, cpu, "maskagain", "maskagain_b", precision="fp32")
    torch.manual_seed(0)
    official = official_maskagain_workload(size, cpu, "fp32")
    assert official.official_step and not lean.official_step
    assert official.flops.total == lean.flops.total
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, size.frames, size.img, size.img, generator=g)
    mask = tube_mask(2, size.grid, size.mask_ratio, g)
    torch.testing.assert_close(
        official.loss_fn(video, mask), lean.loss_fn(video, mask), rtol=1e-4, atol=1e-5
    )
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.shape) or t, lambda t: t
    ):
        official.loss_fn(video, mask)
    n_vis, depth = size.clip.n_vis, official.trained.student.depth
    kept = [s for s in saved if len(s) == 4 and tuple(s[-2:]) == (n_vis, n_vis)]
    assert len(kept) >= depth  # every student block keeps its softmax for backward
    embedded = []
    embed = official.trained.student.patch_embed
    handle = embed.register_forward_hook(lambda m, i, o: embedded.append(o.shape))
    official.loss_fn(video, mask)
    handle.remove()
    assert embedded == [(2, size.clip.n_all, embed.proj.out_channels)]  # all, then dropped
    opt = make_optimizer(official.trained, fused=False)
    assert not opt.defaults["fused"]
    train_step(official, opt, video, mask, cpu, "fp32")  # grad norm and .item() included
