"""What the attack and the trainer need from an ART ``PyTorchClassifier``, in one place.

ART keeps the wrapped module, its preprocessing chain and its device in private attributes; every
access to them goes through this module, so a change in ART breaks one file, not four.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch


def require_pytorch_classifier(estimator: object, who: str) -> None:
    """Raise TypeError unless ``estimator`` is an ART ``PyTorchClassifier``.

    :param estimator: The estimator handed to ``who``.
    :param who: The class that needs it, for the message.
    """
    from art.estimators.classification import PyTorchClassifier

    if not isinstance(estimator, PyTorchClassifier):
        raise TypeError(f"{who} needs an ART PyTorchClassifier as `estimator`, got {type(estimator).__name__}; "
                        "wrap the torch.nn.Module in art.estimators.classification.PyTorchClassifier.")
    if not estimator.all_framework_preprocessing:
        raise TypeError(f"{who} needs PyTorch-native preprocessing so that gradients flow through it; "
                        f"`estimator` has {[type(p).__name__ for p in estimator.preprocessing_operations]}. "
                        "Use the *PyTorch variants of ART's preprocessors.")


def device_of(estimator) -> torch.device:
    """The device the estimator's model runs on."""
    return torch.device(estimator.device)


def forward_fn(estimator) -> Callable[[torch.Tensor], torch.Tensor]:
    """Differentiable map from raw inputs to logits, through the estimator's own preprocessing chain."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        x_pre, _ = estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)
        return estimator._model(x_pre)[-1]

    return forward


def clip_box(estimator, device: torch.device) -> tuple | None:
    """The estimator's ``clip_values`` as a pair of float32 tensors on ``device``, or None."""
    if estimator.clip_values is None:
        return None
    lo, hi = (torch.as_tensor(np.asarray(v, dtype=np.float32), device=device) for v in estimator.clip_values)
    return lo, hi


@contextmanager
def eval_mode(estimator) -> Iterator[None]:
    """Put the model in eval mode (batch-norm statistics frozen, no dropout) and restore its mode after."""
    module = estimator.model
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
