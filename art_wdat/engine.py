"""The distributional attack loop in torch: W-FGSM, W-PGD and W-PGD-Budget (METHOD.md §2–§4).

Knows nothing of ART or numpy. One iteration is one gradient pass over the data in batches, which
also yields the predictions of that iterate (so the best iterate costs no extra forward pass), then
one step of the whole distribution, whose normalisation (Υ) and feasibility map (C) need every
sample's gradient and perturbation norms. Statistics stay on the device until the run ends: the
loop has no ``.item()`` and no host copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from art_wdat.losses import LossFn
from art_wdat.reduce import LOCAL, Reducer
from art_wdat.threat import WassersteinBall, _bcast

Forward = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("wpgd", "budget")


@dataclass(frozen=True)
class AttackConfig:
    """How to attack; see :class:`~art_wdat.attack.WassersteinDistributionalAttack` for each field."""

    ball: WassersteinBall
    loss_fn: LossFn
    eps_step: float
    max_iter: int
    method: str = "wpgd"
    batch_size: int = 128
    targeted: bool = False
    keep_best: bool = True
    budget_rounds: int = 1


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

    success_rate: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    sensitivity: float = float("nan")
    budgets: torch.Tensor | None = None
    best_iteration: int = -1
    best_restart: int = 0


def _batches(n: int, batch_size: int):
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


def _labels_of(target: torch.Tensor) -> torch.Tensor:
    """Class indices from index targets or from soft targets (KL's clean probabilities)."""
    return target.argmax(dim=1) if target.dim() == 2 else target


class GradientPass:
    """One sweep over the data at an iterate: per-sample loss, win flag and (optionally) ∇x, batch by batch.

    Also used by :mod:`art_wdat.metrics` for the sensitivity at the clean data.
    """

    def __init__(self, forward: Forward, target: torch.Tensor, cfg: AttackConfig, device: torch.device) -> None:
        self.forward, self.cfg, self.device = forward, cfg, device
        self.target = target.to(device)
        self.labels = _labels_of(self.target)
        self.sign = -1.0 if cfg.targeted else 1.0
        #: First iteration whose logits held a NaN (-1: none), kept on the device to avoid a sync per pass.
        self.nan_at = torch.full((), -1, dtype=torch.long, device=device)

    def _loss(self, xb: torch.Tensor, sl: slice, it: int):
        logits = self.forward(xb)
        fresh = (self.nan_at < 0) & torch.isnan(logits).any()
        self.nan_at = torch.where(fresh, torch.full_like(self.nan_at, it), self.nan_at)
        losses = self.sign * self.cfg.loss_fn(logits, self.target[sl])
        if losses.shape != (xb.shape[0],):
            raise ValueError(f"`loss` must return one value per sample, shape ({xb.shape[0]},); "
                             f"got {tuple(losses.shape)}.")
        hit = logits.argmax(dim=1) == self.labels[sl]
        return losses, hit if self.cfg.targeted else ~hit

    def __call__(self, x_adv: torch.Tensor, grad_out: torch.Tensor | None, it: int):
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


class _Stepper:
    """Moves the distribution one step and maps it back into the ball and the clip box."""

    def __init__(self, cfg: AttackConfig, x: torch.Tensor, clip, reducer: Reducer) -> None:
        self.cfg, self.x, self.clip, self.reducer = cfg, x, clip, reducer
        self.ball = cfg.ball
        self.radius: torch.Tensor | None = None
        rounds = max(1, min(cfg.budget_rounds, cfg.max_iter))
        self.allocate_at = {round(k * cfg.max_iter / rounds) for k in range(rounds)}

    def _clip(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.clip is None else t.clamp_(self.clip[0], self.clip[1])

    def __call__(self, x_adv: torch.Tensor, grad: torch.Tensor, it: int) -> None:
        gnorms = self.ball.dual_norms(grad)
        if self.cfg.method == "budget":
            if it in self.allocate_at:
                spent = None if self.radius is None else self.ball.ground_norms(x_adv - self.x)
                self.radius = self.ball.allocate(gnorms, self.reducer, spent)
            scale = (self.cfg.eps_step / self.ball.eps) * self.radius
        else:
            scale = self.cfg.eps_step * self.ball.step_weights(gnorms, self.reducer)
        x_adv.add_(self.ball.unit_direction(grad) * _bcast(scale, x_adv))
        # Clip first, project second (ART's order): every feasibility map moves coordinates towards x,
        # so the result stays in the box, and the shrink sees the cost that clipping left.
        delta = self._clip(x_adv) - self.x
        if self.cfg.method == "budget":
            delta = self.ball.project_pointwise(delta, self.radius)
        else:
            delta = self.ball.project(delta, self.reducer)
        self._clip(torch.add(self.x, delta, out=x_adv))


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


def run_attack(forward: Forward, x: torch.Tensor, target: torch.Tensor, cfg: AttackConfig, *,
               start: Callable[[torch.Tensor], torch.Tensor] | None = None, restarts: int = 1,
               clip: tuple | None = None, reducer: Reducer = LOCAL, track: bool = True,
               verbose: bool = False, device: torch.device | None = None) -> tuple[torch.Tensor, AttackTrace]:
    """Attack the distribution ``x`` (all of it: the budget is shared) and return (x_adv, trace).

    :param forward: Maps a batch of inputs (as in ``x``) to logits, differentiably.
    :param x: The clean inputs, on the compute device.
    :param target: Class indices (N,), or clean probabilities (N, K) for the KL loss.
    :param cfg: The attack's settings.
    :param start: Maps x to a start point for each restart; ``None`` starts at x.
    :param restarts: Number of runs from ``start``; the best iterate over all of them is returned.
    :param clip: (min, max) of the input box, or ``None``.
    :param reducer: Sums and maxima over the whole distribution (see :mod:`art_wdat.reduce`).
    :param track: Keep the best iterate and per-iterate statistics. ``False`` returns the last iterate
        and skips the final evaluation pass (used by the trainer's inner maximisation).
    :param verbose: Show a tqdm progress bar over iterations.
    :param device: Where the model runs, if not where ``x`` is: then ``x`` and every tensor of its size stay
        where they are (host memory, for inputs larger than the device) and batches are streamed.
    """
    trace = AttackTrace()
    if cfg.ball.eps == 0:
        return x.clone(), trace
    one_pass = GradientPass(forward, target, cfg, device or x.device)
    grad = torch.empty_like(x)
    best = _Best(x, reducer) if track and cfg.keep_best else None
    history, ups0 = [], None
    bar = tqdm(total=restarts * cfg.max_iter, desc=f"W-PGD ({cfg.method})", disable=not verbose, leave=False)
    for restart in range(restarts):
        x_adv = x.clone() if start is None else start(x)
        stepper = _Stepper(cfg, x, clip, reducer)
        for it in range(cfg.max_iter + (1 if track else 0)):
            last = it == cfg.max_iter
            losses, wins = one_pass(x_adv, None if last else grad, it)
            if track:
                score = reducer.sum(torch.stack([wins.double().sum(), losses.double().sum()]))
                history.append(score)
                if best is not None:
                    best.offer(x_adv, score, restart, it)
            if track and ups0 is None:
                ups0 = cfg.ball.sensitivity(cfg.ball.dual_norms(grad), reducer)
            if not last:
                stepper(x_adv, grad, it)
                bar.update(1)
        # One sync per restart, not per iteration; skipped untracked (the trainer's inner loop, where a NaN
        # shows in the loss). Reduced first: every rank must raise together, or the others hang in a collective.
        nan_at = reducer.max(one_pass.nan_at) if track else None
        if nan_at is not None and int(nan_at) >= 0:
            raise ValueError(f"The model returned NaN logits during the attack (restart {restart}, iteration "
                             f"{int(nan_at)}); check the model and the inputs.")
        if best is None:
            last_x = x_adv
        trace.budgets = stepper.radius
    bar.close()
    trace.sensitivity = float(ups0) if ups0 is not None else float("nan")
    if track:
        n = reducer.sum(x.new_tensor(float(x.shape[0]), dtype=torch.float64)).clamp_min(1.0)
        h = (torch.stack(history) / n).cpu()
        per_run = cfg.max_iter + 1
        trace.success_rate, trace.loss = h[:, 0].tolist(), h[:, 1].tolist()
        if best is not None:
            trace.best_restart, trace.best_iteration = (int(v) for v in best.where.cpu())
            sl = slice(trace.best_restart * per_run, (trace.best_restart + 1) * per_run)
        else:
            trace.best_restart, trace.best_iteration = restarts - 1, cfg.max_iter
            sl = slice((restarts - 1) * per_run, restarts * per_run)
        trace.success_rate, trace.loss = trace.success_rate[sl], trace.loss[sl]
        if cfg.targeted:
            trace.loss = [-v for v in trace.loss]
    # Float32 rounding of x + Δ may overshoot the budget by an ulp; fix the returned iterate only (no cost per step).
    return cfg.ball.enforce(x, best.x if best is not None else last_x, reducer), trace
