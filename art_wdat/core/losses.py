"""Per-sample attack losses (:doc:`/maths`): ``loss(logits, target) -> (N,)``.

``target`` holds class indices for CE, DLR and ReDLR, and the clean class probabilities (N, K)
for KL, the TRADES loss. Every loss returns one value per sample and never reduces, because the
distributional attack weights samples by their own gradient norms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Keeps DLR finite when the top three logits coincide (AutoAttack uses the same constant).
_DLR_EPS = 1e-12


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits, target, reduction="none")


def dlr(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein, 2020): −(z_y − max_{j≠y} z_j) / (z_(1) − z_(3) + ε)."""
    if logits.shape[1] < 3:
        raise ValueError(f"DLR needs at least 3 classes, the model has {logits.shape[1]}.")
    top, _ = logits.topk(3, dim=1)
    z_y = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, target.unsqueeze(1), float("-inf"))
    return -(z_y - others.max(dim=1).values) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def redlr(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReDLR = min(DLR, 0): DLR on correctly classified inputs, 0 (and zero gradient) on lost ones."""
    return dlr(logits, target).clamp_max(0.0)


def margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Logit margin max_{j≠y} z_j − z_y (Carlini & Wagner's, unscaled): positive on misclassified inputs.

    The margin loss of models with 2 classes, where DLR's z_(3) does not exist.
    """
    z_y = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    return logits.scatter(1, target.unsqueeze(1), float("-inf")).max(dim=1).values - z_y


def remargin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReMargin = min(margin, 0): the margin on correctly classified inputs, 0 (and zero gradient) on lost ones,
    as ReDLR, for any number of classes ≥ 2."""
    return margin(logits, target).clamp_max(0.0)


def kl_divergence(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ softmax(logits)) per sample, the clean prediction held fixed (TRADES)."""
    log_q = F.log_softmax(logits, dim=1)
    log_p = torch.log(clean_probs.clamp_min(1e-12))
    return (clean_probs * (log_p - log_q)).sum(dim=1)


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "dlr": dlr, "redlr": redlr, "margin": margin, "remargin": remargin,
                             "kl": kl_divergence}


#: The forms of the DLR losses for models with 2 classes, where DLR's third-largest logit does not exist.
TWO_CLASS_FORMS = {"dlr": "margin", "redlr": "remargin"}


def for_classes(loss: str | LossFn, nb_classes: int) -> str | LossFn:
    """``loss``, or for a model with fewer than 3 classes the 2-class form of "dlr"/"redlr" (:data:`TWO_CLASS_FORMS`:
    the logit margin, whose sign and zeros are DLR's)."""
    if isinstance(loss, str) and nb_classes < 3:
        return TWO_CLASS_FORMS.get(loss.lower(), loss)
    return loss


def resolve_loss(loss: str | LossFn) -> LossFn:
    """Return the per-sample loss named ``loss`` (case-insensitive), or ``loss`` itself if callable.

    :raises ValueError: for an unknown name.
    :raises TypeError: for anything that is neither a string nor callable.
    """
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]
    if isinstance(loss, str):
        raise ValueError(f"`loss` must be one of {sorted(LOSSES)} or a callable, got {loss!r}.")
    raise TypeError(f"`loss` must be a string or a callable (logits, labels) -> per-sample losses, got {type(loss)}.")
