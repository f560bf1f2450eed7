"""Per-input best of several flip-cost solvers: FMN and the chains of art_wdat.attacks.flip_costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from art_wdat.attacks import estimator as est
from art_wdat.attacks.flip_costs import MIN_NORM_METHODS, SOLVERS, flip_costs, margins
from art_wdat.core.norms import lp_norms

OPTIONS = dict(n_iter=20, rounds=4, fmn_steps=60)


@pytest.fixture(scope="module")
def inputs(digits):
    _, _, x, y = digits
    return x[:48], y[:48]


@pytest.fixture(scope="module")
def costs(inputs, digits_clf):
    x, y = inputs
    return {m: flip_costs(digits_clf, x, y, method=m, **OPTIONS) for m in ("fab+apgd", "fmn", "fab+apgd+fmn")}


def assert_verified(fc, x, y, forward, norm):
    """Every finite positive cost is the float64 ground norm of an in-box point misclassified with a margin."""
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    found = fc.flipped
    assert (margins(forward, fc.x_adv[found], y_t[found]) > 0).all()
    assert torch.equal(lp_norms(fc.x_adv.double() - x_t.double(), norm)[found], fc.costs[found])
    assert (fc.costs[~fc.correct] == 0).all() and torch.equal(fc.x_adv[~found], x_t[~found])
    assert float(fc.x_adv.min()) >= 0.0 and float(fc.x_adv.max()) <= 1.0


def test_every_method_chains_known_solvers():
    assert all(set(m.split("+")) <= set(SOLVERS) for m in MIN_NORM_METHODS)
    assert {"fmn", "fab+apgd+fmn"} <= set(MIN_NORM_METHODS)


@pytest.mark.parametrize("method", ["fmn", "fab+apgd+fmn"])
def test_costs_are_verified(costs, inputs, digits_clf, method):
    x, y = inputs
    fc = costs[method]
    assert fc.flipped.sum() >= 0.9 * fc.correct.sum()
    assert_verified(fc, x, y, est.forward_fn(digits_clf), math.inf)


def test_combination_is_the_per_input_minimum(costs):
    both = torch.minimum(costs["fab+apgd"].costs, costs["fmn"].costs)
    assert torch.equal(costs["fab+apgd+fmn"].costs, both)
    assert torch.equal(costs["fab+apgd"].correct, costs["fab+apgd+fmn"].correct)


def test_bisection_starts_from_the_cheaper_of_fab_and_fmn(inputs, digits_clf):
    x, y = inputs
    start = flip_costs(digits_clf, x, y, method="fab+fmn", **OPTIONS)
    after = flip_costs(digits_clf, x, y, method="fab+fmn+apgd", **OPTIONS)
    fab = flip_costs(digits_clf, x, y, method="fab", **OPTIONS).costs
    fmn = flip_costs(digits_clf, x, y, method="fmn", **OPTIONS).costs
    assert torch.equal(start.costs, torch.minimum(fab, fmn))
    assert (after.costs <= start.costs).all()


@pytest.mark.parametrize("norm", [2.0, 1.0])
def test_fmn_costs_are_verified_in_l2_and_l1(inputs, digits_clf, norm):
    x, y = inputs
    fc = flip_costs(digits_clf, x[:24], y[:24], norm=norm, method="fmn", fmn_steps=60)
    assert fc.flipped.sum() >= 0.9 * fc.correct.sum()
    assert_verified(fc, x[:24], y[:24], est.forward_fn(digits_clf), norm)


def test_unknown_methods_and_apgd_in_l1_are_refused(inputs, digits_clf):
    x, y = inputs
    with pytest.raises(ValueError, match="method"):
        flip_costs(digits_clf, x[:4], y[:4], method="fmn+deepfool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not supported"):
        flip_costs(digits_clf, x[:4], y[:4], norm=1.0, method="fab+apgd+fmn")
    assert np.isfinite(flip_costs(digits_clf, x[:4], y[:4], norm=1.0, method="fab+fmn", n_iter=10,
                                  fmn_steps=20).costs.numpy()).any()
