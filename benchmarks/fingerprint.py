"""Same-seed fingerprint of the product's training runs: proof that a change of code kept behaviour.

Runs, on the CPU, through the real CLI and real H.264 files it writes:

- a tiny VideoMAE pre-training (the teacher of the runs below),
- a 40-step distillation of each ``objective.kind`` (maskagain, mvd, amd),
- a 30-step fine-tune of the distilled MaskAgain student, then its multi-view test,
- the demo's ``--quick`` run,

and writes every logged loss term of every step, a SHA-256 of each run's final weights and the
test and demo numbers as JSON. ``--compare OLD.json`` then lists every difference (exact: the same
seed on the same machine and threads must give the same bits)::

    python -m benchmarks.fingerprint --out /tmp/before.json          # on the old commit
    python -m benchmarks.fingerprint --out /tmp/after.json --compare /tmp/before.json

Timing fields (``time``, ``clips_per_s``, ``data_wait``, memory, ETA) are left out. The runs take
about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

KINDS = {"maskagain": "distill.yaml", "mvd": "distill_mvd.yaml", "amd": "distill_amd.yaml"}
DISTILL_STEPS = 40  # 16 training videos at batch 4: 4 steps an epoch
FINETUNE_STEPS = 30  # 3 steps an epoch
_TIMING = (
    "time",
    "wall",
    "clips_per_s",
    "data_wait",
    "mem",
    "eta",
    "rss",
    "elapsed",
    "seconds",
    "per_s",
)


def maskagain(*args: str, cwd: Path) -> None:
    """Run ``python -m maskagain ARGS`` with this checkout first on the path; raise on failure."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "maskagain", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"maskagain {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )


def losses(run_dir: Path) -> list[dict]:
    """Every ``log.jsonl`` record of a run, without its timing fields."""
    records = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.append({k: v for k, v in record.items() if not any(t in k for t in _TIMING)})
    return records


def weights_sha(run_dir: Path) -> dict[str, str]:
    """SHA-256 of the tensors (names, dtypes, shapes and bytes; not the metadata, which holds
    paths and times) of each ``*.safetensors`` file at the top of a run directory."""
    from safetensors.numpy import load_file

    shas = {}
    for path in sorted(run_dir.glob("*.safetensors")):
        digest = hashlib.sha256()
        for name, array in sorted(load_file(path).items()):
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
        shas[path.name] = digest.hexdigest()
    return shas


def numbers(value):
    """The numeric leaves of a summary (strings that are paths or times are dropped)."""
    if isinstance(value, dict):
        kept = {k: numbers(v) for k, v in value.items() if not any(t in k for t in _TIMING)}
        return {k: v for k, v in kept.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def run_all(work: Path, only: list[str]) -> dict:
    """Run the fingerprint jobs under ``work``; returns the fingerprint."""
    out: dict = {}
    videos = work / "videos"
    data = [
        "data.kind=list",
        f"data.root={videos}",
        f"data.train_list={videos / 'train.txt'}",
        f"data.val_list={videos / 'val.txt'}",
        "data.num_workers=0",
    ]
    needs_runs = any(k in only for k in ("distill", "finetune"))
    if needs_runs:
        maskagain("make-synthetic", "--out", str(videos), "--train", "16", "--val", "8",
                  "--size", "32", "--frames", "8", "--classes", "4", cwd=work)  # fmt: skip
        pre = work / "pretrain"
        maskagain("pretrain", "--config", "configs/tiny/pretrain.yaml", f"out_dir={pre}",
                  "schedule.epochs=5", *data, cwd=_configs_parent())  # fmt: skip
        out["pretrain"] = {"log": losses(pre), "weights": weights_sha(pre)}
    if "distill" in only or "finetune" in only:
        for kind, config in KINDS.items():
            if kind != "maskagain" and "distill" not in only:
                continue
            run = work / f"distill_{kind}"
            maskagain("distill", "--config", f"configs/tiny/{config}", f"out_dir={run}",
                      f"teacher.source={pre}", f"schedule.epochs={DISTILL_STEPS // 4}", *data,
                      cwd=_configs_parent())  # fmt: skip
            out[f"distill_{kind}"] = {"log": losses(run), "weights": weights_sha(run)}
    if "finetune" in only:
        run = work / "finetune"
        maskagain("finetune", "--config", "configs/tiny/finetune.yaml", f"out_dir={run}",
                  f"init.source={work / 'distill_maskagain'}",
                  f"schedule.epochs={FINETUNE_STEPS // 3}", "engine.max_steps_per_epoch=3", *data, cwd=_configs_parent())  # fmt: skip
        summary = json.loads((run / "summary.json").read_text())
        out["finetune"] = {
            "log": losses(run),
            "weights": weights_sha(run),
            "summary": numbers(summary),
        }
    if "demo" in only:
        demo = work / "demo"
        maskagain("demo", "--quick", "--out", str(demo), cwd=work)
        summary = json.loads((demo / "summary.json").read_text())
        out["demo"] = {
            "results": numbers(summary.get("results")),
            "metrics": numbers(summary.get("metrics")),
        }
    return out


def _configs_parent() -> Path:
    """The folder whose ``configs/`` holds the shipped configs (the repository root)."""
    return Path(__file__).resolve().parents[1]


def differences(old, new, path: str = "") -> list[str]:
    """Every place where two fingerprints differ, as ``path: old -> new`` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                lines.append(f"{path}/{key}: only in {'new' if key in new else 'old'}")
            else:
                lines += differences(old[key], new[key], f"{path}/{key}")
        return lines
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} entries -> {len(new)}"]
        return [
            line
            for i, (a, b) in enumerate(zip(old, new))
            for line in differences(a, b, f"{path}[{i}]")
        ]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="fingerprint JSON to write")
    parser.add_argument("--compare", help="an earlier fingerprint: list every difference")
    parser.add_argument("--only", nargs="+", default=["distill", "finetune", "demo"],
                        choices=["distill", "finetune", "demo"], help="which jobs to run")  # fmt: skip
    parser.add_argument("--work", help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maskagain-fp-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_all(work, args.only)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}: {', '.join(result)}")
    if not args.compare:
        return 0
    old = json.loads(Path(args.compare).read_text())
    old = {k: v for k, v in old.items() if k in result}
    diff = differences(old, result)
    for line in diff[:50]:
        print(line)
    print(f"{len(diff)} differences" if diff else "identical: every loss, weight and number")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
