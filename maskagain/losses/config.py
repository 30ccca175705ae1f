"""The objectives' configurations (no torch): MaskAgain's loss weights, top-k, temperatures and
choices with the presets of the paper's text and the official scripts, and the settings of the
peer methods MVD (:class:`MVDConfig`) and AMD (:class:`AMDConfig`)."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

from maskagain.config import check

ObjectiveKind = Literal["maskagain", "mvd", "amd"]
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

    kind: which objective a distillation trains: "maskagain" (the terms above), "mvd" (the
    ``mvd`` section of the run's config, :class:`MVDConfig`) or "amd" (:class:`AMDConfig`); the
    MaskAgain weights are unused by the other kinds. pixel_weight: weight of VideoMAE's pixel
    reconstruction of the student's hidden tokens added to any kind (0: no pixel decoder; AMD
    trains with 1).
    """

    alpha: float = 3.0
    """weight of MAGlobal (top-k attention over the clip)"""
    beta: float = 1.0
    """weight of MALocal (top-k attention per frame)"""
    gamma: float = 0.2
    """weight of MAHint (top-k activations)"""
    lam: float = 0.1
    """weight of MARel (relations of the top-k activations; lambda in the paper)"""
    k: int = 10
    """top-k of every selection"""
    k_global: int | None = None
    """top-k of MAGlobal; null: k"""
    k_local: int | None = None
    """top-k of MALocal; null: k"""
    k_hint: int | None = None
    """top-k of MAHint and MARel; null: k"""
    tau_att: float = 1.0
    """attention temperature of the hidden-level terms"""
    tau_s: float = 0.1
    """MARel temperature of the student"""
    tau_t: float = 0.05
    """MARel temperature of the teacher"""
    renormalize: bool = True
    """softmax over the kept top-k logits (official) rather than the whole row (eq. 3)"""
    relation_softmax: Literal["row", "matrix"] = "row"
    """MARel softmax per row (official) or over the matrix (eq. 15)"""
    selection: Literal["separate", "teacher"] = "separate"
    """top-k chosen by each model (separate) or by the teacher for both"""
    layer: int = -1
    """block whose attention is distilled (negative: from the end)"""
    projection: Literal["student", "both"] = "student"
    """trainable projection on the student side only, or on both sides"""
    hint_projection: Literal["auto", "mlp", "linear", "identity"] = "auto"
    """MAHint projection: auto (MLP when widths differ), mlp, linear or identity"""
    baselines: dict[str, float] = field(default_factory=dict)
    """weights of baseline terms: hint_all, attention_transfer, value_transfer,
    weighted_value_transfer"""
    at_mode: Literal["kl", "mse"] = "kl"
    """attention_transfer loss: kl or mse"""
    kind: ObjectiveKind = "maskagain"
    """objective: maskagain, mvd (the mvd section) or amd (the amd section)"""
    pixel_weight: float = 0.0
    """weight of an extra VideoMAE pixel reconstruction term (0: none)"""

    def validate(self, path: str = "objective") -> None:
        """Types, ranges and choices; raises :class:`ConfigError` naming ``path.key``."""
        for name in ("alpha", "beta", "gamma", "lam", "pixel_weight"):
            _check_weight(f"{path}.{name}", getattr(self, name))
        _check_choice(f"{path}.kind", self.kind, ObjectiveKind)
        _check_int(f"{path}.k", self.k, minimum=1)
        for name in ("k_global", "k_local", "k_hint"):
            if getattr(self, name) is not None:
                _check_int(f"{path}.{name}", getattr(self, name), minimum=1)
        for name in ("tau_att", "tau_s", "tau_t"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            check(
                number and value > 0,
                f"config key '{path}.{name}' must be a number > 0, got {value!r}",
            )
        check(
            isinstance(self.renormalize, bool),
            f"config key '{path}.renormalize' must be true or false, got {self.renormalize!r}",
        )
        _check_int(f"{path}.layer", self.layer, minimum=None)
        hints = typing.get_type_hints(ObjectiveConfig)
        for name in _CHOICES:
            _check_choice(f"{path}.{name}", getattr(self, name), hints[name])
        check(
            isinstance(self.baselines, dict),
            f"config key '{path}.baselines' must be a mapping name -> weight, "
            f"got {self.baselines!r}",
        )
        for name, weight in self.baselines.items():
            check(
                name in BASELINES,
                f"config key '{path}.baselines': unknown term {name!r}; valid terms: "
                f"{list(BASELINES)}",
            )
            _check_weight(f"{path}.baselines.{name}", weight)
        check(
            bool(self.weights()),
            f"config section '{path}': every loss weight is 0 (alpha, beta, gamma, lam and "
            "baselines): nothing to train",
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


def _finite(value: object) -> bool:
    """A real number (not a bool), finite."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value)


def _check_weight(key: str, value: object) -> None:
    check(
        _finite(value) and value >= 0,
        f"config key '{key}' must be a finite number >= 0 (0 switches it off), got {value!r}",
    )


def _check_positive(key: str, value: object) -> None:
    check(
        _finite(value) and value > 0,
        f"config key '{key}' must be a finite number > 0, got {value!r}",
    )


def _check_fraction(key: str, value: float) -> None:
    check(0.0 <= value < 1.0, f"config key '{key}' must be in [0, 1), got {value}")


def _check_weights(path: str, section: object, names: tuple[str, str]) -> None:
    """Each weight a finite number >= 0, and not both 0."""
    for name in names:
        _check_weight(f"{path}.{name}", getattr(section, name))
    a, b = names
    check(
        any(getattr(section, name) > 0 for name in names),
        f"config keys '{path}.{a}' and '{path}.{b}' are both 0: nothing to train",
    )


def _check_int(key: str, value: object, minimum: int | None) -> None:
    integer = isinstance(value, int) and not isinstance(value, bool)
    check(integer, f"config key '{key}' must be an integer, got {value!r}")
    check(
        minimum is None or value >= minimum, f"config key '{key}' must be >= {minimum}, got {value}"
    )


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


# ----------------------------------------------------------------------------- peer methods
FeatureLoss = Literal["smooth_l1", "mse", "l1"]


@dataclass
class MVDConfig:
    """Decoder shape, loss and teacher weights of MVD (``maskagain.losses.mvd``). ``None``
    widths follow the student.

    Defaults: the published MVD scripts (2 decoder blocks, SmoothL1, no target normalisation,
    drop path 0.1), with the video teacher only (``image_weight=0``). Checked when built
    (:class:`ConfigError`, a ``ValueError``, naming ``mvd.<key>``).
    """

    decoder_depth: int = 2
    """blocks of each feature decoder"""
    decoder_dim: int | None = None
    """decoder width; null: the student's"""
    decoder_heads: int | None = None
    """decoder heads; null: the student's"""
    mlp_ratio: float = 4.0
    """decoder MLP width / decoder width"""
    decoder_drop_path: float = 0.1
    """stochastic depth of the decoders"""
    loss: FeatureLoss = "smooth_l1"
    """feature loss: smooth_l1, mse or l1"""
    norm_target: bool = False
    """LayerNorm the teacher's features before regressing them"""
    video_weight: float = 1.0
    """weight of the video teacher's term"""
    image_weight: float = 0.0
    """weight of the image teacher's term (0: no image teacher)"""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "mvd") -> None:
        _check_choice(f"{path}.loss", self.loss, FeatureLoss)
        _check_int(f"{path}.decoder_depth", self.decoder_depth, minimum=1)
        _check_positive(f"{path}.mlp_ratio", self.mlp_ratio)
        for name in ("decoder_dim", "decoder_heads"):
            if getattr(self, name) is not None:
                _check_int(f"{path}.{name}", getattr(self, name), minimum=1)
        _check_fraction(f"{path}.decoder_drop_path", self.decoder_drop_path)
        _check_weights(path, self, ("video_weight", "image_weight"))

    def weights(self) -> dict[str, float]:
        """Active teachers (weight > 0) -> weight: "video", "image"."""
        w = {"video": float(self.video_weight), "image": float(self.image_weight)}
        return {k: v for k, v in w.items() if v > 0}


@dataclass
class AMDConfig:
    """Layers, generator, losses and teacher mask of AMD (``maskagain.losses.amd``).
    Defaults: the published AMD scripts.

    student_layers / teacher_layers: aligned blocks, 0-based (negative from the end), paired in
    order; None -> the middle and the last block (``depth // 2 - 1`` and ``depth - 1``: blocks
    6 and 12 of a 12-block student, 12 and 24 of a 24-block teacher, counted from 1).
    generator_depth: blocks per generator; generator_head_dim: width of one generator head
    (heads = teacher width / head dim). loss: "mse" (official ``l2``), "l1" or "smooth_l1".
    direct_weight / generation_weight: ``dirfac`` / ``genfac``. teacher_ratio: the teacher's
    tube-mask ratio (``--mask_ratio_teacher``), below the student's ``mask.ratio``.
    """

    student_layers: tuple[int, ...] | None = None
    """student blocks aligned to the teacher's, 0-based; null: the middle and last"""
    teacher_layers: tuple[int, ...] | None = None
    """teacher blocks paired with student_layers; null: the middle and last"""
    generator_depth: int = 2
    """blocks per feature generator"""
    generator_head_dim: int = 64
    """width of one generator head"""
    mlp_ratio: float = 4.0
    """generator MLP width / generator width"""
    generator_drop_path: float = 0.0
    """stochastic depth of the generators"""
    loss: FeatureLoss = "mse"
    """feature loss: mse, l1 or smooth_l1"""
    direct_weight: float = 1.0
    """weight of the direct alignment term (dirfac)"""
    generation_weight: float = 1.0
    """weight of the generation term (genfac)"""
    teacher_ratio: float = 0.75
    """tube-mask ratio of the teacher's input, below mask.ratio"""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "amd") -> None:
        _check_choice(f"{path}.loss", self.loss, FeatureLoss)
        _check_int(f"{path}.generator_depth", self.generator_depth, minimum=1)
        _check_int(f"{path}.generator_head_dim", self.generator_head_dim, minimum=1)
        _check_positive(f"{path}.mlp_ratio", self.mlp_ratio)
        _check_fraction(f"{path}.generator_drop_path", self.generator_drop_path)
        _check_weights(path, self, ("direct_weight", "generation_weight"))
        _check_fraction(f"{path}.teacher_ratio", self.teacher_ratio)
        s, t = self.student_layers, self.teacher_layers
        paired = (s is None and t is None) or (
            s is not None and t is not None and 0 < len(s) == len(t)
        )
        check(
            paired,
            f"config keys '{path}.student_layers' and '{path}.teacher_layers' pair up one to "
            f"one (or are both null), got {s} and {t}",
        )

    def weights(self) -> dict[str, float]:
        """Active terms (weight > 0) -> weight: "direct", "generation"."""
        w = {"direct": float(self.direct_weight), "generation": float(self.generation_weight)}
        return {k: v for k, v in w.items() if v > 0}

    def layer_pairs(self, student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
        """Aligned (student block, teacher block) pairs as configured (negative indices count
        from the end; ``AMDObjective`` resolves them against the encoders)."""
        s, t = self.student_layers, self.teacher_layers
        if s is None:
            s = (student_depth // 2 - 1, student_depth - 1)
            t = (teacher_depth // 2 - 1, teacher_depth - 1)
        return list(zip(s, t))


def _check_choice(key: str, value: object, choices: object) -> None:
    valid = typing.get_args(choices)
    check(value in valid, f"config key '{key}' must be one of {list(valid)}, got {value!r}")
