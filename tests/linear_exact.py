"""Exact minimum-norm flips of multi-class linear models in a box (per-feature bounds, or none): test references.

For logits z = W x + b and another class j, the margin z_j − z_y gains g·δ with g = w_j − w_y, and each coordinate
can move towards sign(g_k) by at most its room to the box. The cheapest δ reaching the margin's deficit is, per norm,
a clipped move: ℓ∞ δ_k = sign(g_k)·min(t, room_k) (piecewise linear in t), ℓ2 δ_k = sign(g_k)·min(λ|g_k|, room_k)
(the KKT point), ℓ1 the coordinates filled by decreasing |g_k| (a fractional knapsack). The flip cost is the minimum
over j: the set of misclassified points is the union over j of half-spaces.
"""

from __future__ import annotations

import math

import numpy as np


def _class_cost(g: np.ndarray, need: float, room: np.ndarray, norm: float) -> float:
    """The cheapest ‖δ‖ with g·δ ≥ need and |δ_k| ≤ room_k (moving along sign(g)), in float64."""
    a = np.abs(g)
    if need <= 0:
        return 0.0
    if float((a * room).sum()) < need:
        return math.inf
    if norm == 1.0:
        cost = total = 0.0
        for k in np.argsort(-a, kind="stable"):
            if total + a[k] * room[k] >= need:
                return cost + (need - total) / a[k]
            total, cost = total + a[k] * room[k], cost + room[k]
        return math.inf
    if norm == math.inf:
        order = np.argsort(room, kind="stable")
        r, aa = room[order], a[order]
        slopes = np.cumsum(aa[::-1])[::-1]
        gain = t_prev = 0.0
        for k in range(len(r)):
            seg = slopes[k] * (r[k] - t_prev)
            if slopes[k] > 0 and gain + seg >= need:
                return t_prev + (need - gain) / slopes[k]
            gain, t_prev = gain + seg, r[k]
        return math.inf
    lo, hi = 0.0, 1.0
    while float((a * np.minimum(room, hi * a)).sum()) < need:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if float((a * np.minimum(room, mid * a)).sum()) >= need else (mid, hi)
    return float(np.linalg.norm(np.minimum(room, hi * a)))


def exact_costs(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, norm: float,
                lo: np.ndarray | float | None = 0.0, hi: np.ndarray | float | None = 1.0,
                need_extra: float = 0.0) -> np.ndarray:
    """Per input, the exact cheapest flip (0 if misclassified); ``lo``/``hi`` None: no box.

    :param need_extra: A margin the flip must exceed (the verification's tolerance, as an absolute logit margin).
    """
    x = x.reshape(len(x), -1).astype(np.float64)
    out = np.zeros(len(x))
    for i in range(len(x)):
        z = w @ x[i] + b
        if z.argmax() != y[i]:
            continue
        best = math.inf
        for j in range(w.shape[0]):
            if j == y[i]:
                continue
            g = w[j] - w[y[i]]
            if lo is None or hi is None:
                room = np.full_like(g, np.inf)
            else:
                room = np.where(g > 0, np.broadcast_to(hi, g.shape) - x[i], x[i] - np.broadcast_to(lo, g.shape))
            room = np.where(g == 0, 0.0, np.maximum(room, 0.0))
            best = min(best, _class_cost(g, z[y[i]] - z[j] + need_extra, room, norm))
        out[i] = best
    return out


def logistic_scores(model: object) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of a fitted scikit-learn logistic regression as a linear model whose argmax is its prediction: its own
    coefficients for several classes, (0, w) and (0, b) for two (p_1 > 1/2 exactly where w·x + b > 0)."""
    w = np.asarray(model.coef_, dtype=np.float64)  # type: ignore[attr-defined]
    b = np.asarray(model.intercept_, dtype=np.float64)  # type: ignore[attr-defined]
    if w.shape[0] == 1:
        return np.vstack([np.zeros_like(w), w]), np.concatenate([np.zeros(1), b])
    return w, b


def exact_linf_flip_costs(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray,
                          lo: np.ndarray | float | None = 0.0, hi: np.ndarray | float | None = 1.0) -> np.ndarray:
    """The exact box-constrained ℓ∞ flip cost of each input under the linear model (W, b) (0 if misclassified)."""
    return exact_costs(w, b, x, y, math.inf, lo, hi)
