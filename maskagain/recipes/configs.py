"""The recipes' configs: one dataclass tree per command (the sections several of them share are
in :mod:`maskagain.recipes.sections`).

Loaded with :func:`maskagain.config.load_config` and validated before anything else runs (a
misspelled key, a bad value or an inconsistent pair fails in one line naming the key). This
module imports neither torch nor PyAV, so listing a command's keys (``--help``) stays fast; the
checks that need the model registry import it when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from maskagain.config import check
from maskagain.data.config import DataConfig
from maskagain.engine.config import (
    EngineConfig,
    OptimConfig,
    Precision,
    ScheduleConfig,
    check_precision_reason,
)
from maskagain.losses.config import AMDConfig, MVDConfig, ObjectiveConfig
from maskagain.recipes.sections import (
    MaskSpec,
    ModelSpec,
    ScratchModelSpec,
    check_data_matches_model,
    model_overrides,
)


# ----------------------------------------------------------------------------- pretrain
@dataclass
class DecoderSpec:
    """VideoMAE pre-training decoder; null width/heads follow VideoMAE (encoder width / 2, /64)."""

    depth: int = 4
    """decoder blocks"""
    embed_dim: int | None = None
    """decoder width; null: half the encoder's"""
    num_heads: int | None = None
    """decoder heads; null: width / 64"""
    norm_pix_loss: bool = True
    """regress per-patch normalised pixels (VideoMAE's default)"""

    def resolved(self, encoder_dim: int) -> tuple[int, int]:
        """(decoder width, decoder heads) for an encoder of width ``encoder_dim``."""
        dim = self.embed_dim or encoder_dim // 2
        heads = self.num_heads or max(1, dim // 64)
        return dim, heads

    def validate(self, encoder_dim: int, path: str = "decoder") -> None:
        check(self.depth >= 1, f"config key '{path}.depth' must be >= 1, got {self.depth}")
        for key in ("embed_dim", "num_heads"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"config key '{path}.{key}' must be >= 1 or null")
        dim, heads = self.resolved(encoder_dim)
        check(
            dim % heads == 0,
            f"config key '{path}.embed_dim'={dim} is not divisible by '{path}.num_heads'={heads}",
        )


@dataclass
class PretrainConfig:
    """``maskagain pretrain``: VideoMAE pre-training of a teacher."""

    out_dir: str = "runs/pretrain"
    """run directory: config.yaml, checkpoints/, log.jsonl, summary.json, weights"""
    seed: int = 0
    """seed of weights, data order, augmentation and masks"""
    model: ScratchModelSpec = field(default_factory=lambda: ScratchModelSpec(name="vit_base"))
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskSpec = field(default_factory=MaskSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=800))
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> None:
        self.data.validate()
        self.model.follow_data(self.data)
        mcfg = self.model.model_config("model")
        check_data_matches_model(self.data, mcfg, "model")
        self.decoder.validate(mcfg.embed_dim)
        self.mask.validate()
        self.optim.validate()
        self.schedule.validate()
        self.engine.validate()


# ----------------------------------------------------------------------------- distill
@dataclass
class TeacherSpec:
    """The frozen teacher: any source ``maskagain.models.load_encoder`` reads.

    ``overrides`` are passed on to the loader (e.g. ``img_size`` to interpolate positions);
    ``precision`` is the teacher's autocast dtype (it always runs under inference mode).
    """

    source: str = ""
    """the frozen teacher's checkpoint: a run directory, weights file, official .pth, Hugging Face
    folder or hub id; teacher.source also takes a shipped teacher's name (`maskagain ls`)"""
    overrides: dict = field(default_factory=dict)
    """model fields passed to the loader, e.g. {img_size: 112} to interpolate positions"""
    precision: Precision = "auto"
    """autocast dtype: auto (bf16 where native, else fp32), bf16, fp16 or fp32"""
    precision_reason: str = ""
    """written by the run: why precision holds its value (what auto chose, and why)"""

    def validate(self, path: str = "teacher") -> None:
        self.overrides = model_overrides(self.overrides, f"{path}.overrides")
        check_precision_reason(self.precision_reason, f"{path}.precision_reason")


@dataclass
class ImageTeacherSpec(TeacherSpec):
    """MVD's image teacher (read when ``mvd.image_weight > 0``): an MAE image encoder, any
    source ``maskagain.models.image_vit.load_image_encoder`` reads (an official ``.pth``, a
    Hugging Face ViTMAE directory or hub id). It sees the first frame of every tubelet.

    ``overrides``: ``num_heads`` (outside the published MAE sizes, when the file does not record
    it) and ``norm_eps``; ``precision``: its autocast dtype (it always runs under inference mode).
    """

    def validate(self, path: str = "image_teacher") -> None:
        allowed = ("num_heads", "norm_eps")
        self.overrides = model_overrides(self.overrides, f"{path}.overrides", allowed)
        check_precision_reason(self.precision_reason, f"{path}.precision_reason")


def check_image_teacher(kind: str, mvd: MVDConfig, image_teacher: ImageTeacherSpec) -> None:
    """An image teacher is given exactly when MVD co-teaching uses one (never loaded for
    nothing, never missing)."""
    if kind != "mvd":
        check(
            not image_teacher.source,
            f"config key 'image_teacher.source' is set, but objective.kind={kind} has no image "
            "teacher (only mvd co-teaches); remove it",
        )
    elif mvd.image_weight > 0:
        check(
            bool(image_teacher.source),
            f"config key 'image_teacher.source' is empty, but mvd.image_weight="
            f"{mvd.image_weight} distils from an image teacher too: give an MAE image encoder "
            "(e.g. mae_pretrain_vit_base.pth or facebook/vit-mae-base), or set "
            "mvd.image_weight=0 for the video teacher alone",
        )
    else:
        check(
            not image_teacher.source,
            f"config key 'image_teacher.source' is {image_teacher.source!r}, but mvd.image_weight "
            "is 0, so it would never be used: set mvd.image_weight > 0 to co-teach, or clear "
            "it (image_teacher.source=)",
        )


@dataclass
class DistillConfig:
    """``maskagain distill``: distillation of a student trained from scratch.

    ``objective.kind`` picks the method: "maskagain" (the ``objective`` weights), "mvd" (the
    ``mvd`` section: the teacher sees the whole clip, a decoder regresses its features of the
    student's hidden tokens; with ``mvd.image_weight > 0`` a second decoder regresses those of
    the ``image_teacher``) or "amd" (the ``amd`` section: the teacher sees a clip masked at
    ``amd.teacher_ratio``, the student at ``mask.ratio``, both tube masks). With
    ``objective.pixel_weight > 0`` a VideoMAE pixel decoder (``pixel_decoder``) reconstructs the
    student's hidden tokens as an extra ``pixel`` term.
    """

    out_dir: str = "runs/distill"
    """run directory: config.yaml, checkpoints/, log.jsonl, summary.json, student.safetensors"""
    seed: int = 0
    """seed of weights, data order, augmentation and masks"""
    student: ScratchModelSpec = field(
        default_factory=lambda: ScratchModelSpec(name="vit_base", drop_path_rate=0.1)
    )
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    image_teacher: ImageTeacherSpec = field(default_factory=ImageTeacherSpec)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskSpec = field(default_factory=MaskSpec)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    mvd: MVDConfig = field(default_factory=MVDConfig)
    amd: AMDConfig = field(default_factory=AMDConfig)
    pixel_decoder: DecoderSpec = field(default_factory=DecoderSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> None:
        """Static checks; the teacher's geometry is checked by :func:`check_teacher` once loaded."""
        self.data.validate()
        self.student.follow_data(self.data)
        scfg = self.student.model_config("student")
        check_data_matches_model(self.data, scfg, "student")
        self.teacher.validate()
        self.image_teacher.validate()
        self.mask.validate()
        self.objective.validate()
        # every section is checked, also those the chosen objective does not read
        self.mvd.validate()
        self.amd.validate()
        self.pixel_decoder.validate(scfg.embed_dim, "pixel_decoder")
        kind = self.objective.kind
        if kind == "maskagain":
            check_objective_k(self.objective, self.mask, scfg.grid)
        elif kind == "amd":
            check_amd_masks(self.amd, self.mask)
        check_image_teacher(kind, self.mvd, self.image_teacher)
        self.optim.validate()
        self.schedule.validate()
        self.engine.validate()


def check_amd_masks(amd: AMDConfig, mask: MaskSpec) -> None:
    """AMD draws tube masks, the teacher's at a lower ratio than the student's."""
    check(
        mask.kind == "tube",
        f"config key 'mask.kind' must be 'tube' for objective.kind=amd (both models share one "
        f"spatial pattern per frame), got {mask.kind!r}",
    )
    check(
        amd.teacher_ratio < mask.ratio,
        f"config key 'amd.teacher_ratio'={amd.teacher_ratio} must be below 'mask.ratio'="
        f"{mask.ratio}: the teacher sees more of the clip than the student",
    )


def check_objective_k(
    objective: ObjectiveConfig, mask: MaskSpec, grid: tuple[int, int, int]
) -> None:
    """Every top-k of the objective must fit in the tokens a mask leaves visible."""
    from maskagain.masking import visible_count, visible_per_frame

    total = visible_count(mask.kind, grid, mask.ratio)
    per_frame = visible_per_frame(mask.kind, grid, mask.ratio)
    weights = objective.weights()
    limits = {
        "global": (total, "visible tokens per clip"),
        "hint": (total, "visible tokens per clip"),
    }
    if per_frame is not None:
        limits["local"] = (per_frame, "visible tokens per frame")
    uses = {"global": "global" in weights, "local": "local" in weights}
    uses["hint"] = bool({"hint", "relation"} & set(weights))
    for term, (limit, where) in limits.items():
        k = objective.k_for(term)
        key = f"k_{term}" if getattr(objective, f"k_{term}") is not None else "k"
        check(
            not uses[term] or k <= limit,
            f"config key 'objective.{key}'={k} is larger than the {limit} {where} of the "
            f"{term} term (grid {grid}, {mask.kind} mask ratio {mask.ratio}); use k <= {limit} "
            "or a lower mask.ratio",
        )


# ----------------------------------------------------------------------------- finetune
@dataclass
class InitSpec:
    """Where the weights come from.

    ``source``: empty for scratch, else anything ``maskagain.models.load_encoder`` reads: a
    distilled student (a ``distill`` run directory or its ``student.safetensors``), an official
    VideoMAE / MaskAgain ``.pth``, or a Hugging Face VideoMAE directory. The architecture (width,
    depth, heads, patch, tubelet, layer scale) is the checkpoint's: ``model.name`` and its
    patch/tubelet are replaced by it, and ``model.embed_dim`` / ``depth`` / ``num_heads`` set to
    a value must match it. The clip (frames, image size) is the data's (a warning when it is not
    the checkpoint's). Its head, if any, is replaced.
    ``overrides``: extra ``ModelConfig`` fields for the loader (e.g. ``num_heads`` or
    ``norm_eps`` that an official ``.pth`` cannot tell).
    """

    source: str = ""
    """weights to start from: a distill run or its student.safetensors, an official .pth, a
    Hugging Face folder; empty: from scratch"""
    overrides: dict = field(default_factory=dict)
    """model fields the checkpoint cannot tell, passed to the loader (e.g. num_heads)"""

    def validate(self, path: str = "init") -> None:
        self.overrides = model_overrides(self.overrides, f"{path}.overrides")


@dataclass
class HeadSpec:
    """The classifier: ``num_classes`` null means "take it from the dataset"."""

    num_classes: int | None = None
    """classes of the classifier; null: the dataset's"""
    dropout: float = 0.0
    """dropout before the classifier"""
    fc_norm: bool = True
    """mean-pool the tokens and LayerNorm them (VideoMAE fine-tuning) instead of the final norm"""

    def validate(self, path: str = "head") -> None:
        check(
            self.num_classes is None or self.num_classes >= 1,
            f"config key '{path}.num_classes' must be >= 1 or null, got {self.num_classes}",
        )
        check(
            0.0 <= self.dropout < 1.0,
            f"config key '{path}.dropout' must be in [0, 1), got {self.dropout}",
        )


@dataclass
class MixupSpec:
    """Mixup / CutMix with label smoothing (``maskagain.engine.mixup.VideoMixup``)."""

    mixup_alpha: float = 0.8
    """Mixup Beta(alpha, alpha) parameter (0: no Mixup)"""
    cutmix_alpha: float = 1.0
    """CutMix Beta(alpha, alpha) parameter (0: no CutMix)"""
    prob: float = 1.0
    """chance that a batch is mixed at all"""
    switch_prob: float = 0.5
    """chance of CutMix rather than Mixup when both are on"""
    label_smoothing: float = 0.1
    """label smoothing of the targets (also without mixing)"""

    def validate(self, path: str = "mixup") -> None:
        check(
            self.mixup_alpha >= 0 and self.cutmix_alpha >= 0,
            f"config keys '{path}.mixup_alpha' and '{path}.cutmix_alpha' must be >= 0 (0 disables)",
        )
        for key in ("prob", "switch_prob"):
            value = getattr(self, key)
            check(0 <= value <= 1, f"config key '{path}.{key}' must be in [0, 1], got {value}")
        check(
            0 <= self.label_smoothing < 1,
            f"config key '{path}.label_smoothing' must be in [0, 1), got {self.label_smoothing}",
        )


@dataclass
class ValSpec:
    """Evaluation during and after fine-tuning.

    ``every_epochs``: single-view top-1 on the validation split every N epochs (0: never).
    ``final_test``: multi-view test (``data.test_clips x data.test_crops``) after the last epoch,
    on the test split (``data.test_list``, a ``test`` folder or a held-out part of a folder
    dataset; the validation split when there is none, which ``summary.json`` then says), with
    EMA weights too when ``engine.ema_decay > 0``. ``summary.json`` gives each split's video
    count and whether they are disjoint; ``splits.json`` lists the videos.
    """

    every_epochs: int = 1
    """single-view top-1 on the val split every N epochs (0: never)"""
    final_test: bool = True
    """multi-view test on the test split after the last epoch"""
    batch_size: int | None = None
    """clips per evaluation batch; null: engine.batch_size"""

    def validate(self, path: str = "val") -> None:
        check(self.every_epochs >= 0, f"config key '{path}.every_epochs' must be >= 0")
        check(
            self.batch_size is None or self.batch_size >= 1,
            f"config key '{path}.batch_size' must be >= 1 or null",
        )


@dataclass
class FinetuneConfig:
    """``maskagain finetune``: supervised fine-tuning of a (distilled) video ViT.

    Peak lr = ``optim.base_lr * total_batch / 256`` (``optim.lr`` overrides), scaled per layer
    by ``layer_decay ** (depth + 1 - layer)``.
    """

    out_dir: str = "runs/finetune"
    """run directory: config.yaml, checkpoints/, log.jsonl, summary.json, model.safetensors"""
    seed: int = 0
    """seed of the head, data order, augmentation and mixing"""
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name="vit_base", drop_path_rate=0.1))
    init: InitSpec = field(default_factory=InitSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    layer_decay: float = 0.75
    """lr of block i scaled by layer_decay ** (depth + 1 - i) (1: same lr everywhere)"""
    mixup: MixupSpec = field(default_factory=MixupSpec)
    data: DataConfig = field(default_factory=DataConfig)
    # Table 8: base lr 1e-3, betas 0.9/0.999, 5 warm-up epochs from 1e-6 to the peak, min 1e-5
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(base_lr=1e-3, betas=(0.9, 0.999))
    )
    schedule: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(
            epochs=100, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5
        )
    )
    engine: EngineConfig = field(default_factory=EngineConfig)
    val: ValSpec = field(default_factory=ValSpec)

    def validate(self) -> None:
        self.data.validate()
        self.model.follow_data(self.data)
        mcfg = self.model.model_config("model")
        check_data_matches_model(self.data, mcfg, "model")
        check(
            0 < self.layer_decay <= 1,
            f"config key 'layer_decay' must be in (0, 1], got {self.layer_decay}",
        )
        self.init.validate()
        self.head.validate()
        self.mixup.validate()
        self.optim.validate()
        self.schedule.validate()
        self.engine.validate()
        self.val.validate()


# ----------------------------------------------------------------------------- evaluate
@dataclass
class EvaluateConfig:
    """``maskagain evaluate``: multi-view testing of a classifier.

    ``checkpoint``: a ``finetune`` run directory (its ``model.safetensors``, or
    ``model_ema.safetensors`` with ``use_ema``), a weights file, or a training checkpoint
    ``ckpt_step*.pt`` of a fine-tuning run. ``split``: which list of ``data`` to test on.
    ``overrides``: ``ModelConfig`` fields a weights file cannot tell (e.g. ``num_heads`` of an
    official ``.pth``), passed to ``load_encoder``.
    """

    out_dir: str = "runs/evaluate"
    """where summary.json, predictions.csv and the confusion matrix go"""
    checkpoint: str = ""
    """classifier to test: a finetune run directory, a weights file or a ckpt_step*.pt"""
    overrides: dict = field(default_factory=dict)
    """model fields a weights file cannot tell (e.g. num_heads of an official .pth)"""
    use_ema: bool = False
    """test the EMA weights (model_ema.safetensors) of the run"""
    split: Literal["test", "val"] = "test"
    """which split of data to test on: test or val"""
    data: DataConfig = field(default_factory=DataConfig)  # test_clips x test_crops: 5 x 3
    batch_size: int = 16
    """clips per forward pass"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto (CUDA when there is one), cuda or cpu"""
    precision: Precision = "auto"
    """autocast dtype: auto (bf16 where native, else fp32), bf16, fp16 or fp32"""
    precision_reason: str = ""
    """written by the run: why precision holds its value (what auto chose, and why)"""
    class_names: str = ""
    """file with one class name per line; empty: the data's class names or numbers"""
    progress: bool = True
    """show a progress bar on a terminal"""

    def validate(self) -> None:
        check(bool(self.checkpoint), "config key 'checkpoint' is required (a run dir or a file)")
        check_precision_reason(self.precision_reason, "precision_reason")
        self.data.validate()
        check(self.batch_size >= 1, f"config key 'batch_size' must be >= 1, got {self.batch_size}")
        self.overrides = model_overrides(self.overrides, "overrides")


# ----------------------------------------------------------------------------- probe
@dataclass
class ProbeSpec:
    """The linear classifier trained on frozen features. ``pooling``: "mean" (the mean over all
    tokens, D features) or "time" (the mean over space at each tubelet step, concatenated:
    F x D features that keep the order of events; the demo ranks by it)."""

    pooling: Literal["mean", "time"] = "mean"
    """features: mean (mean over all tokens) or time (mean over space per time step,
    concatenated)"""
    epochs: int = 50
    """epochs of the linear classifier"""
    lr: float = 1e-2
    """learning rate of the linear classifier"""
    weight_decay: float = 0.0
    """weight decay of the linear classifier"""
    batch_size: int = 256
    """feature vectors per step of the linear classifier"""

    def validate(self, path: str = "probe") -> None:
        check(self.epochs >= 1, f"config key '{path}.epochs' must be >= 1, got {self.epochs}")
        check(self.lr > 0, f"config key '{path}.lr' must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"config key '{path}.weight_decay' must be >= 0")
        check(self.batch_size >= 1, f"config key '{path}.batch_size' must be >= 1")


@dataclass
class ProbeConfig:
    """``maskagain probe``: linear probe on frozen, pooled features of an encoder.

    ``encoder``: anything ``load_encoder`` reads (distill run dir, safetensors, official ``.pth``,
    Hugging Face directory); ``overrides`` go to the loader.
    """

    out_dir: str = "runs/probe"
    """where summary.json goes"""
    seed: int = 0
    """seed of the classifier and data order"""
    encoder: str = ""
    """encoder to probe: a distill/pretrain run directory, weights file, .pth or Hugging Face
    folder"""
    overrides: dict = field(default_factory=dict)
    """model fields passed to the loader"""
    data: DataConfig = field(default_factory=DataConfig)  # read without augmentation
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    batch_size: int = 16
    """clips per forward pass of the encoder"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto (CUDA when there is one), cuda or cpu"""
    precision: Precision = "auto"
    """autocast dtype: auto (bf16 where native, else fp32), bf16, fp16 or fp32"""
    precision_reason: str = ""
    """written by the run: why precision holds its value (what auto chose, and why)"""
    progress: bool = True
    """show a progress bar on a terminal"""

    def validate(self) -> None:
        check(bool(self.encoder), "config key 'encoder' is required (a run dir or weights file)")
        check_precision_reason(self.precision_reason, "precision_reason")
        self.data.validate()
        self.overrides = model_overrides(self.overrides, "overrides")
        check(self.batch_size >= 1, f"config key 'batch_size' must be >= 1, got {self.batch_size}")
        self.probe.validate()
