"""``ThreatSpec``: the threat and the solver's steps, declared and checked in one place.

The attack and the trainer's inner maximisation take the same keywords (eps, p, norm, method, max_iter, eps_step,
budget_rounds); both build a :class:`ThreatSpec` from them, so the checks, the default step and the ball exist once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast, get_args

import numpy as np

from art_wdat.core.engine import AttackConfig, StepMethod
from art_wdat.core.losses import LossFn
from art_wdat.core.threat import SUPPORTED_NORMS, WassersteinBall
from art_wdat.validation import check_int, check_number

#: The solvers of the distributional threat: W-PGD and W-PGD-Budget (:doc:`/maths`), which step the engine's loop,
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


def eps_limit(norm: float, clip_values: Any, input_shape: Sequence[int]) -> tuple[float, str]:
    """The largest plausible budget in the box ``clip_values`` for the ground norm, and what it is.

    ℓ∞: half the widest range (from the middle, every point of the box is then reachable); ℓ2 and ℓ1: the box's
    diameter, sqrt(d)·(hi − lo) and d·(hi − lo) for d features of one range (per-feature ranges are summed).
    """
    lo, hi = (np.asarray(v, dtype=np.float64) for v in clip_values)
    try:
        width = np.broadcast_to(hi - lo, tuple(input_shape))
    except ValueError:  # bounds that do not broadcast to one input: bound the range by the widest
        width = np.full(tuple(input_shape), float(np.max(hi - lo)))
    if math.isinf(norm):
        return float(width.max()) / 2, "half the range of clip_values"
    if norm == 2:
        return float(np.sqrt(np.sum(width ** 2))), "the ℓ2 diameter of the clip_values box"
    return float(np.sum(width)), "the ℓ1 diameter of the clip_values box"


def check_eps_scale(eps: float, norm: NormLike, clip_values: Any, input_shape: Sequence[int], *,
                    name: str = "`eps`", opt_in: str = "allow_large_eps=True") -> None:
    """ValueError when ``eps`` exceeds :func:`eps_limit`: a budget on the wrong scale (8 instead of 8/255).

    :param clip_values: The estimator's box ``(min, max)``; None (no box) checks nothing.
    :param name: How the message names the budget.
    :param opt_in: How the caller allows such a budget, for the message.
    """
    if clip_values is None:
        return
    limit, what = eps_limit(parse_norm(norm), clip_values, input_shape)
    if eps > limit:
        raise ValueError(f"{name}={eps:g} is larger than {limit:.4g}, {what} (inputs of shape {tuple(input_shape)}): "
                         "such a budget reaches every point of the box. Budgets are in the units of the inputs: for "
                         f"images in [0, 1] write 8/255 (about 0.031), not 8; pass {opt_in} if you mean it.")


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

    def config(self, loss_fn: LossFn, batch_size: int, *, targeted: bool = False, keep_best: bool = True,
               amp: bool = False) -> AttackConfig:
        """The engine's settings for this threat with ``loss_fn``, ``batch_size`` inputs per pass (``amp``: the
        gradient passes under bf16 autocast, :class:`~art_wdat.core.engine.AttackConfig`).

        :raises ValueError: for "knapsack" and "auto", which are not one loop of steps (see :meth:`stepping`).
        """
        if self.method not in STEP_METHODS:
            raise ValueError(f"`method`={self.method!r} is not a step method {STEP_METHODS} of the engine.")
        return AttackConfig(ball=self.ball, loss_fn=loss_fn, eps_step=self.step, max_iter=self.max_iter,
                            method=cast(StepMethod, self.method), batch_size=batch_size, targeted=targeted,
                            keep_best=keep_best, budget_rounds=self.budget_rounds, amp=amp)


class ThreatKeywords:
    """For classes that take the threat's keywords as attributes (ART's ``set_params`` style): their ThreatSpec."""

    eps: float
    p: float
    norm: NormLike
    method: Method
    max_iter: int
    eps_step: float | None
    budget_rounds: int
    allow_large_eps: bool

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

    def check_eps_plausible(self, clip_values: Any, input_shape: Sequence[int]) -> None:
        """Refuse an ``eps`` too large for the box ``clip_values`` (:func:`check_eps_scale`), unless allowed."""
        if not isinstance(self.allow_large_eps, bool):
            raise TypeError(f"`allow_large_eps` must be a bool, got {self.allow_large_eps!r}.")
        if not self.allow_large_eps:
            check_eps_scale(self.eps, self.norm, clip_values, input_shape)

    @property
    def ball(self) -> WassersteinBall:
        """The threat model: the W_p ball of radius ``eps`` over the ground norm ``norm``."""
        return self.threat.ball
