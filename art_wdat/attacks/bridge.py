"""Any ART classifier as a torch function ``x -> scores``, so that one torch core attacks them all.

The attack's engine, knapsack, flip-cost solvers and scoring take a :data:`Forward`: a differentiable torch map from
inputs to per-class scores. A ``PyTorchClassifier`` gives its network (:func:`art_wdat.attacks.estimator.forward_fn`,
unchanged). Every other ART classifier is presented through its public API:

* **gradient estimators** (``ClassGradientsMixin``: TensorFlow 2, Keras, scikit-learn's logistic regression, GPy,
  ensembles, ...): :class:`EstimatorScores`, a ``torch.autograd.Function`` whose forward calls ``predict`` on a numpy
  copy of the batch and whose backward is the vector-Jacobian product with ``class_gradient`` of every class. The
  Jacobian is per sample and per class, so the step normalisation by Υ does not depend on how an estimator scales its
  loss gradients (batch mean, per sample, divided by the number of classes). It is computed once per forward and
  kept: the ``autoattack`` package's FAB runs one backward per class on one forward, for one ``class_gradient``.
* **predict-only estimators** (``BlackBoxClassifier``, scikit-learn trees, forests and other ensembles, XGBoost,
  LightGBM, CatBoost, scikit-learn's SVC, and anything without ``ClassGradientsMixin``): the same forward, whose
  backward refuses. They get verification, scoring and the decision-based flip-cost solvers; the gradient methods
  refuse them (:func:`methods_for`). An estimator with ``loss_gradient`` alone is treated as predict-only: its loss
  is not known to be the cross-entropy of the scores, and the decision-based solvers need no gradient.

**Scores.** Where ``predict`` returns class probabilities (scikit-learn's logistic regression; a TensorFlow or Keras
model ending in a softmax), the scores are their logarithms, centred (minus their mean over the classes): the
log-probabilities of a softmax model differ from its logits by one constant per input, so these scores are its
logits in the gauge where they sum to 0, and margins, DLR and cross-entropy are those of the logits, where
probabilities would saturate. (Centred, their largest magnitude is about half the range of the log-probabilities,
which keeps the flip-cost verification's tolerance, relative to it, as small as for logits: the measured median
cost is 0.3% above the exact one on a logistic regression, 0.55% without centring.) Otherwise the scores are
``predict``'s outputs: logits, or for a predict-only estimator whatever it returns (probabilities, vote shares,
one-hot labels), whose margins the verification reads as they are. Their Jacobian follows from
``class_gradient`` by the chain rule, where needed: scikit-learn's multi-class ``LogisticRegression`` differentiates
log p already (its binary case and other estimators differentiate their outputs), and ART 1.20's
``TensorFlowV2Classifier.class_gradient(label=None)`` differentiates with respect to the preprocessed input (without
the standardisation's 1/std), so its classes are asked one by one (``label=i``), at the same cost. Postprocessors
(``ReverseSigmoid``, ``HighConfidence``, ...) are not applied to the scores, as ART's gradient attacks ignore them.
Scores are float32; probabilities below the smallest normal float32 count as that number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from art_wdat.attacks import estimator as est
from art_wdat.core.precision import check_amp

Forward = Callable[[torch.Tensor], torch.Tensor]
#: How the attack reaches an estimator: its torch network, its ``predict`` and ``class_gradient``, or ``predict``.
Kind = Literal["torch", "gradients", "predict"]
#: The attack's methods that need gradients (the others run on every classifier).
GRADIENT_METHODS = ("wpgd", "budget")
#: Row sums of ``predict`` within this of 1 (and values in [0, 1]) read as class probabilities.
PROBABILITY_ATOL = 1e-3


def is_pytorch(estimator: object) -> bool:
    """Whether ``estimator`` is an ART ``PyTorchClassifier`` (the torch path)."""
    from art.estimators.classification import PyTorchClassifier

    return isinstance(estimator, PyTorchClassifier)


def kind_of(estimator: object) -> Kind:
    """How the attack reaches ``estimator`` (module docstring): "torch", "gradients" or "predict"."""
    from art.estimators.classification.classifier import ClassGradientsMixin

    if is_pytorch(estimator):
        return "torch"
    if isinstance(estimator, ClassGradientsMixin) and not _hard_labels(estimator):
        return "gradients"
    return "predict"


def _hard_labels(estimator: object) -> bool:
    """scikit-learn's SVC: ``predict`` returns one-hot labels (or Platt probabilities), while ``class_gradient``
    differentiates decision values that ``predict`` never returns, so no score matches its gradient."""
    from art.estimators.classification.scikitlearn import ScikitlearnSVC

    return isinstance(estimator, ScikitlearnSVC)


def methods_for(estimator: object) -> tuple[str, ...]:
    """The attack's methods that can run on ``estimator``: all four, or "knapsack" and "auto" without gradients."""
    from art_wdat.attacks.spec import METHODS

    if kind_of(estimator) == "predict":
        return tuple(m for m in METHODS if m not in GRADIENT_METHODS)
    return METHODS


def check_capabilities(estimator: object, *, method: str, min_norm: str | None, amp: object) -> None:
    """ValueError naming the parameter when ``method``, ``min_norm`` or ``amp`` needs what ``estimator`` lacks:
    gradients (the step methods, the gradient flip-cost solvers), or a torch model (``amp``)."""
    from art_wdat.attacks.flip_costs import MIN_NORM_METHODS, is_decision

    kind, name = kind_of(estimator), type(estimator).__name__
    if method not in methods_for(estimator):
        raise ValueError(f"`method`={method!r} needs gradients, which {name} does not provide (no class_gradient); "
                         f"the methods that run on it: {', '.join(map(repr, methods_for(estimator)))}.")
    if kind == "predict" and min_norm is not None and not is_decision(min_norm):
        raise ValueError(f"`min_norm`={min_norm!r} needs gradients, which {name} does not provide; use a "
                         f"decision-based chain: {', '.join(repr(m) for m in MIN_NORM_METHODS if is_decision(m))}.")
    if kind != "torch" and amp is True:
        raise ValueError(f"`amp`=True runs a PyTorch model under autocast; {name} is not a PyTorchClassifier.")
    check_amp(amp, device_of(estimator))


def require_classifier(estimator: object, who: str) -> None:
    """TypeError unless ``estimator`` is an ART classifier (``BaseEstimator`` and ``ClassifierMixin``); a
    ``PyTorchClassifier`` must also have a preprocessing chain ART can run
    (:func:`~art_wdat.attacks.estimator.require_pytorch_classifier`)."""
    from art.estimators.classification.classifier import ClassifierMixin
    from art.estimators.estimator import BaseEstimator

    if not isinstance(estimator, BaseEstimator) or not isinstance(estimator, ClassifierMixin):
        raise TypeError(f"{who} needs an ART classifier as `estimator` (PyTorchClassifier, TensorFlowV2Classifier, "
                        f"SklearnClassifier, BlackBoxClassifier, ...), got {type(estimator).__name__}.")
    if is_pytorch(estimator):
        est.require_pytorch_classifier(estimator, who)


def device_of(estimator: object) -> torch.device:
    """Where the attack's tensors live: the ``PyTorchClassifier``'s device, the CPU for every other estimator (their
    batches go through numpy)."""
    return est.device_of(estimator) if is_pytorch(estimator) else torch.device("cpu")


def eval_mode(estimator: object) -> contextlib.AbstractContextManager:
    """The torch network in eval mode for the attack (:func:`~art_wdat.attacks.estimator.eval_mode`); other
    estimators predict in inference mode already."""
    return est.eval_mode(estimator) if is_pytorch(estimator) else contextlib.nullcontext()


@contextlib.contextmanager
def _without_postprocessing(estimator: Any) -> Iterator[None]:
    """``predict`` without the estimator's postprocessors, restored after (ART has no switch for it)."""
    defences = estimator.postprocessing_defences
    estimator.postprocessing_defences = None
    try:
        yield
    finally:
        estimator.postprocessing_defences = defences


@dataclass(frozen=True)
class ScoreRule:
    """How scores and their Jacobian come from an estimator's ``predict`` and ``class_gradient``.

    :ivar log: The scores are log ``predict`` (``predict`` returns probabilities).
    :ivar gradient_of_log: ``class_gradient`` differentiates log ``predict`` already (no chain rule).
    :ivar per_class: Ask ``class_gradient`` one class at a time (``label=i``) rather than all at once.
    """

    log: bool
    gradient_of_log: bool = False
    per_class: bool = False


def score_rule(estimator: Any, outputs: np.ndarray) -> ScoreRule:
    """The :class:`ScoreRule` of ``estimator``, whose ``predict`` returned ``outputs`` on some inputs.

    A predict-only estimator keeps its outputs as scores: the decision-based solvers read labels, and the
    verification's margin is then one of probabilities (a forest's vote shares), which a logarithm would distort.
    """
    from art.estimators.classification.scikitlearn import ScikitlearnClassifier, ScikitlearnLogisticRegression
    from art.estimators.classification.tensorflow import TensorFlowV2Classifier

    if kind_of(estimator) != "gradients":
        return ScoreRule(log=False)
    if isinstance(estimator, ScikitlearnClassifier):
        # predict is predict_proba, or predict_log_proba with use_logits (already log-probabilities).
        logits = bool(getattr(estimator, "_use_logits", False))
        multinomial = isinstance(estimator, ScikitlearnLogisticRegression) and estimator.nb_classes > 2
        return ScoreRule(log=not logits, gradient_of_log=multinomial)
    return ScoreRule(log=_are_probabilities(outputs), per_class=isinstance(estimator, TensorFlowV2Classifier))


def _are_probabilities(outputs: np.ndarray) -> bool:
    """Whether every row of ``outputs`` lies in [0, 1] and sums to 1 (a softmax's output)."""
    if outputs.size == 0:
        return False
    in_range = bool((outputs >= 0).all() and (outputs <= 1).all())
    return in_range and bool(np.allclose(outputs.sum(axis=1), 1.0, atol=PROBABILITY_ATOL))


class EstimatorScores:
    """The :data:`Forward` of an estimator other than a ``PyTorchClassifier``: ``predict`` forward, the
    vector-Jacobian product with ``class_gradient`` backward (module docstring).

    :param estimator: The ART classifier.
    :param batch_size: Inputs per ``predict`` and ``class_gradient`` call.
    :ivar gradients: Whether it has class gradients; without, a backward pass raises TypeError.
    :ivar queries: Inputs sent to ``predict`` so far (each a query of the model).
    :ivar gradient_queries: Inputs sent to ``class_gradient`` so far.
    """

    def __init__(self, estimator: Any, batch_size: int = 128) -> None:
        self.estimator, self.batch_size = estimator, batch_size
        self.gradients = kind_of(estimator) == "gradients"
        self._rule: ScoreRule | None = None
        self.queries = 0
        self.gradient_queries = 0

    @property
    def rule(self) -> ScoreRule:
        """How outputs become scores (:func:`score_rule`), read from the first outputs seen and fixed after."""
        if self._rule is None:
            raise RuntimeError("The score rule is read from the estimator's first outputs; call it on inputs first.")
        return self._rule

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Scores.apply(x, self)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """``predict`` without postprocessing, as float64 (N, nb_classes)."""
        self.queries += x.shape[0]
        with _without_postprocessing(self.estimator):
            out = np.asarray(self.estimator.predict(x, batch_size=self.batch_size), dtype=np.float64)
        if out.shape != (x.shape[0], self.estimator.nb_classes):
            raise ValueError(f"The estimator's predict returned shape {out.shape} for {x.shape[0]} inputs; the attack "
                             f"needs (N, nb_classes={self.estimator.nb_classes}).")
        if self._rule is None and out.shape[0]:
            self._rule = score_rule(self.estimator, out)
        return out

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """The scores of ``outputs`` (centred log-probabilities, or the outputs themselves), float64."""
        if not self.rule.log:
            return outputs
        logs = np.log(np.maximum(outputs, _TINY))
        return logs - logs.mean(axis=1, keepdims=True)

    def jacobian(self, x: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """d scores / d x at ``x`` (whose outputs are ``outputs``), shape ``(N, nb_classes, *input_shape)``, float64."""
        if not self.gradients:
            raise TypeError(f"{type(self.estimator).__name__} has no class gradients: only the methods without "
                            "gradients ('knapsack', 'auto') run on it.")
        self.gradient_queries += x.shape[0]
        classes = range(self.estimator.nb_classes)
        if self.rule.per_class:
            jac = np.concatenate([np.asarray(self.estimator.class_gradient(x, label=k)) for k in classes], axis=1)
        else:
            jac = np.asarray(self.estimator.class_gradient(x))
        jac = jac.reshape(x.shape[0], len(classes), *x.shape[1:]).astype(np.float64)
        if not self.rule.log:
            return jac
        if not self.rule.gradient_of_log:
            # d log p = dp / p; where p underflowed, dp did too.
            jac = jac / np.maximum(outputs, _TINY).reshape(*outputs.shape, *([1] * (x.ndim - 1)))
        return jac - jac.mean(axis=1, keepdims=True)


_TINY = float(np.finfo(np.float32).tiny)


class _Scores(torch.autograd.Function):
    """``predict`` forward; backward: grad_scores · Jacobian, the Jacobian computed on the first backward and kept."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scores: EstimatorScores) -> torch.Tensor:
        x_np = np.ascontiguousarray(x.detach().cpu().numpy())
        outputs = scores.outputs(x_np)
        ctx.scores, ctx.x_np, ctx.outputs, ctx.jacobian = scores, x_np, outputs, None
        return torch.from_numpy(scores.scores(outputs).astype(np.float32)).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.jacobian is None:
            # Autograd runs backward() with grad mode off; an estimator built on torch needs it for class_gradient.
            with torch.enable_grad():
                ctx.jacobian = ctx.scores.jacobian(ctx.x_np, ctx.outputs)
        g = grad.detach().cpu().numpy().astype(np.float64)
        vjp = np.einsum("nk,nk...->n...", g, ctx.jacobian)
        return torch.from_numpy(vjp).to(device=grad.device, dtype=grad.dtype), None


def forward_fn(estimator: Any, x: np.ndarray | None = None, batch_size: int = 128) -> Forward:
    """The :data:`Forward` the attack runs on ``estimator``: the network of a ``PyTorchClassifier``
    (:func:`~art_wdat.attacks.estimator.forward_fn`), :class:`EstimatorScores` for any other classifier.

    :param x: The attack's inputs (float32 numpy), from which a non-torch estimator's score rule is read (one query
        each, counted); None: from the first inputs it is called on.
    """
    if is_pytorch(estimator):
        return est.forward_fn(estimator)
    scores = EstimatorScores(estimator, batch_size)
    if x is not None and x.shape[0]:
        scores.outputs(np.ascontiguousarray(x, dtype=np.float32))
    return scores
