"""``AttackResult``: what :meth:`WassersteinDistributionalAttack.generate` found, as ``attack.last_result_``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from art_wdat.attacks.auto import ComponentResult


@dataclass(repr=False)
class AttackResult:
    """What :meth:`WassersteinDistributionalAttack.generate` found, as ``attack.last_result_``.

    ``repr`` is a summary of a few lines (method, threat, cost, accuracy, components, flip-cost time); the arrays
    stay attributes.

    :ivar cost: Achieved transport cost C(x_adv, x) (≤ eps).
    :ivar eps: The budget.
    :ivar sensitivity: Υ at the start point (:doc:`/maths`).
    :ivar perturbation_norms: ‖x_adv_i − x_i‖_r per input: the budget each input actually used.
    :ivar budgets: Allocated per-input budgets δ_i (``method="budget"``), else None.
    :ivar accuracy: Accuracy per iterate of the returned run, the start included (untargeted), or the
        targeted success rate.
    :ivar loss: Mean attack loss per iterate of the returned run.
    :ivar best_iteration: The iterate returned (index into ``accuracy``).
    :ivar best_restart: The random restart it came from.
    :ivar method: The method whose distribution is returned (for ``method="auto"``, the winning component).
    :ivar components: For ``method="auto"``: what each component achieved on its own (accuracy, mean loss, cost,
        seconds); empty otherwise.
    :ivar flip_costs: For "knapsack" and "auto": the verified flip cost of every input (0 if misclassified
        already, inf if none was found; with ``refine``, refined near the knapsack's threshold at this budget or the
        cache's planned ones), a copy of the cache's; :func:`art_wdat.core.knapsack.robust_accuracy_curve` turns them
        into the accuracy of the knapsack at every budget.
    :ivar flip_cost_seconds: Wall time of the flip-cost pass and of its refinement in this call: 0 when both came
        from the attack's :class:`~art_wdat.attacks.auto.FlipCostCache` (or the method needs none).
    :ivar flip_cost_queries: For decision-based flip-cost solvers: the queries (rows passed to the model) each input
        cost them, verification included, at most ``max_queries`` (of the pass that computed them, also when the cache
        serves them); None for gradient solvers.
    :ivar queries: For an estimator other than a ``PyTorchClassifier``: the inputs sent to its ``predict`` by this
        call, per attacked input (the flip-cost pass, the scoring, the cache's key and the checks); None for PyTorch.
    :ivar p: The Wasserstein order of the threat.
    :ivar norm: Its ground norm.
    """

    cost: float
    eps: float
    sensitivity: float
    perturbation_norms: np.ndarray
    budgets: np.ndarray | None
    accuracy: list[float]
    loss: list[float]
    best_iteration: int
    best_restart: int
    method: str = ""
    components: dict[str, ComponentResult] = field(default_factory=dict)
    flip_costs: np.ndarray | None = None
    flip_cost_seconds: float = 0.0
    flip_cost_queries: np.ndarray | None = None
    queries: float | None = None
    p: float = math.nan
    norm: float = math.nan

    def __repr__(self) -> str:
        start, returned = self.accuracy[0], self.accuracy[self.best_iteration]
        lines = [f"AttackResult(method={self.method!r}, eps={self.eps:.4g}, p={self.p:g}, norm={self.norm:g}, "
                 f"cost={self.cost:.4g}, sensitivity={self.sensitivity:.4g})",
                 f"  accuracy {start:.4f} -> {returned:.4f} (iterate {self.best_iteration}, restart "
                 f"{self.best_restart}), {len(self.perturbation_norms)} inputs"]
        if self.components:
            parts = ", ".join(f"{name} {c.accuracy:.4f} ({c.seconds:.2f} s)" for name, c in self.components.items())
            lines.append(f"  components: {parts}")
        if self.flip_costs is not None:
            flipped = int(np.isfinite(self.flip_costs).sum())
            lines.append(f"  flip costs: {flipped} of {len(self.flip_costs)} finite, {self.flip_cost_seconds:.2f} s "
                         "in this call")
        if self.flip_cost_queries is not None and len(self.flip_cost_queries):
            lines.append(f"  flip-cost queries per input: mean {self.flip_cost_queries.mean():.0f}, max "
                         f"{self.flip_cost_queries.max()}")
        if self.queries is not None:
            lines.append(f"  queries: {self.queries:.0f} predict inputs per input in this call")
        return "\n".join(lines)
