"""FMN, the Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio, NeurIPS 2021), for ℓ∞, ℓ2 and ℓ1.

Untargeted, batched, torch only: a gradient step on the logit margin max_{j≠y} z_j − z_y with an
ℓ2-normalised step α_k, then a projection onto the ε_k-ball around x and onto the box (by default [0, 1];
per-feature bounds, or none). The radius ε_k walks towards the decision boundary: it shrinks by (1 − γ_k) (never
above the best norm found) while the current point is adversarial, grows by (1 + γ_k) once one was found and the
current point is not, and before any is found it jumps to the first-order estimate
``‖δ‖ + |margin| / ‖∇ margin‖_dual`` (times 1 + γ_k). α_k and γ_k are
cosine-annealed. Written here because no maintained implementation is a dependency of this package (adv-lib's
``fmn``, which this follows, pulls visdom in); it is checked against the closed-form distance of linear models
in ``tests/test_fmn.py``. The loop keeps every decision on the device: no host synchronisation per step.
Known limit, as in the paper: under ℓ1 the ball projection followed by the box clamp is not the projection onto
their intersection, so where the optimum saturates many coordinates FMN can stall short of the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from art_wdat.attacks.box import UNIT, Box, ClipLike

#: The dual exponent of each ground norm: the first-order distance to the boundary is ``|margin| / ‖∇‖_dual``.
DUAL = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}


def logit_margin(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """max_{j≠y} z_j − z_y per row: positive where the input is misclassified; with ``target``, z_t − z_y (a
    positive targeted margin implies a positive untargeted one)."""
    own = z.gather(1, y[:, None]).squeeze(1)
    if target is not None:
        return z.gather(1, target[:, None]).squeeze(1) - own
    return z.scatter(1, y[:, None], -math.inf).amax(dim=1) - own


def project_l1(v: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (N, D) onto the ℓ1 ball of radius ``eps`` (N,) (Duchi et al., 2008)."""
    a = v.abs()
    mu = a.sort(dim=1, descending=True).values
    cs = mu.cumsum(dim=1)
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    # The soft threshold θ is set by the largest ρ with μ_ρ > (Σ_{j≤ρ} μ_j − ε) / ρ (a prefix of the sorted row).
    rho = (mu - (cs - eps[:, None]) / k > 0).sum(dim=1, keepdim=True).clamp_min(1)
    theta = ((cs.gather(1, rho - 1) - eps[:, None]) / rho).clamp_min(0)
    inside = a.sum(dim=1, keepdim=True) <= eps[:, None]
    return torch.where(inside, v, v.sign() * (a - theta).clamp_min(0))


def project(delta: torch.Tensor, eps: torch.Tensor, norm: float) -> torch.Tensor:
    """``delta`` (N, ...) projected onto the ℓ_norm balls of radii ``eps`` (N,)."""
    flat = delta.flatten(1)
    if norm == math.inf:
        out = torch.minimum(torch.maximum(flat, -eps[:, None]), eps[:, None])
    elif norm == 2.0:
        out = flat * (eps / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)[:, None]
    else:
        out = project_l1(flat, eps)
    return out.view_as(delta)


def _cosine(k: int, steps: int, start: float, end: float) -> float:
    """The value at step k of a cosine annealing from ``start`` to ``end`` over ``steps`` steps."""
    return end + (start - end) * (1 + math.cos(math.pi * k / steps)) / 2


def fmn(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, norm: float, *,
        steps: int = 100, alpha_init: float = 1.0, alpha_final: float | None = None, gamma_init: float = 0.05,
        gamma_final: float = 0.001, rtol: float = 0.0, clip: Box | ClipLike = UNIT,
        target: torch.Tensor | None = None) -> torch.Tensor:
    """The smallest-norm misclassified point FMN visits per input (x itself where it found none).

    :param forward: Differentiable map from inputs in the box to logits.
    :param x: Clean inputs in the box (N, ...).
    :param y: Labels (N,).
    :param norm: Ground norm: inf, 2 or 1.
    :param steps: Gradient steps.
    :param alpha_init: First step size (ℓ2 length of the step); annealed to ``alpha_final`` (α_init / 100 if None).
    :param gamma_init: First relative change of ε; annealed to ``gamma_final``.
    :param rtol: A point counts as misclassified when its margin exceeds rtol·max(1, max|z|) (0: argmax only).
        A minimum-norm point ends a hair past its boundary; with the tolerance of the flip-cost verification
        here, FMN walks to the boundary that the verification accepts instead.
    :param clip: The box: (lo, hi) broadcastable to one input (numbers, arrays or tensors), or None for no box.
    :param target: Per input a class t ≠ y to push x past (the margin z_t − z_y), or None (untargeted).
    :return: Points in the box, x's shape and dtype, misclassified as FMN saw them (verify them before use).
    """
    if norm not in DUAL:
        raise ValueError(f"FMN supports the norms {sorted(DUAL)}, got {norm!r}.")
    box = clip if isinstance(clip, Box) else Box.of(clip, x)
    alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
    view = (-1, *([1] * (x.dim() - 1)))
    point = x.clone()
    eps = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
    # ε never needs to exceed the norm of the farthest point of the box.
    worst = box.farthest(x).flatten(1).norm(p=norm, dim=1)
    best_norm = torch.full_like(eps, math.inf)
    best = x.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for k in range(steps):
        alpha, gamma = _cosine(k, steps, alpha_init, alpha_final), _cosine(k, steps, gamma_init, gamma_final)
        point.requires_grad_(True)
        z = forward(point)
        margin = logit_margin(z, y, target) - rtol * z.abs().amax(dim=1).clamp_min(1.0)
        grad, = torch.autograd.grad(margin.sum(), point)
        point, margin, z = point.detach(), margin.detach(), z.detach()
        delta = point - x
        size = delta.flatten(1).norm(p=norm, dim=1)
        adv = margin > 0
        better = adv & (size < best_norm)
        best_norm = torch.where(better, size, best_norm)
        best = torch.where(better.view(view), point, best)
        found = found | adv
        to_boundary = margin.abs() / grad.flatten(1).norm(p=DUAL[norm], dim=1).clamp_min(1e-12)
        # The paper jumps to ‖δ‖ + distance exactly; on a flat boundary float rounding can then keep every
        # step a hair short of it, so the jump overshoots by the growth factor (1 + γ).
        eps = torch.where(adv, torch.minimum(eps * (1 - gamma), best_norm),
                          torch.where(found, eps, size + to_boundary) * (1 + gamma))
        eps = torch.minimum(eps, worst).to(x.dtype)  # logits may come in another dtype than x
        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        # The state is the point itself (not x + δ), so that the box clamp is exact in float32.
        point = box.clamp(x + project(delta + alpha * step, eps, norm))
    return best
