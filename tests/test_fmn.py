"""FMN (art_wdat.attacks.fmn) against the exact minimum-norm perturbation of linear two-class models in the box."""

from __future__ import annotations

import math

import pytest
import torch

from art_wdat.attacks.fmn import fmn, logit_margin, project_l1

NORMS = (math.inf, 2.0, 1.0)
#: Near enough to 0 that every input flips inside the box at every norm within FMN's 100 steps.
BIAS = 1.5


def linear_model(d: int = 20, n: int = 16, seed: int = 0):
    """A linear two-class model and inputs in [0.3, 0.7]: logits (−s/2, s/2) with s = w·x + BIAS."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) * 0.4 + 0.3

    def forward(t: torch.Tensor) -> torch.Tensor:
        s = t.double() @ w + BIAS
        return torch.stack([-s / 2, s / 2], dim=1)

    return forward, w, x


def exact_box_distance(w: torch.Tensor, x: torch.Tensor, s: torch.Tensor, norm: float) -> float:
    """The smallest ℓ_norm perturbation δ with x + δ in [0, 1]^d and w·δ = −s (the sign change), in closed form.

    Each coordinate moves against s's sign by at most its room to the box. ℓ1: fill the coordinates by
    decreasing |w_j| (a fractional knapsack). ℓ∞: the radius t solving Σ |w_j| min(t, room_j) = |s| (bisection).
    ℓ2: the KKT point δ_j = min(λ|w_j|, room_j), λ by bisection.
    """
    direction = -torch.sign(s) * torch.sign(w)
    room, gain, need = torch.where(direction > 0, 1 - x, x), w.abs(), float(s.abs())
    if norm == 1.0:
        cost, total = 0.0, 0.0
        for j in gain.argsort(descending=True).tolist():
            if total + float(gain[j] * room[j]) >= need:
                return cost + (need - total) / float(gain[j])
            total, cost = total + float(gain[j] * room[j]), cost + float(room[j])
        return math.inf
    move = (lambda t: torch.minimum(room, torch.full_like(room, t))) if norm == math.inf else \
        (lambda t: torch.minimum(room, t * gain))
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if float((gain * move(mid)).sum()) >= need else (mid, hi)
    return float(torch.linalg.vector_norm(move(hi), ord=norm))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fmn_finds_the_exact_minimum_norm_of_a_linear_model(norm, dtype):
    forward, w, x = linear_model()
    y = forward(x).argmax(dim=1)
    adv = fmn(forward, x.to(dtype), y, norm, steps=100)
    assert adv.dtype == dtype and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert (forward(adv).argmax(dim=1) != y).all()
    got = torch.linalg.vector_norm(adv.double() - x.to(dtype).double(), ord=norm, dim=1)
    s = x @ w + BIAS
    exact = torch.tensor([exact_box_distance(w, xi, si, norm) for xi, si in zip(x, s, strict=True)])
    # No misclassified point is closer than the exact distance; FMN lands within 1% of it (float32: rounding).
    assert (got >= exact * (1 - 1e-4)).all()
    assert (got <= exact * 1.01).all(), (got / exact).tolist()


def test_rtol_makes_fmn_aim_past_the_margin_tolerance():
    forward, _, x = linear_model()
    y = forward(x).argmax(dim=1)
    z = forward(fmn(forward, x, y, math.inf, steps=100, rtol=2e-3))
    assert (logit_margin(z, y) > 2e-3 * z.abs().amax(dim=1).clamp_min(1.0)).all()


def test_fmn_leaves_misclassified_and_unflippable_inputs_at_x():
    forward, _, x = linear_model(n=4)
    y = forward(x).argmax(dim=1)
    adv = fmn(lambda t: torch.stack([t.sum(1) * 0, t.sum(1) * 0 - 1], 1), x, torch.zeros(4, dtype=torch.long),
              2.0, steps=10)
    assert torch.equal(adv, x)  # the constant model never misclassifies class 0
    adv = fmn(forward, x, 1 - y, 2.0, steps=10)
    assert torch.equal(adv, x)  # already misclassified: norm 0 is the best


def test_project_l1_is_the_euclidean_projection():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(64, 30, generator=g, dtype=torch.float64)
    eps = torch.rand(64, generator=g, dtype=torch.float64) * 30
    p = project_l1(v, eps)
    inside = v.abs().sum(1) <= eps
    assert torch.equal(p[inside], v[inside])
    assert torch.allclose(p[~inside].abs().sum(1), eps[~inside])
    # Optimality: against random feasible points of the ball, none is closer to v.
    for _ in range(20):
        q = torch.randn(64, 30, generator=g, dtype=torch.float64)
        q = q * (eps / q.abs().sum(1) * torch.rand(64, generator=g, dtype=torch.float64))[:, None]
        assert ((v - p).norm(dim=1) <= (v - q).norm(dim=1) + 1e-9).all()
    assert torch.equal(project_l1(v, torch.zeros(64, dtype=torch.float64)), torch.zeros_like(v))
