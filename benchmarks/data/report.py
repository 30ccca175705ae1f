"""Data benchmarks: clips/s for VideoMAE 16x4 clips, PyAV (``maskagain.data``) next to decord;
the training loader per core; synthetic-set probes. The command line and the report.

    python -m benchmarks.data --clips 24 [--probe] [--synthetic-speed 3000]
                              [--json out.json] [--markdown benchmarks/RESULTS.md]
    python -m benchmarks.data --pipeline [--quick] [--rounds 6] [--markdown benchmarks/RESULTS.md]

The parts: :mod:`benchmarks.data.decode` (``--clips``), :mod:`benchmarks.data.pipeline`
(``--pipeline``, with :mod:`benchmarks.data.remote` for object storage and shards) and
:mod:`benchmarks.data.probes` (``--probe``, ``--cnn``, ``--synthetic-speed``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

from benchmarks._results import NEW_FILE, replace_section
from benchmarks.data.decode import VIDEOS, bench_video, check_same_frames, write_test_video
from benchmarks.data.pipeline import PIPE_ROWS, PIPE_SOURCES, pipeline_markdown, pipeline_report
from benchmarks.data.probes import cnn_probe_synthetic, probe_synthetic, synthetic_speed
from maskagain.data import DataConfig, build_transform


def markdown(report: dict) -> str:
    lines = [
        "",
        "## Data pipeline",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date']}; 1-minute load average "
        f"{report['load_average_start']:.1f} at the start, {report['load_average_end']:.1f} at "
        "the end (other jobs on the machine lower absolute rates; ratios come from alternating "
        "clips).",
    ]
    if report["rows"]:
        lines += [
            "",
            "### Clip decoding + transform (16x4 clips, PyAV vs decord)",
            "",
            f"Median over {report['clips']} clips; same clips for both, alternating; file opened "
            "per clip; pre-training transform (multi-scale crop to 224, normalise) included.",
            "",
            "| video | threads | PyAV clips/s | decord clips/s | PyAV / decord "
            "| PyAV decode-only | decord decode-only |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in report["rows"]:
            p, d = row["pyav"], row["decord"]
            lines.append(
                f"| {row['video']} | {row['threads']} | {p['clips_per_s']:.2f} "
                f"| {d['clips_per_s']:.2f} | {row['ratio_pyav_over_decord']:.2f} "
                f"| {p['decode_clips_per_s']:.2f} | {d['decode_clips_per_s']:.2f} |"
            )
        diffs = ", ".join(f"{k}: {v:.2f}" for k, v in report["frame_difference"].items())
        lines += [
            "",
            "Threads 0 = the library's automatic choice. Mean |PyAV - decord| pixel difference "
            f"at full size ({diffs}): both decode the same frames.",
        ]
    if report["probes"]:
        lines += [
            "",
            "### Synthetic set: is the label in the motion?",
            "",
            "Linear probes (softmax regression, `benchmarks.data.linear_probe`) on "
            f"{report['probe_setup']}: pixels of one frame vs 4 global-motion numbers per clip "
            "(least squares on brightness constancy: translation x/y, rotation, divergence).",
            "",
            "| distractor | chance | random frame | first frame | middle frame | motion |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["probes"]:
            lines.append(
                f"| {r['distractor']} | {r['chance']:.3f} | {r['single_frame_random']:.3f} "
                f"| {r['single_frame_first']:.3f} | {r['single_frame_middle']:.3f} "
                f"| {r['motion']:.3f} |"
            )
    if report["cnn"]:
        c = report["cnn"]
        lines += [
            "",
            f"A small 3D CNN (3 conv layers, {c['epochs']} epochs on {c['train_clips']} clips of "
            "8 frames, 32x32, through `build_dataset`): val accuracy "
            f"**{c['clip']:.3f}** on clips, **{c['single_frame']:.3f}** on the same clips with "
            "every frame replaced by one of their frames (appearance only).",
        ]
    if report["synthetic_speed"]:
        g = report["synthetic_speed"]
        lines += [
            "",
            f"Writing {g['clips']} synthetic clips ({g['frames']} frames of {g['size']}x{g['size']}, "
            f"H.264): {g['wall_s']:.1f} s wall, {g['cpu_s']:.1f} CPU-s "
            f"({g['clips'] / g['cpu_s']:.0f} clips per CPU-second).",
        ]
    return "\n".join(lines) + "\n"


def collect(
    clips: int = 24,
    threads: tuple[int, ...] = (1, 0),
    videos: tuple[str, ...] = tuple(VIDEOS),
    workdir: str | os.PathLike | None = None,
    probe: bool = False,
    probe_clips: tuple[int, int] = (2000, 800),
    synthetic_clips: int = 0,
    command: str = "python -m benchmarks.data",
    cnn_clips: int = 0,
    pipeline: dict | None = None,
) -> dict:
    """Run the selected parts and return the report (see ``markdown`` for its tables)."""
    torch.set_num_threads(1)
    work = Path(workdir or os.path.join(os.environ.get("TMPDIR", "/tmp"), "maskagain_bench"))
    work.mkdir(parents=True, exist_ok=True)
    report = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "load_average_start": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "clips": clips,
        "rows": [],
        "frame_difference": {},
        "probes": [],
        "probe_setup": f"{probe_clips[0]} train / {probe_clips[1]} val clips of 16 frames, 32x32",
        "synthetic_speed": None,
        "cnn": None,
        "pipeline": None,
    }
    transform = build_transform(DataConfig(), "train", "pretrain")
    for name in videos if clips else ():
        path = work / f"test_{name}.mp4"
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            write_test_video(path, *VIDEOS[name])
        report["frame_difference"][name] = check_same_frames(path)
        for n_threads in threads:
            row = {"video": name, "threads": n_threads}
            row.update(bench_video(path, clips, n_threads, transform, 256))
            report["rows"].append(row)
            print(
                f"{name} threads={n_threads}: pyav {row['pyav']['clips_per_s']:.2f} clips/s, "
                f"decord {row['decord']['clips_per_s']:.2f} clips/s, "
                f"ratio {row['ratio_pyav_over_decord']:.2f}",
                flush=True,
            )
    if probe:
        for distractor in (0.0, 0.2, 0.5):
            report["probes"].append(probe_synthetic(*probe_clips, 32, 16, distractor))
            print(report["probes"][-1], flush=True)
    if cnn_clips:
        torch.set_num_threads(os.cpu_count() or 1)
        report["cnn"] = cnn_probe_synthetic(cnn_clips, 400)
        torch.set_num_threads(1)
        print(report["cnn"], flush=True)
    if synthetic_clips:
        report["synthetic_speed"] = synthetic_speed(synthetic_clips, work)
        print(report["synthetic_speed"], flush=True)
    if pipeline is not None:
        report["pipeline"] = pipeline_report(work, **pipeline)
    report["load_average_end"] = os.getloadavg()[0]
    return report


def run_default() -> dict:
    """The decode benchmark with its defaults (used by ``benchmarks.step --data``)."""
    return collect()


MD_BEGIN, MD_END = "<!-- data-benchmark:begin -->", "<!-- data-benchmark:end -->"
PIPE_BEGIN, PIPE_END = "<!-- data-pipeline:begin -->", "<!-- data-pipeline:end -->"


def update_markdown(path: Path, report: dict) -> None:
    """Write the data section (and the loader section of a ``--pipeline`` run) between their
    markers in ``path``, leaving other sections alone."""
    text = path.read_text() if path.exists() else NEW_FILE
    if report["rows"] or report["probes"] or report["cnn"] or report["synthetic_speed"]:
        text = replace_section(text, MD_BEGIN, MD_END, markdown(report))
    if report.get("pipeline"):
        text = replace_section(text, PIPE_BEGIN, PIPE_END, pipeline_markdown(report), MD_END)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="clips per decode row (0: skip)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--workdir", help="where the test videos are kept (default $TMPDIR)")
    parser.add_argument("--probe", action="store_true", help="synthetic-set linear probes")
    parser.add_argument(
        "--probe-clips", type=int, nargs=2, default=[2000, 800], metavar=("TRAIN", "VAL")
    )
    parser.add_argument("--synthetic-speed", type=int, default=0, metavar="CLIPS")
    parser.add_argument("--cnn", type=int, default=0, metavar="CLIPS", help="3D-CNN probe")
    parser.add_argument(
        "--pipeline", action="store_true", help="full training loader rows (clips/s per core)"
    )
    parser.add_argument("--quick", action="store_true", help="--pipeline smoke test (seconds)")
    parser.add_argument("--rounds", type=int, default=6, help="--pipeline rounds (default 6)")
    parser.add_argument("--batch-clips", type=int, default=8, help="--pipeline clips per batch")
    parser.add_argument(
        "--profile", type=int, default=12, metavar="VIDEOS", help="--pipeline profile (0: off)"
    )
    parser.add_argument(
        "--sources", nargs="+", choices=list(PIPE_SOURCES), help="--pipeline: only these sources"
    )
    parser.add_argument("--rows", nargs="+", choices=list(PIPE_ROWS),
                        help="--pipeline: only these rows (ratios to rows left out: -)")  # fmt: skip
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--markdown", type=Path, help="update the data section of this file")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    pipeline = None
    if args.pipeline:
        quick = dict(rounds=1, clips_per_batch=4, profile_clips=2) if args.quick else {}
        pipeline = dict(
            quick=args.quick,
            rounds=args.rounds,
            clips_per_batch=args.batch_clips,
            profile_clips=args.profile,
            sources=tuple(args.sources or ()),
            rows=tuple(args.rows or ()),
        )
        pipeline.update(quick)
        if not any(a.startswith("--clips") for a in argv):
            args.clips = 0  # --pipeline alone: no decode table
    report = collect(
        args.clips,
        tuple(args.threads),
        tuple(args.videos),
        args.workdir,
        args.probe,
        tuple(args.probe_clips),
        args.synthetic_speed,
        " ".join(["python -m benchmarks.data", *argv]),
        args.cnn,
        pipeline,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        update_markdown(args.markdown, report)
    if report["rows"] or report["probes"] or report["cnn"] or report["synthetic_speed"]:
        print(markdown(report))
    if report["pipeline"]:
        print(pipeline_markdown(report))
    return 0
