"""maskagain: efficient masked-video pre-training by knowledge distillation (MaskAgain, MM'23)."""

__version__ = "0.1.0"
