"""How much of the demo's ranking column is evaluation noise, and why a row can still move.

    python -m benchmarks.demo_noise --json out.json [--sizes 1600:800 8000:4000] [--inits 10] \
        [--probe-seeds 10] [--init official]
    python -m benchmarks.demo_noise --mvd-runs runs/demo/seed0/mvd runs/demo/seed1/mvd ...
    python -m benchmarks.demo_noise --target-share
    python -m benchmarks.demo_noise --variants demo= official_init=student.init=official \
        --seeds 0 1 3 --json variants.json

1. Probe noise (default): the demo's probe per time step (``maskagain.recipes.demo.probes``:
   features pooled per tubelet step, standardised, AdamW 50 epochs) of encoders whose quality
   does not depend on training, at each probe-set size (training clips : val clips):

   - the untrained student at ``--inits`` random inits (the probe seed follows the init seed,
     as ``maskagain demo --seed`` does): their spread is evaluation noise plus init variance;
   - the shipped teacher, one set of weights, probed with ``--inits`` probe seeds: its spread is
     the probe's own noise.

2. MVD's use of the student (``--mvd-runs``): for finished MVD distillation runs, the MVD loss of
   the final checkpoint on 256 probe clips under one shared tube mask, with the student's tokens
   (a) as they are, (b) shuffled across clips, (c) replaced by their batch mean. (b) and (c)
   keep only what the decoder gets from positions and mask tokens: a small gap to (a) means the
   teacher's features of the hidden tokens are predicted from positions, so the student's
   content gets little gradient.

3. What the token position alone predicts of MVD's target (``--target-share``): the shipped
   teacher's last-block features on the probe's clips, the share of their variance explained by
   the per-position mean, and the SmoothL1 loss (MVD's) of predicting them by that mean and by
   one mean for all tokens, raw (MVD's published target) and layer-normalised (``norm_target``).

4. A demo row under changed settings (``--variants NAME=KEY=VALUE,KEY=VALUE ...``): the row
   (``--row``, default ``mvd``) is pre-trained as ``maskagain demo --seed S`` trains it for each
   of ``--seeds``, with the dotted config overrides applied, and probed per time step (the
   ranking column). ``NAME=`` alone is the demo's own setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from maskagain.models.init import INIT_SCHEMES

if TYPE_CHECKING:
    from maskagain.recipes.demo.probes import ProbeClips
    from maskagain.recipes.demo.settings import DemoSizes


def time_features(encoder, clips) -> tuple:
    """(train, val) features of ``encoder`` pooled per time step on ``clips`` (``ProbeClips``)."""
    from maskagain.engine.probe import extract_pooled_features

    encoder = encoder.float()
    return tuple(
        extract_pooled_features(encoder, clips.batches(split), "cpu", poolings=("time",))["time"]
        for split in ("train", "val")
    )


def fit_top1(features: tuple, seed: int) -> float:
    """Val top-1 of the demo's probe (seed ``seed``) on (train, val) ``features``."""
    from maskagain.engine.probe import train_linear_probe
    from maskagain.recipes.demo.settings import NUM_CLASSES, PROBE

    return train_linear_probe(*features, NUM_CLASSES, **PROBE, seed=seed).val_top1


def probe_top1(encoder, clips, seed: int) -> float:
    """Val top-1 of the demo's probe per time step on ``clips`` (``ProbeClips``)."""
    return fit_top1(time_features(encoder, clips), seed)


def _stats(values: list[float]) -> dict:
    return {
        "values": [round(v, 2) for v in values],
        "mean": round(statistics.mean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "range": round(max(values) - min(values), 2),
    }


def probe_noise(
    sizes: list[tuple[int, int]],
    inits: int,
    init: str = "trunc_normal",
    probe_seeds: int | None = None,
) -> dict:
    """The probe's own spread on one encoder (the shipped teacher, features extracted once, over
    ``probe_seeds`` probe seeds, default ``inits``) and the untrained student's over ``inits``
    random inits (scheme ``init``, as the students' ``init`` config key), at every (train, val)
    clip count of ``sizes``."""
    from maskagain.models.loading import load_encoder
    from maskagain.recipes.demo.probes import ProbeClips, random_encoder
    from maskagain.recipes.demo.settings import DEFAULT_SIZES, STUDENT, TEACHER_WEIGHTS

    out = {}
    teacher = load_encoder(str(TEACHER_WEIGHTS))
    arch = {**STUDENT, "init": init}
    for train, val in sizes:
        t0 = time.time()
        key = f"{train}:{val}"
        demo = dataclasses.replace(DEFAULT_SIZES, probe_train_clips=train, probe_val_clips=val)
        clips = ProbeClips(demo)
        features = time_features(teacher, clips)  # one encoder: only the probe's seed changes
        seeds = [fit_top1(features, s) for s in range(probe_seeds or inits)]
        print(key, "teacher over probe seeds", json.dumps(_stats(seeds)), flush=True)
        untrained = [probe_top1(random_encoder(arch, s), clips, s) for s in range(inits)]
        out[key] = {
            "teacher_over_probe_seeds": _stats(seeds),
            "untrained_student_over_inits": _stats(untrained),
            "seconds": round(time.time() - t0, 1),
        }
        print(key, json.dumps(out[key]), flush=True)
    return out


def mvd_content(run_dirs: list[Path], clips_n: int = 256) -> dict:
    from maskagain.engine.checkpoint import list_checkpoints, load_checkpoint
    from maskagain.losses.config import MVDConfig
    from maskagain.losses.mvd import MVDObjective
    from maskagain.masking import tube_mask
    from maskagain.models.loading import load_encoder
    from maskagain.recipes.demo.probes import ProbeClips
    from maskagain.recipes.demo.settings import DEFAULT_SIZES

    sizes = dataclasses.replace(DEFAULT_SIZES, probe_train_clips=16, probe_val_clips=clips_n)
    video = ProbeClips(sizes).splits["val"][0].float()
    out = {}
    for run in run_dirs:
        ckpt = load_checkpoint(list_checkpoints(run)[-1][1])
        config = ckpt["config"]
        student = load_encoder(run / "student.safetensors").float().eval()
        teacher = load_encoder(config["teacher"]["source"]).float().eval()
        mvd = MVDConfig(**{**config["mvd"], "decoder_drop_path": 0.0})
        objective = MVDObjective.from_models(mvd, student, teacher).eval()
        prefix = "objective."
        state = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
        objective.load_state_dict(state)
        gen = torch.Generator().manual_seed(1)
        one = tube_mask(1, student.cfg.grid, config["mask"]["ratio"], generator=gen)
        mask = one.expand(len(video), -1).contiguous()
        with torch.no_grad():
            t = teacher.forward_features(video)
            s = student.forward_features(video, mask=mask)
            perm = torch.randperm(len(video), generator=gen)
            mean = s.tokens.mean(0, keepdim=True).expand_as(s.tokens)
            losses = {
                "real": objective(s, t)["loss"].item(),
                "shuffled": objective(dataclasses.replace(s, tokens=s.tokens[perm]), t)["loss"],
                "batch_mean": objective(dataclasses.replace(s, tokens=mean), t)["loss"],
            }
        losses = {k: round(float(v), 5) for k, v in losses.items()}
        losses["content_share"] = round(1 - losses["real"] / losses["batch_mean"], 5)
        out[str(run)] = losses
        print(run, json.dumps(losses), flush=True)
    return out


def position_share(features: torch.Tensor) -> dict:
    """What the token position predicts of ``features`` (B, N, D), B clips of N tokens:
    ``share`` of their variance explained by the per-position mean over clips, and the SmoothL1
    loss of predicting them by that mean (``position_floor``) and by one mean over every token
    (``global_floor``)."""
    features = features.double()
    by_position = features.mean(0, keepdim=True).expand_as(features)
    overall = features.mean((0, 1), keepdim=True).expand_as(features)
    total = (features - overall).pow(2).mean()
    explained = (by_position - overall).pow(2).mean()
    smooth_l1 = torch.nn.functional.smooth_l1_loss
    return {
        "share": round(float(explained / total), 4),
        "position_floor": round(float(smooth_l1(by_position, features)), 4),
        "global_floor": round(float(smooth_l1(overall, features)), 4),
    }


def target_share(clips_n: int = 512) -> dict:
    """:func:`position_share` of the shipped teacher's last-block features (MVD's target) on
    ``clips_n`` probe clips, raw and layer-normalised per token."""
    from maskagain.models.loading import load_encoder
    from maskagain.recipes.demo.probes import ProbeClips
    from maskagain.recipes.demo.settings import DEFAULT_SIZES, TEACHER_WEIGHTS

    sizes = dataclasses.replace(DEFAULT_SIZES, probe_train_clips=clips_n, probe_val_clips=16)
    clips = ProbeClips(sizes)
    teacher = load_encoder(str(TEACHER_WEIGHTS)).float().eval()
    with torch.no_grad():
        feats = torch.cat(
            [teacher.forward_features(v).tokens for v, _, _ in clips.batches("train")]
        )
    normed = torch.nn.functional.layer_norm(feats, feats.shape[-1:], eps=1e-6)
    out = {"raw": position_share(feats), "layer_normed": position_share(normed)}
    print("teacher's last-block features:", json.dumps(out), flush=True)
    return out


def parse_variants(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> {NAME: ["KEY=VALUE", ...]} (``NAME=``: no overrides)."""
    out = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"--variants takes NAME=KEY=VALUE[,KEY=VALUE...], got {spec!r}")
        out[name] = [o for o in rest.split(",") if o]
    return out


def row_variants(
    variants: dict[str, list[str]],
    seeds: list[int],
    row: str = "mvd",
    out_dir: Path = Path("runs/demo_variants"),
    sizes: DemoSizes | None = None,
) -> dict:
    """Pre-train the demo's ``row`` for every seed under every variant's dotted overrides and
    probe it per time step: {variant: {"overrides", "time_probe_top1": {seed: top-1}, stats}}."""
    from maskagain.recipes.demo.probes import ProbeClips
    from maskagain.recipes.demo.rows import demo_store, prerender_pretraining
    from maskagain.recipes.demo.settings import DEFAULT_SIZES, TRAINED_ROWS

    if row not in TRAINED_ROWS:
        raise SystemExit(f"--row must be one of {list(TRAINED_ROWS)}, got {row!r}")
    sizes = sizes or DEFAULT_SIZES
    clips = ProbeClips(sizes)
    store = demo_store(sizes, (out_dir / "clips").resolve())
    prerender_pretraining(sizes, False, store)  # rendered once for every run below
    try:
        return _train_variants(variants, seeds, row, out_dir, sizes, clips, str(store.folder))
    finally:
        store.delete()


def _train_variants(
    variants: dict[str, list[str]],
    seeds: list[int],
    row: str,
    out_dir: Path,
    sizes: DemoSizes,
    clips: ProbeClips,
    store: str,
) -> dict:
    """The runs of :func:`row_variants`, reading the training clips from the folder ``store``."""
    from maskagain.models.loading import load_encoder
    from maskagain.recipes.demo.rows import pretrain_student
    from maskagain.recipes.demo.settings import TEACHER_WEIGHTS

    out = {}
    for name, overrides in variants.items():
        top1 = {}
        for seed in seeds:
            _, weights = pretrain_student(
                row,
                sizes,
                out_dir / name / f"seed{seed}",
                str(TEACHER_WEIGHTS),
                seed,
                overrides,
                store=store,
            )
            top1[seed] = round(probe_top1(load_encoder(weights), clips, seed), 2)
            print(f"{row} {name} seed {seed}: time-probe top-1 {top1[seed]}", flush=True)
        stats = _stats(list(top1.values()))
        stats.pop("values")  # they are in time_probe_top1, by seed
        out[name] = {"overrides": overrides, "time_probe_top1": top1, **stats}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1600:800", "8000:4000"])
    parser.add_argument("--inits", type=int, default=10)
    parser.add_argument("--init", choices=INIT_SCHEMES, default="trunc_normal")
    parser.add_argument("--probe-seeds", type=int, default=None)
    parser.add_argument("--mvd-runs", nargs="+", type=Path, default=None)
    parser.add_argument("--target-share", action="store_true")
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--row", default="mvd")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/demo_variants"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as `maskagain demo` (its --threads default)
    if args.mvd_runs:
        result = {"mvd_content": mvd_content(args.mvd_runs)}
    elif args.target_share:
        result = {"target_share": target_share()}
    elif args.variants:
        variants = parse_variants(args.variants)
        result = {"variants": row_variants(variants, args.seeds, args.row, args.out)}
    else:
        sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes]
        result = {"probe_noise": probe_noise(sizes, args.inits, args.init, args.probe_seeds)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
