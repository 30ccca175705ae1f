"""``maskagain demo``: what MaskAgain buys over the alternatives, on a CPU in minutes.

On the embedded synthetic motion set (classes defined only by motion, clips generated on the
fly), with the VideoMAE-pre-trained teacher shipped in ``maskagain/assets``:

1. the teacher (loaded, or re-trained with ``retrain_teacher``: ``configs/demo/teacher.yaml``);
2. under one student budget (same architecture, epochs and freshly generated clips), the
   student pre-trained five ways: MaskAgain distillation, VideoMAE, plain Hint distillation
   (every visible token, no selection), MVD distillation (the teacher on the whole clip, a
   2-block decoder regressing its features of the hidden tokens) and no pre-training at all;
   ``rows`` (``maskagain demo --rows``) runs a subset of these student rows;
3. every model, teacher included (and a randomly initialised teacher-size encoder, the
   learnability reference), evaluated with two linear probes on frozen features (pooled per
   time step, which the report ranks by, and mean-pooled) and with a fine-tune followed by a
   multi-view test;
4. ``summary.json``, ``report.md`` and figures (training curves, accuracy bars, the teacher's
   selections as in the paper's Figures 1 and 4) in the output directory.

Every training stage runs a recipe (``maskagain.recipes.pretrain``, ``distill``, ``finetune``)
on a config built in :mod:`.rows`; the probes use ``maskagain.engine.probe`` on one shared set
of clips.
Splits: the synthetic set's seed 0 is reported (probe: ``val``, fine-tune: ``test``); settings
were chosen on seed 1, which the demo never reads.

Modules, in the order a run meets them: :mod:`.settings` (models, objectives, rows, sizes,
evaluations; no torch), :mod:`.rows` (each row's recipe config and pre-training),
:mod:`.teacher` (the shipped teacher's card, its re-training), :mod:`.probes`, :mod:`.stages`
(banners, ETA, profile), :mod:`.run` (one demo: ``run_demo``), :mod:`.seeds` (one demo per
seed: ``run_seeds``), :mod:`.report`, :mod:`.seeds_report` and :mod:`.headline` (the outputs).
"""
