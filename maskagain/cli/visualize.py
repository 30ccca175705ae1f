"""``maskagain visualize``: the sampled frames, the tube mask and the teacher's selections."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "draw an encoder's MAGlobal / MALocal / MAHint selections on a tube-masked clip of a video"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder",
        metavar="SOURCE",
        help="any encoder load_encoder reads (run dir, safetensors, official .pth, HF dir); "
        "default: the shipped demo teacher",
    )
    parser.add_argument(
        "--video",
        metavar="FILE",
        help="video file; default: a clip of the synthetic set (see --synthetic-class)",
    )
    parser.add_argument(
        "--out",
        metavar="FIG.png",
        help="output PNG; default: selections.png in the encoder's run directory (beside its "
        "weights), or in the working directory for the shipped teacher or a downloaded encoder",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--sampling-rate", type=int, default=1, help="take every N-th frame of the video"
    )
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="tube mask ratio")
    parser.add_argument("--k-global", type=int, default=8, help="MAGlobal top-k keys")
    parser.add_argument("--k-local", type=int, default=2, help="MALocal top-k keys per frame")
    parser.add_argument("--k-hint", type=int, default=8, help="MAHint top-k tokens")
    parser.add_argument(
        "--layer", type=int, default=-1, help="block whose attention is shown (default last)"
    )
    parser.add_argument(
        "--query",
        type=int,
        help="query token (index among the visible tokens); default: the most active one",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tube mask")
    parser.add_argument(
        "--synthetic-class", type=int, default=0, help="class of the synthetic clip (no --video)"
    )


def run(args: argparse.Namespace) -> int:
    if args.video and not Path(args.video).is_file():
        from maskagain.models.loading import did_you_mean

        print(
            f"maskagain visualize: error: --video {args.video} does not exist (file not found)"
            f"{did_you_mean(Path(args.video))}",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out) if args.out else default_out(args.encoder)
    if out.exists() and not args.overwrite:
        print(
            f"maskagain visualize: error: {out} exists; add --overwrite to replace it, or give "
            "--out",
            file=sys.stderr,
        )
        return 2
    from maskagain.models.loading import build_from_checkpoint
    from maskagain.visualize import read_video_clip, visualize

    if args.encoder:
        source, shown = args.encoder, args.encoder
    else:
        from maskagain.recipes.demo.settings import TEACHER_WEIGHTS

        source, shown = TEACHER_WEIGHTS, "the shipped demo teacher"
    encoder, fmt, _ = build_from_checkpoint(source)
    cfg = encoder.cfg
    labels = None
    if args.video:
        try:
            clip = read_video_clip(args.video, cfg.num_frames, cfg.img_size, args.sampling_rate)
        except (OSError, ValueError, RuntimeError) as err:  # PyAV and decode errors
            message = " ".join(str(err).split())
            print(
                f"maskagain visualize: error: cannot read {args.video}: {message}", file=sys.stderr
            )
            return 2
        frames, labels, name = clip.frames, clip.labels(), args.video
    else:
        from maskagain.data import SyntheticSpec, make_clip

        spec = SyntheticSpec(cfg.img_size, cfg.num_frames, 8)
        frames, label = make_clip(spec, 0, "test", args.synthetic_class % 8)
        name = f"synthetic test clip ({spec.class_names[label]})"
    path = visualize(
        encoder,
        frames,
        out,
        title=f"{name}: cyan = query token, red = selected\nencoder: {shown} "
        f"({encoder_title(encoder, fmt)})",
        frame_labels=labels,
        mask_ratio=args.mask_ratio,
        k_global=args.k_global,
        k_local=args.k_local,
        k_hint=args.k_hint,
        layer=args.layer,
        query=args.query,
        seed=args.seed,
    )
    print(path)
    return 0


def default_out(encoder: str | None) -> Path:
    """``selections.png`` beside the encoder: in its run directory, or the folder of its weights
    file; in the working directory for the shipped teacher or a hub id."""
    path = Path(encoder).expanduser() if encoder else None
    if path is None or not path.exists():
        return Path("selections.png")
    return (path if path.is_dir() else path.parent) / "selections.png"


def encoder_title(encoder, fmt: str) -> str:
    """``VideoMAE v1 videomae_small, 384 x 12, 6 heads, patch 16, tubelet 2, 16 x 224 px``."""
    from maskagain.recipes.inspect import encoder_family

    family = encoder_family(encoder, fmt)
    name = "" if family["name"] == "custom" else f" {family['name']}"
    c = encoder.cfg
    return (
        f"{family['family']}{name}, {c.embed_dim} x {c.depth}, {c.num_heads} heads, "
        f"patch {c.patch_size}, tubelet {c.tubelet_size}, {c.num_frames} x {c.img_size} px"
    )
