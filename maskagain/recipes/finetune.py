"""Recipe ``maskagain finetune``: a classifier trained on labelled clips, validated, tested
(multi-view) and exported.

- :func:`~maskagain.recipes.classifier.build_classifier`: a ``VideoViT`` from scratch or from
  any checkpoint ``load_encoder`` reads, with drop path, head dropout and a fresh head.
- :class:`FinetuneStep`: mixup / cutmix + label smoothing, soft-target cross-entropy.
- :func:`build_finetune_trainer`: data, classifier, mixup and validation, assembled by
  :func:`~maskagain.recipes.training.build_trainer` with layer-decayed AdamW.
- the multi-view test (:func:`~maskagain.engine.evaluation.run_test`) when training ends.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from maskagain.config import ConfigError
from maskagain.data import BadFileTracker, ClipDataset, MaskCollator
from maskagain.data.lists import write_class_index
from maskagain.engine.distributed import DistInfo, unwrap
from maskagain.engine.evaluation import Validator, describe_test_result, run_test
from maskagain.engine.mixup import VideoMixup, smooth_one_hot, soft_target_cross_entropy
from maskagain.engine.run import (
    count_parameters,
    finish_run,
    fit_and_summarize,
    resolve_resume,
    start_run,
    write_summary,
)
from maskagain.engine.trainer import Trainer
from maskagain.models.loading import save_encoder
from maskagain.models.vit import VideoViT
from maskagain.recipes.classifier import build_classifier, resolve_init_architecture
from maskagain.recipes.configs import FinetuneConfig, MixupSpec
from maskagain.recipes.sources import open_dataset, warn_resolution
from maskagain.recipes.splits import describe_splits, write_splits
from maskagain.recipes.training import build_trainer

log = logging.getLogger(__name__)


class FinetuneStep:
    """``step_fn`` of the trainer: mixed clips -> logits -> soft-target cross-entropy.

    A batch holds ``video`` (B, C, T, H, W) and ``label`` (B,). Without mixup the targets are
    the smoothed one-hot labels.
    """

    def __init__(self, num_classes: int, mixup: VideoMixup | None, label_smoothing: float) -> None:
        self.num_classes = num_classes
        self.mixup = mixup
        self.label_smoothing = label_smoothing

    def __call__(self, module: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        video, label = batch["video"], batch["label"]
        if self.mixup is not None:
            video, target = self.mixup(video, label)
        else:
            target = smooth_one_hot(label, self.num_classes, self.label_smoothing)
        logits = module(video)  # (B, K)
        return {"loss": soft_target_cross_entropy(logits, target)}


def resolve_num_classes(configured: int | None, dataset: ClipDataset) -> int:
    """The head size: the configured one (checked against the data) or the dataset's."""
    if configured is None:
        return dataset.num_classes
    if dataset.num_classes > configured:
        raise ConfigError(
            f"config key 'head.num_classes'={configured} but the training data has "
            f"{dataset.num_classes} classes; raise it or leave it null"
        )
    return configured


def build_finetune_model(cfg: FinetuneConfig, num_classes: int) -> VideoViT:
    """The classifier of ``cfg``: scratch or ``cfg.init.source``, with a fresh head."""
    return build_classifier(
        cfg.model.model_config("model"),
        num_classes,
        source=cfg.init.source,
        head_dropout=cfg.head.dropout,
        fc_norm=cfg.head.fc_norm,
        loader_overrides=cfg.init.overrides,
    )


def build_mixup(spec: MixupSpec, num_classes: int, seed: int) -> VideoMixup | None:
    """The batch mixer of ``spec``, or None when mixup and cutmix are both off."""
    if spec.prob <= 0 or (spec.mixup_alpha <= 0 and spec.cutmix_alpha <= 0):
        return None
    return VideoMixup(
        num_classes, spec.mixup_alpha, spec.cutmix_alpha, spec.prob, spec.switch_prob,
        spec.label_smoothing, seed=seed,
    )  # fmt: skip


def build_finetune_trainer(
    cfg: FinetuneConfig, dist: DistInfo, run_dir: Path
) -> tuple[Trainer, BadFileTracker, dict, ClipDataset | None]:
    """Data, classifier, mixup, validation and the trainer (layer-decayed AdamW); plus run facts
    and the test set (None when ``val.final_test`` is off)."""
    dataset = open_dataset(cfg.data, "train", "finetune")  # one-line error if empty/missing
    warn_resolution(dataset, cfg.data)  # once a run: the other splits share the source
    # the val and test lists too, before any model: an empty one fails now, not after training
    val_set = open_dataset(cfg.data, "val", "finetune") if cfg.val.every_epochs else None
    test_set = open_dataset(cfg.data, "test", "eval") if cfg.val.final_test else None
    num_classes = resolve_num_classes(cfg.head.num_classes, dataset)
    splits = record_splits(cfg, dist, run_dir, dataset, val_set, test_set)
    class_names = record_class_names(dist, run_dir, dataset.class_names, num_classes)
    model = build_finetune_model(cfg, num_classes).to(dist.device)
    mixup = build_mixup(cfg.mixup, num_classes, seed=cfg.seed * 1000 + dist.rank)
    validator = None
    if val_set is not None:
        batch = cfg.val.batch_size or cfg.engine.batch_size
        validator = Validator(
            model, num_classes, dist, val_set, batch, cfg.data.num_workers,
            cfg.val.every_epochs, cfg.engine.progress,
        )  # fmt: skip
    trainer, bad_files = build_trainer(
        cfg, dist, run_dir, model=model, dataset=dataset, collate=MaskCollator(), name="finetune",
        step_fn=FinetuneStep(num_classes, mixup, cfg.mixup.label_smoothing),
        layer_decay=cfg.layer_decay, on_epoch_end=validator,
        extra_state={"mixup": mixup} if mixup is not None else None,
    )  # fmt: skip
    facts = {
        "total_batch": trainer.clips_per_step,
        "peak_lr": trainer.schedule.peak_lr,
        "num_classes": num_classes,
        "parameters": count_parameters(model),
        "init": cfg.init.source or "scratch",
        "model": {"name": cfg.model.name, **{k: getattr(model.cfg, k) for k in GEOMETRY}},
        "class_names": class_names,
        "splits": splits,
    }
    return trainer, bad_files, facts, test_set


# model fields summary.json reports (the resolved geometry)
GEOMETRY = (
    "embed_dim",
    "depth",
    "num_heads",
    "patch_size",
    "tubelet_size",
    "num_frames",
    "img_size",
)
CLASSES_FILE = "classes.txt"


def record_splits(
    cfg: FinetuneConfig,
    dist: DistInfo,
    run_dir: Path,
    train: ClipDataset,
    val: ClipDataset | None,
    test: ClipDataset | None,
) -> dict:
    """Which videos each split uses: counts, reuse and disjointness for ``summary.json``, every
    path in ``run_dir/splits.json`` (rank 0). The val split is read for the report even when
    nothing validates on it, so a test split that is the val split is named as such."""
    if val is None and test is not None:
        try:
            val = open_dataset(cfg.data, "val", "eval")
        except ConfigError:
            val = None  # no val split at all (e.g. data.val_fraction=0): nothing to compare
    summary, listing = describe_splits({"train": train, "val": val, "test": test}, cfg.data.root)
    if dist.is_main:
        write_splits(run_dir, listing)
    return summary


def record_class_names(
    dist: DistInfo, run_dir: Path, names: list[str], num_classes: int
) -> list[str] | None:
    """The training data's class names, saved as ``run_dir/classes.txt`` (rank 0) so evaluation,
    export and inspection find them without the data; None when the head has more outputs than
    the data has classes (``head.num_classes``)."""
    if len(names) != num_classes:
        log.warning(
            "the head has %d outputs but the data names %d classes; no %s written",
            num_classes, len(names), CLASSES_FILE,
        )  # fmt: skip
        return None
    if dist.is_main:
        write_class_index(names, run_dir / CLASSES_FILE)
    return list(names)


def run(cfg: FinetuneConfig, resume: str | None = None) -> dict:
    """Fine-tune, validate, test (multi-view) and export; returns what ``summary.json`` holds."""
    t0 = time.time()
    resolve_init_architecture(cfg)  # before start_run saves the config: the one trained
    dist, run_dir = start_run(cfg, cfg.out_dir, cfg.seed, cfg.engine.device)
    try:
        trainer, bad_files, facts, test_set = build_finetune_trainer(cfg, dist, run_dir)
        ckpt = resolve_resume(resume, run_dir)
        if ckpt is not None:
            trainer.resume(ckpt)
        # summary.json also when the run is interrupted or fails (completed: false, error)
        extra = {**facts, "data": bad_files.summary}  # data: counted when the run ends
        summary = fit_and_summarize(trainer, "finetune", extra, t0)
        if summary["completed"]:
            try:
                summary.update(_finish(cfg, trainer, dist, run_dir, test_set, facts))
            except Exception as err:  # training is done but export/test is not: say so
                summary["completed"] = False
                summary["error"] = "after training: " + " ".join(str(err).split())
                raise
            finally:
                summary["wall_s"] = round(time.time() - t0, 2)
                if dist.is_main:
                    write_summary(run_dir, summary)
        return summary
    finally:
        finish_run()


def _finish(
    cfg: FinetuneConfig,
    trainer: Trainer,
    dist: DistInfo,
    run_dir: Path,
    test_set: ClipDataset | None,
    facts: dict,
) -> dict:
    """Export the weights (with the class names) and run the multi-view test on ``test_set``
    (EMA weights too)."""
    models = {"": unwrap(trainer.model)}
    if trainer.ema is not None:
        models["_ema"] = trainer.ema.module
    out: dict = {}
    if dist.is_main:
        extra = {"recipe": "finetune", "step": trainer.state.step, "init": cfg.init.source}
        if facts.get("class_names"):
            extra["class_names"] = facts["class_names"]
        for suffix, m in models.items():
            save_encoder(m, run_dir / f"model{suffix}.safetensors", extra)
    if test_set is not None:
        batch = cfg.val.batch_size or cfg.engine.batch_size
        for suffix, m in models.items():
            out[f"test{suffix}"] = run_test(
                m,
                test_set,
                batch,
                cfg.data.num_workers,
                dist,
                trainer.dtype,
                run_dir / f"test{suffix}",
                cfg.engine.progress,
                facts.get("class_names"),
            )
        test = facts.get("splits", {}).get("test", {})
        split = test.get("same_as", "test") if isinstance(test, dict) else "test"
        out["test_result"] = describe_test_result(
            out["test"], split, unwrap(trainer.model).num_classes
        )
        out["result"] = out["test_result"]["headline"]
    return out
