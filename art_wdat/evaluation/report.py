"""What the side-by-side evaluation reports, and how it is rendered: the result dataclasses, JSON and Markdown.

JSON is strict: inf is written as the string "inf" and NaN as null (:func:`json_safe`), and read back by
:meth:`EvaluationResult.from_json`. :func:`compare_markdown` puts two evaluations side by side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from art_wdat.evaluation.registry import ATTACK_NAMES


@dataclass
class AttackOutcome:
    """One attack at one budget.

    :ivar accuracy: Accuracy on the attacked inputs.
    :ivar seconds: Wall time of the attack; for W-AutoAttack without its flip-cost pass, which is computed once for
        all budgets and reported apart (:attr:`EvaluationResult.flip_cost_seconds`).
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


@dataclass(repr=False)
class AccuracyCurve:
    """Accuracy of the knapsack attack against the budget, for several orders p, from one set of flip costs.

    Built by :func:`art_wdat.evaluation.curve.knapsack_curve` from W-AutoAttack's flip costs: the knapsack
    alone (cheapest inputs flipped first, no leftover W-PGD), exact at every δ, so W-AutoAttack's accuracy at an
    evaluated budget is at most the curve's there.

    :ivar deltas: Budgets δ, ascending; every evaluated budget is one of them.
    :ivar accuracy: p as printed (:func:`format_order`: "1", "2", "inf", ...) -> accuracy at each δ of ``deltas``.
    :ivar sorted_costs: Every input's verified flip cost in the ground norm, ascending, over all ranks (0:
        misclassified already, inf: never flipped): :func:`art_wdat.evaluation.curve.accuracy_curve` gives the
        curve for any other p or δ from them.
    :ivar source_budget: δ of the W-AutoAttack run whose flip costs these are (they do not depend on δ).
    :ivar per_255: Whether δ reads best as k/255 (images in [0, 1], 3 channels, ℓ∞ ground norm): the plot's unit.
    """

    deltas: list
    accuracy: dict
    sorted_costs: list = field(default_factory=list)
    source_budget: float = math.nan
    per_255: bool = False

    def __repr__(self) -> str:
        """A short summary: the orders, the budget range and the inputs (the arrays stay attributes)."""
        never = sum(1 for c in self.sorted_costs if math.isinf(c))
        span = f"δ from {_fmt_budget(self.deltas[0])} to {_fmt_budget(self.deltas[-1])}" if self.deltas else "no δ"
        return (f"AccuracyCurve(p in {list(self.accuracy)}, {len(self.deltas)} budgets, {span}; "
                f"{len(self.sorted_costs)} inputs, {never} never flipped)")

    def at(self, p: float, delta: float) -> float:
        """The stored accuracy for order ``p`` at budget ``delta`` (KeyError/ValueError if not stored)."""
        return self.accuracy[format_order(p)][self.deltas.index(delta)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracyCurve:
        """Inverse of ``asdict`` + :func:`json_safe`."""
        return cls(deltas=[_num(v) for v in data["deltas"]],
                   accuracy={str(k): [_num(v) for v in vals] for k, vals in data["accuracy"].items()},
                   sorted_costs=[_num(v) for v in data.get("sorted_costs", [])],
                   source_budget=_num(data.get("source_budget")), per_255=bool(data.get("per_255", False)))

    def to_markdown(self, budgets: Sequence[float], norm: float) -> list:
        """Lines of a compact table: the accuracy at each of ``budgets`` for every stored p."""
        orders = list(self.accuracy)
        never = sum(1 for c in self.sorted_costs if math.isinf(c))
        lines = [f"Knapsack curve (flip costs of W-AutoAttack at δ = {_fmt_budget(self.source_budget)}, one run, "
                 f"ground norm {format_order(norm)}): accuracy of the knapsack alone at every budget, for each "
                 f"Wasserstein order p; W-AutoAttack's accuracy is at most it. Never flipped: {never} of "
                 f"{len(self.sorted_costs)} inputs. The whole curve ({len(self.deltas)} budgets) is in the JSON.", ""]
        rows = [[_fmt_budget(b), *(_fmt(self.accuracy[q][self.deltas.index(b)]) for q in orders)] for b in budgets
                if b in self.deltas]
        return lines + _table(["budget δ", *(f"p = {q}" for q in orders)], rows)


@dataclass(repr=False)
class EvaluationResult:
    """The side-by-side evaluation of one classifier on one data set.

    :ivar p: Wasserstein order of the distributional threat.
    :ivar norm: Ground norm (also the pointwise attacks' norm).
    :ivar n_samples: Number of inputs N.
    :ivar clean_accuracy: A.
    :ivar v0: V(0) of the bound loss.
    :ivar w0: W(0) of the bound loss (NaN when undefined, see :mod:`art_wdat.evaluation.metrics`).
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
    :ivar curve: The knapsack's accuracy against the budget from W-AutoAttack's flip costs (None when that row
        did not run at a budget > 0).
    :ivar flip_cost_seconds: Wall time of W-AutoAttack's flip-cost pass, run once for all budgets and left out of
        its per-budget times (0 when an earlier evaluation's cache served the costs; NaN when it did not run).
    :ivar per_255: Whether the budgets read best as k/255 (colour images in [0, 1], ℓ∞ ground norm): the unit of
        both plots' budget axis.
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
    curve: AccuracyCurve | None = None
    flip_cost_seconds: float = math.nan
    per_255: bool = False

    def __repr__(self) -> str:
        """A short summary: one line per budget with each attack's accuracy (:meth:`to_markdown` has everything)."""
        lines = [f"EvaluationResult(p={format_order(self.p)}, norm={format_order(self.norm)}, {self.n_samples} "
                 f"inputs, clean {self.clean_accuracy:.4f}, sensitivity {self.sensitivity:.4g}, "
                 f"{self.seconds:.1f} s)"]
        for b in self.budgets:
            accs = ", ".join(f"{ATTACK_NAMES.get(k, k)} {o.accuracy:.4f}" for k, o in b.attacks.items())
            lines.append(f"  δ = {_fmt_budget(b.budget)}: {accs}; R^u {b.r_upper:.4f}, R^l {b.r_lower:.4f}")
        if self.notes:
            lines.append(f"  {len(self.notes)} note(s): see .notes")
        return "\n".join(lines)

    # -- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-safe dict: inf as the string "inf", NaN as None."""
        return json_safe(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        """The result as (strict) JSON."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Inverse of :meth:`to_dict`."""
        top: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls) if f.name in data}
        budgets = []
        for row in data.get("budgets", []):
            outcomes = {k: AttackOutcome(**{n: _num(v) for n, v in o.items()}) for k, o in row["attacks"].items()}
            rest = {k: (v if k == "best_attack" else _num(v)) for k, v in row.items() if k != "attacks"}
            budgets.append(BudgetResult(attacks=outcomes, **rest))
        for name in ("p", "norm", "clean_accuracy", "v0", "w0", "sensitivity", "metrics_seconds", "seconds",
                     "flip_cost_seconds"):
            if name in top:
                top[name] = _num(top[name])
        top["budgets"] = budgets
        top["attacks"] = list(top.get("attacks") or [])
        top["notes"] = list(top.get("notes") or [])
        top["meta"] = dict(top.get("meta") or {})
        top["curve"] = AccuracyCurve.from_dict(top["curve"]) if top.get("curve") else None
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
        if not math.isnan(self.flip_cost_seconds):
            lines += ["", f"W-AutoAttack's flip costs: {_fmt_s(self.flip_cost_seconds)} s, computed once for all "
                      "budgets; its column above is each budget's own work."]
        if self.curve is not None:
            lines += ["", *self.curve.to_markdown(self.budget_values(), self.norm)]
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


def json_safe(obj: Any) -> Any:
    """``obj`` with every float made strict-JSON-safe (inf as "inf", NaN as None) and numpy scalars as Python ones."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return ("inf" if obj > 0 else "-inf") if math.isinf(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return json_safe(obj.item())
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


#: The rows of a before/after comparison without a budget.
SENSITIVITY_ROW = "Υ (sensitivity)"


def compare_cells(before: EvaluationResult, after: EvaluationResult) -> list[tuple[float | None, str, float, float]]:
    """The cells of a before/after comparison: (budget, or None for clean accuracy and Υ; quantity; value before;
    value after), for every attack both ran and R^u, R^l at every budget both evaluated."""
    cells: list[tuple[float | None, str, float, float]] = [
        (None, "clean accuracy", before.clean_accuracy, after.clean_accuracy),
        (None, SENSITIVITY_ROW, before.sensitivity, after.sensitivity)]
    attacks = [a for a in before.attacks if a in after.attacks]
    after_by_budget = {b.budget: b for b in after.budgets}
    for b in before.budgets:
        a = after_by_budget.get(b.budget)
        if a is None:
            continue
        cells += [(b.budget, ATTACK_NAMES[k], b.accuracy(k), a.accuracy(k)) for k in attacks]
        cells += [(b.budget, "R^u", b.r_upper, a.r_upper), (b.budget, "R^l", b.r_lower, a.r_lower)]
    return cells


def compare_markdown(before: EvaluationResult, after: EvaluationResult, labels: Sequence[str] = ("before", "after")
                     ) -> str:
    """A before/after table: one row per (budget, quantity) of :func:`compare_cells`, columns ``labels`` and their
    difference.

    :param before: The first evaluation.
    :param after: The second, at the same budgets.
    :param labels: Column names of the two.
    """
    head = ["budget δ", "quantity", labels[0], labels[1], "change"]
    rows = []
    for budget, name, v0, v1 in compare_cells(before, after):
        values = [f"{v0:.4g}", f"{v1:.4g}"] if name == SENSITIVITY_ROW else [_fmt(v0), _fmt(v1)]
        rows.append(["–" if budget is None else _fmt_budget(budget), name, *values, _fmt_delta(v1 - v0)])
    return "\n".join(_table(head, rows)) + "\n"


def _fmt_delta(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:+.4f}"

