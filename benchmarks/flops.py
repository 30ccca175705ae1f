"""Analytic FLOPs of one training step, counted from the shapes.

Conventions (one clip, i.e. everything below is per sample of the batch):

- A matrix product of an (m, k) by a (k, n) operand costs ``m * k * n`` multiply-accumulates
  (MACs); one MAC is 2 FLOPs. Only matrix products are counted: LayerNorm, GELU, softmax, the
  optimizer and the element-wise parts of the losses are left out (they are memory-bound and a
  few percent of the total at these shapes).
- Forward FLOPs are ``2 * MACs``. A product whose two operands both need a gradient costs two
  more products of the same size in the backward pass (input grad and weight grad): ``3x``
  forward in total. The tubelet embedding of the student needs only its weight grad (the video
  needs none): ``2x``. A frozen teacher runs forward only: ``1x``.

Encoder (VideoMAE ViT, width d, depth L, MLP hidden r*d, heads irrelevant to the count), with
``n`` tokens entering the blocks and ``n_embed`` tokens going through the tubelet embedding
(the encoder embeds only the visible tubelets of a masked clip, so ``n_embed = n``)::

    patch embed   n_embed * (C * t * p * p) * d
    per block     n * d * 3d   (qkv)   + n * n * d (q @ k^T) + n * n * d (attn @ v)
                + n * d * d    (proj)  + 2 * n * d * r * d   (MLP)

A tapped block materialises the logits instead of running fused attention: the same MACs.

Decoders (VideoMAE pixel decoder, MVD feature decoder), width d_dec over all N tokens::

    embed         n_vis * d_enc * d_dec
    blocks        the per-block formula above with n = N, d = d_dec
    head          n_hidden * d_dec * d_out   (prediction on the hidden tokens only)

d_out = C * t * p * p (pixels of a tubelet) for VideoMAE, the teacher width for MVD.

MVD co-teaching adds an image teacher (patch dim C * p * p) run on one frame per token frame, a
class token and the frame's patches attending within the frame, and a second decoder whose head
predicts the image teacher's width.

AMD (teacher on its own ``N_t`` visible tokens, a superset of the student's ``n``), per aligned
layer pair::

    projection    n * d_s * d_t        (bias-free, shared by both alignments)
    generator     depth blocks with n = N_t, d = d_t (no final norm or head)

plus VideoMAE's pixel decoder on the student.

MaskAgain losses, per side (student with backward, teacher forward only), with ``n = N_vis``,
k kept keys per query, F token frames::

    MAGlobal      n * k * d           (weights of the k kept keys @ their gathered values)
    MALocal       n * n * d           (F dense per-frame products, F * C = n keys per query)
    projections   n * d_s * d_t + n * F * d_s * d_t   (only when d_s != d_t, student side)
    MAHint/MARel  k * (d_s * d_t + d_t * d_t) + B * k^2 * d_t   (negligible)

Training FLOPs per clip = sum over parts of ``2 * MACs * factor`` with the factors above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# backward multipliers: total cost of a part = forward * factor
TRAINED = 3  # forward + input grad + weight grad
WEIGHT_GRAD_ONLY = 2  # forward + weight grad (student tubelet embedding)
FROZEN = 1  # forward only (teacher)


@dataclass(frozen=True)
class EncoderSpec:
    """Shape of a video ViT encoder as the FLOP count needs it."""

    dim: int
    depth: int
    mlp_ratio: float = 4.0
    patch_dim: int = 3 * 2 * 16 * 16  # C * tubelet * patch * patch

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)


@dataclass
class FlopCount:
    """Training FLOPs of one clip, itemised; ``parts`` maps a name to FLOPs (factor applied)."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, macs: float, factor: int) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + 2.0 * macs * factor

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def block_macs(n: int, dim: int, hidden: int) -> float:
    """MACs of one pre-norm transformer block over ``n`` tokens."""
    linear = n * dim * (3 * dim + dim + 2 * hidden)
    attention = 2 * n * n * dim
    return float(linear + attention)


def encoder_macs(spec: EncoderSpec, n_tokens: int) -> float:
    """MACs of all blocks of an encoder over ``n_tokens`` tokens (no tubelet embedding)."""
    return spec.depth * block_macs(n_tokens, spec.dim, spec.hidden)


def patch_embed_macs(spec: EncoderSpec, n_embed: int) -> float:
    return float(n_embed * spec.patch_dim * spec.dim)


def add_encoder(
    count: FlopCount, name: str, spec: EncoderSpec, n_tokens: int, n_embed: int, trained: bool
) -> None:
    """Add one encoder pass: blocks over ``n_tokens``, tubelet embedding over ``n_embed``."""
    count.add(f"{name}.patch_embed", patch_embed_macs(spec, n_embed), _embed_factor(trained))
    count.add(f"{name}.blocks", encoder_macs(spec, n_tokens), TRAINED if trained else FROZEN)


def add_decoder(
    count: FlopCount,
    name: str,
    enc_dim: int,
    dec_dim: int,
    depth: int,
    out_dim: int,
    n_vis: int,
    n_all: int,
    mlp_ratio: float = 4.0,
) -> None:
    """Add a trained decoder: embed the visible tokens, ``depth`` blocks over all, head on hidden."""
    count.add(f"{name}.embed", n_vis * enc_dim * dec_dim, TRAINED)
    count.add(
        f"{name}.blocks", depth * block_macs(n_all, dec_dim, int(dec_dim * mlp_ratio)), TRAINED
    )
    count.add(f"{name}.head", (n_all - n_vis) * dec_dim * out_dim, TRAINED)


def _embed_factor(trained: bool) -> int:
    return WEIGHT_GRAD_ONLY if trained else FROZEN


@dataclass(frozen=True)
class ClipShape:
    """Token counts of a clip: ``n_all`` tokens, ``n_vis`` visible, ``frames`` token frames."""

    n_all: int
    n_vis: int
    frames: int
    patch_dim: int


def maskagain_flops(
    teacher: EncoderSpec, student: EncoderSpec, clip: ClipShape, k: int, batch: int
) -> FlopCount:
    """MaskAgain distillation step: teacher forward + student train on the visible tokens."""
    count = FlopCount()
    add_encoder(count, "teacher", teacher, clip.n_vis, clip.n_vis, trained=False)
    add_encoder(count, "student", student, clip.n_vis, clip.n_vis, trained=True)
    n, ds, dt = clip.n_vis, student.dim, teacher.dim
    for side, d, factor in (("student", ds, TRAINED), ("teacher", dt, FROZEN)):
        count.add(f"loss.global.{side}", n * min(k, n) * d, factor)
        count.add(f"loss.local.{side}", n * n * d, factor)
    if ds != dt:
        count.add("loss.projections", n * ds * dt + n * clip.frames * ds * dt, TRAINED)
    count.add("loss.hint_relation", k * (ds * dt + dt * dt) + batch * k * k * dt, TRAINED)
    return count


def videomae_flops(
    encoder: EncoderSpec, clip: ClipShape, decoder_dim: int, decoder_depth: int = 4
) -> FlopCount:
    """VideoMAE pre-training step: encoder on visible tokens, pixel decoder over all tokens."""
    count = FlopCount()
    add_encoder(count, "encoder", encoder, clip.n_vis, clip.n_vis, trained=True)
    add_decoder(
        count,
        "decoder",
        encoder.dim,
        decoder_dim,
        decoder_depth,
        clip.patch_dim,
        clip.n_vis,
        clip.n_all,
    )
    return count


def mvd_flops(
    teacher: EncoderSpec,
    student: EncoderSpec,
    clip: ClipShape,
    decoder_dim: int,
    decoder_depth: int = 2,
) -> FlopCount:
    """MVD-style step: teacher forward on ALL tokens, student + feature decoder trained."""
    count = FlopCount()
    add_encoder(count, "teacher", teacher, clip.n_all, clip.n_all, trained=False)
    add_encoder(count, "student", student, clip.n_vis, clip.n_vis, trained=True)
    add_decoder(
        count,
        "decoder",
        student.dim,
        decoder_dim,
        decoder_depth,
        teacher.dim,
        clip.n_vis,
        clip.n_all,
    )
    return count


def mvd_coteaching_flops(
    teacher: EncoderSpec,
    image_teacher: EncoderSpec,
    student: EncoderSpec,
    clip: ClipShape,
    frame_tokens: int,
    decoder_dim: int,
    decoder_depth: int = 2,
) -> FlopCount:
    """MVD as published: :func:`mvd_flops` plus an image teacher forward on one frame per token
    frame (``frame_tokens`` patches and a class token each, attention within the frame) and a
    second feature decoder regressing its features."""
    count = mvd_flops(teacher, student, clip, decoder_dim, decoder_depth)
    per_frame = frame_tokens + 1
    for _ in range(clip.frames):
        add_encoder(count, "image_teacher", image_teacher, per_frame, frame_tokens, trained=False)
    add_decoder(
        count,
        "image_decoder",
        student.dim,
        decoder_dim,
        decoder_depth,
        image_teacher.dim,
        clip.n_vis,
        clip.n_all,
    )
    return count


def amd_flops(
    teacher: EncoderSpec,
    student: EncoderSpec,
    clip: ClipShape,
    n_teacher_vis: int,
    pairs: int = 2,
    generator_depth: int = 2,
    decoder_dim: int = 192,
    decoder_depth: int = 4,
) -> FlopCount:
    """AMD step: the teacher forward on its ``n_teacher_vis`` visible tokens (a lighter mask
    than the student's), the student trained on its ``clip.n_vis``; per aligned layer pair a
    bias-free projection of the student's visible tokens to the teacher width and a generator of
    ``generator_depth`` blocks at the teacher width over the teacher-visible tokens (no head);
    VideoMAE's pixel decoder (``decoder_depth`` 0: none) on the student's tokens."""
    count = FlopCount()
    add_encoder(count, "teacher", teacher, n_teacher_vis, n_teacher_vis, trained=False)
    add_encoder(count, "student", student, clip.n_vis, clip.n_vis, trained=True)
    count.add("projections", pairs * clip.n_vis * student.dim * teacher.dim, TRAINED)
    hidden = int(teacher.dim * teacher.mlp_ratio)
    generators = pairs * generator_depth * block_macs(n_teacher_vis, teacher.dim, hidden)
    count.add("generators", generators, TRAINED)
    if decoder_depth:
        add_decoder(
            count,
            "pixel_decoder",
            student.dim,
            decoder_dim,
            decoder_depth,
            clip.patch_dim,
            clip.n_vis,
            clip.n_all,
        )
    return count


def linear_gemm_shapes(m: int, dim: int, hidden: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product the linear layers of one block run in a training step.

    Forward ``(m, in) @ (in, out)``, input grad ``(m, out) @ (out, in)``, weight grad
    ``(out, m) @ (m, in)`` for qkv, proj, fc1 and fc2, with ``m = batch * tokens``.
    """
    shapes = []
    for fan_in, fan_out in ((dim, 3 * dim), (dim, dim), (dim, hidden), (hidden, dim)):
        shapes.append((m, fan_in, fan_out))
        shapes.append((m, fan_out, fan_in))
        shapes.append((fan_out, m, fan_in))
    return shapes
