"""Side-by-side evaluation: pointwise (ART PGD, AutoAttack, APGD (ART)) and distributional (W-PGD, W-PGD-Budget)
attacks at the same budgets, with the first-order bounds R^u and R^l (:doc:`/maths`).

For p < inf the pointwise ball of radius ε = δ lies inside the W_p ball of radius δ, so every attack run
here is an attack on the distributional threat, and the lowest accuracy of all of them gives R^u.
Each attack run starts from the same seed, so a row of the report can be reproduced by seeding
(:func:`~art_wdat.training.checkpoint.seed_everything`) and calling the attack built by
:func:`~art_wdat.evaluation.registry.build_attack` directly.

Under ``torch.distributed`` (torchrun) each rank evaluates its shard of the data and every rank gets the
report of the union: the distributional attacks and the bounds reduce across ranks as they go, the
pointwise attacks (which treat each input alone) run on each shard, and accuracies, costs and wall times
(the slowest rank's) are reduced at the end of each run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from art_wdat.attacks import parse_norm
from art_wdat.attacks.auto import FlipCostCache
from art_wdat.attacks.bridge import device_of, kind_of
from art_wdat.core.losses import for_classes
from art_wdat.core.progress import Bar, progress_bar
from art_wdat.core.reduce import LOCAL, ProcessGroupLike, Reducer, default_reducer, reduce_floats
from art_wdat.core.threat import WassersteinBall
from art_wdat.evaluation import metrics
from art_wdat.evaluation.autoattack import autoattack_note, check_version
from art_wdat.evaluation.curve import knapsack_curve, reads_per_255
from art_wdat.evaluation.registry import (
    ATTACK_NAMES,
    ATTACKS,
    EvaluationSettings,
    apgd_art_note,
    build_attack,
    parse_attacks,
    skip_reason,
    time_attack,
)
from art_wdat.evaluation.report import AccuracyCurve, AttackOutcome, BudgetResult, EvaluationResult
from art_wdat.training.checkpoint import seed_everything
from art_wdat.validation import check_labels, check_x

if TYPE_CHECKING:
    from art.estimators.classification.classifier import Classifier

logger = logging.getLogger(__name__)


def accuracy(classifier: Classifier, x: np.ndarray, y: np.ndarray, batch_size: int = 128,
             reducer: Reducer = LOCAL) -> float:
    """Fraction of ``x`` classified as ``y`` (class indices); of every rank's ``x`` together under a group reducer."""
    hits = int((classifier.predict(x, batch_size=batch_size).argmax(axis=1) == y).sum()) if x.shape[0] else 0
    correct, n = reduce_floats(reducer, [hits, x.shape[0]], device_of(classifier))
    return correct / n if n else math.nan


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _check_budgets(budgets: float | Sequence[float]) -> list[float]:
    if isinstance(budgets, (int, float)):
        budgets = [budgets]
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)) or not math.isfinite(b):
            raise ValueError(f"budgets must be finite numbers >= 0, got {b!r}")
        if b < 0:
            raise ValueError(f"budgets must be >= 0, got {b!r}")
        out.append(float(b))
    if not out:
        raise ValueError("at least one budget is needed")
    return out


def _check_settings(s: EvaluationSettings) -> None:
    for name in ("max_iter", "batch_size", "apgd_art_restarts", "budget_rounds"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("autoattack_max_iter", "apgd_art_max_iter"):
        value = getattr(s, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
    for name in ("allow_large_eps", "amp", "refine"):
        if not isinstance(getattr(s, name), bool):
            raise TypeError(f"`{name}` must be a bool, got {getattr(s, name)!r}.")
    check_version(s.autoattack_version)
    s.apgd_art_losses = tuple(s.apgd_art_losses)


def _resolve_settings(settings: EvaluationSettings | None, max_iter: int | None,
                      batch_size: int | None) -> EvaluationSettings:
    """A checked copy of ``settings`` (the caller's object is never changed) with the overrides applied."""
    settings = EvaluationSettings(**asdict(settings)) if settings is not None else EvaluationSettings()
    if max_iter is not None:
        settings.max_iter = max_iter
    if batch_size is not None:
        settings.batch_size = batch_size
    _check_settings(settings)
    return settings


def _check_threat(p: float, norm: int | float | str) -> tuple[float, float]:
    """(p, norm) as floats; ValueError unless norm is inf, 2 or 1 and p is in [1, inf]."""
    norm_value, p_value = parse_norm(norm), float(p)
    if not p_value >= 1:
        raise ValueError(f"p must be in [1, inf], got {p!r}")
    return p_value, norm_value


def _check_data(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x as contiguous float32, class indices); ValueError for no input or no labels."""
    x = np.ascontiguousarray(check_x(x, classifier.input_shape, classifier.clip_values), dtype=np.float32)
    labels = check_labels(y, x.shape[0], classifier.nb_classes)
    if labels is None or x.shape[0] == 0:
        raise ValueError("evaluate needs at least one input and its labels")
    return x, labels


def _notes(classifier: Classifier, names: Sequence[str], s: EvaluationSettings, norm: float,
           world_size: int) -> list:
    """Notes for the report; also swaps DLR-type losses for their 2-class form (the logit margin) on models with
    fewer than 3 classes.

    :param norm: The ground norm.
    :param world_size: The number of ranks evaluating together (1: this process alone).
    """
    notes = []
    for name in ("wpgd_loss", "bound_loss"):
        two_class = for_classes(getattr(s, name), classifier.nb_classes)
        if two_class != getattr(s, name):
            # DLR needs the third-largest logit; its 2-class form is the logit margin, with DLR's signs and zeros.
            notes.append(f"{name} {getattr(s, name)!r} needs at least 3 classes; used {two_class!r} instead.")
            setattr(s, name, two_class)
    if "autoattack" in names:
        notes.append(autoattack_note(s.autoattack_version, s.autoattack_max_iter, norm, classifier.nb_classes))
    if "apgd-art" in names:
        notes.append(apgd_art_note(classifier, s))
    notes.append("Pointwise attacks use ε = δ, inside the W_p ball of radius δ; R^u uses the lowest accuracy of all "
                 "attacks run; R^l is a first-order estimate, not a certificate.")
    if world_size > 1:
        notes.append(f"Evaluated on {world_size} ranks (torch.distributed): the distributional attacks "
                     "and the bounds spend one budget over all shards; the pointwise attacks ran on each shard.")
    return notes


# --------------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------------


def _progress(total: int, verbose: bool) -> Bar:
    """The evaluation's one bar (its attacks run without theirs), drawn on a terminal only."""
    return progress_bar(total, "evaluate", verbose, unit="run")


@dataclass
class _Run:
    """What every run of :func:`evaluate` shares: the data (this rank's shard), the threat, the ranks and
    W-AutoAttack's flip costs (computed at its first budget, served from ``flip_cost_cache`` at the others)."""

    classifier: Classifier
    x: np.ndarray
    y: np.ndarray
    p: float
    norm: float
    settings: EvaluationSettings
    seed: int | None
    process_group: ProcessGroupLike
    flip_cost_cache: FlipCostCache = field(default_factory=FlipCostCache)
    reducer: Reducer = field(init=False)
    #: W-AutoAttack's flip costs (this rank's inputs) from its first run, and that run's budget.
    flip_costs: np.ndarray | None = field(default=None, init=False)
    flip_budget: float = field(default=math.nan, init=False)
    #: This rank's seconds in flip-cost passes (reported once, apart from the budgets' own work).
    flip_cost_seconds: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.reducer = default_reducer(self.process_group)

    def slowest(self, seconds: float) -> float:
        """The wall time of the slowest rank: what the user waits for."""
        return reduce_floats(self.reducer, [seconds], device_of(self.classifier), op="max")[0]

    def clean_statistics(self) -> tuple[metrics.CleanStatistics, float]:
        """V(0), W(0), Υ and the clean accuracy of the whole data under the bound loss, and their wall time."""
        start = time.perf_counter()
        stats = metrics.clean_statistics(self.classifier, self.x, self.y, p=self.p, norm=self.norm,
                                         loss=self.settings.bound_loss, batch_size=self.settings.batch_size,
                                         process_group=self.process_group)
        return stats, self.slowest(time.perf_counter() - start)

    def outcome(self, name: str, budget: float) -> AttackOutcome:
        """Run one attack at ``budget`` and measure it over the whole data."""
        if budget == 0:
            x_adv, seconds = self.x, 0.0
        else:
            attack = build_attack(name, self.classifier, budget, p=self.p, norm=self.norm, settings=self.settings,
                                  process_group=self.process_group, seed=self.seed,
                                  flip_cost_cache=self.flip_cost_cache)
            x_adv, seconds = time_attack(attack, self.x, self.y, self.seed)
            seconds -= self._keep_flip_costs(attack, budget)
        delta = torch.from_numpy(x_adv.astype(np.float64) - self.x).to(device_of(self.classifier))
        cost = float(WassersteinBall(eps=budget, p=self.p, norm=self.norm).cost(delta, self.reducer))
        return AttackOutcome(accuracy=accuracy(self.classifier, x_adv, self.y, self.settings.batch_size, self.reducer),
                             seconds=self.slowest(seconds), cost=cost)

    def _keep_flip_costs(self, attack: Any, budget: float) -> float:
        """Keep the first flip costs a run records (they do not depend on the budget) and return the seconds of the
        run's flip-cost pass (0 when the cache served them): the report shows that pass once, not in a budget's
        row."""
        result = getattr(attack, "last_result_", None)
        found = getattr(result, "flip_costs", None)
        if self.flip_costs is None and found is not None:
            self.flip_costs, self.flip_budget = found, budget
        seconds = float(getattr(result, "flip_cost_seconds", 0.0))
        self.flip_cost_seconds += seconds
        return seconds

    def curve(self, budgets: Sequence[float]) -> AccuracyCurve | None:
        """The knapsack's accuracy against the budget over all ranks (None without flip costs)."""
        if self.flip_costs is None:
            return None
        return knapsack_curve(self.flip_costs, self.p, budgets, source_budget=self.flip_budget,
                              per_255=self.per_255(), reducer=self.reducer, device=device_of(self.classifier))

    def per_255(self) -> bool:
        """Whether the budgets read best as k/255 (both plots' unit): :func:`reads_per_255`."""
        return reads_per_255(self.classifier.input_shape, self.classifier.clip_values, self.norm)


def _evaluate_budget(run: _Run, budget: float, names: Sequence[str], stats: metrics.CleanStatistics,
                     bar: Bar) -> BudgetResult:
    row = BudgetResult(budget=budget, clean_accuracy=stats.clean_accuracy)
    for name in names:
        bar.set_postfix_str(f"{ATTACK_NAMES[name]} δ={budget:.4g}")
        row.attacks[name] = run.outcome(name, budget)
        bar.update(1)
    if row.attacks:
        row.best_attack = min(row.attacks, key=lambda k: row.attacks[k].accuracy)
        row.r_upper = metrics.upper_ratio(row.attacks[row.best_attack].accuracy, stats.clean_accuracy)
    if kind_of(run.classifier) == "predict":  # R^l needs a W-FGSM step: gradients
        bar.update(1)
        return row
    bar.set_postfix_str(f"bounds δ={budget:.4g}")
    seed_everything(run.seed)
    start = time.perf_counter()
    row.wfgsm_loss = metrics.wfgsm_mean_loss(run.classifier, run.x, run.y, budget, p=run.p, norm=run.norm,
                                             loss=run.settings.bound_loss, batch_size=run.settings.batch_size,
                                             process_group=run.process_group,
                                             allow_large_eps=run.settings.allow_large_eps)
    row.bounds_seconds = run.slowest(time.perf_counter() - start)
    low = metrics.lower_ratio(stats, budget, row.wfgsm_loss)
    row.r_bar, row.r_tilde, row.r_lower = low.r_bar, low.r_tilde, low.r_lower
    bar.update(1)
    return row


def evaluate(classifier: Classifier, x: np.ndarray, y: np.ndarray, budgets: float | Sequence[float], *,
             p: float = 2.0, norm: int | float | str = np.inf, attacks: str | Sequence[str] = ATTACKS,
             max_iter: int | None = None, batch_size: int | None = None, seed: int | None = 0,
             verbose: bool = False, settings: EvaluationSettings | None = None,
             meta: Mapping[str, Any] | None = None, process_group: ProcessGroupLike = None,
             flip_cost_cache: FlipCostCache | None = None) -> EvaluationResult:
    """Evaluate ``classifier`` on (x, y) against pointwise and distributional attacks at each budget.

    Per budget: clean accuracy; ART ``ProjectedGradientDescent``, AutoAttack (the ``autoattack`` package,
    ``settings.autoattack_version``) and, on request, "APGD (ART)" (ART's APGD-CE + APGD-DLR) accuracy at
    ε = budget; W-PGD, W-PGD-Budget (loss ReDLR) and W-AutoAttack accuracy at δ = budget under
    (p, norm); R^u (lowest accuracy of all / A) and R^l (one W-FGSM step); the wall time of each. W-AutoAttack's
    flip costs depend on neither δ nor p: they are computed once, at its first budget, and served from
    ``flip_cost_cache`` at the others; their wall time is reported once (``result.flip_cost_seconds``), not in the
    budgets' rows. They also give ``result.curve``: the knapsack's exact accuracy against the budget for
    p ∈ {1, 2, inf} and ``p`` (:func:`art_wdat.evaluation.curve.knapsack_curve`).

    :param classifier: Any ART classifier. A ``PyTorchClassifier`` runs in torch (numpy defences get ART's BPDA
                       gradient: :mod:`art_wdat.attacks.estimator`); other classifiers run through their
                       ``predict`` and ``class_gradient`` (:mod:`art_wdat.attacks.bridge`). Attacks that cannot run
                       on the classifier (ART's PGD and APGD without ``loss_gradient``; AutoAttack, W-PGD and
                       W-PGD-Budget without class gradients) are left out of the table, with the reason in the
                       report's notes, and so is R^l (it needs gradients) on a predict-only classifier.
    :param x: Inputs ``(N, *input_shape)`` inside the classifier's ``clip_values``: one distribution.
    :param y: True labels, indices (N,) or one-hot.
    :param budgets: One budget or several (≥ 0); 0 reports clean accuracy for every attack.
    :param p: Wasserstein order of the distributional attacks and of the bounds, in [1, inf].
    :param norm: Ground norm, inf, 2 or 1 (the pointwise attacks use it too). W-AutoAttack's flip costs come from
                 FAB and FMN, then the APGD bisection (ℓ∞, ℓ2), or FAB and FMN at ℓ1; from decision-based solvers on a
                 predict-only classifier (:func:`~art_wdat.evaluation.registry.min_norm_for`).
    :param attacks: A subset of :data:`~art_wdat.evaluation.registry.ALL_ATTACKS` (sequence or comma-separated
                    string); default :data:`ATTACKS` (all but "apgd-art").
    :param max_iter: Overrides ``settings.max_iter``.
    :param batch_size: Overrides ``settings.batch_size``.
    :param seed: Every attack run starts from this seed (None: unseeded).
    :param verbose: Show a progress bar.
    :param settings: Attack configuration; default :class:`EvaluationSettings`.
    :param meta: Labels stored in the result (model, data set, ...).
    :param process_group: Under ``torch.distributed``: the ranks whose shards ``x`` form the data (default: the world
                          group when initialised; ``False``: this process's ``x`` alone). Every rank must call with
                          the same settings and at least one input; every rank returns the report of the union.
    :param flip_cost_cache: Where W-AutoAttack keeps its flip costs (default: a new cache for this call). Pass the
                            same cache to several calls on the same model and inputs (e.g. one per p) to compute
                            them once for all; it is keyed by the model's parameters, buffers and preprocessing and
                            by the inputs, so it never serves costs of another model state or other inputs.
    :return: The result; ``to_json``, ``to_markdown`` and :func:`art_wdat.evaluation.plotting.plot_accuracy` render it.
    """
    begin = time.perf_counter()
    settings = _resolve_settings(settings, max_iter, batch_size)
    names, budget_list = parse_attacks(attacks), _check_budgets(budgets)
    p_value, norm_value = _check_threat(p, norm)
    x, labels = _check_data(classifier, x, y)
    run = _Run(classifier, x, labels, p_value, norm_value, settings, seed, process_group,
               flip_cost_cache if flip_cost_cache is not None else FlipCostCache())
    # Every W-AutoAttack row refines its costs near the knapsack thresholds of all budgets, computed once.
    run.flip_cost_cache.plan([(b, p_value) for b in budget_list if b > 0])
    skipped = [reason for reason in (skip_reason(name, classifier) for name in names) if reason is not None]
    names = tuple(name for name in names if skip_reason(name, classifier) is None)
    notes = skipped + _notes(classifier, names, settings, norm_value, run.reducer.world_size)
    if kind_of(classifier) == "predict":
        notes.append(f"R^l skipped: Υ and the W-FGSM step need gradients, which {type(classifier).__name__} lacks.")
    stats, metrics_seconds = run.clean_statistics()
    if stats.w0_source == "undefined":
        notes.append("No clean input is misclassified and W(0) is undefined for this loss: R^l is NaN.")
    with _progress(len(budget_list) * (len(names) + 1), verbose) as bar:
        rows = [_evaluate_budget(run, b, names, stats, bar) for b in budget_list]
    curve = run.curve(budget_list)
    ran_wauto = "wauto" in names and any(b > 0 for b in budget_list)
    flip_cost_seconds = run.slowest(run.flip_cost_seconds) if ran_wauto else math.nan
    result = EvaluationResult(p=p_value, norm=norm_value, n_samples=stats.n, clean_accuracy=stats.clean_accuracy,
                              v0=stats.v0, w0=stats.w0, w0_source=stats.w0_source, sensitivity=stats.sensitivity,
                              metrics_seconds=metrics_seconds, budgets=rows, attacks=list(names), seed=seed,
                              settings=asdict(settings), meta=dict(meta or {}), notes=notes,
                              seconds=run.slowest(time.perf_counter() - begin), curve=curve,
                              flip_cost_seconds=flip_cost_seconds, per_255=run.per_255())
    logger.info("evaluation done in %.1f s: clean accuracy %.4f over %d inputs", result.seconds,
                result.clean_accuracy, result.n_samples)
    return result
