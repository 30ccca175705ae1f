"""The GPU check: one command, stages in order, each timed, results as JSON and markdown.

    bash benchmarks/gpu_check.sh [--json PATH] [--report-dir DIR]     # on a GPU machine
    python -m benchmarks.gpu_check --device cpu --tiny                # the dry run (~1 CPU minute)

Stages (a stage that cannot produce its result stops the check with one line naming it; what
the earlier stages measured is still written):

1. ``environment``: GPU name, torch, CUDA and cuDNN versions, the bf16 matmul rate at
   8192^3 (random data, median of 10 after 3 warm-ups).
2. ``cuda_tests``: ``pytest -m cuda tests/test_cuda.py`` (every test on the CPU and on CUDA),
   its counts and the names of failed tests. Failed tests are reported, not a stop.
3. ``step_benchmark``: ``benchmarks.step`` at the paper's shapes (16x224x224, tube 90%) at
   batch 64, halved per row until it fits: clips/s, the share of stage 1's bf16 rate and
   ``max_memory_allocated`` of every row.
4. ``loader``: ``maskagain distill`` (``configs/distill/k400_vit_b.yaml``, a random ViT-B
   teacher saved as safetensors) for 200 steps on K400-like H.264 files (10 s, 30 fps, 340x256
   and 568x320, x264 defaults) that the check writes and ``maskagain prepare``s, with
   ``--workers`` loader workers: the share of time the loop waited for data, clips/s, and the
   step benchmark's B->B rate beside it.
5. ``goals``: B->B >= 50% of the bf16 rate; >= 2.5x the clips/s and <= 0.5x the peak memory of
   ``videomae_b_official``; <= 0.6x the time and <= 0.7x the memory of
   ``maskagain_b_b_official``; data wait < 10%. Reported as met or not; they never fail the run.

Outputs: ``--json`` (default ``<report-dir>/gpu_check.json``, rewritten after every stage) and
``<report-dir>/gpu_check.md``, the dated section for ``benchmarks/RESULTS.md``. A run on CUDA
(or with ``--write-results``) also writes that section into ``benchmarks/RESULTS.md``;
``--from-json FILE --write-results`` writes it from a result brought back from a GPU machine.

``--tiny`` runs every stage with tiny models and clips (the CPU dry run that
``tests/test_gpu_check.py`` runs): a subset of the CUDA tests, the tiny step benchmark in one
process, 8 small files and 6 loader steps.

On a lent GPU machine (no network; Python 3.12, torch 2.11 preinstalled; PyAV carried as a
wheel in the ignored folder ``wheels/``, see ``docs/gpu.md``), in one call with
``carry=["wheels"]`` and ``timeout_s=600`` (the check itself stays under 8 minutes):

    bash benchmarks/gpu_check.sh --report-dir $OUT --work /tmp/gpu_check_work
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._results import write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MD_BEGIN, MD_END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
STEP_ROWS = (
    "maskagain_b_b",
    "maskagain_b_s",
    "maskagain_g_b",
    "videomae_b",
    "videomae_b_official",
    "mvd_b_s",
    "amd_b_s",
    "maskagain_b_b_official",
)
# the CUDA tests the tiny dry run keeps (the others train several runs each)
TINY_TESTS = "sdpa or grey_level"
# K400-like sources: (height, width) at 30 fps, 10 s; tiny: 48x64, 2 s
K400_SOURCES = ((256, 340), (320, 568))


class StageError(RuntimeError):
    """A stage could not produce its result; the message is the one line the check prints."""


# ---------------------------------------------------------------------- stage 1
def bf16_matmul_flops(n: int, device: torch.device, reps: int = 10) -> float:
    """FLOP/s of an n x n x n bf16 matmul on random data (median of ``reps`` after 3 warm-ups)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, torch.bfloat16)
    b = torch.randn(n, n, generator=g).to(device, torch.bfloat16)
    times = []
    for i in range(3 + reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_environment(args: argparse.Namespace, result: dict) -> dict:
    device = torch.device(args.device)
    n = 256 if args.tiny else 8192
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "matmul_n": n,
        "bf16_matmul_flops": bf16_matmul_flops(n, device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return env


# ---------------------------------------------------------------------- stage 2
def stage_cuda_tests(args: argparse.Namespace, result: dict) -> dict:
    xml = args.work / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"]
    cmd += ["-p", "no:cacheprovider", f"--junitxml={xml}"]
    if args.tiny:
        cmd += ["-k", TINY_TESTS]
    proc = _run(cmd, timeout=args.test_timeout, what="pytest -m cuda")
    if not xml.is_file():
        raise StageError(f"pytest wrote no report (exit {proc.returncode}): {_tail(proc)}")
    counts = junit_counts(xml)
    counts["exit_code"] = proc.returncode
    counts["selection"] = TINY_TESTS if args.tiny else "all"
    return counts


def junit_counts(path: Path) -> dict:
    """passed / failed / errors / skipped and the failed tests' ids from a JUnit XML report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    passed = total["tests"] - total["failures"] - total["errors"] - skipped
    return {
        "passed": passed,
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped": skipped,
        "failed_tests": failed,
    }


# ---------------------------------------------------------------------- stage 3
def stage_step_benchmark(args: argparse.Namespace, result: dict) -> dict:
    out = args.work / "step.json"
    cmd = [sys.executable, "-m", "benchmarks.step", "--device", args.device, "--json", str(out)]
    for row in STEP_ROWS:
        cmd += ["--only", row]
    if args.tiny:
        cmd += ["--size", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--in-process"]
    else:
        cmd += ["--steps", "5", "--warmup", "2"]
    _run(cmd, timeout=args.step_timeout, what="benchmarks.step")
    step = json.loads(out.read_text())
    peak = result["stages"]["environment"]["bf16_matmul_flops"]
    rows = {}
    for row in step["rows"]:
        rows[row["name"]] = {
            "batch": row["batch"],
            "batch_requested": row.get("batch_requested", row["batch"]),
            "clips_per_s": 1.0 / row["seconds_per_clip"],
            "seconds_per_clip": row["seconds_per_clip"],
            "fraction_of_bf16_matmul": row["achieved_flops"] / peak,
            "peak_memory_mb": row["peak_memory_mb"],
            "memory_kind": row["memory_kind"],
            "allocated_peak_mb": row.get("allocated_peak_mb"),
        }
    return {"precision": step["config"]["precision"], "rows": rows, "ratios": step["ratios"]}


# ---------------------------------------------------------------------- stage 4
def write_k400_like(folder: Path, files: int, tiny: bool) -> Path:
    """``files`` H.264 videos (copies of the K400-like sources under distinct names, one class
    each in turn) and a VideoMAE list file naming them; returns the list file."""
    from benchmarks.data import write_test_video

    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for h, w in ((48, 64),) if tiny else K400_SOURCES:
        path = folder / f"source_{h}p.mp4"
        if not path.is_file():
            write_test_video(path, h, w, fps=30, seconds=2 if tiny else 10)
        sources.append(path)
    lines = []
    for i in range(files):
        name = f"video_{i:04d}.mp4"
        shutil.copyfile(sources[i % len(sources)], folder / name)
        lines.append(f"{name} {i % 4}")
    listing = folder / "train.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def prepare(listing: Path, out: Path, workers: int, tiny: bool) -> Path:
    """``maskagain prepare`` the list's videos into ``out``; returns the prepared list."""
    cmd = [sys.executable, "-m", "maskagain", "prepare", "--list", str(listing)]
    cmd += ["--root", str(listing.parent), "--out", str(out), "--workers", str(workers)]
    if tiny:
        cmd += ["--short-side", "32"]
    _run(cmd, timeout=300, what="maskagain prepare")
    prepared = out / listing.name
    if not prepared.is_file() or not prepared.read_text().strip():
        raise StageError(f"maskagain prepare wrote no list at {prepared}")
    return prepared


def repeated_list(prepared: Path, entries: int) -> Path:
    """The prepared list repeated to ``entries`` lines (one epoch covers the whole run)."""
    lines = prepared.read_text().split("\n")
    lines = [line for line in lines if line.strip()]
    path = prepared.with_name("train_repeated.txt")
    path.write_text("\n".join(lines[i % len(lines)] for i in range(entries)) + "\n")
    return path


def save_teacher(path: Path, tiny: bool) -> Path:
    """A random teacher in the users' weights format (ViT-B at 16x224, or a tiny one)."""
    from maskagain.models.loading import save_encoder
    from maskagain.models.registry import create_model

    torch.manual_seed(0)
    if tiny:
        model = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    else:
        model = create_model("vit_base")
    return save_encoder(model, path)


def loader_command(args: argparse.Namespace, listing: Path, teacher: Path, run: Path) -> list:
    batch = 2 if args.tiny else 64
    config = "configs/tiny/distill.yaml" if args.tiny else "configs/distill/k400_vit_b.yaml"
    cmd = [sys.executable, "-m", "maskagain", "distill", "--config", config, "--out", str(run)]
    cmd += [
        f"teacher.source={teacher}", "data.kind=list", f"data.root={listing.parent}",
        f"data.train_list={listing}", f"data.num_workers={args.workers}",
        f"engine.device={args.device}", f"engine.batch_size={batch}",
        f"engine.stop_after_steps={args.loader_steps}", f"engine.log_every={args.log_every}",
        "engine.tensorboard=false", "engine.progress=false",
    ]  # fmt: skip
    if args.tiny:
        cmd += ["data.num_frames=4", "data.sampling_rate=2", "data.short_side=32"]
    return cmd


def stage_loader(args: argparse.Namespace, result: dict) -> dict:
    work = args.work / "loader"
    t0 = time.perf_counter()
    listing = write_k400_like(work / "videos", args.loader_files, args.tiny)
    written = time.perf_counter() - t0
    prepared = prepare(listing, work / "prepared", args.workers, args.tiny)
    prepared_s = time.perf_counter() - t0 - written
    batch = 2 if args.tiny else 64
    listing = repeated_list(prepared, batch * args.loader_steps)
    teacher = save_teacher(work / "teacher.safetensors", args.tiny)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    _run(loader_command(args, listing, teacher, run), args.loader_timeout, "maskagain distill")
    report = loader_report(run / "log.jsonl", batch)
    report.update(
        workers=args.workers,
        files=args.loader_files,
        write_seconds=written,
        prepare_seconds=prepared_s,
    )
    step_rows = result["stages"].get("step_benchmark", {}).get("rows", {})
    if "maskagain_b_b" in step_rows:
        report["step_benchmark_clips_per_s"] = step_rows["maskagain_b_b"]["clips_per_s"]
    return report


def loader_report(log: Path, batch: int) -> dict:
    """Data wait and clips/s over the run's log intervals, the first (start-up) left out."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows = [r for r in rows if "data_wait" in r and "clips_per_s" in r]
    if len(rows) < 2:
        raise StageError(f"the loader run logged {len(rows)} interval(s); need 2 or more")
    kept = rows[1:]
    # clips/s per interval -> seconds per interval, so that the mean weighs intervals by time
    seconds = [1.0 / r["clips_per_s"] for r in kept]
    wait = sum(r["data_wait"] * s for r, s in zip(kept, seconds)) / sum(seconds)
    return {
        "steps": kept[-1]["step"],
        "batch": batch,
        "intervals": len(kept),
        "data_wait": wait,
        "gpu_busy": 1.0 - wait,
        "clips_per_s": statistics.median(r["clips_per_s"] for r in kept),
        "data_wait_per_interval": [r["data_wait"] for r in kept],
    }


# ---------------------------------------------------------------------- goals
GOALS = (
    # name, description, (stage, key path), comparison, target
    ("bb_fraction_of_bf16", "B->B achieved FLOP/s / bf16 matmul rate", ">=", 0.5),
    ("bb_over_videomae_official_speed", "B->B clips/s / videomae_b_official", ">=", 2.5),
    ("bb_over_videomae_official_memory", "B->B peak memory / videomae_b_official", "<=", 0.5),
    ("bb_over_official_time", "B->B time / maskagain_b_b_official", "<=", 0.6),
    ("bb_over_official_memory", "B->B peak memory / maskagain_b_b_official", "<=", 0.7),
    ("data_wait", "share of the loader run spent waiting for data", "<", 0.1),
)


def goal_values(result: dict) -> dict[str, float]:
    """The measured value of every goal whose stages ran."""
    stages = result["stages"]
    rows = stages.get("step_benchmark", {}).get("rows", {})
    values = {}
    bb, vo, mo = (rows.get(k) for k in ("maskagain_b_b", "videomae_b_official",
                                        "maskagain_b_b_official"))  # fmt: skip
    if bb:
        values["bb_fraction_of_bf16"] = bb["fraction_of_bf16_matmul"]
    if bb and vo:
        values["bb_over_videomae_official_speed"] = bb["clips_per_s"] / vo["clips_per_s"]
        values["bb_over_videomae_official_memory"] = bb["peak_memory_mb"] / vo["peak_memory_mb"]
    if bb and mo:
        values["bb_over_official_time"] = bb["seconds_per_clip"] / mo["seconds_per_clip"]
        values["bb_over_official_memory"] = bb["peak_memory_mb"] / mo["peak_memory_mb"]
    if "data_wait" in stages.get("loader", {}):
        values["data_wait"] = stages["loader"]["data_wait"]
    return values


def check_goals(result: dict) -> dict:
    compare: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda v, t: v >= t,
        "<=": lambda v, t: v <= t,
        "<": lambda v, t: v < t,
    }
    values = goal_values(result)
    rows = result["stages"].get("step_benchmark", {}).get("rows", {})
    batches = {r["batch"] for r in rows.values()}
    if len(batches) > 1:  # a row that did not fit at 64 ran smaller: memory ratios mix batches
        result["goals_note"] = f"step rows ran at batches {sorted(batches)}"
    return {
        name: {"what": what, "value": values[name], "target": f"{op} {target}",
               "met": compare[op](values[name], target)}
        for name, what, op, target in GOALS
        if name in values
    }  # fmt: skip


# ---------------------------------------------------------------------- running
STAGES: tuple[tuple[str, Callable[[argparse.Namespace, dict], dict]], ...] = (
    ("environment", stage_environment),
    ("cuda_tests", stage_cuda_tests),
    ("step_benchmark", stage_step_benchmark),
    ("loader", stage_loader),
)


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository root; a crash or a timeout is a :class:`StageError`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise StageError(f"{what} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0 and what != "pytest -m cuda":  # failed tests are a result
        raise StageError(f"{what} failed (exit {proc.returncode}): {_tail(proc)}")
    return proc


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_check(args: argparse.Namespace) -> dict:
    """Every stage in order, each timed; the JSON is rewritten after each one."""
    start = time.perf_counter()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]]),
        "device": args.device,
        "tiny": args.tiny,
        "stages": {},
        "seconds": {},
    }
    for name, stage in STAGES:
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            result["stages"][name] = stage(args, result)
        except (StageError, OSError, RuntimeError, ValueError, KeyError) as err:
            result["failed"] = f"stage {name} failed: {' '.join(str(err).split())}"
        result["seconds"][name] = round(time.perf_counter() - t0, 1)
        result["total_seconds"] = round(time.perf_counter() - start, 1)
        result["goals"] = check_goals(result)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        if "failed" in result:
            break
    return result


# ---------------------------------------------------------------------- markdown
def markdown(result: dict) -> str:
    """The dated GPU-check section for ``benchmarks/RESULTS.md``."""
    env = result["stages"].get("environment", {})
    machine = env.get("gpu") or f"CPU ({env.get('cpu_count')} cores)"
    lines = [
        f"## GPU check: {machine}, {result['date'][:10]}",
        "",
        f"Command: `{result['command']}`  ",
        f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; "
        f"bf16 matmul {env.get('matmul_n')}^3: {_rate(env.get('bf16_matmul_flops', 0))}  ",
        f"Seconds: {result.get('total_seconds')} in all; "
        + ", ".join(f"{k} {v}" for k, v in result["seconds"].items())
        + ("  " if "failed" in result else ""),
    ]
    if "failed" in result:
        lines.append(f"**{result['failed']}**")
    lines += _tests_md(result) + _step_md(result) + _loader_md(result) + _goals_md(result)
    return "\n".join(lines) + "\n"


def _rate(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP/s"


def _tests_md(result: dict) -> list[str]:
    t = result["stages"].get("cuda_tests")
    if not t:
        return []
    line = (
        f"CUDA tests ({t['selection']}): {t['passed']} passed, {t['failed']} failed, "
        f"{t['errors']} errors, {t['skipped']} skipped"
    )
    return ["", line + (": " + ", ".join(t["failed_tests"]) if t["failed_tests"] else "")]


def _step_md(result: dict) -> list[str]:
    s = result["stages"].get("step_benchmark")
    if not s:
        return []
    lines = ["", f"Step benchmark, {s['precision']}:", ""]
    lines += [
        "| row | batch | clips/s | of bf16 matmul | peak memory MB |",
        "|---|---|---|---|---|",
    ]
    for name, r in s["rows"].items():
        batch = f"{r['batch']}" + (
            f" (asked {r['batch_requested']})" if r["batch"] != r["batch_requested"] else ""
        )
        lines.append(
            f"| {name} | {batch} | {r['clips_per_s']:.2f} | {r['fraction_of_bf16_matmul']:.0%} "
            f"| {r['peak_memory_mb']:.0f} ({r['memory_kind']}) |"
        )
    return lines


def _loader_md(result: dict) -> list[str]:
    d = result["stages"].get("loader")
    if not d:
        return []
    step = d.get("step_benchmark_clips_per_s")
    beside = f"; the step benchmark's B->B: {step:.2f} clips/s" if step else ""
    return [
        "",
        f"Loader: {d['steps']} steps of batch {d['batch']} on {d['files']} prepared files, "
        f"{d['workers']} workers: data wait {d['data_wait']:.1%}, busy {d['gpu_busy']:.1%}, "
        f"{d['clips_per_s']:.2f} clips/s{beside}",
    ]


def _goals_md(result: dict) -> list[str]:
    goals = result.get("goals") or {}
    if not goals:
        return []
    note = "" if result["device"] == "cuda" else " (not a GPU: for information only)"
    if "goals_note" in result:
        note += f" ({result['goals_note']})"
    lines = ["", f"Goals{note}:", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for g in goals.values():
        lines.append(f"| {g['what']} | {g['value']:.3f} | {g['target']} | "
                     f"{'yes' if g['met'] else 'no'} |")  # fmt: skip
    return lines


def update_results(path: Path, section: str) -> None:
    """Write ``section`` between the GPU-check markers of ``path``, leaving the rest alone."""
    write_section(path, MD_BEGIN, MD_END, section)


# ---------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models and clips (the dry run)")
    p.add_argument("--report-dir", type=Path, help="where the JSON and markdown go "
                   "(default runs/gpu_check)")  # fmt: skip
    p.add_argument("--work", type=Path, help="scratch folder (default runs/gpu_check/work)")
    p.add_argument("--json", type=Path, help="result JSON (default <report-dir>/gpu_check.json)")
    p.add_argument("--write-results", action="store_true",
                   help="also write the section into benchmarks/RESULTS.md (on by default on "
                   "CUDA)")  # fmt: skip
    p.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    p.add_argument("--from-json", type=Path, help="render a saved result instead of running")
    p.add_argument("--workers", type=int, help="loader workers (default min(12, cores))")
    p.add_argument("--loader-steps", type=int, help="loader steps (default 200; tiny 6)")
    p.add_argument("--loader-files", type=int, help="distinct files (default 64; tiny 8)")
    args = p.parse_args(argv)
    if args.from_json is None and args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is visible here; for the dry run use "
                    "--device cpu --tiny")  # fmt: skip
    tiny = args.tiny
    args.report_dir = args.report_dir or ROOT / "runs" / "gpu_check"
    args.work = args.work or args.report_dir / "work"
    args.json = args.json or args.report_dir / "gpu_check.json"
    args.workers = args.workers or (2 if tiny else min(12, os.cpu_count() or 1))
    args.loader_steps = args.loader_steps or (6 if tiny else 200)
    args.loader_files = args.loader_files or (8 if tiny else 64)
    args.log_every = 2 if tiny else 20
    # on a GPU the stages fit 8 minutes together; a tiny run may share a busy CPU
    args.test_timeout, args.step_timeout = (600, 600) if tiny else (210, 240)
    args.loader_timeout = 600 if tiny else 240
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        for folder in (args.report_dir, args.work, args.json.parent):
            folder.mkdir(parents=True, exist_ok=True)
        result = run_check(args)
    section = markdown(result)
    if not args.from_json:
        (args.report_dir / "gpu_check.md").write_text(section)
    if args.write_results or (result["device"].startswith("cuda") and not args.from_json):
        update_results(args.results, section)
    print(section)
    if "failed" in result:
        print(f"gpu_check: {result['failed']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
