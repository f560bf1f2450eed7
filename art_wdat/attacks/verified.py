"""Verified flip costs: the result type of every flip-cost solver and the check that makes a point count.

A candidate point counts for input i when the model (a forward pass, as returned, in float32) classifies it as
another class than y_i with a small margin (:data:`MARGIN_RTOL`, so that float noise of another batch size or device
cannot undo it; points just past the boundary are pushed out by at most 3%), and it lies in the box
(:class:`~art_wdat.attacks.box.Box`). Its cost is its ground norm computed in float64 from the float32 coordinates,
so a W_p budget computed from the costs is the budget of the returned points, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from art_wdat.attacks.box import UNIT, Box, ClipLike
from art_wdat.core.norms import lp_norms

Forward = Callable[[torch.Tensor], torch.Tensor]
#: A point counts as misclassified when its margin exceeds this fraction of its largest ``|logit|`` (at least 1):
#: on GPUs, TF32 convolutions make logits depend on the batch at about 1e-3 relative.
MARGIN_RTOL = 2e-3
#: Relative extrapolations tried on points misclassified by less than that tolerance.
OVERSHOOT = (1e-3, 1e-2, 3e-2)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


@dataclass
class FlipCosts:
    """Verified flip costs of a set of inputs.

    :ivar costs: c_i per input (float64): ‖x_adv_i − x_i‖_r if the input was flipped, 0 if it was
        misclassified already, +inf if no point was found.
    :ivar x_adv: The points behind the costs (x where the cost is 0 or +inf), in x's dtype.
    :ivar correct: Whether the model classifies the clean input correctly.
    :ivar queries: Per input (int64), the rows passed to the model for it, verification included: counted by the
        decision-based solvers (None for the gradient solvers, whose libraries batch inputs their own way).
    :ivar seconds: Wall time of the pass that computed the costs (nan where not timed).
    """

    costs: torch.Tensor
    x_adv: torch.Tensor
    correct: torch.Tensor
    queries: torch.Tensor | None = None
    seconds: float = math.nan

    @property
    def flipped(self) -> torch.Tensor:
        """Inputs classified correctly whose verified point is misclassified."""
        return self.correct & torch.isfinite(self.costs)

    def merge(self, other: FlipCosts) -> FlipCosts:
        """The cheaper of the two verified points, input by input (ties keep ``self``'s); queries and seconds add."""
        better = other.costs < self.costs
        view = better.view(-1, *([1] * (self.x_adv.dim() - 1)))
        seconds = math.fsum(s for s in (self.seconds, other.seconds) if not math.isnan(s)) \
            if not (math.isnan(self.seconds) and math.isnan(other.seconds)) else math.nan
        return FlipCosts(torch.where(better, other.costs, self.costs), torch.where(view, other.x_adv, self.x_adv),
                         self.correct, _add(self.queries, other.queries), seconds)

    def take(self, idx: torch.Tensor) -> FlipCosts:
        """The rows ``idx``."""
        queries = None if self.queries is None else self.queries[idx]
        return FlipCosts(self.costs[idx], self.x_adv[idx], self.correct[idx], queries)

    def put(self, idx: torch.Tensor, part: FlipCosts) -> None:
        """Overwrite the rows ``idx`` with ``part``."""
        self.costs[idx], self.x_adv[idx], self.correct[idx] = part.costs, part.x_adv, part.correct
        if self.queries is not None and part.queries is not None:
            self.queries[idx] = part.queries


def as_box(clip: Box | ClipLike, like: torch.Tensor) -> Box:
    """``clip`` as a :class:`Box` for inputs like ``like``."""
    return clip if isinstance(clip, Box) else Box.of(clip, like)


def predict_labels(forward: Forward, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """argmax of the model's outputs, batch by batch, without gradients."""
    with torch.no_grad():
        return torch.cat([forward(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)]) \
            if x.shape[0] else torch.zeros(0, dtype=torch.long, device=x.device)


def margins(forward: Forward, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
            target: torch.Tensor | None = None) -> torch.Tensor:
    """max_{j≠y} z_j − z_y minus the tolerance :data:`MARGIN_RTOL`·max(1, max|z|): positive = safely misclassified.

    A minimum-norm point sits on the decision boundary, where another batch size or device kernel can change
    the argmax; the tolerance keeps only points whose misclassification survives such float noise.

    :param target: Per row, a class t ≠ y whose margin z_t − z_y is measured instead of the largest other's (−1:
        the largest other's). A point with a positive targeted margin has a positive untargeted one.
    """
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            z = forward(x[i:i + batch_size]).double()
            yb = y[i:i + batch_size]
            own = z.gather(1, yb[:, None]).squeeze(1)
            other = z.scatter(1, yb[:, None], -math.inf).amax(dim=1)
            if target is not None:
                tb = target[i:i + batch_size]
                other = torch.where(tb >= 0, z.gather(1, tb.clamp_min(0)[:, None]).squeeze(1), other)
            out.append(other - own - MARGIN_RTOL * z.abs().amax(dim=1).clamp_min(1.0))
    return torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)


def _overshoot(forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, box: Box,
               batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Push points misclassified by less than the tolerance a little further from x (factors 1 + OVERSHOOT),
    clamped into the box.

    :return: (the points, whether each is safely misclassified).
    """
    ok = margins(forward, x_adv, y, batch_size) > 0
    moved = (x_adv != x).flatten(1).any(dim=1)
    for gamma in OVERSHOOT:
        weak = ~ok & moved
        if not bool(weak.any()):
            break
        pushed = box.clamp(x + (1.0 + gamma) * (x_adv - x))
        fixed = weak & (margins(forward, pushed, y, batch_size) > 0)
        x_adv = torch.where(fixed.view(-1, *([1] * (x.dim() - 1))), pushed, x_adv)
        ok = ok | fixed
    return x_adv, ok


def verify(forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, norm: float,
           batch_size: int = 256, *, clip: Box | ClipLike = UNIT) -> FlipCosts:
    """The flip costs that the candidate points ``x_adv`` prove, checked by forward passes.

    A candidate counts when it lies in the box ``clip`` (a point outside is "not found") and is misclassified with
    a margin (:func:`margins`), after an overshoot of at most 3% (clamped into the box) where it was misclassified
    by less.

    :param x: Clean inputs (N, ...).
    :param x_adv: Candidate points, same shape and dtype; rows equal to x are "not found".
    :param y: Labels (N,).
    :param norm: The ground norm r.
    :param clip: The box: (lo, hi) broadcastable to one input, or None for no box; the unit box by default.
    """
    box = as_box(clip, x)
    correct = predict_labels(forward, x, batch_size) == y
    x_adv, wrong_adv = _overshoot(forward, x, x_adv, y, box, batch_size)
    # The difference of two float32 numbers is exact in float64: c_i is the norm of the stored point.
    norms = lp_norms(x_adv.double() - x.double(), norm)
    found = correct & wrong_adv & (norms > 0) & box.contains(x_adv, x)
    costs = torch.where(correct, torch.where(found, norms, torch.full_like(norms, math.inf)), torch.zeros_like(norms))
    view = found.view(-1, *([1] * (x.dim() - 1)))
    return FlipCosts(costs, torch.where(view, x_adv, x), correct)
