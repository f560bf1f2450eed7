"""Plausibility checks that run before any data download, model download or training.

What a ``--model`` takes is often known before it is loaded: the demo model takes 8×8 grey digits, a
RobustBench model the images of the data set its name is filed under (RobustBench files each name under one or
more (data set, threat model) pairs), a model file the data's own shape. What a named ``--dataset`` holds is
known without loading it. So a data set that does not fit the model, and a budget on the wrong scale (8 instead
of 8/255), are refused here, in one line, before the 170 MB CIFAR download, the weights' download or the demo
model's training; what only the loaded model or data can tell is checked again once they are loaded
(:func:`art_wdat.cli.loading.check_compatible`, :func:`~art_wdat.cli.loading.check_budgets`).

Only ``rb:`` models import anything heavy here (robustbench's model list, which loading them needs anyway).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger("art_wdat.cli")

#: The ``--model`` that trains the demo model.
DEMO_MODEL = "demo"
#: Input shape and number of classes of each named ``--dataset`` (npz data is known once loaded).
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}
#: Input shape and number of classes of each RobustBench data set (as art_wdat.zoo.robustbench has them; not
#: imported from there, which imports torch).
RB_DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}
#: The threat model RobustBench users mean when they name none.
DEFAULT_THREAT_MODEL = "Linf"


@dataclass(frozen=True)
class InputFacts:
    """What a model takes, or what a data set holds, as far as it is known.

    :ivar shape: The shape of one input.
    :ivar nb_classes: Classes of the model, or of the data set (for npz data: its largest label + 1, a lower
        bound); None when unknown.
    :ivar clip_values: The box of the inputs; None when unknown.
    :ivar label: How messages name it.
    """

    shape: tuple[int, ...]
    nb_classes: int | None
    clip_values: tuple[float, float] | None
    label: str


@dataclass(frozen=True)
class RobustBenchZoo:
    """The (data set, threat model) of RobustBench's model zoo that a ``rb:`` name is loaded from."""

    dataset: str
    threat_model: str


# --------------------------------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------------------------------


def data_facts(dataset: str, data: tuple[np.ndarray, np.ndarray] | None = None) -> InputFacts | None:
    """What ``--dataset`` holds: from the loaded ``data`` if given, else from its name; None for npz unloaded."""
    if data is not None:
        x, y = data
        classes = int(y.max()) + 1 if len(y) else None
        known = DATASET_SHAPES.get(dataset)
        return InputFacts(tuple(x.shape[1:]), known[1] if known else classes, None, dataset)
    if dataset in DATASET_SHAPES:
        shape, classes = DATASET_SHAPES[dataset]
        return InputFacts(shape, classes, None, dataset)
    return None


# --------------------------------------------------------------------------------------------------
# RobustBench names
# --------------------------------------------------------------------------------------------------


def robustbench_homes(name: str) -> list[RobustBenchZoo]:
    """Every (data set, threat model) of RobustBench's model zoo that files the model ``name`` (no download)."""
    from art_wdat.zoo.robustbench_compat import import_robustbench

    import_robustbench()  # first: a bare robustbench import fails without its autoattack alias
    from robustbench.model_zoo import model_dicts

    return [RobustBenchZoo(dataset.value, threat.value) for dataset, zoos in model_dicts.items()
            for threat, entries in zoos.items() if name in entries]


def _describe(name: str, dataset: str, threats: Sequence[str] = ()) -> str:
    shape, classes = RB_DATASET_SHAPES[dataset]
    filed = f" ({', '.join(threats)})" if threats else ""
    return (f"rb:{name} is a RobustBench {dataset} model{filed}: it takes inputs of shape {shape} and has "
            f"{classes} classes")


def choose_robustbench_zoo(name: str, dataset: str, threat_model: str | None,
                           data: InputFacts | None) -> RobustBenchZoo | None:
    """The zoo to load ``rb:<name>`` from, for ``--dataset`` and ``--threat-model`` (None: the name's own).

    The data set's own zoo for CIFAR; for other data the zoo whose inputs have the data's shape. A threat model
    not given is the one the name is filed under, or Linf when it is filed under several.

    :param data: What the data holds (None: not known yet, only the threat model is checked).
    :return: The zoo; None for a name RobustBench does not file (its loader then says so, with suggestions).
    :raises ValueError: the data set does not fit any of the name's zoos, or the threat model is not one of them.
    """
    homes = robustbench_homes(name)
    if not homes:
        return None
    datasets = list(dict.fromkeys(home.dataset for home in homes))
    if data is not None:
        fits = [d for d in datasets if _fits(d, dataset, data)]
        if not fits:
            raise ValueError(_mismatch(name, datasets, homes, dataset, data))
        datasets = fits
    chosen = dataset if dataset in datasets else datasets[0]
    threats = [home.threat_model for home in homes if home.dataset == chosen]
    return RobustBenchZoo(chosen, _threat_model(name, chosen, threats, threat_model))


def _fits(rb_dataset: str, dataset: str, data: InputFacts) -> bool:
    """Whether the model zoo of ``rb_dataset`` takes the data: the same data set, or same shape and enough classes."""
    if dataset in RB_DATASET_SHAPES:
        return rb_dataset == dataset
    shape, classes = RB_DATASET_SHAPES[rb_dataset]
    return tuple(data.shape) == shape and (data.nb_classes is None or data.nb_classes <= classes)


def _mismatch(name: str, datasets: Sequence[str], homes: Sequence[RobustBenchZoo], dataset: str,
              data: InputFacts) -> str:
    first = datasets[0]
    what = _describe(name, first, [h.threat_model for h in homes if h.dataset == first])
    if len(datasets) > 1:
        what += f" (also filed under {', '.join(datasets[1:])})"
    shape, classes = RB_DATASET_SHAPES[first]
    held = f"inputs of shape {tuple(data.shape)}"
    if tuple(data.shape) == shape and data.nb_classes is not None:
        held = f"{data.nb_classes} classes"
    return f"the data set does not fit the model: {what}, but {dataset} has {held}"


def _threat_model(name: str, dataset: str, threats: Sequence[str], given: str | None) -> str:
    """``given`` checked against the threat models ``name`` is filed under in ``dataset``, or the one to use."""
    by_lower = {t.lower(): t for t in threats}
    if given is not None:
        wanted = given.lower().replace("_3d", "")
        if wanted not in by_lower:
            raise ValueError(f"rb:{name} is a RobustBench {dataset} model for the threat model(s) "
                             f"{', '.join(threats)}, not {given}: pass --threat-model {threats[0]}")
        return given  # as given: corruptions_3d stays corruptions_3d
    if len(threats) == 1:
        logger.info("rb:%s: the %s threat model, the only one it is filed under", name, threats[0])
        return threats[0]
    return DEFAULT_THREAT_MODEL if DEFAULT_THREAT_MODEL in threats else threats[0]


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


def model_facts(spec: str, args: argparse.Namespace, data: InputFacts | None) -> InputFacts | None:
    """What ``--model spec`` takes, without loading it; None where only the loaded model can tell.

    :param data: What the data holds, if known (a model file takes its shape; a RobustBench name is checked
        against it).
    :raises ValueError: a RobustBench name that does not fit the data or ``--threat-model``.
    """
    from art_wdat.zoo import RB_PREFIX
    from art_wdat.zoo.user import is_user_model

    if spec == DEMO_MODEL:
        return InputFacts((1, 8, 8), 10, (0.0, 1.0), "the demo model (SmallCNN on digits)")
    if spec.startswith(RB_PREFIX) and spec[len(RB_PREFIX):]:
        name = spec[len(RB_PREFIX):]
        zoo = choose_robustbench_zoo(name, args.dataset, getattr(args, "threat_model", None), data)
        if zoo is None:
            return None
        shape, classes = RB_DATASET_SHAPES[zoo.dataset]
        return InputFacts(shape, classes, (0.0, 1.0), f"{spec} (RobustBench {zoo.dataset}, {zoo.threat_model})")
    if is_user_model(spec) or spec.lower().endswith(".onnx"):  # wrapped for [0, 1] inputs of the data's shape
        return InputFacts(data.shape, None, (0.0, 1.0), spec) if data is not None else None
    return _checkpoint_facts(spec)


def _checkpoint_facts(spec: str) -> InputFacts | None:
    """What a local art-wdat checkpoint takes, from its stored meta (None for anything else: loading says why)."""
    from art_wdat.zoo import ModelUnavailableError, read_checkpoint

    try:
        payload = read_checkpoint(spec)
    except (OSError, ValueError, ModelUnavailableError):
        return None
    clip = payload.get("clip_values")
    box = None  # none, or per-feature bounds: checked once loaded
    if isinstance(clip, (list, tuple)) and len(clip) == 2 and all(isinstance(v, (int, float)) for v in clip):
        box = (float(clip[0]), float(clip[1]))
    return InputFacts(tuple(payload["input_shape"]), int(payload["nb_classes"]), box, spec)


def check_fit(model: InputFacts, data: InputFacts) -> None:
    """ValueError naming the mismatch when the data's inputs or labels do not fit the model."""
    if tuple(model.shape) != tuple(data.shape):
        raise ValueError(f"the data set does not fit the model: {model.label} expects inputs of shape "
                         f"{tuple(model.shape)} but {data.label} has {tuple(data.shape)}")
    if model.nb_classes is not None and data.nb_classes is not None and data.nb_classes > model.nb_classes:
        raise ValueError(f"the data set does not fit the model: {model.label} has {model.nb_classes} classes but "
                         f"{data.label} has {data.nb_classes} (labels 0–{data.nb_classes - 1})")


def check_plan(args: argparse.Namespace, budgets: Mapping[str, Sequence[float]],
               data: tuple[np.ndarray, np.ndarray] | None = None) -> InputFacts | None:
    """Refuse, before anything is downloaded or trained, a data set that does not fit the model and a budget on
    the wrong scale, wherever they are known without loading the model.

    :param args: The command's arguments (``model``, ``dataset``, ``threat_model``, ``norm``, ``allow_large_eps``).
    :param budgets: The budgets the command will use, by option (``{"--eps": [...]}``, defaults included).
    :param data: The loaded (x, y), if any (else a named data set's known shape is used).
    :return: What the model takes, as far as known.
    :raises ValueError: one line, naming the mismatch or the option.
    """
    from art_wdat.attacks.spec import check_eps_scale

    held = data_facts(args.dataset, data)
    model = model_facts(args.model, args, held)
    if model is None:
        return None
    if held is not None:
        check_fit(model, held)
    if not getattr(args, "allow_large_eps", False) and model.clip_values is not None:
        for option, values in budgets.items():
            for eps in values:
                check_eps_scale(eps, args.norm, model.clip_values, model.shape, name=option,
                                opt_in="--allow-large-eps")
    return model
