"""The knapsack view of the W_p threat: optimal selection, the accuracy curve, verified flip costs, the attack."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from art_wdat.attacks import estimator as est
from art_wdat.attacks.flip_costs import flip_costs, predict_labels
from art_wdat.attacks.knapsack import knapsack_attack, knapsack_torch
from art_wdat.attacks.spec import ThreatSpec
from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.core.knapsack import robust_accuracy_curve, select_cheapest
from art_wdat.core.threat import WassersteinBall, lp_norms

P_VALUES = (1.0, 2.0, 4.0, math.inf)


def affordable(costs: np.ndarray, p: float, eps: float) -> bool:
    if len(costs) == 0:
        return True
    if math.isinf(p):
        return bool(costs.max() <= eps)
    return bool(np.sum(costs ** p) <= eps ** p * N_OF[0])


N_OF = [0]


def brute_force(costs: np.ndarray, p: float, eps: float) -> int:
    """The largest affordable subset, by enumeration (mean over all N inputs)."""
    N_OF[0] = len(costs)
    best = 0
    for k in range(len(costs) + 1):
        for subset in itertools.combinations(range(len(costs)), k):
            if affordable(costs[list(subset)], p, eps):
                best = k
                break
    return best


def random_costs(rng: np.random.Generator, n: int) -> np.ndarray:
    c = rng.choice([0.0, 0.1, 0.25, 0.5, 1.0, math.inf], size=n) if rng.random() < 0.3 else rng.exponential(1.0, n)
    c[rng.random(n) < 0.15] = 0.0
    c[rng.random(n) < 0.15] = math.inf
    return c


@pytest.mark.parametrize("p", P_VALUES)
def test_select_cheapest_matches_brute_force(p):
    rng = np.random.default_rng(int(p) if math.isfinite(p) else 99)
    for _ in range(60):
        n = int(rng.integers(1, 8))
        costs = random_costs(rng, n)
        eps = float(rng.choice([0.0, rng.uniform(0, 1.5)]))
        mask = select_cheapest(torch.tensor(costs, dtype=torch.float64), p, eps).numpy()
        N_OF[0] = n
        assert affordable(costs[mask], p, eps), (costs, eps, mask)
        assert mask.sum() == brute_force(costs, p, eps), (costs, eps, mask)
        assert mask[costs == 0].all() and not mask[np.isinf(costs)].any()


@pytest.mark.parametrize("p", (1.0, 2.0, 4.0))
def test_ties_at_the_threshold_keep_the_budget(p):
    costs = torch.ones(4, dtype=torch.float64)
    # Two of the four tied inputs are affordable, a third is not (a hair above, against rounding of the root).
    eps = (2 / 4) ** (1 / p) * (1 + 1e-12)
    mask = select_cheapest(costs, p, eps)
    assert int(mask.sum()) == 2
    assert float(WassersteinBall(eps=eps, p=p).cost(torch.where(mask, costs, 0.0)[:, None])) <= eps * (1 + 1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_never_flipped_inputs_stay_unaffordable_at_any_budget(p):
    costs = torch.tensor([0.0, 0.5, math.inf, 2.0, math.inf], dtype=torch.float64)
    for eps in (1e300, math.inf):
        assert select_cheapest(costs, p, eps).tolist() == [True, True, False, True, False]
    assert float(robust_accuracy_curve(costs, p, [math.inf])[0]) == pytest.approx(2 / 5)


def test_zero_and_infinite_costs():
    costs = torch.tensor([0.0, math.inf, 0.0, 3.0], dtype=torch.float64)
    assert select_cheapest(costs, 2.0, 0.0).tolist() == [True, False, True, False]
    assert select_cheapest(costs, 2.0, 1e9).tolist() == [True, False, True, True]
    assert select_cheapest(costs, math.inf, 3.0).tolist() == [True, False, True, True]
    with pytest.raises(ValueError):
        select_cheapest(torch.tensor([-1.0]), 2.0, 1.0)


@pytest.mark.parametrize("p", P_VALUES)
def test_curve_counts_the_knapsack_selection(p):
    rng = np.random.default_rng(3)
    costs = torch.tensor(random_costs(rng, 50), dtype=torch.float64)
    correct = costs > 0
    deltas = np.linspace(0.0, 2.0, 21)
    curve = robust_accuracy_curve(costs, p, deltas, correct)
    for delta, acc in zip(deltas, curve.tolist(), strict=True):
        chosen = select_cheapest(costs, p, float(delta))
        assert acc == pytest.approx(float((correct & ~chosen).sum()) / 50, abs=1e-12)
    assert list(curve) == sorted(curve, reverse=True)


@pytest.fixture(scope="module")
def digits_costs(digits, digits_clf):
    _, _, x, y = digits
    x, y = x[:60], y[:60]
    return x, y, flip_costs(digits_clf, x, y, method="fab+apgd", n_iter=20, rounds=4)


def test_flip_costs_are_verified(digits_costs, digits_clf):
    x, y, fc = digits_costs
    x_t = torch.from_numpy(x)
    forward = est.forward_fn(digits_clf)
    pred = predict_labels(forward, fc.x_adv)
    found = fc.flipped
    assert found.sum() >= 0.9 * fc.correct.sum()
    assert (pred[found] != torch.from_numpy(y)[found]).all()
    assert torch.equal(lp_norms(fc.x_adv.double() - x_t.double(), math.inf)[found], fc.costs[found])
    assert (fc.costs[~fc.correct] == 0).all() and torch.equal(fc.x_adv[~found], x_t[~found])
    assert float(fc.x_adv.min()) >= 0.0 and float(fc.x_adv.max()) <= 1.0


def test_curve_equals_accuracy_of_knapsack_distribution(digits_costs, digits_clf):
    x, y, fc = digits_costs
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    forward = est.forward_fn(digits_clf)
    deltas = [0.0, 0.01, 0.03, 0.06, 0.1, 0.2]
    curve = robust_accuracy_curve(fc.costs, 2.0, deltas, fc.correct)
    for delta, expected in zip(deltas, curve.tolist(), strict=True):
        x_adv, _, _ = knapsack_torch(forward, x_t, y_t, ThreatSpec(eps=delta), fc, leftover_steps=False)
        assert float((predict_labels(forward, x_adv) == y_t).double().mean()) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("p", (2.0, math.inf))
def test_knapsack_attack_is_feasible_and_beats_wpgd(digits_costs, digits_clf, p):
    x, y, fc = digits_costs
    eps = 0.02
    x_adv, result = knapsack_attack(digits_clf, x, y, ThreatSpec(eps=eps, p=p, max_iter=10), costs=fc)
    cost = float(WassersteinBall(eps=eps, p=p).cost(torch.from_numpy(x_adv).double() - torch.from_numpy(x).double()))
    assert cost <= eps * (1 + 1e-6) and abs(result.cost - cost) <= 1e-12
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    acc = float((digits_clf.predict(x_adv).argmax(1) == y).mean())
    assert acc == pytest.approx(result.accuracy)
    assert result.n_flipped >= result.n_selected
    if math.isfinite(p):
        wpgd = WassersteinDistributionalAttack(digits_clf, eps=eps, p=p, max_iter=10, verbose=False)
        acc_wpgd = float((digits_clf.predict(wpgd.generate(x, y)).argmax(1) == y).mean())
        assert acc < acc_wpgd
