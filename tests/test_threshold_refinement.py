"""Extra effort near the knapsack's threshold (issue 26, "the last lost cell"): a weak first pass gets better exactly
where the answer is decided, never worse anywhere, every point verified."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from art_wdat.attacks.flip_costs import min_norm_costs
from art_wdat.attacks.threshold import decisive_inputs, refine_near_threshold
from art_wdat.attacks.verified import margins
from art_wdat.core.knapsack import robust_accuracy_curve
from art_wdat.core.norms import lp_norms


@pytest.fixture(scope="module")
def linear_digits(digits):
    """The logistic regression of the digits as a torch linear layer, and 120 held-out inputs."""
    x_train, y_train, x_test, y_test = digits
    lr = LogisticRegression(max_iter=3000).fit(x_train.reshape(len(x_train), -1), y_train)
    layer = torch.nn.Linear(64, 10)
    layer.weight.data = torch.tensor(lr.coef_, dtype=torch.float32)
    layer.bias.data = torch.tensor(lr.intercept_, dtype=torch.float32)
    for p in layer.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(x_test[:120].reshape(120, -1))
    return layer, x, torch.from_numpy(y_test[:120])


def test_decisive_inputs_sit_around_each_threshold():
    costs = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, math.inf], dtype=torch.float64)
    correct = torch.tensor([False] + [True] * 7)
    # p = inf at δ = 0.35: the threshold is 0.4; a window of 30% holds 0.31..0.52.
    assert decisive_inputs(costs, correct, [(0.35, math.inf)], window=0.3).nonzero().flatten().tolist() == [4, 5]
    # p = 1 at δ = 0.3 (N = 8, Σ ≤ 2.4): 0.1 + ... + 0.6 = 2.1 is affordable, the next is inf: nothing to decide.
    assert not decisive_inputs(costs, correct, [(0.3, 1.0)]).any()
    # p = 1 at δ = 0.1 (Σ ≤ 0.8): 0.1 + 0.2 + 0.3 affordable, threshold 0.4; the window holds 0.3 to 0.6, and the
    # limit keeps the nearest in ratio: 0.4, 0.5 (×1.25), 0.3 (×0.75).
    near = decisive_inputs(costs, correct, [(0.1, 1.0)], window=0.5, limit=3)
    assert near.nonzero().flatten().tolist() == [3, 4, 5]


def test_a_weak_first_pass_improves_near_the_threshold(linear_digits):
    layer, x, y = linear_digits
    weak = min_norm_costs(layer, x, y, method="fmn", fmn_steps=4)
    found = weak.flipped
    delta = 0.5 * float(weak.costs[found].median())
    budgets = [(delta, 2.0)]
    better = refine_near_threshold(layer, x, y, weak, budgets, norm=math.inf, fmn_steps=100, n_iter=30)
    near = decisive_inputs(weak.costs, weak.correct, budgets)
    # Never worse; unchanged away from the threshold; cheaper where it decides.
    assert (better.costs <= weak.costs).all()
    assert torch.equal(better.costs[~near], weak.costs[~near]) and torch.equal(better.x_adv[~near], weak.x_adv[~near])
    assert (better.costs[near] < weak.costs[near] * 0.99).sum() >= 0.5 * near.sum() > 0
    # Verified.
    ok = better.flipped
    assert (margins(layer, better.x_adv[ok], y[ok]) > 0).all()
    assert torch.equal(lp_norms(better.x_adv.double() - x.double(), math.inf)[ok], better.costs[ok])
    assert float(better.x_adv.min()) >= 0 and float(better.x_adv.max()) <= 1
    # The answer at the budget asked moves: more inputs flipped.
    before, after = (float(robust_accuracy_curve(c.costs, 2.0, [delta], correct=c.correct)[0]) for c in (weak, better))
    assert after < before
    assert weak.costs is not better.costs and np.isfinite(better.seconds) == np.isfinite(weak.seconds)
