"""The module paths of releases before the subpackages, served as aliases of where the code lives now.

``import art_wdat.metrics`` or ``from art_wdat.models import SmallCNN`` keep working: a finder on
``sys.meta_path`` answers only for the names in :data:`MOVED` and hands back the new module itself (one
module object under two names, so monkeypatching either patches both). It imports nothing until asked.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: Old module path -> the module (or package) that now holds its public names.
MOVED = {
    "art_wdat.attack": "art_wdat.attacks",
    "art_wdat.checkpoint": "art_wdat.training.checkpoint",
    "art_wdat.data": "art_wdat.zoo.data",
    "art_wdat.demo": "art_wdat.cli.demo",
    "art_wdat.engine": "art_wdat.core.engine",
    "art_wdat.estimator": "art_wdat.attacks.estimator",
    "art_wdat.finetune": "art_wdat.training.finetune",
    "art_wdat.inputs": "art_wdat.validation",
    "art_wdat.losses": "art_wdat.core.losses",
    "art_wdat.metrics": "art_wdat.evaluation.metrics",
    "art_wdat.models": "art_wdat.zoo",
    "art_wdat.plotting": "art_wdat.evaluation.plotting",
    "art_wdat.reduce": "art_wdat.core.reduce",
    "art_wdat.robustbench_compat": "art_wdat.zoo.robustbench_compat",
    "art_wdat.threat": "art_wdat.core.threat",
    "art_wdat.trainer": "art_wdat.training",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the target module was executed when it was imported."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths in :data:`MOVED`, and nothing else."""

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(MOVED[fullname]))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
