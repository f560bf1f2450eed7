"""Models and data for the ``art-wdat`` commands: ``--model``, ``--dataset``, the checks that they fit, shards.

torch, ART and robustbench are imported inside the functions, so that importing the command line stays cheap.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from art_wdat.cli.checks import DEMO_MODEL, choose_robustbench_zoo, data_facts

if TYPE_CHECKING:
    import numpy as np
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger("art_wdat.cli")


@dataclass
class LoadedModel:
    """A classifier and what is needed to save it again as a local checkpoint.

    :ivar classifier: The ART classifier.
    :ivar arch: Architecture for :func:`art_wdat.zoo.save_checkpoint_model` (name, dict or module); None for a
        model file (FILE.py:FACTORY, TorchScript, torch.export), whose fine-tuned weights are saved as a state_dict.
    :ivar meta: Checkpoint meta (input_shape, nb_classes, clip_values, preprocessing, ...).
    :ivar label: Printable name.
    """

    classifier: Any
    arch: Any
    meta: dict = field(default_factory=dict)
    label: str = ""


Data = tuple["np.ndarray", "np.ndarray"]


def load_model(spec: str, args: argparse.Namespace, data: Data | None = None) -> LoadedModel:
    """Resolve ``--model``: ``rb:<name>``, ``demo``, ``FILE.py:FACTORY[:ARGS]``, a TorchScript, ``torch.export`` or
    ONNX file, or a local checkpoint.

    :param data: The (x, y) the model is for: a model file takes its input shape from them, and a model that does
        not fit them is refused before anything expensive runs (the demo model's training).
    :raises FileNotFoundError: none of these.
    """
    from art_wdat.zoo import RB_PREFIX
    from art_wdat.zoo.user import is_user_model

    onnx = spec.lower().endswith(".onnx")
    user = is_user_model(spec) or onnx
    check_model_options(spec, args, user)
    if onnx:
        loaded = _onnx_model(spec, args, data)
    elif spec.startswith(RB_PREFIX):
        loaded = _robustbench_model(spec, args, data)
    elif spec == DEMO_MODEL:
        loaded = _demo_model(args, data)
    elif user:
        loaded = _user_model(spec, args, data)
    else:
        check_model_spec(spec)
        loaded = _local_model(Path(spec), args)
    if data is not None:
        check_compatible(loaded.classifier, data[0], data[1], args.dataset)
    return loaded


def check_model_options(spec: str, args: argparse.Namespace, user: bool) -> None:
    """--weights, --mean and --std go with a model file (the others bring their own); --mean with --std."""
    given = [f"--{name}" for name in ("weights", "mean", "std") if getattr(args, name, None) is not None]
    if given and not user:
        verb = "goes" if len(given) == 1 else "go"
        raise ValueError(f"{' and '.join(given)} {verb} with --model FILE.py:FACTORY or a TorchScript / torch.export "
                         f"file; {spec!r} brings its own weights and normalisation")
    if (getattr(args, "mean", None) is None) != (getattr(args, "std", None) is None):
        raise ValueError("--mean and --std go together")


def _user_model(spec: str, args: argparse.Namespace, data: Data | None) -> LoadedModel:
    """``--model FILE.py:FACTORY[:ARGS]`` or a TorchScript / torch.export file, [0, 1] inputs of the data's shape."""
    from art_wdat.zoo.user import load_user_module, wrap_user_module

    if data is None:
        raise ValueError(f"--model {spec}: a model file takes its input shape from the data")
    weights = getattr(args, "weights", None)
    module = load_user_module(spec, Path(weights) if weights is not None else None)
    preprocessing = None if getattr(args, "mean", None) is None else [args.mean, args.std]
    shape = list(data[0].shape[1:])
    try:
        clf = wrap_user_module(module, shape, preprocessing=preprocessing, device=args.device)
    except ValueError as err:
        raise ValueError(f"--model {spec} on {args.dataset}: {err}") from err
    meta = {"input_shape": shape, "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0],
            "preprocessing": preprocessing}
    return LoadedModel(clf, None, meta, spec)


def _onnx_model(spec: str, args: argparse.Namespace, data: Data | None) -> LoadedModel:
    """``--model FILE.onnx``: an ONNX model converted to torch by ``onnx2torch`` (gradients and all), [0, 1] inputs of
    the data's shape; its batch dimension must be dynamic."""
    if not Path(spec).is_file():
        raise FileNotFoundError(f"--model {spec!r}: no ONNX file there")
    import importlib

    try:
        convert = importlib.import_module("onnx2torch").convert
    except ImportError as err:
        raise ImportError("--model FILE.onnx needs the onnx2torch package: pip install onnx2torch") from err
    if data is None:
        raise ValueError(f"--model {spec}: an ONNX model takes its input shape from the data")
    from art_wdat.zoo.user import wrap_user_module

    preprocessing = None if getattr(args, "mean", None) is None else [args.mean, args.std]
    shape = list(data[0].shape[1:])
    try:
        clf = wrap_user_module(convert(spec).eval(), shape, preprocessing=preprocessing, device=args.device)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"--model {spec} on {args.dataset}: {err}") from err
    meta = {"input_shape": shape, "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0],
            "preprocessing": preprocessing}
    return LoadedModel(clf, None, meta, spec)


def _robustbench_model(spec: str, args: argparse.Namespace, data: Data | None) -> LoadedModel:
    """``--model rb:<name>``: a RobustBench model from the zoo its name is filed under that fits the data (the
    data set's own for CIFAR), refused before the download when none fits."""
    from art_wdat.zoo import RB_PREFIX, load_robustbench

    name = spec[len(RB_PREFIX):]
    if not name:
        raise ValueError("--model rb: needs a RobustBench model name, e.g. rb:Addepalli2022Efficient_RN18")
    zoo = choose_robustbench_zoo(name, args.dataset, args.threat_model, data_facts(args.dataset, data))
    # A name RobustBench does not file: its loader says so, with the closest names.
    dataset = zoo.dataset if zoo is not None else ("cifar100" if args.dataset == "cifar100" else "cifar10")
    threat_model = zoo.threat_model if zoo is not None else (args.threat_model or "Linf")
    clf = load_robustbench(name, dataset=dataset, threat_model=threat_model, model_dir=args.model_dir,
                           device=args.device)
    meta = {"input_shape": list(clf.input_shape), "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0],
            "dataset": dataset, "threat_model": threat_model}
    return LoadedModel(clf, spec, meta, spec)


def _local_model(path: Path, args: argparse.Namespace) -> LoadedModel:
    """``--model PATH``: an art-wdat checkpoint, with the meta needed to save it again."""
    from art_wdat.zoo import ModelUnavailableError, load_local_checkpoint, read_checkpoint
    from art_wdat.zoo.user import saved_file_hint

    try:
        payload = read_checkpoint(path)
    except (ValueError, ModelUnavailableError) as err:
        raise type(err)(saved_file_hint(path)) from err
    clf = load_local_checkpoint(path, device=args.device)
    meta = {k: payload.get(k) for k in ("input_shape", "nb_classes", "clip_values", "preprocessing")}
    meta.update({k: v for k, v in payload["arch"].get("kwargs", {}).items() if k in ("dataset", "threat_model")})
    return LoadedModel(clf, payload["arch"], meta, str(path))


def check_model_spec(spec: str) -> None:
    """Fail fast, before any data is loaded, on a ``--model`` that is neither rb:, demo, a factory nor an existing
    file."""
    from art_wdat.zoo import RB_PREFIX
    from art_wdat.zoo.user import parse_factory_spec

    if spec.startswith(RB_PREFIX) or spec == DEMO_MODEL:
        return
    factory = parse_factory_spec(spec)
    if factory is not None:
        if not factory.path.is_file():
            raise FileNotFoundError(f"--model {spec!r}: no python file at {factory.path}")
        return
    path = Path(spec)
    if path.is_dir():
        raise IsADirectoryError(f"--model {spec!r} is a folder; give the checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"unknown model {spec!r}: expected rb:<RobustBench name>, 'demo', FILE.py:FACTORY, or "
                                "the path of an art-wdat checkpoint, TorchScript or torch.export file (no such file)")


def _demo_model(args: argparse.Namespace, data: Data | None) -> LoadedModel:
    from art_wdat.cli import demo

    config = demo.DemoConfig(seed=args.seed)
    x_train, y_train, _, _ = demo.load_demo_data(config)
    if data is not None:  # before the training: the demo model takes digits
        check_shapes(tuple(x_train.shape[1:]), data[0], args.dataset)
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
    check_shapes(tuple(classifier.input_shape), x, dataset)
    if len(y) and int(y.max()) >= classifier.nb_classes:
        raise ValueError(f"{dataset} has label {int(y.max())} but the model has {classifier.nb_classes} classes")


def check_shapes(input_shape: tuple, x: np.ndarray, dataset: str) -> None:
    """ValueError when inputs of ``x`` are not of the model's ``input_shape``."""
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"the model expects inputs of shape {tuple(input_shape)} but {dataset} has "
                         f"{tuple(x.shape[1:])}")


def check_budgets(classifier: PyTorchClassifier, budgets: Sequence[float], norm: float, allowed: bool = False) -> None:
    """ValueError, before any attack or training, for a budget on the wrong scale (8 instead of 8/255).

    :param allowed: ``--allow-large-eps`` was given: no check.
    """
    from art_wdat.attacks.spec import check_eps_scale

    for eps in budgets if not allowed else ():
        check_eps_scale(eps, norm, classifier.clip_values, classifier.input_shape, name="--eps",
                        opt_in="--allow-large-eps")


def save_finetuned(loaded: LoadedModel, out: Path, state_dict: dict, meta: dict) -> tuple[Path, str]:
    """Write the fine-tuned weights; return the path and the ``--model ...`` options that evaluate them.

    A checkpoint for models we can rebuild (SmallCNN, RobustBench); for a model file, its state_dict, to be given
    again with ``--weights`` (a checkpoint cannot rebuild code it does not hold).
    """
    from art_wdat.training.checkpoint import save_checkpoint
    from art_wdat.zoo import save_checkpoint_model
    from art_wdat.zoo.local import plain_value

    if loaded.arch is not None:
        path = save_checkpoint_model(out, loaded.arch, state_dict, meta)
        return path, f"--model {path}"
    payload = {"state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()}, "model": loaded.label,
               "meta": plain_value(meta, "meta")}
    path = save_checkpoint(payload, out)
    options = f"--model {loaded.label} --weights {path}"
    prep = meta.get("preprocessing")
    if prep is not None:
        options += " --mean " + ",".join(map(str, prep[0])) + " --std " + ",".join(map(str, prep[1]))
    return path, options


def shard(x: np.ndarray, y: np.ndarray, world: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's contiguous share of (x, y): the shards in rank order are the data in its order."""
    import numpy as np

    if len(x) < world:
        raise ValueError(f"{len(x)} input(s) cannot be shared among {world} ranks; use more data or fewer ranks")
    idx = np.array_split(np.arange(len(x)), world)[rank]
    return x[idx], y[idx]
