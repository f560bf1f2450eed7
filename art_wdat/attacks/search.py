"""The methods of :class:`~art_wdat.attacks.WassersteinDistributionalAttack` that start from flip costs: "knapsack"
and "auto" (W-AutoAttack), as a mixin of the attack.

On an estimator with gradients (PyTorch, or any other through :mod:`art_wdat.attacks.bridge`), the flip costs come
from the gradient solvers (FAB, FMN, the APGD bisection), the knapsack spends its leftover budget with W-PGD, and
"auto" adds W-PGD, W-PGD-Budget and, at p = ∞, APGD. On a predict-only estimator the flip costs come from the
decision-based solvers, and "auto" is the knapsack alone: no gradient candidate can run, and the leftover is not
spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from art_wdat.attacks import bridge
from art_wdat.attacks.auto import (
    AUTO_STEP_METHODS,
    Candidate,
    FlipCostCache,
    apgd_candidate,
    best_candidate,
    component_results,
    run_knapsack,
    score,
    timed,
)
from art_wdat.attacks.fingerprint import model_key
from art_wdat.attacks.flip_costs import FlipCosts, MinNormMethod, default_min_norm
from art_wdat.attacks.knapsack import LeftoverRun
from art_wdat.attacks.result import AttackResult
from art_wdat.attacks.spec import Method, ThreatSpec
from art_wdat.attacks.threshold import refine_near_threshold
from art_wdat.core.engine import AttackConfig, AttackTrace, Clip, Forward
from art_wdat.core.reduce import Reducer, reduce_floats
from art_wdat.core.threat import WassersteinBall

logger = logging.getLogger(__name__)


class FlipCostSearch:
    """The "knapsack" and "auto" methods of the attack (module docstring); the attack provides the attributes."""

    estimator: Any
    method: Method
    min_norm: MinNormMethod | None
    refine: bool
    eps: float
    p: float
    max_queries: int | None
    batch_size: int
    max_iter: int
    num_random_init: int
    amp: bool
    targeted: bool
    _flip_costs: FlipCostCache
    threat: ThreatSpec
    ball: WassersteinBall
    config: Callable[..., AttackConfig]
    reducer: Callable[[], Reducer]
    _engine: Callable[..., tuple[torch.Tensor, AttackTrace]]
    _result: Callable[..., AttackResult]

    def _search(self, forward: Forward, x: torch.Tensor, y: torch.Tensor,
                clip: Clip | None) -> tuple[torch.Tensor, AttackResult]:
        """Method "knapsack"; or "auto": the knapsack, W-PGD, W-PGD-Budget (and at p = ∞ APGD at ε = δ), the one
        with fewest correct returned."""
        reducer, threat, gradients = self.reducer(), self.threat, bridge.kind_of(self.estimator) != "predict"
        cfg = self.config(threat=threat.stepping("wpgd"))
        costs, cost_seconds = self._costs(forward, x, y, clip)
        costs, refine_seconds = self._refined(forward, x, y, costs, clip)
        cost_seconds += refine_seconds
        x_k, seconds = run_knapsack(forward, x, y, threat, costs, clip=clip, batch_size=self.batch_size,
                                    reducer=reducer, loss_fn=cfg.loss_fn, leftover_steps=gradients,
                                    leftover_run=LeftoverRun(num_random_init=self.num_random_init, amp=self.amp))
        candidates = [Candidate("knapsack", x_k, score(forward, x_k, y, cfg, reducer), None, seconds + cost_seconds)]
        if self.method == "auto" and gradients:
            candidates += self._auto_candidates(forward, x, y, clip, cfg)
        best = best_candidate(candidates)
        (n,) = reduce_floats(reducer, [float(x.shape[0])], x.device)
        trace = best.trace or _endpoints(score(forward, x, y, cfg, reducer), best.score, n)
        result = self._result(x, best.x_adv, trace, best.name)
        # A copy: the cache keeps its own, which an edit of the result must not reach.
        result.flip_costs = np.array(costs.costs.detach().cpu().numpy(), copy=True)
        result.flip_cost_seconds = cost_seconds
        if costs.queries is not None:
            result.flip_cost_queries = costs.queries.detach().cpu().numpy().copy()
        if self.method == "auto":
            result.components = component_results(candidates, x, threat, n, self.targeted, reducer)
        return best.x_adv, result

    def solver(self) -> MinNormMethod:
        """The flip-cost solvers of this attack on its estimator: ``min_norm``, or the default for the ground norm and
        the estimator (gradient solvers, or decision-based ones for a predict-only estimator)."""
        if self.min_norm is not None:
            return self.min_norm
        return default_min_norm(self.ball.norm, gradients=bridge.kind_of(self.estimator) != "predict")

    def _costs(self, forward: Forward, x: torch.Tensor, y: torch.Tensor,
               clip: Clip | None) -> tuple[FlipCosts, float]:
        """The flip costs of (x, y) in the box ``clip`` from the cache, keyed by the model's state and outputs on x;
        (costs, seconds spent here)."""
        key = model_key(self.estimator, forward, x, self.batch_size)
        options: dict[str, Any] = {"clip": clip}
        if self.max_queries is not None:
            options["max_queries"] = self.max_queries
        return self._flip_costs.costs(forward, x, y, self.ball.norm, self.solver(), model=key, options=options)

    def _refined(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, costs: FlipCosts,
                 clip: Clip | None) -> tuple[FlipCosts, float]:
        """With ``refine``: the costs re-solved harder on the few inputs near the knapsack's threshold at this budget,
        or at every budget the cache plans (:func:`~art_wdat.attacks.threshold.refine_near_threshold`,
        :meth:`~art_wdat.attacks.auto.FlipCostCache.refined`), a copy; (costs, seconds). Models with gradients only;
        under torch.distributed with the thresholds of all ranks' inputs together."""
        # A predict-only model's queries are capped per input (``max_queries``), which a second pass would break.
        predict_only = bridge.kind_of(self.estimator) == "predict"
        if not self.refine or predict_only or self.eps == 0:
            return costs, 0.0
        reducer = self.reducer()

        def refine(budgets: list[tuple[float, float]]) -> FlipCosts:
            return refine_near_threshold(forward, x, y, costs, budgets, norm=self.ball.norm, clip=clip,
                                         reducer=reducer)

        return self._flip_costs.refined(costs, (float(self.eps), float(self.p)), refine)

    def _auto_candidates(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, clip: Clip | None,
                         cfg: AttackConfig) -> list[Candidate]:
        """W-AutoAttack's candidates after the knapsack: W-PGD, W-PGD-Budget and, at p = ∞, APGD at ε = δ (last, so
        it wins only when strictly better), each scored with ``cfg``'s loss."""
        reducer, threat = self.reducer(), self.threat
        out = []
        for name in AUTO_STEP_METHODS:
            x_m, trace, seconds = timed(partial(self._engine, forward, x, y, threat.stepping(name), clip, x.device))
            out.append(Candidate(name, x_m, score(forward, x_m, y, cfg, reducer), trace, seconds))
        if self.ball.pointwise:
            out.append(apgd_candidate(forward, x, y, threat, cfg, reducer, n_iter=self.max_iter,
                                      n_classes=self.estimator.nb_classes, batch_size=self.batch_size))
        return out


def _endpoints(clean: torch.Tensor, attacked: torch.Tensor, n: float) -> AttackTrace:
    """A two-point trace (start, returned) from [wins, loss sum] scores, for a distribution not found by steps."""
    rates = (torch.stack([clean, attacked]) / max(n, 1.0)).cpu()
    return AttackTrace(success_rate=rates[:, 0].tolist(), loss=rates[:, 1].tolist(), best_iteration=1)
