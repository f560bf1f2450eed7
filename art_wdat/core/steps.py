"""One step of the distributional solvers (:doc:`/maths`): W-PGD and W-PGD-Budget.

As in foolbox 3's ``gradient_descent_base``, the solvers share one loop (:mod:`art_wdat.core.engine`) and
differ only here: in how long each sample's step is and in the map back into the ball. The engine picks the
step once per restart, so its loop never asks which solver it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from art_wdat.core.norms import per_sample
from art_wdat.core.reduce import Reducer
from art_wdat.core.threat import WassersteinBall

Clip = tuple[torch.Tensor, torch.Tensor]


class Step(ABC):
    """Moves the distribution one step and maps it back into the ball and the clip box.

    :param ball: The threat.
    :param eps_step: The step size α.
    :param x: The clean inputs.
    :param clip: (min, max) of the input box, or ``None``.
    :param reducer: Sums and maxima over the whole distribution.
    """

    #: The per-sample budgets δ_i of the last allocation (W-PGD-Budget), else None.
    radius: torch.Tensor | None = None

    def __init__(self, ball: WassersteinBall, eps_step: float, x: torch.Tensor, clip: Clip | None,
                 reducer: Reducer) -> None:
        self.ball, self.eps_step, self.x, self.clip, self.reducer = ball, eps_step, x, clip, reducer

    @abstractmethod
    def scale(self, x_adv: torch.Tensor, grad_norms: torch.Tensor, it: int) -> torch.Tensor:
        """The length of each sample's step along h(g_i), shape (N,), from the dual norms ‖g_i‖_s."""

    @abstractmethod
    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Map the perturbation Δ back into the feasible set."""

    def _clip(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.clip is None else t.clamp_(self.clip[0], self.clip[1])

    def __call__(self, x_adv: torch.Tensor, grad: torch.Tensor, it: int) -> None:
        """Move ``x_adv`` (in place) along the gradient ``grad`` of iteration ``it``."""
        scale = self.scale(x_adv, self.ball.dual_norms(grad), it)
        x_adv.add_(self.ball.unit_direction(grad) * per_sample(scale, x_adv))
        # Clip first, project second (ART's order): every feasibility map moves coordinates towards x,
        # so the result stays in the box, and the shrink sees the cost that clipping left.
        delta = self._clip(x_adv) - self.x
        self._clip(torch.add(self.x, self.project(delta), out=x_adv))


class WPGDStep(Step):
    """W-PGD: unit-cost steepest ascent of the whole distribution, then the shrink onto the ball (§2–§3)."""

    def scale(self, x_adv: torch.Tensor, grad_norms: torch.Tensor, it: int) -> torch.Tensor:
        return self.eps_step * self.ball.step_weights(grad_norms, self.reducer)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        return self.ball.project(delta, self.reducer)


class BudgetStep(Step):
    """W-PGD-Budget: per-sample budgets δ_i from the sensitivity, then pointwise PGD in each input's ball (§4).

    Two rules keep the whole budget at work until the last iterate (p < inf; at p = inf it is pointwise PGD):
    between allocations, inputs won since the last one hand what they did not spend to the others
    (:meth:`~art_wdat.core.threat.WassersteinBall.release`); and no input's step is shorter than the gap to
    its budget over the steps left, so a budget that grew late can still be reached.

    :param max_iter: The solver's iterations.
    :param budget_rounds: (Re-)allocations of the budgets, spread evenly over the iterations.
    """

    def __init__(self, ball: WassersteinBall, eps_step: float, x: torch.Tensor, clip: Clip | None,
                 reducer: Reducer, *, max_iter: int, budget_rounds: int) -> None:
        super().__init__(ball, eps_step, x, clip, reducer)
        rounds = max(1, min(budget_rounds, max_iter))
        self.max_iter = max_iter
        self.allocate_at = {round(k * max_iter / rounds) for k in range(rounds)}

    def budgets(self, grad_norms: torch.Tensor, spent: torch.Tensor, it: int) -> torch.Tensor:
        """The budgets δ_i for the step of iteration ``it``, from the gradients and ``spent`` = ‖Δ_i‖_r there."""
        # Iteration 0 is always an allocation, so the budgets exist from the first step on; inputs that a random
        # start has already won keep what it spent.
        if self.radius is None or it in self.allocate_at:
            return self.ball.allocate(grad_norms, self.reducer, spent)
        return self.ball.release(self.radius, grad_norms, spent, self.reducer)

    def scale(self, x_adv: torch.Tensor, grad_norms: torch.Tensor, it: int) -> torch.Tensor:
        spent = self.ball.ground_norms(x_adv - self.x)
        radius = self.radius = self.budgets(grad_norms, spent, it)
        step = (self.eps_step / self.ball.eps) * radius  # PGD's step α in a ball of radius δ, scaled to δ_i
        if self.ball.pointwise:
            return step
        # Never so short that the rest of δ_i, freed late by inputs won elsewhere, is out of reach.
        catch_up = (radius - spent).clamp_min(0.0) / (self.max_iter - it)
        return torch.maximum(step, catch_up)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        assert self.radius is not None, "scale() allocates the budgets before the first projection"
        return self.ball.project_pointwise(delta, self.radius)


class FixedBudgetStep(BudgetStep):
    """Pointwise PGD in per-input balls whose radii δ_i were chosen before the run (e.g. by the knapsack).

    The budgets are the caller's and never move; the caller makes them feasible, ((1/N) Σ δ_i^p)^(1/p) ≤ δ.
    """

    def __init__(self, ball: WassersteinBall, eps_step: float, x: torch.Tensor, clip: Clip | None,
                 reducer: Reducer, *, max_iter: int, budgets: torch.Tensor) -> None:
        super().__init__(ball, eps_step, x, clip, reducer, max_iter=max_iter, budget_rounds=1)
        self.radius = budgets.double()

    def budgets(self, grad_norms: torch.Tensor, spent: torch.Tensor, it: int) -> torch.Tensor:
        assert self.radius is not None
        return self.radius
