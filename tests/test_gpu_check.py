"""The GPU check's dry run: ``python -m benchmarks.gpu_check --device cpu --tiny`` runs every
stage on the CPU, so the command a lent GPU runs cannot rot between loans. Nothing is timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import STEP_ROWS, StageError, run_check, update_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
@pytest.mark.slow
def test_the_tiny_dry_run_runs_every_stage_and_writes_its_report(tmp_path):
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_text()
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--tiny"]
    proc = subprocess.run(
        [*cmd, "--report-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "failed" not in result
    assert list(result["stages"]) == ["environment", "cuda_tests", "step_benchmark", "loader"]
    assert result["stages"]["environment"]["bf16_matmul_flops"] > 0
    tests = result["stages"]["cuda_tests"]
    assert tests["passed"] >= 2 and tests["failed"] == tests["errors"] == 0
    rows = result["stages"]["step_benchmark"]["rows"]
    assert list(rows) == list(STEP_ROWS)
    assert all(r["clips_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows.values())
    loader = result["stages"]["loader"]
    assert loader["steps"] == 6 and 0.0 <= loader["data_wait"] <= 1.0
    assert loader["step_benchmark_clips_per_s"] == rows["maskagain_b_b"]["clips_per_s"]
    assert set(result["goals"]) == {name for name, *_ in gpu_check.GOALS}
    section = (tmp_path / "gpu_check.md").read_text()
    assert "| maskagain_b_b_official |" in section and "for information only" in section
    assert results.read_text() == before  # a CPU run leaves the results file alone


def test_a_failing_stage_stops_the_check_with_one_line_and_keeps_what_ran(tmp_path, monkeypatch):
    def broken(args, result):
        raise StageError("maskagain prepare wrote no list at /nowhere")

    stages = (gpu_check.STAGES[0], ("loader", broken), gpu_check.STAGES[2])
    monkeypatch.setattr(gpu_check, "STAGES", stages)
    args = gpu_check.parse_args(["--device", "cpu", "--tiny", "--report-dir", str(tmp_path)])
    result = run_check(args)
    assert result["failed"] == "stage loader failed: maskagain prepare wrote no list at /nowhere"
    assert list(result["stages"]) == ["environment"]  # the step benchmark never started
    saved = json.loads(args.json.read_text())
    assert saved["failed"] == result["failed"] and "environment" in saved["stages"]
    assert "**stage loader failed" in gpu_check.markdown(result)


def test_the_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmarks\n\n## Training step\n\nkept\n")
    update_results(path, "## GPU check: one\n")
    update_results(path, "## GPU check: two\n")
    text = path.read_text()
    assert "kept" in text and "one" not in text and text.count("## GPU check: two") == 1


def test_asking_for_cuda_without_a_gpu_is_one_clear_line(capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--device", "cuda"])
    assert "--device cpu --tiny" in capsys.readouterr().err
