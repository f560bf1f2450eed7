"""The plots' budget axis (one unit for curve.png and knapsack_curve.png) and titles that are never cut off."""

from __future__ import annotations

import math

import numpy as np
import pytest

from art_wdat.evaluation import plotting
from art_wdat.evaluation.curve import knapsack_curve, reads_per_255
from art_wdat.evaluation.report import AttackOutcome, BudgetResult, EvaluationResult

BUDGETS = [1 / 255, 2 / 255, 4 / 255]
LONG_PATH = "../shared/models/some/very/long/folder/structure/of/checkpoints/zoo.py:load:resnet2b_adversarial_v3"


def _result(per_255: bool, with_curve: bool = True) -> EvaluationResult:
    rows = [BudgetResult(budget=b, clean_accuracy=0.9, r_upper=0.5, r_lower=0.2,
                         attacks={k: AttackOutcome(accuracy=0.8 - 20 * b, seconds=1.0, cost=b)
                                  for k in ("pgd", "wauto")})
            for b in BUDGETS]
    curve = knapsack_curve(np.array([0.0, 0.002, 0.01, 0.02, np.inf]), 2.0, BUDGETS, source_budget=BUDGETS[0],
                           per_255=per_255) if with_curve else None
    return EvaluationResult(p=2.0, norm=math.inf, n_samples=5, clean_accuracy=0.9, v0=1.0, w0=0.5, w0_source="clean",
                            sensitivity=1.0, metrics_seconds=0.0, budgets=rows, attacks=["pgd", "wauto"], seed=0,
                            settings={}, curve=curve, per_255=per_255)


def _axes(draw, result: EvaluationResult):
    _, axes = plotting._figure(1)
    draw(axes[0], result, None, None)
    return axes[0]


@pytest.mark.parametrize("per_255", [True, False])
def test_both_plots_share_one_budget_axis(per_255):
    result = _result(per_255)
    acc, knap = _axes(plotting._draw, result), _axes(plotting._draw_curve, result)
    scale = 255.0 if per_255 else 1.0
    for ax in (acc, knap):
        assert ("(k/255)" in ax.get_xlabel()) is per_255
    np.testing.assert_allclose(acc.get_lines()[0].get_xdata(), np.array(BUDGETS) * scale)
    points = [line for line in knap.get_lines() if line.get_linestyle() == "None"][0]
    np.testing.assert_allclose(points.get_xdata(), np.array(BUDGETS) * scale)


def test_accuracy_plot_reads_the_unit_without_a_curve():
    ax = _axes(plotting._draw, _result(True, with_curve=False))
    assert "(k/255)" in ax.get_xlabel() and ax.get_lines()[0].get_xdata()[0] == pytest.approx(1.0)


def test_old_results_take_the_unit_from_their_curve():
    result = _result(True)
    result.per_255 = False  # a report written before the field: only its curve says k/255
    assert "(k/255)" in _axes(plotting._draw, result).get_xlabel()
    assert EvaluationResult.from_json(_result(True).to_json()).per_255 is True


def test_reads_per_255():
    assert reads_per_255((3, 32, 32), (0.0, 1.0), math.inf)
    assert reads_per_255((32, 32, 3), (0.0, 1.0), math.inf)
    assert not reads_per_255((3, 32, 32), (0.0, 1.0), 2.0)
    assert not reads_per_255((1, 8, 8), (0.0, 1.0), math.inf)
    assert not reads_per_255((3, 32, 32), (0.0, 255.0), math.inf)
    assert not reads_per_255((3, 32, 32), None, math.inf)
    assert not reads_per_255((10,), (0.0, 1.0), math.inf)


@pytest.mark.parametrize("plot", [plotting.plot_accuracy, plotting.plot_knapsack_curve])
def test_a_long_model_path_is_wrapped_not_cut(tmp_path, monkeypatch, plot):
    figures = []
    real = plotting._save
    monkeypatch.setattr(plotting, "_save", lambda fig, *a: (figures.append(fig), real(fig, *a))[1])
    title = f"{LONG_PATH} on npz:../shared/data/cifar10_jpeg.npz"
    assert plot(_result(True), tmp_path / "p.png", title=title).is_file()
    (fig,) = figures
    shown = fig._suptitle.get_text()
    assert "\n" in shown and "".join(shown.split()) == "".join(title.split())  # wrapped, nothing dropped
    renderer = fig.canvas.get_renderer()
    box = fig._suptitle.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    for ax in fig.axes:
        head = ax.title.get_window_extent(renderer)
        assert head.x0 >= 0 and head.x1 <= fig.bbox.width


def test_wrap_keeps_every_character():
    text = plotting._wrap(LONG_PATH, 5.5, 12)
    assert "\n" in text and text.replace("\n", "") == LONG_PATH
    assert plotting._wrap("short", 5.5, 12) == "short"

