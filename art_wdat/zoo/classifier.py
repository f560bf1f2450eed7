"""The ART wrapper: any logits-producing ``nn.Module`` as a :class:`PyTorchClassifier`, with its argument checks."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_wdat.validation import check_int

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "gpu", "auto")


def device_type(device: str) -> str:
    """Map ``device`` in {"cpu", "cuda", "gpu", "auto"} onto ART's ``device_type`` ("cpu" / "gpu")."""
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    device = device.lower()
    if device == "cpu":
        return "cpu"
    cuda = torch.cuda.is_available()
    if device == "auto":
        return "gpu" if cuda else "cpu"
    if not cuda:
        # ART silently falls back to the CPU in this case; say so.
        logger.warning("device=%r requested but CUDA is not available; running on the CPU", device)
    return "gpu"


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, or TypeError/ValueError."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
        raise TypeError(f"input_shape must be a non-empty sequence of ints, got {input_shape!r}")
    for i, dim in enumerate(input_shape):
        check_int(f"input_shape[{i}]", dim, low=1)
    return tuple(int(dim) for dim in input_shape)


def check_clip_values(clip_values: Sequence[float] | None) -> tuple[float, float] | None:
    """``clip_values`` as a pair of floats ``(min, max)`` with min < max, or None."""
    if clip_values is None:
        return None
    if not isinstance(clip_values, Sequence) or len(clip_values) != 2:
        raise TypeError(f"clip_values must be None or a pair (min, max), got {clip_values!r}")
    low, high = float(clip_values[0]), float(clip_values[1])
    if not low < high:
        raise ValueError(f"clip_values must satisfy min < max, got {clip_values!r}")
    return low, high


def check_preprocessing(preprocessing: Any, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate ``(mean, std)``; per-channel vectors are shaped (C, 1, 1) for channels-first input.

    The explicit reshape avoids ART guessing the channel axis, which it gets wrong when the image width
    equals the number of channels.
    """
    if preprocessing is None:
        return None
    if not isinstance(preprocessing, (Sequence, np.ndarray)) or len(preprocessing) != 2:
        raise TypeError(f"preprocessing must be None or a pair (mean, std), got {preprocessing!r}")
    mean = np.asarray(preprocessing[0], dtype=np.float32)
    std = np.asarray(preprocessing[1], dtype=np.float32)
    if mean.shape != std.shape or mean.ndim > 1:
        raise ValueError(f"preprocessing mean and std must be scalars or vectors of one shape, got {preprocessing!r}")
    if mean.ndim == 1 and mean.shape[0] not in (1, channels):
        raise ValueError(f"preprocessing mean/std have {mean.shape[0]} values but the input has {channels} channels")
    if np.any(std <= 0):
        raise ValueError(f"preprocessing std must be > 0, got {std.tolist()}")
    if mean.ndim == 1:
        mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    return mean, std


def clip_pair(values: Any) -> tuple[float, float] | None:
    """ART stores ``clip_values`` as an array; :func:`make_classifier` takes a pair of floats (or None)."""
    return None if values is None else (float(values[0]), float(values[1]))


def _optimizer(model: nn.Module, optimizer: torch.optim.Optimizer | None, lr: float) -> torch.optim.Optimizer:
    """``optimizer`` checked, or the default Adam over ``model.parameters()`` with learning rate ``lr``."""
    if optimizer is None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        return torch.optim.Adam(model.parameters(), lr=float(lr))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    return optimizer


def make_classifier(
    model: nn.Module,
    input_shape: Sequence[int],
    nb_classes: int,
    *,
    clip_values: Sequence[float] | None = (0.0, 1.0),
    preprocessing: Sequence[Any] | None = None,
    device: str = "cpu",
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
) -> PyTorchClassifier:
    """Wrap a logits-producing ``model`` as an ART :class:`PyTorchClassifier` with cross-entropy loss.

    :param model: the network; its output must be logits of shape (N, nb_classes).
    :param input_shape: shape of one input, channels first, e.g. ``(3, 32, 32)``.
    :param nb_classes: number of classes.
    :param clip_values: the input box ``(min, max)``, or None for none.
    :param preprocessing: None, or ``(mean, std)`` (scalars or per-channel) that ART applies before the
        model, so that attacks work in the unnormalised input space.
    :param device: "cpu", "cuda" (alias "gpu") or "auto" (cuda when available).
    :param optimizer: optimizer for ``fit``; default Adam over ``model.parameters()`` with ``lr``.
    :param lr: learning rate of the default optimizer.
    :return: the ART classifier.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = check_input_shape(input_shape)
    check_int("nb_classes", nb_classes, low=2)
    clip = check_clip_values(clip_values)
    prep = check_preprocessing(preprocessing, shape[0])
    art_device = device_type(device)
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=int(nb_classes),
        optimizer=_optimizer(model, optimizer, lr),
        clip_values=clip,
        preprocessing=prep if prep is not None else (0.0, 1.0),
        device_type=art_device,
    )
