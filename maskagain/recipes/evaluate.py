"""Recipe ``maskagain evaluate``: multi-view testing of a classifier (clips x crops, softmax
averaged per video) with top-1/top-5, per-class accuracy, a confusion matrix and per-video
predictions saved as files."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from maskagain.checkpoints import CheckpointError
from maskagain.config import ConfigError, apply_overrides, load_yaml
from maskagain.data import ClipDataset
from maskagain.data.lists import read_class_index
from maskagain.engine.evaluation import describe_test_result, run_test
from maskagain.engine.metrics import MetricWriter
from maskagain.engine.precision import resolve_precision
from maskagain.engine.run import finish_run, start_run, write_summary
from maskagain.engine.trainer import DTYPES
from maskagain.models.loading import locate_source
from maskagain.models.vit import VideoViT
from maskagain.recipes.classifier import load_classifier
from maskagain.recipes.configs import EvaluateConfig
from maskagain.recipes.sources import open_dataset, warn_resolution
from maskagain.recipes.splits import report_eval_split

log = logging.getLogger(__name__)


def config_base(overrides: list[str]) -> dict:
    """Without a config file, the clips are read as the fine-tuning run read them: the ``data``
    section of the run directory that ``checkpoint`` (set by ``overrides``) names, with the class
    names the run saved (its ``classes.txt``); ``data.root=`` overrides it for a moved copy."""
    checkpoint = apply_overrides({}, overrides).get("checkpoint", "")
    run_config = Path(str(checkpoint)) / "config.yaml"
    if not run_config.is_file():
        return {}
    data = (load_yaml(run_config) or {}).get("data") or {}
    classes = run_config.parent / "classes.txt"  # the names the run trained with
    if classes.is_file() and data.get("kind") != "synthetic":
        data = {**data, "class_index": str(classes.resolve())}
    return {"data": data}


def _class_names(path: str, dataset: ClipDataset, num_classes: int) -> list[str] | None:
    if path:
        names = read_class_index(path)
        if len(names) != num_classes:
            raise ConfigError(
                f"config key 'class_names': {path} has {len(names)} names for {num_classes} classes"
            )
        return names
    return dataset.class_names if dataset.num_classes == num_classes else None


def run(cfg: EvaluateConfig, resume: str | None = None) -> dict:
    """Multi-view test of ``cfg.checkpoint``; reports and ``summary.json`` in ``cfg.out_dir``.

    The checkpoint, the data and the class names are checked before the run directory is
    written, so a command that fails on them leaves an earlier run there untouched."""
    t0 = time.time()
    dataset, model, names = _prepare(cfg)
    dist, run_dir = start_run(cfg, cfg.out_dir, 0, cfg.device)
    try:
        model = model.to(dist.device)
        metrics = run_test(
            model, dataset, cfg.batch_size, cfg.data.num_workers, dist, DTYPES[resolve_precision(cfg.precision, dist.device)[0]],
            run_dir, cfg.progress, names,
        )  # fmt: skip
        videos = report_eval_split(
            dataset, cfg.split, cfg.data.root, cfg.checkpoint, run_dir, dist.is_main
        )
        summary = {
            "recipe": "evaluate",
            "checkpoint": str(cfg.checkpoint),
            "videos": videos,
            "use_ema": cfg.use_ema,
            "split": cfg.split,
            "views": f"{cfg.data.test_clips}x{cfg.data.test_crops}" if dataset.views > 1 else "1",
            "world_size": dist.world_size,
            **metrics,
            "wall_s": round(time.time() - t0, 2),
        }
        summary["test_result"] = describe_test_result(metrics, cfg.split, model.num_classes)
        summary["result"] = summary["test_result"]["headline"]
        if dist.is_main:
            writer = MetricWriter(run_dir, True, tensorboard=True)
            writer.write({"step": 0, **metrics}, 0, prefix="test")
            writer.close()
            write_summary(run_dir, summary)
        return summary
    finally:
        finish_run()


def _prepare(cfg: EvaluateConfig) -> tuple[ClipDataset, VideoViT, list[str] | None]:
    """The test set (list files only), the classifier (on the CPU) and its class names; raises
    ConfigError / CheckpointError naming the key to fix, checkpoint first."""
    locate_source(cfg.checkpoint, "checkpoint")
    dataset = open_dataset(cfg.data, cfg.split, "eval")  # list files only: fails fast
    warn_resolution(dataset, cfg.data)
    model = load_classifier(cfg.checkpoint, cfg.use_ema, cfg.overrides)
    if not model.num_classes:
        raise CheckpointError(
            f"{cfg.checkpoint} is an encoder without a classification head; fine-tune it "
            "first (maskagain finetune) or linear-probe it (maskagain probe)"
        )
    _warn_geometry(cfg, model)
    if dataset.num_classes > model.num_classes:
        raise ConfigError(
            f"the {cfg.split} data has {dataset.num_classes} classes but the checkpoint's "
            f"head has {model.num_classes}"
        )
    return dataset, model, _class_names(cfg.class_names, dataset, model.num_classes)


def _warn_geometry(cfg: EvaluateConfig, model: VideoViT) -> None:
    if (cfg.data.num_frames, cfg.data.input_size) != (model.cfg.num_frames, model.cfg.img_size):
        log.warning(
            "testing %d frames at %dpx on a model fine-tuned on %d frames at %dpx "
            "(position table interpolated)",
            cfg.data.num_frames, cfg.data.input_size, model.cfg.num_frames, model.cfg.img_size,
        )  # fmt: skip
