"""Video vision transformers and the loader for every teacher format users have."""

from maskagain.models.layers import AttentionTap

from maskagain.models.registry import ARCHITECTURES, create_model, model_config
from maskagain.models.vit import EncoderOutput, ModelConfig, VideoViT

__all__ = [
    "ARCHITECTURES",
    "AttentionTap",
    "EncoderOutput",
    "ModelConfig",
    "VideoViT",
    "create_model",
    "model_config",
]
