"""Held-out selection of a fine-tune: measure the start and every epoch on a validation split, keep the best.

What is measured (:class:`HeldOutJudge`), on inputs never trained on:

* clean accuracy;
* pointwise robustness at ε: APGD-CE + APGD-T of the ``autoattack`` package (its "custom" version) with few
  iterations;
* W-AutoAttack (``method="auto"``) at the training budget δ and order p, and at the report's other budgets; one
  attack object serves every budget, so the flip costs of an epoch are computed once.

What is kept (:func:`choose`): among the epochs whose clean and pointwise accuracy are no more than the tolerances
below the start's, the one with the highest W-AutoAttack accuracy at δ, if it beats the start; otherwise the start
itself. So a fine-tune never hands back a model that is worse on the held-out split than the one it was given.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from art_wdat.attacks.autoattack import PackageAutoAttack
from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.training.checkpoint import capture_rng, restore_rng, seed_everything
from art_wdat.validation import check_int, check_number

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger(__name__)

#: Keys of a validation record (fractions in [0, 1]).
CLEAN, POINTWISE, WAUTO = "val_clean_acc", "val_autoattack_acc", "val_wauto_acc"
#: Digits of the budget in the per-budget W-AutoAttack keys, e.g. "val_wauto_acc@0.00784314".
_BUDGET_DIGITS = 6
#: Accuracies are fractions of the split; compare them with this slack so that "equal" is not lost to rounding.
_SLACK = 1e-9


def wauto_key(delta: float) -> str:
    """The record key of W-AutoAttack accuracy at budget ``delta``."""
    return f"{WAUTO}@{delta:.{_BUDGET_DIGITS}g}"


def budget_label(delta: float) -> str:
    """A budget as people write it: "2/255" where δ·255 is a whole number, else "0.05"."""
    k = delta * 255
    # Keys keep 6 significant digits (4/255 reads back as 0.0156863): a whole k/255 is recognised to 1e-4.
    return f"{round(k)}/255" if delta > 0 and abs(k - round(k)) < 1e-4 else f"{delta:g}"


@dataclass(frozen=True)
class Tolerances:
    """How far (as fractions, 0.015 = 1.5 points) an epoch's held-out accuracies may fall below the start's.

    :param clean: Clean accuracy.
    :param pointwise: Pointwise (AutoAttack) accuracy at ε.
    """

    clean: float = 0.015
    pointwise: float = 0.01

    def __post_init__(self) -> None:
        check_number("clean_tolerance", self.clean, low=0.0)
        check_number("pointwise_tolerance", self.pointwise, low=0.0)


@dataclass(frozen=True)
class HeldOutPlan:
    """How the held-out split is attacked.

    :param eps: The training budget δ: W-AutoAttack's budget that selection ranks by.
    :param p: Wasserstein order of W-AutoAttack.
    :param norm: Ground norm (also AutoAttack's).
    :param pointwise_eps: AutoAttack's ε.
    :param budgets: Every budget W-AutoAttack is reported at (δ included).
    :param aa_iter: Iterations of each APGD run of AutoAttack.
    :param auto_iter: Iterations of W-AutoAttack's W-PGD parts (its flip costs are parameter-free).
    :param batch_size: Inputs per forward pass.
    :param seed: Every attack's seed, so that two epochs are judged by the same draws.
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

    def __post_init__(self) -> None:
        check_int("aa_iter", self.aa_iter, low=1)
        check_int("auto_iter", self.auto_iter, low=1)
        check_int("batch_size", self.batch_size, low=1)

    @property
    def all_budgets(self) -> tuple[float, ...]:
        """The reported budgets, δ among them, in increasing order."""
        return tuple(sorted({*self.budgets, self.eps}))


class HeldOutJudge:
    """Measures a classifier on its held-out split (inputs in [0, 1]; labels as indices).

    :param classifier: The ART classifier being fine-tuned (measured in eval mode, as it is at that moment).
    :param x: Held-out inputs.
    :param y: Their labels.
    :param plan: The attacks' settings.
    """

    def __init__(self, classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, plan: HeldOutPlan) -> None:
        self.classifier, self.x, self.y, self.plan = classifier, x, y, plan
        # The package's APGD clips to [0, 1]; other boxes (or fewer than 2 classes) get no pointwise row.
        clip = classifier.clip_values
        self.pointwise = clip is not None and bool(np.all(np.asarray(clip[0]) == 0)) and bool(
            np.all(np.asarray(clip[1]) == 1))

    def measure(self) -> dict[str, float]:
        """Clean, pointwise and W-AutoAttack accuracy (at every budget) of the classifier now.

        The attacks are seeded; the global RNG states are put back afterwards, so that measuring does not change
        the training that follows.
        """
        rng = capture_rng()
        try:
            return self._measure()
        finally:
            restore_rng(rng)

    def _measure(self) -> dict[str, float]:
        plan, clf = self.plan, self.classifier
        logits = clf.predict(self.x, batch_size=plan.batch_size)
        if not np.isfinite(logits).all():
            # A diverged fine-tune (NaN or inf outputs): nothing to attack, and such an epoch must never be kept.
            logger.warning("The model returns non-finite logits on the held-out split: counted as 0 accuracy.")
            return {CLEAN: 0.0, **({POINTWISE: 0.0} if self.pointwise else {}),
                    **{wauto_key(d): 0.0 for d in plan.all_budgets}, WAUTO: 0.0}
        record = {CLEAN: float(np.mean(logits.argmax(axis=1) == self.y))}
        if self.pointwise:
            seed_everything(plan.seed)
            aa = PackageAutoAttack(clf, eps=plan.pointwise_eps, norm=plan.norm, version="custom",
                                   max_iter=plan.aa_iter, batch_size=plan.batch_size, seed=plan.seed)
            record[POINTWISE] = self._accuracy(aa.generate(self.x, self.y))
        # One attack object for every budget: its flip costs are computed once and reused.
        attack = WassersteinDistributionalAttack(clf, eps=plan.eps, p=plan.p, norm=plan.norm, method="auto",
                                                 max_iter=plan.auto_iter, batch_size=plan.batch_size,
                                                 process_group=False, verbose=False)
        for delta in plan.all_budgets:
            attack.set_params(eps=delta)
            seed_everything(plan.seed)
            record[wauto_key(delta)] = self._accuracy(attack.generate(self.x, self.y))
        record[WAUTO] = record[wauto_key(plan.eps)]
        return record

    def _accuracy(self, x: np.ndarray) -> float:
        pred = self.classifier.predict(x, batch_size=self.plan.batch_size).argmax(axis=1)
        return float(np.mean(pred == self.y))


def qualifies(record: dict, start: dict, tolerances: Tolerances) -> bool:
    """Whether an epoch's clean and pointwise accuracy stay within the tolerances of the start's."""
    if record[CLEAN] < start[CLEAN] - tolerances.clean - _SLACK:
        return False
    if POINTWISE not in start:
        return True
    return record.get(POINTWISE, -math.inf) >= start[POINTWISE] - tolerances.pointwise - _SLACK


@dataclass
class Selection:
    """The held-out selection of one fine-tune.

    :ivar start: The start model's validation record (epoch 0).
    :ivar tolerances: The tolerances applied.
    :ivar kept_epoch: The epoch whose weights are kept: 0 is the start model.
    :ivar epochs: Each finished epoch's validation record (with its ``epoch``).
    """

    start: dict
    tolerances: Tolerances = field(default_factory=Tolerances)
    kept_epoch: int = 0
    epochs: list[dict] = field(default_factory=list)

    def offer(self, epoch: int, record: dict) -> bool:
        """Record an epoch; True if it becomes the kept one (it qualifies and beats the kept W-AutoAttack)."""
        self.epochs.append({"epoch": epoch, **record})
        if not qualifies(record, self.start, self.tolerances):
            return False
        if record[WAUTO] > self.kept[WAUTO] + _SLACK:
            self.kept_epoch = epoch
            return True
        return False

    @property
    def kept(self) -> dict:
        """The validation record of the kept epoch."""
        if self.kept_epoch == 0:
            return self.start
        return next(r for r in self.epochs if r["epoch"] == self.kept_epoch)

    @property
    def best_epoch(self) -> dict | None:
        """The epoch with the highest W-AutoAttack accuracy, qualifying or not (None before any)."""
        return max(self.epochs, key=lambda r: r[WAUTO], default=None)

    def summary(self) -> str:
        """One plain line: which epoch was kept and why."""
        if self.kept_epoch > 0:
            return f"Kept epoch {self.kept_epoch} of {len(self.epochs)}: {format_record(self.kept, self.start)}."
        best = self.best_epoch
        if best is None:
            return "Kept the start weights: no epoch was trained."
        if any(qualifies(r, self.start, self.tolerances) for r in self.epochs):
            why = "within the tolerances beat the start's W-AutoAttack accuracy"
        else:
            why = "stayed within the clean and pointwise tolerances of the start"
        return (f"Kept the start weights: no epoch {why} (tolerances {100 * self.tolerances.clean:g} and "
                f"{100 * self.tolerances.pointwise:g} points); best epoch {best['epoch']}: "
                f"{format_record(best, self.start)}.")

    def to_dict(self) -> dict:
        """Plain values, for checkpoints and reports."""
        return {"start": dict(self.start), "tolerances": {"clean": self.tolerances.clean,
                                                          "pointwise": self.tolerances.pointwise},
                "kept_epoch": self.kept_epoch, "epochs": [dict(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, data: dict) -> Selection:
        tol = data.get("tolerances", {})
        tolerances = Tolerances(tol.get("clean", 0.015), tol.get("pointwise", 0.01))
        return cls(start=dict(data["start"]), tolerances=tolerances,
                   kept_epoch=int(data.get("kept_epoch", 0)), epochs=[dict(r) for r in data.get("epochs", [])])


def format_record(record: dict, start: dict | None = None) -> str:
    """"clean 0.708 (-0.6), AutoAttack 0.592 (+0.2), W-AutoAttack 0.324 (+1.4)": changes in points from ``start``."""
    parts = []
    for key, name in ((CLEAN, "clean"), (POINTWISE, "AutoAttack"), (WAUTO, "W-AutoAttack")):
        if key in record:
            change = "" if start is None or key not in start else f" ({100 * (record[key] - start[key]):+.1f})"
            parts.append(f"{name} {record[key]:.3f}{change}")
    return ", ".join(parts)


def selection_markdown(selection: Selection, title: str = "held-out split") -> str:
    """The held-out table of a fine-tune as Markdown: the start and every epoch (clean, AutoAttack at ε,
    W-AutoAttack at each budget; changes from the start in points), the kept row in bold, and the before/after
    line."""
    rows = [{"epoch": 0, **selection.start}, *selection.epochs]
    budgets = sorted(float(k.split("@", 1)[1]) for k in selection.start if k.startswith(WAUTO + "@"))
    columns = [(CLEAN, "clean"), (POINTWISE, "AutoAttack @ε")] + [
        (wauto_key(d), f"W-AutoAttack @{budget_label(d)}") for d in budgets]
    columns = [(key, name) for key, name in columns if key in selection.start]
    lines = [f"**{title}**", "", "| epoch | " + " | ".join(name for _, name in columns) + " | within tolerances |",
             "|---|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            change = "" if row["epoch"] == 0 or value is None else f" ({100 * (value - selection.start[key]):+.1f})"
            cells.append("-" if value is None else f"{value:.3f}{change}")
        label = "start" if row["epoch"] == 0 else str(row["epoch"])
        ok = "" if row["epoch"] == 0 else ("yes" if qualifies(row, selection.start, selection.tolerances) else "no")
        if row["epoch"] == selection.kept_epoch:
            label, cells = f"**{label} (kept)**", [f"**{c}**" for c in cells]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ok} |")
    lines += ["", selection.summary()]
    return "\n".join(lines)
