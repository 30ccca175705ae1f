"""The inference benchmark at the tiny size: every field of its JSON and its table (every CPU
path, the kernel ceiling), on real H.264 files for the predict row. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.inference import main


@pytest.mark.subprocess  # child processes, one per path
def test_tiny_benchmark_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    paths = ["eager_fp32", "eager_int8", "ort_fp32", "ort_fused", "ort_int8"]
    args = ["--tiny", "--paths", *paths, "--rounds", "1", "--threads", "1", "--ceiling"]
    result = main([*args, "--predict-videos", "2", "--json", str(out)])
    assert json.loads(out.read_text())["speed"] == result["speed"]
    rows = result["speed"]
    assert [(r["path"], r["batch"]) for r in rows] == [(p, b) for b in (1, 8) for p in paths]
    for r in rows:
        assert r["clips_per_s"] > 0 and len(r["seconds"]) == 1
        assert r["cpu_s_per_clip"] > 0 and r["gflop_per_s"] > 0
        assert 100 < r["peak_memory_mb"] < 8000, r  # a child process's own peak RSS
    ceiling = result["ceiling"]
    assert len(ceiling["kernels"]) == 6 and all(v > 0 for v in ceiling["kernels"].values())
    assert 0 < ceiling["gflop_per_clip"]["attention"] < ceiling["gflop_per_clip"]["linear"]
    assert ceiling["bound_int8_linear"] > 0 and ceiling["bound_all_int8"] > 0
    p = result["predict"]
    assert p["videos"] == 2 and p["clips"] == 2 and 0 < p["share"] <= 1
    assert p["clips_per_s"] <= p["model_clips_per_s"]
    assert result["machine"]["threads"] == 1 and "--tiny" in result["command"]
