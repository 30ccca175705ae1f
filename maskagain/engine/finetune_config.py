"""Typed configs of ``finetune``, ``evaluate`` and ``probe`` (built with ``maskagain.config``).

Same pattern as the pre-training and distillation configs: dataclass trees loaded from YAML with
``defaults`` includes and dotted ``key=value`` overrides, validated before any data is read.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from typing import Literal

from maskagain.config import (
    ConfigError,
    EngineConfig,
    ModelSpec,
    OptimConfig,
    Precision,
    ScheduleConfig,
    check_data_matches_model,
    check_model_geometry,
)
from maskagain.config import _coerce as coerce_value  # the schema's typing of raw values
from maskagain.data import DataConfig
from maskagain.models.vit import ModelConfig


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class InitSpec:
    """Where the weights come from.

    ``source``: empty for scratch, else anything ``maskagain.models.load_encoder`` reads: a
    distilled student (a ``distill`` run directory or its ``student.safetensors``), an official
    VideoMAE / MaskAgain ``.pth``, or a Hugging Face VideoMAE directory. The checkpoint's own
    architecture must match ``model`` (name, patch, tubelet); its head, if any, is replaced.
    ``overrides``: extra ``ModelConfig`` fields for the loader (e.g. ``num_heads`` or
    ``norm_eps`` that an official ``.pth`` cannot tell).
    """

    source: str = ""
    overrides: dict = field(default_factory=dict)

    def validate(self, path: str = "init") -> None:
        self.overrides = loader_overrides(self.overrides, f"{path}.overrides")


def loader_overrides(raw: dict, path: str) -> dict:
    """``ModelConfig`` fields for ``load_encoder``, typed (``overrides.num_heads=2`` from the
    command line becomes the int 2); an unknown field fails naming the key."""
    hints = typing.get_type_hints(ModelConfig)
    out = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f"did you mean '{path}.{close[0]}'? " if close else ""
            raise ConfigError(
                f"unknown config key '{path}.{key}'; {hint}valid keys: {', '.join(hints)}"
            )
        out[key] = coerce_value(hints[key], value, f"{path}.{key}")
    return out


@dataclass
class HeadSpec:
    """The classifier: ``num_classes`` null means "take it from the dataset"."""

    num_classes: int | None = None
    dropout: float = 0.0  # head dropout (Table 8 "dropout")
    fc_norm: bool = True  # mean pooling + LayerNorm (VideoMAE fine-tuning); drops the final norm

    def validate(self, path: str = "head") -> None:
        _check(
            self.num_classes is None or self.num_classes >= 1,
            f"config key '{path}.num_classes' must be >= 1 or null, got {self.num_classes}",
        )
        _check(
            0.0 <= self.dropout < 1.0,
            f"config key '{path}.dropout' must be in [0, 1), got {self.dropout}",
        )


@dataclass
class MixupSpec:
    """Mixup / CutMix with label smoothing (``maskagain.engine.mixup.VideoMixup``)."""

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1

    def validate(self, path: str = "mixup") -> None:
        _check(
            self.mixup_alpha >= 0 and self.cutmix_alpha >= 0,
            f"config keys '{path}.mixup_alpha' and '{path}.cutmix_alpha' must be >= 0 (0 disables)",
        )
        for key in ("prob", "switch_prob"):
            value = getattr(self, key)
            _check(0 <= value <= 1, f"config key '{path}.{key}' must be in [0, 1], got {value}")
        _check(
            0 <= self.label_smoothing < 1,
            f"config key '{path}.label_smoothing' must be in [0, 1), got {self.label_smoothing}",
        )


@dataclass
class ValSpec:
    """Evaluation during and after fine-tuning.

    ``every_epochs``: single-view top-1 on the validation split every N epochs (0: never).
    ``final_test``: multi-view test (``data.test_clips x data.test_crops``) after the last epoch,
    on ``data.test_list`` (or the validation split when there is none), with EMA weights too
    when ``engine.ema_decay > 0``.
    """

    every_epochs: int = 1
    final_test: bool = True
    batch_size: int | None = None  # null: engine.batch_size

    def validate(self, path: str = "val") -> None:
        _check(self.every_epochs >= 0, f"config key '{path}.every_epochs' must be >= 0")
        _check(
            self.batch_size is None or self.batch_size >= 1,
            f"config key '{path}.batch_size' must be >= 1 or null",
        )


# Fine-tuning defaults live in subclasses, not in ``default_factory``: a YAML file or override
# that sets one key of a section builds the section from its class defaults.
@dataclass
class FinetuneModelSpec(ModelSpec):
    """:class:`ModelSpec` with the fine-tuning default (ViT-B, drop path 0.1)."""

    name: str = "vit_base"
    drop_path_rate: float = 0.1


@dataclass
class FinetuneOptimConfig(OptimConfig):
    """:class:`OptimConfig` with Table 8's defaults (base lr 1e-3, betas 0.9/0.999)."""

    base_lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class FinetuneScheduleConfig(ScheduleConfig):
    """:class:`ScheduleConfig` with Table 8's defaults (5 warm-up epochs from 1e-6, min 1e-5)."""

    epochs: int = 100
    warmup_epochs: float = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5


@dataclass
class FinetuneConfig:
    """``maskagain finetune``: supervised fine-tuning of a (distilled) video ViT.

    Peak lr = ``optim.base_lr * total_batch / 256`` (``optim.lr`` overrides), scaled per layer
    by ``layer_decay ** (depth + 1 - layer)``.
    """

    out_dir: str = "runs/finetune"
    seed: int = 0
    model: FinetuneModelSpec = field(default_factory=FinetuneModelSpec)
    init: InitSpec = field(default_factory=InitSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    layer_decay: float = 0.75
    mixup: MixupSpec = field(default_factory=MixupSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    schedule: FinetuneScheduleConfig = field(default_factory=FinetuneScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    val: ValSpec = field(default_factory=ValSpec)

    def validate(self) -> None:
        mcfg = self.model.model_config("model")
        check_model_geometry(self.model, mcfg, "model")
        check_data_matches_model(self.data, mcfg, "model")
        _check(
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
    checkpoint: str = ""
    overrides: dict = field(default_factory=dict)
    use_ema: bool = False
    split: Literal["test", "val"] = "test"
    data: DataConfig = field(default_factory=DataConfig)  # test_clips x test_crops: 5 x 3
    batch_size: int = 16
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Precision = "bf16"
    class_names: str = ""  # file with one class name per line; "" = data's class index or numbers
    progress: bool = True

    def validate(self) -> None:
        _check(bool(self.checkpoint), "config key 'checkpoint' is required (a run dir or a file)")
        _check(self.batch_size >= 1, f"config key 'batch_size' must be >= 1, got {self.batch_size}")
        self.overrides = loader_overrides(self.overrides, "overrides")


@dataclass
class ProbeSpec:
    """The linear classifier trained on frozen features."""

    epochs: int = 50
    lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int = 256

    def validate(self, path: str = "probe") -> None:
        _check(self.epochs >= 1, f"config key '{path}.epochs' must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"config key '{path}.lr' must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"config key '{path}.weight_decay' must be >= 0")
        _check(self.batch_size >= 1, f"config key '{path}.batch_size' must be >= 1")


@dataclass
class ProbeConfig:
    """``maskagain probe``: linear probe on frozen, mean-pooled features of an encoder.

    ``encoder``: anything ``load_encoder`` reads (distill run dir, safetensors, official ``.pth``,
    Hugging Face directory); ``overrides`` go to the loader.
    """

    out_dir: str = "runs/probe"
    seed: int = 0
    encoder: str = ""
    overrides: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)  # read without augmentation
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    batch_size: int = 16  # clips per forward pass of the encoder
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Precision = "bf16"
    progress: bool = True

    def validate(self) -> None:
        _check(bool(self.encoder), "config key 'encoder' is required (a run dir or weights file)")
        self.overrides = loader_overrides(self.overrides, "overrides")
        _check(self.batch_size >= 1, f"config key 'batch_size' must be >= 1, got {self.batch_size}")
        self.probe.validate()
