"""Flip costs of predict-only models: decision-based solvers chained on one query budget per input.

A chain names its stages with "+", as the gradient chains do (:mod:`art_wdat.attacks.flip_costs`):

* ``"rays"``: untargeted RayS (:mod:`art_wdat.attacks.rays`) from the seed directions, until it converges;
* ``"rays-t"``: RayS towards each of the ``targets`` most likely other classes, by successive halving
  (:mod:`art_wdat.attacks.halving`); for a linear model a targeted RayS converges to the exact ℓ∞ minimum towards its
  class, so the search over classes is what decides;
* ``"hsja"``: a HopSkipJump-style boundary walk (:mod:`art_wdat.attacks.boundary`) from the best point so far;
* ``"hsja-t"``: walks towards each of the ``targets`` classes (from the nearest correctly classified input of that
  class in the batch) and one from the best point so far, by successive halving;
* ``"refine"``: under ℓ∞ a RayS over directions in {−1, 0, 1}^D from each input's best point (and, for up to
  :data:`SINGLE_FEATURE_SEEDS` features, each feature moved alone), which tree ensembles need; under ℓ2 a fine
  bisection towards x; under ℓ1 also the cheapest point of the boundary's estimated normal and a sparsification.

Each stage may spend up to its share (:data:`SHARES`) of what the budget leaves after the verification, plus what the
stages before it left unspent. The budget counts every row passed to the model
(:class:`~art_wdat.attacks.oracle.Oracle`): one query per input for the clean prediction, the solvers' queries, and
the final verification (:func:`~art_wdat.attacks.verified.verify`, at most :data:`RESERVE` per input); so no input
uses more than ``max_queries``. Per input the chain keeps the cheapest point any stage found; the final verification
proves it. The solvers decide on the host once per step (a predict-only model answers on the host anyway).
"""

from __future__ import annotations

import math
import time

import torch

from art_wdat.attacks.boundary import BoundaryWalk, refine
from art_wdat.attacks.box import Box
from art_wdat.attacks.halving import halving
from art_wdat.attacks.oracle import Incumbent, Oracle
from art_wdat.attacks.rays import RaySearch, seed_signs
from art_wdat.attacks.verified import OVERSHOOT, FlipCosts, Forward, verify

#: The decision-based stages.
DECISION_STAGES = ("rays", "rays-t", "hsja", "hsja-t", "refine")
#: Relative shares of the budget per stage (what one leaves unspent passes to the next).
SHARES = {"rays": 4.0, "rays-t": 4.0, "hsja": 4.0, "hsja-t": 4.0, "refine": 0.2}
#: Under ℓ1 the refinement estimates the boundary's normal (:func:`~art_wdat.attacks.boundary.normal_path`): its share.
L1_REFINE_SHARE = 2.0
#: Queries per input the final verification may take: its clean prediction, the point, the overshoots.
RESERVE = 2 + len(OVERSHOOT)
#: The default query budget per input.
MAX_QUERIES = 5000
#: Up to this many features, the ℓ∞ refinement also tries every feature moved alone (2 directions each).
SINGLE_FEATURE_SEEDS = 256
#: Relative precision of the last bisection of each input's best ray.
POLISH_TOL = 1e-5
#: Queries per input kept back for that last bisection.
POLISH_QUERIES = 12


class CountedForward:
    """``forward`` that counts the rows it is given, in :attr:`rows`."""

    def __init__(self, forward: Forward) -> None:
        self.forward, self.rows = forward, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.forward(x)


def _scores(forward: CountedForward, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's scores of ``x`` in float64, batch by batch, without gradients."""
    with torch.no_grad():
        parts = [forward(x[i:i + batch_size]).double() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts) if parts else x.new_zeros((0, 1), dtype=torch.float64)


def untargeted_rays(oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor, seeds: torch.Tensor) -> None:
    """Stage ``"rays"``: one untargeted RayS per input from its seeds, then its best ray bisected finely."""
    search = RaySearch(oracle, incumbent, rows, seeds)
    oracle.cap[rows] -= POLISH_QUERIES
    search.run()
    oracle.cap[rows] += POLISH_QUERIES
    search.polish(torch.arange(rows.numel(), device=rows.device), POLISH_TOL)


def targeted_rays(oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor, classes: torch.Tensor,
                  seeds: torch.Tensor) -> None:
    """Stage ``"rays-t"``: RayS towards each class of ``classes`` (m, T) per input, by successive halving, then the
    best ray of each input bisected finely.

    :param seeds: (m, 1 + K, D) from :func:`~art_wdat.attacks.rays.seed_signs`: the farther-bound pattern, then one
        direction per class.
    """
    n_targets = classes.shape[1]
    task_rows = rows.repeat_interleave(n_targets)
    local = torch.arange(rows.numel(), device=rows.device).repeat_interleave(n_targets)
    targets = classes.reshape(-1)
    task_seeds = torch.stack([seeds[local, 1 + targets], seeds[local, 0]], dim=1)
    search = RaySearch(oracle, incumbent, task_rows, task_seeds, targets)
    best = halving(search, task_rows, oracle, reserve=POLISH_QUERIES)
    search.polish(best.nonzero().flatten(), POLISH_TOL)


def sparse_rays(oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor) -> None:
    """Stage ``"refine"`` under ℓ∞: RayS over directions in {−1, 0, 1}^D from the sign pattern of each input's best
    point (blocks flipped, then reset to x), and up to :data:`SINGLE_FEATURE_SEEDS` features each feature moved
    alone, then its best ray bisected finely. A linear model gains nothing (its
    cheapest ℓ∞ flips move every coordinate), a tree ensemble, which a move of one feature can undo, does."""
    found = rows[torch.isfinite(incumbent.costs[rows])]
    if found.numel() == 0:
        return
    delta = (incumbent.points[found] - oracle.x[found]).flatten(1)
    seeds = torch.sign(delta)[:, None, :]
    d = delta.shape[1]
    if d <= SINGLE_FEATURE_SEEDS:
        # One feature moved alone, each way: a tree's vote changes at a threshold of one feature.
        eye = torch.eye(d, dtype=delta.dtype, device=delta.device)
        single = torch.cat([eye, -eye])[None].expand(found.numel(), -1, -1)
        seeds = torch.cat([seeds, single], dim=1)
    search = RaySearch(oracle, incumbent, found, seeds, zeroing=True)
    oracle.cap[found] -= POLISH_QUERIES
    search.run()
    oracle.cap[found] += POLISH_QUERIES
    search.polish(torch.arange(found.numel(), device=found.device), POLISH_TOL)


def _class_starts(oracle: Oracle, rows: torch.Tensor, classes: torch.Tensor,
                  usable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per input of ``rows`` and class of ``classes`` (m, T), the nearest (ℓ2) ``usable`` input of that class, where
    there is one: (task rows, task targets, start points); one query each to check the start."""
    x = oracle.x
    flat = x.flatten(1).double()
    dist = torch.cdist(flat[rows], flat)
    task_rows, task_targets, starts = [], [], []
    for j in range(classes.shape[1]):
        c = classes[:, j]
        pool = usable[None, :] & (oracle.y[None, :] == c[:, None])
        d = torch.where(pool, dist, torch.full_like(dist, math.inf))
        has = torch.isfinite(d.min(dim=1).values)
        task_rows.append(rows[has])
        task_targets.append(c[has])
        starts.append(x[d.argmin(dim=1)[has]])
    r, t, s = torch.cat(task_rows), torch.cat(task_targets), torch.cat(starts)
    ok = oracle.affordable(r)
    r, t, s = r[ok], t[ok], s[ok]
    accepted = oracle.ask(r, s, t)
    return r[accepted], t[accepted], s[accepted]


def targeted_walks(oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor, classes: torch.Tensor,
                   usable: torch.Tensor) -> None:
    """Stage ``"hsja-t"``: per input, HSJA walks towards each class of ``classes`` (from the nearest usable input of
    the class) and one untargeted walk from the best point so far, by successive halving."""
    r, t, s = _class_starts(oracle, rows, classes, usable)
    found = rows[torch.isfinite(incumbent.costs[rows])]
    r = torch.cat([r, found])
    t = torch.cat([t, torch.full_like(found, -1)])
    s = torch.cat([s, incumbent.points[found]])
    if r.numel():
        halving(BoundaryWalk(oracle, incumbent, r, t, s), r, oracle)


def untargeted_walk(oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor) -> None:
    """Stage ``"hsja"``: one untargeted HSJA walk per input from its best point so far."""
    found = rows[torch.isfinite(incumbent.costs[rows])]
    if found.numel():
        BoundaryWalk(oracle, incumbent, found, torch.full_like(found, -1), incumbent.points[found]).run()


def decision_costs(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, norm: float, stages: list[str], box: Box,
                   max_queries: int = MAX_QUERIES, targets: int = 9, batch_size: int = 256) -> FlipCosts:
    """Verified flip costs of ``x`` from the decision-based ``stages``, at most ``max_queries`` rows per input.

    :param forward: The model's scores (probabilities or logits; read through argmax and margins only).
    :param x: Clean inputs in the box.
    :param y: Labels (N,).
    :param norm: Ground norm: inf, 2 or 1.
    :param stages: Names from :data:`DECISION_STAGES`, run in order.
    :param box: The input box.
    :param max_queries: Rows per input passed to the model, everything included.
    :param targets: Classes searched by ``"rays-t"`` (the most likely others at x).
    :param batch_size: Rows per model call.
    :return: The costs, with ``queries`` (per input) and ``seconds``.
    """
    start = time.perf_counter()
    counted = CountedForward(forward)
    counts = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    z = _scores(counted, x, batch_size)
    counts += 1
    labels = z.argmax(dim=1) if x.shape[0] else y
    correct = labels == y
    rows = correct.nonzero().flatten()
    oracle, incumbent = Oracle(counted, x, y, box, counts, batch_size), Incumbent(x, norm)
    n_classes = z.shape[1]
    ranked = z.scatter(1, y[:, None], -math.inf).argsort(dim=1, descending=True)[:, :max(1, min(targets,
                                                                                                n_classes - 1))]
    seeds = seed_signs(x[rows], y[rows], torch.ones_like(rows, dtype=torch.bool), box, n_classes) \
        if rows.numel() else x.new_zeros((0, 1 + n_classes, x[0].numel()))
    budget = max_queries - 1 - RESERVE
    shares = {**SHARES, **({"refine": L1_REFINE_SHARE} if norm == 1.0 else {})}
    total = sum(shares[s] for s in stages)
    spent = 0.0
    for stage in stages:
        spent += shares[stage]
        oracle.cap[:] = 1 + int(budget * spent / total)
        if rows.numel() == 0:
            continue
        if stage == "rays":
            order = torch.cat([torch.zeros_like(ranked[rows, :1]), 1 + ranked[rows]], dim=1)
            untargeted_rays(oracle, incumbent, rows, seeds.gather(1, order[:, :, None].expand(-1, -1,
                                                                                              seeds.shape[2])))
        elif stage == "rays-t":
            targeted_rays(oracle, incumbent, rows, ranked[rows], seeds)
        elif stage == "hsja":
            untargeted_walk(oracle, incumbent, rows)
        elif stage == "hsja-t":
            targeted_walks(oracle, incumbent, rows, ranked[rows], correct)
        elif norm == math.inf:
            sparse_rays(oracle, incumbent, rows)
        else:
            refine(oracle, incumbent, rows)
    before = counted.rows
    result = verify(counted, x, incumbent.points, y, norm, batch_size, clip=box)
    counts += (counted.rows - before) // max(x.shape[0], 1)
    result.queries, result.seconds = counts, time.perf_counter() - start
    return result
