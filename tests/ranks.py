"""Spawn a few gloo ranks for a test: each runs ``job(rank, world, tmp, *args)`` inside a process group.

Jobs must be module-level functions (the spawn start method pickles them by name). A rank that raises
writes its traceback to ``tmp/error<rank>.txt``, which :func:`errors` collects for the assertion message.
Success is a marker file written after the job and the group's teardown, not the exit code, and the ranks leave
by ``os._exit``: a test's result never depends on interpreter teardown. What teardown needs is checked instead:
after :func:`art_wdat.distributed.shutdown` each rank writes the names of the gloo threads still alive
(:func:`leftover_threads`; none once the group is really freed, see :mod:`art_wdat.distributed`), and the
torchrun tests check the exit codes of whole runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch

from art_wdat.distributed import shutdown


def _entry(job: Callable, rank: int, world: int, tmp: str, rendezvous: str, args: tuple) -> None:
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=30))
        job(rank, world, tmp, *args)
        shutdown()
    except BaseException:  # the parent reads what went wrong from the file
        Path(f"{tmp}/error{rank}.txt").write_text(traceback.format_exc())
        raise
    Path(f"{tmp}/threads{rank}.txt").write_text("\n".join(gloo_threads()))
    Path(f"{tmp}/done{rank}").touch()
    os._exit(0)  # the result is in the files; see the module docstring


def gloo_threads(wait: float = 5.0) -> list:
    """Names of this process's threads that belong to gloo (Linux: from /proc; elsewhere an empty list).

    Waits up to ``wait`` seconds for them to go: a joined thread may leave /proc a moment after its join returns,
    while the threads of a group that is still alive never go.
    """
    deadline = time.monotonic() + wait
    while True:
        names = _thread_names()
        gloo = sorted(name for name in names if "gloo" in name)
        if not gloo or time.monotonic() > deadline:
            return gloo
        time.sleep(0.05)


def _thread_names() -> list:
    tasks = Path("/proc/self/task")
    names = []
    if tasks.is_dir():
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):  # a thread may end while we look
                names.append((task / "comm").read_text().strip())
    return names


def spawn(job: Callable, world: int, tmp: Path, *args, timeout: float = 120.0) -> list:
    """Run ``job`` on ``world`` ranks; return, per rank, whether it finished its job (False: it raised).

    Fails the test if a rank is still alive at ``timeout`` (a hang).
    """
    for rank in range(world):
        for name in (f"done{rank}", f"error{rank}.txt", f"threads{rank}.txt"):
            (Path(tmp) / name).unlink(missing_ok=True)
    # A fresh rendezvous file per spawn: ranks that leave by os._exit do not delete theirs, and a stale one would
    # send the next group to the old ranks' ports.
    rendezvous = Path(tmp) / f"rendezvous-{uuid.uuid4().hex}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_entry, args=(job, rank, world, str(tmp), str(rendezvous), args))
             for rank in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
    assert not hung, "a rank hung instead of failing"
    return [(Path(tmp) / f"done{rank}").exists() for rank in range(world)]


def errors(tmp: Path, world: int) -> list:
    """The tracebacks the ranks left in ``tmp``."""
    return [(tmp / f"error{r}.txt").read_text() for r in range(world) if (tmp / f"error{r}.txt").exists()]


def leftover_threads(tmp: Path, world: int) -> list:
    """Per rank that finished, the gloo threads still alive after it left the process group."""
    return [(Path(tmp) / f"threads{r}.txt").read_text().split() for r in range(world)
            if (Path(tmp) / f"threads{r}.txt").exists()]


def save_digits(tmp: Path, clf, digits: tuple, n: int) -> tuple[Path, object, object]:
    """Write ``clf``'s weights and the first ``n`` held-out digits where :func:`digits_shard` reads them.

    :return: ``(tmp, x, y)``, the inputs the ranks will share out.
    """
    import numpy as np

    torch.save(clf.model.state_dict(), tmp / "model.pt")
    _, _, x, y = digits
    np.savez(tmp / "data.npz", x=x[:n], y=y[:n])
    return tmp, x[:n], y[:n]


def digits_shard(tmp: str, rank: int, shards: tuple[int, ...]):
    """``(classifier, x, y)`` of ``rank``: the digits CNN saved in ``tmp/model.pt`` and its contiguous shard of
    ``tmp/data.npz``, the shards being ``shards`` long in rank order."""
    import numpy as np

    from tests.conftest import digits_cnn, wrap

    data = np.load(f"{tmp}/data.npz")
    model = digits_cnn()
    model.load_state_dict(torch.load(f"{tmp}/model.pt", weights_only=True))
    lo = sum(shards[:rank])
    return wrap(model), data["x"][lo:lo + shards[rank]], data["y"][lo:lo + shards[rank]]
