"""The held-out measurement of a fine-tune: clean, pointwise and W-AutoAttack accuracy on a validation split.

What is measured (:class:`HeldOutJudge`), on inputs never trained on:

* clean accuracy;
* W-AutoAttack (``method="auto"``) at the training budget δ and the selection's order p (``select_p``, default the
  training p), and at the report's other budgets (δ/2 and 2δ); one attack object serves every budget, so the flip
  costs of an epoch are computed once;
* pointwise robustness at ε (``pointwise_eps``) in the ground norm. By default ("min-norm") from those same flip
  costs: an input's verified flip cost is the norm of the smallest perturbation the minimum-norm solvers found to
  flip it, so the fraction of inputs whose cost exceeds ε is the accuracy of that minimum-norm attack at ε, for no
  attack run of its own. "autoattack" runs APGD-CE + APGD-T of the ``autoattack`` package instead (its "custom"
  version), at the cost of those runs.

The judge works wherever the trainer does: a budget beyond the input box's limit (``eps_limit``) is left out of the
report with a note (the selection budget δ, which the trainer accepted, always runs); models with 2 classes are
attacked with the ReMargin loss (ReDLR needs 3); a row that cannot run (the package's AutoAttack outside the box
[0, 1]) is left out with its reason in :attr:`HeldOutJudge.notes`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from art_wdat.attacks.auto import FlipCostCache
from art_wdat.attacks.autoattack import PackageAutoAttack
from art_wdat.attacks.flip_costs import MinNormMethod
from art_wdat.attacks.spec import eps_limit
from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.core.knapsack import robust_accuracy_curve
from art_wdat.training.checkpoint import capture_rng, restore_rng, seed_everything
from art_wdat.training.selection import AUTOATTACK, CLEAN, MIN_NORM, WAUTO, wauto_key
from art_wdat.validation import check_int

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger(__name__)

#: How the pointwise row is measured: from W-AutoAttack's flip costs, or by the autoattack package.
PointwiseAttack = Literal["min-norm", "autoattack"]
POINTWISE_ATTACKS: tuple[str, ...] = get_args(PointwiseAttack)


@dataclass(frozen=True)
class HeldOutPlan:
    """How the held-out split is attacked.

    :param eps: The training budget δ: W-AutoAttack's budget that selection ranks by.
    :param p: Wasserstein order of W-AutoAttack (the selection's p).
    :param norm: Ground norm (also the pointwise row's).
    :param pointwise_eps: The pointwise row's ε.
    :param budgets: Every budget W-AutoAttack is reported at (δ included).
    :param aa_iter: Iterations of each APGD run of the package's AutoAttack (``pointwise="autoattack"``).
    :param auto_iter: Iterations of W-AutoAttack's W-PGD parts (its flip costs are parameter-free).
    :param batch_size: Inputs per forward pass.
    :param seed: Every attack's seed, so that two epochs are judged by the same draws.
    :param pointwise: "min-norm" (from W-AutoAttack's flip costs, free) or "autoattack" (the package's APGD-CE +
                      APGD-T).
    :param min_norm: W-AutoAttack's flip-cost solver (its ``min_norm``); None: the attack's default.
    :param refine: W-AutoAttack's ``refine``: the flip costs near the knapsack's thresholds re-solved harder, once
                   for every budget at the selection's p and for the pointwise row's ε (at p = ∞).
    """

    eps: float
    p: float
    norm: float
    pointwise_eps: float
    budgets: tuple[float, ...] = ()
    aa_iter: int = 20
    auto_iter: int = 20
    batch_size: int = 256
    seed: int = 0
    pointwise: PointwiseAttack = "min-norm"
    min_norm: MinNormMethod | None = None
    refine: bool = True

    def __post_init__(self) -> None:
        check_int("aa_iter", self.aa_iter, low=1)
        check_int("auto_iter", self.auto_iter, low=1)
        check_int("batch_size", self.batch_size, low=1)
        if self.pointwise not in POINTWISE_ATTACKS:
            raise ValueError(f"`val_pointwise` must be one of {POINTWISE_ATTACKS}, got {self.pointwise!r}.")

    @property
    def all_budgets(self) -> tuple[float, ...]:
        """The reported budgets, δ among them, in increasing order."""
        return tuple(sorted({*self.budgets, self.eps}))


class HeldOutJudge:
    """Measures a classifier on its held-out split (labels as indices).

    :param classifier: The ART classifier being fine-tuned (measured in eval mode, as it is at that moment).
    :param x: Held-out inputs inside its box.
    :param y: Their labels.
    :param plan: The attacks' settings.
    :ivar budgets: The W-AutoAttack budgets measured (the plan's, less those beyond the box).
    :ivar notes: What is left out of the measurement, and why.
    :ivar last_seconds: Wall time of the last measurement's parts: "clean", "pointwise" (the package's AutoAttack;
        0 for the minimum-norm row), "flip_costs", "wauto" (W-AutoAttack at every budget, the flip costs excluded)
        and "total".
    :ivar last_flip_costs: The flip costs of the last measurement (None if no budget was positive).
    """

    def __init__(self, classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, plan: HeldOutPlan) -> None:
        self.classifier, self.x, self.y, self.plan = classifier, x, y, plan
        self.notes: list[str] = []
        self.last_seconds: dict[str, float] = {}
        self.last_flip_costs: np.ndarray | None = None
        self.budgets = self._budgets_in_the_box()
        # ReDLR needs a third class (DLR's z_(3)); the margin loss is its 2-class counterpart.
        self.loss = "redlr" if classifier.nb_classes >= 3 else "remargin"
        self.pointwise_key: str | None = MIN_NORM if plan.pointwise == "min-norm" else AUTOATTACK
        if plan.pointwise == "autoattack" and not _unit_box(classifier.clip_values):
            self.pointwise_key = None
            self.notes.append("No AutoAttack row: the autoattack package clips to [0, 1], and the classifier's "
                              f"clip_values are {classifier.clip_values}; val_pointwise='min-norm' measures any box.")

    def _budgets_in_the_box(self) -> tuple[float, ...]:
        """The plan's budgets, less the report's budgets beyond the box's limit (not δ: the trainer accepted it)."""
        plan, clf = self.plan, self.classifier
        kept, notes = budgets_in_box(plan.all_budgets, plan.eps, plan.norm, clf.clip_values, clf.input_shape)
        self.notes += notes
        return kept

    def describe(self) -> dict:
        """What makes two measurements comparable: the settings and a digest of the split (for resume checks)."""
        plan = self.plan
        digest = hashlib.sha1(np.ascontiguousarray(self.x).tobytes())
        digest.update(np.ascontiguousarray(self.y).tobytes())
        return {"eps": plan.eps, "select_p": plan.p, "norm": plan.norm, "pointwise_eps": plan.pointwise_eps,
                "val_pointwise": plan.pointwise, "eval_max_iter": plan.auto_iter, "validation_data": digest.hexdigest()}

    def measure(self) -> dict[str, float]:
        """Clean, pointwise and W-AutoAttack accuracy (at every budget) of the classifier now.

        The attacks are seeded; the global RNG states are put back afterwards, so that measuring does not change
        the training that follows.
        """
        rng, start = capture_rng(), time.perf_counter()
        self.last_seconds = dict.fromkeys(("clean", "pointwise", "flip_costs", "wauto"), 0.0)
        try:
            return self._measure()
        finally:
            restore_rng(rng)
            self.last_seconds["total"] = time.perf_counter() - start

    def _measure(self) -> dict[str, float]:
        plan, clf, seconds = self.plan, self.classifier, self.last_seconds
        start = time.perf_counter()
        logits = clf.predict(self.x, batch_size=plan.batch_size)
        seconds["clean"] = time.perf_counter() - start
        self.last_flip_costs = None
        if not np.isfinite(logits).all():
            # A diverged fine-tune (NaN or inf outputs): nothing to attack, and such an epoch must never be kept.
            logger.warning("The model returns non-finite logits on the held-out split: counted as 0 accuracy.")
            keys = [CLEAN, WAUTO, *map(wauto_key, self.budgets), *([self.pointwise_key] if self.pointwise_key else [])]
            return dict.fromkeys(keys, 0.0)
        correct = logits.argmax(axis=1) == self.y
        record = {CLEAN: float(np.mean(correct))}
        if self.pointwise_key == AUTOATTACK:
            seed_everything(plan.seed)
            aa = PackageAutoAttack(clf, eps=plan.pointwise_eps, norm=plan.norm, version="custom",
                                   max_iter=plan.aa_iter, batch_size=plan.batch_size, seed=plan.seed)
            record[AUTOATTACK] = self._accuracy(aa.generate(self.x, self.y))
            seconds["pointwise"] = time.perf_counter() - start - seconds["clean"]
        attack, costs, start = self.attack(), None, time.perf_counter()
        # One attack object, one cache, for every budget: the flip costs of this measurement are computed once.
        for delta in self.budgets:
            attack.set_params(eps=delta)
            seed_everything(plan.seed)
            record[wauto_key(delta)] = self._accuracy(attack.generate(self.x, self.y))
            result = attack.last_result_
            if result is not None:
                seconds["flip_costs"] += result.flip_cost_seconds
            if costs is None and result is not None and result.flip_costs is not None:
                costs = np.array(result.flip_costs, dtype=np.float64)
        seconds["wauto"] = time.perf_counter() - start - seconds["flip_costs"]
        self.last_flip_costs = costs
        record[WAUTO] = record[wauto_key(plan.eps)]
        if self.pointwise_key == MIN_NORM:
            record[MIN_NORM] = self._min_norm_accuracy(attack, costs, correct)
        return record

    def attack(self) -> WassersteinDistributionalAttack:
        """W-AutoAttack of the plan (at δ), not checking the budgets' scale again, with its own flip-cost cache: it
        refines the costs once near the thresholds of every budget and of the pointwise row's ε (at p = ∞), so that
        the minimum-norm row is as carefully solved where it is decided as W-AutoAttack is."""
        plan, cache = self.plan, FlipCostCache()
        thresholds = [(d, plan.p) for d in self.budgets if d > 0]
        if self.pointwise_key == MIN_NORM and plan.pointwise_eps > 0:
            thresholds.append((plan.pointwise_eps, math.inf))
        cache.plan(thresholds)
        return WassersteinDistributionalAttack(self.classifier, eps=plan.eps, p=plan.p, norm=plan.norm, method="auto",
                                               loss=self.loss, max_iter=plan.auto_iter, batch_size=plan.batch_size,
                                               min_norm=plan.min_norm, refine=plan.refine, process_group=False,
                                               verbose=False, allow_large_eps=True, flip_cost_cache=cache)

    def _min_norm_accuracy(self, attack: WassersteinDistributionalAttack, costs: np.ndarray | None,
                           correct: np.ndarray) -> float:
        """The accuracy of the minimum-norm attack at ε: inputs correct whose verified flip cost exceeds ε (the
        knapsack's accuracy at p = ∞, which flips every input of cost ≤ ε)."""
        eps = self.plan.pointwise_eps
        if eps == 0:
            return float(np.mean(correct))
        if costs is None:  # no positive W-AutoAttack budget: one pass for the costs alone
            attack.set_params(eps=eps)
            seed_everything(self.plan.seed)
            attack.generate(self.x, self.y)
            assert attack.last_result_ is not None and attack.last_result_.flip_costs is not None
            costs = np.array(attack.last_result_.flip_costs, dtype=np.float64)
            self.last_seconds["flip_costs"] += attack.last_result_.flip_cost_seconds
        self.last_flip_costs = costs
        return min_norm_accuracy(costs, correct, eps)

    def _accuracy(self, x: np.ndarray) -> float:
        pred = self.classifier.predict(x, batch_size=self.plan.batch_size).argmax(axis=1)
        return float(np.mean(pred == self.y))


def budgets_in_box(budgets: tuple[float, ...], eps: float, norm: float, clip_values: object,
                   input_shape: tuple[int, ...]) -> tuple[tuple[float, ...], list[str]]:
    """``budgets`` less those above the box's limit (:func:`~art_wdat.attacks.spec.eps_limit`), except ``eps``, the
    training budget the trainer accepted; and a note for each left out. No box (None): all of them."""
    if clip_values is None:
        return tuple(budgets), []
    limit, what = eps_limit(norm, clip_values, input_shape)
    kept = tuple(d for d in budgets if d <= limit or d == eps)
    notes = [f"W-AutoAttack at {d:.4g} is left out: it is above {limit:.4g}, {what}, where a budget "
             "reaches every point of the box." for d in sorted(set(budgets) - set(kept))]
    return kept, notes


def min_norm_accuracy(costs: np.ndarray, correct: np.ndarray, eps: float) -> float:
    """The accuracy at ε of the minimum-norm attack behind the flip ``costs`` (ground norm): the fraction of inputs
    classified correctly (``correct``) whose verified cost exceeds ε; the knapsack's accuracy at p = ∞."""
    curve = robust_accuracy_curve(torch.from_numpy(np.asarray(costs, dtype=np.float64)), math.inf, [eps],
                                  correct=torch.from_numpy(np.asarray(correct, dtype=bool)))
    return float(curve[0])


def _unit_box(clip: tuple | None) -> bool:
    """Whether ``clip`` is the box [0, 1] (the autoattack package's)."""
    return clip is not None and bool(np.all(np.asarray(clip[0]) == 0)) and bool(np.all(np.asarray(clip[1]) == 1))
