"""The W_p threat as a knapsack: flip the cheapest inputs first (the accuracy objective).

For the accuracy objective an attack on the ball C(x', x) ≤ δ only has to decide *which* inputs to flip.
Input i costs c_i, its minimal adversarial perturbation ‖x'_i − x_i‖_r (0 if it is already misclassified,
+inf if no attack flipped it). A set S is affordable when (1/N) Σ_{i∈S} c_i^p ≤ δ^p (p = inf: every
c_i ≤ δ), and all items weigh one, so the largest affordable set is a prefix of the costs sorted in
increasing order: the greedy choice is optimal.

Pure torch. Sums of c^p run in float64 over all N inputs; under ``torch.distributed`` the costs of every
rank are gathered (as a sum of zero-padded vectors: :class:`~art_wdat.core.reduce.Reducer` only sums and
maximises) and sorted globally, so every rank takes the same decision and keeps its own part of the mask.
"""

from __future__ import annotations

import math

import torch

from art_wdat.core.reduce import LOCAL, Reducer


def _rank_of(reducer: Reducer) -> int:
    """This process's rank in the reducer's group (0 without torch.distributed)."""
    if reducer.world_size == 1:
        return 0
    import torch.distributed as dist

    return dist.get_rank(getattr(reducer, "group", None))


def gather_costs(costs: torch.Tensor, reducer: Reducer = LOCAL) -> tuple[torch.Tensor, int]:
    """All ranks' costs in rank order, and where this rank's block starts (float64; local: the costs themselves).

    :param costs: This rank's costs, shape (n,).
    :param reducer: Sums over the ranks of one distribution.
    """
    c = costs.double().reshape(-1)
    if reducer.world_size == 1:
        return c, 0
    rank = _rank_of(reducer)
    sizes = torch.zeros(reducer.world_size, dtype=torch.float64, device=c.device)
    sizes[rank] = float(c.numel())
    counts = [int(v) for v in reducer.sum(sizes).tolist()]
    offset = sum(counts[:rank])
    # Each rank fills its own block and zeros elsewhere: the sum is an exact all_gather (x + 0 = x, inf included).
    padded = torch.zeros(sum(counts), dtype=torch.float64, device=c.device)
    padded[offset:offset + c.numel()] = c
    return reducer.sum(padded), offset


def _check(costs: torch.Tensor, p: float) -> None:
    if costs.dim() != 1:
        raise ValueError(f"`costs` must be a vector (N,), got shape {tuple(costs.shape)}.")
    if costs.numel() and (torch.isnan(costs).any() or (costs < 0).any()):
        raise ValueError("`costs` must be ≥ 0 (+inf for inputs that were never flipped), without NaN.")
    if not p >= 1:
        raise ValueError(f"`p` must lie in [1, inf], got {p!r}.")


def _scaled_powers(sorted_costs: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative sums of (c/m)^p over the sorted finite costs, and the scale m (the largest finite cost).

    Scaling keeps large ``p`` from overflowing (ℓ1 costs of images are in the thousands); the budget is
    scaled the same way by the caller. +inf costs give +inf sums, which no budget affords.
    """
    # Masked, not indexed: a boolean index has a data-dependent shape and would sync the host.
    finite = torch.where(torch.isfinite(sorted_costs), sorted_costs, torch.zeros_like(sorted_costs))
    m = finite.max() if finite.numel() else sorted_costs.new_ones(())
    m = torch.where(m > 0, m, torch.ones_like(m))
    return (sorted_costs / m).pow(p).cumsum(0), m


def affordable_count(sorted_costs: torch.Tensor, p: float, eps: torch.Tensor, n_total: int) -> torch.Tensor:
    """For each budget in ``eps`` (any shape), how many of the ascending ``sorted_costs`` it flips.

    :param sorted_costs: The costs of all N inputs in increasing order (float64).
    :param p: Wasserstein order in [1, inf].
    :param eps: Budgets δ ≥ 0 (float64).
    :param n_total: N, the size of the whole distribution (the mean's denominator).
    :return: Integer counts k(δ): the longest prefix with (1/N) Σ c^p ≤ δ^p (p = inf: c ≤ δ).
    """
    eps = eps.double()
    # Never-flipped inputs (+inf) are never affordable, not even for an infinite (or overflowing) budget.
    n_finite = torch.isfinite(sorted_costs).sum()
    if math.isinf(p):
        k = torch.searchsorted(sorted_costs, eps.reshape(-1), right=True)
    else:
        cums, m = _scaled_powers(sorted_costs, p)
        # cums is non-decreasing (c^p ≥ 0), so the affordable prefixes are found by one binary search.
        k = torch.searchsorted(cums, (n_total * (eps / m).pow(p)).reshape(-1), right=True)
    return torch.minimum(k, n_finite).reshape(eps.shape)


def select_cheapest(costs: torch.Tensor, p: float, eps: float, reducer: Reducer = LOCAL) -> torch.Tensor:
    """The largest set of inputs a W_p budget ``eps`` can flip: the cheapest first (optimal, all items weigh one).

    Ties in cost are broken by the global index (rank, then position), so exactly the affordable number of
    tied inputs is taken and the budget holds: (1/N) Σ_selected c_i^p ≤ eps^p in float64, N counting
    every input of every rank. Inputs of cost 0 are always selected, those of cost +inf never.

    :param costs: This rank's flip costs (N,), float64, ≥ 0, +inf where no attack flipped the input.
    :param p: Wasserstein order in [1, inf]; inf selects every c_i ≤ eps.
    :param eps: The budget δ ≥ 0.
    :param reducer: Sums over the whole distribution (a :class:`~art_wdat.core.reduce.GroupReducer` under
        torch.distributed).
    :return: Boolean mask (N,) of this rank's selected inputs.
    """
    _check(costs, p)
    return _cheapest(costs, p, eps, reducer)


def _cheapest(costs: torch.Tensor, p: float, eps: float, reducer: Reducer) -> torch.Tensor:
    """:func:`select_cheapest` without the checks, and without a host sync on one process (the training step's)."""
    all_costs, offset = gather_costs(costs, reducer)
    order = torch.sort(all_costs, stable=True).indices
    k = affordable_count(all_costs[order], p, all_costs.new_tensor(float(eps)), all_costs.numel())
    # The first k in sorted order, marked through the permutation: no `order[:k]`, whose length would need k.
    chosen = torch.empty(all_costs.numel(), dtype=torch.bool, device=all_costs.device)
    chosen[order] = torch.arange(all_costs.numel(), device=all_costs.device) < k
    return chosen[offset:offset + costs.numel()]


def robust_accuracy_curve(costs: torch.Tensor, p: float, deltas: torch.Tensor | list[float],
                          correct: torch.Tensor | None = None, reducer: Reducer = LOCAL) -> torch.Tensor:
    """Accuracy after the knapsack attack, at every budget of ``deltas``, from one set of flip costs.

    Exact for this attack: at budget δ it flips the k(δ) cheapest inputs (:func:`select_cheapest`), so its
    accuracy is (#correct − #correct among the k(δ) cheapest) / N. Sorting once and one cumulative sum
    answer every δ.

    :param costs: Flip costs (N,): 0 for inputs misclassified already, +inf for those never flipped.
    :param p: Wasserstein order in [1, inf].
    :param deltas: Budgets δ ≥ 0.
    :param correct: Which inputs are classified correctly; ``None`` means exactly those of positive cost.
        Inputs not correct count as wrong and cost 0 whatever ``costs`` says.
    :param reducer: Sums over the whole distribution (all ranks).
    :return: Robust accuracy per δ (float64, shape of ``deltas``): the fraction of all N inputs that are
        classified correctly and not flipped.
    """
    c = costs.double().reshape(-1)
    _check(c, p)
    ok = c > 0 if correct is None else correct.reshape(-1).to(torch.bool)
    c = torch.where(ok, c, torch.zeros_like(c))
    all_costs, _ = gather_costs(c, reducer)
    n = all_costs.numel()
    d = torch.as_tensor(deltas, dtype=torch.float64, device=c.device)
    if n == 0:
        return torch.full_like(d, float("nan"))
    sorted_costs = torch.sort(all_costs).values
    wrong = int((sorted_costs == 0).sum())
    k = affordable_count(sorted_costs, p, d, n)
    # Every flipped input beyond the `wrong` free ones was correct; an unflipped one still is.
    return (n - torch.maximum(k, torch.full_like(k, wrong))).double() / n


def first_order_flip_costs(logits: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
                           dual_norm: float) -> torch.Tensor:
    """A one-pass estimate of each input's flip cost: its logit margin over the margin's gradient norm.

    The linearised (DeepFool-style) distance to the nearest decision boundary, m_i / ‖∇_x m_i‖_s with
    m_i = z_y − max_{j≠y} z_j and s the dual of the ground norm; 0 for inputs already misclassified, +inf where
    the margin has no gradient. Cheap enough for every training batch, where the knapsack's exact costs are not.

    :param logits: f(x), computed from ``x`` with ``x.requires_grad``.
    :param x: The inputs.
    :param labels: Class indices (N,).
    :param dual_norm: s, the dual of the ground norm (1 for ℓ∞, 2 for ℓ2, inf for ℓ1).
    :return: Costs (N,), float64, detached.
    """
    z_y = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    margin = z_y - logits.scatter(1, labels.unsqueeze(1), float("-inf")).max(dim=1).values
    (grad,) = torch.autograd.grad(margin.sum(), x)
    slope = torch.linalg.vector_norm(grad.flatten(1).double(), ord=dual_norm, dim=1)
    m = margin.detach().double().clamp_min(0.0)
    costs = torch.where(slope > 0, m / torch.where(slope > 0, slope, torch.ones_like(slope)),
                        torch.full_like(m, math.inf))
    return torch.where(m > 0, costs, torch.zeros_like(m))


def knapsack_budgets(costs: torch.Tensor, p: float, eps: float, reducer: Reducer = LOCAL) -> torch.Tensor:
    """Per-input budgets that spend a W_p budget ``eps`` on the inputs the knapsack would flip.

    The cheapest inputs the budget affords (:func:`select_cheapest`) get budgets proportional to their costs,
    all scaled by one factor so that ((1/N) Σ δ_i^p)^(1/p) = eps: each can be pushed past its estimated boundary
    by the same relative margin. The others, and inputs of cost 0 (already misclassified), get 0. When no
    input of positive cost is affordable, the cheapest positive one gets the whole budget, N^(1/p)·eps. At
    p = inf every input gets eps (the pointwise ball).

    :param costs: Flip costs (N,) ≥ 0, +inf where unknown.
    :param p: Wasserstein order in [1, inf].
    :param eps: The budget δ ≥ 0 of the whole distribution (all ranks of ``reducer``).
    :return: Budgets δ_i (N,), float64.
    """
    c = costs.double()
    if math.isinf(p):
        return torch.full_like(c, float(eps))
    chosen = _cheapest(c, p, eps, reducer) & (c > 0)  # costs from the caller's own computation: no checks
    all_costs, offset = gather_costs(c, reducer)
    n = all_costs.numel()
    # Fallback when nothing of positive cost is affordable: the cheapest positive input (lowest global index on
    # ties). Decided with torch.where, on the device: no host sync.
    positive = torch.where(all_costs > 0, all_costs, torch.full_like(all_costs, math.inf))
    cheapest = torch.zeros_like(all_costs)
    if n:
        first = torch.argmin(positive)
        cheapest[first] = torch.isfinite(positive[first]).double()
    any_chosen = reducer.sum(chosen.double().sum()) > 0
    weights = torch.where(any_chosen, torch.where(chosen, c, torch.zeros_like(c)), cheapest[offset:offset + c.numel()])
    mean = reducer.sum(weights.pow(p).sum()) / max(n, 1)
    scale = torch.where(mean > 0, eps / mean.clamp_min(1e-300).pow(1.0 / p), torch.zeros_like(mean))
    return weights * scale
