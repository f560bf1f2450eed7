"""The settings of one ``fit`` call, checked: :class:`FitOptions`, and the held-out judge the trainer's settings imply.

Imports run one way: settings, then these options, then the epoch loop, then the trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from art_wdat.training.judge import HeldOutJudge, HeldOutPlan
from art_wdat.training.recipe import DEFAULT_RECIPE, FinetuneRecipe
from art_wdat.training.selection import Tolerances
from art_wdat.training.settings import TRADESSettings
from art_wdat.validation import check_int, check_labels, check_x

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger(__name__)

#: ``callback(epoch, record)`` after each epoch.
EpochCallback = Callable[[int, dict], None]
#: ``validation_data`` checked: (x_val, labels as indices).
Validation = tuple[np.ndarray, np.ndarray | None]


@dataclass
class FitOptions:
    """The per-call settings of :meth:`WassersteinTRADESTrainer.fit` shared by the epoch loop."""

    nb_epochs: int
    batch_size: int
    scheduler: Any | None
    checkpoint_dir: Path | None
    resume: bool
    seed: int | None
    verbose: bool
    callback: EpochCallback | None
    #: Measures the held-out split (None: no validation).
    judge: HeldOutJudge | None = None
    #: Keep the best epoch on the held-out split (needs a judge).
    select_best: bool = False
    #: None: the default ones on a fresh start, the checkpoint's on a resume.
    tolerances: Tolerances | None = None
    #: Measure the held-out split after every ``val_every``-th epoch (and after the last).
    val_every: int = 1


def checked_validation(classifier: PyTorchClassifier, data: object) -> Validation | None:
    """``validation_data`` as checked arrays ``(x_val, y_val)``, or None."""
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`validation_data` must be a pair (x_val, y_val).")
    x_val = check_x(data[0], classifier.input_shape, classifier.clip_values, name="validation_data[0]")
    y_val = check_labels(data[1], x_val.shape[0], classifier.nb_classes, name="validation_data[1]")
    return x_val, y_val


def call_sizes(recipe: FinetuneRecipe | None, batch_size: int | None, nb_epochs: int | None,
               scheduler: Any | None) -> tuple[int, int]:
    """The call's batch size and epochs: given, else the recipe's (or the default recipe's). No side effect."""
    if recipe is not None and not isinstance(recipe, FinetuneRecipe):
        raise TypeError(f"`recipe` must be a FinetuneRecipe, got {type(recipe).__name__}.")
    if recipe is not None and scheduler is not None:
        raise ValueError("`scheduler` and `recipe` both set the learning-rate schedule; pass one of them.")
    base = recipe or DEFAULT_RECIPE
    return (base.batch_size if batch_size is None else batch_size,
            base.epochs if nb_epochs is None else nb_epochs)


def held_out_plan(settings: TRADESSettings, batch_size: int = 256) -> HeldOutPlan:
    """How the trainer's held-out split is attacked: W-AutoAttack at eps/2, eps and 2·eps with order ``select_p``
    (default ``p``), the pointwise row at ε (``pointwise_eps``, default ``eps``) by ``val_pointwise``,
    ``eval_max_iter`` iterations, seed 0."""
    eps = float(settings.eps)
    pointwise = eps if settings.pointwise_eps is None else float(settings.pointwise_eps)
    budgets = (eps / 2, eps, 2 * eps) if eps > 0 else (eps,)
    return HeldOutPlan(eps=eps, p=settings.selection_p, norm=float(settings.ball.norm), pointwise_eps=pointwise,
                       budgets=budgets, aa_iter=settings.eval_max_iter, auto_iter=settings.eval_max_iter,
                       batch_size=batch_size, pointwise=settings.val_pointwise)


def held_out_judge(settings: TRADESSettings, x: np.ndarray, y: np.ndarray | None,
                   batch_size: int = 256) -> HeldOutJudge:
    """The judge of the trainer's held-out split ``(x, y)``."""
    classifier = settings.get_classifier()
    labels = check_labels(y, x.shape[0], classifier.nb_classes, name="validation_data[1]")
    if labels is None:
        raise ValueError("`validation_data` needs labels.")
    return HeldOutJudge(classifier, x, labels, held_out_plan(settings, batch_size))


def fit_options(settings: TRADESSettings, nb_epochs: int, batch_size: int, scheduler: Any | None,
                checkpoint_dir: str | Path | None, resume: bool, seed: int | None, verbose: bool,
                callback: EpochCallback | None, validation_data: object, select_best: bool | None,
                tolerances: Tolerances | None, kwargs: dict, val_every: int = 1) -> FitOptions:
    """The checked settings of one fit call (the constructor's are checked again too)."""
    settings._check_params()
    if settings.sensitivity_weight > 0 and settings._sync.world()[0] > 1:
        raise ValueError("`sensitivity_weight` > 0 is not supported under torch.distributed: its Υ would be each "
                         "rank's micro-batch's, not the global batch's.")
    check_int("nb_epochs", nb_epochs, low=1)
    check_int("batch_size", batch_size, low=1)
    check_int("val_every", val_every, low=1)
    if seed is not None:
        check_int("seed", seed, low=0)
    if resume and checkpoint_dir is None:
        raise ValueError("`resume`=True needs a `checkpoint_dir`.")
    if kwargs:
        logger.warning("%s ignores the arguments %s.", type(settings).__name__, sorted(kwargs))
    if settings.amp and not settings._use_amp():
        logger.warning("`amp`=True needs a CUDA device; training in float32 on %s.", settings._device)
    if settings.cheapness_weight > 0 and settings.ball.pointwise:
        logger.warning("`cheapness_weight`=%g is ignored at `p`=inf: p = inf is TRADES.", settings.cheapness_weight)
    validation = checked_validation(settings.get_classifier(), validation_data)
    if select_best is not None and not isinstance(select_best, bool):
        raise TypeError(f"`select_best` must be a bool or None, got {select_best!r}.")
    if select_best and validation is None:
        raise ValueError("`select_best`=True needs `validation_data`, the held-out split it selects on.")
    if tolerances is not None and not isinstance(tolerances, Tolerances):
        raise TypeError(f"`tolerances` must be a Tolerances, got {type(tolerances).__name__}.")
    judge = None if validation is None else held_out_judge(settings, *validation, batch_size=batch_size)
    return FitOptions(nb_epochs, batch_size, scheduler, None if checkpoint_dir is None else Path(checkpoint_dir),
                      resume, seed, verbose, callback, judge=judge,
                      select_best=validation is not None and select_best is not False,
                      tolerances=tolerances, val_every=val_every)
