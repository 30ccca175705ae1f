"""Checkpoint formats: each module turns one family's files into this package's weights layout
and architecture config (:mod:`.videomae`: official VideoMAE / VideoMAE V2 and transformers'
VideoMAE; :mod:`.vjepa2`: V-JEPA 2), and :mod:`.geometry` reads what the weights tell of the
architecture. :mod:`maskagain.models.loading` picks the format and loads strictly."""
