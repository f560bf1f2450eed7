"""W-AutoAttack (``method="auto"``) and the knapsack method, at the torch level of the attack.

``method="knapsack"`` flips the inputs of smallest verified flip cost first under the W_p budget and spends what is
left with W-PGD (:mod:`art_wdat.attacks.knapsack`). ``method="auto"`` runs the knapsack, W-PGD and W-PGD-Budget
on the same inputs and returns the feasible distribution with the fewest correct inputs, ties broken by the higher
mean loss: it is never weaker than any of its parts, and has no parameter of its own.

Every candidate is scored by one forward pass at its final (feasibility-enforced) point with the attack's loss, so
the choice is made on what is returned. Flip costs do not depend on the budget: :class:`FlipCostCache` keeps the
last ones, so a sweep over budgets on the same inputs computes them once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from art_wdat.attacks.flip_costs import FlipCosts, MinNormMethod, min_norm_costs
from art_wdat.attacks.knapsack import knapsack_torch
from art_wdat.attacks.spec import ThreatSpec, parse_norm
from art_wdat.core.engine import AttackConfig, AttackTrace, Clip, Forward, GradientPass, StepMethod
from art_wdat.core.losses import LossFn
from art_wdat.core.reduce import Reducer

#: The engine's parts of W-AutoAttack, run after the knapsack (which wins ties of equal score, then these in order).
AUTO_STEP_METHODS: tuple[StepMethod, ...] = ("wpgd", "budget")


@dataclass
class ComponentResult:
    """What one part of W-AutoAttack achieved on its own (numbers over all ranks).

    :ivar accuracy: Accuracy (or, targeted, success rate) at its returned distribution.
    :ivar loss: Mean attack loss there.
    :ivar cost: C(x_adv, x) ≤ eps.
    :ivar seconds: Wall time of the part (flip costs included for the knapsack, when computed).
    """

    accuracy: float
    loss: float
    cost: float
    seconds: float


@dataclass
class Candidate:
    """One part's distribution with its score (wins, loss sum over all ranks) and engine trace (None: knapsack)."""

    name: str
    x_adv: torch.Tensor
    score: torch.Tensor
    trace: AttackTrace | None
    seconds: float


#: Runs the engine for a step method ("wpgd" or "budget"): (x_adv, trace).
EngineRun = Callable[[str], tuple[torch.Tensor, AttackTrace]]


class FlipCostCache:
    """The flip costs of the last inputs seen, keyed by their bytes, labels, ground norm and solver."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._costs: FlipCosts | None = None

    @staticmethod
    def key(x: torch.Tensor, y: torch.Tensor, norm: float, solver: str) -> str:
        digest = hashlib.sha1(x.detach().cpu().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
        return f"{digest.hexdigest()}|{norm}|{solver}|{tuple(x.shape)}|{x.device}"

    def costs(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float,
              solver: MinNormMethod) -> FlipCosts:
        """The verified flip costs of (x, y), computed only if they are not the last ones."""
        key = self.key(x, y, norm, solver)
        if key != self._key or self._costs is None:
            self._costs, self._key = min_norm_costs(forward, x, y, norm=norm, method=solver), key
        return self._costs


def score(forward: Forward, x_adv: torch.Tensor, target: torch.Tensor, cfg: AttackConfig,
          reducer: Reducer) -> torch.Tensor:
    """[inputs won, loss sum] of a distribution over all ranks (one forward pass, no gradient)."""
    losses, wins = GradientPass(forward, target, cfg, x_adv.device)(x_adv, None, 0)
    return reducer.sum(torch.stack([wins.double().sum(), losses.double().sum()]))


def run_knapsack(forward: Forward, x: torch.Tensor, y: torch.Tensor, threat: ThreatSpec, cache: FlipCostCache, *,
                 solver: MinNormMethod, clip: Clip | None, batch_size: int, reducer: Reducer,
                 loss_fn: LossFn) -> tuple[torch.Tensor, FlipCosts, float]:
    """The knapsack distribution of ``threat`` (leftover budget spent by W-PGD with ``loss_fn``); (x_adv, flip
    costs, seconds)."""
    start = time.perf_counter()
    costs = cache.costs(forward, x, y, parse_norm(threat.norm), solver)
    x_adv, _, _ = knapsack_torch(forward, x, y, threat.stepping("wpgd"), costs, clip=clip, batch_size=batch_size,
                                 reducer=reducer, loss_fn=loss_fn)
    return x_adv, costs, time.perf_counter() - start


def best_candidate(candidates: list[Candidate]) -> Candidate:
    """The candidate with the most inputs won, ties broken by the higher loss sum (the first on equal scores)."""
    best = candidates[0]
    for cand in candidates[1:]:
        won, loss = (float(v) for v in cand.score)
        best_won, best_loss = (float(v) for v in best.score)
        if won > best_won or (won == best_won and loss > best_loss):
            best = cand
    return best


def component_results(candidates: list[Candidate], x: torch.Tensor, threat: ThreatSpec, n_total: float,
                      targeted: bool, reducer: Reducer) -> dict[str, ComponentResult]:
    """Each candidate's accuracy (or targeted success), mean loss, cost and time, over all ranks."""
    out = {}
    for cand in candidates:
        won, loss = (float(v) for v in cand.score)
        rate = won / max(n_total, 1.0)
        cost = float(threat.ball.cost(cand.x_adv.double() - x.double(), reducer))
        out[cand.name] = ComponentResult(accuracy=rate if targeted else 1.0 - rate, loss=loss / max(n_total, 1.0),
                                         cost=cost, seconds=cand.seconds)
    return out


def timed(fn: Callable[[], tuple[torch.Tensor, AttackTrace]]) -> tuple[torch.Tensor, AttackTrace, float]:
    """Run ``fn`` and return its result with its wall time."""
    start = time.perf_counter()
    x_adv, trace = fn()
    return x_adv, trace, time.perf_counter() - start


def is_unit_box(clip: Clip | None) -> bool:
    """Whether the clip box is [0, 1] in every coordinate (what the flip-cost solvers assume)."""
    return clip is not None and bool((clip[0] == 0).all()) and bool((clip[1] == 1).all())
