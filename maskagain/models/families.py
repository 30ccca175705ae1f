"""Known teacher families and their geometry: the one place head counts come from.

A checkpoint's weights show its width, depth, MLP width, patch and tubelet, but not its head
count, and the head count changes what every attention block computes. :data:`FAMILIES` lists
the published encoders; :func:`heads_from_table` looks a geometry up in it, and
:func:`heads_from_args` reads the training arguments some checkpoints store. The loader never
guesses a head count: a geometry outside this table without recorded arguments needs
``num_heads=``.

Two families share a width with different head counts (ViT-g: VideoMAE V2 uses 16 heads,
V-JEPA 2 uses 22), so lookups are per weight layout: a VideoMAE-layout file (``blocks.*.attn.qkv``)
is one of the VideoMAE families, a V-JEPA 2 file one of the V-JEPA 2 ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maskagain.models.registry import ARCHITECTURES

VIDEOMAE = "VideoMAE v1"
VIDEOMAE_V2 = "VideoMAE V2"
VJEPA2 = "V-JEPA 2"
MASKAGAIN = "maskagain"

LAYOUT_VIDEOMAE = "videomae"  # blocks.N.attn.qkv, fixed sine-cosine positions
LAYOUT_VJEPA2 = "vjepa2"  # separate q/k/v with biases, 3D rotary positions


@dataclass(frozen=True)
class Family:
    """One published encoder geometry. ``mlp_hidden`` is fc1's output width."""

    name: str
    family: str
    layout: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    patch_size: int = 16
    tubelet_size: int = 2

    @property
    def mlp_ratio(self) -> float:
        return self.mlp_hidden / self.embed_dim


def _maskagain_sizes() -> tuple[Family, ...]:
    """This project's own small sizes (the registry's CPU models) in the VideoMAE layout."""
    big = {384, 768, 1024, 1280}
    return tuple(
        Family(name, MASKAGAIN, LAYOUT_VIDEOMAE, a["embed_dim"], a["depth"], a["num_heads"],
               4 * a["embed_dim"])
        for name, a in ARCHITECTURES.items()
        if a["embed_dim"] not in big
    )  # fmt: skip


FAMILIES: tuple[Family, ...] = (
    Family("videomae_small", VIDEOMAE, LAYOUT_VIDEOMAE, 384, 12, 6, 1536),
    Family("videomae_base", VIDEOMAE, LAYOUT_VIDEOMAE, 768, 12, 12, 3072),
    Family("videomae_large", VIDEOMAE, LAYOUT_VIDEOMAE, 1024, 24, 16, 4096),
    Family("videomae_huge", VIDEOMAE, LAYOUT_VIDEOMAE, 1280, 32, 16, 5120),
    # ViT-g/14: mlp_ratio 48/11 -> 6144
    Family("videomae2_giant", VIDEOMAE_V2, LAYOUT_VIDEOMAE, 1408, 40, 16, 6144, patch_size=14),
    # distilled from the giant (vit_s/b_k710_dl_from_giant.pth): v1 S/B geometry
    Family("videomae2_small_distilled", VIDEOMAE_V2, LAYOUT_VIDEOMAE, 384, 12, 6, 1536),
    Family("videomae2_base_distilled", VIDEOMAE_V2, LAYOUT_VIDEOMAE, 768, 12, 12, 3072),
    Family("vjepa2_large", VJEPA2, LAYOUT_VJEPA2, 1024, 24, 16, 4096),
    Family("vjepa2_huge", VJEPA2, LAYOUT_VJEPA2, 1280, 32, 16, 5120),
    Family("vjepa2_giant", VJEPA2, LAYOUT_VJEPA2, 1408, 40, 22, 6144),
    *_maskagain_sizes(),
)

# size word in a model name (``pretrain_videomae_giant_patch14_224``, ``vit_base_patch16_224``)
_SIZE_WORDS = {"small": 384, "base": 768, "large": 1024, "huge": 1280, "giant": 1408}
# argument names under which training scripts record the encoder's head count
_HEAD_ARGS = ("num_heads", "encoder_num_heads", "num_attention_heads")


def families_for(layout: str, embed_dim: int) -> list[Family]:
    """Table entries of ``layout`` with width ``embed_dim``."""
    return [f for f in FAMILIES if f.layout == layout and f.embed_dim == embed_dim]


def heads_from_table(
    embed_dim: int,
    depth: int | None = None,
    mlp_hidden: int | None = None,
    patch_size: int | None = None,
    layout: str = LAYOUT_VIDEOMAE,
) -> int | None:
    """Head count of the table entries this geometry fits, or None when it is not determined.

    The width picks the candidates; depth, MLP width and patch narrow them down only when the
    candidates disagree on heads. None when no entry has this width or the rest stays ambiguous.
    """
    found = families_for(layout, embed_dim)
    for value, attr in ((depth, "depth"), (mlp_hidden, "mlp_hidden"), (patch_size, "patch_size")):
        if len({f.num_heads for f in found}) <= 1:
            break
        if value is not None:
            found = [f for f in found if getattr(f, attr) == value]
    heads = {f.num_heads for f in found}
    return heads.pop() if len(heads) == 1 else None


def identify(
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_hidden: int,
    patch_size: int,
    layout: str = LAYOUT_VIDEOMAE,
) -> list[Family]:
    """Table entries matching this geometry exactly (several when families share one)."""
    key = (embed_dim, depth, num_heads, mlp_hidden, patch_size)
    return [
        f
        for f in FAMILIES
        if f.layout == layout
        and (f.embed_dim, f.depth, f.num_heads, f.mlp_hidden, f.patch_size) == key
    ]


def recorded_args(obj: object) -> dict:
    """A checkpoint's recorded training arguments (an argparse Namespace or a dict) as a dict."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    try:
        return dict(vars(obj))
    except TypeError:
        return {}


def heads_from_args(args: dict, embed_dim: int) -> tuple[int | None, str]:
    """Head count recorded in training ``args`` and where it came from (``(None, "")`` if none).

    An explicit head count (``num_heads``, ``encoder_num_heads``) wins; otherwise a model name
    (``args.model``, e.g. ``pretrain_videomae_giant_patch14_224``) names a size of the table,
    used only when that size has the weights' width ``embed_dim``.
    """
    for key in _HEAD_ARGS:
        value = args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, f"args.{key}"
    name = args.get("model")
    if isinstance(name, str):
        family = family_from_model_name(name)
        if family is not None and family.embed_dim == embed_dim:
            return family.num_heads, f"args.model={name!r}"
    return None, ""


def family_from_model_name(name: str) -> Family | None:
    """The VideoMAE-layout table entry a timm-style model name refers to, if any."""
    words = re.split(r"[_\-/]", name.lower())
    sizes = [w for w in words if w in _SIZE_WORDS]
    if len(sizes) != 1:
        return None
    patch = re.search(r"patch(\d+)", name.lower())
    found = families_for(LAYOUT_VIDEOMAE, _SIZE_WORDS[sizes[0]])
    if patch:
        found = [f for f in found if f.patch_size == int(patch.group(1))]
    return found[0] if found else None


def is_videomae_v2_args(args: dict) -> bool:
    """Whether recorded ``args`` come from the VideoMAE V2 scripts (dual masking, giant model)."""
    if "decoder_mask_type" in args or "decoder_mask_ratio" in args:
        return True
    name = args.get("model")
    family = family_from_model_name(name) if isinstance(name, str) else None
    return family is not None and family.family == VIDEOMAE_V2
