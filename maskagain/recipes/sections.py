"""The config sections several recipes share: the model (a registered architecture plus field
overrides, and its weight initialisation when it is trained from scratch), the mask, and the
checks between a model and its data. Like :mod:`maskagain.recipes.configs`, it imports neither
torch nor PyAV (the checks that need the model registry import it when they run).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from maskagain.config import ConfigError, check, coerce, unknown_key
from maskagain.data.config import DataConfig

if TYPE_CHECKING:
    from maskagain.models.vit import ModelConfig, VideoViT


@dataclass
class ModelSpec:
    """A registered architecture (``maskagain.models.ARCHITECTURES``) plus field overrides.

    ``embed_dim`` / ``depth`` / ``num_heads`` left at null keep the architecture's values.
    """

    name: str = "vit_small"
    """architecture: vit_micro, vit_nano, vit_tiny, vit_small, vit_base, vit_large, ...
    (`maskagain ls models`)"""
    img_size: int = 224
    """input frame size in pixels (a multiple of patch_size); must equal data.input_size"""
    num_frames: int | None = None
    """frames per clip; null: data.num_frames (set it there once)"""
    patch_size: int = 16
    """spatial patch size in pixels"""
    tubelet_size: int = 2
    """frames per token (the temporal patch size)"""
    drop_path_rate: float = 0.0
    """stochastic depth, rising linearly over the blocks to this rate (0: off)"""
    init_values: float = 0.0
    """layer-scale initial value (0: no layer scale)"""
    embed_dim: int | None = None
    """token width; null: the architecture's"""
    depth: int | None = None
    """number of transformer blocks; null: the architecture's"""
    num_heads: int | None = None
    """attention heads per block; null: the architecture's"""

    def follow_data(self, data: DataConfig) -> None:
        """A ``num_frames`` left at null takes the data's clip length."""
        if self.num_frames is None:
            self.num_frames = data.num_frames

    def validate(self, path: str = "model") -> None:
        """Known name, sizes >= 1, frames divisible by the tubelet, image size by the patch,
        width by the head count."""
        from maskagain.models.registry import ARCHITECTURES

        close = difflib.get_close_matches(self.name, list(ARCHITECTURES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        check(
            self.name in ARCHITECTURES,
            f"config key '{path}.name' must be one of {', '.join(ARCHITECTURES)}, "
            f"got {self.name!r}{hint}",
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
        from maskagain.models.registry import model_config

        self.validate(path)
        overrides = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in _NOT_MODEL_FIELDS and v is not None
        }
        return model_config(self.name, **overrides)


_NOT_MODEL_FIELDS = ("name", "init")  # spec fields that are not ModelConfig fields


@dataclass
class ScratchModelSpec(ModelSpec):
    """A model trained from scratch (pre-training, a distilled student): a :class:`ModelSpec`
    plus its weight initialisation, ``maskagain.models.init.init_weights``.

    ``init``: "trunc_normal" keeps ``VideoViT``'s own initialisation (truncated normal 0.02);
    "official" re-initialises as the official VideoMAE / MVD / AMD pre-training encoders do
    (xavier-uniform Linear weights, PyTorch's default Conv3d).
    """

    init: Literal["official", "trunc_normal"] = "trunc_normal"
    """weight initialisation: trunc_normal (VideoViT's own) or official (as VideoMAE/MVD/AMD)"""

    def build(self, path: str = "model") -> VideoViT:
        """A freshly initialised ``VideoViT`` (``init`` applied)."""
        from maskagain.models.init import init_weights
        from maskagain.models.vit import VideoViT

        model = VideoViT(self.model_config(path))
        if self.init != "trunc_normal":  # trunc_normal: what VideoViT's constructor drew
            init_weights(model, self.init)
        return model


@dataclass
class MaskSpec:
    """Masking applied by the collator (True = hidden): kind and ratio."""

    kind: Literal["tube", "random", "frame"] = "tube"
    """mask pattern: tube (same patches in every frame), random (per token) or frame"""
    ratio: float = 0.9
    """share of tokens hidden from the model, in [0, 1)"""

    def validate(self, path: str = "mask") -> None:
        check(
            0.0 <= self.ratio < 1.0,
            f"config key '{path}.ratio' must be in [0, 1), got {self.ratio}",
        )


def model_overrides(raw: Mapping, path: str, allowed: tuple[str, ...] | None = None) -> dict:
    """``ModelConfig`` field overrides for ``load_encoder``, typed by the field annotations
    (``overrides.num_heads=2`` from the command line becomes the int 2); an unknown field fails
    naming the dotted key and the closest valid one. ``allowed``: the fields a loader takes
    (default: every field)."""
    from maskagain.models.vit import ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    names = list(allowed or (f.name for f in dataclasses.fields(ModelConfig)))
    out = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(unknown_key(str(key), names, path))
        out[key] = coerce(hints[key], value, f"{path}.{key}")
    return out


def check_data_matches_model(data: DataConfig, cfg: ModelConfig, path: str) -> None:
    """The clip the data pipeline produces must be the clip the model was configured for."""
    pairs = (("num_frames", "num_frames"), ("input_size", "img_size"))
    for data_key, model_key in pairs:
        value = getattr(data, data_key)
        check(
            value == getattr(cfg, model_key),
            f"config key 'data.{data_key}'={value} does not match '{path}.{model_key}'="
            f"{getattr(cfg, model_key)}; set both to the same value",
        )
