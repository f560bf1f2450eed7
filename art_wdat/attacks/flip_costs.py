"""Flip costs: per input, the smallest adversarial perturbation found in the ground norm (ℓ∞, ℓ2, ℓ1).

The knapsack view of the W_p threat (:mod:`art_wdat.core.knapsack`) needs, for every correctly classified
input, the cost c_i = ‖x'_i − x_i‖_r of its cheapest misclassified neighbour x'_i. Smaller costs mean a
stronger attack. The solvers are those of the ``autoattack`` package (Croce & Hein), used per input, and FMN
(:mod:`art_wdat.attacks.fmn`, Pintor et al.):

* ``"fab"``: FAB (minimum-norm, untargeted), ``n_iter`` iterations, ``restarts`` runs (random starts after
  the first), the smallest verified point kept;
* ``"fab-t"``: targeted FAB against the ``targets`` highest-scoring other classes (AutoAttack's FAB-T);
* ``"apgd"``: APGD-DLR inside per-input balls whose radii are bisected (a radius where APGD finds a point
  becomes the new upper bound, set to that point's norm; one where it fails, the lower bound);
* ``"fmn"``: the Fast Minimum-Norm attack, ``fmn_steps`` steps, aiming at the verification's margin.

A method chains solvers with "+", left to right; each input keeps the cheapest verified point of any stage, and
an ``"apgd"`` stage starts its bisection from the costs of the stages before it. So ``"fab+apgd"`` is FAB then
the bisection from FAB's costs, and ``"fab+apgd+fmn"`` is, per input, the cheaper of that chain and FMN (a
second, independent solver: one chain misses some cheap flips). :data:`MIN_NORM_METHODS` lists the chains offered.

Every cost is verified: the returned point is classified (a forward pass, as returned, in float32) as
another class than ``y`` with a small logit margin (:data:`MARGIN_RTOL`, so that float noise of another
batch size or device cannot undo it; points just past the boundary are pushed out by at most 3%), lies in
the box, and c_i is its ground norm computed in float64 from the float32 coordinates, so a W_p budget
computed from the costs is the budget of the returned points, exactly.
Inputs misclassified already cost 0 (their point is x); those never flipped cost +inf (their point is x).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from art_wdat.attacks import estimator as est
from art_wdat.attacks.fmn import fmn
from art_wdat.core.norms import lp_norms

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

Forward = Callable[[torch.Tensor], torch.Tensor]
MinNormMethod = Literal["fab", "fab-t", "apgd", "fab+apgd", "fmn", "fab+fmn", "fab+apgd+fmn", "fab+fmn+apgd"]
MIN_NORM_METHODS: tuple[str, ...] = get_args(MinNormMethod)
#: The stages a method chains with "+".
SOLVERS = ("fab", "fab-t", "apgd", "fmn")
#: The default under ℓ∞ and ℓ2: FAB and FMN, then the APGD bisection from the cheaper of the two. Per input the
#: cheapest verified cost of any stage; FMN finds the cheaper flip on most inputs and FAB→APGD wins by more where it
#: wins, so together they beat each alone (bench/flip_cost_solvers.py: 1-2 inputs of 300 at some δ, for +2% and +29%
#: time on the shared models). At ℓ1, where the APGD bisection does not run, FAB and FMN.
DEFAULT_MIN_NORM: MinNormMethod = "fab+fmn+apgd"
DEFAULT_MIN_NORM_L1: MinNormMethod = "fab+fmn"


def default_min_norm(norm: float) -> MinNormMethod:
    """The default flip-cost solvers for the ground norm ``norm``: :data:`DEFAULT_MIN_NORM`, or
    :data:`DEFAULT_MIN_NORM_L1` at ℓ1 (the bisection's APGD takes one radius per input under ℓ∞ and ℓ2 only)."""
    return DEFAULT_MIN_NORM_L1 if norm == 1.0 else DEFAULT_MIN_NORM
#: The ``autoattack`` package's names of the ground norms.
AA_NORMS = {math.inf: "Linf", 2.0: "L2", 1.0: "L1"}
#: First radius the bisection tries where no upper bound is known (doubled until a point is found).
_START_RADIUS = {math.inf: 8 / 255, 2.0: 0.5, 1.0: 8.0}
#: A point counts as misclassified when its margin exceeds this fraction of its largest |logit| (at least 1):
#: on GPUs, TF32 convolutions make logits depend on the batch at about 1e-3 relative.
MARGIN_RTOL = 2e-3
#: Relative extrapolations tried on points misclassified by less than that tolerance.
OVERSHOOT = (1e-3, 1e-2, 3e-2)


@dataclass
class FlipCosts:
    """Verified flip costs of a set of inputs.

    :ivar costs: c_i per input (float64): ‖x_adv_i − x_i‖_r if the input was flipped, 0 if it was
        misclassified already, +inf if no point was found.
    :ivar x_adv: The points behind the costs (x where the cost is 0 or +inf), in x's dtype.
    :ivar correct: Whether the model classifies the clean input correctly.
    """

    costs: torch.Tensor
    x_adv: torch.Tensor
    correct: torch.Tensor

    @property
    def flipped(self) -> torch.Tensor:
        """Inputs classified correctly whose verified point is misclassified."""
        return self.correct & torch.isfinite(self.costs)

    def merge(self, other: FlipCosts) -> FlipCosts:
        """The cheaper of the two verified points, input by input (ties keep ``self``'s)."""
        better = other.costs < self.costs
        view = better.view(-1, *([1] * (self.x_adv.dim() - 1)))
        return FlipCosts(torch.where(better, other.costs, self.costs), torch.where(view, other.x_adv, self.x_adv),
                         self.correct)

    def take(self, idx: torch.Tensor) -> FlipCosts:
        """The rows ``idx``."""
        return FlipCosts(self.costs[idx], self.x_adv[idx], self.correct[idx])

    def put(self, idx: torch.Tensor, part: FlipCosts) -> None:
        """Overwrite the rows ``idx`` with ``part``."""
        self.costs[idx], self.x_adv[idx], self.correct[idx] = part.costs, part.x_adv, part.correct


def predict_labels(forward: Forward, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """argmax of the model's outputs, batch by batch, without gradients."""
    with torch.no_grad():
        return torch.cat([forward(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)])


def margins(forward: Forward, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """max_{j≠y} z_j − z_y minus the tolerance :data:`MARGIN_RTOL`·max(1, max|z|): positive = safely misclassified.

    A minimum-norm point sits on the decision boundary, where another batch size or device kernel can change
    the argmax; the tolerance keeps only points whose misclassification survives such float noise.
    """
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            z = forward(x[i:i + batch_size]).double()
            yb = y[i:i + batch_size]
            own = z.gather(1, yb[:, None]).squeeze(1)
            other = z.scatter(1, yb[:, None], -math.inf).amax(dim=1)
            out.append(other - own - MARGIN_RTOL * z.abs().amax(dim=1).clamp_min(1.0))
    return torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)


def _overshoot(forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
               batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Push points misclassified by less than the tolerance a little further from x (factors 1 + OVERSHOOT).

    :return: (the points, whether each is safely misclassified).
    """
    ok = margins(forward, x_adv, y, batch_size) > 0
    moved = (x_adv != x).flatten(1).any(dim=1)
    for gamma in OVERSHOOT:
        weak = ~ok & moved
        if not bool(weak.any()):
            break
        pushed = (x + (1.0 + gamma) * (x_adv - x)).clamp(0.0, 1.0)
        fixed = weak & (margins(forward, pushed, y, batch_size) > 0)
        x_adv = torch.where(fixed.view(-1, *([1] * (x.dim() - 1))), pushed, x_adv)
        ok = ok | fixed
    return x_adv, ok


def verify(forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, norm: float,
           batch_size: int = 256) -> FlipCosts:
    """The flip costs that the candidate points ``x_adv`` (in [0, 1]) prove, checked by forward passes.

    A candidate counts when it is misclassified with a margin (:func:`margins`), after an overshoot of at
    most 3% where it was misclassified by less.

    :param x: Clean inputs (N, ...).
    :param x_adv: Candidate points, same shape and dtype; rows equal to x are "not found".
    :param y: Labels (N,).
    :param norm: The ground norm r.
    """
    correct = predict_labels(forward, x, batch_size) == y
    x_adv, wrong_adv = _overshoot(forward, x, x_adv, y, batch_size)
    # The difference of two float32 numbers is exact in float64: c_i is the norm of the stored point.
    norms = lp_norms(x_adv.double() - x.double(), norm)
    found = correct & wrong_adv & (norms > 0)
    costs = torch.where(correct, torch.where(found, norms, torch.full_like(norms, math.inf)), torch.zeros_like(norms))
    view = found.view(-1, *([1] * (x.dim() - 1)))
    return FlipCosts(costs, torch.where(view, x_adv, x), correct)


def autoattack_module(submodule: str) -> ModuleType:
    """``autoattack.<submodule>``: the installed package, or robustbench's ``pyautoattack`` under that name."""
    from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias

    ensure_autoattack_alias()
    return importlib.import_module(f"autoattack.{submodule}")


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The solvers draw from torch's global generator: seed it for them and restore it after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _fab(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, *, n_iter: int, restarts: int,
         targets: int, seed: int) -> FlipCosts:
    """FAB (``targets`` = 0) or FAB-T against the ``targets`` most likely other classes, best point kept."""
    fab = autoattack_module("fab_pt").FABAttack_PT(forward, norm=AA_NORMS[norm], n_restarts=1, n_iter=n_iter, seed=seed,
                       targeted=targets > 0, device=x.device, n_target_classes=max(targets, 1))
    best = verify(forward, x, x, y, norm)
    todo = best.correct.nonzero().flatten()
    for restart in range(restarts):
        for target in (range(2, targets + 2) if targets > 0 else [None]):
            if todo.numel() == 0:
                return best
            fab.target_class = target
            with _seeded(seed + restart, x.device):
                adv = fab.attack_single_run(x[todo], y[todo], use_rand_start=restart > 0,
                                            is_targeted=target is not None)
            best.put(todo, best.take(todo).merge(verify(forward, x[todo], adv.to(x.dtype), y[todo], norm)))
    return best


def _apgd_bisection(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, start: FlipCosts, *,
                    rounds: int, n_iter: int, seed: int) -> FlipCosts:
    """Shrink each input's cost by bisection over its radius, with APGD-DLR in per-input balls.

    Upper bound: the best verified cost (``start``'s); lower bound: the largest radius where APGD failed.
    Where no upper bound is known the radius starts at a norm-dependent guess and doubles.
    """
    n_classes = int(forward(x[:1]).shape[1]) if x.shape[0] else 3
    apgd = autoattack_module("autopgd_base").APGDAttack(forward, n_iter=n_iter, norm=AA_NORMS[norm], eps=1.0, seed=seed,
                      loss="dlr" if n_classes > 2 else "ce", device=x.device)
    apgd.init_hyperparam(x)
    best = start
    lo = torch.zeros_like(best.costs)
    for r in range(rounds):
        hi = best.costs
        known = torch.isfinite(hi)
        radius = torch.where(known, (lo + hi) / 2, torch.where(lo > 0, 2 * lo, _START_RADIUS[norm]))
        todo = (best.correct & (~known | (hi - lo > 1e-3 * hi))).nonzero().flatten()
        if todo.numel() == 0:
            break
        # APGD's Linf/L2 code broadcasts `eps`, so a column of radii gives one ball per input.
        apgd.eps = radius[todo].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        with _seeded(seed + r, x.device):
            _, _, _, adv = apgd.attack_single_run(x[todo], y[todo])
        found = verify(forward, x[todo], adv.detach().to(x.dtype), y[todo], norm)
        lo[todo] = torch.where(torch.isfinite(found.costs), lo[todo], radius[todo])
        best.put(todo, best.take(todo).merge(found))
    return best


def _fmn(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, *, steps: int) -> FlipCosts:
    """FMN's verified points; it aims past the boundary by the verification's tolerance, so they pass as found."""
    return verify(forward, x, fmn(forward, x, y, norm, steps=steps, rtol=MARGIN_RTOL).to(x.dtype), y, norm)


def _stage(name: str, forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, best: FlipCosts, *,
           n_iter: int, apgd_iter: int, restarts: int, targets: int, rounds: int, fmn_steps: int,
           seed: int) -> FlipCosts:
    """One stage of a chain: ``best`` merged, input by input, with what the solver ``name`` verifies."""
    if name == "apgd":
        return _apgd_bisection(forward, x, y, norm, best, rounds=rounds, n_iter=apgd_iter, seed=seed)
    if name == "fmn":
        return best.merge(_fmn(forward, x, y, norm, steps=fmn_steps))
    return best.merge(_fab(forward, x, y, norm, n_iter=n_iter, restarts=restarts,
                           targets=targets if name == "fab-t" else 0, seed=seed))


def min_norm_costs(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, norm: float = math.inf,
                   method: MinNormMethod = DEFAULT_MIN_NORM, n_iter: int = 30, apgd_iter: int = 25, restarts: int = 1,
                   targets: int = 9, rounds: int = 8, fmn_steps: int = 100, batch_size: int = 256,
                   seed: int = 0) -> FlipCosts:
    """Verified flip costs of inputs in [0, 1] (torch level; see the module docstring for the methods).

    :param forward: Differentiable map from inputs to logits, in eval mode.
    :param x: Clean inputs in [0, 1], on the model's device.
    :param y: Labels (N,).
    :param norm: Ground norm: inf, 2 or 1 (methods with ``"apgd"`` support inf and 2 only).
    :param method: One of :data:`MIN_NORM_METHODS`: solvers chained with "+", the cheapest verified point kept.
    :param n_iter: Iterations of FAB per run. 30 by default: on 128 JPEG CIFAR-10 test images of both shared robust
        models, FAB at 30 iterations then the bisection gave the same accuracy curve as at 100, in half the time.
    :param apgd_iter: Iterations of APGD per bisection round.
    :param restarts: FAB runs per input (and per target class for ``"fab-t"``).
    :param targets: Target classes of ``"fab-t"``.
    :param rounds: Bisection rounds of the ``"apgd"`` stage.
    :param fmn_steps: Steps of the ``"fmn"`` stage.
    :param batch_size: Inputs per solver call.
    :param seed: Seed of the solvers' random starts.
    """
    if method not in MIN_NORM_METHODS:
        raise ValueError(f"`method` must be one of {MIN_NORM_METHODS}, got {method!r}.")
    if norm not in AA_NORMS or ("apgd" in method and norm == 1.0):
        raise ValueError(f"`norm`={norm!r} is not supported by method {method!r}.")
    parts = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        best = verify(forward, xb, xb, yb, norm)
        for name in method.split("+"):
            best = _stage(name, forward, xb, yb, norm, best, n_iter=n_iter, apgd_iter=apgd_iter, restarts=restarts,
                          targets=targets, rounds=rounds, fmn_steps=fmn_steps, seed=seed)
        parts.append(best)
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64, device=x.device)
        return FlipCosts(empty, x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device))
    return FlipCosts(*(torch.cat([getattr(b, f) for b in parts]) for f in ("costs", "x_adv", "correct")))


def flip_costs(estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, *, norm: float = math.inf,
               method: MinNormMethod = DEFAULT_MIN_NORM, **kwargs: int) -> FlipCosts:
    """Verified flip costs of ``x`` under an ART ``PyTorchClassifier`` whose ``clip_values`` are (0, 1).

    :param estimator: The classifier; its preprocessing is differentiated as in the distributional attack.
    :param x: Inputs (N, *input_shape) in [0, 1].
    :param y: Class indices (N,).
    :param norm: Ground norm: inf, 2 or 1.
    :param method: One of :data:`MIN_NORM_METHODS`.
    :param kwargs: ``n_iter``, ``apgd_iter``, ``restarts``, ``targets``, ``rounds``, ``fmn_steps``, ``batch_size``,
        ``seed`` of :func:`min_norm_costs`.
    :return: Costs and points as torch tensors on the estimator's device.
    """
    clip = estimator.clip_values
    if clip is None or np.any(np.asarray(clip[0]) != 0) or np.any(np.asarray(clip[1]) != 1):
        raise ValueError("flip_costs needs an estimator with clip_values=(0, 1): its solvers work in [0, 1].")
    device = est.device_of(estimator)
    x_t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
    with est.eval_mode(estimator):
        return min_norm_costs(est.forward_fn(estimator), x_t, y_t, norm=float(norm), method=method, **kwargs)
