"""W-TRADES training: the trainer, the fine-tuning protocol and checkpoints.

One module per job: :mod:`~art_wdat.training.trainer` (the ART trainer and its per-batch step),
:mod:`~art_wdat.training.settings` (its keywords and their checks), :mod:`~art_wdat.training.objective` (the
W-TRADES loss of one batch), :mod:`~art_wdat.training.sync` (the ranks' collectives), :mod:`~art_wdat.training.loop`
(the epoch lifecycle), :mod:`~art_wdat.training.finetune` and :mod:`~art_wdat.training.checkpoint`.
"""

from art_wdat.training.loop import Batch, EpochCallback
from art_wdat.training.objective import INNER_LOSSES, LossTerms
from art_wdat.training.trainer import WassersteinTRADESTrainer

# Batch, EpochCallback, INNER_LOSSES and LossTerms: the public names of the former module art_wdat.trainer.
__all__ = ["INNER_LOSSES", "Batch", "EpochCallback", "LossTerms", "WassersteinTRADESTrainer"]
