"""The MaskAgain objective: one module that owns every projection and returns named losses.

``L = alpha * L_global + beta * L_local + lam * L_relation + gamma * L_hint`` (eqs. 9, 18, 19),
plus optional baselines of Tables 3-4, each with its own weight. A weight of 0 switches a term
off: it is neither computed nor returned, and its projection is not built.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from maskagain.losses.baselines import attention_transfer_loss
from maskagain.losses.config import ObjectiveConfig
from maskagain.losses.hidden import (
    aggregate_full,
    aggregate_global,
    aggregate_local,
    feature_mse,
    merge_heads,
    teacher_target,
)
from maskagain.losses.output import hint_loss, relation_loss
from maskagain.losses.projection import hint_projection, linear_or_identity
from maskagain.losses.query import EncoderQuery
from maskagain.losses.selection import (
    FrameGroups,
    activation_topk,
    frame_groups,
    gather_frame_logits,
    select_global,
    select_local,
)
from maskagain.masking import take_tokens
from maskagain.models.layers import AttentionTap, resolve_block
from maskagain.models.vit import EncoderOutput

log = logging.getLogger(__name__)

# terms that need an attention tap (logits and values of one block)
HIDDEN_TERMS = (
    "global",
    "local",
    "attention_transfer",
    "value_transfer",
    "weighted_value_transfer",
)
# hidden-level terms compared as features through phi (student) and, optionally, a teacher phi
FEATURE_TERMS = ("global", "local", "value_transfer", "weighted_value_transfer")


def _block(layer: int, depth: int | None) -> int:
    """The objective's ``layer`` as a block index of a ``depth``-block encoder (as given when
    the depth is unknown)."""
    return layer if depth is None else resolve_block(layer, depth)


class MaskAgainObjective(nn.Module):
    """Student-teacher objective returning ``{"global", "local", "hint", "relation", <baselines>,
    "loss"}``: unweighted active terms and the weighted total under "loss".

    student_dim / student_heads, teacher_dim / teacher_heads: embedding widths and head counts
    (``model.cfg.embed_dim``, ``model.cfg.num_heads``). num_frames: token frames F (``num_frames
    // tubelet_size``); None infers it from ``frame_index`` per batch (same loss value, one more
    host sync). student_depth / teacher_depth: block counts; a negative ``layer`` is resolved
    against them once, here, so the encoders are asked for (and return) non-negative block
    indices. Without a depth a negative layer is passed on as given and the side's only tap is
    used.
    Ask the encoders for ``attn_layers_student`` / ``attn_layers_teacher``. Every projection is a
    submodule: it trains, saves and restores with ``state_dict`` like any module.
    """

    def __init__(
        self,
        cfg: ObjectiveConfig,
        student_dim: int,
        student_heads: int,
        teacher_dim: int,
        teacher_heads: int,
        num_frames: int | None = None,
        student_depth: int | None = None,
        teacher_depth: int | None = None,
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.student_heads, self.teacher_heads = student_heads, teacher_heads
        self.num_frames = num_frames
        self.student_depth, self.teacher_depth = student_depth, teacher_depth
        self.student_block = _block(cfg.layer, student_depth)
        self.teacher_block = _block(cfg.layer, teacher_depth)
        self.term_weights = cfg.weights()
        # set by the recipe when every clip has a tube mask: MALocal's frame layout is then
        # known without a host sync (checked on the device)
        self.tube_masks = False
        self._check_heads()
        self.student_proj = nn.ModuleDict()
        self.teacher_proj = nn.ModuleDict()
        for term in FEATURE_TERMS:
            if term not in self.term_weights:
                continue
            if cfg.projection == "both":
                self.student_proj[term] = nn.Linear(student_dim, teacher_dim)
                self.teacher_proj[term] = nn.Linear(teacher_dim, teacher_dim)
            else:
                self.student_proj[term] = linear_or_identity(student_dim, teacher_dim)
        for term in ("hint", "hint_all"):
            if term in self.term_weights:
                self.student_proj[term] = hint_projection(
                    student_dim, teacher_dim, cfg.hint_projection
                )
        log.info("objective terms %s", self.term_weights)

    @classmethod
    def from_models(
        cls,
        cfg: ObjectiveConfig,
        student: nn.Module,
        teacher: nn.Module,
        num_frames: int | None = None,
    ) -> MaskAgainObjective:
        """Build from two ``VideoViT``-like models (anything with ``.cfg.embed_dim``, ...)."""
        s, t = student.cfg, teacher.cfg
        if num_frames is None:
            num_frames = s.num_frames // s.tubelet_size
        return cls(
            cfg, s.embed_dim, s.num_heads, t.embed_dim, t.num_heads, num_frames, s.depth, t.depth
        )

    def _check_heads(self) -> None:
        same = self.student_heads == self.teacher_heads
        if "attention_transfer" in self.term_weights and not same:
            raise ValueError(
                f"baselines.attention_transfer pairs heads one to one, but the student has "
                f"{self.student_heads} heads and the teacher {self.teacher_heads}"
            )
        uses_keys = {"global", "local"} & set(self.term_weights)
        if self.cfg.selection == "teacher" and uses_keys and not same:
            raise ValueError(
                f"selection='teacher' applies the teacher's per-head top-k to the student, but the "
                f"student has {self.student_heads} heads and the teacher {self.teacher_heads}; "
                "use selection='separate'"
            )

    @property
    def hidden_level(self) -> bool:
        return any(t in self.term_weights for t in HIDDEN_TERMS)

    @property
    def attn_layers_student(self) -> tuple[int, ...]:
        return (self.student_block,) if self.hidden_level else ()

    @property
    def attn_layers_teacher(self) -> tuple[int, ...]:
        return (self.teacher_block,) if self.hidden_level else ()

    @property
    def student_query(self) -> EncoderQuery:
        """The student on its masked clip, attention tapped where a hidden-level term needs it."""
        return EncoderQuery(attn_layers=self.attn_layers_student)

    @property
    def teacher_query(self) -> EncoderQuery:
        """The teacher on the student's mask (both models see the same visible tokens)."""
        return EncoderQuery(attn_layers=self.attn_layers_teacher)

    # ------------------------------------------------------------------ forward
    def forward(
        self, student_out: EncoderOutput, teacher_out: EncoderOutput
    ) -> dict[str, torch.Tensor]:
        """Named unweighted terms and their weighted total under "loss" (a scalar each)."""
        if student_out.tokens.shape[:2] != teacher_out.tokens.shape[:2]:
            raise ValueError(
                f"student tokens {tuple(student_out.tokens.shape)} and teacher tokens "
                f"{tuple(teacher_out.tokens.shape)} must share (B, N_vis): run both on the same mask"
            )
        out: dict[str, torch.Tensor] = {}
        if self.hidden_level:
            s_tap = self._tap(student_out, self.student_block, "student")
            t_tap = self._tap(teacher_out, self.teacher_block, "teacher")
            t_tap = AttentionTap(
                logits=teacher_target(t_tap.logits), values=teacher_target(t_tap.values)
            )
            self._hidden_terms(s_tap, t_tap, student_out.frame_index, out)
        if {"hint", "relation", "hint_all"} & set(self.term_weights):
            self._output_terms(student_out.tokens, teacher_target(teacher_out.tokens), out)
        out["loss"] = sum(self.term_weights[name] * out[name] for name in self.term_weights)
        return out

    def _tap(self, enc: EncoderOutput, block: int, side: str) -> AttentionTap:
        if block in enc.attn:
            return enc.attn[block]
        if block < 0 and len(enc.attn) == 1:  # depth unknown: the side's only tap
            return next(iter(enc.attn.values()))
        raise KeyError(
            f"the {side} output has attention taps {sorted(enc.attn)} but the objective needs "
            f"block {block} (objective.layer={self.cfg.layer}): call "
            f"forward_features(..., attn_layers=objective.attn_layers_{side})"
        )

    def _project(self, term: str, student: torch.Tensor, teacher: torch.Tensor):
        """Merge heads and map both sides to the teacher width: (B, N, [F,] D_t) each."""
        student = self.student_proj[term](merge_heads(student))
        teacher = merge_heads(teacher)
        if term in self.teacher_proj:
            teacher = self.teacher_proj[term](teacher)
        return student, teacher

    def _hidden_terms(
        self, s: AttentionTap, t: AttentionTap, frame_index: torch.Tensor, out: dict
    ) -> None:
        """The hidden-level terms, written into ``out`` (filled in place, not merged from a
        temporary dict: a compiled step keeps one graph)."""
        cfg, terms = self.cfg, self.term_weights
        tau, renorm = cfg.tau_att, cfg.renormalize
        if "global" in terms:
            k = cfg.k_for("global")
            index = None
            if cfg.selection == "teacher" and k < t.logits.shape[-1]:
                index = select_global(t.logits, k)
            z_s = aggregate_global(s.logits, s.values, k, tau, renorm, index=index)
            z_t = aggregate_global(t.logits, t.values, k, tau, renorm, index=index)
            out["global"] = feature_mse(*self._project("global", z_s, z_t))
        if "local" in terms:
            groups = frame_groups(frame_index, self.num_frames, tube=self.tube_masks)
            out["local"] = self._local(s, t, groups)
        if "attention_transfer" in terms:
            out["attention_transfer"] = attention_transfer_loss(
                s.logits, t.logits, tau, cfg.at_mode
            )
        if "value_transfer" in terms:
            out["value_transfer"] = feature_mse(
                *self._project("value_transfer", s.values, t.values)
            )
        if "weighted_value_transfer" in terms:
            z_s, z_t = (
                aggregate_full(s.logits, s.values, tau),
                aggregate_full(t.logits, t.values, tau),
            )
            out["weighted_value_transfer"] = feature_mse(
                *self._project("weighted_value_transfer", z_s, z_t)
            )

    def _local(self, s: AttentionTap, t: AttentionTap, groups: FrameGroups) -> torch.Tensor:
        """MALocal MSE over the (sample, query, frame) groups of frames with a visible token."""
        cfg = self.cfg
        k = cfg.k_for("local")
        keep = None
        if cfg.selection == "teacher":
            keep = select_local(gather_frame_logits(t.logits, groups), groups, k)
        args = (None, None, k, cfg.tau_att, cfg.renormalize)
        z_s = aggregate_local(s.logits, s.values, *args, groups=groups, keep=keep)
        z_t = aggregate_local(t.logits, t.values, *args, groups=groups, keep=keep)
        z_s, z_t = self._project("local", z_s, z_t)  # (B, N, F, D_t)
        return feature_mse(z_s, z_t, None if groups.in_order else groups.nonempty[:, None, :])

    def _output_terms(self, s_tokens: torch.Tensor, t_tokens: torch.Tensor, out: dict) -> None:
        """The output-level terms, written into ``out``."""
        cfg, terms = self.cfg, self.term_weights
        if "hint_all" in terms:
            out["hint_all"] = hint_loss(s_tokens, t_tokens, None, self.student_proj["hint_all"])
        if not {"hint", "relation"} & set(terms):
            return
        index = activation_topk(t_tokens, cfg.k_for("hint"))  # (B, k) F_act on the teacher
        s_sel, t_sel = take_tokens(s_tokens, index), take_tokens(t_tokens, index)  # (B, k, D)
        if "hint" in terms:
            out["hint"] = hint_loss(s_sel, t_sel, None, self.student_proj["hint"])
        if "relation" in terms:
            out["relation"] = relation_loss(
                s_sel.flatten(0, 1), t_sel.flatten(0, 1), cfg.tau_s, cfg.tau_t, cfg.relation_softmax
            )
