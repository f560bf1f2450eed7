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


def _knapsack(clf, cache: FlipCostCache, eps: float = 0.05, refine: bool = False) -> WassersteinDistributionalAttack:
    """The knapsack on ``cache``; without the refinement near the threshold unless asked (it reuses the first pass's
    costs, which is what these tests count)."""
    return WassersteinDistributionalAttack(clf, eps=eps, p=2, method="knapsack", max_iter=2, batch_size=64,
                                           verbose=False, flip_cost_cache=cache, refine=refine)


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
    # The first pass is served; only the refinement near the knapsack's thresholds at p = 1 is new.
    assert solver_calls == [N] and cache.passes == 1 and again.curve is not None


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


# -- issue 25, cases 5 and 6: the result is a copy; the key sees everything the forward pass reads ------------------


def test_editing_the_returned_flip_costs_does_not_reach_the_cache(digits_clf, held_out, solver_calls):
    x, y = held_out
    attack = _knapsack(digits_clf, FlipCostCache())
    first = attack.generate(x, y)
    costs = attack.last_result_.flip_costs
    kept = costs.copy()
    costs[:] = 0.0  # an edit in place (e.g. the infs set to 0 before plotting) would make every input free
    again = attack.generate(x, y)
    assert len(solver_calls) == 1
    assert np.array_equal(first, again) and np.array_equal(attack.last_result_.flip_costs, kept)


class _Normalised(torch.nn.Module):
    """A model that keeps its normalisation in a plain tensor attribute (neither parameter nor buffer)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.mean = net, torch.tensor(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - self.mean)


@pytest.mark.parametrize("change", ["plain_tensor_attribute", "forward_hook"])
def test_what_parameters_and_buffers_miss_still_changes_the_key(digits_clf, held_out, solver_calls, change):
    x, y = held_out
    model = _Normalised(copy.deepcopy(digits_clf.model))
    clf, cache = wrap(model), FlipCostCache()
    _knapsack(clf, cache).generate(x, y)
    _knapsack(clf, cache, eps=0.1).generate(x, y)
    assert cache.passes == 1
    if change == "plain_tensor_attribute":
        model.mean = torch.tensor(0.1)
    else:
        model.net.register_forward_hook(lambda module, args, out: out * torch.linspace(1, 2, 10))
    _knapsack(clf, cache).generate(x, y)
    assert cache.passes == 2 == len(solver_calls)


def test_a_model_behind_an_api_is_never_served_from_the_cache(held_out, solver_calls):
    """A BlackBoxClassifier's model may change and still agree on the inputs: no key is sound, so no cache."""
    from art.estimators.classification import BlackBoxClassifier

    x, y = held_out
    weights = np.random.default_rng(0).normal(size=(64, 10))
    clf = BlackBoxClassifier(lambda v: v.reshape(len(v), -1) @ weights, input_shape=(1, 8, 8), nb_classes=10,
                             clip_values=(0, 1))
    cache = FlipCostCache()
    attack = WassersteinDistributionalAttack(clf, eps=0.05, p=2, method="knapsack", max_queries=200, verbose=False,
                                             flip_cost_cache=cache)
    attack.generate(x, y)
    attack.generate(x, y)
    assert cache.passes == 2 == len(solver_calls)


def test_scikit_learn_models_are_keyed_by_their_state(held_out, solver_calls):
    from art.estimators.classification import SklearnClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = held_out
    flat = x.reshape(len(x), -1)
    model = LogisticRegression(max_iter=2000).fit(flat, y)
    cache = FlipCostCache()

    def run() -> None:
        WassersteinDistributionalAttack(SklearnClassifier(model, clip_values=(0, 1)), eps=0.05, p=2,
                                        method="knapsack", max_iter=2, verbose=False,
                                        flip_cost_cache=cache).generate(flat, y)

    run()
    run()
    assert cache.passes == 1
    model.intercept_[0] += 1e-3  # an in-place change of the fitted state
    run()
    assert cache.passes == 2 == len(solver_calls)


def test_an_evaluation_refines_its_costs_once_for_all_its_budgets(digits_clf, held_out, monkeypatch):
    import art_wdat.attacks.search as search

    x, y = held_out
    calls: list = []
    real = search.refine_near_threshold

    def counting(*args, **kwargs):
        calls.append(sorted(args[4]))
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "refine_near_threshold", counting)
    cache = FlipCostCache()
    evaluate(digits_clf, x, y, [0.05, 0.1, 0.15], p=2, attacks=["wauto"], max_iter=3, flip_cost_cache=cache)
    assert calls == [[(0.05, 2.0), (0.1, 2.0), (0.15, 2.0)]]
    # A direct attack at another budget refines for its own threshold, from the same first pass.
    attack = _knapsack(digits_clf, cache, eps=0.2, refine=True)
    attack.generate(x, y)
    assert cache.passes == 1 and calls[-1] == [(0.2, 2.0)]
    unrefined = _knapsack(digits_clf, cache, eps=0.2)
    unrefined.generate(x, y)
    assert len(calls) == 2 and (attack.last_result_.flip_costs <= unrefined.last_result_.flip_costs).all()
