"""The fine-tuning recipe: the schedule that the trainer, ``art-wdat finetune`` and the examples share.

One object, :class:`FinetuneRecipe`, holds what a fine-tune of a robust model needs beyond the loss: the optimizer,
its learning rate and decay, the epochs, the batch size and the inner steps. :data:`DEFAULT_RECIPE` is the schedule
chosen on a validation split (``docs/experiments/finetune_recipe.md``); the CLI shows it in ``--help``.

This module imports torch only inside the methods that build an optimizer, so that the command line's parser can
read the defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from art_wdat.validation import check_int, check_number

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

OptimizerName = Literal["sgd", "adam"]
DecayName = Literal["cosine", "none"]
OPTIMIZERS: tuple[OptimizerName, ...] = ("sgd", "adam")
DECAYS: tuple[DecayName, ...] = ("cosine", "none")


@dataclass(frozen=True)
class FinetuneRecipe:
    """A fine-tuning schedule.

    :param optimizer: "sgd" (with ``momentum``) or "adam".
    :param lr: The learning rate at the start.
    :param schedule: "cosine": cosine decay to 0 over ``epochs`` (stepped once per epoch); "none": constant.
    :param epochs: Epochs; with a validation split, every epoch is a candidate for the model kept.
    :param batch_size: Inputs per mini-batch: the distribution that shares one W_p budget in the inner maximisation.
    :param max_iter: Steps of the inner maximisation.
    :param momentum: SGD's momentum (unused by Adam).
    :param weight_decay: The optimizer's weight decay.
    """

    optimizer: OptimizerName = "sgd"
    lr: float = 0.001
    schedule: DecayName = "cosine"
    epochs: int = 4
    batch_size: int = 128
    max_iter: int = 5
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.schedule not in DECAYS:
            raise ValueError(f"`schedule` must be one of {DECAYS}, got {self.schedule!r}.")
        check_number("lr", self.lr, low=0.0)
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_int("max_iter", self.max_iter, low=1)
        check_number("momentum", self.momentum, low=0.0)
        check_number("weight_decay", self.weight_decay, low=0.0)

    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer of the recipe over ``params``."""
        import torch

        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any | None:
        """The recipe's per-epoch learning-rate schedule of ``optimizer`` (None: constant)."""
        import torch

        if self.schedule == "none":
            return None
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoints and reports."""
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. "SGD (momentum 0.9), lr 0.001, cosine decay, 4 epochs, batch 128, 5 inner steps"."""
        opt = f"SGD (momentum {self.momentum:g})" if self.optimizer == "sgd" else "Adam"
        decay = "cosine decay" if self.schedule == "cosine" else "constant lr"
        return (f"{opt}, lr {self.lr:g}, {decay}, {self.epochs} epoch(s), batch {self.batch_size}, "
                f"{self.max_iter} inner steps")


#: The default schedule of the trainer's fine-tunes, the CLI and the examples.
DEFAULT_RECIPE = FinetuneRecipe()


#: The default held-out split: this many images, or this fraction of the training data if that is smaller.
VAL_SPLIT_MAX = 1000
VAL_SPLIT_FRACTION = 0.1
#: Its seed: fixed, so that fine-tunes with different seeds choose on the same images.
VAL_SPLIT_SEED = 0


def held_out_size(n: int, value: float | None = None) -> int:
    """How many of ``n`` training images to hold out: ``value`` as a count, or as a fraction if below 1; None: the
    default, :data:`VAL_SPLIT_MAX` or :data:`VAL_SPLIT_FRACTION` of ``n``, whichever is smaller. At least one
    training image is left.

    :raises ValueError: naming ``val_split`` for a negative or fractional count, or one that leaves nothing to train.
    """
    if value is None:
        size = min(VAL_SPLIT_MAX, int(VAL_SPLIT_FRACTION * n))
    else:
        check_number("val_split", value, low=0.0)
        if 0 < value < 1:
            size = int(round(value * n))
        elif value != int(value):
            raise ValueError(f"`val_split` must be a whole count or a fraction below 1, got {value:g}.")
        else:
            size = int(value)
    if size >= n:
        raise ValueError(f"`val_split` {size} leaves no training image of the {n} given.")
    return size


def split_held_out(x: np.ndarray, y: np.ndarray, size: int, seed: int = VAL_SPLIT_SEED
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """``((x_train, y_train), (x_val, y_val))``: ``size`` images drawn with ``seed`` are held out, the others keep
    their order; ``size`` 0 holds out nothing (None). The arrays given are not modified.
    """
    if size <= 0:
        return (x, y), None
    held = np.zeros(len(x), dtype=bool)
    held[np.random.default_rng(seed).permutation(len(x))[:size]] = True
    return (x[~held], y[~held]), (x[held], y[held])
