"""``WassersteinDistributionalAttack``: W-FGSM, W-PGD and W-PGD-Budget as an ART evasion attack.

Numpy comes in once and goes out once; in between everything runs in torch on the estimator's device
(:mod:`art_wdat.core.engine`). The budget is shared by **all** of ``x`` given to :meth:`generate`, whatever
``batch_size`` is: batches only bound the memory of one forward/backward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from art_wdat.attacks import bridge
from art_wdat.attacks import estimator as est
from art_wdat.attacks.auto import FlipCostCache
from art_wdat.attacks.bridge import Forward
from art_wdat.attacks.flip_costs import MIN_NORM_METHODS, MinNormMethod
from art_wdat.attacks.result import AttackResult
from art_wdat.attacks.search import FlipCostSearch
from art_wdat.attacks.spec import STEP_METHODS, Method, NormLike, ThreatKeywords, ThreatSpec
from art_wdat.core.engine import AttackConfig, AttackTrace, Clip, run_distribution_attack
from art_wdat.core.losses import LossFn, for_classes, resolve_loss
from art_wdat.core.reduce import ProcessGroupLike, Reducer, default_reducer
from art_wdat.validation import check_int, check_labels, check_x, in_caller_dtype

if TYPE_CHECKING:
    from art.estimators.classification.classifier import Classifier

__all__ = ["AttackResult", "WassersteinDistributionalAttack"]

logger = logging.getLogger(__name__)

Start = Callable[[torch.Tensor], torch.Tensor]


class WassersteinDistributionalAttack(FlipCostSearch, ThreatKeywords, EvasionAttack):
    """Wasserstein distributional attack (Bai, He, Jiang, Obłój, NeurIPS 2023; W-PGD-Budget from 2025).

    Finds x' with C(x', x) = ((1/N) Σ ‖x'_i − x_i‖_r^p)^(1/p) ≤ eps that maximises the mean loss:
    one budget for the whole data set, spent where the loss gains most. ``p = inf`` is the pointwise
    threat and then W-PGD is ART's PGD; W-FGSM is ``max_iter=1``.

    Any ART classifier: a ``PyTorchClassifier`` runs in torch on its device; any other estimator with class gradients
    (TensorFlow, Keras, scikit-learn's logistic regression, ...) runs every method through its ``predict`` and
    ``class_gradient``; a predict-only estimator (a ``BlackBoxClassifier``, trees and forests, XGBoost, LightGBM,
    CatBoost) runs "knapsack" and "auto", with decision-based flip-cost solvers (:mod:`art_wdat.attacks.bridge`).

    | Paper link: https://arxiv.org/abs/2306.09844 and https://arxiv.org/abs/2502.09352
    """

    attack_params = EvasionAttack.attack_params + [
        "eps", "p", "norm", "method", "max_iter", "eps_step", "loss", "num_random_init", "targeted",
        "batch_size", "keep_best", "budget_rounds", "min_norm", "process_group", "max_device_bytes", "verbose",
        "allow_large_eps", "amp", "max_queries", "refine",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(
        self,
        estimator: Classifier,
        eps: float = 0.3,
        p: float = 2.0,
        norm: NormLike = np.inf,
        *,
        method: Method = "wpgd",
        max_iter: int = 50,
        eps_step: float | None = None,
        loss: str | LossFn = "redlr",
        num_random_init: int = 0,
        targeted: bool = False,
        batch_size: int = 32,
        keep_best: bool = True,
        budget_rounds: int = 10,
        min_norm: MinNormMethod | None = None,
        process_group: ProcessGroupLike = None,
        max_device_bytes: int | None = None,
        verbose: bool = True,
        allow_large_eps: bool = False,
        amp: bool = False,
        max_queries: int | None = None,
        refine: bool = True,
        flip_cost_cache: FlipCostCache | None = None,
    ) -> None:
        """
        :param estimator: An ART classifier. A ``PyTorchClassifier``'s PyTorch preprocessing is differentiated by
                          autograd, a numpy defence gets ART's BPDA gradient (see :mod:`art_wdat.attacks.estimator`);
                          other estimators are reached through their public API (:mod:`art_wdat.attacks.bridge`):
                          every method with class gradients, "knapsack" and "auto" with ``predict`` alone.
        :param eps: The Wasserstein budget δ ≥ 0, in the units of the ground norm.
        :param p: Wasserstein order in [1, inf]. ``inf`` is the pointwise threat (PGD); 2 is the papers' default.
        :param norm: Ground norm on inputs: ``np.inf``/"inf", 2 or 1.
        :param method: "wpgd" (steepest ascent of the whole distribution), "budget" (W-PGD-Budget: allocate
                       δ_i from the sensitivity, then pointwise PGD in each input's own ball), "knapsack" (flip the
                       inputs of smallest verified flip cost first, then W-PGD with what is left) or "auto"
                       (W-AutoAttack: the strongest of the three, and at p = inf of the ``autoattack`` package's
                       APGD-CE + APGD-DLR at ε = eps; see :mod:`art_wdat.attacks.auto`). "knapsack" and
                       "auto" need ``clip_values`` (0, 1) and labels, and are untargeted; they are the methods of a
                       predict-only estimator ("auto" is then the knapsack, without the leftover's W-PGD).
        :param max_iter: Number of steps; 1 is W-FGSM.
        :param eps_step: Step size α of each iteration (for "budget": α·δ_i/eps per input; for the W-PGD that
                         spends the knapsack's leftover: α·r/eps in its ball of radius r). Default
                         ``1.875 · eps / max_iter``.
        :param loss: "redlr" (default, spends nothing on inputs already lost), "dlr", "ce", "margin", "remargin",
                     "kl" (labels are then clean class probabilities) or a callable
                     ``(logits, labels) -> per-sample losses``. On a model with 2 classes "dlr" and "redlr" are their
                     2-class forms "margin" and "remargin" (DLR needs a third class).
        :param num_random_init: Random starts inside the pointwise ball of radius eps; 0 starts at x. The best
                                iterate over all starts is returned. For "knapsack" and "auto" they are the
                                starts of every W-PGD and W-PGD-Budget run (the leftover's W-PGD in the pointwise
                                ball of its own radius); the flip-cost solvers and "auto"'s APGD keep their own
                                seeded starts.
        :param targeted: Reach the classes in ``y`` instead of leaving them (needs ``y``; "ce" or a callable).
        :param batch_size: Inputs per forward/backward pass. Does not change the result.
        :param keep_best: Return the best iterate of the whole distribution (fewest correct, then highest loss);
                          ``False`` returns the last iterate, as ART's PGD does.
        :param budget_rounds: For "budget": number of (re-)allocations of the per-input budgets, spread evenly
                              over the iterations.
        :param min_norm: The per-input minimum-norm solver behind the flip costs of "knapsack" and "auto" (see
                         :mod:`art_wdat.attacks.flip_costs`): solvers joined by "+", each input keeping the
                         cheapest verified cost of any: "fab+fmn-t+apgd" (the default under ℓ∞ and ℓ2, the strongest
                         measured: FAB and FMN targeted at the 3 likeliest other classes, then the APGD bisection from
                         the cheaper), "fab+fmn-t" (the default at ℓ1, where the APGD bisection does not run),
                         "fab+fmn+apgd", "fab+fmn", "fab+apgd", "fab+apgd+fmn", "fmn", "fab",
                         "fab-t" or "apgd"; in a box with per-feature bounds "fab+fmn-t+apgd" ("fab+fmn-t" at ℓ1); for a
                         predict-only estimator, the decision-based chains ("rays+rays-t+refine" at ℓ∞,
                         "rays+hsja-t+refine" at ℓ2 and ℓ1 by default; they also run on any other estimator). None:
                         the default for the ground norm, the box and the estimator
                         (:func:`~art_wdat.attacks.flip_costs.default_min_norm`).
        :param process_group: ``torch.distributed`` group whose ranks' inputs form one distribution; default: the
                              world group when torch.distributed is initialised; ``False`` forces a local attack.
        :param max_device_bytes: Device memory the attack's copies of x may take (x, x_adv, gradients, best
                                 iterate: about 6 × x's float32 size). Beyond it, they stay in pinned host memory
                                 and batches are streamed to the device; the result is the same. Default: half
                                 of the free memory on CUDA, unlimited on CPU. Only for "wpgd" and "budget": the
                                 flip-cost solvers of "knapsack" and "auto" keep their inputs on the device, and
                                 a value set with those methods is refused (ValueError) rather than ignored.
        :param verbose: Show a progress bar.
        :param allow_large_eps: Accept an ``eps`` beyond the box ``clip_values`` (ℓ∞: half its range; ℓ2, ℓ1: its
                                diameter), which is refused by default as a budget on the wrong scale (8 for 8/255).
        :param amp: Run the model's passes of W-PGD and W-PGD-Budget (also those inside "knapsack" and "auto") under
                    bf16 autocast on the estimator's device (CUDA or CPU), with 4-D inputs in ``channels_last`` on
                    CUDA. The iterates, steps, costs and budgets stay float32/float64, so C(x_adv, x) ≤ eps holds
                    exactly; the returned distribution is chosen and counted by float32 forward passes, so
                    ``last_result_``'s returned accuracy is never below the float32 one (its intermediate
                    iterates' numbers are the bf16 passes'). The flip-cost solvers and the scores of "auto" stay
                    float32.
        :param max_queries: The decision-based flip-cost solvers' budget: rows passed to the model per input,
                            verification included (None: their default, 5,000). Reported per input in
                            ``last_result_.flip_cost_queries``.
        :param refine: For "knapsack" and "auto": re-solve, harder, the flip costs of the few inputs near the
                       knapsack's threshold at this budget, where they decide the answer
                       (:func:`~art_wdat.attacks.threshold.refine_near_threshold`); ``last_result_.flip_costs`` are
                       then these. Models with gradients only (a predict-only model's ``max_queries`` is a cap
                       per input); under torch.distributed the thresholds are those of all ranks' inputs.
        :param flip_cost_cache: Where "knapsack" and "auto" keep their flip costs: pass one cache to several attacks
                                (e.g. one per budget or per p, as :func:`~art_wdat.evaluation.evaluate` does) to
                                compute the costs of the same model and inputs once. Default: this attack's own.
                                Not an ART attack parameter: it holds no setting of the attack.
        :raises ValueError: also when the model does not return ``nb_classes`` outputs (one forward pass of a
                            ``PyTorchClassifier``'s network here; other estimators are checked at ``generate``), and
                            when ``method`` needs gradients that the estimator lacks.
        :raises TypeError: when ``estimator`` is not an ART classifier.
        """
        bridge.require_classifier(estimator, type(self).__name__)
        super().__init__(estimator=estimator)
        self.eps = eps
        self.p = p
        self.norm = norm
        self.method = method
        self.max_iter = max_iter
        self.eps_step = eps_step
        self.loss = loss
        self.num_random_init = num_random_init
        self.targeted = targeted
        self.batch_size = batch_size
        self.keep_best = keep_best
        self.budget_rounds = budget_rounds
        self.min_norm = min_norm
        self.process_group = process_group
        self.max_device_bytes = max_device_bytes
        self.verbose = verbose
        self.allow_large_eps = allow_large_eps
        self.amp = amp
        self.max_queries = max_queries
        self.refine = refine
        self.last_result_: AttackResult | None = None
        self._flip_costs = flip_cost_cache if flip_cost_cache is not None else FlipCostCache()
        self._check_params()
        if bridge.is_pytorch(estimator):
            est.check_nb_classes(estimator, type(self).__name__)

    # -- configuration ----------------------------------------------------------------------------------
    def _check_params(self) -> None:
        """Check every parameter: the threat's through its ThreatSpec, then the attack's own."""
        self.check_threat()
        self.check_eps_plausible(self.estimator.clip_values, self.estimator.input_shape)
        check_int("batch_size", self.batch_size, low=1)
        check_int("num_random_init", self.num_random_init, low=0)
        if self.max_device_bytes is not None:
            check_int("max_device_bytes", self.max_device_bytes, low=0)
            if self.method not in STEP_METHODS:
                raise ValueError(f"`max_device_bytes` is for the step methods {STEP_METHODS}: `method`="
                                 f"{self.method!r} keeps its inputs on the device for the flip-cost solvers. "
                                 "Leave it at None.")
        bridge.check_capabilities(self.estimator, method=self.method, min_norm=self.min_norm, amp=self.amp)
        resolve_loss(self.loss)
        for flag in ("targeted", "keep_best", "verbose", "refine"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"`{flag}` must be a bool, got {getattr(self, flag)!r}.")
        if self.targeted and isinstance(self.loss, str) and self.loss.lower() != "ce":
            raise ValueError(f"A targeted attack needs `loss`='ce' or a callable, got {self.loss!r}.")
        if self.min_norm is not None and self.min_norm not in MIN_NORM_METHODS:
            raise ValueError(f"`min_norm` must be one of {MIN_NORM_METHODS}, got {self.min_norm!r}.")
        if self.max_queries is not None:
            check_int("max_queries", self.max_queries, low=1)
        if self.method not in STEP_METHODS and (self.targeted or _is_kl(self.loss)):
            raise ValueError(f"`method`={self.method!r} is untargeted and needs class labels: not with targeted=True "
                             "or loss='kl'.")

    def config(self, batch_size: int | None = None, threat: ThreatSpec | None = None) -> AttackConfig:
        """The engine's settings of this attack, or of ``threat`` with this attack's loss, batches and precision."""
        loss = resolve_loss(for_classes(self.loss, self.estimator.nb_classes))
        return (threat or self.threat).config(loss, batch_size or self.batch_size,
                                              targeted=self.targeted, keep_best=self.keep_best, amp=self.amp)

    def reducer(self) -> Reducer:
        """Reductions over the whole distribution (across ranks under torch.distributed)."""
        return default_reducer(self.process_group)

    # -- the attack ---------------------------------------------------------------------------------------
    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Attack the whole of ``x`` as one distribution and return x_adv in ``x``'s dtype.

        :param x: Inputs of shape ``(N, *input_shape)``, inside the estimator's ``clip_values``. Not modified.
        :param y: Labels as indices (N,) or one-hot (N, nb_classes); the target classes if ``targeted``.
                  ``None`` uses the model's predictions (untargeted only). For ``loss="kl"``: clean class
                  probabilities (N, nb_classes). Not modified.
        :return: The adversarial inputs, with C(x_adv, x) ≤ eps.
        """
        self._check_params()
        x = check_x(x, self.estimator.input_shape, self.estimator.clip_values)
        target = self._targets(x, y)
        if x.shape[0] == 0 and not self.reducer().world_size > 1:
            return x.copy()
        if self.eps == 0:
            self.last_result_ = None
            return x.copy()
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        x_t, x_adv_t, res = self._attack(x32, target)
        self.last_result_ = res
        logger.info("%s (p=%s, norm=%s, eps=%.4g): accuracy %.4f -> %.4f, cost %.4g", res.method, self.p, self.norm,
                    self.eps, res.accuracy[0], res.accuracy[res.best_iteration], res.cost)
        return in_caller_dtype(x, x32, x_adv_t.cpu().numpy(), self.estimator.clip_values)

    def _attack(self, x32: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, AttackResult]:
        """Attack ``x32``; return x and x_adv as tensors (where the attack kept them) and what it found."""
        device = bridge.device_of(self.estimator)
        # Streaming serves the engine's loop; the knapsack's solvers keep their inputs on the device.
        storage = self._storage_device(device, x32.nbytes) if self.method in STEP_METHODS else device
        x_t = torch.from_numpy(x32.copy())
        x_t = x_t.pin_memory() if storage != device and device.type == "cuda" else x_t.to(storage)
        clip = est.clip_box(self.estimator, storage)
        target_t = torch.from_numpy(target).to(device)
        forward = bridge.forward_fn(self.estimator, x32, self.batch_size)
        with bridge.eval_mode(self.estimator):
            if self.method not in STEP_METHODS:
                x_adv_t, result = self._search(forward, x_t, target_t, clip)
            else:
                x_adv_t, trace = self._engine(forward, x_t, target_t, self.threat, clip, device)
                result = self._result(x_t, x_adv_t, trace, self.method)
        queries = getattr(forward, "queries", None)
        result.queries = None if queries is None else queries / max(x32.shape[0], 1)
        return x_t, x_adv_t, result

    def _engine(self, forward: Forward, x: torch.Tensor, target: torch.Tensor, threat: ThreatSpec,
                clip: Clip | None, device: torch.device) -> tuple[torch.Tensor, AttackTrace]:
        """The engine's loop for a step method ("wpgd" or "budget") of ``threat``, with this attack's settings."""
        start = _clipped(threat.ball.random_start if self.num_random_init > 0 else None, clip)
        return run_distribution_attack(forward, x, target, self.config(threat=threat),
                                       start=start, restarts=max(1, self.num_random_init), clip=clip,
                                       reducer=self.reducer(), verbose=self.verbose, device=device)

    def _storage_device(self, device: torch.device, x_bytes: int) -> torch.device:
        """Where x and its companions live: on the device if they fit in ``max_device_bytes``, else the host."""
        limit = self.max_device_bytes
        if limit is None:
            limit = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else None
        if limit is None or 6 * x_bytes <= limit:
            return device
        logger.info("Streaming: %.1f MB of inputs exceed max_device_bytes=%d; keeping them in host memory.",
                    x_bytes / 2**20, limit)
        return torch.device("cpu")

    def _targets(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        """Class indices (int64) or, for the KL loss, clean probabilities (float32) for every input."""
        if isinstance(self.loss, str) and self.loss.lower() == "kl":
            if not isinstance(y, np.ndarray) or y.shape != (x.shape[0], self.estimator.nb_classes):
                raise ValueError("`y` must hold clean class probabilities of shape (N, nb_classes) for loss='kl'.")
            return np.ascontiguousarray(y, dtype=np.float32)
        labels = check_labels(y, x.shape[0], self.estimator.nb_classes)
        if labels is not None:
            return labels
        if self.targeted:
            raise ValueError("`y` (the target classes) is required for a targeted attack.")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return self.estimator.predict(x.astype(np.float32), batch_size=self.batch_size).argmax(axis=1)

    def _result(self, x: torch.Tensor, x_adv: torch.Tensor, trace: AttackTrace, method: str) -> AttackResult:
        ball, reducer = self.ball, self.reducer()
        # In float64, where the difference of two float32 values is exact: a float32 one rounds up to an ulp past
        # eps (the cost reported 0.1000000015 for a returned 0.0999999996 at p = ∞).
        delta = x_adv.double() - x.double()
        return AttackResult(
            cost=float(ball.cost(delta, reducer)), eps=float(self.eps), sensitivity=trace.sensitivity,
            perturbation_norms=ball.ground_norms(delta).cpu().numpy(),
            budgets=None if trace.budgets is None else trace.budgets.cpu().numpy(),
            accuracy=[v if self.targeted else 1.0 - v for v in trace.success_rate], loss=trace.loss,
            best_iteration=trace.best_iteration, best_restart=trace.best_restart, method=method, p=float(ball.p),
            norm=float(ball.norm))


def _is_kl(loss: str | LossFn) -> bool:
    return isinstance(loss, str) and loss.lower() == "kl"


def _clipped(start: Start | None, clip: Clip | None) -> Start | None:
    """Wrap a random start so that it lands inside the clip box."""
    if start is None or clip is None:
        return start
    return lambda x: start(x).clamp_(clip[0], clip[1])
