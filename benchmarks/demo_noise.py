"""How much of the demo's ranking column is evaluation noise, and why a row can still move.

    python -m benchmarks.demo_noise --json out.json [--sizes 1600:800 8000:4000] [--inits 10]
    python -m benchmarks.demo_noise --mvd-runs runs/demo/seed0/mvd runs/demo/seed1/mvd ...

1. Probe noise (default): the demo's probe per time step (``maskagain.recipes.demo``: features
   pooled per tubelet step, standardised, AdamW 50 epochs) of encoders whose quality does not
   depend on training, at each probe-set size (training clips : val clips):

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch


def probe_top1(encoder, clips, seed: int) -> float:
    """Val top-1 of the demo's probe per time step on ``clips`` (``ProbeClips``)."""
    from maskagain.engine.probe import extract_pooled_features, train_linear_probe
    from maskagain.recipes.demo import NUM_CLASSES, PROBE

    encoder = encoder.float()
    train, val = (
        extract_pooled_features(encoder, clips.batches(split), "cpu", poolings=("time",))["time"]
        for split in ("train", "val")
    )
    return train_linear_probe(train, val, NUM_CLASSES, **PROBE, seed=seed).val_top1


def _stats(values: list[float]) -> dict:
    return {
        "values": [round(v, 2) for v in values],
        "mean": round(statistics.mean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "range": round(max(values) - min(values), 2),
    }


def probe_noise(sizes: list[tuple[int, int]], inits: int) -> dict:
    from maskagain.models.loading import load_encoder
    from maskagain.recipes.demo import (
        DEFAULT_SIZES,
        STUDENT,
        TEACHER_WEIGHTS,
        ProbeClips,
        random_encoder,
    )

    out = {}
    teacher = load_encoder(str(TEACHER_WEIGHTS))
    for train, val in sizes:
        t0 = time.time()
        demo = dataclasses.replace(DEFAULT_SIZES, probe_train_clips=train, probe_val_clips=val)
        clips = ProbeClips(demo)
        untrained = [probe_top1(random_encoder(STUDENT, s), clips, s) for s in range(inits)]
        probe_seeds = [probe_top1(teacher, clips, s) for s in range(inits)]
        key = f"{train}:{val}"
        out[key] = {
            "untrained_student_over_inits": _stats(untrained),
            "teacher_over_probe_seeds": _stats(probe_seeds),
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
    from maskagain.recipes.demo import DEFAULT_SIZES, ProbeClips

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1600:800", "8000:4000"])
    parser.add_argument("--inits", type=int, default=10)
    parser.add_argument("--mvd-runs", nargs="+", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if args.mvd_runs:
        result = {"mvd_content": mvd_content(args.mvd_runs)}
    else:
        sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes]
        result = {"probe_noise": probe_noise(sizes, args.inits)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
