"""Say what a checkpoint is: format, family, architecture, input size, parameters, head,
provenance.

The family (VideoMAE v1, VideoMAE V2, V-JEPA 2, or this project's own sizes) comes from the
format and the table in :mod:`maskagain.models.families`; VideoMAE v1 and V2 share a key layout,
so a V2 file that records no V2 arguments and has v1's geometry reads as VideoMAE v1.

:func:`inspect_checkpoint` reads any source :func:`~maskagain.models.loading.read_checkpoint`
understands, loads it strictly into the architecture it implies (so a report is only given for a
checkpoint that loads), and returns a JSON-able report; :func:`format_report` renders it for
people.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from maskagain.checkpoints import CheckpointError
from maskagain.engine.metrics import read_log
from maskagain.models.export import hf_layout, load_checked, official_pooling_matches
from maskagain.models.families import (
    LAYOUT_VIDEOMAE,
    LAYOUT_VJEPA2,
    VIDEOMAE_V2,
    VJEPA2,
    heads_from_args,
    identify,
)
from maskagain.models.loading import RUN_DIR_WEIGHTS
from maskagain.models.registry import ARCHITECTURES
from maskagain.models.vit import ModelConfig
from maskagain.models.vjepa2 import VJEPA2Encoder
from maskagain.recipes.export import resolve_export_metadata, training_config, weights_dir

log = logging.getLogger(__name__)

RUN_LOG = "log.jsonl"  # the engine's metrics log in a run directory
RUN_SUMMARY = "summary.json"  # the engine's final metrics and run facts
_RECORDED_INPUT = ("maskagain", "hf", "vjepa2-hf")  # formats that store the input size


def inspect_checkpoint(source: str | Path, **overrides) -> dict:
    """Report on ``source``; ``overrides`` are ModelConfig fields the weights cannot tell
    (as for ``load_encoder``). The checkpoint is loaded strictly, so an unreadable or
    inconsistent file raises :class:`CheckpointError` with the loader's message."""
    model, fmt, info = load_checked(source, **overrides)
    cfg = model.cfg
    sd = model.state_dict()
    meta = resolve_export_metadata(source, info, cfg)
    report = {
        "source": str(source),
        "weights": str(_weights_file(source)),
        "format": fmt,
        "family": encoder_family(model, fmt),
        "architecture": {
            **_architecture(cfg, fmt, info),
            "positions": "rotary" if isinstance(model, VJEPA2Encoder) else "sine-cosine table",
        },
        "input": {
            "num_frames": cfg.num_frames,
            "img_size": cfg.img_size,
            "tokens": cfg.grid[0] * cfg.grid[1] * cfg.grid[2],
            "recorded": fmt in _RECORDED_INPUT or "img_size" in overrides,
        },
        "parameters": sum(v.numel() for v in sd.values()),
        "dtype": str(next(iter(sd.values())).dtype).removeprefix("torch."),
        "head": _head(cfg, meta),
        "normalization": {"mean": list(meta.mean), "std": list(meta.std), "from": meta.norm_source},
        "export": _export_targets(model),
    }
    report.update(_provenance(source, fmt, info))
    return report


def encoder_family(model, fmt: str) -> dict:
    """``{"family": "VideoMAE V2", "name": "videomae2_giant" | "custom"}`` for a loaded model."""
    cfg = model.cfg
    vjepa = isinstance(model, VJEPA2Encoder)
    hidden = model.blocks[0].mlp.fc1.out_features if model.depth else 4 * cfg.embed_dim
    layout = LAYOUT_VJEPA2 if vjepa else LAYOUT_VIDEOMAE
    found = identify(cfg.embed_dim, cfg.depth, cfg.num_heads, hidden, cfg.patch_size, layout)
    if fmt.startswith("videomae2"):
        found = [f for f in found if f.family == VIDEOMAE_V2]
        family = VIDEOMAE_V2
    elif vjepa:
        family = VJEPA2
    else:
        family = found[0].family if found else "custom (VideoMAE layout)"
    return {"family": family, "name": found[0].name if found else "custom"}


def _architecture(cfg: ModelConfig, fmt: str, info: dict) -> dict:
    names = [
        n
        for n, a in ARCHITECTURES.items()
        if (a["embed_dim"], a["depth"], a["num_heads"]) == (cfg.embed_dim, cfg.depth, cfg.num_heads)
    ]
    return {
        "name": names[0] if names else "custom",
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "heads_recorded": fmt in _RECORDED_INPUT
        or heads_from_args(info.get("args", {}), cfg.embed_dim)[0] is not None,
        "mlp_ratio": cfg.mlp_ratio,
        "patch_size": cfg.patch_size,
        "tubelet_size": cfg.tubelet_size,
        "in_chans": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias,
        "layer_scale": cfg.init_values > 0,
        "final_norm": cfg.final_norm,
        "fc_norm": cfg.fc_norm,
        "pooling": cfg.pooling,
        "norm_eps": cfg.norm_eps,
    }


def _head(cfg: ModelConfig, meta) -> dict | None:
    if not cfg.num_classes:
        return None
    return {
        "num_classes": cfg.num_classes,
        "class_names": meta.class_names,
        "class_names_from": meta.class_source,
    }


def _export_targets(model) -> dict:
    cfg = model.cfg
    if isinstance(model, VJEPA2Encoder):
        reason = "not possible: V-JEPA 2 encoders (rotary positions) have no VideoMAE twin"
        return {"hf": reason, "videomae": reason}
    try:
        layout = hf_layout(cfg)
        hf = f"{layout.architecture} (use_mean_pooling={layout.use_mean_pooling})"
    except CheckpointError as e:
        hf = f"not possible: {e}"
    if not cfg.num_classes:
        videomae = "pre-training layout (encoder.*)"
    elif official_pooling_matches(cfg):
        videomae = "fine-tuning layout"
    else:
        videomae = "fine-tuning layout (official code would pool differently)"
    return {"hf": hf, "videomae": videomae}


def _provenance(source, fmt: str, info: dict) -> dict:
    """Training config and metrics: only our checkpoints carry them."""
    if fmt != "maskagain":
        return {}
    run_dir = weights_dir(source)
    out: dict = {"train_config": training_config(run_dir, info) or None}
    metrics = info.get("metrics")
    summary = _read_json(run_dir / RUN_SUMMARY)
    if summary is not None:
        out["summary"] = summary
        if metrics is None and isinstance(summary.get("final"), dict):
            metrics = summary["final"]
    if metrics is None and (run_dir / RUN_LOG).is_file():
        metrics = _last_logged(run_dir / RUN_LOG)
    out["metrics"] = metrics
    tests = test_results(run_dir, summary)
    if tests:
        out["test"] = tests
    skip = {"format", "model_config", "train_config", "metrics", "class_names", "id2label"}
    skip |= {"mean", "std"}
    extra = {k: v for k, v in info.items() if k not in skip}
    if extra:
        out["metadata"] = extra
    return out


def test_results(run_dir: Path, summary: dict | None) -> list[str]:
    """Every test of the run: its own final test and each ``evaluate*/`` run beside it, as
    headlines naming the split, its number of videos and chance."""
    found = []
    if summary and isinstance(summary.get("test_result"), dict):
        found.append(_at_chance(summary["test_result"]) + " (after training)")
    for folder in sorted(run_dir.glob("evaluate*/")):
        result = (_read_json(folder / RUN_SUMMARY) or {}).get("test_result")
        if isinstance(result, dict):
            found.append(_at_chance(result) + f" (maskagain evaluate, {folder.name}/)")
    return found


def _at_chance(result: dict) -> str:
    return result["headline"] + (": within noise of chance" if result.get("at_chance") else "")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s", path)
        return None
    return content if isinstance(content, dict) else None


def _last_logged(path: Path) -> dict | None:
    records = read_log(path)
    return {"last_logged": records[-1]} if records else None


def _weights_file(source) -> Path:
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        for name in RUN_DIR_WEIGHTS:
            if (path / name).is_file():
                return path / name
    return path


# ----------------------------------------------------------------------------- rendering
def format_report(report: dict) -> str:
    """Human-readable rendering of :func:`inspect_checkpoint`'s report."""
    a, i = report["architecture"], report["input"]
    heads = "" if a["heads_recorded"] else " (inferred: not stored in this format)"
    size = "" if i["recorded"] else " (not stored in this format: the default, pass overrides)"
    fam = report["family"]
    positions = "rotary (any size the patch divides)" if a["positions"] == "rotary" else ""
    lines = [
        f"source:        {report['source']}",
        f"weights:       {report['weights']}",
        f"format:        {report['format']}",
        f"family:        {fam['family']}"
        + (f" ({fam['name']})" if fam["name"] != "custom" else ""),
        f"architecture:  {a['name']}: width {a['embed_dim']}, {a['depth']} blocks, "
        f"{a['num_heads']} heads{heads}, mlp ratio {a['mlp_ratio']:g}",
        f"               patch {a['patch_size']}, tubelet {a['tubelet_size']}, "
        f"{a['in_chans']} channels, qkv bias {a['qkv_bias']}, layer scale {a['layer_scale']}",
        f"               final norm {a['final_norm']}, fc_norm {a['fc_norm']}, "
        f"pooling {a['pooling']}, norm eps {a['norm_eps']:g}",
        f"input:         {i['num_frames']} frames x {i['img_size']}x{i['img_size']} "
        f"-> {i['tokens']} tokens{size}" + (f", positions {positions}" if positions else ""),
        f"parameters:    {report['parameters']:,} ({report['dtype']})",
        f"head:          {_head_line(report['head'])}",
        f"normalisation: mean {_floats(report['normalization']['mean'])}, "
        f"std {_floats(report['normalization']['std'])} "
        f"(from {report['normalization']['from']})",
        f"export:        hf: {report['export']['hf']}",
        f"               videomae: {report['export']['videomae']}",
    ]
    for line in report.get("test", []):
        lines.append(f"{'test:':<15}{line}")
    for key in ("train_config", "metrics", "metadata"):
        if key in report:
            lines.append(f"{key + ':':<15}{_compact(report[key])}")
    return "\n".join(lines)


def _head_line(head: dict | None) -> str:
    if head is None:
        return "none (encoder)"
    names = head["class_names"]
    if not names:
        return f"{head['num_classes']} classes (no class names found)"
    shown = ", ".join(names[:5]) + (f", ... (+{len(names) - 5})" if len(names) > 5 else "")
    return f"{head['num_classes']} classes: {shown} (from {head['class_names_from']})"


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _compact(value) -> str:
    if value is None:
        return "none"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 400 else text[:397] + "..."
