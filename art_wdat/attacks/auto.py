"""W-AutoAttack (``method="auto"``) and the knapsack method, at the torch level of the attack.

``method="knapsack"`` flips the inputs of smallest verified flip cost first under the W_p budget and spends what is
left with W-PGD (:mod:`art_wdat.attacks.knapsack`). ``method="auto"`` runs the knapsack, W-PGD and W-PGD-Budget
(and at p = ∞, the pointwise threat, the ``autoattack`` package's APGD-CE then APGD-DLR at ε = δ) on the same
inputs and returns the feasible distribution with the fewest correct inputs, ties broken by the higher mean loss:
it is never weaker than any of its parts, and has no parameter of its own.

Every candidate is scored by one forward pass at its final (feasibility-enforced) point with the attack's loss, so
the choice is made on what is returned. Flip costs depend on neither the budget nor p: :class:`FlipCostCache` keeps
the last ones, keyed by the model's state and the inputs, and can be shared between attacks, so that a sweep over
budgets and orders on the same inputs (:func:`~art_wdat.evaluation.evaluate`) computes them once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from art_wdat.attacks.flip_costs import (
    AA_NORMS,
    FlipCosts,
    MinNormMethod,
    autoattack_module,
    min_norm_costs,
    predict_labels,
)
from art_wdat.attacks.knapsack import DEFAULT_LEFTOVER, LeftoverRun, knapsack_torch
from art_wdat.attacks.spec import ThreatSpec
from art_wdat.core.engine import AttackConfig, AttackTrace, Clip, Forward, GradientPass, StepMethod
from art_wdat.core.losses import LossFn
from art_wdat.core.reduce import Reducer

#: The engine's parts of W-AutoAttack, run after the knapsack (which wins ties of equal score, then these in order).
AUTO_STEP_METHODS: tuple[StepMethod, ...] = ("wpgd", "budget")
#: The seed of the APGD candidate (p = ∞), fixed as the flip-cost solvers' is: the attack has no seed of its own.
APGD_SEED = 0


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
    """The flip costs of the last inputs seen, to share between attacks (one per budget or per order p).

    Flip costs depend on the model, its preprocessing, the inputs, their labels, the ground norm and the solver (its
    random starts are seeded), not on the budget or p. The key holds all of them, the model as
    :func:`~art_wdat.attacks.estimator.fingerprint` of its parameters, buffers and preprocessing, so the cache never
    serves the costs of other inputs or of another model state (e.g. after a fine-tuning step). One entry: an
    evaluation's data, not a history of data sets kept in memory.

    :ivar passes: Solver passes run so far (the cache's misses).
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._costs: FlipCosts | None = None
        self.passes = 0

    @staticmethod
    def key(x: torch.Tensor, y: torch.Tensor, norm: float, solver: str, model: str = "") -> str:
        """The cache key of (x, y) under ``model`` (a fingerprint of the model's state), ``norm`` and ``solver``."""
        digest = hashlib.sha1(x.detach().cpu().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
        return f"{digest.hexdigest()}|{model}|{norm}|{solver}|{tuple(x.shape)}|{x.dtype}|{x.device}"

    def costs(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, solver: MinNormMethod, *,
              model: str) -> tuple[FlipCosts, float]:
        """The verified flip costs of (x, y), computed only if they are not the last ones.

        :param model: A fingerprint of the state behind ``forward`` (:func:`~art_wdat.attacks.estimator.fingerprint`).
        :return: (the costs, the seconds spent computing them here: 0 when they came from the cache).
        """
        key = self.key(x, y, norm, solver, model)
        if key == self._key and self._costs is not None:
            return self._costs, 0.0
        start = time.perf_counter()
        self._costs, self._key = min_norm_costs(forward, x, y, norm=norm, method=solver), key
        self.passes += 1
        return self._costs, time.perf_counter() - start


def score(forward: Forward, x_adv: torch.Tensor, target: torch.Tensor, cfg: AttackConfig,
          reducer: Reducer) -> torch.Tensor:
    """[inputs won, loss sum] of a distribution over all ranks (one forward pass, no gradient)."""
    losses, wins = GradientPass(forward, target, cfg, x_adv.device)(x_adv, None, 0)
    return reducer.sum(torch.stack([wins.double().sum(), losses.double().sum()]))


def run_knapsack(forward: Forward, x: torch.Tensor, y: torch.Tensor, threat: ThreatSpec, costs: FlipCosts, *,
                 clip: Clip | None, batch_size: int, reducer: Reducer, loss_fn: LossFn,
                 leftover_run: LeftoverRun = DEFAULT_LEFTOVER) -> tuple[torch.Tensor, float]:
    """The knapsack distribution of ``threat`` from the flip ``costs`` (leftover budget spent by W-PGD with
    ``loss_fn``, the threat's ``eps_step`` scaled to its ball, and ``leftover_run``'s starts and precision);
    (x_adv, seconds)."""
    start = time.perf_counter()
    x_adv, _, _ = knapsack_torch(forward, x, y, threat.stepping("wpgd"), costs, clip=clip, batch_size=batch_size,
                                 reducer=reducer, loss_fn=loss_fn, leftover_run=leftover_run)
    return x_adv, time.perf_counter() - start


def run_apgd(forward: Forward, x: torch.Tensor, y: torch.Tensor, threat: ThreatSpec, *, n_iter: int, n_classes: int,
             batch_size: int, seed: int = APGD_SEED) -> torch.Tensor:
    """The ``autoattack`` package's APGD-CE, then APGD-DLR on the inputs still correct, in the ground norm's ball of
    radius ε = δ: what its ``AutoAttack(version="custom", attacks=["apgd-ce", "apgd-dlr"])`` returns with one
    restart, ``n_iter`` iterations, ``seed`` and ``batch_size`` (DLR needs 3 classes: CE alone below).

    It is W-AutoAttack's candidate at p = ∞, where the W_∞ ball is the pointwise one, so that W-AutoAttack is never
    weaker than that APGD. Torch's global generator is left as it was (the package reseeds it).
    """
    ball = threat.ball
    apgd = autoattack_module("autopgd_base").APGDAttack(forward, n_iter=n_iter, norm=AA_NORMS[ball.norm],
                                                        eps=ball.eps, seed=seed, n_restarts=1, device=x.device)
    x_adv = x.clone()
    robust = predict_labels(forward, x, batch_size) == y
    devices = [x.device] if x.device.type == "cuda" else []
    for loss in ("ce", "dlr") if n_classes >= 3 else ("ce",):
        apgd.loss = loss
        # Batches over the inputs still robust, as the package's run_standard_evaluation forms them.
        for part in robust.nonzero().flatten().split(batch_size):
            with torch.random.fork_rng(devices=devices):
                adv = apgd.perturb(x[part], y[part]).detach().to(x.dtype)
            fooled = predict_labels(forward, adv, batch_size) != y[part]
            x_adv[part[fooled]], robust[part[fooled]] = adv[fooled], False
    return ball.enforce(x, x_adv)


def apgd_candidate(forward: Forward, x: torch.Tensor, y: torch.Tensor, threat: ThreatSpec, cfg: AttackConfig,
                   reducer: Reducer, *, n_iter: int, n_classes: int, batch_size: int) -> Candidate:
    """W-AutoAttack's candidate at p = ∞: :func:`run_apgd` at ε = δ, scored with ``cfg``'s loss, with its time."""
    start = time.perf_counter()
    x_a = run_apgd(forward, x, y, threat, n_iter=n_iter, n_classes=n_classes, batch_size=batch_size)
    return Candidate("apgd", x_a, score(forward, x_a, y, cfg, reducer), None, time.perf_counter() - start)


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
