"""The W-TRADES variants of issue 14: the knapsack-informed inner solver, ReDLR inner loss, CE outer loss and the
joint pointwise + distributional objective; and the core pieces behind the knapsack-informed solver."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from art_wdat.core.engine import AttackConfig, run_distribution_attack
from art_wdat.core.knapsack import first_order_flip_costs, knapsack_budgets
from art_wdat.core.losses import kl_divergence
from art_wdat.core.threat import WassersteinBall
from art_wdat.training.trainer import WassersteinTRADESTrainer
from art_wdat.zoo.data import load_digits_split
from tests.test_trainer import EPS, batch, make_classifier, make_model


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(test_size=0.25, seed=0)


# -- the core pieces ----------------------------------------------------------------------------------------
def brute_force_count(costs: list[float], p: float, eps: float) -> int:
    """The largest number of positive-cost inputs a budget affords, by trying every subset."""
    n, best = len(costs), 0
    positive = [c for c in costs if c > 0]
    for k in range(len(positive) + 1):
        for subset in itertools.combinations(positive, k):
            if sum(c ** p for c in subset) / n <= eps ** p * (1 + 1e-12):
                best = max(best, k)
    return best


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_knapsack_budgets_spend_the_budget_on_the_most_inputs_a_knapsack_flips(p, seed):
    gen = torch.Generator().manual_seed(seed)
    costs = torch.rand(9, generator=gen, dtype=torch.float64)
    costs[torch.rand(9, generator=gen) < 0.25] = 0.0  # already misclassified
    costs[0] = math.inf  # never flipped
    eps = 0.3
    radius = knapsack_budgets(costs, p, eps)
    chosen = radius > 0
    affordable = brute_force_count(costs.tolist(), p, eps)
    assert int(chosen.sum()) == max(affordable, 1)  # none affordable: the cheapest positive input gets it all
    assert float(radius.pow(p).mean().pow(1 / p)) == pytest.approx(eps, rel=1e-9)  # the whole budget, no more
    assert not bool(chosen[costs == 0].any()) and not bool(chosen[0])
    # In proportion to the costs, each at least its own cost (the budget is spent by scaling them up).
    ratio = radius[chosen] / costs[chosen]
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    if affordable:
        assert float(ratio[0]) >= 1.0 - 1e-12


def test_knapsack_budgets_fall_back_to_the_cheapest_input_and_are_pointwise_at_p_inf():
    costs = torch.tensor([0.0, 5.0, 3.0, 9.0], dtype=torch.float64)
    radius = knapsack_budgets(costs, 2.0, 0.1)  # nothing of positive cost is affordable
    assert radius.tolist() == pytest.approx([0.0, 0.0, 0.1 * 2.0, 0.0])  # N^(1/p)·eps on the cheapest
    assert knapsack_budgets(costs, math.inf, 0.1).tolist() == [0.1] * 4
    assert knapsack_budgets(torch.zeros(3, dtype=torch.float64), 2.0, 0.1).tolist() == [0.0] * 3


@pytest.mark.parametrize("norm, dual", [(math.inf, 1.0), (2.0, 2.0), (1.0, math.inf)])
def test_first_order_flip_costs_are_exact_for_a_linear_two_class_model(norm, dual):
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 2).double()
    x = torch.rand(16, 6, dtype=torch.float64)
    labels = lin(x).argmax(1)
    labels[:4] = 1 - labels[:4]  # misclassified: cost 0
    z = x.clone().requires_grad_(True)
    costs = first_order_flip_costs(lin(z), z, labels, dual)
    assert costs[:4].tolist() == [0.0] * 4
    w = (lin.weight[1] - lin.weight[0]).detach()
    with torch.no_grad():
        margin = (lin(x)[:, 1] - lin(x)[:, 0]).abs()
    torch.testing.assert_close(costs[4:], (margin / torch.linalg.vector_norm(w, ord=dual))[4:])
    # A step of 1.001·cost along the steepest direction of the ground norm crosses the boundary.
    ball = WassersteinBall(eps=1.0, p=2.0, norm=norm)
    sign = torch.where(labels == 1, -1.0, 1.0).double().unsqueeze(1)
    direction = ball.unit_direction((sign * w).expand_as(x).clone())
    moved = lin(x + 1.001 * costs.unsqueeze(1) * direction).argmax(1)
    assert bool((moved[4:] != labels[4:]).all())


def test_fixed_budgets_keep_every_input_in_its_own_ball():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(10, 12)
    y = torch.randint(0, 3, (10,))
    budgets = torch.linspace(0.0, 0.2, 10, dtype=torch.float64)
    ball = WassersteinBall(eps=float(budgets.pow(2).mean().sqrt()), p=2.0, norm=math.inf)
    cfg = AttackConfig(ball=ball, loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="none"), eps_step=0.05,
                       max_iter=10, method="budget", keep_best=False, budgets=budgets)
    x_adv, trace = run_distribution_attack(model, x, y, cfg, track=False)
    moved = (x_adv - x).abs().amax(1).double()
    assert bool((moved <= budgets * (1 + 1e-6) + 1e-7).all()) and float(moved[0]) == 0.0
    assert float(moved[-1]) == pytest.approx(0.2, rel=1e-5)  # PGD reaches the edge of a ball on a linear model
    torch.testing.assert_close(trace.budgets, budgets)


# -- the trainer's variants ------------------------------------------------------------------------------------
def test_knapsack_inner_solver_attacks_only_the_inputs_cheapest_to_flip(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 64)
    with torch.no_grad():
        pred = clf.model(x).argmax(1)
    y = torch.where(torch.arange(64) < 8, (pred + 1) % 10, pred)  # 8 inputs misclassified
    trainer = WassersteinTRADESTrainer(clf, eps=0.05, p=2.0, max_iter=5, method="knapsack", kl_start_std=0.0)
    z = x.clone().requires_grad_(True)
    costs = first_order_flip_costs(clf.model(z), z, y, 1.0)
    x_adv = trainer.inner_maximize(x, y)
    moved = (x_adv - x).flatten(1).abs().amax(1).double()
    assert float(trainer.ball.cost(x_adv - x)) <= 0.05 * (1 + 1e-6)
    assert float(moved[:8].max()) == 0.0  # nothing spent on inputs already lost
    attacked = moved > 0
    assert 0 < int(attacked.sum()) < 56  # a knapsack, not an even spread
    # The attacked inputs are the cheapest of those correctly classified.
    assert float(costs[attacked].max()) <= float(costs[8:][~attacked[8:]].min())
    with pytest.raises(ValueError, match="needs the labels"):
        trainer.inner_maximize(x)


def test_redlr_inner_loss_and_ce_outer_loss(digits):
    clf = make_classifier(make_model(width=8))
    torch.manual_seed(0)
    clf.fit(digits[0], digits[1], batch_size=64, nb_epochs=5, verbose=False)  # a model with margins to attack
    x, y = batch(digits, 48)
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=5, method="wpgd", inner_loss="redlr",
                                       outer_loss="ce", pointwise_beta=0.0)
    torch.manual_seed(0)
    loss, x_adv = trainer.batch_loss(x, y)
    assert float(trainer.ball.cost(x_adv - x)) <= EPS * (1 + 1e-6) and float((x_adv - x).abs().max()) > 0
    clf.model.train()
    assert loss.item() == pytest.approx(F.cross_entropy(clf.model(x_adv), y).item(), rel=1e-6)
    # ReDLR ascends the margin: the inner maximiser loses more inputs than the clean batch.
    clf.model.eval()
    with torch.no_grad():
        assert int((clf.model(x_adv).argmax(1) != y).sum()) > int((clf.model(x).argmax(1) != y).sum())
    with pytest.raises(ValueError, match="needs the labels"):
        trainer.inner_maximize(x)


def replay_maximisers(trainer, x, y):
    """The batch's two inner maximisers again, with the draws ``batch_loss`` made after ``manual_seed(0)``: the
    distributional one, then the pointwise one."""
    torch.manual_seed(0)
    x_adv = trainer.inner_maximize(x, y)
    return x_adv, trainer.objective.inner_maximize(x, y, None, trainer.pointwise_threat, "kl")


def test_joint_objective_adds_a_pointwise_trades_term(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 32)
    joint = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, beta=2.0, max_iter=3, pointwise_beta=3.0,
                                     pointwise_eps=0.05)
    torch.manual_seed(0)
    loss, x_adv = joint.batch_loss(x, y)
    x_adv_again, x_point = replay_maximisers(joint, x, y)
    assert torch.equal(x_adv, x_adv_again)
    assert float((x_point - x).abs().max()) == pytest.approx(0.05, rel=1e-5)  # TRADES' ℓ∞ ball of radius 0.05
    model = clf.model
    model.train()
    logits = model(x)
    expected = (F.cross_entropy(logits, y) + 2.0 * kl_divergence(model(x_adv), F.softmax(logits, 1)).mean()
                + 3.0 * kl_divergence(model(x_point), F.softmax(logits, 1)).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert WassersteinTRADESTrainer(clf, eps=EPS, pointwise_beta=0.0).pointwise_threat is None


def test_at_p_inf_the_knapsack_and_joint_options_are_trades(digits):
    """p = inf shares no budget: the knapsack-informed solver is PGD and the joint term is left out (not doubled)."""
    x, y = batch(digits, 32)
    losses = []
    for kwargs in ({}, {"method": "knapsack", "pointwise_beta": 6.0}):
        clf = make_classifier(make_model(width=8))
        trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=math.inf, beta=2.0, max_iter=3, **kwargs)
        assert trainer.pointwise_threat is None
        torch.manual_seed(0)
        losses.append(trainer.batch_loss(x, y))
    assert torch.equal(losses[0][1], losses[1][1]) and losses[0][0].item() == losses[1][0].item()


def test_joint_pointwise_term_ascends_the_kl_whatever_the_inner_loss(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 32)
    joint = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=3, method="wpgd", inner_loss="redlr",
                                     outer_loss="ce", pointwise_beta=3.0)
    torch.manual_seed(0)
    loss, x_adv = joint.batch_loss(x, y)
    _, x_point = replay_maximisers(joint, x, y)
    model = clf.model
    model.train()
    logits = model(x)
    expected = F.cross_entropy(model(x_adv), y) + 3.0 * kl_divergence(model(x_point), F.softmax(logits, 1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cheapness_weights_fall_with_the_first_order_flip_cost(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 64)
    y = y.clone()
    y[:8] = (y[:8] + 1) % 10  # surely misclassified: no extra weight
    eps = 0.5  # the weights' cost scale; the digits' first-order costs are around it
    trainer = WassersteinTRADESTrainer(clf, eps=eps, p=2.0, cheapness_weight=3.0)
    w = trainer.objective.cheapness_weights(x, y)
    clf.model.eval()
    z = x.clone().requires_grad_(True)
    costs = first_order_flip_costs(clf.model(z), z, y, 1.0)
    raw = 1.0 + 3.0 * torch.where(costs > 0, torch.exp(-costs / eps), torch.zeros_like(costs))
    torch.testing.assert_close(w, (raw / raw.mean()).float())
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-6)  # the total KL weight stays β (+ β_pt)
    correct = costs > 0
    order = torch.argsort(costs[correct])
    assert bool((w[correct][order].diff() <= 1e-7).all())  # cheaper inputs weigh more
    assert bool((w[~correct] <= w[correct].min() + 1e-7).all())
    assert w.max() > 1.5 * w.min()  # the weights differ at all on this batch
    assert WassersteinTRADESTrainer(clf, eps=EPS).objective.cheapness_weights(x, y) is None


def test_cheapness_weighted_loss_weighs_both_kl_terms(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 32)
    trainer = WassersteinTRADESTrainer(clf, eps=0.5, p=2.0, beta=2.0, max_iter=3, pointwise_beta=3.0,
                                       pointwise_eps=EPS, cheapness_weight=5.0)
    torch.manual_seed(0)
    loss, x_adv = trainer.batch_loss(x, y)
    w = trainer.objective.cheapness_weights(x, y)
    _, x_point = replay_maximisers(trainer, x, y)
    model = clf.model
    model.train()
    logits = model(x)
    clean = F.softmax(logits, 1)
    kl_adv, kl_point = kl_divergence(model(x_adv), clean), kl_divergence(model(x_point), clean)
    expected = F.cross_entropy(logits, y) + 2.0 * (w * kl_adv).mean() + 3.0 * (w * kl_point).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The weights are not uniform here, and they change the KL part of the loss (an untrained net's KL is small).
    assert float(w.std()) > 0.05
    kl_part = 2.0 * kl_adv.mean() + 3.0 * kl_point.mean()
    weighted = 2.0 * (w * kl_adv).mean() + 3.0 * (w * kl_point).mean()
    assert abs(weighted.item() - kl_part.item()) > 0.01 * kl_part.item()


@pytest.mark.parametrize("method, inner, outer", [("knapsack", "kl", "trades"), ("knapsack", "redlr", "ce"),
                                                  ("wpgd", "redlr", "trades")])
def test_variants_train(digits, method, inner, outer):
    x_tr, y_tr, _, _ = digits
    clf = make_classifier(make_model(width=8))
    before = [p.detach().clone() for p in clf.model.parameters()]
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=2, method=method, inner_loss=inner,
                                       outer_loss=outer)
    history = trainer.fit(x_tr[:256], y_tr[:256], batch_size=64, nb_epochs=1, verbose=False, seed=0)
    assert np.isfinite(history[-1]["loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, clf.model.parameters()))


@pytest.mark.parametrize("kwargs, name", [
    ({"outer_loss": "mse"}, "outer_loss"), ({"pointwise_beta": -1.0}, "pointwise_beta"),
    ({"pointwise_eps": -0.1}, "pointwise_eps"), ({"outer_loss": "ce", "sensitivity_weight": 1.0}, "sensitivity_weight"),
    ({"method": "auto"}, "method"), ({"inner_loss": "dlr"}, "inner_loss"), ({"pointwise_eps": 8.0}, "pointwise_eps"),
    ({"cheapness_weight": -1.0}, "cheapness_weight"),
])
def test_bad_variant_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        WassersteinTRADESTrainer(make_classifier(make_model(width=4)), eps=EPS, **kwargs)
