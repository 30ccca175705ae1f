"""Training-step benchmark: MaskAgain distillation against VideoMAE pre-training and MVD and AMD
distillation.

    python -m benchmarks.step --device cpu --batch 2 --json out.json [--markdown benchmarks/RESULTS.md]

Every row times a full training step (forward, backward, fused AdamW) at the paper's shapes
(16 x 224 x 224, tubelet 2, patch 16, tube mask 90%) in a fresh subprocess, so that its peak RSS
is its own. The trained model runs under bf16 autocast; a distillation teacher is frozen, cast
to bf16 and runs under ``torch.inference_mode``. In the same run the machine's matmul FLOP/s is
measured (bf16 and fp32) at the GEMM shapes of the steps' linear layers, and every row reports
its achieved FLOP/s (analytic FLOPs per clip, see ``benchmarks.flops``, over the median seconds
per clip) as a fraction of the bf16 matmul rate.

Rows: ``maskagain_b_b``, ``maskagain_b_s`` (ViT-B teacher -> ViT-B / ViT-S student, all four
losses), ``videomae_b``, ``videomae_s`` (4-block pixel decoder), ``mvd_b_s`` (ViT-B teacher on
all tokens -> ViT-S student + 2-block feature decoder), ``mvd_coteach_b_s`` (the same plus MVD's
published image teacher: an MAE ViT-B/16 on the first frame of every tubelet, random weights in
bf16, and a second feature decoder), ``amd_b_s`` (ViT-B teacher on a 75% tube
mask -> ViT-S student on a 90% one inside it, projections and 2-block generators on the middle
and last blocks, 4-block pixel decoder), and ``videomae_b_official``: VideoMAE
ViT-B with attention computed as the official VideoMAE code does (the N x N softmax materialised
and kept for backward) instead of fused SDPA, i.e. the VideoMAE step users run today. Same
FLOPs as ``videomae_b``. ``maskagain_g_b``: a teacher of VideoMAE V2 ViT-g/14's geometry (1408
wide, 40 blocks, patch 14; random weights, bf16 under ``inference_mode`` as the recipe runs it,
its clip resized to 196 px so its grid is the student's) into a ViT-B student; its FLOP parts
give the teacher's share of the step. ``--size tiny`` swaps in tiny models and clips for the
test suite.

Memory, two measures per row: ``peak_memory_mb`` is the peak RSS of the row's process on CPU
(it includes the ~0.5 GB torch runtime and what the allocator keeps after frees) or
``torch.cuda.max_memory_allocated`` on GPU; ``allocated_peak_mb`` is the peak of bytes in use,
the CPU analogue of ``max_memory_allocated`` (glibc ``mallinfo2``, sampled every 0.5 ms during
one extra, untimed step; on GPU the same as ``peak_memory_mb``), and
``allocated_between_steps_mb`` what stays in use after that step (weights, AdamW state, frozen
teacher, the batch): the peak minus it is the step's working memory.

On CPU the rows run with freed memory kept for reuse, as training does
(``maskagain.engine.allocator``; ``--malloc default`` for glibc's own settings).
On a CPU shared with other jobs, ``--threads 1 --rounds 2`` gives repeatable numbers: with
several threads an OpenMP region stalls whenever one of its threads is preempted. ``--profile
FILE --only ROW`` writes a torch.profiler table of one step instead of timing.

This module runs the rows and holds the command line; the rows and their workloads are in
``benchmarks._step_rows``, the timing of one row in ``benchmarks._step_timing``, the ratios and
the Markdown section in ``benchmarks._step_report``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks._step_report import markdown_table, ratios, update_markdown
from benchmarks._step_rows import PAPER_BATCH, ROW_NAMES, SIZES
from benchmarks._step_timing import measure_matmul, profile_row, run_row
from maskagain.engine.allocator import keep_freed_memory
from maskagain.engine.precision import resolve_precision


# ---------------------------------------------------------------------- orchestration
def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class RowOutOfMemory(RuntimeError):
    """A row's step did not fit in the device's memory at this batch."""


def run_child(name: str, args: argparse.Namespace, batch: int) -> dict:
    """Run one row in a fresh interpreter so that its peak RSS is its own."""
    cmd = [sys.executable, "-m", "benchmarks.step", "--child", name]
    cmd += ["--size", args.size, "--batch", str(batch), "--device", args.device]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--precision", args.precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--malloc", args.malloc]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_repo_root())
    for line in proc.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    if "OutOfMemoryError" in proc.stderr or "CUDA out of memory" in proc.stderr:
        raise RowOutOfMemory(f"row {name} ran out of device memory at batch {batch}")
    raise RuntimeError(f"row {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def run_fitting(name: str, args: argparse.Namespace) -> dict:
    """The row at ``args.batch``, halved until it fits in device memory (the row's ``batch``
    says where it ran; ``batch_requested`` what was asked)."""
    size, device, batch = SIZES[args.size], torch.device(args.device), args.batch
    while True:
        try:
            if not args.in_process:
                return {**run_child(name, args, batch), "batch_requested": args.batch}
            try:
                row = run_row(name, size, batch, args.steps, args.warmup, device, args.precision)
            except torch.OutOfMemoryError:
                msg = f"row {name} ran out of device memory at batch {batch}"
                raise RowOutOfMemory(msg) from None
            return {**row, "memory_isolated": False, "batch_requested": args.batch}
        except RowOutOfMemory as err:
            if batch == 1:
                raise
            print(f"[bench] {err}; halving to {batch // 2}", file=sys.stderr, flush=True)
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _best_round(rounds: list[dict]) -> dict:
    """The round with the lowest median time; every round's median and peak memory kept."""
    best = dict(min(rounds, key=lambda row: row["seconds_per_clip"]))
    best["rounds_seconds_per_clip"] = [row["seconds_per_clip"] for row in rounds]
    best["peak_memory_mb"] = max(row["peak_memory_mb"] for row in rounds)
    allocated = [row["allocated_peak_mb"] for row in rounds if row.get("allocated_peak_mb")]
    best["allocated_peak_mb"] = max(allocated) if allocated else None
    return best


def run_benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    size = SIZES[args.size]
    names = args.only or list(ROW_NAMES)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.step", *sys.argv[1:]]),
        "machine": machine_info(device),
        "config": {
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "frames": size.frames,
            "img_size": size.img,
            "patch_size": size.patch,
            "tubelet_size": size.tubelet,
            "mask": f"tube {size.mask_ratio}",
            "tokens": size.clip.n_all,
            "visible_tokens": size.clip.n_vis,
            "precision": f"{args.precision} ({args.precision_reason}): autocast (student), "
            "weights + inference_mode (teacher); maskagain_b_b_official: fp32 teacher under "
            "no_grad",
            "optimizer": "AdamW fused, betas (0.9, 0.95), wd 0.05 (official rows: not fused)",
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "malloc": args.malloc,
        },
    }
    runs: dict[str, list[dict]] = {name: [] for name in names}
    matmuls = []
    for r in range(args.rounds):
        for name in names:
            print(f"[bench] round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            runs[name].append(run_fitting(name, args))
        matmuls.append(measure_matmul(size, args.batch, device))
    rows = [_best_round(runs[name]) for name in names]
    # the machine's limit: the best matmul rate seen in this run, measured in this process
    # after every round and in every row's process before its steps (a busy CPU only lowers it)
    seen = [{k: m[k]["flops"] for k in ("bf16", "fp32")} for m in matmuls]
    seen += [row["matmul_flops_in_process"] for rounds in runs.values() for row in rounds]
    result["matmul_flops"] = {k: max(m[k] for m in seen) for k in ("bf16", "fp32")}
    result["matmul_shapes"] = {
        k: max(matmuls, key=lambda m, k=k: m[k]["flops"])[k]["shapes"] for k in ("bf16", "fp32")
    }
    result["matmul_measurements"] = seen
    # the rate of the precision the rows ran in (fp32 runs are not held to an emulated bf16)
    rate = result["matmul_precision"] = "fp32" if args.precision == "fp32" else "bf16"
    for row in rows:
        row["fraction_of_matmul"] = row["achieved_flops"] / result["matmul_flops"][rate]
    result["rows"] = rows
    result["ratios"] = ratios(rows, rate)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    if args.data:
        result["data"] = _data_benchmark()
    return result


def _data_benchmark() -> dict:
    """The data-loader benchmark of ``benchmarks.data`` (decode + transform vs decord)."""
    from benchmarks import data as data_bench

    return data_bench.run_default()


# ---------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.step", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--batch",
        type=int,
        help=f"clips per step (default: 2 on the CPU; on CUDA the paper's {PAPER_BATCH}, halved "
        "per row until it fits; batch 2 on a GPU measures launch overhead)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp16", "fp32"),
        help="autocast of the trained models and weights of the frozen ones (default auto: "
        "bf16 where native, fp32 on CPUs without bf16 instructions)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps per row (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every row (fresh process) this many times, interleaved; keep each row's "
        "fastest round (all rounds' medians are in the JSON) (default 1)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--malloc",
        choices=("kept", "default"),
        default="kept",
        help="CPU: 'kept' applies maskagain.engine.allocator.keep_freed_memory as training "
        "does (freed memory reused, no page faults); 'default' leaves glibc's settings "
        "(default kept)",
    )
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="full or tiny models")
    p.add_argument(
        "--only", action="append", choices=ROW_NAMES, help="run only this row (repeatable)"
    )
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--markdown", type=Path, help="update the step section of this markdown file")
    p.add_argument(
        "--data", action="store_true", help="also run benchmarks.data (loader vs decord)"
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the rows in this process (faster start; peak memory is then cumulative)",
    )
    p.add_argument("--profile", type=Path, help="profile one step of the --only row to this file")
    p.add_argument("--child", choices=ROW_NAMES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.batch or 1) < 1 or args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--batch, --steps and --rounds must be >= 1, --warmup >= 0")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r} is not a device; use cpu or cuda (cuda:N)")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device {args.device!r}: this benchmark runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(
            "--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False)"
        )
    if args.batch is None:
        args.batch = PAPER_BATCH if device.type == "cuda" else 2
    args.precision, args.precision_reason = resolve_precision(args.precision, device)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "kept" and args.device == "cpu":
        keep_freed_memory()
    if args.profile:
        if not args.only or len(args.only) != 1:
            raise SystemExit("--profile needs exactly one --only ROW")
        size, device = SIZES[args.size], torch.device(args.device)
        warmup = max(args.warmup, 1)
        profile_row(args.only[0], size, args.batch, warmup, device, args.profile, args.precision)
        return 0
    if args.child:
        row = run_row(
            args.child,
            SIZES[args.size],
            args.batch,
            args.steps,
            args.warmup,
            torch.device(args.device),
            args.precision,
        )
        print("ROW " + json.dumps(row), flush=True)
        return 0
    result = run_benchmark(args)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    if args.markdown:
        update_markdown(args.markdown, result)
        if "data" in result:
            from benchmarks import data as data_bench

            data_bench.update_markdown(args.markdown, result["data"])
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
