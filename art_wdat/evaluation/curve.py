"""The whole accuracy-versus-budget curve of the knapsack attack from one set of flip costs, at the numpy level.

Flip costs do not depend on the budget: ``WassersteinDistributionalAttack(method="knapsack" or "auto")`` leaves
them in ``last_result_.flip_costs`` (0 for inputs misclassified already, +inf for inputs no attack flipped), and
:func:`accuracy_curve` turns them into the exact accuracy of the knapsack (the cheapest inputs flipped first, no
leftover W-PGD) at every budget δ and for any order p (:func:`art_wdat.core.knapsack.robust_accuracy_curve`).
One attack run thus replaces a sweep over budgets. W-AutoAttack adds W-PGD on the leftover budget and W-PGD and
W-PGD-Budget as competitors, so its accuracy at δ is at most the curve's.

:func:`knapsack_curve` builds what :func:`~art_wdat.evaluation.evaluate` stores: the curve for p ∈ {1, 2, inf}
and the evaluation's own p, on a grid from 0 to 1.5× the largest budget that contains every evaluated budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from art_wdat.core.knapsack import gather_costs, robust_accuracy_curve
from art_wdat.core.reduce import LOCAL, Reducer
from art_wdat.evaluation.report import AccuracyCurve, format_order
from art_wdat.validation import check_number

#: The orders p every stored curve covers (the evaluation's own p is added).
CURVE_ORDERS = (1.0, 2.0, math.inf)
#: Points of the regular part of the grid, from 0 to GRID_SPAN × the largest evaluated budget.
GRID_POINTS = 31
GRID_SPAN = 1.5


def accuracy_curve(flip_costs: np.ndarray, p: float, deltas: float | Sequence[float] | np.ndarray,
                   correct: np.ndarray | None = None) -> np.ndarray:
    """Accuracy after the knapsack attack at every budget of ``deltas``, from one set of flip costs.

    At budget δ the knapsack flips the k(δ) cheapest inputs, the longest prefix of the sorted costs with
    (1/N) Σ c_i^p ≤ δ^p (p = inf: every c_i ≤ δ); the accuracy is the fraction of the N inputs classified
    correctly and not among them. Exact for that attack, and an upper bound on W-AutoAttack's accuracy.

    Example: ``accuracy_curve(attack.last_result_.flip_costs, 2, np.arange(9) / 255)`` after
    ``attack = WassersteinDistributionalAttack(clf, eps=..., method="auto"); attack.generate(x, y)``.

    :param flip_costs: Verified flip costs (N,) in the ground norm: 0 for inputs misclassified already, +inf for
        those never flipped (``last_result_.flip_costs``).
    :param p: Wasserstein order in [1, inf]; it need not be the attack's: the costs do not depend on it.
    :param deltas: Budgets δ ≥ 0 (+inf allowed: every finite cost is then affordable).
    :param correct: Which inputs are classified correctly (N,); ``None``: exactly those of positive cost.
    :return: Accuracy per δ (float64, the shape of ``deltas``); NaN for N = 0.
    :raises ValueError: For costs that are not a vector of numbers ≥ 0, p < 1, or a budget that is NaN or < 0.
    """
    costs = np.asarray(flip_costs, dtype=np.float64)
    if costs.ndim != 1:
        raise ValueError(f"`flip_costs` must be a vector (N,), got shape {costs.shape}.")
    check_number("p", p, 1.0, allow_inf=True)
    grid = np.asarray(deltas, dtype=np.float64)
    if np.isnan(grid).any() or (grid < 0).any():
        raise ValueError(f"`deltas` must be budgets >= 0, got {deltas!r}.")
    mask = costs > 0 if correct is None else np.asarray(correct, dtype=bool).reshape(-1)
    if mask.size != costs.size:
        raise ValueError(f"`correct` has {mask.size} entries for {costs.size} costs.")
    return robust_accuracy_curve(torch.from_numpy(costs), float(p), torch.from_numpy(grid),
                                 torch.from_numpy(mask)).numpy()


def reads_per_255(input_shape: Sequence[int], clip_values: Any, norm: float) -> bool:
    """Whether budgets read best as k/255: colour images (C×H×W or H×W×C with 3 channels) in [0, 1] under the ℓ∞
    ground norm, where δ = k/255 moves each 8-bit pixel by k levels. Both plots of an evaluation use this one unit.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or 3 not in (shape[0], shape[-1]) or clip_values is None or not math.isinf(norm):
        return False
    return bool(np.all(np.asarray(clip_values[0]) == 0) and np.all(np.asarray(clip_values[1]) == 1))


def curve_orders(p: float) -> list[float]:
    """:data:`CURVE_ORDERS` and ``p``, without duplicates, ascending (inf last)."""
    return sorted({*CURVE_ORDERS, float(p)})


def curve_grid(budgets: Sequence[float], points: int = GRID_POINTS, span: float = GRID_SPAN) -> list[float]:
    """``points`` budgets evenly spaced from 0 to ``span`` × max(budgets), with every budget of ``budgets`` added.

    :return: The grid, ascending, without duplicates; the budgets themselves are kept exactly.
    """
    top, exact = span * max(budgets), [float(b) for b in budgets]
    # Grid points that only differ from a budget by rounding (0.15 vs 0.15000000000000002) would be duplicates.
    regular = [float(v) for v in np.linspace(0.0, top, points) if not any(abs(v - b) <= 1e-9 * top for b in exact)]
    return sorted({*regular, *exact})


def knapsack_curve(flip_costs: np.ndarray, p: float, budgets: Sequence[float], *, source_budget: float,
                   per_255: bool = False, reducer: Reducer = LOCAL,
                   device: torch.device | str = "cpu") -> AccuracyCurve:
    """What :func:`~art_wdat.evaluation.evaluate` stores: every order of :func:`curve_orders` on :func:`curve_grid`.

    :param flip_costs: This rank's flip costs (N,) (0: misclassified, inf: never flipped).
    :param p: The evaluation's Wasserstein order.
    :param budgets: The evaluated budgets (at least one > 0).
    :param source_budget: δ of the run that computed the flip costs.
    :param per_255: Whether δ is read best as k/255 (images in [0, 1] under the ℓ∞ ground norm).
    :param reducer: Under torch.distributed, the ranks whose costs form the distribution: every rank gets the
        curve of all of them (the costs are gathered, in rank order, then sorted).
    :param device: Where the gathering runs; NCCL reduces device tensors only, so pass the model's device.
    """
    local = torch.from_numpy(np.asarray(flip_costs, dtype=np.float64)).to(device)
    everyone, _ = gather_costs(local, reducer)
    costs = np.sort(everyone.cpu().numpy())
    deltas = curve_grid(budgets)
    return AccuracyCurve(deltas=deltas, accuracy={format_order(q): accuracy_curve(costs, q, deltas).tolist()
                                                  for q in curve_orders(p)},
                         sorted_costs=costs.tolist(), source_budget=float(source_budget), per_255=per_255)
