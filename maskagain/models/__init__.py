"""Video vision transformers and the loader for every teacher format users have."""

from maskagain.models.layers import AttentionTap
from maskagain.models.loading import CheckpointError, load_encoder, read_checkpoint, save_encoder
from maskagain.models.registry import ARCHITECTURES, create_model, model_config
from maskagain.models.vit import EncoderOutput, ModelConfig, VideoViT

__all__ = [
    "ARCHITECTURES",
    "AttentionTap",
    "CheckpointError",
    "EncoderOutput",
    "ModelConfig",
    "VideoViT",
    "create_model",
    "load_encoder",
    "model_config",
    "read_checkpoint",
    "save_encoder",
]
