"""Accuracy-against-budget curves of :class:`~art_wdat.evaluation.EvaluationResult` as PNGs.

:func:`plot_accuracy` draws one line per attack at the evaluated budgets, with the bounds shaded;
:func:`plot_knapsack_curve` draws the knapsack's whole curve (``result.curve``), one line per order p.
matplotlib is imported inside each, so that importing this module (or the command line) never pays for it.
The figures are drawn on an Agg canvas directly, without pyplot: no display is needed and the caller's global
backend (a notebook's, say) is left alone. Both put the budget on the same axis: k/255 for colour images in [0, 1]
under the ℓ∞ ground norm (``result.per_255``), δ itself otherwise. Titles are wrapped to the figure's width, so a
long model path is never cut off.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from art_wdat.evaluation.curve import accuracy_curve
from art_wdat.evaluation.registry import ATTACK_NAMES
from art_wdat.evaluation.report import EvaluationResult, format_order

Results = EvaluationResult | Mapping[str, EvaluationResult]
#: Budgets at which :func:`plot_knapsack_curve` evaluates the exact curve from the stored flip costs.
_DENSE = 601
_MARKERS = {"pgd": "o", "autoattack": "s", "wpgd": "^", "wpgd-budget": "v", "wauto": "D"}
#: Figure width per panel, in inches.
_PANEL_WIDTH = 5.5


def _scale(result: EvaluationResult, per_255: bool | None) -> float:
    """255 when the budget axis reads k/255 (``per_255``, else the result's own unit), 1 otherwise."""
    if per_255 is None:
        per_255 = result.per_255 or (result.curve is not None and result.curve.per_255)
    return 255.0 if per_255 else 1.0


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (paths break anywhere)."""
    # About 0.6 em per character of matplotlib's default sans-serif font, a safe upper bound for paths and digits.
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_long_words=True, break_on_hyphens=False)
                     for line in text.splitlines())


def _draw(ax, result: EvaluationResult, title: str | None, per_255: bool | None = None) -> None:
    """One panel: a line per attack, clean accuracy dashed, [A·R^l, A·R^u] shaded."""
    scale = _scale(result, per_255)
    budgets = [b * scale for b in result.budget_values()]
    for key in result.attacks:
        ax.plot(budgets, [b.accuracy(key) for b in result.budgets], marker=_MARKERS.get(key, "o"),
                label=ATTACK_NAMES.get(key, key))
    ax.axhline(result.clean_accuracy, color="grey", linestyle="--", linewidth=1, label="clean")
    low = [b.clean_accuracy * b.r_lower for b in result.budgets]
    high = [b.clean_accuracy * b.r_upper for b in result.budgets]
    # Where a bound is undefined (NaN) matplotlib leaves a gap in the band instead of drawing nonsense.
    if any(not math.isnan(v) for v in low + high):
        ax.fill_between(budgets, low, high, alpha=0.2, color="tab:purple", label=r"$A\cdot[R^l,\,R^u]$")
    unit = " (k/255)" if scale > 1 else ""
    ax.set_xlabel(f"budget δ{unit} (ε for pointwise attacks)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    head = f"p = {format_order(result.p)}, norm = {format_order(result.norm)}"
    ax.set_title(_wrap(f"{title}\n{head}" if title else head, _PANEL_WIDTH, 10), fontsize=10)
    ax.legend(fontsize=8)


def _figure(panels: int) -> tuple:
    """A figure on its own Agg canvas (no pyplot) with ``panels`` axes side by side sharing y."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_PANEL_WIDTH * panels, 4.2))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, panels, sharey=True, squeeze=False)[0]


def _save(fig, path: str | os.PathLike, title: str | None, dpi: int) -> Path:
    if title:
        fontsize = 12.0
        fig.suptitle(_wrap(title, fig.get_figwidth(), fontsize), fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _panels(results: Results) -> dict:
    panels = {None: results} if isinstance(results, EvaluationResult) else dict(results)
    if not panels:
        raise ValueError("nothing to plot: `results` is empty")
    return panels


def plot_accuracy(results: Results, path: str | os.PathLike, title: str | None = None, dpi: int = 120, *,
                  per_255: bool | None = None) -> Path:
    """Write accuracy against budget, one line per attack with the bounds shaded, to a PNG.

    :param results: One result, or a mapping label -> result drawn as panels side by side (shared y axis).
    :param path: The PNG to write; its folder is created.
    :param title: Figure title (wrapped to the figure's width).
    :param dpi: Resolution.
    :param per_255: x in k/255 (True) or in δ (False); None: as the result says (``per_255``), the same axis as
        :func:`plot_knapsack_curve`'s.
    :return: The path written.
    """
    panels = _panels(results)
    fig, axes = _figure(len(panels))
    for ax, (label, result) in zip(axes, panels.items()):
        _draw(ax, result, label, per_255)
    return _save(fig, path, title, dpi)


def _symbol(order: str) -> str:
    return "∞" if order == "inf" else order


def _draw_curve(ax, result: EvaluationResult, title: str | None, per_255: bool | None) -> None:
    """One panel: the knapsack curve per p; W-AutoAttack's accuracy at the evaluated budgets as points."""
    curve = result.curve
    if curve is None:
        raise ValueError("no knapsack curve to plot: the evaluation did not run W-AutoAttack at a budget > 0")
    scale = _scale(result, per_255)
    # The curve is a step function of δ: drawn exactly on a fine grid from the stored costs when there are some.
    dense = np.linspace(0.0, curve.deltas[-1], _DENSE) if curve.sorted_costs else np.asarray(curve.deltas)
    for order, values in curve.accuracy.items():
        ys = accuracy_curve(np.asarray(curve.sorted_costs), float(order), dense) if curve.sorted_costs else values
        ax.plot(dense * scale, ys, label=f"knapsack, p = {_symbol(order)}",
                linewidth=2.2 if order == format_order(result.p) else 1.4)
    if "wauto" in result.attacks:
        ax.plot([b.budget * scale for b in result.budgets], [b.accuracy("wauto") for b in result.budgets],
                linestyle="none", marker=_MARKERS["wauto"], color="black",
                label=f"{ATTACK_NAMES['wauto']}, p = {_symbol(format_order(result.p))}")
    ax.axhline(result.clean_accuracy, color="grey", linestyle="--", linewidth=1, label="clean")
    unit = " (k/255)" if scale > 1 else ""
    ax.set_xlabel(f"budget δ{unit}, ground norm ℓ{_symbol(format_order(result.norm))}")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    source = f"{curve.source_budget * scale:.4g}{'/255' if scale > 1 else ''}"
    head = f"knapsack, from the flip costs of one run (δ = {source})"
    ax.set_title(_wrap(f"{title}\n{head}" if title else head, _PANEL_WIDTH, 10), fontsize=10)
    ax.legend(fontsize=8)


def plot_knapsack_curve(results: Results, path: str | os.PathLike, title: str | None = None, *,
                        per_255: bool | None = None, dpi: int = 120) -> Path:
    """Write the knapsack's accuracy against the budget (``result.curve``), one line per order p, to a PNG.

    The curve comes from W-AutoAttack's flip costs of one run and is exact for the knapsack alone at every δ;
    W-AutoAttack's own accuracy at the evaluated budgets is drawn as points (never above the line of its p).

    :param results: One result, or a mapping label -> result drawn as panels side by side; each needs a curve.
    :param path: The PNG to write; its folder is created.
    :param title: Figure title (wrapped to the figure's width).
    :param per_255: x in k/255 (True) or in δ (False); None: as the result says (colour images in [0, 1], ℓ∞), the
        same axis as :func:`plot_accuracy`'s.
    :param dpi: Resolution.
    :return: The path written.
    :raises ValueError: If a result has no curve.
    """
    panels = _panels(results)
    fig, axes = _figure(len(panels))
    for ax, (label, result) in zip(axes, panels.items()):
        _draw_curve(ax, result, label, per_255)
    return _save(fig, path, title, dpi)
