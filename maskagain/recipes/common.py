"""What several recipes share: the model and mask sections of their configs, the check that data
and model see the same clip, reading a dataset that fails fast, and the masked-training setup
of pre-training and distillation."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn
from torch.utils.data import Dataset

from maskagain.config import ConfigError, check, coerce, to_dict, unknown_key
from maskagain.data import BadFileTracker, DataConfig, MaskCollator
from maskagain.engine.distributed import DistInfo
from maskagain.engine.run import build_optimization, build_train_loader
from maskagain.engine.sampler import SeededItems
from maskagain.engine.trainer import Trainer, steps_per_epoch
from maskagain.models.registry import ARCHITECTURES, model_config
from maskagain.models.vit import ModelConfig


@dataclass
class ModelSpec:
    """A registered architecture (``maskagain.models.ARCHITECTURES``) plus field overrides.

    ``embed_dim`` / ``depth`` / ``num_heads`` left at null keep the architecture's values.
    """

    name: str = "vit_small"
    img_size: int = 224
    num_frames: int = 16
    patch_size: int = 16
    tubelet_size: int = 2
    drop_path_rate: float = 0.0
    init_values: float = 0.0
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None

    def validate(self, path: str = "model") -> None:
        """Known name, sizes >= 1, frames divisible by the tubelet, image size by the patch,
        width by the head count."""
        if self.name not in ARCHITECTURES:
            close = difflib.get_close_matches(self.name, list(ARCHITECTURES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"config key '{path}.name' must be one of {', '.join(ARCHITECTURES)}, "
                f"got {self.name!r}{hint}"
            )
        for key in ("img_size", "num_frames", "patch_size", "tubelet_size"):
            value = getattr(self, key)
            check(value >= 1, f"config key '{path}.{key}' must be >= 1, got {value}")
        for key in ("embed_dim", "depth", "num_heads"):
            value = getattr(self, key)
            check(
                value is None or value >= 1,
                f"config key '{path}.{key}' must be >= 1 or null (the architecture's), got {value}",
            )
        check(
            0.0 <= self.drop_path_rate < 1.0,
            f"config key '{path}.drop_path_rate' must be in [0, 1), got {self.drop_path_rate}",
        )
        check(
            self.init_values >= 0.0,
            f"config key '{path}.init_values' must be >= 0 (0: no layer scale), got {self.init_values}",
        )
        check(
            self.num_frames % self.tubelet_size == 0,
            f"config key '{path}.num_frames'={self.num_frames} is not divisible by "
            f"'{path}.tubelet_size'={self.tubelet_size}; use a multiple of {self.tubelet_size}",
        )
        check(
            self.img_size % self.patch_size == 0,
            f"config key '{path}.img_size'={self.img_size} is not divisible by "
            f"'{path}.patch_size'={self.patch_size}; use a multiple of {self.patch_size}",
        )
        width = self.embed_dim or ARCHITECTURES[self.name]["embed_dim"]
        heads = self.num_heads or ARCHITECTURES[self.name]["num_heads"]
        check(
            width % heads == 0,
            f"config key '{path}.embed_dim'={width} is not divisible by '{path}.num_heads'={heads}",
        )

    def model_config(self, path: str = "model") -> ModelConfig:
        """The resolved :class:`ModelConfig` (validated first; errors name ``path``)."""
        self.validate(path)
        overrides = {
            k: v for k, v in dataclasses.asdict(self).items() if k != "name" and v is not None
        }
        return model_config(self.name, **overrides)


@dataclass
class MaskSpec:
    """Masking applied by the collator (True = hidden): kind and ratio."""

    kind: Literal["tube", "random", "frame"] = "tube"
    ratio: float = 0.9

    def validate(self, path: str = "mask") -> None:
        check(
            0.0 <= self.ratio < 1.0,
            f"config key '{path}.ratio' must be in [0, 1), got {self.ratio}",
        )


def model_overrides(raw: Mapping, path: str) -> dict:
    """``ModelConfig`` field overrides for ``load_encoder``, typed by the field annotations
    (``overrides.num_heads=2`` from the command line becomes the int 2); an unknown field fails
    naming the dotted key and the closest valid one."""
    hints = typing.get_type_hints(ModelConfig)
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    out = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(unknown_key(str(key), names, path))
        out[key] = coerce(hints[key], value, f"{path}.{key}")
    return out


def check_data_matches_model(data: DataConfig, cfg: ModelConfig, path: str) -> None:
    """The clip the data pipeline produces must be the clip the model was configured for."""
    pairs = (("num_frames", "num_frames"), ("input_size", "img_size"))
    for data_key, model_key in pairs:
        value = getattr(data, data_key)
        if value != getattr(cfg, model_key):
            raise ConfigError(
                f"config key 'data.{data_key}'={value} does not match '{path}.{model_key}'="
                f"{getattr(cfg, model_key)}; set both to the same value"
            )


# what each data kind's key must point at (the fix named by open_dataset's errors)
_EXPECTED_SOURCE = {
    "list": "a list file of 'path label' lines, one per video",
    "frames": "a list file of 'path num_frames label' lines, one per video",
    "folder": "a folder of <class>/<video> (or <split>/<class>/<video>) subfolders",
}


def open_dataset(data: DataConfig, split: str, purpose: str) -> Dataset:
    """``maskagain.data.build_dataset``, with a source that cannot give a dataset (a missing or
    empty list file, a root without videos, an unset list) reported as a one-line
    :class:`ConfigError` naming the data key to fix and what it must point at. Reads list files
    only, no video: call it before building any model so a bad source fails fast."""
    from maskagain.data import build_dataset

    key = "data.root" if data.kind == "folder" else f"data.{split}_list"
    if key == "data.test_list" and not data.test_list and data.val_list:
        key = "data.val_list"  # build_dataset tests on val_list when test_list is unset
    expected = _EXPECTED_SOURCE.get(data.kind)
    fix = f"; set it to {expected}" if expected else ""
    try:
        dataset = build_dataset(data, split, purpose)
    except (ValueError, OSError) as err:  # ListFormatError, no class folders, no such file
        message = " ".join(str(err).split())
        raise ConfigError(
            f"config key '{key}': no usable {split} dataset: {message}{fix}"
        ) from None
    if len(dataset) == 0:
        raise ConfigError(f"config key '{key}': the {split} dataset is empty{fix}")
    return dataset


def build_masked_trainer(
    cfg: Any,
    dist: DistInfo,
    run_dir: Path,
    module: nn.Module,
    step_fn: Any,
    dataset: Dataset,
    grid: tuple[int, int, int],
    name: str,
) -> tuple[Trainer, BadFileTracker]:
    """What masked pre-training and distillation share: items and per-clip masks seeded from
    ``(seed, epoch, index)``, the loader, AdamW with its schedule, bad-file accounting and the
    :class:`Trainer`. ``cfg`` has ``seed``, ``data``, ``mask``, ``optim``, ``schedule`` and
    ``engine`` sections; returns the trainer and the :class:`~maskagain.data.BadFileTracker`
    whose ``summary`` goes into ``summary.json``."""
    collate = MaskCollator(cfg.mask.kind, cfg.mask.ratio, grid, cfg.seed)
    loader, sampler = build_train_loader(
        SeededItems(dataset, cfg.seed), collate, cfg.engine, cfg.data.num_workers, dist, cfg.seed
    )
    steps = steps_per_epoch(len(sampler.order()), cfg.engine)
    total_batch = cfg.engine.batch_size * cfg.engine.accum_steps * dist.world_size
    optimizer, schedule = build_optimization(
        module, cfg.optim, cfg.schedule, steps, total_batch, dist.device
    )
    bad_files = BadFileTracker(cfg.data.max_bad_fraction, cfg.data.min_samples_for_bad_check)
    trainer = Trainer(
        engine=cfg.engine,
        dist=dist,
        run_dir=run_dir,
        model=module,
        step_fn=step_fn,
        optimizer=optimizer,
        schedule=schedule,
        loader=loader,
        sampler=sampler,
        epochs=cfg.schedule.epochs,
        clip_grad=cfg.optim.clip_grad,
        config=to_dict(cfg),
        batch_hook=bad_files.update,
        name=name,
    )
    return trainer, bad_files
