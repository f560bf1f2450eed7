"""Per-sample norms and the power means that couple them (:doc:`/maths`), in pure torch.

Tensors hold one sample per row of dim 0. Per-sample norms and the reductions over them run in float64:
they are N numbers, and the budget must hold to 1e-6 relative whatever N is. Power means reduce through a
:class:`~art_wdat.core.reduce.Reducer`, so the samples may sit in batches or on the shards of several ranks.
"""

from __future__ import annotations

import math

import torch

from art_wdat.core.reduce import LOCAL, Reducer


def conjugate(e: float) -> float:
    """Hölder conjugate of ``e`` in [1, inf]: 1/e + 1/conj = 1."""
    if e == 1:
        return math.inf
    if math.isinf(e):
        return 1.0
    return e / (e - 1.0)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Shape a per-sample vector ``v`` (N,) to broadcast against ``like`` (N, ...), in ``like``'s dtype."""
    return v.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def lp_norms(t: torch.Tensor, order: float) -> torch.Tensor:
    """Per-sample ℓ_order norms of ``t`` as float64, shape (N,)."""
    return torch.linalg.vector_norm(t.flatten(1).double(), ord=order, dim=1)


def power_mean(values: torch.Tensor, e: float, reducer: Reducer = LOCAL) -> torch.Tensor:
    """((1/N) Σ v_i^e)^(1/e) over all samples (max for e = inf), as a 0-d float64 tensor.

    Scaled by the global maximum so that large ``e`` (p near 1) neither overflows nor underflows.
    Two reductions across ranks at most: the maximum, then the sum and the count together.
    """
    v = values.double()
    vmax = reducer.max(v.max() if v.numel() else v.new_zeros(()))
    if math.isinf(e):
        return vmax
    safe = torch.where(vmax > 0, vmax, torch.ones_like(vmax))
    total, count = reducer.sum(torch.stack([((v / safe) ** e).sum(), v.new_tensor(float(v.numel()))]))
    return torch.where(vmax > 0, safe * (total / count.clamp_min(1.0)) ** (1.0 / e), vmax)


def project_l1_ball(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``delta`` onto its ℓ1 ball (Duchi et al., 2008).

    In float64: the threshold comes from a cumulative sum, whose float32 rounding alone would
    overshoot the radius by up to 5e-6 relative.
    """
    flat = delta.flatten(1).double()
    mag = flat.abs()
    srt, _ = mag.sort(dim=1, descending=True)
    cums = srt.cumsum(dim=1)
    idx = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    rad = radius.double().unsqueeze(1)
    k = ((srt * idx) > (cums - rad)).sum(dim=1, keepdim=True).clamp_min(1)
    theta = ((cums.gather(1, k - 1) - rad) / k.to(flat.dtype)).clamp_min(0)
    inside = mag.sum(dim=1, keepdim=True) <= rad
    shrunk = flat.sign() * (mag - theta).clamp_min(0)
    return torch.where(inside, flat, shrunk).to(delta.dtype).view_as(delta)


def round_towards(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact`` (float64) in ``x``'s dtype, each coordinate rounded towards ``x`` rather than to nearest."""
    out = exact.to(x.dtype)
    x64 = x.double()
    longer = (out.double() - x64).abs() > (exact - x64).abs()
    return torch.where(longer, torch.nextafter(out, x), out)
