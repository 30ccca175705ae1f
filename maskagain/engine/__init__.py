"""The training engine shared by every recipe, and the recipes built on it.

Engine (generic, any recipe):

- ``trainer``: :class:`~maskagain.engine.trainer.Trainer` (epochs of optimizer steps with
  accumulation, bf16/fp16/fp32, clipping, activation checkpointing, ``torch.compile``, DDP, EMA,
  logs, non-finite stop, checkpoints and exact resume).
- ``feed``: the one boundary from data to device: seeded items, the training loader, the move
  to the device and what the device does there (crop, resize, normalise).
- ``run``: run directory, seeds, run length, AdamW + schedule, ``fit_and_summarize``.
- ``optim``: parameter groups, AdamW, per-step cosine schedule with warm-up.
- ``checkpoint``: atomic ``weights_only`` checkpoints, RNG states.
- ``sampler``: epoch-seeded sampler that starts mid-epoch.
- ``evaluation``: multi-view testing, reports, the validation hook, what a score says.
- ``distributed``: torchrun process group, device selection, reductions.
- ``metrics``: ``log.jsonl``, TensorBoard, progress bar; ``ema``: model EMA.
- ``precision``: ``precision: auto`` resolved for the device (bf16 where native, else fp32).
- ``compiling``: where ``torch.compile`` applies, and the one-line refusal where it does not.

Recipes: ``pretrain`` (VideoMAE teacher), ``distill`` (MaskAgain), ``finetune``,
``evaluation``, ``probe``. Import the submodule you need; nothing is imported here.
"""
