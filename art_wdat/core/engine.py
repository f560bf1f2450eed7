"""The distributional attack loop in torch: W-FGSM, W-PGD and W-PGD-Budget (:doc:`/maths`).

Knows nothing of ART or numpy. One iteration is one gradient pass over the data in batches, which
also yields the predictions of that iterate (so the best iterate costs no extra forward pass), then
one step of the whole distribution, whose normalisation (Υ) and feasibility map (C) need every
sample's gradient and perturbation norms. Statistics stay on the device until the run ends: the
loop has no ``.item()`` and no host copy.

The solvers share this loop and differ only in their step (:mod:`art_wdat.core.steps`), picked once per restart.

With ``amp`` the gradient passes run the model under bf16 autocast (:mod:`art_wdat.core.precision`); the iterates,
steps and feasibility map stay in float32/float64. What defines the returned distribution and its statistics is
then re-counted by float32 passes: Υ and the start's score (one float32 pass per restart), and the choice between
the best iterate the bf16 passes saw and the last iterate (one float32 forward each, after the feasibility map).
The intermediate iterates' statistics are the bf16 passes' own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from art_wdat.core.losses import LossFn
from art_wdat.core.precision import autocast_forward
from art_wdat.core.progress import Bar, progress_bar
from art_wdat.core.reduce import LOCAL, Reducer
from art_wdat.core.steps import BudgetStep, Clip, FixedBudgetStep, Step, WPGDStep
from art_wdat.core.threat import WassersteinBall

Forward = Callable[[torch.Tensor], torch.Tensor]
#: How the loop steps: W-PGD (the whole distribution) or W-PGD-Budget (per-input balls).
StepMethod = Literal["wpgd", "budget"]


@dataclass(frozen=True)
class AttackConfig:
    """How to attack; see :class:`~art_wdat.attacks.wasserstein.WassersteinDistributionalAttack` for each field."""

    ball: WassersteinBall
    loss_fn: LossFn
    eps_step: float
    max_iter: int
    method: StepMethod = "wpgd"
    batch_size: int = 128
    targeted: bool = False
    keep_best: bool = True
    budget_rounds: int = 1
    #: For "budget": per-input budgets δ_i fixed in advance (no allocation; the caller keeps them in the ball).
    budgets: torch.Tensor | None = None
    #: Gradient passes under bf16 autocast; the returned distribution is re-counted in float32 (module docstring).
    amp: bool = False


@dataclass
class AttackTrace:
    """What a run saw, on the host once it is over.

    :ivar success_rate: Per iterate (the start included), the fraction of inputs the attack has won:
        misclassified if untargeted, classified as the target if targeted.
    :ivar loss: Per iterate, the mean attack loss.
    :ivar sensitivity: Υ at the first start point, from the first gradient pass.
    :ivar budgets: The per-sample budgets δ_i of the last allocation (``method="budget"``), else None.
    :ivar best_iteration: Index into the per-iterate lists of the returned iterate (its restart's).
    :ivar best_restart: The restart the returned iterate came from.
    """

    success_rate: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    sensitivity: float = float("nan")
    budgets: torch.Tensor | None = None
    best_iteration: int = -1
    best_restart: int = 0


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


def _labels_of(target: torch.Tensor) -> torch.Tensor:
    """Class indices from index targets or from soft targets (KL's clean probabilities)."""
    return target.argmax(dim=1) if target.dim() == 2 else target


class GradientPass:
    """One sweep over the data at an iterate: per-sample loss, win flag and (optionally) ∇x, batch by batch.

    Also used by :mod:`art_wdat.evaluation.metrics` for the sensitivity at the clean data.

    :param amp: Run the model under bf16 autocast (float32 logits out); the default is a float32 pass.
    """

    def __init__(self, forward: Forward, target: torch.Tensor, cfg: AttackConfig, device: torch.device, *,
                 amp: bool = False) -> None:
        self.forward = autocast_forward(forward, device) if amp else forward
        self.cfg, self.device = cfg, device
        self.target = target.to(device)
        self.labels = _labels_of(self.target)
        self.sign = -1.0 if cfg.targeted else 1.0
        #: First iteration whose logits held a NaN (-1: none), kept on the device to avoid a sync per pass.
        self.nan_at = torch.full((), -1, dtype=torch.long, device=device)

    def _loss(self, xb: torch.Tensor, sl: slice, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(xb)
        fresh = (self.nan_at < 0) & torch.isnan(logits).any()
        self.nan_at = torch.where(fresh, torch.full_like(self.nan_at, it), self.nan_at)
        losses = self.sign * self.cfg.loss_fn(logits, self.target[sl])
        if losses.shape != (xb.shape[0],):
            raise ValueError(f"`loss` must return one value per sample, shape ({xb.shape[0]},); "
                             f"got {tuple(losses.shape)}.")
        hit = logits.argmax(dim=1) == self.labels[sl]
        return losses, hit if self.cfg.targeted else ~hit

    def __call__(self, x_adv: torch.Tensor, grad_out: torch.Tensor | None,
                 it: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = x_adv.shape[0]
        losses = x_adv.new_empty(n)
        wins = torch.empty(n, dtype=torch.bool, device=x_adv.device)
        for sl in _batches(n, self.cfg.batch_size):
            # A no-op unless streaming: then x_adv lives in host memory and only the batch travels.
            xb = x_adv[sl].to(self.device, non_blocking=True)
            if grad_out is None:
                with torch.no_grad():
                    lb, wb = self._loss(xb, sl, it)
            else:
                xb.requires_grad_(True)
                lb, wb = self._loss(xb, sl, it)
                # autograd.grad rather than backward(): no parameter gradients are computed or kept.
                (g,) = torch.autograd.grad(lb.sum(), xb)
                grad_out[sl] = g
            losses[sl], wins[sl] = lb.detach(), wb
        return losses, wins


def step_for(cfg: AttackConfig, x: torch.Tensor, clip: Clip | None, reducer: Reducer) -> Step:
    """The step of ``cfg.method``, picked once per restart, with no budgets allocated yet."""
    if cfg.method == "budget" and cfg.budgets is not None:
        return FixedBudgetStep(cfg.ball, cfg.eps_step, x, clip, reducer, max_iter=cfg.max_iter, budgets=cfg.budgets)
    if cfg.method == "budget":
        return BudgetStep(cfg.ball, cfg.eps_step, x, clip, reducer, max_iter=cfg.max_iter,
                          budget_rounds=cfg.budget_rounds)
    if cfg.method == "wpgd":
        return WPGDStep(cfg.ball, cfg.eps_step, x, clip, reducer)
    raise ValueError(f"`method` must be 'wpgd' or 'budget', got {cfg.method!r}.")


class _Best:
    """The best iterate of the whole distribution: most wins, ties broken by the larger total loss."""

    def __init__(self, x_adv: torch.Tensor, reducer: Reducer) -> None:
        self.reducer = reducer
        self.x = x_adv.clone()
        self.score = torch.full((2,), -math.inf, dtype=torch.float64, device=x_adv.device)
        self.where = torch.full((2,), -1, dtype=torch.long, device=x_adv.device)

    def offer(self, x_adv: torch.Tensor, score: torch.Tensor, restart: int, it: int) -> None:
        better = (score[0] > self.score[0]) | ((score[0] == self.score[0]) & (score[1] > self.score[1]))
        # torch.where instead of an `if`: the decision stays on the device, no sync per iteration.
        self.x = torch.where(better, x_adv, self.x)
        self.score = torch.where(better, score, self.score)
        self.where = torch.where(better, torch.tensor([restart, it], device=x_adv.device), self.where)


class _Record:
    """What a tracked run keeps on the device: every iterate's (wins, total loss), the best iterate, Υ at the start."""

    def __init__(self, x: torch.Tensor, cfg: AttackConfig, reducer: Reducer) -> None:
        self.cfg, self.reducer = cfg, reducer
        self.history: list[torch.Tensor] = []
        self.best = _Best(x, reducer) if cfg.keep_best else None
        self.upsilon: torch.Tensor | None = None

    def observe(self, x_adv: torch.Tensor, losses: torch.Tensor, wins: torch.Tensor, grad: torch.Tensor,
                restart: int, it: int) -> None:
        """Score the iterate ``x_adv`` from its gradient pass; the first call also takes Υ from ``grad``."""
        score = _score(losses, wins, self.reducer)
        self.history.append(score)
        if self.best is not None:
            self.best.offer(x_adv, score, restart, it)
        if self.upsilon is None:
            self.upsilon = self.cfg.ball.sensitivity(self.cfg.ball.dual_norms(grad), self.reducer)

    def correct(self, restart: int, it: int, score: torch.Tensor) -> None:
        """Replace the recorded score of iterate ``it`` of ``restart`` by ``score`` (a float32 re-count)."""
        self.history[restart * (self.cfg.max_iter + 1) + it] = score

    def where(self, restarts: int) -> tuple[int, int]:
        """(restart, iteration) of the iterate the run returns: the best one, or the last without ``keep_best``."""
        if self.best is None:
            return restarts - 1, self.cfg.max_iter
        restart, it = (int(v) for v in self.best.where.cpu())
        return restart, it

    def trace(self, x: torch.Tensor, restarts: int, where: tuple[int, int] | None = None) -> AttackTrace:
        """The host-side trace of the returned iterate's restart (one sync, at the end of the run).

        :param where: (restart, iteration) of the returned iterate, when not :meth:`where`'s (``amp``'s re-count).
        """
        cfg, trace = self.cfg, AttackTrace()
        trace.sensitivity = float(self.upsilon) if self.upsilon is not None else float("nan")
        n = self.reducer.sum(x.new_tensor(float(x.shape[0]), dtype=torch.float64)).clamp_min(1.0)
        h = (torch.stack(self.history) / n).cpu()
        trace.best_restart, trace.best_iteration = where or self.where(restarts)
        per_run = cfg.max_iter + 1
        sl = slice(trace.best_restart * per_run, (trace.best_restart + 1) * per_run)
        trace.success_rate, trace.loss = h[:, 0].tolist()[sl], h[:, 1].tolist()[sl]
        if cfg.targeted:
            trace.loss = [-v for v in trace.loss]
        return trace


def _score(losses: torch.Tensor, wins: torch.Tensor, reducer: Reducer) -> torch.Tensor:
    """[inputs won, loss sum] of one pass over all ranks, in float64."""
    return reducer.sum(torch.stack([wins.double().sum(), losses.double().sum()]))


class _Float32Check:
    """``amp``'s float32 re-counts: Υ and the score of each restart's start, and the choice of the returned iterate.

    :param exact: A float32 :class:`GradientPass` of the run's forward and targets.
    """

    def __init__(self, exact: GradientPass, record: _Record, reducer: Reducer) -> None:
        self.exact, self.record, self.reducer = exact, record, reducer

    def start(self, x_adv: torch.Tensor, grad: torch.Tensor, restart: int) -> torch.Tensor:
        """The float32 score of a restart's start; the first also sets Υ from a float32 gradient (into ``grad``,
        which the first bf16 pass overwrites next)."""
        first = restart == 0
        losses, wins = self.exact(x_adv, grad if first else None, 0)
        if first:
            ball = self.record.cfg.ball
            self.record.upsilon = ball.sensitivity(ball.dual_norms(grad), self.reducer)
        return _score(losses, wins, self.reducer)

    def choose(self, x: torch.Tensor, x_last: torch.Tensor, restarts: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Of the best iterate the bf16 passes saw and the last one, each mapped into the ball, the one with more
        inputs won in float32 (then the higher float32 loss; the bf16 best on a tie); its score is recorded.

        :return: (the returned iterate, its (restart, iteration)).
        """
        ball, record = self.record.cfg.ball, self.record
        last = (restarts - 1, record.cfg.max_iter)
        options = [(last, x_last)]
        if record.best is not None and record.where(restarts) != last:
            options.insert(0, (record.where(restarts), record.best.x))
        best: tuple[torch.Tensor, tuple[int, int], torch.Tensor] | None = None
        for where, x_it in options:
            x_ok = ball.enforce(x, x_it, self.reducer)
            score = _score(*self.exact(x_ok, None, 0), self.reducer)
            if best is None or _beats(score, best[2]):
                best = (x_ok, where, score)
        assert best is not None
        record.correct(*best[1], best[2])
        return best[0], best[1]


def _beats(score: torch.Tensor, other: torch.Tensor) -> bool:
    """More inputs won, or as many and a higher loss sum."""
    return bool(score[0] > other[0]) or bool(score[0] == other[0] and score[1] > other[1])


def _climb(one_pass: GradientPass, step: Step, x_adv: torch.Tensor, grad: torch.Tensor, restart: int,
           record: _Record | None, bar: Bar) -> None:
    """One restart: ``max_iter`` steps of ``x_adv`` in place, plus a last pass that scores the final iterate."""
    max_iter = one_pass.cfg.max_iter
    for it in range(max_iter + (0 if record is None else 1)):
        last = it == max_iter
        losses, wins = one_pass(x_adv, None if last else grad, it)
        if record is not None:
            record.observe(x_adv, losses, wins, grad, restart, it)
        if not last:
            step(x_adv, grad, it)
            bar.update(1)


def _raise_on_nan(one_pass: GradientPass, reducer: Reducer, restart: int) -> None:
    """Raise ValueError if the model returned NaN logits on any rank during restart ``restart``.

    One sync per restart, not per iteration. Reduced first: every rank must raise together, or the others hang
    in a collective.
    """
    nan_at = reducer.max(one_pass.nan_at)
    if int(nan_at) >= 0:
        raise ValueError(f"The model returned NaN logits during the attack (restart {restart}, iteration "
                         f"{int(nan_at)}); check the model and the inputs.")


def run_distribution_attack(forward: Forward, x: torch.Tensor, target: torch.Tensor, cfg: AttackConfig, *,
                            start: Callable[[torch.Tensor], torch.Tensor] | None = None, restarts: int = 1,
                            clip: Clip | None = None, reducer: Reducer = LOCAL, track: bool = True,
                            verbose: bool = False, device: torch.device | None = None
                            ) -> tuple[torch.Tensor, AttackTrace]:
    """Attack the distribution ``x`` (all of it: the budget is shared) and return (x_adv, trace).

    :param forward: Maps a batch of inputs (as in ``x``) to logits, differentiably.
    :param x: The clean inputs, on the compute device.
    :param target: Class indices (N,), or clean probabilities (N, K) for the KL loss.
    :param cfg: The attack's settings.
    :param start: Maps x to a start point for each restart; ``None`` starts at x.
    :param restarts: Number of runs from ``start``; the best iterate over all of them is returned.
    :param clip: (min, max) of the input box, or ``None``.
    :param reducer: Sums and maxima over the whole distribution (see :mod:`art_wdat.core.reduce`).
    :param track: Keep the best iterate and per-iterate statistics. ``False`` returns the last iterate
        and skips the final evaluation pass (used by the trainer's inner maximisation).
    :param verbose: Show a progress bar over iterations (on a terminal only: :mod:`art_wdat.core.progress`).
    :param device: Where the model runs, if not where ``x`` is: then ``x`` and every tensor of its size stay
        where they are (host memory, for inputs larger than the device) and batches are streamed.
    """
    if cfg.ball.eps == 0:
        return x.clone(), AttackTrace()
    device = device or x.device
    one_pass = GradientPass(forward, target, cfg, device, amp=cfg.amp)
    grad = torch.empty_like(x)
    record = _Record(x, cfg, reducer) if track else None
    check = _Float32Check(GradientPass(forward, target, cfg, device), record, reducer) \
        if cfg.amp and record is not None else None
    bar = progress_bar(restarts * cfg.max_iter, f"W-PGD ({cfg.method})", verbose)
    for restart in range(restarts):
        x_adv = x.clone() if start is None else start(x)
        step = step_for(cfg, x, clip, reducer)
        start_score = None if check is None else check.start(x_adv, grad, restart)
        _climb(one_pass, step, x_adv, grad, restart, record, bar)
        # Skipped untracked (the trainer's inner loop), where a NaN shows in the loss.
        if record is not None:
            _raise_on_nan(one_pass, reducer, restart)
        if record is not None and start_score is not None:
            record.correct(restart, 0, start_score)
    bar.close()
    if record is not None and check is not None:
        returned, where = check.choose(x, x_adv, restarts)
        trace = record.trace(x, restarts, where)
    else:
        trace = AttackTrace() if record is None else record.trace(x, restarts)
        chosen = x_adv if record is None or record.best is None else record.best.x
        # Float32 rounding of x + Δ may overshoot the budget by an ulp: fix the returned iterate only.
        returned = cfg.ball.enforce(x, chosen, reducer)
    trace.budgets = step.radius
    return returned, trace
