"""``maskagain predict``: top-k classes of unlabelled videos (files, folders, list files)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maskagain.data.config import DataConfig
    from maskagain.data.shard_dataset import ShardDataset

HELP = "predict the classes of unlabelled videos with a fine-tuned classifier (or its ONNX export)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="SOURCE",
        help="a finetune run directory, a Hugging Face export directory or an .onnx export",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders (walked recursively), list files (.txt/.csv) "
                             "or the index.json of shards (maskagain prepare --shards)")  # fmt: skip
    parser.add_argument("--top-k", type=int, default=5, help="classes per row (default 5)")
    parser.add_argument("--out", metavar="FILE", help=".csv or .jsonl; default: a table on stdout")
    parser.add_argument(
        "--windows",
        action="store_true",
        help="a row per window of one clip span (plus a row per video) instead of whole videos",
    )
    parser.add_argument(
        "--stride", type=float, metavar="S", help="seconds between windows (default: one clip span)"
    )
    parser.add_argument("--clips", type=int, help="temporal clips per video (default: the model's)")
    parser.add_argument("--crops", type=int, help="spatial crops per clip (default: the model's)")
    parser.add_argument(
        "--sampling-rate", type=int, help="frame step within a clip (default: the model's)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward (default 8)")
    parser.add_argument(
        "--workers", type=int, default=2, help="decoding processes (default 2; 0: in-process)"
    )
    parser.add_argument(
        "--device", default="auto", help="torch device for PyTorch models (auto: CUDA if any)"
    )
    parser.add_argument("--ema", action="store_true", help="a run directory's EMA weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from maskagain.config import ConfigError
    from maskagain.data.inputs import collect_videos
    from maskagain.recipes.predict import (
        OUT_FORMATS,
        data_config,
        format_table,
        load_predictor,
        predict,
        write_predictions,
    )

    problem = _check(args, OUT_FORMATS)
    if problem:
        print(f"maskagain predict: error: {problem}", file=sys.stderr)
        return 2
    indexes = [i for i in args.inputs if i.endswith(".json")]
    if indexes and len(args.inputs) > 1:
        print("maskagain predict: error: give one shard index.json alone", file=sys.stderr)
        return 2
    paths = [] if indexes else collect_videos(args.inputs)
    predictor = load_predictor(args.checkpoint, args.ema, args.device)
    try:
        cfg = data_config(predictor.preprocessing, args.workers, test_clips=args.clips,
                          test_crops=args.crops, sampling_rate=args.sampling_rate)  # fmt: skip
    except ConfigError as e:
        raise ConfigError(f"{e} (from --clips/--crops/--sampling-rate or the model)") from None
    dataset = _shard_dataset(indexes[0], cfg) if indexes else None
    if dataset is not None:
        paths = [dataset.path(i) for i in range(dataset.num_videos)]
    views = f"{cfg.test_crops} crops per window" if args.windows else f"{cfg.views_per_video} views"
    count = f"{len(paths)} video{'s' if len(paths) != 1 else ''}"
    print(f"predicting {count} with {predictor.backend}, {views}", file=sys.stderr)
    pred = predict(predictor, paths, cfg, args.top_k, args.windows, args.stride,
                   args.batch_size, not args.no_progress, dataset)  # fmt: skip
    if args.out:
        print(f"wrote {write_predictions(pred, args.out, min(args.top_k, predictor.num_classes))}")
    else:
        print(format_table(pred))
    _summary(pred)
    return 0 if len(pred.failed) < pred.videos else 1


def _shard_dataset(index: str, cfg: DataConfig) -> ShardDataset:
    """The samples of a shard index as a test dataset; ConfigError names a bad index."""
    from maskagain.config import ConfigError
    from maskagain.data.shard_dataset import ShardDataset
    from maskagain.data.shards import ShardIndex

    try:
        return ShardDataset(ShardIndex.load(index), cfg, "test", "eval")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check(args: argparse.Namespace, formats: tuple[str, ...]) -> str | None:
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 0:
        return "--top-k and --batch-size must be >= 1 and --workers >= 0"
    if args.stride is not None and (not args.windows or args.stride <= 0):
        return "--stride takes seconds > 0 and needs --windows"
    if args.out and not args.out.lower().endswith(formats):
        return f"--out {args.out}: choose a file ending in {' or '.join(formats)}"
    return None


def _summary(pred) -> None:
    for path, reason in pred.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    rate = pred.clips / pred.wall_s if pred.wall_s else 0.0
    model_rate = pred.clips / pred.model_s if pred.model_s else 0.0
    print(
        f"{pred.videos - len(pred.failed)} of {pred.videos} videos predicted, "
        f"{len(pred.failed)} skipped (unreadable); {pred.clips} clips in {pred.wall_s:.1f}s: "
        f"{rate:.1f} clips/s (model alone {model_rate:.1f} clips/s)",
        file=sys.stderr,
    )
