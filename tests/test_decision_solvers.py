"""Decision-based flip costs of predict-only models (issue 26, item 2): RayS, the boundary walks, the refinement.

The model is seen through its probabilities only. References: the exact minima of a logistic regression
(tests/linear_exact.py), and a random forest's own predictions. The query budget must hold exactly: every row passed
to the model is counted for one input, verification included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from art_wdat.attacks.decision import MAX_QUERIES
from art_wdat.attacks.flip_costs import default_min_norm, min_norm_costs
from art_wdat.attacks.halving import rank_within
from art_wdat.attacks.oracle import Incumbent, Oracle
from art_wdat.attacks.verified import margins
from art_wdat.core.norms import lp_norms
from tests.linear_exact import exact_costs, logistic_scores

N = 40


class Counted:
    """A predict-only model: probabilities of a scikit-learn classifier, counting the rows asked."""

    def __init__(self, model) -> None:
        self.model, self.rows = model, 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        self.rows += t.shape[0]
        return torch.from_numpy(self.model.predict_proba(t.reshape(t.shape[0], -1).numpy()))


@pytest.fixture(scope="module")
def flat_digits(digits):
    x_train, y_train, x_test, y_test = digits
    return x_train.reshape(len(x_train), -1), y_train, x_test.reshape(len(x_test), -1)[:N], y_test[:N]


@pytest.fixture(scope="module")
def logistic(flat_digits):
    x, y, _, _ = flat_digits
    return LogisticRegression(max_iter=3000).fit(x, y)


def run(model, x, y, norm, method=None, **kwargs):
    forward = Counted(model)
    fc = min_norm_costs(forward, torch.from_numpy(x), torch.from_numpy(y), norm=norm,
                        method=method or default_min_norm(norm, gradients=False), **kwargs)
    return fc, forward


def assert_verified(fc, forward, x, y, norm, lo=0.0, hi=1.0):
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    found = fc.flipped
    assert (margins(forward, fc.x_adv[found], y_t[found]) > 0).all()
    assert torch.equal(lp_norms(fc.x_adv.double() - x_t.double(), norm)[found], fc.costs[found])
    assert (fc.costs[~fc.correct] == 0).all() and torch.equal(fc.x_adv[~found], x_t[~found])
    if lo is not None:
        assert ((fc.x_adv >= torch.as_tensor(lo)) & (fc.x_adv <= torch.as_tensor(hi))).all()


def test_rays_finds_the_exact_linf_minimum_of_a_linear_model_within_its_budget(logistic, flat_digits):
    _, _, x, y = flat_digits
    fc, forward = run(logistic, x, y, math.inf, max_queries=3000)
    # Every row the model saw is one query of one input, the verification's included, and none spent over budget.
    assert fc.queries is not None and int(fc.queries.sum()) == forward.rows and int(fc.queries.max()) <= 3000
    assert fc.seconds > 0
    assert_verified(fc, forward, x, y, math.inf)
    exact = exact_costs(*logistic_scores(logistic), x, y, math.inf)
    found = fc.flipped.numpy()
    assert found.sum() == fc.correct.sum()
    ratio = fc.costs.numpy()[found] / exact[found]
    assert ratio.min() >= 1 - 1e-6 and np.median(ratio) <= 1.01 and np.quantile(ratio, 0.9) <= 1.05, ratio


def test_targeted_rays_beats_plain_rays_on_the_linear_model(logistic, flat_digits):
    """Plain RayS stops at the cheapest flip towards one class; the search over classes finds the others' cheaper."""
    _, _, x, y = flat_digits
    plain, _ = run(logistic, x, y, math.inf, "rays", max_queries=2000)
    both, _ = run(logistic, x, y, math.inf, "rays+rays-t", max_queries=2000)
    exact = exact_costs(*logistic_scores(logistic), x, y, math.inf)
    found = (plain.flipped & both.flipped).numpy()
    plain_ratio, both_ratio = (fc.costs.numpy()[found] / exact[found] for fc in (plain, both))
    assert np.quantile(plain_ratio, 0.9) > 1.1 and np.quantile(both_ratio, 0.9) < 1.06


@pytest.mark.parametrize("norm, median", [(2.0, 1.1), (1.0, 1.15)])
def test_boundary_walks_land_near_the_exact_l2_and_l1_minima(logistic, flat_digits, norm, median):
    _, _, x, y = flat_digits
    fc, forward = run(logistic, x[:20], y[:20], norm, max_queries=2500)
    assert fc.queries is not None and int(fc.queries.sum()) == forward.rows and int(fc.queries.max()) <= 2500
    assert_verified(fc, forward, x[:20], y[:20], norm)
    exact = exact_costs(*logistic_scores(logistic), x[:20], y[:20], norm)
    found = fc.flipped.numpy()
    assert found.sum() == fc.correct.sum()
    ratio = fc.costs.numpy()[found] / exact[found]
    assert ratio.min() >= 1 - 1e-6 and np.median(ratio) <= median, ratio


@pytest.mark.parametrize("box", ["feature", "none"])
def test_decision_solvers_keep_any_box(logistic, flat_digits, box):
    _, _, x, y = flat_digits
    lo, hi = (np.linspace(-0.2, 0.0, 64, dtype=np.float32), np.linspace(1.0, 1.4, 64, dtype=np.float32)) \
        if box == "feature" else (None, None)
    clip = None if lo is None else (lo, hi)
    fc, forward = run(logistic, x[:16], y[:16], math.inf, max_queries=1500, clip=clip)
    assert fc.flipped.sum() == fc.correct.sum()
    assert_verified(fc, forward, x[:16], y[:16], math.inf, lo, hi)
    if box == "none":
        assert float(fc.x_adv.min()) < 0 or float(fc.x_adv.max()) > 1


def test_random_forest_costs_are_verified_by_its_own_predictions(flat_digits):
    x_train, y_train, x, y = flat_digits
    forest = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0).fit(x_train, y_train)
    fc, forward = run(forest, x[:20], y[:20], math.inf, max_queries=1500)
    assert int(fc.queries.max()) <= 1500 and fc.flipped.sum() >= 0.9 * fc.correct.sum()
    found = fc.flipped.numpy()
    assert (forest.predict(fc.x_adv.numpy()[found]) != y[:20][found]).all()
    assert_verified(fc, forward, x[:20], y[:20], math.inf)


def test_bad_budgets_and_methods_are_refused(logistic, flat_digits):
    _, _, x, y = flat_digits
    with pytest.raises(ValueError, match="max_queries"):
        run(logistic, x[:2], y[:2], math.inf, max_queries=10)
    with pytest.raises(ValueError, match="method"):
        run(logistic, x[:2], y[:2], math.inf, "rays+fab")
    assert MAX_QUERIES == 5000


def test_the_oracle_counts_repeated_inputs_and_the_incumbent_keeps_the_cheapest():
    x = torch.zeros(3, 2)
    oracle = Oracle(lambda t: torch.stack([-t.sum(1), t.sum(1)], 1), x, torch.zeros(3, dtype=torch.long),
                    None, torch.zeros(3, dtype=torch.long))  # type: ignore[arg-type]
    oracle.cap[:] = 2
    rows = torch.tensor([0, 0, 0, 2, 1])
    assert oracle.affordable(rows).tolist() == [True, True, False, True, True]
    assert oracle.affordable(rows, cost=2).tolist() == [True, False, False, True, True]
    answers = oracle.ask(rows, torch.tensor([[1.0, 0], [-1, 0], [0, 0], [2, 0], [0, 0]]))
    assert answers.tolist() == [True, False, False, True, False] and oracle.counts.tolist() == [3, 1, 1]
    incumbent = Incumbent(x, 2.0)
    incumbent.offer(torch.tensor([0, 0, 2, 0]), torch.tensor([[3.0, 0], [1, 0], [2, 0], [1, 0]]))
    assert incumbent.costs.tolist() == [1.0, math.inf, 2.0] and incumbent.points[0].tolist() == [1.0, 0.0]
    assert rank_within(torch.tensor([1, 0, 1, 1]), torch.tensor([0.5, 3.0, 0.2, 0.9])).tolist() == [1, 0, 0, 2]
