"""The input box of the flip-cost solvers (ART's ``clip_values``): one interval for every feature, one per feature,
or none.

A solver keeps its points in the box with :meth:`Box.clamp`; the verification accepts a point only if
:meth:`Box.contains` it. Bounds are float32 tensors rounded inwards from the caller's values, so that a float32 point
inside them is inside the caller's box exactly. A coordinate equal to the clean input's counts as inside: the clean
input's own rounding to float32 is not the attack's doing.

The ``autoattack`` package's FAB and APGD clamp to [0, 1]. :class:`Affine` runs them on u = (x − lo)/(hi − lo):
for an interval shared by all features every ℓ_r norm scales by hi − lo, so their radii and costs convert exactly;
for per-feature bounds the map keeps the points in the box but weighs the features differently (their points are
then candidates, verified in x's units like any other). Without a box, an interval wide around the data stands in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

#: A box as the caller gives it: (lo, hi) as numbers, arrays or tensors broadcastable to one input; or None.
ClipLike = tuple[object, object] | None
_Forward = Callable[[torch.Tensor], torch.Tensor]
#: The unit box, the solvers' default.
UNIT: tuple[float, float] = (0.0, 1.0)


def _inward(bound: object, up: bool, like: torch.Tensor) -> torch.Tensor:
    """``bound`` as a tensor of ``like``'s dtype and device, rounded towards the inside of the box."""
    exact = torch.as_tensor(np.asarray(bound.detach().cpu() if isinstance(bound, torch.Tensor) else bound,
                                       dtype=np.float64))
    out = exact.to(like.dtype)
    outside = out.double() < exact if up else out.double() > exact
    out = torch.where(outside, torch.nextafter(out, torch.full_like(out, math.inf if up else -math.inf)), out)
    return out.to(like.device)


@dataclass(frozen=True)
class Box:
    """Bounds lo ≤ x ≤ hi broadcastable to one input, or none (``lo`` and ``hi`` None)."""

    lo: torch.Tensor | None
    hi: torch.Tensor | None

    @classmethod
    def of(cls, clip: ClipLike, like: torch.Tensor) -> Box:
        """The box ``clip`` for inputs like ``like`` (N, ...).

        :raises ValueError: if the bounds do not broadcast to one input or some lo > hi.
        """
        if clip is None:
            return cls(None, None)
        if not isinstance(clip, (tuple, list)) or len(clip) != 2:
            raise ValueError(f"`clip` must be None or a pair (lo, hi), got {clip!r}.")
        lo, hi = _inward(clip[0], True, like), _inward(clip[1], False, like)
        shape = tuple(like.shape[1:])
        for name, bound in (("lo", lo), ("hi", hi)):
            try:
                fits = torch.broadcast_shapes(bound.shape, shape) == shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(f"`clip` {name} of shape {tuple(bound.shape)} does not broadcast to inputs of shape "
                                 f"{shape}.")
        if bool((lo > hi).any()):
            raise ValueError("`clip` must have lo ≤ hi in every feature.")
        return cls(lo, hi)

    @property
    def bounded(self) -> bool:
        """Whether there is a box at all."""
        return self.lo is not None

    @property
    def is_unit(self) -> bool:
        """Whether the box is [0, 1] in every feature."""
        return self.lo is not None and self.hi is not None and bool((self.lo == 0).all() and (self.hi == 1).all())

    def interval(self) -> tuple[float, float] | None:
        """(lo, hi) when every feature has the same bounds, else None (per-feature bounds, or no box)."""
        if self.lo is None or self.hi is None:
            return None
        lo, hi = float(self.lo.min()), float(self.hi.max())
        same = bool((self.lo == self.lo.min()).all() and (self.hi == self.hi.max()).all())
        return (lo, hi) if same else None

    def clamp(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (N, ...) clamped into the box (a copy)."""
        return t.clone() if self.lo is None else torch.clamp(t, self.lo, self.hi)

    def contains(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per row of ``t``, whether every coordinate lies in the box or equals the clean input's ``x``."""
        if self.lo is None or self.hi is None:
            return torch.ones(t.shape[0], dtype=torch.bool, device=t.device)
        ok = ((t >= self.lo) & (t <= self.hi)) | (t == x)
        return ok.flatten(1).all(dim=1)

    def room(self, x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """How far each coordinate of ``x`` can move in the direction ``sign`` (±1) inside the box (inf: no box)."""
        if self.lo is None or self.hi is None:
            return torch.full_like(x, math.inf)
        return torch.where(sign > 0, self.hi - x, x - self.lo).clamp_min(0)

    def farthest(self, x: torch.Tensor) -> torch.Tensor:
        """Per coordinate, the distance from ``x`` to the farther bound (inf: no box)."""
        if self.lo is None or self.hi is None:
            return torch.full_like(x, math.inf)
        return torch.maximum(x - self.lo, self.hi - x)


@dataclass(frozen=True)
class Affine:
    """x = lo + width·u, the map that puts the box (or a stand-in) on [0, 1].

    :ivar lo: Offset, a number or per-feature tensor.
    :ivar width: Scale, a number or per-feature tensor (every width > 0).
    :ivar exact: Whether every ℓ_r norm scales by the single number ``width`` (one interval for all features).
    """

    lo: torch.Tensor
    width: torch.Tensor
    exact: bool

    @classmethod
    def of(cls, box: Box, x: torch.Tensor) -> Affine | None:
        """The map of ``box`` (None for the unit box: the solvers run on x itself). Without a box: the interval
        [min x − s, max x + s] with s = max(max x − min x, 1), far wider than any cheapest flip of the data."""
        if box.is_unit:
            return None
        if box.lo is None or box.hi is None:
            lo_v = float(x.min()) if x.numel() else 0.0
            hi_v = float(x.max()) if x.numel() else 1.0
            span = max(hi_v - lo_v, 1.0)
            lo, hi = x.new_tensor(lo_v - span), x.new_tensor(hi_v + span)
            return cls(lo, hi - lo, True)
        width = (box.hi - box.lo).clamp_min(torch.finfo(x.dtype).tiny)
        return cls(box.lo, width, box.interval() is not None)

    @property
    def scale(self) -> float:
        """The factor of every norm (for an exact map)."""
        return float(self.width.max())

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """u of x (clamped into [0, 1] against rounding)."""
        return ((x - self.lo) / self.width).clamp(0.0, 1.0)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """x of u."""
        return self.lo + self.width * u

    def forward(self, forward: _Forward) -> _Forward:
        """The model as a function of u."""
        return lambda u: forward(self.from_unit(u))
