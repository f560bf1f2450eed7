"""Successive halving of the search over target classes: many searches per input, the budget to the promising ones.

A decision-based solver that runs one search per (input, target class) cannot afford to finish them all. Here every
search of an input gets an equal share of :data:`FIRST_ROUND` of the input's budget, then the better half of them
(by their best cost so far) an equal share of the rest over the rounds left, and so on down to one. Searches that
converge early leave their share to the next rounds.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from art_wdat.attacks.oracle import Oracle

#: The part of its budget an input spreads evenly over all of its searches before halving them.
FIRST_ROUND = 0.5


class Searches(Protocol):
    """Searches that :func:`halving` can schedule: per search its queries (``used``), a cap on them (``task_cap``)
    and its best cost (``best``, lower is better); ``run`` spends up to the caps."""

    used: torch.Tensor
    task_cap: torch.Tensor

    @property
    def best(self) -> torch.Tensor: ...

    def run(self) -> None: ...


def rank_within(rows: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Per entry, its rank by ``key`` (ascending, ties by position) among the entries of the same ``rows`` value."""
    if rows.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=rows.device)
    order = torch.sort(key, stable=True).indices
    order = order[torch.sort(rows[order], stable=True).indices]
    pos = torch.arange(rows.numel(), device=rows.device)
    first = torch.full((int(rows.max()) + 1,), rows.numel(), dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, rows[order], pos, "amin")
    rank = torch.empty_like(pos)
    rank[order] = pos - first[rows[order]]
    return rank


def halving(searches: Searches, rows: torch.Tensor, oracle: Oracle, *, reserve: int = 0) -> torch.Tensor:
    """Run ``searches`` (search k for input ``rows[k]``) by successive halving within each input's budget.

    :param reserve: Queries per input kept back (for a last step after the halving).
    :return: Per search, whether it is its input's best at the end.
    """
    n_inputs = oracle.x.shape[0]
    per_input = torch.zeros(n_inputs, dtype=torch.long, device=rows.device).index_add_(0, rows, torch.ones_like(rows))
    rounds = math.ceil(math.log2(max(int(per_input.max()) if rows.numel() else 1, 1))) + 1
    alive = torch.ones(rows.numel(), dtype=torch.bool, device=rows.device)
    for r in range(rounds):
        n_alive = torch.zeros(n_inputs, dtype=torch.long, device=rows.device).index_add_(0, rows, alive.long())
        left = (oracle.left(rows) - reserve).clamp_min(0)
        part = FIRST_ROUND if r == 0 else 1.0 / (rounds - r)
        share = (left.double() * part).long() // n_alive[rows].clamp_min(1)
        searches.task_cap = torch.where(alive, searches.used + share, searches.used)
        searches.run()
        keep = (n_alive[rows] + 1) // 2
        alive &= rank_within(rows, torch.where(alive, searches.best, math.inf)) < keep
    return rank_within(rows, searches.best) == 0
