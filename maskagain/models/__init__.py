"""Video vision transformers and the loader for every teacher format users have (and MAE image
encoders, MVD's image teachers)."""

from maskagain.checkpoints import CheckpointError
from maskagain.models.families import FAMILIES, Family
from maskagain.models.image_vit import ImageViT, ImageViTConfig, load_image_encoder
from maskagain.models.layers import AttentionTap
from maskagain.models.loading import load_encoder, read_checkpoint, save_encoder
from maskagain.models.registry import ARCHITECTURES, create_model, model_config
from maskagain.models.teacher import (
    AlignedTeacher,
    TeacherAlignmentError,
    align_teacher,
    check_teacher_alignment,
)
from maskagain.models.vit import EncoderOutput, ModelConfig, VideoViT
from maskagain.models.vjepa2 import VJEPA2Config, VJEPA2Encoder

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "AlignedTeacher",
    "AttentionTap",
    "CheckpointError",
    "EncoderOutput",
    "Family",
    "ImageViT",
    "ImageViTConfig",
    "ModelConfig",
    "TeacherAlignmentError",
    "VJEPA2Config",
    "VJEPA2Encoder",
    "VideoViT",
    "align_teacher",
    "check_teacher_alignment",
    "create_model",
    "load_encoder",
    "load_image_encoder",
    "model_config",
    "read_checkpoint",
    "save_encoder",
]
