"""Mixed precision for the attack's gradient passes: the model under bf16 autocast, everything else in float32.

Only the network's forward (and so its backward) runs in bfloat16; the inputs, their gradient, the iterates, the
steps, the costs and the feasibility map keep float32 or float64, so the budget holds exactly as in float32. The
logits come back as float32 before the loss, whose sorts and margins then see no bf16 rounding of their own. bf16
has float32's exponent range: no loss scaling is needed. What a reduced-precision pass decides (which inputs are
won, which iterate is best) is a guess: :mod:`art_wdat.core.engine` re-counts the returned distribution in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: The reduced precision of the model's passes under ``amp``.
AMP_DTYPE = torch.bfloat16

Forward = Callable[[torch.Tensor], torch.Tensor]


def check_amp(amp: object, device: torch.device) -> None:
    """TypeError unless ``amp`` is a bool; ValueError if it is True and torch has no autocast for ``device``."""
    if not isinstance(amp, bool):
        raise TypeError(f"`amp` must be a bool, got {amp!r}.")
    if amp and not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"`amp`=True needs torch.autocast on the estimator's device, which {device.type!r} lacks.")


def autocast_forward(forward: Forward, device: torch.device) -> Forward:
    """``forward`` under bf16 autocast on ``device``, float32 logits out.

    On CUDA a 4-D input goes in ``channels_last`` order, the layout of the tensor cores' convolutions (the copy is
    differentiable: the gradient comes back to the caller's layout).
    """
    channels_last = device.type == "cuda"

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=AMP_DTYPE):
            logits = forward(x)
        return logits.float()

    return run
