"""The gradient flip-cost solvers, each in any box: FAB, FAB-T, the radius bisection, FMN.

FAB and APGD come from the ``autoattack`` package (Croce & Hein), which works in [0, 1]; in another box they run on
the box's affine image (:class:`~art_wdat.attacks.box.Affine`) and their points come back to x's units. The radius
bisection shrinks each input's cost with an attack inside per-input balls: the package's APGD-DLR where the map is
exact (one interval for all features, or no box), else projected gradient steps of the attack's own engine
(:mod:`art_wdat.core.engine`, fixed per-input budgets) in the box itself. FMN (:mod:`art_wdat.attacks.fmn`) takes the
box as it is. Every point is verified (:func:`~art_wdat.attacks.verified.verify`) in x's units and box.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from art_wdat.attacks.box import Affine, Box
from art_wdat.attacks.fmn import fmn, logit_margin
from art_wdat.attacks.verified import MARGIN_RTOL, FlipCosts, Forward, margins, verify
from art_wdat.core.engine import AttackConfig, run_distribution_attack
from art_wdat.core.threat import WassersteinBall

#: The ``autoattack`` package's names of the ground norms.
AA_NORMS = {math.inf: "Linf", 2.0: "L2", 1.0: "L1"}
#: First radius the bisection tries where no upper bound is known (doubled until a point is found), in the unit box.
_START_RADIUS = {math.inf: 8 / 255, 2.0: 0.5, 1.0: 8.0}
#: The engine's PGD step in the bisection, relative to each input's radius.
PGD_STEP = 0.1
#: An attack in per-input balls: (rows of the inputs, their radii, the bisection round) -> candidate points of those
#: rows (x's shape and dtype, in the box).
BallAttack = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def autoattack_module(submodule: str) -> ModuleType:
    """``autoattack.<submodule>``: the installed package, or robustbench's ``pyautoattack`` under that name."""
    from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias

    ensure_autoattack_alias()
    return importlib.import_module(f"autoattack.{submodule}")


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The solvers draw from torch's global generator: seed it for them and restore it after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _unit_view(forward: Forward, x: torch.Tensor, box: Box) -> tuple[Forward, torch.Tensor, Affine | None]:
    """The model and inputs on the box's affine image in [0, 1] (themselves in the unit box), the model's outputs in
    the inputs' dtype (the package's FAB mixes the two; a no-op for a float32 model on float32 inputs)."""
    affine = Affine.of(box, x)
    if affine is not None:
        forward, x = affine.forward(forward), affine.to_unit(x)

    def same_dtype(t: torch.Tensor) -> torch.Tensor:
        return forward(t).to(t.dtype)

    return same_dtype, x, affine


def _back(adv_u: torch.Tensor, u: torch.Tensor, x: torch.Tensor, affine: Affine | None, box: Box) -> torch.Tensor:
    """Points of the affine image back in x's units and box; coordinates the solver left alone are x's, bit for bit."""
    if affine is None:
        return adv_u.to(x.dtype)
    moved = adv_u != u
    return box.clamp(torch.where(moved, x + affine.width * (adv_u - u), x)).to(x.dtype)


def fab(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, box: Box, *, n_iter: int, restarts: int,
        targets: int, seed: int) -> FlipCosts:
    """FAB (``targets`` = 0) or FAB-T against the ``targets`` most likely other classes, best point kept."""
    forward_u, u, affine = _unit_view(forward, x, box)
    solver = autoattack_module("fab_pt").FABAttack_PT(
        forward_u, norm=AA_NORMS[norm], n_restarts=1, n_iter=n_iter, seed=seed, targeted=targets > 0,
        device=x.device, n_target_classes=max(targets, 1))
    best = verify(forward, x, x, y, norm, clip=box)
    todo = best.correct.nonzero().flatten()
    for restart in range(restarts):
        for target in (range(2, targets + 2) if targets > 0 else [None]):
            if todo.numel() == 0:
                return best
            solver.target_class = target
            with seeded(seed + restart, x.device):
                adv = solver.attack_single_run(u[todo], y[todo], use_rand_start=restart > 0,
                                               is_targeted=target is not None)
            adv = _back(adv, u[todo], x[todo], affine, box)
            best.put(todo, best.take(todo).merge(verify(forward, x[todo], adv, y[todo], norm, clip=box)))
    return best


def bisection(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, start: FlipCosts, box: Box,
              attack: BallAttack, *, rounds: int, start_radius: float) -> FlipCosts:
    """Shrink each input's cost by bisection over its radius, with ``attack`` in per-input balls.

    Upper bound: the best verified cost (``start``'s); lower bound: the largest radius where the attack failed.
    Where no upper bound is known the radius starts at ``start_radius`` and doubles.
    """
    best = start
    lo = torch.zeros_like(best.costs)
    for r in range(rounds):
        hi = best.costs
        known = torch.isfinite(hi)
        radius = torch.where(known, (lo + hi) / 2, torch.where(lo > 0, 2 * lo, start_radius))
        todo = (best.correct & (~known | (hi - lo > 1e-3 * hi))).nonzero().flatten()
        if todo.numel() == 0:
            break
        adv = attack(todo, radius[todo], r)
        found = verify(forward, x[todo], adv, y[todo], norm, clip=box)
        lo[todo] = torch.where(torch.isfinite(found.costs), lo[todo], radius[todo])
        best.put(todo, best.take(todo).merge(found))
    return best


def apgd_bisection(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, start: FlipCosts, box: Box, *,
                   rounds: int, n_iter: int, seed: int) -> FlipCosts:
    """The radius bisection with APGD-DLR (CE for 2 classes) where the box maps exactly onto [0, 1], else with the
    engine's PGD in the box (:func:`pgd_in_balls`)."""
    affine = Affine.of(box, x)
    if affine is not None and not affine.exact:
        return pgd_bisection(forward, x, y, norm, start, box, rounds=rounds, n_iter=n_iter)
    forward_u, u, _ = _unit_view(forward, x, box)
    scale = 1.0 if affine is None else affine.scale
    n_classes = int(forward(x[:1]).shape[1]) if x.shape[0] else 3
    apgd = autoattack_module("autopgd_base").APGDAttack(forward_u, n_iter=n_iter, norm=AA_NORMS[norm], eps=1.0,
                                                        seed=seed, loss="dlr" if n_classes > 2 else "ce",
                                                        device=x.device)
    apgd.init_hyperparam(u)

    def attack(rows: torch.Tensor, radius: torch.Tensor, r: int) -> torch.Tensor:
        # APGD's Linf/L2 code broadcasts `eps`, so a column of radii gives one ball per input.
        eps = radius if affine is None else radius / scale
        apgd.eps = eps.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        with seeded(seed + r, x.device):
            _, _, _, adv = apgd.attack_single_run(u[rows], y[rows])
        return _back(adv.detach().to(x.dtype), u[rows], x[rows], affine, box)

    return bisection(forward, x, y, norm, start, box, attack, rounds=rounds, start_radius=_START_RADIUS[norm] * scale)


def flip_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min(margin − tolerance, 0): climbs until the verification's margin (:data:`MARGIN_RTOL`) is reached, then
    has no gradient, so a won input stays where it was won (ReMargin aimed at the verification)."""
    return (logit_margin(z, y) - MARGIN_RTOL * z.abs().amax(dim=1).clamp_min(1.0)).clamp_max(0.0)


def pgd_in_balls(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, box: Box, *,
                 n_iter: int) -> BallAttack:
    """Pointwise PGD in each input's own ball of the ground norm, inside the box: the engine's W-PGD-Budget step
    with the budgets fixed (:class:`~art_wdat.core.steps.FixedBudgetStep`), :func:`flip_loss`, steps of
    :data:`PGD_STEP` times the radius, the last iterate."""
    clip = None if box.lo is None or box.hi is None else (box.lo, box.hi)

    def attack(rows: torch.Tensor, radius: torch.Tensor, r: int) -> torch.Tensor:
        top = float(radius.max()) if radius.numel() else 0.0
        if top <= 0:
            return x[rows].clone()
        # The ball's eps is the largest radius, so that the engine's final map into it leaves every input's own ball.
        cfg = AttackConfig(ball=WassersteinBall(eps=top, p=math.inf, norm=norm), loss_fn=flip_loss,
                           eps_step=PGD_STEP * top, max_iter=n_iter, method="budget", batch_size=max(1, rows.numel()),
                           keep_best=False, budgets=radius.double())
        adv, _ = run_distribution_attack(forward, x[rows], y[rows], cfg, clip=clip, track=False)
        adv = adv.detach().to(x.dtype)
        # Only points past the verification's margin count as found: one short of it would be pushed out by the
        # verification's overshoot beyond the radius, and the bisection would stall there.
        safe = margins(forward, adv, y[rows], max(1, rows.numel())) > 0
        return torch.where(safe.view(-1, *([1] * (x.dim() - 1))), adv, x[rows])

    return attack


def pgd_bisection(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, start: FlipCosts, box: Box, *,
                  rounds: int, n_iter: int) -> FlipCosts:
    """The radius bisection with the engine's PGD in the box, for any box (:func:`pgd_in_balls`)."""
    scale = 1.0
    if box.lo is not None and box.hi is not None:
        scale = float((box.hi - box.lo).max())
    attack = pgd_in_balls(forward, x, y, norm, box, n_iter=n_iter)
    return bisection(forward, x, y, norm, start, box, attack, rounds=rounds, start_radius=_START_RADIUS[norm] * scale)


def fmn_costs(forward: Forward, x: torch.Tensor, y: torch.Tensor, norm: float, box: Box, *, steps: int,
              targets: int = 0) -> FlipCosts:
    """FMN's verified points; it aims past the boundary by the verification's tolerance, so they pass as found.
    With ``targets`` > 0, targeted FMN against each of the ``targets`` highest-scoring other classes (at x), the
    cheapest point kept: for a linear model each run finds the exact minimum towards its class."""
    if targets <= 0:
        return verify(forward, x, fmn(forward, x, y, norm, steps=steps, rtol=MARGIN_RTOL, clip=box).to(x.dtype), y,
                      norm, clip=box)
    with torch.no_grad():
        ranked = torch.cat([forward(x[i:i + 256]) for i in range(0, x.shape[0], 256)]).scatter(
            1, y[:, None], -math.inf).argsort(dim=1, descending=True) if x.shape[0] else y[:, None]
    best = verify(forward, x, x, y, norm, clip=box)
    for k in range(min(targets, ranked.shape[1] - 1)):
        adv = fmn(forward, x, y, norm, steps=steps, rtol=MARGIN_RTOL, clip=box, target=ranked[:, k])
        best = best.merge(verify(forward, x, adv.to(x.dtype), y, norm, clip=box))
    return best
