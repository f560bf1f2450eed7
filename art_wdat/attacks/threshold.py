"""Extra solver effort where it decides the answer: the inputs whose flip costs lie near the knapsack's threshold.

At budget δ and order p the knapsack flips the k cheapest inputs, k the longest prefix of the sorted costs with
(1/N) Σ c^p ≤ δ^p. Its answer changes only if the costs around the threshold t* (the cost of the first input it
cannot afford) come down: the next input above t* becomes affordable, or the ones just below leave room for it.
Those are few, so they can get solvers the full pass cannot afford for every input.

:func:`decisive_inputs` finds them for a list of (δ, p) asked; :func:`refine_near_threshold` runs, on them only,
targeted FAB and targeted FMN against each likely class (``"fab-t+fmn-t"``) and then the APGD radius bisection from
the cheaper of old and new (gradient models), or a decision-based chain with its own budget (predict-only models),
and returns the costs merged input by input: never higher than before, every point verified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from art_wdat.attacks import gradient_solvers as gs
from art_wdat.attacks.box import UNIT, Box, ClipLike
from art_wdat.attacks.flip_costs import MinNormMethod, default_min_norm, min_norm_costs
from art_wdat.attacks.verified import FlipCosts, Forward, as_box
from art_wdat.core.knapsack import affordable_count, gather_costs
from art_wdat.core.reduce import LOCAL, Reducer

#: Relative half-width of the window around each threshold: costs in [t*/(1 + w), t*·(1 + w)].
WINDOW = 0.25
#: At most this fraction of the inputs (and at least :data:`MIN_LIMIT`) is refined, the nearest to a threshold.
LIMIT_FRACTION, MIN_LIMIT = 0.02, 8
#: The search of the refinement (gradient models), then the bisection from the merged costs.
REFINE_METHOD: MinNormMethod = "fab-t+fmn-t"
#: Its effort: FAB and FMN targeted at the 4 likeliest other classes, with longer runs, and a finer and longer
#: bisection than the first pass; about 6 times the first pass's time per refined input.
REFINE_OPTIONS = {"n_iter": 50, "restarts": 1, "targets": 4, "fmn_targets": 4, "fmn_steps": 200, "rounds": 10,
                  "apgd_iter": 50}


def decisive_inputs(costs: torch.Tensor, correct: torch.Tensor, budgets: Sequence[tuple[float, float]], *,
                    window: float = WINDOW, limit: int | None = None, reducer: Reducer = LOCAL) -> torch.Tensor:
    """The correctly classified inputs whose finite cost lies within ``window`` (relative) of the knapsack's threshold
    for one of ``budgets``, at most ``limit`` of them (the nearest to a threshold, in ratio).

    :param costs: Verified flip costs (N,) (0: misclassified, inf: never flipped).
    :param correct: Which inputs are classified correctly.
    :param budgets: (δ, p) pairs asked.
    :param limit: Most inputs returned (default: :data:`LIMIT_FRACTION` of N, at least :data:`MIN_LIMIT`).
    :param reducer: Under torch.distributed, the ranks whose inputs form the distribution: the thresholds and the
        limit are those of all their inputs, and each rank gets the mask of its own.
    :return: Boolean mask (N,) of this rank's inputs.
    """
    local = torch.where(correct, costs.double(), torch.zeros_like(costs, dtype=torch.float64))
    # Misclassified inputs cost 0, which the mask below leaves out: the gathered costs alone say everything.
    c, offset = gather_costs(local, reducer)
    n = c.numel()
    limit = max(MIN_LIMIT, math.ceil(LIMIT_FRACTION * n)) if limit is None else limit
    sorted_costs = torch.sort(c).values
    distance = torch.full_like(c, math.inf)
    for delta, p in budgets:
        k = int(affordable_count(sorted_costs, float(p), c.new_tensor(float(delta)), n))
        if k >= n or not math.isfinite(float(sorted_costs[k])):
            continue
        t = float(sorted_costs[k])
        ratio = (c / t).log().abs() if t > 0 else torch.full_like(c, math.inf)
        distance = torch.minimum(distance, torch.where(ratio <= math.log1p(window), ratio, math.inf))
    near = torch.isfinite(c) & (c > 0) & torch.isfinite(distance)
    if int(near.sum()) > limit:
        keep = torch.sort(torch.where(near, distance, math.inf), stable=True).indices[:limit]
        near = torch.zeros_like(near)
        near[keep] = True
    return near[offset:offset + local.numel()]


def refine_near_threshold(forward: Forward, x: torch.Tensor, y: torch.Tensor, costs: FlipCosts,
                          budgets: Sequence[tuple[float, float]], *, norm: float = math.inf,
                          clip: Box | ClipLike = UNIT, gradients: bool = True, window: float = WINDOW,
                          limit: int | None = None, seed: int = 1, reducer: Reducer = LOCAL,
                          **options: int) -> FlipCosts:
    """``costs`` with the inputs of :func:`decisive_inputs` re-solved harder, merged: never higher, all verified.

    :param forward: The model (as for :func:`~art_wdat.attacks.flip_costs.min_norm_costs`).
    :param x: Clean inputs (N, ...), :param y: labels, as the costs were computed on.
    :param costs: Verified costs of (x, y) from a first pass (left unchanged).
    :param budgets: (δ, p) pairs the answer is asked at.
    :param norm: Ground norm of the costs.
    :param clip: The box.
    :param gradients: Whether ``forward`` is differentiable; if not, a decision-based chain re-solves (its
        ``max_queries`` applies again to each refined input).
    :param window: :data:`WINDOW`.
    :param limit: Most inputs refined.
    :param seed: Seed of the refinement's random starts (another than the first pass's).
    :param reducer: Under torch.distributed, the ranks of the distribution (:func:`decisive_inputs`); the re-solving
        itself is local and joins no collective.
    :param options: Keywords of :func:`~art_wdat.attacks.flip_costs.min_norm_costs` overriding
        :data:`REFINE_OPTIONS` (or ``max_queries`` for predict-only models).
    :return: New :class:`FlipCosts` (a copy); ``queries`` and ``seconds`` are those of the first pass.
    """
    out = FlipCosts(costs.costs.clone(), costs.x_adv.clone(), costs.correct.clone(),
                    None if costs.queries is None else costs.queries.clone(), costs.seconds)
    idx = decisive_inputs(costs.costs, costs.correct, budgets, window=window, limit=limit,
                          reducer=reducer).nonzero().flatten()
    if idx.numel() == 0:
        return out
    box = as_box(clip, x)
    xs, ys, old = x[idx], y[idx], costs.take(idx)
    if not gradients:
        found = min_norm_costs(forward, xs, ys, norm=norm, method=default_min_norm(norm, gradients=False), clip=box,
                               **options)
        merged = old.merge(found)
    else:
        opts = {**REFINE_OPTIONS, **options}
        # Targeted runs against the likeliest other classes: no more than the model has.
        n_classes = int(forward(xs[:1]).shape[1])
        for key in ("targets", "fmn_targets"):
            opts[key] = max(1, min(int(opts[key]), n_classes - 1))
        found = min_norm_costs(forward, xs, ys, norm=norm, method=REFINE_METHOD, clip=box, seed=seed, **opts)
        merged = old.merge(found)
        if norm != 1.0:
            merged = gs.apgd_bisection(forward, xs, ys, norm, merged, box, rounds=opts["rounds"],
                                       n_iter=opts["apgd_iter"], seed=seed)
    out.costs[idx], out.x_adv[idx] = merged.costs, merged.x_adv
    return out
