"""Fine-tuning pieces: the classifier's initialisation, the training step, multi-view prediction.

The recipe (``maskagain.cli.finetune``) wires these into the shared
:class:`~maskagain.engine.trainer.Trainer`:

- :func:`build_classifier`: a ``VideoViT`` from scratch or from any checkpoint
  ``load_encoder`` reads (a distilled student, a VideoMAE ``.pth``, a Hugging Face directory),
  with drop path, head dropout and a fresh head (mean pooling + ``fc_norm``).
- :class:`FinetuneStep`: mixup / cutmix + label smoothing, soft-target cross-entropy.
- :func:`predict_views`: softmax scores of every view, averaged per video
  (:mod:`maskagain.engine.evaluation`), counting each view once under DDP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from maskagain.checkpoints import CheckpointError
from maskagain.config import ConfigError, from_dict, to_dict
from maskagain.data import BadFileTracker, ClipDataset, MaskCollator
from maskagain.data.lists import write_class_index
from maskagain.engine.checkpoint import latest_checkpoint, load_checkpoint
from maskagain.engine.distributed import DistInfo, unwrap
from maskagain.engine.evaluation import EvalResult, MultiViewAccumulator, save_report
from maskagain.engine.mixup import VideoMixup, smooth_one_hot, soft_target_cross_entropy
from maskagain.engine.run import (
    build_optimization,
    build_train_loader,
    count_parameters,
    finish_run,
    fit_and_summarize,
    ignore_stop_signals,
    resolve_resume,
    start_run,
    write_summary,
)
from maskagain.engine.trainer import CHECKPOINT_FORMAT, Trainer, clips_per_step, steps_per_epoch
from maskagain.models.loading import load_encoder, save_encoder
from maskagain.models.vit import ModelConfig, VideoViT
from maskagain.recipes.common import (
    describe_splits,
    describe_test_result,
    open_dataset,
    video_paths,
    write_splits,
)
from maskagain.recipes.configs import FinetuneConfig, MixupSpec
from maskagain.recipes.sections import model_overrides

log = logging.getLogger(__name__)


# architecture fields a checkpoint must share with the configured model
ARCH_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size", "tubelet_size")


class ArchitectureMismatch(ConfigError):
    """The checkpoint's architecture is not the configured one."""


def build_classifier(
    spec: ModelConfig,
    num_classes: int,
    source: str = "",
    head_dropout: float = 0.0,
    fc_norm: bool = True,
    loader_overrides: dict | None = None,
) -> VideoViT:
    """A video ViT classifier with ``num_classes`` outputs.

    Args:
        spec: the configured architecture (drop path, clip size); from scratch it is built as is.
        num_classes: size of the new head.
        source: "" for scratch, else a checkpoint for ``load_encoder``; its architecture must
            match ``spec`` in :data:`ARCH_FIELDS`, its head (if any) is replaced.
        head_dropout: dropout before the head.
        fc_norm: mean pooling + LayerNorm before the head (VideoMAE fine-tuning).
        loader_overrides: extra ``ModelConfig`` fields for the loader.
    """
    common = dict(
        drop_path_rate=spec.drop_path_rate,
        head_drop_rate=head_dropout,
        img_size=spec.img_size,
        num_frames=spec.num_frames,
    )
    if source:
        model = load_encoder(source, **{**common, **(loader_overrides or {})})
        bad = [
            f"{k}={getattr(model.cfg, k)} (configured {getattr(spec, k)})"
            for k in ARCH_FIELDS
            if getattr(model.cfg, k) != getattr(spec, k)
        ]
        if bad:
            raise ArchitectureMismatch(
                f"checkpoint {source} has {', '.join(bad)}; leave model.embed_dim/depth/"
                "num_heads null and set model.patch_size/tubelet_size to the checkpoint's"
            )
        log.info("initialised from %s", source)
    else:
        cfg = ModelConfig(**{**spec.to_dict(), **common})
        model = VideoViT(cfg)
        log.info("initialised from scratch")
    model.reset_head(num_classes, fc_norm=fc_norm)
    return model


def resolve_init_architecture(cfg: FinetuneConfig) -> ModelConfig | None:
    """Take the architecture of ``cfg.init.source`` into ``cfg.model``, so the run builds, and
    saves in its config, what the checkpoint holds.

    Width, depth, heads, patch, tubelet and layer scale come from the checkpoint (``model.name``
    becomes the matching registered name). ``model.embed_dim`` / ``depth`` / ``num_heads`` set
    to a value are the user's and must match it (else a one-line :class:`ArchitectureMismatch`).
    The clip (frames, image size) stays the data's: when it differs from the checkpoint's a
    warning names both. A local ``init.source`` is made absolute. Returns the checkpoint's
    config, None from scratch.
    """
    from maskagain.models.registry import ARCHITECTURES

    source = cfg.init.source
    if not source:
        return None
    if Path(source).expanduser().exists():
        source = cfg.init.source = str(Path(source).expanduser().resolve())
    ckpt = load_encoder(source, **cfg.init.overrides).cfg
    spec = cfg.model
    for key in ("embed_dim", "depth", "num_heads"):
        mine, theirs = getattr(spec, key), getattr(ckpt, key)
        if mine is not None and mine != theirs:
            raise ArchitectureMismatch(
                f"config key 'model.{key}'={mine} but the checkpoint {source} has {key}={theirs}; "
                f"drop model.{key} to take the checkpoint's"
            )
    dims = (ckpt.embed_dim, ckpt.depth, ckpt.num_heads)
    names = [
        n for n, a in ARCHITECTURES.items() if (a["embed_dim"], a["depth"], a["num_heads"]) == dims
    ]
    spec.name = names[0] if names else spec.name
    spec.embed_dim, spec.depth, spec.num_heads = dims
    spec.patch_size, spec.tubelet_size = ckpt.patch_size, ckpt.tubelet_size
    spec.init_values = getattr(ckpt, "init_values", spec.init_values)
    log.info(
        "architecture from %s: %s (width %d, %d blocks, %d heads, patch %d, tubelet %d)",
        source, spec.name, *dims, spec.patch_size, spec.tubelet_size,
    )  # fmt: skip
    if (ckpt.num_frames, ckpt.img_size) != (spec.num_frames, spec.img_size):
        log.warning(
            "fine-tuning on %d frames of %d px a checkpoint trained on %d frames of %d px "
            "(positions recomputed); to keep its clip set data.num_frames=%d model.num_frames=%d "
            "data.input_size=%d model.img_size=%d",
            spec.num_frames, spec.img_size, ckpt.num_frames, ckpt.img_size,
            ckpt.num_frames, ckpt.num_frames, ckpt.img_size, ckpt.img_size,
        )  # fmt: skip
    spec.validate("model")
    return ckpt


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


@torch.no_grad()
def predict_views(
    model: nn.Module,
    batches: Iterable[dict],
    num_classes: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    views_per_video: int = 1,
) -> EvalResult:
    """Multi-view testing of ``model`` over data-pipeline batches: ``video`` (B, C, T, H, W),
    ``label`` (B,), ``index`` (B,) the video id and ``view`` (B,) the view id (absent: 0).
    A view's unique key is ``index * views_per_video + view``.

    The model runs in eval mode (its previous mode is restored); scores of every process are
    gathered and each view counted once.
    """
    was_training = model.training
    model.eval()
    acc = MultiViewAccumulator(num_classes)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    try:
        for batch in batches:
            with autocast:
                logits = model(batch["video"].to(device, non_blocking=True))
            video_index = batch["index"]
            view = batch.get("view")
            sample_index = video_index * views_per_video + (0 if view is None else view)
            acc.add(logits, batch["label"], video_index, sample_index)
    finally:
        model.train(was_training)
    return acc.compute()


def build_eval_loader(
    dataset: ClipDataset, batch_size: int, num_workers: int, dist: DistInfo
) -> DataLoader:
    """In-order loader over this process's share (``DistributedSampler`` pads the last shard;
    :func:`predict_views` de-duplicates)."""
    sampler = None
    if dist.distributed:
        sampler = DistributedSampler(
            dataset, dist.world_size, dist.rank, shuffle=False, drop_last=False
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=MaskCollator(),
        pin_memory=dist.device.type == "cuda",
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,  # the trainer stops
    )


def progress_batches(loader: DataLoader, active: bool, desc: str) -> Iterable[dict]:
    """Batches of ``loader`` behind a tqdm bar (rank 0 only, on a terminal: a log file gets
    the result line, not the bar's redraws)."""
    import sys

    if not active or not sys.stderr.isatty():
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, dynamic_ncols=True, leave=False)


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


class _Validator:
    """Epoch-end hook: single-view top-1/top-5 on the validation split (model and EMA)."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        model: VideoViT,
        num_classes: int,
        dist: DistInfo,
        dataset: ClipDataset,
    ):
        self.cfg, self.model, self.num_classes, self.dist = cfg, model, num_classes, dist
        self.dataset = dataset
        batch = cfg.val.batch_size or cfg.engine.batch_size
        self.loader = build_eval_loader(self.dataset, batch, cfg.data.num_workers, dist)

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        every = self.cfg.val.every_epochs
        if not every or trainer.state.epoch % every:
            return {}
        models = {"": self.model}
        if trainer.ema is not None:
            models["ema_"] = trainer.ema.module
        out = {}
        for prefix, model in models.items():
            res = predict_views(
                model,
                progress_batches(
                    self.loader, self.dist.is_main and self.cfg.engine.progress, "val"
                ),
                self.num_classes,
                self.dist.device,
                trainer.dtype,
            )
            out[f"{prefix}val_top1"] = res.top1
            if res.top5 is not None:
                out[f"{prefix}val_top5"] = res.top5
        log.info("epoch %d: %s", trainer.state.epoch, _fmt(out))
        return out


def _fmt(metrics: dict) -> str:
    """``top1 75.00, num_videos 12, classes_without_videos none``: counts as integers."""

    def value(v) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        if isinstance(v, list):
            return ", ".join(map(str, v)) or "none"
        return str(v)

    return ", ".join(f"{k} {value(v)}" for k, v in metrics.items())


def run_test(
    model: VideoViT,
    dataset: ClipDataset,
    batch_size: int,
    num_workers: int,
    dist: DistInfo,
    dtype: torch.dtype,
    out_dir: Path,
    progress: bool = True,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """Multi-view test of ``model`` on ``dataset``; rank 0 writes the reports to ``out_dir``.

    ``class_names`` default to the dataset's when it has as many classes as the head.
    """
    loader = build_eval_loader(dataset, batch_size, num_workers, dist)
    bad_files = BadFileTracker(dataset.cfg.max_bad_fraction, dataset.cfg.min_samples_for_bad_check)
    batches = _tracked(
        progress_batches(loader, dist.is_main and progress, f"test {out_dir.name}"), bad_files
    )
    result = predict_views(model, batches, model.num_classes, dist.device, dtype, dataset.views)
    if class_names is None and dataset.num_classes == model.num_classes:
        class_names = dataset.class_names
    if dist.is_main:
        save_report(result, out_dir, class_names, video_paths(dataset))
    metrics = result.metrics()
    metrics["views_per_video"] = dataset.views
    metrics["bad_files"] = len(bad_files.paths)  # unreadable files (this process)
    metrics["bad_views"] = bad_files.bad  # their views, replaced by other videos' clips
    metrics["videos_in_split"] = dataset.num_videos
    names = class_names or [str(c) for c in range(model.num_classes)]
    support = result.confusion.sum(1).tolist()
    metrics["classes_without_videos"] = [n for n, s in zip(names, support) if s == 0]
    shown = {k: v for k, v in metrics.items() if v is not None}
    log.info("test (%s): %s", out_dir.name, _fmt(shown))
    if result.num_videos < dataset.num_videos:
        log.warning(
            "tested %d of the %d videos of the split: %d could not be read (listed above)",
            result.num_videos, dataset.num_videos, dataset.num_videos - result.num_videos,
        )  # fmt: skip
    return metrics


def _tracked(batches: Iterable[dict], bad_files: BadFileTracker) -> Iterable[dict]:
    """``batches`` with every batch counted by ``bad_files`` (raises past its limit)."""
    for batch in batches:
        bad_files.update(batch)
        yield batch


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
    """Data, classifier, layer-decayed AdamW, mixup and the trainer; plus run facts and the
    test set (None when ``val.final_test`` is off)."""
    dataset = open_dataset(cfg.data, "train", "finetune")  # one-line error if empty/missing
    # the val and test lists too, before any model: an empty one fails now, not after training
    val_set = open_dataset(cfg.data, "val", "finetune") if cfg.val.every_epochs else None
    test_set = open_dataset(cfg.data, "test", "eval") if cfg.val.final_test else None
    num_classes = resolve_num_classes(cfg.head.num_classes, dataset)
    splits = record_splits(cfg, dist, run_dir, dataset, val_set, test_set)
    class_names = record_class_names(dist, run_dir, dataset.class_names, num_classes)
    model = build_finetune_model(cfg, num_classes).to(dist.device)
    loader, sampler = build_train_loader(
        dataset, MaskCollator(), cfg.engine, cfg.data.num_workers, dist, cfg.seed
    )
    steps = steps_per_epoch(len(sampler.order()), cfg.engine)
    # clips per optimizer step, repeated augmentation (clips per decoded video) included
    total_batch = clips_per_step(cfg.engine, dist.world_size, dataset.num_sample)
    optimizer, schedule = build_optimization(
        model, cfg.optim, cfg.schedule, steps, total_batch, dist.device, cfg.layer_decay
    )
    mixup = build_mixup(cfg.mixup, num_classes, seed=cfg.seed * 1000 + dist.rank)
    bad_files = BadFileTracker(cfg.data.max_bad_fraction, cfg.data.min_samples_for_bad_check)
    trainer = Trainer(
        engine=cfg.engine,
        dist=dist,
        run_dir=run_dir,
        model=model,
        step_fn=FinetuneStep(num_classes, mixup, cfg.mixup.label_smoothing),
        optimizer=optimizer,
        schedule=schedule,
        loader=loader,
        sampler=sampler,
        epochs=cfg.schedule.epochs,
        clip_grad=cfg.optim.clip_grad,
        config=to_dict(cfg),
        extra_state={"mixup": mixup} if mixup is not None else None,
        on_epoch_end=_Validator(cfg, model, num_classes, dist, val_set) if val_set else None,
        batch_hook=bad_files.update,
        name="finetune",
        clips_per_item=dataset.num_sample,
    )
    facts = {
        "total_batch": total_batch,
        "peak_lr": schedule.peak_lr,
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


# ----------------------------------------------------------------------------- checkpoints
def load_classifier(
    checkpoint: str | Path, use_ema: bool = False, overrides: dict | None = None
) -> VideoViT:
    """A classifier from a ``finetune`` run directory, an exported weights file (any format
    ``load_encoder`` reads) or a fine-tuning training checkpoint ``ckpt_step*.pt``.

    A run directory gives ``model.safetensors`` (``model_ema.safetensors`` with ``use_ema``),
    or, for a run that has not finished, its newest training checkpoint, or else whatever
    weights ``load_encoder`` finds in it. ``overrides`` go to ``load_encoder`` (weights files).
    """
    overrides = overrides or {}
    path = Path(checkpoint)
    if path.is_dir():
        name = "model_ema.safetensors" if use_ema else "model.safetensors"
        if (path / name).is_file():
            return load_encoder(path / name, **overrides)
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            log.info("%s has no %s yet; using the training checkpoint %s", path, name, ckpt)
            return _from_training_checkpoint(ckpt, use_ema)
        if use_ema:
            raise CheckpointError(f"{path} holds neither {name} nor checkpoints/ckpt_step*.pt")
        return load_encoder(path, **overrides)  # any weights file a run directory holds
    if path.suffix == ".pt" and path.is_file():
        state = load_checkpoint(path)
        if state.get("format") == CHECKPOINT_FORMAT:
            return _from_training_checkpoint(path, use_ema, state)
    if use_ema:
        raise CheckpointError(f"use_ema needs a run directory or a training checkpoint, not {path}")
    return load_encoder(path, **overrides)


def _from_training_checkpoint(path: Path, use_ema: bool, state: dict | None = None) -> VideoViT:
    state = state if state is not None else load_checkpoint(path)
    try:
        cfg = from_dict(FinetuneConfig, state.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{path} is not a fine-tuning checkpoint ({err})") from None
    weights = state["model"]
    if use_ema:
        ema = state.get("ema") or {}
        if not ema:
            raise CheckpointError(f"{path} has no EMA weights (engine.ema_decay was 0)")
        weights = ema["module"] if "module" in ema else _strip(ema, "module.")
    num_classes = int(weights["head.weight"].shape[0])
    spec = cfg.model.model_config("model").to_dict()
    spec.update(model_overrides(cfg.init.overrides, "init.overrides"))  # e.g. norm_eps of a .pth
    model = build_classifier(ModelConfig(**spec), num_classes, fc_norm=cfg.head.fc_norm)
    model.load_state_dict(weights, strict=True)
    return model


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


Config = FinetuneConfig
