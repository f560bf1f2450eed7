"""``import autoattack`` where PyPI's AutoAttack is installed as ``pyautoattack``.

robustbench 1.1.1 does ``from autoattack import AutoAttack`` and ``from autoattack.state import ...``, but
the AutoAttack code it depends on is published on PyPI as ``pyautoattack`` (the same files under another
name) and nothing on PyPI installs a module called ``autoattack``. art-wdat therefore ships this one-file
top-level module: importing it makes ``autoattack`` *be* ``pyautoattack`` (same module objects, so
``autoattack.AutoAttack is pyautoattack.AutoAttack``). It runs only when something imports ``autoattack``;
nothing is done at interpreter start or at ``import art_wdat``.

A real ``autoattack`` package (e.g. installed from the authors' repository) always wins:

* installed in the same site-packages, it is a directory with ``__init__.py``, which Python's path
  finder takes before a same-named ``.py`` file, so this module is never found;
* installed in any other ``sys.path`` entry, it is found below and loaded in place of this module.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

_REAL_NAME = "pyautoattack"


def _real_autoattack() -> importlib.machinery.ModuleSpec | None:
    """The spec of an ``autoattack`` package elsewhere on ``sys.path``, or ``None``.

    Only a package counts: this shim is a single file, so another copy of it (say, one installed twice)
    is never taken for the real thing, and loading cannot recurse.
    """
    here = os.path.dirname(os.path.realpath(__file__))
    for entry in sys.path:
        if not isinstance(entry, str) or os.path.realpath(entry or os.curdir) == here:
            continue
        spec = importlib.machinery.PathFinder.find_spec(__name__, [entry])
        # A regular package (a namespace directory has no loader here; a module file is a shim).
        if spec is not None and spec.loader is not None and spec.submodule_search_locations is not None:
            return spec
    return None


def _load(spec: importlib.machinery.ModuleSpec) -> None:
    """Load the real package as ``autoattack`` (the import system returns ``sys.modules[__name__]``)."""
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module
    assert spec.loader is not None
    spec.loader.exec_module(module)


def _alias() -> None:
    """Make ``autoattack`` and ``autoattack.<sub>`` the ``pyautoattack`` modules themselves."""
    try:
        package: ModuleType = importlib.import_module(_REAL_NAME)
    except ModuleNotFoundError as err:
        if err.name != _REAL_NAME:
            raise  # pyautoattack is there but one of its own dependencies is not: say which
        raise ModuleNotFoundError(
            f"No module named {__name__!r}: install AutoAttack with: pip install pyautoattack", name=__name__
        ) from err
    sys.modules[__name__] = package
    # `import pyautoattack` has imported every PyTorch submodule; alias them so that `autoattack.state`
    # is `pyautoattack.state`. Submodules never imported yet (the TensorFlow ones) are found on first use
    # through the package's __path__ and then live under `autoattack.<sub>` only.
    prefix = _REAL_NAME + "."
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix):
            sys.modules.setdefault(__name__ + name[len(_REAL_NAME):], module)


_SPEC = _real_autoattack()
if _SPEC is not None:
    _load(_SPEC)
else:
    _alias()
