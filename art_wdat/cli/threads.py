"""The ``--threads`` option of every command and example: torch's CPU threads, by default the physical cores.

torch's own default counts the cores it can see, which in a container or under a CPU quota can be far more
than the process may use; and every rank of a ``torchrun`` job takes all of them, so that the ranks of one node
oversubscribe the CPU. Oversubscription is what makes small models slow: on the project's shared 2-core CPU
machine an example ran 10–12× slower with torch's default than with one thread. The default here is the number
of physical cores this process may run on (its CPU affinity, capped by a cgroup CPU quota), shared out among
the ranks of this node (``LOCAL_WORLD_SIZE``). On a machine that other jobs keep busy, ``--threads 1`` is
usually fastest for the small models of the demo and the examples.

No torch import here: the parser uses :func:`add_threads_argument` while ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = ["THREADS_DEFAULT", "THREADS_HELP", "add_threads_argument", "default_threads", "physical_cores",
           "set_threads"]

#: What ``--threads`` defaults to, for help texts.
THREADS_DEFAULT = "the physical cores this process may use, shared among the torchrun ranks of the node"
THREADS_HELP = f"torch CPU threads (default: {THREADS_DEFAULT}; on a busy machine 1 is often fastest for small models)"


def _usable_cpus() -> set[int] | None:
    """The logical CPUs this process may run on (its affinity), or None where the platform does not say."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return set(getter(0))
    except OSError:
        return None


def _cores_in_cpuinfo(cpus: set[int] | None, text: str) -> int | None:
    """Distinct (physical id, core id) pairs among ``cpus`` in a /proc/cpuinfo ``text``; None if it has none."""
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" not in fields or "core id" not in fields:
            continue
        if cpus is not None and fields["processor"].isdigit() and int(fields["processor"]) not in cpus:
            continue
        cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def _cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The CPUs a cgroup v2 quota allows (rounded up), or None when there is no quota."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def physical_cores() -> int:
    """The physical cores this process may run on: hyper-threads of one core count once; at least 1.

    Read from ``/proc/cpuinfo`` (``core id`` per ``physical id``, among the CPUs of the affinity mask), capped by
    a cgroup CPU quota; where cpuinfo says nothing (not Linux), the logical CPUs of the affinity mask or
    :func:`os.cpu_count`.
    """
    cpus = _usable_cpus()
    try:
        cores = _cores_in_cpuinfo(cpus, Path("/proc/cpuinfo").read_text())
    except OSError:
        cores = None
    if cores is None:
        cores = len(cpus) if cpus else (os.cpu_count() or 1)
    quota = _cpu_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def default_threads() -> int:
    """:func:`physical_cores` divided among the ranks of this node (torchrun's ``LOCAL_WORLD_SIZE``), at least 1."""
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, physical_cores() // local_ranks)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads to ``threads`` (default :func:`default_threads`); return the count set."""
    import torch

    n = default_threads() if threads is None else threads
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser, *, help_text: str = THREADS_HELP) -> None:
    """Add ``--threads N`` (default None: :func:`default_threads` when :func:`set_threads` applies it)."""
    parser.add_argument("--threads", type=_positive, default=None, help=help_text)
