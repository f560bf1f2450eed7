"""Held-out selection of a fine-tune: the rule that keeps an epoch, and the records it keeps it by.

The records come from :class:`~art_wdat.training.judge.HeldOutJudge`: clean accuracy, pointwise accuracy at ε (by
default from the minimum-norm flip costs, :data:`MIN_NORM`; or the ``autoattack`` package's, :data:`AUTOATTACK`) and
W-AutoAttack accuracy at the training budget δ and the report's other budgets.

What is kept (:class:`Selection`): among the epochs whose clean and pointwise accuracy are no more than the
tolerances below the start's, the one with the highest W-AutoAttack accuracy at δ, if it beats the start; otherwise
the start itself. So a fine-tune never hands back a model that is worse on the held-out split than the one it was
given.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from art_wdat.validation import check_number

logger = logging.getLogger(__name__)

#: Keys of a validation record (fractions in [0, 1]): clean, pointwise at ε by the minimum-norm flip costs or by
#: the autoattack package (one of the two), W-AutoAttack at δ.
CLEAN, MIN_NORM, AUTOATTACK, WAUTO = "val_clean_acc", "val_min_norm_acc", "val_autoattack_acc", "val_wauto_acc"
#: The default pointwise row's key.
POINTWISE = MIN_NORM
POINTWISE_KEYS = (MIN_NORM, AUTOATTACK)
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
    :param pointwise: Pointwise accuracy at ε.
    """

    clean: float = 0.015
    pointwise: float = 0.01

    def __post_init__(self) -> None:
        check_number("clean_tolerance", self.clean, low=0.0)
        check_number("pointwise_tolerance", self.pointwise, low=0.0)


def qualifies(record: dict, start: dict, tolerances: Tolerances) -> bool:
    """Whether an epoch's clean and pointwise accuracy stay within the tolerances of the start's."""
    if record[CLEAN] < start[CLEAN] - tolerances.clean - _SLACK:
        return False
    return all(record.get(key, -math.inf) >= start[key] - tolerances.pointwise - _SLACK
               for key in POINTWISE_KEYS if key in start)


@dataclass(repr=False)
class Selection:
    """The held-out selection of one fine-tune.

    Two epochs matter: the one the rule picks (:attr:`selected_epoch`: the best within the tolerances, or the start;
    its weights are kept in memory and in ``kept.pt`` whatever ``select_best`` says, so that a resume may switch it)
    and the one whose weights the model holds at the end (:attr:`kept_epoch`: the selected one with ``select_best``,
    else the last finished epoch).

    :ivar start: The start model's validation record.
    :ivar tolerances: The tolerances applied.
    :ivar epochs: Each measured epoch's validation record (with its ``epoch``).
    :ivar select_best: Whether the model ends with the selected epoch's weights (else the last epoch's).
    :ivar start_epoch: The epoch whose weights the start record measures: 0, or the epoch a run without a
        validation split was resumed after with one.
    :ivar selected_epoch: The epoch the rule picks so far (``start_epoch``: the start weights).
    :ivar last_epoch: The last finished epoch, measured or not.
    :ivar judge: What measured the records (the trainer's settings that change them, and a digest of the split):
        a resume with other settings is refused rather than mixing records.
    :ivar notes: What the measurement left out, and why (e.g. a budget beyond the input box).
    """

    start: dict
    tolerances: Tolerances = field(default_factory=Tolerances)
    epochs: list[dict] = field(default_factory=list)
    select_best: bool = True
    start_epoch: int = 0
    selected_epoch: int | None = None
    last_epoch: int | None = None
    judge: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.selected_epoch is None:
            self.selected_epoch = self.start_epoch
        if self.last_epoch is None:
            self.last_epoch = max([self.start_epoch, *(int(r["epoch"]) for r in self.epochs)])

    def offer(self, epoch: int, record: dict) -> bool:
        """Record an epoch; True if the rule selects it (it qualifies and beats the selected W-AutoAttack)."""
        self.epochs.append({"epoch": epoch, **record})
        self.finish(epoch)
        if not qualifies(record, self.start, self.tolerances):
            return False
        if record[WAUTO] > self.selected[WAUTO] + _SLACK:
            self.selected_epoch = epoch
            return True
        return False

    def finish(self, epoch: int) -> None:
        """Note that ``epoch`` finished (measured or not): with ``select_best=False`` the model holds it."""
        self.last_epoch = max(int(self.last_epoch or 0), int(epoch))

    @property
    def kept_epoch(self) -> int:
        """The epoch whose weights the model holds at the end of the fit: the selected one with ``select_best``,
        else the last finished one (``start_epoch`` before any)."""
        assert self.selected_epoch is not None and self.last_epoch is not None
        return self.selected_epoch if self.select_best else self.last_epoch

    def record_of(self, epoch: int) -> dict | None:
        """The validation record of ``epoch`` (the start's for ``start_epoch``); None if it was not measured."""
        if epoch == self.start_epoch:
            return self.start
        return next((r for r in self.epochs if r["epoch"] == epoch), None)

    @property
    def selected(self) -> dict:
        """The validation record of the selected epoch."""
        assert self.selected_epoch is not None
        record = self.record_of(self.selected_epoch)
        assert record is not None  # only measured epochs are selected
        return record

    @property
    def kept(self) -> dict | None:
        """The validation record of the kept epoch (None if, with ``select_best=False``, it was not measured)."""
        return self.record_of(self.kept_epoch)

    @property
    def best_epoch(self) -> dict | None:
        """The epoch with the highest W-AutoAttack accuracy, qualifying or not (None before any)."""
        return max(self.epochs, key=lambda r: r[WAUTO], default=None)

    def __repr__(self) -> str:
        """A short summary (:meth:`summary`); the records stay attributes."""
        return f"Selection({len(self.epochs)} epoch(s) measured, kept_epoch={self.kept_epoch}): {self.summary()}"

    def summary(self) -> str:
        """One plain line: which epoch's weights the model holds, and why."""
        if not self.select_best:
            return self._last_summary()
        if self.kept_epoch != self.start_epoch:
            return f"Kept epoch {self.kept_epoch} of {self.last_epoch}: {format_record(self.selected, self.start)}."
        best = self.best_epoch
        start = "the start weights" if self.start_epoch == 0 else f"the weights of epoch {self.start_epoch}, the start"
        if best is None:
            return f"Kept {start}: no epoch was measured."
        if any(qualifies(r, self.start, self.tolerances) for r in self.epochs):
            why = "within the tolerances beat the start's W-AutoAttack accuracy"
        else:
            why = "stayed within the clean and pointwise tolerances of the start"
        return (f"Kept {start}: no epoch {why} (tolerances {100 * self.tolerances.clean:g} and "
                f"{100 * self.tolerances.pointwise:g} points); best epoch {best['epoch']}: "
                f"{format_record(best, self.start)}.")

    def _last_summary(self) -> str:
        rule = ""
        if self.selected_epoch != self.kept_epoch:
            which = "the start" if self.selected_epoch == self.start_epoch else f"epoch {self.selected_epoch}"
            rule = f"; select_best=True would keep {which}"
        if self.kept_epoch == self.start_epoch:
            return f"Kept the start weights (select_best=False, no epoch finished){rule}."
        kept = self.kept
        numbers = "not measured" if kept is None else format_record(kept, self.start)
        return f"Kept the last epoch, {self.kept_epoch} (select_best=False): {numbers}{rule}."

    def to_dict(self) -> dict:
        """Plain values, for checkpoints and reports."""
        return {"start": dict(self.start), "tolerances": {"clean": self.tolerances.clean,
                                                          "pointwise": self.tolerances.pointwise},
                "kept_epoch": self.kept_epoch, "selected_epoch": self.selected_epoch, "select_best": self.select_best,
                "start_epoch": self.start_epoch, "last_epoch": self.last_epoch,
                "epochs": [dict(r) for r in self.epochs], "judge": dict(self.judge), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict) -> Selection:
        tol = data.get("tolerances", {})
        tolerances = Tolerances(tol.get("clean", 0.015), tol.get("pointwise", 0.01))
        # Before selected_epoch existed, kept_epoch was the rule's choice.
        selected = data.get("selected_epoch", data.get("kept_epoch", 0))
        return cls(start=dict(data["start"]), tolerances=tolerances, epochs=[dict(r) for r in data.get("epochs", [])],
                   select_best=bool(data.get("select_best", True)), start_epoch=int(data.get("start_epoch", 0)),
                   selected_epoch=int(selected),
                   last_epoch=None if data.get("last_epoch") is None else int(data["last_epoch"]),
                   judge=dict(data.get("judge", {})), notes=list(data.get("notes", [])))


def format_record(record: dict, start: dict | None = None) -> str:
    """"clean 0.708 (-0.6), min-norm 0.592 (+0.2), W-AutoAttack 0.324 (+1.4)": changes in points from ``start``."""
    parts = []
    for key, name in ((CLEAN, "clean"), (MIN_NORM, "min-norm"), (AUTOATTACK, "AutoAttack"), (WAUTO, "W-AutoAttack")):
        if key in record:
            change = "" if start is None or key not in start else f" ({100 * (record[key] - start[key]):+.1f})"
            parts.append(f"{name} {record[key]:.3f}{change}")
    return ", ".join(parts)


def order_label(p: float) -> str:
    """W_2, W_1, W_∞."""
    return "W_∞" if math.isinf(p) else f"W_{p:g}"


def selection_markdown(selection: Selection, title: str = "held-out split") -> str:
    """The held-out table of a fine-tune as Markdown: the start and every measured epoch (clean, pointwise at ε,
    W-AutoAttack at each budget with its order p; changes from the start in points), the kept row in bold, the
    notes on what was left out, and the line saying what was kept."""
    start_epoch = selection.start_epoch
    rows = [{"epoch": start_epoch, **selection.start}, *selection.epochs]
    budgets = sorted(float(k.split("@", 1)[1]) for k in selection.start if k.startswith(WAUTO + "@"))
    judge = selection.judge
    eps = judge.get("pointwise_eps")
    at_eps = "ε" if eps is None else budget_label(float(eps))
    order = "" if judge.get("select_p") is None else f" ({order_label(float(judge['select_p']))})"
    columns = [(CLEAN, "clean"), (MIN_NORM, f"min-norm @{at_eps}"), (AUTOATTACK, f"AutoAttack @{at_eps}")] + [
        (wauto_key(d), f"W-AutoAttack{order} @{budget_label(d)}") for d in budgets]
    columns = [(key, name) for key, name in columns if key in selection.start]
    lines = [f"**{title}**", "", "| epoch | " + " | ".join(name for _, name in columns) + " | within tolerances |",
             "|---|" + "---|" * (len(columns) + 1)]
    for row in rows:
        first = row is rows[0]
        cells = []
        for key, _ in columns:
            value = row.get(key)
            change = "" if first or value is None else f" ({100 * (value - selection.start[key]):+.1f})"
            cells.append("-" if value is None else f"{value:.3f}{change}")
        label = ("start" if start_epoch == 0 else f"start ({start_epoch})") if first else str(row["epoch"])
        ok = "" if first else ("yes" if qualifies(row, selection.start, selection.tolerances) else "no")
        if row["epoch"] == selection.kept_epoch:
            label, cells = f"**{label} (kept)**", [f"**{c}**" for c in cells]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ok} |")
    lines += ["", *(f"Note: {note}" for note in selection.notes), selection.summary()]
    return "\n".join(lines)
