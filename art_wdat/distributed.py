"""torch.distributed set-up for attacks, training and evaluation across processes (launched with torchrun).

The attack itself needs nothing from here: it reduces over the default process group whenever one is
initialised (see :mod:`art_wdat.reduce`). These helpers start and stop the group with a timeout, so a
rank that dies makes the others fail with an error instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta

import torch

logger = logging.getLogger(__name__)


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


def shutdown() -> None:
    """Leave the process group if one is initialised, once every rank has come this far."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
            dist.destroy_process_group()
        raise
    if owned:
        shutdown()
