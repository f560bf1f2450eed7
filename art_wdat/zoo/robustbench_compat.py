"""Make robustbench 1.1.1 (as published on PyPI) importable, lazily.

robustbench 1.1.1 does not import out of the box:

* ``robustbench.loaders`` imports ``pkg_resources``, which setuptools removed in version 81, so the
  project pins ``setuptools<81``;
* ``robustbench.eval`` does ``from autoattack import AutoAttack`` and ``from autoattack.state import
  ...``, but its PyPI dependency ``pyautoattack`` installs that code as the module ``pyautoattack``.

The installed art-wdat fixes the second point for everyone: its wheel ships a top-level module
``autoattack`` (``compat/autoattack.py`` in the source tree) that makes ``import autoattack`` yield
``pyautoattack``, so user code needs no call into this package. :func:`import_robustbench` still works
from a source tree that is not installed: there it registers ``pyautoattack`` and its PyTorch
submodules under the name ``autoattack`` in :data:`sys.modules` itself (only when no ``autoattack`` can
be imported; a real one then wins). It also turns the first point into a readable :class:`ImportError`.

Nothing here imports robustbench (or torch) at module import time: robustbench pulls in timm, gdown and
requests, which ``import art_wdat`` must never pay for.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import warnings
from types import ModuleType

logger = logging.getLogger(__name__)

#: The submodules of ``pyautoattack`` aliased as ``autoattack.<name>``. The TensorFlow ones (``fab_tf``,
#: ``utils_tf``, ``utils_tf2``) are left out on purpose: importing them imports TensorFlow, and neither
#: robustbench nor this project uses them.
AUTOATTACK_SUBMODULES = (
    "other_utils",
    "checks",
    "state",
    "autopgd_base",
    "fab_projections",
    "fab_base",
    "fab_pt",
    "square",
    "autoattack",
)

_SETUPTOOLS_HINT = (
    "robustbench 1.1.1 needs the 'pkg_resources' module, which setuptools removed in version 81; "
    "install a compatible version with: pip install 'setuptools<81'"
)

# One lock so that two threads calling import_robustbench() do not both half-populate sys.modules.
_LOCK = threading.Lock()
_ROBUSTBENCH: ModuleType | None = None


def ensure_autoattack_alias() -> ModuleType:
    """Make ``import autoattack`` work, preferring a real ``autoattack`` package.

    Idempotent. If ``autoattack`` is already in :data:`sys.modules` or can be imported (as it can
    wherever art-wdat is installed, through its ``autoattack`` module), it is returned unchanged.
    Otherwise ``pyautoattack`` and its PyTorch submodules (:data:`AUTOATTACK_SUBMODULES`) are registered
    as ``autoattack`` and ``autoattack.<name>``.

    :return: the module that ``import autoattack`` now yields.
    :raises ImportError: when neither ``autoattack`` nor ``pyautoattack`` is installed.
    """
    with _LOCK:
        return _ensure_autoattack_alias_unlocked()


def _ensure_autoattack_alias_unlocked() -> ModuleType:
    existing = sys.modules.get("autoattack")
    if existing is not None:
        return existing
    try:
        return importlib.import_module("autoattack")
    except ModuleNotFoundError as err:
        # Only a missing top-level package means "not installed"; a real autoattack that fails on one of
        # its own dependencies must surface that error rather than be silently replaced.
        if err.name != "autoattack":
            raise
    try:
        package = importlib.import_module("pyautoattack")
    except ModuleNotFoundError as err:
        raise ImportError(
            "robustbench needs the 'autoattack' module; install it with: pip install pyautoattack"
        ) from err
    aliases = {"autoattack": package}
    for name in AUTOATTACK_SUBMODULES:
        aliases[f"autoattack.{name}"] = importlib.import_module(f"pyautoattack.{name}")
    # Publish all names at once, after every import succeeded, so a failure leaves sys.modules clean.
    sys.modules.update(aliases)
    logger.debug("aliased pyautoattack as autoattack (%d submodules)", len(AUTOATTACK_SUBMODULES))
    return package


def _check_pkg_resources() -> None:
    """Raise a readable ImportError when ``pkg_resources`` (setuptools<81) is unavailable."""
    try:
        with warnings.catch_warnings():
            # setuptools 80 warns that pkg_resources is deprecated on every import; we know.
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            importlib.import_module("pkg_resources")
    except ImportError as err:
        raise ImportError(_SETUPTOOLS_HINT) from err


def import_robustbench() -> ModuleType:
    """Import and return the ``robustbench`` module, fixing its import problems first.

    Lazy and idempotent: the first call does the work (a few seconds: robustbench imports timm), later
    calls return the cached module.

    :return: the ``robustbench`` package.
    :raises ImportError: when robustbench, pyautoattack or ``pkg_resources`` (``setuptools<81``) is
        missing, with a message that says what to install.
    """
    global _ROBUSTBENCH
    with _LOCK:
        if _ROBUSTBENCH is not None:
            return _ROBUSTBENCH
        _check_pkg_resources()
        _ensure_autoattack_alias_unlocked()
        try:
            with warnings.catch_warnings():
                # Import-time noise from robustbench's dependencies, not actionable by our users.
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.interface", category=FutureWarning)
                warnings.filterwarnings("ignore", message="Importing from timm", category=DeprecationWarning)
                module = importlib.import_module("robustbench")
                # robustbench/__init__ does not import its utils and model zoo as attributes of every kind
                # we use; importing them here makes ``rb.utils`` / ``rb.model_zoo`` always available.
                importlib.import_module("robustbench.utils")
                importlib.import_module("robustbench.model_zoo")
        except ModuleNotFoundError as err:
            if err.name == "pkg_resources":
                raise ImportError(_SETUPTOOLS_HINT) from err
            if err.name == "robustbench":
                raise ImportError("robustbench is not installed; install it with: pip install robustbench") from err
            raise
        _ROBUSTBENCH = module
        return module
