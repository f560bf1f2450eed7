"""The knapsack across ranks: one budget over the union of the shards, costs sorted globally (2 gloo ranks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from art_wdat import WassersteinDistributionalAttack
from art_wdat.attacks.threshold import decisive_inputs
from art_wdat.core.knapsack import robust_accuracy_curve, select_cheapest
from art_wdat.core.reduce import default_reducer
from tests.ranks import digits_shard, errors, save_digits, spawn

SHARDS = (37, 23)  # unequal on purpose
EPS = 0.03
BUDGETS = [(EPS, 2.0), (EPS, math.inf)]


def _costs() -> np.ndarray:
    """Random costs with ties, zeros and +inf, the same on every rank."""
    rng = np.random.default_rng(5)
    costs = rng.choice([0.0, 0.01, 0.02, 0.02, 0.02, 0.05, 0.1, math.inf], size=sum(SHARDS))
    return costs * rng.choice([1.0, 1.0, 1.5], size=costs.size)


def _select_shard(rank: int, world: int, tmp: str) -> None:
    lo = sum(SHARDS[:rank])
    costs = torch.from_numpy(_costs()[lo:lo + SHARDS[rank]])
    masks = {str(p): select_cheapest(costs, p, EPS, default_reducer()).numpy() for p in (1.0, 2.0, 4.0, math.inf)}
    masks["decisive"] = decisive_inputs(costs, costs > 0, BUDGETS, limit=3, reducer=default_reducer()).numpy()
    np.savez(f"{tmp}/select{rank}.npz", **masks)


def _knapsack_shard(rank: int, world: int, tmp: str) -> None:
    clf, x, y = digits_shard(tmp, rank, SHARDS)
    attack = WassersteinDistributionalAttack(clf, eps=EPS, p=2, method="knapsack", max_iter=5, batch_size=16,
                                             verbose=False)
    x_adv = attack.generate(x, y)
    np.savez(f"{tmp}/knapsack{rank}.npz", x_adv=x_adv, costs=attack.last_result_.flip_costs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_clf, digits):
    return save_digits(tmp_path_factory.mktemp("dist_knapsack"), digits_clf, digits, sum(SHARDS))


def test_ranks_select_what_one_process_selects_on_the_union(setup):
    tmp, _, _ = setup
    assert spawn(_select_shard, len(SHARDS), tmp) == [True, True], errors(tmp, len(SHARDS))
    ranks = [np.load(tmp / f"select{r}.npz") for r in range(len(SHARDS))]
    costs = torch.from_numpy(_costs())
    for p in (1.0, 2.0, 4.0, math.inf):
        joined = np.concatenate([r[str(p)] for r in ranks])
        np.testing.assert_array_equal(joined, select_cheapest(costs, p, EPS).numpy(), err_msg=f"p={p}")
    # The threshold refinement picks its inputs by the thresholds and the limit of the union, not of one shard.
    decisive = np.concatenate([r["decisive"] for r in ranks])
    np.testing.assert_array_equal(decisive, decisive_inputs(costs, costs > 0, BUDGETS, limit=3).numpy())
    assert decisive.sum() == 3


def test_one_budget_over_all_ranks(setup, digits_clf):
    tmp, x, y = setup
    assert spawn(_knapsack_shard, len(SHARDS), tmp) == [True, True], errors(tmp, len(SHARDS))
    ranks = [np.load(tmp / f"knapsack{r}.npz") for r in range(len(SHARDS))]
    x_adv = np.concatenate([r["x_adv"] for r in ranks])
    costs = np.concatenate([r["costs"] for r in ranks])
    norms = np.abs(x_adv.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    assert np.sqrt(np.mean(norms ** 2)) <= EPS * (1 + 1e-6)
    # The union's accuracy is at most the knapsack curve of the union's costs: the cheapest inputs of both shards
    # were flipped together, under one budget.
    accuracy = float((digits_clf.predict(x_adv).argmax(axis=1) == y).mean())
    curve = float(robust_accuracy_curve(torch.from_numpy(costs), 2.0, [EPS])[0])
    assert accuracy <= curve + 1e-12
    assert curve < float((costs > 0).mean()), "the budget should flip some inputs"
