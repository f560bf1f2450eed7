"""Side-by-side evaluation: pointwise (ART PGD, ART AutoAttack) and distributional (W-PGD, W-PGD-Budget)
attacks at the same budgets, with the first-order bounds R^u and R^l of METHOD.md §6.

For p < inf the pointwise ball of radius ε = δ lies inside the W_p ball of radius δ, so every attack run
here is an attack on the distributional threat, and the lowest accuracy of all of them gives R^u.
Each attack run starts from the same seed, so a row of the report can be reproduced by seeding
(:func:`seed_everything`) and calling the attack built by :func:`build_attack` directly.

Under ``torch.distributed`` (torchrun) each rank evaluates its shard of the data and every rank gets the
report of the union: the distributional attacks and the bounds reduce across ranks as they go, the
pointwise attacks (which treat each input alone) run on each shard, and accuracies, costs and wall times
(the slowest rank's) are reduced at the end of each run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from art_wdat import metrics
from art_wdat.attack import WassersteinDistributionalAttack, parse_norm
from art_wdat.checkpoint import seed_everything
from art_wdat.estimator import device_of
from art_wdat.inputs import check_labels, check_x
from art_wdat.reduce import LOCAL, Reducer, default_reducer, reduce_floats
from art_wdat.threat import WassersteinBall

logger = logging.getLogger(__name__)

#: Attack keys, in report order, and their display names.
ATTACKS = ("pgd", "autoattack", "wpgd", "wpgd-budget")
ATTACK_NAMES = {"pgd": "PGD", "autoattack": "AutoAttack", "wpgd": "W-PGD", "wpgd-budget": "W-PGD-Budget"}
AUTOATTACK_LOSSES = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}


@dataclass
class EvaluationSettings:
    """How each attack is configured (defaults keep a CPU evaluation affordable).

    :ivar max_iter: Iterations of PGD, W-PGD and W-PGD-Budget.
    :ivar batch_size: Inputs per forward/backward pass (does not change any result).
    :ivar pgd_step_ratio: ART PGD's ``eps_step`` = ratio · ε / max_iter.
    :ivar pgd_random_init: ART PGD's ``num_random_init``.
    :ivar autoattack_losses: The APGD runs inside ART's AutoAttack: "ce" and/or "dlr" (DLR needs ≥ 3 classes).
    :ivar autoattack_max_iter: Iterations of each APGD run (None: ``max_iter``; AutoAttack itself uses 100).
    :ivar autoattack_restarts: Random starts of each APGD run (AutoAttack itself uses 5).
    :ivar wpgd_loss: Loss of the distributional attacks.
    :ivar wpgd_step_ratio: Their ``eps_step`` = ratio · δ / max_iter (None: the attack's default 1.875).
    :ivar budget_rounds: (Re-)allocations of W-PGD-Budget.
    :ivar bound_loss: The loss J of V(0), W(0), Υ and Q_δ in the bounds.
    """

    max_iter: int = 20
    batch_size: int = 128
    pgd_step_ratio: float = 2.5
    pgd_random_init: int = 1
    autoattack_losses: tuple = ("ce", "dlr")
    autoattack_max_iter: int | None = None
    autoattack_restarts: int = 1
    wpgd_loss: str = "redlr"
    wpgd_step_ratio: float | None = None
    budget_rounds: int = 5
    bound_loss: str = "redlr"


@dataclass
class AttackOutcome:
    """One attack at one budget.

    :ivar accuracy: Accuracy on the attacked inputs.
    :ivar seconds: Wall time of the attack.
    :ivar cost: Transport cost C(x_adv, x) of the result under the evaluation's (p, norm): ≤ budget.
    """

    accuracy: float
    seconds: float
    cost: float


@dataclass
class BudgetResult:
    """Everything measured at one budget δ (= ε for the pointwise attacks).

    :ivar budget: δ.
    :ivar clean_accuracy: A.
    :ivar attacks: Attack key -> outcome, for the attacks that ran.
    :ivar best_attack: Key of the attack with the lowest accuracy (the one behind R^u).
    :ivar r_upper: R^u = min over attacks of A_δ / A.
    :ivar r_lower: R^l = min(R̃, R̄) clamped to [0, 1].
    :ivar r_bar: R̄, the first-order part.
    :ivar r_tilde: R̃, from the W-FGSM distribution Q_δ.
    :ivar wfgsm_loss: E_{Q_δ}[J].
    :ivar bounds_seconds: Wall time of the W-FGSM step behind R^l.
    """

    budget: float
    clean_accuracy: float
    attacks: dict = field(default_factory=dict)
    best_attack: str | None = None
    r_upper: float = math.nan
    r_lower: float = math.nan
    r_bar: float = math.nan
    r_tilde: float = math.nan
    wfgsm_loss: float = math.nan
    bounds_seconds: float = math.nan

    def accuracy(self, attack: str) -> float:
        """Accuracy under ``attack`` (NaN if it did not run)."""
        outcome = self.attacks.get(attack)
        return outcome.accuracy if outcome is not None else math.nan


@dataclass
class EvaluationResult:
    """The side-by-side evaluation of one classifier on one data set.

    :ivar p: Wasserstein order of the distributional threat.
    :ivar norm: Ground norm (also the pointwise attacks' norm).
    :ivar n_samples: Number of inputs N.
    :ivar clean_accuracy: A.
    :ivar v0: V(0) of the bound loss.
    :ivar w0: W(0) of the bound loss (NaN when undefined, see :mod:`art_wdat.metrics`).
    :ivar w0_source: How W(0) was obtained.
    :ivar sensitivity: Υ at the clean data.
    :ivar metrics_seconds: Wall time of the gradient pass behind V(0), W(0), Υ.
    :ivar budgets: One :class:`BudgetResult` per budget, in the order given.
    :ivar attacks: The attacks run.
    :ivar seed: The seed each attack started from.
    :ivar settings: The :class:`EvaluationSettings` as a dict.
    :ivar meta: Free-form labels (model, data set, ...).
    :ivar notes: Anything the reader must know (skipped attacks, undefined W(0), ...).
    :ivar seconds: Wall time of the whole evaluation.
    """

    p: float
    norm: float
    n_samples: int
    clean_accuracy: float
    v0: float
    w0: float
    w0_source: str
    sensitivity: float
    metrics_seconds: float
    budgets: list
    attacks: list
    seed: int | None
    settings: dict
    meta: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: float = math.nan

    # -- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-safe dict: inf as the string "inf", NaN as None."""
        return _json_safe(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        """The result as (strict) JSON."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Inverse of :meth:`to_dict`."""
        top = {f.name: data.get(f.name) for f in fields(cls) if f.name in data}
        budgets = []
        for row in data.get("budgets", []):
            outcomes = {k: AttackOutcome(**{n: _num(v) for n, v in o.items()}) for k, o in row["attacks"].items()}
            rest = {k: (v if k == "best_attack" else _num(v)) for k, v in row.items() if k != "attacks"}
            budgets.append(BudgetResult(attacks=outcomes, **rest))
        for name in ("p", "norm", "clean_accuracy", "v0", "w0", "sensitivity", "metrics_seconds", "seconds"):
            if name in top:
                top[name] = _num(top[name])
        top["budgets"] = budgets
        top["attacks"] = list(top.get("attacks") or [])
        top["notes"] = list(top.get("notes") or [])
        top["meta"] = dict(top.get("meta") or {})
        return cls(**top)

    @classmethod
    def from_json(cls, text: str) -> EvaluationResult:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # -- views ---------------------------------------------------------------------------------------------
    def budget_values(self) -> list:
        """The budgets δ, in order."""
        return [b.budget for b in self.budgets]

    def rows(self) -> list:
        """Tidy rows: one dict per (budget, attack) with accuracy, wall time and cost."""
        out = []
        for b in self.budgets:
            for key, o in b.attacks.items():
                out.append({"budget": b.budget, "attack": key, "accuracy": o.accuracy, "seconds": o.seconds,
                            "cost": o.cost})
        return out

    def to_markdown(self, title: str | None = None) -> str:
        """Accuracy per budget and attack with R^u and R^l, then the wall times, as Markdown tables."""
        head = ["budget δ", "clean", *(ATTACK_NAMES[a] for a in self.attacks), "R^u", "R^l"]
        lines = [f"### {title}", ""] if title else []
        lines += [f"p = {format_order(self.p)}, norm = {format_order(self.norm)}, N = {self.n_samples}, "
                  f"clean accuracy {self.clean_accuracy:.4f}, V(0) = {self.v0:.4g}, W(0) = {self.w0:.4g}, "
                  f"Υ = {self.sensitivity:.4g} (loss {self.settings.get('bound_loss', '?')})", ""]
        lines += _table(head, [[_fmt_budget(b.budget), _fmt(b.clean_accuracy),
                                *(_fmt(b.accuracy(a)) for a in self.attacks), _fmt(b.r_upper), _fmt(b.r_lower)]
                               for b in self.budgets])
        lines += ["", "Wall time (s):", ""]
        lines += _table(["budget δ", *(ATTACK_NAMES[a] for a in self.attacks), "R^l (W-FGSM)"],
                        [[_fmt_budget(b.budget), *(_fmt_s(b.attacks[a].seconds) if a in b.attacks else "–"
                                                    for a in self.attacks), _fmt_s(b.bounds_seconds)]
                         for b in self.budgets])
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------------


def _num(v: Any) -> Any:
    """JSON value back to a float: None -> NaN, "inf" -> inf; other values unchanged."""
    if v is None:
        return math.nan
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    return v


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return ("inf" if obj > 0 else "-inf") if math.isinf(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _fmt_s(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.2f}"


def format_order(v: float) -> str:
    """p or a norm as printed in reports: 'inf' or the number."""
    return "inf" if math.isinf(v) else f"{v:g}"


def _fmt_budget(v: float) -> str:
    """δ, and as k/255 when it is (close to) such a fraction, the usual unit for images."""
    k = v * 255
    return f"{v:.4g} ({round(k)}/255)" if v > 0 and abs(k - round(k)) < 1e-6 else f"{v:.4g}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def compare_markdown(before: EvaluationResult, after: EvaluationResult, labels: Sequence[str] = ("before", "after")
                     ) -> str:
    """A before/after table: one row per (budget, quantity), columns ``labels`` and their difference.

    :param before: The first evaluation.
    :param after: The second, at the same budgets.
    :param labels: Column names of the two.
    """
    head = ["budget δ", "quantity", labels[0], labels[1], "change"]
    rows = [["–", "clean accuracy", _fmt(before.clean_accuracy), _fmt(after.clean_accuracy),
             _fmt_delta(after.clean_accuracy - before.clean_accuracy)],
            ["–", "Υ (sensitivity)", f"{before.sensitivity:.4g}", f"{after.sensitivity:.4g}",
             _fmt_delta(after.sensitivity - before.sensitivity)]]
    attacks = [a for a in before.attacks if a in after.attacks]
    after_by_budget = {b.budget: b for b in after.budgets}
    for b in before.budgets:
        a = after_by_budget.get(b.budget)
        if a is None:
            continue
        quantities = [(ATTACK_NAMES[k], b.accuracy(k), a.accuracy(k)) for k in attacks]
        quantities += [("R^u", b.r_upper, a.r_upper), ("R^l", b.r_lower, a.r_lower)]
        for name, v0, v1 in quantities:
            rows.append([_fmt_budget(b.budget), name, _fmt(v0), _fmt(v1), _fmt_delta(v1 - v0)])
    return "\n".join(_table(head, rows)) + "\n"


def _fmt_delta(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:+.4f}"


# --------------------------------------------------------------------------------------------------
# attacks
# --------------------------------------------------------------------------------------------------


def parse_attacks(attacks: str | Sequence[str]) -> tuple:
    """Attack keys from a sequence or a comma-separated string, validated and de-duplicated, in report order."""
    names = [a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)]
    names = [a for a in names if a]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {', '.join(map(repr, unknown))}; choose from {', '.join(ATTACKS)}")
    return tuple(a for a in ATTACKS if a in names)


def _art_norm(norm: float) -> int | float:
    return np.inf if math.isinf(norm) else int(norm)


def build_attack(name: str, classifier, budget: float, p: float, norm: float, settings: EvaluationSettings,
                 process_group: object | None = None):
    """The attack behind the report's row ``name`` at ``budget``, configured exactly as :func:`evaluate` runs it.

    :param name: One of :data:`ATTACKS`.
    :param budget: ε (pointwise) or δ (distributional), > 0.
    :param process_group: The distributional attacks' process group (see :class:`WassersteinDistributionalAttack`).
    :return: An ART evasion attack; call ``generate(x, y)`` after :func:`seed_everything`.
    """
    s = settings
    if name == "pgd":
        from art.attacks.evasion import ProjectedGradientDescent

        return ProjectedGradientDescent(classifier, norm=_art_norm(norm), eps=budget,
                                        eps_step=s.pgd_step_ratio * budget / s.max_iter, max_iter=s.max_iter,
                                        num_random_init=s.pgd_random_init, batch_size=s.batch_size, verbose=False)
    if name == "autoattack":
        return _build_autoattack(classifier, budget, norm, s)
    if name in ("wpgd", "wpgd-budget"):
        eps_step = None if s.wpgd_step_ratio is None else s.wpgd_step_ratio * budget / s.max_iter
        return WassersteinDistributionalAttack(classifier, eps=budget, p=p, norm=norm,
                                               method="wpgd" if name == "wpgd" else "budget",
                                               max_iter=s.max_iter, eps_step=eps_step, loss=s.wpgd_loss,
                                               batch_size=s.batch_size, budget_rounds=s.budget_rounds,
                                               process_group=process_group, verbose=False)
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


def _autoattack_losses(classifier, settings: EvaluationSettings) -> list:
    losses = [loss.lower() for loss in settings.autoattack_losses]
    unknown = [loss for loss in losses if loss not in AUTOATTACK_LOSSES]
    if unknown or not losses:
        raise ValueError(f"autoattack_losses must be a non-empty subset of {sorted(AUTOATTACK_LOSSES)}, "
                         f"got {settings.autoattack_losses!r}")
    if classifier.nb_classes < 3:
        losses = [loss for loss in losses if loss != "dlr"] or ["ce"]
    return losses


def _build_autoattack(classifier, budget: float, norm: float, s: EvaluationSettings):
    """ART's AutoAttack restricted to APGD runs (APGD-CE, APGD-DLR): AutoAttack's strongest, cheapest part."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

    iters = s.autoattack_max_iter or s.max_iter
    # eps_step = 2ε: APGD's initial step (Croce & Hein, 2020); it adapts the step itself afterwards.
    runs = [AutoProjectedGradientDescent(classifier, norm=_art_norm(norm), eps=budget, eps_step=2 * budget,
                                         max_iter=iters, targeted=False, nb_random_init=s.autoattack_restarts,
                                         batch_size=s.batch_size, loss_type=AUTOATTACK_LOSSES[loss], verbose=False)
            for loss in _autoattack_losses(classifier, s)]
    return AutoAttack(classifier, norm=_art_norm(norm), eps=budget, eps_step=2 * budget, attacks=runs,
                      batch_size=s.batch_size)


def run_attack(name: str, classifier, x: np.ndarray, y: np.ndarray, budget: float, p: float, norm: float,
               settings: EvaluationSettings, seed: int | None, process_group: object | None = None
               ) -> tuple[np.ndarray, float]:
    """Seed, build and run one attack; return (x_adv, wall seconds)."""
    attack = build_attack(name, classifier, budget, p, norm, settings, process_group)
    seed_everything(seed)
    start = time.perf_counter()
    x_adv = attack.generate(x, y)
    return x_adv, time.perf_counter() - start


def accuracy(classifier, x: np.ndarray, y: np.ndarray, batch_size: int = 128, reducer: Reducer = LOCAL) -> float:
    """Fraction of ``x`` classified as ``y`` (class indices); of every rank's ``x`` together under a group reducer."""
    hits = int((classifier.predict(x, batch_size=batch_size).argmax(axis=1) == y).sum()) if x.shape[0] else 0
    correct, n = reduce_floats(reducer, [hits, x.shape[0]], device_of(classifier))
    return correct / n if n else math.nan


# --------------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------------


def _check_budgets(budgets: Sequence[float]) -> list:
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


def _progress(total: int, verbose: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="run", disable=not verbose, leave=False)


@dataclass
class _Run:
    """What every run of :func:`evaluate` shares: the data (this rank's shard), the threat and the ranks."""

    classifier: Any
    x: np.ndarray
    y: np.ndarray
    p: float
    norm: float
    settings: EvaluationSettings
    seed: int | None
    process_group: object | None
    reducer: Reducer = field(init=False)

    def __post_init__(self) -> None:
        self.reducer = default_reducer(self.process_group)

    def slowest(self, seconds: float) -> float:
        """The wall time of the slowest rank: what the user waits for."""
        return reduce_floats(self.reducer, [seconds], device_of(self.classifier), op="max")[0]

    def outcome(self, name: str, budget: float) -> AttackOutcome:
        """Run one attack at ``budget`` and measure it over the whole data."""
        if budget == 0:
            x_adv, seconds = self.x, 0.0
        else:
            x_adv, seconds = run_attack(name, self.classifier, self.x, self.y, budget, self.p, self.norm,
                                        self.settings, self.seed, self.process_group)
        delta = torch.from_numpy(x_adv.astype(np.float64) - self.x).to(device_of(self.classifier))
        cost = float(WassersteinBall(eps=budget, p=self.p, norm=self.norm).cost(delta, self.reducer))
        return AttackOutcome(accuracy=accuracy(self.classifier, x_adv, self.y, self.settings.batch_size, self.reducer),
                             seconds=self.slowest(seconds), cost=cost)


def _evaluate_budget(run: _Run, budget: float, names: Sequence[str], stats: metrics.CleanStatistics,
                     bar) -> BudgetResult:
    row = BudgetResult(budget=budget, clean_accuracy=stats.clean_accuracy)
    for name in names:
        bar.set_postfix_str(f"{ATTACK_NAMES[name]} δ={budget:.4g}")
        row.attacks[name] = run.outcome(name, budget)
        bar.update(1)
    if row.attacks:
        row.best_attack = min(row.attacks, key=lambda k: row.attacks[k].accuracy)
        row.r_upper = metrics.upper_ratio(row.attacks[row.best_attack].accuracy, stats.clean_accuracy)
    bar.set_postfix_str(f"bounds δ={budget:.4g}")
    seed_everything(run.seed)
    start = time.perf_counter()
    row.wfgsm_loss = metrics.wfgsm_mean_loss(run.classifier, run.x, run.y, budget, p=run.p, norm=run.norm,
                                             loss=run.settings.bound_loss, batch_size=run.settings.batch_size,
                                             process_group=run.process_group)
    row.bounds_seconds = run.slowest(time.perf_counter() - start)
    low = metrics.lower_ratio(stats, budget, row.wfgsm_loss)
    row.r_bar, row.r_tilde, row.r_lower = low.r_bar, low.r_tilde, low.r_lower
    bar.update(1)
    return row


def evaluate(classifier, x: np.ndarray, y: np.ndarray, budgets: float | Sequence[float], p: float = 2.0,
             norm: int | float | str = np.inf, attacks: str | Sequence[str] = ATTACKS,
             max_iter: int | None = None, batch_size: int | None = None, seed: int | None = 0,
             verbose: bool = False, settings: EvaluationSettings | None = None,
             meta: Mapping[str, Any] | None = None, process_group: object | None = None) -> EvaluationResult:
    """Evaluate ``classifier`` on (x, y) against pointwise and distributional attacks at each budget.

    Per budget: clean accuracy; ART ``ProjectedGradientDescent`` and ART ``AutoAttack`` (APGD-CE + APGD-DLR)
    accuracy at ε = budget; W-PGD and W-PGD-Budget (loss ReDLR) accuracy at δ = budget under (p, norm);
    R^u (lowest accuracy of all / A) and R^l (one W-FGSM step); the wall time of each.

    :param classifier: An ART ``PyTorchClassifier`` (numpy defences get ART's BPDA gradient: :mod:`art_wdat.estimator`).
    :param x: Inputs (N, *input_shape) inside the classifier's ``clip_values``: one distribution.
    :param y: True labels, indices (N,) or one-hot.
    :param budgets: One budget or several (≥ 0); 0 reports clean accuracy for every attack.
    :param p: Wasserstein order of the distributional attacks and of the bounds, in [1, inf].
    :param norm: Ground norm, inf or 2 (the pointwise attacks use it too).
    :param attacks: A subset of :data:`ATTACKS` (sequence or comma-separated string).
    :param max_iter: Overrides ``settings.max_iter``.
    :param batch_size: Overrides ``settings.batch_size``.
    :param seed: Every attack run starts from this seed (None: unseeded).
    :param verbose: Show a progress bar.
    :param settings: Attack configuration; default :class:`EvaluationSettings`.
    :param meta: Labels stored in the result (model, data set, ...).
    :param process_group: Under ``torch.distributed``: the ranks whose shards ``x`` form the data (default: the world
                          group when initialised; ``False``: this process's ``x`` alone). Every rank must call with
                          the same settings and at least one input; every rank returns the report of the union.
    :return: The result; ``to_json``, ``to_markdown`` and :func:`art_wdat.plotting.plot_accuracy` render it.
    """
    begin = time.perf_counter()
    settings = EvaluationSettings(**asdict(settings)) if settings is not None else EvaluationSettings()
    if max_iter is not None:
        settings.max_iter = max_iter
    if batch_size is not None:
        settings.batch_size = batch_size
    _check_settings(settings)
    names, budget_list = parse_attacks(attacks), _check_budgets(budgets)
    norm_value, p_value = parse_norm(norm), float(p)
    if norm_value not in (2.0, math.inf):
        raise ValueError(f"norm must be inf or 2 for the side-by-side evaluation (ART's attacks), got {norm!r}")
    if not p_value >= 1:
        raise ValueError(f"p must be in [1, inf], got {p!r}")
    x = np.ascontiguousarray(check_x(x, classifier.input_shape, classifier.clip_values), dtype=np.float32)
    labels = check_labels(y, x.shape[0], classifier.nb_classes)
    if labels is None or x.shape[0] == 0:
        raise ValueError("evaluate needs at least one input and its labels")
    run = _Run(classifier, x, labels, p_value, norm_value, settings, seed, process_group)
    notes = _notes(classifier, names, settings)
    if run.reducer.world_size > 1:
        notes.append(f"Evaluated on {run.reducer.world_size} ranks (torch.distributed): the distributional attacks "
                     "and the bounds spend one budget over all shards; the pointwise attacks ran on each shard.")
    start = time.perf_counter()
    stats = metrics.clean_statistics(classifier, x, labels, p=p_value, norm=norm_value, loss=settings.bound_loss,
                                     batch_size=settings.batch_size, process_group=process_group)
    metrics_seconds = run.slowest(time.perf_counter() - start)
    if stats.w0_source == "undefined":
        notes.append("No clean input is misclassified and W(0) is undefined for this loss: R^l is NaN.")
    with _progress(len(budget_list) * (len(names) + 1), verbose) as bar:
        rows = [_evaluate_budget(run, b, names, stats, bar) for b in budget_list]
    result = EvaluationResult(p=p_value, norm=norm_value, n_samples=stats.n,
                              clean_accuracy=stats.clean_accuracy, v0=stats.v0, w0=stats.w0,
                              w0_source=stats.w0_source, sensitivity=stats.sensitivity,
                              metrics_seconds=metrics_seconds, budgets=rows, attacks=list(names), seed=seed,
                              settings=asdict(settings), meta=dict(meta or {}), notes=notes,
                              seconds=run.slowest(time.perf_counter() - begin))
    logger.info("evaluation done in %.1f s: clean accuracy %.4f over %d inputs", result.seconds,
                result.clean_accuracy, result.n_samples)
    return result


def _check_settings(s: EvaluationSettings) -> None:
    for name in ("max_iter", "batch_size", "autoattack_restarts", "budget_rounds"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if s.autoattack_max_iter is not None and (not isinstance(s.autoattack_max_iter, int) or s.autoattack_max_iter < 1):
        raise ValueError(f"autoattack_max_iter must be None or an integer >= 1, got {s.autoattack_max_iter!r}")
    s.autoattack_losses = tuple(s.autoattack_losses)


def _notes(classifier, names: Sequence[str], s: EvaluationSettings) -> list:
    """Notes for the report; also swaps DLR-type losses for CE on models with fewer than 3 classes."""
    notes = []
    for name in ("wpgd_loss", "bound_loss"):
        if classifier.nb_classes < 3 and str(getattr(s, name)).lower() in ("dlr", "redlr"):
            # DLR needs the third-largest logit; CE is the usable loss for binary models.
            notes.append(f"{name} {getattr(s, name)!r} needs at least 3 classes; used 'ce' instead.")
            setattr(s, name, "ce")
    if "autoattack" in names:
        losses = _autoattack_losses(classifier, s)
        iters = s.autoattack_max_iter or s.max_iter
        notes.append(f"AutoAttack = ART AutoAttack with {' + '.join('APGD-' + x.upper() for x in losses)} only, "
                     f"{iters} iterations, {s.autoattack_restarts} restart(s) each (the standard version adds "
                     "FAB and Square and runs 100 iterations × 5 restarts).")
    notes.append("Pointwise attacks use ε = δ, inside the W_p ball of radius δ; R^u uses the lowest accuracy of all "
                 "attacks run; R^l is a first-order estimate, not a certificate.")
    return notes
