"""Models and data for the ``art-wdat`` commands: ``--model``, ``--dataset``, the checks that they fit, shards.

torch, ART and robustbench are imported inside the functions, so that importing the command line stays cheap.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger("art_wdat.cli")

DEMO_MODEL = "demo"


@dataclass
class LoadedModel:
    """A classifier and what is needed to save it again as a local checkpoint.

    :ivar classifier: The ART classifier.
    :ivar arch: Architecture for :func:`art_wdat.zoo.save_checkpoint_model` (name, dict or module).
    :ivar meta: Checkpoint meta (input_shape, nb_classes, clip_values, preprocessing, ...).
    :ivar label: Printable name.
    """

    classifier: Any
    arch: Any
    meta: dict = field(default_factory=dict)
    label: str = ""


def _rb_dataset(dataset: str) -> str:
    """The RobustBench zoo to look in: the dataset's own for CIFAR, else CIFAR-10 (shape checks catch misuse)."""
    return dataset if dataset in ("cifar10", "cifar100") else "cifar10"


def load_model(spec: str, args: argparse.Namespace) -> LoadedModel:
    """Resolve ``--model``: ``rb:<name>``, ``demo``, or a local checkpoint path.

    :raises FileNotFoundError: neither of the three.
    """
    from art_wdat.zoo import RB_PREFIX

    if spec.startswith(RB_PREFIX):
        return _robustbench_model(spec, args)
    if spec == DEMO_MODEL:
        return _demo_model(args)
    check_model_spec(spec)
    return _local_model(Path(spec), args)


def _robustbench_model(spec: str, args: argparse.Namespace) -> LoadedModel:
    """``--model rb:<name>``: a RobustBench model of the dataset's zoo (CIFAR-10 for other data sets)."""
    from art_wdat.zoo import RB_PREFIX, load_robustbench

    name = spec[len(RB_PREFIX):]
    if not name:
        raise ValueError("--model rb: needs a RobustBench model name, e.g. rb:Addepalli2022Efficient_RN18")
    dataset = _rb_dataset(args.dataset)
    clf = load_robustbench(name, dataset=dataset, threat_model=args.threat_model, model_dir=args.model_dir,
                           device=args.device)
    meta = {"input_shape": list(clf.input_shape), "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0],
            "dataset": dataset, "threat_model": args.threat_model}
    return LoadedModel(clf, spec, meta, spec)


def _local_model(path: Path, args: argparse.Namespace) -> LoadedModel:
    """``--model PATH``: an art-wdat checkpoint, with the meta needed to save it again."""
    from art_wdat.zoo import load_local_checkpoint, read_checkpoint

    payload = read_checkpoint(path)
    clf = load_local_checkpoint(path, device=args.device)
    meta = {k: payload.get(k) for k in ("input_shape", "nb_classes", "clip_values", "preprocessing")}
    meta.update({k: v for k, v in payload["arch"].get("kwargs", {}).items() if k in ("dataset", "threat_model")})
    return LoadedModel(clf, payload["arch"], meta, str(path))


def check_model_spec(spec: str) -> None:
    """Fail fast, before any data is loaded, on a ``--model`` that is neither rb:, demo nor an existing file."""
    from art_wdat.zoo import RB_PREFIX

    if spec.startswith(RB_PREFIX) or spec == DEMO_MODEL:
        return
    path = Path(spec)
    if path.is_dir():
        raise IsADirectoryError(f"--model {spec!r} is a folder; give the checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"unknown model {spec!r}: expected rb:<RobustBench name>, 'demo', or the path of an "
                                "art-wdat checkpoint (no such file)")


def _demo_model(args: argparse.Namespace) -> LoadedModel:
    from art_wdat.cli import demo

    config = demo.DemoConfig(seed=args.seed)
    x_train, y_train, _, _ = demo.load_demo_data(config)
    logger.info("training the demo model (TRADES on digits, %d epochs)", config.train_epochs)
    clf, _ = demo.train_demo_model(config, x_train, y_train, verbose=not args.quiet)
    meta = {"input_shape": list(clf.input_shape), "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0]}
    return LoadedModel(clf, clf.model, meta, "demo (SmallCNN, TRADES on digits)")


def load_data(args: argparse.Namespace, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``--dataset`` as (x, y) for ``split``; ``--n-samples`` keeps the first N."""
    from art_wdat.zoo.data import load_dataset

    return load_dataset(args.dataset, data_dir=args.data_dir, n_samples=args.n_samples, split=split)


def check_compatible(classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, dataset: str) -> None:
    """ValueError when the data does not fit the model (input shape, label range)."""
    if tuple(x.shape[1:]) != tuple(classifier.input_shape):
        raise ValueError(f"the model expects inputs of shape {tuple(classifier.input_shape)} but {dataset} has "
                         f"{tuple(x.shape[1:])}")
    if len(y) and int(y.max()) >= classifier.nb_classes:
        raise ValueError(f"{dataset} has label {int(y.max())} but the model has {classifier.nb_classes} classes")


def shard(x: np.ndarray, y: np.ndarray, world: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's contiguous share of (x, y): the shards in rank order are the data in its order."""
    import numpy as np

    if len(x) < world:
        raise ValueError(f"{len(x)} input(s) cannot be shared among {world} ranks; use more data or fewer ranks")
    idx = np.array_split(np.arange(len(x)), world)[rank]
    return x[idx], y[idx]
