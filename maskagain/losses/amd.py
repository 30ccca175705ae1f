"""AMD: asymmetric masked distillation (Zhao et al., CVPR 2024; code: github.com/MCG-NJU/AMD).

The teacher sees MORE of the clip than the student: it is masked at a lower ratio (75%) than
the student (90%), and the student's visible tokens are a subset of the teacher's
(``maskagain.masking.asymmetric_masks``). For every aligned layer pair (student block l_s, teacher block l_t):

- direct alignment: ``P(z_s)`` (a Linear without bias, student width -> teacher width) of the
  student's block output on its visible tokens against the teacher's block output on the same
  tokens;
- generation alignment: a generator (transformer blocks at the teacher width) takes ``P(z_s)`` on
  the student's visible tokens plus a mask token at every token the teacher sees but the student
  does not, each with its fixed position, and predicts the teacher's block output there.

``loss = direct_weight * mean_l L_dir + generation_weight * mean_l L_gen`` (terms "direct" and
"generation"); AMD trains this together with VideoMAE's pixel loss on the student's hidden
tokens (weight 1, ``recfac``): add ``maskagain.models.pretrain.PixelReconstruction`` with
``maskagain.losses.pixel.with_weighted_term`` (``objective.pixel_weight = 1``).

Every choice follows the public code (files of that repository):

- masks (``dataset/masking_generator.py``, ``TemporalConsistencyMaskingGenerator``, the
  ``t_consist`` type of every script): one spatial pattern for every frame; per frame
  ``int(0.75 * HW)`` positions hidden from both, ``int(0.9 * HW) - int(0.75 * HW)`` more hidden
  from the student only.
- layers (``scripts/pretrain/*``: ``--student_layer_direct_align 6 12
  --teacher_layer_direct_align 12 24``, the same for generation): the middle and the last block
  of each encoder (ViT-S/B student, ViT-L teacher); block outputs before the final norm
  (``models/modeling_pretrain.py`` / ``modeling_finetune_amd.py``).
- one projection per layer pair, ``Linear(D_s, D_t, bias=False)``, shared by both alignments
  (``projection_heads[i]`` is used for the generation features too).
- generator (``Generator``): ``generator_depth`` = 2 blocks, width D_t, D_t / 64 heads, MLP
  ratio 4, q/v biases, no final norm or head (its LayerNorm is built but never applied), fixed
  1-D sine table at D_t (``pos_embed_generator``); one generator and mask token per layer pair.
- losses: ``--align_loss l2`` (MSE, mean over tokens and channels) in every script; weights
  ``dirfac = genfac = 1``; xavier-uniform Linear init; mask tokens truncated normal 0.02 cut at
  +-0.02.
- one difference on purpose: the official generator mask tokens are held in a plain Python list,
  so they are never optimised nor saved (a resumed run re-draws them). Here they are registered
  parameters: trained, saved and restored like every other module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maskagain.losses.config import AMDConfig
from maskagain.losses.hidden import teacher_target
from maskagain.losses.mvd import feature_regression_loss
from maskagain.losses.query import EncoderQuery
from maskagain.masking import device_check, split_tokens, take_tokens
from maskagain.models.init import official_init
from maskagain.models.layers import Block, resolve_block, sinusoid_table
from maskagain.models.vit import EncoderOutput


class AMDGenerator(nn.Module):
    """Transformer blocks at the teacher width, no final norm or head:
    (B, N_in, D_t) -> (B, N_last, D_t), the last ``return_last`` tokens."""

    def __init__(
        self, dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float, eps: float
    ) -> None:
        super().__init__()
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, True, 0.0, dpr[i], 0.0, eps) for i in range(depth)
        )

    def forward(self, x: torch.Tensor, return_last: int) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x[:, x.shape[1] - return_last :]


@dataclass
class TeacherSplit:
    """How the student's and the teacher's visible tokens relate, as static-shape indices
    (no host sync: the counts come from the tokens' shapes).

    student_visible: (B, N_s_vis) token indices the student sees, ascending.
    vis_in_teacher: (B, N_s_vis) positions, among the teacher's N_t_vis visible tokens, of the
        ones the student sees too; diff_in_teacher: (B, N_diff) positions of the others.
    diff: (B, N_diff) token indices the teacher sees and the student does not, ascending.
    """

    student_visible: torch.Tensor
    vis_in_teacher: torch.Tensor
    diff_in_teacher: torch.Tensor
    diff: torch.Tensor

    @property
    def num_diff(self) -> int:
        return self.diff.shape[1]

    @classmethod
    def of(
        cls, student_mask: torch.Tensor, teacher_mask: torch.Tensor, n_s_vis: int, n_t_vis: int
    ) -> TeacherSplit:
        """From the (B, N) masks (True = hidden) and the visible counts of each side."""
        check_nested_masks(student_mask, teacher_mask)
        student_visible = split_tokens(student_mask, n_s_vis)[0]
        teacher_visible = split_tokens(teacher_mask, n_t_vis)[0]  # (B, N_t_vis)
        hidden_from_student = student_mask.gather(1, teacher_visible)  # (B, N_t_vis)
        vis_in_teacher, diff_in_teacher = split_tokens(hidden_from_student, n_s_vis)
        diff = teacher_visible.gather(1, diff_in_teacher)
        return cls(student_visible, vis_in_teacher, diff_in_teacher, diff)


def check_nested_masks(
    student_mask: torch.Tensor | None, teacher_mask: torch.Tensor | None
) -> None:
    """Every token hidden from the teacher is hidden from the student (:func:`device_check`:
    at once on the CPU, asynchronously on an accelerator)."""
    if student_mask is None or teacher_mask is None:
        raise ValueError(
            "AMD runs both models on masked clips: student_out.mask and "
            "teacher_out.mask must be set (see asymmetric_masks)"
        )
    if student_mask.shape != teacher_mask.shape:
        raise ValueError(
            f"student mask {tuple(student_mask.shape)} and teacher mask "
            f"{tuple(teacher_mask.shape)} differ"
        )
    device_check(
        ~(teacher_mask & ~student_mask).any(),
        "the student's visible tokens must be a subset of the teacher's (every token "
        "hidden from the teacher hidden from the student); build both with asymmetric_masks",
    )


class AMDObjective(nn.Module):
    """AMD's projections, generators and losses:
    ``forward(student_out, teacher_out) -> {"direct", "generation", "loss"}`` (active terms
    unweighted, their weighted sum under "loss").

    student_out / teacher_out: ``forward_features(video, mask, blocks=...)`` with the masks of
    ``asymmetric_masks`` (teacher hidden tokens a subset of the student's) and the blocks
    ``student_blocks`` / ``teacher_blocks`` (no ``blocks`` needed when every aligned block is the
    last one). num_tokens: N of the clip (all tokens).
    """

    attn_layers_student: tuple[int, ...] = ()
    attn_layers_teacher: tuple[int, ...] = ()

    def __init__(
        self,
        cfg: AMDConfig,
        student_dim: int,
        teacher_dim: int,
        num_tokens: int,
        student_depth: int,
        teacher_depth: int,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if teacher_dim % cfg.generator_head_dim:
            raise ValueError(
                f"the generator runs at the teacher width {teacher_dim}, which must be divisible "
                f"by generator_head_dim={cfg.generator_head_dim}"
            )
        self.cfg = cfg
        self.term_weights = cfg.weights()
        self.student_depth, self.teacher_depth = student_depth, teacher_depth
        self.pairs = [  # 0-based
            (resolve_block(s, student_depth), resolve_block(t, teacher_depth))
            for s, t in cfg.layer_pairs(student_depth, teacher_depth)
        ]
        n_pairs = len(self.pairs)
        self.projections = nn.ModuleList(
            nn.Linear(student_dim, teacher_dim, bias=False) for _ in range(n_pairs)
        )
        heads = teacher_dim // cfg.generator_head_dim
        self.generators = nn.ModuleList()
        self.mask_tokens = nn.ParameterList()
        if "generation" in self.term_weights:
            for _ in range(n_pairs):
                self.generators.append(
                    AMDGenerator(
                        teacher_dim,
                        cfg.generator_depth,
                        heads,
                        cfg.mlp_ratio,
                        cfg.generator_drop_path,
                        norm_eps,
                    )
                )
                token = nn.Parameter(torch.zeros(1, 1, teacher_dim))
                nn.init.trunc_normal_(token, std=0.02, a=-0.02, b=0.02)
                self.mask_tokens.append(token)
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, teacher_dim), persistent=False)
        self.projections.apply(official_init)
        self.generators.apply(official_init)

    @classmethod
    def from_models(cls, cfg: AMDConfig, student: nn.Module, teacher: nn.Module) -> AMDObjective:
        """Build from two ``VideoViT``-like models (``.cfg.embed_dim``, ``.cfg.grid``, ...)."""
        s, t = student.cfg, teacher.cfg
        n = s.grid[0] * s.grid[1] * s.grid[2]
        return cls(cfg, s.embed_dim, t.embed_dim, n, s.depth, t.depth, s.norm_eps)

    @property
    def student_blocks(self) -> tuple[int, ...]:
        """Blocks to ask the student's ``forward_features(..., blocks=)`` for."""
        return tuple(sorted({s for s, _ in self.pairs}))

    @property
    def teacher_blocks(self) -> tuple[int, ...]:
        """Blocks to ask the teacher's ``forward_features(..., blocks=)`` for."""
        return tuple(sorted({t for _, t in self.pairs}))

    @property
    def student_query(self) -> EncoderQuery:
        """The student on its mask, the outputs of its aligned blocks."""
        return EncoderQuery(blocks=self.student_blocks)

    @property
    def teacher_query(self) -> EncoderQuery:
        """The teacher on its own, lighter tube mask ("teacher_mask" at ``cfg.teacher_ratio``),
        the outputs of its aligned blocks."""
        return EncoderQuery("teacher_mask", self.cfg.teacher_ratio, self.teacher_blocks)

    def no_weight_decay(self) -> set[str]:
        return {f"mask_tokens.{i}" for i in range(len(self.mask_tokens))}

    # ------------------------------------------------------------------ forward
    def forward(
        self, student_out: EncoderOutput, teacher_out: EncoderOutput
    ) -> dict[str, torch.Tensor]:
        """Named unweighted terms and their weighted total under "loss" (a scalar each)."""
        student_mask, teacher_mask = student_out.mask, teacher_out.mask
        split = TeacherSplit.of(
            student_mask, teacher_mask, student_out.tokens.shape[1], teacher_out.tokens.shape[1]
        )
        if "generation" in self.term_weights and split.num_diff == 0:
            raise ValueError("the teacher sees no token the student does not: nothing to generate")
        direct, generation = [], []
        for i, (ls, lt) in enumerate(self.pairs):
            z_s = self._block(student_out, ls, self.student_depth, "student")
            z_t = teacher_target(self._block(teacher_out, lt, self.teacher_depth, "teacher"))
            p = self.projections[i](z_s)  # (B, N_s_vis, D_t)
            if "direct" in self.term_weights:
                t_vis = take_tokens(z_t, split.vis_in_teacher)  # (B, N_s_vis, D_t)
                direct.append(feature_regression_loss(p, t_vis, self.cfg.loss))
            if "generation" in self.term_weights:
                pred = self.generate(i, p, student_mask, teacher_mask, split)  # (B, N_diff, D_t)
                t_diff = take_tokens(z_t, split.diff_in_teacher)
                generation.append(feature_regression_loss(pred, t_diff, self.cfg.loss))
        out: dict[str, torch.Tensor] = {}
        if direct:
            out["direct"] = torch.stack(direct).mean()
        if generation:
            out["generation"] = torch.stack(generation).mean()
        out["loss"] = sum(self.term_weights[name] * out[name] for name in self.term_weights)
        return out

    def generate(
        self,
        index: int,
        projected: torch.Tensor,
        student_mask: torch.Tensor,
        teacher_mask: torch.Tensor,
        split: TeacherSplit | None = None,
    ) -> torch.Tensor:
        """Generator ``index`` on [projected visible tokens + pos, mask token + pos at every
        teacher-visible, student-hidden token] -> (B, N_diff, D_t), in token order.

        projected: (B, N_s_vis, D_t); masks: (B, N) True = hidden; ``split``: their
        :class:`TeacherSplit` (made here when not given, one host sync to count the teacher's
        visible tokens).
        """
        if split is None:
            n_t_vis = int((~teacher_mask[0]).sum())
            split = TeacherSplit.of(student_mask, teacher_mask, projected.shape[1], n_t_vis)
        pos = self.pos_embed.to(projected.dtype)  # (N, D_t)
        vis = projected + take_tokens(pos, split.student_visible)
        gen = self.mask_tokens[index].to(projected.dtype) + take_tokens(pos, split.diff)
        x = torch.cat((vis, gen), dim=1)  # (B, N_s_vis + N_diff, D_t)
        return self.generators[index](x, return_last=gen.shape[1])

    @staticmethod
    def _block(out: EncoderOutput, index: int, depth: int, side: str) -> torch.Tensor:
        if index in out.blocks:
            return out.blocks[index]
        if index == depth - 1:
            return out.tokens
        raise KeyError(
            f"the {side} output has blocks {sorted(out.blocks)} but AMD aligns block {index}: run "
            f"model.forward_features(video, mask, blocks=objective.{side}_blocks)"
        )
