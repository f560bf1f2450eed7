"""The knapsack attack on the W_p threat: flip the cheapest inputs, then spend what is left with W-PGD.

1. Flip costs c_i from a pointwise minimum-norm attack (:mod:`art_wdat.attacks.flip_costs`), verified.
2. The largest affordable set S of cheapest inputs (:func:`art_wdat.core.knapsack.select_cheapest`) is
   replaced by its minimum-norm points: (1/N) Σ_S c_i^p ≤ δ^p.
3. The budget left, L^p = δ^p − (1/N) Σ_S c_i^p, goes to the other correctly classified inputs R (n_R of
   them): W-PGD with ReDLR on R alone, in the ball of radius L·(N/n_R)^(1/p) over R, whose cost over all N
   inputs is L. At p = inf every input of R gets the pointwise ball of radius δ. Its step is the threat's
   ``eps_step`` scaled to that ball (α · radius/δ, as W-PGD-Budget scales it per input); random starts and bf16
   passes come from :class:`LeftoverRun`.
4. ``WassersteinBall.enforce`` makes C(x_adv, x) ≤ δ exact in float32. Both parts are built with a relative
   margin of 1e-9 below their budgets, so enforce has nothing to shrink and cannot move a minimum-norm point
   (which may sit a hair past the decision boundary) back across it; the flipped count is checked after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from art_wdat.attacks import bridge
from art_wdat.attacks import estimator as est
from art_wdat.attacks.flip_costs import (
    FlipCosts,
    Forward,
    MinNormMethod,
    default_min_norm,
    min_norm_costs,
    predict_labels,
)
from art_wdat.attacks.spec import ThreatSpec, parse_norm
from art_wdat.core.engine import run_distribution_attack
from art_wdat.core.knapsack import select_cheapest
from art_wdat.core.losses import LossFn, redlr
from art_wdat.core.norms import power_mean
from art_wdat.core.reduce import LOCAL, Reducer, reduce_floats
from art_wdat.core.threat import WassersteinBall
from art_wdat.validation import check_labels, check_x, in_caller_dtype

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger(__name__)

#: Each part of the attack stays this far (relative) below its budget, so that ``enforce`` is a no-op.
BUDGET_MARGIN = 1e-9


@dataclass
class KnapsackResult:
    """What :func:`knapsack_attack` achieved (this rank's inputs for the arrays, all ranks for the numbers).

    :ivar costs: Verified flip costs c_i (0: misclassified already; inf: no point found).
    :ivar selected: The inputs flipped by their minimum-norm point (the knapsack set S).
    :ivar n_selected: ``|S|`` minus the inputs misclassified already, over all ranks.
    :ivar n_flipped: Correctly classified inputs misclassified by x_adv, over all ranks (S and W-PGD's wins).
    :ivar clean_accuracy: Accuracy on x.
    :ivar accuracy: Accuracy on x_adv.
    :ivar cost: C(x_adv, x) ≤ eps.
    :ivar leftover: L, the part of the budget left after S, given to W-PGD.
    """

    costs: np.ndarray
    selected: np.ndarray
    n_selected: int
    n_flipped: int
    clean_accuracy: float
    accuracy: float
    cost: float
    leftover: float


@dataclass(frozen=True)
class LeftoverRun:
    """How the W-PGD on the leftover budget runs, beyond the threat: the attack's own settings.

    :ivar num_random_init: Random starts inside the pointwise ball of the leftover's radius (0: start at x); the
        best iterate over them is kept.
    :ivar amp: Its gradient passes under bf16 autocast (the returned iterate is re-counted in float32).
    """

    num_random_init: int = 0
    amp: bool = False


#: The attack's defaults: one start at x, float32 passes.
DEFAULT_LEFTOVER = LeftoverRun()


def leftover_budget(ball: WassersteinBall, costs: torch.Tensor, selected: torch.Tensor,
                    reducer: Reducer = LOCAL) -> float:
    """L = (δ^p − (1/N) Σ_S c_i^p)^(1/p) ≥ 0: what the selected inputs leave of the budget (p = inf: δ)."""
    if ball.pointwise:
        return float(ball.eps)
    spent = power_mean(torch.where(selected, costs.double(), torch.zeros_like(costs.double())), ball.p, reducer)
    return float(ball.eps ** ball.p - float(spent) ** ball.p) ** (1.0 / ball.p) if ball.eps > float(spent) else 0.0


def spend_leftover(forward: Forward, x: torch.Tensor, y: torch.Tensor, rest: torch.Tensor,
                   threat: ThreatSpec, leftover: float, *, clip: tuple | None, batch_size: int,
                   reducer: Reducer = LOCAL, loss_fn: LossFn = redlr,
                   run: LeftoverRun = DEFAULT_LEFTOVER) -> torch.Tensor | None:
    """W-PGD (ReDLR) on the inputs ``rest`` alone, in the ball over them that costs ``leftover`` over all N.

    :param threat: The attack's threat: its ``eps_step`` α (at budget δ) becomes α · radius/δ in the leftover's ball.
    :param run: Random starts and precision of that W-PGD.
    :return: The attacked rows of ``rest`` (in order), or None when there is nothing to spend or no one to
        spend it on (decided over all ranks, so that every rank joins the same collectives).
    """
    n_all, n_rest = reduce_floats(reducer, [float(x.shape[0]), float(rest.sum())], x.device)
    if leftover <= 0 or n_rest == 0:
        return None
    scale = 1.0 if math.isinf(threat.p) else (n_all / n_rest) ** (1.0 / threat.p)
    radius = leftover * scale * (1.0 - BUDGET_MARGIN)
    # The same step relative to the ball as the attack's at δ; None keeps the default ratio, which is relative too.
    eps_step = None if threat.eps_step is None or threat.eps == 0 else threat.eps_step * radius / threat.eps
    sub = ThreatSpec(eps=radius, p=threat.p, norm=threat.norm, method="wpgd", max_iter=threat.max_iter,
                     eps_step=eps_step)
    cfg = sub.config(loss_fn, batch_size, amp=run.amp)
    x_r, _ = run_distribution_attack(forward, x[rest], y[rest], cfg, clip=clip, reducer=reducer, track=True,
                                     start=_random_start(sub, clip) if run.num_random_init > 0 else None,
                                     restarts=max(1, run.num_random_init))
    return x_r


def _random_start(threat: ThreatSpec, clip: tuple | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A random point of each input's pointwise ball of radius ``threat.eps`` (inside the W_p ball), in the box."""
    ball = threat.ball
    if clip is None:
        return ball.random_start
    return lambda x: ball.random_start(x).clamp_(clip[0], clip[1])


def knapsack_torch(forward: Forward, x: torch.Tensor, y: torch.Tensor, threat: ThreatSpec,
                   costs: FlipCosts, *, clip: tuple | None = None, batch_size: int = 128, leftover_steps: bool = True,
                   reducer: Reducer = LOCAL, loss_fn: LossFn = redlr,
                   leftover_run: LeftoverRun = DEFAULT_LEFTOVER) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The knapsack distribution at budget ``threat.eps`` from verified ``costs`` (torch level).

    :param loss_fn: The loss of that W-PGD (ReDLR by default; CE for models of fewer than 3 classes).
    :param leftover_run: Random starts and precision of that W-PGD.
    :param leftover_steps: Spend the budget left after the knapsack set with W-PGD; ``False`` returns the
        knapsack set alone (whose accuracy is the curve of :func:`~art_wdat.core.knapsack.robust_accuracy_curve`).
    :return: (x_adv, the selected mask, the leftover L), with C(x_adv, x) ≤ eps enforced.
    """
    ball = threat.ball
    selected = select_cheapest(costs.costs, ball.p, ball.eps * (1.0 - BUDGET_MARGIN), reducer)
    view = selected.view(-1, *([1] * (x.dim() - 1)))
    x_adv = torch.where(view, costs.x_adv, x)
    leftover = leftover_budget(ball, costs.costs, selected, reducer)
    rest = costs.correct & ~selected
    if leftover_steps and threat.eps > 0:
        x_r = spend_leftover(forward, x, y, rest, threat, leftover, clip=clip, batch_size=batch_size, reducer=reducer,
                             loss_fn=loss_fn, run=leftover_run)
        if x_r is not None:
            x_adv[rest] = x_r
    return ball.enforce(x, x_adv, reducer), selected, leftover


def knapsack_attack(estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, threat: ThreatSpec, *,
                    costs: FlipCosts | None = None, min_norm: MinNormMethod | None = None,
                    min_norm_options: dict | None = None, batch_size: int = 128, leftover_steps: bool = True,
                    reducer: Reducer = LOCAL) -> tuple[np.ndarray, KnapsackResult]:
    """Attack ``x`` (one distribution) on the W_p ball of ``threat``: cheapest flips first, then W-PGD.

    :param estimator: An ART classifier, in any box (its ``clip_values``, or none): a ``PyTorchClassifier``, or any
                      other through :mod:`art_wdat.attacks.bridge` (a predict-only one gets decision-based flip costs
                      and no leftover W-PGD).
    :param x: Inputs ``(N, *input_shape)``.
    :param y: Labels, indices (N,) or one-hot.
    :param threat: eps, p, norm, and ``max_iter`` and ``eps_step`` (scaled to the leftover's ball) of the W-PGD that
                   spends the leftover.
    :param costs: Flip costs computed before (e.g. to attack several budgets); default: computed here.
    :param min_norm: The minimum-norm solvers of the flip costs (None: the default for the ground norm, the estimator
                     and its box).
    :param min_norm_options: Keywords of :func:`~art_wdat.attacks.flip_costs.min_norm_costs`.
    :param batch_size: Inputs per forward/backward pass of the W-PGD part.
    :param leftover_steps: Spend the budget left after the knapsack set with W-PGD (never on a predict-only
                           estimator).
    :param reducer: Sums over the whole distribution, all ranks under torch.distributed.
    :return: (x_adv in x's dtype with C(x_adv, x) ≤ eps, what was achieved).
    """
    bridge.require_classifier(estimator, "knapsack_attack")
    x = check_x(x, estimator.input_shape, estimator.clip_values)
    labels = check_labels(y, x.shape[0], estimator.nb_classes)
    if labels is None:
        raise ValueError("`y` is required: flip costs are measured against the true labels.")
    device = bridge.device_of(estimator)
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    x_t, y_t = torch.from_numpy(x32.copy()).to(device), torch.from_numpy(labels).to(device)
    forward = bridge.forward_fn(estimator, x32, batch_size)
    clip = est.clip_box(estimator, device)
    gradients = bridge.kind_of(estimator) != "predict"
    with bridge.eval_mode(estimator):
        if costs is None:
            norm = parse_norm(threat.norm)
            method = min_norm or default_min_norm(norm, gradients=gradients)
            costs = min_norm_costs(forward, x_t, y_t, norm=norm, method=method,
                                   **({"clip": clip} | (min_norm_options or {})))
        x_adv, selected, leftover = knapsack_torch(forward, x_t, y_t, threat, costs, batch_size=batch_size, clip=clip,
                                                   leftover_steps=leftover_steps and gradients, reducer=reducer)
        result = _summary(forward, x_t, x_adv, y_t, threat, costs, selected, leftover, reducer)
    return in_caller_dtype(x, x32, x_adv.cpu().numpy(), estimator.clip_values), result


def _summary(forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, threat: ThreatSpec,
             costs: FlipCosts, selected: torch.Tensor, leftover: float, reducer: Reducer) -> KnapsackResult:
    """Count (by forward passes) what the returned distribution achieves, and check the knapsack set held."""
    wrong_adv = predict_labels(forward, x_adv) != y
    kept = (wrong_adv | ~selected).all()
    n, n_correct, n_sel, n_flip, lost = reduce_floats(reducer, [
        float(x.shape[0]), float(costs.correct.sum()), float((selected & costs.correct).sum()),
        float((wrong_adv & costs.correct).sum()), float(~kept)], x.device)
    if lost:
        logger.warning("The feasibility map un-flipped a minimum-norm point; the knapsack count is not reached.")
    cost = float(threat.ball.cost(x_adv.double() - x.double(), reducer))
    return KnapsackResult(costs=costs.costs.cpu().numpy(), selected=selected.cpu().numpy(), n_selected=int(n_sel),
                          n_flipped=int(n_flip), clean_accuracy=n_correct / max(n, 1),
                          accuracy=(n_correct - n_flip) / max(n, 1), cost=cost, leftover=leftover)
