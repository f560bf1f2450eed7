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
from collections.abc import Callable, Sequence
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

    Flip costs depend on the model, its preprocessing, the inputs, their labels, the ground norm and the solver with
    its options (its random starts are seeded), not on the budget or p. The key holds all of them, the model as
    :func:`~art_wdat.attacks.fingerprint.model_key`: its state and its outputs on the inputs, so the cache never
    serves the costs of other inputs or of another model (after a fine-tuning step, a changed tensor attribute, a new
    forward hook). A model without a sound key (``model=None``: a ``BlackBoxClassifier``) is recomputed every time.
    One entry: an evaluation's data, not a history of data sets kept in memory.

    It also keeps the costs refined near the knapsack's thresholds (:meth:`refined`), which do depend on the budgets:
    once for all the (δ, p) of a :meth:`plan`, so that every attack of an evaluation starts from the same costs
    whatever the order of its budgets, and the refinement is paid once.

    :ivar passes: Solver passes run so far (the cache's misses).
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._costs: FlipCosts | None = None
        self._plan: tuple[tuple[float, float], ...] = ()
        self._refined_key: tuple | None = None
        self._refined: FlipCosts | None = None
        self.passes = 0

    def plan(self, budgets: Sequence[tuple[float, float]]) -> None:
        """The (δ, p) pairs the attacks sharing this cache will be run at (e.g. an evaluation's budgets): an attack at
        one of them refines its costs near the thresholds of all of them, once (:meth:`refined`)."""
        self._plan = tuple(sorted({(float(d), float(p)) for d, p in budgets}))

    def refined(self, costs: FlipCosts, budget: tuple[float, float],
                refine: Callable[[list[tuple[float, float]]], FlipCosts]) -> tuple[FlipCosts, float]:
        """``costs`` (this cache's last, or uncached ones) refined near the knapsack's threshold of ``budget``, or of
        every planned budget if ``budget`` is one of them, by ``refine(budgets)``; kept with the costs they refine.

        :return: (the refined costs, the seconds spent here: 0 when they came from the cache).
        """
        budgets = self._plan if (float(budget[0]), float(budget[1])) in self._plan else (budget,)
        cached = self._costs is costs and self._key is not None
        key = (self._key, budgets)
        if cached and key == self._refined_key and self._refined is not None:
            return self._refined, 0.0
        start = time.perf_counter()
        out = refine(list(budgets))
        if cached:
            self._refined_key, self._refined = key, out
        return out, time.perf_counter() - start

    @staticmethod
    def key(x: torch.Tensor, y: torch.Tensor, norm: float, solver: str, model: str = "",
            options: dict | None = None) -> str:
        """The cache key of (x, y) under ``model`` (a key of the model: state and outputs), ``norm``, ``solver`` and
        the solver's ``options`` (plain values and tensors, e.g. the box)."""
        digest = hashlib.sha1(x.detach().cpu().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
        for name, value in sorted((options or {}).items()):
            digest.update(name.encode())
            values = value if isinstance(value, (tuple, list)) else (value,)
            for v in values:
                digest.update(v.detach().cpu().numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v).encode())
        return f"{digest.hexdigest()}|{model}|{norm}|{solver}|{tuple(x.shape)}|{x.dtype}|{x.device}"

    def costs(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, solver: MinNormMethod, *,
              model: str | None, options: dict | None = None) -> tuple[FlipCosts, float]:
        """The verified flip costs of (x, y), computed only if they are not the last ones.

        :param model: A key of the model behind ``forward`` (:func:`~art_wdat.attacks.fingerprint.model_key`), or
            None where it has none: then the costs are computed, and not kept.
        :param options: Further keywords of :func:`~art_wdat.attacks.flip_costs.min_norm_costs`, part of the key.
        :return: (the costs, the seconds spent computing them here: 0 when they came from the cache). The costs are
            the cache's own: copy before changing them.
        """
        key = None if model is None else self.key(x, y, norm, solver, model, options)
        if key is not None and key == self._key and self._costs is not None:
            return self._costs, 0.0
        start = time.perf_counter()
        costs = min_norm_costs(forward, x, y, norm=norm, method=solver, **(options or {}))
        self.passes += 1
        self._costs, self._key = (costs, key) if key is not None else (None, None)
        self._refined_key = self._refined = None
        return costs, time.perf_counter() - start


def score(forward: Forward, x_adv: torch.Tensor, target: torch.Tensor, cfg: AttackConfig,
          reducer: Reducer) -> torch.Tensor:
    """[inputs won, loss sum] of a distribution over all ranks (one forward pass, no gradient)."""
    losses, wins = GradientPass(forward, target, cfg, x_adv.device)(x_adv, None, 0)
    return reducer.sum(torch.stack([wins.double().sum(), losses.double().sum()]))


def run_knapsack(forward: Forward, x: torch.Tensor, y: torch.Tensor, threat: ThreatSpec, costs: FlipCosts, *,
                 clip: Clip | None, batch_size: int, reducer: Reducer, loss_fn: LossFn,
                 leftover_run: LeftoverRun = DEFAULT_LEFTOVER,
                 leftover_steps: bool = True) -> tuple[torch.Tensor, float]:
    """The knapsack distribution of ``threat`` from the flip ``costs`` (leftover budget spent by W-PGD with
    ``loss_fn``, the threat's ``eps_step`` scaled to its ball, and ``leftover_run``'s starts and precision, unless
    ``leftover_steps`` is False: a model without gradients); (x_adv, seconds)."""
    start = time.perf_counter()
    x_adv, _, _ = knapsack_torch(forward, x, y, threat.stepping("wpgd"), costs, clip=clip, batch_size=batch_size,
                                 reducer=reducer, loss_fn=loss_fn, leftover_run=leftover_run,
                                 leftover_steps=leftover_steps)
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
