"""Decision-based walks along the decision boundary for the ℓ2 and ℓ1 flip costs of predict-only models.

:class:`BoundaryWalk` follows HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020), ℓ2 version: from a
misclassified point, a bisection on the segment to x finds the boundary; there the direction of the boundary's normal
is estimated from the hard labels of B random probes at radius δ (B = B0·√t at iteration t, δ = distance / d), a
geometric step (distance/√t, halved until misclassified) moves along it, and the next bisection pulls the point back
to the boundary closer to x. Written here rather than taken from ART (``HopSkipJump``) because every query must count
against each input's budget, and every point kept must pass the verification's margin
(:class:`~art_wdat.attacks.oracle.Oracle`). A walk is untargeted, or targeted: then "misclassified" means pushed past
its class t (z_t − z_y above the verification's margin), which for a linear model makes each walk converge to the
boundary with its own class, and the search over classes decides (:func:`~art_wdat.attacks.halving.halving`).

:func:`refine` then polishes the best point of each input: a fine bisection on its segment to x and, under ℓ1, a
sparsification (the point pushed further out, its smallest coordinates reset to x's as long as it stays
misclassified, then pulled back to the boundary), which an ℓ1 minimum (a few coordinates moved) rewards.

Walks move in lockstep, one model call per step for all of them; a walk stops when its cap or its input's is spent.
"""

from __future__ import annotations

import math

import torch

from art_wdat.attacks.oracle import Incumbent, Oracle
from art_wdat.core.norms import lp_norms

#: Probes of the first gradient estimate (then B0·√t), and their most.
HSJA_PROBES, HSJA_MAX_PROBES = 50, 1000
#: Most probe coordinates held in memory at once (float64).
PROBE_VALUES = 2 ** 24
#: Relative precision of the segment bisections in the walk, and of the last one in :func:`refine`.
WALK_TOL, FINE_TOL = 1e-3, 1e-5
#: Halvings of the geometric step before an iteration gives up.
STEP_HALVINGS = 10
#: Probes of the normal's estimate in :func:`refine`, and most bisection steps on its path (to ``FINE_TOL``).
NORMAL_PROBES, PATH_STEPS = 400, 48
#: Fewest probes worth an estimate.
MIN_NORMAL_PROBES = 64
#: How far (factors of the perturbation) the ℓ1 sparsification pushes the point out before resetting coordinates.
SPARSIFY_PUSH = (1.5, 3.0)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _steps(tol: float) -> int:
    return max(1, math.ceil(math.log2(1.0 / tol)))


class BoundaryWalk:
    """HSJA walks: walk k for input ``rows[k]`` (inputs may repeat), towards class ``targets[k]`` (−1: untargeted),
    from ``starts[k]``, a point the oracle accepted for that target. Every boundary point found goes to ``incumbent``.

    :ivar used: Queries per walk.
    :ivar task_cap: Per walk, the count of its own queries up to which it may query.
    :ivar best: Per walk, the ground norm of its current boundary point.
    """

    def __init__(self, oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor, targets: torch.Tensor,
                 starts: torch.Tensor, *, seed: int = 0) -> None:
        self.oracle, self.incumbent, self.rows, self.targets = oracle, incumbent, rows, targets
        self.x = oracle.x[rows]
        self.points = starts.clone()
        k = rows.numel()
        dev = rows.device
        self.on_boundary = torch.zeros(k, dtype=torch.bool, device=dev)
        self.t = torch.ones(k, dtype=torch.long, device=dev)
        self.used = torch.zeros(k, dtype=torch.long, device=dev)
        self.task_cap = torch.full((k,), 2 ** 62, dtype=torch.long, device=dev)
        self.best = lp_norms(self.points.double() - self.x.double(), incumbent.norm)
        self.generator = torch.Generator().manual_seed(seed)

    def fits(self, tasks: torch.Tensor, cost: int) -> torch.Tensor:
        """Which of ``tasks`` can spend ``cost`` queries now (their caps, and their inputs' with the earlier ones')."""
        ok = self.used[tasks] + cost <= self.task_cap[tasks]
        out = torch.zeros_like(ok)
        cand = tasks[ok]
        out[ok] = self.oracle.affordable(self.rows[cand], cost)
        return out

    def ask(self, tasks: torch.Tensor, points: torch.Tensor, per: int = 1) -> torch.Tensor:
        """The oracle's answers for ``per`` points per walk of ``tasks`` (points grouped by walk)."""
        self.used[tasks] += per
        rows = self.rows[tasks].repeat_interleave(per)
        return self.oracle.ask(rows, points, self.targets[tasks].repeat_interleave(per))

    def bisect(self, tasks: torch.Tensor, far: torch.Tensor, tol: float) -> torch.Tensor:
        """Per walk, the point nearest x on the segment from x to ``far`` (accepted) that the oracle accepts, to
        relative precision ``tol`` (fewer steps where queries run out); offered to the incumbent and returned."""
        x = self.x[tasks]
        lo = torch.zeros(tasks.numel(), dtype=torch.float64, device=x.device)
        hi = torch.ones_like(lo)
        for _ in range(_steps(tol)):
            live = self.fits(tasks, 1).nonzero().flatten()
            if live.numel() == 0:
                break
            mid = (lo[live] + hi[live]) / 2
            adv = self.ask(tasks[live], x[live] + _view(mid, x) * (far[live] - x[live]))
            hi[live] = torch.where(adv, mid, hi[live])
            lo[live] = torch.where(adv, lo[live], mid)
        out = torch.where(_view(hi, x) < 1, x + _view(hi, x) * (far - x), far)
        self.incumbent.offer(self.rows[tasks], out)
        return out

    def _normals(self, tasks: torch.Tensor, probes: int) -> torch.Tensor:
        """HSJA's estimate of the unit normal at the walks' boundary points (flattened), ``probes`` labels each."""
        b_all = self.points[tasks]
        d = b_all[0].numel()
        dist = lp_norms(b_all.double() - self.x[tasks].double(), 2.0)
        chunk = max(1, PROBE_VALUES // max(probes * d, 1))
        out = []
        for i in range(0, tasks.numel(), chunk):
            b = b_all[i:i + chunk]
            u = torch.randn(b.shape[0], probes, d, generator=self.generator, dtype=torch.float64).to(b.device)
            u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-12)
            delta = (dist[i:i + chunk] / d).clamp_min(1e-7)
            pts = b.flatten(1)[:, None, :].double() + delta[:, None, None] * u
            # Not clamped into the box: a probe is a question, not a point kept, and clamping would bias the estimate
            # of every coordinate at a bound.
            pts = pts.to(b.dtype).view(-1, *b.shape[1:])
            labels = self.ask(tasks[i:i + chunk], pts, probes).view(-1, probes).double() * 2 - 1
            # Baseline subtraction (HSJA, eq. 16) unless every probe agreed.
            mean = labels.mean(dim=1, keepdim=True)
            centred = torch.where(mean.abs() == 1, labels, labels - mean)
            out.append((centred[:, :, None] * u).mean(dim=1))
        v = torch.cat(out)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _step(self, tasks: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the boundary points along ``v`` by distance/√t, halved until accepted; (points, which moved)."""
        b = self.points[tasks]
        shape = b.shape[1:]
        size = lp_norms(b.double() - self.x[tasks].double(), 2.0) / self.t[tasks].double().sqrt()
        out, ok = b.clone(), torch.zeros(tasks.numel(), dtype=torch.bool, device=b.device)
        for _ in range(STEP_HALVINGS):
            live = (~ok & self.fits(tasks, 1)).nonzero().flatten()
            if live.numel() == 0:
                break
            trial = b[live].flatten(1).double() + size[live, None] * v[live]
            trial = self.oracle.box.clamp(trial.to(b.dtype).view(-1, *shape))
            adv = self.ask(tasks[live], trial)
            out[live[adv]], ok[live[adv]] = trial[adv], True
            size[live] = torch.where(adv, size[live], size[live] / 2)
        return out, ok

    def _settle(self, tasks: torch.Tensor, points: torch.Tensor) -> None:
        self.points[tasks] = points
        self.best[tasks] = lp_norms(points.double() - self.x[tasks].double(), self.incumbent.norm)

    def iterate(self, tasks: torch.Tensor, probes: int) -> None:
        """One HSJA iteration of ``tasks`` (all at the same t), which can afford it."""
        fresh = tasks[~self.on_boundary[tasks]]
        if fresh.numel():
            self._settle(fresh, self.bisect(fresh, self.points[fresh], WALK_TOL))
            self.on_boundary[fresh] = True
        v = self._normals(tasks, probes)
        stepped, moved = self._step(tasks, v)
        if bool(moved.any()):
            self._settle(tasks[moved], self.bisect(tasks[moved], stepped[moved], WALK_TOL))
        self.t[tasks] += 1

    def run(self) -> None:
        """Iterate every walk until its cap or its input's is spent."""
        walk = 2 * _steps(WALK_TOL) + STEP_HALVINGS
        while True:
            moved = False
            for t in torch.unique(self.t).tolist():
                probes = min(HSJA_MAX_PROBES, int(HSJA_PROBES * math.sqrt(t)))
                tasks = (self.t == t).nonzero().flatten()
                tasks = tasks[self.fits(tasks, probes + walk)]
                if tasks.numel():
                    self.iterate(tasks, probes)
                    moved = True
            if not moved:
                return


def refine(oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor) -> None:
    """Stage ``"refine"``: each input's best point bisected finely towards x; under ℓ1 then the cheapest point of the
    linear model that the boundary's estimated normal there defines (:func:`normal_path`), and a sparsification.
    (Under ℓ2 the normal's estimate from a few hundred hard labels is too rough to beat the walk's point.)"""
    rows = rows[torch.isfinite(incumbent.costs[rows])]
    if rows.numel() == 0:
        return
    walk = BoundaryWalk(oracle, incumbent, rows, torch.full_like(rows, -1), incumbent.points[rows])
    tasks = torch.arange(rows.numel(), device=rows.device)
    walk.bisect(tasks, incumbent.points[rows].clone(), FINE_TOL)
    if incumbent.norm == 1.0:
        walk.points = incumbent.points[rows].clone()
        # As many probes as every input can still afford, up to NORMAL_PROBES (the sparsification needs few).
        spare = int(oracle.left(rows).min()) - PATH_STEPS - 1 - 2 * len(SPARSIFY_PUSH) * _steps(FINE_TOL)
        if spare >= MIN_NORMAL_PROBES:
            normal_path(walk, min(NORMAL_PROBES, spare))
        for push in SPARSIFY_PUSH:
            _sparsify(walk, push)


def normal_path(walk: BoundaryWalk, probes: int) -> None:
    """Estimate the boundary's unit normal v at each walk's point (``probes`` labels), then search the path of the
    cheapest points of the half-space it bounds: under ℓ2 ``δ(λ) = sign(v)·min(room, λ|v|)`` (the KKT point in the box),
    under ℓ1 the coordinates filled by decreasing ``|v|`` up to their room (a fractional knapsack), parametrised by the
    cost; bisected to the boundary. Exact for a linear model whose normal is estimated exactly."""
    tasks = walk.fits(torch.arange(walk.rows.numel(), device=walk.rows.device), probes + PATH_STEPS + 1)
    tasks = tasks.nonzero().flatten()
    if tasks.numel() == 0:
        return
    v = walk._normals(tasks, probes)
    x = walk.x[tasks].flatten(1).double()
    sign = torch.where(v >= 0, 1.0, -1.0).to(v)
    room = walk.oracle.box.room(walk.x[tasks].flatten(1), sign.to(walk.x.dtype)).double()
    room = torch.where(torch.isfinite(room), room, torch.full_like(room, 1e6))
    a = v.abs()
    if walk.incumbent.norm == 2.0:
        top = (room / a.clamp_min(1e-300)).amax(dim=1)

        def at(par: torch.Tensor) -> torch.Tensor:
            return sign * torch.minimum(room, par[:, None] * a)
    else:
        order = a.argsort(dim=1, descending=True)
        filled_before = room.gather(1, order).cumsum(dim=1) - room.gather(1, order)
        top = room.sum(dim=1)

        def at(par: torch.Tensor) -> torch.Tensor:
            amount = (par[:, None] - filled_before).clamp_min(0)
            sorted_delta = torch.minimum(room.gather(1, order), amount)
            return sign * torch.zeros_like(room).scatter(1, order, sorted_delta)
    shape = walk.x.shape[1:]

    def point(par: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        moved = (x[idx] + at(par)[idx]).to(walk.x.dtype).view(-1, *shape)
        return walk.oracle.box.clamp(moved)

    all_idx = torch.arange(tasks.numel(), device=tasks.device)
    ends = walk.ask(tasks, point(top, all_idx))
    lo = torch.zeros_like(top)
    hi = top.clone()
    for _ in range(PATH_STEPS):
        live = (ends & (hi - lo > FINE_TOL * hi) & walk.fits(tasks, 1)).nonzero().flatten()
        if live.numel() == 0:
            break
        mid = (lo[live] + hi[live]) / 2
        full = torch.zeros_like(top)
        full[live] = mid
        adv = walk.ask(tasks[live], point(full, live))
        hi[live] = torch.where(adv, mid, hi[live])
        lo[live] = torch.where(adv, lo[live], mid)
    done = ends.nonzero().flatten()
    if done.numel():
        walk.incumbent.offer(walk.rows[tasks[done]], point(hi, done))


def _sparsify(walk: BoundaryWalk, push: float) -> None:
    """One ℓ1 sparsification of each input's best point (module docstring), pushed out by ``push``."""
    oracle, incumbent = walk.oracle, walk.incumbent
    tasks = torch.arange(walk.rows.numel(), device=walk.rows.device)
    x = walk.x
    flat_x = x.flatten(1)
    far = oracle.box.clamp(x + push * (incumbent.points[walk.rows] - x)).flatten(1)
    order = (far - flat_x).abs().argsort(dim=1)
    lo = torch.zeros(tasks.numel(), dtype=torch.long, device=x.device)
    hi = (far != flat_x).sum(dim=1)
    known = torch.zeros(tasks.numel(), dtype=torch.bool, device=x.device)

    def reset(count: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(flat_x.shape[1], device=x.device)[None, :] >= count[:, None]
        mask = torch.zeros_like(keep).scatter(1, order[live], keep)
        return torch.where(mask, far[live], flat_x[live]).view(-1, *x.shape[1:])

    while True:
        live = ((hi - lo > 0) & walk.fits(tasks, 1)).nonzero().flatten()
        if live.numel() == 0:
            break
        mid = (lo[live] + hi[live] + 1) // 2
        adv = walk.ask(live, reset(mid, live))
        lo[live] = torch.where(adv, mid, lo[live])
        hi[live] = torch.where(adv, hi[live], mid - 1)
        known[live] |= adv
    # Resetting the lo smallest coordinates kept the pushed point misclassified, where some count was accepted.
    ok = known.nonzero().flatten()
    if ok.numel():
        walk.bisect(ok, reset(lo[ok], ok), FINE_TOL)
