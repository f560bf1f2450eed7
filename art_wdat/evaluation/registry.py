"""The attacks the side-by-side evaluation compares, and how each is configured, built and run.

Pointwise: ART ``ProjectedGradientDescent``, AutoAttack from the ``autoattack`` package (standard or custom version:
:mod:`art_wdat.evaluation.autoattack`) and ART's ``AutoAttack`` restricted to its APGD runs ("APGD (ART)", not in
the default list); distributional: W-PGD,
W-PGD-Budget and W-AutoAttack (``method="auto"``: the strongest of the knapsack, W-PGD, W-PGD-Budget and, at
p = ∞, APGD-CE + APGD-DLR at ε = δ) of
:class:`~art_wdat.attacks.WassersteinDistributionalAttack`. :func:`build_attack` builds the
attack behind one row of the report exactly as :func:`~art_wdat.evaluation.evaluate` runs it, so a row can be
reproduced by seeding (:func:`~art_wdat.training.checkpoint.seed_everything`) and calling that attack directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from art_wdat.attacks import WassersteinDistributionalAttack, bridge
from art_wdat.attacks.auto import FlipCostCache
from art_wdat.attacks.flip_costs import MinNormMethod, default_min_norm
from art_wdat.attacks.spec import Method
from art_wdat.core.reduce import ProcessGroupLike
from art_wdat.evaluation.autoattack import AutoAttackVersion, PackageAutoAttack
from art_wdat.training.checkpoint import seed_everything

if TYPE_CHECKING:
    from art.estimators.classification.classifier import Classifier

#: Attack keys, in report order, and their display names.
ALL_ATTACKS = ("pgd", "autoattack", "apgd-art", "wpgd", "wpgd-budget", "wauto")
ATTACK_NAMES = {"pgd": "PGD", "autoattack": "AutoAttack", "apgd-art": "APGD (ART)", "wpgd": "W-PGD",
                "wpgd-budget": "W-PGD-Budget", "wauto": "W-AutoAttack"}
#: The attacks :func:`~art_wdat.evaluation.evaluate` runs by default ("apgd-art" on request only).
ATTACKS = tuple(a for a in ALL_ATTACKS if a != "apgd-art")
#: The distributional rows and the attack method behind each.
_W_METHODS: dict[str, Method] = {"wpgd": "wpgd", "wpgd-budget": "budget", "wauto": "auto"}
AUTOATTACK_LOSSES = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}


@dataclass
class EvaluationSettings:
    """How each attack is configured (defaults keep a CPU evaluation affordable).

    :ivar max_iter: Iterations of PGD, W-PGD and W-PGD-Budget.
    :ivar batch_size: Inputs per forward/backward pass (does not change any result).
    :ivar pgd_step_ratio: ART PGD's ``eps_step`` = ratio · ε / max_iter.
    :ivar pgd_random_init: ART PGD's ``num_random_init``.
    :ivar autoattack_version: AutoAttack from the ``autoattack`` package: "standard" (APGD-CE, APGD-T, FAB-T,
        Square: RobustBench's protocol at p = ∞) or "custom" (APGD-CE + APGD-T only, cheaper).
    :ivar autoattack_max_iter: Iterations of each APGD and FAB run of that AutoAttack (None: the package's 100,
        the standard protocol; any other value departs from it, and the report says so).
    :ivar apgd_art_losses: The APGD runs of "APGD (ART)" (ART's AutoAttack): "ce" and/or "dlr" (DLR needs ≥ 3
        classes).
    :ivar apgd_art_max_iter: Iterations of each of those APGD runs (None: ``max_iter``).
    :ivar apgd_art_restarts: Random starts of each of those APGD runs.
    :ivar wpgd_loss: Loss of the distributional attacks.
    :ivar wpgd_step_ratio: Their ``eps_step`` = ratio · δ / max_iter (None: the attack's default 1.875).
    :ivar budget_rounds: (Re-)allocations of W-PGD-Budget.
    :ivar bound_loss: The loss J of V(0), W(0), Υ and Q_δ in the bounds.
    :ivar allow_large_eps: Let the distributional attacks take budgets beyond the box's scale (see
        ``WassersteinDistributionalAttack``'s ``allow_large_eps``).
    :ivar amp: Run the distributional attacks' W-PGD and W-PGD-Budget passes under bf16 autocast (their returned
        distributions are re-counted in float32; see ``WassersteinDistributionalAttack``'s ``amp``). The pointwise
        attacks and the bounds stay float32.
    :ivar refine: W-AutoAttack re-solves, harder, the flip costs of the few inputs near the knapsack's thresholds
        at the evaluated budgets, once for all of them (``WassersteinDistributionalAttack``'s ``refine``).
    """

    max_iter: int = 20
    batch_size: int = 128
    pgd_step_ratio: float = 2.5
    pgd_random_init: int = 1
    autoattack_version: AutoAttackVersion = "custom"
    autoattack_max_iter: int | None = None
    apgd_art_losses: tuple = ("ce", "dlr")
    apgd_art_max_iter: int | None = None
    apgd_art_restarts: int = 1
    wpgd_loss: str = "redlr"
    wpgd_step_ratio: float | None = None
    budget_rounds: int = 5
    bound_loss: str = "redlr"
    allow_large_eps: bool = False
    amp: bool = False
    refine: bool = True


def parse_attacks(attacks: str | Sequence[str]) -> tuple:
    """Attack keys from a sequence or a comma-separated string, validated and de-duplicated, in report order."""
    names = [a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)]
    names = [a for a in names if a]
    unknown = [a for a in names if a not in ALL_ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {', '.join(map(repr, unknown))}; choose from {', '.join(ALL_ATTACKS)}")
    return tuple(a for a in ALL_ATTACKS if a in names)


def _art_norm(norm: float) -> int | float:
    return np.inf if math.isinf(norm) else int(norm)


def build_attack(name: str, classifier: Classifier, budget: float, *, p: float, norm: float,
                 settings: EvaluationSettings, process_group: ProcessGroupLike = None, seed: int | None = 0,
                 flip_cost_cache: FlipCostCache | None = None) -> Any:
    """The attack behind the report's row ``name`` at ``budget``, configured exactly as :func:`evaluate` runs it.

    :param name: One of :data:`ALL_ATTACKS`.
    :param budget: ε (pointwise) or δ (distributional), > 0.
    :param process_group: The distributional attacks' process group (see :class:`WassersteinDistributionalAttack`).
    :param seed: The ``autoattack`` package's own seed (its runs reseed torch with it); :func:`evaluate` passes its
                 ``seed``. The other attacks draw from the global generators that :func:`seed_everything` seeds.
    :param flip_cost_cache: W-AutoAttack's flip costs, shared between the runs of one evaluation (they depend on
                            the model and the inputs, not on the budget or p); None: the attack's own.
    :return: An attack with ART's ``generate(x, y)``; call it after :func:`seed_everything`.
    """
    s = settings
    if name == "pgd":
        from art.attacks.evasion import ProjectedGradientDescent

        return ProjectedGradientDescent(classifier, norm=_art_norm(norm), eps=budget,
                                        eps_step=s.pgd_step_ratio * budget / s.max_iter, max_iter=s.max_iter,
                                        num_random_init=s.pgd_random_init, batch_size=s.batch_size, verbose=False)
    if name == "autoattack":
        return PackageAutoAttack(classifier, eps=budget, norm=norm, version=s.autoattack_version,
                                 max_iter=s.autoattack_max_iter, batch_size=s.batch_size, seed=seed)
    if name == "apgd-art":
        return _build_apgd_art(classifier, budget, norm, s)
    if name in _W_METHODS:
        eps_step = None if s.wpgd_step_ratio is None else s.wpgd_step_ratio * budget / s.max_iter
        return WassersteinDistributionalAttack(classifier, eps=budget, p=p, norm=norm,
                                               method=_W_METHODS[name],
                                               max_iter=s.max_iter, eps_step=eps_step, loss=s.wpgd_loss,
                                               batch_size=s.batch_size, budget_rounds=s.budget_rounds,
                                               allow_large_eps=s.allow_large_eps, process_group=process_group,
                                               min_norm=min_norm_for(norm, classifier), verbose=False, amp=s.amp,
                                               refine=s.refine,
                                               flip_cost_cache=flip_cost_cache)
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ALL_ATTACKS)}")


def min_norm_for(norm: float, classifier: object = None) -> MinNormMethod:
    """W-AutoAttack's flip-cost solvers for the ground norm and the classifier
    (:func:`~art_wdat.attacks.flip_costs.default_min_norm`: gradient solvers, or decision-based ones for a
    predict-only classifier; None: a classifier with gradients)."""
    gradients = classifier is None or bridge.kind_of(classifier) != "predict"
    return default_min_norm(norm, gradients=gradients)


def skip_reason(name: str, classifier: object) -> str | None:
    """Why the report's attack ``name`` cannot run on ``classifier`` (None: it can).

    ART's PGD and APGD need ``loss_gradient``; the ``autoattack`` package needs a torch function with gradients (a
    ``PyTorchClassifier``, or any classifier with class gradients through :mod:`art_wdat.attacks.bridge`) and the box
    [0, 1]; W-PGD and W-PGD-Budget need class gradients. W-AutoAttack runs on every classifier, in any box.
    """
    from art.estimators.estimator import LossGradientsMixin

    kind, model = bridge.kind_of(classifier), type(classifier).__name__
    if name in ("pgd", "apgd-art") and not isinstance(classifier, LossGradientsMixin):
        return f"{ATTACK_NAMES[name]} skipped: ART's gradient attacks need loss gradients, which {model} lacks."
    if name in ("autoattack", "wpgd", "wpgd-budget") and kind == "predict":
        return f"{ATTACK_NAMES[name]} skipped: it needs class gradients, which {model} lacks (predict only)."
    clip = getattr(classifier, "clip_values", None)
    if name == "autoattack" and (clip is None or np.any(np.asarray(clip[0]) != 0) or np.any(np.asarray(clip[1]) != 1)):
        return (f"{ATTACK_NAMES[name]} skipped: the autoattack package clips to [0, 1], and the classifier's "
                "clip_values are another box; 'apgd-art' runs in any box.")
    return None


def apgd_art_losses(classifier: Classifier, settings: EvaluationSettings) -> list:
    """The APGD losses "APGD (ART)" runs: ``settings.apgd_art_losses`` checked, DLR dropped below 3 classes."""
    losses = [loss.lower() for loss in settings.apgd_art_losses]
    unknown = [loss for loss in losses if loss not in AUTOATTACK_LOSSES]
    if unknown or not losses:
        raise ValueError(f"apgd_art_losses must be a non-empty subset of {sorted(AUTOATTACK_LOSSES)}, "
                         f"got {settings.apgd_art_losses!r}")
    if classifier.nb_classes < 3:
        losses = [loss for loss in losses if loss != "dlr"] or ["ce"]
    return losses


def apgd_art_note(classifier: Classifier, settings: EvaluationSettings) -> str:
    """The report's note on what "APGD (ART)" ran."""
    losses = apgd_art_losses(classifier, settings)
    return (f"APGD (ART) = ART AutoAttack with {' + '.join('APGD-' + x.upper() for x in losses)} only, "
            f"{settings.apgd_art_max_iter or settings.max_iter} iterations, {settings.apgd_art_restarts} restart(s) "
            "each: not AutoAttack's protocol.")


def _build_apgd_art(classifier: Classifier, budget: float, norm: float, s: EvaluationSettings) -> Any:
    """ART's AutoAttack restricted to APGD runs (APGD-CE, APGD-DLR): AutoAttack's strongest, cheapest part."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

    iters = s.apgd_art_max_iter or s.max_iter
    # eps_step = 2ε: APGD's initial step (Croce & Hein, 2020); it adapts the step itself afterwards.
    runs = [AutoProjectedGradientDescent(classifier, norm=_art_norm(norm), eps=budget, eps_step=2 * budget,
                                         max_iter=iters, targeted=False, nb_random_init=s.apgd_art_restarts,
                                         batch_size=s.batch_size, loss_type=AUTOATTACK_LOSSES[loss], verbose=False)
            for loss in apgd_art_losses(classifier, s)]
    return AutoAttack(classifier, norm=_art_norm(norm), eps=budget, eps_step=2 * budget, attacks=runs,
                      batch_size=s.batch_size)


def time_attack(attack: Any, x: np.ndarray, y: np.ndarray, seed: int | None) -> tuple[np.ndarray, float]:
    """Seed and run a built attack; return (x_adv, wall seconds). The attack keeps what it recorded
    (``last_result_`` of the distributional attacks: W-AutoAttack's flip costs, for one)."""
    seed_everything(seed)
    start = time.perf_counter()
    x_adv = attack.generate(x, y)
    return x_adv, time.perf_counter() - start


def run_timed_attack(name: str, classifier: Classifier, x: np.ndarray, y: np.ndarray, budget: float, *,
                     p: float, norm: float, settings: EvaluationSettings, seed: int | None,
                     process_group: ProcessGroupLike = None) -> tuple[np.ndarray, float]:
    """Seed, build and run one attack; return (x_adv, wall seconds)."""
    attack = build_attack(name, classifier, budget, p=p, norm=norm, settings=settings, process_group=process_group,
                          seed=seed)
    return time_attack(attack, x, y, seed)
