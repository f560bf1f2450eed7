"""Flip costs: per input, the smallest adversarial perturbation found in the ground norm (ℓ∞, ℓ2, ℓ1).

The knapsack view of the W_p threat (:mod:`art_wdat.core.knapsack`) needs, for every correctly classified
input, the cost c_i = ‖x'_i − x_i‖_r of its cheapest misclassified neighbour x'_i. Smaller costs mean a
stronger attack.

Gradient solvers (:mod:`art_wdat.attacks.gradient_solvers`), for models with gradients: those of the ``autoattack``
package (Croce & Hein), used per input, FMN (:mod:`art_wdat.attacks.fmn`, Pintor et al.) and a bisection with the
attack's own PGD:

* ``"fab"``: FAB (minimum-norm, untargeted), ``n_iter`` iterations, ``restarts`` runs (random starts after
  the first), the smallest verified point kept;
* ``"fab-t"``: targeted FAB against the ``targets`` highest-scoring other classes (AutoAttack's FAB-T);
* ``"apgd"``: APGD-DLR inside per-input balls whose radii are bisected (a radius where APGD finds a point
  becomes the new upper bound, set to that point's norm; one where it fails, the lower bound); with per-feature
  bounds, which APGD cannot keep, the ``"pgd"`` bisection instead;
* ``"pgd"``: the same bisection with projected gradient steps of the engine (:mod:`art_wdat.core.engine`) in the box
  itself, any box, ℓ1 included;
* ``"fmn"``: the Fast Minimum-Norm attack, ``fmn_steps`` steps, aiming at the verification's margin;
* ``"fmn-t"``: targeted FMN against each of the ``targets`` highest-scoring other classes, the cheapest kept.

Decision-based solvers (:mod:`art_wdat.attacks.decision`), for predict-only models, on a budget of ``max_queries``
model rows per input: ``"rays"``, ``"rays-t"`` (RayS, untargeted and per class), ``"hsja"`` (a HopSkipJump-style
boundary walk) and ``"refine"``. Their results carry the queries spent per input and the seconds.

A method chains solvers of one kind with "+", left to right; each input keeps the cheapest verified point of any
stage. A bisection stage starts from the costs of the stages before it, a decision stage from the best point so far.
So ``"fab+apgd"`` is FAB then the bisection from FAB's costs, and ``"fab+apgd+fmn"`` is, per input, the cheaper of
that chain and FMN (a second, independent solver: one chain misses some cheap flips). :data:`MIN_NORM_METHODS` lists
the chains offered, :func:`default_min_norm` the defaults.

The box is the estimator's ``clip_values`` (``clip``: (lo, hi), numbers or per-feature arrays, or None), the unit
box by default (:mod:`art_wdat.attacks.box`). Every cost is verified (:func:`~art_wdat.attacks.verified.verify`):
the returned point lies in the box and is classified (a forward pass, as returned, in float32) as another class
than ``y`` with a small margin (:data:`MARGIN_RTOL`), and c_i is its ground norm computed in float64 from the float32
coordinates, so a W_p budget computed from the costs is the budget of the returned points, exactly.
Inputs misclassified already cost 0 (their point is x); those never flipped cost +inf (their point is x).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from art_wdat.attacks import estimator as est
from art_wdat.attacks import gradient_solvers as gs
from art_wdat.attacks.box import UNIT, Box, ClipLike
from art_wdat.attacks.decision import DECISION_STAGES, MAX_QUERIES, decision_costs
from art_wdat.attacks.gradient_solvers import AA_NORMS, autoattack_module
from art_wdat.attacks.verified import (
    MARGIN_RTOL,
    OVERSHOOT,
    FlipCosts,
    Forward,
    as_box,
    margins,
    predict_labels,
    verify,
)

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

__all__ = ["AA_NORMS", "DEFAULT_DECISION", "DEFAULT_MIN_NORM", "DEFAULT_MIN_NORM_L1", "FMN_TARGETS", "FlipCosts",
           "Forward", "MARGIN_RTOL", "MAX_QUERIES", "MIN_NORM_METHODS", "MinNormMethod", "OVERSHOOT", "SOLVERS",
           "autoattack_module", "default_min_norm", "flip_costs", "margins", "min_norm_costs", "predict_labels",
           "verify"]

MinNormMethod = Literal["fab", "fab-t", "apgd", "fab+apgd", "fmn", "fab+fmn", "fab+apgd+fmn", "fab+fmn+apgd",
                        "pgd", "fmn+pgd", "fab+fmn+pgd", "fmn-t", "fab+fmn-t", "fab+fmn-t+apgd", "fab-t+fmn-t",
                        "rays", "rays-t", "rays+rays-t", "rays+rays-t+refine", "rays+hsja", "rays+hsja+refine",
                        "hsja-t", "rays+hsja-t", "rays+hsja-t+refine"]
MIN_NORM_METHODS: tuple[str, ...] = get_args(MinNormMethod)
#: The gradient stages a method chains with "+".
GRADIENT_STAGES = ("fab", "fab-t", "apgd", "pgd", "fmn", "fmn-t")
#: Every stage.
SOLVERS = GRADIENT_STAGES + DECISION_STAGES
#: The default under ℓ∞ and ℓ2: FAB and FMN targeted at each of the :data:`FMN_TARGETS` likeliest other classes, then
#: the APGD bisection from the cheaper of the two. Per input the cheapest verified cost of any stage; FMN finds the
#: cheaper flip on most inputs and FAB→APGD wins by more where it wins, so together they beat each alone
#: (bench/flip_cost_solvers.py: 1-2 inputs of 300 at some δ, for +2% and +29% time on two robust CIFAR-10 models).
#: Targeted FMN flipped 1-2 more of 300 inputs than untargeted FMN at some budgets on both models (W_2, ℓ∞ and ℓ1),
#: where the threshold refinement alone did not, for about 1.0-1.4 times the flip-cost time. At ℓ1, where the APGD
#: bisection does not run, FAB and targeted FMN.
DEFAULT_MIN_NORM: MinNormMethod = "fab+fmn-t+apgd"
DEFAULT_MIN_NORM_L1: MinNormMethod = "fab+fmn-t"
#: Target classes of ``"fmn-t"`` by default: 3 did as well as 9 on one robust CIFAR-10 model and one input worse in
#: 300 on the other, at a third of the time.
FMN_TARGETS = 3
#: The defaults of predict-only models: RayS then RayS per class at ℓ∞ (bench/decision_solvers.py); at ℓ2 and ℓ1
#: RayS for a first point, the boundary walk from it, and the refinement.
DEFAULT_DECISION: dict[float, MinNormMethod] = {math.inf: "rays+rays-t+refine", 2.0: "rays+hsja-t+refine",
                                                1.0: "rays+hsja-t+refine"}


def default_min_norm(norm: float, *, gradients: bool = True) -> MinNormMethod:
    """The default flip-cost solvers for the ground norm ``norm``, in any box.

    :param gradients: Whether the model has gradients: then :data:`DEFAULT_MIN_NORM`, or :data:`DEFAULT_MIN_NORM_L1`
        at ℓ1 (the bisection's APGD takes one radius per input under ℓ∞ and ℓ2 only); else the decision-based
        :data:`DEFAULT_DECISION`. In a box with per-feature bounds FAB and APGD run on the box's affine image, whose
        norm is not the ground norm; the targeted FMN of the default runs in the box itself (on the exact minima of
        linear models within 1.006x at the 90th percentile, where untargeted FMN is at 1.06x:
        bench/decision_solvers.py).
    """
    if not gradients:
        return DEFAULT_DECISION[float(norm)]
    return DEFAULT_MIN_NORM_L1 if norm == 1.0 else DEFAULT_MIN_NORM


def is_decision(method: str) -> bool:
    """Whether ``method`` is a chain of decision-based stages (predict only)."""
    return method.split("+")[0] in DECISION_STAGES


def _stage(name: str, forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, best: FlipCosts, box: Box, *,
           n_iter: int, apgd_iter: int, restarts: int, targets: int, fmn_targets: int, rounds: int, fmn_steps: int,
           seed: int) -> FlipCosts:
    """One gradient stage of a chain: ``best`` merged, input by input, with what the solver ``name`` verifies."""
    if name == "apgd":
        return gs.apgd_bisection(forward, x, y, norm, best, box, rounds=rounds, n_iter=apgd_iter, seed=seed)
    if name == "pgd":
        return gs.pgd_bisection(forward, x, y, norm, best, box, rounds=rounds, n_iter=apgd_iter)
    if name in ("fmn", "fmn-t"):
        return best.merge(gs.fmn_costs(forward, x, y, norm, box, steps=fmn_steps,
                                       targets=fmn_targets if name == "fmn-t" else 0))
    return best.merge(gs.fab(forward, x, y, norm, box, n_iter=n_iter, restarts=restarts,
                             targets=targets if name == "fab-t" else 0, seed=seed))


def _check(method: str, norm: float, max_queries: int) -> None:
    """ValueError for an unknown method, a norm it does not support, or a budget too small to verify."""
    if method not in MIN_NORM_METHODS:
        raise ValueError(f"`method` must be one of {MIN_NORM_METHODS}, got {method!r}.")
    if norm not in AA_NORMS or ("apgd" in method.split("+") and norm == 1.0):
        raise ValueError(f"`norm`={norm!r} is not supported by method {method!r}.")
    if is_decision(method) and max_queries < 32:
        raise ValueError(f"`max_queries` must be at least 32 (the clean prediction and the verification take up to "
                         f"6 per input), got {max_queries!r}.")


def min_norm_costs(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, norm: float = math.inf,
                   method: MinNormMethod = DEFAULT_MIN_NORM, n_iter: int = 30, apgd_iter: int = 25, restarts: int = 1,
                   targets: int = 9, fmn_targets: int = FMN_TARGETS, rounds: int = 8, fmn_steps: int = 100,
                   batch_size: int = 256, seed: int = 0, clip: Box | ClipLike = UNIT,
                   max_queries: int = MAX_QUERIES) -> FlipCosts:
    """Verified flip costs of inputs in the box ``clip`` (torch level; see the module docstring for the methods).

    :param forward: Map from inputs to scores (logits, or probabilities for predict-only models), in eval mode:
        differentiable for the gradient methods; the decision-based methods read its argmax and margins only.
    :param x: Clean inputs in the box, on the model's device.
    :param y: Labels (N,).
    :param norm: Ground norm: inf, 2 or 1 (methods with ``"apgd"`` support inf and 2 only).
    :param method: One of :data:`MIN_NORM_METHODS`: solvers chained with "+", the cheapest verified point kept.
    :param n_iter: Iterations of FAB per run. 30 by default: on 128 JPEG CIFAR-10 test images of both shared robust
        models, FAB at 30 iterations then the bisection gave the same accuracy curve as at 100, in half the time.
    :param apgd_iter: Iterations of APGD (or PGD) per bisection round.
    :param restarts: FAB runs per input (and per target class for ``"fab-t"``).
    :param targets: Target classes of ``"fab-t"`` and ``"rays-t"`` (the most likely others).
    :param fmn_targets: Target classes of ``"fmn-t"`` (:data:`FMN_TARGETS`).
    :param rounds: Bisection rounds of the ``"apgd"`` and ``"pgd"`` stages.
    :param fmn_steps: Steps of the ``"fmn"`` stage.
    :param batch_size: Inputs per solver call.
    :param seed: Seed of the solvers' random starts.
    :param clip: The box: (lo, hi) as numbers or arrays broadcastable to one input, or None for none; [0, 1] by
        default.
    :param max_queries: Decision-based methods: rows per input passed to ``forward``, verification included.
    :return: The costs; ``queries`` per input for decision-based methods; ``seconds``.
    """
    _check(method, norm, max_queries)
    start = time.perf_counter()
    box = as_box(clip, x)
    parts = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if is_decision(method):
            parts.append(decision_costs(forward, xb, yb, norm=norm, stages=method.split("+"), box=box,
                                        max_queries=max_queries, targets=targets, batch_size=batch_size))
            continue
        best = verify(forward, xb, xb, yb, norm, clip=box)
        for name in method.split("+"):
            best = _stage(name, forward, xb, yb, norm, best, box, n_iter=n_iter, apgd_iter=apgd_iter,
                          restarts=restarts, targets=targets, fmn_targets=fmn_targets, rounds=rounds,
                          fmn_steps=fmn_steps, seed=seed)
        parts.append(best)
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64, device=x.device)
        queries = torch.zeros(0, dtype=torch.long, device=x.device) if is_decision(method) else None
        return FlipCosts(empty, x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device), queries,
                         time.perf_counter() - start)
    out = FlipCosts(torch.cat([b.costs for b in parts]), torch.cat([b.x_adv for b in parts]),
                    torch.cat([b.correct for b in parts]))
    if is_decision(method):
        out.queries = torch.cat([b.queries for b in parts if b.queries is not None])
    out.seconds = time.perf_counter() - start
    return out


def flip_costs(estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, *, norm: float = math.inf,
               method: MinNormMethod = DEFAULT_MIN_NORM, **kwargs: int) -> FlipCosts:
    """Verified flip costs of ``x`` under an ART ``PyTorchClassifier``, in its ``clip_values`` box (or none).

    :param estimator: The classifier; its preprocessing is differentiated as in the distributional attack.
    :param x: Inputs ``(N, *input_shape)`` in the box.
    :param y: Class indices (N,).
    :param norm: Ground norm: inf, 2 or 1.
    :param method: One of :data:`MIN_NORM_METHODS`.
    :param kwargs: ``n_iter``, ``apgd_iter``, ``restarts``, ``targets``, ``rounds``, ``fmn_steps``, ``batch_size``,
        ``seed``, ``max_queries`` of :func:`min_norm_costs`.
    :return: Costs and points as torch tensors on the estimator's device.
    """
    device = est.device_of(estimator)
    x_t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
    clip = estimator.clip_values
    with est.eval_mode(estimator):
        return min_norm_costs(est.forward_fn(estimator), x_t, y_t, norm=float(norm), method=method,
                              clip=None if clip is None else (clip[0], clip[1]), **kwargs)
