"""torch.distributed set-up for attacks, training and evaluation across processes (launched with torchrun).

The attack itself needs nothing from here: it reduces over the default process group whenever one is
initialised (see :mod:`art_wdat.reduce`). These helpers start and stop the group with a timeout, so a
rank that dies makes the others fail with an error instead of waiting forever.

Leaving the group must really free it. ``torch.distributed.nn.functional`` binds ``group.WORLD`` as the default
argument of its ten collectives *when it is imported*, and torch imports it (through ``torch._dynamo``) the first
time any optimizer is built. Imported after ``init_process_group``, those ten defaults keep the gloo process group
alive after ``destroy_process_group``: its threads (``gloo_tcp_loop``, ``pt_gloo_runloop``) then outlive the
group and are torn down during interpreter finalisation, where a rank sometimes aborted with "terminate called
without an active exception" after its work was done (torchrun then reported a failure). So
:func:`init_from_env` imports those modules before the group exists (they bind ``None``, as in a script that
imports them first), and :func:`destroy` drops any such default that still holds the destroyed group.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from types import FunctionType
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: Modules that torch imports on its own after the group may exist (the first optimizer imports ``torch._dynamo``,
#: which imports these) and that bind ``torch.distributed.group.WORLD`` as a default argument at import time.
GROUP_BINDING_MODULES = ("torch.distributed.nn.functional",)


def backend_for(device: str | torch.device = "auto") -> str:
    """The backend for tensors on ``device``: NCCL reduces CUDA tensors only, gloo CPU ones.

    :param device: "cpu", "cuda"/"gpu" (any index) or "auto" (cuda when available).
    """
    kind = str(device).split(":")[0]
    on_gpu = kind in ("cuda", "gpu") or (kind == "auto" and torch.cuda.is_available())
    return "nccl" if on_gpu else "gloo"


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> bool:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    :param backend: "nccl" or "gloo"; default nccl when CUDA is available, else gloo.
    :param timeout_s: How long a collective may wait for a missing rank before raising.
    :return: True if a group was initialised (or already was), False when not launched by torchrun.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    backend = backend or backend_for("auto")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    import_group_binding_modules()
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    logger.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def rank() -> int:
    """This process's rank, 0 without torch.distributed."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this process writes reports and checkpoints (rank 0)."""
    return rank() == 0


def import_group_binding_modules() -> None:
    """Import :data:`GROUP_BINDING_MODULES` while no process group exists, so that their defaults are ``None``.

    Call it before ``torch.distributed.init_process_group`` when you initialise the group yourself;
    :func:`init_from_env` does.
    """
    for name in GROUP_BINDING_MODULES:
        importlib.import_module(name)


def _release_defaults(group: Any) -> int:
    """Replace ``group`` by ``None`` in the default arguments of torch.distributed's functions and methods.

    ``None`` is what those defaults are when the module is imported before the group exists, and what the
    collectives read as "the default group". Returns how many defaults held ``group``.
    """
    released = 0
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not name.startswith("torch.distributed") or not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            members = vars(value).values() if isinstance(value, type) else (value,)
            for func in members:
                if isinstance(func, FunctionType) and func.__defaults__ and any(d is group for d in func.__defaults__):
                    func.__defaults__ = tuple(None if d is group else d for d in func.__defaults__)
                    released += 1
    return released


def destroy() -> None:
    """Destroy the default process group now, with every reference torch.distributed's modules still hold to it.

    No barrier: see :func:`shutdown` for leaving together. Without a group, nothing happens.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    group = dist.group.WORLD
    dist.destroy_process_group()
    released = _release_defaults(group)
    if released:
        logger.debug("released %d default argument(s) that held the destroyed process group", released)


def shutdown() -> None:
    """Leave the process group if one is initialised, once every rank has come this far.

    The barrier keeps a fast rank from tearing down its connections while a slow one still uses them;
    :func:`destroy` then frees the group and its threads before the interpreter exits.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        destroy()


@contextlib.contextmanager
def launched(backend: str | None = None, timeout_s: float = 300.0) -> Iterator[tuple[int, int]]:
    """``(world size, rank)`` of a torchrun launch for the block, ``(1, 0)`` without one.

    Joins the group from the environment (see :func:`init_from_env`) and leaves it after the block, unless the
    caller had initialised it already (then it is the caller's to destroy).
    """
    import torch.distributed as dist

    owned = not (dist.is_available() and dist.is_initialized())
    if not init_from_env(backend, timeout_s):
        yield 1, 0
        return
    try:
        yield dist.get_world_size(), dist.get_rank()
    except BaseException:
        # No barrier on the way out of an error: the other ranks may never reach it, and a barrier timeout would
        # replace this rank's own error.
        if owned:
            destroy()
        raise
    if owned:
        shutdown()
