"""art_wdat: Wasserstein distributional attacks and W-TRADES training for ART's PyTorch classifiers.

Importing the package is cheap and registers nothing global: public names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "WassersteinDistributionalAttack": "art_wdat.attack",
    "AttackResult": "art_wdat.attack",
    "WassersteinBall": "art_wdat.threat",
    "WassersteinTRADESTrainer": "art_wdat.trainer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'art_wdat' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(__all__)
