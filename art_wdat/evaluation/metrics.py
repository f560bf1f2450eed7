"""Robustness metrics (:doc:`/maths`): sensitivity Υ, V(0), W(0) and the first-order bounds R^u, R^l.

Everything here costs at most one gradient pass over the data, plus one W-FGSM step for Q_δ (done by
:class:`~art_wdat.attacks.WassersteinDistributionalAttack` with ``max_iter=1``, not re-implemented). Any ART
classifier with class gradients works (a ``PyTorchClassifier``, or another through :mod:`art_wdat.attacks.bridge`);
a predict-only classifier gets A, V(0) and W(0), but Υ and R^l need gradients: NaN, and no W-FGSM step.

Under ``torch.distributed`` (launched with torchrun) each rank passes its shard of the data, and every
quantity is that of the union of the shards: counts and sums are all-reduced (one call for A, V(0) and
W(0), two for Υ's power mean), so every rank returns the same global statistics.

Definitions, for a per-sample loss J and clean data (x_i, y_i), i = 1..N:

* A = clean accuracy; S = the correctly classified inputs.
* V(0) = (1/N) Σ_i J(x_i, y_i).
* W(0) = mean of J over the misclassified clean inputs. When there are none, the mean is undefined:
  for ReDLR (and DLR clamped the same way) J is exactly 0 on every misclassified input, so W(0) = 0 is
  its value whatever the data; for any other loss W(0) is NaN (and so is R^l) unless the caller
  passes ``w0`` explicitly. This is this project's choice, stated in the result's ``w0_source``.
* Υ = ((1/N) Σ_i ‖∇_x J(x_i, y_i)‖_s^q)^(1/q), s the dual of the ground norm, q the conjugate of p.
* R^u_δ = A_δ / A for the accuracy A_δ under any attack inside the ball (an upper bound on R_δ).
* R^l_δ = min(R̃, R̄), R̄ = (W(0) − V(0) − δΥ)/(W(0) − V(0)), R̃ = (W(0) − E_{Q_δ}[J])/(W(0) − V(0)),
  Q_δ the W-FGSM distribution: a first-order estimate from below, not a certificate.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from art_wdat.attacks import WassersteinDistributionalAttack, bridge, parse_norm
from art_wdat.core.engine import AttackConfig, GradientPass
from art_wdat.core.losses import LossFn, resolve_loss
from art_wdat.core.reduce import ProcessGroupLike, default_reducer
from art_wdat.core.threat import WassersteinBall
from art_wdat.validation import check_labels, check_x

if TYPE_CHECKING:
    from art.estimators.classification.classifier import Classifier

logger = logging.getLogger(__name__)

#: Losses that are identically 0 on misclassified inputs, so W(0) = 0 even when none is misclassified.
ZERO_ON_MISCLASSIFIED = ("redlr",)

Loss = str | LossFn


@dataclass(frozen=True)
class CleanStatistics:
    """A, V(0), W(0) and Υ of a classifier on clean data, from one gradient pass.

    :ivar n: Number of inputs N.
    :ivar clean_accuracy: A.
    :ivar v0: V(0), the mean loss on clean data.
    :ivar w0: W(0), the mean loss over misclassified clean inputs (see the module docstring when none is).
    :ivar w0_source: "misclassified" (the mean), "zero-on-misclassified" (ReDLR without misclassified
        inputs), "given" (passed by the caller) or "undefined" (NaN).
    :ivar sensitivity: Υ at x' = x.
    :ivar n_misclassified: Number of misclassified clean inputs.
    :ivar p: Wasserstein order.
    :ivar norm: Ground norm.
    :ivar loss: Name of the loss J.
    """

    n: int
    clean_accuracy: float
    v0: float
    w0: float
    w0_source: str
    sensitivity: float
    n_misclassified: int
    p: float
    norm: float
    loss: str

    def first_order_value(self, delta: float) -> float:
        """V(0) + δΥ: the first-order prediction of the worst mean loss over the ball of radius δ."""
        return self.v0 + delta * self.sensitivity


@dataclass(frozen=True)
class LowerBound:
    """R^l_δ = min(R̃, R̄) and its two parts (NaN where W(0) − V(0) vanishes or W(0) is undefined).

    :ivar r_bar: R̄ = (W(0) − V(0) − δΥ)/(W(0) − V(0)).
    :ivar r_tilde: R̃ = (W(0) − E_{Q_δ}[J])/(W(0) − V(0)).
    :ivar r_lower: min(R̃, R̄) clamped to [0, 1], the range of a ratio of accuracies (NaN stays NaN).
    """

    r_bar: float
    r_tilde: float
    r_lower: float


def loss_name(loss: Loss) -> str:
    """A printable name for ``loss``: the string itself or the callable's ``__name__``."""
    return loss.lower() if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


def _validated(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bridge.require_classifier(classifier, "art_wdat.metrics")
    x = check_x(x, classifier.input_shape, classifier.clip_values)
    labels = check_labels(y, x.shape[0], classifier.nb_classes)
    if labels is None:
        raise ValueError("`y` (the true labels) is required for the robustness metrics.")
    if x.shape[0] == 0:
        # Under torch.distributed too: an empty shard would skip the attack's collectives and hang the other ranks.
        raise ValueError("`x` is empty: the metrics need at least one input (on every rank).")
    return np.ascontiguousarray(x, dtype=np.float32), labels


def _gradient_pass(classifier: Classifier, x: np.ndarray, labels: np.ndarray, loss_fn: LossFn,
                   ball: WassersteinBall, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss J, correctness and ‖∇_x J‖_s at the clean inputs, on the estimator's device (the norms are NaN
    for a predict-only classifier: it has no gradient)."""
    device = bridge.device_of(classifier)
    x_t = torch.from_numpy(x).to(device)
    cfg = AttackConfig(ball=ball, loss_fn=loss_fn, eps_step=0.0, max_iter=1, batch_size=batch_size)
    gradients = bridge.kind_of(classifier) != "predict"
    grad = torch.empty_like(x_t) if gradients else None
    with bridge.eval_mode(classifier):
        one_pass = GradientPass(bridge.forward_fn(classifier, batch_size=batch_size), torch.from_numpy(labels), cfg,
                                device)
        losses, wins = one_pass(x_t, grad, 0)
    norms = ball.dual_norms(grad) if grad is not None else torch.full_like(losses, math.nan, dtype=torch.float64)
    return losses.double(), ~wins, norms


def clean_statistics(classifier: Classifier, x: np.ndarray, y: np.ndarray, *, p: float = 2.0,
                     norm: int | float | str = np.inf, loss: Loss = "redlr", batch_size: int = 128,
                     w0: float | None = None, process_group: ProcessGroupLike = None) -> CleanStatistics:
    """A, V(0), W(0) and Υ (:doc:`/maths`) from one gradient pass over the clean data.

    :param classifier: An ART classifier: a ``PyTorchClassifier``, or any other through its ``predict`` and
                       ``class_gradient`` (:mod:`art_wdat.attacks.bridge`); a predict-only classifier gets Υ = NaN.
    :param x: Clean inputs ``(N, *input_shape)``; under ``torch.distributed``, this rank's shard.
    :param y: True labels, indices (N,) or one-hot.
    :param p: Wasserstein order in [1, inf] (sets q, the order of Υ's power mean).
    :param norm: Ground norm: inf, 2 or 1 (gradients are measured in its dual).
    :param loss: "redlr" (default), "dlr", "ce", or a callable ``(logits, labels) -> (N,)``.
    :param batch_size: Inputs per gradient pass.
    :param w0: Use this W(0) instead of the mean over misclassified inputs.
    :param process_group: The ranks whose shards form the data (default: the world group when
                          ``torch.distributed`` is initialised; ``False``: this process's ``x`` only).
    :return: The statistics of the whole data (every rank gets the same).
    """
    reducer = default_reducer(process_group)
    x, labels = _validated(classifier, x, y)
    ball = WassersteinBall(eps=1.0, p=float(p), norm=parse_norm(norm))
    losses, correct, gnorms = _gradient_pass(classifier, x, labels, resolve_loss(loss), ball, batch_size)
    totals = torch.stack([losses.new_tensor(float(x.shape[0])), losses.sum(), correct.double().sum(),
                          losses.masked_fill(correct, 0.0).sum()])
    n, loss_sum, n_correct, wrong_sum = reducer.sum(totals).tolist()
    upsilon = float(ball.sensitivity(gnorms, reducer))
    n_wrong = int(round(n - n_correct))
    name = loss_name(loss)
    if w0 is not None:
        w0_value, source = float(w0), "given"
    elif n_wrong > 0:
        w0_value, source = wrong_sum / n_wrong, "misclassified"
    elif name in ZERO_ON_MISCLASSIFIED:
        w0_value, source = 0.0, "zero-on-misclassified"
    else:
        w0_value, source = math.nan, "undefined"
        logger.warning("No clean input is misclassified: W(0) is undefined for loss %r, so R^l is NaN; "
                       "pass `w0` or use loss='redlr'.", name)
    return CleanStatistics(n=int(round(n)), clean_accuracy=n_correct / n, v0=loss_sum / n, w0=w0_value,
                           w0_source=source, sensitivity=upsilon, n_misclassified=n_wrong, p=ball.p,
                           norm=ball.norm, loss=name)


def sensitivity(classifier: Classifier, x: np.ndarray, y: np.ndarray, *, p: float = 2.0,
                norm: int | float | str = np.inf, loss: Loss = "redlr", batch_size: int = 128,
                process_group: ProcessGroupLike = None) -> float:
    """Υ = ((1/N) Σ ‖∇_x J(x_i, y_i)‖_s^q)^(1/q) at the clean inputs (:doc:`/maths`).

    See :func:`clean_statistics` for the parameters.
    """
    return clean_statistics(classifier, x, y, p=p, norm=norm, loss=loss, batch_size=batch_size,
                            process_group=process_group).sensitivity


def wfgsm_mean_loss(classifier: Classifier, x: np.ndarray, y: np.ndarray, delta: float, *, p: float = 2.0,
                    norm: int | float | str = np.inf, loss: Loss = "redlr", batch_size: int = 128,
                    process_group: ProcessGroupLike = None, allow_large_eps: bool = False) -> float:
    """E_{Q_δ}[J]: the mean loss after one W-FGSM step of size δ (the attack with ``max_iter=1``).

    :param delta: The budget δ ≥ 0 (of the whole data: under ``torch.distributed``, of every rank's shard together).
    :param process_group: As in :func:`clean_statistics`.
    :param allow_large_eps: Accept a δ beyond the input box's scale (see the attack's ``allow_large_eps``).
    :return: The mean loss over the attacked distribution (V(0) when δ = 0).
    """
    x, labels = _validated(classifier, x, y)
    if delta == 0:
        return clean_statistics(classifier, x, labels, p=p, norm=norm, loss=loss, batch_size=batch_size,
                                process_group=process_group).v0
    # keep_best=False: Q_δ is the W-FGSM iterate itself, not the better of it and the clean data.
    attack = WassersteinDistributionalAttack(classifier, eps=float(delta), p=float(p), norm=norm, max_iter=1,
                                             eps_step=float(delta), loss=loss, keep_best=False,
                                             batch_size=batch_size, process_group=process_group,
                                             allow_large_eps=allow_large_eps, verbose=False)
    attack.generate(x, labels)
    result = attack.last_result_
    if result is None:  # generate records its result; None would mean it returned without attacking
        raise RuntimeError("the W-FGSM step recorded no result")
    return float(result.loss[-1])


def upper_ratio(attacked_accuracy: float, clean_accuracy: float) -> float:
    """R^u_δ = A_δ / A (NaN when A = 0: no correctly classified input to keep)."""
    return attacked_accuracy / clean_accuracy if clean_accuracy > 0 else math.nan


def lower_ratio(stats: CleanStatistics, delta: float, q_loss: float) -> LowerBound:
    """R^l_δ = min(R̃, R̄) from the clean statistics and E_{Q_δ}[J] = ``q_loss`` (:doc:`/maths`).

    The denominator W(0) − V(0) is 0 when every input is misclassified (or J is constant); the ratios
    are then NaN rather than a division error.
    """
    gap = stats.w0 - stats.v0
    if not math.isfinite(gap) or gap == 0:
        return LowerBound(math.nan, math.nan, math.nan)
    r_bar = (gap - delta * stats.sensitivity) / gap
    r_tilde = (stats.w0 - q_loss) / gap
    low = min(r_bar, r_tilde)
    return LowerBound(r_bar=r_bar, r_tilde=r_tilde, r_lower=min(max(low, 0.0), 1.0))


def lower_bound(classifier: Classifier, x: np.ndarray, y: np.ndarray, delta: float, *, p: float = 2.0,
                norm: int | float | str = np.inf, loss: Loss = "redlr", batch_size: int = 128,
                stats: CleanStatistics | None = None, process_group: ProcessGroupLike = None,
                allow_large_eps: bool = False) -> LowerBound:
    """R^l_δ for one budget: the clean statistics (unless given) plus one W-FGSM step.

    :param stats: Precomputed :func:`clean_statistics` for the same data, p, norm and loss.
    :param process_group: As in :func:`clean_statistics`.
    :param allow_large_eps: As in :func:`wfgsm_mean_loss`.
    """
    if stats is None:
        stats = clean_statistics(classifier, x, y, p=p, norm=norm, loss=loss, batch_size=batch_size,
                                 process_group=process_group)
    q_loss = wfgsm_mean_loss(classifier, x, y, delta, p=p, norm=norm, loss=loss, batch_size=batch_size,
                             process_group=process_group, allow_large_eps=allow_large_eps)
    return lower_ratio(stats, delta, q_loss)
