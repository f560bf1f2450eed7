"""``ThreatSpec``: the threat and the solver's steps, declared and checked in one place.

The attack and the trainer's inner maximisation take the same keywords (eps, p, norm, method, max_iter, eps_step,
budget_rounds); both build a :class:`ThreatSpec` from them, so the checks, the default step and the ball exist once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, cast, get_args

from art_wdat.core.engine import AttackConfig, StepMethod
from art_wdat.core.losses import LossFn
from art_wdat.core.threat import SUPPORTED_NORMS, WassersteinBall
from art_wdat.validation import check_int, check_number

#: The solvers of the distributional threat: W-PGD and W-PGD-Budget (METHOD.md §2–§4), which step the engine's loop,
#: the knapsack over per-input flip costs, and W-AutoAttack ("auto": the strongest of the others).
Method = Literal["wpgd", "budget", "knapsack", "auto"]
METHODS: tuple[str, ...] = get_args(Method)
STEP_METHODS: tuple[str, ...] = get_args(StepMethod)
NormLike = int | float | str

#: eps_step = EPS_STEP_RATIO · eps / max_iter by default (Bai et al., 2023).
EPS_STEP_RATIO = 1.875


def parse_norm(norm: NormLike) -> float:
    """Map ``np.inf``/"inf"/2/"2"/1 onto 1.0, 2.0 or inf; ValueError naming ``norm`` otherwise."""
    try:
        value = float(norm)
    except (TypeError, ValueError):
        value = float("nan")
    if value not in SUPPORTED_NORMS:
        raise ValueError(f"`norm` must be one of 1, 2, np.inf or 'inf', got {norm!r}.")
    return value


@dataclass(frozen=True)
class ThreatSpec:
    """The W_p ball of radius ``eps`` and how to search it; invalid values raise at construction.

    :param eps: The budget δ ≥ 0, in the units of the ground norm.
    :param p: Wasserstein order in [1, inf]; ``inf`` is the pointwise threat.
    :param norm: Ground norm: ``np.inf``/"inf", 2 or 1.
    :param method: "wpgd" or "budget" (W-PGD-Budget).
    :param max_iter: Steps of the solver; 1 is W-FGSM.
    :param eps_step: Step size; ``None`` is ``EPS_STEP_RATIO · eps / max_iter``.
    :param budget_rounds: For "budget": (re-)allocations of the per-input budgets.
    """

    eps: float
    p: float = 2.0
    norm: NormLike = math.inf
    method: Method = "wpgd"
    max_iter: int = 50
    eps_step: float | None = None
    budget_rounds: int = 10

    def __post_init__(self) -> None:
        check_number("eps", self.eps, low=0.0)
        check_number("p", self.p, low=1.0, allow_inf=True)
        parse_norm(self.norm)
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        check_int("max_iter", self.max_iter, low=1)
        if self.eps_step is not None:
            check_number("eps_step", self.eps_step, low=0.0)
        check_int("budget_rounds", self.budget_rounds, low=1)

    @property
    def ball(self) -> WassersteinBall:
        """The threat model: the W_p ball of radius ``eps`` over the ground norm."""
        return WassersteinBall(eps=float(self.eps), p=float(self.p), norm=parse_norm(self.norm))

    def stepping(self, method: StepMethod) -> ThreatSpec:
        """The same threat solved by the engine's ``method`` ("wpgd" or "budget")."""
        return replace(self, method=method)

    @property
    def step(self) -> float:
        """The step size α of every iteration."""
        return float(EPS_STEP_RATIO * self.eps / self.max_iter if self.eps_step is None else self.eps_step)

    def config(self, loss_fn: LossFn, batch_size: int, *, targeted: bool = False,
               keep_best: bool = True) -> AttackConfig:
        """The engine's settings for this threat with ``loss_fn``, ``batch_size`` inputs per pass.

        :raises ValueError: for "knapsack" and "auto", which are not one loop of steps (see :meth:`stepping`).
        """
        if self.method not in STEP_METHODS:
            raise ValueError(f"`method`={self.method!r} is not a step method {STEP_METHODS} of the engine.")
        return AttackConfig(ball=self.ball, loss_fn=loss_fn, eps_step=self.step, max_iter=self.max_iter,
                            method=cast(StepMethod, self.method), batch_size=batch_size, targeted=targeted,
                            keep_best=keep_best, budget_rounds=self.budget_rounds)


class ThreatKeywords:
    """For classes that take the threat's keywords as attributes (ART's ``set_params`` style): their ThreatSpec."""

    eps: float
    p: float
    norm: NormLike
    method: Method
    max_iter: int
    eps_step: float | None
    budget_rounds: int

    @property
    def threat(self) -> ThreatSpec:
        """The current attributes as a checked :class:`ThreatSpec` (ValueError/TypeError naming a bad one)."""
        return ThreatSpec(eps=self.eps, p=self.p, norm=self.norm, method=self.method, max_iter=self.max_iter,
                          eps_step=self.eps_step, budget_rounds=self.budget_rounds)

    def check_threat(self) -> ThreatSpec:
        """Check eps, p, norm, method, max_iter, eps_step and budget_rounds (ValueError/TypeError naming a bad one).

        :return: Them as a :class:`ThreatSpec`.
        """
        return self.threat

    @property
    def ball(self) -> WassersteinBall:
        """The threat model: the W_p ball of radius ``eps`` over the ground norm ``norm``."""
        return self.threat.ball
