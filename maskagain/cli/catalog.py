"""What ``maskagain ls`` lists, without importing torch: a light copy of the model registry
(``maskagain.models.registry.ARCHITECTURES``), the known teacher families
(``maskagain.models.families.FAMILIES``), MAE image teachers
(``maskagain.models.image_vit.MAE_HEADS``) and the shipped weights
(``maskagain.models.loading.SHIPPED_WEIGHTS``). ``tests/test_cli_first_hour.py`` checks that
it matches the library."""

from __future__ import annotations

# name -> (width, depth, heads)
ARCHITECTURES = {
    "vit_huge": (1280, 32, 16),
    "vit_large": (1024, 24, 16),
    "vit_base": (768, 12, 12),
    "vit_small": (384, 12, 6),
    "vit_tiny": (192, 12, 3),
    "vit_mini": (192, 6, 3),
    "vit_micro": (128, 4, 4),
    "vit_nano": (64, 2, 2),
}
# (name, family, width, depth, heads, patch, tubelet)
FAMILIES = (
    ("videomae_small", "VideoMAE v1", 384, 12, 6, 16, 2),
    ("videomae_base", "VideoMAE v1", 768, 12, 12, 16, 2),
    ("videomae_large", "VideoMAE v1", 1024, 24, 16, 16, 2),
    ("videomae_huge", "VideoMAE v1", 1280, 32, 16, 16, 2),
    ("videomae2_giant", "VideoMAE V2", 1408, 40, 16, 14, 2),
    ("videomae2_small_distilled", "VideoMAE V2", 384, 12, 6, 16, 2),
    ("videomae2_base_distilled", "VideoMAE V2", 768, 12, 12, 16, 2),
    ("vjepa2_large", "V-JEPA 2", 1024, 24, 16, 16, 2),
    ("vjepa2_huge", "V-JEPA 2", 1280, 32, 16, 16, 2),
    ("vjepa2_giant", "V-JEPA 2", 1408, 40, 22, 16, 2),
)
# (width, depth, patch) -> heads
MAE_HEADS = {
    (768, 12, 16): 12,
    (1024, 24, 16): 16,
    (1280, 32, 14): 16,
}
# name usable as teacher.source -> (file under maskagain/, what it is)
SHIPPED_WEIGHTS = {
    "maskagain:demo-teacher": (
        "assets/demo_teacher.safetensors",
        "VideoMAE-pre-trained 128 x 4 ViT, 8 frames of 32 px, synthetic motion (the demo's)",
    ),
}
