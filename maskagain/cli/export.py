"""``maskagain export``: write a checkpoint as a Hugging Face directory, an official ``.pth`` or ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = (
    "export a checkpoint to Hugging Face transformers (--format hf), the official VideoMAE "
    "layout or ONNX (--format onnx)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="run directory, maskagain .safetensors, official .pth or Hugging Face directory",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=("hf", "videomae", "onnx"),
        help="hf: a transformers save_pretrained directory; videomae: an official .pth file; "
        "onnx: an .onnx file (input video float32 (batch, 3, frames, H, W), normalised; "
        "preprocessing and class names in its metadata)",
    )
    parser.add_argument(
        "--encoder-only",
        action="store_true",
        help="onnx: the encoder alone (outputs tokens (batch, N, D) and features (batch, D))",
    )
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="onnx: onnxruntime's fused graph (one Attention node per block, fused norms and "
        "GELU): faster, and only onnxruntime runs it",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8", "int8-products"),
        help="onnx: also write NAME.int8.onnx, onnxruntime's dynamic int8 quantisation: int8 "
        "of the fused graph (attention products in fp32), int8-products of the standard graph "
        "with the attention products in int8 too (faster; 8-bit softmax weights)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output directory (hf), .pth file (videomae) or .onnx file (onnx)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace what --out holds (refused without it)"
    )
    parser.add_argument(
        "--class-names",
        metavar="FILE",
        help="classes.txt (one a line) or class_index.json; default: found with the checkpoint",
    )
    parser.add_argument(
        "--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation mean (hf only)"
    )
    parser.add_argument(
        "--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation std (hf only)"
    )
    parser.add_argument(
        "--img-size", type=int, help="input size, for sources that do not record it (.pth)"
    )
    parser.add_argument(
        "--num-frames", type=int, help="clip length, for sources that do not record it (.pth)"
    )
    parser.add_argument(
        "--num-heads", type=int, help="attention heads, for sources that do not record it (.pth)"
    )


def run(args: argparse.Namespace) -> int:
    from maskagain.checkpoints import CheckpointError
    from maskagain.recipes.export import export_checkpoint, read_class_names

    if _holds_something(Path(args.out)) and not args.overwrite:
        print(
            f"maskagain export: error: {args.out} exists; add --overwrite to replace it, or "
            "give another --out",
            file=sys.stderr,
        )
        return 2
    if (args.mean is None) != (args.std is None):
        print("error: give both --mean and --std, or neither", file=sys.stderr)
        return 2
    if args.format == "videomae" and (args.mean or args.class_names):
        print(
            "note: --mean/--std/--class-names only apply to --format hf; "
            "the official layout stores weights only",
            file=sys.stderr,
        )
    overrides = {
        k: v
        for k, v in (
            ("img_size", args.img_size),
            ("num_frames", args.num_frames),
            ("num_heads", args.num_heads),
        )
        if v is not None
    }
    if args.format != "onnx" and (args.encoder_only or args.quantize or args.optimize):
        print(
            "error: --encoder-only, --optimize and --quantize need --format onnx", file=sys.stderr
        )
        return 2
    if args.format == "onnx":
        return _run_onnx(args, overrides)
    try:
        names = read_class_names(args.class_names) if args.class_names else None
        out = export_checkpoint(
            args.checkpoint, args.out, args.format, names, args.mean, args.std, **overrides
        )
    except (CheckpointError, OSError, TypeError, ValueError) as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: cannot export {args.checkpoint}: {message}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _holds_something(out: Path) -> bool:
    """Whether ``out`` is a file or a folder with something in it (an empty folder is free)."""
    return out.is_file() or (out.is_dir() and any(out.iterdir()))


def _run_onnx(args: argparse.Namespace, overrides: dict) -> int:
    from maskagain.checkpoints import CheckpointError
    from maskagain.recipes.export import export_onnx_checkpoint, read_class_names

    try:
        names = read_class_names(args.class_names) if args.class_names else None
        written = export_onnx_checkpoint(
            args.checkpoint,
            args.out,
            args.encoder_only,
            args.quantize,
            names,
            optimize=args.optimize,
            **overrides,
        )
    except ImportError as e:
        print(
            f"error: ONNX export needs {e.name}: pip install 'maskagain[deploy]'", file=sys.stderr
        )
        return 2
    except (CheckpointError, OSError, TypeError, ValueError) as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: cannot export {args.checkpoint}: {message}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
