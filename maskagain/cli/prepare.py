"""``maskagain prepare``: re-encode a dataset into small, fast-seeking H.264 for training."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "re-encode a video dataset (list files or class folders) for fast training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--list", nargs="+", metavar="LIST", help="VideoMAE list file(s): 'path label' lines"
    )
    src.add_argument("--folder", metavar="ROOT", help="class folders ROOT/[split/]<class>/<video>")
    parser.add_argument("--root", default="", help="prefix of the paths in --list files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--short-side", type=int, default=320, help="short side in pixels, never upscaled (320)"
    )
    parser.add_argument("--keyint", type=int, default=16, help="frames between key frames (16)")
    parser.add_argument(
        "--crf", type=int, default=None, help="x264 quality, lower is better (default 18)"
    )
    parser.add_argument(
        "--no-fast-decode",
        action="store_true",
        help="CABAC and deblocking: smaller files that decode slower",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="processes (default 0: one per CPU core)"
    )
    parser.add_argument(
        "--shards",
        metavar="SIZE",
        help="write tar shards of about SIZE (e.g. 256MB) and an index per split instead of files",
    )


def _error(message: str) -> None:
    print(f"maskagain prepare: error: {message}", file=sys.stderr)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from maskagain.data.prepare import EncodeOptions, prepare_folder, prepare_lists

    if args.crf is None:
        args.crf = EncodeOptions.crf
    if args.short_side < 16 or args.keyint < 1 or not 0 <= args.crf <= 51 or args.workers < 0:
        _error("need --short-side >= 16, --keyint >= 1, --crf in 0..51, --workers >= 0")
        return 2
    opts = EncodeOptions(
        short_side=args.short_side,
        keyint=args.keyint,
        crf=args.crf,
        fast_decode=not args.no_fast_decode,
    )
    if args.folder and not os.path.isdir(args.folder):
        _error(f"folder not found: {args.folder}")
        return 2
    missing = [f for f in args.list or [] if not os.path.isfile(f)]
    if missing:
        _error(f"list file not found: {missing[0]}")
        return 2
    if args.shards:
        return _run_shards(args, opts)
    if args.folder:
        report, lists = prepare_folder(args.folder, args.out, opts, args.workers)
    else:
        report, lists = prepare_lists(args.list, args.root, args.out, opts, args.workers)
    _print_report(report, args.out, "lists")
    ratio = report.bytes_out / report.bytes_in if report.bytes_in else 0.0
    print(f"size: {_mb(report.bytes_in)} before, {_mb(report.bytes_out)} after ({ratio:.2f}x)")
    for path in lists:
        print(f"  list: {path}")
    return 0


def _print_report(report, out: str, left_out_of: str) -> None:
    print(
        f"{report.written} written, {report.skipped} already done, {len(report.failed)} failed "
        f"in {report.seconds:.1f}s"
    )
    for path, reason in report.failed:
        print(f"  failed: {path}: {reason}")
    if report.failed:
        print(f"  (listed in {out.rstrip('/')}/failed.txt; left out of the {left_out_of})")


def _run_shards(args: argparse.Namespace, opts) -> int:
    from maskagain.data.shard_writer import parse_size, prepare_shards_folder, prepare_shards_lists
    from maskagain.data.storage import has_credentials, redact

    try:
        size = parse_size(args.shards)
    except ValueError as e:
        _error(f"--shards: {e}")
        return 2
    if has_credentials(args.out):
        _error("--out holds credentials in its URL; give them through the environment")
        return 2
    if args.folder:
        report, indexes = prepare_shards_folder(args.folder, args.out, size, opts, args.workers)
    else:
        report, indexes = prepare_shards_lists(
            args.list, args.root, args.out, size, opts, args.workers
        )
    _print_report(report, redact(args.out), "shards")
    print(f"shards: {_mb(report.bytes_out)} of prepared video")
    for path in indexes:
        print(f"  index: {redact(path)}")
    return 0
