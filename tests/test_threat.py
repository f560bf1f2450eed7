"""The threat model's algebra (METHOD.md §2–§4), checked numerically over random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from art_wdat.core.norms import conjugate, power_mean, project_l1_ball
from art_wdat.core.reduce import LOCAL
from art_wdat.core.threat import WassersteinBall

PS = [1.0, 1.5, 2.0, 4.0, math.inf]
NORMS = [1.0, 2.0, math.inf]


def _cost(delta: torch.Tensor, p: float, r: float) -> float:
    norms = np.linalg.norm(delta.double().flatten(1).numpy(), ord=r, axis=1)
    return float(norms.max() if math.isinf(p) else np.mean(norms ** p) ** (1 / p))


cases = st.tuples(st.sampled_from(PS), st.sampled_from(NORMS), st.integers(1, 40), st.integers(1, 30),
                  st.integers(0, 2 ** 31 - 1))


@settings(max_examples=60, deadline=None)
@given(cases)
def test_step_has_unit_cost(case):
    p, r, n, d, seed = case
    n += 1  # one sample is zeroed below; keep at least one with a gradient
    g = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * torch.rand(n, 1) ** 3
    g[0] = 0.0  # a sample without gradient gets a zero step, not NaN
    ball = WassersteinBall(eps=1.0, p=p, norm=r)
    d_i = ball.unit_direction(g) * ball.step_weights(ball.dual_norms(g)).float().unsqueeze(1)
    assert torch.isfinite(d_i).all() and (d_i[0] == 0).all()
    assert _cost(d_i, p, r) == pytest.approx(1.0, rel=1e-5)
    # h(g) is the unit vector that attains the dual norm.
    h = ball.unit_direction(g)
    inner = (h * g).sum(1).double()
    assert torch.allclose(inner, ball.dual_norms(g), rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(cases, st.floats(0.01, 3.0))
def test_allocation_spends_the_budget_exactly(case, eps):
    p, r, n, d, seed = case
    gen = torch.Generator().manual_seed(seed)
    gn = torch.rand(n, generator=gen, dtype=torch.float64) * (torch.rand(n, generator=gen) > 0.3)
    ball = WassersteinBall(eps=eps, p=p, norm=r)
    budgets = ball.allocate(gn)
    assert float(power_mean(budgets, p)) == pytest.approx(eps, rel=1e-9)
    # Re-allocation keeps what won inputs (zero gradient) have spent, and still spends exactly eps.
    spent = budgets * torch.rand(n, generator=gen, dtype=torch.float64)
    again = ball.allocate(gn, spent=spent)
    assert float(power_mean(again, p)) == pytest.approx(eps, rel=1e-9)
    if not ball.pointwise:
        locked = gn == 0
        assert torch.equal(again[locked], spent[locked]) or not bool((gn > 0).any())


@settings(max_examples=60, deadline=None)
@given(cases, st.floats(0.01, 3.0))
def test_release_hands_unspent_budget_to_the_inputs_still_attacked(case, eps):
    p, r, n, d, seed = case
    gen = torch.Generator().manual_seed(seed)
    gn = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    ball = WassersteinBall(eps=eps, p=p, norm=r)
    radius = ball.allocate(gn)
    spent = radius * torch.rand(n, generator=gen, dtype=torch.float64)
    won = torch.rand(n, generator=gen) < 0.5  # won since the allocation: no gradient any more
    now = torch.where(won, torch.zeros_like(gn), gn)
    out = ball.release(radius, now, spent)
    attacked = ~won & (radius > 0)  # p = 1 gives the whole budget to the inputs of largest gradient
    if ball.pointwise or not bool(attacked.any()):
        # Nothing to share (p = inf), or nobody with a budget left to take it: the budgets stay as they are.
        assert torch.equal(out, radius.double())
        return
    # Won inputs keep exactly what they spent (no win is undone), the others only gain, and C = eps still.
    assert torch.equal(out[won], spent[won])
    assert torch.equal(out[~attacked & ~won], radius[~attacked & ~won])
    assert float(power_mean(out, p)) == pytest.approx(eps, rel=1e-9)
    # One factor λ ≥ 1 for all of them: the split the allocation chose from the gradients is kept.
    ratio = out[attacked] / radius[attacked]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-9) and float(ratio[0]) >= 1 - 1e-12
    if bool((spent[won] < radius[won]).any()):
        assert float(ratio[0]) > 1, "the unspent budget of the won inputs went unused"


@settings(max_examples=80, deadline=None)
@given(cases, st.floats(0.0, 2.0))
def test_projection_is_feasible_and_keeps_feasible_points(case, eps):
    p, r, n, d, seed = case
    delta = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    ball = WassersteinBall(eps=eps, p=p, norm=r)
    out = ball.project(delta)
    assert _cost(out, p, r) <= eps * (1 + 1e-6) + 1e-12
    assert (out.abs() <= delta.abs() + 1e-7).all(), "the map must move every coordinate towards 0"
    inside = delta * (0.5 * eps / max(_cost(delta, p, r), 1e-12))
    assert torch.allclose(ball.project(inside), inside, atol=1e-6)


def test_l1_projection_is_the_closest_point():
    torch.manual_seed(0)
    v = torch.randn(5, 12)
    radius = torch.full((5,), 1.0, dtype=torch.float64)
    out = project_l1_ball(v, radius)
    assert torch.allclose(out.abs().sum(1).double(), radius, atol=1e-5)
    # Any other point of the ball is no closer (random feasible candidates).
    for _ in range(200):
        cand = torch.randn(5, 12)
        cand = cand / cand.abs().sum(1, keepdim=True) * torch.rand(5, 1)
        assert ((v - cand).norm(dim=1) >= (v - out).norm(dim=1) - 1e-6).all()


def test_power_mean_limits_and_conjugates():
    v = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    assert float(power_mean(v, math.inf)) == 4.0
    assert float(power_mean(v, 1.0)) == pytest.approx(7 / 3)
    assert float(power_mean(torch.zeros(3), 2.0)) == 0.0
    assert float(power_mean(torch.tensor([1e-200, 1e-200], dtype=torch.float64), 50.0)) == pytest.approx(1e-200)
    assert conjugate(1.0) == math.inf and conjugate(math.inf) == 1.0 and conjugate(2.0) == 2.0
    assert LOCAL.sum(v) is v


def test_pointwise_sensitivity_is_mean_dual_norm():
    g = torch.randn(7, 10)
    ball = WassersteinBall(eps=1.0, p=math.inf, norm=math.inf)
    assert float(ball.sensitivity(ball.dual_norms(g))) == pytest.approx(g.abs().sum(1).mean().item(), rel=1e-6)
