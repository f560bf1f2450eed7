"""art_wdat: Wasserstein distributional attacks and W-TRADES training for ART's PyTorch classifiers.

Importing the package is cheap: public names load on first use, and the only thing it registers is a finder
that serves the module paths of earlier releases (``art_wdat.metrics``, ``art_wdat.models``, ...) as aliases of
their new homes (:mod:`art_wdat._moved`).
"""

from __future__ import annotations

import importlib
from typing import Any

from art_wdat import _moved

__version__ = "0.2.0"

_moved.install()

_EXPORTS = {
    "WassersteinDistributionalAttack": "art_wdat.attacks.wasserstein",
    "AttackResult": "art_wdat.attacks.wasserstein",
    "WassersteinBall": "art_wdat.core.threat",
    "WassersteinTRADESTrainer": "art_wdat.training.trainer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'art_wdat' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(__all__)
