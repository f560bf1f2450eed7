"""The decision-based solvers' view of the model: hard-label answers, counted per input, and the best point so far.

:class:`Oracle` answers "is this point safely misclassified?" with the verification's own test
(:func:`~art_wdat.attacks.verified.margins` > 0), so every point a solver keeps is one the verification accepts,
and counts one query per row passed to the model, per input. :class:`Incumbent` keeps, per input, the cheapest
point an oracle said yes to.
"""

from __future__ import annotations

import math

import torch

from art_wdat.attacks.box import Box
from art_wdat.attacks.verified import Forward, margins
from art_wdat.core.norms import lp_norms


class Oracle:
    """Hard-label queries of ``forward`` for the inputs ``x`` (N, ...) with labels ``y``, counted per input.

    :param forward: The model (scores; only their argmax and margin are read).
    :param x: Clean inputs.
    :param y: Labels (N,).
    :param box: The input box.
    :param counts: Queries already spent per input (N,), int64; updated in place.
    :param batch_size: Rows per forward call.
    :ivar cap: Per input, the count up to which the current solver may query (set by the caller).
    """

    def __init__(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, box: Box, counts: torch.Tensor,
                 batch_size: int = 256) -> None:
        self.forward, self.x, self.y, self.box = forward, x, y, box
        self.counts, self.batch_size = counts, batch_size
        self.cap = torch.full_like(counts, 2 ** 62)

    def left(self, rows: torch.Tensor) -> torch.Tensor:
        """Queries the inputs ``rows`` may still spend under :attr:`cap`."""
        return (self.cap[rows] - self.counts[rows]).clamp_min(0)

    def affordable(self, rows: torch.Tensor, cost: int = 1) -> torch.Tensor:
        """Which of the requests for ``rows`` (inputs may repeat), ``cost`` queries each, fit in what each input has
        :meth:`left`: the first ones of each input, in order."""
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=rows.device)
        order = torch.sort(rows, stable=True).indices
        sorted_rows = rows[order]
        pos = torch.arange(rows.numel(), device=rows.device)
        first = torch.full_like(self.counts, rows.numel()).scatter_reduce(0, sorted_rows, pos, "amin")
        rank = torch.empty_like(pos)
        rank[order] = pos - first[sorted_rows]
        return (rank + 1) * cost <= self.left(rows)

    def ask(self, rows: torch.Tensor, points: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Whether each of ``points`` (one per entry of ``rows``; inputs may repeat) is safely misclassified, or with
        ``targets`` (−1: none) safely pushed past that class. One query per point."""
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=self.x.device)
        self.counts.index_add_(0, rows, torch.ones_like(rows))
        return margins(self.forward, points, self.y[rows], self.batch_size, targets) > 0


class Incumbent:
    """Per input, the cheapest point an oracle called misclassified (x and +inf where none), in the ground norm.

    :param x: Clean inputs (N, ...).
    :param norm: Ground norm.
    """

    def __init__(self, x: torch.Tensor, norm: float) -> None:
        self.x, self.norm = x, norm
        self.points = x.clone()
        self.costs = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)

    def offer(self, rows: torch.Tensor, points: torch.Tensor) -> None:
        """Keep ``points`` (misclassified, one per entry of ``rows``; inputs may repeat) where cheaper."""
        if rows.numel() == 0:
            return
        cost = lp_norms(points.double() - self.x[rows].double(), self.norm)
        lowest = self.costs.clone().scatter_reduce(0, rows, cost, "amin")
        pos = torch.arange(rows.numel(), device=rows.device)
        wins = (cost == lowest[rows]) & (cost < self.costs[rows])
        # One winner per input: the first of equal cheapest points.
        first = torch.full((self.x.shape[0],), rows.numel(), dtype=torch.long, device=rows.device)
        first = first.scatter_reduce(0, rows, torch.where(wins, pos, rows.numel()), "amin")
        wins &= pos == first[rows]
        keep = rows[wins]
        self.costs[keep], self.points[keep] = cost[wins], points[wins]
