"""Typed run configuration: dataclass trees, YAML files with ``defaults`` includes, dotted overrides.

A run's configuration is a tree of dataclasses (``PretrainConfig``, ``DistillConfig`` and, for
other recipes, any dataclass built from the sections here). It is built once, at start-up:

1. :func:`load_yaml` reads a YAML file; a top-level ``defaults:`` entry (a path or a list of
   paths, relative to the file) names base files that are deep-merged first, the file on top.
2. ``key.sub=value`` overrides from the command line are applied to that raw tree.
3. :func:`from_dict` builds the dataclasses, coercing types; an unknown key, a wrong type or a
   value outside a ``Literal`` fails with a :class:`ConfigError` naming the dotted key, what was
   given and what would be valid (with close-match suggestions).
4. ``validate()`` methods check cross-field constraints (frames vs tubelet, k vs visible tokens,
   student vs teacher patch grids, ...).

The resolved tree is saved with the run (:func:`save_config`). Nothing here reads data.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from maskagain.data import DataConfig
from maskagain.losses import ObjectiveConfig
from maskagain.masking import MASKS, visible_count, visible_per_frame
from maskagain.models.registry import ARCHITECTURES, model_config
from maskagain.models.vit import ModelConfig


class ConfigError(ValueError):
    """An invalid configuration. ``str(err)`` is one actionable line naming the key."""


# ============================================================================ generic machinery
class RawValue(str):
    """A value typed on the command line: parsed according to the target field's type."""


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config, resolving its ``defaults`` (base files, deep-merged first)."""
    return _load_yaml(Path(path), seen=())


def _load_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself through 'defaults'")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {_one_line(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} must hold a mapping at the top, got {type(data).__name__}"
        )
    bases = data.pop("defaults", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, _load_yaml(path.parent / base, (*seen, path)))
    return deep_merge(merged, data)


def deep_merge(base: Mapping, top: Mapping) -> dict:
    """Recursively merge mapping ``top`` over ``base`` (returns a new dict)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a raw config tree (values typed later by the schema)."""
    tree = copy.deepcopy(dict(tree))  # never write into the caller's (nested) dicts
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = RawValue(value.strip())
    return tree


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a raw mapping, coercing and checking every field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{path or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields)
    for key in data:
        if key not in names:
            raise ConfigError(_unknown_key(str(key), names, path))
    kwargs = {
        k: _coerce(hints[k], _over_section_default(fields[k], hints[k], v), _join(path, k))
        for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise _section_error(err, cls, names, path) from None


def _over_section_default(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A partial section keeps its parent's defaults: ``student: {name: vit_small}`` keeps the
    ``drop_path_rate`` of ``DistillConfig``'s default student, not ``ModelSpec``'s."""
    if not (dataclasses.is_dataclass(tp) and isinstance(value, Mapping)):
        return value
    if f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    base = {
        g.name: _plain_default(getattr(default, g.name))
        for g in dataclasses.fields(default)
        if g.init
    }
    return deep_merge(base, value)


def _plain_default(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _section_error(err: Exception, cls: type, names: list[str], path: str) -> ConfigError:
    """A section's own check failed: name the dotted key of the field its message mentions
    first (``DataConfig.num_frames must be >= 1`` -> ``config key 'data.num_frames': ...``)."""
    message = re.sub(rf"\b{cls.__name__}\.", "", _one_line(err))
    found = []
    for name in names:
        m = re.search(rf"(?<![\w.']){re.escape(name)}(?![\w])", message)
        if m:
            found.append((m.start(), -len(name), name))
    if found:
        return ConfigError(f"config key '{_join(path, min(found)[2])}': {message}")
    return ConfigError(f"config section '{path or '<root>'}': {message}")


def check_seeds(cfg: Any, path: str = "") -> None:
    """Every ``seed`` / ``*_seed`` integer of a config tree must be >= 0 (NumPy's seed
    sequences, used for masks, clips and replacements, reject negative entropy mid-run)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = _join(path, f.name)
        if dataclasses.is_dataclass(value):
            check_seeds(value, key)
        elif (f.name == "seed" or f.name.endswith("_seed")) and isinstance(value, int):
            _check(value >= 0, f"config key '{key}' must be >= 0, got {value}")


def to_dict(cfg: Any) -> dict:
    """Plain dict of a config tree (tuples become lists, so it round-trips through YAML)."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (it loads back with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_config(cls: type, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
    """YAML file (optional) + dotted overrides -> validated config of type ``cls``."""
    tree = load_yaml(path) if path else {}
    cfg = from_dict(cls, apply_overrides(tree, overrides))
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    check_seeds(cfg)
    return cfg


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _unknown_key(key: str, names: list[str], path: str) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"did you mean '{_join(path, close[0])}'? " if close else ""
    return (
        f"unknown config key '{_join(path, key)}'; {hint}"
        f"valid keys{' in ' + repr(path) if path else ''}: {', '.join(names)}"
    )


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True}
_BOOL_WORDS.update({"false": False, "no": False, "off": False, "0": False})


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check/convert ``value`` to type ``tp`` (the annotations used by config dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(args, value, path)
    if isinstance(value, RawValue) and tp is not str and origin is not Literal:
        value = _parse_raw(value, path)
    if tp is Any:
        return _parse_raw(value, path) if isinstance(value, RawValue) else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Literal:
        return _coerce_literal(args, value, path)
    if origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(tp, origin or tp, args, value, path)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' expects a mapping, got {value!r}")
        item_tp = args[1] if len(args) == 2 else Any
        return {k: _coerce(item_tp, v, _join(path, str(k))) for k, v in value.items()}
    if tp in (int, float, bool, str):
        return _coerce_scalar(tp, value, path)
    return value


def _parse_raw(value: RawValue, path: str) -> Any:
    try:
        return yaml.safe_load(str(value)) if str(value) else ""
    except yaml.YAMLError:
        return str(value)


def _coerce_union(args: tuple, value: Any, path: str) -> Any:
    if type(None) in args and (
        value is None or (isinstance(value, str) and value in ("null", "None", "~"))
    ):
        return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for option in options:
        try:
            return _coerce(option, value, path)
        except ConfigError as err:
            errors.append(str(err))
    if len(errors) == 1:
        raise ConfigError(errors[0])
    names = " or ".join(_type_name(a) for a in args)
    raise ConfigError(f"config key '{path}' expects {names}, got {str(value)!r}")


def _coerce_literal(args: tuple, value: Any, path: str) -> Any:
    for option in args:
        if value == option or (isinstance(value, str) and str(option) == value):
            return option
    close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"config key '{path}' must be one of {', '.join(repr(a) for a in args)}, got {str(value)!r}{hint}"
    )


def _coerce_sequence(tp: Any, origin: type, args: tuple, value: Any, path: str) -> Any:
    if isinstance(value, (int, float, bool)):
        value = [value]  # a single value typed on the command line
    if isinstance(value, str):
        value = [v for v in (s.strip() for s in value.split(",")) if v] if value else []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key '{path}' expects a list ({_type_name(tp)}), got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{path}' expects {len(args)} values ({_type_name(tp)}), got {list(value)!r}"
            )
        items = [_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
    else:
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, _maybe_raw(v), f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _maybe_raw(v: Any) -> Any:
    return RawValue(v) if isinstance(v, str) and not isinstance(v, RawValue) else v


def _coerce_scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key '{path}' expects {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# ============================================================================ shared sections
Precision = Literal["bf16", "fp16", "fp32"]


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

    def _check_geometry(self, path: str) -> None:
        """Sizes >= 1, frames divisible by the tubelet, image size by the patch."""
        for key in ("img_size", "num_frames", "patch_size", "tubelet_size"):
            value = getattr(self, key)
            _check(value >= 1, f"config key '{path}.{key}' must be >= 1, got {value}")
        for key in ("embed_dim", "depth", "num_heads"):
            value = getattr(self, key)
            _check(
                value is None or value >= 1,
                f"config key '{path}.{key}' must be >= 1 or null (the architecture's), got {value}",
            )
        _check(
            0.0 <= self.drop_path_rate < 1.0,
            f"config key '{path}.drop_path_rate' must be in [0, 1), got {self.drop_path_rate}",
        )
        _check(
            self.init_values >= 0.0,
            f"config key '{path}.init_values' must be >= 0 (0: no layer scale), got {self.init_values}",
        )
        _check(
            self.num_frames % self.tubelet_size == 0,
            f"config key '{path}.num_frames'={self.num_frames} is not divisible by "
            f"'{path}.tubelet_size'={self.tubelet_size}; use a multiple of {self.tubelet_size}",
        )
        _check(
            self.img_size % self.patch_size == 0,
            f"config key '{path}.img_size'={self.img_size} is not divisible by "
            f"'{path}.patch_size'={self.patch_size}; use a multiple of {self.patch_size}",
        )

    def model_config(self, path: str = "model") -> ModelConfig:
        """The resolved :class:`ModelConfig` (raises :class:`ConfigError` naming ``path``)."""
        if self.name not in ARCHITECTURES:
            close = difflib.get_close_matches(self.name, list(ARCHITECTURES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"config key '{path}.name' must be one of {', '.join(ARCHITECTURES)}, got {self.name!r}{hint}"
            )
        self._check_geometry(path)
        overrides = {
            k: v for k, v in dataclasses.asdict(self).items() if k != "name" and v is not None
        }
        try:
            return model_config(self.name, **overrides)
        except (ValueError, TypeError) as err:
            names = [f.name for f in dataclasses.fields(self)]
            raise _section_error(err, type(self), names, path) from None


@dataclass
class MaskSpec:
    """Masking applied by the collator (True = hidden): kind and ratio."""

    kind: Literal["tube", "random", "frame"] = "tube"
    ratio: float = 0.9

    def validate(self, path: str = "mask") -> None:
        _check(self.kind in MASKS, f"config key '{path}.kind' must be one of {sorted(MASKS)}")
        _check(
            0.0 <= self.ratio < 1.0,
            f"config key '{path}.ratio' must be in [0, 1), got {self.ratio}",
        )


@dataclass
class OptimConfig:
    """AdamW. The peak lr is ``lr`` if set, else ``base_lr * total_batch / 256``."""

    base_lr: float = 1.5e-4
    lr: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    clip_grad: float | None = None
    fused: bool | None = None  # null: fused on CUDA, foreach elsewhere

    def peak_lr(self, total_batch: int) -> float:
        """Peak learning rate for ``total_batch`` clips per optimizer step (linear scaling rule)."""
        return self.lr if self.lr is not None else self.base_lr * total_batch / 256

    def validate(self, path: str = "optim") -> None:
        _check(self.base_lr > 0, f"config key '{path}.base_lr' must be > 0, got {self.base_lr}")
        _check(
            self.lr is None or self.lr > 0,
            f"config key '{path}.lr' must be > 0 or null, got {self.lr}",
        )
        _check(self.weight_decay >= 0, f"config key '{path}.weight_decay' must be >= 0")
        _check(self.eps > 0, f"config key '{path}.eps' must be > 0, got {self.eps}")
        _check(
            all(0.0 <= b < 1.0 for b in self.betas),
            f"config key '{path}.betas' must be two values in [0, 1), got {list(self.betas)}",
        )
        _check(
            self.clip_grad is None or self.clip_grad > 0,
            f"config key '{path}.clip_grad' must be > 0 or null (no clipping), got {self.clip_grad}",
        )


@dataclass
class ScheduleConfig:
    """Per-step cosine schedule with linear warm-up from ``warmup_lr`` to the peak lr."""

    epochs: int = 400
    warmup_epochs: float = 40
    warmup_lr: float = 0.0
    min_lr: float = 1e-5

    def validate(self, path: str = "schedule") -> None:
        _check(self.epochs >= 1, f"config key '{path}.epochs' must be >= 1, got {self.epochs}")
        _check(
            0 <= self.warmup_epochs <= self.epochs,
            f"config key '{path}.warmup_epochs' must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        _check(self.min_lr >= 0, f"config key '{path}.min_lr' must be >= 0")
        _check(self.warmup_lr >= 0, f"config key '{path}.warmup_lr' must be >= 0")


@dataclass
class EngineConfig:
    """How the shared training engine runs (device, precision, batching, logs, checkpoints)."""

    batch_size: int = 64  # clips per process and micro-step
    accum_steps: int = 1  # micro-batches per optimizer step
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Precision = "bf16"
    grad_checkpointing: bool = False
    compile: bool = False
    find_unused_parameters: bool = False
    ema_decay: float = 0.0  # 0 disables the model EMA
    log_every: int = 20  # optimizer steps between log lines (and host syncs)
    ckpt_every_epochs: int = 1
    ckpt_every_steps: int = 0  # 0: only at epoch ends
    keep_checkpoints: int = 2
    stop_after_steps: int | None = None  # leave the run early (schedule unchanged); resumable
    max_steps_per_epoch: int | None = None  # cap the epoch length (smoke runs)
    tensorboard: bool = True
    progress: bool = True

    def validate(self, path: str = "engine") -> None:
        for key in ("batch_size", "accum_steps", "log_every", "keep_checkpoints"):
            value = getattr(self, key)
            _check(value >= 1, f"config key '{path}.{key}' must be >= 1, got {value}")
        for key in ("ckpt_every_epochs", "ckpt_every_steps"):
            value = getattr(self, key)
            _check(value >= 0, f"config key '{path}.{key}' must be >= 0, got {value}")
        _check(
            0.0 <= self.ema_decay < 1.0,
            f"config key '{path}.ema_decay' must be in [0, 1) (0 disables), got {self.ema_decay}",
        )
        for key in ("stop_after_steps", "max_steps_per_epoch"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"config key '{path}.{key}' must be >= 1 or null")


def check_model_geometry(
    spec: ModelSpec, cfg: ModelConfig | None = None, path: str = "model"
) -> None:
    """Frames divisible by the tubelet, image size by the patch (``cfg`` is not needed; kept for
    callers that pass the resolved ModelConfig)."""
    spec._check_geometry(path)


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


# ============================================================================ recipe configs
@dataclass
class DecoderSpec:
    """VideoMAE pre-training decoder; null width/heads follow VideoMAE (encoder width / 2, /64)."""

    depth: int = 4
    embed_dim: int | None = None
    num_heads: int | None = None
    norm_pix_loss: bool = True

    def resolved(self, encoder_dim: int) -> tuple[int, int]:
        """(decoder width, decoder heads) for an encoder of width ``encoder_dim``."""
        dim = self.embed_dim or encoder_dim // 2
        heads = self.num_heads or max(1, dim // 64)
        return dim, heads

    def validate(self, encoder_dim: int, path: str = "decoder") -> None:
        _check(self.depth >= 1, f"config key '{path}.depth' must be >= 1, got {self.depth}")
        for key in ("embed_dim", "num_heads"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"config key '{path}.{key}' must be >= 1 or null")
        dim, heads = self.resolved(encoder_dim)
        _check(
            dim % heads == 0,
            f"config key '{path}.embed_dim'={dim} is not divisible by '{path}.num_heads'={heads}",
        )


@dataclass
class PretrainConfig:
    """``maskagain pretrain``: VideoMAE pre-training of a teacher."""

    out_dir: str = "runs/pretrain"
    seed: int = 0
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name="vit_base"))
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskSpec = field(default_factory=MaskSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=800))
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> None:
        mcfg = self.model.model_config("model")
        check_data_matches_model(self.data, mcfg, "model")
        self.decoder.validate(mcfg.embed_dim)
        self.mask.validate()
        self.optim.validate()
        self.schedule.validate()
        self.engine.validate()


@dataclass
class TeacherSpec:
    """The frozen teacher: any source ``maskagain.models.load_encoder`` reads.

    ``overrides`` are passed on to the loader (e.g. ``img_size`` to interpolate positions);
    ``precision`` is the teacher's autocast dtype (it always runs under inference mode).
    """

    source: str = ""
    overrides: dict = field(default_factory=dict)
    precision: Precision = "bf16"

    def validate(self, path: str = "teacher") -> None:
        self.overrides = model_overrides(self.overrides, f"{path}.overrides")


def model_overrides(raw: Mapping, path: str) -> dict:
    """``ModelConfig`` field overrides (for ``load_encoder``), typed by the field annotations;
    an unknown field fails naming the dotted key and the closest valid one."""
    hints = typing.get_type_hints(ModelConfig)
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    out = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(_unknown_key(str(key), names, path))
        out[key] = _coerce(hints[key], value, _join(path, key))
    return out


@dataclass
class DistillConfig:
    """``maskagain distill``: MaskAgain distillation of a student trained from scratch."""

    out_dir: str = "runs/distill"
    seed: int = 0
    student: ModelSpec = field(
        default_factory=lambda: ModelSpec(name="vit_base", drop_path_rate=0.1)
    )
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskSpec = field(default_factory=MaskSpec)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> None:
        """Static checks; the teacher's geometry is checked by :func:`check_teacher` once loaded."""
        scfg = self.student.model_config("student")
        check_data_matches_model(self.data, scfg, "student")
        self.teacher.validate()
        self.mask.validate()
        check_objective_k(self.objective, self.mask, scfg.grid)
        self.optim.validate()
        self.schedule.validate()
        self.engine.validate()


def check_objective_k(
    objective: ObjectiveConfig, mask: MaskSpec, grid: tuple[int, int, int]
) -> None:
    """Every top-k of the objective must fit in the tokens a mask leaves visible."""
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
        _check(
            not uses[term] or k <= limit,
            f"config key 'objective.{key}'={k} is larger than the {limit} {where} of the "
            f"{term} term (grid {grid}, {mask.kind} mask ratio {mask.ratio}); use k <= {limit} "
            "or a lower mask.ratio",
        )


def check_teacher(student: ModelConfig, teacher: ModelConfig) -> None:
    """Student and teacher must see the clip as the same token grid (same visible tokens)."""
    for key in ("patch_size", "tubelet_size", "img_size", "num_frames"):
        s, t = getattr(student, key), getattr(teacher, key)
        _check(
            s == t,
            f"config key 'student.{key}'={s} does not match the teacher's {key}={t}; student and "
            f"teacher must share the patch grid (set student.{key}={t} or teacher.overrides.{key}={s})",
        )
