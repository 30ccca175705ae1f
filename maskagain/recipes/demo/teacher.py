"""The demo's teacher: the shipped one's card and config, its re-training
(``maskagain demo --retrain-teacher``) and the card written beside re-trained weights."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

from maskagain.config import load_config, load_yaml, to_dict
from maskagain.engine.metrics import read_log
from maskagain.models.loading import load_encoder, save_encoder
from maskagain.recipes.configs import PretrainConfig
from maskagain.recipes.demo.probes import probe_encoders, random_encoder
from maskagain.recipes.demo.settings import (
    DEFAULT_SIZES,
    TEACHER_ARCH,
    TEACHER_CARD,
    TEACHER_WEIGHTS,
    DemoSizes,
)
from maskagain.recipes.pretrain import run as run_pretrain


def teacher_config(out_dir: Path | None = None) -> PretrainConfig:
    """The shipped teacher's training config (``configs/demo/teacher.yaml``, as recorded in the
    teacher's card, so an installed package can re-train it without the repository)."""
    card = json.loads(TEACHER_CARD.read_text()) if TEACHER_CARD.is_file() else {}
    tree = card.get("config")
    if tree is None:
        repo_cfg = Path(__file__).resolve().parents[3] / "configs" / "demo" / "teacher.yaml"
        tree = load_yaml(repo_cfg)
    tree = copy.deepcopy(tree)
    if out_dir is not None:
        tree["out_dir"] = str(out_dir)
    return load_config(PretrainConfig, base=tree)


def retrain_teacher(
    out_dir: Path, resume: str | None = "auto", probe_sizes: DemoSizes | None = None
) -> dict:
    """Re-run the teacher's pre-training (``configs/demo/teacher.yaml``), probe it against a
    random-init encoder of the same size and write ``demo_teacher.safetensors`` (fp16) and
    ``demo_teacher.json`` (config, wall time, probe numbers) into ``out_dir``. Copy both into
    ``maskagain/assets/`` to ship them. Resumable (``resume="auto"``). Returns the card."""
    cfg = teacher_config(out_dir / "run")
    summary = run_pretrain(cfg, resume=resume)
    if not summary.get("completed"):
        raise RuntimeError(f"teacher pre-training did not complete: {summary.get('error')}")
    facts = {
        "completed": True,
        "epochs": summary.get("epoch"),
        "steps": summary.get("step"),
        "clips_seen": summary.get("step", 0) * summary.get("total_batch", 0),
        "wall_seconds": summary.get("wall_s"),
        "final_loss": (summary.get("final") or {}).get("loss"),
    }
    weights = Path(cfg.out_dir) / "teacher.safetensors"
    return write_teacher_card(weights, out_dir, cfg, facts, probe_sizes)


def run_facts(run_dir: Path, step: int, batch: int) -> dict:
    """Epoch, wall time and loss of a (possibly unfinished) pre-training run at ``step``, from
    its ``log.jsonl`` (wall time: first to last logged line up to ``step``, plus one logging
    interval for the steps before the first line)."""
    records = [r for r in read_log(Path(run_dir) / "log.jsonl") if r.get("step", 0) <= step]
    if not records:
        return {"steps": step}
    first, last = records[0], records[-1]
    per_step = (last["time"] - first["time"]) / max(last["step"] - first["step"], 1)
    return {
        "steps": step,
        "epochs": last.get("epoch", 0) + 1 if step == last["step"] else last.get("epoch"),
        "clips_seen": step * batch,
        "wall_seconds": round(last["time"] - first["time"] + per_step * first["step"], 1),
        "final_loss": last.get("loss"),
    }


def write_teacher_card(
    weights: str | Path,
    out_dir: Path,
    cfg: PretrainConfig,
    facts: dict,
    probe_sizes: DemoSizes | None = None,
) -> dict:
    """Half-precision teacher + card (config, epochs, wall time, probe vs random init)."""
    sizes = probe_sizes or DEFAULT_SIZES
    geometry = {"img_size": cfg.model.img_size, "num_frames": cfg.model.num_frames}
    teacher = load_encoder(weights, **geometry)
    encoders = {
        "teacher": teacher,
        "random_init": random_encoder(TEACHER_ARCH, seed=cfg.seed),
        "teacher_single_frame": teacher,
    }
    probes = probe_encoders(encoders, sizes)
    card = {
        "description": "VideoMAE-pre-trained vit_micro (width 128, depth 4) on the synthetic "
        "motion set, 8 frames of 32x32; trained by `maskagain pretrain --config "
        "configs/demo/teacher.yaml`",
        "command": "maskagain pretrain --config configs/demo/teacher.yaml --resume auto",
        "planned_epochs": cfg.schedule.epochs,
        **facts,
        "probe": probes,
        "probe_settings": asdict(sizes),
        "config": to_dict(cfg),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_encoder(teacher.half(), out_dir / "demo_teacher.safetensors", {"card": card})
    (out_dir / "demo_teacher.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def read_card(weights: Path) -> dict:
    """The card beside ``weights`` (``.json``) or in their safetensors metadata; {} if none."""
    card_file = weights.with_suffix(".json")
    if card_file.is_file():
        return json.loads(card_file.read_text())
    try:  # a card stored in the safetensors metadata
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("card", "{}"))
    except Exception:  # noqa: BLE001  any other weights file: no card
        return {}


def card_summary(card: dict) -> dict:
    """The card as ``summary.json`` records it (its training config left out)."""
    return {k: v for k, v in card.items() if k not in ("config",)}


def resolve_teacher(
    teacher: str | Path | None, retrain_into: Path | None, probe_sizes: DemoSizes
) -> tuple[Path, dict]:
    """The demo's teacher: (weights, card). Re-trained into ``retrain_into`` when given (its
    card probed at ``probe_sizes``), else ``teacher``'s weights (None: the shipped ones)."""
    if retrain_into is not None:
        card = retrain_teacher(retrain_into, probe_sizes=probe_sizes)
        return teacher_weights(retrain_into / "demo_teacher.safetensors"), card
    weights = teacher_weights(teacher)
    return weights, read_card(weights)


def teacher_weights(teacher: str | Path | None) -> Path:
    """The teacher's weights file: ``teacher``, or the shipped one when None; one clear error
    when it is missing."""
    path = Path(teacher) if teacher else TEACHER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"no teacher at {path}; run `maskagain demo --retrain-teacher` to train one"
        )
    return path
