"""The objective's configuration: loss weights, top-k, temperatures and choices (no torch), and
the presets of the paper's text and the official scripts."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

from maskagain.config import ConfigError

BASELINES = ("hint_all", "attention_transfer", "value_transfer", "weighted_value_transfer")
_CHOICES = ("relation_softmax", "selection", "projection", "hint_projection", "at_mode")


@dataclass
class ObjectiveConfig:
    """Weights and settings of every loss term. Defaults: MaskAgain-B (paper section 4.1).

    alpha/beta/gamma/lam weight MAGlobal / MALocal / MAHint / MARel (lam is lambda).
    k is the top-k of every selection; k_global / k_local / k_hint override it per term (None ->
    k; k_hint drives F_act, shared by MAHint and MARel). tau_att: attention temperature of the
    hidden-level terms and of the Attention / Weighted Value Transfer baselines. tau_s / tau_t:
    MARel temperatures. renormalize: softmax over the kept logits (official) or the full-row
    softmax weights (eq. 3 literally). relation_softmax: "row" (official) or "matrix" (eq. 15).
    selection: top-k keys chosen by each model ("separate", the default, Table 5) or by the
    teacher for both. layer: block whose attention is distilled (negative counts from the end).
    projection: "student" (student-side phi only) or "both" (also a trainable teacher-side
    Linear on the hidden-level features, as the official code; both sides of an MSE trainable
    can collapse). hint_projection: phi'' ("auto": MLP when widths differ, identity otherwise).
    baselines: weights of extra terms, keys in ``BASELINES``: "hint_all" (Hint on every output
    token), "attention_transfer" (``at_mode`` "kl" or "mse"), "value_transfer",
    "weighted_value_transfer".
    """

    alpha: float = 3.0
    beta: float = 1.0
    gamma: float = 0.2
    lam: float = 0.1
    k: int = 10
    k_global: int | None = None
    k_local: int | None = None
    k_hint: int | None = None
    tau_att: float = 1.0
    tau_s: float = 0.1
    tau_t: float = 0.05
    renormalize: bool = True
    relation_softmax: Literal["row", "matrix"] = "row"
    selection: Literal["separate", "teacher"] = "separate"
    layer: int = -1
    projection: Literal["student", "both"] = "student"
    hint_projection: Literal["auto", "mlp", "linear", "identity"] = "auto"
    baselines: dict[str, float] = field(default_factory=dict)
    at_mode: Literal["kl", "mse"] = "kl"

    def validate(self, path: str = "objective") -> None:
        """Types, ranges and choices; raises :class:`ConfigError` naming ``path.key``."""
        for name in ("alpha", "beta", "gamma", "lam"):
            _check_weight(f"{path}.{name}", getattr(self, name))
        _check_int(f"{path}.k", self.k, minimum=1)
        for name in ("k_global", "k_local", "k_hint"):
            if getattr(self, name) is not None:
                _check_int(f"{path}.{name}", getattr(self, name), minimum=1)
        for name in ("tau_att", "tau_s", "tau_t"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"config key '{path}.{name}' must be a number > 0, got {value!r}")
        if not isinstance(self.renormalize, bool):
            raise ConfigError(
                f"config key '{path}.renormalize' must be true or false, got {self.renormalize!r}"
            )
        _check_int(f"{path}.layer", self.layer, minimum=None)
        hints = typing.get_type_hints(ObjectiveConfig)
        for name in _CHOICES:
            valid = typing.get_args(hints[name])
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"config key '{path}.{name}' must be one of {list(valid)}, "
                    f"got {getattr(self, name)!r}"
                )
        if not isinstance(self.baselines, dict):
            raise ConfigError(
                f"config key '{path}.baselines' must be a mapping name -> weight, "
                f"got {self.baselines!r}"
            )
        for name, weight in self.baselines.items():
            if name not in BASELINES:
                raise ConfigError(
                    f"config key '{path}.baselines': unknown term {name!r}; valid terms: "
                    f"{list(BASELINES)}"
                )
            _check_weight(f"{path}.baselines.{name}", weight)
        if not self.weights():
            raise ConfigError(
                f"config section '{path}': every loss weight is 0 (alpha, beta, gamma, lam and "
                "baselines): nothing to train"
            )

    def weights(self) -> dict[str, float]:
        """Active terms (weight > 0) -> weight, in a fixed order."""
        main = {"global": self.alpha, "local": self.beta, "hint": self.gamma, "relation": self.lam}
        extra = {name: self.baselines.get(name, 0.0) for name in BASELINES}
        return {name: float(w) for name, w in {**main, **extra}.items() if w > 0}

    def k_for(self, term: str) -> int:
        """top-k of "global", "local" or "hint" (F_act, shared with "relation")."""
        value = getattr(self, f"k_{term}")
        return self.k if value is None else value

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_weight(key: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"config key '{key}' must be a finite number >= 0 (0 switches it off), got {value!r}"
        )


def _check_int(key: str, value: object, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"config key '{key}' must be >= {minimum}, got {value}")


# Paper text (section 4.1) and the official scripts (official-code-notes.md).
PRESETS: dict[str, dict] = {
    "maskagain_b": dict(alpha=3.0, beta=1.0, gamma=0.2, lam=0.1),
    "maskagain_s": dict(alpha=3.0, beta=0.1, gamma=0.1, lam=0.1),
    "k400_vit_b": dict(alpha=3.0, beta=1.0, gamma=0.2, lam=0.1),
    "k400_vit_s": dict(alpha=0.1, beta=3.0, gamma=0.1, lam=0.1),
    "ucf101_vit_b": dict(alpha=3.0, beta=1.0, gamma=0.1, lam=0.1),
    "ucf101_vit_s": dict(alpha=1.0, beta=3.0, gamma=0.1, lam=0.1),
}


def objective_preset(name: str, **overrides) -> ObjectiveConfig:
    """ObjectiveConfig of a named preset (``PRESETS``) with field ``overrides`` applied.

    "maskagain_b" / "maskagain_s": the paper's text; "k400_vit_b", "k400_vit_s", "ucf101_vit_b",
    "ucf101_vit_s": the official per-dataset scripts. All use k=10, tau_att=1, tau_s=0.1,
    tau_t=0.05.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown objective preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown objective option(s) {bad}; valid options: {sorted(fields)}")
    return ObjectiveConfig(**{**PRESETS[name], **overrides})
