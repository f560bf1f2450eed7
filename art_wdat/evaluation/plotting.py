"""Accuracy-against-budget curves of :class:`~art_wdat.evaluation.EvaluationResult` as a PNG.

matplotlib is imported inside :func:`plot_accuracy`, so that importing this module (or the command line)
never pays for it. The figure is drawn on an Agg canvas directly, without pyplot: no display is needed and
the caller's global backend (a notebook's, say) is left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from art_wdat.evaluation.registry import ATTACK_NAMES
from art_wdat.evaluation.report import EvaluationResult

Results = EvaluationResult | Mapping[str, EvaluationResult]
_MARKERS = {"pgd": "o", "autoattack": "s", "wpgd": "^", "wpgd-budget": "v", "wauto": "D"}


def _draw(ax, result: EvaluationResult, title: str | None) -> None:
    """One panel: a line per attack, clean accuracy dashed, [A·R^l, A·R^u] shaded."""
    budgets = result.budget_values()
    for key in result.attacks:
        ax.plot(budgets, [b.accuracy(key) for b in result.budgets], marker=_MARKERS.get(key, "o"),
                label=ATTACK_NAMES.get(key, key))
    ax.axhline(result.clean_accuracy, color="grey", linestyle="--", linewidth=1, label="clean")
    low = [b.clean_accuracy * b.r_lower for b in result.budgets]
    high = [b.clean_accuracy * b.r_upper for b in result.budgets]
    # Where a bound is undefined (NaN) matplotlib leaves a gap in the band instead of drawing nonsense.
    if any(not math.isnan(v) for v in low + high):
        ax.fill_between(budgets, low, high, alpha=0.2, color="tab:purple", label="A·[R^l, R^u]")
    ax.set_xlabel("budget δ (ε for pointwise attacks)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    head = f"p = {'inf' if math.isinf(result.p) else f'{result.p:g}'}, norm = " \
           f"{'inf' if math.isinf(result.norm) else f'{result.norm:g}'}"
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=10)
    ax.legend(fontsize=8)


def plot_accuracy(results: Results, path: str | os.PathLike, title: str | None = None, dpi: int = 120
                  ) -> Path:
    """Write accuracy against budget, one line per attack with the bounds shaded, to a PNG.

    :param results: One result, or a mapping label -> result drawn as panels side by side (shared y axis).
    :param path: The PNG to write; its folder is created.
    :param title: Figure title.
    :param dpi: Resolution.
    :return: The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = {None: results} if isinstance(results, EvaluationResult) else dict(results)
    if not panels:
        raise ValueError("nothing to plot: `results` is empty")
    fig = Figure(figsize=(5.5 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)
    for ax, (label, result) in zip(axes[0], panels.items()):
        _draw(ax, result, label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
