"""W-AutoAttack's flip costs are computed once per (model, inputs, ground norm) and never served to another model
state or other inputs (issue 21)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import art_wdat.attacks.auto as auto
from art_wdat import WassersteinDistributionalAttack
from art_wdat.attacks.auto import FlipCostCache
from art_wdat.evaluation import EvaluationResult, evaluate
from tests.conftest import wrap

N = 60


@pytest.fixture(scope="module")
def held_out(digits):
    _, _, x_test, y_test = digits
    return x_test[:N], y_test[:N]


@pytest.fixture
def solver_calls(monkeypatch) -> list:
    """Counts the calls of the minimum-norm solver behind the flip costs (the real solver still runs)."""
    calls: list = []
    real = auto.min_norm_costs

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(auto, "min_norm_costs", counting)
    return calls


@pytest.fixture
def own_clf(digits_clf):
    """A copy of the trained digits model, free to be changed in place."""
    return wrap(copy.deepcopy(digits_clf.model))


def _knapsack(clf, cache: FlipCostCache, eps: float = 0.05) -> WassersteinDistributionalAttack:
    return WassersteinDistributionalAttack(clf, eps=eps, p=2, method="knapsack", max_iter=2, batch_size=64,
                                           verbose=False, flip_cost_cache=cache)


def test_evaluate_computes_the_costs_once_for_every_budget_and_p(digits_clf, held_out, solver_calls):
    x, y = held_out
    cache = FlipCostCache()
    result = evaluate(digits_clf, x, y, [0.05, 0.1, 0.15], p=2, attacks=["wauto"], max_iter=3,
                      flip_cost_cache=cache)
    assert solver_calls == [N] and cache.passes == 1
    assert result.curve is not None and result.flip_cost_seconds > 0
    # The cost pass is reported once; each budget's time is its own work.
    assert all(b.attacks["wauto"].seconds >= 0 for b in result.budgets)
    assert "flip costs" in result.to_markdown()
    assert EvaluationResult.from_json(result.to_json()).flip_cost_seconds == pytest.approx(result.flip_cost_seconds)
    # Another order p on the same model and inputs: the shared cache serves the same costs.
    again = evaluate(digits_clf, x, y, [0.05], p=1, attacks=["wauto"], max_iter=3, flip_cost_cache=cache)
    assert solver_calls == [N] and again.flip_cost_seconds == 0.0
    assert again.curve is not None and again.curve.sorted_costs == result.curve.sorted_costs


def test_without_wauto_no_cost_time_is_reported(digits_clf, held_out, solver_calls):
    x, y = held_out
    result = evaluate(digits_clf, x, y, [0.05], attacks=["wpgd"], max_iter=2)
    assert not solver_calls and math.isnan(result.flip_cost_seconds)
    assert "flip costs" not in result.to_markdown()


@pytest.mark.parametrize("change", ["no_grad", "data", "load_state_dict", "buffer"])
def test_a_changed_model_state_recomputes_the_costs(own_clf, held_out, solver_calls, change):
    x, y = held_out
    cache = FlipCostCache()
    _knapsack(own_clf, cache).generate(x, y)
    _knapsack(own_clf, cache, eps=0.1).generate(x, y)
    assert cache.passes == 1
    model = own_clf.model
    weight = model[0].weight
    if change == "no_grad":  # an optimiser step: in place under no_grad
        with torch.no_grad():
            weight.add_(1e-3)
    elif change == "data":  # a write through .data, which does not bump the tensor's version counter
        version = weight._version
        weight.data[0, 0, 0, 0] += 1e-3
        assert weight._version == version
    elif change == "load_state_dict":
        state = {k: v + 1e-3 for k, v in model.state_dict().items()}
        model.load_state_dict(state)
    else:
        model.register_buffer("scale", torch.ones(1))
        _knapsack(own_clf, cache).generate(x, y)
        assert cache.passes == 2
        model.scale.mul_(2.0)
    _knapsack(own_clf, cache).generate(x, y)
    assert cache.passes == (3 if change == "buffer" else 2) == len(solver_calls)


def test_preprocessing_is_part_of_the_key(digits_clf, held_out, solver_calls):
    x, y = held_out
    cache = FlipCostCache()
    plain = wrap(digits_clf.model)
    standardised = wrap(digits_clf.model, preprocessing=(0.1, 1.0))
    _knapsack(plain, cache).generate(x, y)
    _knapsack(standardised, cache).generate(x, y)
    _knapsack(wrap(digits_clf.model, preprocessing=(0.2, 1.0)), cache).generate(x, y)
    assert cache.passes == 3
    _knapsack(wrap(digits_clf.model, preprocessing=(0.2, 1.0)), cache).generate(x, y)
    assert cache.passes == 3


def test_other_inputs_or_labels_recompute_the_costs(digits_clf, held_out, solver_calls):
    x, y = held_out
    cache = FlipCostCache()
    attack = _knapsack(digits_clf, cache)
    attack.generate(x, y)
    first = attack.last_result_.flip_costs
    attack.generate(x[: N // 2], y[: N // 2])
    x_other = x.copy()
    x_other[0, 0, 0, 0] = 1.0 - x_other[0, 0, 0, 0]
    attack.generate(x_other, y)
    y_other = y.copy()
    y_other[0] = (y_other[0] + 1) % 10
    attack.generate(x, y_other)
    assert solver_calls == [N, N // 2, N, N]
    attack.generate(x, y)
    assert len(solver_calls) == 5 and np.array_equal(attack.last_result_.flip_costs, first)
    assert attack.last_result_.flip_cost_seconds > 0
    attack.generate(x, y)
    assert len(solver_calls) == 5 and attack.last_result_.flip_cost_seconds == 0.0
