"""Reductions over the whole distribution.

The budget couples every input handed to an attack, so sums and maxima over samples must span all
of them: across the batches of one process (done by the caller) and, under ``torch.distributed``,
across the shards of every rank (done here). The threat model and the attack loop only ever call
:meth:`Reducer.sum` and :meth:`Reducer.max`, so one code path serves both cases.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import torch

#: What every ``process_group`` parameter takes: a ``torch.distributed`` process group, ``False`` (force a
#: local computation) or ``None`` (the world group when torch.distributed is initialised, else local).
ProcessGroupLike: TypeAlias = "torch.distributed.ProcessGroup | Literal[False] | None"


class Reducer:
    """Reductions within one process: the identity on already-reduced local values.

    :ivar world_size: How many ranks take part.
    :ivar group: The process group reduced over; ``None`` here and for the default (world) group.
    """

    world_size: int = 1
    group: torch.distributed.ProcessGroup | None = None

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Return the sum of ``t`` over all participants (here: ``t`` itself)."""
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """Return the element-wise maximum of ``t`` over all participants (here: ``t`` itself)."""
        return t


class GroupReducer(Reducer):
    """Reductions across the ranks of a ``torch.distributed`` process group (all_reduce, no host sync).

    :param group: The process group; ``None`` means the default (world) group.
    """

    def __init__(self, group: torch.distributed.ProcessGroup | None = None) -> None:
        import torch.distributed as dist

        self.group = group
        self.world_size = dist.get_world_size(group)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def max(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=self.group)
        return out


LOCAL = Reducer()


def default_reducer(group: ProcessGroupLike = None) -> Reducer:
    """Pick the reducer for ``group``: the world group when torch.distributed is initialised, else local.

    :param group: ``None`` (auto), ``False`` (force local) or a process group.
    """
    import torch.distributed as dist

    if group is False:
        return LOCAL
    if dist.is_available() and dist.is_initialized():
        return GroupReducer(group)
    if group is not None:
        raise ValueError("`process_group` was given but torch.distributed is not initialised.")
    return LOCAL


def reduce_floats(reducer: Reducer, values: list[float], device: torch.device | str, op: str = "sum") -> list[float]:
    """Sum (or max) a few host numbers over all participants in one call: counts, totals, wall times.

    :param device: Where the reduction runs; NCCL reduces device tensors only, so pass the model's device.
    :param op: "sum" or "max".
    """
    if reducer.world_size == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    return (reducer.max(t) if op == "max" else reducer.sum(t)).tolist()
