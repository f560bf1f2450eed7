"""The Wasserstein threat model (:doc:`/maths`): cost, steepest-ascent step, feasibility map, budget split.

Pure torch, no ART. Tensors hold one sample per row of dim 0. Every statistic that couples samples
(the cost C, the sensitivity Υ, the shrink factor) is a power mean over the *whole* distribution,
computed from per-sample norms (:mod:`art_wdat.core.norms`) through a :class:`~art_wdat.core.reduce.Reducer`,
so callers may hold the data in batches or shards. Per-sample norms and reductions run in float64: they are
N numbers, and the budget must hold to 1e-6 relative whatever N is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from art_wdat.core.norms import conjugate, lp_norms, per_sample, power_mean, project_l1_ball, round_towards
from art_wdat.core.reduce import LOCAL, Reducer

SUPPORTED_NORMS = (1.0, 2.0, math.inf)


@dataclass(frozen=True)
class WassersteinBall:
    """The ball {x' : C(x', x) ≤ eps} (:doc:`/maths`).

    :param eps: The budget δ ≥ 0.
    :param p: The Wasserstein order in [1, inf]; ``inf`` is the pointwise threat of PGD.
    :param norm: The ground norm r on inputs: 1, 2 or inf.
    """

    eps: float
    p: float = 2.0
    norm: float = math.inf

    @property
    def q(self) -> float:
        """Conjugate of p: the order of the sensitivity's power mean."""
        return conjugate(self.p)

    @property
    def dual(self) -> float:
        """Dual of the ground norm: gradients are measured in it."""
        return conjugate(self.norm)

    @property
    def pointwise(self) -> bool:
        """Whether the budget is per input (p = inf) rather than shared."""
        return math.isinf(self.p)

    # -- statistics -------------------------------------------------------------------------------
    def ground_norms(self, delta: torch.Tensor) -> torch.Tensor:
        """‖Δ_i‖_r per sample (float64)."""
        return lp_norms(delta, self.norm)

    def dual_norms(self, grad: torch.Tensor) -> torch.Tensor:
        """‖g_i‖_s per sample (float64)."""
        return lp_norms(grad, self.dual)

    def cost(self, delta: torch.Tensor, reducer: Reducer = LOCAL) -> torch.Tensor:
        """Transport cost C(x + Δ, x) of the identity coupling, over all samples."""
        return power_mean(self.ground_norms(delta), self.p, reducer)

    def sensitivity(self, grad_norms: torch.Tensor, reducer: Reducer = LOCAL) -> torch.Tensor:
        """Υ = ((1/N) Σ ‖g_i‖_s^q)^(1/q) from per-sample dual norms."""
        return power_mean(grad_norms, self.q, reducer)

    # -- the first-order step ----------------------------------------------------------------------
    def unit_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """h(g): per sample the unit ‖·‖_r vector with ⟨h, g⟩ = ‖g‖_s; zero where g = 0."""
        if math.isinf(self.norm):
            return grad.sign()
        flat = grad.flatten(1)
        if self.norm == 2:
            n = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
            return (flat / torch.where(n > 0, n, torch.ones_like(n))).view_as(grad)
        # r = 1: all mass on the coordinate of largest |g| (s = inf).
        idx = flat.abs().argmax(dim=1, keepdim=True)
        out = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx).sign())
        return out.view_as(grad)

    def step_weights(self, grad_norms: torch.Tensor, reducer: Reducer = LOCAL,
                     upsilon: torch.Tensor | None = None) -> torch.Tensor:
        """w_i = (‖g_i‖_s / Υ)^(q−1), so that d_i = w_i·h(g_i) has unit cost (float64, shape (N,)).

        p = inf gives w = 1 (FGSM/PGD). p = 1 (q = inf) puts the whole step on the samples of
        largest ‖g‖_s, N/k each for k ties. Υ = 0 (no gradient anywhere) gives w = 0.
        """
        gn = grad_norms.double()
        ups = self.sensitivity(gn, reducer) if upsilon is None else upsilon
        if self.pointwise:
            return torch.ones_like(gn)
        if math.isinf(self.q):
            top = (gn == ups) & (ups > 0)
            count = reducer.sum(gn.new_tensor(float(gn.numel())))
            ties = reducer.sum(top.double().sum()).clamp_min(1.0)
            return top.double() * (count / ties)
        safe = torch.where(ups > 0, ups, torch.ones_like(ups))
        return torch.where(ups > 0, (gn / safe) ** (self.q - 1.0), torch.zeros_like(gn))

    def allocate(self, grad_norms: torch.Tensor, reducer: Reducer = LOCAL,
                 spent: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample budgets δ_i with ((1/N) Σ δ_i^p)^(1/p) = δ exactly (:doc:`/maths`, W-PGD-Budget).

        Inputs with zero gradient (under ReDLR: those already won) keep what they have ``spent``
        (‖Δ_i‖_r: zero when the attack starts at x); the rest of the budget, B = (δ^p − mean spent^p)^(1/p),
        goes to the others as B·w_i with the unit-cost weights of :meth:`step_weights`. Without any
        gradient (Υ = 0) the rest is spread evenly. Either way each δ_i ≥ spent_i, so a re-allocation
        never undoes a win.
        """
        gn = grad_norms.double()
        if self.pointwise:
            return torch.full_like(gn, self.eps)
        locked, kept, rest = self._lock_won(gn, torch.zeros_like(gn) if spent is None else spent, reducer)
        w = self.step_weights(gn, reducer)
        has_signal = reducer.max(w.max() if w.numel() else w.new_zeros(())) > 0
        even = (kept ** self.p + rest ** self.p) ** (1.0 / self.p)
        return torch.where(has_signal, torch.where(locked, kept, rest * w), even)

    def release(self, radius: torch.Tensor, grad_norms: torch.Tensor, spent: torch.Tensor,
                reducer: Reducer = LOCAL) -> torch.Tensor:
        """The budgets ``radius`` after the inputs won since they were allocated hand back what they did not use.

        Between two allocations an input that is won (zero gradient under ReDLR) stops moving, usually well
        inside its ball: the rest of its δ_i would stay unspent until the next allocation, and for ever after the
        last one. Here such inputs keep exactly what they have ``spent`` (so no win is undone) and the budget they
        free goes to the inputs still being attacked, whose budgets all grow by one factor λ ≥ 1: the split
        between them stays the one the last allocation chose from their gradients, and
        ((1/N) Σ δ_i^p)^(1/p) = δ still holds. When no input with a budget is left to attack, nothing changes.

        :param radius: The current budgets δ_i, with ‖Δ_i‖_r ≤ δ_i.
        :param grad_norms: ‖g_i‖_s at the current iterate.
        :param spent: ‖Δ_i‖_r at the current iterate.
        """
        if self.pointwise:
            return radius
        radius = radius.double()
        locked, kept, rest = self._lock_won(grad_norms.double(), spent, reducer)
        active = power_mean(torch.where(locked, torch.zeros_like(radius), radius), self.p, reducer)
        grow = rest / torch.where(active > 0, active, torch.ones_like(active))
        return torch.where(active > 0, torch.where(locked, kept, radius * grow), radius)

    def _lock_won(self, gn: torch.Tensor, spent: torch.Tensor,
                  reducer: Reducer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(locked, kept, rest): the inputs without gradient, what they keep (their ``spent``, else 0), and
        B = (δ^p − mean kept^p)^(1/p), the budget left for the others."""
        locked = gn == 0
        kept = torch.where(locked, spent.double(), torch.zeros_like(gn))
        rest = (self.eps ** self.p - power_mean(kept, self.p, reducer) ** self.p).clamp_min(0.0) ** (1.0 / self.p)
        return locked, kept, rest

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        """x plus noise uniform in each input's ‖·‖_r ball of radius δ (inside the W_p ball for every p)."""
        if math.isinf(self.norm):
            return x + torch.empty_like(x).uniform_(-self.eps, self.eps)
        # Normalised Gaussian (r = 2) or Laplace (r = 1) noise is uniform on the sphere; U^(1/d) fills the ball.
        noise = torch.randn_like(x) if self.norm == 2 else torch.distributions.Laplace(0.0, 1.0).sample(x.shape)
        noise = noise.to(x)
        d = noise[0].numel()
        radius = self.eps * torch.rand(x.shape[0], device=x.device, dtype=torch.float64) ** (1.0 / max(d, 1))
        scale = radius / lp_norms(noise, self.norm).clamp_min(1e-12)
        return x + noise * per_sample(scale, x)

    # -- the feasibility map -----------------------------------------------------------------------
    def project_pointwise(self, delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Project each Δ_i onto its own ‖·‖_r ball of radius ``radius[i]``."""
        if math.isinf(self.norm):
            r = per_sample(radius, delta)
            return torch.minimum(torch.maximum(delta, -r), r)
        if self.norm == 2:
            n = self.ground_norms(delta)
            factor = torch.where(n > radius, radius / torch.where(n > 0, n, torch.ones_like(n)), torch.ones_like(n))
            return delta * per_sample(factor, delta)
        return project_l1_ball(delta, radius)

    def project(self, delta: torch.Tensor, reducer: Reducer = LOCAL) -> torch.Tensor:
        """Map Δ into the ball (:doc:`/maths`, the feasibility map), keeping it in any box that already held x + Δ.

        p = inf projects every sample onto the ball of radius δ. p < inf shrinks every ‖Δ_i‖_r by
        ρ = min(1, δ/C): by scaling (r = 2: the exact projection when p = 2; r = 1), or for r = inf
        by clamping Δ_i element-wise to ±ρ‖Δ_i‖_∞, which keeps more of the sign pattern. Each moves
        every coordinate towards 0, so a point inside the clip box stays inside.
        """
        if self.pointwise:
            return self.project_pointwise(delta, delta.new_full((delta.shape[0],), self.eps, dtype=torch.float64))
        norms = self.ground_norms(delta)
        c = power_mean(norms, self.p, reducer)
        rho = torch.where(c > self.eps, self.eps / torch.where(c > 0, c, torch.ones_like(c)), torch.ones_like(c))
        if math.isinf(self.norm):
            return self.project_pointwise(delta, rho * norms)
        return delta * rho.to(delta.dtype)

    def enforce(self, x: torch.Tensor, x_adv: torch.Tensor, reducer: Reducer = LOCAL) -> torch.Tensor:
        """x_adv moved towards x just enough that C(x_adv, x) ≤ eps holds exactly, float rounding included.

        ``x + Δ`` in float32 rounds to nearest, an absolute error of half an ulp of x (6e-8 near 1) that a
        small eps turns into a relative excess above 1e-6. So Δ is recomputed in float64 (the difference of
        two float32 values is exact there), mapped into the ball, and every coordinate of x + Δ is rounded
        towards x: no perturbation grows. A no-op, up to rounding towards x, when x_adv is already feasible.
        """
        x64 = x.double()
        delta = self.project(x_adv.double() - x64, reducer)
        return round_towards(x, x64 + delta)

