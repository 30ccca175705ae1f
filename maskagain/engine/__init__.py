"""The training engine shared by every recipe, and the recipes built on it.

Engine (generic, any recipe):

- ``trainer``: :class:`~maskagain.engine.trainer.Trainer` (epochs of optimizer steps with
  accumulation, bf16/fp16/fp32, clipping, activation checkpointing, ``torch.compile``, DDP, EMA,
  logs, non-finite stop, checkpoints and exact resume).
- ``run``: run directory, seeds, loaders, AdamW + schedule, ``fit_and_summarize``.
- ``optim``: parameter groups, AdamW, per-step cosine schedule with warm-up.
- ``checkpoint``: atomic ``weights_only`` checkpoints, RNG states.
- ``sampler``: epoch-seeded sampler that starts mid-epoch; ``masks``: index-seeded masks.
- ``distributed``: torchrun process group, device selection, reductions.
- ``metrics``: ``log.jsonl``, TensorBoard, progress bar; ``ema``: model EMA.
- ``precision``: ``precision: auto`` resolved for the device (bf16 where native, else fp32).
- ``compiling``: where ``torch.compile`` applies, and the one-line refusal where it does not.

Recipes: ``pretrain`` (VideoMAE teacher), ``distill`` (MaskAgain), ``finetune``,
``evaluation``, ``probe``. Import the submodule you need; nothing is imported here.
"""
