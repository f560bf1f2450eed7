"""RayS, the hard-label ray search of Chen & Gu (KDD 2020), for the ℓ∞ flip costs of predict-only models.

The cheapest ℓ∞ flip of x lies on a ray x + t·s (clamped into the box) whose direction s has entries ±1 (for a
linear model exactly: for each other class j, s = sign(w_j − w_y)). RayS searches over s by flipping the signs of
blocks of coordinates, coarse to fine (halves, quarters, ... single coordinates, then single coordinates again),
and keeps a flip when the ray's boundary comes closer: a candidate is first asked at the current best radius
(divided by 1 + ``tol``, so only a strictly better direction passes), and only then is its boundary radius found by
bisection, to ``tol`` relative. One query per candidate that does not help, about log2(1/tol) for one that does.

Here the inputs are searched together (one model call per step for all of them), each with its own schedule and
query cap (:class:`~art_wdat.attacks.oracle.Oracle`). Before the block flips come seed directions: the sign pattern
that moves each coordinate towards its farther bound, and the signs of x' − x for the nearest correctly classified
input x' of each other class in the batch (when there is one), which point the search at each class. An input stops
when its cap is spent or when a whole pass of single-coordinate flips found nothing better.
"""

from __future__ import annotations

import math

import torch

from art_wdat.attacks.box import Box
from art_wdat.attacks.oracle import Incumbent, Oracle

#: Relative precision of the radius bisection, and the margin by which a candidate must beat the best radius.
TOL = 1e-3
#: Without a box, the first radius tried along a seed direction, relative to ``max(1, max |x|)``.
UNBOUNDED_REACH = 8.0


def seed_signs(x: torch.Tensor, labels: torch.Tensor, usable: torch.Tensor, box: Box,
               n_classes: int) -> torch.Tensor:
    """Seed directions per input, shape (N, S, D): towards the farther bound first, then towards the nearest
    (ℓ2) usable input of each other class (the farther-bound pattern again where the class has none).

    :param labels: Each input's class (for ``usable`` inputs: the model's).
    :param usable: Inputs that may serve as another input's target (correctly classified).
    """
    flat = x.flatten(1)
    far = torch.where(box.room(flat, torch.ones_like(flat)) >= box.room(flat, -torch.ones_like(flat)), 1.0, -1.0)
    far = far.to(x.dtype)
    seeds = [far]
    dist = torch.cdist(flat.double(), flat.double())
    for c in range(n_classes):
        pool = usable & (labels == c)
        d = torch.where(pool[None, :], dist, torch.full_like(dist, math.inf))
        near = d.argmin(dim=1)
        has = torch.isfinite(d.min(dim=1).values) & (labels != c)
        toward = torch.sign(flat[near] - flat)
        toward = torch.where(toward == 0, far, toward)
        seeds.append(torch.where(has[:, None], toward, far))
    return torch.stack(seeds, dim=1)


class RaySearch:
    """RayS tasks sharing model calls: task k searches for input ``rows[k]`` (inputs may repeat), untargeted or
    towards class ``targets[k]``; every point an oracle accepts is offered to ``incumbent``.

    :param oracle: The counted model; its ``cap`` bounds each input's queries over all of its tasks.
    :param incumbent: Where the points go.
    :param rows: Each task's input.
    :param seeds: Seed directions per task (K, S, D), tried in order before the block flips.
    :param targets: Each task's target class, −1 for untargeted (default: all untargeted).
    :param tol: :data:`TOL`.
    :param zeroing: Also try each block reset to x (direction entries 0) after trying it flipped: directions in
        {−1, 0, 1}^D, which models that are not monotone along the features (tree ensembles) need.
    :ivar task_cap: Per task, the count of its own queries up to which it may query (default: no limit).
    """

    def __init__(self, oracle: Oracle, incumbent: Incumbent, rows: torch.Tensor, seeds: torch.Tensor,
                 targets: torch.Tensor | None = None, *, tol: float = TOL, zeroing: bool = False) -> None:
        self.oracle, self.incumbent, self.rows, self.seeds, self.tol = oracle, incumbent, rows, seeds, tol
        self.zeroing = zeroing
        self.targets = torch.full_like(rows, -1) if targets is None else targets
        x = oracle.x[rows].flatten(1)
        k, d = x.shape
        self.x, self.d = x, d
        dev = x.device
        self.best_sign = seeds[:, 0].clone()
        self.best_t = torch.full((k,), math.inf, dtype=torch.float64, device=dev)
        self.best_lo = torch.zeros(k, dtype=torch.float64, device=dev)
        self.cand = seeds[:, 0].clone()
        self.bisecting = torch.zeros(k, dtype=torch.bool, device=dev)
        self.lo = torch.zeros(k, dtype=torch.float64, device=dev)
        self.hi = torch.zeros(k, dtype=torch.float64, device=dev)
        self.seed = torch.zeros(k, dtype=torch.long, device=dev)
        self.level = torch.zeros(k, dtype=torch.long, device=dev)
        self.block = torch.zeros(k, dtype=torch.long, device=dev)
        self.idle = torch.zeros(k, dtype=torch.long, device=dev)
        self.alt = torch.zeros(k, dtype=torch.bool, device=dev)
        self.done = torch.zeros(k, dtype=torch.bool, device=dev)
        self.polishing = torch.zeros(k, dtype=torch.bool, device=dev)
        self.used = torch.zeros(k, dtype=torch.long, device=dev)
        self.task_cap = torch.full((k,), 2 ** 62, dtype=torch.long, device=dev)
        self.reach = self._reach(x)
        self.finest = max(0, math.ceil(math.log2(max(d, 1))))

    @property
    def best(self) -> torch.Tensor:
        """Per task, the radius of its best ray so far (inf: none)."""
        return self.best_t

    def _reach(self, x: torch.Tensor) -> torch.Tensor:
        """Per task, a radius at which every ray has reached the box's corner (or :data:`UNBOUNDED_REACH`)."""
        box = self.oracle.box
        if not box.bounded:
            return UNBOUNDED_REACH * x.abs().amax(dim=1).double().clamp_min(1.0)
        far = box.farthest(self.oracle.x[self.rows]).flatten(1).amax(dim=1).double()
        return far.clamp_min(torch.finfo(x.dtype).tiny)

    def point(self, idx: torch.Tensor, t: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """clamp(x + t·sign) for the tasks ``idx``, in the input's shape."""
        shape = self.oracle.x.shape[1:]
        x = self.x[idx]
        moved = x + t.to(x.dtype)[:, None] * sign
        return self.oracle.box.clamp(moved.view(-1, *shape))

    def _next_candidate(self, idx: torch.Tensor) -> None:
        """Move the tasks ``idx`` to their next candidate direction: the next seed, else the next block flip."""
        n_seeds = self.seeds.shape[1]
        self.seed[idx] += 1
        seeding = self.seed[idx] < n_seeds
        if bool(seeding.any()):
            s_idx = idx[seeding]
            self.cand[s_idx] = self.seeds[s_idx, self.seed[s_idx]]
        flip = idx[~seeding]
        if flip.numel() == 0:
            return
        level, block = self.level[flip], self.block[flip]
        size = torch.ceil(self.d / 2.0 ** level.double()).long().clamp_min(1)
        start = block * size
        end = torch.clamp(start + size, max=self.d)
        ar = torch.arange(self.d, device=self.x.device)
        mask = (ar[None, :] >= start[:, None]) & (ar[None, :] < end[:, None])
        # With ``zeroing``, each block is tried flipped, then reset to x (direction 0) before the next block.
        zero = self.alt[flip] if self.zeroing else torch.zeros_like(mask[:, 0])
        moved = torch.where(zero[:, None], torch.zeros_like(self.best_sign[flip]), -self.best_sign[flip])
        self.cand[flip] = torch.where(mask, moved, self.best_sign[flip])
        advance = zero | (not self.zeroing)
        self.alt[flip] = self.zeroing & ~zero
        wrap = advance & (end >= self.d)
        self.block[flip] = torch.where(wrap, 0, torch.where(advance, block + 1, block))
        self.level[flip] = torch.where(wrap, torch.clamp(level + 1, max=self.finest), level)
        self.idle[flip] += 1
        # A whole pass of single-coordinate moves without a better radius: converged.
        passes = (2 if self.zeroing else 1) * self.d
        self.done[flip] |= (level >= self.finest) & (self.idle[flip] > passes + 1)

    def step(self) -> bool:
        """One query for every task still searching (within its own and its input's caps); False when none is."""
        live = (~self.done & (self.used < self.task_cap)).nonzero().flatten()
        live = live[self.oracle.affordable(self.rows[live])]
        if live.numel() == 0:
            return False
        bis = self.bisecting[live]
        best = self.best_t[live]
        check_t = torch.where(torch.isfinite(best), best / (1 + self.tol), self.reach[live])
        t = torch.where(bis, (self.lo[live] + self.hi[live]) / 2, check_t)
        adv = self.oracle.ask(self.rows[live], self.point(live, t, self.cand[live]), self.targets[live])
        self.used[live] += 1
        # A candidate that passes its check starts a bisection on [0, t].
        start = ~bis & adv
        self.bisecting[live[start]] = True
        self.lo[live[start]], self.hi[live[start]] = 0.0, t[start]
        self._next_candidate(live[~bis & ~adv])
        b_idx = live[bis]
        self.hi[b_idx] = torch.where(adv[bis], t[bis], self.hi[b_idx])
        self.lo[b_idx] = torch.where(adv[bis], self.lo[b_idx], t[bis])
        settled = b_idx[self.hi[b_idx] - self.lo[b_idx] <= self.tol * self.hi[b_idx]]
        if settled.numel():
            self._accept(settled)
        return True

    def _accept(self, idx: torch.Tensor) -> None:
        """End the bisections of ``idx``: their candidates become the best directions, their points are offered."""
        self.bisecting[idx] = False
        self.best_t[idx], self.best_lo[idx], self.best_sign[idx] = self.hi[idx], self.lo[idx], self.cand[idx]
        self.idle[idx] = 0
        self.incumbent.offer(self.rows[idx], self.point(idx, self.hi[idx], self.cand[idx]))
        self.done[idx] |= self.polishing[idx]
        self._next_candidate(idx[~self.polishing[idx]])

    def run(self) -> None:
        """Search until every task is converged or out of queries; a bisection cut short offers its upper end (a
        point the oracle accepted)."""
        while self.step():
            pass
        cut = self.bisecting.nonzero().flatten()
        if cut.numel():
            self.incumbent.offer(self.rows[cut], self.point(cut, self.hi[cut], self.cand[cut]))

    def polish(self, idx: torch.Tensor, tol: float) -> None:
        """Bisect the boundary of the best directions of the tasks ``idx`` to the relative precision ``tol`` (with
        what their inputs have left), without searching further."""
        idx = idx[torch.isfinite(self.best_t[idx])]
        self.task_cap = self.used.clone()
        self.bisecting[idx], self.polishing[idx], self.done[idx] = True, True, False
        self.cand[idx], self.lo[idx], self.hi[idx] = self.best_sign[idx], self.best_lo[idx], self.best_t[idx]
        self.task_cap[idx] = 2 ** 62
        self.tol = tol
        self.run()
        self.done[idx] = True
