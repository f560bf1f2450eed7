"""Side-by-side evaluation: metrics, the attacks compared, the runner, reports and plots.

``art_wdat.evaluation.evaluate`` and the result types keep the names they had when this was one module:
the attacks live in :mod:`~art_wdat.evaluation.registry`, the runner in :mod:`~art_wdat.evaluation.runner`,
the result types and their rendering in :mod:`~art_wdat.evaluation.report`, the knapsack's accuracy-versus-budget
curve in :mod:`~art_wdat.evaluation.curve`.
"""

from art_wdat.evaluation.curve import accuracy_curve
from art_wdat.evaluation.registry import (
    ALL_ATTACKS,
    ATTACK_NAMES,
    ATTACKS,
    AUTOATTACK_LOSSES,
    EvaluationSettings,
    build_attack,
    parse_attacks,
    run_timed_attack,
    time_attack,
)
from art_wdat.evaluation.report import (
    AccuracyCurve,
    AttackOutcome,
    BudgetResult,
    EvaluationResult,
    compare_markdown,
    format_order,
    json_safe,
)
from art_wdat.evaluation.runner import accuracy, evaluate

__all__ = ["ALL_ATTACKS", "ATTACK_NAMES", "ATTACKS", "AUTOATTACK_LOSSES", "AccuracyCurve", "AttackOutcome",
           "BudgetResult", "EvaluationResult", "EvaluationSettings", "accuracy", "accuracy_curve", "build_attack",
           "compare_markdown", "evaluate", "format_order", "json_safe", "parse_attacks", "run_timed_attack",
           "time_attack"]
