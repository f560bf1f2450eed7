"""W-TRADES training: the trainer, the fine-tuning protocol and checkpoints.

One module per job: :mod:`~art_wdat.training.trainer` (the ART trainer and its per-batch step),
:mod:`~art_wdat.training.settings` (its keywords and their checks), :mod:`~art_wdat.training.options` (the checked
settings of one ``fit`` call), :mod:`~art_wdat.training.objective` (the W-TRADES loss of one batch),
:mod:`~art_wdat.training.sync` (the ranks' collectives), :mod:`~art_wdat.training.loop` (the epoch lifecycle),
:mod:`~art_wdat.training.keeping` (what a call keeps of its run), :mod:`~art_wdat.training.judge` (the held-out
measurement), :mod:`~art_wdat.training.selection` (the rule that keeps an epoch), :mod:`~art_wdat.training.rundir`
(the checkpoint folder of one run), :mod:`~art_wdat.training.finetune` and :mod:`~art_wdat.training.checkpoint`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that `art_wdat.training.checkpoint` (used by zoo and evaluation) does not import the trainer.
# Batch, EpochCallback, INNER_LOSSES and LossTerms: the public names of the former module art_wdat.trainer.
_EXPORTS = {
    "Batch": "art_wdat.training.loop",
    "EpochCallback": "art_wdat.training.loop",
    "INNER_LOSSES": "art_wdat.training.objective",
    "LossTerms": "art_wdat.training.objective",
    "WassersteinTRADESTrainer": "art_wdat.training.trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'art_wdat.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
